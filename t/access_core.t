#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# env_gateway core data plane: every refusal row of the contract, the check
# order, admin and account tokens, variables, credential hiding.

use strict;
use warnings;

use lib 't/lib';
use EnvGwTest;
use Test::More;
use Digest::SHA qw(sha256_hex);
use JSON::PP;
use IO::Socket::INET;

my $t = EnvGwTest->new;
$t->start_redis;

my $VARS = join '|', map { "\$env_gateway_$_" }
    qw(environment_id environment team_id token_id account_id integration
       tenant_id);

my $proxy = <<"P";
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Environment-Id \$env_gateway_environment_id;
            proxy_set_header X-Envgw-Vars "$VARS";
            add_header X-Gw-Vars "$VARS" always;
            proxy_pass http://backend;
P

$t->start_nginx(<<"CONF");
    env_gateway_redis 127.0.0.1:%%REDIS%% connect_timeout=200ms read_timeout=300ms;
    upstream backend { server 127.0.0.1:%%BACKEND%%; keepalive 4; }
    server {
        listen 127.0.0.1:%%PORT%%;
        location = /healthz { return 200 "ok\\n"; }
        location / {
            env_gateway on;
            env_gateway_account \$arg_integrated_account_id;
$proxy
        }
        location /required/ {
            env_gateway on;
            env_gateway_account \$arg_integrated_account_id required;
$proxy
        }
        location /hdracct/ {
            env_gateway on;
            env_gateway_account \$http_x_account_id;
$proxy
        }
        location /apikey/ {
            env_gateway on;
            env_gateway_token \$http_x_api_key;
            env_gateway_account \$arg_integrated_account_id;
$proxy
        }
        location /argkey/ {
            env_gateway on;
            env_gateway_token \$arg_api_key;
            env_gateway_account \$arg_integrated_account_id;
$proxy
        }
        location /nohide/ {
            env_gateway on;
            env_gateway_hide_credentials off;
            env_gateway_account \$arg_integrated_account_id;
$proxy
        }
        location /nohidekey/ {
            env_gateway on;
            env_gateway_hide_credentials off;
            env_gateway_token \$http_x_api_key;
$proxy
        }
    }
CONF

# --- data ------------------------------------------------------------------

my $now = time;

$t->env('env_dev',   'team_a', 'development');
$t->env('env_stg',   'team_a', 'staging');
$t->env('env_prod',  'team_a', 'production');
$t->env('env_other', 'team_b', 'production');

my %tok;    # name -> raw token

sub mk {
    my ($name, %rec) = @_;
    my $raw = 'egw_' . $name . '_' . substr(sha256_hex("seed-$name"), 0, 24);
    $tok{$name} = $t->token($raw, token_id => "tok_$name", %rec);
    return $raw;
}

mk('dev', team_id => 'team_a', environment_id => 'env_dev',
   environment => 'development');
mk('prod', team_id => 'team_a', environment_id => 'env_prod',
   environment => 'production');
mk('future', team_id => 'team_a', environment_id => 'env_dev',
   environment => 'development', expires_at => $now + 3600);
mk('revoked', team_id => 'team_a', environment_id => 'env_dev',
   environment => 'development', revoked => JSON::PP::true);
mk('expired', team_id => 'team_a', environment_id => 'env_dev',
   environment => 'development', expires_at => $now - 10);
mk('admin', kind => 'admin', team_id => 'team_a',
   environment_id => 'env_dev', environment => 'development');
mk('acct', kind => 'account', team_id => 'team_a',
   environment_id => 'env_dev', environment => 'development',
   integrated_account_id => 'acc_dev1', expires_at => $now + 600);
mk('apikey', team_id => 'team_a', environment_id => 'env_dev',
   environment => 'development');
mk('argkey', team_id => 'team_a', environment_id => 'env_dev',
   environment => 'development');
mk('nohide', team_id => 'team_a', environment_id => 'env_dev',
   environment => 'development');
mk('nohidekey', team_id => 'team_a', environment_id => 'env_dev',
   environment => 'development');

