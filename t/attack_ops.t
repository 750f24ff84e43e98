#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# The operator's view under attack: env_gateway_status and
# env_gateway_redis_up say "ready" only while Redis answers on the lookup
# connection (a stopped Redis still completes connects; a Redis that
# answers every command with an error serves no lookup), and such a Redis
# does not make the error log grow with every request; nor do stale copies
# served through an outage.

use strict;
use warnings;

use lib 't/lib';
use EnvGwTest;
use Test::More;
use JSON::PP;
use IO::Socket::INET;
use POSIX qw(WNOHANG);
use Time::HiRes qw(time sleep);
use FakeRedis;

my $TOKEN = 'egw_attackops_0123456789abcdef012345';

sub status {
    my ($t) = @_;
    my $r = $t->http('GET', '/status');
    $r->{json} = eval { decode_json($r->{body}) } unless $r->{json};
    return $r;
}

sub redis_up {
    my ($t) = @_;
    my $m = $t->http('GET', '/metrics')->{body};
    return $m =~ /^env_gateway_redis_up (\d+)$/m ? $1 : -1;
}

sub errors {
    my ($t) = @_;
    return scalar(grep { /\[error\]/ } split /\n/, $t->slurp('error.log'));
}

my $CONF = <<'CONF';
    env_gateway_redis 127.0.0.1:%%REDIS%% connect_timeout=200ms read_timeout=300ms;
    server {
        listen 127.0.0.1:%%PORT%%;
        location / {
            env_gateway on;
            proxy_pass http://127.0.0.1:%%BACKEND%%;
        }
        location = /status { env_gateway_status; }
        location = /metrics { env_gateway_metrics; }
    }
CONF

# --- a stopped Redis (SIGSTOP): connects complete, nothing answers ---------

{
    my $t = EnvGwTest->new;
    $t->start_redis;
    $t->env('env_dev', 'team_a', 'development');
    $t->token($TOKEN, token_id => 'tok_ops', team_id => 'team_a',
              environment_id => 'env_dev', environment => 'development');
    $t->start_nginx($CONF);

    is($t->get('/x', $TOKEN)->{status}, 200, 'stopped: a request passes first');
    is(status($t)->{status}, 200, 'stopped: status 200 while Redis answers');

    my $pid = $t->{pids}{redis};
    kill 'STOP', $pid;

    my $e0 = errors($t);
    my (@req, @st, @up);
    my $end = time + 4;
    while (time < $end) {
        push @req, $t->get('/x', $TOKEN)->{status};
        my $r = status($t);
        push @st, $r->{status};
        push @up, redis_up($t);
        sleep 0.1;
    }
    my $after = time;

    is(scalar(grep { $_ == 200 } @req), 0,
       'stopped: no request is let through (' . scalar(@req) . ' asked)');
    # the first status may come before the first timeout is seen
    my @late = @st[2 .. $#st];
    is(scalar(grep { $_ == 200 } @late), 0,
       'stopped: status never 200 once a lookup timed out ('
       . join(',', @st) . ')');
    is(scalar(grep { $_ == 1 } @up[2 .. $#up]), 0,
       'stopped: env_gateway_redis_up never 1 once a lookup timed out');
    # no lookups now: the worker reconnects on its own, and a completed
    # connect alone is not "ready"
    my @idle;
    for (1 .. 10) {
        push @idle, status($t)->{status};
        sleep 0.1;
    }
    is(scalar(grep { $_ == 200 } @idle), 0,
       'stopped, no traffic: status never 200 (' . join(',', @idle) . ')');
    my $r = status($t);
    isnt($r->{json}{connections}{lookups}{state}, 'connected',
         'stopped: lookups not "connected"');

    # one line for the connection that worked, the outage line, at most a
    # summary: not a line per request or per reconnect
    my $de = errors($t) - $e0;
    cmp_ok($de, '<=', 3, "stopped: $de error lines for "
           . scalar(@req) . ' requests over 4 s');
    like($t->slurp('error.log'), qr/unreachable: command timed out/,
         'stopped: the outage is logged with its cause');

    kill 'CONT', $pid;
    my $ok = 0;
    $end = time + 5;
    while (time < $end) {
        last if ($ok = status($t)->{status} == 200);
        sleep 0.05;
    }
    ok($ok, 'stopped: status 200 again once Redis answers');
    is($t->get('/x', $TOKEN)->{status}, 200, 'stopped: requests pass again');
    $t->stop;
}

# --- a Redis answering every command with an error -------------------------

{
    my $t = EnvGwTest->new;
    my $fake = FakeRedis->new($t, error_all =>
                              'LOADING Redis is loading the dataset in memory');
    $t->{redis_port} = $fake->port;
    $t->start_nginx($CONF);

    my $e0 = errors($t);
    my @req = map { $t->get('/x', $TOKEN)->{status} } 1 .. 40;
    is(scalar(grep { $_ == 503 } @req), 40,
       'errors: every request 503 (' . join(',', @req[0 .. 4]) . ', ...)');

    my $r = status($t);
    is($r->{status}, 503, 'errors: status 503');
    isnt($r->{json}{connections}{lookups}{state}, 'connected',
         'errors: lookups not "connected"');
    is(redis_up($t), 0, 'errors: env_gateway_redis_up 0');

    my $log = $t->slurp('error.log');
    my $de = errors($t) - $e0;
    cmp_ok($de, '<=', 3, "errors: $de error lines for 40 requests");
    like($log, qr/LOADING Redis is loading the dataset/,
         'errors: the error Redis gives is logged');
    unlike($log, qr/egw_attackops/, 'errors: no token in the log');
    $t->stop;
}

# --- stale copies served through an outage: not a line per request --------

{
    my $t = EnvGwTest->new;
    $t->start_redis;
    $t->env('env_dev', 'team_a', 'development');
    $t->token($TOKEN, token_id => 'tok_ops', team_id => 'team_a',
              environment_id => 'env_dev', environment => 'development');
    (my $conf = $CONF) =~ s/(read_timeout=300ms;)/$1
    env_gateway_cache zone=envgw:1m ttl=1s stale_if_error=60s;/;
    $t->start_nginx($conf, subscribed => 1);

    is($t->get('/x', $TOKEN)->{status}, 200, 'stale: warm');
    sleep 1.3;
    $t->stop_redis;

    my @req = map { $t->get('/x', $TOKEN)->{status} } 1 .. 30;
    is(scalar(grep { $_ == 200 } @req), 30, 'stale: 30 requests served');
    my @warn = grep { /\[warn\].*serving stale/ }
               split /\n/, $t->slurp('error.log');
    is(scalar(@warn), 1, 'stale: one "serving stale" line for 30 requests');
    like($warn[0] // '', qr/serving stale "envgw:token:[0-9a-f]{64}"/,
         'stale: the line names the key');
    $t->stop;
}

done_testing();
