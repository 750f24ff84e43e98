#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# The credential's own bytes a second time, where the gateway does not look.
#
# The gateway refuses a request whose token appears again in the query or
# in another header (ngx_env_gateway_token_elsewhere(): a byte search of
# r->args and the header values), so that no copy of the credential
# reaches the backend.  It does not search:
#
#   - the path: "GET /q/<token>" with "Authorization: Bearer <token>";
#   - a percent-encoded copy: "?note=%65gwtok..." (PHP, Express, Python and
#     Go all decode it to the token), or in a cookie value (PHP and
#     Express decode cookie values);
#   - a form body field under any name other than access_token.
#
# In each case the token the gateway checked reaches the backend.  Through
# real nginx, Redis and the echo backends of t/backends (the oracle is
# t/differential.t's: a refusal, or no credential in what the backend
# read).

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

my $TD = 'egwtok_dev_' . substr(sha256_hex('attack-copy-dev'), 0, 32);
(my $TDE = $TD) =~ s/^e/%65/;

$t->seed_gateway(envs => [qw(dev)], tokens => { dev => $TD });

my %dev;
for my $b (@B) {
    $t->account("acc_dev_$b", 'env_dev', integration => $b);
    $dev{"acc_dev_$b"} = 1;
}

my %oracle = (dev => \%dev, prod => {}, env => 'env_dev',
              tokens => [ $TD ], token_names => [ '{TD}' ]);

my $F = [ 'Content-Type' => 'application/x-www-form-urlencoded' ];

# [ name, method, path, headers, body, control ]
my @cases = (
    [ 'control: one credential', 'GET', '/q/x?integrated_account_id={D}', [],
      undef, 1 ],
    [ 'held: a plain copy in the query is refused', 'GET',
      "/q/x?integrated_account_id={D}&note=$TD" ],
    [ 'a copy in the path', 'GET', "/q/$TD?integrated_account_id={D}" ],
    [ 'a copy in the path, another location', 'GET',
      "/req/x/$TD?integrated_account_id={D}" ],
    [ 'a percent-encoded copy in the query', 'GET',
      "/q/x?integrated_account_id={D}&note=$TDE" ],
    [ 'a percent-encoded copy in a cookie value', 'GET',
      '/q/x?integrated_account_id={D}', [ Cookie => "note=$TDE" ] ],
    [ 'a copy in a form field', 'POST', '/q/x?integrated_account_id={D}', $F,
      "note=$TD" ],
    [ 'a copy in a JSON field on a body-field location', 'POST',
      '/body/x?integrated_account_id={D}',
      [ 'Content-Type' => 'application/json' ],
      qq({"integrated_account_id":"{D}","note":"$TD"}) ],
);

for my $c (@cases) {
    my ($name, $m, $path, $h, $body, $control) = @$c;
    for my $b (@B) {
        my $D = "acc_dev_$b";
        (my $p = $path) =~ s/\{D\}/$D/g;
        my $bd = $body;
        $bd =~ s/\{D\}/$D/g if defined $bd;
        my $r = $t->http($m, $p, [ Authorization => "Bearer $TD",
                                   @{ $h || [] } ], $bd, port => $gw{$b});
        my ($kind, $detail) = EnvGwBackends::judge($b, $r, %oracle);
        my $why = ref $detail ? join('; ', @$detail) : ($detail // '');

        if ($control) {
            is($kind, 'pass', "$name -> $b") or diag("  $kind: $why");
        } else {
            ok($kind ne 'violation' && $kind ne 'error', "$name -> $b")
                or diag("  $kind: $why");
        }
    }
}

$t->stop;
done_testing;
