#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# Bodies at the boundary: where env_gateway_account_body_field is set,
# every request with a body is read and its account checked, whatever the
# verb (GET, DELETE, OPTIONS and custom verbs included), with a
# Content-Length or chunked, in memory or spooled to a file.  The upstream
# (an echo server) gets the body the gateway read.

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

$t->start_nginx(<<"CONF");
    env_gateway_redis 127.0.0.1:%%REDIS%%;
    server {
        listen 127.0.0.1:%%PORT%%;
        location /b/ {
            env_gateway on;
            env_gateway_account \$arg_integrated_account_id;
            env_gateway_account_body_field integrated_account_id;
            proxy_pass http://127.0.0.1:$echo;
        }
        location /file/ {
            env_gateway on;
            env_gateway_account \$arg_integrated_account_id;
            env_gateway_account_body_field integrated_account_id;
            client_body_buffer_size 1k;
            proxy_pass http://127.0.0.1:$echo;
        }
    }
CONF

my $seen = 0;

sub upstream {
    my ($name) = @_;
    my @r = $t->echo_requests;
    my $n = @r - $seen;
    $seen = @r;
    is($n, 1, "$name: one request upstream");
    return $n == 1 ? $r[-1] : undef;
}

sub nothing_upstream {
    my ($name) = @_;
    my $n = $t->echo_count;
    is($n - $seen, 0, "$name: nothing upstream");
    $seen = $n;
}

sub refused {
    my ($r, $status, $code, $name) = @_;
    EnvGwTest::refused($r, $status, $code, $name);
    nothing_upstream($name);
}

sub body_req {
    my ($method, $path, $body) = @_;
    return $t->http($method, $path,
                    [ Authorization => "Bearer $dev",
                      'Content-Type' => 'application/json' ], $body);
}

sub chunked_req {
    my ($method, $path, $body) = @_;
    my $half = int(length($body) / 2);
    my $chunks = join '', map { sprintf("%x\r\n%s\r\n", length $_, $_) }
                 substr($body, 0, $half), substr($body, $half);
    return $t->raw_http("$method $path HTTP/1.1\r\nHost: localhost\r\n"
        . "Connection: close\r\nAuthorization: Bearer $dev\r\n"
        . "Content-Type: application/json\r\n"
        . "Transfer-Encoding: chunked\r\n\r\n$chunks" . "0\r\n\r\n");
}

my $prod_body = '{"integrated_account_id":"acc_prod","x":1}';
my $dev_body = '{"integrated_account_id":"acc_dev","x":1}';

for my $verb (qw(GET DELETE OPTIONS MERGE POST PUT PATCH)) {

    refused(body_req($verb, '/b/a?integrated_account_id=acc_dev', $prod_body),
            400, 'invalid_request', "$verb: body prod, query dev");
    refused(body_req($verb, '/b/a', $prod_body),
            404, 'integrated_account_not_found', "$verb: body prod only");
    refused(chunked_req($verb, '/b/a', $prod_body),
            404, 'integrated_account_not_found', "$verb: chunked body prod");
    refused(chunked_req($verb, '/b/a?integrated_account_id=acc_dev',
                        $prod_body),
            400, 'invalid_request', "$verb: chunked body prod, query dev");

    my $big = '{"pad":"' . ('p' x 20000)
            . '","integrated_account_id":"acc_prod"}';
    refused(body_req($verb, '/file/a', $big),
            404, 'integrated_account_not_found',
            "$verb: body prod in a file");

    my $r = body_req($verb, '/b/a', $dev_body);
    is($r->{status}, 200, "$verb: body dev only: 200") or diag($r->{raw});
    my $u = upstream("$verb: body dev only");
    if ($u) {
        is($u->{method}, $verb, "$verb: body dev only: verb upstream");
        is($u->{body}, $dev_body, "$verb: body dev only: body upstream");
        is_deeply([ EnvGwTest::echo_header($u, 'X-Integrated-Account-Id') ],
                  [ 'acc_dev' ], "$verb: body dev only: account upstream");
    }

    $r = body_req($verb, '/b/a?integrated_account_id=acc_dev', $dev_body);
    is($r->{status}, 200, "$verb: body dev, query dev: 200");
    $u = upstream("$verb: body dev, query dev");
    is($u->{body}, $dev_body, "$verb: body dev, query dev: body upstream")
        if $u;

    $r = chunked_req($verb, '/b/a', $dev_body);
    is($r->{status}, 200, "$verb: chunked body dev: 200") or diag($r->{raw});
    $u = upstream("$verb: chunked body dev");
    is($u->{body}, $dev_body, "$verb: chunked body dev: body upstream") if $u;
}

# a body with the field twice is ambiguous
refused(body_req('GET', '/b/a', '{"integrated_account_id":"acc_dev",'
                                . '"integrated_account_id":"acc_prod"}'),
        400, 'invalid_request', 'the field twice');

# without a body nothing is read: the query alone decides
my $r = $t->http('GET', '/b/a?integrated_account_id=acc_dev',
                 [ Authorization => "Bearer $dev" ]);
is($r->{status}, 200, 'GET without a body: 200');
upstream('GET without a body');

refused($t->http('DELETE', '/b/a?integrated_account_id=acc_prod',
                 [ Authorization => "Bearer $dev" ]),
        404, 'integrated_account_not_found', 'DELETE without a body, prod');

# no token: the body is not read for an answer about accounts
refused($t->http('GET', '/b/a', [ 'Content-Type' => 'application/json' ],
                 $prod_body),
        401, 'missing_token', 'GET with a body, no token');

$t->stop;
done_testing;
