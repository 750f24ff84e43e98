#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# env_gateway_cache over a HUP reload whose new workers subscribe late (Redis
# stopped by SIGSTOP around the reload, as a slow TLS or managed Redis
# would be): the old worker keeps its invalidation subscription until a new
# worker has subscribed, so the zone is not flushed and an invalidation
# published meanwhile is applied.  A plain QUIT does not wait for a new
# generation; SIGTERM and worker_shutdown_timeout end the wait; a worker
# killed during it, or a wait past connect_timeout + read_timeout, leaves a
# gap that the new subscriber fills by flushing.

use strict;
use warnings;

use lib 't/lib';
use EnvGwTest;
use EnvGwCache;
use Test::More;
use IO::Socket::INET;
use Time::HiRes qw(time sleep);


# the old worker waits at most connect_timeout + read_timeout (5 s at most)
sub rconf {
    my ($timeouts) = @_;
    my $c = conf('zone=envgw:1m ttl=60s negative_ttl=60s');
    $c =~ s/connect_timeout=\S+ read_timeout=\S+;/$timeouts;/ or die;
    return $c;
}

sub alive { kill 0, $_[0] }

# a pid gone within $max seconds; how long it took, or undef
sub wait_gone {
    my ($pid, $max) = @_;
    my $t0 = time;
    while (time - $t0 < $max) {
        return time - $t0 unless alive($pid);
        sleep 0.02;
    }
    return undef;
}

# nginx's title of a worker that is shutting down gracefully
sub shutting_down {
    my ($pid, $max) = @_;
    my $end = time + $max;
    while (time < $end) {
        open my $f, '<', "/proc/$pid/cmdline" or return 0;
        local $/;
        my $c = <$f> // '';
        close $f;
        return 1 if $c =~ /shutting down/;
        sleep 0.02;
    }
    return 0;
}

# QUIT to the master: the seconds it took to exit (15 at most), or undef
sub quit_master {
    my ($t) = @_;
    my $master = $t->{pids}{nginx};
    my $t0 = time;
    kill 'QUIT', $master;
    while (time - $t0 < 15) {
        if (waitpid($master, POSIX::WNOHANG()) == $master) {
            delete $t->{pids}{nginx};
            return time - $t0;
        }
        sleep 0.02;
    }
    return undef;
}

