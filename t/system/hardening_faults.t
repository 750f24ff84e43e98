#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# Hardening, faults under load, loopback only and bounded:
# wrk cycles valid requests and refused-kind requests (revoked token,
# unknown tokens, another environment's account, no token) for a few
# seconds while
#   (a) Redis is killed and restarted on the same port (without and with
#       env_gateway_cache),
#   (b) Redis answers slowly (DEBUG SLEEP 2, read_timeout=300ms),
#   (c) nginx is reloaded (HUP) three times,
#   (d) a worker is killed with -9.
# Every refused-kind request carries "kind=bad_..." in its URI: no backend
# log line may carry it.  nginx never crashes (error.log checked at stop;
# only the intentional "exited on signal 9" is allowed), and service is back
# within 1 s of Redis answering PING again.  Per-scenario numbers go to
# diag: requests, status counts per kind, socket errors, recovery time.

use strict;
use warnings;

use lib 't/lib';
use EnvGwTest qw(unavailable);
use Test::More;
use Digest::SHA qw(sha256_hex);
use IO::Socket::INET;
use POSIX qw(WNOHANG);
use Time::HiRes qw(sleep time);

plan skip_all => 'wrk not installed' unless `wrk --version 2>&1` =~ /wrk/;

my $LOAD_SECS = 6;

sub raw_token { 'egw_' . substr(sha256_hex(join '-', 'hf', @_), 0, 40) }

my @GOOD = map { raw_token("good$_") } 1 .. 3;
my $REVOKED = raw_token('revoked');
my @UNKNOWN = map { raw_token("unknown$_") } 1 .. 3;
my @PROBE = map { raw_token("probe$_") } 1 .. 40;
my $probe_i = 0;

sub conf {
    my ($cache) = @_;
    my $c = $cache
        ? 'env_gateway_cache zone=envgw_hf:4m ttl=60s negative_ttl=5s;' : '';
    return <<"CONF";
    env_gateway_redis 127.0.0.1:%%REDIS%% connect_timeout=300ms read_timeout=300ms;
    $c
    upstream backend { server 127.0.0.1:%%BACKEND%%; keepalive 16; }
    server {
        listen 127.0.0.1:%%PORT%%;
        location /api/ {
            env_gateway on;
            env_gateway_account \$arg_integrated_account_id;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Environment-Id \$env_gateway_environment_id;
            proxy_pass http://backend;
        }
    }
CONF
}

sub seed {
    my ($t) = @_;
    $t->env('env_dev',  'team_a', 'development');
    $t->env('env_prod', 'team_a', 'production');
    my %dev = (team_id => 'team_a', environment_id => 'env_dev',
               environment => 'development');
    $t->token($_, %dev) for @GOOD, @PROBE;
    $t->token($REVOKED, %dev, revoked => JSON::PP::true);
    $t->account('acc_dev',  'env_dev');
    $t->account('acc_prod', 'env_prod');
    # the data survives a restart: the new redis-server loads dump.rdb
    $t->redis->save;
}

sub lua {
    my ($t) = @_;
    my @r = (
        [ good => "/api/x?kind=good&integrated_account_id=acc_dev", $GOOD[0] ],
        [ bad_revoked => '/api/x?kind=bad_revoked', $REVOKED ],
        [ good => '/api/x?kind=good', $GOOD[1] ],
        [ bad_unknown => '/api/x?kind=bad_unknown', $UNKNOWN[0] ],
        [ good => "/api/x?kind=good&integrated_account_id=acc_dev", $GOOD[2] ],
        [ bad_cross => '/api/x?kind=bad_cross&integrated_account_id=acc_prod',
          $GOOD[0] ],
        [ good => '/api/x?kind=good', $GOOD[2] ],
        [ bad_unknown => '/api/x?kind=bad_unknown', $UNKNOWN[1] ],
        [ good => '/api/x?kind=good', $GOOD[1] ],
        [ bad_none => '/api/x?kind=bad_none', undef ],
        [ bad_unknown => "/api/x?kind=bad_unknown&integrated_account_id=acc_dev",
          $UNKNOWN[2] ],
        [ bad_cross => '/api/x?kind=bad_cross&integrated_account_id=acc_prod',
          $GOOD[1] ],
    );
    my $list = join ",\n", map {
        sprintf '  { k = "%s", p = "%s", t = %s }', $_->[0], $_->[1],
            defined $_->[2] ? qq("$_->[2]") : 'nil'
    } @r;
    open my $fh, '>', "$t->{dir}/load.lua" or die;
    print $fh <<"LUA";
-- one connection per thread: request() and response() alternate, so the
-- response belongs to the kind of the last request written
local reqs = {
$list
}
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args)
  counts = {}
  last = "none"
  i = math.random(#reqs)
end
function request()
  i = i % #reqs + 1
  local r = reqs[i]
  last = r.k
  local h = {}
  if r.t then h["Authorization"] = "Bearer " .. r.t end
  return wrk.format("GET", r.p, h)
end
function response(status, headers, body)
  local key = last .. ":" .. status
  counts[key] = (counts[key] or 0) + 1
end
function done(summary, latency, requests)
  for _, t in ipairs(threads) do
    local c = t:get("counts")
    for k, v in pairs(c) do io.write("COUNT " .. k .. " " .. v .. "\\n") end
  end
  local e = summary.errors
  io.write(string.format("ERRORS connect=%d read=%d write=%d timeout=%d\\n",
           e.connect, e.read, e.write, e.timeout))
  io.write("TOTAL " .. summary.requests .. "\\n")
end
LUA
    close $fh;
}

