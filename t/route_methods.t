#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# env_gateway_route: per-environment methods through real nginx + Redis +
# backends.  Every verb, custom methods present in development and absent
# in production, an integration missing in staging, path templates ({id}
# and {name}), percent-encoding, query forwarding minus consumed
# arguments, traversal attempts, a record over 16 KB, and both an
# upstream{} block (keepalive, no resolver) and a literal IP URL.

use strict;
use warnings;

use lib 't/lib';
use EnvGwTest;
use Test::More;
use Digest::SHA qw(sha256_hex);
use JSON::PP;

my $t = EnvGwTest->new;
$t->start_redis;

# the backend ports must be known before the records are seeded
$t->{backend_port} = EnvGwTest::free_port();
my $kb_port = EnvGwTest::free_port();   # behind "upstream hubspot_dev"
my $BACKEND = $t->{backend_port};

my $VARS = '$env_gateway_method|$env_gateway_upstream_url|'
         . '$env_gateway_integration|$env_gateway_account_id|'
         . '$env_gateway_environment';

my $proxy = <<"P";
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Environment-Id \$env_gateway_environment_id;
            proxy_set_header X-Envgw-Vars "$VARS";
            proxy_pass \$env_gateway_upstream_url;
P

$t->start_nginx(<<"CONF");
    env_gateway_redis 127.0.0.1:%%REDIS%% connect_timeout=500ms read_timeout=2s;

    # the upstream named by the development record: no resolver needed
    upstream hubspot_dev { server 127.0.0.1:$kb_port; keepalive 4; }

    log_format kb '\$request_method \$request_uri conn=\$connection '
                  'vars=\$http_x_envgw_vars';
    server {
        listen 127.0.0.1:$kb_port;
        access_log %%DIR%%/kb.log kb;
        location / {
            default_type text/plain;
            return 200 "kb \$request_method \$request_uri conn=\$connection vars=\$http_x_envgw_vars\\n";
        }
    }

    server {
        listen 127.0.0.1:%%PORT%%;
        location ~ ^/proxy/(?<res>[^/]+)(?:/(?<rest>[^/]+))?\$ {
            env_gateway on;
            env_gateway_account \$arg_integrated_account_id;
            env_gateway_route \$res \$rest;
$proxy
        }
        # rest may hold anything after the resource (slashes included)
        location ~ ^/any/(?<ares>[^/]+)/(?<arest>.+)\$ {
            env_gateway on;
            env_gateway_account \$arg_integrated_account_id;
            env_gateway_route \$ares \$arest;
$proxy
        }
        # the account from a header
        location ~ ^/hdr/(?<hres>[^/]+)\$ {
            env_gateway on;
            env_gateway_account \$http_x_account_id;
            env_gateway_route \$hres;
$proxy
        }
        # rest straight from the (undecoded) query
        location = /q {
            env_gateway on;
            env_gateway_account \$arg_integrated_account_id;
            env_gateway_route \$arg_res \$arg_id;
$proxy
        }
    }
CONF

# --- data ------------------------------------------------------------------

$t->env('env_dev',  'team_a', 'development');
$t->env('env_stg',  'team_a', 'staging');
$t->env('env_prod', 'team_a', 'production');

my %tok;
for ([dev => 'env_dev', 'development'], [stg => 'env_stg', 'staging'],
     [prod => 'env_prod', 'production'])
{
    my ($n, $id, $name) = @$_;
    $tok{$n} = $t->token('egw_' . $n . '_' . substr(sha256_hex("rm-$n"), 0, 24),
        token_id => "tok_rm_$n", team_id => 'team_a', environment_id => $id,
        environment => $name);
}

$t->account('acc_dev',  'env_dev',  integration => 'hubspot');
$t->account('acc_stg',  'env_stg',  integration => 'hubspot');
$t->account('acc_prod', 'env_prod', integration => 'hubspot');
$t->account('acc_stg_sf', 'env_stg', integration => 'salesforce');
$t->account('acc_dev_sf', 'env_dev', integration => 'salesforce');
$t->account('acc_dev_big', 'env_dev', integration => 'bigone');

sub m_ { return { method => $_[0], path => $_[1] } }

