# SPDX-License-Identifier: BSD-2-Clause
# envgw --cluster against a 3-primary cluster, with a gateway on it: the
# records keep their names and spread over the primaries; token create,
# list and revoke, env, account and integration create, diff and promote
# work and are enforced by the gateway at once (the PUBLISH of a write
# reaches the gateway's subscriber on another node); a cluster node
# without --cluster is refused clearly.

use strict;
use warnings;

use lib 't/lib';
use Test::More;
use Time::HiRes qw(sleep time);
use Digest::SHA qw(sha256_hex);
use EnvGwTest;
use EnvGwCli;
use EnvGwRedisCluster;

my $t = EnvGwTest->new;
my $cl = EnvGwRedisCluster->start($t, primaries => 3, replicas => 1);
$t->{redis} = $cl->client;
my @primaries = $cl->primary_ports;
# envgw's --redis: a seed; the last primary, not the first
$t->{redis_port} = $primaries[-1];
my $seeds = $cl->seeds;
my $c = EnvGwCli->new($t);

$t->start_nginx(<<"CONF");
    env_gateway_redis_cluster $seeds read_timeout=500ms;
    env_gateway_cache zone=envgw:1m ttl=30s negative_ttl=30s;
    server {
        listen 127.0.0.1:%%PORT%%;
        location / {
            env_gateway on;
            env_gateway_account \$arg_integrated_account_id;
            proxy_pass http://127.0.0.1:%%BACKEND%%;
        }
        location ~ ^/proxy/(?<res>[^/]+)(?:/(?<rest>[^/]+))?\$ {
            env_gateway on;
            env_gateway_account \$arg_integrated_account_id;
            env_gateway_route \$res \$rest;
            proxy_pass \$env_gateway_upstream_url;
        }
    }
CONF
my $up = "http://127.0.0.1:$t->{backend_port}";

# without --cluster, a write to a node that does not own the key fails
my $res = $c->run('env', 'create', '--team', 'team_a', '--id', 'env_x',
                  'x-env');
if ($cl->owner('envgw:env:env_x') != $primaries[-1]) {
    isnt($res->{rc}, 0, 'without --cluster: refused');
    like($res->{err}, qr/MOVED|CROSSSLOT/, '... Redis says why');
} else {
    pass('without --cluster: the key is on the seed (nothing to show)');
    pass('...');
}

$ENV{ENVGW_REDIS_CLUSTER} = 1;

for my $e ([ 'env_dev', 'development' ], [ 'env_prod', 'production' ]) {
    my ($id, $name) = @$e;
    $c->ok_run("$id", 'env', 'create', '--team', 'team_a', '--id', $id, $name);
    $c->ok_run("$id account", 'account', 'add', $id, "acc_$id",
               '--integration', 'hubspot', '--tenant', 'acme');
    $c->ok_run("$id hubspot", 'integration', 'set', $id, 'hubspot',
               '--upstream', $up);
    $c->ok_run("$id contacts.list", 'method', 'set', $id, 'hubspot',
               'contacts', 'list', 'GET', '/crm/v3/objects/contacts');
}
$c->ok_run('a custom method in development', 'method', 'set', 'env_dev',
           'hubspot', 'contacts', 'merge', 'POST',
           '/crm/v3/objects/contacts/merge');

# tokens in pairs (one per environment), at least 12, until their records
# are on every primary (random tokens: 12 miss one primary ~2% of the time)
my (%tok, %on);
my $n = 0;
while ($n < 12 || $n % 2 || (keys %on < 3 && $n < 60)) {
    $n++;
    my $e = $n % 2 ? 'env_dev' : 'env_prod';
    my $j = $c->json('token', 'create', $e);
    push @{ $tok{$e} }, $j;
    $on{ $cl->owner('envgw:token:' . sha256_hex($j->{token})) }++;
}
is(scalar keys %on, 3, 'the token records spread over the three primaries ('
   . join(', ', map { "$_: $on{$_}" } sort keys %on) . ')');
my $dev = $tok{env_dev}[0];
my $prod = $tok{env_prod}[0];

is($t->{redis}->get("envgw:token_id:$dev->{token_id}"),
   '"' . sha256_hex($dev->{token}) . '"',
   'token_id:<id> names the record, as without '
   . 'a cluster');
ok($t->{redis}->sismember('envgw:tokens:env_dev', $dev->{token_id}),
   'the index tokens:<env> lists it, as without a cluster');

# the gateway, for every token
my $ok = 0;
for my $e (qw(env_dev env_prod)) {
    for my $j (@{ $tok{$e} }) {
        $ok++ if $t->get("/x?integrated_account_id=acc_$e",
                         $j->{token})->{status} == 200;
    }
}
is($ok, $n, "every token ($n) works through the gateway with its own account");
is($t->get('/x?integrated_account_id=acc_env_prod', $dev->{token})->{status},
   404, 'a development token, a production account: 404');

my $list = $c->json('token', 'list', 'env_dev');
is(scalar @{ ref $list eq 'ARRAY' ? $list : [] }, $n / 2,
   'token list: the development tokens (' . ($n / 2) . ')');

# diff and promote
sub merge {
    my ($token, $account) = @_;
    return $t->http('POST',
                    "/proxy/contacts/merge?integrated_account_id=$account",
                    [ Authorization => "Bearer $token" ]);
}
is(merge($prod->{token}, 'acc_env_prod')->{status}, 404,
   'production: merge unknown (cached)');
is(merge($dev->{token}, 'acc_env_dev')->{status}, 200, 'development: 200');
$res = $c->run('diff', 'env_dev', 'env_prod');
is($res->{rc}, 1, 'diff exits 1 when the environments differ');
like($res->{out},
     qr{^\+ hubspot contacts\.merge POST /crm/v3/objects/contacts/merge}m,
     'diff shows the development-only method');
