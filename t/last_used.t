#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# The gateway records token use: <prefix>last_used:<token_id> = Unix
# seconds, written from a timer (env_gateway_last_used interval=), at most
# once per token and interval per worker, the interval's tokens in one
# pipeline (seen with redis MONITOR), and shown by `envgw token list`.
# The table is bounded (entries=: the rest of the interval is dropped and
# counted); a read-only replica's refusal is logged once and never touches
# requests; "off" writes nothing.

use strict;
use warnings;

use lib 't/lib';
use EnvGwTest;
use EnvGwCli;
use Test::More;
use IO::Socket::INET;
use JSON::PP;
use Time::HiRes qw(time sleep);

sub conf {
    my ($lu, $redis) = @_;
    $redis //= '%%REDIS%%';
    return <<"CONF";
    env_gateway_redis 127.0.0.1:$redis;
    env_gateway_cache zone=envgw:1m;
    $lu
    server {
        listen 127.0.0.1:%%PORT%%;
        location / {
            env_gateway on;
            proxy_pass http://127.0.0.1:%%BACKEND%%;
        }
        location = /metrics { env_gateway_metrics; }
    }
CONF
}

# MONITOR on a Redis: what it was asked from now on
sub monitor {
    my ($port) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port",
                                  Proto => 'tcp') or die "monitor: $!";
    print $s "MONITOR\r\n";
    my $ok = <$s>;
    die "MONITOR: $ok" unless $ok =~ /^\+OK/;
    $s->blocking(0);
    return { s => $s, buf => '' };
}

# the SETs of last_used keys seen so far: [time, client, key, value]
sub sets {
    my ($m) = @_;
    while (1) {
        my $n = sysread($m->{s}, my $chunk, 65536);
        last unless $n;
        $m->{buf} .= $chunk;
    }
    my @r;
    for (split /\r\n/, $m->{buf}) {
        next unless /^\+(\d+\.\d+) \[\d+ (\S+)\] "SET" "([^"]*last_used:[^"]*)" "(\d+)"$/i;
        push @r, [ $1, $2, $3, $4 ];
    }
    return @r;
}

sub metric {
    my ($t, $name) = @_;
    my $b = $t->http('GET', '/metrics')->{body};
    return $b =~ /^\Q$name\E (\d+)$/m ? $1 : undef;
}

# --- 1. written, at most once per token and interval, one pipeline -----------

