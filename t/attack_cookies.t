#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# Cookie names a backend reads as a credential cookie and the gateway does
# not.  The gateway counts (and drops upstream) cookies whose name equals
# the credential's in any letter case after leading blanks; backends also
# read:
#
#   PHP ($_COOKIE)       '.', ' ' and an unmatched '[' as '_':
#                        "access.token", "access token", "access[token";
#   Express (cookie),    blanks before '=': "access_token =",
#   Python (http.cookies) "access_token\t=", "session =".
#
# So with "env_gateway_token $cookie_session", "session=<development
# token>; session =<production token>" passes on the development token,
# the gateway drops the cookie it read, and Express and Python receive the
# production token as their session cookie; and beside an Authorization
# header a second credential reaches the backend as access_token.  The
# contract: two cookies of the credential's name are 400, and no
# credential, in any spelling, is sent upstream.
#
# And the reverse: with "env_gateway_token $cookie_access_token" the one
# cookie is counted as the configured credential and again as a cookie
# named like access_token, so every request is refused as carrying two
# credentials.
#
# Through real nginx, Redis and the echo backends of t/backends.

use strict;
use warnings;

use lib 't/lib';
use EnvGwTest;
use EnvGwBackends;
use Test::More;
use Digest::SHA qw(sha256_hex);

my $t = EnvGwTest->new;
$t->start_redis;

my ($bport, $skip) = EnvGwBackends::start($t, @EnvGwBackends::ALL);
my @B = grep { $bport->{$_} } @EnvGwBackends::ALL;

for my $b (sort keys %$skip) {
    diag("backend $b skipped: $skip->{$b}");
}

plan skip_all => 'no echo backend can run' unless @B;

my (%gw, $http);
for my $b (@B) {
    my $p = $gw{$b} = EnvGwTest::free_port();
    $http .= "    server {\n        listen 127.0.0.1:$p;\n"
           . EnvGwBackends::locations($bport->{$b}) . <<"L";
        location /ck/ {
            env_gateway on;
            env_gateway_token \$cookie_session;
            env_gateway_account \$arg_integrated_account_id;
            proxy_pass http://127.0.0.1:$bport->{$b};
        }
        location /ckat/ {
            env_gateway on;
            env_gateway_token \$cookie_access_token;
            env_gateway_account \$arg_integrated_account_id;
            proxy_pass http://127.0.0.1:$bport->{$b};
        }
    }
L
}

$t->start_nginx(<<"CONF");
    env_gateway_redis 127.0.0.1:%%REDIS%% connect_timeout=500ms read_timeout=2s;
    server {
        listen 127.0.0.1:%%PORT%%;
        location / { return 204; }
    }
$http
CONF

EnvGwTest::wait_port($gw{$_}) or die "gateway port for $_" for @B;

my $TD = 'egwtok_dev_' . substr(sha256_hex('attack-cookie-dev'), 0, 32);
my $TP = 'egwtok_prod_' . substr(sha256_hex('attack-cookie-prod'), 0, 32);

$t->seed_gateway(envs => [qw(dev prod)], tokens => { dev => $TD, prod => $TP });

for my $b (@B) {
    $t->account("acc_dev_$b", 'env_dev', integration => $b);
}

sub fill {
    my ($s, $b) = @_;
    my %r = (D => "acc_dev_$b", TD => $TD, TP => $TP);
    $s =~ s/\{(D|TD|TP)\}/$r{$1}/g;
    return $s;
}

# the tokens the backend read in a cookie it names $name
sub cookie_tokens {
    my ($r, $name) = @_;
    $r = EnvGwBackends::dechunk($r);
    my $j = $r->{json};
    return () unless ref $j eq 'HASH' && $j->{backend}
                     && ref $j->{cookies} eq 'HASH';
    return grep { /egwtok_/ } EnvGwBackends::flat($j->{cookies}{$name});
}

sub through {
    my ($b, $name, $path, $h, $cookie_name, %o) = @_;
    my @h = map { fill($_, $b) } @$h;
    my $r = $t->http('GET', fill($path, $b), \@h, undef, port => $gw{$b});
    my @got = cookie_tokens($r, $cookie_name);

    if ($o{control}) {
        is($r->{status}, 200, "$name -> $b: passes")
            or diag($r->{raw});
    }

    ok(!@got, "$name -> $b: the backend reads no credential as cookie "
              . "\"$cookie_name\"")
        or diag("  $b read $cookie_name = @got");
}

my $Q = '/q/x?integrated_account_id={D}';
my $A = [ Authorization => 'Bearer {TD}' ];

for my $b (@B) {
    through($b, 'control: the session cookie', '/ck/x?integrated_account_id={D}',
            [ Cookie => 'session={TD}' ], 'session', control => 1);
    # the configured cookie named access_token is counted twice (as the
    # configured cookie and as a credential-named one): every request 400
    through($b, 'the configured cookie named access_token',
            '/ckat/x?integrated_account_id={D}',
            [ Cookie => 'access_token={TD}' ], 'access_token', control => 1);
    through($b, 'control: Authorization and another cookie', $Q,
            [ @$A, Cookie => 'theme=dark' ], 'access_token', control => 1);

    for my $c ('session={TD}; session ={TP}', 'session={TD}; session\t={TP}',
               'session ={TP}; session={TD}')
    {
        (my $v = $c) =~ s/\\t/\t/g;
        through($b, "the configured cookie twice: '$c'",
                '/ck/x?integrated_account_id={D}', [ Cookie => $v ],
                'session');
    }

    for my $c ('access.token={TP}', 'access token={TP}', 'access[token={TP}',
               'access_token ={TP}', 'access_token\t={TP}')
    {
        (my $v = $c) =~ s/\\t/\t/g;
        through($b, "Authorization and cookie '$c'", $Q,
                [ @$A, Cookie => $v ], 'access_token');
    }

    through($b, "the configured argument and cookie 'api.key'",
            '/tok/x?api_key={TD}&integrated_account_id={D}',
            [ Cookie => 'api.key={TP}' ], 'api_key');
    through($b, "the configured argument and cookie 'api_key ='",
            '/tok/x?api_key={TD}&integrated_account_id={D}',
            [ Cookie => 'api_key ={TP}' ], 'api_key');
}

$t->stop;
done_testing;
