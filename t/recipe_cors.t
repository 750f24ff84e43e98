#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# The CORS recipe of docs/recipes.md, run as printed there (only its listen
# port changes): a browser's preflight is answered by nginx before the
# gateway, names the allowed origin and reaches no backend; a preflight from
# another origin gets no Access-Control-* header; a plain OPTIONS is still
# checked by the gateway; the real request is checked as usual and every
# answer, the gateway's refusals included, names the allowed origin.

use strict;
use warnings;

use lib 't/lib';
use EnvGwTest;
use Test::More;

my $t = EnvGwTest->new;
my $doc = "$EnvGwTest::TOP/docs/recipes.md";

# --- the recipe, from the page ------------------------------------------------

open my $fh, '<', $doc or BAIL_OUT("$doc: $!");
my $page = do { local $/; <$fh> };
close $fh;
my ($section) = $page =~ /^## CORS[^\n]*\n(.*?)(?=^## |\z)/ms;
my ($recipe) = ($section // '') =~ /^```nginx\n(.*?)^```$/ms;
ok(defined $recipe, 'docs/recipes.md has the CORS recipe as an nginx block')
    or BAIL_OUT('no CORS recipe in docs/recipes.md');

my $n = $recipe =~ s/^(\s*)listen 80;$/$1listen 127.0.0.1:%%PORT%%;/m;
is($n, 1, 'the recipe has one listen line (the only line changed)');
like($recipe, qr/^\s*env_gateway on;$/m, 'the recipe gates its location');
like($recipe, qr{^\s*proxy_pass http://backend;$}m,
     'the recipe proxies to upstream "backend"');

my $ORIGIN = 'https://app.example.com';
like($recipe, qr/"\Q$ORIGIN\E"/, "the recipe allows $ORIGIN");

$t->start_redis;
$t->env('env_dev', 'team_1', 'development');
$t->account('acc_dev', 'env_dev');
$t->account('acc_prod', 'env_prod');
my $dev = $t->token('egw_cors_dev_token', environment_id => 'env_dev',
                    team_id => 'team_1', environment => 'development');

$t->start_nginx(<<"H" . $recipe);
    env_gateway_redis 127.0.0.1:%%REDIS%% connect_timeout=200ms read_timeout=300ms;
    upstream backend { server 127.0.0.1:%%BACKEND%%; }
H

sub backend_lines { scalar(() = $t->backend_log =~ /\n/g) }

sub preflight {
    my ($origin, @more) = @_;
    return $t->http('OPTIONS', '/api/contacts?integrated_account_id=acc_dev',
                    [ Origin => $origin,
                      'Access-Control-Request-Method' => 'GET',
                      'Access-Control-Request-Headers' => 'authorization',
                      @more ]);
}

my $h = sub { $_[0]{headers}{ lc $_[1] } };

# --- preflight ------------------------------------------------------------------

my $before = backend_lines();
my $r = preflight($ORIGIN);
is($r->{status}, 204, 'preflight from an allowed origin: 204');
is($h->($r, 'Access-Control-Allow-Origin'), $ORIGIN, '... names the origin');
like($h->($r, 'Access-Control-Allow-Methods') // '', qr/\bGET\b/,
     '... allows the method asked for');
like($h->($r, 'Access-Control-Allow-Headers') // '', qr/\bAuthorization\b/i,
     '... allows the Authorization header');
is($h->($r, 'Access-Control-Max-Age'), '600', '... may be cached 600 s');
is($h->($r, 'Vary'), 'Origin', '... varies by Origin');
ok(!defined $h->($r, 'WWW-Authenticate'), '... is no refusal of the gateway');
is($r->{body}, '', '... has no body');

$r = preflight('https://evil.example.net');
is($r->{status}, 204, 'preflight from another origin: 204');
ok(!defined $h->($r, 'Access-Control-Allow-Origin'),
   '... without Access-Control-Allow-Origin');
is($h->($r, 'Vary'), 'Origin', '... varies by Origin (a cache keeps both apart)');

$r = preflight($ORIGIN, Authorization => 'Bearer egw_cors_dev_token');
is($r->{status}, 204, 'a preflight carrying a token is still only a preflight');

is(backend_lines(), $before, 'no preflight reached the backend');

# --- OPTIONS that is not a preflight: the gateway checks it ---------------------

$r = $t->http('OPTIONS', '/api/contacts?integrated_account_id=acc_dev',
              [ Origin => $ORIGIN ]);
is($r->{status}, 401, 'OPTIONS without Access-Control-Request-Method: 401');
is($r->{json}{error}, 'missing_token', '... missing_token, from the gateway');
is($h->($r, 'Access-Control-Allow-Origin'), $ORIGIN,
   '... readable by the page (names the origin)');

# --- the real requests ------------------------------------------------------------

$r = $t->http('GET', '/api/contacts?integrated_account_id=acc_dev',
              [ Origin => $ORIGIN, Authorization => "Bearer $dev" ]);
is($r->{status}, 200, 'real request with a valid token: 200');
like($r->{body}, qr{^backend GET /api/contacts\S* env=env_dev }m,
     '... from the backend, stamped with the environment');
unlike($r->{body}, qr/\Q$dev\E/, '... without the token');
is($h->($r, 'Access-Control-Allow-Origin'), $ORIGIN, '... names the origin');
like($h->($r, 'Access-Control-Expose-Headers') // '', qr/WWW-Authenticate/,
     '... exposes WWW-Authenticate');
is(backend_lines(), $before + 1, 'the real request reached the backend once');

$r = $t->http('GET', '/api/contacts?integrated_account_id=acc_dev',
              [ Origin => $ORIGIN ]);
is($r->{status}, 401, 'real request without a token: 401');
is($r->{json}{error}, 'missing_token', '... missing_token');
like($h->($r, 'WWW-Authenticate') // '', qr/^Bearer realm="env_gateway"/,
     '... with WWW-Authenticate');
is($h->($r, 'Access-Control-Allow-Origin'), $ORIGIN,
   '... and Access-Control-Allow-Origin, so the page can read it');

$r = $t->http('GET', '/api/contacts?integrated_account_id=acc_prod',
              [ Origin => $ORIGIN, Authorization => "Bearer $dev" ]);
is($r->{status}, 404, 'real request naming another environment\'s account: 404');
is($r->{json}{error}, 'integrated_account_not_found',
   '... integrated_account_not_found');
is($h->($r, 'Access-Control-Allow-Origin'), $ORIGIN, '... names the origin');

$r = $t->http('GET', '/api/contacts?integrated_account_id=acc_dev',
              [ Origin => 'https://evil.example.net',
                Authorization => "Bearer $dev" ]);
is($r->{status}, 200, 'real request from another origin: checked, 200');
ok(!defined $h->($r, 'Access-Control-Allow-Origin'),
   '... without Access-Control-Allow-Origin (the browser hides it)');

is(backend_lines(), $before + 2, 'only the two passed requests reached the backend');

# --- Redis down: the 503 names the origin too ----------------------------------

$t->stop_redis;
$r = $t->http('GET', '/api/contacts?integrated_account_id=acc_dev',
              [ Origin => $ORIGIN, Authorization => "Bearer $dev" ]);
is($r->{status}, 503, 'Redis down: 503');
is($r->{json}{error}, 'gateway_unavailable', '... gateway_unavailable');
is($h->($r, 'Access-Control-Allow-Origin'), $ORIGIN, '... names the origin');
$r = preflight($ORIGIN);
is($r->{status}, 204, 'a preflight needs no Redis: 204');
is(backend_lines(), $before + 2, 'nothing more reached the backend');

$t->stop;
done_testing;
