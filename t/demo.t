#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# The demo: demo/demo.sh start brings up Redis, nginx with conf.example and
# the sample backend on free loopback ports (DEMO_* variables, its own state
# directory, so a developer's running demo is untouched), the requests it
# prints answer as it says, the README's custom-method walkthrough runs as
# printed there (only the demo's state directory differs) and answers as the
# README says, a second start replaces the first, and stop ends exactly the
# processes it started.

use strict;
use warnings;

use lib 't/lib';
use EnvGwTest;
use Test::More;
use Time::HiRes qw(sleep time);

my $t = EnvGwTest->new;
my $top = $EnvGwTest::TOP;
my $dir = $t->dir;
my $run = "$dir/run";
my $demo = "$top/demo/demo.sh";
my $envgw = $ENV{ENVGW_BIN} || "$top/cli/envgw";

plan skip_all => 'redis-server not installed'
    unless grep { -x "$_/redis-server" } split /:/, $ENV{PATH};
plan skip_all => 'curl not installed'
    unless grep { -x "$_/curl" } split /:/, $ENV{PATH};
ok(-f $t->{module}, "module built: $t->{module}")
    or BAIL_OUT('build the module first: make module');
ok(-x $envgw, "envgw built: $envgw") or BAIL_OUT('build the cli: make cli');

my %ports;
while (keys %ports < 3) { $ports{ EnvGwTest::free_port() } = 1; }
my ($port, $backend, $redis) = sort { $a <=> $b } keys %ports;

$ENV{DEMO_PORT} = $port;
$ENV{DEMO_BACKEND_PORT} = $backend;
$ENV{DEMO_REDIS_PORT} = $redis;
$ENV{DEMO_RUN} = $run;
$ENV{ENVGW_BIN} = $envgw;

my $started = 0;
END { system($demo, 'stop') if $started && -d $run; }

sub demo {
    my (@args) = @_;
    my $out = `$demo @args 2>&1`;
    return ($? >> 8, $out);
}

sub pidfile {
    my ($f) = @_;
    open my $fh, '<', $f or return;
    my $p = <$fh>;
    chomp $p if defined $p;
    return $p;
}

sub alive { my ($pid) = @_; return $pid && kill(0, $pid) }

sub tokens {
    my %tok;
    open my $fh, '<', "$run/tokens.env" or return;
    while (<$fh>) { $tok{$1} = $2 if /^(\w+)=(\S+)$/; }
    return \%tok;
}

# --- start -------------------------------------------------------------------

$started = 1;
my ($rc, $out) = demo('start', $t->{module});
is($rc, 0, 'demo.sh start succeeds') or diag($out);
like($out, qr/127\.0\.0\.1:$port/, 'it prints the gateway address');
unlike($out, qr/expected \d+, got/, 'its own checks of the printed requests pass')
    or diag($out);

