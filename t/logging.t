#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# Refusal logging: one error-log line per refusal, at env_gateway_log_level,
# with the status, the reason code, the token_id (never the token), the
# environment and the account; and the log_format lines documented in
# docs/logging.md, used verbatim, log the identity without the credential.

use strict;
use warnings;

use lib 't/lib';
use EnvGwTest;
use JSON::PP;
use Test::More;

my $t = EnvGwTest->new;
my $dir = $t->dir;

# the documented log_format blocks, verbatim
my %fmt;
{
    open my $fh, '<', "$EnvGwTest::TOP/docs/logging.md"
        or BAIL_OUT("docs/logging.md: $!");
    my $md = do { local $/; <$fh> };
    while ($md =~ /^(log_format\s+(\w+)\b.*?;)\s*$/gms) {
        $fmt{$2} = $1;
    }
}
ok($fmt{envgw_access}, 'docs/logging.md documents log_format envgw_access');
ok($fmt{envgw_json}, 'docs/logging.md documents log_format envgw_json');
my $formats = join "\n", map { "    $_" } values %fmt;

$t->start_redis;
$t->env('env_dev', 'team_a', 'development');
$t->env('env_prod', 'team_a', 'production');
my %tok = (
    dev => $t->token('egw_dev_secret_1', token_id => 'tok_dev',
                     environment_id => 'env_dev', environment => 'development',
                     team_id => 'team_a'),
    revoked => $t->token('egw_revoked_secret_2', token_id => 'tok_revoked',
                         environment_id => 'env_prod',
                         environment => 'production', team_id => 'team_a',
                         revoked => JSON::PP::true),
);
$t->account('acc_prod', 'env_prod');
$t->account('acc_dev', 'env_dev');
my $unknown = 'egw_unknown_secret_3';

$t->start_nginx(<<"H");
    env_gateway_redis 127.0.0.1:%%REDIS%%;
    env_gateway_cache zone=envgw:1m ttl=30s;
$formats
    server {
        listen 127.0.0.1:%%PORT%%;
        access_log %%DIR%%/access.log envgw_access;
        access_log %%DIR%%/access.json envgw_json;
        env_gateway_account \$arg_integrated_account_id;

        location /default/ {
            env_gateway on;
            proxy_pass http://127.0.0.1:%%BACKEND%%;
        }
        location /notice/ {
            env_gateway on;
            env_gateway_log_level notice;
            proxy_pass http://127.0.0.1:%%BACKEND%%;
        }
        location /warn/ {
            env_gateway on;
            env_gateway_log_level warn;
            env_gateway_token \$arg_api_key;
            proxy_pass http://127.0.0.1:%%BACKEND%%;
        }
        location /error/ {
            env_gateway on;
            env_gateway_log_level error;
            proxy_pass http://127.0.0.1:%%BACKEND%%;
        }
        # refusals at info are filtered out by this location's error_log
        location /quiet/ {
            env_gateway on;
            error_log %%DIR%%/quiet.log notice;
            proxy_pass http://127.0.0.1:%%BACKEND%%;
        }
        location /loud/ {
            env_gateway on;
            env_gateway_log_level warn;
            error_log %%DIR%%/loud.log notice;
            proxy_pass http://127.0.0.1:%%BACKEND%%;
        }
    }
H

my %cases;    # marker => [level, status, code, token_id, env, account]

sub refuse {
    my ($marker, $r, $level, $status, $code, $token_id, $env, $account,
        $todo) = @_;
    EnvGwTest::refused($r, $status, $code, $marker);
    $cases{$marker} = [$level, $status, $code, $token_id, $env, $account,
                       $todo];
}

refuse('r1', $t->get('/default/r1'), 'info', 401, 'missing_token', '', '', '');
refuse('r2', $t->get('/default/r2', $unknown), 'info', 401, 'invalid_token',
       '', '', '');
refuse('r3', $t->get('/warn/r3?api_key=' . $tok{revoked}), 'warn', 401,
       'invalid_token', 'tok_revoked', 'env_prod', '');
refuse('r4', $t->get('/notice/r4?integrated_account_id=acc_prod', $tok{dev}),
       'notice', 404, 'integrated_account_not_found', 'tok_dev', 'env_dev',
       'acc_prod');
refuse('r5', $t->get('/error/r5', $tok{revoked}), 'error', 401,
       'invalid_token', 'tok_revoked', 'env_prod', '');
