#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# slice subrequests into a location with env_gateway on: every 1k slice of
# a multi-KB body reaches the backend with the identity the gateway
# checked (X-Environment-Id, X-Environment, X-Team-Id, X-Token-Id) and no
# client credential (Authorization, an access_token argument, the
# configured header); the body arrives whole.  A refused request (no
# token, an unknown one, an account of another environment) sends no
# slice and gets no byte of the body.  The backend is nginx serving a
# file (it answers Range), logging what each slice carried.

use strict;
use warnings;

use lib 't/lib';
use EnvGwTest qw(refused);
use Test::More;

my $nginx = $ENV{ENVGW_NGINX} || '/usr/sbin/nginx';
plan skip_all => "$nginx is built without ngx_http_slice_module"
    unless `$nginx -V 2>&1` =~ /--with-http_slice_module/;

my $t = EnvGwTest->new;
$t->start_redis;
my $tok = $t->seed_two_envs;
my $dir = $t->dir;
my $files = EnvGwTest::free_port();

mkdir "$dir/files";
mkdir "$dir/files/files";
my $body = join '', map { sprintf "slice line %05d of the body\n", $_ }
                        1 .. 200;                       # 5600 bytes
for my $f ("$dir/files/big.txt", "$dir/files/files/big.txt") {
    open my $fh, '>', $f or die "$f: $!";
    print $fh $body;
    close $fh;
}
my $SLICES = int((length($body) + 1023) / 1024);

$t->start_nginx(<<"CONF");
    env_gateway_redis 127.0.0.1:%%REDIS%% connect_timeout=500ms read_timeout=2s;

    log_format slice '\$request_uri|\$http_range|\$http_x_environment_id|'
                     '\$http_x_environment|\$http_x_team_id|\$http_x_token_id|'
                     '\$http_authorization|\$http_x_api_key|\$args';
    server {
        listen 127.0.0.1:$files;
        root $dir/files;
        access_log $dir/slice.log slice;
    }

    server {
        listen 127.0.0.1:%%PORT%%;

        # the token in Authorization, or an access_token argument
        location /s/ {
            env_gateway on;
            slice 1k;
            proxy_set_header Range \$slice_range;
            proxy_http_version 1.1;
            proxy_pass http://127.0.0.1:$files/;
        }

        # the token in the access_token argument
        location /q/ {
            env_gateway on;
            env_gateway_token \$arg_access_token;
            slice 1k;
            proxy_set_header Range \$slice_range;
            proxy_pass http://127.0.0.1:$files/;
        }

        # the token in a header of the operator's choosing
        location /k/ {
            env_gateway on;
            env_gateway_token \$http_x_api_key;
            slice 1k;
            proxy_set_header Range \$slice_range;
            proxy_pass http://127.0.0.1:$files/;
        }

        # an integrated account checked against the token's environment
        location /a/ {
            env_gateway on;
            env_gateway_account \$arg_integrated_account_id;
            slice 1k;
            proxy_set_header Range \$slice_range;
            proxy_pass http://127.0.0.1:$files/files/;
        }
    }
CONF

sub lines {
    return map { [ split /\|/, $_, -1 ] } split /\n/, $t->slurp('slice.log');
}

my $count = sub { scalar(my @l = lines()) };

