#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause
# Seed a benchmark Redis: prints the Redis protocol on stdout (pipe it into
# `redis-cli --pipe`) and writes "token account environment_id" lines to
# --pairs.  N tokens cycle over the environments; account i lives in token
# i's environment, so every workload request is allowed (200).  Every
# environment has the hubspot integration with upstream http://bench_backend.
#
#   seed.pl --tokens 1000 --envs 3 --pairs pairs.txt [--prefix envgw:]
#           [--no-accounts] [--valid valid.txt] [--mix mix.txt]
#
# --valid and --mix write request lists for bench/workload.lua, one
# "token path?query status" line per request (status: what the gateway
# answers; a plain proxy answers 200 to all):
#   valid: every pair, "/?integrated_account_id=ACCOUNT" (all 200);
#   mix:   one line per pair, half of them (evenly over every kind) through
#          the route front (/proxy/contacts, /proxy/contacts/ID); of every
#          20 lines one has a well-formed token that is in no record (401),
#          two name the account of the next pair, which lives in another
#          environment (404), the rest are valid pairs (200).
use strict;
use warnings;
use Digest::SHA qw(sha256_hex);
use Getopt::Long;

my ($n, $envs, $pairs, $prefix, $noacct, $tag) = (1000, 3, undef, 'envgw:', 0, 'b');
my ($validf, $mixf);
GetOptions('tokens=i' => \$n, 'envs=i' => \$envs, 'pairs=s' => \$pairs,
           'prefix=s' => \$prefix, 'no-accounts' => \$noacct,
           'tag=s' => \$tag, 'valid=s' => \$validf, 'mix=s' => \$mixf)
    or die "bad arguments\n";
die "--mix needs accounts in at least two environments and 20 tokens\n"
    if $mixf && ($noacct || $envs < 2 || $n < 20);
die "--pairs is required\n" unless $pairs;

binmode STDOUT;
sub cmd { my $s = '*' . @_ . "\r\n"; $s .= '$' . length($_) . "\r\n$_\r\n" for @_; print $s }

my @names = qw(development staging production);
my @env;
for my $e (0 .. $envs - 1) {
    my $id = "env_bench_$e";
    my $name = $names[$e] // "env$e";
    push @env, [$id, $name];
    cmd('SET', "${prefix}env:$id",
        qq({"environment_id":"$id","team_id":"team_bench","name":"$name"}));
    cmd('SET', "${prefix}integration:$id:hubspot",
        '{"upstream":"http://bench_backend","resources":{"contacts":{'
        . '"list":{"method":"GET","path":"/crm/v3/objects/contacts"},'
        . '"get":{"method":"GET","path":"/crm/v3/objects/contacts/{id}"},'
        . '"merge":{"method":"POST","path":"/crm/v3/objects/contacts/merge"}}}}');
}

my @pairs;
open my $fh, '>', $pairs or die "$pairs: $!\n";
for my $i (0 .. $n - 1) {
    my ($eid, $ename) = @{ $env[$i % $envs] };
    my $raw = "egw_${tag}_" . substr(sha256_hex("env_gateway bench $tag $i"), 0, 40);
    my $acct = "acct_${tag}_$i";
    cmd('SET', "${prefix}token:" . sha256_hex($raw),
        qq({"token_id":"tok_${tag}_$i","team_id":"team_bench","environment_id":"$eid",)
        . qq("environment":"$ename","kind":"data","expires_at":null,"revoked":false}));
    unless ($noacct) {
        cmd('SET', "${prefix}account:$acct",
            qq({"integrated_account_id":"$acct","environment_id":"$eid",)
            . qq("integration":"hubspot","tenant_id":"tenant_$i","status":"active"}));
    }
    print $fh "$raw $acct $eid\n";
    push @pairs, [$raw, $acct];
}
close $fh;

if ($validf) {
    open my $v, '>', $validf or die "$validf: $!\n";
    print $v "$_->[0] /?integrated_account_id=$_->[1] 200\n" for @pairs;
    close $v;
}

if ($mixf) {
    open my $m, '>', $mixf or die "$mixf: $!\n";
    for my $i (0 .. $n - 1) {
        my $k = $i % 20;
        my ($tok, $acct) = @{ $pairs[$i] };
        my $status = 200;
        if ($k == 0) {
            $tok = "egw_${tag}u_" . substr(sha256_hex("env_gateway bench unknown $tag $i"), 0, 40);
            $status = 401;
        } elsif ($k <= 2) {
            # the next pair's account: the next environment (i + 1 < n here)
            $acct = $pairs[$i + 1][1];
            $status = 404;
        }
        my $path = '/';
        if (($i + int($i / 20)) % 2) {
            $path = $i % 4 < 2 ? '/proxy/contacts' : "/proxy/contacts/$i";
        }
        print $m "$tok $path?integrated_account_id=$acct $status\n";
    }
    close $m;
}
