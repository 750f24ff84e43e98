#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause
# envgw --cluster writes stopped partway, on a 3-primary cluster with a
# caching gateway: an ACL user on every node may write every key but one
# family, so the write fails after its first commands.  envgw exits
# non-zero naming the refused command and how to finish; what was written
# grants no access the whole write would not, through the gateway:
#  - account remove, the tenant index refused: the account record was
#    deleted first, so the account is refused at once (the deletion was
#    published), by id and through its tenant;
#  - token rotate, the new token's record refused: the old token was
#    shortened first, the new one exists nowhere the gateway reads.

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
my $cl = EnvGwRedisCluster->start($t, primaries => 3, replicas => 0);
$t->{redis} = $cl->client;
my @primaries = $cl->primary_ports;
$t->{redis_port} = $primaries[0];
my $seeds = $cl->seeds;
my $c = EnvGwCli->new($t);

$t->start_nginx(<<"CONF");
    env_gateway_redis_cluster $seeds read_timeout=500ms;
    env_gateway_cache zone=envgw:1m ttl=60s negative_ttl=60s;
    server {
        listen 127.0.0.1:%%PORT%%;
        location /a {
            env_gateway on;
            env_gateway_account \$arg_integrated_account_id;
            add_header X-Cache \$env_gateway_cache_status always;
            proxy_pass http://127.0.0.1:%%BACKEND%%;
        }
        location /t {
            env_gateway on;
            env_gateway_tenant \$arg_tenant_id;
            proxy_pass http://127.0.0.1:%%BACKEND%%;
        }
    }
CONF

# the gateway caches once its invalidation subscriber is subscribed (on
# one node of the cluster)
my $sub = 0;
for (1 .. 250) {
    $sub = 0;
    for my $p (@primaries) {
        my @r = $cl->node($p)->pubsub('numsub', 'envgw:invalidate');
        $sub += $r[1] // 0;
    }
    last if $sub;
    sleep 0.02;
}
is($sub, 1, 'the gateway subscribed to envgw:invalidate');

$ENV{ENVGW_REDIS_CLUSTER} = 1;

$c->ok_run('env', 'env', 'create', '--team', 'team_a', '--id', 'env_dev',
           'development');
$c->ok_run('account', 'account', 'add', 'env_dev', 'acc_dev',
           '--integration', 'hubspot', '--tenant', 'acme');
my $tok = $c->json('token', 'create', 'env_dev');
my $raw = $tok->{token};
my $hash = sha256_hex($raw);

is($t->get('/a?integrated_account_id=acc_dev', $raw)->{status}, 200,
   'the account by id: 200');
is($t->get('/a?integrated_account_id=acc_dev', $raw)->{headers}{'x-cache'},
   'HIT', 'the account by id: cached');
is($t->get('/t?tenant_id=acme', $raw)->{status}, 200,
   'the account through its tenant: 200 (now cached)');

# an ACL user on every node: reads everything, writes every key of the
# given families only, publishes anywhere
sub writer {
    my (@families) = @_;
    for my $p ($cl->ports) {
        my $n = $cl->node($p);
        $n->acl('DELUSER', 'writer');
        $n->acl('SETUSER', 'writer', 'on', '>writer-pw', '+@all', '&*',
                '%R~*', map { "%W~envgw:$_" } @families);
    }
}

sub as_writer {
    return $c->run('--user', 'writer', '--password', 'writer-pw', @_);
}

my $all_but = sub {
    my %no = map { $_ => 1 } @_;
    return grep { !$no{$_} } ('env:*', 'envs', 'account:*', 'accounts:*',
        'tenant:*', 'integration:*', 'integrations:*', 'token:*',
        'token_id:*', 'tokens:*', 'credentials:*', 'audit');
};

# --- account remove, stopped before the tenant index ------------------------

writer($all_but->('tenant:*'));

