#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# Differential tests: what the backend acts on is what the gateway checked.
#
# A generated corpus of request variants, all with a development token,
# goes through the real gateway to echo backends written with the parsers
# users run (t/backends/: PHP, Express 4, Python's standard library, Go's
# net/http), each answering with what its own parser read of the request.
# The oracle, per response: a refusal is fine; a backend's 200 must show
# only development accounts (all equal to the X-Integrated-Account-Id it
# got, if any), X-Environment-Id of the development environment, and no
# token anywhere.  One test per variant and backend, named by the variant;
# a summary (counts per backend, violations by kind) is printed at the end.
#
# In a variant {D} and {D2} are development accounts, {P} a production
# account, {TD} the development token, {TP} the production token (each
# backend has accounts of its own: the route location reaches it through
# its own integration); {D%} and {P%} are the accounts percent-encoded.
# Every variant carries "Authorization: Bearer {TD}" unless its name ends
# in "(no default Authorization)"; [std] is a server with nginx's defaults,
# [us] one with underscores_in_headers on.
# ENVGW_DIFF_BACKENDS=php,go limits the backends, ENVGW_DIFF_ONLY=REGEX the
# variants.

use strict;
use warnings;

use lib 't/lib';
use EnvGwTest;
use EnvGwBackends;
use Test::More;
use Digest::SHA qw(sha256_hex);
use JSON::PP;
use MIME::Base64 qw(encode_base64);

my @want = $ENV{ENVGW_DIFF_BACKENDS}
    ? split(/,/, $ENV{ENVGW_DIFF_BACKENDS}) : @EnvGwBackends::ALL;

my $t = EnvGwTest->new;
$t->start_redis;

my ($bport, $skip) = EnvGwBackends::start($t, @want);
my @B = grep { $bport->{$_} } @want;

# --- the gateway: per backend a server with nginx's defaults and one with
# underscores_in_headers on ---------------------------------------------------

my (%gw, $http);
for my $b (@B) {
    for my $srv (qw(std us)) {
        my $p = $gw{$b}{$srv} = EnvGwTest::free_port();
        my $us = $srv eq 'us' ? 'underscores_in_headers on;' : '';
        $http .= "    server {\n        listen 127.0.0.1:$p;\n        $us\n"
               . EnvGwBackends::locations($bport->{$b}) . "    }\n";
    }
}

$t->start_nginx(<<"CONF") if @B;
    env_gateway_redis 127.0.0.1:%%REDIS%% connect_timeout=500ms read_timeout=2s;
    env_gateway_cache zone=envgw_diff:4m ttl=30s negative_ttl=5s;
    server {
        listen 127.0.0.1:%%PORT%%;
        location / { return 204; }
    }
$http
CONF

for my $b (@B) {
    EnvGwTest::wait_port($gw{$b}{$_}) or die "gateway port for $b ($_)"
        for qw(std us);
}

# --- data --------------------------------------------------------------------

my $ENV_DEV = 'env_dev';
my $TD = 'egwtok_dev_' . substr(sha256_hex('diff-dev'), 0, 32);
my $TP = 'egwtok_prod_' . substr(sha256_hex('diff-prod'), 0, 32);

$t->env($ENV_DEV, 'team_a', 'development');
$t->env('env_prod', 'team_a', 'production');
$t->token($TD, token_id => 'tok_diff_dev', team_id => 'team_a',
          environment_id => $ENV_DEV, environment => 'development');
$t->token($TP, token_id => 'tok_diff_prod', team_id => 'team_a',
          environment_id => 'env_prod', environment => 'production');

my (%dev, %prod);
my $contacts = {
    list   => { method => 'GET',    path => '/crm/v3/objects/contacts' },
    get    => { method => 'GET',    path => '/crm/v3/objects/contacts/{id}' },
    create => { method => 'POST',   path => '/crm/v3/objects/contacts' },
    update => { method => 'PATCH',  path => '/crm/v3/objects/contacts/{id}' },
    delete => { method => 'DELETE', path => '/crm/v3/objects/contacts/{id}' },
    merge  => { method => 'POST',   path => '/crm/v3/objects/contacts/merge' },
};
for my $b (@B) {
    for my $e ($ENV_DEV, 'env_prod') {
        $t->put("integration:$e:$b", {
            upstream => "http://127.0.0.1:$bport->{$b}",
            resources => { contacts => $contacts } });
    }
    for my $a ("acc_dev_$b", "acc_dev2_$b") {
        $t->account($a, $ENV_DEV, integration => $b);
        $dev{$a} = 1;
    }
    $t->account("acc_prod_$b", 'env_prod', integration => $b);
    $prod{"acc_prod_$b"} = 1;
}

