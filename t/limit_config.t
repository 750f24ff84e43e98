#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# env_gateway_limit_zone and env_gateway_limit at `nginx -t`: good forms
# pass; a bad rate, an unknown key, a bad burst, a limit without the zone,
# bad zone parameters fail with an [emerg] naming the directive and the
# line.  Then a full zone: a zone far too small for the keys in use evicts
# the oldest counters (counted), never refuses or fails a request, and a
# key kept busy stays limited.

use strict;
use warnings;

use lib 't/lib';
use EnvGwTest;
use EnvGwLimit;
use Test::More;

my $t = EnvGwTest->new;

my $REDIS = 'env_gateway_redis 127.0.0.1:6379;';
my $ZONE = 'env_gateway_limit_zone zone=envgw_limits:1m;';

sub loc { EnvGwTest::location_conf($_[0], $_[1] // "$REDIS\n    $ZONE") }

sub bad {
    my ($name, $http, $directive, $re) = @_;
    my ($rc, $out, $path, $line) = $t->check_conf($http);
    my ($emerg) = $out =~ /^(.*\[emerg\].*)$/m;
    $emerg //= '';
    isnt($rc, 0, "$name: nginx -t fails");
    like($emerg, $re, "$name: says what is wrong") or diag($out);
    like($emerg, qr/\Q$directive\E/, "$name: names $directive");
    like($emerg, qr/ in \Q$path\E:\Q$line\E$/, "$name: points at the line")
        or diag($emerg);
}

# --- good ------------------------------------------------------------------

$t->conf_ok("rates of every form", loc(<<'L'));
            env_gateway on;
            env_gateway_limit token 10r/s;
            env_gateway_limit token 500r/10s burst=50;
            env_gateway_limit account 100r/m;
            env_gateway_limit tenant 1000r/h;
            env_gateway_limit environment 20000r/m burst=0;
            env_gateway_limit team 5r/500ms;
            env_gateway_limit team 1000000r/d;
L
$t->conf_ok("sync=redis with an interval", loc('env_gateway on;
            env_gateway_limit token 1r/s;', "$REDIS
    env_gateway_limit_zone zone=l:64k sync=redis sync_interval=250ms;"));
$t->conf_ok("limits at http and server level", <<"H");
    $REDIS
    $ZONE
    env_gateway_limit environment 100r/s;
    server {
        listen 127.0.0.1:8080;
        env_gateway_limit team 1000r/s;
        location / { env_gateway on; return 200; }
    }
H

# --- bad -------------------------------------------------------------------

my %rates = ('10' => 'no unit', '10r' => 'no window', '10r/' => 'empty window',
             'r/s' => 'no number', '0r/s' => 'zero', '10r/x' => 'bad unit',
             '10r/0s' => 'zero window', '10r/8d' => 'window above 7d',
             '-1r/s' => 'negative', '10/s' => 'no r',
             '2000000000r/s' => 'too many');
for my $rate (sort keys %rates) {
    bad("rate $rate ($rates{$rate})",
        loc("env_gateway on;\n            env_gateway_limit token $rate; # <-"),
        'env_gateway_limit', qr/invalid rate "\Q$rate\E"/);
}

bad('unknown key', loc("env_gateway on;\n"
    . "            env_gateway_limit user 10r/s; # <-"),
    'env_gateway_limit', qr/unknown key "user"/);
bad('bad burst', loc("env_gateway on;\n"
    . "            env_gateway_limit token 10r/s burst=x; # <-"),
    'env_gateway_limit', qr/invalid burst "burst=x"/);
bad('unknown parameter', loc("env_gateway on;\n"
    . "            env_gateway_limit token 10r/s delay=5; # <-"),
    'env_gateway_limit', qr/unknown parameter "delay=5"/);
bad('limit without the zone', loc("env_gateway on;\n"
    . "            env_gateway_limit token 10r/s; # <-", $REDIS),
    'env_gateway_limit', qr/needs "env_gateway_limit_zone"/);

for my $case (['zone=l', qr/invalid zone "zone=l"/],
              ['zone=l:x', qr/invalid zone size/],
              ['zone=l:1k', qr/too small/],
              ['zone=l:1m sync=cluster', qr/unknown parameter "sync=cluster"/],
              ['zone=l:1m sync_interval=0', qr/invalid time/],
              ['sync=redis', qr/needs zone=name:size/]) {
    bad("zone $case->[0]", loc('env_gateway on;', "$REDIS
    env_gateway_limit_zone $case->[0]; # <-"),
        'env_gateway_limit_zone', $case->[1]);
}
bad('zone twice', loc('env_gateway on;', "$REDIS
    $ZONE
    env_gateway_limit_zone zone=other:1m; # <-"),
    'env_gateway_limit_zone', qr/is duplicate/);

# --- a full zone -------------------------------------------------------------

$t->start_redis;
$t->start_nginx(<<'CONF');
    env_gateway_redis 127.0.0.1:%%REDIS%%;
    env_gateway_limit_zone zone=envgw_limits:32k;

    server {
        listen 127.0.0.1:%%PORT%%;
        location / {
            env_gateway on;
            env_gateway_limit token 3r/h;
            proxy_pass http://127.0.0.1:%%BACKEND%%;
        }
        location = /env_gateway/metrics { env_gateway_metrics; }
    }
CONF

# far more keys than 32k holds, long ids; the busy token is used between
# every few of them, and stays limited
my $busy = limit_token($t, 'busy');
my @st = map { $t->get('/x', $busy)->{status} } 1 .. 3;
is("@st", '200 200 200', 'full zone: the busy token\'s quota');

my (%seen, $busy_ok);
$busy_ok = 1;
for my $i (1 .. 400) {
    my $raw = limit_token($t, "many$i", token_id => "tok_many_$i" . ('x' x 200));
    $seen{ $t->get('/x', $raw)->{status} }++;
    if ($i % 10 == 0) {
        $busy_ok = 0 if $t->get('/x', $busy)->{status} != 429;
    }
}
is(join(',', sort keys %seen), '200',
   'full zone: every new key passes its first request (no refusal, no 5xx)')
    or diag(explain \%seen);
ok($busy_ok, 'full zone: the busy token stays limited');
my $ev = metric($t, 'env_gateway_rate_limit_evictions_total') // 0;
ok($ev > 0, "full zone: $ev counters evicted, and counted");
unlike($t->slurp('error.log'), qr/no room for a rate limit counter/,
       'full zone: never without room');

$t->stop;
done_testing();
