# SPDX-License-Identifier: BSD-2-Clause
use strict; use warnings;
use lib 't/lib';
use Test::More;
use EnvGwTest;
my $t = EnvGwTest->new;
$t->start_redis;
my $tok = $t->token('egw_secret123', environment_id => 'env_dev', environment => 'development', team_id => 'team_a');
$t->start_nginx(<<'EOF2');
    env_gateway_redis 127.0.0.1:%%REDIS%% read_timeout=300ms;
    log_format redacted '$env_gateway_redacted_request $status';
    upstream backend { server 127.0.0.1:%%BACKEND%%; }
    server {
        listen 127.0.0.1:%%PORT%%;
        access_log %%DIR%%/access.log redacted;
        location / {
            env_gateway on;
            env_gateway_token $arg_api_key;
            proxy_pass http://backend;
        }
    }
EOF2
my $r = $t->http('GET', '/x?a=1&api_key=egw_secret123&b=2', []);
is($r->{status}, 200, 'a query token passes');
$r = $t->http('GET', '/x?a=1&api_key=egw_secret123&b=2&access_token=zzz', []);
is($r->{status}, 400, 'two query credentials are refused');
$r = $t->http('GET', '/x?a=1&acc%65ss_token=zzz&API_KEY=egw_secret123', []);
is($r->{status}, 400, 'credential names in other spellings are refused');
$r = $t->http('GET', '/x?api_key=egw_nope', []);
is($r->{status}, 401);
$t->stop;
my $log = $t->slurp('access.log');

unlike($log, qr/egw_secret123|egw_nope|zzz/);
like($log, qr{GET /x\?a=1&api_key=\[REDACTED\]&b=2 HTTP/1.1 200},
     'the query token is redacted');
like($log, qr{GET /x\?a=1&api_key=\[REDACTED\]&b=2&access_token=\[REDACTED\] HTTP/1.1 400},
     'both credentials are redacted');
like($log, qr{GET /x\?a=1&acc%65ss_token=\[REDACTED\]&API_KEY=\[REDACTED\] HTTP/1.1 400},
     'percent-encoded and case-variant credential names are redacted');
unlike($t->backend_log, qr/egw_secret/);
done_testing;