$c->ok_run('promote', 'promote', 'env_dev', 'env_prod', '--method',
           'contacts.merge');
my $t0 = time;
my $r;
for (1 .. 200) {
    $r = merge($prod->{token}, 'acc_env_prod');
    last if $r->{status} == 200;
    sleep 0.005;
}
is($r->{status}, 200, sprintf('production: merge promoted, enforced in '
                              . '%.1f ms', (time - $t0) * 1000));
is($c->run('diff', 'env_dev', 'env_prod')->{rc}, 0, 'diff: the same now');

# revocation reaches the gateway in milliseconds
is($t->get('/x', $dev->{token})->{status}, 200, 'a token, cached');
$c->ok_run('revoke', 'token', 'revoke', $dev->{token_id});
$t0 = time;
for (1 .. 200) {
    $r = $t->get('/x', $dev->{token});
    last if $r->{status} == 401;
    sleep 0.005;
}
my $ms = (time - $t0) * 1000;
is($r->{status}, 401, sprintf('revoked through envgw --cluster: 401 after '
                              . '%.1f ms', $ms));
diag(sprintf 'revocation on the cluster: %.1f ms', $ms);

# account remove
is($t->get('/x?integrated_account_id=acc_env_prod', $prod->{token})->{status},
   200, 'production account, cached');
$c->ok_run('account remove', 'account', 'remove', 'acc_env_prod');
$t0 = time;
for (1 .. 200) {
    $r = $t->get('/x?integrated_account_id=acc_env_prod', $prod->{token});
    last if $r->{status} == 404;
    sleep 0.005;
}
is($r->{status}, 404, 'a removed account: 404 at once');

# the audit trail is written on the cluster too
my @audit = $t->{redis}->xrange('envgw:audit', '-', '+');
ok(@audit >= 20, 'the audit stream has every write (' . scalar(@audit) . ')');

# ---- the order of a write's commands across the nodes (MONITOR) ----------
# every primary's MONITOR, one clock (one machine): the commands of a write
# in the order the nodes ran them
my $monitors = 0;
sub monitored {
    my ($code) = @_;
    my @ports = $cl->primary_ports;
    my %mon;
    for my $port (@ports) {
        my $name = "monitor-$port-" . ++$monitors;
        $t->spawn($name, 'stdbuf', '-oL', 'redis-cli', '-p', $port,
                  'monitor');
        $mon{$port} = $name;
    }
    # each monitor is attached once it sees a PING
    for my $port (@ports) {
        my $ok = 0;
        for (1 .. 100) {
            $cl->node($port)->ping;
            last if ($ok = $t->slurp("$mon{$port}.out") =~ /"PING"/);
            sleep 0.02;
        }
        die "MONITOR on $port did not start" unless $ok;
    }
    $code->();
    sleep 0.2;
    my @cmds;
    for my $port (@ports) {
        $t->stop_pid($mon{$port});
        for (split /\n/, $t->slurp("$mon{$port}.out")) {
            next unless /^(\d+\.\d+) \[\d+ [^\]]+\] "(\w+)"(?: "([^"]*)")?/;
            next if $2 eq 'PING' || $2 eq 'CLUSTER' || $2 eq 'AUTH';
            push @cmds, [ $1, uc $2, $3 // '' ];
        }
    }
    return map { "$_->[1] $_->[2]" } sort { $a->[0] <=> $b->[0] } @cmds;
}

sub pos_of {
    my ($list, $re) = @_;
    my ($i) = grep { $list->[$_] =~ $re } 0 .. $#$list;
    return $i // -1;
}

my $minted;
my @seq = monitored(sub { $minted = $c->json('token', 'create', 'env_dev') });
my $h = sha256_hex($minted->{token} // '');
my ($idx, $map, $grant) = (pos_of(\@seq, qr/^SADD envgw:tokens:env_dev$/),
                           pos_of(\@seq, qr/^SET envgw:token_id:/),
                           pos_of(\@seq, qr/^SET envgw:token:$h$/));
ok($idx >= 0 && $map > $idx && $grant > $map,
   "token create on the cluster: the index (command $idx), then "
   . "token_id (command $map), then the grant (command $grant)")
    or diag(join "\n", @seq);
ok(pos_of(\@seq, qr/^PUBLISH envgw:invalidate$/) > $grant,
   '... then the PUBLISH');

$c->ok_run('an account to remove', 'account', 'add', 'env_dev', 'acc_gone',
           '--integration', 'hubspot', '--tenant', 'gone');
my $acctok = $c->json('token', 'create', 'env_dev', '--kind', 'account',
                      '--account', 'acc_gone');
@seq = monitored(sub { $c->ok_run('account remove (monitored)', 'account',
                                  'remove', 'acc_gone') });
my ($del, $revoke, $unindex) =
    (pos_of(\@seq, qr/^DEL envgw:account:acc_gone$/),
     pos_of(\@seq, qr/^SET envgw:token:/),
     pos_of(\@seq, qr/^SREM envgw:accounts:env_dev$/));
ok($del >= 0 && $unindex > $del,
   "account remove on the cluster: the record deleted (command $del) "
   . "before its index entry (command $unindex)") or diag(join "\n", @seq);
ok(!$acctok->{token} || ($revoke >= 0 && $revoke < $unindex),
   "... its account token revoked (command $revoke) before the index entry")
   or diag(join "\n", @seq);

# a command that is not a cluster's: --db
$res = $c->run('--db', '1', 'env', 'list');
isnt($res->{rc}, 0, '--cluster --db 1: refused');
like($res->{err}, qr/database 0 only/, '... says why');

$t->stop;

done_testing;
