#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# What the error log says while Redis is down: each connection logs the
# change of state once ("unreachable", with its cause), then at most one
# summary every 10 s ("still unreachable: N attempt(s) failed in the last
# 10 s, last error: ..."), never a line per attempt or per request; once
# Redis is back, one "reachable again" line per connection.  Two workers,
# each with a lookup and an invalidation connection, under a steady
# request load for 12.5 s.

use strict;
use warnings;

use lib 't/lib';
use EnvGwTest qw(unavailable);
use Test::More;
use Time::HiRes qw(time sleep);

my $t = EnvGwTest->new;
$t->start_redis;
$t->env('env_dev', 'team_a', 'development');
my $T = $t->token('egw_outage_0123456789abcdef01234567',
                  token_id => 'tok_outage', team_id => 'team_a',
                  environment_id => 'env_dev', environment => 'development');

$t->start_nginx(<<'CONF', workers => 2, subscribed => 2);
    env_gateway_redis 127.0.0.1:%%REDIS%% connect_timeout=200ms read_timeout=500ms;
    env_gateway_cache zone=envgw:1m ttl=100ms;
    server {
        listen 127.0.0.1:%%PORT%%;
        location / {
            env_gateway on;
            proxy_pass http://127.0.0.1:%%BACKEND%%;
        }
    }
CONF

is($t->get('/x', $T)->{status}, 200, 'Redis up: 200');

my $port = $t->redis_port;
my $before = length $t->slurp('error.log');
sub new_lines {
    return grep { !/ refused \d+ / }      # one refusal line per request
           split /\n/, substr($t->slurp('error.log'), $before);
}

$t->stop_redis;
sleep 0.3;      # past the cache's ttl

# 12.5 s of requests, every 50 ms: all refused, 503
my ($n, $ok, %st) = (0, 0);
my $end = time + 12.5;
while (time < $end) {
    my $r = $t->get('/x', $T);
    $n++;
    $ok++ if $r->{status} == 503;
    $st{$r->{status}}++;
    sleep 0.05;
}
cmp_ok($n, '>', 100, "Redis down: $n requests sent");
is($ok, $n, 'Redis down: every request 503')
    or diag(join ', ', map { "$_ x $st{$_}" } sort keys %st);

my @lines = new_lines();
my @per_attempt = grep { /connect\(\) to \S+ failed/ && !/unreachable/ }
                  @lines;
is(scalar @per_attempt, 0, 'no line per failed connect()')
    or diag(join "\n", @per_attempt[0 .. 4]);

my %down;
for (grep { /env_gateway: redis 127\.0\.0\.1:$port \((\w+)\) unreachable: / }
     @lines)
{
    my ($pid) = /\s(\d+)#\d+:/;
    my ($role) = /\((\w+)\) unreachable/;
    $down{"$pid $role"}++;
}
is(scalar keys %down, 4, 'an "unreachable" line for each connection of '
   . 'each worker (2 workers x lookups, invalidations)')
    or diag(join "\n", @lines);
is_deeply([ grep { $_ != 1 } values %down ], [],
          '... exactly one each');
like((grep { /unreachable: / } @lines)[0] // '',
     qr/\[error\].*unreachable: connect\(\)(?: to 127\.0\.0\.1:$port)? failed \(111: Connection refused\)/,
     'the first line says why, at error');

my @summary = grep { /still unreachable: / } @lines;
cmp_ok(scalar @summary, '>=', 4, 'a summary per connection after 10 s');
cmp_ok(scalar @summary, '<=', 8, '... and no more than one each 10 s');
like($summary[0] // '',
     qr/redis 127\.0\.0\.1:$port \((lookups|invalidations)\) still unreachable: [1-9]\d* attempt\(s\) failed in the last 1\d s, last error: connect\(\)(?: to 127\.0\.0\.1:$port)? failed \(111: Connection refused\)/,
     'the summary: attempts, window, last error');
cmp_ok(scalar @lines, '<=', 30, 'error.log: ' . scalar(@lines)
       . ' lines in 12.5 s of outage, besides refusals (not one per '
       . 'attempt: some 9 attempts a second)')
    or diag(join "\n", @lines);

# Redis back: the lookups reconnect, requests pass again, and each
# connection says so once it has stayed up for read_timeout
$t->start_redis;
$t->env('env_dev', 'team_a', 'development');
$t->token($T, token_id => 'tok_outage', team_id => 'team_a',
          environment_id => 'env_dev', environment => 'development');
my $back;
$end = time + 10;
while (time < $end) {
    last if ($back = $t->get('/x', $T)->{status}) == 200;
    sleep 0.05;
}
is($back, 200, 'Redis back: 200');

# each connection says so once it has stayed up for read_timeout: the
# other worker's connections may reconnect up to a backoff (500 ms) later
# than the one that answered, and an ASan build runs behind its timers;
# at least 1.5 s, so that a second line would show, and at most 10 s
sub up_lines {
    my %up;
    for (grep { /redis 127\.0\.0\.1:$port \((\w+)\) reachable again after \d+ s, \d+ attempt\(s\) failed/ }
         new_lines())
    {
        my ($pid) = /\s(\d+)#\d+:/;
        my ($role) = /\((\w+)\) reachable again/;
        $up{"$pid $role"}++;
    }
    return \%up;
}
my $up_from = time;
my $up = up_lines();
while (time < $up_from + 10
       && (time < $up_from + 1.5 || keys %$up < keys %down))
{
    sleep 0.05;
    $up = up_lines();
}
is_deeply($up, { map { $_ => 1 } keys %down },
          'one "reachable again" line per connection')
    or diag(join "\n", new_lines());

$t->stop;
done_testing();
