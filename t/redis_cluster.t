# SPDX-License-Identifier: BSD-2-Clause
# env_gateway_redis_cluster on 3 primaries + 3 replicas: records on every
# primary are found (each lookup at its slot's node), a cross-environment
# account is still refused, the slot function is Redis' own, invalidations
# published on any node reach the gateway in milliseconds, read_from=replica
# reads from the replicas, and the directive's configuration errors.

use strict;
use warnings;

use lib 't/lib';
use Test::More;
use Time::HiRes qw(sleep time);
use Digest::SHA qw(sha256_hex);
use EnvGwTest qw(refused unavailable);
use EnvGwRedisCluster;

my $t = EnvGwTest->new;
my $c = EnvGwRedisCluster->start($t, primaries => 3, replicas => 1);
$t->{redis} = $c->client;
my $seeds = $c->seeds;
my @primaries = $c->primary_ports;
is(scalar @primaries, 3, 'three primaries');

# --- the slot function is Redis' (the module's table against CLUSTER KEYSLOT)
my $any = $c->node($primaries[0]);
for my $k ('envgw:token:abc', '123456789', '{user1000}.following',
           'foo{}{bar}', 'foo{{bar}}zap', 'a{b}c{d}', '') {
    is(EnvGwRedisCluster::keyslot($k), $any->cluster('keyslot', $k),
       "slot of \"$k\" as Redis computes it");
}

# --- records on every primary -----------------------------------------------
$t->env("env_$_", 'team_a', $EnvGwTest::ENV_NAME{$_}) for qw(dev prod);
my (%tok_on, %acc_on);
for my $i (1 .. 200) {
    my $raw = "egw_cluster_$i" . ('x' x 24);
    my $port = $c->owner('envgw:token:' . sha256_hex($raw));
    next if $tok_on{$port};
    $tok_on{$port} = $t->token($raw, token_id => "tok_c$i", team_id => 'team_a',
                               environment_id => 'env_dev',
                               environment => 'development');
    last if keys %tok_on == 3;
}
for my $i (1 .. 200) {
    my $port = $c->owner("envgw:account:acc_c$i");
    next if $acc_on{$port};
    $acc_on{$port} = "acc_c$i";
    $t->account("acc_c$i", $i % 2 ? 'env_dev' : 'env_prod');
    last if keys %acc_on == 3;
}
is(scalar keys %tok_on, 3, 'a token record on each primary');
is(scalar keys %acc_on, 3, 'an account record on each primary');
my $prod_acc;
for my $i (1 .. 200) {
    next if $i % 2;
    next unless $c->owner("envgw:account:acc_c$i")
                != $c->owner('envgw:account:acc_c1');
    $prod_acc = "acc_c$i";
    $t->account($prod_acc, 'env_prod');
    last;
}

$t->start_nginx(<<"EOF");
    env_gateway_redis_cluster $seeds connect_timeout=200ms read_timeout=500ms;
    env_gateway_cache zone=envgw:1m ttl=60s negative_ttl=60s;
    upstream backend { server 127.0.0.1:%%BACKEND%%; }
    server {
        listen 127.0.0.1:%%PORT%%;
        location / {
            env_gateway on;
            env_gateway_account \$arg_integrated_account_id;
            proxy_pass http://backend;
        }
        location = /status { env_gateway_status; }
    }
EOF

# readiness: the slot map read and every primary connected
my $st;
my $ready_end = time + 10;
while (time < $ready_end) {
    $st = $t->get('/status');
    last if $st->{status} == 200;
    sleep 0.02;
}
is($st->{status}, 200, 'env_gateway_status: ready on the cluster');
is(ref $st->{json} eq 'HASH' && $st->{json}{ready} ? 1 : 0, 1,
   '... "ready": true');

# the lookups' GETs, counted on each node
sub gets {
    my ($port) = @_;
    my $s = $c->node($port)->info('commandstats');
    return ref $s && $s->{cmdstat_get} && $s->{cmdstat_get} =~ /calls=(\d+)/
        ? $1 : 0;
}
my %before = map { $_ => gets($_) } $c->ports;

for my $port (sort keys %tok_on) {
    my $r = $t->get('/x', $tok_on{$port});
    is($r->{status}, 200, "token whose record is on primary $port: 200");
    like($r->{body}, qr/env=env_dev/, "... stamped with its environment");
}
for my $port (sort keys %acc_on) {
    my $acc = $acc_on{$port};
    my $r = $t->get("/x?integrated_account_id=$acc", $tok_on{$primaries[0]});
    my $env = $c->command('get', "envgw:account:$acc") =~ /env_prod/
              ? 'prod' : 'dev';
    if ($env eq 'dev') {
        is($r->{status}, 200, "own-environment account on primary $port: 200");
    } else {
        refused($r, 404, 'integrated_account_not_found',
                "other-environment account on primary $port");
    }
}
refused($t->get("/x?integrated_account_id=$prod_acc", $tok_on{$primaries[1]}),
        404, 'integrated_account_not_found',
        'a production account with a development token');
refused($t->get('/x', 'egw_cluster_nobody_' . ('y' x 20)), 401,
        'invalid_token', 'a token nobody created');

my @asked = grep { gets($_) > $before{$_} } $c->ports;
is_deeply([ sort @asked ], [ sort @primaries ],
          'the lookups went to the three primaries, and to no replica');