my $res = as_writer('account', 'remove', 'acc_dev');
isnt($res->{rc}, 0, 'account remove, tenant index refused: exit non-zero');
like($res->{err}, qr/(?:SET|DEL) envgw:tenant:env_dev:acme failed: NOPERM/,
     'envgw names the refused command and key');
like($res->{err}, qr/fix the cause and run the command again, or, if it no longer applies .*, do what is listed/,
     'envgw says how to finish the write');
like($res->{err}, qr/^envgw: not done: (?:SET|DEL) envgw:tenant:env_dev:acme$/m,
     'envgw lists what it did not do, by key');
unlike($res->{err}, qr/not done: \S+ envgw:account:acc_dev$/m,
       'what was done is not listed');

# run again: the record it removes is gone, so it cannot complete the write
my $again = as_writer('account', 'remove', 'acc_dev');
isnt($again->{rc}, 0, 'account remove again: refused (the account is gone)');
unlike($res->{out}, qr/removed/, 'envgw does not say it removed it');

is($t->{redis}->exists('envgw:account:acc_dev'), 0,
   'Redis: the account record was deleted first');
like($t->{redis}->get('envgw:tenant:env_dev:acme') // '', qr/acc_dev/,
     'Redis: the tenant index still names it');

my $r;
for (1 .. 100) {
    $r = $t->get('/a?integrated_account_id=acc_dev', $raw);
    last if $r->{status} != 200;
    sleep 0.01;
}
is($r->{status}, 404, 'the account by id: 404 (the deletion was published '
                      . 'though the write failed)');
is($r->{json}{error}, 'integrated_account_not_found', '... not found');
is($t->get('/t?tenant_id=acme', $raw)->{status}, 404,
   'the account through its tenant: 404');

# --- token rotate, stopped before the new token's record --------------------

writer($all_but->('token:*'), "token:$hash");

my $before = time;
$res = as_writer('token', 'rotate', $tok->{token_id}, '--grace', '1h');
isnt($res->{rc}, 0, 'token rotate, new record refused: exit non-zero');
like($res->{err}, qr/SET envgw:token:[0-9a-f]{64} failed: NOPERM/,
     'envgw names the refused command');
unlike($res->{out} . $res->{err}, qr/egw_/, 'no new token was printed');

my $old = JSON::PP->new->decode($t->{redis}->get("envgw:token:$hash"));
ok(defined $old->{expires_at} && $old->{expires_at} <= time + 3600 + 5
   && $old->{expires_at} >= $before + 3600 - 5,
   'Redis: the old token was shortened to the grace first');

my @ids = grep { $_ ne $tok->{token_id} }
          $t->{redis}->smembers('envgw:tokens:env_dev');
is(scalar @ids, 1, 'Redis: the new token is indexed');
my $new_hash = $t->{redis}->get("envgw:token_id:$ids[0]") // '';
$new_hash =~ s/"//g;
like($new_hash, qr/^[0-9a-f]{64}$/, 'Redis: token_id names its hash');
is($t->{redis}->exists("envgw:token:$new_hash"), 0,
   'Redis: the new token has no record: it grants nothing');

# the old token acts as the whole rotate would have let it: in its grace
$t->{redis}->set('envgw:account:acc_dev', JSON::PP->new->encode({
    integrated_account_id => 'acc_dev', environment_id => 'env_dev',
    integration => 'hubspot', tenant_id => 'acme', status => 'active' }));
$t->{redis}->publish('envgw:invalidate', 'envgw:account:acc_dev');
for (1 .. 100) {
    $r = $t->get('/a?integrated_account_id=acc_dev', $raw);
    last if $r->{status} == 200;
    sleep 0.01;
}
is($r->{status}, 200, 'the old token, in its grace: 200');

# ACL users are per node: this test made them, it removes them
$cl->node($_)->acl('DELUSER', 'writer') for $cl->ports;

$t->stop;
done_testing;
