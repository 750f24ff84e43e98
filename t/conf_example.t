#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# env_gateway configuration: the demo's conf.example passes "nginx -t" with
# the module built here, and bad directive arguments fail it with a message
# that names the problem and the line.

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

# --- conf.example ---------------------------------------------------------------

my $example = $ENV{ENVGW_CONF_EXAMPLE} || "$EnvGwTest::TOP/conf.example";

SKIP: {
    skip "conf.example does not exist yet ($example)", 3 unless -f $example;

    open my $fh, '<', $example or die "$example: $!";
    my $conf = do { local $/; <$fh> };
    close $fh;

    like($conf, qr/^\s*load_module\s+\S*ngx_env_gateway_module\.so\s*;/m,
         'conf.example loads the module');

    $conf =~ s{^(\s*load_module\s+)\S*ngx_env_gateway_module\.so(\s*;)}
              {$1$module$2}mg;

    # file paths of the demo go into the test's directory
    my $n = 0;
    $conf =~ s{^(\s*(?:pid|lock_file|error_log|access_log
                   |(?:client_body|proxy|fastcgi|uwsgi|scgi)_temp_path)\s+)
               ((?:/|\.\.?/|[\w.-]+/)[^\s;]*|[\w.-]+\.(?:log|pid))}
              {$1 . "$dir/example/" . ++$n . '-' . (split m{/}, $2)[-1]}gmxe;
    # relative includes: the repository's file, else the system nginx's
    $conf =~ s{^(\s*include\s+)(?!/)([^\s;]+)}
              {$1 . (-e "$EnvGwTest::TOP/$2" ? "$EnvGwTest::TOP/$2"
                     : -e "/etc/nginx/$2" ? "/etc/nginx/$2" : $2)}mge;

    mkdir "$dir/example";
    my $path = "$dir/example/nginx.conf";
    open $fh, '>', $path or die;
    print $fh $conf;
    close $fh;

    my ($rc, $out) = $t->nginx_t($path);
    is($rc, 0, 'nginx -t accepts conf.example') or diag($out);
    like($out, qr/test is successful/, 'nginx -t: test is successful');
}

# --- bad directive arguments -------------------------------------------------------

sub check_conf { $t->check_conf(@_) }

my $REDIS = 'env_gateway_redis 127.0.0.1:6379;';

sub server { EnvGwTest::location_conf(@_) }

sub good { $t->conf_ok(@_) }

sub bad {
    my ($name, $http, $re) = @_;
    my ($rc, $out, $path) = check_conf($http);
    isnt($rc, 0, "$name: rejected");
    like($out, $re, "$name: message") or diag($out);
    like($out, qr/\[emerg\].* in \Q$path\E:\d+/, "$name: names file and line");
}

good('baseline', server(<<'L'));
env_gateway on;
            env_gateway_account $arg_integrated_account_id required;
            env_gateway_token $http_x_api_key;
            env_gateway_hide_credentials off;
            env_gateway_log_level warn;
L
good('every env_gateway_redis parameter',
     server('env_gateway on;',
            'env_gateway_redis 127.0.0.1:6379 password=s3cret db=2 '
            . 'connect_timeout=200ms read_timeout=1s;'
            . "\n    env_gateway_redis unix:$dir/redis.sock;"
            . "\n    env_gateway_key_prefix myapp:;"));
good('env_gateway off needs no env_gateway_redis',
     server('env_gateway off;', ''));
good('no env_gateway at all needs no env_gateway_redis', server('', ''));
{
    my $out = good('env_gateway_token $cookie_NAME',
                   server('env_gateway on; env_gateway_token $cookie_tok;'));
    unlike($out, qr/\[warn\]/, 'a cookie credential can be hidden: no warning');
    $out = good('env_gateway_token from a variable that is not '
                . '$http_/$arg_/$cookie_', server('env_gateway on; '
                . 'env_gateway_token $remote_user;'));
    like($out, qr/\[warn\].*env_gateway_token.*hide_credentials/,
         'warns that hide_credentials cannot remove it');
}

