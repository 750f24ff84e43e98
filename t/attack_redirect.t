#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# An internal redirect while the gateway is still reading a body leaves the
# request stuck for good.
#
# With env_gateway_account_body_field (or a form body) the gateway reads
# the request body inside its access check.  When that read fails in
# nginx's body filters (a chunked body over client_max_body_size: 413; a
# broken chunk: 400), nginx finalizes the request with that status, and an
# error_page for it redirects the request.  If the target location is gated
# (named locations and error pages usually inherit "env_gateway on" from
# the server), ngx_env_gateway_check() finds the context in the WAIT state
# with body_reading set and body_read never set, and answers NGX_AGAIN for
# ever: no response, no timer, and the connection is kept after the client
# has gone (CLOSE_WAIT) until the worker exits.  One such request per
# connection slot exhausts a worker.
#
# The correct behaviour: the client gets an answer (the error page, or a
# refusal), and nginx closes the connection when the client does.
# Through real nginx and Redis.

use strict;
use warnings;

use lib 't/lib';
use EnvGwTest;
use Test::More;
use Digest::SHA qw(sha256_hex);
use IO::Socket::INET;
use Time::HiRes qw(sleep time);

my $t = EnvGwTest->new;
$t->start_redis;

my $port = $t->start_nginx(<<'CONF');
    env_gateway_redis 127.0.0.1:%%REDIS%% connect_timeout=500ms read_timeout=2s;

    server {
        listen 127.0.0.1:%%PORT%%;
        env_gateway on;
        env_gateway_account $arg_integrated_account_id;

        location /upload/ {
            env_gateway_account_body_field integrated_account_id;
            client_max_body_size 64;
            error_page 400 413 = @error;
            proxy_pass http://127.0.0.1:%%BACKEND%%;
        }
        location /form/ {
            client_max_body_size 64;
            error_page 400 413 /errors/body.json;
            proxy_pass http://127.0.0.1:%%BACKEND%%;
        }
        location @error {
            proxy_pass http://127.0.0.1:%%BACKEND%%;
        }
        location /errors/ {
            default_type application/json;
            alias %%DIR%%/errors/;
        }
    }
CONF

mkdir $t->dir . '/errors';
open my $fh, '>', $t->dir . '/errors/body.json' or die;
print $fh qq({"error":"body"}\n);
close $fh;

my $TD = 'egwtok_dev_' . substr(sha256_hex('attack-redirect-dev'), 0, 32);

$t->seed_gateway(envs => [qw(dev)], tokens => { dev => $TD });
$t->account('acc_dev', 'env_dev');

# connections of the gateway's port in CLOSE_WAIT (the client has gone,
# nginx has not closed), from /proc/net/tcp
sub close_wait {
    my $n = 0;
    for my $f ('/proc/net/tcp', '/proc/net/tcp6') {
        open my $fh, '<', $f or next;
        while (<$fh>) {
            my @c = split;
            next unless @c > 3 && $c[1] =~ /:([0-9A-F]{4})$/;
            $n++ if hex($1) == $port && $c[3] eq '08';
        }
    }
    return $n;
}

# send a raw request, read for up to $wait seconds; returns what came back
sub raw {
    my ($req, $wait) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port",
                                  Proto => 'tcp') or die "connect: $!";
    print $s $req;
    my $got = '';
    my $end = time + $wait;
    $s->blocking(0);
    while (time < $end) {
        my $n = sysread($s, my $buf, 65536);
        if (defined $n && $n == 0) {
            last;
        }
        $got .= $buf if $n;
        sleep 0.05;
    }
    close $s;
    return $got;
}

my $json = '{"integrated_account_id":"acc_dev","pad":"' . ('x' x 200) . '"}';
my $big = sprintf("%x\r\n%s\r\n0\r\n\r\n", length $json, $json);

sub chunked {
    my ($path, $type, $body) = @_;
    return "POST $path HTTP/1.1\r\nHost: localhost\r\n"
         . "Authorization: Bearer $TD\r\nContent-Type: $type\r\n"
         . "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n$body";
}

# control: a small body passes
my $small = '{"integrated_account_id":"acc_dev"}';
my $got = raw(chunked('/upload/x', 'application/json',
                      sprintf("%x\r\n%s\r\n0\r\n\r\n", length $small,
                              $small)), 5);
like($got, qr{^HTTP/1\.1 200 }, 'control: a small chunked JSON body passes');

my $cw = close_wait();

for my $c (
    [ 'a chunked JSON body over client_max_body_size, error_page to a '
      . 'named location', '/upload/x', 'application/json', $big ],
    [ 'a broken chunk, error_page to a named location', '/upload/x',
      'application/json', "zz\r\n$json\r\n0\r\n\r\n" ],
    [ 'a chunked form body over client_max_body_size, error_page to a file',
      '/form/x', 'application/x-www-form-urlencoded',
      sprintf("%x\r\n%s\r\n0\r\n\r\n", 300, 'integrated_account_id=acc_dev&'
                                            . ('p=x&' x 80)) ],
) {
    my ($name, $path, $type, $body) = @$c;
    $got = raw(chunked($path, $type, $body), 5);
    like($got, qr{^HTTP/1\.1 \d\d\d }, "$name: the client gets an answer")
        or diag('got: ' . ($got eq '' ? 'nothing in 5 s' : $got));
    unlike($got, qr/ env=env_dev /, "$name: the request did not pass");
}

# the clients have closed their connections: nginx closes them too
my $end = time + 10;
while (time < $end && close_wait() > $cw) {
    sleep 0.1;
}
is(close_wait(), $cw, 'no connection left in CLOSE_WAIT after the clients '
                      . 'closed');

$t->stop;
done_testing;
