#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# sync=redis: three gateway nodes (separate nginx instances, one Redis)
# admit a token's limit together, within one sync interval's traffic of
# the exact quota (each alone would admit it three times over); the
# cluster's count is in Redis under <prefix>ratelimit:token:<id>:<window>:
# <start>, with an expiry.  Redis stopped during a synced run: each node
# counts on locally (its own quota, then 429), no 5xx comes of the outage,
# the outage is one log line per node and a metric; once Redis is back the
# nodes sync again.

use strict;
use warnings;

use lib 't/lib';
use EnvGwTest;
use EnvGwLimit;
use Test::More;
use Time::HiRes qw(sleep time);

my $INTERVAL_MS = 50;

my $conf = <<"CONF";
    env_gateway_redis 127.0.0.1:%%REDIS%% connect_timeout=200ms read_timeout=500ms;
    env_gateway_cache zone=envgw:1m ttl=1h;
    env_gateway_limit_zone zone=envgw_limits:1m sync=redis sync_interval=${INTERVAL_MS}ms;

    server {
        listen 127.0.0.1:%%PORT%%;

        location / {
            env_gateway on;
            env_gateway_limit token 30r/h;
            proxy_pass http://127.0.0.1:%%BACKEND%%;
        }
        location = /env_gateway/metrics { env_gateway_metrics; }
    }
CONF

my $t = EnvGwTest->new;
$t->start_redis;
$t->env('env_prod', 'team_a', 'production');

# nodes share the Redis of $t; each stops only its own nginx
my @nodes = ($t);
for (1 .. 2) {
    my $n = EnvGwTest->new;
    $n->{redis_port} = $t->{redis_port};
    push @nodes, $n;
}
$_->start_nginx($conf, workers => 2) for @nodes;

# --- three nodes admit the limit together -----------------------------------

my $A = limit_token($t, 'a');
my (%passed, @st);
my $t0 = time;
for my $i (0 .. 89) {
    my $node = $nodes[$i % 3];
    my $r = $node->get('/x', $A);
    push @st, $r->{status};
    $passed{$i % 3}++ if $r->{status} == 200;
    sleep 0.02;
}
my $elapsed = time - $t0;
my $total = grep { $_ == 200 } @st;
my $other = grep { $_ != 200 && $_ != 429 } @st;

# one interval of traffic: requests every 20 ms, so at most
# interval / 20 ms + 1 requests a node can admit unseen by the others
my $slack = 2 * (int($INTERVAL_MS / 20) + 1);
ok($total >= 30 && $total <= 30 + $slack,
   "3 nodes: $total of 90 admitted, 30 plus at most $slack "
   . "(one interval's traffic of the other nodes)")
    or diag("statuses @st, ${elapsed}s");
is($other, 0, '3 nodes: only 200 and 429');
ok((grep { $passed{$_} } 0 .. 2) == 3, '3 nodes: every node admitted some')
    or diag(explain \%passed);

# what Redis holds: the cluster's count of the window, once every node
# has sent its last round (each node's worker sends one an interval, later
# on a loaded machine): at least three intervals, at most 10 s
my $sent = time;
my (@keys, $count);
while (1) {
    @keys = $t->redis->keys('envgw:ratelimit:token:tok_a:3600000:*');
    $count = @keys == 1 ? $t->redis->get($keys[0]) // 0 : 0;
    last if time > $sent + 10
        || (time >= $sent + 3 * $INTERVAL_MS / 1000 && $count >= $total);
    sleep 0.02;
}
is(scalar @keys, 1, 'Redis: one key for the token\'s window')
    or diag("@keys");
my ($start) = ($keys[0] // '') =~ /:(\d+)$/;
ok(defined $start && $start % 3_600_000 == 0, 'Redis: the window start');
is($count, $total, 'Redis: the count is what the nodes admitted');
my $ttl = $t->redis->pttl($keys[0] // 'none');
ok($ttl > 3_600_000 && $ttl <= 2 * 3_600_000 + $INTERVAL_MS,
   "Redis: an expiry of up to two windows ($ttl ms)");

# a new request on any node is refused: the cluster's count is known
is($nodes[$_]->get('/x', $A)->{status}, 429, "node $_: refused after the run")
    for 0 .. 2;

my $syncs = metric($nodes[1], 'env_gateway_rate_limit_syncs_total') // 0;
ok($syncs > 0 && $syncs <= int($elapsed * 1000 / $INTERVAL_MS) + 10,
   "metrics: $syncs sync rounds, at most one an interval per node");

# --- Redis stopped during a synced run --------------------------------------

my $B = limit_token($t, 'b');
my @pair = @nodes[1, 2];

# warm: both nodes have the token cached, counts synced (2 of 30)
is($_->get('/x', $B)->{status}, 200, 'outage: warm') for @pair;
sleep 3 * $INTERVAL_MS / 1000;

$t->stop_redis;
sleep 0.3;

my %st;
for my $i (0 .. 79) {
    my $r = $pair[$i % 2]->get('/x', $B);
    $st{$r->{status}}++;
    sleep 0.005;
}
is(join(',', sort keys %st), '200,429', 'outage: only 200 and 429, no 5xx')
    or diag(explain \%st);
# each node counts its own requests on top of the 2 it knew: 28 each
my $admitted = $st{200} // 0;
ok($admitted >= 2 * 28 - 2 && $admitted <= 2 * 28 + 2,
   "outage: each node counts locally ($admitted admitted of 80)");

for my $k (0 .. 1) {
    my $n = $pair[$k];
    my @lines = grep { /rate limit sync: Redis did not answer/ }
                split /\n/, $n->slurp('error.log');
    is(scalar @lines, 1, "outage, node $k: one log line");
    ok((metric($n, 'env_gateway_rate_limit_sync_failures_total') // 0) > 0,
       "outage, node $k: env_gateway_rate_limit_sync_failures_total");
}

# Redis back: the nodes sync again (a new token's counts reach it)
$t->start_redis;
my $C = limit_token($t, 'c');
my $back;
for (1 .. 100) {
    $pair[0]->get('/x', $C);
    sleep 0.05;
    my $v = $t->redis->get("envgw:ratelimit:token:tok_c:3600000:"
                           . (int(time / 3600) * 3_600_000));
    if (defined $v && $v > 0) { $back = 1; last; }
}
ok($back, 'Redis back: counts reach it again');
# the worker writes the line once it has read the round's replies, which
# may be after Redis has run the round's INCRBY
my @resumed;
my $end = time + 10;
while (1) {
    @resumed = grep { /rate limit sync: Redis answers again/ }
               split /\n/, $pair[0]->slurp('error.log');
    last if @resumed || time > $end;
    sleep 0.02;
}
is(scalar @resumed, 1, 'Redis back: one log line');

$_->stop for reverse @nodes;
done_testing();
