#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# Bodies are not invited before the token is checked: for a request with
# "Expect: 100-continue" the first thing a refused client reads is its
# refusal, never "HTTP/1.1 100 Continue"; a client whose token passes is
# invited (100 Continue) and its body reaches the upstream, also on a
# location that reads the account from the body.  With Redis down the
# token cannot be checked: 503 first, no invitation.

use strict;
use warnings;

use lib 't/lib';
use EnvGwTest qw(refused);
use Test::More;
use IO::Socket::INET;
use JSON::PP;


my $t = EnvGwTest->new;
$t->start_redis;
my $echo = $t->start_echo;
my $tok = $t->seed_two_envs;
my $dev = $tok->{dev};
my $revoked = $t->token('egw_revoked_' . 'a' x 24, token_id => 'tok_rev',
    team_id => 'team_a', environment_id => 'env_dev',
    environment => 'development', revoked => JSON::PP::true);

$t->start_nginx(<<"CONF");
    env_gateway_redis 127.0.0.1:%%REDIS%% connect_timeout=200ms read_timeout=300ms;
    server {
        listen 127.0.0.1:%%PORT%%;
        location /g/ {
            env_gateway on;
            env_gateway_account \$arg_integrated_account_id;
            proxy_pass http://127.0.0.1:$echo;
        }
        location /b/ {
            env_gateway on;
            env_gateway_account \$arg_integrated_account_id;
            env_gateway_account_body_field integrated_account_id;
            proxy_pass http://127.0.0.1:$echo;
        }
    }
CONF

# read from the socket until $re matches what was read, or 5 s pass
sub read_until {
    my ($s, $buf, $re) = @_;
    eval {
        local $SIG{ALRM} = sub { die "timeout\n" };
        alarm 5;
        while ($$buf !~ $re) {
            my $n = sysread($s, $$buf, 65536, length $$buf);
            last unless $n;
        }
        alarm 0;
    };
    alarm 0;
}

# POST with Expect: 100-continue, the body sent only when invited; returns
# (the first status line read, the final response parsed)
sub expect_post {
    my ($path, $token, $body) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1:' . $t->{port},
                                  Proto => 'tcp', Timeout => 5) or die;
    binmode $s;
    print $s "POST $path HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
           . (defined $token ? "Authorization: Bearer $token\r\n" : '')
           . "Content-Type: application/json\r\n"
           . 'Content-Length: ' . length($body) . "\r\n"
           . "Expect: 100-continue\r\n\r\n";

    my $buf = '';
    read_until($s, \$buf, qr/\r\n/);
    my ($first) = $buf =~ /^([^\r\n]*)/;
    $first //= '';

    if ($first =~ m{^HTTP/1\.1 100 }) {
        read_until($s, \$buf, qr/\r\n\r\n/);
        $buf =~ s/^.*?\r\n\r\n//s;
        print $s $body;
    }

    # the whole final answer: its head, then Content-Length bytes (nginx
    # may keep the connection open to discard a body never sent)
    read_until($s, \$buf, qr/\r\n\r\n/);
    my ($len) = $buf =~ /^Content-Length:\s*(\d+)/mi;
    if (defined $len) {
        read_until($s, \$buf, qr/\r\n\r\n[\s\S]{$len}/);
    } else {
        read_until($s, \$buf, qr/(?!)/);
    }
    close $s;
    return ($first, EnvGwTest::parse_response($buf));
}

my $seen = 0;

sub news {
    my $n = $t->echo_count;
    my $d = $n - $seen;
    $seen = $n;
    return $d;
}

my $bad = 'egw_unknown_' . 'f' x 24;
my $dev_body = '{"integrated_account_id":"acc_dev"}';
my $prod_body = '{"integrated_account_id":"acc_prod"}';

# --- refused: the refusal first, never 100 Continue ---------------------------

for my $loc ('/g/', '/b/') {
    for my $case ([ 'unknown token', $bad, 401, 'invalid_token' ],
                  [ 'revoked token', $revoked, 401, 'invalid_token' ],
                  [ 'no token', undef, 401, 'missing_token' ])
    {
        my ($what, $token, $status, $code) = @$case;
        my $name = "$loc, $what";
        my ($first, $r) = expect_post("${loc}x", $token, $dev_body);
        like($first, qr{^HTTP/1\.1 $status }, "$name: the refusal first")
            or diag($first);
        refused($r, $status, $code, $name);
        is(news(), 0, "$name: nothing upstream");
    }
}

# a refusal known before the body: the account in the query
my ($first, $r) = expect_post('/g/x?integrated_account_id=acc_prod', $dev,
                              $dev_body);
like($first, qr{^HTTP/1\.1 404 }, '/g/, prod account in the query: 404 first');
refused($r, 404, 'integrated_account_not_found',
           '/g/, prod account in the query');
is(news(), 0, '/g/, prod account in the query: nothing upstream');

# --- passed: invited, the body upstream -------------------------------------

($first, $r) = expect_post('/g/x', $dev, $dev_body);
like($first, qr{^HTTP/1\.1 100 }, '/g/, valid token: 100 Continue');
is($r->{status}, 200, '/g/, valid token: 200');
is(news(), 1, '/g/, valid token: upstream');
like($r->{body}, qr/\Q$dev_body\E\z/, '/g/, valid token: the body upstream');

($first, $r) = expect_post('/b/x', $dev, $dev_body);
like($first, qr{^HTTP/1\.1 100 },
     '/b/, valid token: invited after the token check');
is($r->{status}, 200, '/b/, valid token, dev account in the body: 200');
is(news(), 1, '/b/, valid token, dev account in the body: upstream');
like($r->{body}, qr/\Q$dev_body\E\z/, '/b/: the body upstream');

# the account is in the body: it can only be refused once the body is read
($first, $r) = expect_post('/b/x', $dev, $prod_body);
like($first, qr{^HTTP/1\.1 100 }, '/b/, prod account in the body: invited');
refused($r, 404, 'integrated_account_not_found',
           '/b/, prod account in the body');
is(news(), 0, '/b/, prod account in the body: nothing upstream');

# --- Redis down: the token cannot be checked, the body is not invited --------

$t->stop_redis;

for my $loc ('/g/', '/b/') {
    ($first, $r) = expect_post("${loc}x", $dev, $dev_body);
    like($first, qr{^HTTP/1\.1 503 }, "$loc, Redis down: 503 first")
        or diag($first);
    refused($r, 503, 'gateway_unavailable', "$loc, Redis down");
    is(news(), 0, "$loc, Redis down: nothing upstream");
}

$t->stop;
done_testing;
