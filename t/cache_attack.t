#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# env_gateway_cache under attack: an answer that is not stored (too large
# for the zone, malformed, above max_record, a miss with negative_ttl=0)
# still drops the older entry of its key, so stale_if_error
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
use Time::HiRes qw(sleep time);


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

# negative_ttl=0 (misses never cached): a token deleted without a PUBLISH,
# answered "no such key" after its ttl, drops its stale copy all the same

{
    my $t = EnvGwTest->new;
    $t->start_redis;
    seed_env($t);
    $t->start_nginx(conf('zone=envgw:64k ttl=1s negative_ttl=0 '
                         . 'stale_if_error=5m'));
    ok(wait_subscribed($t, 1), 'negative_ttl=0: subscribed');

    my $T = raw_token('attack', 'deleted');
    mk_token($t, $T);
    is(cstatus($t->get('/x', $T)), 'MISS', 'negative_ttl=0: token cached');
    $t->redis->del(token_key($T));
    sleep 1.2;
    is($t->get('/x', $T)->{status}, 401,
       'negative_ttl=0: deleted, after ttl: 401');

    $t->stop_redis;
    unavailable($t->get('/x', $T), 'negative_ttl=0: Redis away, the '
                . 'deleted token is not served stale', retry_after => 1);
    $t->stop;
}

# a record Redis now holds malformed (or above max_record), answered 500
# after the ttl, drops the older valid copy: not served stale after

for my $case (['malformed', '{"token_id":'], ['oversized', 'x' x 70000]) {
    my ($what, $bad) = @$case;
    my $t = EnvGwTest->new;
    $t->start_redis;
    seed_env($t);
    my $c = conf('zone=envgw:1m ttl=1s negative_ttl=1s stale_if_error=5m');
    $c =~ s/read_timeout=500ms;/read_timeout=500ms max_record=64k;/
        or die "conf: no read_timeout";
    $t->start_nginx($c);
    ok(wait_subscribed($t, 1), "$what: subscribed");

    my $T = raw_token('attack', $what);
    mk_token($t, $T);
    is(cstatus($t->get('/x', $T)), 'MISS', "$what: token cached");
    $t->redis->set(token_key($T), $bad);
    sleep 1.2;
    is($t->get('/x', $T)->{status}, 500, "$what: after ttl: 500");
    like($t->slurp('error.log'), $what eq 'oversized'
         ? qr/is above max_record/ : qr/malformed record/,
         "$what: logged as such");

    $t->stop_redis;
    unavailable($t->get('/x', $T), "$what: Redis away, the older valid "
                . 'record is not served stale', retry_after => 1);
    unlike($t->slurp('error.log'), qr/serving stale/,
           "$what: no stale copy served");
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

# --- 3. one bucket of the smallest zone, through every removal ---------------
#
# A 32k zone has 128 buckets (one per 256 bytes).  Keys aimed at one bucket
# (murmur2 of the Redis key, as nginx computes it) go through a DEL +
# PUBLISH of a positive in the middle of its chain, negatives expiring on
# lookup, a positive dropping the bucket's oldest positive, the same key
# replaced after its ttl, and a whole-cache flush: every answer stays right.

{
    my $t = EnvGwTest->new;
    $t->start_redis;
    seed_env($t);
    $t->start_nginx(conf('zone=envgw:32k ttl=2s negative_ttl=1s'),
                    workers => 2);
    ok(wait_subscribed($t, 2), 'smallest zone: subscribed');

    my $buckets = 128;
    my $bucket_of = sub { murmur2(token_key($_[0])) % $buckets };
    my $aim = $bucket_of->(raw_token('aim', 0));
    my (@good, @bad);
    for (my $i = 0; @good < 9 || @bad < 12; $i++) {
        my $T = raw_token('aim', $i);
        next unless $bucket_of->($T) == $aim;
        if (@good < 9) { push @good, $T } else { push @bad, $T }
    }
    mk_token($t, $_) for @good;

    my $st = sub { join ' ', map { $t->get('/x', $_)->{status} } @_ };

    # positives and negatives mixed in the bucket, then one revoked
    is($st->(@good[0 .. 4], @bad[0 .. 5]), join(' ', (200) x 5, (401) x 6),
       'smallest zone: 5 good and 6 unknown tokens of one bucket');
    is($st->(@good[0 .. 4], @bad[0 .. 5]), join(' ', (200) x 5, (401) x 6),
       'smallest zone: ... again, from the cache');
    $t->redis->del(token_key($good[2]));
    $t->redis->publish($CHANNEL, token_key($good[2]));
    is($st->(@good[0 .. 4]), '200 200 401 200 200',
       'smallest zone: revoked in the middle of the chain: 401');

    # negatives expire and are removed on lookup; positives stay
    sleep 1.1;
    my $m0 = metrics($t);
    is($st->(@bad[0 .. 5], @good[0, 1, 3, 4]),
       join(' ', (401) x 6, (200) x 4),
       'smallest zone: after negative_ttl, answers unchanged');

    # nine positives for one bucket: the oldest are dropped, none is wrong
    mk_token($t, $good[2]);
    is($st->(@good, @good), join(' ', (200) x 18),
       'smallest zone: nine good tokens of one bucket: all 200');
    my $m1 = metrics($t);
    cmp_ok($m1->{'env_gateway_cache_entries{type="positive"}'}, '<=', 8,
           'smallest zone: at most 8 positives in the bucket');

    # the same keys replaced after their ttl; one revoked meanwhile
    sleep 2.1;
    $t->redis->del(token_key($good[5]));
    is($st->(@good), join(' ', (200) x 5, 401, (200) x 3),
       'smallest zone: after ttl, a token deleted without PUBLISH: 401');
    is($st->(@bad[6 .. 11]), join(' ', (401) x 6),
       'smallest zone: six more unknown tokens of the bucket: 401');

    # a whole-cache flush, then everything asked again and still right
    $t->redis->publish($CHANNEL, '*');
    my $ok = 0;
    my $end = time + 10;
    while (time < $end) {
        my $m = metrics($t);
        if (($m->{'env_gateway_cache_entries{type="positive"}'} // 1) == 0
            && ($m->{'env_gateway_cache_entries{type="negative"}'} // 1)
               == 0)
        {
            $ok = 1;
            last;
        }
        sleep 0.02;
    }
    ok($ok, 'smallest zone: the flush emptied the zone');
    mk_token($t, $good[5]);
    my $g0 = gets($t);
    is($st->(@good, @bad), join(' ', (200) x 9, (401) x 12),
       'smallest zone: after the flush, every answer right');
    cmp_ok(gets($t) - $g0, '>=', 21, 'smallest zone: ... each asked again');
    unlike($t->slurp('error.log'), qr/\[(?:alert|crit|emerg)\]|no memory/,
           'smallest zone: no alert, no "no memory"');
    $t->stop;
}

done_testing;
