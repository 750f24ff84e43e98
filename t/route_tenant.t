#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# env_gateway_tenant: the account resolved through
# envgw:tenant:<environment_id>:<tenant_id>.  The same tenant id in three
# environments names three accounts; a tenant with several integrations
# needs env_gateway_integration; a tenant and an explicit account that
# disagree are refused; nothing refused reaches the backend.

use strict;
use warnings;

use lib 't/lib';
use EnvGwTest;
use Test::More;
use Digest::SHA qw(sha256_hex);
use JSON::PP;

my $t = EnvGwTest->new;
$t->start_redis;
$t->{backend_port} = EnvGwTest::free_port();
my $BE = "http://127.0.0.1:$t->{backend_port}";

my $VARS = '$env_gateway_account_id|$env_gateway_tenant_id|'
         . '$env_gateway_integration|$env_gateway_environment|'
         . '$env_gateway_method';

my $proxy = <<"P";
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Environment-Id \$env_gateway_environment_id;
            proxy_set_header X-Envgw-Vars "$VARS";
P

$t->start_nginx(<<"CONF");
    env_gateway_redis 127.0.0.1:%%REDIS%% connect_timeout=500ms read_timeout=2s;
    server {
        listen 127.0.0.1:%%PORT%%;

        # tenant only, no route
        location /t/ {
            env_gateway on;
            env_gateway_tenant \$arg_tenant_id;
$proxy
            proxy_pass http://127.0.0.1:%%BACKEND%%;
        }
        # tenant + integration, no route
        location /ti/ {
            env_gateway on;
            env_gateway_tenant \$arg_tenant_id;
            env_gateway_integration \$arg_integration;
$proxy
            proxy_pass http://127.0.0.1:%%BACKEND%%;
        }
        # tenant, explicit account, route
        location ~ ^/proxy/(?<res>[^/]+)(?:/(?<rest>[^/]+))?\$ {
            env_gateway on;
            env_gateway_account \$arg_integrated_account_id;
            env_gateway_tenant \$arg_tenant_id;
            env_gateway_route \$res \$rest;
$proxy
            proxy_pass \$env_gateway_upstream_url;
        }
        # tenant from a header, integration from a header, route
        location ~ ^/hproxy/(?<hres>[^/]+)(?:/(?<hrest>[^/]+))?\$ {
            env_gateway on;
            env_gateway_tenant \$http_x_tenant_id;
            env_gateway_integration \$http_x_integration;
            env_gateway_route \$hres \$hrest;
$proxy
            proxy_pass \$env_gateway_upstream_url;
        }
    }
CONF

# --- data ------------------------------------------------------------------

my %envs = (dev => [ 'env_dev', 'development' ],
            stg => [ 'env_stg', 'staging' ],
            prod => [ 'env_prod', 'production' ]);

my %tok;
for my $n (sort keys %envs) {
    my ($id, $name) = @{ $envs{$n} };
    $t->env($id, 'team_a', $name);
    $tok{$n} = $t->token('egw_' . $n . '_' . substr(sha256_hex("rt-$n"), 0, 24),
        token_id => "tok_rt_$n", team_id => 'team_a', environment_id => $id,
        environment => $name);
    $t->account("acc_${n}_acme", $id, integration => 'hubspot',
                tenant_id => 'acme');
    $t->put("tenant:$id:acme", { hubspot => "acc_${n}_acme" });
    $t->put("integration:$id:hubspot", { upstream => $BE, resources => {
        contacts => {
            list => { method => 'GET', path => "/$n/contacts" },
            get  => { method => 'GET', path => "/$n/contacts/{id}" },
            create => { method => 'POST', path => "/$n/contacts" },
        } } });
}
$tok{admin} = $t->token('egw_admin_' . substr(sha256_hex('rt-admin'), 0, 24),
    token_id => 'tok_rt_admin', kind => 'admin', team_id => 'team_a',
    environment_id => 'env_dev', environment => 'development');

# globex: two integrations in development only
$t->account('acc_dev_globex_hs', 'env_dev', integration => 'hubspot',
            tenant_id => 'globex');
