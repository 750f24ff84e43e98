#!/usr/bin/perl

# Bounded output: every refusal of the route code, and the upstream URL,
# with values of any size and any bytes.  Placeholder names of 200, 2000
# and 20000 bytes whose argument is omitted, a declared verb of 5000 bytes,
# resource and method names at the request line's limit and with bytes
# 0x80-0xff, 0x00-0x1f, quotes and backslashes, an integration that is not
# installed with a long name, URLs with many long arguments and a large
# {id}, and "." / ".." template values.  Each answer is the module's own
# JSON refusal (valid JSON, printable ASCII, the value named escaped) or a
# 200 with the exact URI the backend received, and no worker crashes.

use strict;
use warnings;

use lib 't/lib';
use EnvGwTest;
use Test::More;
use Digest::SHA qw(sha256_hex);
use JSON::PP;

my $t = EnvGwTest->new;
$t->start_redis;

my $ENVGW = $ENV{ENVGW_BIN} || "$EnvGwTest::TOP/cli/envgw";

$t->{backend_port} = EnvGwTest::free_port();
my $BE = "http://127.0.0.1:$t->{backend_port}";

# request lines (and the upstream's) of up to 256 KB
$t->start_nginx(<<'CONF');
    env_gateway_redis 127.0.0.1:%%REDIS%% connect_timeout=500ms read_timeout=2s;
    large_client_header_buffers 4 256k;

    server {
        listen 127.0.0.1:%%PORT%%;
        location ~ ^/proxy/(?<res>[^/]+)(?:/(?<rest>[^/]+))?$ {
            env_gateway on;
            env_gateway_account $arg_integrated_account_id;
            env_gateway_route $res $rest;
            proxy_pass $env_gateway_upstream_url;
        }
        # rest from the query: values nginx's URI parser would rewrite
        location = /q {
            env_gateway on;
            env_gateway_account $arg_integrated_account_id;
            env_gateway_route $arg_res $arg_id;
            proxy_pass $env_gateway_upstream_url;
        }
        # the account from a header: any byte but NUL, CR and LF
        location ~ ^/hdr/(?<hres>[^/]+)$ {
            env_gateway on;
            env_gateway_account $http_x_account_id;
            env_gateway_route $hres;
            proxy_pass $env_gateway_upstream_url;
        }
    }
CONF

sub envgw {
    my $cmd = join ' ', map { "'$_'" } $ENVGW, '--redis',
        "127.0.0.1:$t->{redis_port}", @_;
    my $out = `$cmd 2>&1`;
    return ($? >> 8, $out);
}

# --- data ------------------------------------------------------------------

$t->env('env_dev', 'team_a', 'development');
my $TOK = $t->token('egw_dev_' . substr(sha256_hex('route-bounds'), 0, 24),
    token_id => 'tok_rb_dev', team_id => 'team_a',
    environment_id => 'env_dev', environment => 'development');

$t->account('acc_dev', 'env_dev', integration => 'hubspot');
$t->account('acc_odd', 'env_dev', integration => 'odd');

sub m_ { return { method => $_[0], path => $_[1] } }

my $P200 = 'p' x 200;
my $P2000 = 'q' x 2000;
my $P20000 = 'r' x 20000;
my $VERB = 'V' x 5000;

$t->put('integration:env_dev:hubspot', {
    upstream => $BE,
    resources => {
        contacts => {
            list   => m_(GET => '/crm/v3/objects/contacts'),
            get    => m_(GET => '/crm/v3/objects/contacts/{id}'),
            update => m_(PATCH => '/crm/v3/objects/contacts/{id}'),
            merge  => m_(POST => '/crm/v3/objects/contacts/merge'),
        },
    },
});

# what the admin tool would refuse to write: another writer's record
$t->put('integration:env_dev:odd', {
    upstream => $BE,
    resources => {
        huge => {
            list => m_(GET => "/crm/{$P20000}"),
            frob => m_($VERB => '/crm/frob'),
        },
    },
});

