#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# A gateway without env_gateway_cache asks Redis for its records on every
# request and parses a record's JSON only when its bytes differ from those
# the worker parsed last time under that key (the worker's table of parsed
# records).  Through real nginx and Redis, with the module's debug lines:
# the second request with the same records parses nothing ("unchanged,
# parsed before"); a revocation, an expiry, a disabled or moved account, a
# one-byte change of the same length are seen on the very next request;
# a malformed record is refused every time and never kept (restoring its
# bytes passes again); a record above the table's entry limit is parsed
# every time and not kept; the table holds at most 4096 records, least
# recently used dropped first; a gateway with a cache zone does not use
# the table (the zone keeps the parsed form).

use strict;
use warnings;

use lib 't/lib';
use EnvGwTest qw(refused);
use Test::More;
use Digest::SHA qw(sha256_hex);
use JSON::PP;

my $t = EnvGwTest->new;
$t->start_redis;

my $SERVER = <<'S';
    server {
        listen 127.0.0.1:%%PORT%%;
        location / {
            env_gateway on;
            env_gateway_account $arg_integrated_account_id;
            add_header X-Env $env_gateway_environment_id always;
            add_header X-Token $env_gateway_token_id always;
            proxy_pass http://127.0.0.1:%%BACKEND%%;
        }
    }
S

# debug lines of the worker's own log (Redis replies, the table); the
# requests' log at info, so that thousands of requests stay readable
$t->start_nginx("    env_gateway_redis 127.0.0.1:%%REDIS%% "
                . "connect_timeout=500ms read_timeout=2s;\n"
                . "    error_log %%DIR%%/error.log info;\n" . $SERVER,
                error_level => 'debug');

# the same Redis behind a gateway with a cache zone
my $c = EnvGwTest->new(redis_port => $t->{redis_port});
$c->start_nginx("    env_gateway_redis 127.0.0.1:%%REDIS%% "
                . "connect_timeout=500ms read_timeout=2s;\n"
                . "    env_gateway_cache zone=envgw_pr:1m ttl=30s;\n"
                . $SERVER, error_level => 'debug');

$t->env('env_dev', 'team_a', 'development');
$t->env('env_prod', 'team_a', 'production');

my $RAW = 'egw_pr_' . substr(sha256_hex('records-parsed'), 0, 32);
my %TOKREC = (token_id => 'tok_pr01', team_id => 'team_a',
              environment_id => 'env_dev', environment => 'development');
my $TOKKEY = 'envgw:token:' . sha256_hex($RAW);

# records written as fixed bytes, so that "the same record" is the same bytes
my $JSON = JSON::PP->new->canonical;

sub put_token {
    my (%over) = @_;
    my %rec = (kind => 'data', revoked => JSON::PP::false,
               expires_at => undef, %TOKREC, %over);
    $t->redis->set($TOKKEY, $JSON->encode(\%rec));
}

sub put_account {
    my ($id, $env, %over) = @_;
    $t->redis->set("envgw:account:$id", $JSON->encode({
        integrated_account_id => $id, environment_id => $env,
        integration => 'hubspot', tenant_id => 'acme', status => 'active',
        %over }));
}

put_token();
put_account('acc_pr', 'env_dev');

# what the table did is read from the module's debug lines: a module built
# without --with-debug (a bare --with-compat tree) has none
$t->get('/x');
if ($t->slurp('error.log') !~ /\[debug\].*env_gateway:/) {
    plan skip_all => 'the module was built without --with-debug: '
                   . 'its debug lines are what this file reads';
}