# malformed token records
my %bad;
for my $b (qw(notjson noenv superuser badtype)) {
    $bad{$b} = 'egw_bad_' . $b . '_' . substr(sha256_hex("bad-$b"), 0, 16);
}
$t->put('token:' . sha256_hex($bad{notjson}), '{"token_id": "tok_x", oops');
$t->put('token:' . sha256_hex($bad{noenv}), { token_id => 'tok_noenv',
    team_id => 'team_a', kind => 'data', revoked => JSON::PP::false });
$t->put('token:' . sha256_hex($bad{superuser}), { token_id => 'tok_su',
    team_id => 'team_a', environment_id => 'env_dev', kind => 'superuser' });
$t->put('token:' . sha256_hex($bad{badtype}), { token_id => 'tok_bt',
    team_id => 'team_a', environment_id => 'env_dev', revoked => 'no' });

$t->account('acc_dev1', 'env_dev', integration => 'hubspot',
            tenant_id => 'acme');
$t->account('acc_dev2', 'env_dev', integration => 'salesforce',
            tenant_id => 'globex');
$t->account('acc_prod1', 'env_prod', integration => 'hubspot',
            tenant_id => 'acme');
$t->account('acc_other', 'env_other');
$t->account('acc_disabled', 'env_dev', status => 'disabled');
$t->put('account:acc_badjson', 'not json at all');

# an unknown token that is well-formed
my $unknown = 'egw_unknown_' . 'f' x 24;

# --- helpers ---------------------------------------------------------------

sub blines { my $l = $t->backend_log; scalar(() = $l =~ /\n/g) }

my $seen = 0;

# the refusal contract (the harness), variables empty, the backend saw
# nothing
sub refused {
    my ($r, $status, $code, $name) = @_;
    EnvGwTest::refused($r, $status, $code, $name,
                       count => \&blines, before => $seen);
    is($r->{headers}{'x-gw-vars'}, '||||||',
       "$name: variables empty on refusal");
    $seen = blines();
}

