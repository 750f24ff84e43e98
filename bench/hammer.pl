#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause
# hammer.pl PORT N PATH TOKEN|- [ACCOUNT]: N sequential GETs on one
# keep-alive connection to 127.0.0.1:PORT; prints "status=count ...".
# Used where an exact request count matters (callgrind).
use strict;
use warnings;
use IO::Socket::INET;

my ($port, $n, $path, $tok, $acct) = @ARGV;
die "usage: hammer.pl PORT N PATH TOKEN|- [ACCOUNT]\n" unless defined $tok;
my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port", Proto => 'tcp')
    or die "connect: $!\n";
$path .= "?integrated_account_id=$acct" if defined $acct;
my $req = "GET $path HTTP/1.1\r\nHost: localhost\r\n"
    . ($tok ne '-' ? "Authorization: Bearer $tok\r\n" : '') . "\r\n";
my %st;
my $buf = '';
for (1 .. $n) {
    print $s $req;
    my ($status, $len);
    while (1) {
        if ($buf =~ /\A(.*?\r\n\r\n)/s) {
            my $h = $1;
            ($status) = $h =~ m{\AHTTP/1\.\d (\d+)};
            ($len) = $h =~ /\r\ncontent-length:\s*(\d+)/i;
            $len //= 0;
            if (length($buf) >= length($h) + $len) {
                substr($buf, 0, length($h) + $len) = '';
                last;
            }
        }
        my $r = sysread($s, $buf, 65536, length $buf);
        die "connection closed after $_ requests\n" unless $r;
    }
    $st{$status}++;
}
print join(' ', map { "$_=$st{$_}" } sort keys %st), "\n";
