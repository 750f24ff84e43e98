#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# Paths at the boundary: on a location with env_gateway on, a raw path with
# a dot segment (literal, percent-encoded, "..;"), an encoded '/' or '\', a
# backslash or a NUL is 400 invalid_request and nothing goes upstream, since
# nginx and the backend may resolve it to different resources.  Dots that
# are not whole segments pass, and the upstream gets the path as sent.

use strict;
use warnings;

use lib 't/lib';
use EnvGwTest qw(refused);
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
        location / {
            env_gateway on;
            env_gateway_account \$arg_integrated_account_id;
            proxy_pass http://127.0.0.1:$echo;
        }
        location /g/ {
            env_gateway on;
            env_gateway_account \$arg_integrated_account_id;
            proxy_pass http://127.0.0.1:$echo;
        }
        location ~ ^/cap/(?<acct>[^/]+)/ {
            env_gateway on;
            env_gateway_account \$acct;
            proxy_pass http://127.0.0.1:$echo;
        }
    }
CONF

my $seen = 0;

sub nothing_upstream {
    my ($name) = @_;
    my $n = $t->echo_count;
    is($n - $seen, 0, "$name: nothing upstream");
    $seen = $n;
}

sub get {
    my ($path) = @_;
    return $t->http('GET', $path, [ Authorization => "Bearer $dev" ]);
}

# the account in the path, resolved by nginx to the dev one: the backend
# would see the production one first
my $r = get('/cap/acc_prod/../acc_dev/x');
refused($r, 400, 'invalid_request', '/cap/<prod>/../<dev>/x');
nothing_upstream('/cap/<prod>/../<dev>/x');

$r = get('/cap/acc_dev/x');
is($r->{status}, 200, '/cap/<dev>/x: 200');
is($t->echo_count - $seen, 1, '/cap/<dev>/x: upstream');
$seen = $t->echo_count;

refused(get('/cap/acc_prod/x'), 404, 'integrated_account_not_found',
           '/cap/<prod>/x');
nothing_upstream('/cap/<prod>/x');

for my $p ('/g/.%2E/x', '/g/%2E./x', '/g/%2e%2e/x', '/g/%2E%2E/x',
           '/g/a/../b', '/g/a/./b', '/g/a/%2e/b', '/g/a/..', '/g/a/.',
           '/g/a/%2e%2e', '/g/a/..;/b', '/g/a/.;/b', '/g/a/..;x=1/b',
           '/g/a/%2e%2e;/b', '/g/x/../g/y', '/g/./x', '/g/a%2Fb', '/g/a%2fb',
           '/g/a%5cb', '/g/a%5Cb', '/g/a\\b', '/g/a\\..\\b', '/g//../x',
           '/g/%2e%2e%2fb', '/g/a/..?x=1', '/g/a/../b?x=1')
{
    $r = get($p);
    refused($r, 400, 'invalid_request', "'$p'");
    nothing_upstream("'$p'");
}

# an absolute-form request target: the path is checked as well
$r = $t->raw_http("GET http://localhost/g/a/../b HTTP/1.1\r\nHost: localhost\r\n"
                  . "Connection: close\r\nAuthorization: Bearer $dev\r\n\r\n");
refused($r, 400, 'invalid_request', 'absolute-form /g/a/../b');
nothing_upstream('absolute-form /g/a/../b');

# nginx refuses an encoded NUL itself (its own 400 page) before any module
# runs: nothing upstream either way
$r = get('/g/a%00b');
is($r->{status}, 400, "'/g/a%00b': 400 (from nginx)");
nothing_upstream("'/g/a%00b'");

# dots that are not segments, and what the query holds, pass as they are
for my $p ('/g/a.b/c..d/...x', '/g/.well-known/x', '/g/..a/b', '/g/a../b',
           '/g/a/...', '/g/a/.../b', '/g/%2e%2e%2e/b', '/g/a;b/c',
           '/g/a.b?x=/../y', '/g/a?path=..%2F..%2Fetc', '/g/a%20b/c')
{
    $r = get($p);
    is($r->{status}, 200, "'$p': 200") or diag($r->{raw});
    my @u = $t->echo_requests;
    is(@u - $seen, 1, "'$p': one request upstream");
    $seen = @u;
    is($u[-1]{uri}, $p, "'$p': upstream path as sent") if @u;
}

$t->stop;
done_testing;
