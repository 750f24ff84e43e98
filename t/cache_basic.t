#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# env_gateway_cache: HIT/MISS through $env_gateway_cache_status, entries
# served within ttl without Redis, negative entries and negative_ttl, a
# PUBLISH on creation beating a negative entry, a flood of unknown tokens
# that cannot evict a good entry, LRU eviction of positives in a full zone
# (no [crit]), a HUP reload that keeps the zone, keys aimed at one bucket
# of the hash table (its chain stays short, answers stay right), and a
# reload to another Redis that empties the zone.

use strict;
use warnings;

use lib 't/lib';
use EnvGwTest;
use EnvGwCache;
use Test::More;
use Digest::SHA qw(sha256_hex);
use IO::Socket::INET;
use JSON::PP;
use Time::HiRes qw(time sleep);


# --- 1. statuses, HIT within ttl, negative entries, negative_ttl --------------

my $t = EnvGwTest->new;
$t->start_redis;
seed_env($t);
$t->start_nginx(conf('zone=envgw:1m ttl=30s negative_ttl=2s'), workers => 2);
ok(wait_subscribed($t, 2), 'both workers subscribed to envgw:invalidate');

my $T1 = raw_token('basic', 1);
my $T1_ID = mk_token($t, $T1);

{
    my $g0 = gets($t);
    my $r = $t->get('/x', $T1);
    is($r->{status}, 200, 'first request: 200');
    is(cstatus($r), 'MISS', 'first request: cache status MISS');
    is(backend_vars($r), "MISS|$T1_ID",
       'first request: backend sees MISS through X-Envgw-Vars');
    is(gets($t) - $g0, 1, 'first request: one GET');

    $g0 = gets($t);
    my @st;
    for (1 .. 10) {
        my $r2 = $t->get('/x', $T1);
        push @st, "$r2->{status} " . cstatus($r2) . ' ' . backend_vars($r2);
    }
    is_deeply(\@st, [ ("200 HIT HIT|$T1_ID") x 10 ],
              'ten more requests: 200 HIT, backend sees HIT');
    is(gets($t) - $g0, 0, 'warm token: no GET at all (both workers)');
}

# a DEL without a PUBLISH: still served within ttl
{
    $t->redis->del(token_key($T1));
    my $r = $t->get('/x', $T1);
    is($r->{status}, 200, 'deleted without PUBLISH: still 200 within ttl');
    is(cstatus($r), 'HIT', 'deleted without PUBLISH: HIT');
    mk_token($t, $T1);
}

# an unknown token repeated 50 times
{
    my $U = raw_token('unknown', 1);
    my $g0 = gets($t);
    my (%status, @cs);
    for (1 .. 50) {
        my $r = $t->get('/x', $U);
        $status{$r->{status}}++;
        push @cs, cstatus($r);
    }
    my $dg = gets($t) - $g0;
    is_deeply(\%status, { 401 => 50 }, 'unknown token x50: all 401');
    ok($dg <= 2, "unknown token x50: $dg GET(s) (at most one per worker)");
    diag("unknown token x50 cost $dg GET(s)");
    is($cs[0], 'MISS', 'unknown token: first lookup MISS');
    is_deeply([ @cs[1 .. 49] ], [ ('HIT') x 49 ],
              'unknown token: the next 49 are negative HITs');
}

# negative_ttl: created after a 401, refused while the negative entry lives
{
    my $N = raw_token('negative', 1);
    my $r = $t->get('/x', $N);
    is($r->{status}, 401, 'not yet created: 401');
    my $at = time;
    mk_token($t, $N);
    $r = $t->get('/x', $N);
    if (time - $at < 1.5) {
        is($r->{status}, 401,
           'created without PUBLISH: still 401 while the negative entry lives');
        is(cstatus($r), 'HIT', '... from the negative entry (HIT)');
    } else {
        pass('machine too slow to check inside negative_ttl') for 1 .. 2;
    }
    sleep 2.2;
    $r = $t->get('/x', $N);
    is($r->{status}, 200, 'after negative_ttl: 200');
    is(cstatus($r), 'MISS', 'after negative_ttl: MISS');
}

