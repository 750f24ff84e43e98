#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# Refusal bodies that are not the module's JSON.
#
# The route refusals name the request's resource and method in their
# message, and ngx_env_gateway_refuse() encodes it with json_pack("s"),
# which refuses a string that is not UTF-8.  A path value with a byte such
# as 0xff (nginx decodes "%ff" into $res / $rest, and path values may
# carry any byte above 0x7f) makes the encoding fail, and the client gets
# nginx's HTML 500 page instead of the 404 method_not_found.  The
# contract: a refusal body is always valid JSON and always the module's
# own, whatever bytes the request carried.
#
# Through real nginx and Redis.

use strict;
use warnings;

use lib 't/lib';
use EnvGwTest;
use Test::More;
use Digest::SHA qw(sha256_hex);

my $t = EnvGwTest->new;
$t->start_redis;

$t->start_nginx(<<'CONF');
    env_gateway_redis 127.0.0.1:%%REDIS%% connect_timeout=500ms read_timeout=2s;

    server {
        listen 127.0.0.1:%%PORT%%;

        location ~ ^/proxy/(?<res>[^/]+)(?:/(?<rest>[^/]+))?$ {
            env_gateway on;
            env_gateway_account $arg_integrated_account_id;
            env_gateway_route $res $rest;
            proxy_pass $env_gateway_upstream_url;
        }
    }
CONF

my $TD = 'egwtok_dev_' . substr(sha256_hex('attack-refusal-dev'), 0, 32);

$t->seed_gateway(envs => [qw(dev)], tokens => { dev => $TD });
$t->account('acc_dev', 'env_dev');
$t->put('integration:env_dev:hubspot', {
    upstream => 'http://127.0.0.1:' . $t->{backend_port},
    resources => { contacts => {
        list  => { method => 'GET',  path => '/crm/v3/objects/contacts' },
        merge => { method => 'POST', path => '/crm/v3/objects/contacts/merge' },
    } } });

my $A = [ Authorization => "Bearer $TD" ];
my $Q = '?integrated_account_id=acc_dev';

my $r = $t->http('GET', "/proxy/contacts$Q", $A);
is($r->{status}, 200, 'control: the list method passes');

$r = $t->http('POST', "/proxy/contacts/nosuch$Q", $A, '');
is($r->{status}, 404, 'control: an unknown custom method: 404');
is($r->{json}{error}, 'method_not_found', '... method_not_found JSON');

for my $c (
    [ 'POST', "/proxy/contacts/%ff$Q", 'a rest byte 0xff, POST' ],
    [ 'POST', "/proxy/contacts/a%c3$Q", 'a rest ending in half a UTF-8 '
                                          . 'sequence, POST' ],
    [ 'GET',  "/proxy/%ff$Q", 'a resource byte 0xff, GET' ],
    [ 'PUT',  "/proxy/%fe%ff$Q", 'a resource of bytes 0xfe 0xff, PUT' ],
) {
    my ($m, $path, $name) = @$c;
    $r = $t->http($m, $path, $A, $m eq 'GET' ? undef : '');
    is($r->{status}, 404, "$name: 404") or diag(substr($r->{raw}, 0, 200));
    is(ref $r->{json}, 'HASH', "$name: a JSON body");
    is($r->{json} && $r->{json}{error}, 'method_not_found',
       "$name: method_not_found");
}

$t->stop;
done_testing;