# --- the corpus ----------------------------------------------------------------

my @V;

# variant(group, server, method, path, [headers], body, %opt); by default it
# carries "Authorization: Bearer {TD}" (auth => 0: only what is listed)
sub variant {
    my ($group, $srv, $method, $path, $hdrs, $body, %opt) = @_;
    my @h = @{ $hdrs || [] };
    unshift @h, Authorization => 'Bearer {TD}' if $opt{auth} // 1;
    my $name = "$group: [$srv] $method $path";
    my @hh = @{ $hdrs || [] };
    while (my ($k, $v) = splice @hh, 0, 2) {
        $name .= " <$k: $v>";
    }
    $name .= ' (no default Authorization)' unless $opt{auth} // 1;
    $name .= " body '$body'" if defined $body;
    push @V, { name => $name, srv => $srv, method => $method, path => $path,
               headers => \@h, body => $body, control => $opt{control} };
}

# 1. query argument spellings: where PHP, qs, Python or Go read an
# integrated_account_id that nginx's $arg_integrated_account_id does not
my @spell = (
    'integrated_account_id',
    'integrated.account.id',
    'integrated account id',
    'integrated+account+id',
    'integrated%20account%20id',
    'integrated%2Eaccount%2Eid',
    'integrated%5Faccount%5Fid',
    'integrated_account%5fid',
    '%69ntegrated_account_id',
    'Integrated_Account_Id',
    'INTEGRATED_ACCOUNT_ID',
    'integrated_account_id[]',
    'integrated_account_id%5B%5D',
    'integrated_account_id[0]',
    'integrated_account_id[x]',
    'integrated_account_id%00',
    'integrated_account_id%00x',
    'integrated[account_id',
    'integrated_account.id',
    '%20integrated_account_id',
    'integrated_account_id%20',
);

for my $s (@spell) {
    for my $q ("$s={P}", "integrated_account_id={D}&$s={P}",
               "$s={P}&integrated_account_id={D}")
    {
        variant('query', 'std', 'GET', "/q/x?$q");
        variant('query', 'std', 'GET', "/typo/x?$q");
        variant('query', 'std', 'GET', "/proxy/contacts?$q");
    }
    variant('query', 'std', 'GET', "/req/x?$s={P}");
}

# separators, empty and encoded values, arrays, the environment argument
for my $q (
    'integrated_account_id={D};integrated_account_id={P}',
    'integrated_account_id={P};x=1&integrated_account_id={D}',
    'x=1;integrated_account_id={P}&integrated_account_id={D}',
    'integrated_account_id={D}&x=1;integrated_account_id={P}',
    'integrated_account_id=&integrated.account.id={P}',
    'integrated_account_id=&integrated_account_id={P}',
    'integrated_account_id={D}&integrated_account_id=',
    'integrated_account_id={D}&integrated_account_id={D}',
    'integrated_account_id={D}&Integrated_Account_Id={D2}',
    'integrated_account_id={D%}',
    'integrated_account_id={P%}',
    'integrated_account_id={D}%00',
    'integrated_account_id={D}%00{P}',
    'integrated_account_id={D}%26integrated_account_id%3D{P}',
    'integrated_account_id={D}+',
    'integrated_account_id=+{D}',
    'integrated_account_id={D}%20',
    'integrated_account_id[]={D}&integrated_account_id[]={P}',
    'integrated_account_id[a]={D}&integrated_account_id[b]={P}',
    'environment_id=env_prod&integrated_account_id={D}',
    'environment.id=env_prod&integrated_account_id={D}',
)
{
    variant('query', 'std', 'GET', "/q/x?$q");
    variant('query', 'std', 'GET', "/proxy/contacts/42?$q");
}
for my $q ('integrated_account_id={D}&integrated_account_id[]={P}',
           'integrated_account_id[]={P}&integrated_account_id={D}')
{
    variant('query', 'std', 'GET', "/proxy/contacts/42?$q");
}

