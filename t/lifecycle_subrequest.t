#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# Subrequests into a location with env_gateway on are checked like
# requests, never served unchecked: auth_request (the gateway as an
# authenticator, with env_gateway_authorize and auth_request_set), SSI
# includes and mirror; and "satisfy any" with an allow rule does not let a
# request without a token through.  The upstream is an echo server.

use strict;
use warnings;

use lib 't/lib';
use EnvGwTest qw(refused);
use Test::More;
use Time::HiRes qw(sleep);


my $t = EnvGwTest->new;
$t->start_redis;
my $echo = $t->start_echo;
my $tok = $t->seed_two_envs;
my $dev = $tok->{dev};
my $dir = $t->dir;

for my $d (qw(www www/ssi www/gssi)) {
    mkdir "$dir/$d";
}

sub page {
    my ($path, $text) = @_;
    open my $fh, '>', "$dir/www/$path" or die "$path: $!";
    print $fh $text;
    close $fh;
}

page('ssi/page.html',
     "before\n<!--# include virtual=\"/gated/inc\" -->after\n");
page('ssi/prod.html', "before\n<!--# include "
     . "virtual=\"/gated/inc?integrated_account_id=acc_prod\" -->after\n");
page('gssi/page.html',
     "before\n<!--# include virtual=\"/gated/inc\" -->after\n");

$t->start_nginx(<<"CONF");
    env_gateway_redis 127.0.0.1:%%REDIS%%;
    server {
        listen 127.0.0.1:%%PORT%%;
        root $dir/www;

        # the gateway as an authenticator of an ungated location
        location /ar/ {
            auth_request /_gw;
            auth_request_set \$gw_env \$env_gateway_environment_id;
            auth_request_set \$gw_acct \$env_gateway_account_id;
            proxy_set_header X-Gw-Env \$gw_env;
            proxy_set_header X-Gw-Acct \$gw_acct;
            proxy_pass http://127.0.0.1:$echo;
        }
        location = /_gw {
            internal;
            env_gateway on;
            env_gateway_account \$http_x_account;
            env_gateway_authorize;
        }

        # an authenticator that reads the account from the body
        location /ar-body/ {
            auth_request /_gwb;
            proxy_pass http://127.0.0.1:$echo;
        }
        location = /_gwb {
            internal;
            env_gateway on;
            env_gateway_account_body_field integrated_account_id;
            env_gateway_authorize;
        }

        location /ssi/ { ssi on; }
        location /gssi/ { ssi on; env_gateway on; }
        location /gated/ {
            env_gateway on;
            env_gateway_account \$arg_integrated_account_id;
            proxy_pass http://127.0.0.1:$echo;
        }

        location /mir/ {
            mirror /gated/mirrored;
            proxy_pass http://127.0.0.1:$echo;
        }

        location /sat/ {
            satisfy any;
            allow 127.0.0.1;
            deny all;
            env_gateway on;
            proxy_pass http://127.0.0.1:$echo;
        }
    }
CONF

my $seen = 0;