my %std = (
    list   => m_(GET    => '/crm/v3/objects/contacts'),
    get    => m_(GET    => '/crm/v3/objects/contacts/{id}'),
    create => m_(POST   => '/crm/v3/objects/contacts'),
    update => m_(PATCH  => '/crm/v3/objects/contacts/{id}'),
    delete => m_(DELETE => '/crm/v3/objects/contacts/{id}'),
);

# development: custom methods merge (POST) and search (GET), {name} templates
$t->put('integration:env_dev:hubspot', {
    upstream => 'http://hubspot_dev',
    resources => {
        contacts => { %std,
            merge  => m_(POST => '/crm/v3/objects/contacts/merge'),
            search => m_(GET  => '/crm/v3/objects/contacts/search'),
        },
        pairs => {
            get  => m_(GET => '/crm/v3/pairs/{id}/to/{id}/and/{id}/{id}'),
        },
        objects => {
            list => m_(GET => '/crm/v3/objects/{object}'),
            get  => m_(GET => '/crm/v3/objects/{object}/{id}'),
        },
        # declared verbs an Allow header can name, and two it cannot
        odd => {
            purge  => m_(PURGE        => '/v1/odd/purge'),
            spaced => m_('PO ST'      => '/v1/odd/spaced'),
            listed => m_('GET,POST'   => '/v1/odd/listed'),
        },
    },
});

# production: no custom methods, no delete, a literal IP upstream
my %prod = %std;
delete $prod{delete};
$t->put('integration:env_prod:hubspot', {
    upstream => "http://127.0.0.1:$BACKEND",
    resources => { contacts => \%prod },
});

# staging: hubspot installed (literal URL), salesforce not installed
$t->put('integration:env_stg:hubspot', {
    upstream => "http://127.0.0.1:$BACKEND/",
    resources => { contacts => \%std },
});
$t->put('integration:env_dev:salesforce', {
    upstream => "http://127.0.0.1:$BACKEND",
    resources => { leads => { list => m_(GET => '/services/leads') } },
});

# a record well over 16 KB: many resources and a big unknown field
my %many;
for my $i (1 .. 300) {
    $many{sprintf 'res%03d', $i} = {
        list => m_(GET => sprintf('/v1/res%03d', $i)),
        get  => m_(GET => sprintf('/v1/res%03d/{id}', $i)),
        poke => m_(POST => sprintf('/v1/res%03d/poke', $i)),
    };
}
$many{widgets} = { list => m_(GET => '/v1/widgets'),
                   frob => m_(PUT => '/v1/widgets/frob') };
my $bigrec = $EnvGwTest::JSON->encode({
    upstream => 'http://hubspot_dev',
    notes => 'x' x 40000,
    extra => { nested => [ (1) x 2000 ] },
    resources => \%many,
});
cmp_ok(length $bigrec, '>', 16384, 'integration record over 16 KB ('
       . length($bigrec) . ' bytes)');
$t->put('integration:env_dev:bigone', $bigrec);

# --- helpers -----------------------------------------------------------------

sub nlines {
    my $n = 0;
    for my $f ('backend.log', 'kb.log') {
        my $s = $t->slurp($f);
        $n += () = $s =~ /\n/g;
    }
    return $n;
}

sub req {
    my ($m, $path, $tk, $body, @h) = @_;
    return $t->http($m, $path, [ Authorization => "Bearer $tok{$tk}", @h ],
                    $body);
}

# a routed request: status 200, the upstream saw $method $uri, and the
# variables say $gwmethod and $url
sub routed {
    my ($m, $path, $tk, $want_uri, $gwmethod, $url, $name, $body) = @_;
    # "PUT>PATCH": sent as PUT, reaches the upstream as the declared PATCH
    my $up = $m;
    ($m, $up) = ($1, $2) if $m =~ /^(\w+)>(\w+)$/;
    my $r = req($m, $path, $tk, $body);
    my $ok = is($r->{status}, 200, "$name: 200");
    my ($seen) = $r->{body} =~ /^(?:kb|backend) (\S+ \S+)/;
    my $short = sub { length $_[0] > 90 ? substr($_[0], 0, 80) . '...' : $_[0] };
    is($seen, "$up $want_uri", "$name: upstream got $up " . $short->($want_uri));
    my ($vars) = $r->{body} =~ /vars=(.*)$/m;
    my ($gm, $gu) = split /\|/, $vars // '';
    is($gm, $gwmethod, "$name: \$env_gateway_method = $gwmethod");
    is($gu, $url, "$name: \$env_gateway_upstream_url = " . $short->($url));
    diag($r->{raw}) unless $ok;
    return $r;
}

