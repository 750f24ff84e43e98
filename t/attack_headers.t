#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# Identity and credential header names that PHP reads as the real ones.
#
# With nginx's "ignore_invalid_headers off" (a stock directive; some
# deployments set it to pass such headers on), a header name with a '.'
# reaches the upstream.  PHP (and any CGI/FastCGI gateway building
# $_SERVER) turns '.' into '_', as it does '-': "X-Integrated-Account.Id"
# is HTTP_X_INTEGRATED_ACCOUNT_ID, the header the backend is told to trust.
# The gateway hides client headers named like identity headers comparing
# '-' and '_' only, so when it sets no X-Integrated-Account-Id (the
# request names no account) or X-Tenant-Id, the client's value is what PHP
# reads; "X-Api.Key" is read as the credential header X-Api-Key.
#
# Through real nginx, Redis and the echo backends of t/backends (the
# oracle is t/differential.t's, plus the tenant header and the credential
# header by name).

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
           . "        ignore_invalid_headers off;\n"
           . EnvGwBackends::locations($bport->{$b}) . "    }\n";
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

my $TD = 'egwtok_dev_' . substr(sha256_hex('attack-hdr-dev'), 0, 32);
my $TP = 'egwtok_prod_' . substr(sha256_hex('attack-hdr-prod'), 0, 32);

$t->seed_gateway(envs => [qw(dev prod)], tokens => { dev => $TD, prod => $TP });

my (%dev, %prod);
for my $b (@B) {
    $t->account("acc_dev_$b", 'env_dev', integration => $b,
                tenant_id => 'acme');
    $t->account("acc_prod_$b", 'env_prod', integration => $b,
                tenant_id => 'acme');
    $dev{"acc_dev_$b"} = 1;
    $prod{"acc_prod_$b"} = 1;
}

my %oracle = (dev => \%dev, prod => \%prod, env => 'env_dev',
              tokens => [ $TD, $TP ], token_names => [ '{TD}', '{TP}' ]);

sub fill {
    my ($s, $b) = @_;
    my %r = (D => "acc_dev_$b", P => "acc_prod_$b", TD => $TD, TP => $TP);
    $s =~ s/\{(D|P|TD|TP)\}/$r{$1}/g;
    return $s;
}

# the values backend $b read for header $name (compared as PHP, Express,
# Python and Go name headers: any case, '_' for '-', PHP's HTTP_ prefix)
sub header_values {
    my ($b, $r, $name) = @_;
    $r = EnvGwBackends::dechunk($r);
    my $j = $r->{json};
    return () unless ref $j eq 'HASH' && ref $j->{headers} eq 'HASH';
    my $h = $j->{headers};
    return map { EnvGwBackends::flat($h->{$_}) }
           grep { EnvGwBackends::hkey($b, $_) eq lc $name } keys %$h;
}

for my $b (@B) {
    my $r = $t->http('GET', fill('/q/x?integrated_account_id={D}', $b),
                     [ Authorization => "Bearer $TD" ], undef,
                     port => $gw{$b});
    my ($kind) = EnvGwBackends::judge($b, $r, %oracle);
    is($kind, 'pass', "control: a clean request passes -> $b");

    # the production account in a look-alike of the trusted header
    for my $h ('X-Integrated-Account.Id', 'X.Integrated.Account.Id') {
        $r = $t->http('GET', '/q/x', [ Authorization => "Bearer $TD",
                                       $h => fill('{P}', $b) ], undef,
                      port => $gw{$b});
        my ($k, $d) = EnvGwBackends::judge($b, $r, %oracle);
        ok($k ne 'violation' && $k ne 'error',
           "'$h: <production account>', no account named -> $b")
            or diag('  ' . (ref $d ? join('; ', @$d) : $d));
    }

    # a tenant the gateway did not check
    $r = $t->http('GET', '/q/x', [ Authorization => "Bearer $TD",
                                   'X-Tenant.Id' => 'forged' ], undef,
                  port => $gw{$b});
    my @v = header_values($b, $r, 'x-tenant-id');
    ok(!grep({ $_ eq 'forged' } @v),
       "'X-Tenant.Id: forged' is not read as X-Tenant-Id -> $b")
        or diag("  $b read X-Tenant-Id = @v");

    # a second credential read as the configured credential header
    $r = $t->http('GET', fill('/key/x?integrated_account_id={D}', $b),
                  [ 'X-Api-Key' => $TD, 'X-Api.Key' => $TP ], undef,
                  port => $gw{$b});
    @v = grep { /egwtok_/ } header_values($b, $r, 'x-api-key');
    ok(!@v, "'X-Api.Key: <another token>' is not read as X-Api-Key -> $b")
        or diag("  $b read X-Api-Key = @v");
}

$t->stop;
done_testing;