{
    my $t = EnvGwTest->new;
    $t->start_redis;
    my $c = EnvGwCli->new($t);
    $c->ok_run('env', 'env', 'create', '--team', 'team_a', '--id', 'env_dev',
               'development');
    my $A = $c->json('token', 'create', 'env_dev');
    my $B = $c->json('token', 'create', 'env_dev');
    my $N = $c->json('token', 'create', 'env_dev');
    like($A->{token} // '', qr/^egw_/, 'a token');

    $t->start_nginx(conf('env_gateway_last_used interval=1s;'));
    my $mon = monitor($t->redis_port);

    my $t0 = int time;
    my ($ok, $n) = (0, 0);
    my ($a_first, $a_done, $b_first, $b_done);
    for my $i (1 .. 35) {
        $n++;
        $a_first //= time;
        $ok++ if $t->get('/x', $A->{token})->{status} == 200;
        $a_done = time;
        if ($i <= 5) {
            $n++;
            $b_first //= time;
            $ok++ if $t->get('/x', $B->{token})->{status} == 200;
            $b_done = time;
        }
        sleep 0.1;
    }
    is($ok, $n, "$n requests: 200");

    # the last interval written: a SET of A run after its last request was
    # answered, and every SET acknowledged (the metric counts the replies
    # read); at least 1.3 s as before, at most 10 s (an ASan worker's
    # interval timer fires late on a loaded machine)
    my $A_KEY = "envgw:last_used:$A->{token_id}";
    my @s = sets($mon);
    while (time < $a_done + 10) {
        last if time >= $a_done + 1.3
            && grep({ $_->[2] eq $A_KEY && $_->[0] > $a_done } @s)
            && (metric($t, 'env_gateway_last_used_writes_total') // -1) == @s;
        sleep 0.05;
        @s = sets($mon);
    }
    my $t1 = time;

    my @a = grep { $_->[2] eq $A_KEY } @s;
    my @b = grep { $_->[2] eq "envgw:last_used:$B->{token_id}" } @s;
    cmp_ok(scalar @a, '>=', 3, 'token A written in each interval it was '
           . 'used (' . scalar(@a) . ' SETs)');
    # one SET an interval at most: the intervals the requests spanned, and
    # the one after (6 for the 3.5 s this loop takes on a quiet machine)
    cmp_ok(scalar @a, '<=', int($a_done - $a_first) + 3,
           sprintf '... never once per request (35 requests in %.1f s)',
           $a_done - $a_first);
    my @gaps = map { $a[$_][0] - $a[$_ - 1][0] } 1 .. $#a;
    is(scalar(grep { $_ < 0.9 } @gaps), 0,
       'at most one write per token per 1 s interval (gaps: '
       . join(', ', map { sprintf '%.2f', $_ } @gaps) . ')');
    cmp_ok(scalar @b, '>=', 1, 'token B written');
    cmp_ok(scalar @b, '<=', int($b_done - $b_first) + 2,
           sprintf '... once an interval at most: 5 requests in %.1f s',
           $b_done - $b_first);
    ok(!grep({ $_->[2] =~ /\Q$N->{token_id}\E/ } @s),
       'a token not used: never written');
    # B's first SET went in the same pipeline as one of A's
    my ($pair) = grep { abs($_->[0] - $b[0][0]) < 0.005
                        && $_->[1] eq $b[0][1] } @a;
    ok($pair, 'the interval\'s tokens in one pipeline, on the lookup '
       . 'connection');
    like($a[-1][3], qr/^\d+$/, 'the value: Unix seconds');
    ok($a[-1][3] >= $t0 && $a[-1][3] <= $t1, '... of the last use');

    my $v = $t->redis->get("envgw:last_used:$A->{token_id}");
    is($v, $a[-1][3], 'GET last_used:<token_id>: the last written');
    ok($v >= $a_done + 1.3 - 3, 'a recent time');
    is(metric($t, 'env_gateway_last_used_writes_total'), scalar @s,
       'env_gateway_last_used_writes_total: every SET acknowledged');

    my $rows = { map { $_->{token_id} => $_ }
                 @{ $c->json('token', 'list', 'env_dev') } };
    is($rows->{ $A->{token_id} }{last_used_at}, $v,
       'envgw token list: last_used_at of A');
    ok(defined $rows->{ $B->{token_id} }{last_used_at},
       'envgw token list: last_used_at of B');
    ok(!defined $rows->{ $N->{token_id} }{last_used_at},
       'envgw token list: none for a token not used');
    my $text = $c->ok_run('token list', 'token', 'list', 'env_dev')->{out};
    like($text, qr/^\Q$A->{token_id}\E\s+data\s+active\s+\S+\s+\S+\s+\d{4}-\d\d-\d\dT[\d:]+Z\s/m,
         'envgw token list (text): A\'s last use as a time');
    $t->stop;
}

# --- 2. bounded: entries=2, the third token of an interval dropped -----------

{
    my $t = EnvGwTest->new;
    $t->start_redis;
    $t->env('env_dev', 'team_a', 'development');
    my @tok = map {
        $t->token("egw_bounded_${_}_0123456789abcdef012345",
                  token_id => "tok_b$_", team_id => 'team_a',
                  environment_id => 'env_dev', environment => 'development')
    } 1 .. 3;
    $t->start_nginx(conf('env_gateway_last_used interval=1s entries=2;'));
    my $mon = monitor($t->redis_port);
    my $end = time + 2.5;
    while (time < $end) {
        is($t->get('/x', $_)->{status}, 200, 'bounded table: 200') for @tok;
        sleep 0.05;
    }
    sleep 1.3;
    my @s = sets($mon);
    # group the SETs by flush (a flush's SETs arrive together)
    my @flush;
    for (@s) {
        if (@flush && $_->[0] - $flush[-1][-1][0] < 0.2) {
            push @{ $flush[-1] }, $_;
        } else {
            push @flush, [ $_ ];
        }
    }
    cmp_ok(scalar @flush, '>=', 2, scalar(@flush) . ' flushes');
    is(scalar(grep { @$_ > 2 } @flush), 0, 'never more than 2 tokens a flush');
    cmp_ok(metric($t, 'env_gateway_last_used_dropped_total'), '>=', 1,
           'env_gateway_last_used_dropped_total counts the rest');
    $t->stop;
}

# --- 3. a read-only replica: logged once, requests untouched -----------------

{
    my $t = EnvGwTest->new;
    my $master = $t->start_redis;
    $t->env('env_dev', 'team_a', 'development');
    my $T = $t->token('egw_replica_0123456789abcdef0123456789',
                      token_id => 'tok_replica', team_id => 'team_a',
                      environment_id => 'env_dev',
                      environment => 'development');

    my $rport = EnvGwTest::free_port();
    $t->spawn('replica', 'redis-server', '--port', $rport, '--bind',
              '127.0.0.1', '--save', '', '--appendonly', 'no',
              '--daemonize', 'no', '--dir', $t->dir,
              '--dbfilename', 'replica.rdb', '--replicaof', '127.0.0.1',
              $master);
    EnvGwTest::wait_port($rport) or die 'no replica';
    my $synced;
    for (1 .. 100) {
        my $out = `redis-cli -p $rport get envgw:env:env_dev 2>/dev/null`;
        last if ($synced = $out =~ /env_dev/);
        sleep 0.1;
    }
    ok($synced, 'the replica has the records');

    $t->start_nginx(conf('env_gateway_last_used interval=1s;', $rport));
    my ($ok, $n) = (0, 0);
    my $end = time + 3.5;
    while (time < $end) {
        $n++;
        $ok++ if $t->get('/x', $T)->{status} == 200;
        sleep 0.05;
    }
    is($ok, $n, "replica: $n requests, every one 200");
    my @lines = grep { /refused to record a token's last use/ }
                split /\n/, $t->slurp('error.log');
    is(scalar @lines, 1, 'the refusal logged once (3 intervals)')
        or diag(join "\n", @lines);
    like($lines[0] // '', qr/\[warn\].*"READONLY [^"]*"; not writing last uses for 300 s/,
         '... at warn, with Redis\' words and the pause');
    unlike($lines[0] // '', qr/egw_/, '... no token in it');
    is(metric($t, 'env_gateway_last_used_errors_total'), 1,
       'env_gateway_last_used_errors_total: 1 (then no more writes)');
    is(metric($t, 'env_gateway_last_used_writes_total'), 0,
       'env_gateway_last_used_writes_total: 0');
    is(`redis-cli -p $master exists envgw:last_used:tok_replica`, "0\n",
       'nothing written');
    $t->stop;
}

# --- 4. off ------------------------------------------------------------------

{
    my $t = EnvGwTest->new;
    $t->start_redis;
    $t->env('env_dev', 'team_a', 'development');
    my $T = $t->token('egw_off_0123456789abcdef0123456789ab',
                      token_id => 'tok_off', team_id => 'team_a',
                      environment_id => 'env_dev',
                      environment => 'development');
    $t->start_nginx(conf('env_gateway_last_used off;'));
    my $mon = monitor($t->redis_port);
    my $end = time + 2;
    while (time < $end) {
        is($t->get('/x', $T)->{status}, 200, 'off: 200');
        sleep 0.1;
    }
    is(scalar(my @s = sets($mon)), 0, 'off: no SET');
    $t->stop;
}

# --- 5. the directive's values -----------------------------------------------

{
    my $t = EnvGwTest->new;
    for (['interval=500ms', qr/invalid interval=/],
         ['entries=0', qr/invalid entries=/],
         ['backoff=0', qr/invalid backoff=/],
         ['every=1s', qr/invalid parameter "every=1s"/])
    {
        my ($rc, $out) = $t->check_conf(
            "env_gateway_redis 127.0.0.1:6379;\n"
            . "env_gateway_last_used $_->[0]; # <-\n");
        isnt($rc, 0, "env_gateway_last_used $_->[0]: refused");
        like($out, $_->[1], '... saying why');
    }
    my ($rc, $out) = $t->check_conf(
        "env_gateway_redis 127.0.0.1:6379;\n"
        . "env_gateway_last_used interval=2m entries=100 backoff=1h;\n");
    is($rc, 0, 'interval=2m entries=100 backoff=1h: accepted') or diag($out);
    ($rc, $out) = $t->check_conf(
        "env_gateway_redis 127.0.0.1:6379;\n"
        . "env_gateway_last_used off;\nenv_gateway_last_used off;\n");
    like($out, qr/is duplicate/, 'twice: duplicate');
}

done_testing();