refuse('r6', $t->get('/warn/r6?a=1&api_key=' . $unknown . '&b=2'), 'warn',
       401, 'invalid_token', '', '', '');
refuse('r7', $t->get('/loud/r7', $tok{revoked}), 'warn', 401,
       'invalid_token', 'tok_revoked', 'env_prod', '');

my $r = $t->get('/quiet/r8', $tok{revoked});
is($r->{status}, 401, 'r8: refused in a location whose error_log is notice');
$r = $t->get('/default/ok1?integrated_account_id=acc_dev', $tok{dev});
is($r->{status}, 200, 'ok1: allowed');
$r = $t->get('/default/ok2?integrated_account_id=acc_dev', $tok{dev});
is($r->{status}, 200, 'ok2: allowed again (cache HIT)');

$t->stop;

my $err = $t->slurp('error.log') . $t->slurp('loud.log');
my @refused = grep { /env_gateway: refused/ } split /\n/, $err;
my $REFUSAL = qr/\[(\w+)\] \d+#\d+: \*\d+ env_gateway: refused (\d{3}) (\w+) token_id="([^"]*)" environment_id="([^"]*)" account="([^"]*)", client: /;

for my $marker (sort keys %cases) {
    my ($level, $status, $code, $token_id, $env, $account, $todo) =
        @{ $cases{$marker} };
    my @lines = grep { m{ /\w+/$marker[? ]} } @refused;
    is(scalar @lines, 1, "$marker: exactly one refusal line")
        or diag(join "\n", @lines);
    my @f = ($lines[0] // '') =~ $REFUSAL;
    is_deeply([ @f[0 .. 3, 5] ], [$level, $status, $code, $token_id, $account],
              "$marker: [$level] $status $code token_id=\"$token_id\" "
              . "account=\"$account\"")
        or diag($lines[0]);
    local $TODO = $todo;
    is($f[4], $env, "$marker: environment_id=\"$env\"")
        or diag($lines[0]);
}

ok(!grep({ m{/r8} } split /\n/, $err . $t->slurp('quiet.log')),
   'r8: an info refusal does not pass an error_log at notice');
ok(!grep({ /ok[12]/ } @refused), 'allowed requests log no refusal');
is(scalar @refused, scalar keys %cases, 'one refusal line per refusal, no more');

# the token never reaches a log, not even through request: "..."
my $all = join '', map { $t->slurp($_) }
    qw(error.log loud.log quiet.log access.log access.json);
for my $raw (values %tok, $unknown) {
    unlike($all, qr/\Q$raw\E/, "no log contains the token $raw");
}
like($err, qr{request: "GET /warn/r6\?a=1&api_key=\[REDACTED\]&b=2 HTTP/1\.1"},
     'a token query argument is [REDACTED] in the request: context');

# --- the documented access log formats ----------------------------------------

my %acc = map { m{"GET /\w+/(\w+)} ? ($1 => $_) : () }
          split /\n/, $t->slurp('access.log');
like($acc{ok1} // '', qr{"GET /default/ok1\?integrated_account_id=acc_dev HTTP/1\.1" 200 \d+ [\d.]+ token_id=tok_dev env=development account=acc_dev method=- cache=MISS$},
     'envgw_access: an allowed request');
like($acc{ok2} // '', qr{ 200 .* cache=HIT$}, 'envgw_access: cache HIT');
like($acc{r3} // '', qr{"GET /warn/r3\?api_key=\[REDACTED\] HTTP/1\.1" 401 \d+ [\d.]+ token_id=- env=- account=- method=- cache=\w+$},
     'envgw_access: a refused request, token redacted, no identity');

my %js;
for my $line (split /\n/, $t->slurp('access.json')) {
    my $j = eval { decode_json($line) };
    ok($j, 'envgw_json: a valid JSON line') or diag($line) or next;
    $js{$1} = $j if $j->{request} =~ m{^GET /\w+/(\w+)};
}
is_deeply([ @{ $js{ok1} || {} }{qw(status token_id environment_id
                                   environment account)} ],
          [200, 'tok_dev', 'env_dev', 'development', 'acc_dev'],
          'envgw_json: the allowed request');
is($js{r6}{request}, 'GET /warn/r6?a=1&api_key=[REDACTED]&b=2 HTTP/1.1',
   'envgw_json: the token argument redacted');
is($js{r6}{token_id}, '', 'envgw_json: no token_id on a refusal');

done_testing;