$t->account('acc_dev_globex_sf', 'env_dev', integration => 'salesforce',
            tenant_id => 'globex');
$t->put('tenant:env_dev:globex', { hubspot => 'acc_dev_globex_hs',
                                   salesforce => 'acc_dev_globex_sf' });
$t->put('integration:env_dev:salesforce', { upstream => $BE, resources => {
    leads => { list => { method => 'GET', path => '/sf/leads' } } } });

# broken or hostile tenant records
$t->put('tenant:env_dev:ghost', { hubspot => 'acc_missing' });
$t->put('tenant:env_dev:cross', { hubspot => 'acc_prod_acme' });
$t->put('tenant:env_dev:empty', {});
$t->put('tenant:env_dev:badval', { hubspot => 42 });
$t->put('tenant:env_dev:notjson', '{"hubspot":');
$t->account('acc_dev_off', 'env_dev', integration => 'hubspot',
            tenant_id => 'off', status => 'disabled');
$t->put('tenant:env_dev:off', { hubspot => 'acc_dev_off' });

# --- helpers -----------------------------------------------------------------

sub nlines { my $n = () = $t->backend_log =~ /\n/g; $n }

sub req {
    my ($m, $path, $tk, @h) = @_;
    return $t->http($m, $path,
                    [ Authorization => 'Bearer ' . ($tok{$tk} // $tk), @h ],
                    $m eq 'POST' ? '{}' : undef);
}

# passes: 200 and the backend's variables are $vars; returns the response
sub passes {
    my ($m, $path, $tk, $vars, $name, %o) = @_;
    my $r = req($m, $path, $tk, @{ $o{h} || [] });
    is($r->{status}, 200, "$name: 200") or diag($r->{raw});
    my ($got) = $r->{body} =~ /vars=(.*)$/m;
    is($got, $vars, "$name: $vars");
    like($r->{body}, qr/^backend \Q$m $o{uri}\E /, "$name: upstream $o{uri}")
        if $o{uri};
    return $r;
}

sub refused {
    my ($m, $path, $tk, $status, $code, $name, %o) = @_;
    my $before = nlines();
    my $r = req($m, $path, $tk, @{ $o{h} || [] });
    EnvGwTest::refused($r, $status, $code, $name,
                       count => \&nlines, before => $before);
    return $r;
}

# --- the same tenant id in three environments --------------------------------

for my $n (qw(dev stg prod)) {
    my $name = $envs{$n}[1];
    passes(GET => '/t/x?tenant_id=acme', $n,
           "acc_${n}_acme|acme|hubspot|$name|", "$n: tenant acme (no route)");
    passes(GET => '/proxy/contacts?tenant_id=acme', $n,
           "acc_${n}_acme|acme|hubspot|$name|list",
           "$n: tenant acme, route list",
           # tenant_id is no consumed argument in the contract: forwarded
           uri => "/$n/contacts?tenant_id=acme");
    passes(GET => '/proxy/contacts/9?tenant_id=acme&limit=3', $n,
           "acc_${n}_acme|acme|hubspot|$name|get",
           "$n: tenant acme, route get", uri => "/$n/contacts/9?tenant_id=acme&limit=3");
    passes(POST => '/proxy/contacts?tenant_id=acme', $n,
           "acc_${n}_acme|acme|hubspot|$name|create",
           "$n: tenant acme, route create", uri => "/$n/contacts?tenant_id=acme");
    # the tenant with the account it resolves to: agreement
    passes(GET => "/proxy/contacts?tenant_id=acme&integrated_account_id=acc_${n}_acme",
           $n, "acc_${n}_acme|acme|hubspot|$name|list",
           "$n: tenant and the same explicit account",
           uri => "/$n/contacts?tenant_id=acme");
}

like($t->backend_log, qr{^GET /prod/contacts\S* env=env_prod }m,
     'backend: production tenant request stamped env_prod');

# an admin token naming an environment resolves the tenant there
passes(GET => '/t/x?tenant_id=acme&environment_id=env_prod', 'admin',
       'acc_prod_acme|acme|hubspot|production|', 'admin naming env_prod');
passes(GET => '/t/x?tenant_id=acme&environment_id=env_stg', 'admin',
       'acc_stg_acme|acme|hubspot|staging|', 'admin naming env_stg');
passes(GET => '/t/x?tenant_id=acme', 'admin',
       'acc_dev_acme|acme|hubspot|development|', 'admin in its own env');
refused(GET => '/t/x?tenant_id=acme&environment_id=env_prod', 'dev', 403,
        'environment_mismatch', 'data token naming another environment');

# --- unknown tenants, broken tenant records -----------------------------------

refused(GET => '/t/x?tenant_id=nobody', 'dev', 404,
        'integrated_account_not_found', 'unknown tenant');
refused(GET => '/proxy/contacts?tenant_id=nobody', 'dev', 404,
        'integrated_account_not_found', 'unknown tenant, route');
refused(GET => '/t/x?tenant_id=globex', 'prod', 404,
        'integrated_account_not_found', 'tenant of development only, prod token');
refused(GET => '/t/x?tenant_id=ghost', 'dev', 404,
        'integrated_account_not_found', 'tenant naming a missing account');
refused(GET => '/t/x?tenant_id=cross', 'dev', 404,
        'integrated_account_not_found',
        'tenant naming another environment\'s account');
refused(GET => '/t/x?tenant_id=empty', 'dev', 404,
        'integrated_account_not_found', 'tenant with no integrations');
refused(GET => '/t/x?tenant_id=off', 'dev', 404,
        'integrated_account_not_found', 'tenant naming a disabled account');
refused(GET => '/t/x?tenant_id=badval', 'dev', 500,
        'gateway_misconfigured', 'tenant record with a non-string value');
refused(GET => '/t/x?tenant_id=notjson', 'dev', 500,
        'gateway_misconfigured', 'tenant record not JSON');
like($t->slurp('error.log'), qr/envgw:tenant:env_dev:notjson/,
     'malformed tenant record logged with its key');

for my $bad ('a/b', '..', 'a%2fb', 'a%00b', 'a%0ab', '%2e%2e') {
    refused(GET => "/t/x?tenant_id=$bad", 'dev', 400, 'invalid_request',
            "tenant id \"$bad\"");
}

# no tenant at all: the route needs an account
refused(GET => '/proxy/contacts', 'dev', 400,
        'missing_integrated_account_id', 'route, no tenant, no account');
refused(GET => '/proxy/contacts?tenant_id=', 'dev', 400,
        'missing_integrated_account_id', 'route, empty tenant');
refused(GET => '/t/x?tenant_id=acme', 'egw_nobody_0123456789abcdef', 401, 'invalid_token',
        'bad token: no tenant lookup');

# --- several integrations -----------------------------------------------------

{
    my $r = refused(GET => '/proxy/contacts?tenant_id=globex', 'dev', 400,
                    'invalid_request',
                    'tenant with two integrations, no env_gateway_integration');
    refused(GET => '/t/x?tenant_id=globex', 'dev', 400, 'invalid_request',
            'tenant with two integrations (no route)');
    refused(GET => '/ti/x?tenant_id=globex', 'dev', 400, 'invalid_request',
            'tenant with two integrations, integration empty');
}

passes(GET => '/ti/x?tenant_id=globex&integration=hubspot', 'dev',
       'acc_dev_globex_hs|globex|hubspot|development|',
       'env_gateway_integration picks hubspot');
passes(GET => '/ti/x?tenant_id=globex&integration=salesforce', 'dev',
       'acc_dev_globex_sf|globex|salesforce|development|',
       'env_gateway_integration picks salesforce');
refused(GET => '/ti/x?tenant_id=globex&integration=pipedrive', 'dev', 404,
        'integrated_account_not_found', 'integration the tenant lacks');
refused(GET => '/ti/x?tenant_id=globex&integration=hub/spot', 'dev', 400,
        'invalid_request', 'integration name with a slash');
passes(GET => '/ti/x?tenant_id=acme&integration=hubspot', 'prod',
       'acc_prod_acme|acme|hubspot|production|',
       'integration named, one-integration tenant');

passes(GET => '/hproxy/leads', 'dev',
       'acc_dev_globex_sf|globex|salesforce|development|list',
       'route via headers: salesforce leads', uri => '/sf/leads',
       h => [ 'X-Tenant-Id' => 'globex', 'X-Integration' => 'salesforce' ]);
passes(GET => '/hproxy/contacts/4', 'dev',
       'acc_dev_globex_hs|globex|hubspot|development|get',
       'route via headers: hubspot contacts', uri => '/dev/contacts/4',
       h => [ 'X-Tenant-Id' => 'globex', 'X-Integration' => 'hubspot' ]);
{
    my $r = refused(GET => '/hproxy/leads', 'dev', 404, 'method_not_found',
                    'hubspot account, salesforce resource',
                    h => [ 'X-Tenant-Id' => 'globex',
                           'X-Integration' => 'hubspot' ]);
    like($r->{json} ? $r->{json}{message} : '', qr/leads.*hubspot.*development/s,
         'message names the resource, integration and environment');
}
# salesforce is installed in development only: staging's acme has no such
# integration in its tenant record
refused(GET => '/hproxy/leads', 'stg', 404, 'integrated_account_not_found',
        'staging tenant without salesforce',
        h => [ 'X-Tenant-Id' => 'acme', 'X-Integration' => 'salesforce' ]);

# --- tenant and explicit account -----------------------------------------------

refused(GET => '/proxy/contacts?tenant_id=acme&integrated_account_id=acc_dev_globex_hs',
        'dev', 400, 'invalid_request', 'tenant and account disagree');
refused(GET => '/proxy/contacts?tenant_id=acme&integrated_account_id=acc_prod_acme',
        'dev', 400, 'invalid_request',
        'tenant and another environment\'s account disagree');
passes(GET => '/proxy/leads?integrated_account_id=acc_dev_globex_sf', 'dev',
       'acc_dev_globex_sf|globex|salesforce|development|list',
       'explicit account alone, no tenant', uri => '/sf/leads');

# --- an account token and a tenant ---------------------------------------------

$tok{acct} = $t->token('egw_acct_' . substr(sha256_hex('rt-acct'), 0, 24),
    token_id => 'tok_rt_acct', kind => 'account', team_id => 'team_a',
    environment_id => 'env_dev', environment => 'development',
    integrated_account_id => 'acc_dev_acme', expires_at => time + 600);

passes(GET => '/t/x?tenant_id=acme', 'acct',
       'acc_dev_acme|acme|hubspot|development|',
       'account token, its own tenant');
passes(GET => '/proxy/contacts', 'acct',
       'acc_dev_acme|acme|hubspot|development|list',
       'account token, no tenant: its own account', uri => '/dev/contacts');
{
    # the contract: an account token naming any other account gets the
    # 404 of a missing account; a tenant that resolves to another account
    # names another account, and must not tell "exists" (400) from
    # "does not exist" (404)
    my $before = nlines();
    my $r = req(GET => '/ti/x?tenant_id=globex&integration=hubspot', 'acct');
    {
        is($r->{status}, 404, 'account token, another tenant\'s account: 404');
        is($r->{json} && $r->{json}{error}, 'integrated_account_not_found',
           'account token, another tenant\'s account: '
           . 'integrated_account_not_found');
    }
    isnt($r->{status}, 200, 'account token, another tenant\'s account: refused');
    is(nlines(), $before, 'account token, another tenant\'s account: '
       . 'nothing reached the backend');
}
refused(GET => '/ti/x?tenant_id=nobody&integration=hubspot', 'acct', 404,
        'integrated_account_not_found', 'account token, unknown tenant');

# --- a changed tenant record is read again (no cache configured) ------------

$t->put('tenant:env_dev:acme', { hubspot => 'acc_dev_globex_hs' });
passes(GET => '/t/x?tenant_id=acme', 'dev',
       'acc_dev_globex_hs|globex|hubspot|development|',
       'tenant record changed: new account');
passes(GET => '/t/x?tenant_id=acme', 'prod',
       'acc_prod_acme|acme|hubspot|production|',
       'production tenant unaffected');

$t->stop;
done_testing;