bad('unknown env_gateway_redis parameter',
    server('env_gateway on;', 'env_gateway_redis 127.0.0.1:6379 bogus=1;'),
    qr/"env_gateway_redis" directive has an unknown parameter "bogus=" \(its value not shown\)/);
bad('read_timeout=xyz',
    server('env_gateway on;',
           'env_gateway_redis 127.0.0.1:6379 read_timeout=xyz;'),
    qr/"env_gateway_redis" directive has an invalid value in "read_timeout=xyz"/);
bad('connect_timeout=0',
    server('env_gateway on;',
           'env_gateway_redis 127.0.0.1:6379 connect_timeout=0;'),
    qr/has an invalid value in "connect_timeout=0"/);
bad('db=x',
    server('env_gateway on;', 'env_gateway_redis 127.0.0.1:6379 db=x;'),
    qr/has an invalid value in "db=x"/);
bad('empty password=',
    server('env_gateway on;', 'env_gateway_redis 127.0.0.1:6379 password=;'),
    qr/has an invalid value in "password="/);
bad('bad redis address',
    server('env_gateway on;', 'env_gateway_redis 127.0.0.1:99999;'),
    qr/has an invalid address "127\.0\.0\.1:99999"/);
bad('env_gateway_redis without an address',
    server('env_gateway on;', 'env_gateway_redis;'),
    qr/invalid number of arguments in "env_gateway_redis"/);
bad('env_gateway_redis in a server block', <<"H",
    $REDIS
    server {
        listen 127.0.0.1:8080;
        env_gateway_redis 127.0.0.1:6380;
    }
H
    qr/"env_gateway_redis" directive is not allowed here/);
bad('env_gateway maybe', server('env_gateway maybe;'),
    qr/invalid value "maybe" in "env_gateway" directive/);
bad('env_gateway_account $arg_a sometimes',
    server('env_gateway on; env_gateway_account $arg_a sometimes;'),
    qr/"env_gateway_account" directive has an invalid parameter "sometimes"/);
bad('env_gateway_account with three arguments',
    server('env_gateway on; env_gateway_account $arg_a required x;'),
    qr/invalid number of arguments in "env_gateway_account"/);
bad('duplicate env_gateway_account',
    server('env_gateway on; env_gateway_account $arg_a; '
           . 'env_gateway_account $arg_b;'),
    qr/"env_gateway_account" directive is duplicate/);
bad('env_gateway on without env_gateway_redis',
    server('env_gateway on;', ''),
    qr/env_gateway_redis/);
bad('env_gateway on in a server block without env_gateway_redis', <<'H',
    server {
        listen 127.0.0.1:8080;
        env_gateway on;
        location / { return 200; }
    }
H
    qr/env_gateway_redis/);
bad('duplicate env_gateway_token',
    server('env_gateway on; env_gateway_token $http_x_api_key; '
           . 'env_gateway_token $arg_api_key;'),
    qr/"env_gateway_token" directive is duplicate/);
bad('env_gateway_hide_credentials maybe',
    server('env_gateway on; env_gateway_hide_credentials maybe;'),
    qr/invalid value "maybe" in "env_gateway_hide_credentials"/);
bad('env_gateway_log_level loud',
    server('env_gateway on; env_gateway_log_level loud;'),
    qr/"env_gateway_log_level" directive has an invalid level "loud"/);
bad('key prefix with a space',
    server('env_gateway on;', "$REDIS\n    env_gateway_key_prefix \"a b:\";"),
    qr/"env_gateway_key_prefix" directive has an invalid prefix/);
bad('duplicate env_gateway_key_prefix',
    server('env_gateway on;', "$REDIS\n    env_gateway_key_prefix a:;"
           . "\n    env_gateway_key_prefix b:;"),
    qr/"env_gateway_key_prefix" directive is duplicate/);
bad('env_gateway_key_prefix in a location',
    server('env_gateway on; env_gateway_key_prefix a:;'),
    qr/"env_gateway_key_prefix" directive is not allowed here/);

$t->stop;
done_testing;
