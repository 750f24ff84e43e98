#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# env_gateway_status: the answering worker's readiness as JSON, 200 while
# its lookup connection is up, 503 while Redis cannot be reached, 200 again
# once Redis is back; connection states, the subscription, the cache, the
# worker's pid; GET and HEAD only (405 with Allow otherwise), never cached.
# Without a cache zone there is no invalidation connection and no cache.

use strict;
use warnings;

use lib 't/lib';
use EnvGwTest;
use Test::More;
use JSON::PP;
use Time::HiRes qw(time sleep);

my $t = EnvGwTest->new;
$t->start_redis;
$t->env('env_dev', 'team_a', 'development');
my $T = $t->token('egw_status_0123456789abcdef0123456789',
                  token_id => 'tok_status', team_id => 'team_a',
                  environment_id => 'env_dev', environment => 'development');

$t->start_nginx(<<'CONF', subscribed => 1);
    env_gateway_redis 127.0.0.1:%%REDIS%% connect_timeout=200ms read_timeout=500ms;
    env_gateway_cache zone=envgw:1m;
    server {
        listen 127.0.0.1:%%PORT%%;
        location / {
            env_gateway on;
            proxy_pass http://127.0.0.1:%%BACKEND%%;
        }
        location = /status {
            env_gateway_status;
        }
        location = /metrics {
            env_gateway_metrics;
        }
    }
CONF

my $port = $t->redis_port;
my ($worker) = $t->worker_pids;

sub status {
    my $r = $t->http('GET', '/status');
    $r->{json} = eval { decode_json($r->{body}) } unless $r->{json};
    return $r;
}

# poll until the status answers $want (at most $max s): the last answer
sub wait_status {
    my ($want, $max) = @_;
    my $end = time + $max;
    my $r;
    while (time < $end) {
        $r = status();
        return $r if $r->{status} == $want;
        sleep 0.05;
    }
    return $r;
}

# --- Redis up ----------------------------------------------------------------

is($t->get('/x', $T)->{status}, 200, 'a request passes');

my $r = status();
is($r->{status}, 200, 'Redis up: 200');
like($r->{headers}{'content-type'} // '', qr{^application/json},
     'Content-Type: application/json');
is($r->{headers}{'cache-control'}, 'no-store', 'Cache-Control: no-store');
my $j = $r->{json} || {};
is_deeply([ sort keys %$j ], [qw(cache connections pid ready)],
          'keys: cache, connections, pid, ready') or diag($r->{body});
ok($j->{ready} && JSON::PP::is_bool($j->{ready}), 'ready: true');
is($j->{pid}, $worker, 'pid: the answering worker');
my $l = $j->{connections}{lookups} || {};
is($l->{state}, 'connected', 'lookups: connected');
is($l->{server}, "127.0.0.1:$port", 'lookups: the server');
ok($l->{since} =~ /^\d+$/ && $l->{since} <= time + 1
   && $l->{since} > time - 60, 'lookups: since, Unix seconds');
my $i = $j->{connections}{invalidations} || {};
is($i->{state}, 'connected', 'invalidations: connected');
ok($i->{subscribed} && JSON::PP::is_bool($i->{subscribed}),
   'invalidations: subscribed');
is($i->{channel}, 'envgw:invalidate', 'invalidations: the channel');
ok(!exists $l->{subscribed}, 'lookups: no "subscribed"');
cmp_ok($j->{cache}{entries} // 0, '>=', 1,
       'cache: the token record');
