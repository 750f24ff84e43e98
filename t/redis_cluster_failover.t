# SPDX-License-Identifier: BSD-2-Clause
# A primary of the cluster killed (SIGKILL) and its replica promoted by the
# cluster: the gateway fails closed for that primary's slots meanwhile (503,
# never a pass), keeps answering for the other primaries' slots, and
# answers again once the replica is primary, without a reload.  The
# invalidation subscriber on a killed node moves to another node and
# treats the gap as a flush.

use strict;
use warnings;

use lib 't/lib';
use Test::More;
use Time::HiRes qw(sleep time);
use Digest::SHA qw(sha256_hex);
use EnvGwTest qw(unavailable);
use EnvGwRedisCluster;

my $t = EnvGwTest->new;
my $c = EnvGwRedisCluster->start($t, primaries => 3, replicas => 1,
                                 node_timeout => 1000);
$t->{redis} = $c->client;
my $seeds = $c->seeds;
my @primaries = $c->primary_ports;

$t->env('env_dev', 'team_a', 'development');

# a valid and a revoked token on each primary
my (%ok_on, %rev_on);
for my $i (1 .. 400) {
    my $raw = "egw_failover_$i" . ('f' x 20);
    my $port = $c->owner('envgw:token:' . sha256_hex($raw));
    my $h = !$ok_on{$port} ? \%ok_on : !$rev_on{$port} ? \%rev_on : next;
    $h->{$port} = $t->token($raw, token_id => "tok_f$i", team_id => 'team_a',
                            environment_id => 'env_dev',
                            environment => 'development',
                            revoked => $h == \%rev_on ? JSON::PP::true
                                                      : JSON::PP::false);
    last if keys %ok_on == 3 && keys %rev_on == 3;
}
# the env record's primary is not the one killed
my $env_on = $c->owner('envgw:env:env_dev');
# the subscriber starts on the first seed, killed later: not the victim
my $first = ($c->ports)[0];
my ($victim) = grep { $_ != $env_on && $_ != $first } @primaries;
my $replica = $c->replica_of($victim);
my @others = grep { $_ != $victim } @primaries;

# the replicas hold the records before their primaries go
$c->node($_)->wait(1, 2000) for @primaries;

$t->start_nginx(<<"EOF", subscribed => 0);
    env_gateway_redis_cluster $seeds connect_timeout=200ms read_timeout=500ms;
    env_gateway_cache zone=envgw:1m ttl=1s negative_ttl=1s;
    upstream backend { server 127.0.0.1:%%BACKEND%%; }
    server {
        listen 127.0.0.1:%%PORT%%;
        location / {
            env_gateway on;
            proxy_pass http://backend;
        }
        location = /status { env_gateway_status; }
    }
EOF

for my $port (@primaries) {
    is($t->get('/x', $ok_on{$port})->{status}, 200, "token on $port: 200");
    is($t->get('/x', $rev_on{$port})->{status}, 401,
       "revoked token on $port: 401");
}

# the load: the other primaries' tokens must keep their answers throughout
my $load = $c->start_load($t,
    (map { [ "valid token on $_", '/x', $ok_on{$_}, 200 ],
           [ "revoked token on $_", '/x', $rev_on{$_}, 401 ] } @others));
# the victim's records leave the cache (ttl=1s): its answers come from
# the cluster from now on
sleep 1.2;

my $t0 = time;
$c->kill_node($victim);
my $st;
while (time < $t0 + 10) {
    $st = $t->get('/status')->{status};
    last if $st == 503;
    sleep 0.01;
}
is($st, 503, 'env_gateway_status: not ready while a primary is down');

# the victim's tokens until the gateway answers again: 503s, never a pass
my ($promoted, $recovered, %during);
my $deadline = $t0 + 15;
while (time < $deadline) {
    if (!$promoted) {
        my $role = eval { ($c->node($replica)->role)[0] } // '';
        $promoted = time if $role eq 'master';
    }
    my $r = $t->get('/x', $ok_on{$victim});
    my $rv = $t->get('/x', $rev_on{$victim});
    $during{"valid $r->{status}"}++;
    $during{"revoked $rv->{status}"}++;
    if ($r->{status} == 200 && $rv->{status} == 401) {
        $recovered = time;
        last;
    }
    sleep 0.01;
}
my $res = $c->stop_load($t, $load);
# lookups follow MOVED at once; readiness needs the new slot map, which is
# asked for on a timer: polled (at most 10 s)
{
    my $end = time + 10;
    $st = $t->get('/status')->{status};
    while ($st != 200 && time < $end) {
        sleep 0.05;
        $st = $t->get('/status')->{status};
    }
}
is($st, 200,
   'env_gateway_status: ready again once the promoted replica is connected');

ok($promoted, 'the cluster promoted the replica');
ok($recovered, 'the gateway answers for the failed primary\'s slots again');
my $to_promote = ($promoted // $deadline) - $t0;
my $to_recover = ($recovered // $deadline) - $t0;
my $after = ($recovered // $deadline) - ($promoted // $t0);
diag(sprintf 'failover: replica promoted %.2f s after the kill, gateway '
     . 'answering %.2f s after the kill (%.2f s after the promotion); '
     . 'cluster-node-timeout %.1f s; victim\'s answers meanwhile: %s',
     $to_promote, $to_recover, $after, $c->node_timeout / 1000,
     join(' ', map { "$_ x$during{$_}" } sort keys %during));
ok($to_recover <= $c->node_timeout / 1000 + 1 || $after <= 1,
   sprintf('recovered within cluster-node-timeout + 1 s of the kill, or '
           . '1 s of the promotion (%.2f s, %.2f s)', $to_recover, $after));
my @bad = grep { !/^(valid (200|503)|revoked (401|503))$/ } keys %during;
is_deeply(\@bad, [], 'meanwhile the victim\'s tokens got 503 (fail closed) '
                     . 'or their answer, never a pass');
is($res->{failed}, 0, "the other primaries' tokens kept their answers "
   . "($res->{requests} requests)") or diag($res->{failures});
is($res->{forbidden}, 0, 'no revoked token passed');

# the promoted replica serves the victim's slots
$c->wait_ok(10, 0);
is($c->owner('envgw:token:' . sha256_hex($ok_on{$victim})), $replica,
   'the promoted replica owns the victim\'s slots');

# --- the subscriber's node killed: another node, and the cache flushed ---
sub sub_node {
    for (1 .. 250) {
        for my $port ($c->ports) {
            next if $c->{down}{$port};
            my @n = eval { $c->node($port)->pubsub('numsub', $t->channel) };
            return $port if $n[1];
        }
        sleep 0.02;
    }
    return undef;
}
my $sub = sub_node();
is($sub, $first, 'the invalidation subscriber is on the first seed');
$c->kill_node($first);
my $moved = sub_node();
ok($moved && $moved != $first,
   'the subscriber moved to another node: ' . ($moved // 'none'));
# NUMSUB counts the subscription as soon as Redis has it; the worker drops
# the cache when it reads the confirmation, maybe a moment later
my $flushed;
{
    my $end = time + 10;
    until (($flushed = $t->slurp('error.log') =~ /dropping the whole cache/)
           || time > $end)
    {
        sleep 0.02;
    }
}
ok($flushed, 'the gap was treated as a flush');

$t->stop;

done_testing;