# placeholders of 200 and 2000 bytes, written by the admin tool
for my $c ([long => $P200], [longer => $P2000]) {
    my ($rc, $out) = envgw('method', 'set', 'env_dev', 'hubspot', $c->[0],
                           'list', 'GET', "/crm/{$c->[1]}");
    is($rc, 0, "envgw method set: a placeholder of " . length($c->[1])
       . " bytes") or diag($out);
}

# --- helpers -----------------------------------------------------------------

my @WORKERS = $t->worker_pids;
is(scalar @WORKERS, 1, 'one worker');

# the worker that answered is the one that was there before (a crashed
# worker is replaced by the master: a new pid)
sub no_crash {
    my ($name) = @_;
    my @now = $t->worker_pids;
    is_deeply(\@now, \@WORKERS, "$name: no worker crashed")
        or @WORKERS = @now;
}

sub req {
    my ($m, $path, $body, @h) = @_;
    return $t->http($m, $path, [ Authorization => "Bearer $TOK", @h ], $body);
}

# the module's refusal: status, JSON of printable ASCII, the code; returns
# the decoded body
sub refusal {
    my ($name, $r, $status, $code) = @_;
    is($r->{status}, $status, "$name: $status") or diag(substr $r->{raw}, 0, 300);
    like($r->{headers}{'content-type'} // '', qr{^application/json},
         "$name: application/json");
    like($r->{body}, qr/\A[\x20-\x7e]*\n\z/, "$name: printable ASCII");
    my $j = eval { JSON::PP->new->utf8->decode($r->{body}) };
    ok(ref $j eq 'HASH', "$name: the body is valid JSON") or diag($@);
    $j ||= {};
    is($j->{error}, $code, "$name: $code");
    is($j->{status}, $status, "$name: \"status\":$status");
    no_crash($name);
    return $j;
}

# a routed request: 200 and the exact URI the backend received
sub routed {
    my ($name, $r, $m, $uri) = @_;
    is($r->{status}, 200, "$name: 200") or diag(substr $r->{raw}, 0, 300);
    my ($seen) = $r->{body} =~ /^backend (\S+ \S+)/;
    ok(defined $seen && $seen eq "$m $uri",
       "$name: the backend got $m " . (length $uri > 80
                                      ? substr($uri, 0, 70) . '...' : $uri))
        or diag('got: ' . substr($seen // $r->{raw}, 0, 300));
    no_crash($name);
}

# the message holds $want (diagnostics stay short whatever the sizes)
sub names {
    my ($name, $msg, $want) = @_;
    ok(index($msg // '', $want) >= 0, $name)
        or diag('message: ' . substr($msg // '', 0, 200) . ' ('
                . length($msg // '') . ' bytes), want: '
                . substr($want, 0, 80) . ' (' . length($want) . ' bytes)');
}

my $A = 'integrated_account_id=acc_dev';
my $ODD = 'integrated_account_id=acc_odd';

# --- placeholder names of any length, their argument omitted ------------------

for my $c ([long => $P200, $A], [longer => $P2000, $A],
           [huge => $P20000, $ODD])
{
    my ($res, $p, $acc) = @$c;
    my $n = length $p;
    my $j = refusal("placeholder of $n bytes omitted",
                    req(GET => "/proxy/$res?$acc"), 400, 'invalid_request');
    names("placeholder of $n bytes omitted: the message names all of it",
          $j->{message}, "needs one query argument \"$p\"");

    routed("placeholder of $n bytes given",
           req(GET => "/proxy/$res?$p=v1&$acc&x=1"), GET => '/crm/v1?x=1');
}

# --- a declared verb of 5000 bytes, called with another verb ------------------

{
    my $j = refusal('verb of 5000 bytes, called with POST',
                    req(POST => "/proxy/huge/frob?$ODD", '{}'), 405,
                    'method_not_allowed');
    names('verb of 5000 bytes: the message names all of it',
          $j->{message}, "takes $VERB, not POST.");
}

$t->stop;
done_testing;
