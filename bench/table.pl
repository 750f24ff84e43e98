#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause
# table.pl RESULTS.tsv NAME=LABEL...: one markdown table per workload.
#
# RESULTS.tsv (bench/run.sh): round workload variant requests rps p50_us
# p99_us non2xx expected_refusal_share cpu_ns front_ns redis_ns
# cache_misses socket_errors redis_cmds.
#
# The CPU ratio is the ratio of medians: the median over rounds of plain's
# server CPU per request divided by the median over rounds of the
# variant's; min..max are the per-round ratios (plain and the variant of
# the same round), so the noise of the machine shows.
use strict;
use warnings;

my $file = shift or die "usage: table.pl RESULTS.tsv NAME=LABEL...\n";
my (@names, %label);
for (@ARGV) {
    my ($n, $l) = split /=/, $_, 2;
    push @names, $n;
    $label{$n} = $l;
}

my (%r, %rounds, @wls, %seen);
open my $fh, '<', $file or die "$file: $!\n";
while (<$fh>) {
    chomp;
    my ($round, $wl, $v, $req, $rps, $p50, $p99, $non2xx, $want, $cpu, $front,
        $redis, $miss, $err, $rcmd) = split /\t/;
    next unless $req;
    $r{$wl}{$v}{$round} = {
        rps => $rps, p50 => $p50, p99 => $p99,
        non2xx => $non2xx / $req, want => $want,
        cpu => $cpu / 1000 / $req, front => $front / 1000 / $req,
        redis => $redis / 1000 / $req, miss => $miss / $req, err => $err,
        rcmd => $rcmd / $req };
    $rounds{$round} = 1;
    push @wls, $wl unless $seen{$wl}++;
}
close $fh;

sub median { my @s = sort { $a <=> $b } @_; return 0 unless @s;
             @s % 2 ? $s[$#s / 2] : ($s[@s / 2 - 1] + $s[@s / 2]) / 2 }
sub min { my $m = shift; $_ < $m and $m = $_ for @_; $m }
sub max { my $m = shift; $_ > $m and $m = $_ for @_; $m }

my %about = (
    valid => 'every request passes, the account in the query',
    mix => 'half through the /proxy/ route, 10 % accounts of another '
         . 'environment (404), 5 % unknown tokens (401), the rest valid',
);

my @R = sort { $a <=> $b } keys %rounds;
for my $wl (@wls) {
    my $plain = $r{$wl}{plain} || {};
    my $pmed = median(map { $_->{cpu} } values %$plain);
    print "\n" if $wl ne $wls[0];
    print "#### workload `$wl`", ($about{$wl} ? ": $about{$wl}" : ''), "\n\n";
    print "| variant | req/s | p99 ms | non-2xx % (expected) | server CPU µs/req (min..max) "
        . "| front nginx µs/req | Redis µs/req | added µs/req "
        . "| **CPU ratio plain/variant** (rounds min..max) | Redis cmds/req | cache misses/req |\n";
    print "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
    for my $v (@names) {
        my $rows = $r{$wl}{$v} or next;
        my @x = map { $rows->{$_} } grep { $rows->{$_} } @R;
        my $cpu = median(map { $_->{cpu} } @x);
        my @per = map { $plain->{$_}{cpu} / $rows->{$_}{cpu} }
                  grep { $rows->{$_} && $plain->{$_} } @R;
        my $non = median(map { $_->{non2xx} } @x) * 100;
        my $want = $x[0]{want} * 100;
        printf "| %s | %.0f | %.2f | %.1f (%.1f)%s | %.2f (%.2f..%.2f) | %.2f | %.2f "
             . "| %+.2f | **%s** (%s) | %.2f | %.4f |\n",
            $label{$v}, median(map { $_->{rps} } @x),
            median(map { $_->{p99} } @x) / 1000,
            $non, $want, (abs($non - $want) > 1 ? ' **!**' : ''),
            $cpu, min(map { $_->{cpu} } @x), max(map { $_->{cpu} } @x),
            median(map { $_->{front} } @x), median(map { $_->{redis} } @x),
            $cpu - $pmed,
            $pmed ? sprintf('%.2f', $pmed / $cpu) : '–',
            @per ? sprintf('%.2f..%.2f', min(@per), max(@per)) : '–',
            median(map { $_->{rcmd} } @x), median(map { $_->{miss} } @x);
    }
}

printf "\nmedians of %d interleaved rounds. CPU ratio: median over rounds of plain's "
     . "server CPU per request / median of the variant's (a ratio of medians); min..max: "
     . "the per-round ratios. Server CPU: every nginx (front, backend) and Redis.\n",
     scalar @R;
my $errs = 0;
for my $wl (@wls) { for my $v (keys %{ $r{$wl} }) {
    $errs += $_->{err} for values %{ $r{$wl}{$v} } } }
print "socket errors in all runs: $errs\n";

print "\nper round (server CPU µs/req):\n\n";
for my $round (@R) {
    for my $wl (@wls) {
        print "- round $round $wl: ", join(', ', map {
            my $x = $r{$wl}{$_} && $r{$wl}{$_}{$round};
            $x ? sprintf("%s %.2f", $_, $x->{cpu}) : () } @names), "\n";
    }
}
