#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# Rate limits under attack, through real nginx and Redis: a request is
# counted once whatever internal redirects and subrequests it makes (not
# twice, not zero times), and the limit of the location it ends in holds
# even when it got there from a location with a looser one; many clients
# at once on two workers get the quota, not more.

use strict;
use warnings;

use lib 't/lib';
use EnvGwTest;
use EnvGwLimit;
use Test::More;
use POSIX ();
use Time::HiRes qw(time);

my $t = EnvGwTest->new;
$t->start_redis;

$t->start_nginx(<<'CONF', workers => 2);
    env_gateway_redis 127.0.0.1:%%REDIS%%;
    env_gateway_limit_zone zone=envgw_limits:1m;

    server {
        listen 127.0.0.1:%%PORT%%;

        # the same limit on both sides of an internal redirect
        location /same/ {
            env_gateway on;
            env_gateway_limit token 3r/h;
            try_files /nonexistent @same;
        }
        location @same {
            env_gateway on;
            env_gateway_limit token 3r/h;
            proxy_pass http://127.0.0.1:%%BACKEND%%;
        }

        # a loose location sending its requests to a tight one
        location /loose/ {
            env_gateway on;
            env_gateway_limit token 100r/h;
            try_files /nonexistent @tight;
        }
        location @tight {
            env_gateway on;
            env_gateway_limit token 3r/h;
            proxy_pass http://127.0.0.1:%%BACKEND%%;
        }

        # an auth_request into a gated location with the same limit
        location /authreq/ {
            env_gateway on;
            env_gateway_limit token 3r/h;
            auth_request /check;
            proxy_pass http://127.0.0.1:%%BACKEND%%;
        }
        location = /check {
            internal;
            env_gateway on;
            env_gateway_limit token 3r/h;
            env_gateway_authorize;
        }

        # a location without the gateway asking a gated one
        location /ungated/ {
            auth_request /check_only;
            proxy_pass http://127.0.0.1:%%BACKEND%%;
        }
        location = /check_only {
            internal;
            env_gateway on;
            env_gateway_limit token 3r/h;
            env_gateway_authorize;
        }

        # many clients at once, two workers
        location /conc/ {
            env_gateway on;
            env_gateway_limit token 10r/h;
            proxy_pass http://127.0.0.1:%%BACKEND%%;
        }

        # a mirror into a gated location with the same limit
        location /mirrored/ {
            env_gateway on;
            env_gateway_limit token 3r/h;
            mirror /shadow;
            proxy_pass http://127.0.0.1:%%BACKEND%%;
        }
        location = /shadow {
            internal;
            env_gateway on;
            env_gateway_limit token 3r/h;
            proxy_pass http://127.0.0.1:%%BACKEND%%/shadow;
        }
    }
CONF

$t->env('env_prod', 'team_a', 'prod');

for my $case (['same', 'an internal redirect to the same limit'],
              ['loose', 'a redirect from a loose limit to a tight one'],
              ['authreq', 'auth_request into the same limit'],
              ['mirrored', 'a mirror into the same limit'],
              ['ungated', 'auth_request from a location without the gateway'])
{
    my ($p, $name) = @$case;
    my $tok = limit_token($t, $p);
    my ($rs, $t0, $t1) = burst($t, 5, "/$p/x", $tok);
    my $quota = same_window($t0, $t1, 3600) ? '3' : '3 or 4';
    my $refused = $p eq 'ungated' ? 500 : 429;   # auth_request's answer
    like(statuses($rs), qr/^200,200,200,(?:200,)?$refused/,
         "$name: $quota of 5 passed, then $refused");
}

# 4 clients x 8 requests at once against 10r/h, on two workers
my $tok = limit_token($t, 'conc');
my $t0 = time;
my @pids;
for my $c (1 .. 4) {
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        my @st = map { $t->get('/conc/x', $tok)->{status} } 1 .. 8;
        open my $fh, '>', $t->dir . "/conc.$c" or die;
        print $fh join(',', @st);
        close $fh;
        POSIX::_exit(0);
    }
    push @pids, $pid;
}
waitpid $_, 0 for @pids;
my @all = map { split /,/, $t->slurp("conc.$_") } 1 .. 4;
my $passed = grep { $_ == 200 } @all;
my $quota = same_window($t0, time, 3600) ? 10 : 11;
ok($passed == 10 || $passed == $quota,
   "concurrent clients on two workers: $passed of 32 passed (the quota 10)");
is(scalar(grep { $_ != 200 && $_ != 429 } @all), 0,
   'concurrent clients: every other answer is 429');

done_testing;
