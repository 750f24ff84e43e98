#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# Metrics an operator reads: env_gateway_requests_total by environment (the
# token's environment name; "" before a token is known; label values
# escaped; at most 16 names, the rest folded into "other"),
# env_gateway_redis_up (1, 0 while Redis is stopped, 1 again),
# env_gateway_redis_lookup_duration_seconds (a histogram of the lookups
# asked of Redis), the last-use writer's counters, and `promtool check
# metrics` clean on the whole exposition (when promtool is installed:
# Debian's prometheus package).

use strict;
use warnings;

use lib 't/lib';
use EnvGwTest;
use Test::More;
use Digest::SHA qw(sha256_hex);
use Time::HiRes qw(time sleep);

my $t = EnvGwTest->new;
$t->start_redis;

$t->start_nginx(<<'CONF', workers => 2);
    env_gateway_redis 127.0.0.1:%%REDIS%% connect_timeout=200ms read_timeout=500ms;
    env_gateway_cache zone=envgw:1m;
    server {
        listen 127.0.0.1:%%PORT%%;
        location / {
            env_gateway on;
            proxy_pass http://127.0.0.1:%%BACKEND%%;
        }
        location = /metrics { env_gateway_metrics; }
    }
CONF

sub tok {
    my ($n, $env) = @_;
    return $t->token('egw_m_' . substr(sha256_hex("metrics-$n"), 0, 32),
                     token_id => "tok_m_$n", team_id => 'team_a',
                     environment_id => "env_$n", environment => $env);
}

sub scrape { return $t->http('GET', '/metrics')->{body} }

sub value { return EnvGwTest::series_value(@_) }

sub req { my ($k) = @_; return $t->get('/x', $k)->{status} }

# --- requests by environment -------------------------------------------------

my $dev = tok('dev', 'development');
my $stg = tok('stg', 'staging');
my $odd = tok('odd', 'qa "blue"\\edge');
my $nl  = tok('nl', "two\nlines");

is(req($dev), 200, 'development token: 200') for 1 .. 3;
is(req($stg), 200, 'staging token: 200') for 1 .. 2;
is(req($odd), 200, 'odd name: 200');
# a newline would end an identity header line: the record is malformed
is(req($nl), 500, 'name with a newline: 500 (a malformed record)');
is(req(undef), 401, 'no token: 401') for 1 .. 2;
is(req('egw_unknown_0123456789abcdef0123456789'), 401, 'unknown token: 401');

my $m = scrape();
my $R = 'env_gateway_requests_total';
is(value($m, qq/$R\{environment="development",result="allowed"}/), 3,
   'development: 3 allowed');
is(value($m, qq/$R\{environment="staging",result="allowed"}/), 2,
   'staging: 2 allowed');
is(value($m, qq/$R\{environment="development",result="invalid_token"}/), 0,
   'every result of a seen environment is present');
is(value($m, qq/$R\{environment="",result="missing_token"}/), 2,
   'no token: environment=""');
is(value($m, qq/$R\{environment="",result="invalid_token"}/), 1,
   'unknown token: environment=""');
is(value($m, qq/$R\{environment="qa \\"blue\\"\\\\edge",result="allowed"}/),
   1, 'quotes and backslash escaped in the label value');
is(value($m, qq/$R\{environment="",result="gateway_misconfigured"}/), 1,
   'the malformed record: environment="" (no name was read)');
ok(!grep({ /^$R\{result=/ } split /\n/, $m), 'no series without environment');

# 16 names at most; the rest is "other"
my @more = map { tok("e$_", sprintf('env%02d', $_)) } 1 .. 15;
is(req($_), 200, 'one more environment: 200') for @more;
$m = scrape();
my %envs = map { /^$R\{environment="((?:[^"\\]|\\.)*)",/ ? ($1 => 1) : () }
           split /\n/, $m;
is(scalar(grep { $_ ne '' && $_ ne 'other' } keys %envs), 16,
   '16 environment names');
ok(exists $envs{other}, '... and "other"');
is(value($m, qq/$R\{environment="other",result="allowed"}/), 2,
   'the 2 names beyond 16 are counted as "other"');
my $named = grep { defined value($m, qq/$R\{environment="$_",result="allowed"}/) }
            map { sprintf 'env%02d', $_ } 1 .. 15;
is($named, 13, '... 13 of the 15 new names have their own label');
my $sum = 0;
$sum += $_ for map { /^$R\{.*result="allowed"\} (\d+)$/ ? $1 : () }
               split /\n/, $m;
is($sum, 3 + 2 + 1 + 15, 'allowed, summed over environments: every one');

# --- Redis: up, lookup durations ---------------------------------------------

is(value($m, 'env_gateway_redis_up'), 1, 'redis_up: 1');
my $L = 'env_gateway_redis_lookup_duration_seconds';
my $count = value($m, "${L}_count");
cmp_ok($count, '>=', 20, "lookup durations: $count lookups (one per token "
       . 'not cached, at least)');
is(value($m, qq/${L}_bucket{le="+Inf"}/), $count, '+Inf bucket = count');
ok(defined value($m, qq/${L}_bucket{le="0.000100"}/)
   && defined value($m, qq/${L}_bucket{le="1.000000"}/),
   'buckets from 0.1 ms to 1 s');
my @b = map { /^${L}_bucket\{le="[^"]+"\} (\d+)$/ ? $1 : () } split /\n/, $m;
is(scalar @b, 14, '13 buckets and +Inf');
is_deeply([ sort { $a <=> $b } @b ], \@b, 'cumulative buckets');
like(value($m, "${L}_sum") // '', qr/^\d+\.\d{6}$/, 'the sum in seconds');
like($m, qr/^# TYPE $L histogram$/m, 'a histogram');
for (qw(writes dropped errors)) {
    ok(defined value($m, "env_gateway_last_used_${_}_total"),
       "env_gateway_last_used_${_}_total present");
}

# --- promtool ------------------------------------------------------------------

SKIP: {
    my $promtool = `command -v promtool 2>/dev/null`;
    chomp $promtool;
    skip 'promtool not installed (Debian package prometheus)', 2
        unless $promtool;
    my $f = $t->dir . '/metrics.txt';
    open my $fh, '>', $f or die;
    print $fh $m;
    close $fh;
    my $out = `$promtool check metrics < $f 2>&1`;
    is($? >> 8, 0, 'promtool check metrics: exit 0') or diag($out);
    is($out, '', 'promtool check metrics: no problem reported')
        or diag($out);
}

# --- Redis stopped, then back ------------------------------------------------

$t->stop_redis;
my $up;
my $end = time + 10;
while (time < $end) {
    # each worker answers for its own connection: both must say 0
    my @v = map { value(scrape(), 'env_gateway_redis_up') } 1 .. 4;
    $up = join ',', @v;
    last if $up eq '0,0,0,0';
    sleep 0.05;
}
is($up, '0,0,0,0', 'Redis stopped: redis_up 0');

$t->start_redis;
$end = time + 10;
while (time < $end) {
    my @v = map { value(scrape(), 'env_gateway_redis_up') } 1 .. 4;
    $up = join ',', @v;
    last if $up eq '1,1,1,1';
    sleep 0.05;
}
is($up, '1,1,1,1', 'Redis back: redis_up 1');

$t->stop;
done_testing();