# a refused request: the refusal contract, nothing upstream
sub refused {
    my ($m, $path, $tk, $status, $code, $name, $body) = @_;
    my $before = nlines();
    my $r = req($m, $path, $tk, $body);
    EnvGwTest::refused($r, $status, $code, $name,
                       count => \&nlines, before => $before);
    return $r;
}

# the one Allow header of a response: its value ('' when empty), undef
# when absent; two of them fail
sub allow {
    my ($r) = @_;
    my ($head) = split /\r\n\r\n/, $r->{raw}, 2;
    my @v = $head =~ /^Allow:[ \t]*([^\r\n]*?)[ \t]*\r?$/mig;
    ok(@v <= 1, 'at most one Allow header') or diag($head);
    return $v[0];
}

my $KB = 'http://hubspot_dev';
my $BE = "http://127.0.0.1:$BACKEND";
my $A = 'integrated_account_id';

# --- every verb, development (upstream{} block) ----------------------------

routed(GET => "/proxy/contacts?$A=acc_dev", 'dev',
       '/crm/v3/objects/contacts', 'list', "$KB/crm/v3/objects/contacts",
       'GET no rest -> list');
routed(POST => "/proxy/contacts?$A=acc_dev", 'dev',
       '/crm/v3/objects/contacts', 'create', "$KB/crm/v3/objects/contacts",
       'POST no rest -> create', '{"a":1}');
routed(GET => "/proxy/contacts/123?$A=acc_dev", 'dev',
       '/crm/v3/objects/contacts/123', 'get',
       "$KB/crm/v3/objects/contacts/123", 'GET id -> get');
routed(PATCH => "/proxy/contacts/123?$A=acc_dev", 'dev',
       '/crm/v3/objects/contacts/123', 'update',
       "$KB/crm/v3/objects/contacts/123", 'PATCH id -> update', '{"b":2}');
routed('PUT>PATCH' => "/proxy/contacts/123?$A=acc_dev", 'dev',
       '/crm/v3/objects/contacts/123', 'update',
       "$KB/crm/v3/objects/contacts/123",
       'PUT id -> update, called with its declared PATCH', '{"b":2}');
routed(DELETE => "/proxy/contacts/123?$A=acc_dev", 'dev',
       '/crm/v3/objects/contacts/123', 'delete',
       "$KB/crm/v3/objects/contacts/123", 'DELETE id -> delete');

# the backend saw the environment stamped and no token
{
    my $r = req(GET => "/proxy/contacts/7?$A=acc_dev", 'dev');
    like($r->{body}, qr/vars=get\|\Q$KB\E\/crm\/v3\/objects\/contacts\/7\|hubspot\|acc_dev\|development$/m,
         'variables: method, url, integration, account, environment');
    unlike($t->slurp('kb.log'), qr/\Q$tok{dev}\E/, 'token never upstream');
}

# --- custom methods: present in development, absent in production ----------

routed(POST => "/proxy/contacts/merge?$A=acc_dev", 'dev',
       '/crm/v3/objects/contacts/merge', 'merge',
       "$KB/crm/v3/objects/contacts/merge", 'dev: POST merge -> custom',
       '{"primaryObjectId":"1","objectIdToMerge":"2"}');
routed(GET => "/proxy/contacts/search?$A=acc_dev", 'dev',
       '/crm/v3/objects/contacts/search', 'search',
       "$KB/crm/v3/objects/contacts/search", 'dev: GET search -> custom');