sub setup {
    my (%opt) = @_;
    my $t = EnvGwTest->new;
    $t->{allow_log} = qr/exited on signal 9/;
    $t->start_redis(args => [ '--enable-debug-command', 'local' ]);
    $t->start_nginx(conf($opt{cache}), workers => 2);
    seed($t);
    lua($t);
    # every worker connected and answering
    my $end = time + 5;
    sleep 0.05 until probe($t, $GOOD[0])->{status} == 200 || time > $end;
    return $t;
}

sub probe {
    my ($t, $tok, $q) = @_;
    return $t->http('GET', '/api/x?kind=probe' . ($q // ''),
        [ defined $tok ? (Authorization => "Bearer $tok") : () ],
        undef, timeout => 5);
}

sub fresh_probe_token { $PROBE[$probe_i++ % @PROBE] }

sub wrk_start {
    my ($t, $name) = @_;
    my $out = "$t->{dir}/wrk-$name.out";
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        open STDIN, '<', '/dev/null';
        open STDOUT, '>', $out;
        open STDERR, '>&', \*STDOUT;
        exec('wrk', '-t4', '-c4', "-d${LOAD_SECS}s", '--timeout', '3s',
             '-s', "$t->{dir}/load.lua", "http://127.0.0.1:$t->{port}/")
            or POSIX::_exit(127);
    }
    return { pid => $pid, out => $out, start => time, name => $name,
             log_from => length $t->backend_log };
}

