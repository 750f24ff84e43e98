#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# An edge cluster on loopback.  A Redis primary P with replicas R1
# and R2; gateways G1 (reads R1, then P), G2 (R2, then P), G3 (P, then R1),
# each its own nginx with its own backend; a plain nginx load balancer in
# front.  envgw writes to P; its invalidations reach the gateways subscribed
# on the replicas through replication.
#
#   1. revocation on P -> 401 from every gateway: latency distribution over
#      many revocations (p50/p99/max per gateway), max < 100 ms
#   2. replica R1 stopped -> G1 fails over to P and keeps serving
#   3. primary P stopped -> G1/G2 keep serving from replicas, G3 fails over
#   4. every Redis stopped -> cached entries serve, cold keys get 503
#   5. (Sentinel discovery, when the module supports the directive)
# Throughout: every line of every backend log is checked against an oracle
# (known token, its environment, an account of that environment, a revoked
# token never after the gateway refused it, nothing unknown).

use strict;
use warnings;

use lib 't/lib';
use EnvGwTest;
use EnvGwCluster;
use Test::More;
use JSON::PP;
use Time::HiRes qw(sleep time);
use IO::Socket::INET;
use POSIX ();

my $N_REVOKE = $ENV{ENVGW_CLUSTER_REVOCATIONS} || 60;
my $BOUND_MS = 100;
my @GW = qw(g1 g2 g3);

my $c = EnvGwCluster->new(primary => 'p');

# --- topology ----------------------------------------------------------------

my $P = $c->start_redis('p');
my $R1 = $c->start_redis('r1', replicaof => $P);
my $R2 = $c->start_redis('r2', replicaof => $P);
$c->wait_replicas('r1', 'r2');
pass('primary and two replicas in sync');

# --- data (all written through envgw on the primary) -------------------------

my (%tok, %by_id);    # raw -> {id, env}; id -> raw

for my $e (qw(env_a env_b)) {
    $c->envgw('env', 'create', '--team', "team_$e", '--id', $e, "name_$e");
    $c->envgw('integration', 'set', $e, 'hubspot', '--upstream',
              'http://backend');
    for my $i (1 .. 2) {
        $c->envgw('account', 'add', $e, "acct_${e}_$i",
                  '--integration', 'hubspot', '--tenant', "tenant$i");
    }
}

my $serial = 0;
sub new_token {
    my $e = (++$serial % 2) ? 'env_a' : 'env_b';
    my $j = decode_json($c->envgw('token', 'create', $e, '--json'));
    $tok{ $j->{token} } = { id => $j->{token_id}, env => $e };
    $by_id{ $j->{token_id} } = $j->{token};
    return $j->{token};
}

my @valid = map { new_token() } 1 .. 6;            # never revoked
my @revoke = map { new_token() } 1 .. $N_REVOKE;   # revoked one by one
my @cold = map { new_token() } 1 .. 12;            # first used in failovers
my $pre = new_token();                             # revoked before any use
$c->envgw('token', 'revoke', $tok{$pre}{id});
$tok{$pre}{revoked_at} = 0;
my @unknown = map { 'egw_unknown' . $_ . ('x' x 30) } 1 .. 4;

ok($c->wait_sync('p', 2), 'seed data replicated to both replicas (WAIT 2)');

# --- gateways and load balancer ----------------------------------------------

$c->start_gateway('g1', redis => [$R1, $P]);
$c->start_gateway('g2', redis => [$R2, $P]);
$c->start_gateway('g3', redis => [$P, $R1]);
$c->start_lb('lb', @GW);

my %first401;    # "gw token" -> time the first 401 poll was sent

sub acct { my ($raw, $i) = @_; "acct_$tok{$raw}{env}_" . ($i || 1) }
sub other_acct { my ($raw) = @_;
    ($tok{$raw}{env} eq 'env_a' ? 'acct_env_b_' : 'acct_env_a_') . '1' }

# --- through the load balancer -------------------------------------------------

