# SPDX-License-Identifier: BSD-2-Clause
# Slots migrated between primaries (SETSLOT IMPORTING/MIGRATING, MIGRATE,
# SETSLOT NODE) while a load runs through the gateway: the ASK window and
# the MOVED after it are followed, so no request fails and no refused
# request passes.

use strict;
use warnings;

use lib 't/lib';
use Test::More;
use Time::HiRes qw(sleep time);
use Digest::SHA qw(sha256_hex);
use EnvGwTest;
use EnvGwRedisCluster;

my $t = EnvGwTest->new;
my $c = EnvGwRedisCluster->start($t, primaries => 3, replicas => 1);
$t->{redis} = $c->client;
my $seeds = $c->seeds;

$t->env("env_$_", 'team_a', $EnvGwTest::ENV_NAME{$_}) for qw(dev prod);

# six valid tokens, two revoked ones, and accounts of both environments;
# their slots are the ones migrated
my (@cases, @slots);
for my $i (1 .. 6) {
    my $raw = $t->token("egw_migrate_ok_$i" . ('m' x 20),
                        token_id => "tok_m$i", team_id => 'team_a',
                        environment_id => 'env_dev',
                        environment => 'development');
    push @cases, [ "valid token $i", '/x', $raw, 200 ];
    push @slots, EnvGwRedisCluster::keyslot('envgw:token:' . sha256_hex($raw));
}
for my $i (1 .. 2) {
    my $raw = $t->token("egw_migrate_revoked_$i" . ('r' x 20),
                        token_id => "tok_r$i", team_id => 'team_a',
                        environment_id => 'env_dev',
                        environment => 'development',
                        revoked => JSON::PP::true);
    push @cases, [ "revoked token $i", '/x', $raw, 401 ];
    push @slots, EnvGwRedisCluster::keyslot('envgw:token:' . sha256_hex($raw));
}
$t->account('acc_mig_dev', 'env_dev');
$t->account('acc_mig_prod', 'env_prod');
push @cases, [ 'own-environment account', '/x?integrated_account_id='
               . 'acc_mig_dev', $cases[0][2], 200 ],
             [ 'other-environment account', '/x?integrated_account_id='
               . 'acc_mig_prod', $cases[0][2], 404 ];
push @slots, map { EnvGwRedisCluster::keyslot("envgw:account:$_") }
             qw(acc_mig_dev acc_mig_prod);

# no cache: every request asks the cluster
$t->start_nginx(<<"EOF");
    env_gateway_redis_cluster $seeds connect_timeout=200ms read_timeout=1s;
    upstream backend { server 127.0.0.1:%%BACKEND%%; }
    server {
        listen 127.0.0.1:%%PORT%%;
        location / {
            env_gateway on;
            env_gateway_account \$arg_integrated_account_id;
            proxy_pass http://backend;
        }
    }
EOF

for my $case (@cases) {
    is($t->get($case->[1], $case->[2])->{status}, $case->[3],
       "before: $case->[0]");
}

my @primaries = $c->primary_ports;
my %asking0 = map { $_ => $c->calls($_, 'asking') } @primaries;

my $load = $c->start_load($t, @cases);
sleep 0.3;

# each slot to the next primary, twice round: every slot moves twice
my ($moved_slots, $moved_keys) = (0, 0);
my %seen;
for my $round (1 .. 2) {
    for my $slot (grep { !$seen{"$round-$_"}++ } @slots) {
        my $from = $c->{map}[$slot][0];
        my ($i) = grep { $primaries[$_] == $from } 0 .. $#primaries;
        my $to = $primaries[($i + 1) % @primaries];
        # the keys sit on the target, the slot still on the source: ASK
        $moved_keys += $c->migrate_slot($slot, $to, sub { sleep 0.15 });
        $moved_slots++;
        sleep 0.1;
    }
}
sleep 0.3;
my $r = $c->stop_load($t, $load);

my $asking = 0;
$asking += $c->calls($_, 'asking') - $asking0{$_} for @primaries;

diag("migration under load: $moved_slots slot moves, $moved_keys keys, "
     . "$r->{requests} requests, $r->{failed} failed, $r->{forbidden} "
     . "forbidden passes, $asking ASKING redirects followed; statuses: "
     . join(' ', map { "$_ x$r->{statuses}{$_}" }
                 sort keys %{ $r->{statuses} }));

ok($moved_slots >= 20 && $moved_keys >= 20, "slots moved with their keys "
   . "($moved_slots moves, $moved_keys keys)");
ok($r->{requests} > 100, "a load ran meanwhile ($r->{requests} requests)");
is($r->{failed}, 0, 'no request failed') or diag($r->{failures});
is($r->{forbidden}, 0, 'no refused request passed');
ok($asking > 0, "the gateway followed ASK redirects ($asking)");

for my $case (@cases) {
    is($t->get($case->[1], $case->[2])->{status}, $case->[3],
       "after: $case->[0]");
}

$t->stop;

done_testing;
