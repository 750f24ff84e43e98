#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# Records of any size up to max_record, through real nginx and Redis: an
# integration record of more than 326 KB (4000 methods) routes its first
# and last method; fields of 200 KB work; with max_record=64k a record just
# under the limit works and one just over is a 500 gateway_misconfigured
# whose log line names the key and the limit.  Numeric fields out of range
# (expires_at 1e300, -1, 1e19, reals above 2^53, integers beyond 64 bits,
# NaN) are malformed records (500), never an undefined conversion; a real
# in range is taken in whole seconds, its fraction dropped.

use strict;
use warnings;

use lib 't/lib';
use EnvGwTest qw(refused);
use Test::More;
use Digest::SHA qw(sha256_hex);
use JSON::PP;

my $t = EnvGwTest->new;
$t->start_redis;
$t->{backend_port} = EnvGwTest::free_port();
my $BACKEND = $t->{backend_port};

sub server_conf {
    return <<'S';
    server {
        listen 127.0.0.1:%%PORT%%;
        location ~ ^/proxy/(?<res>[^/]+)(?:/(?<rest>[^/]+))?$ {
            env_gateway on;
            env_gateway_account $arg_integrated_account_id;
            env_gateway_route $res $rest;
            add_header X-Cache-Status $env_gateway_cache_status always;
            proxy_pass $env_gateway_upstream_url;
        }
        location / {
            env_gateway on;
            env_gateway_account $arg_integrated_account_id;
            add_header X-Env $env_gateway_environment_id always;
            add_header X-Tenant $env_gateway_tenant_id always;
            proxy_pass http://127.0.0.1:%%BACKEND%%;
        }
    }
S
}

$t->start_nginx("    env_gateway_redis 127.0.0.1:%%REDIS%% "
                . "connect_timeout=500ms read_timeout=2s;\n"
                . "    env_gateway_cache zone=envgw_rl:1m ttl=30s;\n"
                . server_conf());

# the same Redis behind a gateway with max_record=64k
my $s = EnvGwTest->new(redis_port => $t->{redis_port});
$s->start_nginx("    env_gateway_redis 127.0.0.1:%%REDIS%% "
                . "connect_timeout=500ms read_timeout=2s max_record=64k;\n"
                . server_conf());

$t->env('env_dev', 'team_a', 'development');
my $TOK = $t->token('egw_rl_' . substr(sha256_hex('record-limits'), 0, 30),
                    token_id => 'tok_rl', team_id => 'team_a',
                    environment_id => 'env_dev', environment => 'development');

