#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# env_gateway_cache when Redis is away: warm entries served, cold ones 503,
# errors and timeouts never cached, stale_if_error (only when configured,
# STALE + a [warn] line, bounded), a Redis restart under load (no crash,
# 200s again within 1 s), and failover between two Redis servers with the
# return to the first one once it is healthy.
use strict;
use warnings;

use lib 't/lib';
use EnvGwTest qw(unavailable);
use EnvGwCache;
use Test::More;
use Digest::SHA qw(sha256_hex);
use IO::Socket::INET;
use JSON::PP;
use Time::HiRes qw(time sleep);


# poll every 20 ms until $want, at most $max s; elapsed or undef
sub wait_status {
    my ($t, $token, $want, $max, $path) = @_;
    my $t0 = time;
    while (time - $t0 < $max) {
        my $r = $t->get($path || '/x', $token);
        return time - $t0 if $r->{status} == $want;
        sleep 0.02;
    }
    return undef;
}

sub log_lines {
    my ($t, $re) = @_;
    return grep { /$re/ } split /\n/, $t->slurp('error.log');
}

# restartable Redis keeping its data: SAVE, stop; start reloads dump.rdb
sub stop_redis_saved {
    my ($t) = @_;
    $t->redis->save;
    $t->stop_redis;
}

# --- 1. Redis stopped: warm served, cold 503, errors never cached ------------------