# 2. header spellings, on both servers
for my $srv (qw(std us)) {
    my $Q = 'integrated_account_id={D}';
    for my $h (
        [ 'X-Integrated-Account-Id' => '{D}', 'X_Integrated_Account_Id' => '{P}' ],
        [ 'X_Integrated_Account_Id' => '{P}', 'X-Integrated-Account-Id' => '{D}' ],
        [ 'X_Integrated_Account_Id' => '{P}' ],
        [ 'x-integrated-account-id' => '{D}', 'x-integrated-account-id' => '{D}' ],
        [ 'x-integrated-account-id' => '{D}', 'x-integrated-account-id' => '{P}' ],
        [ 'X-Integrated-Account-Id' => '{D}, {P}' ],
        [ 'X-Integrated-Account-Id' => '{D}', 'X-Integrated-Account_Id' => '{P}' ],
    ) {
        variant('header', $srv, 'GET', '/h/x', $h);
    }
    variant('header', $srv, 'GET', '/h/x?integrated_account_id={P}',
            [ 'X-Integrated-Account-Id' => '{D}' ]);
    variant('header', $srv, 'GET', '/h/x?integrated.account.id={P}',
            [ 'X-Integrated-Account-Id' => '{D}' ]);

    for my $h (
        [ 'X-Integrated-Account-Id' => '{D}' ],
        [ 'X-Integrated-Account-Id' => '{P}' ],
        [ 'X-Integrated-Account-Id' => '{D2}' ],
        [ 'X_Integrated_Account_Id' => '{P}' ],
        [ 'X-INTEGRATED-ACCOUNT-ID' => '{P}' ],
        [ 'X-Environment-Id' => 'env_prod' ],
        [ 'X-Environment-Id' => $ENV_DEV ],
        [ 'X_Environment_Id' => 'env_prod' ],
        [ 'X-Environment-Id' => $ENV_DEV, 'X_Environment_Id' => 'env_prod' ],
        [ 'X_Environment_Id' => 'env_prod', 'X-Environment-Id' => $ENV_DEV ],
        [ 'x-environment-id' => $ENV_DEV, 'x-environment-id' => 'env_prod' ],
    ) {
        variant('header', $srv, 'GET', "/q/x?$Q", $h);
    }
}

# 3. path forms: /cap/<acc>/ as nginx resolves it and as the backends do
for my $p (
    '/cap/{P}/x',
    '/cap/{P}/../{D}/x',
    '/cap/{D}/../{P}/x',
    '/cap/{P}/%2e%2e/{D}/x',
    '/cap/{P}/.%2E/{D}/x',
    '/cap/{P}/%2E./{D}/x',
    '/cap/{P}/..%2F{D}/x',
    '/cap/{P}%2F..%2F{D}/x',
    '/cap/{D}%2F..%2F{P}/x',
    '/cap/{D}%2f..%2f{P}/x',
    '/cap/{D}%2F{P}/x',
    '/cap/{P}%2F{D}/x',
    '/cap/{P}/..\\{D}/x',
    '/cap/{D}\\..\\{P}/x',
    '/cap/{P}%5C..%5C{D}/x',
    '/cap/{D}/..%5C..%5C{P}/x',
    '/cap/{D}%5C{P}/x',
    '/cap/{D}%00/x',
    '/cap/{D}/%00/../../{P}/x',
    '//cap/{P}/x',
    '/cap//{P}/x',
    '/cap/{D}//../{P}/x',
    '/cap/./{P}/x',
    '/cap/{D}/./x',
    '/cap/{D}/..;/{P}/x',
    '/cap/{P}/../../q/x',
    '/cap/{P}/%2e%2e/%2e%2e/q/x',
    '/cap/{P}/..%2F..%2Fq/x',
    '/cap/{P}%2F..%2F..%2Fq/x',
    '/q/../cap/{P}/x',
    '/q/%2e%2e/cap/{P}/x',
    '/cap/{D}/x#/../../{P}/x',
    '/q/x?integrated_account_id={D}#&integrated_account_id={P}',
    '/q/x#?integrated_account_id={P}',
    '/cap/{D}/x?integrated_account_id={P}',
    '/cap/{D}/x?integrated.account.id={P}',
    '/cap/{D}/x?integrated_account_id%5B%5D={P}',
    '/cap/{P}/../../q/x?integrated_account_id={D}',
    '/cap/{P}/%2e%2e/%2e%2e/q/x?integrated_account_id={D}',
    '/q/x/../../cap/{P}/y?integrated_account_id={D}',
    '/proxy/contacts/42%2F..%2F..%2Fcap%2F{P}%2Fx?integrated_account_id={D}',
    '/proxy/contacts/..%2F{P}?integrated_account_id={D}',
    '/proxy/contacts/%2e%2e?integrated_account_id={D}',
) {
    variant('path', 'std', 'GET', $p);
}

