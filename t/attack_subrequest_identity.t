#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# Subrequests into a gated location reach the upstream without the identity
# headers.
#
# For a subrequest, ngx_env_gateway_own_headers() gives the request a
# header list of its own: it builds an ngx_list_t on its stack and copies
# the struct into r->headers_in.headers.  The copy's "last" still points at
# the stack variable's part, so every later ngx_list_push() (the identity
# headers of ngx_env_gateway_identity()) writes through a pointer into a
# dead stack frame: the pushed headers are not in the list the upstream
# module walks (so X-Environment-Id, X-Integrated-Account-Id, ... never
# reach the backend), and the "nelts++" lands on whatever the stack holds
# then (AddressSanitizer: stack-use-after-return).
#
# Shown with an SSI "include virtual" and a mirror into gated locations
# that proxy to the harness's backend, which echoes the X-Environment-Id it
# got.  The correct behaviour: a subrequest the gateway passed carries the
# identity it was checked with, like a main request.

use strict;
use warnings;

use lib 't/lib';
use EnvGwTest;
use Test::More;
use Digest::SHA qw(sha256_hex);
use Time::HiRes qw(sleep time);

my $t = EnvGwTest->new;
$t->start_redis;

$t->start_nginx(<<'CONF');
    env_gateway_redis 127.0.0.1:%%REDIS%% connect_timeout=500ms read_timeout=2s;

    server {
        listen 127.0.0.1:%%PORT%%;

        # a page assembled with SSI from a gated location
        location /page/ {
            ssi on;
            default_type text/html;
            return 200 '<!--# include virtual="/inc/x?integrated_account_id=$arg_integrated_account_id" -->';
        }
        location /inc/ {
            env_gateway on;
            env_gateway_account $arg_integrated_account_id;
            proxy_pass http://127.0.0.1:%%BACKEND%%;
        }

        # a mirror into a gated location
        location /mirrored/ {
            env_gateway on;
            env_gateway_account $arg_integrated_account_id;
            mirror /_mirror;
            proxy_pass http://127.0.0.1:%%BACKEND%%;
        }
        location = /_mirror {
            internal;
            env_gateway on;
            env_gateway_account $arg_integrated_account_id;
            proxy_pass http://127.0.0.1:%%BACKEND%%/mirror$request_uri;
        }
    }
CONF

my $TD = 'egwtok_dev_' . substr(sha256_hex('attack-sri-dev'), 0, 32);

$t->seed_gateway(envs => [qw(dev)], tokens => { dev => $TD });
$t->account('acc_dev', 'env_dev');

# control: a main request through /inc/ carries the identity
my $r = $t->get('/inc/x?integrated_account_id=acc_dev', $TD);
like($r->{body}, qr{^backend GET /inc/x\S* env=env_dev }m,
     'control: a main request carries X-Environment-Id');

# SSI from an ungated page: the subrequest is checked with the token the
# page request carries, and passes
$r = $t->get('/page/x?integrated_account_id=acc_dev', $TD);
is($r->{status}, 200, 'SSI page: 200');
like($r->{body}, qr{backend GET /inc/x}, 'SSI page: the included '
                                          . 'subrequest reached the backend');
like($r->{body}, qr{backend GET /inc/x\S* env=env_dev },
     'SSI page: the included subrequest carried X-Environment-Id')
    or diag($r->{body});
unlike($r->{body}, qr/auth=Bearer/, 'SSI page: without the credential');

# a refused subrequest stays refused (held)
$r = $t->get('/page/x?integrated_account_id=acc_other', $TD);
unlike($r->{body}, qr{backend GET /inc/}, 'SSI page, unknown account: the '
                                           . 'subrequest does not pass');

# mirror into a gated location
my $n = () = $t->backend_log =~ /\n/g;
$r = $t->get('/mirrored/x?integrated_account_id=acc_dev', $TD);
is($r->{status}, 200, 'mirrored request: 200');

my $end = time + 5;
my @mirror;
while (time < $end) {
    @mirror = grep { m{^GET /mirror/} } split /\n/, $t->backend_log;
    last if @mirror;
    sleep 0.05;
}
is(scalar @mirror, 1, 'the mirror subrequest reached the backend');
like($mirror[0] // '', qr/ env=env_dev /,
     'the mirror subrequest carried X-Environment-Id')
    or diag($mirror[0]);
unlike($mirror[0] // '', qr/auth=Bearer/, '... and not the credential');

$t->stop;
done_testing;
