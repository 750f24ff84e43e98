#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# env_gateway_limit on one node (sync=off): bursts against small limits
# pass exactly the quota within a window, then 429 rate_limited with
# Retry-After; RateLimit-Limit stays the quota, RateLimit-Remaining counts
# down to 0, RateLimit-Reset lies within the window, on responses of
# proxy_pass and of env_gateway_authorize alike; burst= adds to the quota;
# an account limit is shared by every token naming the account, a tenant
# limit by the tenant's accounts, a team limit by the team's tokens in all
# its environments, an environment limit by its tokens; the tightest limit
# is the one announced; a storm of 401s costs no limit; what was refused
# never reaches the backend; the metrics count refusals by key, and the
# refusal is logged.

use strict;
use warnings;

use lib 't/lib';
use EnvGwTest qw(refused);
use EnvGwLimit;
use Test::More;

my $t = EnvGwTest->new;
$t->start_redis;

my $HOUR = 3600;

$t->start_nginx(<<'CONF');
    env_gateway_redis 127.0.0.1:%%REDIS%%;
    env_gateway_limit_zone zone=envgw_limits:1m;

    server {
        listen 127.0.0.1:%%PORT%%;

        location /tok/ {
            env_gateway on;
            env_gateway_limit token 5r/h;
            proxy_pass http://127.0.0.1:%%BACKEND%%;
        }
        location /auth/ {
            env_gateway on;
            env_gateway_limit token 3r/h;
            env_gateway_authorize;
        }
        location /burst/ {
            env_gateway on;
            env_gateway_limit token 3r/h burst=2;
            proxy_pass http://127.0.0.1:%%BACKEND%%;
        }
        location /acct/ {
            env_gateway on;
            env_gateway_account $arg_integrated_account_id required;
            env_gateway_limit account 4r/h;
            proxy_pass http://127.0.0.1:%%BACKEND%%;
        }
        location /tenant/ {
            env_gateway on;
            env_gateway_account $arg_integrated_account_id required;
            env_gateway_limit tenant 3r/h;
            proxy_pass http://127.0.0.1:%%BACKEND%%;
        }
        location /team/ {
            env_gateway on;
            env_gateway_limit team 3r/h;
            proxy_pass http://127.0.0.1:%%BACKEND%%;
        }
        location /env/ {
            env_gateway on;
            env_gateway_limit environment 3r/h;
            proxy_pass http://127.0.0.1:%%BACKEND%%;
        }
        location /tight/ {
            env_gateway on;
            env_gateway_limit token 10r/h;
            env_gateway_limit environment 3r/h;
            proxy_pass http://127.0.0.1:%%BACKEND%%;
        }
        location /free/ {
            env_gateway on;
            proxy_pass http://127.0.0.1:%%BACKEND%%;
        }
        location /own/ {
            env_gateway on;
            env_gateway_limit token 5r/h;
            proxy_pass http://127.0.0.1:%%PORT%%/upstream/;
        }
        location /upstream/ {
            add_header RateLimit-Limit 999;
            add_header ratelimit-remaining 999;
            add_header RateLimit-Reset 999;
            return 200 "upstream\n";
        }
        location = /env_gateway/metrics { env_gateway_metrics; }
    }
CONF

$t->env("env_$_", 'team_a', $_) for qw(prod dev);
$t->env('env_b', 'team_b', 'prod');

# the backend's requests of a path prefix
sub backend_count {
    my ($prefix) = @_;
    return scalar grep { m{^GET \Q$prefix\E} } split /\n/, $t->backend_log;
}

# the RateLimit-* headers of a response
sub rl {
    my ($r) = @_;
    return map { $r->{headers}{"ratelimit-$_"} } qw(limit remaining reset);
}

