#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# env_gateway and its Redis: outages and recovery, a paused Redis must not
# block the worker, clients leaving mid-lookup, big replies, unix sockets,
# AUTH/SELECT, failover.

use strict;
use warnings;

use lib 't/lib';
use EnvGwTest qw(unavailable);
use Test::More;
use Digest::SHA qw(sha256_hex);
use IO::Socket::INET;
use JSON::PP;
use Time::HiRes qw(time sleep);

my $CONF = <<'CONF';
    env_gateway_redis %%SERVERS%%;
    upstream backend { server 127.0.0.1:%%BACKEND%%; keepalive 4; }
    server {
        listen 127.0.0.1:%%PORT%%;
        location = /healthz { return 200 "ok\n"; }
        location / {
            env_gateway on;
            env_gateway_account $arg_integrated_account_id;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Environment-Id $env_gateway_environment_id;
            proxy_set_header X-Envgw-Vars "$env_gateway_environment_id|$env_gateway_account_id|$env_gateway_tenant_id";
            proxy_pass http://backend;
        }
    }
CONF

sub conf {
    my ($servers) = @_;
    (my $c = $CONF) =~ s/%%SERVERS%%/$servers/;
    return $c;
}

my $DEFAULT = '127.0.0.1:%%REDIS%% connect_timeout=200ms read_timeout=300ms';

my $TOKEN = 'egw_redis_' . substr(sha256_hex('redis-test'), 0, 28);

sub seed {
    my ($t) = @_;
    $t->env('env_dev', 'team_a', 'development');
    $t->token($TOKEN, token_id => 'tok_redis', team_id => 'team_a',
              environment_id => 'env_dev', environment => 'development');
    $t->account('acc_dev1', 'env_dev');
}

# poll every 50 ms until a 200, at most $max seconds; returns elapsed or undef
sub wait_200 {
    my ($t, $path, $max) = @_;
    my $start = time;
    while (time - $start < $max) {
        my $r = $t->get($path, $TOKEN);
        return time - $start if $r->{status} == 200;
        sleep 0.05;
    }
    return undef;
}