# 4. bodies on every verb, JSON and form, the production account in the
# body and the development one in the query
my $json_ct = [ 'Content-Type' => 'application/json' ];
my $form_ct = [ 'Content-Type' => 'application/x-www-form-urlencoded' ];
my @bodies = (
    [ $json_ct, '{"integrated_account_id":"{P}"}' ],
    [ [ 'Content-Type' => 'application/json; charset=utf-8' ],
      '{"integrated_account_id":"{P}"}' ],
    [ [ 'Content-Type' => 'Application/JSON' ],
      '{"integrated_account_id":"{P}"}' ],
    [ [ 'Content-Type' => 'text/plain' ], '{"integrated_account_id":"{P}"}' ],
    [ [], '{"integrated_account_id":"{P}"}' ],
    [ $json_ct, '{"integrated_account_id":"{D}","integrated_account_id":"{P}"}' ],
    [ $json_ct, '{"integrated\u005faccount_id":"{P}"}' ],
    [ $json_ct, '{"integrated_account_id":["{P}"]}' ],
    [ $json_ct, '{"integrated_account_id":{"id":"{P}"}}' ],
    [ $json_ct, '{"integrated_account_id":"{D}"}' ],
    [ $form_ct, 'integrated_account_id={P}' ],
    [ [ 'Content-Type' => 'application/x-www-form-urlencoded; charset=UTF-8' ],
      'integrated_account_id={P}' ],
    [ $form_ct, 'integrated_account_id[]={P}' ],
    [ $form_ct, 'integrated.account.id={P}' ],
    [ $form_ct, 'integrated_account_id={D}&integrated_account_id={P}' ],
    [ $form_ct, 'integrated_account_id={D}' ],
);
for my $m (qw(GET POST PUT PATCH DELETE OPTIONS MERGE)) {
    for my $bd (@bodies) {
        variant('body', 'std', $m, '/body/x?integrated_account_id={D}',
                $bd->[0], $bd->[1]);
    }
    variant('body', 'std', $m, '/body/x', $json_ct,
            '{"integrated_account_id":"{P}"}');
    variant('body', 'std', $m, '/body/x', $form_ct,
            'integrated_account_id={P}');
}

# 5. credential placements: the configured one plus RFC 6750's
# (Authorization, an access_token argument or form field) and an
# access_token cookie; a token under a name the gateway has no reason to
# know (an X-Api-Key where Authorization is configured, a "token" cookie)
# is the client's business and not in the corpus
for my $srv (qw(std us)) {
    my $q = '/q/x?integrated_account_id={D}';
    variant('credential', $srv, 'GET', "$q&access_token={TD}");
    variant('credential', $srv, 'GET', "$q&access_token={TP}");
    variant('credential', $srv, 'GET', "$q&access.token={TD}");
    variant('credential', $srv, 'GET', "$q&Access_Token={TD}");
    variant('credential', $srv, 'GET', "$q&access_token%5B%5D={TD}");
    variant('credential', $srv, 'POST', $q, $form_ct, 'access_token={TD}');
    variant('credential', $srv, 'GET', $q, [ Cookie => 'access_token={TD}' ]);
    variant('credential', $srv, 'GET', $q,
            [ Cookie => 'access_token={TD}; access_token={TP}' ]);
    variant('credential', $srv, 'GET', $q,
            [ Cookie => 'a=1', Cookie => 'access_token={TP}' ]);
    variant('credential', $srv, 'GET', $q,
            [ Authorization => 'Bearer {TD}' ]);
    variant('credential', $srv, 'GET', $q,
            [ Authorization => 'Bearer {TP}' ]);
    variant('credential', $srv, 'GET', $q,
            [ Authorization => 'Bearer {TD}, Bearer {TP}' ], undef, auth => 0);
    variant('credential', $srv, 'GET', $q,
            [ Authorization => 'Bearer {TD},Bearer {TD}' ], undef, auth => 0);
    for my $scheme ('bearer', 'BEARER', 'BeArEr') {
        variant('credential', $srv, 'GET', $q,
                [ Authorization => "$scheme {TD}" ], undef, auth => 0);
    }
    variant('credential', $srv, 'GET', $q,
            [ Authorization => 'Bearer  {TD}' ], undef, auth => 0);
    variant('credential', $srv, 'GET', "$q&access_token={TD}", [], undef,
            auth => 0);
    variant('credential', $srv, 'GET', $q, [ Cookie => 'access_token={TD}' ],
            undef, auth => 0);
    variant('credential', $srv, 'GET', $q,
            [ Authorization => 'Basic ' . encode_base64('{TD}:', '') ],
            undef, auth => 0);

    my $k = '/key/x?integrated_account_id={D}';
    for my $h (
        [ 'X-Api-Key' => '{TD}', Authorization => 'Bearer {TP}' ],
        [ 'X-Api-Key' => '{TD}', Authorization => 'Bearer {TD}' ],
        [ 'X-Api-Key' => '{TD}', 'X_Api_Key' => '{TP}' ],
        [ 'X_Api_Key' => '{TP}', 'X-Api-Key' => '{TD}' ],
        [ 'X_Api_Key' => '{TD}' ],
        [ 'X-Api-Key' => '{TD}', 'X-Api-Key' => '{TD}' ],
        [ 'X-API-KEY' => '{TD}' ],
        [ 'x-api-key' => '{TD}', Cookie => 'access_token={TD}' ],
    ) {
        variant('credential', $srv, 'GET', $k, $h, undef, auth => 0);
    }
    variant('credential', $srv, 'GET', "$k&api_key={TD}",
            [ 'X-Api-Key' => '{TD}' ], undef, auth => 0);
    variant('credential', $srv, 'GET', "$k&access_token={TD}",
            [ 'X-Api-Key' => '{TD}' ], undef, auth => 0);
}

