#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause
# results.tsv (round variant rps p50_us p99_us non2xx cpu_us misses errors)
# -> one markdown table of medians; ratios are taken against plain of the
# same round, then the median of those ratios is shown.
use strict;
use warnings;

my (%r, %rounds);
while (<>) {
    chomp;
    my ($round, $v, $rps, $p50, $p99, $non2xx, $cpu, $miss, $err, $rcmd) = split /\t/;
    $r{$round}{$v} = { rps => $rps, p50 => $p50, p99 => $p99, non2xx => $non2xx,
                       cpu => $cpu, miss => $miss, err => $err, rcmd => $rcmd };
    $rounds{$round} = 1;
}
sub median { my @s = sort { $a <=> $b } @_; return undef unless @s;
             @s % 2 ? $s[$#s / 2] : ($s[@s / 2 - 1] + $s[@s / 2]) / 2 }

my @names = ([plain => 'plain proxy_pass (no module)'],
             [warm => 'env_gateway, warm cache'],
             [nocache => 'env_gateway, no cache (Redis every request)'],
             [route => 'env_gateway /proxy/ route, warm cache'],
             [limit => 'env_gateway, warm cache, a token limit never reached']);
my @R = sort { $a <=> $b } keys %rounds;
print "| variant | req/s | p50 ms | p99 ms | non-2xx | socket errors | server CPU µs/req | added µs/req | throughput / plain | CPU ratio plain/variant | cache misses | Redis cmds/req |\n";
print "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
for my $n (@names) {
    my ($v, $label) = @$n;
    my @rows = grep { $_ } map { $r{$_}{$v} } @R;
    next unless @rows;
    my @paired = grep { $r{$_}{$v} && $r{$_}{plain} } @R;
    my $thr = median(map { $r{$_}{$v}{rps} / $r{$_}{plain}{rps} } @paired);
    my $cpu = median(map { $r{$_}{plain}{cpu} / $r{$_}{$v}{cpu} } @paired);
    my $add = median(map { $r{$_}{$v}{cpu} - $r{$_}{plain}{cpu} } @paired);
    printf "| %s | %.0f | %.3f | %.3f | %d | %d | %.2f | %+.2f | %.2f | %.2f | %s | %.2f |\n",
        $label, median(map { $_->{rps} } @rows),
        median(map { $_->{p50} } @rows) / 1000, median(map { $_->{p99} } @rows) / 1000,
        median(map { $_->{non2xx} } @rows), median(map { $_->{err} } @rows),
        median(map { $_->{cpu} } @rows), $add, $thr, $cpu,
        $v eq 'plain' ? '–' : median(map { $_->{miss} } @rows),
        median(map { $_->{rcmd} } @rows);
}
my @lw = grep { $r{$_}{limit} && $r{$_}{warm} } @R;
printf "\nthe token limit (sync=off) adds %+.2f µs of server CPU per request over the warm row (median of the rounds' differences).\n",
    median(map { $r{$_}{limit}{cpu} - $r{$_}{warm}{cpu} } @lw) if @lw;
printf "\nmedians of %d interleaved rounds; ratios are per round against plain of the same round, then the median.\n", scalar @R;
print "\nper round (req/s, server CPU µs/req):\n\n";
for my $round (@R) {
    print "- round $round: ", join(', ', map { my $x = $r{$round}{$_->[0]};
        $x ? sprintf("%s %.0f req/s %.2f µs", $_->[0], $x->{rps}, $x->{cpu}) : () } @names), "\n";
}