sub log_clean {
    my ($t, $name) = @_;
    my @bad = grep { /\[(alert|emerg|crit)\]|exited on signal|Sanitizer/ }
              split /\n/, $t->slurp('error.log');
    ok(!@bad, "$name: error.log has no alert, crit or crash")
        or diag(join "\n", @bad[0 .. ($#bad > 10 ? 10 : $#bad)]);
}

sub pause_redis {
    my ($t, $ms) = @_;
    my $out = `redis-cli -p $t->{redis_port} client pause $ms all 2>&1`;
    like($out, qr/OK/, "CLIENT PAUSE $ms ALL");
}

sub read_response {
    my ($s, $timeout) = @_;
    my $raw = '';
    eval {
        local $SIG{ALRM} = sub { die "timeout\n" };
        alarm $timeout;
        local $/;
        $raw = <$s> // '';
        alarm 0;
    };
    alarm 0;
    return EnvGwTest::parse_response($raw);
}

sub send_request {
    my ($t, $path, $token) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$t->{port}",
                                  Proto => 'tcp') or die "connect: $!";
    $s->autoflush(1);
    print $s "GET $path HTTP/1.1\r\nHost: localhost\r\n"
           . "Authorization: Bearer $token\r\nConnection: close\r\n\r\n";
    return $s;
}

sub workers { $_[0]->worker_pids }

# --- 1. Redis down from the start, then up, down, up ----------------------

my $t = EnvGwTest->new;
$t->redis_port;
$t->start_nginx(conf($DEFAULT));

unavailable($t->get('/x', $TOKEN), 'Redis down from the start');
unavailable($t->get('/x?integrated_account_id=acc_dev1', $TOKEN),
            'Redis down, with an account');
is($t->get('/x')->{status}, 401, 'Redis down, no token: 401');
is($t->get('/healthz')->{status}, 200, 'healthz with Redis down');
{
    my $s = time;
    $t->get('/x', $TOKEN);
    ok(time - $s < 0.2, 'Redis down: answered at once, not after a timeout');
}

sleep 1;    # let the reconnect backoff reach its maximum
$t->start_redis;
seed($t);
my $took = wait_200($t, '/x?integrated_account_id=acc_dev1', 10);
ok(defined $took, 'Redis up: 200 without touching nginx (polled 10 s)')
    and diag(sprintf 'recovered in %.2f s', $took);

$t->stop_redis;
unavailable($t->get('/x', $TOKEN), 'Redis stopped again');
unavailable($t->get('/x?integrated_account_id=acc_dev1', $TOKEN),
            'Redis stopped again, same token and account');

$t->start_redis;
seed($t);
ok(defined wait_200($t, '/x?integrated_account_id=acc_dev1', 10),
   'after restart the token asked during the outage works');
like($t->get('/x?integrated_account_id=acc_dev1', $TOKEN)->{body},
     qr/env=env_dev auth= key= vars=env_dev\|acc_dev1\|acme$/m,
     'full identity after restart');

# a Redis error reply (not a miss) is a 503, never cached as a miss
my $acl = `redis-cli -p $t->{redis_port} acl setuser default -get 2>&1`;
like($acl, qr/OK/, 'ACL: GET denied');
unavailable($t->get('/x', $TOKEN), 'Redis answers GET with an error');
like($t->slurp('error.log'), qr/redis error for "envgw:token:[0-9a-f]{64}"/,
     'the error reply is logged with the key');
$acl = `redis-cli -p $t->{redis_port} acl setuser default +get 2>&1`;
like($acl, qr/OK/, 'ACL: GET allowed again');
is($t->get('/x', $TOKEN)->{status}, 200,
   'after an error reply the same token works at once');

# --- 2. a paused Redis does not block the worker --------------------------

my @w0 = workers($t);
is(scalar @w0, 1, 'one worker');

pause_redis($t, 3000);
my $paused_at = time;
my $s = send_request($t, '/x?integrated_account_id=acc_dev1', $TOKEN);
sleep 0.02;
my $h0 = time;
my $hr = $t->get('/healthz');
my $hdt = time - $h0;
is($hr->{status}, 200, 'healthz answers while a lookup is paused');
ok($hdt < 0.5, sprintf 'healthz took %.3f s (< 0.5 s)', $hdt);

my $pr = read_response($s, 5);
my $pdt = time - $paused_at;
close $s;
unavailable($pr, 'paused lookup');
ok($pdt >= 0.25 && $pdt < 1.5,
   sprintf 'paused lookup refused after read_timeout (%.3f s)', $pdt);
{
    my $s2 = time;
    my $r = $t->get('/x', $TOKEN);
    is($r->{status}, 503, 'still paused: 503, never a pass');
    ok(time - $s2 < 1.5, 'still paused: answered within a read timeout');
}
ok(defined wait_200($t, '/x', 10), 'after the pause ends: 200 again');

# --- 3. clients leaving mid-lookup -----------------------------------------

for my $case ([ 1000, 'read_timeout fires for gone clients' ],
              [ 150,  'replies arrive for gone clients' ])
{
    my ($ms, $what) = @$case;
    my @before = workers($t);
    pause_redis($t, $ms);
    my @socks;
    for my $i (1 .. 20) {
        push @socks, send_request($t,
            '/x?integrated_account_id=' . ($i % 2 ? 'acc_dev1' : "acc_nx$i"),
            $TOKEN);
    }
    close $_ for @socks;
    ok(defined wait_200($t, '/x?integrated_account_id=acc_dev1', 10),
       "$what: valid token 200 afterwards");
    is($t->get('/healthz')->{status}, 200, "$what: healthz");
    is_deeply([ workers($t) ], \@before, "$what: worker pid unchanged");
    log_clean($t, $what);
}
is_deeply([ workers($t) ], \@w0, 'worker pid unchanged overall');

# --- 3b. Redis goes away while lookups are in flight ---------------------------

{
    pause_redis($t, 3000);
    my @socks = map { send_request($t, '/x?integrated_account_id=acc_dev1',
                                   $TOKEN) } 1 .. 3;
    sleep 0.1;
    my $t0 = time;
    $t->stop_pid('redis', 'KILL');
    delete $t->{redis};
    my @r = map { read_response($_, 5) } @socks;
    my $dt = time - $t0;
    close $_ for @socks;
    is_deeply([ map { $_->{status} } @r ], [ 503, 503, 503 ],
              'Redis killed mid-lookup: in-flight requests get 503');
    ok($dt < 0.25, sprintf 'at once, not after read_timeout (%.3f s)', $dt);
    $t->start_redis;
    seed($t);
    ok(defined wait_200($t, '/x?integrated_account_id=acc_dev1', 10),
       'Redis back after a kill: 200');
    log_clean($t, 'Redis killed mid-lookup');
}

# --- 4. a reply over 16 KB ---------------------------------------------------

$t->account('acc_big', 'env_dev', tenant_id => 'bigco',
            notes => 'n' x (100 * 1024));
my $big = $t->get('/x?integrated_account_id=acc_big', $TOKEN);
is($big->{status}, 200, '100 KB account record: 200');
like($big->{body}, qr/vars=env_dev\|acc_big\|bigco$/m,
     '100 KB account record: fields read');
$t->token($TOKEN . 'big', token_id => 'tok_big', team_id => 'team_a',
          environment_id => 'env_dev', environment => 'development',
          blob => [ ('x' x 1000) x 200 ]);
is($t->get('/x?integrated_account_id=acc_big', $TOKEN . 'big')->{status},
   200, '200 KB token record and 100 KB account in one round trip');
# several big replies in flight at once
{
    my @socks = map { send_request($t, '/x?integrated_account_id=acc_big',
                                   $TOKEN . 'big') } 1 .. 5;
    my @st = map { read_response($_, 5)->{status} } @socks;
    close $_ for @socks;
    is_deeply(\@st, [ (200) x 5 ], 'five concurrent big lookups: 200');
}
is($t->get('/x?integrated_account_id=acc_dev1', $TOKEN)->{status}, 200,
   'small lookup after big ones');

# --- 5. unix socket ----------------------------------------------------------

{
    my $u = EnvGwTest->new;
    my $sock = $u->dir . '/redis.sock';
    # workers run as an unprivileged user when the tests run as root
    chmod 0711, $u->dir;
    $u->spawn('redis', 'redis-server', '--port', '0', '--unixsocket', $sock,
              '--unixsocketperm', '777',
              '--save', '', '--appendonly', 'no', '--dir', $u->dir);
    my $end = time + 5;
    sleep 0.02 until -S $sock || time > $end;
    ok(-S $sock, 'unix socket Redis started');
    require Redis;
    $u->{redis} = Redis->new(sock => $sock);
    seed($u);
    $u->start_nginx(conf('unix:%%DIR%%/redis.sock'));
    ok(defined wait_200($u, '/x?integrated_account_id=acc_dev1', 10),
       'unix socket Redis: 200');
    is($u->get('/x?integrated_account_id=acc_nx', $TOKEN)->{status}, 404,
       'unix socket Redis: 404 for a missing account');
    is($u->get('/x', 'egw_nope')->{status}, 401,
       'unix socket Redis: 401 for an unknown token');
    $u->stop;
}

# --- 6. password= and db= ------------------------------------------------------

{
    my $p = EnvGwTest->new;
    $p->start_redis(args => [ '--requirepass', 's3cret' ]);
    require Redis;
    my $r = Redis->new(server => "127.0.0.1:$p->{redis_port}",
                       password => 's3cret');
    # db 0 holds a revoked copy: only SELECT 2 makes the token valid
    $p->{redis} = $r;
    $p->token($TOKEN, token_id => 'tok_redis', team_id => 'team_a',
              environment_id => 'env_dev', environment => 'development',
              revoked => JSON::PP::true);
    $r->select(2);
    seed($p);
    $p->start_nginx(conf('127.0.0.1:%%REDIS%% password=s3cret db=2 '
                         . 'read_timeout=300ms'));
    ok(defined wait_200($p, '/x?integrated_account_id=acc_dev1', 10),
       'password= and db=2: 200');
    is($p->get('/x?integrated_account_id=acc_nx', $TOKEN)->{status}, 404,
       'password= and db=2: 404 for a missing account');

    # the same Redis with a wrong password, from another nginx
    my $w = EnvGwTest->new(no_redis => 1);
    my $port = $p->{redis_port};
    $w->start_nginx(conf("127.0.0.1:$port password=wrong db=2 "
                         . 'read_timeout=300ms'));
    my @st = map { my $x = $w->get('/x?integrated_account_id=acc_dev1',
                                    $TOKEN); sleep 0.1; $x } 1 .. 5;
    unavailable($st[-1], 'wrong password');
    ok(!grep({ $_->{status} == 200 } @st), 'wrong password: never a pass');
    like($w->slurp('error.log'), qr/AUTH/, 'wrong password: AUTH in error.log');
    unlike($w->slurp('error.log'), qr/s3cret|password=wrong/,
           'error.log does not carry the password');
    $w->stop;
    $p->stop;
}

# --- 7. failover ----------------------------------------------------------------

{
    my $f = EnvGwTest->new;
    my $dead = EnvGwTest::free_port();
    $f->start_redis;
    seed($f);
    $f->start_nginx(conf("127.0.0.1:$dead connect_timeout=200ms "
                         . "read_timeout=300ms;\n    env_gateway_redis "
                         . $DEFAULT));
    my $took = wait_200($f, '/x?integrated_account_id=acc_dev1', 10);
    ok(defined $took, 'failover: dead first server, second answers: 200');
    my @st = map { $f->get('/x?integrated_account_id=acc_dev1', $TOKEN)
                   ->{status} } 1 .. 10;
    is_deeply(\@st, [ (200) x 10 ], 'failover: stays on the live server');
    $f->stop;
}

$t->stop;
done_testing;
