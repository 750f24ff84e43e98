#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# An operator's mistakes in a directive that carries the Redis password
# (a misspelled parameter name, a space after "password=", a stray
# parameter): `nginx -t` refuses the configuration and says where, and
# neither its output nor the error log holds the password.  The same for
# envgw: a misspelled --password= is an unknown option named without its
# value.

use strict;
use warnings;

use lib 't/lib';
use EnvGwTest;
use EnvGwCli;
use Test::More;

my $t = EnvGwTest->new;
my $SECRET = 'zq9pw' . int(rand(1e9));

for my $case (
    [ "pasword=$SECRET", 'a misspelled password=' ],
    [ "Password=$SECRET", 'password= in another case' ],
    [ "password:$SECRET", 'password: for password=' ],
    [ "password= $SECRET", 'a space after password=' ],
    [ "password=$SECRET extra", 'a stray parameter after the password' ],
    [ "password=$SECRET db=x", 'an invalid db= beside the password' ],
    [ "$SECRET", 'the password alone' ])
{
    my ($params, $name) = @$case;
    unlink $t->dir . '/t.log';
    my ($rc, $out, $path, $line) = $t->check_conf(<<"CONF");
    env_gateway_redis 127.0.0.1:6379 $params;   # <-
    server { listen 127.0.0.1:1; location / { env_gateway on; } }
CONF
    isnt($rc, 0, "$name: nginx -t fails");
    like($out, qr/env_gateway_redis.*in \Q$path\E:$line/,
         "$name: the message names the directive and its line");
    unlike($out, qr/$SECRET/, "$name: nginx -t prints no password");
    unlike($t->slurp('t.log') . $t->slurp("case$t->{conf_case}-error.log"),
           qr/$SECRET/, "$name: no password in the error log");
}

my $cli = EnvGwCli->new($t);
for my $args ([ "--pasword=$SECRET", 'token', 'list', 'env_dev' ],
              [ 'token', 'list', 'env_dev', "--Password=$SECRET" ],
              [ 'credentials', 'set', 'acc', "--feild=api_key=$SECRET" ])
{
    my $r = $cli->run({}, @$args);
    my $name = "envgw " . join(' ', map { s/$SECRET/SECRET/r } @$args);
    is($r->{rc}, 2, "$name: a usage error");
    like($r->{err}, qr/unknown option '--\w+=' \(its value not shown\)/,
         "$name: names the option");
    unlike($r->{out} . $r->{err}, qr/$SECRET/, "$name: prints no value");
}

done_testing;