for my $q (
    'api_key={TD}&api_key={TP}',
    'api_key={TD}&API_KEY={TP}',
    'api_key={TD}&api.key={TP}',
    'api_key={TD}&api%5Fkey={TD}',
    'api_key={TD}&api_key[]={TP}',
    'api_key={TD}&access_token={TD}',
    'api%5Fkey={TD}',
    'api_key={TD};x=1',
    'api_key={TD}%00',
) {
    variant('credential', 'std', 'GET', "/tok/x?$q&integrated_account_id={D}",
            [], undef, auth => 0);
}
variant('credential', 'std', 'GET', '/tok/x?api_key={TD}&integrated_account_id={D}',
        [ Authorization => 'Bearer {TP}' ], undef, auth => 0);
variant('credential', 'std', 'GET', '/tok/x?api_key={TD}&integrated_account_id={D}',
        [ Cookie => 'api_key={TD}' ], undef, auth => 0);
variant('credential', 'std', 'POST', '/tok/x?api_key={TD}&integrated_account_id={D}',
        $form_ct, 'api_key={TD}', auth => 0);

# 6. the route location's verbs
for my $v (
    [ 'GET',    '/proxy/contacts/42' ],
    [ 'PUT',    '/proxy/contacts/42' ],
    [ 'DELETE', '/proxy/contacts/42' ],
    [ 'POST',   '/proxy/contacts/merge' ],
    [ 'MERGE',  '/proxy/contacts/merge' ],
) {
    variant('route', 'std', $v->[0], "$v->[1]?integrated_account_id={D}");
    variant('route', 'std', $v->[0],
            "$v->[1]?integrated_account_id={D}&integrated.account.id={P}");
}

# controls: each must reach every backend and pass the oracle (a suite where
# everything is refused proves nothing)
variant('control', 'std', 'GET', '/q/x?integrated_account_id={D}', [], undef,
        control => 1);
variant('control', 'us', 'GET', '/q/x?integrated_account_id={D}', [], undef,
        control => 1);
variant('control', 'std', 'GET', '/req/x?integrated_account_id={D}', [], undef,
        control => 1);
variant('control', 'std', 'GET', '/typo/x?integrated_account_id={D}', [],
        undef, control => 1);
variant('control', 'std', 'GET', '/h/x', [ 'X-Integrated-Account-Id' => '{D}' ],
        undef, control => 1);
variant('control', 'std', 'GET', '/cap/{D}/x', [], undef, control => 1);
variant('control', 'std', 'POST', '/body/x?integrated_account_id={D}',
        $json_ct, '{"integrated_account_id":"{D}"}', control => 1);
