# SPDX-License-Identifier: BSD-2-Clause
# Sentinel discovery: the gateway asks the Sentinels for the master,
# follows +switch-master after a failover, and keeps failing closed.

use strict;
use warnings;

use lib 't/lib';
use Test::More;
use Time::HiRes qw(sleep time);
use EnvGwTest;

my $t = EnvGwTest->new;
my $dir = $t->dir;

# primary and replica
my $p = $t->start_redis(args => ['--repl-diskless-sync-delay', '0']);
my $rport = EnvGwTest::free_port();
$t->spawn('replica', 'redis-server', '--port', $rport, '--bind', '127.0.0.1',
          '--save', '', '--appendonly', 'no', '--dir', $dir,
          '--replicaof', '127.0.0.1', $p);
EnvGwTest::wait_port($rport) or die "replica did not start";

my $sport = EnvGwTest::free_port();
open my $fh, '>', "$dir/sentinel.conf" or die;
print $fh <<"CONF";
port $sport
bind 127.0.0.1
dir $dir
sentinel monitor mymaster 127.0.0.1 $p 1
sentinel down-after-milliseconds mymaster 400
sentinel failover-timeout mymaster 2000
CONF
close $fh;
$t->spawn('sentinel', 'redis-server', "$dir/sentinel.conf", '--sentinel');
EnvGwTest::wait_port($sport) or die "sentinel did not start";

my $good = $t->token('egw_sentinel_good', environment_id => 'env_dev',
                     environment => 'development', team_id => 'team_a');
my $later = $t->token('egw_sentinel_later', environment_id => 'env_dev',
                      environment => 'development', team_id => 'team_a');
# the replica must hold the records before the primary goes away
my $acked = 0;
for (1 .. 50) {
    $acked = $t->redis->wait(1, 200);
    last if $acked >= 1;
}
is($acked, 1, 'the replica has the records');

$t->start_nginx(<<"EOF2");
    env_gateway_redis sentinel=mymaster 127.0.0.1:$sport
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
like($t->slurp('error.log'), qr/Sentinels name 127\.0\.0\.1:$p as master "mymaster"/,
     'the discovered master is logged');
is($t->get('/x', 'egw_sentinel_unknown')->{status}, 401, 'unknown token refused');

# the Sentinel learns of the replica from the master's INFO: wait for it
{
    my $end = time + 15;
    while (time < $end) {
        my $out = `redis-cli -p $sport sentinel replicas mymaster 2>/dev/null`;
        last if $out =~ /\b$rport\b/;
        sleep 0.2;
    }
}

# fail the primary over to the replica
$t->stop_pid('redis');
my $t0 = time;
my $st = poll_status($later, 200, 15);
is($st, 200, 'a token not cached before the failover is served from the new master');
diag(sprintf 'served again %.1f s after the primary stopped', time - $t0);
like($t->slurp('error.log'), qr/Sentinels name 127\.0\.0\.1:$rport as master/,
     'the gateway followed +switch-master to the replica');

# the new master's writes and invalidations reach the gateway
require Redis;
my $nr = Redis->new(server => "127.0.0.1:$rport");
$nr->del('envgw:token:' . Digest::SHA::sha256_hex($good));
$nr->publish('envgw:invalidate', 'envgw:token:' . Digest::SHA::sha256_hex($good));
is(poll_status($good, 401, 10), 401, 'a revocation on the new master is honoured');

unlike($t->backend_log, qr/egw_/, 'no raw token reached the backend');

$t->stop;
done_testing;