# the requests the echo server got since the last call
sub news {
    my @r = $t->echo_requests;
    my @n = @r[$seen .. $#r];
    $seen = @r;
    return @n;
}

sub identity_ok {
    my ($u, $name, $account) = @_;
    is_deeply([ EnvGwTest::echo_header($u, 'X-Environment-Id') ],
              [ 'env_dev' ], "$name: X-Environment-Id upstream");
    is_deeply([ EnvGwTest::echo_header($u, 'X-Token-Id') ], [ 'tok_dev' ],
              "$name: X-Token-Id upstream");
    is_deeply([ EnvGwTest::echo_header($u, 'X-Integrated-Account-Id') ],
              [ $account ? ($account) : () ],
              "$name: X-Integrated-Account-Id upstream");
    is_deeply([ EnvGwTest::echo_header($u, 'Authorization') ], [],
              "$name: no Authorization upstream");
}

my $auth = [ Authorization => "Bearer $dev" ];
my $bad = 'egw_unknown_' . 'f' x 24;

# --- auth_request -----------------------------------------------------------

my $r = $t->http('GET', '/ar/x', $auth);
is($r->{status}, 200, 'auth_request, valid token: 200') or diag($r->{raw});
my @u = news();
is(scalar @u, 1, 'auth_request, valid token: one request upstream');
if (@u) {
    is($u[0]{uri}, '/ar/x', 'auth_request, valid token: the main request');
    is_deeply([ EnvGwTest::echo_header($u[0], 'X-Gw-Env') ], [ 'env_dev' ],
              'auth_request_set carries $env_gateway_environment_id');
}

$r = $t->http('GET', '/ar/x', [ @$auth, 'X-Account' => 'acc_dev' ]);
is($r->{status}, 200, 'auth_request, dev account: 200');
@u = news();
is(scalar @u, 1, 'auth_request, dev account: one request upstream');
is_deeply([ EnvGwTest::echo_header($u[0], 'X-Gw-Acct') ], [ 'acc_dev' ],
          'auth_request_set carries $env_gateway_account_id') if @u;

$r = $t->http('GET', '/ar/x');
is($r->{status}, 401, 'auth_request, no token: 401');
is($r->{headers}{'www-authenticate'}, 'Bearer realm="env_gateway"',
   'auth_request, no token: WWW-Authenticate passed on');
is(scalar(news()), 0, 'auth_request, no token: nothing upstream');

$r = $t->http('GET', '/ar/x', [ Authorization => "Bearer $bad" ]);
is($r->{status}, 401, 'auth_request, unknown token: 401');
is(scalar(news()), 0, 'auth_request, unknown token: nothing upstream');

# a 404 of the authenticator is not 2xx/401/403: auth_request answers 500
$r = $t->http('GET', '/ar/x', [ @$auth, 'X-Account' => 'acc_prod' ]);
is($r->{status}, 500, 'auth_request, prod account: 500 from auth_request');
is(scalar(news()), 0, 'auth_request, prod account: nothing upstream');

# the subrequest has no query of its own: the main request's is what the
# backend acts on, so it is what must be checked
for my $q ('integrated_account_id=acc_prod', 'Integrated_Account_Id=acc_prod',
           'integrated_account_id[]=acc_prod', 'environment_id=env_prod')
{
    $r = $t->http('GET', "/ar/x?$q", $auth);
    isnt($r->{status}, 200, "auth_request, '$q' in the main query: refused")
        or diag($r->{raw});
    is(scalar(news()), 0, "auth_request, '$q' in the main query: "
                          . 'nothing upstream');
}
$r = $t->http('GET', '/ar/x?integrated_account_id=acc_dev', $auth);
is($r->{status}, 200, 'auth_request, dev account in the main query: 200');
news();

# the body the backend gets is the main request's
$r = $t->http('POST', '/ar-body/x', [ @$auth,
              'Content-Type' => 'application/json' ],
              '{"integrated_account_id":"acc_prod"}');
isnt($r->{status}, 200, 'auth_request, prod account in the body: refused')
    or diag($r->{raw});
is(scalar(news()), 0, 'auth_request, prod account in the body: '
                      . 'nothing upstream');

# --- SSI ------------------------------------------------------------------

$r = $t->http('GET', '/ssi/page.html', $auth);
is($r->{status}, 200, 'SSI, valid token: 200');
@u = news();
is(scalar @u, 1, 'SSI, valid token: the include went upstream once');
if (@u) {
    like($u[0]{uri}, qr{^/gated/inc}, 'SSI, valid token: the include');
    identity_ok($u[0], 'SSI, valid token');
    like($r->{body}, qr{before\n.*GET /gated/inc.*after}s,
         'SSI, valid token: the include served in the page');
}

$r = $t->http('GET', '/ssi/page.html');
is($r->{status}, 200, 'SSI, no token: the page');
is(scalar(news()), 0, 'SSI, no token: the include not upstream');
like($r->{body}, qr{"error":"missing_token"},
     'SSI, no token: the include is the refusal');
unlike($r->{body}, qr{GET /gated}, 'SSI, no token: nothing of the backend');

$r = $t->http('GET', '/ssi/page.html', [ Authorization => "Bearer $bad" ]);
is(scalar(news()), 0, 'SSI, unknown token: the include not upstream');
like($r->{body}, qr{"error":"invalid_token"},
     'SSI, unknown token: the include is the refusal');

$r = $t->http('GET', '/ssi/prod.html', $auth);
is(scalar(news()), 0, 'SSI, include naming a prod account: not upstream');
like($r->{body}, qr{"error":"integrated_account_not_found"},
     'SSI, include naming a prod account: the refusal');

# a gated page: the include reuses the page's check
$r = $t->http('GET', '/gssi/page.html', $auth);
is($r->{status}, 200, 'gated SSI page, valid token: 200');
@u = news();
is(scalar @u, 1, 'gated SSI page: the include went upstream once');
identity_ok($u[0], 'gated SSI page') if @u;

$r = $t->http('GET', '/gssi/page.html', [ Authorization => "Bearer $bad" ]);
refused($r, 401, 'invalid_token', 'gated SSI page, unknown token');
is(scalar(news()), 0, 'gated SSI page, unknown token: nothing upstream');

# --- mirror -------------------------------------------------------------------

# the mirror subrequest runs beside the main request: wait for both
sub settle { sleep 0.3 }

$r = $t->http('GET', '/mir/x?integrated_account_id=acc_dev', $auth);
is($r->{status}, 200, 'mirror, valid token: 200');
settle();
@u = sort { $a->{uri} cmp $b->{uri} } news();
is_deeply([ map { $_->{uri} } @u ],
          [ '/gated/mirrored?integrated_account_id=acc_dev',
            '/mir/x?integrated_account_id=acc_dev' ],
          'mirror, valid token: the main request and the mirror upstream');
identity_ok($u[0], 'mirror, valid token', 'acc_dev') if @u == 2;

$r = $t->http('GET', '/mir/x');
is($r->{status}, 200, 'mirror, no token: the ungated main request');
settle();
is_deeply([ map { $_->{uri} } news() ], [ '/mir/x' ],
          'mirror, no token: the mirror not upstream');

$r = $t->http('GET', '/mir/x?integrated_account_id=acc_prod', $auth);
settle();
is_deeply([ map { $_->{uri} } news() ],
          [ '/mir/x?integrated_account_id=acc_prod' ],
          'mirror, prod account: the mirror not upstream');

# --- satisfy any ------------------------------------------------------------

refused($t->http('GET', '/sat/x'), 401, 'missing_token',
           'satisfy any + allow, no token');
is(scalar(news()), 0, 'satisfy any + allow, no token: nothing upstream');
refused($t->http('GET', '/sat/x', [ Authorization => "Bearer $bad" ]),
           401, 'invalid_token', 'satisfy any + allow, unknown token');
is(scalar(news()), 0, 'satisfy any + allow, unknown token: nothing upstream');
refused($t->http('GET', '/sat/x?integrated_account_id=acc_prod', $auth),
           404, 'integrated_account_not_found',
           'satisfy any + allow, prod account');
is(scalar(news()), 0, 'satisfy any + allow, prod account: nothing upstream');

$r = $t->http('GET', '/sat/x', $auth);
is($r->{status}, 200, 'satisfy any + allow, valid token: 200');
@u = news();
is(scalar @u, 1, 'satisfy any + allow, valid token: one request upstream');
identity_ok($u[0], 'satisfy any + allow') if @u;

$t->stop;
done_testing;