{
    my $t = EnvGwTest->new;
    $t->start_redis;
    seed_env($t);
    $t->start_nginx(conf('zone=envgw:1m ttl=30s negative_ttl=30s'),
                    workers => 2);
    ok(wait_subscribed($t, 2), 'outage: subscribed');

    my $W = raw_token('warm', 1);
    my $C = raw_token('cold', 1);
    my $N = raw_token('negative', 1);
    mk_token($t, $W);
    mk_token($t, $C);
    $t->account('acc_dev1', 'env_dev');
    is($t->get('/x?integrated_account_id=acc_dev1', $W)->{status}, 200,
       'warm token + account: 200');
    is($t->get('/x', $N)->{status}, 401, 'unknown token: 401');

    my @w0 = workers($t);
    my $m0 = metrics($t);
    stop_redis_saved($t);

    my @r = map { $t->get('/x?integrated_account_id=acc_dev1', $W) } 1 .. 10;
    is_deeply([ map { "$_->{status} " . cstatus($_) } @r ],
              [ ('200 HIT') x 10 ], 'Redis stopped: warm entries 200 HIT');
    unavailable($t->get('/x', $C), 'Redis stopped: cold token',
                retry_after => 1);
    unavailable($t->get('/x?integrated_account_id=acc_nx', $W),
                'Redis stopped: warm token, cold account',
                retry_after => 1);
    my $r = $t->get('/x', $N);
    is($r->{status}, 401, 'Redis stopped: negative entry still refuses');
    is(cstatus($r), 'HIT', 'Redis stopped: ... from the cache');
    is($t->get('/x')->{status}, 401, 'Redis stopped: no token 401');
    my $m1 = metrics($t);
    is($m1->{'env_gateway_requests_total{result="gateway_unavailable"}'}
       - $m0->{'env_gateway_requests_total{result="gateway_unavailable"}'},
       2, 'gateway_unavailable rose by 2');
    is($m1->{'env_gateway_cache_entries{type="negative"}'}, 1,
       'failures were not cached as negative entries');

    $t->start_redis;
    my $dt = wait_status($t, $C, 200, 10);
    ok(defined $dt, 'Redis back: the token refused with 503 is 200 (the '
       . 'failure was not cached)');
    diag(sprintf 'Redis back: cold token 200 after %.0f ms', ($dt // 0) * 1000);
    ok(wait_subscribed($t, 2, 10), 'Redis back: resubscribed');
    is_deeply([ workers($t) ], \@w0, 'Redis outage: worker pids unchanged');

    # a timeout is not cached either
    my $T = raw_token('timeout', 1);
    mk_token($t, $T);
    my $out = `redis-cli -p $t->{redis_port} client pause 1500 all 2>&1`;
    like($out, qr/OK/, 'CLIENT PAUSE 1500 ALL');
    unavailable($t->get('/x', $T), 'Redis paused: lookup timed out',
                retry_after => 1);
    my $dt2 = wait_status($t, $T, 200, 10);
    ok(defined $dt2, 'after the pause: the timed-out token is 200');
    my $m2 = metrics($t);
    cmp_ok($m2->{env_gateway_redis_timeouts_total}
           - $m1->{env_gateway_redis_timeouts_total}, '>=', 1,
           'redis_timeouts_total rose');
    $t->stop;
}

# --- 2. stale_if_error -----------------------------------------------------------

for my $case ([ 'ttl=1s negative_ttl=1s stale_if_error=10s', 1 ],
              [ 'ttl=1s negative_ttl=1s', 0 ])
{
    my ($cache, $stale) = @$case;
    my $name = $stale ? 'stale_if_error=10s' : 'no stale_if_error';
    my $t = EnvGwTest->new;
    $t->start_redis;
    seed_env($t);
    $t->start_nginx(conf("zone=envgw:1m $cache"));
    ok(wait_subscribed($t, 1), "$name: subscribed");

    my $S = raw_token('stale', 1);
    my $C = raw_token('stale-cold', 1);
    my $S_ID = mk_token($t, $S);
    mk_token($t, $C);
    is($t->get('/x', $S)->{status}, 200, "$name: warm");
    is(cstatus($t->get('/x', $S)), 'HIT', "$name: HIT");

    # past ttl with Redis up: fetched again, never STALE
    sleep 1.2;
    my $r = $t->get('/x', $S);
    is("$r->{status} " . cstatus($r), '200 MISS',
       "$name: past ttl, Redis up: 200 MISS");

    sleep 1.5;
    stop_redis_saved($t);
    $r = $t->get('/x', $S);
    if ($stale) {
        is($r->{status}, 200, "$name: past ttl, Redis stopped: 200");
        is(cstatus($r), 'STALE', "$name: cache status STALE");
        is(backend_vars($r), "STALE|$S_ID", "$name: backend sees STALE");
        my @warn = log_lines($t, qr/\[warn\].*serving stale/);
        ok(@warn, "$name: a [warn] line in error.log")
            and note($warn[0]);
        like($warn[0] // '', qr/envgw:token:[0-9a-f]{64}/,
             "$name: the warn line names the key");
        my $m = metrics($t);
        is($m->{'env_gateway_cache_lookups_total{outcome="stale"}'}, 1,
           "$name: stale lookups counted");
    } else {
        unavailable($r, "$name: past ttl, Redis stopped", retry_after => 1);
        ok(!log_lines($t, qr/serving stale/), "$name: no stale line");
    }
    unavailable($t->get('/x', $C), "$name: cold token while Redis is down",
                retry_after => 1);

    $t->start_redis;
    my $back = time;
    my $fresh;
    while (time - $back < 10) {
        $r = $t->get('/x', $S);
        if ($r->{status} == 200 && cstatus($r) =~ /^(HIT|MISS)$/) {
            $fresh = time - $back;
            last;
        }
        is("$r->{status} " . cstatus($r), $stale ? '200 STALE' : '503 MISS',
           "$name: Redis back, not yet reconnected") if $r->{status} != 200;
        sleep 0.02;
    }
    ok(defined $fresh, "$name: Redis back: 200 from a fresh entry again");
    diag(sprintf "$name: fresh again %.0f ms after Redis is back",
         ($fresh // 10) * 1000);
    $t->stop;
}

# stale entries are served for at most stale_if_error past the ttl
{
    my $t = EnvGwTest->new;
    $t->start_redis;
    seed_env($t);
    $t->start_nginx(conf('zone=envgw:1m ttl=1s stale_if_error=2s'));
    ok(wait_subscribed($t, 1), 'stale bound: subscribed');
    my $S = raw_token('bound', 1);
    mk_token($t, $S);
    is($t->get('/x', $S)->{status}, 200, 'stale bound: warm');
    # the entry was stored before that answer: it is past ttl +
    # stale_if_error 3 s after it at the latest
    my $t0 = time;
    sleep 1.3;
    stop_redis_saved($t);
    my $r = $t->get('/x', $S);
    is("$r->{status} " . cstatus($r), '200 STALE',
       'stale bound: within ttl + stale_if_error: STALE');
    sleep 0.05 while time - $t0 < 3.3;
    unavailable($t->get('/x', $S), 'stale bound: past ttl + stale_if_error',
                retry_after => 1);
    $t->stop;
}

# --- 3. Redis restarted under load --------------------------------------------------

{
    my $t = EnvGwTest->new;
    $t->start_redis;
    seed_env($t);
    $t->start_nginx(conf('zone=envgw:1m ttl=1s negative_ttl=1s'),
                    workers => 2);
    ok(wait_subscribed($t, 2), 'restart: subscribed');
    my $V = raw_token('load', 1);
    my $C = raw_token('load-cold', 1);
    my @L = map { raw_token('load', $_) } 1 .. 30;
    mk_token($t, $_) for @L;
    mk_token($t, $C);
    $t->account('acc_dev1', 'env_dev');
    is($t->get('/x?integrated_account_id=acc_dev1', $V)->{status}, 200,
       'restart: 200 before');
    my @w0 = workers($t);

    my $log = $t->dir . '/load.txt';
    my $pid = fork();
    die "fork: $!" unless defined $pid;
    if ($pid == 0) {
        open my $fh, '>', $log or POSIX::_exit(1);
        $fh->autoflush(1);
        my $end = time + 3.5;
        my $i = 0;
        while (time < $end) {
            my $path = $i % 2 ? '/x' : '/x?integrated_account_id=acc_dev1';
            my $tok = $L[$i++ % @L];
            my $r = eval { $t->http('GET', $path,
                               [ Authorization => "Bearer $tok" ], undef,
                               timeout => 5) } || { status => 0 };
            printf $fh "%.3f %d\n", time, $r->{status};
            sleep 0.02;
        }
        close $fh;
        POSIX::_exit(0);
    }

    sleep 1;
    stop_redis_saved($t);
    sleep 1.2;
    $t->start_redis;
    my $back = time;
    my $dv = wait_status($t, $V, 200, 1, '/x?integrated_account_id=acc_dev1');
    my $dc = wait_status($t, $C, 200, 1);
    ok(defined $dv, 'restart: warm token 200 within 1 s of Redis being back');
    ok(defined $dc, 'restart: never-seen token 200 within 1 s');
    diag(sprintf 'restart: 200 after %.0f ms (warm), %.0f ms (cold)',
         ($dv // 1) * 1000, ($dc // 1) * 1000);
    waitpid($pid, 0);

    open my $fh, '<', $log or die;
    my @lines = map { [ split ] } <$fh>;
    close $fh;
    my %st;
    $st{ $_->[1] }++ for @lines;
    diag('restart: load statuses ' . join(', ',
         map { "$_ x$st{$_}" } sort keys %st));
    ok(@lines > 50, scalar(@lines) . ' requests under load');
    ok($st{503}, 'restart: the outage was felt (some 503s once entries '
       . 'expired)');
    is_deeply([ grep { $_ != 200 && $_ != 503 } keys %st ], [],
              'restart: only 200 and 503 under load');
    my @after = grep { $_->[0] > $back + 1 } @lines;
    is_deeply([ grep { $_->[1] != 200 } @after ], [],
              'restart: every load request from 1 s after the restart is 200')
        if @after;
    is_deeply([ workers($t) ], \@w0, 'restart: worker pids unchanged');
    ok(!log_lines($t, qr/exited on signal|\[alert\]|\[crit\]/),
       'restart: no crash in error.log');
    ok(wait_subscribed($t, 2), 'restart: both workers resubscribed');
    $t->stop;
}

# --- 4. failover and the return to the first server -----------------------------------

# the second Redis holds a valid token, the first a revoked copy: which one
# answers shows in the status
sub failover_pair {
    my ($cache) = @_;
    my $t = EnvGwTest->new;       # nginx + the first Redis (down for now)
    my $b = EnvGwTest->new;       # the second Redis
    $b->start_redis;
    seed_env($b);
    my $F = raw_token('failover', 1);
    mk_token($b, $F);
    my $first = $t->redis_port;
    my $second = $b->{redis_port};
    my $conf = conf($cache ? $cache : 'zone=unused:32k');
    $conf =~ s/^\s*env_gateway_cache zone=unused:32k;\n//m;
    $conf =~ s{^(\s*env_gateway_redis .*\n)}
              {$1    env_gateway_redis 127.0.0.1:$second connect_timeout=200ms read_timeout=500ms;\n}m;
    $t->start_nginx($conf);
    return ($t, $b, $F);
}

for my $cache ('', 'zone=envgw:1m ttl=1s negative_ttl=1s') {
    my $name = $cache ? 'failover with cache' : 'failover without cache';
    my ($t, $b, $F) = failover_pair($cache);
    my $fd = wait_status($t, $F, 200, 10);
    ok(defined $fd, "$name: first server down: served by the second");

    # the first comes up holding a revoked copy
    $t->start_redis;
    seed_env($t);
    mk_token($t, $F, revoked => JSON::PP::true);
    my $t0 = time;
    my $r = $t->get('/x', $F);
    is($r->{status}, 200, "$name: just after the first is up: still the second");
    my $dt = wait_status($t, $F, 401, 9);
    ok(defined $dt, "$name: back on the first server (revoked copy: 401)");
    diag(sprintf "$name: returned to the first server after %.2f s", $dt // 9);
    ok(!defined $dt || $dt < 8, "$name: within primary_retry (5 s) + slack");
    my @cl = grep { /cmd=/ } split /\n/, $t->redis->client_list;
    ok(@cl >= 2, "$name: the worker is a client of the first server");
    if ($cache) {
        # the subscriber stays on the healthy second server: moving it
        # would open a gap in the invalidations (and a whole-cache drop)
        my @n = $b->redis->pubsub('numsub', $CHANNEL);
        is($n[1], 1, "$name: the subscriber stays on the second");
    }

    # a paused first server: the next lookup times out, then the second
    # answers; after primary_retry the first is used again
    my $X = raw_token('failover', 2);
    mk_token($b, $X);
    mk_token($t, $X, revoked => JSON::PP::true);
    my $out = `redis-cli -p $t->{redis_port} client pause 1500 all 2>&1`;
    like($out, qr/OK/, "$name: first server paused");
    $r = $t->get('/x', $X);
    is($r->{status}, 503, "$name: paused first: the lookup times out (503)");
    my $d2 = wait_status($t, $X, 200, 10);
    ok(defined $d2, "$name: after the timeout the second answers (200)");
    my $d3 = wait_status($t, $X, 401, 9);
    ok(defined $d3, "$name: the first is used again once healthy");
    diag(sprintf "$name: back on the first %.2f s after the switch",
         $d3 // 9);

    $t->stop;
    $b->stop;
}

# --- 5. first server down for long: the cache must survive primary_retry ------------

{
    my ($t, $b, $F) = failover_pair('zone=envgw:1m ttl=60s negative_ttl=60s');
    ok(defined wait_status($t, $F, 200, 10),
       'first down for long: served by the second');
    ok(wait_subscribed($b, 1, 10),
       'first down for long: subscribed on the second');
    # what was cached before the first subscription may be dropped by it
    $t->get('/x', $F);
    is(cstatus($t->get('/x', $F)), 'HIT', 'first down for long: HIT');
    my $m0 = metrics($t);
    # more than one primary_retry (5 s) with the first still down
    my @cs;
    for (1 .. 13) {
        sleep 0.5;
        push @cs, cstatus($t->get('/x', $F));
    }
    my $m1 = metrics($t);
    my $fl = $m1->{env_gateway_cache_flushes_total}
             - $m0->{env_gateway_cache_flushes_total};
    diag("first down for 6.5 s: $fl whole-cache flush(es), statuses @cs");
    {
        is($fl, 0, 'first down for long: no whole-cache flush');
        is_deeply(\@cs, [ ('HIT') x 13 ],
                  'first down for long: every request a HIT within ttl');
    }
    $t->stop;
    $b->stop;
}

done_testing;
