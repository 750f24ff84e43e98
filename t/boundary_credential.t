#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# One credential per request: the configured place plus RFC 6750's
# (Authorization, access_token) in every spelling.  Two of them, one given
# twice or two credential cookies are 400 invalid_request; a credential only
# in a place the location does not read is no credential (401); no
# credential reaches the upstream (an echo server that returns every header
# and the request line).

use strict;
use warnings;

use lib 't/lib';
use EnvGwTest;
use Test::More;


my $t = EnvGwTest->new;
$t->start_redis;
my $echo = $t->start_echo;
my $tok = $t->seed_two_envs;
my $dev = $tok->{dev};

my $under = EnvGwTest::free_port();     # underscores_in_headers on
my $inval = EnvGwTest::free_port();     # ignore_invalid_headers off

my $locations = <<"L";
        location /auth/ {
            env_gateway on;
            env_gateway_account \$arg_integrated_account_id;
            proxy_pass http://127.0.0.1:$echo;
        }
        location /apikey/ {
            env_gateway on;
            env_gateway_token \$http_x_api_key;
            proxy_pass http://127.0.0.1:$echo;
        }
        location /cookie/ {
            env_gateway on;
            env_gateway_token \$cookie_sid;
            proxy_pass http://127.0.0.1:$echo;
        }
        location /argtok/ {
            env_gateway on;
            env_gateway_token \$arg_api_key;
            proxy_pass http://127.0.0.1:$echo;
        }
        location /argtok-uri/ {
            env_gateway on;
            env_gateway_token \$arg_api_key;
            proxy_pass http://127.0.0.1:$echo/prefix/;
        }
        location /argtok-ru/ {
            env_gateway on;
            env_gateway_token \$arg_api_key;
            proxy_pass http://127.0.0.1:$echo\$request_uri;
        }
        location /argtok-args/ {
            env_gateway on;
            env_gateway_token \$arg_api_key;
            proxy_pass http://127.0.0.1:$echo/a?\$args;
        }
        # the same places written as \${name}
        location /apikey-braces/ {
            env_gateway on;
            env_gateway_token \${http_x_api_key};
            proxy_pass http://127.0.0.1:$echo;
        }
        location /argtok-braces/ {
            env_gateway on;
            env_gateway_token \${arg_api_key};
            proxy_pass http://127.0.0.1:$echo;
        }
        location /cookie-braces/ {
            env_gateway on;
            env_gateway_token \${cookie_sid};
            proxy_pass http://127.0.0.1:$echo;
        }
L

$t->start_nginx(<<"CONF");
    env_gateway_redis 127.0.0.1:%%REDIS%%;
    server {
        listen 127.0.0.1:%%PORT%%;
$locations
    }
    server {
        listen 127.0.0.1:$under;
        underscores_in_headers on;
$locations
    }
    server {
        listen 127.0.0.1:$inval;
        ignore_invalid_headers off;
$locations
    }
CONF

my $seen = 0;

sub upstream {
    my ($name) = @_;
    my @r = $t->echo_requests;
    my $n = @r - $seen;
    $seen = @r;
    is($n, 1, "$name: one request upstream");
    return undef unless $n == 1;
    my $u = $r[-1];
    ok(index($u->{raw}, $dev) < 0, "$name: no token upstream")
        or diag($u->{raw});
    return $u;
}

sub nothing_upstream {
    my ($name) = @_;
    my $n = $t->echo_count;
    is($n - $seen, 0, "$name: nothing upstream");
    $seen = $n;
}

sub req {
    my ($method, $path, $headers, $body, %opt) = @_;
    return $t->http($method, $path, $headers, $body, %opt);
}

sub refused {
    my ($r, $status, $code, $name) = @_;
    EnvGwTest::refused($r, $status, $code, $name);
    ok(index($r->{raw}, $dev) < 0, "$name: no token in the answer");
    nothing_upstream($name);
}

my $bearer = "Bearer $dev";

# --- Authorization and access_token ---------------------------------------

my $r = req('GET', '/auth/a', [ Authorization => $bearer ]);
is($r->{status}, 200, 'Authorization alone: 200');
my $u = upstream('Authorization alone');
is_deeply([ EnvGwTest::echo_header($u, 'Authorization') ], [],
          'Authorization alone: not upstream') if $u;

refused(req('GET', "/auth/a?access_token=$dev", [ Authorization => $bearer ]),
        400, 'invalid_request', 'Authorization and access_token');
refused(req('GET', "/auth/a?x=1&access_token=$dev&y=2",
            [ Authorization => $bearer ]),
        400, 'invalid_request', 'Authorization and access_token among others');