# assert a pass; returns the vars the backend saw as a hash
sub passed {
    my ($r, $name) = @_;
    is($r->{status}, 200, "$name: 200") or diag($r->{raw});
    like($r->{body}, qr/^backend /, "$name: answered by backend");
    my $n = blines();
    is($n, $seen + 1, "$name: backend saw one request");
    $seen = $n;
    my ($env) = $r->{body} =~ / env=(\S*) /;
    my ($vars) = $r->{body} =~ / vars=(.*)$/m;
    my %v;
    @v{qw(environment_id environment team_id token_id account_id
          integration tenant_id)} = split /\|/, ($vars // ''), -1;
    $v{upstream_env} = $env;
    is($r->{headers}{'x-gw-vars'}, $vars, "$name: same vars in add_header");
    return \%v;
}

sub get { my ($path, $tok, @h) = @_; $t->get($path, $tok, @h) }

# --- a plain pass and its variables ---------------------------------------

is($t->get('/healthz')->{status}, 200, 'healthz without gateway');

my $v = passed(get('/x?integrated_account_id=acc_dev1', $tok{dev}),
               'data token, own account');
is_deeply($v, { environment_id => 'env_dev', environment => 'development',
                team_id => 'team_a', token_id => 'tok_dev',
                account_id => 'acc_dev1', integration => 'hubspot',
                tenant_id => 'acme', upstream_env => 'env_dev' },
          'all variables on a 200');

$v = passed(get('/x?integrated_account_id=acc_dev2', $tok{dev}),
            'data token, second own account');
is("$v->{integration}|$v->{tenant_id}", 'salesforce|globex',
   'integration and tenant of the account');

$v = passed(get('/x', $tok{dev}), 'data token, no account');
is($v->{account_id} . $v->{integration} . $v->{tenant_id}, '',
   'no account variables without an account');
is($v->{environment_id}, 'env_dev', 'environment without an account');

$v = passed(get('/x?integrated_account_id=acc_prod1', $tok{prod}),
            'prod token, prod account');
is($v->{upstream_env}, 'env_prod', 'upstream env prod');

passed(get('/x', $tok{future}), 'token expiring in the future');

for my $scheme ('bearer', 'BEARER', 'BeArEr') {
    passed($t->http('GET', '/x', [ Authorization => "$scheme $tok{dev}" ]),
           "scheme '$scheme' case-insensitive");
}

# --- missing_token ---------------------------------------------------------

refused(get('/x'), 401, 'missing_token', 'no Authorization');
refused($t->http('GET', '/x', [ Authorization => 'Basic eHl6OmFiYw==' ]),
        401, 'missing_token', 'Basic scheme');
refused($t->http('GET', '/x', [ Authorization => 'Bearer ' ]),
        401, 'missing_token', 'Bearer with empty token');
refused($t->http('GET', '/x', [ Authorization => 'Bearer' ]),
        401, 'missing_token', 'bare Bearer');
refused($t->http('GET', '/x', [ Authorization => "Bearer$tok{dev}" ]),
        401, 'missing_token', 'Bearer glued to the token');
refused($t->http('GET', '/apikey/x', [ Authorization => "Bearer $tok{dev}" ]),
        401, 'missing_token', 'apikey location ignores Authorization');
refused(get('/argkey/x?api_key='), 401, 'missing_token', 'empty api_key arg');

# --- invalid_token ---------------------------------------------------------

refused(get('/x', $unknown), 401, 'invalid_token', 'unknown token');
refused(get('/x', $tok{revoked}), 401, 'invalid_token', 'revoked token');
refused(get('/x', $tok{expired}), 401, 'invalid_token', 'expired token');
refused($t->http('GET', '/x', [ Authorization => 'Bearer a b' ]),
        401, 'invalid_token', 'token with a space');
refused($t->http('GET', '/x', [ Authorization => "Bearer $tok{dev}\"" ]),
        401, 'invalid_token', 'token with a quote');
refused($t->http('GET', '/x', [ Authorization => "Bearer $tok{dev}=x" ]),
        401, 'invalid_token', 'token with = inside');
refused($t->http('GET', '/x', [ Authorization => "Bearer \x01abc" ]),
        401, 'invalid_token', 'token with a control character');
refused($t->http('GET', '/x', [ Authorization => "Bearer \xc3\xa9abc" ]),
        401, 'invalid_token', 'token with non-ASCII');
refused($t->http('GET', '/x', [ Authorization => 'Bearer ' . 'a' x 5000 ]),
        401, 'invalid_token', 'overlong token');
refused(get('/x', "$tok{dev}x"), 401, 'invalid_token',
        'valid token plus one character');

# --- check order -----------------------------------------------------------

refused(get('/x?integrated_account_id=acc_prod1'), 401,
                 'missing_token', 'no token + other-env account: 401');
refused(get('/x?integrated_account_id=acc_nonexistent', $unknown), 401,
        'invalid_token', 'invalid token + nonexistent account: 401');
refused(get('/x?integrated_account_id=acc_prod1', $tok{revoked}), 401,
        'invalid_token', 'revoked token + other-env account: 401');
refused(get('/x?environment_id=env_prod&integrated_account_id=nope',
            $tok{expired}),
        401, 'invalid_token', 'expired token + env + account: 401');
refused(get('/x?environment_id=env_prod&integrated_account_id=acc_nx',
            $tok{dev}),
        403, 'environment_mismatch', 'env mismatch before account 404');
refused(get('/required/x?environment_id=env_prod', $tok{dev}),
        403, 'environment_mismatch', 'env mismatch before missing account');

# --- integrated_account_not_found -----------------------------------------

my $r_nx = get('/x?integrated_account_id=acc_nonexistent', $tok{dev});
refused($r_nx, 404, 'integrated_account_not_found', 'nonexistent account');
my $r_oe = get('/x?integrated_account_id=acc_prod1', $tok{dev});
refused($r_oe, 404, 'integrated_account_not_found', 'other-env account');
my $r_ot = get('/x?integrated_account_id=acc_other', $tok{dev});
refused($r_ot, 404, 'integrated_account_not_found', 'other-team account');
my $r_ds = get('/x?integrated_account_id=acc_disabled', $tok{dev});
refused($r_ds, 404, 'integrated_account_not_found', 'inactive account');
is($r_oe->{body}, $r_nx->{body},
   'other-env and nonexistent: byte-identical bodies');
is($r_ot->{body}, $r_nx->{body}, 'other-team body identical');
is($r_ds->{body}, $r_nx->{body}, 'inactive body identical');
{
    my %h1 = %{ $r_nx->{headers} }; my %h2 = %{ $r_oe->{headers} };
    delete @h1{qw(date)}; delete @h2{qw(date)};
    is_deeply(\%h2, \%h1, 'other-env and nonexistent: same headers');
}
refused(get('/x?integrated_account_id=acc_dev1', $tok{prod}), 404,
        'integrated_account_not_found', 'dev account with prod token');
refused(get('/x?integrated_account_id=' . 'a' x 300, $tok{dev}), 404,
        'integrated_account_not_found', 'overlong account id');
refused($t->http('GET', '/hdracct/x', [ Authorization => "Bearer $tok{dev}",
        'X-Account-Id' => "acc_\xc3\xa9" ]),
        404, 'integrated_account_not_found', 'non-ASCII account id');
passed($t->http('GET', '/hdracct/x', [ Authorization => "Bearer $tok{dev}",
        'X-Account-Id' => 'acc_dev1' ]), 'account id from a header');

# --- missing_integrated_account_id ----------------------------------------

refused(get('/required/x', $tok{dev}), 400, 'missing_integrated_account_id',
        'required account absent');
refused(get('/required/x?integrated_account_id=', $tok{dev}), 400,
        'missing_integrated_account_id', 'required account empty');
refused(get('/required/x'), 401, 'missing_token',
        'required account absent, no token: 401 first');
$v = passed(get('/required/x?integrated_account_id=acc_dev1', $tok{dev}),
            'required account present');
is($v->{account_id}, 'acc_dev1', 'required: account variable');
$v = passed(get('/required/x', $tok{acct}),
            'required satisfied by an account token');
is($v->{account_id}, 'acc_dev1', 'account token implies its account');

# --- environment_mismatch --------------------------------------------------

refused(get('/x?environment_id=env_prod', $tok{dev}), 403,
        'environment_mismatch', 'data token names another env (arg)');
refused(get('/x', $tok{dev}, 'X-Environment-Id' => 'env_prod'), 403,
        'environment_mismatch', 'data token names another env (header)');
refused(get('/x', $tok{dev}, 'X-Environment-Id' => 'env_nonexistent'), 403,
        'environment_mismatch', 'data token names a nonexistent env');
$v = passed(get('/x?environment_id=env_dev', $tok{dev}),
            'data token names its own env (arg)');
is($v->{upstream_env}, 'env_dev', 'own env via arg');
$v = passed(get('/x', $tok{dev}, 'X-Environment-Id' => 'env_dev'),
            'forged X-Environment-Id equal to own env');
is($v->{upstream_env}, 'env_dev', 'upstream gets own env');
refused(get('/x', $tok{prod}, 'X-Environment-Id' => 'env_dev'), 403,
        'environment_mismatch', 'forged X-Environment-Id of another env');
refused(get('/x?integrated_account_id=acc_dev1', $tok{acct},
            'X-Environment-Id' => 'env_prod'),
        403, 'environment_mismatch', 'account token names another env');

# --- admin tokens ----------------------------------------------------------

$v = passed(get('/x', $tok{admin}), 'admin, no env named');
is($v->{upstream_env}, 'env_dev', 'admin acts in its own env');
is($v->{environment}, 'development', 'admin own env name');
$v = passed(get('/x?environment_id=env_prod', $tok{admin}),
            'admin names another env of its team (arg)');
is($v->{upstream_env}, 'env_prod', 'backend sees the named env');
is($v->{environment_id}, 'env_prod', 'environment_id variable');
is($v->{environment}, 'production', 'environment variable = named name');
is($v->{team_id}, 'team_a', 'team variable');
$v = passed(get('/x', $tok{admin}, 'X-Environment-Id' => 'env_stg'),
            'admin names another env (header)');
is("$v->{upstream_env}|$v->{environment}", 'env_stg|staging',
   'header-named env and name');
$v = passed(get('/x?environment_id=env_prod&integrated_account_id=acc_prod1',
                $tok{admin}), 'admin in prod with a prod account');
is("$v->{environment_id}|$v->{account_id}", 'env_prod|acc_prod1',
   'admin: account of the named env');
refused(get('/x?environment_id=env_prod&integrated_account_id=acc_dev1',
            $tok{admin}),
        404, 'integrated_account_not_found',
        'admin in prod, dev account: 404');
refused(get('/x?integrated_account_id=acc_prod1', $tok{admin}), 404,
        'integrated_account_not_found', 'admin in own env, prod account');
refused(get('/x?environment_id=env_other', $tok{admin}), 403,
        'environment_mismatch', 'admin names another team env');
refused(get('/x', $tok{admin}, 'X-Environment-Id' => 'env_other'), 403,
        'environment_mismatch', 'admin names another team env (header)');
refused(get('/x?environment_id=env_nowhere', $tok{admin}), 403,
        'environment_mismatch', 'admin names a nonexistent env');
# env record stored under one id but claiming another
$t->put('env:env_liar', { environment_id => 'env_prod', team_id => 'team_a',
                          name => 'liar' });
refused(get('/x?environment_id=env_liar', $tok{admin}), 403,
        'environment_mismatch', 'env record with another environment_id');

# --- account tokens --------------------------------------------------------

$v = passed(get('/x', $tok{acct}), 'account token, no account named');
is($v->{account_id}, 'acc_dev1', 'account token: its account');
is("$v->{integration}|$v->{tenant_id}", 'hubspot|acme',
   'account token: account details');
passed(get('/x?integrated_account_id=acc_dev1', $tok{acct}),
       'account token names its own account');
my $r_at = get('/x?integrated_account_id=acc_dev2', $tok{acct});
refused($r_at, 404, 'integrated_account_not_found',
        'account token names another account of its env');
is($r_at->{body}, $r_nx->{body}, 'account token 404 body identical');
refused(get('/x?integrated_account_id=acc_nonexistent', $tok{acct}), 404,
        'integrated_account_not_found',
        'account token names a nonexistent account');

# --- gateway_misconfigured -------------------------------------------------

for my $b (qw(notjson noenv superuser badtype)) {
    refused(get('/x', $bad{$b}), 500, 'gateway_misconfigured',
            "token record: $b");
    my $key = 'envgw:token:' . sha256_hex($bad{$b});
    like($t->slurp('error.log'), qr/\Q$key\E/, "$b: key in error.log");
}
refused(get('/x?integrated_account_id=acc_badjson', $tok{dev}), 500,
        'gateway_misconfigured', 'account record not JSON');
like($t->slurp('error.log'), qr/envgw:account:acc_badjson/,
     'account key in error.log');
$t->put('account:acc_noenv', { integrated_account_id => 'acc_noenv',
                               integration => 'hubspot' });
refused(get('/x?integrated_account_id=acc_noenv', $tok{dev}), 500,
        'gateway_misconfigured', 'account record without environment_id');
like($t->slurp('error.log'), qr/envgw:account:acc_noenv/,
     'account without env: key in error.log');
$t->redis->hset('envgw:account:acc_hash', 'environment_id', 'env_dev');
refused(get('/x?integrated_account_id=acc_hash', $tok{dev}), 500,
        'gateway_misconfigured', 'account key of the wrong Redis type');
$t->put('env:env_badjson', '[1,2');
refused(get('/x?environment_id=env_badjson', $tok{admin}), 500,
        'gateway_misconfigured', 'env record not JSON');

# --- invalid_request -------------------------------------------------------

my @inv = (
    [ 'Authorization with a comma',
      '/x', [ Authorization => "Bearer $tok{dev}, Bearer $tok{prod}" ] ],
    [ 'Authorization comma-joined schemes',
      '/x', [ Authorization => "Basic eHl6, Bearer $tok{dev}" ] ],
    [ 'account given twice',
      '/x?integrated_account_id=acc_dev1&integrated_account_id=acc_dev2' ],
    [ 'account twice, same value',
      '/x?integrated_account_id=acc_dev1&integrated_account_id=acc_dev1' ],
    [ 'account name percent-encoded',
      '/x?integrated%5Faccount_id=acc_dev1' ],
    [ 'account name percent-encoded, plain one too',
      '/x?integrated_account_id=acc_dev1&integrated%5Faccount%5Fid=acc_prod1' ],
    [ 'account value percent-encoded',
      '/x?integrated_account_id=acc%5Fdev1' ],
    [ 'account value with +', '/x?integrated_account_id=acc+dev1' ],
    [ 'environment_id given twice',
      '/x?environment_id=env_dev&environment_id=env_dev' ],
    [ 'environment_id name percent-encoded',
      '/x?environment%5Fid=env_prod' ],
    [ 'environment_id value percent-encoded',
      '/x?environment_id=env%5Fdev' ],
    [ 'environment_id value with +', '/x?environment_id=env+dev' ],
    [ 'X-Environment-Id twice', '/x',
      [ 'X-Environment-Id' => 'env_dev', 'X-Environment-Id' => 'env_dev' ] ],
    [ 'environment_id arg and header disagree', '/x?environment_id=env_dev',
      [ 'X-Environment-Id' => 'env_prod' ] ],
    [ 'account with /', '/x?integrated_account_id=acc/dev1' ],
    [ 'account with ?', '/x?integrated_account_id=acc?dev1' ],
    [ 'account with ..', '/x?integrated_account_id=acc..dev1' ],
    [ 'account of only ..', '/x?integrated_account_id=..' ],
    [ 'account with %', '/x?integrated_account_id=acc%' ],
    [ 'account header with #', '/hdracct/x', [ 'X-Account-Id' => 'acc#1' ] ],
    [ 'account header with backslash', '/hdracct/x',
      [ 'X-Account-Id' => 'acc\\dev1' ] ],
    [ 'account header with a space', '/hdracct/x',
      [ 'X-Account-Id' => 'acc dev1' ] ],
    [ 'account header with a tab', '/hdracct/x',
      [ 'X-Account-Id' => "acc\tdev1" ] ],
    [ 'account header with \x01', '/hdracct/x',
      [ 'X-Account-Id' => "acc\x01dev1" ] ],
    [ 'account header with DEL', '/hdracct/x',
      [ 'X-Account-Id' => "acc\x7fdev1" ] ],
    [ 'account header with /..', '/hdracct/x',
      [ 'X-Account-Id' => '../acc_dev1' ] ],
    [ 'api_key argument twice', '/argkey/x?api_key=A&api_key=B', [], 1 ],
    [ 'X-Api-Key twice', '/apikey/x',
      [ 'X-Api-Key' => $tok{apikey}, 'X-Api-Key' => $tok{apikey} ], 1 ],
);

for my $c (@inv) {
    my ($name, $path, $h, $notok) = @$c;
    my @h = @{ $h || [] };
    unshift @h, Authorization => "Bearer $tok{dev}"
        unless $notok || grep { $_ eq 'Authorization' } @h;
    refused($t->http('GET', $path, \@h), 400, 'invalid_request', $name);
}

# $arg_NAME matches names case-insensitively: a case variant is the same
# argument given twice, and the upstream may read the other one
{
    my $r = get('/x?integrated_account_id=acc_dev1'
                . '&INTEGRATED_ACCOUNT_ID=acc_prod1', $tok{dev});
    is($r->{status}, 400, 'account arg twice in two cases: 400');
    $seen = blines();
}
{
    my $r = get('/x?INTEGRATED_ACCOUNT_ID=acc_prod1', $tok{dev});
    isnt($r->{status}, 200, 'upper-case account arg of another env: no pass');
    $seen = blines();
}

# lookalikes that are not the consumed arguments pass
for my $q ('q=a%20b&integrated_account_id=acc_dev1',
           'integrated_account_id=acc_dev1&q=integrated_account_id',
           'my_integrated_account_id=acc_prod1&integrated_account_id=acc_dev1',
           'integrated_account_id=acc_dev1&xenvironment_id=env_prod')
{
    my $v = passed(get("/x?$q", $tok{dev}), "not ambiguous: ?$q");
    is("$v->{environment_id}|$v->{account_id}", 'env_dev|acc_dev1',
       "not ambiguous: ?$q: dev account");
}

# an account header given twice: the upstream may read either one
{
    my $r = $t->http('GET', '/hdracct/x', [ Authorization => "Bearer $tok{dev}",
        'X-Account-Id' => 'acc_dev1', 'X-Account-Id' => 'acc_prod1' ]);
    is($r->{status}, 400, 'account header twice: 400');
    $seen = blines();
}

# raw '#' in the request line: either nginx or the module refuses it
{
    my $r = get('/x?integrated_account_id=acc#dev1', $tok{dev});
    ok($r->{status} == 400 || $r->{status} == 404,
       "raw # in the query is not a pass ($r->{status})");
    my $n = blines();
    is($n, $seen, 'raw #: backend saw nothing');
    $seen = $n;
}

# duplicate Authorization headers: nginx refuses before the module runs
{
    my $dup = 'egw_dupheader_' . 'd' x 20;
    # throwaway tokens: nginx itself logs the duplicate line at info level
    my $r = $t->http('GET', '/x', [ Authorization => "Bearer ${dup}1",
                                    Authorization => "Bearer ${dup}2" ]);
    is($r->{status}, 400, 'duplicate Authorization headers: 400');
    my $n = blines();
    is($n, $seen, 'duplicate Authorization: backend saw nothing');
    $seen = $n;
}

# --- methods, bodies and keep-alive ------------------------------------------

{
    my $r = $t->http('HEAD', '/x', []);
    is($r->{status}, 401, 'HEAD refused: 401');
    is($r->{body}, '', 'HEAD refused: no body');
    is($r->{headers}{'www-authenticate'}, 'Bearer realm="env_gateway"',
       'HEAD refused: WWW-Authenticate');
    $seen = blines();

    refused($t->http('POST', '/x', [], 'x' x 65536), 401, 'missing_token',
            'POST with a 64 KB body refused');
    $r = $t->http('POST', '/x?integrated_account_id=acc_dev1',
                  [ Authorization => "Bearer $tok{dev}" ], '{"a":1}');
    passed($r, 'POST allowed');
    like($r->{body}, qr/^backend POST /, 'backend saw a POST');
}

# a refused request's body is discarded, never read as the next request
{
    my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$t->{port}",
                                  Proto => 'tcp', Timeout => 5) or die;
    my $inner = "GET /x?integrated_account_id=acc_prod1 HTTP/1.1\r\n"
              . "Host: localhost\r\nAuthorization: Bearer $tok{prod}\r\n\r\n";
    print $s "POST /x HTTP/1.1\r\nHost: localhost\r\n"
           . "Content-Length: " . length($inner) . "\r\n\r\n$inner"
           . "GET /x?integrated_account_id=acc_dev1 HTTP/1.1\r\n"
           . "Host: localhost\r\nAuthorization: Bearer $tok{dev}\r\n"
           . "Connection: close\r\n\r\n";
    my $raw = '';
    eval {
        local $SIG{ALRM} = sub { die "timeout\n" };
        alarm 5;
        local $/;
        $raw = <$s> // '';
        alarm 0;
    };
    alarm 0;
    close $s;
    my @st = $raw =~ m{^HTTP/1\.1 (\d+)}mg;
    is_deeply(\@st, [ 401, 200 ],
              'keep-alive: refused POST then allowed GET, body not a request');
    unlike($raw, qr/acc_prod1/, 'the body was never proxied');
    like($raw, qr/env=env_dev auth= key= vars=env_dev\|/,
         'the second request is the dev one');
    my $n = blines();
    is($n, $seen + 1, 'keep-alive: backend saw exactly one request');
    $seen = $n;
}