my $tok = tokens() || {};
like($tok->{$_} // '', qr/^egw_[\w-]+$/, "tokens.env has $_")
    for qw(DEV_TOKEN STG_TOKEN PROD_TOKEN);
like($out, qr/Bearer \Q$tok->{DEV_TOKEN}\E/, 'the printed curl lines carry the real tokens')
    if $tok->{DEV_TOKEN};
is($tok->{GATEWAY}, "http://127.0.0.1:$port", 'tokens.env has the gateway URL');
is((stat "$run/tokens.env")[2] & 0777, 0600, 'tokens.env is private');

my $nginx_pid = pidfile("$run/logs/nginx.pid");
my $redis_pid = pidfile("$run/redis.pid");
ok(alive($nginx_pid), "nginx master runs (pid " . ($nginx_pid // '?') . ")");
ok(alive($redis_pid), "redis-server runs (pid " . ($redis_pid // '?') . ")");

# the generated nginx.conf is conf.example with only paths and ports changed
{
    open my $fh, '<', "$run/nginx.conf" or die;
    my $conf = do { local $/; <$fh> };
    like($conf, qr/^load_module \Q$t->{module}\E;/m, 'load_module rewritten');
    like($conf, qr/listen 127\.0\.0\.1:$port;/, 'gateway port rewritten');
    like($conf, qr/env_gateway_redis 127\.0\.0\.1:$redis /, 'redis port rewritten');
    unlike($conf, qr/127\.0\.0\.1:(?:8080|8081|6390)\b/, 'no default port left');
}

# --- the printed requests ----------------------------------------------------

my ($dev, $prod) = @$tok{qw(DEV_TOKEN PROD_TOKEN)};
my $r;

$r = $t->http('GET', '/healthz', [], undef, port => $port);
is($r->{status}, 200, '/healthz needs no token');

$r = $t->http('GET', '/crm/contacts?integrated_account_id=acc_dev_acme',
              [ Authorization => "Bearer $dev" ], undef, port => $port);
is($r->{status}, 200, 'dev token + dev account: 200');
is($r->{json}{upstream}, 'backend', 'answered by the backend upstream');
is($r->{json}{environment_id}, 'env_dev', 'backend sees X-Environment-Id env_dev');

$r = $t->http('GET', '/crm/contacts?integrated_account_id=acc_dev_acme',
              [], undef, port => $port);
is($r->{status}, 401, 'no token: 401');
is($r->{json}{error}, 'missing_token', 'missing_token');

$r = $t->http('GET', '/crm/contacts?integrated_account_id=acc_prod_acme',
              [ Authorization => "Bearer $dev" ], undef, port => $port);
is($r->{status}, 404, 'dev token + prod account: 404');
is($r->{json}{error}, 'integrated_account_not_found', 'integrated_account_not_found');

$r = $t->http('POST', '/proxy/contacts/merge?integrated_account_id=acc_dev_acme',
              [ Authorization => "Bearer $dev" ], '', port => $port);
is($r->{status}, 200, 'custom method in development: 200');
is($r->{json}{upstream}, 'hubspot_development', 'via upstream hubspot_development');
is($r->{json}{uri}, '/crm/v3/objects/contacts/merge', 'to the method path');

my $merge_prod = sub {
    $t->http('POST', '/proxy/contacts/merge?integrated_account_id=acc_prod_acme',
             [ Authorization => "Bearer $prod" ], '', port => $port);
};
$r = $merge_prod->();
is($r->{status}, 404, 'custom method in production: 404');
is($r->{json}{error}, 'method_not_found', 'method_not_found');
like($r->{json}{message} // '', qr/merge.*contacts.*hubspot.*production/,
     'message names method, resource, integration and environment');

$r = $t->http('GET', '/proxy/contacts/123?integrated_account_id=acc_prod_acme',
              [ Authorization => "Bearer $prod" ], undef, port => $port);
is($r->{status}, 200, 'built-in method in production: 200');
is($r->{json}{upstream}, 'hubspot_production', 'via upstream hubspot_production');
is($r->{json}{uri}, '/crm/v3/objects/contacts/123', 'get with {id}');

$r = $t->http('GET', '/env_gateway/status', [], undef, port => $port);
is($r->{status}, 200, 'readiness (env_gateway_status): 200') or diag($r->{raw});
like($r->{body}, qr/"ready":true/, '... ready: true');

$r = $t->http('GET', '/env_gateway/metrics', [], undef, port => $port);
is($r->{status}, 200, 'metrics answer on loopback');
like($r->{body}, qr/^env_gateway_requests_total\{environment="development",result="allowed"\} [1-9]/m,
     'metrics count the allowed requests');

# --- the README's walkthrough, run as printed ---------------------------------

my $readme = do { local $/; open my $fh, '<', "$top/README.md" or die; <$fh> };
my ($walk) = $readme =~ /^## Custom methods per environment\n.*?^```sh\n(.*?)^```$/ms;
ok(defined $walk, 'README has the custom-method walkthrough') or $walk = '';
unlike($walk, qr/127\.0\.0\.1:\d+|:8080\b/, 'it names no fixed address or port');
unlike($walk, qr/method set \S+ \S+ contacts merge\b/,
       'it does not add again the method the demo created');
my $n = $walk =~ s{^\. demo/run/tokens\.env}{. '$run/tokens.env'}m;
is($n, 1, 'it reads the demo\'s tokens.env (the only line changed)');
$n = $walk =~ s{\bcli/envgw\b}{$envgw}g;
ok($n >= 1, 'it runs cli/envgw');

# each curl prints its status after the body, as "HTTP <code>"
my $script = <<'SH' . $walk;
exec 2>&1
cd "$ENVGW_TOP"
curl() { command curl -sS -w '\nHTTP %{http_code}\n' "$@"; }
SH
$ENV{ENVGW_TOP} = $top;
my $walk_out = do {
    open my $sh, '-|', 'bash', '-c', $script or die;
    local $/; <$sh>;
};
# the last command's exit status: envgw promote succeeded
is($? >> 8, 0, 'the walkthrough ends with success') or diag($walk_out);
my @st = $walk_out =~ /^HTTP (\d+)$/mg;
is("@st", '200 404', 'development call 200, production call 404, as printed');
like($walk_out, qr/"upstream":"hubspot_development","method":"POST","uri":"\/crm\/v3\/objects\/contacts\/search"/,
     'the 200 is the printed one');
like($walk_out, qr/"error":"method_not_found","message":"Method search of resource contacts is not defined for integration hubspot in the production environment\."/,
     'the 404 is the printed one');
for my $line ($walk =~ /^# ([+] hubspot .*|promoted .*|set hubspot .*)$/mg) {
    like($walk_out, qr/^\Q$line\E$/m, "printed output: $line");
}

my $search_prod = sub {
    $t->http('POST', '/proxy/contacts/search?integrated_account_id=acc_prod_acme',
             [ Authorization => "Bearer $prod" ], '', port => $port);
};
# pub/sub invalidation reaches the worker asynchronously: allow a moment
my $end = time + 10;
$r = $search_prod->();
while ($r->{status} != 200 && time < $end) { sleep 0.05; $r = $search_prod->(); }
is($r->{status}, 200, 'after promote the production call answers 200');
is($r->{json}{upstream}, 'hubspot_production', 'from production\'s own upstream');
is($merge_prod->()->{status}, 404, 'contacts.merge stays development\'s own');

# --- start again: replaces the running demo ----------------------------------

($rc, $out) = demo('start', $t->{module});
is($rc, 0, 'second start succeeds') or diag($out);
like($out, qr/already running.*stopping it first/, 'it says it stops the first one');
my ($nginx2, $redis2) = (pidfile("$run/logs/nginx.pid"), pidfile("$run/redis.pid"));
ok(!alive($nginx_pid) || $nginx_pid == ($nginx2 // 0), 'first nginx gone');
ok(!alive($redis_pid) || $redis_pid == ($redis2 // 0), 'first redis-server gone');
ok(alive($nginx2) && alive($redis2), 'new nginx and redis-server run');
$r = $search_prod->();
is($r->{status}, 401, 'fresh seed: the old tokens are gone');
$tok = tokens() || {};
isnt($tok->{PROD_TOKEN} // '', $prod, 'tokens.env has the new tokens');
$prod = $tok->{PROD_TOKEN};
$r = $search_prod->();
is($r->{status}, 404, 'fresh seed: the promoted method is gone again') or diag($r->{raw});

# --- stop ------------------------------------------------------------------------

my $log = do { local $/; open my $fh, '<', "$run/logs/error.log"; <$fh> } // '';
my @bad = grep { /\[(alert|emerg|crit)\]|exited on signal/ } split /\n/, $log;
ok(!@bad, 'demo error.log has no alert, emerg, crit or crash') or diag(join "\n", @bad);

($rc, $out) = demo('stop');
is($rc, 0, 'demo.sh stop succeeds') or diag($out);
$started = 0;
ok(!alive($nginx2), 'nginx stopped');
ok(!alive($redis2), 'redis-server stopped');
ok(!EnvGwTest::wait_port($port, 0.2), 'gateway port closed');
ok(!EnvGwTest::wait_port($redis, 0.2), 'redis port closed');

($rc, $out) = demo('stop');
is($rc, 0, 'stop again: nothing to do, still success');
like($out, qr/not running/, 'it says so');

# a busy port: start refuses, starts nothing
{
    my $busy = IO::Socket::INET->new(Listen => 1, LocalAddr => '127.0.0.1',
                                     LocalPort => $port, Proto => 'tcp',
                                     ReuseAddr => 1) or die "listen: $!";
    ($rc, $out) = demo('start', $t->{module});
    isnt($rc, 0, 'start with the gateway port busy fails');
    like($out, qr/127\.0\.0\.1:$port is in use/, 'naming the port');
    ok(!EnvGwTest::wait_port($redis, 0.2), 'and starts no redis-server');
    close $busy;
}

$t->stop;
done_testing;
