#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# Sizing numbers for docs/deployment.md (make cluster-sizing):
#
#  1. cache zone: a gateway with "env_gateway_cache zone=...:1m"; distinct
#     tokens are requested until the zone evicts; env_gateway_cache_entries
#     and env_gateway_cache_bytes are read from env_gateway_metrics before
#     the first eviction and at capacity.
#  2. Redis memory: INFO memory used_memory before and after writing
#     N token records as envgw writes them (token:<sha256> JSON,
#     token_id:<id> -> sha256, SADD tokens:<env>), extrapolated to 10^6.
#
# Everything runs on free loopback ports in a temp dir (EnvGwTest).

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/../t/lib";
use EnvGwTest;
use Digest::SHA qw(sha256_hex);
use JSON::PP;
use Test::More ();    # EnvGwTest::stop reports through Test::More

my $N_REDIS = $ENV{SIZING_REDIS_TOKENS} || 100_000;
my $MAX_CACHE = $ENV{SIZING_CACHE_TOKENS} || 8000;

my $t = EnvGwTest->new(no_log_check => 1);
$t->start_redis;
my $r = $t->redis;

sub record {
    my ($i, $env) = @_;
    return $EnvGwTest::JSON->encode({
        token_id => sprintf('tok_%012x', $i), team_id => 'team_4f1c2a',
        environment_id => $env, environment => 'production',
        kind => 'data', expires_at => 1830000000 + $i,
        revoked => JSON::PP::false, created_at => 1790000000 + $i,
    });
}

# --- 2. Redis memory per token ------------------------------------------------

my $used = sub { $r->info('memory')->{used_memory} };
$r->flushall;
my $m0 = $used->();
for my $i (1 .. $N_REDIS) {
    my $env = 'env_' . ($i % 10);
    my $sha = sha256_hex("sizing-token-$i");
    $r->set("envgw:token:$sha", record($i, $env), sub {});
    $r->wait_all_responses if $i % 1000 == 0;
}
$r->wait_all_responses;
my $m1 = $used->();
for my $i (1 .. $N_REDIS) {
    my $env = 'env_' . ($i % 10);
    my $sha = sha256_hex("sizing-token-$i");
    my $id = sprintf('tok_%012x', $i);
    $r->set("envgw:token_id:$id", "\"$sha\"", sub {});
    $r->sadd("envgw:tokens:$env", $id, sub {});
    $r->wait_all_responses if $i % 1000 == 0;
}
$r->wait_all_responses;
my $m2 = $used->();
my $reclen = length record(1, 'env_1');

printf "Redis %s, %d tokens, record JSON %d bytes\n",
    $r->info('server')->{redis_version}, $N_REDIS, $reclen;
printf "  token:<sha256> records only: %.0f bytes/token -> %.0f MB per million\n",
    ($m1 - $m0) / $N_REDIS, ($m1 - $m0) / $N_REDIS * 1e6 / 2**20;
printf "  + envgw indexes (token_id:<id>, tokens:<env>): %.0f bytes/token -> %.0f MB per million\n",
    ($m2 - $m0) / $N_REDIS, ($m2 - $m0) / $N_REDIS * 1e6 / 2**20;

# --- 1. cache zone entries per MB -----------------------------------------------

$r->flushall;
$t->env("env_$_", 'team_4f1c2a', 'production') for 0 .. 9;
for my $i (1 .. $MAX_CACHE) {
    my $env = 'env_' . ($i % 10);
    $r->set('envgw:token:' . sha256_hex("cache-token-$i"), record($i, $env),
            sub {});
}
$r->wait_all_responses;

$t->start_nginx(<<'CONF');
    env_gateway_redis 127.0.0.1:%%REDIS%%;
    env_gateway_cache zone=sizing:1m ttl=10m negative_ttl=5s;
    server {
        listen 127.0.0.1:%%PORT%%;
        location / { env_gateway on; proxy_pass http://127.0.0.1:%%BACKEND%%; }
        location = /metrics { env_gateway_metrics; }
    }
CONF

sub metrics {
    my %m;
    for (split /\n/, $t->get('/metrics')->{body}) {
        $m{$1} = $2 if /^(\S+)\s+(\S+)$/;
    }
    return \%m;
}

my ($before, $full);
for my $i (1 .. $MAX_CACHE) {
    my $res = $t->get('/', "cache-token-$i");
    die "request $i: $res->{status}\n" unless $res->{status} == 200;
    if ($i % 100 == 0) {
        my $m = metrics();
        if (($m->{env_gateway_cache_evictions_total} // 0) == 0) {
            $before = $m;
        } else {
            $full = $m;
            last if $i > 1.2 * ($before->{'env_gateway_cache_entries{type="positive"}'} || 0);
        }
    }
}
$full ||= metrics();

my $e = 'env_gateway_cache_entries{type="positive"}';
my $b = 'env_gateway_cache_bytes{type="positive"}';
printf "cache zone 1m (token records of %d JSON bytes, plus 10 env records)\n",
    $reclen;
printf "  before the first eviction: %d entries, %d bytes accounted "
     . "(%.0f bytes/entry)\n", $before->{$e}, $before->{$b},
     $before->{$b} / $before->{$e};
printf "  at capacity (evicting LRU): %d entries, %d bytes accounted, "
     . "%d evictions\n", $full->{$e}, $full->{$b},
     $full->{env_gateway_cache_evictions_total};
printf "  => about %d entries per MB of zone (slab rounding included)\n",
    $full->{$e};

$t->stop;