sub flushes { metrics($_[0])->{env_gateway_cache_flushes_total} // 0 }

# a gateway with one worker, two tokens cached, Redis running
sub setup {
    my ($timeouts) = @_;
    my $t = EnvGwTest->new;
    $t->start_redis;
    seed_env($t);
    $t->start_nginx(rconf($timeouts), workers => 1);
    ok(wait_subscribed($t, 1, 10), 'the worker subscribed');
    my %tok = (keep => raw_token('handover', 'keep'),
               rev => raw_token('handover', 'revoked'));
    for my $k (sort keys %tok) {
        mk_token($t, $tok{$k});
        $t->get('/x', $tok{$k});
        is(cstatus($t->get('/x', $tok{$k})), 'HIT', "token $k cached: HIT");
    }
    return ($t, \%tok);
}

# a connection to Redis made before it is stopped: what is written on it
# while Redis is stopped is read once it runs again, before the connections
# it has still to accept (the new workers')
sub raw_redis {
    my ($t) = @_;
    return IO::Socket::INET->new(PeerAddr => '127.0.0.1:' . $t->redis_port,
                                 Proto => 'tcp', Timeout => 10)
        || die "connect: $!";
}

sub resp { join '', '*' . scalar(@_) . "\r\n",
                    map { '$' . length($_) . "\r\n$_\r\n" } @_ }


# --- 1. new workers subscribing late: no flush, invalidations applied ---------

{
    my ($t, $tok) = setup('connect_timeout=1s read_timeout=2s');
    my ($old) = workers($t);
    my $m0 = flushes($t);

    # revoked in Redis without a PUBLISH: the cached entry still answers
    $t->redis->del(token_key($tok->{rev}));
    is($t->get('/x', $tok->{rev})->{status}, 200,
       'revoked without PUBLISH: still served from the zone');

    my $raw = raw_redis($t);
    my $rpid = $t->{pids}{redis};
    kill 'STOP', $rpid;
    $t->reload_nginx;
    ok(shutting_down($old, 10), 'reload: the old worker is shutting down');
    sleep 0.3;
    ok(alive($old), 'Redis stopped: the old worker still holds on');
    # the invalidation arrives before any new worker can subscribe
    print $raw resp('PUBLISH', $CHANNEL, token_key($tok->{rev}));
    sleep 0.2;
    kill 'CONT', $rpid;
    my $dt = wait_gone($old, 10);
    ok(defined $dt, 'the old worker exits once Redis runs again');
    diag(sprintf 'old worker gone %.2f s after SIGCONT', $dt // -1);
    my $line = <$raw>;
    is($line, ":1\r\n", 'the PUBLISH reached the old worker only');
    ok(wait_subscribed($t, 1, 10), 'the new worker subscribed');

    my $r = $t->get('/x', $tok->{keep});
    is($r->{status}, 200, 'after the reload: 200');
    is(cstatus($r), 'HIT', 'after the reload: still a HIT');
    is(flushes($t) - $m0, 0, 'after the reload: no whole-cache flush');
    $r = $t->get('/x', $tok->{rev});
    is($r->{status}, 401,
       'the invalidation published during the handover was applied');
    is(cstatus($r), 'MISS', '... its entry dropped (MISS), not flushed');
    $t->stop;
}

# --- 2. a plain QUIT: no new generation is waited for ------------------------

{
    my ($t) = setup('connect_timeout=2s read_timeout=3s');
    my $gone = quit_master($t);
    ok(defined $gone && $gone < 5 + 3,
       'QUIT without a reload: the master exits within the bound');
    diag(sprintf 'QUIT: master gone after %.2f s', $gone // -1);
    $t->stop;
}

# --- 3. SIGTERM ends the wait at once ------------------------------------------

{
    my ($t) = setup('connect_timeout=2s read_timeout=3s');
    my ($old) = workers($t);
    my $rpid = $t->{pids}{redis};
    kill 'STOP', $rpid;
    $t->reload_nginx;
    ok(shutting_down($old, 10), 'SIGTERM: the old worker is shutting down');
    sleep 0.5;
    ok(alive($old), 'SIGTERM: the old worker is in its handover');
    kill 'TERM', $old;
    my $dt = wait_gone($old, 10);
    ok(defined $dt && $dt < 2.5,
       'SIGTERM: the old worker exits at once, not at the end of its bound');
    diag(sprintf 'SIGTERM: old worker gone after %.2f s', $dt // -1);
    kill 'CONT', $rpid;
    ok(wait_subscribed($t, 1, 10), 'SIGTERM: the new worker subscribed');
    $t->stop;
}

# --- 4. worker_shutdown_timeout ends the wait ---------------------------------
#
# worker_shutdown_timeout is read at the main level: the workers that will
# be replaced get it from a first reload (Redis running: handed over at once)

{
    my ($t) = setup('connect_timeout=2s read_timeout=3s');
    my $conf = $t->slurp('nginx.conf');
    $conf =~ s/^(worker_processes .*)$/$1\nworker_shutdown_timeout 1s;/m
        or die;
    open my $fh, '>', $t->dir . '/nginx.conf' or die;
    print $fh $conf;
    close $fh;
    my ($first) = workers($t);
    $t->reload_nginx;
    ok(defined wait_gone($first, 10),
       'worker_shutdown_timeout: the first reload is done');
    ok(wait_subscribed($t, 1, 10), 'worker_shutdown_timeout: subscribed');
    my ($old) = workers($t);
    my $rpid = $t->{pids}{redis};
    kill 'STOP', $rpid;
    my $t0 = time;
    $t->reload_nginx;
    my $dt = wait_gone($old, 10);
    my $total = time - $t0;
    ok(defined $dt && $total < 4,
       'worker_shutdown_timeout 1s: the old worker exits before its 5 s bound');
    diag(sprintf 'worker_shutdown_timeout: old worker gone after %.2f s',
         $total);
    kill 'CONT', $rpid;
    ok(wait_subscribed($t, 1, 10),
       'worker_shutdown_timeout: the new worker subscribed');
    $t->stop;
}

# --- 5. an old worker killed during the wait: the new subscriber flushes -----

{
    my ($t, $tok) = setup('connect_timeout=1s read_timeout=2s');
    $t->{allow_log} = qr/exited on signal 9/;
    my ($old) = workers($t);
    my $m0 = flushes($t);
    my $rpid = $t->{pids}{redis};
    kill 'STOP', $rpid;
    $t->reload_nginx;
    ok(shutting_down($old, 10), 'kill -9: the old worker is shutting down');
    kill 'KILL', $old;
    ok(defined wait_gone($old, 10), 'kill -9: the old worker is gone');
    kill 'CONT', $rpid;
    ok(wait_subscribed($t, 1, 10), 'kill -9: the new worker subscribed');
    my $end = time + 10;
    while (time < $end && flushes($t) - $m0 < 1) {
        sleep 0.02;
    }
    is(flushes($t) - $m0, 1, 'kill -9: the new subscriber flushed the zone');
    is(cstatus($t->get('/x', $tok->{keep})), 'MISS',
       'kill -9: the cached token is asked of Redis again (MISS)');
    $t->stop;
}

# --- 6. Redis stopped past the bound: the old worker leaves, the zone is flushed

{
    my ($t, $tok) = setup('connect_timeout=1s read_timeout=2s');
    my ($old) = workers($t);
    my $m0 = flushes($t);
    my $rpid = $t->{pids}{redis};
    kill 'STOP', $rpid;
    my $t0 = time;
    $t->reload_nginx;
    ok(shutting_down($old, 10), 'bound: the old worker is shutting down');
    my $dt = wait_gone($old, 10);
    my $total = time - $t0;
    ok(defined $dt && $total < 3 + 3,
       'bound: the old worker exits after connect_timeout + read_timeout');
    ok($total > 1, 'bound: ... having waited for a newer subscriber');
    diag(sprintf 'bound (3 s): old worker gone after %.2f s', $total);
    kill 'CONT', $rpid;
    ok(wait_subscribed($t, 1, 10), 'bound: the new worker subscribed');
    my $end = time + 10;
    while (time < $end && flushes($t) - $m0 < 1) {
        sleep 0.02;
    }
    is(flushes($t) - $m0, 1,
       'bound: nobody subscribed in between, the new subscriber flushed');
    is(cstatus($t->get('/x', $tok->{keep})), 'MISS',
       'bound: the cached token is asked of Redis again (MISS)');
    $t->stop;
}

# --- 7. a reload that fails leaves the running workers nobody to wait for ---
# (a new listen on a port in use: nginx keeps the running configuration);
# a QUIT after it does not wait for a configuration that never ran

{
    my ($t) = setup('connect_timeout=2s read_timeout=3s');
    my ($old) = workers($t);
    my $busy = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0,
                                     Listen => 1, ReuseAddr => 0)
        or die "listen: $!";
    my $port = $busy->sockport;
    my $file = $t->dir . '/nginx.conf';
    open my $in, '<', $file or die;
    my $conf = do { local $/; <$in> };
    close $in;
    $conf =~ s/^http \{/http {\n    server { listen 127.0.0.1:$port; }/m or die;
    open my $out, '>', $file or die;
    print $out $conf;
    close $out;
    $t->reload_nginx;
    my $failed;
    my $end = time + 15;
    while (time < $end) {
        last if ($failed = $t->slurp('error.log') =~ /bind\(\) to 127\.0\.0\.1:$port failed/
                           && $t->slurp('error.log') =~ /still could not bind/);
        sleep 0.05;
    }
    ok($failed, 'the reload failed (its listen port is in use)');
    # nginx's own [emerg] lines of that failed reload, and only those
    $t->{allow_log} = qr/\[emerg\].*(?:bind\(\) to 127\.0\.0\.1:$port failed|still could not bind)/;
    is_deeply([ workers($t) ], [ $old ], 'the running worker stays');
    my $gone = quit_master($t);
    ok(defined $gone && $gone < 2.5,
       'QUIT after a failed reload: no wait for its configuration (bound 5 s)');
    diag(sprintf 'QUIT after a failed reload: master gone after %.2f s',
         $gone // -1);
    unlike($t->slurp('error.log'), qr/not handed over/,
           'QUIT after a failed reload: no handover was waited for');
    close $busy;
    $t->stop;
}

done_testing;