{
    my %seen;
    for my $i (0 .. 5) {
        my $raw = $valid[$i];
        my $r = $c->get('lb', '/orders?integrated_account_id=' . acct($raw),
                        $raw);
        is($r->{status}, 200, "lb: valid token $i -> 200");
        $seen{ $r->{headers}{'x-gateway'} // '?' }++;
        like($r->{body}, qr/"environment_id":"$tok{$raw}{env}"/,
             "lb: backend got the token's environment");
    }
    is_deeply([sort keys %seen], \@GW, 'lb: round robin reaches g1, g2, g3')
        or diag explain \%seen;

    for my $u (@unknown[0, 1]) {
        is($c->get('lb', '/orders', $u)->{status}, 401, 'lb: unknown -> 401');
    }
    is($c->get('lb', '/orders', $pre)->{status}, 401,
       'lb: token revoked before first use -> 401');
    my $r = $c->get('lb', '/orders?integrated_account_id='
                    . other_acct($valid[0]), $valid[0]);
    is($r->{status}, 404, 'lb: account of another environment -> 404');
    is($r->{json} && $r->{json}{error}, 'integrated_account_not_found',
       'lb: integrated_account_not_found');
}

# --- 1. revocation latency ------------------------------------------------------

# warm every gateway with the token (MISS then HIT), revoke on the primary,
# poll every gateway directly until 401; returns {gw => ms} or dies
sub revoke_and_measure {
    my ($raw) = @_;
    for my $g (@GW) {
        my $r1 = $c->get($g, '/warm', $raw);
        my $r2 = $c->get($g, '/warm', $raw);
        die "$g: warm: $r1->{status}/$r2->{status}\n"
            unless $r1->{status} == 200 && $r2->{status} == 200;
        die "$g: not cached (X-Cache $r2->{headers}{'x-cache'})\n"
            unless ($r2->{headers}{'x-cache'} // '') eq 'HIT';
    }

    # an independent observer on P: when the invalidation was published
    my $sub = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$P",
                                    Proto => 'tcp') or die "sub: $!";
    print $sub "SUBSCRIBE envgw:invalidate\r\n";
    my $buf = '';
    while ($buf !~ /subscribe\r\n.*:1\r\n/s) {
        sysread($sub, $buf, 4096, length $buf) or die "sub: eof\n";
    }
    $buf = '';

    my $t0 = time;
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        open STDOUT, '>', '/dev/null';
        exec $c->{envgw}, '--redis', "127.0.0.1:$P", 'token', 'revoke',
             $tok{$raw}{id} or POSIX::_exit(127);
    }
    $tok{$raw}{revoked_at} = $t0;

    my ($tpub, $t1, %lat);
    my %pending = map { $_ => 1 } @GW;
    my $deadline = $t0 + 3;
    my $seen_pub = sub {
        return if $tpub;
        my $rin = '';
        vec($rin, fileno($sub), 1) = 1;
        while (select(my $rout = $rin, undef, undef, 0) > 0) {
            sysread($sub, $buf, 4096, length $buf) or last;
        }
        $tpub = time if index($buf, "$tok{$raw}{id}") >= 0
                        || index($buf, 'envgw:token:') >= 0;
    };
    while ((%pending || !$tpub || !$t1) && time < $deadline) {
        $seen_pub->();
        if (!$t1 && waitpid($pid, POSIX::WNOHANG()) == $pid) {
            die "envgw revoke failed: $?\n" if $?;
            $t1 = time;
        }
        for my $g (sort keys %pending) {
            my $sent = time;
            my $r = $c->get($g, '/poll', $raw);
            if ($r->{status} == 401) {
                my $now = time;
                $seen_pub->();
                $lat{$g} = { from_start => ($now - $t0) * 1000, at => $now };
                $first401{"$g $raw"} = $sent;
                delete $pending{$g};
            } elsif ($r->{status} != 200) {
                die "$g: unexpected $r->{status} while polling\n";
            }
        }
        sleep 0.002 if %pending;
    }
    close $sub;
    die "no invalidation seen on P\n" unless $tpub;
    for my $g (keys %lat) {
        my $d = ($lat{$g}{at} - $tpub) * 1000;
        $lat{$g}{from_pub} = $d < 0 ? 0 : $d;
        $lat{$g}{from_return} = ($lat{$g}{at} - ($t1 // $lat{$g}{at})) * 1000;
    }
    die "no 401 within 2 s from: @{[sort keys %pending]}\n" if %pending;
    return \%lat;
}

sub run_round {
    my (@tokens) = @_;
    my (%from_start, %from_return, %from_pub, @err);
    for my $raw (@tokens) {
        my $lat = eval { revoke_and_measure($raw) };
        if (!$lat) { push @err, $@; next; }
        for my $g (@GW) {
            push @{ $from_start{$g} }, $lat->{$g}{from_start};
            push @{ $from_return{$g} }, $lat->{$g}{from_return};
            push @{ $from_pub{$g} }, $lat->{$g}{from_pub};
        }
    }
    return (\%from_pub, \%from_start, \@err);
}

sub summary {
    my ($v) = @_;
    return sprintf 'p50 %.1f ms, p99 %.1f ms, max %.1f ms (n=%d)',
        EnvGwCluster::percentile(50, @$v), EnvGwCluster::percentile(99, @$v),
        EnvGwCluster::percentile(100, @$v), scalar @$v;
}

{
    my ($fs, $fr, $err) = run_round(@revoke[0 .. $N_REVOKE / 2 - 1]);
    my $over = grep { EnvGwCluster::percentile(100, @{ $fs->{$_} || [] })
                      >= $BOUND_MS } @GW;
    if ($over || @$err) {
        # a loaded machine (other tests run alongside): one retry
        diag("round 1 over the bound or failed (@$err); retrying once");
        diag("  $_: " . summary($fs->{$_} || [])) for @GW;
        ($fs, $fr, $err) = run_round(@revoke[$N_REVOKE / 2 .. $N_REVOKE - 1]);
    } else {
        # the second half measured too, for a larger sample
        my ($fs2, $fr2, $err2) =
            run_round(@revoke[$N_REVOKE / 2 .. $N_REVOKE - 1]);
        push @$err, @$err2;
        for my $g (@GW) {
            push @{ $fs->{$g} }, @{ $fs2->{$g} || [] };
            push @{ $fr->{$g} }, @{ $fr2->{$g} || [] };
        }
    }
    is_deeply($err, [], 'every revocation refused by every gateway')
        or diag(@$err);
    for my $g (@GW) {
        my @v = @{ $fs->{$g} || [] };
        ok(@v >= 20, "$g: " . scalar(@v) . ' revocations measured');
        diag("$g publish on P -> 401:  " . summary(\@v));
        diag("$g envgw start -> 401:   " . summary($fr->{$g} || []));
        ok(@v && EnvGwCluster::percentile(100, @v) < $BOUND_MS,
           "$g: every revocation refused within $BOUND_MS ms of its publish");
    }
}

# revoked tokens stay refused, through the load balancer too
for my $raw (@revoke[0 .. 5]) {
    is($c->get('lb', '/after', $raw)->{status}, 401,
       'lb: revoked token -> 401');
}

# --- 1b. a replica cut off from the primary ------------------------------------
#
# R2 loses its link to P (re-pointed at a dead port) but keeps answering G2
# (replica-serve-stale-data yes, Redis' default).  A revocation on P then
# cannot reach G2: neither the record nor the invalidation arrives.  Once the
# link is back, the partial resync replays the backlog (the write and the
# PUBLISH) and G2 refuses the token.

{
    my $raw = $valid[4];
    for my $g (@GW) { $c->get($g, '/warm', $raw) for 1 .. 2; }
    my $dead = EnvGwTest::free_port();
    $c->redis('r2')->replicaof('127.0.0.1', $dead);
    my $t0 = time;
    $c->envgw('token', 'revoke', $tok{$raw}{id});
    $tok{$raw}{revoked_at} = $t0;
    ok(defined poll_status_401($_, $raw), "R2 cut off: $_ refuses the revoked token")
        for qw(g1 g3);
    sleep 0.5;
    is($c->get('g2', '/cut', $raw)->{status}, 200,
       'R2 cut off: g2 still serves the revoked token (stale replica)');
    $c->redis('r2')->replicaof('127.0.0.1', $P);
    my $t1 = time;
    my $ms = poll_status_401('g2', $raw);
    ok(defined $ms, 'R2 relinked: g2 refuses the revoked token');
    diag(sprintf 'R2 relinked: g2 refused %.0f ms after REPLICAOF P '
         . '(%.0f ms after the revocation)', $ms // -1, (time - $t0) * 1000);
    $c->wait_replicas('r2');
}

# --- 2. replica R1 stopped: G1 fails over to P ---------------------------------

sub poll_status {
    my ($g, $raw, $want, $limit) = @_;
    my $t0 = time;
    my %seen;
    while (time < $t0 + $limit) {
        my $r = $c->get($g, '/failover', $raw);
        $seen{ $r->{status} }++;
        return ((time - $t0) * 1000, \%seen) if $r->{status} == $want;
        sleep 0.01;
    }
    return (undef, \%seen);
}

my %m0 = map { $_ => $c->metrics($_) } @GW;
my $flushes = 'env_gateway_cache_flushes_total';
my $reconn = 'env_gateway_redis_reconnects_total';

{
    my $warm = $valid[0];
    is($c->get('g1', '/warm', $warm)->{status}, 200, 'g1 warm before R1 stops');

    $c->stop('r1');
    my $t0 = time;

    my ($ms, $seen) = poll_status('g1', $cold[0], 200, 10);
    ok(defined $ms, 'R1 stopped: g1 serves a cold token (fails over to P)')
        or diag explain $seen;
    diag(sprintf 'R1 stopped: g1 first 200 for a cold token %.0f ms after '
         . 'the stop (statuses seen: %s)', ($ms // -1),
         join ',', map { "$_ x$seen->{$_}" } sort keys %$seen);
    is($c->get('g1', '/w', $warm)->{status}, 200, 'R1 stopped: g1 valid -> 200');
    is($c->get('g1', '/w', $unknown[2])->{status}, 401,
       'R1 stopped: g1 unknown -> 401');
    is($c->get('g1', '/w', $revoke[0])->{status}, 401,
       'R1 stopped: g1 revoked -> 401');
    for my $g (qw(g2 g3)) {
        is($c->get($g, '/w', $cold[1])->{status}, 200,
           "R1 stopped: $g unaffected (cold token -> 200)");
    }

    # the lookups fail over at once, the subscribers after their own
    # reconnect and SUBSCRIBE: polled (at most 10 s)
    my $m = $c->metrics('g1');
    my $fl_end = time + 10;
    while (($m->{$flushes} // 0) <= ($m0{g1}{$flushes} // 0)
           && time < $fl_end)
    {
        sleep 0.02;
        $m = $c->metrics('g1');
    }
    cmp_ok($m->{$flushes} // 0, '>', $m0{g1}{$flushes} // 0,
           'g1 resubscribed on P and dropped its cache (flush counted)');

    # the subscriber moved with it: a revocation still reaches g1
    my $raw = $cold[2];
    is($c->get('g1', '/w', $raw)->{status}, 200, 'g1: cold token cached');
    my $t = time;
    $c->envgw('token', 'revoke', $tok{$raw}{id});
    $tok{$raw}{revoked_at} = $t;
    my ($ms2) = poll_status_401('g1', $raw);
    ok(defined $ms2, 'g1 on P: revocation refused')
        and diag(sprintf 'g1 on P: revocation refused after %.1f ms', $ms2);

    # R1 back (an empty replica resyncs from P); G1's lookups return to
    # their first server after primary_retry (5 s) once a probe connects
    my $restart = time - $t0;
    $c->start_redis('r1', port => $R1, replicaof => $P);
    $c->wait_replicas('r1');
    my $r1 = $c->redis('r1');
    my $back;
    my $end = time + 10;
    while (time < $end) {
        my $n = $r1->info('clients')->{connected_clients};
        # 2 workers' lookup connections + us: the subscribers stay on P,
        # which sees every publish, rather than open a gap by moving
        if ($n >= 3) { $back = time - $t0; last; }
        sleep 0.1;
    }
    ok($back, 'g1 reconnected to R1 once it was back')
        and diag(sprintf 'g1 back on R1 %.1f s after R1 stopped '
                 . '(restarted %.1f s in)', $back, $restart);
}

sub poll_status_401 {
    my ($g, $raw) = @_;
    my $t0 = time;
    # (cached 30 s: only the invalidation refuses it within 10 s)
    while (time < $t0 + 10) {
        my $sent = time;
        my $r = $c->get($g, '/poll', $raw);
        if ($r->{status} == 401) {
            $first401{"$g $raw"} = $sent;
            return (time - $t0) * 1000;
        }
        sleep 0.003;
    }
    return undef;
}

# --- 3. primary P stopped --------------------------------------------------------

{
    # warm tokens on every gateway; a cold revoked token for G3 later
    for my $g (@GW) {
        is($c->get($g, '/warm', $valid[1])->{status}, 200, "$g warm");
    }
    ok($c->wait_sync('p', 2), 'replicas in sync before P stops');

    $c->stop('p');
    my $t0 = time;

    for my $g (qw(g1 g2)) {
        is($c->get($g, '/p-down', $valid[1])->{status}, 200,
           "P stopped: $g serves a cached token");
        my ($ms, $seen) = poll_status($g, $cold[$g eq 'g1' ? 3 : 4], 200, 10);
        ok(defined $ms, "P stopped: $g serves a cold token from its replica")
            or diag explain $seen;
    }

    my ($ms, $seen) = poll_status('g3', $cold[5], 200, 10);
    ok(defined $ms, 'P stopped: g3 fails over to R1 and serves a cold token')
        or diag explain $seen;
    diag(sprintf 'P stopped: g3 first 200 for a cold token %.0f ms after the '
         . 'stop (statuses seen: %s)', (time - $t0) * 1000,
         join ',', map { "$_ x$seen->{$_}" } sort keys %$seen);

    for my $g (@GW) {
        is($c->get($g, '/p-down', $valid[2])->{status}, 200,
           "P stopped: $g valid -> 200");
        is($c->get($g, '/p-down', $unknown[3])->{status}, 401,
           "P stopped: $g unknown -> 401");
        is($c->get($g, '/p-down', $revoke[1])->{status}, 401,
           "P stopped: $g revoked -> 401");
        is($c->get($g, '/p-down', $pre)->{status}, 401,
           "P stopped: $g token revoked before first use -> 401");
        my $r = $c->get($g, '/p-down?integrated_account_id='
                        . other_acct($valid[2]), $valid[2]);
        is($r->{status}, 404, "P stopped: $g cross-environment account -> 404");
    }

    my $ok = eval { $c->envgw('token', 'revoke', $tok{$valid[5]}{id}); 1 };
    ok(!$ok, 'P stopped: envgw cannot write (revocations need the primary)');
}

# --- 3b. a gateway node down: the load balancer moves on -------------------------

{
    $c->stop('g2');
    my (%seen, $ok);
    for (1 .. 6) {
        my $r = $c->get('lb', '/g2-down', $valid[2]);
        $ok++ if $r->{status} == 200;
        $seen{ $r->{headers}{'x-gateway'} // '?' }++;
    }
    is($ok, 6, 'g2 down: every request through the lb -> 200');
    is_deeply([sort keys %seen], [qw(g1 g3)], 'g2 down: g1 and g3 answer');
    is($c->get('lb', '/g2-down', $revoke[2])->{status}, 401,
       'g2 down: revoked -> 401 through the lb');
}

# --- 4. every Redis stopped ------------------------------------------------------

{
    for my $g (qw(g1 g3)) {
        is($c->get($g, '/warm', $valid[3])->{status}, 200, "$g warm");
    }
    $c->stop('r1');
    $c->stop('r2');
    sleep 0.2;
    for my $g (qw(g1 g3)) {
        my $r = $c->get($g, '/all-down', $valid[3]);
        is($r->{status}, 200, "all Redis down: $g serves a cached token");
        is($r->{headers}{'x-cache'}, 'HIT', "$g: from the cache");
        $r = $c->get($g, '/all-down', $cold[6]);
        is($r->{status}, 503, "all Redis down: $g cold token -> 503");
        is($r->{json} && $r->{json}{error}, 'gateway_unavailable',
           "$g: gateway_unavailable");
        is($r->{headers}{'retry-after'}, '1', "$g: Retry-After: 1");
    }
}

# --- 5. Sentinel discovery ---------------------------------------------------
#
# Runs only when "env_gateway_redis sentinel=<name> <host:port>..." passes
# nginx -t (a module built without Sentinel support skips it).

SKIP: {
    my $S = "    env_gateway_redis sentinel=envgw 127.0.0.1:1 127.0.0.1:2"
          . " 127.0.0.1:3;\n";
    my ($rc, $out) = $c->gateway_conf_test('g4probe', redis_conf => $S);
    skip("env_gateway_redis sentinel= not supported by this module: "
         . (split /\n/, $out)[0], 1) if $rc != 0;

    my $sp = $c->start_redis('sp');
    my $sr = $c->start_redis('sr', replicaof => $sp);
    $c->wait_replicas('sr');
    my @s = map { $c->start_sentinel("s$_", $sp) } 1 .. 3;
    local $c->{primary} = 'sp';
    $c->envgw('env', 'create', '--team', 't', '--id', 'env_s', 's');
    my $j = decode_json($c->envgw('token', 'create', 'env_s', '--json'));
    my $j2 = decode_json($c->envgw('token', 'create', 'env_s', '--json'));
    $c->wait_sync('sp', 1);
    $c->start_gateway('g4', redis_conf => "    env_gateway_redis "
        . "sentinel=envgw " . join(' ', map { "127.0.0.1:$_" } @s) . ";\n");
    is($c->get('g4', '/s', $j->{token})->{status}, 200, 'sentinel: g4 200');
    $c->envgw('token', 'revoke', $j2->{token_id});
    is($c->get('g4', '/s', $j2->{token})->{status}, 401,
       'sentinel: revoked -> 401');
    # failover: stop the primary, sentinels promote the replica
    $c->stop('sp');
    my $end = time + 20;
    my $promoted;
    while (time < $end) {
        my $a = eval { $c->redis('s1')->sentinel('get-master-addr-by-name',
                                                 'envgw') };
        if ($a && $a->[1] == $sr) { $promoted = 1; last; }
        sleep 0.2;
    }
    ok($promoted, 'sentinel: replica promoted');
    my ($ms) = poll_status('g4', $j->{token}, 200, 10);
    ok(defined $ms, 'sentinel: g4 serves after the failover');
    local $c->{primary} = 'sr';
    $c->envgw('token', 'revoke', $j->{token_id});
    ok(defined poll_status_401('g4', $j->{token}),
       'sentinel: revocation on the new primary refused by g4');
}

# --- backend oracle ----------------------------------------------------------------

{
    my ($lines, @bad) = (0);
    for my $g (@GW) {
        for my $l ($c->backend_lines($g)) {
            $lines++;
            my $raw = $by_id{ $l->{token} };
            my $why;
            if (!defined $raw) {
                $why = 'unknown token id';
            } elsif ($l->{env} ne $tok{$raw}{env}) {
                $why = "environment $l->{env} is not the token's";
            } elsif ($l->{auth} ne '') {
                $why = 'credentials reached the backend';
            } elsif ($l->{account} ne '' && $l->{account} !~ /^acct_\Q$l->{env}\E_\d+$/) {
                $why = "account $l->{account} of another environment";
            } elsif ($l->{arg_account} ne $l->{account}) {
                $why = 'account argument and header disagree';
            } elsif (defined $tok{$raw}{revoked_at}
                     && $tok{$raw}{revoked_at} == 0) {
                $why = 'token revoked before first use';
            } elsif (defined $first401{"$g $raw"}
                     && $l->{msec} >= $first401{"$g $raw"}) {
                $why = 'revoked token after this gateway refused it';
            }
            push @bad, "$g: $why: $l->{line}" if $why;
        }
    }
    ok($lines > 100, "backend logs hold $lines requests");
    is_deeply(\@bad, [], 'no forbidden request reached any backend')
        or diag(join "\n", @bad[0 .. ($#bad > 20 ? 20 : $#bad)]);
}

$c->stop_all;
done_testing;