# --- invalidation through any node --------------------------------------
# the node the gateway's subscriber is on
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
my $sub_node = sub_node();
ok($sub_node, 'the invalidation subscriber is on one node: '
              . ($sub_node // 'none'));

for my $port (sort keys %tok_on) {
    my $raw = $tok_on{$port};
    my $key = 'envgw:token:' . sha256_hex($raw);
    is($t->get('/x', $raw)->{status}, 200, "token on $port cached");
    my $rec = $t->{redis}->get($key);
    $rec =~ s/"revoked":false/"revoked":true/;
    $t->{redis}->set($key, $rec);
    is($t->get('/x', $raw)->{status}, 200,
       '... served from the cache before the invalidation');
    # published on a node other than the subscriber's
    my ($pub) = grep { $_ != $sub_node } @primaries;
    my $t0 = time;
    $c->node($pub)->publish($t->channel, $key);
    my $status;
    # cached for 60 s: only the invalidation refuses it within 10 s
    while (time - $t0 < 10) {
        $status = $t->get('/x', $raw)->{status};
        last if $status == 401;
        sleep 0.002;
    }
    my $ms = (time - $t0) * 1000;
    is($status, 401, sprintf('revocation published on node %d reached the '
                             . 'gateway (%.1f ms)', $pub, $ms));
    diag(sprintf 'revocation on %d: %.1f ms', $port, $ms);
}

$t->stop_pid('nginx', 'QUIT');
$t->check_log;

# --- read_from=replica ------------------------------------------------------
my $t2 = EnvGwTest->new;
$t2->{redis} = $t->{redis};
my %tok2;
for my $i (1 .. 200) {
    my $raw = "egw_replica_$i" . ('z' x 24);
    my $port = $c->owner('envgw:token:' . sha256_hex($raw));
    next if $tok2{$port};
    $tok2{$port} = $t2->token($raw, token_id => "tok_r$i",
                              team_id => 'team_a', environment_id => 'env_dev',
                              environment => 'development');
    last if keys %tok2 == 3;
}
# the replicas have the records before they are read there
for my $port (@primaries) {
    $c->node($port)->wait(1, 1000);
}
my %b2 = map { $_ => gets($_) } $c->ports;
$t2->start_nginx(<<"EOF");
    env_gateway_redis_cluster $seeds read_from=replica
                              connect_timeout=200ms read_timeout=500ms;
    upstream backend { server 127.0.0.1:%%BACKEND%%; }
    server {
        listen 127.0.0.1:%%PORT%%;
        location / {
            env_gateway on;
            proxy_pass http://backend;
        }
    }
EOF
my $ok = 0;
for my $round (1 .. 3) {
    for my $port (sort keys %tok2) {
        $ok++ if $t2->get('/x', $tok2{$port})->{status} == 200;
    }
}
is($ok, 9, 'read_from=replica: tokens of every primary\'s slots, 200');
my @replicas = map { $c->replica_of($_) } @primaries;
my @read = grep { gets($_) > $b2{$_} } @replicas;
is(scalar @read, 3, 'read_from=replica: every replica answered lookups');
my @prim = grep { gets($_) > $b2{$_} + 1 } @primaries;
ok(@prim <= 1, 'read_from=replica: the primaries answered (almost) none '
               . '(the first lookups may go to a seed before the map)');
$t2->stop;
$t->{no_log_check} = 1;    # checked above, when its nginx stopped
$t->stop;

# --- configuration -----------------------------------------------------------
my $tc = EnvGwTest->new;
sub conf_err {
    my ($name, $top, $re) = @_;
    my ($rc, $out) = $tc->check_conf(EnvGwTest::location_conf(
                                         'env_gateway on;', $top));
    isnt($rc, 0, "$name: refused");
    like($out, $re, "$name: says why") or diag($out);
}
conf_err('cluster and env_gateway_redis',
         "env_gateway_redis_cluster 127.0.0.1:7000;\n"
         . "    env_gateway_redis 127.0.0.1:6379;",
         qr/cannot be mixed with env_gateway_redis_cluster/);
conf_err('env_gateway_redis and cluster',
         "env_gateway_redis 127.0.0.1:6379;\n"
         . "    env_gateway_redis_cluster 127.0.0.1:7000;",
         qr/cannot be mixed with env_gateway_redis/);
conf_err('sentinel and cluster',
         "env_gateway_redis sentinel=m 127.0.0.1:26379;\n"
         . "    env_gateway_redis_cluster 127.0.0.1:7000;",
         qr/cannot be mixed with env_gateway_redis/);
conf_err('read_from', 'env_gateway_redis_cluster 127.0.0.1:7000 '
         . 'read_from=any;', qr/invalid value in "read_from=any"/);
conf_err('db=', 'env_gateway_redis_cluster 127.0.0.1:7000 db=1;',
         qr/cannot take db=/);
conf_err('no seed', 'env_gateway_redis_cluster read_from=replica;',
         qr/needs at least one seed/);
conf_err('unknown parameter', 'env_gateway_redis_cluster 127.0.0.1:7000 '
         . 'bogus=1;', qr/unknown parameter "bogus="/);
$tc->conf_ok('cluster with its parameters', EnvGwTest::location_conf(
    'env_gateway on;', 'env_gateway_redis_cluster 127.0.0.1:7000 '
    . '127.0.0.1:7001 read_from=replica password=secret username=gw '
    . 'connect_timeout=100ms read_timeout=200ms max_record=2m;'));

done_testing;
