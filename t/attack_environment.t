#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# environment_id where the gateway does not read it.
#
# The gateway checks the environment a request names in the query
# (environment_id, a consumed argument: given twice or in another spelling
# it is 400) and in X-Environment-Id.  A form body is read on every gated
# location, but only for integrated_account_id and credentials: a form
# field environment_id=<another environment> is neither checked nor
# refused, and it is what PHP's $_REQUEST (POST over GET) and Go's
# r.FormValue (the body before the query) return.  The spellings the
# gateway misses in the query (qs's "[environment_id]", PHP's built-in
# server's "??environment_id") name it too.
#
# A data token may only act in its own environment (403 otherwise): the
# backend must never read another environment from a request that passed.
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

my $TD = 'egwtok_dev_' . substr(sha256_hex('attack-env-dev'), 0, 32);

$t->seed_gateway(envs => [qw(dev prod)], tokens => { dev => $TD });
for my $b (@B) {
    $t->account("acc_dev_$b", 'env_dev', integration => $b);
    $t->put("integration:env_dev:$b", {
        upstream => "http://127.0.0.1:$bport->{$b}",
        resources => { contacts => {
            create => { method => 'POST', path => '/crm/v3/objects/contacts' },
        } } });
}

# every environment_id the backend read in the query and the body
sub environments {
    my ($r) = @_;
    $r = EnvGwBackends::dechunk($r);
    my $j = $r->{json};
    return (undef) unless ref $j eq 'HASH' && $j->{backend};
    return map { EnvGwBackends::flat(ref $_ eq 'HASH'
                                     ? $_->{environment_id} : undef) }
           $j->{query}, $j->{form}, $j->{body};
}

my $F = [ 'Content-Type' => 'application/x-www-form-urlencoded' ];

for my $b (@B) {
    my $D = "acc_dev_$b";

    # held: the query and the header are checked
    my $r = $t->http('GET', "/q/x?environment_id=env_prod&integrated_account_id=$D",
                     [ Authorization => "Bearer $TD" ], undef,
                     port => $gw{$b});
    is($r->{status}, 403, "held: environment_id=env_prod in the query: 403 "
                          . "($b)");

    $r = $t->http('POST', "/q/x?environment_id=env_dev&integrated_account_id=$D",
                  [ Authorization => "Bearer $TD", @$F ],
                  'environment_id=env_dev', port => $gw{$b});
    is($r->{status}, 200, "control: the own environment in query and form "
                          . "passes ($b)");

    for my $c (
        [ 'a form field beside the checked query argument', 'POST',
          "/q/x?environment_id=env_dev&integrated_account_id=$D", $F,
          'environment_id=env_prod' ],
        [ 'a form field alone', 'POST', "/q/x?integrated_account_id=$D", $F,
          'environment_id=env_prod' ],
        [ 'a form field on a route', 'POST',
          "/proxy/contacts?integrated_account_id=$D", $F,
          'environment_id=env_prod' ],
        [ 'a bracketed name in the query', 'GET',
          "/q/x?integrated_account_id=$D&[environment_id]=env_prod", [],
          undef ],
        [ "a '?' before the name", 'GET',
          "/q/x??environment_id=env_prod&integrated_account_id=$D", [],
          undef ],
    ) {
        my ($name, $m, $path, $h, $body) = @$c;
        $r = $t->http($m, $path, [ Authorization => "Bearer $TD", @$h ],
                      $body, port => $gw{$b});
        my @e = grep { defined && $_ ne 'env_dev' } environments($r);
        ok(!@e || $r->{status} != 200,
           "$name: the backend reads no other environment ($b)")
            or diag("  status $r->{status}, $b read environment_id = @e");
    }
}

$t->stop;
done_testing;
