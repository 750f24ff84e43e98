# SPDX-License-Identifier: BSD-2-Clause
# envgw's lifecycle commands and apply, through a live gateway whose cache
# keeps records (and misses) for 30 s: what the tool writes and publishes
# is enforced at once -- a promoted environment's methods, a disabled,
# enabled or removed account, a removed integration, a deleted environment.

use strict;
use warnings;

use lib 't/lib';
use Test::More;
use JSON::PP;
use Time::HiRes qw(sleep time);
use EnvGwTest;
use EnvGwCli;

my $t = EnvGwTest->new;
$t->start_redis;
my $c = EnvGwCli->new($t);

$t->start_nginx(<<'CONF');
    env_gateway_redis 127.0.0.1:%%REDIS%% read_timeout=500ms;
    env_gateway_cache zone=envgw:1m ttl=30s negative_ttl=30s;
    server {
        listen 127.0.0.1:%%PORT%%;
        location / {
            env_gateway on;
            env_gateway_account $arg_integrated_account_id;
            proxy_pass http://127.0.0.1:%%BACKEND%%;
        }
        location ~ ^/proxy/(?<res>[^/]+)(?:/(?<rest>[^/]+))?$ {
            env_gateway on;
            env_gateway_account $arg_integrated_account_id;
            env_gateway_route $res $rest;
            proxy_pass $env_gateway_upstream_url;
        }
    }
CONF
my $up = "http://127.0.0.1:$t->{backend_port}";

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
my $dev = $c->json('token', 'create', 'env_dev');
my $prod = $c->json('token', 'create', 'env_prod');

sub merge {
    my ($token, $account) = @_;
    return $t->http('POST', "/proxy/contacts/merge?integrated_account_id=$account",
                    [ Authorization => "Bearer $token" ]);
}

# Polls until the gateway answers $want (at most 10 s: the cache would keep
# the old answer 30 s) and reports how long it took.
sub becomes {
    my ($want, $what, $get) = @_;
    my $t0 = time;
    my $r;
    while (1) {
        $r = $get->();
        last if $r->{status} == $want || time - $t0 > 10;
        sleep 0.005;
    }
    is($r->{status}, $want, "$what: $want, not after the 30 s the cache "
                          . "keeps the old answer");
    diag(sprintf '%s: %.1f ms', $what, (time - $t0) * 1000);
    return $r;
}

# ---- apply: the whole-environment promote --------------------------------------

my $r = merge($prod->{token}, 'acc_env_prod');
is($r->{status}, 404, 'production: the custom method is unknown');
is($r->{json}{error}, 'method_not_found', '... method_not_found (now cached)');
is(merge($dev->{token}, 'acc_env_dev')->{status}, 200, 'development: 200');

my $export = $c->ok_run('export development', 'export', 'env_dev');
open my $fh, '>', $t->dir . '/dev.json' or die;
print $fh $export->{out};
close $fh;
my $res = $c->run('apply', $t->dir . '/dev.json', '--env', 'env_prod');
is($res->{rc}, 0, 'apply development\'s export to production')
    or diag $res->{err};
becomes(200, 'the promoted method in production',
        sub { merge($prod->{token}, 'acc_env_prod') });
like($t->backend_log, qr{^POST /crm/v3/objects/contacts/merge env=}m,
     'it reached its path upstream');
is($c->run('diff', 'env_dev', 'env_prod')->{rc}, 0, 'diff: the same now');

# ---- account disable / enable --------------------------------------------------

is($t->get('/x?integrated_account_id=acc_env_dev', $dev->{token})->{status},
   200, 'an active account: 200 (cached)');
$c->ok_run('account disable', 'account', 'disable', 'acc_env_dev');
$r = becomes(404, 'a disabled account',
             sub { $t->get('/x?integrated_account_id=acc_env_dev',
                           $dev->{token}) });
is($r->{json}{error}, 'integrated_account_not_found',
   '... answered like an unknown account');
my $unknown = $t->get('/x?integrated_account_id=acc_nope', $dev->{token});
is($r->{body}, $unknown->{body} =~ s/acc_nope/acc_env_dev/gr,
   '... the same body as an account that does not exist');