# account records are cached too: one GET for token + account, then none
{
    $t->account('acc_dev1', 'env_dev');
    my $A = raw_token('account', 1);
    mk_token($t, $A);
    my $g0 = gets($t);
    my $r = $t->get('/x?integrated_account_id=acc_dev1', $A);
    is($r->{status}, 200, 'token + account: 200');
    is(cstatus($r), 'MISS', 'token + account: MISS');
    is(gets($t) - $g0, 2, 'token + account: two GETs');
    $g0 = gets($t);
    $r = $t->get('/x?integrated_account_id=acc_dev1', $A);
    is(cstatus($r), 'HIT', 'token + account again: HIT');
    is(gets($t) - $g0, 0, 'token + account again: no GET');
    $r = $t->get('/x?integrated_account_id=acc_nx', $A);
    is($r->{status}, 404, 'unknown account: 404');
    is(cstatus($r), 'MISS', 'unknown account: MISS (token HIT, account MISS)');
    $g0 = gets($t);
    $r = $t->get('/x?integrated_account_id=acc_nx', $A);
    is($r->{status}, 404, 'unknown account again: 404');
    is(cstatus($r), 'HIT', 'unknown account again: negative HIT');
    is(gets($t) - $g0, 0, 'unknown account again: no GET');
}

# --- 1b. a PUBLISH for a newly created key makes it work at once -----------------
#
# negative_ttl=60s: a 200 within the 10 s polled comes from the PUBLISH,
# never from the negative entry's end (with section 1's 2 s, the poll had
# to end by 1.5 s, short for an ASan build on a loaded machine)