sub wrk_wait {
    my ($t, $w) = @_;
    my $end = time + $LOAD_SECS + 20;
    while (waitpid($w->{pid}, WNOHANG) != $w->{pid}) {
        if (time > $end) { kill 'KILL', $w->{pid}; waitpid $w->{pid}, 0; last }
        sleep 0.1;
    }
    my %c;
    my $out = $t->slurp("wrk-$w->{name}.out");
    while ($out =~ /^COUNT (\w+):(\d+) (\d+)$/mg) {
        $c{$1}{$2} += $3;
    }
    my ($err) = $out =~ /^ERRORS (.*)$/m;
    my ($total) = $out =~ /^TOTAL (\d+)$/m;
    # the backend writes its log line after answering, and under load the
    # last lines land a while after the client saw the answers: wait until
    # the log holds a line for every valid 200 (or 10 s), then for any
    # straggler of another kind
    my $log;
    my $log_end = time + 10;
    while (1) {
        $log = substr $t->backend_log, $w->{log_from};
        my $lines = () = $log =~ /kind=good/g;
        last if $lines >= ($c{good}{200} // 0) || time > $log_end;
        sleep 0.1;
    }
    sleep 0.3;
    $log = substr $t->backend_log, $w->{log_from};
    my $res = { counts => \%c, errors => $err // '?', total => $total // 0,
                log => $log, out => $out };
    my $summary = join ' ', map {
        my $k = $_;
        "$k\{" . join(',', map { "$_:$c{$k}{$_}" } sort keys %{ $c{$k} }) . '}'
    } sort keys %c;
    diag("$w->{name}: requests=$res->{total} $summary errors: $res->{errors}");
    return $res;
}

# the security oracle of every scenario
sub check_load {
    my ($res, $name, %opt) = @_;
    ok($res->{total} > 0, "$name: wrk ran ($res->{total} requests)")
        or diag($res->{out});
    my $c = $res->{counts};
    ok(($c->{good}{200} // 0) > 0, "$name: valid requests passed");
    my @bad200 = grep { /^bad_/ && $c->{$_}{200} } keys %$c;
    is("@bad200", '', "$name: no refused-kind request got a 200");
    my @marks = $res->{log} =~ /(kind=bad_\w+)/g;
    is(scalar @marks, 0,
       "$name: no refused-kind request in the backend log")
        or diag("leaked: @marks[0 .. ($#marks > 9 ? 9 : $#marks)]");
    # the refusals seen are the right ones (or 503 when Redis is away)
    my %want = (bad_revoked => qr/^(401|503)$/, bad_unknown => qr/^(401|503)$/,
                bad_cross => qr/^(404|503)$/, bad_none => qr/^401$/,
                good => $opt{good} || qr/^(200|503)$/);
    for my $k (sort keys %want) {
        my @odd = grep { $_ !~ $want{$k} } keys %{ $c->{$k} || {} };
        is("@odd", '', "$name: $k statuses are only the expected ones");
    }
    my $good_lines = () = $res->{log} =~ /kind=good/g;
    cmp_ok($good_lines, '>=', $c->{good}{200} // 0,
           "$name: every valid 200 came from the backend")
        unless $opt{no_line_count};
}

sub redis_ping {
    my ($t, $timeout) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$t->{redis_port}",
                                  Proto => 'tcp', Timeout => 1)
        or return 0;
    print $s "PING\r\n";
    my $line = '';
    eval {
        local $SIG{ALRM} = sub { die "timeout\n" };
        alarm($timeout || 1);
        $line = <$s> // '';
        alarm 0;
    };
    alarm 0;
    return $line =~ /^\+PONG/ ? 1 : 0;
}

# seconds from now until a never-used valid token gets its 200
sub time_to_200 {
    my ($t) = @_;
    my $t0 = time;
    my $tok = fresh_probe_token();
    while (time - $t0 < 10) {
        my $r = probe($t, $tok);
        return time - $t0 if $r->{status} == 200;
        $tok = fresh_probe_token() if $r->{status} != 503;
        sleep 0.01;
    }
    return undef;
}

my %report;

# a 200 within 1 s of $since; the time is reported
sub recovered {
    my ($t, $name, $since) = @_;
    my $rec = time_to_200($t);
    ok(defined $rec && $rec <= 1.0,
       sprintf("$name: a 200 within 1 s of $since (%.3f s)", $rec // -1));
    $report{$name}{recovery} = $rec;
    return $rec;
}

# --- (a) Redis killed and restarted --------------------------------------------

sub scenario_redis_restart {
    my ($t, $cache) = @_;
    my $name = 'redis restart' . ($cache ? ', cache' : ', no cache');
    my $master = $t->{pids}{nginx};

    my $w = wrk_start($t, $cache ? 'restart_cache' : 'restart');
    sleep 1.5;
    $t->stop_pid('redis');
    my $down = time;
    sleep 0.3;

    # during the outage
    my $fresh = fresh_probe_token();
    unavailable(probe($t, $fresh), "$name, outage: uncached valid token",
                retry_after => 1);
    is(probe($t, undef)->{status}, 401, "$name, outage: no token: 401");
    if ($cache) {
        my @st = map { probe($t, $GOOD[$_ % 3], '&integrated_account_id=acc_dev')
                           ->{status} } 0 .. 8;
        is("@st", join(' ', (200) x 9),
           "$name, outage: cached valid tokens keep 200");
        is(probe($t, $REVOKED)->{status}, 401,
           "$name, outage: cached revoked token: 401");
        is(probe($t, $GOOD[0], '&integrated_account_id=acc_prod')->{status},
           404, "$name, outage: cached other-environment account: 404");
    } else {
        unavailable(probe($t, $GOOD[0]), "$name, outage: valid token",
                    retry_after => 1);
        unavailable(probe($t, $REVOKED), "$name, outage: revoked token",
                    retry_after => 1);
        unavailable(probe($t, $UNKNOWN[0]), "$name, outage: unknown token",
                    retry_after => 1);
    }
    sleep 1.0;

    $t->start_redis(args => [ '--enable-debug-command', 'local' ]);
    my $end = time + 5;
    sleep 0.005 until redis_ping($t) || time > $end;
    my $up = time;
    my $rec = recovered($t, $name, 'Redis answering PING');
    $report{$name}{outage} = $up - $down;

    my $res = wrk_wait($t, $w);
    check_load($res, $name);
    is($t->{pids}{nginx}, $master, "$name: same master");
    ok(kill(0, $master), "$name: master alive");
    is(scalar(my @w = $t->worker_pids), 2, "$name: two workers");
    diag(sprintf "$name: outage %.2f s, recovery %.3f s after PING",
         $up - $down, $rec // -1);
}

# --- (b) Redis slow ----------------------------------------------------------------

sub scenario_redis_slow {
    my ($t) = @_;
    my $name = 'redis DEBUG SLEEP 2';

    my $w = wrk_start($t, 'slow');
    sleep 1.5;
    my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$t->{redis_port}",
                                  Proto => 'tcp') or die;
    print $s "DEBUG SLEEP 2\r\nPING\r\n";
    my $slept = time;
    sleep 0.5;

    # lookups asked now time out after read_timeout: 503, never a pass
    my $t0 = time;
    unavailable(probe($t, fresh_probe_token()), "$name: valid token while slow",
                retry_after => 1);
    my $took = time - $t0;
    cmp_ok($took, '<', 1.9, sprintf("$name: answered before Redis woke "
                                     . "(%.3f s)", $took));
    unavailable(probe($t, $REVOKED), "$name: revoked token while slow",
                retry_after => 1);
    unavailable(probe($t, $UNKNOWN[0]), "$name: unknown token while slow",
                retry_after => 1);

    # the PONG queued behind the sleep marks the moment Redis answers again
    my $line = '';
    eval {
        local $SIG{ALRM} = sub { die "timeout\n" };
        alarm 10;
        $line = <$s>;    # +OK of DEBUG
        $line = <$s>;    # +PONG
        alarm 0;
    };
    alarm 0;
    like($line // '', qr/^\+PONG/, "$name: Redis answers again");
    my $up = time;
    my $rec = recovered($t, $name, 'Redis answering');

    my $res = wrk_wait($t, $w);
    check_load($res, $name);
    ok(($res->{counts}{good}{503} // 0) > 0,
       "$name: some valid requests got 503 while Redis slept");
    diag(sprintf "$name: slept from %.2f s, recovery %.3f s after PONG",
         $slept - $w->{start}, $rec // -1);
}

# --- (c) reload under load --------------------------------------------------------

sub scenario_reload {
    my ($t) = @_;
    my $name = 'nginx reload x3';
    my $master = $t->{pids}{nginx};
    my @before = sort $t->worker_pids;

    my $w = wrk_start($t, 'reload');
    for (1 .. 3) {
        sleep 1.2;
        $t->reload_nginx;
    }
    my $res = wrk_wait($t, $w);
    check_load($res, $name, good => qr/^(200|503)$/);
    my $c = $res->{counts}{good};
    my $non200 = 0;
    $non200 += $c->{$_} for grep { $_ != 200 } keys %$c;
    $report{$name}{good_non200} = $non200;
    is($non200, 0, "$name: every valid request answered 200")
        or diag("valid requests not 200: $non200");

    is($t->{pids}{nginx}, $master, "$name: same master");
    my $end = time + 10;
    my @now;
    sleep 0.1 while (@now = $t->worker_pids) != 2 && time < $end;
    is(scalar @now, 2, "$name: two workers after the reloads");
    my %old = map { $_ => 1 } @before;
    is(scalar(grep { $old{$_} } @now), 0, "$name: the workers are new ones");
    is(probe($t, $GOOD[0])->{status}, 200, "$name: serving afterwards");
    like($t->slurp('error.log'), qr/reconfiguring/, "$name: nginx reloaded");
}

# --- (d) a worker killed with -9 ------------------------------------------------------

sub scenario_kill_worker {
    my ($t, $label) = @_;
    my $name = "kill -9 a worker, $label";
    my $master = $t->{pids}{nginx};
    my @before = sort $t->worker_pids;
    is(scalar @before, 2, "$name: two workers");

    (my $file = "kill_$label") =~ s/\W/_/g;
    my $w = wrk_start($t, $file);
    sleep 2;
    my $victim = $before[0];
    kill 'KILL', $victim;
    my $killed = time;

    my $end = time + 10;
    my @now;
    sleep 0.02
        while ((@now = $t->worker_pids) != 2 || grep { $_ == $victim } @now)
              && time < $end;
    my $respawn = time - $killed;
    is(scalar(grep { $_ != $victim } @now), 2,
       sprintf("$name: master respawned the worker (%.3f s)", $respawn));
    $report{$name}{respawn} = $respawn;

    my @st = map { probe($t, $GOOD[$_ % 3])->{status} } 1 .. 20;
    is("@st", join(' ', (200) x 20), "$name: 20 probes after: all 200");

    my $res = wrk_wait($t, $w);
    check_load($res, $name, no_line_count => 1);
    is($t->{pids}{nginx}, $master, "$name: same master");
    ok(kill(0, $master), "$name: master alive");
    like($t->slurp('error.log'), qr/worker process $victim exited on signal 9/,
         "$name: error.log names our kill");
}

# --- run ------------------------------------------------------------------------------

{
    my $t = setup(cache => 0);
    scenario_redis_restart($t, 0);
    scenario_redis_slow($t);
    scenario_reload($t);
    scenario_kill_worker($t, 'no cache');
    my @sig = $t->slurp('error.log') =~ /(exited on signal \d+)/g;
    is("@sig", 'exited on signal 9', 'no cache: one worker death, ours');
    $t->stop;
}

{
    my $t = setup(cache => 1);
    scenario_redis_restart($t, 1);
    scenario_kill_worker($t, 'cache');
    my @sig = $t->slurp('error.log') =~ /(exited on signal \d+)/g;
    is("@sig", 'exited on signal 9', 'cache: one worker death, ours');
    $t->stop;
}

done_testing;
