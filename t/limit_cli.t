#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# envgw token create --rate-limit, envgw token set-limit, envgw env
# set-limit: the records' rate_limit, written and published so that a
# gateway with a cache enforces a new limit (or its removal) at once; a
# rotated token keeps its limit; bad limits are usage errors (exit 2)
# that write nothing.

use strict;
use warnings;

use lib 't/lib';
use Test::More;
use JSON::PP;
use Digest::SHA qw(sha256_hex);
use EnvGwTest;
use EnvGwLimit;

my $t = EnvGwTest->new;
my $ENVGW = $ENV{ENVGW_BIN} || "$EnvGwTest::TOP/cli/envgw";
$t->start_redis;

sub envgw {
    my @args = @_;
    my $cmd = join ' ', map { "'$_'" } $ENVGW, '--redis',
        "127.0.0.1:$t->{redis_port}", @args;
    my $out = `$cmd 2>&1`;
    return ($? >> 8, $out);
}

sub envgw_json {
    my ($rc, $out) = envgw('--json', @_);
    is($rc, 0, "envgw @_") or diag($out);
    return eval { JSON::PP->new->decode($out) } || {};
}

sub record {
    my ($key) = @_;
    my $v = $t->redis->get("envgw:$key");
    return defined $v ? decode_json($v) : undef;
}

$t->start_nginx(<<'CONF', subscribed => 1);
    env_gateway_redis 127.0.0.1:%%REDIS%% read_timeout=500ms;
    env_gateway_cache zone=envgw:1m ttl=1h negative_ttl=1h;
    env_gateway_limit_zone zone=envgw_limits:1m;
    server {
        listen 127.0.0.1:%%PORT%%;
        location / {
            env_gateway on;
            env_gateway_limit token 100r/h;
            env_gateway_limit environment 100r/h;
            proxy_pass http://127.0.0.1:%%BACKEND%%;
        }
    }
CONF

my $env = envgw_json('env', 'create', '--team', 'team_a', '--id', 'env_p',
                     'production');

# --- token create --rate-limit ---------------------------------------------

my $tok = envgw_json('token', 'create', 'env_p', '--rate-limit', '3/1h');
is_deeply($tok->{rate_limit}, { requests => 3, window => '1h' },
          'token create --rate-limit: printed');
my $rec = record('token:' . sha256_hex($tok->{token}));
is_deeply($rec->{rate_limit}, { requests => 3, window => '1h' },
          'token create --rate-limit: in the record');
my ($rs) = burst($t, 4, '/x', $tok->{token});
is(statuses($rs), '200,200,200,429', 'the gateway enforces 3/1h');

# --- token set-limit ---------------------------------------------------------

my $out = envgw_json('token', 'set-limit', $tok->{token_id}, '5/1h');
is_deeply($out, { token_id => $tok->{token_id},
                  rate_limit => { requests => 5, window => '1h' } },
          'token set-limit: printed');
($rs) = burst($t, 3, '/x', $tok->{token});
is(statuses($rs), '200,200,429',
   'token set-limit 5/1h: enforced at once through the cache (3 used)');

envgw_json('token', 'set-limit', $tok->{token_id}, 'none');
$rec = record('token:' . sha256_hex($tok->{token}));
ok(!exists $rec->{rate_limit}, 'token set-limit none: removed');
is($t->get('/x', $tok->{token})->{status}, 200,
   'token set-limit none: the location\'s 100r/h again');

my ($rc, $text) = envgw('token', 'set-limit', $tok->{token_id}, '50/m');
is($rc, 0, 'token set-limit: text output');
like($text, qr/^\Q$tok->{token_id}\E rate limit: 50\/m$/m, '... says it');

# rotate keeps it
my $rot = envgw_json('token', 'rotate', $tok->{token_id}, '--grace', '1h');
$rec = record('token:' . sha256_hex($rot->{token}));
is_deeply($rec->{rate_limit}, { requests => 50, window => 'm' },
          'token rotate: the new token keeps the rate limit');

# --- env set-limit -----------------------------------------------------------

my $e1 = envgw_json('token', 'create', 'env_p');
my $e2 = envgw_json('token', 'create', 'env_p');
envgw_json('env', 'set-limit', 'env_p', '4/1h');
is_deeply(record('env:env_p')->{rate_limit}, { requests => 4, window => '1h' },
          'env set-limit: in the record');
my @st = map { $t->get('/x', $_ % 2 ? $e1->{token} : $e2->{token})->{status} }
         1 .. 5;
# the env's count already has the requests of this test's other tokens
ok((grep { $_ == 429 } @st) >= 1 && $st[-1] == 429,
   "env set-limit 4/1h: the environment's tokens are limited (@st)");
envgw_json('env', 'set-limit', 'env_p', 'none');
ok(!exists record('env:env_p')->{rate_limit}, 'env set-limit none: removed');
is($t->get('/x', $e1->{token})->{status}, 200,
   'env set-limit none: the location\'s 100r/h again');

# --- bad limits: exit 2, nothing written ------------------------------------

my $before = $t->redis->get('envgw:env:env_p');
for my $bad ('0/1h', '5', '5/', '/1h', 'x/1h', '5/1x', '5/8d', '5/0s',
             '5/ms', '-1/s', '2000000000/s', '5/1h/2') {
    my ($rc, $out) = envgw('env', 'set-limit', 'env_p', $bad);
    is($rc, 2, "env set-limit '$bad': exit 2");
    like($out, qr/bad rate limit|unknown option/,
         "env set-limit '$bad': says why");
}
is($t->redis->get('envgw:env:env_p'), $before, 'bad limits wrote nothing');
($rc, $out) = envgw('token', 'create', 'env_p', '--rate-limit', 'lots');
is($rc, 2, 'token create --rate-limit lots: exit 2');
($rc, $out) = envgw('token', 'set-limit', 'tok_nope', '5/s');
is($rc, 1, 'token set-limit of an unknown token: exit 1');
like($out, qr/no token with id 'tok_nope'/, '... says so');
($rc, $out) = envgw('env', 'set-limit', 'env_nope', '5/s');
is($rc, 1, 'env set-limit of an unknown environment: exit 1');

$t->stop;
done_testing();