{
    my $r = refused(POST => "/proxy/contacts/merge?$A=acc_prod", 'prod',
                    404, 'method_not_found', 'prod: POST merge', '{}');
    my $msg = $r->{json} ? $r->{json}{message} : '';
    like($msg, qr/\bmerge\b/, 'prod merge 404 names the method');
    like($msg, qr/\bcontacts\b/, '... the resource');
    like($msg, qr/\bhubspot\b/, '... the integration');
    like($msg, qr/\bproduction\b/, '... the environment name');
    unlike($msg, qr/env_prod\b/, '... by name, not only by id');
}

# in production "search" is no custom method: it is an id
routed(GET => "/proxy/contacts/search?$A=acc_prod", 'prod',
       '/crm/v3/objects/contacts/search', 'get',
       "$BE/crm/v3/objects/contacts/search",
       'prod: GET search is get with id=search');

# the custom method answers only to its declared verb
for my $v (qw(GET PUT PATCH DELETE)) {
    my $r = refused($v => "/proxy/contacts/merge?$A=acc_dev", 'dev',
                    405, 'method_not_allowed', "dev: $v merge",
                    $v =~ /P/ ? '{}' : undef);
    like($r->{json} ? $r->{json}{message} : '', qr/\bPOST\b/,
         "dev: $v merge: 405 names the declared verb POST");
    like($r->{json} ? $r->{json}{message} : '', qr/\bmerge\b/,
         "dev: $v merge: 405 names the method");
    is(allow($r), 'POST', "dev: $v merge: Allow: POST");
}
{
    my $r = refused(POST => "/proxy/contacts/search?$A=acc_dev", 'dev',
                    405, 'method_not_allowed', 'dev: POST search', '{}');
    like($r->{json} ? $r->{json}{message} : '', qr/\bGET\b/,
         'dev: POST search: 405 names GET');
    is(allow($r), 'GET', 'dev: POST search: Allow: GET');
}

# Allow names a declared verb that is an HTTP token (RFC 9110 5.6.2), and
# is present but empty when the declared verb is not one (RFC 9110 10.2.1)
{
    my $r = refused(GET => "/proxy/odd/purge?$A=acc_dev", 'dev',
                    405, 'method_not_allowed', 'dev: GET purge');
    is(allow($r), 'PURGE', 'dev: GET purge: Allow: PURGE (not a standard '
       . 'verb, a token)');
    for my $m (qw(spaced listed)) {
        $r = refused(GET => "/proxy/odd/$m?$A=acc_dev", 'dev',
                     405, 'method_not_allowed', "dev: GET $m");
        is(allow($r), '', "dev: GET $m: the declared verb is no token: "
           . 'Allow is empty');
    }
    # a refusal other than 405 carries none
    $r = refused(POST => "/proxy/contacts/merge?$A=acc_prod", 'prod',
                 404, 'method_not_found', 'prod: POST merge, again', '{}');
    is(allow($r), undef, 'a 404 carries no Allow');
}

# POST on an id: 404 naming it
{
    my $r = refused(POST => "/proxy/contacts/123?$A=acc_dev", 'dev',
                    404, 'method_not_found', 'POST on an id', '{}');
    like($r->{json} ? $r->{json}{message} : '', qr/\b123\b/,
         'POST on an id: message names the rest');
    like($r->{json} ? $r->{json}{message} : '', qr/development/,
         'POST on an id: message names the environment');
}

# verbs with no method
refused(DELETE => "/proxy/contacts?$A=acc_dev", 'dev', 404,
        'method_not_found', 'DELETE without rest');
refused(PUT => "/proxy/contacts?$A=acc_dev", 'dev', 404,
        'method_not_found', 'PUT without rest', '{}');
refused(OPTIONS => "/proxy/contacts/1?$A=acc_dev", 'dev', 404,
        'method_not_found', 'OPTIONS on an id');

# production has no delete
{
    my $r = refused(DELETE => "/proxy/contacts/9?$A=acc_prod", 'prod', 404,
                    'method_not_found', 'prod: DELETE (not defined)');
    like($r->{json} ? $r->{json}{message} : '',
         qr/delete.*contacts.*hubspot.*production/s,
         'prod DELETE: names delete, contacts, hubspot, production');
}
routed(PATCH => "/proxy/contacts/9?$A=acc_prod", 'prod',
       '/crm/v3/objects/contacts/9', 'update',
       "$BE/crm/v3/objects/contacts/9", 'prod: PATCH (literal URL)', '{}');
