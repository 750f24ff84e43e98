#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# env_gateway: 1200 sequential and 400 concurrent random (token, environment, account) requests checked
# against a Perl oracle of the contract, then the backend's log is checked
# for any request that paired an environment with another one's account.

use strict;
use warnings;

use lib 't/lib';
use EnvGwTest;
use Test::More;
use Digest::SHA qw(sha256_hex);
use JSON::PP;
use IO::Socket::INET;

my $N = 1200;

my $t = EnvGwTest->new;
$t->start_redis;
$t->start_nginx(<<'CONF');
    env_gateway_redis 127.0.0.1:%%REDIS%% connect_timeout=200ms read_timeout=300ms;
    upstream backend { server 127.0.0.1:%%BACKEND%%; keepalive 4; }
    server {
        listen 127.0.0.1:%%PORT%%;
        location / {
            env_gateway on;
            env_gateway_account $arg_integrated_account_id;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Environment-Id $env_gateway_environment_id;
            proxy_set_header X-Envgw-Vars "$env_gateway_environment_id|$env_gateway_account_id|$env_gateway_token_id";
            proxy_pass http://backend;
        }
    }
CONF

srand 42;

my %ENVS = (env_dev => 'development', env_stg => 'staging',
            env_prod => 'production');
my @ENVS = sort keys %ENVS;

$t->env($_, 'team_a', $ENVS{$_}) for @ENVS;
$t->env('env_b', 'team_b', 'production');

my (@tokens, %acct_env);

sub rnd_token { 'egw_' . join '', map { ('a'..'z', 0..9)[rand 36] } 1 .. 32 }

for my $env (@ENVS) {
    my %common = (team_id => 'team_a', environment_id => $env,
                  environment => $ENVS{$env});
    for my $i (1 .. 10) {
        my $id = "acc_${env}_$i";
        $t->account($id, $env, tenant_id => "tenant$i");
        $acct_env{$id} = $env;
    }
    for my $i (1 .. 10) {
        my $raw = rnd_token();
        $t->token($raw, token_id => "tok_${env}_$i", %common);
        push @tokens, { raw => $raw, id => "tok_${env}_$i", env => $env,
                        kind => 'data', valid => 1 };
    }
    my $raw = rnd_token();
    $t->token($raw, token_id => "tok_${env}_admin", %common, kind => 'admin');
    push @tokens, { raw => $raw, id => "tok_${env}_admin", env => $env,
                    kind => 'admin', valid => 1 };
    $raw = rnd_token();
    $t->token($raw, token_id => "tok_${env}_acct", %common, kind => 'account',
              integrated_account_id => "acc_${env}_1",
              expires_at => time + 3600);
    push @tokens, { raw => $raw, id => "tok_${env}_acct", env => $env,
                    kind => 'account', account => "acc_${env}_1", valid => 1 };
    $raw = rnd_token();
    $t->token($raw, token_id => "tok_${env}_revoked", %common,
              revoked => JSON::PP::true);
    push @tokens, { raw => $raw, env => $env, valid => 0 };
    $raw = rnd_token();
    $t->token($raw, token_id => "tok_${env}_expired", %common,
              expires_at => time - 60);
    push @tokens, { raw => $raw, env => $env, valid => 0 };
}
push @tokens, map { { raw => rnd_token(), valid => 0 } } 1 .. 4;   # unknown
push @tokens, { raw => undef, valid => 0, none => 1 };             # no token

# accounts: every real one, some that do not exist, one of another team
$t->account('acc_team_b', 'env_b');
$acct_env{acc_team_b} = 'env_b';
my @accounts = ((sort keys %acct_env), map({ "acc_nowhere_$_" } 1 .. 5));

