#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# A worker crash any token holder can set off, from a method record.
#
# ngx_env_gateway_route() formats its refusal messages into a buffer sized
# by hand (256 bytes plus some of the values), but two values it prints are
# not in that sum: the name of a "{name}" placeholder of the method's path
# ("needs one query argument ...") and the method's declared verb ("takes
# ..., not ...").  ngx_sprintf() writes past the buffer:
#
#   - "envgw method set ENV I contacts export GET '/export/{<2000 x a>}'"
#     is accepted by the CLI (paths up to 2048 bytes); any request of that
#     environment's tokens to /proxy/contacts/export without the argument
#     then corrupts the request pool, and the worker aborts (SIGABRT or
#     SIGSEGV), taking every other request it serves with it, whatever
#     their environment;
#   - a record's verb of any length (the contract: fields of any length
#     work) does the same through the 405 message.
#
# The correct behaviour: the JSON refusal, and the worker lives on.
# Through real nginx, Redis and the envgw CLI.

use strict;
use warnings;

use lib 't/lib';
use EnvGwTest;
use Test::More;
use Digest::SHA qw(sha256_hex);
use Time::HiRes qw(sleep);

my $ENVGW = $ENV{ENVGW_BIN} || "$EnvGwTest::TOP/cli/envgw";

plan skip_all => "envgw not built ($ENVGW)" unless -x $ENVGW;

my $t = EnvGwTest->new;
$t->start_redis;

# a crash is what this test looks for: it reports it itself, by pid
$t->{allow_log} = qr/exited on signal/;

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

my $redis = '127.0.0.1:' . $t->redis_port;

sub envgw {
    my @args = @_;
    my $pid = open(my $fh, '-|');
    die "fork: $!" unless defined $pid;
    if ($pid == 0) {
        open STDERR, '>&', \*STDOUT;
        exec $ENVGW, '--redis', $redis, @args;
        exit 127;
    }
    local $/;
    my $out = <$fh>;
    close $fh;
    return ($? >> 8, $out);
}

my $TD = 'egwtok_dev_' . substr(sha256_hex('attack-crash-dev'), 0, 32);
my $TP = 'egwtok_prod_' . substr(sha256_hex('attack-crash-prod'), 0, 32);

$t->seed_gateway(envs => [qw(dev prod)], tokens => { dev => $TD, prod => $TP });
$t->account('acc_dev', 'env_dev');
$t->account('acc_prod', 'env_prod');

my $up = 'http://127.0.0.1:' . $t->{backend_port};

for my $e (qw(env_dev env_prod)) {
    my ($rc, $out) = envgw('integration', 'set', $e, 'hubspot',
                           '--upstream', $up);
    is($rc, 0, "envgw integration set $e") or diag($out);
    ($rc, $out) = envgw('method', 'set', $e, 'hubspot', 'contacts', 'list',
                        'GET', '/crm/v3/objects/contacts');
    is($rc, 0, "envgw method set $e contacts list") or diag($out);
}

# a development method whose path names a long query placeholder
my $name = 'a' x 2000;
my ($rc, $out) = envgw('method', 'set', 'env_dev', 'hubspot', 'contacts',
                       'export', 'GET', "/export/{$name}");
is($rc, 0, 'envgw accepts a path with a 2000-byte placeholder') or diag($out);

my @before = $t->worker_pids;
is(scalar @before, 1, 'one worker');

# production traffic is served
my $r = $t->get('/proxy/contacts?integrated_account_id=acc_prod', $TP);
is($r->{status}, 200, 'control: a production request passes');

for my $i (1 .. 3) {
    $r = $t->get('/proxy/contacts/export?integrated_account_id=acc_dev', $TD);
    is($r->{status}, 400, "request $i without the placeholder's argument: 400")
        or diag(substr($r->{raw}, 0, 200));
    is($r->{json}{error}, 'invalid_request', "... invalid_request ($i)");
}

sleep 0.3;

my @mid = $t->worker_pids;
is_deeply(\@mid, \@before, 'after the placeholder requests: the worker is '
                           . 'the same process')
    or diag("workers before: @before, after: @mid");

# a verb of any length in a record (the contract: fields of any length)
$t->put('integration:env_dev:longverb', {
    upstream => $up,
    resources => { contacts => {
        merge => { method => 'M' x 100000, path => '/merge' } } } });
$t->account('acc_dev_lv', 'env_dev', integration => 'longverb');

$r = $t->http('POST', '/proxy/contacts/merge?integrated_account_id=acc_dev_lv',
              [ Authorization => "Bearer $TD" ], '');
is($r->{status}, 405, 'a custom method with a 100 KB verb, called with POST: '
                      . '405') or diag(substr($r->{raw}, 0, 200));

sleep 0.3;

my @after = $t->worker_pids;
is_deeply(\@after, \@mid, 'after the long verb: the worker is the same '
                          . 'process')
    or diag("workers before: @mid, after: @after");

my @crash = grep { /exited on signal/ } split /\n/, $t->slurp('error.log');
is(scalar @crash, 0, 'no worker exited on a signal') or diag(join "\n", @crash);

$r = $t->get('/proxy/contacts?integrated_account_id=acc_prod', $TP);
is($r->{status}, 200, 'production requests are still served');

$t->stop;
done_testing;