# a burst of $n against a quota of $quota in a window of $w s: the passes
# are the quota, then 429s; the headers consistent.  Returns the responses.
sub quota_burst {
    my ($name, $path, $token, $n, $quota, $ok, %opt) = @_;
    my ($rs, $t0, $t1) = burst($t, $n, $path, $token, %opt);
    my $w = $opt{window} || $HOUR;
    my $passed = count_of($rs, $ok);

    if (same_window($t0, $t1, $w)) {
        is($passed, $quota, "$name: $quota of $n passed");
    } else {
        # a window boundary in the burst: the estimate may admit one more
        ok($passed >= $quota && $passed <= $quota + 1,
           "$name: $passed of $n passed, across a window boundary");
    }

    is(statuses($rs), join(',', ($ok) x $passed, (429) x ($n - $passed)),
       "$name: the passes come first");

    my @remaining;
    for my $i (0 .. $#$rs) {
        my ($limit, $rem, $reset) = rl($rs->[$i]);
        my $label = "$name: response " . ($i + 1);
        is($limit, $quota, "$label: RateLimit-Limit $quota") or last;
        like($rem // '', qr/^\d+$/, "$label: RateLimit-Remaining") or last;
        push @remaining, $rem;
        ok(defined $reset && $reset =~ /^\d+$/ && $reset >= 1
           && $reset <= ($rs->[$i]{status} == 429 ? 2 * $w : $w),
           "$label: RateLimit-Reset within the window ($reset)");
    }

    is(join(',', @remaining[0 .. $passed - 1]),
       join(',', reverse 0 .. $quota - 1),
       "$name: Remaining counts down to 0") if $passed == $quota;
    is($remaining[-1], 0, "$name: Remaining 0 when refused")
        if $passed < $n;

    for my $r (grep { $_->{status} == 429 } @$rs) {
        refused($r, 429, 'rate_limited', "$name: refused");
        my $ra = $r->{headers}{'retry-after'} // 0;
        ok($ra >= 1 && $ra <= 2 * $w, "$name: Retry-After $ra in 1.." . 2 * $w);
        last;
    }
    return $rs;
}

# --- a token limit, with proxy_pass and with another content handler -------

my $A = limit_token($t, 'a');
quota_burst('token, proxy_pass', '/tok/x', $A, 7, 5, 200);
is(backend_count('/tok/'), 5, 'token: only the admitted requests reached '
   . 'the backend');

my $B = limit_token($t, 'b');
quota_burst('token, env_gateway_authorize', '/auth/x', $B, 5, 3, 204);

# another token has its own count
my $C = limit_token($t, 'c');
is($t->get('/tok/y', $C)->{status}, 200, 'another token: its own count');

# a location without limits: no headers
my $r = $t->get('/free/x', $A);
is($r->{status}, 200, 'no limit: passed');
ok(!exists $r->{headers}{'ratelimit-limit'}, 'no limit: no RateLimit-Limit');

# an upstream's own RateLimit-* headers are replaced by the gateway's
$r = $t->get('/own/x', limit_token($t, 'own'));
is($r->{status}, 200, 'upstream RateLimit-*: passed');
my @names = $r->{raw} =~ /^(ratelimit-\w+):/mgi;
is(scalar @names, 3, 'upstream RateLimit-*: three headers, not six');
is($r->{headers}{'ratelimit-limit'}, 5, 'upstream RateLimit-*: the gateway\'s');
is($r->{headers}{'ratelimit-remaining'}, 4, '... Remaining');

# --- burst= ------------------------------------------------------------------

my $D = limit_token($t, 'd');
quota_burst('burst=2 on 3r/h', '/burst/x', $D, 7, 5, 200);

# --- a 401 storm costs nothing ----------------------------------------------

my $E = limit_token($t, 'e');
for my $i (1 .. 20) {
    my $r = $t->get('/env/x', $i % 2 ? "egw_unknown_$i" : undef);
    is($r->{status}, 401, "401 storm $i: 401") or last;
    ok(!exists $r->{headers}{'ratelimit-limit'}, "401 storm $i: no headers")
        or last;
}
quota_burst('environment after a 401 storm', '/env/x', $E, 4, 3, 200);

# --- an environment limit: every token of the environment ------------------

my $F = limit_token($t, 'f');
is($t->get('/env/x', $F)->{status}, 429,
   'environment: another token of the exhausted environment is refused');
my $G = limit_token($t, 'g', env => 'dev');
is($t->get('/env/x', $G)->{status}, 200,
   'environment: a token of another environment has its own count');

# --- an account limit shared by several tokens ------------------------------

$t->account('acc_one', 'env_prod', tenant_id => 'acme');
$t->account('acc_two', 'env_prod', tenant_id => 'other');
my @toks = map { limit_token($t, "acct$_") } 1 .. 3;
my @st = map { $t->get('/acct/x?integrated_account_id=acc_one',
                       $toks[$_ % 3])->{status} } 0 .. 5;
is(join(',', @st), '200,200,200,200,429,429',
   'account: 4 requests of 3 tokens pass, then every token is refused');
is($t->get('/acct/x?integrated_account_id=acc_two', $toks[0])->{status}, 200,
   'account: another account has its own count');
is($t->get('/acct/x?integrated_account_id=acc_none', $toks[0])->{status}, 404,
   'account: an unknown account is 404, not a limit');

# --- a tenant limit: the tenant's accounts ------------------------------------

$t->account('acc_t1', 'env_prod', tenant_id => 'globex',
            integration => 'hubspot');
$t->account('acc_t2', 'env_prod', tenant_id => 'globex',
            integration => 'salesforce');
$t->account('acc_t3', 'env_dev', tenant_id => 'globex');
my $H = limit_token($t, 'h');
@st = map { $t->get("/tenant/x?integrated_account_id=acc_t$_", $H)->{status} }
      (1, 2, 1, 2);
is(join(',', @st), '200,200,200,429',
   'tenant: two accounts of one tenant share its limit');
my $I = limit_token($t, 'i', env => 'dev');
is($t->get('/tenant/x?integrated_account_id=acc_t3', $I)->{status}, 200,
   'tenant: the same tenant_id in another environment is another tenant');

# --- a team limit: its tokens in every environment --------------------------

my @team = (limit_token($t, 'team1'), limit_token($t, 'team2', env => 'dev'));
@st = map { $t->get('/team/x', $team[$_ % 2])->{status} } 0 .. 3;
is(join(',', @st), '200,200,200,429',
   'team: tokens of two environments share the team limit');
my $J = limit_token($t, 'j', team_id => 'team_b', env => 'b');
is($t->get('/team/x', $J)->{status}, 200, 'team: another team has its own');

# --- the tightest of several limits -----------------------------------------

my $K = limit_token($t, 'k', env => 'dev');
$t->env('env_dev2', 'team_a', 'dev2');
my $L = limit_token($t, 'l', env => 'dev2');
my $rs = quota_burst('tightest (environment 3r/h under token 10r/h)',
                     '/tight/x', $L, 4, 3, 200);

# --- metrics and the log --------------------------------------------------

my $m = metrics_text($t);
like($m, qr/^# TYPE env_gateway_rate_limited_total counter$/m,
     'metrics: env_gateway_rate_limited_total');
my %want = (token => 2 + 2 + 2, account => 2, tenant => 1, team => 1,
            environment => 1 + 1 + 1);
for my $k (sort keys %want) {
    like($m, qr/^env_gateway_rate_limited_total\{key="$k"\} $want{$k}$/m,
         "metrics: $want{$k} refused by $k limits");
}
my $total = 0;
$total += $_ for values %want;
# summed over the environment label
my $limited = 0;
$limited += $1 while $m =~
    /^env_gateway_requests_total\{(?:environment="[^"]*",)?result="rate_limited"\} (\d+)$/mg;
is($limited, $total, "metrics: $total requests rate_limited");

my @lines = grep { /refused 429 rate_limited/ } split /\n/,
            $t->slurp('error.log');
is(scalar @lines, $total, 'log: one refusal line per 429');
like($lines[0] // '', qr/token_id="tok_a"/, 'log: the line names the token');

$t->stop;
done_testing();