# the contract, in Perl
sub oracle {
    my ($tok, $env_named, $acct) = @_;
    return (401, 'missing_token') if $tok->{none};
    return (401, 'invalid_token') unless $tok->{valid};
    my $env = $tok->{env};
    if (defined $env_named && $env_named ne $env) {
        return (403, 'environment_mismatch') unless $tok->{kind} eq 'admin';
        return (403, 'environment_mismatch') unless $ENVS{$env_named};
        $env = $env_named;
    }
    if ($tok->{kind} eq 'account') {
        return (404, 'integrated_account_not_found')
            if defined $acct && $acct ne $tok->{account};
        $acct = $tok->{account};
    }
    return (200, undef, $env, '') unless defined $acct;
    return (404, 'integrated_account_not_found')
        unless ($acct_env{$acct} // '') eq $env;
    return (200, undef, $env, $acct);
}

my (%want200, $n200, $mismatch, %codes);
my $start = time;

sub make_case {
    my ($i) = @_;
    my $tok = $tokens[rand @tokens];
    my $r = rand;
    my $acct = $r < 0.25 ? undef : $accounts[rand @accounts];
    $r = rand;
    my $env_named = $r < 0.75 ? undef
        : $r < 0.85 ? $tok->{env} // $ENVS[0]
        : (@ENVS, 'env_b', 'env_nowhere')[rand 5];
    my $via_header = rand() < 0.5;
    my @q;
    push @q, "integrated_account_id=$acct" if defined $acct;
    push @q, "environment_id=$env_named" if defined $env_named && !$via_header;
    my $path = "/r/$i" . (@q ? '?' . join('&', @q) : '');
    my @h = defined $env_named && $via_header
          ? ('X-Environment-Id' => $env_named) : ();
    push @h, Authorization => "Bearer $tok->{raw}" if defined $tok->{raw};
    return { i => $i, tok => $tok, acct => $acct, env_named => $env_named,
             path => $path, h => \@h };
}

sub check_case {
    my ($c, $res) = @_;
    my ($i, $tok, $acct, $env_named) = @$c{qw(i tok acct env_named)};
    my ($status, $code, $env, $acct_eff) = oracle($tok, $env_named, $acct);
    $codes{$status}++;

    my $desc = sprintf '#%d token=%s kind=%s env_named=%s account=%s',
        $i, $tok->{id} // ($tok->{none} ? 'none' : 'bad'),
        $tok->{kind} // '-', $env_named // '-', $acct // '-';

    if ($res->{status} != $status
        || ($code && (($res->{json} || {})->{error} // '') ne $code))
    {
        $mismatch++;
        fail("$desc: want $status " . ($code // '') . ", got "
             . "$res->{status} $res->{body}");
        return;
    }

    return unless $status == 200;

    $n200++;
    $want200{$i} = 1;
    my $want = "env=$env auth= key= vars=$env|$acct_eff|$tok->{id}";
    if (index($res->{body}, $want) < 0) {
        $mismatch++;
        fail("$desc: want '$want', got $res->{body}");
    }
}

# phase 1: sequential, one connection per request
for my $i (1 .. $N) {
    my $c = make_case($i);
    check_case($c, $t->http('GET', $c->{path}, $c->{h}));
}

# phase 2: batches of 25 requests in flight at once, so that lookups of
# different requests share round trips and in-flight GETs
my $M = 400;
for (my $b = 0; $b < $M; $b += 25) {
    my @batch = map { make_case($N + $b + $_) } 1 .. 25;
    my @socks;
    for my $c (@batch) {
        my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$t->{port}",
                                      Proto => 'tcp') or die "connect: $!";
        $s->autoflush(1);
        my $req = "GET $c->{path} HTTP/1.1\r\nHost: localhost\r\n"
                . "Connection: close\r\n";
        my @h = @{ $c->{h} };
        while (my ($k, $v) = splice @h, 0, 2) { $req .= "$k: $v\r\n" }
        print $s "$req\r\n";
        push @socks, $s;
    }
    for my $k (0 .. $#batch) {
        local $/;
        my $s = $socks[$k];
        my $raw = <$s> // '';
        close $s;
        check_case($batch[$k], EnvGwTest::parse_response($raw));
    }
}
$N += $M;

my $elapsed = time - $start;
ok(!$mismatch, "$N random requests match the oracle")
    and diag(sprintf "%d requests in %d s: %s", $N, $elapsed,
             join ', ', map { "$_ x$codes{$_}" } sort keys %codes);
ok($elapsed < 60, 'well under a minute');
ok($codes{200} && $codes{401} && $codes{403} && $codes{404},
   'the random mix covers 200, 401, 403 and 404');
ok($n200 >= 100, "a fair share of passes ($n200)");

# --- the backend's view ---------------------------------------------------------

my @lines = grep { length } split /\n/, $t->backend_log;
is(scalar @lines, $n200, 'backend requests = oracle 200 count');

my (%seen, @cross, @noenv);
for my $l (@lines) {
    my ($uri, $env) = $l =~ m{^GET (\S+) env=(\S*) } or next;
    my ($i) = $uri =~ m{^/r/(\d+)};
    $seen{$i}++ if defined $i;
    push @noenv, $l unless $ENVS{$env};
    my ($acct) = $uri =~ /[?&]integrated_account_id=([^&]*)/;
    next unless defined $acct;
    push @cross, $l if ($acct_env{$acct} // '') ne $env;
}
ok(!@cross, 'no backend request pairs an environment with an account '
          . 'of another environment') or diag(join "\n", @cross[0 .. 9]);
ok(!@noenv, 'every backend request carries a known environment')
    or diag(join "\n", @noenv[0 .. 9]);
is_deeply([ sort { $a <=> $b } keys %seen ],
          [ sort { $a <=> $b } keys %want200 ],
          'exactly the requests the oracle allowed reached the backend');
ok(!grep({ $_ > 1 } values %seen), 'each at most once');

my $blog = $t->backend_log . $t->slurp('error.log');
my @leak = grep { defined $_->{raw} && index($blog, $_->{raw}) >= 0 } @tokens;
ok(!@leak, 'no raw token in the backend log or error.log');

$t->stop;
done_testing;