routed(GET => "/proxy/contacts?$A=acc_prod", 'prod',
       '/crm/v3/objects/contacts', 'list', "$BE/crm/v3/objects/contacts",
       'prod: list (literal URL)');

# staging's upstream ends with "/": no double slash
routed(GET => "/proxy/contacts/5?$A=acc_stg", 'stg',
       '/crm/v3/objects/contacts/5', 'get',
       "http://127.0.0.1:$BACKEND/crm/v3/objects/contacts/5",
       'stg: upstream with trailing slash');

# --- integration missing in one environment, unknown resource -------------

{
    my $r = refused(GET => "/proxy/leads?$A=acc_stg_sf", 'stg', 404,
                    'method_not_found', 'stg: salesforce not installed');
    my $msg = $r->{json} ? $r->{json}{message} : '';
    like($msg, qr/\bsalesforce\b/, 'not installed: names the integration');
    like($msg, qr/\bstaging\b/, 'not installed: names the environment');
    like($msg, qr/\bleads\b/, 'not installed: names the resource');
    like($msg, qr/\blist\b/, 'not installed: names the method')
        or diag("message: $msg");
}
routed(GET => "/proxy/leads?$A=acc_dev_sf", 'dev', '/services/leads', 'list',
       "$BE/services/leads", 'dev: salesforce installed');

{
    my $r = refused(GET => "/proxy/deals?$A=acc_dev", 'dev', 404,
                    'method_not_found', 'unknown resource');
    like($r->{json} ? $r->{json}{message} : '',
         qr/list.*deals.*hubspot.*development/s,
         'unknown resource: names list, deals, hubspot, development');
}
refused(GET => "/proxy/deals/4?$A=acc_dev", 'dev', 404,
        'method_not_found', 'unknown resource with an id');

# account of another environment: 404 before any route
refused(GET => "/proxy/contacts?$A=acc_prod", 'dev', 404,
        'integrated_account_not_found', 'prod account with a dev token');
refused(GET => '/proxy/contacts', 'dev', 400,
        'missing_integrated_account_id', 'route without an account');

# --- query forwarding --------------------------------------------------------

{
    # ngx_env_gateway_route() fills its consumed[] list with
    # ngx_str_set(&consumed[n++], ...): the macro evaluates its argument
    # twice, so n runs to 4-5 over half-set entries and route_url() compares
    # query names against uninitialised ngx_str_t (worker SIGSEGV here)
    routed(GET => "/proxy/contacts?$A=acc_dev&environment_id=env_dev&limit=5&after=x",
           'dev', '/crm/v3/objects/contacts?limit=5&after=x', 'list',
           "$KB/crm/v3/objects/contacts?limit=5&after=x",
           'consumed arguments are not forwarded');
    routed(GET => "/proxy/contacts?limit=5&$A=acc_dev&after=x&environment_id=env_dev",
           'dev', '/crm/v3/objects/contacts?limit=5&after=x', 'list',
           "$KB/crm/v3/objects/contacts?limit=5&after=x",
           'consumed arguments in the middle and at the end');
    # account from a header: integrated_account_id in the query is still
    # a consumed argument (only the broken consumed[0] entry names it)
    my $r = $t->http(GET => "/hdr/contacts?$A=acc_dev&limit=1",
        [ Authorization => "Bearer $tok{dev}", 'X-Account-Id' => 'acc_dev' ]);
    { is($r->{status}, 200,
                      'account from a header, also in the query: 200'); }
    like($r->{body}, qr{^kb GET /crm/v3/objects/contacts\?limit=1 }m,
         'account from a header: integrated_account_id not forwarded');
}
routed(GET => "/proxy/contacts/3?$A=acc_dev", 'dev',
       '/crm/v3/objects/contacts/3', 'get',
       "$KB/crm/v3/objects/contacts/3", 'only consumed arguments: no "?"');
