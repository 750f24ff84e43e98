#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# Internal redirects keep the identity: with env_gateway on at server
# level, a request that passed keeps its checked identity through index,
# try_files, error_page, rewrite ... last and named locations (it is not
# re-refused because its credential was hidden on the first pass) and the
# upstream (an echo server) gets the identity headers once; a refused
# request gets its refusal once and nothing goes upstream.  A redirect that
# changes what the request names (error_page to a URI with another
# integrated_account_id) is checked again.

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
my $dir = $t->dir;

mkdir "$dir/www";
mkdir "$dir/www/idx";
open my $fh, '>', "$dir/www/idx/index.html" or die;
print $fh "static index\n";
close $fh;
mkdir "$dir/www/idx2";
open $fh, '>', "$dir/www/idx2/index.htm" or die;
print $fh "static index\n";
close $fh;

# a second server in front of the echo server answers 404 for /same/a and
# /other/404, to make proxy_intercept_errors and error_page redirect
my $notfound = EnvGwTest::free_port();

$t->start_nginx(<<"CONF");
    env_gateway_redis 127.0.0.1:%%REDIS%%;
    server {
        listen 127.0.0.1:$notfound;
        location = /same/a { return 404; }
        location = /other/404 { return 404; }
        location / { proxy_pass http://127.0.0.1:$echo; }
    }
    server {
        listen 127.0.0.1:%%PORT%%;
        env_gateway on;
        env_gateway_account \$arg_integrated_account_id;
        root $dir/www;

        location /idx/ { index index.html; }
        location ~ \\.html\$ { proxy_pass http://127.0.0.1:$echo; }

        # two redirects in a row: index, then try_files to a named location
        location /idx2/ { index index.htm; }
        location ~ \\.htm\$ { try_files /nonexistent \@backend; }

        location /tf/ { try_files \$uri \@backend; }
        location \@backend { proxy_pass http://127.0.0.1:$echo; }

        location /ep/ { error_page 404 = \@fallback; }
        location \@fallback { proxy_pass http://127.0.0.1:$echo; }

        location /ep-uri/ { error_page 404 = /other/from-error; }
        location /ep-refusal/ { error_page 400 401 403 404 = \@fallback; }

        location /rw/ { rewrite ^ /other/rewritten last; }
        location /other/ { proxy_pass http://127.0.0.1:$echo; }

        # redirected with another account named: checked again
        location /ep-acct/ {
            error_page 404 = /other/x?integrated_account_id=acc_prod;
        }
        location /same/ {
            proxy_pass http://127.0.0.1:$notfound;
            proxy_intercept_errors on;
            error_page 404 = /same/b?integrated_account_id=acc_prod;
        }

        # no gateway here: a redirect into a gated location is checked
        location /open/ {
            env_gateway off;
            error_page 404 = /other/from-open;
        }
    }
CONF

my $seen = 0;
my $refusals = 0;

sub refusal_lines {
    my @l = $t->slurp('error.log') =~ /env_gateway: refused/g;
    return scalar @l;
}

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

sub passed {
    my ($path, $uri, $account, $name) = @_;
    my $r = $t->http('GET', $path, [ Authorization => "Bearer $dev" ]);
    is($r->{status}, 200, "$name: 200") or diag($r->{raw});
    my $u = upstream($name);
    return unless $u;
    like($u->{uri}, qr/^\Q$uri\E/, "$name: upstream URI");
    is_deeply([ EnvGwTest::echo_header($u, 'X-Environment-Id') ],
              [ 'env_dev' ], "$name: X-Environment-Id once upstream");
    is_deeply([ EnvGwTest::echo_header($u, 'X-Token-Id') ], [ 'tok_dev' ],
              "$name: X-Token-Id once upstream");
    is_deeply([ EnvGwTest::echo_header($u, 'X-Integrated-Account-Id') ],
              [ $account ? ($account) : () ],
              "$name: X-Integrated-Account-Id upstream");
    is_deeply([ EnvGwTest::echo_header($u, 'Authorization') ], [],
              "$name: no Authorization upstream");
    is(refusal_lines(), $refusals, "$name: no refusal logged");
}

sub refused {
    my ($r, $status, $code, $name) = @_;
    EnvGwTest::refused($r, $status, $code, $name);
    my @lines = $r->{raw} =~ m{^HTTP/1\.1 }mg;
    is(scalar @lines, 1, "$name: one answer");
    like($r->{body}, qr/^\{[^\n]*\}\n\z/, "$name: the JSON body alone");
    nothing_upstream($name);
    is(refusal_lines(), ++$refusals, "$name: one refusal logged");
}

my $bad = 'egw_unknown_' . 'f' x 24;
my $A = '?integrated_account_id=acc_dev';

for my $case (
    # request, upstream URI prefix, name
    [ '/idx/',               '/idx/index.html',     'index' ],
    [ '/idx2/',              '/idx2/index.htm',     'index, then try_files' ],
    [ '/tf/missing',         '/tf/missing',         'try_files to @backend' ],
    [ '/ep/missing',         '/ep/missing',         'error_page 404 = @fallback' ],
    [ '/ep-uri/missing',     '/other/from-error',   'error_page 404 = /uri' ],
    [ '/rw/x',               '/other/rewritten',    'rewrite ... last' ],
    )
{
    my ($path, $uri, $name) = @$case;

    passed($path, $uri, undef, "$name, no account");
    passed("$path$A", $uri, 'acc_dev', "$name, dev account")
        unless $name eq 'error_page 404 = /uri';

    refused($t->http('GET', $path, [ Authorization => "Bearer $bad" ]),
            401, 'invalid_token', "$name, unknown token");
    refused($t->http('GET', $path), 401, 'missing_token', "$name, no token");
    refused($t->http('GET', "$path?integrated_account_id=acc_prod",
                     [ Authorization => "Bearer $dev" ]),
            404, 'integrated_account_not_found', "$name, prod account");
}

# the module's refusals are its own answers, never turned into error_page
# redirects
refused($t->http('GET', '/ep-refusal/x', [ Authorization => "Bearer $bad" ]),
        401, 'invalid_token', 'error_page 401 = @fallback, unknown token');
refused($t->http('GET', '/ep-refusal/x?integrated_account_id=acc_prod',
                 [ Authorization => "Bearer $dev" ]),
        404, 'integrated_account_not_found',
        'error_page 404 = @fallback, prod account');
passed('/ep-refusal/missing', '/ep-refusal/missing', undef,
       'error_page 404 = @fallback after a pass');

# from a location without the gateway into a gated one
passed('/open/missing', '/other/from-open', undef,
       'ungated error_page into a gated location');
refused($t->http('GET', '/open/missing'), 401, 'missing_token',
        'ungated error_page into a gated location, no token');

# a redirect that names another account is checked again: into another
# location, and into the same location
refused($t->http('GET', '/ep-acct/missing', [ Authorization => "Bearer $dev" ]),
        404, 'integrated_account_not_found',
        'error_page to another location naming a prod account');

my $r = $t->http('GET', '/same/a', [ Authorization => "Bearer $dev" ]);
isnt($r->{status}, 200,
     'error_page to the same location naming a prod account: not served')
    or diag($r->{raw});
EnvGwTest::refused($r, 404, 'integrated_account_not_found',
           'error_page to the same location naming a prod account');
my @u = $t->echo_requests;
my @leak = grep { $_->{uri} =~ /acc_prod/ } @u[$seen .. $#u];
is(scalar @leak, 0,
   'error_page to the same location: prod account not upstream')
    or diag($leak[0]{raw});
$seen = @u;

$t->stop;
done_testing;
