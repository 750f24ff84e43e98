#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# env_gateway_cache invalidation and shared counters: DEL + PUBLISH refuses
# a cached token within 100 ms (latency measured over 50 revocations), the
# "*" payload, a lost message during a resubscription drops the whole cache,
# coalescing of 200 concurrent cold lookups (at most one GET per worker),
# and env_gateway_metrics counters summed over two workers.
use strict;
use warnings;

use lib 't/lib';
use EnvGwTest;
use EnvGwCache;
use Test::More;
use Digest::SHA qw(sha256_hex);
use IO::Socket::INET;
use JSON::PP;
use Time::HiRes qw(time sleep);


sub stat_calls {
    my ($t, @names) = @_;
    my $info = $t->redis->info('commandstats');
    my $sum = 0;
    for my $n (@names) {
        my $s = $info->{"cmdstat_$n"} // '';
        $sum += $1 if $s =~ /calls=(\d+)/;
    }
    return $sum;
}

sub send_request {
    my ($t, $path, $token) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$t->{port}",
                                  Proto => 'tcp', Timeout => 10)
        or die "connect: $!";
    $s->autoflush(1);
    print $s "GET $path HTTP/1.1\r\nHost: localhost\r\n"
           . (defined $token ? "Authorization: Bearer $token\r\n" : '')
           . "Connection: close\r\n\r\n";
    return $s;
}

sub read_response {
    my ($s, $timeout) = @_;
    my $raw = '';
    eval {
        local $SIG{ALRM} = sub { die "timeout\n" };
        alarm($timeout || 10);
        local $/;
        $raw = <$s> // '';
        alarm 0;
    };
    alarm 0;
    close $s;
    return EnvGwTest::parse_response($raw);
}

# N requests for one token: connect and write all, then read all
sub concurrent {
    my ($t, $n, $path, $token) = @_;
    my @s = map { send_request($t, $path, $token) } 1 .. $n;
    return map { read_response($_, 15) } @s;
}

# poll every 5 ms until the token is refused; elapsed seconds or undef
sub until_refused {
    my ($t, $token, $t0, $max) = @_;
    while (time - $t0 < $max) {
        my $r = $t->get('/x', $token);
        return time - $t0 if $r->{status} == 401;
        sleep 0.005;
    }
    return undef;
}