# every slice of one request: [uri, range, env, env name, team, token id,
# authorization, api key, args]
sub slices_since {
    my ($n) = @_;
    my @l = lines();
    return @l[$n .. $#l];
}

sub passed {
    my ($name, $r, $before, %o) = @_;
    is($r->{status}, 200, "$name: 200");
    is($r->{body}, $body, "$name: the whole body, assembled from slices");
    my @s = slices_since($before);
    is(scalar @s, $SLICES, "$name: $SLICES slices reached the backend");
    my @ranges = map { $_->[1] } @s;
    is_deeply([ sort @ranges ],
              [ sort map { 'bytes=' . ($_ * 1024) . '-' . ($_ * 1024 + 1023) }
                    0 .. $SLICES - 1 ],
              "$name: each 1k range once");
    for my $i (0 .. $#s) {
        my ($uri, $range, $env, $ename, $team, $tid, $auth, $key, $args)
            = @{ $s[$i] };
        is($env, $o{env}, "$name: slice $range: X-Environment-Id $o{env}");
        is($ename, $o{name}, "$name: slice $range: X-Environment");
        is($team, 'team_a', "$name: slice $range: X-Team-Id");
        is($tid, $o{token_id}, "$name: slice $range: X-Token-Id");
        is($auth, '-', "$name: slice $range: no Authorization");
        is($key, '-', "$name: slice $range: no X-Api-Key");
        unlike($args, qr/access_token/i, "$name: slice $range: no "
                                         . "access_token argument");
        unlike(join('|', @{ $s[$i] }), qr/\Q$o{raw}\E/,
               "$name: slice $range: the token nowhere");
    }
}

sub no_slice {
    my ($name, $r, $before, $status, $code) = @_;
    refused($r, $status, $code, $name,
            count => $count, before => $before);
    unlike($r->{raw}, qr/slice line/, "$name: no byte of the body");
}

my $n;

# --- passed: every slice carries the checked identity ------------------------

$n = $count->();
passed('dev, Authorization', $t->get('/s/big.txt', $tok->{dev}), $n,
       env => 'env_dev', name => 'development', token_id => 'tok_dev',
       raw => $tok->{dev});

$n = $count->();
passed('prod, Authorization', $t->get('/s/big.txt', $tok->{prod}), $n,
       env => 'env_prod', name => 'production', token_id => 'tok_prod',
       raw => $tok->{prod});

$n = $count->();
passed('dev, access_token argument',
       $t->get("/q/big.txt?x=1&access_token=$tok->{dev}"), $n,
       env => 'env_dev', name => 'development', token_id => 'tok_dev',
       raw => $tok->{dev});

$n = $count->();
passed('prod, X-Api-Key', $t->get('/k/big.txt', undef,
                                  'X-Api-Key' => $tok->{prod}), $n,
       env => 'env_prod', name => 'production', token_id => 'tok_prod',
       raw => $tok->{prod});

# client identity headers are the gateway's, on every slice
$n = $count->();
passed('dev, forged identity headers',
       $t->get('/s/big.txt', $tok->{dev}, 'X-Team-Id' => 'team_b',
               'X-Token-Id' => 'tok_prod', 'X_Token_Id' => 'tok_prod'),
       $n, env => 'env_dev', name => 'development', token_id => 'tok_dev',
       raw => $tok->{dev});

$n = $count->();
passed('dev, its own account', $t->get(
           '/a/big.txt?integrated_account_id=acc_dev', $tok->{dev}), $n,
       env => 'env_dev', name => 'development', token_id => 'tok_dev',
       raw => $tok->{dev});

# --- refused: no slice at all ------------------------------------------------

$n = $count->();
no_slice('no token', $t->get('/s/big.txt'), $n, 401, 'missing_token');

$n = $count->();
no_slice('unknown token', $t->get('/s/big.txt', 'egw_not_a_token_0000'), $n,
         401, 'invalid_token');

$n = $count->();
no_slice('no token in X-Api-Key',
         $t->get('/k/big.txt', undef), $n, 401, 'missing_token');

$n = $count->();
no_slice('X-Api-Key and Authorization both',
         $t->get('/k/big.txt', $tok->{dev}, 'X-Api-Key' => $tok->{dev}), $n,
         400, 'invalid_request');

$n = $count->();
no_slice('prod token, dev account',
         $t->get('/a/big.txt?integrated_account_id=acc_dev', $tok->{prod}),
         $n, 404, 'integrated_account_not_found');

$n = $count->();
no_slice('dev token, prod account',
         $t->get('/a/big.txt?integrated_account_id=acc_prod', $tok->{dev}),
         $n, 404, 'integrated_account_not_found');

# a client Range is served from the slices, with the same identity
$n = $count->();
{
    my $r = $t->get('/s/big.txt', $tok->{dev}, Range => 'bytes=1500-2600');
    is($r->{status}, 206, 'client Range: 206');
    is($r->{body}, substr($body, 1500, 1101), 'client Range: the bytes');
    my @s = slices_since($n);
    is(scalar @s, 2, 'client Range: the two slices it spans');
    is_deeply([ map { $_->[2] } @s ], [ ('env_dev') x 2 ],
              'client Range: each slice with X-Environment-Id env_dev');
    is_deeply([ map { $_->[6] } @s ], [ ('-') x 2 ],
              'client Range: no Authorization on a slice');
}

$n = $count->();
no_slice('client Range, prod token, dev account',
         $t->get('/a/big.txt?integrated_account_id=acc_dev', $tok->{prod},
                 Range => 'bytes=0-10'),
         $n, 404, 'integrated_account_not_found');

$t->stop;
done_testing;