refused(req('GET', '/auth/a?access_token=',
            [ Authorization => $bearer ]),
        400, 'invalid_request', 'Authorization and an empty access_token');

# nginx itself refuses a repeated Authorization (its own 400 page), before
# any module runs: still nothing upstream
$r = req('GET', '/auth/a', [ Authorization => $bearer,
                             authorization => $bearer ]);
is($r->{status}, 400, 'Authorization twice: 400 (from nginx)');
nothing_upstream('Authorization twice');
refused(req('GET', '/auth/a', [ Authorization => "$bearer, $bearer" ]),
        400, 'invalid_request', 'Authorization with a comma-joined list');
refused(req('GET', "/auth/a?access_token=$dev"), 401, 'missing_token',
        'access_token alone where Authorization is read');
refused(req('GET', "/auth/a?access_token=$dev&access_token=$dev"),
        400, 'invalid_request', 'access_token twice');

# RFC 6750 2.2: a form-encoded body field is a credential place too
refused(req('POST', '/auth/a',
            [ Authorization => $bearer,
              'Content-Type' => 'application/x-www-form-urlencoded' ],
            "access_token=$dev&a=1"),
        400, 'invalid_request', 'Authorization and an access_token form field');

# --- a configured header ----------------------------------------------------

$r = req('GET', '/apikey/a', [ 'X-Api-Key' => $dev ]);
is($r->{status}, 200, 'X-Api-Key alone: 200');
$u = upstream('X-Api-Key alone');
is_deeply([ EnvGwTest::echo_header($u, 'X-Api-Key') ], [],
          'X-Api-Key alone: not upstream') if $u;

refused(req('GET', '/apikey/a', [ 'X-Api-Key' => $dev,
                                  Authorization => $bearer ]),
        400, 'invalid_request', 'X-Api-Key and Authorization');
refused(req('GET', "/apikey/a?access_token=$dev", [ 'X-Api-Key' => $dev ]),
        400, 'invalid_request', 'X-Api-Key and access_token');
refused(req('GET', '/apikey/a', [ 'X-Api-Key' => $dev,
                                  'X-Api-Key' => $dev ]),
        400, 'invalid_request', 'X-Api-Key twice');
refused(req('GET', '/apikey/a', [ 'X-Api-Key' => $dev,
                                  'x-api-key' => 'other' ]),
        400, 'invalid_request', 'X-Api-Key and x-api-key');
refused(req('GET', '/apikey/a', [ Authorization => $bearer ]),
        401, 'missing_token', 'Authorization where X-Api-Key is read');

for my $srv ([ 'underscores_in_headers on', $under ],
             [ 'ignore_invalid_headers off', $inval ])
{
    my ($sn, $p) = @$srv;

    for my $sp ('X_Api_Key', 'x_api_key', 'X-Api_Key') {
        $r = req('GET', '/apikey/a', [ $sp => $dev ], undef, port => $p);
        is($r->{status}, 200, "$sn: '$sp' is the credential: 200");
        $u = upstream("$sn: '$sp'");
        is_deeply([ EnvGwTest::echo_header_names($u, 'X-Api-Key') ], [],
                  "$sn: '$sp' not upstream in any spelling") if $u;
    }

    refused(req('GET', '/apikey/a', [ 'X-Api-Key' => $dev,
                                      'X_Api_Key' => $dev ],
                undef, port => $p),
            400, 'invalid_request', "$sn: X-Api-Key and X_Api_Key");
    refused(req('GET', '/apikey/a', [ 'X_Api_Key' => $dev,
                                      Authorization => $bearer ],
                undef, port => $p),
            400, 'invalid_request', "$sn: X_Api_Key and Authorization");
}

# without underscores_in_headers nginx drops the header: no credential
refused(req('GET', '/apikey/a', [ 'X_Api_Key' => $dev ]),
        401, 'missing_token', 'X_Api_Key dropped by nginx');

# --- a configured cookie ----------------------------------------------------

$r = req('GET', '/cookie/a', [ Cookie => "a=1; sid=$dev; b=2" ]);
is($r->{status}, 200, 'sid cookie between others: 200');
$u = upstream('sid cookie between others');
is_deeply([ EnvGwTest::echo_header($u, 'Cookie') ], [ 'a=1; b=2' ],
          'sid cookie between others: the others stay') if $u;