variant('control', 'std', 'GET', '/key/x?integrated_account_id={D}',
        [ 'X-Api-Key' => '{TD}' ], undef, auth => 0, control => 1);
variant('control', 'us', 'GET', '/key/x?integrated_account_id={D}',
        [ 'X-Api-Key' => '{TD}' ], undef, auth => 0, control => 1);
variant('control', 'std', 'GET', '/tok/x?api_key={TD}&integrated_account_id={D}',
        [], undef, auth => 0, control => 1);
variant('control', 'std', 'GET', '/proxy/contacts?integrated_account_id={D}',
        [], undef, control => 1);

if ($ENV{ENVGW_DIFF_ONLY}) {
    @V = grep { $_->{name} =~ /$ENV{ENVGW_DIFF_ONLY}/ } @V;
}

# --- run ---------------------------------------------------------------------

sub fill {
    my ($s, $b) = @_;
    return $s unless defined $s;
    my %r = (D => "acc_dev_$b", D2 => "acc_dev2_$b", P => "acc_prod_$b",
             TD => $TD, TP => $TP);
    ($r{'D%'} = $r{D}) =~ s/_/%5F/g;
    ($r{'P%'} = $r{P}) =~ s/_/%5F/g;
    $s =~ s/\{(D2|D%|P%|D|P|TD|TP)\}/$r{$1}/g;
    return $s;
}

my %oracle = (dev => \%dev, prod => \%prod, env => $ENV_DEV,
              tokens => [ $TD, $TP ], token_names => [ '{TD}', '{TP}' ]);

# --- the oracle's own checks, through a location without the gateway: the
# backends and the judge see a leak for what it is, and a clean request
# passes ------------------------------------------------------------------------