{
    my $p = EnvGwTest->new;
    $p->start_redis;
    seed_env($p);
    $p->start_nginx(conf('zone=envgw:1m ttl=60s negative_ttl=60s'),
                    workers => 2);
    ok(wait_subscribed($p, 2, 10), 'PUBLISH on creation: subscribed');
    my $P = raw_token('published', 1);
    is($p->get('/x', $P)->{status}, 401, 'before creation: 401');
    my $r = $p->get('/x', $P);
    is(cstatus($r), 'HIT', 'before creation: negative entry (HIT)');
    mk_token($p, $P);
    my $t0 = time;
    $p->redis->publish($CHANNEL, token_key($P));
    my ($ok, $dt);
    while (time - $t0 < 10) {
        $r = $p->get('/x', $P);
        if ($r->{status} == 200) { $ok = 1; $dt = time - $t0; last }
        sleep 0.005;
    }
    ok($ok, 'created and PUBLISHed: 200 long before negative_ttl (60 s)');
    diag(sprintf 'created + PUBLISH: 200 after %.1f ms', ($dt // 0) * 1000);
    is(cstatus($r), 'MISS', 'created and PUBLISHed: MISS (fetched anew)');
    $p->stop;
}

# --- 2. HUP reload keeps the zone -----------------------------------------------

{
    my $R = raw_token('reload', 1);
    mk_token($t, $R);
    is($t->get('/x', $R)->{status}, 200, 'before reload: 200');
    is(cstatus($t->get('/x', $R)), 'HIT', 'before reload: HIT');

    my @old = workers($t);
    is(scalar @old, 2, 'two workers before reload');
    my $m0 = metrics($t);
    $t->reload_nginx;
    my $end = time + 10;
    my @new;
    while (time < $end) {
        @new = workers($t);
        my %o = map { $_ => 1 } @old;
        last if @new == 2 && !grep { $o{$_} } @new;
        sleep 0.05;
    }
    my %o = map { $_ => 1 } @old;
    ok(@new == 2 && !grep({ $o{$_} } @new), 'reload: two new workers');
    ok(wait_subscribed($t, 2, 10), 'reload: new workers subscribed');
    sleep 0.1;

    my $g0 = gets($t);
    my $r = $t->get('/x', $R);
    is($r->{status}, 200, 'after reload: 200');
    is(cstatus($r), 'HIT', 'after reload: HIT');
    is(gets($t) - $g0, 0, 'after reload: no new GET');
    {
        my $m1 = metrics($t);
        is($m1->{env_gateway_cache_flushes_total}
           - $m0->{env_gateway_cache_flushes_total}, 0,
           'reload: no whole-cache flush');
    }
    my $m1 = metrics($t);
    ok($m1->{'env_gateway_cache_entries{type="positive"}'} >= 1,
       'reload: positive entries still in the zone');
    cmp_ok($m1->{'env_gateway_requests_total{result="allowed"}'}, '>=',
           $m0->{'env_gateway_requests_total{result="allowed"}'} + 1,
           'reload: counters kept over the reload');

    # the new workers still drop invalidated keys
    $t->redis->del(token_key($R));
    $t->redis->publish($CHANNEL, token_key($R));
    # cached for 30 s: only the PUBLISH refuses it within 10 s
    my $ok;
    my $t0 = time;
    while (time - $t0 < 10) {
        if ($t->get('/x', $R)->{status} == 401) { $ok = 1; last }
        sleep 0.005;
    }
    ok($ok, 'after reload: DEL + PUBLISH refuses the token');
}

$t->stop;

# --- 3. a flood of unknown tokens cannot evict a good entry -----------------------

{
    my $f = EnvGwTest->new;
    $f->start_redis;
    seed_env($f);
    $f->start_nginx(conf('zone=envgw:64k ttl=60s negative_ttl=60s'),
                    workers => 2);
    ok(wait_subscribed($f, 2), 'flood: subscribed');

    my $G = raw_token('good', 1);
    mk_token($f, $G);
    my @pos = map { raw_token('pos', $_) } 1 .. 10;
    mk_token($f, $_) for @pos;
    my $sock;
    is(ka_get($f, \$sock, '/x', $G)->{status}, 200, 'flood: good token 200');
    is(cstatus(ka_get($f, \$sock, '/x', $G)), 'HIT', 'flood: good token HIT');
    ka_get($f, \$sock, '/x', $_) for @pos;

    my $m0 = metrics($f);
    my (%st);
    for my $i (1 .. 2000) {
        my $r = ka_get($f, \$sock, '/x', raw_token('flood', $i));
        $st{$r->{status}}++;
    }
    is_deeply(\%st, { 401 => 2000 }, 'flood: 2000 unknown tokens, all 401');
    my $m1 = metrics($f);
    cmp_ok($m1->{env_gateway_cache_evictions_total}
           - $m0->{env_gateway_cache_evictions_total}, '>', 0,
           'flood: negatives were evicted (evictions_total rose)');
    diag('flood: evictions ' . ($m1->{env_gateway_cache_evictions_total}
         - $m0->{env_gateway_cache_evictions_total}) . ', negatives kept '
         . $m1->{'env_gateway_cache_entries{type="negative"}'} . ' ('
         . $m1->{'env_gateway_cache_bytes{type="negative"}'} . ' bytes)');
    cmp_ok($m1->{'env_gateway_cache_bytes{type="negative"}'}, '<=', 64 * 1024 / 4,
           'flood: negative entries within a quarter of the zone');
    is($m1->{'env_gateway_cache_entries{type="positive"}'}, 11,
       'flood: all 11 positive entries still cached');

    my $g0 = gets($f);
    my $r = $f->get('/x', $G);
    is($r->{status}, 200, 'after the flood: good token 200');
    is(cstatus($r), 'HIT', 'after the flood: good token HIT');
    is(backend_vars($r), 'HIT|' . 'tok_' . substr(sha256_hex($G), 0, 10),
       'after the flood: backend sees HIT');
    my @cs = map { cstatus($f->get('/x', $_)) } @pos;
    is_deeply(\@cs, [ ('HIT') x 10 ], 'after the flood: other positives HIT');
    is(gets($f) - $g0, 0, 'after the flood: no GET for the good tokens');

    # the newest unknown token is still a negative HIT
    $r = $f->get('/x', raw_token('flood', 2000));
    is($r->{status}, 401, 'newest flood token: 401');
    is(cstatus($r), 'HIT', 'newest flood token: negative HIT');
    close $sock if $sock;
    $f->stop;
}

# --- 4. a full zone evicts the least recently used positives ----------------------

{
    my $z = EnvGwTest->new;
    $z->start_redis;
    seed_env($z);
    $z->start_nginx(conf('zone=envgw:32k ttl=60s negative_ttl=60s'),
                    workers => 2);
    ok(wait_subscribed($z, 2), 'full zone: subscribed');

    my $H = raw_token('hot', 1);
    mk_token($z, $H);
    my @many = map { raw_token('many', $_) } 1 .. 400;
    mk_token($z, $_, note => 'x' x 100) for @many;

    my $sock;
    my $m0 = metrics($z);
    is(ka_get($z, \$sock, '/x', $H)->{status}, 200, 'full zone: hot token');
    my (%st, @hot);
    for my $i (0 .. $#many) {
        my $r = ka_get($z, \$sock, '/x', $many[$i]);
        $st{$r->{status}}++;
        if ($i % 10 == 0) {
            push @hot, cstatus(ka_get($z, \$sock, '/x', $H));
        }
    }
    is_deeply(\%st, { 200 => 400 }, 'full zone: 400 distinct tokens all 200');
    is_deeply(\@hot, [ ('HIT') x scalar @hot ],
              'full zone: the recently used token stays a HIT');
    my $m1 = metrics($z);
    my $ev = $m1->{env_gateway_cache_evictions_total}
             - $m0->{env_gateway_cache_evictions_total};
    cmp_ok($ev, '>', 0, "full zone: evictions_total rose ($ev)");
    my $n = $m1->{'env_gateway_cache_entries{type="positive"}'};
    ok($n > 10 && $n < 401, "full zone: $n positive entries fit");

    my $g0 = gets($z);
    my $r = $z->get('/x', $many[0]);
    is($r->{status}, 200, 'least recently used token: 200');
    is(cstatus($r), 'MISS', 'least recently used token: evicted (MISS)');
    $r = $z->get('/x', $many[-1]);
    is(cstatus($r), 'HIT', 'most recent token: HIT');
    $r = $z->get('/x', $H);
    is(cstatus($r), 'HIT', 'hot token: HIT');
    is(gets($z) - $g0, 1, 'only the evicted token cost a GET');

    # keep going well past the size: still serving, never [crit]
    my %st2;
    for my $i (401 .. 700) {
        my $T = raw_token('many', $i);
        mk_token($z, $T);
        $st2{ ka_get($z, \$sock, '/x', $T)->{status} }++;
    }
    is_deeply(\%st2, { 200 => 300 }, 'full zone: 300 more, all 200');
    unlike($z->slurp('error.log'), qr/\[crit\]|no memory/,
           'full zone: no [crit] and no "no memory" line');
    close $sock if $sock;
    $z->stop;
}

# --- 5. a record that can never fit must not empty the zone -------------------------

{
    my $z = EnvGwTest->new;
    $z->start_redis;
    seed_env($z);
    $z->start_nginx(conf('zone=envgw:64k ttl=60s negative_ttl=60s'));
    ok(wait_subscribed($z, 1), 'oversized record: subscribed');

    my @small = map { raw_token('small', $_) } 1 .. 10;
    mk_token($z, $_) for @small;
    # the environment name is kept in the cached blob: 60 KB can never fit
    # a 64k zone
    my $BIG = raw_token('big', 1);
    $z->token($BIG, token_id => 'tok_big', team_id => 'team_a',
              environment_id => 'env_dev', environment => 'd' x 60000);

    $z->get('/x', $_) for @small;
    is_deeply([ map { cstatus($z->get('/x', $_)) } @small ],
              [ ('HIT') x 10 ], 'oversized record: ten small tokens cached');
    my $m0 = metrics($z);
    my $r = $z->get('/x', $BIG);
    is($r->{status}, 200, 'oversized record: served (200)');
    is(cstatus($z->get('/x', $BIG)), 'MISS',
       'oversized record: not cacheable (MISS again)');
    {
        my $m1 = metrics($z);
        is($m1->{env_gateway_cache_evictions_total}
           - $m0->{env_gateway_cache_evictions_total}, 0,
           'oversized record: nothing evicted for it');
        is_deeply([ map { cstatus($z->get('/x', $_)) } @small ],
                  [ ('HIT') x 10 ],
                  'oversized record: the small tokens are still HITs');
    }
    $z->stop;
}

# --- 6. keys in one bucket: the chain stays short, answers stay right ----------------
#
# The zone is a hash table of 256 buckets at 64k (one per 256 bytes, a power
# of 2), keyed by nginx's murmur2 of the Redis key: a client that chooses
# its tokens (or account ids) can aim them all at one bucket.  A bucket
# keeps 8 entries, dropping its oldest negative for a new one; a negative
# never drops a positive, and every answer is still right.

{
    my $z = EnvGwTest->new;
    $z->start_redis;
    seed_env($z);
    $z->start_nginx(conf('zone=envgw:64k ttl=60s negative_ttl=60s'));
    ok(wait_subscribed($z, 1), 'one bucket: subscribed');

    my $buckets = 256;
    my $bucket_of = sub { murmur2(token_key($_[0])) % $buckets };
    my $G = raw_token('bucket', 'good');
    mk_token($z, $G);
    my @flood;
    for (my $i = 0; @flood < 20; $i++) {
        my $U = raw_token('bucket', $i);
        push @flood, $U if $bucket_of->($U) == $bucket_of->($G);
    }

    is(cstatus($z->get('/x', $G)), 'MISS', 'one bucket: good token cached');
    is(cstatus($z->get('/x', $G)), 'HIT', 'one bucket: good token HIT');
    my $m0 = metrics($z);
    is_deeply([ map { $z->get('/x', $_)->{status} } @flood ], [ (401) x 20 ],
              'one bucket: 20 unknown tokens of the same bucket: 401');
    my $m1 = metrics($z);
    my $ev = $m1->{env_gateway_cache_evictions_total}
             - $m0->{env_gateway_cache_evictions_total};
    is($ev, 13, 'one bucket: the 13 oldest negatives dropped (8 kept)');
    is(cstatus($z->get('/x', $G)), 'HIT',
       'one bucket: the good token is still a HIT');
    is_deeply([ map { cstatus($z->get('/x', $_)) } @flood[13 .. 19] ],
              [ ('HIT') x 7 ], 'one bucket: the 7 newest negatives HIT');
    my $r = $z->get('/x', $flood[0]);
    is($r->{status}, 401, 'one bucket: the oldest unknown token: 401');
    is(cstatus($r), 'MISS', 'one bucket: ... asked again (dropped)');

    # eight positives fill the bucket: a negative is then not stored
    my @good;
    for (my $i = 0; @good < 7; $i++) {
        my $T = raw_token('bucketgood', $i);
        push @good, $T if $bucket_of->($T) == $bucket_of->($G);
    }
    mk_token($z, $_) for @good;
    is_deeply([ map { $z->get('/x', $_)->{status} } @good ], [ (200) x 7 ],
              'one bucket: seven more good tokens: 200');
    is_deeply([ map { cstatus($z->get('/x', $_)) } $G, @good ],
              [ ('HIT') x 8 ], 'one bucket: eight positives, all HIT');
    is_deeply([ map { cstatus($z->get('/x', $flood[19])) } 1 .. 2 ],
              [ 'MISS', 'MISS' ],
              'one bucket: full of positives, a negative is not stored');
    is_deeply([ map { cstatus($z->get('/x', $_)) } $G, @good ],
              [ ('HIT') x 8 ], 'one bucket: the positives stay');
    unlike($z->slurp('error.log'), qr/\[(?:alert|crit|emerg)\]/,
           'one bucket: no alert');
    $z->stop;
}

# --- 7. a reload that points the gateway at another Redis empties the zone ---------
#
# A HUP reload keeps the zone (section 2), but records cached from one Redis
# are not those of another: the zone remembers the servers (db, Sentinels,
# Cluster, key prefix) it was filled from, and a reload to others empties
# it; a worker of the old configuration, still finishing, stores no more.

{
    my $z = EnvGwTest->new;
    $z->start_redis;
    seed_env($z);
    $z->start_nginx(conf('zone=envgw:1m ttl=60s negative_ttl=60s'),
                    workers => 2);
    ok(wait_subscribed($z, 2), 'other Redis: subscribed');

    my ($A, $B) = ($z->redis_port, EnvGwTest::free_port());
    my $T = raw_token('source', 'a');       # only in the first Redis
    my $U = raw_token('source', 'b');       # in both
    mk_token($z, $_) for $T, $U;
    is(cstatus($z->get('/x', $_)), 'MISS', 'other Redis: cached') for $T, $U;
    is(cstatus($z->get('/x', $T)), 'HIT', 'other Redis: HIT before');

    # the second Redis: the environment and one of the two tokens
    $z->spawn('redis_b', 'redis-server', '--port', $B, '--bind',
              '127.0.0.1', '--save', '', '--appendonly', 'no',
              '--dir', $z->{dir});
    EnvGwTest::wait_port($B) or die "second redis did not start";
    {
        local $z->{redis_port} = $B;
        delete $z->{redis};
        seed_env($z);
        mk_token($z, $U);
        delete $z->{redis};
    }

    my @old = workers($z);
    my $conf = $z->slurp('nginx.conf');
    $conf =~ s/127\.0\.0\.1:$A\b/127.0.0.1:$B/g or die "no redis line";
    open my $fh, '>', "$z->{dir}/nginx.conf" or die;
    print $fh $conf;
    close $fh;
    $z->reload_nginx;
    my %o = map { $_ => 1 } @old;
    my $end = time + 10;
    my @new;
    while (time < $end) {
        @new = workers($z);
        last if @new == 2 && !grep { $o{$_} } @new;
        sleep 0.05;
    }
    ok(@new == 2 && !grep({ $o{$_} } @new), 'other Redis: new workers');
    like($z->slurp('error.log'),
         qr/records' Redis or key prefix changed: emptying the cache zone/,
         'other Redis: the zone emptied, said at notice level');

    my $r = $z->get('/x', $T);
    is($r->{status}, 401, 'other Redis: a token it lacks: 401');
    is(cstatus($r), 'MISS', 'other Redis: ... not served from the zone');
    $r = $z->get('/x', $U);
    is($r->{status}, 200, 'other Redis: a token it has: 200');
    is(cstatus($r), 'MISS', 'other Redis: ... asked again');
    is(cstatus($z->get('/x', $U)), 'HIT', 'other Redis: then cached');
    $z->stop;
}

done_testing;
