#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# The auth_request recipe of docs/directives.md (env_gateway_authorize),
# exactly as documented:
#
#   location /api/ {
#       auth_request /_env_gateway;
#       auth_request_set $envgw_environment $env_gateway_environment_id;
#       auth_request_set $envgw_account $env_gateway_account_id;
#       proxy_set_header X-Environment-Id $envgw_environment;
#       proxy_set_header X-Integrated-Account-Id $envgw_account;
#       proxy_set_header Authorization "";
#       proxy_pass http://backend;
#   }
#   location = /_env_gateway {
#       internal;
#       env_gateway on;
#       env_gateway_account $arg_integrated_account_id;
#       env_gateway_authorize;
#   }
#
# The subrequest auth_request makes has no query of its own: the gateway
# reads the main request's query (and headers) too, so the main request's
# integrated_account_id is checked; a form body it cannot read first is
# refused; client headers named like identity headers (the '_' spelling
# under underscores_in_headers on) are hidden in the main request's
# headers, which are the ones that go upstream.  A refusal other than
# 401/403 reaches the client as auth_request's 500.
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
    for my $srv (qw(std us)) {
        my $p = $gw{$b}{$srv} = EnvGwTest::free_port();
        my $us = $srv eq 'us' ? 'underscores_in_headers on;' : '';
        $http .= <<"S";
    server {
        listen 127.0.0.1:$p;
        $us
        location /api/ {
            auth_request /_env_gateway;
            auth_request_set \$envgw_environment \$env_gateway_environment_id;
            auth_request_set \$envgw_account \$env_gateway_account_id;
            proxy_set_header X-Environment-Id \$envgw_environment;
            proxy_set_header X-Integrated-Account-Id \$envgw_account;
            proxy_set_header Authorization "";
            proxy_pass http://127.0.0.1:$bport->{$b};
        }
        location = /_env_gateway {
            internal;
            env_gateway on;
            env_gateway_account \$arg_integrated_account_id;
            env_gateway_authorize;
        }
    }
S
    }
}

$t->start_nginx(<<"CONF");
    env_gateway_redis 127.0.0.1:%%REDIS%% connect_timeout=500ms read_timeout=2s;
    server {
        listen 127.0.0.1:%%PORT%%;
        location / { return 204; }
    }
$http
CONF

for my $b (@B) {
    EnvGwTest::wait_port($gw{$b}{$_}) or die "gateway port for $b"
        for qw(std us);
}

my $TD = 'egwtok_dev_' . substr(sha256_hex('attack-sr-dev'), 0, 32);
my $TP = 'egwtok_prod_' . substr(sha256_hex('attack-sr-prod'), 0, 32);

$t->seed_gateway(envs => [qw(dev prod)], tokens => { dev => $TD, prod => $TP });

my (%dev, %prod);
for my $b (@B) {
    $t->account("acc_dev_$b", 'env_dev', integration => $b);
    $t->account("acc_prod_$b", 'env_prod', integration => $b);
    $dev{"acc_dev_$b"} = 1;
    $prod{"acc_prod_$b"} = 1;
}

my %oracle = (dev => \%dev, prod => \%prod, env => 'env_dev',
              tokens => [ $TD, $TP ], token_names => [ '{TD}', '{TP}' ]);

sub fill {
    my ($s, $b) = @_;
    return $s unless defined $s;
    my %r = (D => "acc_dev_$b", P => "acc_prod_$b");
    $s =~ s/\{(D|P)\}/$r{$1}/g;
    return $s;
}

my $A = [ Authorization => "Bearer $TD" ];
my $F = [ 'Content-Type' => 'application/x-www-form-urlencoded' ];

for my $b (@B) {
    my $port = $gw{$b}{std};

    # the recipe works for what it sees: no token is 401, a bad one 401
    my $r = $t->http('GET', fill('/api/x?integrated_account_id={D}', $b), [],
                     undef, port => $port);
    is($r->{status}, 401, "control: no token -> 401 ($b)");

    # the account the client named is the one the backend is told of
    $r = $t->http('GET', fill('/api/x?integrated_account_id={D}', $b), $A,
                  undef, port => $port);
    my ($kind, $detail) = EnvGwBackends::judge($b, $r, %oracle);
    is($kind, 'pass', "a development account passes ($b)")
        or diag("  $kind: " . (ref $detail ? "@$detail" : $detail));
    # judge() has already decoded the chunked body into $r->{json}
    is($r->{json} && $r->{json}{account_header}, "acc_dev_$b",
       "... and the backend gets it as X-Integrated-Account-Id, checked "
       . "($b)");

    # an account that does not exist is not let through
    $r = $t->http('GET', '/api/x?integrated_account_id=acc_nonexistent', $A,
                  undef, port => $port);
    isnt($r->{status}, 200, "an account that does not exist is refused ($b)")
        or diag(substr($r->{raw}, 0, 300));

    for my $c (
        [ 'the production account in the query', 'GET',
          '/api/x?integrated_account_id={P}', [], undef, 'std' ],
        [ 'the production account in a form body', 'POST', '/api/x', $F,
          'integrated_account_id={P}', 'std' ],
        [ "the production account in a header spelled with '_'", 'GET',
          '/api/x', [ 'X_Integrated_Account_Id' => '{P}' ], undef, 'us' ],
    ) {
        my ($name, $m, $path, $h, $body, $srv) = @$c;
        $r = $t->http($m, fill($path, $b),
                      [ @$A, map { fill($_, $b) } @$h ], fill($body, $b),
                      port => $gw{$b}{$srv});
        ($kind, $detail) = EnvGwBackends::judge($b, $r, %oracle);
        # auth_request answers 500 for a subrequest status other than
        # 2xx, 401 and 403: a refusal all the same, nothing upstream
        ($kind, $detail) = ('refused', 'auth_request 500')
            if $kind eq 'error' && $r->{status} == 500
               && $r->{raw} !~ /"backend"/;
        ok($kind ne 'violation' && $kind ne 'error', "$name ($b)")
            or diag("  $kind: " . (ref $detail ? "@$detail" : $detail));
    }
}

$t->stop;
done_testing;