cmp_ok($j->{cache}{bytes} // 0, '>', 0, 'cache: bytes');
is($j->{cache}{negative_entries}, 0, 'cache: no negative entry');
cmp_ok($j->{cache}{zone_bytes} // 0, '>=', 1024 * 1024, 'cache: zone size');

$r = $t->http('HEAD', '/status');
is($r->{status}, 200, 'HEAD: 200');
is($r->{body}, '', 'HEAD: no body');

for my $m (qw(POST DELETE)) {
    $r = $t->http($m, '/status', [], $m eq 'POST' ? '{}' : undef);
    is($r->{status}, 405, "$m: 405");
    is($r->{headers}{allow}, 'GET, HEAD', "$m: Allow: GET, HEAD");
}
$r = $t->http('POST', '/metrics', [], '');
is($r->{status}, 405, 'metrics, POST: 405');
is($r->{headers}{allow}, 'GET, HEAD', 'metrics, POST: Allow: GET, HEAD');

# --- Redis stopped -----------------------------------------------------------

$t->stop_redis;
$r = wait_status(503, 10);
is($r->{status}, 503, 'Redis stopped: 503');
$j = $r->{json} || {};
ok(JSON::PP::is_bool($j->{ready}) && !$j->{ready}, 'ready: false');
is($j->{connections}{lookups}{state}, 'down', 'lookups: down');
is($j->{connections}{invalidations}{state}, 'down', 'invalidations: down');
ok(JSON::PP::is_bool($j->{connections}{invalidations}{subscribed})
   && !$j->{connections}{invalidations}{subscribed},
   'invalidations: not subscribed');
my $down_since = $j->{connections}{lookups}{since};
sleep 1.2;
$r = status();
is($r->{status}, 503, 'still down: 503');
is($r->{json}{connections}{lookups}{since}, $down_since,
   'since: when it went down, not the last attempt');

# --- Redis restarted ---------------------------------------------------------

$t->start_redis;
$r = wait_status(200, 10);
is($r->{status}, 200, 'Redis restarted: 200 again');
is($r->{json}{connections}{lookups}{state}, 'connected',
   'lookups: connected again');
ok($t->wait_subscribed(1, 10), 'the worker subscribed again');
$r = status();
ok($r->{json}{connections}{invalidations}{subscribed},
   'invalidations: subscribed again');
cmp_ok($r->{json}{connections}{lookups}{since}, '>=', $down_since,
       'since: the reconnection');

$t->stop;

# --- no cache: one connection, cache null ------------------------------------

{
    my $t2 = EnvGwTest->new;
    $t2->start_redis;
    $t2->start_nginx(<<'CONF');
    env_gateway_redis 127.0.0.1:%%REDIS%%;
    server {
        listen 127.0.0.1:%%PORT%%;
        location / { env_gateway on; proxy_pass http://127.0.0.1:%%BACKEND%%; }
        location = /status { env_gateway_status; }
    }
CONF
    my $r2;
    my $end = time + 10;
    while (time < $end) {
        $r2 = $t2->http('GET', '/status');
        last if $r2->{status} == 200;
        sleep 0.05;
    }
    is($r2->{status}, 200, 'no cache: 200');
    my $j2 = eval { decode_json($r2->{body}) } || {};
    is_deeply([ sort keys %{ $j2->{connections} || {} } ], ['lookups'],
              'no cache: only the lookup connection');
    ok(exists $j2->{cache} && !defined $j2->{cache}, 'no cache: cache null');
    $t2->stop;
}

# --- a worker that has served nothing: ready as soon as Redis answers -------
# Its lookup connection asks PING once connected, so a load balancer's first
# probe right after a start or a reload does not see 503 for a read_timeout
# (10 s here).  A probe also asks an idle connection PING for the next one:
# only each worker's first answer shows the difference.

{
    my $t3 = EnvGwTest->new;
    $t3->start_redis;
    my $conf = <<'CONF';
    env_gateway_redis 127.0.0.1:%%REDIS%% read_timeout=10s;
    server {
        listen 127.0.0.1:%%PORT%%;
        location / { env_gateway on; proxy_pass http://127.0.0.1:%%BACKEND%%; }
        location = /status { env_gateway_status; }
    }
CONF
    $t3->start_nginx($conf, workers => 2);
    # Redis's client ids only grow: the highest one now
    my $top_id = sub {
        my ($top) = sort { $b <=> $a }
                    $t3->redis->client_list =~ /^id=(\d+) /mg;
        return $top // 0;
    };
    my $fresh = sub {
        my ($what, $after) = @_;
        my (%first, $r3);
        # the connections made and their PING answered (not the 10 s):
        # two clients newer than $after whose last command is PING, seen
        # by Redis; nothing was asked of the workers yet
        my ($pinged, $end) = (0, time + 10);
        while (time < $end) {
            $pinged = grep { /^id=(\d+) / && $1 > $after && / cmd=ping / }
                      split /\n/, $t3->redis->client_list;
            last if $pinged >= 2;
            sleep 0.02;
        }
        cmp_ok($pinged, '>=', 2,
               "$what: both workers' lookup connections asked PING");
        $end = time + 10;
        while (time < $end && keys %first < 2) {
            $r3 = $t3->http('GET', '/status');
            my $j3 = eval { decode_json($r3->{body}) } || {};
            $first{ $j3->{pid} } //= $r3->{status} if $j3->{pid};
            sleep 0.01;
        }
        is(scalar(keys %first), 2, "$what: both workers answered");
        is(join(' ', map { $first{$_} } sort keys %first), '200 200',
           "$what: each worker's first answer is 200, no request served")
            or diag($r3->{body});
    };
    $fresh->('start', 0);

    my @old = $t3->worker_pids;
    my $before = $top_id->();
    $t3->reload_nginx;
    my $end = time + 10;
    my @new;
    while (time < $end) {
        @new = grep { my $p = $_; !grep { $_ == $p } @old } $t3->worker_pids;
        last if @new == 2;
        sleep 0.02;
    }
    is(scalar @new, 2, 'reload: two new workers');
    # wait for the old workers to leave, so that only new ones answer
    $end = time + 10;
    while (time < $end) {
        my %live = map { $_ => 1 } $t3->worker_pids;
        last unless grep { $live{$_} } @old;
        sleep 0.02;
    }
    $fresh->('reload', $before);
    unlike($t3->slurp('error.log'), qr/\[(?:alert|crit|emerg)\]/,
           'fresh workers: no alert in error.log');
    $t3->stop;
}

done_testing();