# a JSON record with a duplicated key is ambiguous: misconfigured
{
    my $raw = 'egw_dupkey_' . 'k' x 24;
    $t->put('token:' . sha256_hex($raw), '{"token_id":"tok_dk",'
        . '"team_id":"team_a","environment_id":"env_dev",'
        . '"environment_id":"env_prod","kind":"data"}');
    refused(get('/x', $raw), 500, 'gateway_misconfigured',
            'token record with a duplicated key');
}

# --- hide credentials ------------------------------------------------------

$v = passed(get('/x?integrated_account_id=acc_dev1', $tok{dev}),
            'default hides Authorization');
my $last = (split /\n/, $t->backend_log)[-1];
like($last, qr/ auth=- key=-$/, 'backend got no Authorization');

my $r = $t->http('GET', '/apikey/x?integrated_account_id=acc_dev1',
                 [ 'X-Api-Key' => $tok{apikey} ]);
$v = passed($r, 'X-Api-Key token');
is($v->{token_id}, 'tok_apikey', 'X-Api-Key token id');
$last = (split /\n/, $t->backend_log)[-1];
like($last, qr/ auth=- key=-$/, 'backend got no X-Api-Key');
{
    my $n = () = $t->backend_log =~ /\n/g;
    $r = $t->http('GET', '/apikey/x', [ 'x-api-key' => $tok{apikey},
                                        'Authorization' => 'Bearer other_cred' ]);
    is($r->{status}, 400, 'X-Api-Key and Authorization together: 400');
    is($r->{json} && $r->{json}{error}, 'invalid_request',
       'X-Api-Key and Authorization together: invalid_request');
    is(() = $t->backend_log =~ /\n/g, $n,
       'X-Api-Key and Authorization together: nothing reached the backend');
}

