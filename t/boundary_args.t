#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# Argument names at the boundary, and the standard account always checked.
#
# A query argument that is not byte-identical to a name the gateway
# consumes or reads as a credential (integrated_account_id, environment_id,
# access_token, the configured token argument) but that PHP, qs or a
# ';'-splitting parser reads as one of them is 400 invalid_request on a
# gated location; unrelated names with '.' or brackets pass.
#
# integrated_account_id in the query is checked against the token's
# environment whatever env_gateway_account reads (a typo there, a header,
# or no directive at all), and two places that disagree are 400.

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
        location /g/ {
            env_gateway on;
            env_gateway_account \$arg_integrated_account_id;
            proxy_pass http://127.0.0.1:$echo;
        }
        location /typo/ {
            env_gateway on;
            env_gateway_account \$arg_integrated_acount_id;
            proxy_pass http://127.0.0.1:$echo;
        }
        location /hdr/ {
            env_gateway on;
            env_gateway_account \$http_x_account;
            proxy_pass http://127.0.0.1:$echo;
        }
        location /none/ {
            env_gateway on;
            proxy_pass http://127.0.0.1:$echo;
        }
        location /tokarg/ {
            env_gateway on;
            env_gateway_token \$arg_key;
            proxy_pass http://127.0.0.1:$echo;
        }
        location /open/ {
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

sub get {
    my ($path, @h) = @_;
    return $t->http('GET', $path, [ Authorization => "Bearer $dev", @h ]);
}

sub refused {
    my ($r, $status, $code, $name) = @_;
    EnvGwTest::refused($r, $status, $code, $name);
    nothing_upstream($name);
}

sub passed {
    my ($r, $name) = @_;
    is($r->{status}, 200, "$name: 200") or diag($r->{raw});
    return upstream($name);
}

# --- spellings a backend parser reads as the name ---------------------------

sub aliases {
    my ($n) = @_;
    (my $dot = $n) =~ s/_/./;
    (my $sp = $n) =~ s/_/%20/g;
    (my $plus = $n) =~ s/_/+/g;
    (my $brk = $n) =~ s/_/[/;
    my $title = join '_', map { ucfirst } split /_/, $n;
    my $enc = sprintf('%%%02x', ord $n) . substr($n, 1);
    my $encu = sprintf('%%%02X', ord $n) . substr($n, 1);
    (my $enc_us = $n) =~ s/_/%5F/;
    return ($dot, $sp, $plus, $brk, $title, uc $n, "${n}[]", "${n}[0]",
            "${n}[x]", "${n}%5B%5D", "${n}%00", "${n}%00x", $enc, $encu,
            $enc_us, "%20$n", "+$n");
}

my %value = (integrated_account_id => 'acc_dev', environment_id => 'env_dev',
             access_token => $dev);

for my $n (sort keys %value) {
    my $v = $value{$n};

    for my $a (aliases($n)) {
        refused(get("/g/a?$a=$v"), 400, 'invalid_request', "/g/ '$a'");
        refused(get("/g/a?x=1&$a=$v&y=2"), 400, 'invalid_request',
                "/g/ '$a' among others");
        refused(get("/g/a?$n=$v&$a=$v"), 400, 'invalid_request',
                "/g/ '$n' and '$a'");
        refused(get("/none/a?$a=$v"), 400, 'invalid_request',
                "/none/ '$a'");
    }

    # ';' separates arguments for some parsers
    for my $q ("x=1;$n=$v", "x=1;a=2;$n=$v", "x=1;%20$n=$v",
               "x=1;" . ucfirst($n) . "=$v", "$n=$v;$n=$v",
               "x=1;${n}[]=$v")
    {
        refused(get("/g/a?$q"), 400, 'invalid_request', "/g/ '$q'");
    }
}

# access_token spellings without any other credential are no way around
# the one-credential rule either
for my $a (aliases('access_token')) {
    refused($t->http('GET', "/g/a?$a=$dev"), 400, 'invalid_request',
            "'$a' alone");
}

# the configured token argument is a credential name too
for my $a (qw(Key KEY key[] key[0] k%65y %6Bey key%00 key%5B%5D)) {
    refused($t->http('GET', "/tokarg/a?$a=$dev"), 400, 'invalid_request',
            "/tokarg/ '$a'");
}
my $u = passed($t->http('GET', "/tokarg/a?key=$dev"), '/tokarg/ key');
unlike($u->{uri}, qr/\Q$dev\E/, '/tokarg/ key: not upstream') if $u;

# a consumed argument's value with escaping another parser would undo
for my $q ('integrated_account_id=acc%5Fdev', 'integrated_account_id=acc+dev',
           'environment_id=env%5Fdev', 'environment_id=env+dev')
{
    refused(get("/g/a?$q"), 400, 'invalid_request', "/g/ '$q'");
}

# --- unrelated names pass, unchanged ---------------------------------------

for my $q ('a.b=1', 'c[]=2', 'd[0]=3&d[1]=4', 'e%5Bx%5D=5', 'f+g=6',
           'h%20i=7', 'a.b=1&c[]=2&integrated_account_id=acc_dev',
           'integrated_account_idx=1', 'xintegrated_account_id=1',
           'integrated_account=1', 'environment=1', 'access_tokens=1',
           'my.access_token=1', 'token=1')
{
    $u = passed(get("/g/a?$q"), "/g/ unrelated '$q'");
    is($u->{uri}, "/g/a?$q", "/g/ unrelated '$q': query as sent") if $u;
}

# a location without the gateway reads nothing
$u = passed($t->http('GET', '/open/a?Integrated_Account_Id=x'),
            'no gateway: any name');

# --- the standard account is always checked --------------------------------

# env_gateway_account with a typo: the standard name is still read
refused(get('/typo/a?integrated_account_id=acc_prod'), 404,
        'integrated_account_not_found', 'typo location, prod account');
$u = passed(get('/typo/a?integrated_account_id=acc_dev'),
            'typo location, dev account');
is_deeply([ EnvGwTest::echo_header($u, 'X-Integrated-Account-Id') ],
          [ 'acc_dev' ], 'typo location: the account checked upstream') if $u;
refused(get('/typo/a?integrated_acount_id=acc_prod'), 404,
        'integrated_account_not_found', 'typo location, its own argument');
refused(get('/typo/a?integrated_acount_id=acc_dev'
            . '&integrated_account_id=acc_prod'),
        400, 'invalid_request', 'typo location, the two disagree');
$u = passed(get('/typo/a?integrated_acount_id=acc_dev'
                . '&integrated_account_id=acc_dev'),
            'typo location, the two agree');
refused(get('/typo/a?integrated_account_id=nope'), 404,
        'integrated_account_not_found', 'typo location, no such account');

# env_gateway_account reads a header: the query is checked beside it
refused(get('/hdr/a?integrated_account_id=acc_prod', 'X-Account' => 'acc_dev'),
        400, 'invalid_request', 'header and query disagree');
refused(get('/hdr/a?integrated_account_id=acc_dev', 'X-Account' => 'acc_prod'),
        400, 'invalid_request', 'header and query disagree (other way)');
$u = passed(get('/hdr/a?integrated_account_id=acc_dev',
                'X-Account' => 'acc_dev'), 'header and query agree');
is_deeply([ EnvGwTest::echo_header($u, 'X-Integrated-Account-Id') ],
          [ 'acc_dev' ], 'header and query agree: the account upstream') if $u;
refused(get('/hdr/a?integrated_account_id=acc_prod'), 404,
        'integrated_account_not_found', 'header location, prod in the query');
refused(get('/hdr/a', 'X-Account' => 'acc_prod'), 404,
        'integrated_account_not_found', 'header location, prod in the header');
$u = passed(get('/hdr/a', 'X-Account' => 'acc_dev'),
            'header location, dev in the header');
refused(get('/hdr/a', 'X-Account' => 'acc_dev', 'X-Account' => 'acc_dev'),
        400, 'invalid_request', 'account header twice');

# no env_gateway_account at all
refused(get('/none/a?integrated_account_id=acc_prod'), 404,
        'integrated_account_not_found', 'no account directive, prod account');
$u = passed(get('/none/a?integrated_account_id=acc_dev'),
            'no account directive, dev account');
is_deeply([ EnvGwTest::echo_header($u, 'X-Integrated-Account-Id') ],
          [ 'acc_dev' ], 'no account directive: the account upstream') if $u;
refused(get('/none/a?integrated_account_id=acc_dev'
            . '&integrated_account_id=acc_dev'),
        400, 'invalid_request', 'no account directive, the account twice');

# an unauthenticated request learns nothing about accounts
refused($t->http('GET', '/typo/a?integrated_account_id=acc_prod'), 401,
        'missing_token', 'typo location without a token');

$t->stop;
done_testing;