routed(GET => "/proxy/contacts?$A=acc_dev&q=a%20b%2Fc&flag&x=",
       'dev', '/crm/v3/objects/contacts?q=a%20b%2Fc&flag&x=', 'list',
       "$KB/crm/v3/objects/contacts?q=a%20b%2Fc&flag&x=",
       'other arguments forwarded byte for byte');

# --- {name} templates --------------------------------------------------------

routed(GET => "/proxy/objects/123?$A=acc_dev&object=deals&limit=2", 'dev',
       '/crm/v3/objects/deals/123?limit=2', 'get',
       "$KB/crm/v3/objects/deals/123?limit=2",
       '{object}/{id}: the template argument is not forwarded');
routed(GET => "/proxy/objects?object=line_items&$A=acc_dev", 'dev',
       '/crm/v3/objects/line_items', 'list',
       "$KB/crm/v3/objects/line_items", '{object} list');
routed(GET => "/proxy/objects?object=d%C3%A9als&$A=acc_dev", 'dev',
       '/crm/v3/objects/d%C3%A9als', 'list',
       "$KB/crm/v3/objects/d%C3%A9als", '{object} unescaped then encoded');
routed(GET => "/proxy/objects?object=a+b&$A=acc_dev", 'dev',
       '/crm/v3/objects/a%2Bb', 'list',
       "$KB/crm/v3/objects/a%2Bb", '{object} "+" is encoded');
refused(GET => "/proxy/objects/1?$A=acc_dev", 'dev', 400,
        'invalid_request', '{object} missing');
refused(GET => "/proxy/objects/1?$A=acc_dev&object=", 'dev', 400,
        'invalid_request', '{object} empty');
refused(GET => "/proxy/objects/1?$A=acc_dev&object=a/b", 'dev', 400,
        'invalid_request', '{object} with "/"');
refused(GET => "/proxy/objects/1?$A=acc_dev&object=a%2fb", 'dev', 400,
        'invalid_request', '{object} with "%2f"');
refused(GET => "/proxy/objects/1?$A=acc_dev&object=..", 'dev', 400,
        'invalid_request', '{object} ".."');
refused(GET => "/proxy/objects/1?$A=acc_dev&object=%2e%2e", 'dev', 400,
        'invalid_request', '{object} "%2e%2e"');
refused(GET => "/proxy/objects/1?$A=acc_dev&object=a%00b", 'dev', 400,
        'invalid_request', '{object} with NUL');
refused(GET => "/proxy/objects/1?$A=acc_dev&object=a%0Ab", 'dev', 400,
        'invalid_request', '{object} with a newline');
refused(GET => "/proxy/objects/1?$A=acc_dev&object=a&object=b", 'dev', 400,
        'invalid_request', '{object} given twice');
{
    my $r = refused(GET => "/proxy/objects/1?$A=acc_dev", 'dev', 400,
                    'invalid_request', '{object} missing (message)');
    like($r->{json} ? $r->{json}{message} : '', qr/object/,
         '{object} missing: message names the argument');
}

# --- {id} percent-encoding ---------------------------------------------------

routed(GET => "/proxy/contacts/a%20b?$A=acc_dev", 'dev',
       '/crm/v3/objects/contacts/a%20b', 'get',
       "$KB/crm/v3/objects/contacts/a%20b", 'rest "a b" -> %20');
routed(GET => "/proxy/contacts/%C3%A9?$A=acc_dev", 'dev',
       '/crm/v3/objects/contacts/%C3%A9', 'get',
       "$KB/crm/v3/objects/contacts/%C3%A9", 'rest "é" (escaped) -> %C3%A9');
routed(GET => "/proxy/contacts/\xc3\xa9?$A=acc_dev", 'dev',
       '/crm/v3/objects/contacts/%C3%A9', 'get',
       "$KB/crm/v3/objects/contacts/%C3%A9", 'rest "é" (raw) -> %C3%A9');
routed(GET => "/proxy/contacts/a+b;c=d&e?$A=acc_dev", 'dev',
       '/crm/v3/objects/contacts/a%2Bb%3Bc%3Dd%26e', 'get',
       "$KB/crm/v3/objects/contacts/a%2Bb%3Bc%3Dd%26e",
       'rest sub-delims are encoded');
