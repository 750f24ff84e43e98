#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# On a route location the gateway chooses the verb the upstream is called
# with (the method record's declared verb), and the environment decides
# which methods exist: production may define contacts.create (POST) and not
# contacts.delete.  Method-override signals pass through untouched:
# "X-HTTP-Method-Override: DELETE" (honoured on POST by Symfony and Laravel,
# Rack::MethodOverride, Express's method-override, gorilla/handlers, Google
# APIs), "X-HTTP-Method", "X-Method-Override", and a "_method" query
# argument or form field (Rails, Laravel, Symfony, Spring).  A backend or
# third-party upstream that honours them performs a verb, and so a method,
# the gateway never checked in that environment.
#
# The correct behaviour on a route location: no override signal reaches the
# upstream; the gateway refuses it (400 invalid_request).  Through real nginx, Redis and the echo
# backends of t/backends, which show the headers, query and form they got.

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

my $TP = 'egwtok_prod_' . substr(sha256_hex('attack-override-prod'), 0, 32);

$t->seed_gateway(envs => [qw(prod)], tokens => { prod => $TP });

# production: contacts can be listed and created, not deleted
for my $b (@B) {
    $t->account("acc_prod_$b", 'env_prod', integration => $b);
    $t->put("integration:env_prod:$b", {
        upstream => "http://127.0.0.1:$bport->{$b}",
        resources => { contacts => {
            list   => { method => 'GET',  path => '/crm/v3/objects/contacts' },
            create => { method => 'POST', path => '/crm/v3/objects/contacts' },
        } } });
}

# override signals the backend got: header names in any spelling, _method
# in the query or the form
sub overrides {
    my ($b, $r) = @_;
    $r = EnvGwBackends::dechunk($r);
    my $j = $r->{json};
    return () unless ref $j eq 'HASH' && $j->{backend};
    my @got;
    for my $k (keys %{ $j->{headers} || {} }) {
        my $hk = EnvGwBackends::hkey($b, $k);
        push @got, "header $k" if $hk =~ /^x-(http-method(-override)?|method-override)$/;
    }
    for my $where (qw(query form body)) {
        my $v = $j->{$where};
        push @got, "$where _method" if ref $v eq 'HASH' && exists $v->{_method};
    }
    return @got;
}

my $A = [ Authorization => "Bearer $TP" ];
my $F = [ 'Content-Type' => 'application/x-www-form-urlencoded' ];

for my $b (@B) {
    my $Q = "?integrated_account_id=acc_prod_$b";

    my $r = $t->http('DELETE', "/proxy/contacts/42$Q", $A, undef,
                     port => $gw{$b});
    is($r->{status}, 404, "held: DELETE is not defined in production ($b)");

    $r = $t->http('POST', "/proxy/contacts$Q", $A, '', port => $gw{$b});
    is($r->{status}, 200, "control: POST creates ($b)");

    for my $c (
        [ 'X-HTTP-Method-Override: DELETE', [ 'X-HTTP-Method-Override' =>
                                              'DELETE' ], $Q, undef ],
        [ 'X-HTTP-Method: DELETE', [ 'X-HTTP-Method' => 'DELETE' ], $Q,
          undef ],
        [ 'X-Method-Override: DELETE', [ 'X-Method-Override' => 'DELETE' ],
          $Q, undef ],
        [ '_method=DELETE in the query', [], "$Q&_method=DELETE", undef ],
        [ '_method=DELETE in a form body', $F, $Q, '_method=DELETE' ],
    ) {
        my ($name, $h, $q, $body) = @$c;
        $r = $t->http('POST', "/proxy/contacts$q", [ @$A, @$h ],
                      $body // '', port => $gw{$b});
        my @got = $r->{status} == 200 ? overrides($b, $r) : ();
        ok(!@got, "POST create with $name: no override reaches the "
                  . "upstream ($b)")
            or diag("  $b got: @got");
        # what the gateway does: it refuses the second verb
        is($r->{status}, 400, "POST create with $name: 400 ($b)");
        is($r->{json}{error}, 'invalid_request',
           "POST create with $name: invalid_request ($b)");
        like($r->{json}{message} // '', qr/HTTP method a second time/,
             "POST create with $name: the message says why ($b)");
    }
}

$t->stop;
done_testing;
