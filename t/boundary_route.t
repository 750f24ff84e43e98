#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# The verb at the boundary: on a route location the upstream request uses
# the method record's declared verb (a client's PUT to an "update" declared
# PATCH reaches the upstream as PATCH, with its body), and
# $env_gateway_upstream_method holds that verb.  The upstream is an echo
# server that returns the request line, the headers and the body.

use strict;
use warnings;

use lib 't/lib';
use EnvGwTest qw(refused);
use Test::More;


my $t = EnvGwTest->new;
$t->start_redis;
my $echo = $t->start_echo;
my $tok = $t->seed_two_envs;
my $dev = $tok->{dev};

sub m_ { return { method => $_[0], path => $_[1] } }

$t->put('integration:env_dev:hubspot', {
    upstream => "http://127.0.0.1:$echo",
    resources => {
        contacts => {
            list   => m_('GET', '/crm/contacts'),
            get    => m_('GET', '/crm/contacts/{id}'),
            create => m_('POST', '/crm/contacts'),
            update => m_('PATCH', '/crm/contacts/{id}'),
            delete => m_('DELETE', '/crm/contacts/{id}'),
            merge  => m_('POST', '/crm/contacts/merge'),
        },
        deals => {
            update => m_('PUT', '/crm/deals/{id}'),
        },
    },
});
$t->account('acc_dev', 'env_dev', integration => 'hubspot',
            tenant_id => 'tenant_dev');

$t->start_nginx(<<"CONF");
    env_gateway_redis 127.0.0.1:%%REDIS%%;
    log_format um '\$request|\$env_gateway_upstream_method';
    server {
        listen 127.0.0.1:%%PORT%%;
        location ~ ^/proxy/(?<res>[^/]+)(?:/(?<rest>[^/]+))?\$ {
            env_gateway on;
            env_gateway_account \$arg_integrated_account_id;
            env_gateway_route \$res \$rest;
            access_log %%DIR%%/um.log um;
            add_header X-Upstream-Method "\$env_gateway_upstream_method"
                       always;
            proxy_pass \$env_gateway_upstream_url;
        }
    }
CONF

my $seen = 0;

sub upstream {
    my ($name) = @_;
    my @r = $t->echo_requests;
    my $n = @r - $seen;
    $seen = @r;
    is($n, 1, "$name: one request upstream");
    return $n == 1 ? $r[-1] : undef;
}

sub call {
    my ($verb, $path, $body) = @_;
    return $t->http($verb, $path,
                    [ Authorization => "Bearer $dev",
                      (defined $body
                       ? ('Content-Type' => 'application/json') : ()) ],
                    $body);
}

my $q = '?integrated_account_id=acc_dev';

for my $case (
    # client verb, path, declared verb, upstream path
    [ 'PUT',    "/proxy/contacts/5$q", 'PATCH',  '/crm/contacts/5' ],
    [ 'PATCH',  "/proxy/contacts/5$q", 'PATCH',  '/crm/contacts/5' ],
    [ 'PATCH',  "/proxy/deals/7$q",    'PUT',    '/crm/deals/7' ],
    [ 'PUT',    "/proxy/deals/7$q",    'PUT',    '/crm/deals/7' ],
    [ 'GET',    "/proxy/contacts/5$q", 'GET',    '/crm/contacts/5' ],
    [ 'DELETE', "/proxy/contacts/5$q", 'DELETE', '/crm/contacts/5' ],
    [ 'POST',   "/proxy/contacts$q",   'POST',   '/crm/contacts' ],
    [ 'POST',   "/proxy/contacts/merge$q", 'POST', '/crm/contacts/merge' ],
    )
{
    my ($verb, $path, $declared, $upath) = @$case;
    my $name = "$verb $path";
    my $body = $verb =~ /^(PUT|PATCH|POST)$/ ? '{"name":"x"}' : undef;

    my $r = call($verb, $path, $body);
    is($r->{status}, 200, "$name: 200") or diag($r->{raw});
    is($r->{headers}{'x-upstream-method'}, $declared,
       "$name: \$env_gateway_upstream_method is $declared");
    my $u = upstream($name);
    next unless $u;
    is($u->{method}, $declared, "$name: upstream verb $declared");
    is($u->{uri}, $upath, "$name: upstream path");
    is($u->{body}, $body // '', "$name: upstream body") if defined $body;
}

# a custom method called with another verb is refused, not rewritten
my $r = call('PUT', "/proxy/contacts/merge$q", '{}');
refused($r, 405, 'method_not_allowed', 'PUT to a POST custom method');
is($t->echo_count - $seen, 0, 'PUT to a POST custom method: nothing upstream');

# the variable is in the access log too, beside the client's request line
$t->stop;
my @log = split /\n/, $t->slurp('um.log');
like($log[0] // '', qr{^PUT /proxy/contacts/5\S* HTTP/1\.1\|PATCH\z},
     'access log: the client PUT in \$request, PATCH upstream');

done_testing;