for my $b (@B) {
    my $port = $gw{$b}{std};
    my $D = "acc_dev_$b";
    my $P = "acc_prod_$b";
    my @case = (
        [ 'a clean request passes', 'GET', "/open/x?integrated_account_id=$D",
          [ 'X-Environment-Id' => $ENV_DEV ], undef, qr/^$/ ],
        [ 'a production account in the query', 'GET',
          "/open/x?integrated_account_id=$P",
          [ 'X-Environment-Id' => $ENV_DEV ], undef, qr/prod account in query/ ],
        [ 'a production account in a JSON body', 'POST', '/open/x',
          [ 'X-Environment-Id' => $ENV_DEV,
            'Content-Type' => 'application/json' ],
          qq({"integrated_account_id":"$P"}), qr/prod account in body/ ],
        [ 'a production account in a form body', 'POST', '/open/x',
          [ 'X-Environment-Id' => $ENV_DEV,
            'Content-Type' => 'application/x-www-form-urlencoded' ],
          "integrated_account_id=$P", qr/prod account in body/ ],
        [ 'another development account in the header', 'GET',
          "/open/x?integrated_account_id=$D",
          [ 'X-Environment-Id' => $ENV_DEV,
            'X-Integrated-Account-Id' => "acc_dev2_$b" ], undef,
          qr/is not the X-Integrated-Account-Id/ ],
        [ 'a production environment header', 'GET', '/open/x',
          [ 'X-Environment-Id' => 'env_prod' ], undef,
          qr/environment header: env_prod/ ],
        [ 'no environment header', 'GET', '/open/x', [], undef,
          qr/no environment header/ ],
        [ 'a token in Authorization', 'GET', '/open/x',
          [ 'X-Environment-Id' => $ENV_DEV, Authorization => "Bearer $TD" ],
          undef, qr/credential \{TD\} reached the backend in headers\./i ],
        [ 'a token in a cookie', 'GET', '/open/x',
          [ 'X-Environment-Id' => $ENV_DEV, Cookie => "access_token=$TP" ],
          undef, qr/credential \{TP\} reached the backend in .*cookies\./ ],
        [ 'a token in a form field', 'POST', '/open/x',
          [ 'X-Environment-Id' => $ENV_DEV,
            'Content-Type' => 'application/x-www-form-urlencoded' ],
          "access_token=$TD", qr/credential \{TD\} reached the backend/ ],
    );
    push @case, [ 'the production account of a /cap/ path', 'GET',
                  "/open/cap/$P/x", [ 'X-Environment-Id' => $ENV_DEV ],
                  undef, qr/prod account in path/ ];

    for my $c (@case) {
        my ($what, $m, $path, $h, $body, $expect) = @$c;
        my $r = $t->http($m, $path, $h, $body, port => $port);
        my ($kind, $detail) = EnvGwBackends::judge($b, $r, %oracle);
        my $why = ref $detail ? join('; ', @$detail) : ($detail // '');
        my $good = $why eq '' ? ($kind eq 'pass' && $why =~ $expect)
                              : ($kind eq 'violation' && $why =~ $expect);
        ok($good, "oracle: $what -> $b") or diag("  $kind: $why");
    }
}

for my $b (sort keys %$skip) {
    SKIP: { skip("backend $b: $skip->{$b}", 1); }
    diag("differential: backend $b skipped: $skip->{$b}");
}

my (%count, %kinds, @bad);

# one line per test: Test::More's own "Failed test ... at line" notes would
# double the output; what failed and why is in the summary below
my $tb = Test::More->builder;
my $stderr = $tb->failure_output;
my $notes = '';
$tb->failure_output(\$notes);

for my $v (@V) {
    for my $b (@B) {
        my @h = map { fill($_, $b) } @{ $v->{headers} };
        my $r = $t->http($v->{method}, fill($v->{path}, $b), \@h,
                         fill($v->{body}, $b), port => $gw{$b}{$v->{srv}});
        my ($kind, $detail) = EnvGwBackends::judge($b, $r, %oracle);

        my $c = $count{$b} ||= {};
        if ($kind eq 'refused') {
            $c->{refused}{$detail}++;
        } elsif ($kind eq 'nginx') {
            $c->{refused}{"nginx $detail"}++;
        } elsif ($kind eq 'backend') {
            $c->{refused}{'backend'}++;
        } else {
            $c->{$kind}++;
        }

        my $good = $kind ne 'violation' && $kind ne 'error';
        if ($v->{control}) {
            $good &&= $kind eq 'pass';
        }

        my $name = "$v->{name} -> $b";
        ok($good, $name);
        next if $good;

        my @why = ref $detail ? @$detail : ("$kind: $detail");
        if ($v->{control} && $kind ne 'violation' && $kind ne 'error') {
            @why = ("control refused: $kind $detail");
        }
        my %k;
        for (@why) {
            my $w = /^(prod account|foreign account)/ ? $1
                  : /^account in/ ? 'account disagrees with header'
                  : /^no environment header/ ? 'no environment header'
                  : /^environment header/ ? 'forged environment header'
                  : /credential/ ? 'credential reached the backend'
                  : $_;
            $k{$w}++;
        }
        $kinds{$_}{$b}++ for keys %k;
        my @serious = grep { $_ ne 'no environment header' } keys %k;
        push @bad, [ $v->{name}, $b, \@why, $r ] if @serious;
    }
}

# --- summary -------------------------------------------------------------------

$tb->failure_output($stderr);

diag(sprintf "differential: %d variants x %d backends = %d requests",
     scalar @V, scalar @B, @V * @B);
for my $b (@B) {
    my $c = $count{$b} || {};
    my $ref = $c->{refused} || {};
    my $nref = 0;
    $nref += $_ for values %$ref;
    diag(sprintf "  %-6s passed %d, refused %d (%s), violations %d, errors %d",
         $b, $c->{pass} || 0, $nref,
         join(', ', map { "$_ $ref->{$_}" } sort keys %$ref) || '-',
         $c->{violation} || 0, $c->{error} || 0);
}
if (%kinds) {
    diag('  failures by kind (per backend):');
    for my $k (sort keys %kinds) {
        diag("    $k: " . join(', ', map { "$_ $kinds{$k}{$_}" }
                                 grep { $kinds{$k}{$_} } @B));
    }
}
if (@bad) {
    # one line per variant and reason, naming the backends that agree
    my (%line, @order);
    for my $x (@bad) {
        my ($name, $b, $why) = @$x;
        my $w = join '; ', grep { $_ ne 'no environment header' } @$why;
        $w =~ s/\bacc_dev2_$b\b/{D2}/g;
        $w =~ s/\bacc_dev_$b\b/{D}/g;
        $w =~ s/\bacc_prod_$b\b/{P}/g;
        my $key = "$name: $w";
        push @order, $key unless $line{$key};
        push @{ $line{$key} }, $b;
    }
    diag('  failing variants (besides a missing environment header):');
    diag('    [' . join(',', @{ $line{$_} }) . "] $_") for @order;
}

$t->stop;
done_testing;
