#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# Configuration checks: every env_gateway directive is validated at `nginx -t`.
# Each bad configuration must fail with an [emerg] line that names the
# directive, says what is wrong, and points at the offending line (the line
# marked "# <-" below).  Gaps the module does not catch yet are TODO tests.

use strict;
use warnings;

use lib 't/lib';
use EnvGwTest;
use Test::More;

my $t = EnvGwTest->new;
my $dir = $t->dir;
my $module = $t->{module};

ok(-f $module, "module built: $module")
    or BAIL_OUT('build the module first: make module');

sub check_conf { $t->check_conf(@_) }

my $REDIS = 'env_gateway_redis 127.0.0.1:6379;';

sub server { EnvGwTest::location_conf(@_) }

sub good { $t->conf_ok(@_) }

# bad(name, http, directive, problem_re, [refused|message|directive|line
#     => TODO reason])
sub bad {
    my ($name, $http, $directive, $re, %todo) = @_;
    my ($rc, $out, $path, $line) = check_conf($http);
    my ($emerg) = $out =~ /^(.*\[emerg\].*)$/m;
    $emerg //= '';

    {
        local $TODO = $todo{refused};
        isnt($rc, 0, "$name: nginx -t fails") or diag($out);
    }
    {
        local $TODO = $todo{message} // $todo{refused};
        like($emerg, $re, "$name: says what is wrong") or diag($out);
    }
    {
        local $TODO = $todo{directive} // $todo{refused};
        like($emerg, qr/"?\Q$directive\E\b/, "$name: names $directive")
            or diag($emerg);
    }
    {
        local $TODO = $todo{line} // $todo{refused};
        like($emerg, qr/ in \Q$path\E:\Q$line\E$/,
             "$name: points at the line")
            or diag($emerg);
    }
}

# ngx_conf_log_error() messages of the module (and ngx_conf_set_enum_slot's
# "invalid value") carry no directive name: nginx adds it only to strings a
# handler returns ("\"%V\" directive %s")
my $NONAME = 'the message does not name the directive';

my $R = 'env_gateway_redis';
my $C = 'env_gateway_cache';
my $ON = 'env_gateway on;';

# --- accepted ------------------------------------------------------------------

good('every directive, every parameter', <<"H");
    env_gateway_redis 127.0.0.1:6379 password=s3cret db=2 connect_timeout=200ms read_timeout=1s;
    env_gateway_redis unix:$dir/redis.sock db=0;
    env_gateway_key_prefix myapp:;
    env_gateway_cache zone=envgw:1m ttl=10s negative_ttl=1s stale_if_error=5m;
    server {
        listen 127.0.0.1:8080;
        env_gateway_log_level notice;
        location / {
            env_gateway on;
            env_gateway_token \$http_x_api_key;
            env_gateway_account \$arg_integrated_account_id required;
            env_gateway_account_body_field integrated_account_id;
            env_gateway_hide_credentials off;
            return 200;
        }
        location /t {
            env_gateway on;
            env_gateway_tenant \$arg_tenant_id;
            env_gateway_integration hubspot;
            return 200;
        }
        location ~ ^/proxy/(?<res>[^/]+)(?:/(?<rest>[^/]+))?\$ {
            env_gateway on;
            env_gateway_account \$arg_integrated_account_id;
            env_gateway_route \$res \$rest;
            proxy_pass \$env_gateway_upstream_url;
        }
        location = /auth {
            env_gateway on;
            env_gateway_identity_headers off;
            env_gateway_authorize;
        }
        location = /metrics { env_gateway_metrics; }
    }
H

{
    my $out = good('a host name that resolves (localhost:6379)',
                   server($ON, "$R localhost:6379;"));
    unlike($out, qr/\[emerg\]/, 'localhost:6379: no error');
}
good('port left out: 6379', server($ON, "$R 127.0.0.1;"));
good('Sentinel block', server($ON, "$R sentinel=mymaster 127.0.0.1:26379 "
                                    . "127.0.0.1:26380 password=x;"));
good('env_gateway on at server level reaches env_gateway_route', <<"H");
    $REDIS
    server {
        listen 127.0.0.1:8080;
        env_gateway on;
        location ~ ^/p/(?<res>[^/]+)\$ {
            env_gateway_account \$arg_integrated_account_id;
            env_gateway_route \$res;
            proxy_pass \$env_gateway_upstream_url;
        }
    }
H

# --- env_gateway_redis ---------------------------------------------------------------

bad('env_gateway_redis unknown parameter',
    server($ON, "$R 127.0.0.1:6379 bogus=1;  # <-"),
    $R, qr/has an unknown parameter "bogus=" \(its value not shown\)/);
bad('env_gateway_redis read_timeout=xyz',
    server($ON, "$R 127.0.0.1:6379 read_timeout=xyz;  # <-"),
    $R, qr/has an invalid value in "read_timeout=xyz"/);
bad('env_gateway_redis connect_timeout=0',
    server($ON, "$R 127.0.0.1:6379 connect_timeout=0;  # <-"),
    $R, qr/has an invalid value in "connect_timeout=0"/);
bad('env_gateway_redis db=x',
    server($ON, "$R 127.0.0.1:6379 db=x;  # <-"),
    $R, qr/has an invalid value in "db=x"/);
bad('env_gateway_redis db=-1',
    server($ON, "$R 127.0.0.1:6379 db=-1;  # <-"),
    $R, qr/has an invalid value in "db=-1"/);
bad('env_gateway_redis empty password=',
    server($ON, "$R 127.0.0.1:6379 password=;  # <-"),
    $R, qr/has an invalid value in "password="/);
bad('env_gateway_redis port out of range',
    server($ON, "$R 127.0.0.1:99999;  # <-"),
    $R, qr/has an invalid address "127\.0\.0\.1:99999"/);
bad('env_gateway_redis host name that does not resolve',
    server($ON, "$R no-such-host.invalid:6379;  # <-"),
    $R, qr/no-such-host\.invalid.*(?:host not found|resolve)/);
bad('env_gateway_redis sentinel= without addresses',
    server($ON, "$R sentinel=mymaster;  # <-"),
    $R, qr/sentinel= needs Sentinel addresses/);
bad('env_gateway_redis sentinel= with only parameters',
    server($ON, "$R sentinel=mymaster password=x;  # <-"),
    $R, qr/sentinel= needs Sentinel addresses/);
bad('env_gateway_redis sentinel= without a master name',
    server($ON, "$R sentinel= 127.0.0.1:26379;  # <-"),
    $R, qr/needs a master name/);
bad('env_gateway_redis plain line after a sentinel= line',
    server($ON, "$R sentinel=m 127.0.0.1:26379;\n    $R 127.0.0.1:6379;  # <-"),
    $R, qr/cannot be mixed with a sentinel= line/);
bad('env_gateway_redis sentinel= line after a plain line',
    server($ON, "$REDIS\n    $R sentinel=m 127.0.0.1:26379;  # <-"),
    $R, qr/sentinel= must be the only env_gateway_redis line/);
bad('env_gateway_redis the same address twice',
    server($ON, "$REDIS\n    $R 127.0.0.1:6379;  # <-"),
    $R, qr/lists "127\.0\.0\.1:6379" a second time/);
bad('env_gateway_redis in a server block', <<"H",
    $REDIS
    server {
        listen 127.0.0.1:8080;
        env_gateway_redis 127.0.0.1:6380;  # <-
    }
H
    $R, qr/not allowed here/);
bad('env_gateway on without env_gateway_redis',
    server("$ON  # <-", ''),
    'env_gateway_redis', qr/"env_gateway on" needs "env_gateway_redis"/);

# --- env_gateway_key_prefix ----------------------------------------------------------

bad('env_gateway_key_prefix with a space',
    server($ON, "$REDIS\n    env_gateway_key_prefix \"a b:\";  # <-"),
    'env_gateway_key_prefix', qr/has an invalid prefix "a b:"/);
bad('duplicate env_gateway_key_prefix',
    server($ON, "$REDIS\n    env_gateway_key_prefix a:;\n"
              . "    env_gateway_key_prefix b:;  # <-"),
    'env_gateway_key_prefix', qr/is duplicate/);

# --- env_gateway_cache ------------------------------------------------------------

bad('env_gateway_cache without zone=',
    server($ON, "$REDIS\n    $C ttl=30s;  # <-"),
    $C, qr/needs a zone name in zone=name:size/);
bad('env_gateway_cache zone without a size',
    server($ON, "$REDIS\n    $C zone=envgw;  # <-"),
    $C, qr/has no size in "zone=envgw": zone=name:size/);
bad('env_gateway_cache bad size',
    server($ON, "$REDIS\n    $C zone=envgw:lots;  # <-"),
    $C, qr/has an invalid size in "zone=envgw:lots"/);
bad('env_gateway_cache zone too small',
    server($ON, "$REDIS\n    $C zone=envgw:16k;  # <-"),
    $C, qr/has a zone too small in "[^"]+": at least \d+k/);
bad('env_gateway_cache zone with an empty name',
    server($ON, "$REDIS\n    $C zone=:1m;  # <-"),
    $C, qr/needs a zone name in "zone=:1m"/);
bad('env_gateway_cache unknown parameter',
    server($ON, "$REDIS\n    $C zone=envgw:1m size=1;  # <-"),
    $C, qr/has an unknown parameter "size=1"/);
bad('env_gateway_cache bad ttl',
    server($ON, "$REDIS\n    $C zone=envgw:1m ttl=soon;  # <-"),
    $C, qr/has an invalid time in "ttl=soon"/);
bad('env_gateway_cache bad negative_ttl',
    server($ON, "$REDIS\n    $C zone=envgw:1m negative_ttl=-1;  # <-"),
    $C, qr/has an invalid time in "negative_ttl=-1"/);
bad('env_gateway_cache bad stale_if_error',
    server($ON, "$REDIS\n    $C zone=envgw:1m stale_if_error=x;  # <-"),
    $C, qr/has an invalid time in "stale_if_error=x"/);
bad('env_gateway_cache ttl=0',
    server($ON, "$REDIS\n    $C zone=envgw:1m ttl=0;  # <-"),
    $C, qr/needs ttl above 0/);
bad('duplicate env_gateway_cache',
    server($ON, "$REDIS\n    $C zone=a:1m;\n    $C zone=b:1m;  # <-"),
    $C, qr/is duplicate/);
bad('env_gateway_cache zone name taken by another module',
    server($ON, "$REDIS\n    limit_req_zone \$binary_remote_addr zone=shared:1m rate=1r/s;\n"
              . "    $C zone=shared:1m;  # <-"),
    $C, qr/shared memory zone "shared" is already declared for a different use/,
    directive => 'nginx core reports the clash; the message does not name '
               . 'env_gateway_cache');
bad('env_gateway_cache zone named like the metrics zone',
    server($ON, "$REDIS\n    $C zone=env_gateway_metrics:32k;  # <-"),
    $C, qr/cannot use the zone name "env_gateway_metrics"/);
bad('env_gateway_cache in a location',
    server("$ON $C zone=envgw:1m;  # <-"),
    $C, qr/not allowed here/);

# --- location directives: duplicates and values ----------------------------------------

for my $d (['env_gateway_token', '$http_x_a', '$arg_b'],
           ['env_gateway_account', '$arg_a', '$arg_b'],
           ['env_gateway_account_body_field', 'a', 'b'],
           ['env_gateway_tenant', '$arg_a', '$arg_b'],
           ['env_gateway_integration', 'hubspot', 'salesforce'],
           ['env_gateway_route', '$uri', '$uri'],
           ['env_gateway', 'on', 'off'],
           ['env_gateway_hide_credentials', 'on', 'off'],
           ['env_gateway_log_level', 'warn', 'error'])
{
    my ($name, $a, $b) = @$d;
    my $on = $name eq 'env_gateway' ? '' : $ON;
    bad("duplicate $name",
        server("$on $name $a;\n            $name $b;  # <-"),
        $name, qr/"\Q$name\E" directive is duplicate/);
}

bad('duplicate env_gateway_metrics',
    server("env_gateway_metrics;\n            env_gateway_metrics;  # <-"),
    'env_gateway_metrics', qr/is duplicate/);
bad('env_gateway_metrics with an argument',
    server("env_gateway_metrics on;  # <-"),
    'env_gateway_metrics', qr/invalid number of arguments/);
bad('env_gateway_metrics at http level',
    "    $REDIS\n    env_gateway_metrics;  # <-",
    'env_gateway_metrics', qr/not allowed here/);

bad('env_gateway_route without an account source',
    server("$ON env_gateway_route \$uri;  # <-"),
    'env_gateway_route', qr/needs an account source/);
bad('env_gateway_route without env_gateway on',
    server("env_gateway_route \$uri;  # <-"),
    'env_gateway_route', qr/needs "env_gateway on"/);
bad('env_gateway_route with env_gateway off',
    server("env_gateway off; env_gateway_route \$uri;  # <-"),
    'env_gateway_route', qr/needs "env_gateway on"/);
bad('env_gateway_route at server level', <<"H",
    $REDIS
    server {
        listen 127.0.0.1:8080;
        env_gateway on;
        env_gateway_route \$uri;  # <-
    }
H
    'env_gateway_route', qr/not allowed here/);
bad('env_gateway_route with three arguments',
    server("$ON env_gateway_route a b c;  # <-"),
    'env_gateway_route', qr/invalid number of arguments/);
bad('env_gateway_account_body_field empty',
    server("$ON env_gateway_account_body_field \"\";  # <-"),
    'env_gateway_account_body_field', qr/needs a field name/);
bad('env_gateway_account not required',
    server("$ON env_gateway_account \$arg_a sometimes;  # <-"),
    'env_gateway_account', qr/has an invalid parameter "sometimes": the only one is "required"/);
bad('env_gateway maybe',
    server("env_gateway maybe;  # <-"),
    'env_gateway', qr/invalid value "maybe"/);
bad('env_gateway_hide_credentials maybe',
    server("$ON env_gateway_hide_credentials maybe;  # <-"),
    'env_gateway_hide_credentials', qr/invalid value "maybe"/);
bad('env_gateway_log_level bogus',
    server("$ON env_gateway_log_level bogus;  # <-"),
    'env_gateway_log_level', qr/has an invalid level "bogus"/);
bad('env_gateway_log_level debug (not a refusal level)',
    server("$ON env_gateway_log_level debug;  # <-"),
    'env_gateway_log_level', qr/has an invalid level "debug"/);
bad('env_gateway_token with an unknown variable',
    server("$ON env_gateway_token \$no_such_var;  # <-"),
    'env_gateway_token', qr/unknown "no_such_var" variable/,
    directive => 'nginx core reports unknown variables without the '
               . 'directive',
    line => 'unknown variables are found after parsing, without a line');

$t->stop;
done_testing;