$r = req('GET', '/cookie/a', [ Cookie => "sid=$dev; theme=dark" ]);
is($r->{status}, 200, 'sid cookie first: 200');
$u = upstream('sid cookie first');
is_deeply([ EnvGwTest::echo_header($u, 'Cookie') ], [ 'theme=dark' ],
          'sid cookie first: the other stays') if $u;

$r = req('GET', '/cookie/a', [ Cookie => "sid=$dev" ]);
is($r->{status}, 200, 'sid cookie alone: 200');
$u = upstream('sid cookie alone');
is_deeply([ grep { length } EnvGwTest::echo_header($u, 'Cookie') ], [],
          'sid cookie alone: no Cookie upstream') if $u;

$r = req('GET', '/cookie/a', [ Cookie => 'a=1', Cookie => "sid=$dev; b=2" ]);
is($r->{status}, 200, 'sid cookie in a second Cookie header: 200');
$u = upstream('sid cookie in a second Cookie header');
if ($u) {
    my $all = join ';', EnvGwTest::echo_header($u, 'Cookie');
    like($all, qr/\ba=1\b/, 'second Cookie header: a=1 stays');
    like($all, qr/\bb=2\b/, 'second Cookie header: b=2 stays');
    unlike($all, qr/sid=/, 'second Cookie header: no sid');
}

refused(req('GET', '/cookie/a', [ Cookie => "sid=$dev; sid=$dev" ]),
        400, 'invalid_request', 'two sid cookies in one header');
refused(req('GET', '/cookie/a', [ Cookie => "sid=$dev",
                                  Cookie => "sid=other" ]),
        400, 'invalid_request', 'two sid cookies in two headers');
refused(req('GET', '/cookie/a', [ Cookie => "sid=$dev; SID=other" ]),
        400, 'invalid_request', 'sid and SID cookies');
refused(req('GET', '/cookie/a', [ Cookie => "sid=$dev",
                                  Authorization => $bearer ]),
        400, 'invalid_request', 'sid cookie and Authorization');
refused(req('GET', "/cookie/a?access_token=$dev", [ Cookie => "sid=$dev" ]),
        400, 'invalid_request', 'sid cookie and access_token');
refused(req('GET', '/cookie/a', [ Cookie => 'a=1' ]), 401, 'missing_token',
        'no sid cookie');

# --- a configured query argument --------------------------------------------

for my $loc ('/argtok/', '/argtok-uri/', '/argtok-ru/', '/argtok-args/') {
    $r = req('GET', "${loc}a?x=1&api_key=$dev&y=2");
    is($r->{status}, 200, "$loc api_key: 200");
    $u = upstream("$loc api_key");
    unlike($u->{uri}, qr/api_key=(?!\[REDACTED\])/,
           "$loc api_key: no api_key value upstream") if $u;
    like($u->{uri}, qr/x=1/, "$loc api_key: other arguments stay") if $u;
}

refused(req('GET', "/argtok/a?api_key=$dev", [ Authorization => $bearer ]),
        400, 'invalid_request', 'api_key and Authorization');
refused(req('GET', "/argtok/a?api_key=$dev&access_token=$dev"),
        400, 'invalid_request', 'api_key and access_token');
refused(req('GET', "/argtok/a?api_key=$dev&api_key=$dev"),
        400, 'invalid_request', 'api_key twice');
refused(req('GET', "/argtok/a?Api_Key=$dev"),
        400, 'invalid_request', 'Api_Key spelling');
refused(req('GET', "/argtok/a?api%5Fkey=$dev"),
        400, 'invalid_request', 'api%5Fkey spelling');

# --- \${name} is the same place as \$name --------------------------------------

$r = req('GET', '/apikey-braces/a', [ 'X-Api-Key' => $dev ]);
is($r->{status}, 200, '${http_x_api_key}: 200');
$u = upstream('${http_x_api_key}');
refused(req('GET', '/apikey-braces/a', [ 'X-Api-Key' => $dev,
                                         Authorization => $bearer ]),
        400, 'invalid_request', '${http_x_api_key} and Authorization');

$r = req('GET', "/argtok-braces/a?api_key=$dev&x=1");
is($r->{status}, 200, '${arg_api_key}: 200');
$u = upstream('${arg_api_key}');

$r = req('GET', '/cookie-braces/a', [ Cookie => "a=1; sid=$dev" ]);
is($r->{status}, 200, '${cookie_sid}: 200');
$u = upstream('${cookie_sid}');
refused(req('GET', '/cookie-braces/a', [ Cookie => "sid=$dev; sid=x" ]),
        400, 'invalid_request', '${cookie_sid} twice');

$t->stop;
done_testing;