$r = get("/argkey/x?a=1&api_key=$tok{argkey}&integrated_account_id=acc_dev1");
$v = passed($r, 'api_key argument token');
is($v->{token_id}, 'tok_argkey', 'argument token id');
$last = (split /\n/, $t->backend_log)[-1];
unlike($last, qr/api_key/, 'api_key stripped from upstream query');
like($last, qr{^GET /argkey/x\?a=1&integrated_account_id=acc_dev1 },
     'the rest of the query is forwarded');
$r = get("/argkey/x?api_key=$tok{argkey}");
passed($r, 'api_key as the only argument');
$last = (split /\n/, $t->backend_log)[-1];
like($last, qr{^GET /argkey/x\?? }, 'empty query upstream');

{
    $r = get("/argkey/x?API_KEY=$tok{argkey}");
    my $n = blines();
    if ($r->{status} == 200) {
        $last = (split /\n/, $t->backend_log)[-1];
        unlike($last, qr/\Q$tok{argkey}\E/,
               'API_KEY (other case) not forwarded upstream');
    } else {
        pass("API_KEY refused ($r->{status})");
    }
    $seen = $n;
}

$r = get('/nohide/x?integrated_account_id=acc_dev1', $tok{nohide});
passed($r, 'hide_credentials off');
$last = (split /\n/, $t->backend_log)[-1];
like($last, qr/ auth=Bearer \Q$tok{nohide}\E /,
     'hide_credentials off forwards Authorization');
