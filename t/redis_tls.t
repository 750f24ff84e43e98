# SPDX-License-Identifier: BSD-2-Clause
# TLS to Redis: a TLS-only redis-server with certificates of a throwaway
# CA.  The chain and the name are verified by default and a failure is
# Redis unavailable (503 gateway_unavailable, one error.log line naming
# the reason); tls_verify=off, tls_name=, client certificates, session
# resumption after a reconnect, and invalidations over TLS.

use strict;
use warnings;

use lib 't/lib';
use Test::More;
use Time::HiRes qw(sleep time);
use Digest::SHA qw(sha256_hex);
use EnvGwTest qw(unavailable);
use EnvGwTls;

my $t = EnvGwTest->new;
my $dir = $t->dir;
my $c = EnvGwTls::make_certs($t);
my $port = EnvGwTls::start_redis($t);
# a second server that requires client certificates
my $mtls = EnvGwTls::start_redis($t, name => 'redis_mtls', auth_clients => 1);
my $mcli = EnvGwTls::client($t, $mtls);

my $tok = $t->seed_gateway(tokens => { dev => 'egw_tls_dev_token_0123456789' });
my $good = $tok->{dev};
for my $cli ($mcli) {
    local $t->{redis} = $cli;
    $t->seed_gateway(tokens => { dev => $good });
}

# one gateway, a location per Redis setting: each has its own nginx
# (env_gateway_redis is http-level), so each case is its own instance
sub gateway {
    my ($redis, %o) = @_;
    my $g = EnvGwTest->new;
    $g->{redis_port} = $o{port} || $port;
    $g->{redis} = EnvGwTls::client($t, $g->{redis_port});
    my $cache = $o{cache}
        ? 'env_gateway_cache zone=envgw:1m ttl=30s negative_ttl=1s;' : '';
    $g->start_nginx(<<"EOF", $o{subscribed} ? (subscribed => 1) : ());
    env_gateway_redis 127.0.0.1:%%REDIS%% $redis
                      connect_timeout=500ms read_timeout=500ms;
    $cache
    upstream backend { server 127.0.0.1:%%BACKEND%%; }
    server {
        listen 127.0.0.1:%%PORT%%;
        location / {
            env_gateway on;
            proxy_pass http://backend;
        }
    }
EOF
    return $g;
}

sub errors_like {
    my ($g, $re) = @_;
    return scalar grep { /\[error\]/ && /$re/ } split /\n/,
                                                   $g->slurp('error.log');
}

# --- verified TLS, invalidations over TLS, resumption ---------------------

{
    my $g = gateway("tls tls_ca=$c->{ca}", cache => 1, subscribed => 1);
    my $r = $g->get('/x', $good);
    is($r->{status}, 200, 'tls_ca= naming the CA: 200');
    like($r->{body}, qr/env=env_dev/, 'the record read over TLS is used');
    is($g->get('/x', 'egw_tls_unknown')->{status}, 401,
       'an unknown token over TLS: 401');
    like($g->slurp('error.log'),
         qr/connected to redis 127\.0\.0\.1:$port \(lookups\) over TLSv1\.[23], new TLS session/,
         'the lookup connection is TLS');
    like($g->slurp('error.log'),
         qr/connected to redis 127\.0\.0\.1:$port \(invalidations\) over TLSv1/,
         'the invalidation subscriber is TLS');

    # a revocation published over TLS reaches the cache
    my $key = 'envgw:token:' . sha256_hex($good);
    my $val = $t->redis->get($key);
    $t->redis->del($key);
    $t->redis->publish('envgw:invalidate', $key);
    my $st = 0;
    # cached for 30 s: only the invalidation refuses it within 10 s
    my $end = time + 10;
    while (time < $end) {
        $st = $g->get('/x', $good)->{status};
        last if $st == 401;
        sleep 0.05;
    }
    is($st, 401, 'an invalidation over TLS drops the cached record');
    $t->redis->set($key, $val);
    $t->redis->publish('envgw:invalidate', $key);

    # Redis closes every client: the reconnect resumes the TLS session
    $t->redis->client('kill', 'type', 'normal');
    $t->redis->client('kill', 'type', 'pubsub');
    my $ok = 0;
    $end = time + 10;
    for (my $i = 1; time < $end; $i++) {
        $ok = 1, last if $g->slurp('error.log')
            =~ /\(lookups\) over TLSv1\.[23], resumed TLS session/;
        $g->get('/x', 'egw_tls_unknown_' . $i);
        sleep 0.05;
    }
    ok($ok, 'a reconnect resumes the TLS session');
    is($g->get('/x', $good)->{status}, 200, 'served after the reconnect');
    $g->stop;
}

