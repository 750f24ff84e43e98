#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# The identity headers at the boundary: a passed request reaches the
# upstream with X-Environment-Id, X-Environment, X-Team-Id, X-Token-Id,
# X-Integrated-Account-Id and X-Tenant-Id set from what the gateway checked
# (no proxy_set_header), none with "env_gateway_identity_headers off", and a
# client's own header of any of those names (any case, '_' for '-', once or
# twice, with and without underscores_in_headers) never reaches the
# upstream.  The upstream is an echo server that returns every header.

use strict;
use warnings;

use lib 't/lib';
use EnvGwTest qw(refused);
use Test::More;


my $t = EnvGwTest->new;
$t->start_redis;
my $echo = $t->start_echo;
my $tok = $t->seed_two_envs;

my $under = EnvGwTest::free_port();     # underscores_in_headers on
my $inval = EnvGwTest::free_port();     # ignore_invalid_headers off

my $locations = <<"L";
        location /id/ {
            env_gateway on;
            env_gateway_account \$arg_integrated_account_id;
            proxy_pass http://127.0.0.1:$echo;
        }
        location /noid/ {
            env_gateway on;
            env_gateway_identity_headers off;
            env_gateway_account \$arg_integrated_account_id;
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

my @NAMES = qw(X-Environment-Id X-Environment X-Team-Id X-Token-Id
               X-Integrated-Account-Id X-Tenant-Id);

my %want_acc = ('X-Environment-Id' => 'env_dev',
                'X-Environment' => 'development',
                'X-Team-Id' => 'team_a',
                'X-Token-Id' => 'tok_dev',
                'X-Integrated-Account-Id' => 'acc_dev',
                'X-Tenant-Id' => 'tenant_dev');

my $seen = 0;

# the one request the echo server got for this call, or undef
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

# exactly the gateway's identity headers, each once under its own name;
# for names in %$want absent from it, no header at all
sub identity_is {
    my ($req, $want, $name) = @_;
    for my $h (@NAMES) {
        my @names = EnvGwTest::echo_header_names($req, $h);
        my @vals = EnvGwTest::echo_header($req, $h);
        if (defined $want->{$h}) {
            is_deeply([ map { "$names[$_]: $vals[$_]" } 0 .. $#names ],
                      [ "$h: $want->{$h}" ], "$name: $h from the gateway")
                or diag($req->{raw});
        } else {
            is_deeply(\@names, [], "$name: no $h") or diag($req->{raw});
        }
    }
    is_deeply([ EnvGwTest::echo_header($req, 'Authorization') ], [],
              "$name: no Authorization upstream");
}

sub req {
    my ($path, $headers, %opt) = @_;
    return $t->http('GET', $path, $headers, undef, %opt);
}

my $auth = [ Authorization => "Bearer $tok->{dev}" ];

# --- set from what was checked ---------------------------------------------

my $r = req('/id/a?integrated_account_id=acc_dev', $auth);
is($r->{status}, 200, 'dev token, dev account: 200');
my $u = upstream('identity with an account');
identity_is($u, \%want_acc, 'identity with an account') if $u;

$r = req('/id/a', $auth);
is($r->{status}, 200, 'dev token, no account: 200');
$u = upstream('identity without an account');
my %want_noacc = %want_acc;
delete @want_noacc{qw(X-Integrated-Account-Id X-Tenant-Id)};
identity_is($u, \%want_noacc, 'identity without an account') if $u;

$r = req('/id/a?integrated_account_id=acc_prod',
         [ Authorization => "Bearer $tok->{prod}" ]);
is($r->{status}, 200, 'prod token, prod account: 200');
$u = upstream('prod identity');
identity_is($u, { 'X-Environment-Id' => 'env_prod',
                  'X-Environment' => 'production', 'X-Team-Id' => 'team_a',
                  'X-Token-Id' => 'tok_prod',
                  'X-Integrated-Account-Id' => 'acc_prod',
                  'X-Tenant-Id' => 'tenant_prod' }, 'prod identity') if $u;

$r = req('/noid/a?integrated_account_id=acc_dev', $auth);
is($r->{status}, 200, 'identity headers off: 200');
$u = upstream('identity headers off');
identity_is($u, {}, 'identity headers off') if $u;

# --- forged by the client --------------------------------------------------

# spellings of a header name a client may send; with '_' only where nginx
# keeps such headers
sub spellings {
    my ($name, $underscores) = @_;
    my @s = ($name, lc $name, uc $name,
             join('-', map { ucfirst lc } split /-/, $name) =~ s/^X/x/r);
    if ($underscores) {
        (my $u = $name) =~ tr/-/_/;
        push @s, $u, lc $u, 'X-' . substr($u, 2);
    }
    return @s;
}

my %port = ('default' => undef, 'underscores_in_headers on' => $under,
            'ignore_invalid_headers off' => $inval);

for my $srv (sort keys %port) {
    my $p = $port{$srv};
    my $us = defined $p;

    for my $loc ('/id/', '/noid/') {
        my $want = $loc eq '/id/' ? \%want_acc : {};

        for my $h (@NAMES) {
            # X-Environment-Id is an input: a data token naming its own
            # environment passes, checked below for other values
            my $v = $h eq 'X-Environment-Id' ? 'env_dev' : 'forged-value';

            for my $sp (spellings($h, $us)) {
                my $name = "$srv, $loc, forged '$sp'";
                $r = req("${loc}a?integrated_account_id=acc_dev",
                         [ @$auth, $sp => $v ], port => $p);
                is($r->{status}, 200, "$name: 200");
                $u = upstream($name);
                identity_is($u, $want, $name) if $u;
            }

            next if $h eq 'X-Environment-Id';

            # twice, in two spellings
            my @sp = spellings($h, $us);
            my $name = "$srv, $loc, forged '$h' twice";
            $r = req("${loc}a?integrated_account_id=acc_dev",
                     [ @$auth, $sp[0] => 'one', $sp[-1] => 'two' ],
                     port => $p);
            is($r->{status}, 200, "$name: 200");
            $u = upstream($name);
            identity_is($u, $want, $name) if $u;

            $name = "$srv, $loc, forged '$h' twice, no account";
            $r = req("${loc}a", [ @$auth, $sp[1] => 'one', $sp[1] => 'two' ],
                     port => $p);
            is($r->{status}, 200, "$name: 200");
            $u = upstream($name);
            my %w = %$want;
            delete @w{qw(X-Integrated-Account-Id X-Tenant-Id)};
            identity_is($u, \%w, $name) if $u;
        }

        # X-Environment-Id naming another environment: a data token is
        # refused (403), given twice the request is ambiguous (400)
        for my $sp (spellings('X-Environment-Id', $us)) {
            my $name = "$srv, $loc, '$sp: env_prod' with a dev token";
            $r = req("${loc}a", [ @$auth, $sp => 'env_prod' ], port => $p);
            refused($r, 403, 'environment_mismatch', $name);
            nothing_upstream($name);
        }

        my @sp = spellings('X-Environment-Id', $us);
        my $name = "$srv, $loc, X-Environment-Id twice";
        $r = req("${loc}a", [ @$auth, $sp[0] => 'env_dev',
                              $sp[-1] => 'env_dev' ], port => $p);
        refused($r, 400, 'invalid_request', $name);
        nothing_upstream($name);
    }
}

# the gateway's values are not in the refusal either: a refused request
# gets no identity headers upstream because nothing goes upstream
$r = req('/id/a?integrated_account_id=acc_prod', $auth);
refused($r, 404, 'integrated_account_not_found', 'dev token, prod account');
nothing_upstream('dev token, prod account');

$t->stop;
done_testing;