$r = $t->http('GET', '/nohidekey/x', [ 'X-Api-Key' => $tok{nohidekey} ]);
passed($r, 'hide_credentials off, X-Api-Key');
$last = (split /\n/, $t->backend_log)[-1];
like($last, qr/ key=\Q$tok{nohidekey}\E$/, 'off forwards X-Api-Key');

my $blog = $t->backend_log;
for my $name (grep { !/^nohide/ } sort keys %tok) {
    unlike($blog, qr/\Q$tok{$name}\E/, "backend log never has token $name")
        unless $name eq 'argkey';
}
{
    unlike($blog, qr/\Q$tok{argkey}\E/, 'backend log never has argkey token');
}
for my $b (sort keys %bad) {
    unlike($blog, qr/\Q$bad{$b}\E/, "backend log never has bad token $b");
}

# a refused request whose token is a query argument: the refusal is logged
# with nginx's request line, which carries the raw token
{
    my $raw = mk('argrevoked', team_id => 'team_a', environment_id => 'env_dev',
                 environment => 'development', revoked => JSON::PP::true);
    delete $tok{argrevoked};
    refused(get("/argkey/x?api_key=$raw"), 401, 'invalid_token',
            'revoked token in api_key argument');
    unlike($t->slurp('error.log'), qr/\Q$raw\E/,
           'error.log does not have a refused $arg_ token');
}

# --- gateway_unavailable ---------------------------------------------------

$t->stop_redis;
refused(get('/x?integrated_account_id=acc_dev1', $tok{dev}), 503,
        'gateway_unavailable', 'Redis down');
refused(get('/x', $unknown), 503, 'gateway_unavailable',
        'Redis down, unknown token: never a pass');
refused(get('/x'), 401, 'missing_token', 'Redis down, no token: still 401');
is($t->get('/healthz')->{status}, 200, 'healthz with Redis down');

# --- no raw token in error.log ----------------------------------------------

my $elog = $t->slurp('error.log');
for my $name (sort keys %tok) {
    unlike($elog, qr/\Q$tok{$name}\E/, "error.log never has token $name");
}
for my $b (sort keys %bad) {
    unlike($elog, qr/\Q$bad{$b}\E/, "error.log never has bad token $b");
}
unlike($elog, qr/\Q$unknown\E/, 'error.log never has the unknown token');

$t->stop;
done_testing;
