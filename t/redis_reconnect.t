#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# A healthy Redis that drops the gateway's connection (CLIENT KILL, its own
# idle "timeout", a kill while a lookup is in flight) costs a reconnect, not
# an answer: requests get 200, never 503.  A lookup in flight on the dropped
# connection is sent again, once, on a new one.  The invalidation
# subscriber still resubscribes and drops the whole cache when it does.
# Real redis-server throughout; the cache keeps entries for 1 ms, so every
# request asks Redis.

use strict;
use warnings;

use lib 't/lib';
use EnvGwTest;
use EnvGwCache;
use Test::More;
use IO::Socket::INET;
use Time::HiRes qw(time sleep);

my $t = EnvGwTest->new;
$t->start_redis(args => [ '--enable-debug-command', 'yes' ]);
seed_env($t);
$t->start_nginx(conf('zone=envgw_rc:4m ttl=1ms negative_ttl=1ms'));

my $T = raw_token('reconnect', 1);
mk_token($t, $T);

sub redis_cli { my $p = $t->{redis_port}; return `redis-cli -p $p @_ 2>&1` }

sub tally {
    my ($name, @st) = @_;
    my %n;
    $n{$_}++ for @st;
    diag("$name: " . join(', ', map { "$_ x$n{$_}" } sort keys %n));
    is_deeply(\%n, { 200 => scalar @st }, "$name: all 200");
}

ok(wait_subscribed($t, 1), 'subscriber in place');
is($t->get('/x', $T)->{status}, 200, 'warm: 200');

# --- CLIENT KILL of the lookup connection, then a request -----------------------

{
    my @st;
    for my $i (1 .. 20) {
        like(redis_cli('client kill type normal'), qr/^\d+$/m,
             "kill $i: CLIENT KILL TYPE normal") if $i == 1;
        redis_cli('client kill type normal') if $i > 1;
        # every other time the worker has seen the close before the request
        sleep 0.05 if $i % 2;
        push @st, $t->get('/x', $T)->{status};
    }
    tally('CLIENT KILL TYPE normal, then a request (20 times)', @st);
}

# --- the connection is killed while a lookup is in flight ------------------------

{
    # one client: DEBUG SLEEP holds Redis, so the gateway's GET is waiting
    # unread when the pipelined CLIENT KILL (of everyone else) runs
    my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$t->{redis_port}",
                                  Proto => 'tcp') or die "connect: $!";
    print $s "DEBUG SLEEP 0.5\r\nCLIENT KILL TYPE normal\r\n";
    sleep 0.1;
    my $t0 = time;
    my $r = $t->get('/x', $T);
    my $dt = time - $t0;
    my $killed = '';
    {
        local $SIG{ALRM} = sub { die "timeout\n" };
        alarm 5;
        eval { $killed .= <$s> for 1 .. 2 };
        alarm 0;
    }
    close $s;
    like($killed, qr/^\+OK\r\n:[1-9]\d*\r\n$/,
         'in flight: DEBUG SLEEP then CLIENT KILL killed the connection');
    is($r->{status}, 200, 'in flight: the lookup was sent again, 200');
    like($t->slurp('error.log'),
         qr/\(lookups\): (?:connection closed by redis|recv\(\) failed), 0 command\(s\) failed, 1 sent again/,
         'in flight: logged as one lookup sent again');
    diag(sprintf 'killed while in flight: 200 after %.2f s', $dt);
}

# --- Redis closes idle clients (timeout 1) ---------------------------------------

{
    like(redis_cli('config set timeout 1'), qr/OK/, 'CONFIG SET timeout 1');
    my @st;
    my $closed0 = () = $t->slurp('error.log') =~ /connection closed by redis/g;
    # idle gaps around Redis' whole-second idle check
    for my $gap (1.0, 1.5, 2.1, 1.1, 2.5, 1.3, 1.9, 2.2) {
        sleep $gap;
        push @st, $t->get('/x', $T)->{status};
    }
    my $closed = (() = $t->slurp('error.log') =~ /connection closed by redis/g)
                 - $closed0;
    ok($closed >= 2, "idle timeout: Redis closed the idle connection "
       . "($closed times)");
    tally('Redis timeout 1, requests after idle gaps', @st);

    # a request right after Redis closed the idle lookup connection
    @st = ();
    my $seen = 0;
    for my $round (1 .. 3) {
        is($t->get('/x', $T)->{status}, 200, "idle close $round: warm");
        my ($id) = redis_cli('client list type normal') =~ /^id=(\d+) .*cmd=get\b/m;
        my $end = time + 10;
        while ($id && time < $end) {
            if (redis_cli('client list type normal') !~ /^id=$id /m) {
                $seen++;
                last;
            }
            sleep 0.01;
        }
        push @st, $t->get('/x', $T)->{status};
    }
    is($seen, 3, 'idle close: Redis closed the lookup connection each time');
    tally('Redis timeout 1, a request as soon as the idle connection is '
          . 'closed (3 times)', @st);

    # and a steady trickle of requests across the closes
    @st = ();
    my $end = time + 4;
    while (time < $end) {
        push @st, $t->get('/x', $T)->{status};
        sleep 0.37;
    }
    tally('Redis timeout 1, a request every 0.37 s for 4 s', @st);
    like(redis_cli('config set timeout 0'), qr/OK/, 'CONFIG SET timeout 0');
}

# --- the subscriber still resubscribes and drops the cache -------------------------

{
    my $m0 = metrics($t)->{env_gateway_cache_flushes_total} // 0;
    like(redis_cli('client kill type pubsub'), qr/^[1-9]\d*$/m,
         'CLIENT KILL TYPE pubsub');
    my $end = time + 10;
    my $m1 = $m0;
    while (time < $end) {
        $m1 = metrics($t)->{env_gateway_cache_flushes_total} // 0;
        last if $m1 > $m0 && numsub($t) == 1;
        sleep 0.05;
    }
    is(numsub($t), 1, 'pubsub kill: the subscriber is back');
    ok($m1 > $m0, "pubsub kill: the whole cache was dropped ($m0 -> $m1)");
    is($t->get('/x', $T)->{status}, 200, 'pubsub kill: 200');
}

# the CLIENT KILLs were never a 503
unlike(join('', map { "$_\n" } grep { /refused 503/ }
                split /\n/, $t->slurp('error.log')),
       qr/503/, 'no request was refused with 503');

$t->stop;
done_testing;
