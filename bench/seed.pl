#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause
# Seed a benchmark Redis: prints the Redis protocol on stdout (pipe it into
# `redis-cli --pipe`) and writes "token account environment_id" lines to
# --pairs.  N tokens cycle over the environments; account i lives in token
# i's environment, so every workload request is allowed (200).  Every
# environment has the hubspot integration with upstream http://bench_backend.
#
#   seed.pl --tokens 1000 --envs 3 --pairs pairs.txt [--prefix envgw:]
#           [--no-accounts]
use strict;
use warnings;
use Digest::SHA qw(sha256_hex);
use Getopt::Long;

my ($n, $envs, $pairs, $prefix, $noacct, $tag) = (1000, 3, undef, 'envgw:', 0, 'b');
GetOptions('tokens=i' => \$n, 'envs=i' => \$envs, 'pairs=s' => \$pairs,
           'prefix=s' => \$prefix, 'no-accounts' => \$noacct,
           'tag=s' => \$tag) or die "bad arguments\n";
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
}
close $fh;