routed(GET => "/proxy/contacts/A-z_0.9~?$A=acc_dev", 'dev',
       '/crm/v3/objects/contacts/A-z_0.9~', 'get',
       "$KB/crm/v3/objects/contacts/A-z_0.9~", 'unreserved stay as they are');
# res and id are only read through $arg_: not consumed, so forwarded
routed(GET => "/q?res=contacts&id=55&$A=acc_dev", 'dev',
       '/crm/v3/objects/contacts/55?res=contacts&id=55', 'get',
       "$KB/crm/v3/objects/contacts/55?res=contacts&id=55",
       'rest from a query argument');
routed(GET => "/any/contacts/x.y?$A=acc_dev", 'dev',
       '/crm/v3/objects/contacts/x.y', 'get',
       "$KB/crm/v3/objects/contacts/x.y", 'a single dot is fine');

# --- traversal and path syntax in rest --------------------------------------

# each is a 400 (JSON) from the module or a 4xx from nginx's own URI and
# location handling; never a 2xx, never an upstream request
for my $p ("/proxy/contacts/..%2f..%2fadmin?$A=acc_dev",
           "/proxy/contacts/%2e%2e?$A=acc_dev",
           "/proxy/contacts/..?$A=acc_dev",
           "/proxy/contacts/%00?$A=acc_dev",
           "/proxy/contacts/a%00b?$A=acc_dev",
           "/proxy/contacts/%0a?$A=acc_dev",
           "/proxy/contacts/a%0d%0aX-Evil:%201?$A=acc_dev",
           "/proxy/contacts/a%2fb?$A=acc_dev",
           "/proxy/contacts/a%5cb?$A=acc_dev",
           "/proxy/contacts/a%3fb?$A=acc_dev",
           "/proxy/contacts/a%23b?$A=acc_dev",
           "/proxy/contacts/a%25b?$A=acc_dev",
           "/proxy/contacts/a%252fb?$A=acc_dev",
           "/proxy/contacts/a..b?$A=acc_dev",
           "/proxy/contacts/%09?$A=acc_dev",
           "/proxy/contacts/a%7fb?$A=acc_dev",
           "/proxy/..%2fcontacts?$A=acc_dev",
           "/proxy/con%0atacts?$A=acc_dev",
           "/any/contacts/a%2fb?$A=acc_dev",
           "/any/contacts/../../admin?$A=acc_dev",
           "/any/contacts/a/..%2f..%2fadmin?$A=acc_dev",
           "/any/contacts/a/b?$A=acc_dev",
           "/any/contacts/x%2e%2e?$A=acc_dev",
           "/q?res=contacts&id=..%2fadmin&$A=acc_dev",
           "/q?res=contacts&id=%2e%2e&$A=acc_dev",
           "/q?res=contacts&id=a%00b&$A=acc_dev",
           "/q?res=contacts&id=a%0ab&$A=acc_dev",
           "/q?res=contacts&id=a/b&$A=acc_dev",
           "/q?res=contacts&id=..&$A=acc_dev",
           "/q?res=../contacts&id=1&$A=acc_dev",
           "/q?res=&id=1&$A=acc_dev")
{
    for my $v (qw(GET DELETE)) {
        my $before = nlines();
        my $r = req($v => $p, 'dev');
        ok($r->{status} >= 400 && $r->{status} < 500,
           "traversal $v $p: a 4xx ($r->{status})") or diag($r->{raw});
        if (($r->{headers}{'content-type'} // '') =~ /json/) {
            is($r->{json} && $r->{json}{error}, 'invalid_request',
               "traversal $v $p: invalid_request");
        }
        is(nlines(), $before, "traversal $v $p: no upstream request");
    }
}

# the module's own check, not only nginx's: these reach the location
for my $p ("/proxy/contacts/%0a?$A=acc_dev",
           "/proxy/contacts/a..b?$A=acc_dev",
           "/any/contacts/a%2fb?$A=acc_dev",
           "/q?res=contacts&id=..%2fadmin&$A=acc_dev",
           "/q?res=contacts&id=%2e%2e&$A=acc_dev")
{
    refused(GET => $p, 'dev', 400, 'invalid_request', "module refuses $p");
}

# --- a record over 16 KB still routes ---------------------------------------

routed(GET => "/proxy/widgets?$A=acc_dev_big", 'dev', '/v1/widgets', 'list',
       "$KB/v1/widgets", 'big record: list');
routed(PUT => "/proxy/widgets/frob?$A=acc_dev_big", 'dev', '/v1/widgets/frob',
       'frob', "$KB/v1/widgets/frob", 'big record: custom PUT', '{}');
routed(GET => "/proxy/res300/z?$A=acc_dev_big", 'dev', '/v1/res300/z', 'get',
       "$KB/v1/res300/z", 'big record: the last resource');
routed(POST => "/proxy/res001/poke?$A=acc_dev_big", 'dev', '/v1/res001/poke',
       'poke', "$KB/v1/res001/poke", 'big record: the first resource', '{}');
refused(DELETE => "/proxy/widgets/frob?$A=acc_dev_big", 'dev', 405,
        'method_not_allowed', 'big record: custom method, wrong verb');
refused(GET => "/proxy/res301?$A=acc_dev_big", 'dev', 404,
        'method_not_found', 'big record: unknown resource');

# --- upstream{} keepalive is honoured ---------------------------------------

{
    my $before = $t->slurp('kb.log');
    for (1 .. 4) {
        my $r = req(GET => "/proxy/contacts/ka$_?$A=acc_dev", 'dev');
        is($r->{status}, 200, "keepalive round $_");
    }
    my $log = substr($t->slurp('kb.log'), length $before);
    my @conns = $log =~ m{^GET /crm/v3/objects/contacts/ka\d conn=(\d+)}mg;
    is(scalar @conns, 4, 'four upstream requests logged');
    my %u = map { $_ => 1 } @conns;
    is(scalar keys %u, 1, 'one upstream connection for all four (keepalive)')
        or diag("connections: @conns");
}

# literal URL: no resolver needed, the harness backend answered
like($t->backend_log, qr{^PATCH /crm/v3/objects/contacts/9 env=env_prod }m,
     'literal IP URL: backend got the production request');
unlike($t->slurp('error.log'), qr/no resolver|could not be resolved/,
       'no resolver was needed');

# --- a record change is picked up (no cache configured) ---------------------

{
    my $rec = $EnvGwTest::JSON->decode(
        $t->redis->get('envgw:integration:env_prod:hubspot'));
    $rec->{resources}{contacts}{merge} =
        m_(POST => '/crm/v3/objects/contacts/merge');
    $t->put('integration:env_prod:hubspot', $rec);
    routed(POST => "/proxy/contacts/merge?$A=acc_prod", 'prod',
           '/crm/v3/objects/contacts/merge', 'merge',
           "$BE/crm/v3/objects/contacts/merge",
           'prod: merge once added there too', '{}');
}

# --- {id} more than once in a template ---------------------------------------

routed(GET => "/proxy/pairs/a%20b?$A=acc_dev", 'dev',
       '/crm/v3/pairs/a%20b/to/a%20b/and/a%20b/a%20b', 'get',
       "$KB/crm/v3/pairs/a%20b/to/a%20b/and/a%20b/a%20b",
       '{id} four times, short rest');
{
    # ngx_env_gateway_route_url() sizes its buffer with 3 * rest->len once
    # (plus 3 * args->len per "{"), but writes the encoded rest for every
    # {id}: a long rest overflows the pool allocation (glibc abort, SIGABRT)
    my $rest = '%20' x 600;
    my $enc = '%20' x 600;
    routed(GET => "/proxy/pairs/$rest?$A=acc_dev", 'dev',
           "/crm/v3/pairs/$enc/to/$enc/and/$enc/$enc", 'get',
           "$KB/crm/v3/pairs/$enc/to/$enc/and/$enc/$enc",
           '{id} four times, 600-byte rest');
}

# no worker may crash (the consumed[] and {id} buffer bugs once did)
{
    ok($t->slurp('error.log') !~ /exited on signal/, 'no worker crashed');
}

$t->stop;
done_testing;