$c->ok_run('account enable', 'account', 'enable', 'acc_env_dev');
becomes(200, 'the account enabled again',
        sub { $t->get('/x?integrated_account_id=acc_env_dev', $dev->{token}) });

# ---- account remove revokes its account tokens -----------------------------------

my $acct = $c->json('token', 'create', 'env_dev', '--kind', 'account',
                    '--account', 'acc_env_dev');
is($t->get('/x', $acct->{token})->{status}, 200, 'an account token: 200');
$res = $c->ok_run('account remove', 'account', 'remove', 'acc_env_dev');
like($res->{out}, qr/revoked 1 account token/, '... says it revoked its token');
$r = becomes(401, 'the removed account\'s token',
             sub { $t->get('/x', $acct->{token}) });
$c->ok_run('an account of the same id again', 'account', 'add', 'env_dev',
           'acc_env_dev', '--integration', 'hubspot', '--tenant', 'acme');
is($t->get('/x?integrated_account_id=acc_env_dev', $dev->{token})->{status},
   200, 'the new account works');
is($t->get('/x', $acct->{token})->{status}, 401,
   'the old account token does not come back with it');

# ---- token revoke twice ---------------------------------------------------------

my $tmp = $c->json('token', 'create', 'env_dev');
$c->ok_run('revoke', 'token', 'revoke', $tmp->{token_id});
becomes(401, 'a revoked token', sub { $t->get('/x', $tmp->{token}) });
$res = $c->ok_run('revoke again', 'token', 'revoke', $tmp->{token_id});
is($res->{out}, "token $tmp->{token_id} was already revoked\n",
   'revoking twice says so once, on stdout');
is($res->{err}, '', '... and nothing else');

# ---- integration remove --------------------------------------------------------

is(merge($dev->{token}, 'acc_env_dev')->{status}, 200, 'merge: 200 (cached)');
$res = $c->ok_run('integration remove', 'integration', 'remove', 'env_dev',
                  'hubspot');
like($res->{err}, qr/1 integrated account of env_dev still name hubspot/,
     '... warns about the accounts that still name it');
$r = becomes(404, 'a removed integration',
             sub { merge($dev->{token}, 'acc_env_dev') });
like($r->{json}{message} // '', qr/hubspot is not installed/,
     '... method_not_found: not installed');
$c->ok_run('install it again', 'integration', 'set', 'env_dev', 'hubspot',
           '--upstream', $up);
is($t->http('GET', '/proxy/contacts/merge?integrated_account_id=acc_env_dev',
            [ Authorization => "Bearer $dev->{token}" ])->{status},
   404, 'installed again without methods: its methods are gone');

# ---- env delete ----------------------------------------------------------------

is($t->get('/x', $prod->{token})->{status}, 200, 'production token: 200');
{
    my $before = $c->dump_all;
    $res = $c->run('env', 'delete', 'env_prod');
    is($res->{rc}, 1, 'env delete of a non-empty environment: exit 1');
    like($res->{err}, qr/^envgw: environment 'env_prod' is not empty \(1 integration, 1 integrated account, 1 tenant, 1 unrevoked token\)/,
         '... says what it holds');
    is($c->dump_all, $before, '... and writes nothing');
}
$res = $c->ok_run('env delete --force', 'env', 'delete', 'env_prod',
                  '--force');
like($res->{out}, qr/^deleted environment env_prod: revoked 1 token; removed 1 integration, 1 integrated account, 1 tenant$/,
     '... says what it did');
becomes(401, 'a token of the deleted environment',
        sub { $t->get('/x', $prod->{token}) });
my @left = grep { /env_prod|acc_env_prod/ } $t->redis->keys('envgw:*');
is_deeply(\@left, [], 'no record of env_prod is left');
ok($c->jget('envgw:token:' . Digest::SHA::sha256_hex($prod->{token}))->{revoked},
   'its token records stay, revoked');
is($t->get('/x?integrated_account_id=acc_env_dev', $dev->{token})->{status},
   200, 'development is untouched');

unlike($t->backend_log . $t->slurp('error.log'), qr/egw_/,
       'no raw token in the backend or error log');

$t->stop;
done_testing;