# --- verification failures: 503, one clear line each -----------------------

my @fail = (
    [ "tls tls_ca=$c->{other_ca}", 'an unknown CA',
      qr/TLS certificate verify error: \(\d+:[^)]+\)/ ],
    [ 'tls', 'no tls_ca= (the system store does not know the test CA)',
      qr/TLS certificate verify error/ ],
    [ "tls tls_ca=$c->{ca} tls_name=wrong.test", 'a wrong tls_name=',
      qr/TLS certificate does not match "wrong\.test"/ ],
);
for my $case (@fail) {
    my ($conf, $name, $re) = @$case;
    my $g = gateway($conf);
    my $r = $g->get('/x', $good);
    unavailable($r, $name);
    unlike($g->backend_log, qr/\S/, "$name: nothing reached the backend");
    ok(errors_like($g, qr/redis 127\.0\.0\.1:$port \(lookups\)(?::| unreachable:) $re/) >= 1,
       "$name: an error line names the server and the reason")
        or diag($g->slurp('error.log'));
    unlike($g->slurp('error.log'), qr/\[crit\]/, "$name: no crit line");
    $g->stop;
}

# --- what is not verified, or verified by another name ---------------------

for my $case ([ "tls tls_verify=off tls_ca=$c->{other_ca}",
                'tls_verify=off with an unknown CA' ],
              [ 'tls tls_verify=off', 'tls_verify=off' ],
              [ "tls tls_ca=$c->{ca} tls_name=redis.test",
                'tls_name= naming the certificate' ],
              [ "tls tls_ca=$c->{ca} tls_name=localhost",
                'tls_name=localhost' ]) {
    my ($conf, $name) = @$case;
    my $g = gateway($conf);
    is($g->get('/x', $good)->{status}, 200, "$name: 200");
    $g->stop;
}

# --- client certificates ---------------------------------------------------

{
    my $g = gateway("tls tls_ca=$c->{ca} tls_cert=$c->{client_cert} "
                    . "tls_key=$c->{client_key}", port => $mtls);
    is($g->get('/x', $good)->{status}, 200,
       'client certificate required and given: 200');
    $g->stop;

    $g = gateway("tls tls_ca=$c->{ca}", port => $mtls);
    my $r;
    for (1 .. 3) {
        $r = $g->get('/x', $good);
        last if $r->{status} == 503;
    }
    unavailable($r, 'client certificate required, not given');
    ok(errors_like($g, qr/redis 127\.0\.0\.1:$mtls \(lookups\): .*certificate required/),
       'client certificate not given: the error line says so')
        or diag($g->slurp('error.log'));
    unlike($g->slurp('error.log'), qr/\[crit\]/,
           'client certificate not given: no crit line');
    $g->stop;
}

# --- TLS to a server that speaks plain TCP ----------------------------------

{
    my $pp = EnvGwTest::free_port();
    $t->spawn('plain', 'redis-server', '--port', $pp, '--bind', '127.0.0.1',
              '--save', '', '--appendonly', 'no', '--dir', $dir);
    EnvGwTest::wait_port($pp) or die;
    my $g = gateway("tls tls_ca=$c->{ca}", port => $pp);
    unavailable($g->get('/x', $good), 'tls to a plain-text Redis');
    # Redis waits for the end of a command line that never comes, or
    # answers with an error that is no TLS record
    ok(errors_like($g, qr/redis 127\.0\.0\.1:$pp \(lookups\)(?::| unreachable:) (TLS handshake timed out|SSL_do_handshake\(\) failed)/),
       'tls to a plain-text Redis: the handshake failure is logged')
        or diag($g->slurp('error.log'));
    $g->stop;
    $t->stop_pid('plain');
}

$t->stop;
done_testing;