sub get {
    my ($gw, $path, $token) = @_;
    return $gw->get($path, $token // $TOK);
}

# --- an integration record of 4000 methods, over 326 KB ----------------------

my (%res, $first, $last);
for my $i (0 .. 9) {
    for my $j (0 .. 399) {
        my ($r, $m) = (sprintf('r%d', $i), sprintf('m%04d', $j));
        $res{$r}{$m} = { method => 'GET',
                         path => "/v3/objects/$r/$m/" . ('p' x 40) };
    }
}
my $bigrec = $EnvGwTest::JSON->encode({
    upstream => "http://127.0.0.1:$BACKEND", resources => \%res });
cmp_ok(length $bigrec, '>', 326 * 1024,
       'integration record of 4000 methods: ' . length($bigrec) . ' bytes');
$t->put('integration:env_dev:huge', $bigrec);
$t->account('acc_huge', 'env_dev', integration => 'huge');

for my $case ([ r0 => 'm0000' ], [ r9 => 'm0399' ], [ r5 => 'm0200' ]) {
    my ($r, $m) = @$case;
    my $x = get($t, "/proxy/$r/$m?integrated_account_id=acc_huge");
    is($x->{status}, 200, "4000 methods: $r.$m: 200");
    like($x->{body}, qr{^backend GET /v3/objects/$r/$m/p{40} }m,
         "4000 methods: $r.$m reaches its own path");
}
refused(get($t, '/proxy/r9/m0400?integrated_account_id=acc_huge'),
        404, 'method_not_found', '4000 methods: an undefined method');
{
    # a record above 1/16 of the zone is served, but not cached
    my @c = map { get($t, '/proxy/r0/m0001?integrated_account_id=acc_huge')
                  ->{headers}{'x-cache-status'} } 1 .. 2;
    is_deeply(\@c, [ 'MISS', 'MISS' ],
              '4000 methods: above 1/16 of a 1m zone, fetched each time');
}
refused(get($s, '/proxy/r0/m0000?integrated_account_id=acc_huge'),
        500, 'gateway_misconfigured', '4000 methods, max_record=64k');

# --- max_record=64k: just under, just over ------------------------------------

sub sized_integration {
    my ($size) = @_;
    my %rec = (upstream => "http://127.0.0.1:$BACKEND",
               resources => { things => { list => { method => 'GET',
                                                     path => '/things' } } },
               notes => '');
    my $base = length $EnvGwTest::JSON->encode(\%rec);
    $rec{notes} = 'n' x ($size - $base);
    my $json = $EnvGwTest::JSON->encode(\%rec);
    die "size" unless length $json == $size;
    return $json;
}

$t->put('integration:env_dev:under', sized_integration(65536 - 16));
$t->put('integration:env_dev:exact', sized_integration(65536));
$t->put('integration:env_dev:over', sized_integration(65536 + 16));
$t->account("acc_$_", 'env_dev', integration => $_) for qw(under exact over);

is(get($s, '/proxy/things?integrated_account_id=acc_under')->{status}, 200,
   'max_record=64k: a record of 64 KB - 16 bytes: 200');
is(get($s, '/proxy/things?integrated_account_id=acc_exact')->{status}, 200,
   'max_record=64k: a record of exactly 64 KB: 200');
refused(get($s, '/proxy/things?integrated_account_id=acc_over'),
        500, 'gateway_misconfigured', 'max_record=64k: 64 KB + 16 bytes');
like($s->slurp('error.log'),
     qr/record "envgw:integration:env_dev:over" is above max_record \(65536 bytes\)/,
     'max_record=64k: the log line names the key and the limit');
is(get($t, '/proxy/things?integrated_account_id=acc_over')->{status}, 200,
   'the same record under the default max_record (1m): 200');
is(get($s, '/proxy/things?integrated_account_id=acc_under')->{status}, 200,
   'max_record=64k: still 200 for the smaller record afterwards');

# a token record over the limit: 500, not a pass and not a 401
{
    my $big = $t->token('egw_rl_big_' . substr(sha256_hex('big'), 0, 30),
                        token_id => 'tok_rl_big', team_id => 'team_a',
                        environment_id => 'env_dev',
                        environment => 'development',
                        padding => 'x' x (70 * 1024));
    refused(get($s, '/x', $big), 500, 'gateway_misconfigured',
            'max_record=64k: a 70 KB token record');
    is(get($t, '/x', $big)->{status}, 200,
       'the 70 KB token record under the default max_record: 200');
}

# --- fields of 200 KB ------------------------------------------------------------

{
    my $tenant = 't' x (200 * 1024);
    $t->account('acc_bigfield', 'env_dev', tenant_id => $tenant);
    my $r = get($t, '/x?integrated_account_id=acc_bigfield');
    is($r->{status}, 200, 'a tenant_id of 200 KB: 200');
    is(length($r->{headers}{'x-tenant'} // ''), 200 * 1024,
       'a tenant_id of 200 KB: $env_gateway_tenant_id holds all of it');

    # an environment id of 200 KB, in the token, the account and the keys
    my $env = 'env_' . ('e' x (200 * 1024));
    $t->env($env, 'team_a', 'development');
    my $tk = $t->token('egw_rl_env_' . substr(sha256_hex('bigenv'), 0, 30),
                       token_id => 'tok_rl_env', team_id => 'team_a',
                       environment_id => $env, environment => 'development');
    $t->account('acc_bigenv', $env);
    $r = get($t, '/x?integrated_account_id=acc_bigenv', $tk);
    is($r->{status}, 200, 'an environment_id of 200 KB: 200');
    is($r->{headers}{'x-env'} // '', $env,
       'an environment_id of 200 KB: $env_gateway_environment_id');
    refused(get($t, '/x?integrated_account_id=acc_huge', $tk), 404,
            'integrated_account_not_found',
            'an environment_id of 200 KB: another environment\'s account');
}

# --- numeric fields out of range --------------------------------------------------

{
    my $n = 0;
    my %case = (
        '1e300'                  => 500,
        '-1'                     => 500,
        '0'                      => 500,
        '1e19'                   => 500,
        '-1e19'                  => 500,
        '9007199254740994.0'     => 500,    # above 2^53
        '1e400'                  => 500,    # not representable: bad JSON
        '99999999999999999999'   => 500,    # beyond 64 bits: bad JSON
        '-9223372036854775808'   => 500,
        'NaN'                    => 500,    # not JSON
        '-Infinity'              => 500,
        '"4102444800"'           => 500,
        'true'                   => 500,
        '[4102444800]'           => 500,
        '4102444800'             => 200,    # 2100-01-01
        '4102444800.0'           => 200,    # a whole real
        '4.1024448e9'            => 200,
        '4102444800.75'          => 200,    # a fraction is dropped
        '9007199254740992.0'     => 200,    # 2^53, the largest whole real
        '9223372036854775807'    => 200,    # the largest integer
        '1000000000'             => 401,    # 2001: expired
        '1.0'                    => 401,
        '1.5'                    => 401,    # second 1: expired
        '1000000000.999'         => 401,
        'null'                   => 200,
    );
    for my $v (sort keys %case) {
        my $raw = 'egw_rl_num_' . substr(sha256_hex("num$v"), 0, 30);
        $t->put('token:' . sha256_hex($raw),
                '{"token_id":"tok_num' . $n++ . '","team_id":"team_a",'
                . '"environment_id":"env_dev","environment":"development",'
                . '"kind":"data","revoked":false,"expires_at":' . $v . '}');
        my $r = get($t, '/x', $raw);
        my $want = $case{$v};
        my $err = { 500 => 'gateway_misconfigured', 401 => 'invalid_token',
                    200 => undef }->{$want};
        is($r->{status}, $want, "expires_at $v: $want");
        is(($r->{json} || {})->{error}, $err, "expires_at $v: "
           . ($err // 'passed')) if defined $err;
    }
    my $log = $t->slurp('error.log');
    like($log, qr/malformed record "envgw:token:[0-9a-f]{64}": bad or missing "expires_at"/,
         'out-of-range expires_at: logged as a malformed record');
}

# --- max_record= in nginx -t ------------------------------------------------------

{
    my $c = EnvGwTest->new;
    my $loc = 'env_gateway on;';
    for my $bad ([ 'max_record=abc', 'a size from 1k to 512m' ],
                 [ 'max_record=512', 'a size from 1k to 512m' ],
                 [ 'max_record=1g',  'a size from 1k to 512m' ],
                 [ 'max_record=',    'a size from 1k to 512m' ])
    {
        my ($rc, $out) = $c->check_conf(EnvGwTest::location_conf($loc,
            "env_gateway_redis 127.0.0.1:6379 $bad->[0]; # <-"));
        isnt($rc, 0, "nginx -t refuses $bad->[0]");
        like($out, qr/\Q$bad->[1]\E/, "$bad->[0]: the message says why");
    }
    my ($rc, $out) = $c->check_conf(EnvGwTest::location_conf($loc,
        "env_gateway_redis 127.0.0.1:6379 max_record=64k;\n"
        . "    env_gateway_redis 127.0.0.1:6380 max_record=128k; # <-"));
    isnt($rc, 0, 'nginx -t refuses two different max_record= values');
    like($out, qr/max_record=65536: one limit for all servers/,
         'two max_record= values: the message names the earlier one');
    $c->conf_ok('max_record=64k on two lines', EnvGwTest::location_conf($loc,
        "env_gateway_redis 127.0.0.1:6379 max_record=64k;\n"
        . "    env_gateway_redis 127.0.0.1:6380 max_record=64k;"));
    $c->conf_ok('max_record=512m', EnvGwTest::location_conf($loc,
        'env_gateway_redis 127.0.0.1:6379 max_record=512m;'));
    $c->conf_ok('max_record= with sentinel=', EnvGwTest::location_conf($loc,
        'env_gateway_redis sentinel=mymaster 127.0.0.1:26379 '
        . 'max_record=2m;'));
}

$s->stop;
$t->stop;
done_testing;