sub metric_delta {
    my ($m0, $m1, $k) = @_;
    return ($m1->{$k} // 0) - ($m0->{$k} // 0);
}

# Redis's count of @cmds and the gateway's metrics, read together.  The
# gateway counts a command when it queues it, Redis when it runs it, and
# each worker's subscriber asks PING every few seconds on its own: a pair
# is kept once nothing moved while it was read (Redis's count the same
# before and after the metrics, the gateway's commands and round trips the
# same before and after Redis's count).  At most 10 s; the last pair read.
sub quiet_counts {
    my ($t, @cmds) = @_;
    my $end = time + 10;
    my ($c, $m);
    while (1) {
        my $c0 = stat_calls($t, @cmds);
        $m = metrics($t);
        $c = stat_calls($t, @cmds);
        my $m2 = metrics($t);
        last if $c == $c0
            && metric_delta($m, $m2, 'env_gateway_redis_commands_total') == 0
            && metric_delta($m, $m2, 'env_gateway_redis_rtt_seconds_count') == 0;
        if (time > $end) {
            diag("no quiet moment in 10 s: Redis counted $c0 then $c");
            last;
        }
        sleep 0.05;
    }
    return ($c, $m);
}

# poll the metrics until $k rose by $n since $m0 (at most 10 s); the last
# metrics read
sub metrics_until {
    my ($t, $m0, $k, $n) = @_;
    my $end = time + 10;
    my $m = metrics($t);
    while (metric_delta($m0, $m, $k) < $n && time < $end) {
        sleep 0.02;
        $m = metrics($t);
    }
    return $m;
}

# --- 1. invalidation latency ----------------------------------------------------

my $t = EnvGwTest->new;
$t->start_redis;
seed_env($t);
$t->start_nginx(conf('zone=envgw:1m ttl=30s negative_ttl=30s'), workers => 2);
ok(wait_subscribed($t, 2), 'both workers subscribed');
sleep 0.2;

# 50 revocations of tokens warmed to HIT (round $round): the latencies in
# seconds (DEL or revoke + PUBLISH -> 401), and what went wrong
sub revocations {
    my ($t, $round) = @_;
    my (@lat, @bad);
    for my $i (1 .. 50) {
        my $T = raw_token('revoke', $round, $i);
        mk_token($t, $T);
        $t->get('/x', $T);
        my $r = $t->get('/x', $T);
        push @bad, "warm $i: $r->{status} " . cstatus($r)
            unless $r->{status} == 200 && cstatus($r) eq 'HIT';
        my $t0 = time;
        if ($i % 2) {
            $t->redis->del(token_key($T));
        } else {
            # the CLI's way: the record stays, marked revoked
            mk_token($t, $T, revoked => JSON::PP::true);
        }
        $t->redis->publish($CHANNEL, token_key($T));
        my $dt = until_refused($t, $T, $t0, 10);
        push @bad, "revocation $i not seen within 10 s" unless defined $dt;
        push @lat, $dt // 10;
    }
    my @s = sort { $a <=> $b } @lat;
    my $p50 = $s[int(@s * 0.50)];
    my $p99 = $s[int(@s * 0.99) > $#s ? $#s : int(@s * 0.99)];
    diag(sprintf 'invalidation latency (DEL/revoke + PUBLISH -> 401) over '
         . '%d: min %.1f ms, p50 %.1f ms, p99 %.1f ms, max %.1f ms',
         scalar @s, $s[0] * 1000, $p50 * 1000, $p99 * 1000, $s[-1] * 1000);
    return ($p50, $p99, \@bad);
}

{
    my ($p50, $p99, $bad) = revocations($t, 1);
    if (!@$bad && ($p50 >= 0.1 || $p99 >= 0.1)) {
        # the measure includes the test's own requests: on a loaded machine
        # (an ASan build, other processes) one more round of 50, as
        # t/system/cluster_edge.t does; a gateway slow to drop keys is
        # slow in both
        diag('round 1 over 100 ms; one more round of 50');
        ($p50, $p99, $bad) = revocations($t, 2);
    }
    is_deeply($bad, [], '50 revocations: each warmed to HIT, then refused');
    # the contract: refused within 100 ms, whatever the ttl (30s here)
    cmp_ok($p50, '<', 0.1, 'median invalidation latency < 100 ms');
    cmp_ok($p99, '<', 0.1, 'p99 invalidation latency < 100 ms');
}

# without a PUBLISH the entry is served within ttl
{
    my $T = raw_token('nopublish', 1);
    mk_token($t, $T);
    $t->get('/x', $T);
    $t->redis->del(token_key($T));
    my @st = map { my $r = $t->get('/x', $T); "$r->{status} " . cstatus($r) }
             1 .. 5;
    is_deeply(\@st, [ ('200 HIT') x 5 ],
              'DEL without PUBLISH: still 200 HIT within ttl');
    $t->redis->publish($CHANNEL, token_key($T));
    ok(defined until_refused($t, $T, time, 10),
       '... refused after the PUBLISH');
}

# invalidating one key leaves the others cached
{
    my @T = map { raw_token('other', $_) } 1 .. 3;
    mk_token($t, $_) for @T;
    $t->get('/x', $_) for @T;
    $t->redis->del(token_key($T[0]));
    $t->redis->publish($CHANNEL, token_key($T[0]));
    ok(defined until_refused($t, $T[0], time, 10), 'one key invalidated');
    my $g0 = gets($t);
    is_deeply([ map { cstatus($t->get('/x', $_)) } @T[1, 2] ],
              [ 'HIT', 'HIT' ], 'the other keys are still HITs');
    is(gets($t) - $g0, 0, '... without a GET');

    # messages for keys that are not cached, or foreign, are harmless
    $t->redis->publish($CHANNEL, 'envgw:token:' . ('0' x 64));
    $t->redis->publish($CHANNEL, '');
    $t->redis->publish($CHANNEL, 'x' x 70000);
    is(cstatus($t->get('/x', $T[1])), 'HIT',
       'unrelated, empty and huge payloads drop nothing else');
}

# "*" drops everything
{
    my @T = map { raw_token('star', $_) } 1 .. 3;
    mk_token($t, $_) for @T;
    $t->get('/x', $_) for @T;
    is_deeply([ map { cstatus($t->get('/x', $_)) } @T ], [ ('HIT') x 3 ],
              'three tokens cached');
    my $m0 = metrics($t);
    $t->redis->publish($CHANNEL, '*');
    my $end = time + 10;
    sleep 0.005 while time < $end
        && metrics($t)->{'env_gateway_cache_entries{type="positive"}'} > 0;
    is(metrics($t)->{'env_gateway_cache_entries{type="positive"}'}, 0,
       '"*": no positive entry left');
    is_deeply([ map { cstatus($t->get('/x', $_)) } @T ], [ ('MISS') x 3 ],
              '"*": all three fetched again (MISS)');
}

# --- 2. a message lost while resubscribing: the cache is dropped -------------------

{
    my $T = raw_token('lost', 1);
    my $T2 = raw_token('lost', 2);
    mk_token($t, $T);
    mk_token($t, $T2);
    $t->get('/x', $_) for $T, $T2;
    is(cstatus($t->get('/x', $T)), 'HIT', 'lost message: token cached');

    my $m0 = metrics($t);
    my $lost;
    for my $try (1 .. 20) {
        # kill, revoke and publish in one transaction: the gateway
        # reconnects at once, but not inside it, so the message reaches no
        # subscriber
        my $rev = JSON::PP->new->encode({ token_id => 'tok_' . substr(sha256_hex($T), 0, 10),
            team_id => 'team_a', environment_id => 'env_dev',
            environment => 'development', kind => 'data',
            revoked => JSON::PP::true, expires_at => undef });
        $t->redis->multi;
        $t->redis->client_kill('TYPE', 'pubsub');
        $t->redis->set(token_key($T), $rev);
        $t->redis->publish($CHANNEL, token_key($T));
        my @res = $t->redis->exec;
        my $n = $res[-1];
        if (defined $n && $n == 0) { $lost = 1; last }
        mk_token($t, $T);
        ok(wait_subscribed($t, 2, 10), "retry $try: resubscribed");
        $t->get('/x', $T) for 1 .. 2;
    }
    ok($lost, 'a PUBLISH reached no subscriber (subscriptions killed)');
    ok(wait_subscribed($t, 2, 10), 'both workers resubscribed after the kill');
    my $dt = until_refused($t, $T, time, 10);
    ok(defined $dt, 'the token revoked during the gap is refused after '
       . 'the resubscription (whole cache dropped)');
    # Redis has both subscriptions once NUMSUB says 2; each worker drops
    # the cache when it reads its own confirmation, the other one maybe a
    # moment later
    my $m1 = metrics_until($t, $m0, 'env_gateway_cache_flushes_total', 2);
    cmp_ok(metric_delta($m0, $m1, 'env_gateway_cache_flushes_total'), '>=', 2,
           'flushes_total rose by one per worker');
    is(cstatus($t->get('/x', $T2)), 'MISS',
       'an unrelated token is fetched again after the resubscription');

    # and invalidations work on the new subscriptions
    $t->redis->del(token_key($T2));
    $t->redis->publish($CHANNEL, token_key($T2));
    ok(defined until_refused($t, $T2, time, 10),
       'DEL + PUBLISH works on the new subscriptions');
}

# --- 3. coalescing: 200 concurrent cold lookups, two workers -----------------------

{
    my $C = raw_token('coalesce', 1);
    mk_token($t, $C);
    my $g0 = gets($t);
    my @r = concurrent($t, 200, '/x', $C);
    my $dg = gets($t) - $g0;
    my %st;
    $st{ $_->{status} }++ for @r;
    my %pid;
    $pid{ $_->{headers}{'x-worker'} // '?' }++ for @r;
    is_deeply(\%st, { 200 => 200 }, '200 concurrent requests, cold token: 200');
    ok($dg >= 1 && $dg <= 2, "200 concurrent cold lookups: $dg GET(s), "
       . 'at most one per worker');
    diag("coalescing: $dg GET(s) for 200 concurrent requests; per worker: "
         . join(', ', map { "$_=$pid{$_}" } sort keys %pid));
    my %cs;
    $cs{ cstatus($_) }++ for @r;
    ok(($cs{MISS} // 0) >= 1, 'at least one MISS (' . join(', ',
       map { "$_=$cs{$_}" } sort keys %cs) . ')');

    # the same for an unknown token: one GET per worker, all 401
    my $U = raw_token('coalesce-unknown', 1);
    $g0 = gets($t);
    @r = concurrent($t, 200, '/x', $U);
    $dg = gets($t) - $g0;
    %st = ();
    $st{ $_->{status} }++ for @r;
    is_deeply(\%st, { 401 => 200 },
              '200 concurrent requests, unknown token: 401');
    ok($dg >= 1 && $dg <= 2, "200 concurrent unknown lookups: $dg GET(s)");

    # token and account both cold
    $t->account('acc_co', 'env_dev');
    my $C2 = raw_token('coalesce', 2);
    mk_token($t, $C2);
    $g0 = gets($t);
    @r = concurrent($t, 100, '/x?integrated_account_id=acc_co', $C2);
    $dg = gets($t) - $g0;
    %st = ();
    $st{ $_->{status} }++ for @r;
    is_deeply(\%st, { 200 => 100 }, '100 concurrent, token + account: 200');
    ok($dg >= 2 && $dg <= 4, "token + account: $dg GET(s) (two keys, "
       . 'at most one GET per key per worker)');
}

$t->stop;

# --- 4. metrics: counters move as expected, summed over two workers ----------------

{
    my $m = EnvGwTest->new;
    $m->start_redis;
    seed_env($m);
    $m->start_nginx(conf('zone=envgw:1m ttl=30s negative_ttl=30s'),
                    workers => 2);
    ok(wait_subscribed($m, 2), 'metrics: both workers subscribed');
    sleep 0.3;

    my $A = raw_token('metrics', 'A');
    my $B = raw_token('metrics', 'B');
    my $U = raw_token('metrics', 'U');
    mk_token($m, $A);
    mk_token($m, $B);

    my @cmds = qw(get ping subscribe auth select);
    my ($c0, $m0) = quiet_counts($m, @cmds);
    my $g0 = gets($m);
    my %pid;

    for (1 .. 10) {
        my $r = $m->get('/x', $A);
        $pid{ $r->{headers}{'x-worker'} // '?' }++;
    }
    $m->get('/x', $U) for 1 .. 5;
    $m->get('/x') for 1 .. 3;
    my @r = concurrent($m, 40, '/x', $B);
    $pid{ $_->{headers}{'x-worker'} // '?' }++ for @r;
    is(scalar(grep { $_->{status} == 200 } @r), 40, 'metrics: 40 concurrent 200s');

    my ($c1, $m1) = quiet_counts($m, @cmds);
    my $dg = gets($m) - $g0;
    my $dc = $c1 - $c0;
    diag('metrics: requests served per worker: '
         . join(', ', map { "$_=$pid{$_}" } sort keys %pid));

    my $d = sub { metric_delta($m0, $m1, $_[0]) };
    is($d->('env_gateway_requests_total{result="allowed"}'), 50,
       'allowed rose by exactly 50 (whichever worker served them)');
    is($d->('env_gateway_requests_total{result="invalid_token"}'), 5,
       'invalid_token rose by 5');
    is($d->('env_gateway_requests_total{result="missing_token"}'), 3,
       'missing_token rose by 3');
    is($d->('env_gateway_requests_total{result="gateway_unavailable"}'), 0,
       'gateway_unavailable unchanged');
    is($d->('env_gateway_cache_lookups_total{outcome="hit"}')
       + $d->('env_gateway_cache_lookups_total{outcome="miss"}')
       + $d->('env_gateway_cache_lookups_total{outcome="negative_hit"}'), 55,
       'hit + miss + negative_hit = 55 lookups');
    is($d->('env_gateway_cache_lookups_total{outcome="negative_hit"}'), 4,
       'negative_hit rose by 4 (five unknown, the first a miss)');
    my $miss = $d->('env_gateway_cache_lookups_total{outcome="miss"}');
    ok($miss >= 3 && $miss <= 42, "miss rose by $miss (A once, U once, "
       . 'B cold under concurrency)');
    is($d->('env_gateway_cache_lookups_total{outcome="stale"}'), 0,
       'stale unchanged');
    ok($dg >= 3 && $dg <= 4, "Redis saw $dg GETs (A, U, B once per worker)");
    is($d->('env_gateway_redis_commands_total'), $dc,
       "redis_commands_total rose by what Redis counted ($dc)");
    is($d->('env_gateway_redis_rtt_seconds_count'), $dc,
       'rtt histogram count rose by the commands answered');
    is($m1->{'env_gateway_cache_entries{type="positive"}'}, 2,
       'two positive entries');
    is($m1->{'env_gateway_cache_entries{type="negative"}'}, 1,
       'one negative entry');
    ok($m1->{'env_gateway_cache_bytes{type="positive"}'} > 0,
       'positive bytes > 0');
    is($d->('env_gateway_cache_evictions_total'), 0, 'no eviction');
    is($d->('env_gateway_redis_errors_total'), 0, 'no Redis error');

    # the histogram is cumulative and ends with +Inf = count
    {
        my @b = map { $m1->{$_} }
                sort { my ($x) = $a =~ /le="([^"]+)"/; my ($y) = $b =~ /le="([^"]+)"/;
                       ($x eq '+Inf' ? 1e9 : $x) <=> ($y eq '+Inf' ? 1e9 : $y) }
                grep { /^env_gateway_redis_rtt_seconds_bucket/ } keys %$m1;
        my $mono = 1;
        $b[$_] < $b[$_ - 1] and $mono = 0 for 1 .. $#b;
        ok(@b > 2 && $mono, 'rtt buckets are cumulative');
        is($b[-1], $m1->{env_gateway_redis_rtt_seconds_count},
           'le="+Inf" bucket = count');
        ok($m1->{env_gateway_redis_rtt_seconds_sum} > 0, 'rtt sum > 0');
    }

    # an invalidation message: counted, the key dropped
    $m0 = $m1;
    $m->redis->publish($CHANNEL, token_key($A));
    $m1 = metrics_until($m, $m0, 'env_gateway_cache_invalidations_total', 2);
    my $inv = metric_delta($m0, $m1, 'env_gateway_cache_invalidations_total');
    ok($inv >= 1 && $inv <= 2, "one PUBLISH: invalidations_total rose by $inv "
       . '(one per subscribed worker)');
    is($m1->{'env_gateway_cache_entries{type="positive"}'}, 1,
       'the invalidated key left the zone');
    is(cstatus($m->get('/x', $A)), 'MISS', 'the invalidated key: MISS');

    # command connections killed: one reconnect and one error per worker
    $m0 = metrics($m);
    $m->redis->client_kill('TYPE', 'normal');
    delete $m->{redis};
    metrics_until($m, $m0, 'env_gateway_redis_reconnects_total', 2);
    sleep 0.2;
    $m1 = metrics($m);
    is(metric_delta($m0, $m1, 'env_gateway_redis_reconnects_total'), 2,
       'command connections killed: reconnects_total +2 (one per worker)');
    is(metric_delta($m0, $m1, 'env_gateway_redis_errors_total'), 2,
       'command connections killed: errors_total +2');
    is(metric_delta($m0, $m1, 'env_gateway_cache_flushes_total'), 0,
       'command connections killed: no flush (subscriptions intact)');
    is(cstatus($m->get('/x', $B)), 'HIT', 'cache intact: HIT');

    # subscriptions killed: one flush per worker, entries dropped
    $m0 = metrics($m);
    $m->redis->client_kill('TYPE', 'pubsub');
    ok(wait_subscribed($m, 2, 10), 'resubscribed');
    $m1 = metrics_until($m, $m0, 'env_gateway_cache_flushes_total', 2);
    is(metric_delta($m0, $m1, 'env_gateway_cache_flushes_total'), 2,
       'subscriptions killed: flushes_total +2 (one per worker)');
    is(metric_delta($m0, $m1, 'env_gateway_redis_reconnects_total'), 2,
       'subscriptions killed: reconnects_total +2');
    is($m1->{'env_gateway_cache_entries{type="positive"}'}
       + $m1->{'env_gateway_cache_entries{type="negative"}'}, 0,
       'subscriptions killed: the zone is empty');
    is(cstatus($m->get('/x', $B)), 'MISS', 'after the flush: MISS');

    $m->stop;
}

done_testing;
