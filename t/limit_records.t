#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# Per-record rate limits: a token record's "rate_limit" replaces the
# location's token limit for that token (every token line, no burst), an
# environment record's replaces the environment limit; a location without
# a limit of that key ignores them; a malformed rate_limit is a malformed
# record (500 gateway_misconfigured, never a pass).

use strict;
use warnings;

use lib 't/lib';
use EnvGwTest qw(refused);
use EnvGwLimit;
use Test::More;

my $t = EnvGwTest->new;
$t->start_redis;

$t->start_nginx(<<'CONF');
    env_gateway_redis 127.0.0.1:%%REDIS%% connect_timeout=200ms read_timeout=500ms;
    env_gateway_limit_zone zone=envgw_limits:1m;

    server {
        listen 127.0.0.1:%%PORT%%;

        location /tok/ {
            env_gateway on;
            env_gateway_limit token 5r/h burst=5;
            env_gateway_limit token 100r/d;
            proxy_pass http://127.0.0.1:%%BACKEND%%;
        }
        location /env/ {
            env_gateway on;
            env_gateway_limit environment 5r/h;
            proxy_pass http://127.0.0.1:%%BACKEND%%;
        }
        location /free/ {
            env_gateway on;
            env_gateway_limit team 100r/h;
            proxy_pass http://127.0.0.1:%%BACKEND%%;
        }
    }
CONF

sub st { join ',', map { $_->{status} } @{ (burst($t, @_))[0] } }

$t->env('env_prod', 'team_a', 'production');

# --- a token's own limit ----------------------------------------------------

my $A = limit_token($t, 'a',
                    rate_limit => { requests => 2, window => '1h' });
my ($rs) = burst($t, 4, '/tok/x', $A);
is(statuses($rs), '200,200,429,429',
   'token record: requests 2 replace 5r/h burst=5 and 100r/d');
is($rs->[0]{headers}{'ratelimit-limit'}, 2,
   'token record: RateLimit-Limit is the record\'s');
is($rs->[1]{headers}{'ratelimit-remaining'}, 0,
   'token record: Remaining 0 at the second');

my $B = limit_token($t, 'b');
is(st(11, '/tok/x', $B), join(',', (200) x 10, 429),
   'a token without rate_limit: the location\'s 5r/h burst=5');

# a location without a token limit ignores the token's
is(st(3, '/free/x', $A), '200,200,200',
   'token record: no token limit in the location, none applies');

# null is no override
my $C = limit_token($t, 'c', rate_limit => undef);
is(st(3, '/tok/x', $C), '200,200,200', 'rate_limit null: the location\'s');

# --- an environment's own limit ---------------------------------------------

$t->put('env:env_small', { environment_id => 'env_small',
                           team_id => 'team_a', name => 'small',
                           rate_limit => { requests => 3, window => '1h' } });
my @small = map { limit_token($t, "small$_", env => 'small') } 1 .. 2;
my @st = map { $t->get('/env/x', $small[$_ % 2])->{status} } 0 .. 4;
is(join(',', @st), '200,200,200,429,429',
   'environment record: requests 3 replace 5r/h, for all its tokens');

my $D = limit_token($t, 'd');
is(st(6, '/env/x', $D), '200,200,200,200,200,429',
   'an environment without rate_limit: the location\'s 5r/h');

# a token of an environment without a record: the location's limit
my $E = limit_token($t, 'e', env => 'norecord');
is(st(6, '/env/x', $E), '200,200,200,200,200,429',
   'no environment record: the location\'s limit');

# --- malformed rate_limit: 500, never a pass --------------------------------

my %bad = (
    'a number'         => 5,
    'requests 0'       => { requests => 0, window => '1m' },
    'requests a string' => { requests => '5', window => '1m' },
    'requests negative' => { requests => -1, window => '1m' },
    'no window'        => { requests => 5 },
    'window a number'  => { requests => 5, window => 60 },
    'window not a time' => { requests => 5, window => 'soon' },
    'window 0'         => { requests => 5, window => '0s' },
    'window above 7d'  => { requests => 5, window => '8d' },
    'requests too many' => { requests => 2_000_000_000, window => '1m' },
);
my $i = 0;
for my $name (sort keys %bad) {
    $i++;
    my $raw = limit_token($t, "bad$i", rate_limit => $bad{$name});
    my $r = $t->get('/free/x', $raw);
    refused($r, 500, 'gateway_misconfigured', "token rate_limit $name");
}
like($t->slurp('error.log'), qr/malformed record "envgw:token:[0-9a-f]{64}": bad or missing "rate_limit"/,
     'log: the malformed field is named');

$t->put('env:env_badrate', { environment_id => 'env_badrate',
                             team_id => 'team_a', name => 'bad',
                             rate_limit => { requests => 'x' } });
my $F = limit_token($t, 'f', env => 'badrate');
refused($t->get('/env/x', $F), 500, 'gateway_misconfigured',
        'environment rate_limit malformed');

$t->stop;
done_testing();
