#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# What the gateway's own log lines carry.
#
#   1. A request whose token appears a second time in the query
#      ("?note=<token>" beside "Authorization: Bearer <token>") is refused
#      as "The credential appears more than once", and the refusal line the
#      module writes ends with nginx's request: "GET /q/x?...note=<token>"
#      -- the raw token in error.log, though the gateway knew those bytes
#      were the credential.  $env_gateway_redacted_request keeps it too.
#      The contract: raw tokens never appear in a log line the module
#      writes, and the redacted variable replaces every credential.
#   2. The refusal line's account="..." is the value the request named, as
#      sent: quotes and control bytes (a header account source lets ESC
#      and friends through) are written raw, so a client forges fields
#      (token_id="...") or terminal escapes in error.log.  The contract:
#      request-derived values in log lines have control bytes and quotes
#      escaped.
#
# Through real nginx and Redis.

use strict;
use warnings;

use lib 't/lib';
use EnvGwTest;
use Test::More;
use Digest::SHA qw(sha256_hex);
use Time::HiRes qw(sleep);

my $t = EnvGwTest->new;
$t->start_redis;

my $dir = $t->dir;

$t->start_nginx(<<"CONF");
    env_gateway_redis 127.0.0.1:%%REDIS%% connect_timeout=500ms read_timeout=2s;

    log_format redacted '\$env_gateway_redacted_request';

    server {
        listen 127.0.0.1:%%PORT%%;
        access_log $dir/access.log redacted;

        location /q/ {
            env_gateway on;
            env_gateway_account \$arg_integrated_account_id;
            proxy_pass http://127.0.0.1:%%BACKEND%%;
        }
        location /h/ {
            env_gateway on;
            env_gateway_account \$http_x_account;
            proxy_pass http://127.0.0.1:%%BACKEND%%;
        }
    }
CONF

my $TD = 'egwtok_dev_' . substr(sha256_hex('attack-logs-dev'), 0, 32);

$t->seed_gateway(envs => [qw(dev)], tokens => { dev => $TD });
$t->account('acc_dev', 'env_dev');

my $A = [ Authorization => "Bearer $TD" ];

# --- 1. a known copy of the token -------------------------------------------

my $r = $t->http('GET', "/q/x?integrated_account_id=acc_dev&note=$TD", $A);
is($r->{status}, 400, 'a second copy of the token in the query: 400');

$r = $t->http('GET', "/q/x?note=$TD", $A);
is($r->{status}, 400, 'the copy alone beside Authorization: 400');

sleep 0.2;

my @lines = grep { /env_gateway: refused/ } split /\n/, $t->slurp('error.log');
is(scalar @lines, 2, 'two refusal lines');
ok(!grep({ index($_, $TD) >= 0 } @lines),
   'no refusal line carries the token')
    or diag(join "\n", grep { index($_, $TD) >= 0 } @lines);

my @access = split /\n/, $t->slurp('access.log');
is(scalar @access, 2, 'two access log lines');
ok(!grep({ index($_, $TD) >= 0 } @access),
   '$env_gateway_redacted_request does not carry the token')
    or diag(join "\n", @access);

# --- 2. quotes and control bytes of the named account -----------------------

my $n = () = $t->slurp('error.log') =~ /env_gateway: refused/g;

$r = $t->http('GET', '/h/x', [ @$A, 'X-Account' =>
                               "a\" token_id=\"tok_forged\x1b[31m" ]);
is($r->{status}, 400, 'an account with a quote and ESC: 400');

$r = $t->http('GET', '/q/x?integrated_account_id=a"b', $A);
# ids become Redis keys that log lines name: a quote is refused outright
is($r->{status}, 400, 'an account with a quote in the query: 400');

sleep 0.2;

@lines = grep { /env_gateway: refused/ } split /\n/, $t->slurp('error.log');
splice @lines, 0, $n;
is(scalar @lines, 2, 'two more refusal lines');

for my $l (@lines) {
    my ($acc) = $l =~ /account="(.*)", client:/;
    ok(defined $acc, 'the line names the account') or next;
    (my $show = $acc) =~ s/([^\x20-\x7e])/sprintf('\\x%02x', ord $1)/ge;
    ok($acc !~ /[\x00-\x1f\x7f]/, "account=\"$show\": no raw control byte");
    ok($acc !~ /(?<!\\)"/, "account=\"$show\": no unescaped quote");
    unlike($l, qr/token_id="tok_forged/, 'no forged token_id field');
}

$t->stop;
done_testing;
