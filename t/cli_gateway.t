# SPDX-License-Identifier: BSD-2-Clause
# The admin tool drives a live gateway: what envgw writes (and publishes)
# is what the gateway enforces, at once, through its cache.

use strict;
use warnings;

use lib 't/lib';
use Test::More;
use JSON::PP;
use Time::HiRes qw(sleep time);
use EnvGwTest;

my $t = EnvGwTest->new;
my $ENVGW = $ENV{ENVGW_BIN} || "$EnvGwTest::TOP/cli/envgw";
$t->start_redis;

sub envgw {
    my @args = @_;
    my $cmd = join ' ', map { "'$_'" } $ENVGW, '--redis',
        "127.0.0.1:$t->{redis_port}", @args;
    my $out = `$cmd 2>&1`;
    return ($? >> 8, $out);
}

sub envgw_json {
    my ($rc, $out) = envgw('--json', @_);
    is($rc, 0, "envgw @_") or diag($out);
    return eval { JSON::PP->new->decode($out) } || {};
}

$t->{backend_port} = EnvGwTest::free_port();
my $bp = $t->{backend_port};

$t->start_nginx(<<'CONF');
    env_gateway_redis 127.0.0.1:%%REDIS%% read_timeout=500ms;
    env_gateway_cache zone=envgw:1m ttl=30s negative_ttl=30s;
    upstream backend { server 127.0.0.1:%%BACKEND%%; }
    server {
        listen 127.0.0.1:%%PORT%%;
        location / {
            env_gateway on;
            env_gateway_account $arg_integrated_account_id;
            proxy_set_header X-Environment-Id $env_gateway_environment_id;
            proxy_pass http://backend;
        }
        location ~ ^/proxy/(?<res>[^/]+)(?:/(?<rest>[^/]+))?$ {
            env_gateway on;
            env_gateway_account $arg_integrated_account_id;
            env_gateway_route $res $rest;
            proxy_pass $env_gateway_upstream_url;
        }
    }
CONF

# environments, accounts, an integration in each
for my $e (['env_dev', 'development'], ['env_prod', 'production']) {
    envgw_json('env', 'create', '--team', 'team_a', '--id', $e->[0], $e->[1]);
    envgw_json('account', 'add', $e->[0], "acc_$e->[0]", '--integration',
               'hubspot', '--tenant', 'acme');
    envgw_json('integration', 'set', $e->[0], 'hubspot', '--upstream',
               "http://127.0.0.1:$bp");
    envgw_json('method', 'set', $e->[0], 'hubspot', 'contacts', 'list',
               'GET', '/crm/v3/objects/contacts');
}

# a token unknown to the gateway is cached as a miss for 30 s: creating it
# publishes the key, so it works at once anyway
my $dev = envgw_json('token', 'create', 'env_dev');
like($dev->{token} // '', qr/^egw_/, 'token create prints an egw_ token');
is($t->get('/x?integrated_account_id=acc_env_dev', $dev->{token})->{status},
   200, 'a new token: 200');
is($t->get('/x?integrated_account_id=acc_env_prod', $dev->{token})->{status},
   404, 'the new token and a production account: 404');

# revoke: refused at once although the token is cached for 30 s (polled
# 10 s: only the invalidation refuses it that soon)
my $t0 = time;
envgw_json('token', 'revoke', $dev->{token_id});
my $st;
while (time - $t0 < 10) {
    $st = $t->get('/x', $dev->{token})->{status};
    last if $st == 401;
    sleep 0.005;
}
is($st, 401, 'revoke: 401 although cached for 30 s');
diag(sprintf 'revoke: refused %.1f ms after envgw started', (time - $t0) * 1000);

# rotate: during the grace both tokens work, after it only the new one
my $old = envgw_json('token', 'create', 'env_dev');
is($t->get('/x', $old->{token})->{status}, 200, 'rotate: old token before');
my $new = envgw_json('token', 'rotate', $old->{token_id}, '--grace', '2s');
like($new->{token} // '', qr/^egw_/, 'rotate prints the new token');
isnt($new->{token}, $old->{token}, 'rotate: a different token');
is($t->get('/x', $old->{token})->{status}, 200, 'rotate: old works in the grace');
is($t->get('/x', $new->{token})->{status}, 200, 'rotate: new works in the grace');
sleep 2.5;
is($t->get('/x', $old->{token})->{status}, 401, 'rotate: old refused after the grace');
is($t->get('/x', $new->{token})->{status}, 200, 'rotate: new still works');

# a custom method in development only: diff shows it, promote ships it
my $prod = envgw_json('token', 'create', 'env_prod');
envgw_json('method', 'set', 'env_dev', 'hubspot', 'contacts', 'merge', 'POST',
           '/crm/v3/objects/contacts/merge');
my $r = $t->http('POST', '/proxy/contacts/merge?integrated_account_id=acc_env_dev',
                 [ Authorization => "Bearer $dev->{token}" ]);
is($r->{status}, 401, 'the revoked token stays refused on a route');
my $dev2 = envgw_json('token', 'create', 'env_dev');
$r = $t->http('POST', '/proxy/contacts/merge?integrated_account_id=acc_env_dev',
              [ Authorization => "Bearer $dev2->{token}" ]);
is($r->{status}, 200, 'merge in development: 200');
like($r->{body}, qr{POST /crm/v3/objects/contacts/merge}, 'merge reached its path');

$r = $t->http('POST', '/proxy/contacts/merge?integrated_account_id=acc_env_prod',
              [ Authorization => "Bearer $prod->{token}" ]);
is($r->{status}, 404, 'merge in production: 404');
is($r->{json}{error}, 'method_not_found', 'merge in production: method_not_found');
like($r->{json}{message}, qr/merge.*contacts.*hubspot.*production/,
     'the message names method, resource, integration and environment');

my ($rc, $out) = envgw('diff', 'env_dev', 'env_prod');
is($rc, 1, 'diff exits 1 when the environments differ');
like($out, qr/^\+ hubspot contacts\.merge POST \/crm\/v3\/objects\/contacts\/merge/m,
     'diff shows the development-only method');

($rc, $out) = envgw('promote', 'env_dev', 'env_prod', '--method',
                    'contacts.merge');
is($rc, 0, 'promote') or diag($out);
$r = $t->http('POST', '/proxy/contacts/merge?integrated_account_id=acc_env_prod',
              [ Authorization => "Bearer $prod->{token}" ]);
is($r->{status}, 200, 'merge in production after promote: 200 at once');
($rc, $out) = envgw('diff', 'env_dev', 'env_prod');
is($rc, 0, 'diff exits 0 once they match') or diag($out);

# removing an account is enforced at once too
envgw_json('account', 'remove', 'acc_env_prod');
is($t->get('/x?integrated_account_id=acc_env_prod', $prod->{token})->{status},
   404, 'a removed account: 404 at once');

unlike($t->backend_log . $t->slurp('error.log'), qr/egw_/,
       'no raw token in the backend or error log');

$t->stop;
done_testing;
