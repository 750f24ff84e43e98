# SPDX-License-Identifier: BSD-2-Clause
# Sentinel over TLS: primary, replica and Sentinel speak only TLS (the
# Sentinel reaches the servers with tls-replication); the gateway asks the
# Sentinel for the master over TLS, verifies each server's certificate by
# the address the Sentinel names, and follows a failover.

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

my $p = EnvGwTls::start_redis($t, args => ['--repl-diskless-sync-delay', '0']);
my $rport = EnvGwTls::start_redis($t, name => 'replica',
    args => ['--tls-replication', 'yes', '--replicaof', '127.0.0.1', $p]);
my $replica = EnvGwTls::client($t, $rport);

my $sport = EnvGwTest::free_port();
open my $fh, '>', "$dir/sentinel.conf" or die;
print $fh <<"CONF";
port 0
tls-port $sport
bind 127.0.0.1
dir $dir
tls-cert-file $c->{cert}
tls-key-file $c->{key}
tls-ca-cert-file $c->{ca}
tls-auth-clients no
tls-replication yes
sentinel monitor mymaster 127.0.0.1 $p 1
sentinel down-after-milliseconds mymaster 400
sentinel failover-timeout mymaster 2000
CONF
close $fh;
$t->spawn('sentinel', 'redis-server', "$dir/sentinel.conf", '--sentinel');
EnvGwTest::wait_port($sport) or die "sentinel did not start";
my $sentinel = EnvGwTls::client($t, $sport);

my $good = 'egw_tls_sentinel_good_0123456789';
my $later = 'egw_tls_sentinel_later_0123456789';
$t->seed_gateway(tokens => { dev => $good });
$t->token($later, token_id => 'tok_later', team_id => 'team_a',
          environment_id => 'env_dev', environment => 'development');
my $acked = 0;
for (1 .. 50) {
    $acked = $t->redis->wait(1, 200) // 0;
    last if $acked >= 1;
}
is($acked, 1, 'the replica (over TLS) has the records');

$t->start_nginx(<<"EOF2");
    env_gateway_redis sentinel=mymaster 127.0.0.1:$sport tls tls_ca=$c->{ca}
                      connect_timeout=200ms read_timeout=300ms;
    env_gateway_cache zone=envgw:1m ttl=30s negative_ttl=1s;
    upstream backend { server 127.0.0.1:%%BACKEND%%; }
    server {
        listen 127.0.0.1:%%PORT%%;
        location / {
            env_gateway on;
            proxy_pass http://backend;
        }
    }
EOF2

sub poll_status {
    my ($tok, $want, $limit) = @_;
    my $end = time + $limit;
    my $r;
    while (time < $end) {
        $r = $t->get('/x', $tok);
        return $r->{status} if $r->{status} == $want;
        sleep 0.05;
    }
    return $r->{status};
}

is(poll_status($good, 200, 10), 200, 'served through the master the Sentinel named');
my $log = $t->slurp('error.log');
like($log, qr/connected to redis 127\.0\.0\.1:$sport \(sentinel\) over TLSv1/,
     'the Sentinel is asked over TLS');
like($log, qr/connected to redis 127\.0\.0\.1:$p \(lookups\) over TLSv1/,
     'the master is reached over TLS, verified by its IP address');

{
    my $end = time + 15;
    while (time < $end) {
        last if grep { /^$rport$/ } $sentinel->sentinel('replicas', 'mymaster');
        sleep 0.2;
    }
}

$t->stop_pid('redis');
my $t0 = time;
is(poll_status($later, 200, 15), 200,
   'after the failover, a token not cached is served from the new master');
diag(sprintf 'served again %.1f s after the primary stopped', time - $t0);
like($t->slurp('error.log'),
     qr/connected to redis 127\.0\.0\.1:$rport \(lookups\) over TLSv1/,
     'the gateway followed +switch-master to the replica, over TLS');

my $key = 'envgw:token:' . sha256_hex($good);
$replica->del($key);
$replica->publish('envgw:invalidate', $key);
is(poll_status($good, 401, 10), 401,
   'a revocation on the new master reaches the gateway over TLS');

$t->stop;
done_testing;