# how often the worker's debug lines say a key was parsed, or not
sub count_lines {
    my ($gw, $key, $what) = @_;
    my $log = $gw->slurp('error.log');
    my $n = () = $log =~ /env_gateway: record "\Q$key\E" \Q$what\E/g;
    return $n;
}
sub parsed    { count_lines($_[0] // $t, $_[1] // $TOKKEY, 'parsed and kept') }
sub reused    { count_lines($_[0] // $t, $_[1] // $TOKKEY,
                            'unchanged, parsed before') }

sub allowed {
    my ($name, $acc, $gw) = @_;
    my $r = ($gw // $t)->get('/x?integrated_account_id=' . ($acc // 'acc_pr'),
                             $RAW);
    is($r->{status}, 200, "$name: 200") or diag(substr $r->{raw}, 0, 400);
    return $r;
}

# --- the same bytes: parsed once ----------------------------------------------

my $r = allowed('first request');
is($r->{headers}{'x-env'}, 'env_dev', 'first request: environment');
is(parsed(), 1, 'first request: the token record parsed and kept');
is(parsed($t, 'envgw:account:acc_pr'), 1,
   'first request: the account record parsed and kept');
is(reused(), 0, 'first request: nothing reused yet');

allowed("same records, request $_") for 1 .. 3;
is(parsed(), 1, 'same bytes: the token record not parsed again');
is(reused(), 3, 'same bytes: the kept token record used three times');
is(reused($t, 'envgw:account:acc_pr'), 3,
   'same bytes: the kept account record used three times');

# --- changes are seen on the next request -------------------------------------

put_token(revoked => JSON::PP::true);
refused($t->get('/x?integrated_account_id=acc_pr', $RAW), 401,
        'invalid_token', 'revoked, next request');
is(parsed(), 2, 'revoked: the new bytes parsed');

put_token();
allowed('revocation withdrawn (the first bytes again)');
is(parsed(), 3, 'the first bytes again: parsed again (one entry a key)');

put_token(expires_at => time - 60);
refused($t->get('/x?integrated_account_id=acc_pr', $RAW), 401,
        'invalid_token', 'expired, next request');

put_token(token_id => 'tok_pr02');
$r = allowed('token_id changed, same length');
is($r->{headers}{'x-token'}, 'tok_pr02',
   'a one-byte change of the same length is seen');

put_account('acc_pr', 'env_dev', status => 'disabled');
refused($t->get('/x?integrated_account_id=acc_pr', $RAW), 404,
        'integrated_account_not_found', 'account disabled, next request');

put_account('acc_pr', 'env_prod');
refused($t->get('/x?integrated_account_id=acc_pr', $RAW), 404,
        'integrated_account_not_found',
        'account moved to another environment, next request');

put_account('acc_pr', 'env_dev');
allowed('account back');

# --- a malformed record is never kept -----------------------------------------

my $before = parsed();
$t->redis->set($TOKKEY, '{"environment_id": "env_dev", ');
for my $i (1, 2) {
    refused($t->get('/x?integrated_account_id=acc_pr', $RAW), 500,
            'gateway_misconfigured', "malformed token record, request $i");
}
my $malformed = () = $t->slurp('error.log')
    =~ /malformed record "\Q$TOKKEY\E"/g;
is($malformed, 2, 'malformed: logged on every request (parsed each time)');
is(parsed(), $before, 'malformed: never kept');

put_token(token_id => 'tok_pr02');
allowed('the last good bytes again');
is(parsed(), $before + 1, 'the last good bytes: parsed (the entry was gone)');
allowed('and then reused');
is(reused() > 3, 1, 'kept again once good');

# --- a record above the entry limit is parsed every time ----------------------

put_account('acc_big', 'env_dev', notes => 'n' x (300 * 1024));
allowed('a 300 KB account record', 'acc_big') for 1 .. 2;
is(parsed($t, 'envgw:account:acc_big'), 0, 'a 300 KB record is not kept');
is(reused($t, 'envgw:account:acc_big'), 0, '... nor reused');
put_account('acc_big', 'env_prod', notes => 'n' x (300 * 1024));
refused($t->get('/x?integrated_account_id=acc_big', $RAW), 404,
        'integrated_account_not_found', 'the 300 KB record changed: seen');

# --- at most 4096 records, least recently used dropped first -------------------

my $N = 4200;
for my $i (1 .. $N) {
    $t->redis->set("envgw:account:acc_n$i", $JSON->encode({
        integrated_account_id => "acc_n$i", environment_id => 'env_dev' }),
        sub {});
}
$t->redis->wait_all_responses;

my $fails = 0;
for my $i (1 .. $N) {
    my $x = $t->get("/x?integrated_account_id=acc_n$i", $RAW);
    $fails++ unless $x->{status} == 200;
}
is($fails, 0, "$N accounts, one request each: all 200");

# the token is used by every request: never the least recently used
allowed('after the flood, the token again');
is(reused($t, 'envgw:account:acc_n1'), 0, 'acc_n1 never reused so far');
allowed('the first account of the flood again', 'acc_n1');
is(parsed($t, 'envgw:account:acc_n1'), 2,
   'the first account was dropped (4096 at most): parsed again');
allowed('the last account of the flood again', "acc_n$N");
is(reused($t, "envgw:account:acc_n$N"), 1,
   'the last account was still kept: reused');

# --- with a cache zone the table is not used ------------------------------------

allowed("cache zone, request $_", 'acc_pr', $c) for 1 .. 3;
my $clog = $c->slurp('error.log');
like($clog, qr/env_gateway: cache hit "\Q$TOKKEY\E"/,
     'cache zone: the token from the zone');
unlike($clog, qr/parsed and kept|parsed before/,
       'cache zone: the table of parsed records is not used');

# --- nothing secret in the debug lines ------------------------------------------

unlike($t->slurp('error.log'), qr/\Q$RAW\E/, 'the raw token is in no log line');

$c->stop;
$t->stop;
done_testing();
