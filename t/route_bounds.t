#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

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
        location = /metrics {
            env_gateway_metrics;
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

# record values with every kind of byte JSON can carry (no NUL: jansson
# refuses "\u0000"); integrations that are not installed
my $ODDNAME = "sales\"force\\x\x01\x1f\x7f\xc3\xa9";     # é in UTF-8
my $ODDNAME_ESC = 'sales\x22force\x5Cx\x01\x1F\x7F\xC3\xA9';
my $LONGINT = 'i' x 20000;
$t->account('acc_oddint', 'env_dev', integration => $ODDNAME);
$t->account('acc_longint', 'env_dev', integration => $LONGINT);

# an environment whose name and token id have such bytes too, but for
# control characters: those would go into identity headers (X-Environment,
# X-Token-Id), and make the record malformed (t/attack_ops.t)
my $ENVNAME = "dev\"el\\op\tment\xc3\xa9";
my $ENVNAME_ESC = 'dev\x22el\x5Cop\x09ment\xC3\xA9';
$t->env('env_odd', 'team_a', $ENVNAME);
my $TOK_ODD = $t->token('egw_odd_' . substr(sha256_hex('route-bounds-odd'),
                                            0, 24),
    token_id => "tok_\"odd\\", team_id => 'team_a',
    environment_id => 'env_odd', environment => $ENVNAME);
$t->account('acc_envodd', 'env_odd', integration => 'hubspot');

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
        objects => {
            list => m_(GET => '/crm/v3/objects/{object}'),
            get  => m_(GET => '/crm/v3/objects/{object}/{id}'),
        },
        pairs => {
            get => m_(GET => '/crm/v3/pairs/{id}/to/{id}/and/{id}/{id}'),
        },
        many => {
            get => m_(GET => '/v1/{a}/{b}/x-{c}-y/{id}/{d}'),
        },
        adj => {
            list => m_(GET => '/v1/{a}{b}'),
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
        verbs => {
            poke => m_("PO\"S\\T\x01\xc3\xa9" => '/crm/poke'),
        },
        dots => {
            get    => m_(GET => '/v1/.{id}'),
            update => m_(PATCH => '/v1/{id}.'),
            delete => m_(DELETE => '/v1/%2e{id}'),
        },
        json => {
            get => m_(GET => '/v1/{id}.json'),
        },
        pct => {
            get    => m_(GET => '/v1/%2{id}'),
            update => m_(PATCH => '/v1/%5{id}'),
            delete => m_(DELETE => '/v1/a%{id}'),
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

# answers seen, by result, for the metrics
my %COUNT;

# the module's refusal: the refusal contract, a body of printable ASCII;
# returns the decoded body
sub refusal {
    my ($name, $r, $status, $code) = @_;
    EnvGwTest::refused($r, $status, $code, $name);
    like($r->{body}, qr/\A[\x20-\x7e]*\n\z/, "$name: printable ASCII");
    $COUNT{$code}++ if $r->{status} == $status;
    no_crash($name);
    return $r->{json} || {};
}

# a routed request: 200 and the exact URI the backend received
sub routed {
    my ($name, $r, $m, $uri) = @_;
    is($r->{status}, 200, "$name: 200") or diag(substr $r->{raw}, 0, 300);
    $COUNT{allowed}++ if $r->{status} == 200;
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

# --- resource and method names from the request: limits and odd bytes ------

# 100 KB names: the request line holds them (large_client_header_buffers)
{
    my $res = 'R' x 100000;
    my $j = refusal('resource of 100000 bytes',
                    req(GET => "/proxy/$res?$A"), 404, 'method_not_found');
    names('resource of 100000 bytes: named in full', $j->{message},
          "Method list of resource $res is not defined for integration "
          . "hubspot in the development environment.");

    my $rest = 'M' x 100000;
    $j = refusal('method (rest) of 100000 bytes, POST',
                 req(POST => "/proxy/contacts/$rest?$A", '{}'), 404,
                 'method_not_found');
    names('method of 100000 bytes: named in full', $j->{message},
          "Method $rest of resource contacts is not defined");

    # a client verb nginx accepts (A-Z, "_", "-") of 5000 bytes
    my $verb = 'X_-' x 1667;
    $j = refusal('client verb of 5001 bytes, no rest',
                 req($verb => "/proxy/contacts?$A"), 404,
                 'method_not_found');
    names('client verb of 5001 bytes: named in full', $j->{message},
          "Method $verb of resource contacts");

    $j = refusal('client verb of 5001 bytes on a custom method',
                 req($verb => "/proxy/contacts/merge?$A"), 405,
                 'method_not_allowed');
    names('client verb of 5001 bytes: the 405 names it', $j->{message},
          "takes POST, not $verb.");
}

# bytes 0x80-0xff, raw and percent-encoded, and quotes: a 404 that names
# the value escaped
for my $c (["\xff\xfe\x80", '\xFF\xFE\x80', 'raw 0xff 0xfe 0x80'],
           ['%FF%80%C3%A9', '\xFF\x80\xC3\xA9', 'encoded 0xff 0x80 é'],
           ["\xc3\xa9t\xc3\xa9", '\xC3\xA9t\xC3\xA9', 'raw UTF-8'],
           ['a%22b', 'a\x22b', 'an encoded quote'],
           ['a"b', 'a\x22b', 'a raw quote'],
           ["a'b", "a'b", 'an apostrophe'],
           ['a%3Cb%3E', 'a<b>', 'angle brackets'],
           ['x' x 3000 . '%FF' x 3000, 'x' x 3000 . '\xFF' x 3000,
            '6000 bytes, half of them 0xff'])
{
    my ($raw, $esc, $what) = @$c;
    my $j = refusal("resource with $what",
                    req(GET => "/proxy/$raw?$A"), 404, 'method_not_found');
    names("resource with $what: named escaped", $j->{message},
          "of resource $esc is not defined");

    $j = refusal("method with $what",
                 req(POST => "/proxy/contacts/$raw?$A", '{}'), 404,
                 'method_not_found');
    names("method with $what: named escaped", $j->{message},
          "Method $esc of resource contacts");
}

# control bytes, DEL and backslashes have no place in a path value: 400
for my $b (1 .. 0x1f, 0x7f, 0x5c) {
    my $enc = sprintf '%%%02X', $b;
    my $name = sprintf 'byte 0x%02x', $b;
    refusal("resource with $name", req(GET => "/proxy/a${enc}b?$A"), 400,
            'invalid_request');
    refusal("method with $name",
            req(POST => "/proxy/contacts/a${enc}b?$A", '{}'), 400,
            'invalid_request');
}
refusal('resource with a raw backslash', req(GET => "/proxy/a\\b?$A"), 400,
        'invalid_request');

# NUL: nginx's URI parser refuses it before any module runs
{
    my $r = req(GET => "/proxy/a%00b?$A");
    is($r->{status}, 400, 'resource with %00: 400 from nginx itself');
    no_crash('resource with %00');
}

# --- record values with odd bytes, an integration not installed -------------

{
    my $j = refusal('integration of 20000 bytes not installed',
                    req(GET => "/proxy/contacts?integrated_account_id="
                               . 'acc_longint'), 404, 'method_not_found');
    names('integration of 20000 bytes: named in full', $j->{message},
          "Integration $LONGINT is not installed in the development "
          . "environment, so method list of resource contacts is not "
          . "defined there.");

    $j = refusal('integration with odd bytes not installed',
                 req(GET => '/proxy/contacts?integrated_account_id='
                            . 'acc_oddint'), 404, 'method_not_found');
    names('integration with odd bytes: named escaped', $j->{message},
          "Integration $ODDNAME_ESC is not installed");

    $j = refusal('environment name with odd bytes',
                 $t->http(GET => '/proxy/nothing?integrated_account_id='
                                 . 'acc_envodd',
                          [ Authorization => "Bearer $TOK_ODD" ]),
                 404, 'method_not_found');
    names('environment name with odd bytes: named escaped', $j->{message},
          "in the $ENVNAME_ESC environment");

    $j = refusal('declared verb with odd bytes, called with POST',
                 req(POST => "/proxy/verbs/poke?$ODD", '{}'), 405,
                 'method_not_allowed');
    names('declared verb with odd bytes: named escaped', $j->{message},
          'takes PO\x22S\x5CT\x01\xC3\xA9, not POST.');
}

# --- template arguments: exactly one, spelled exactly -----------------------

routed('{object} given once', req(GET => "/proxy/objects/7?$A&object=deals"),
       GET => '/crm/v3/objects/deals/7');
for my $c (['object=a&object=b', 'given twice'],
           ['Object=a', 'in another case'],
           ['object=a&OBJECT=b', 'exact and in another case'],
           ['object%5B%5D=a', 'percent-encoded brackets'],
           ['object[]=a', 'with brackets'],
           ['object=a&object[0]=b', 'exact and with an index'],
           ['x=1;object=a', 'after a ";"'],
           ['%6Fbject=a', 'with an encoded letter'],
           ['object', 'without a value'],
           ['object=', 'empty'])
{
    my ($q, $what) = @$c;
    my $j = refusal("{object} $what",
                    req(GET => "/proxy/objects/7?$A&$q"), 400,
                    'invalid_request');
    names("{object} $what: the message names it", $j->{message},
          'needs one query argument "object"');
}

# consumed arguments: dropped when exact, refused when spelled otherwise
routed('consumed arguments are not forwarded',
       req(GET => "/proxy/contacts?$A&environment_id=env_dev&limit=5"),
       GET => '/crm/v3/objects/contacts?limit=5');
for my $q ('integrated_account_id[]=acc_x', 'x=1;integrated_account_id=acc_x',
           'integrated_account_id%5B0%5D=acc_x', 'environment_id[]=env_x')
{
    refusal("a consumed argument spelled \"$q\"",
            req(GET => "/proxy/contacts?$A&$q"), 400, 'invalid_request');
}

# --- URLs with many long arguments and a large {id} -------------------------

{
    # {a} {b} {c} {d} from the query, {id} from the path; 200 other
    # arguments of 400 bytes are forwarded byte for byte, in order
    my $id = 'i-d.' x 2500;                                  # 10000 bytes
    my %v = (a => 'A' x 5000, b => "b\xc3\xa9" x 1000, c => 'c~' x 2000,
             d => 'd%20d+' x 1000);
    my %enc = (a => $v{a}, b => 'b%C3%A9' x 1000, c => $v{c},
               d => 'd%20d%2B' x 1000);
    my @other = map { sprintf('k%03d=%s', $_, 'v' x 395) } 1 .. 200;
    my $q = join '&', "a=$v{a}", "b=$v{b}", $other[0], "c=$v{c}", $A,
                      @other[1 .. 199], "d=$v{d}";
    routed('five placeholders, 200 forwarded arguments, 150 KB',
           req(GET => "/proxy/many/$id?$q"), GET =>
           "/v1/$enc{a}/$enc{b}/x-$enc{c}-y/$id/$enc{d}?"
           . join('&', @other));

    my $rest = '%20%C3%A9' x 3000;                           # 15000 bytes
    my $out = '%20%C3%A9' x 3000;
    routed('{id} four times, 15000 bytes each',
           req(GET => "/proxy/pairs/$rest?$A"),
           GET => "/crm/v3/pairs/$out/to/$out/and/$out/$out");

    my $big = 'z' x 60000;
    routed('{object} of 60000 bytes',
           req(GET => "/proxy/objects?object=$big&$A"),
           GET => "/crm/v3/objects/$big");
}

# --- "." and ".." never become a path segment -------------------------------

for my $c (['/q?res=contacts&id=.', '{id} "."', 'id'],
           ["/proxy/objects/7?object=.", '{object} "."', 'object'],
           ["/proxy/objects/7?object=%2e", '{object} "%2e"', 'object'],
           ["/proxy/objects/7?object=%2E", '{object} "%2E"', 'object'],
           ["/proxy/adj?a=.&b=.", '{a}{b} "." and "."', 'b'],
           ["/proxy/adj?a=.&b=%2e", '{a}{b} "." and "%2e"', 'b'])
{
    my ($path, $what, $ph) = @$c;
    my $j = refusal("$what makes a dot segment",
                    req(GET => "$path&$A"), 400, 'invalid_request');
    names("$what: the message names {$ph}", $j->{message}, "{$ph}");
}
# (nginx itself merges a "/." at the end of the path: rest from the query)
for my $c (["/q?res=dots&id=.&$ODD", 'GET', '"." after a "." in the template'],
           ["/q?res=dots&id=.&$ODD", 'PATCH', '"." before a "." in the template'],
           ["/q?res=dots&id=.&$ODD", 'DELETE', '"." after "%2e" in the template'])
{
    my ($path, $m, $what) = @$c;
    refusal($what, req($m => $path, $m eq 'PATCH' ? '{}' : undef), 400,
            'invalid_request');
}
for my $c (["/proxy/objects/7?object=..", '{object} ".."'],
           ["/proxy/objects/7?object=%2e%2e", '{object} "%2e%2e"'],
           ['/q?res=contacts&id=..', '{id} ".."'],
           ['/q?res=contacts&id=%2e', '{id} "%2e" (undecoded)'])
{
    my ($path, $what) = @$c;
    refusal("$what is refused", req(GET => "$path&$A"), 400,
            'invalid_request');
}
for my $c ([GET => 'f', '"%2"'], [PATCH => 'c', '"%5"'],
           [DELETE => '2f', '"%"'])
{
    my ($m, $id, $what) = @$c;
    my $j = refusal("{id} completing the template's $what",
                    req($m => "/proxy/pct/$id?$ODD",
                        $m eq 'PATCH' ? '{}' : undef),
                    400, 'invalid_request');
    names("{id} completing the template's $what: the message names {id}",
          $j->{message}, '{id} would complete a percent-escape');
}
routed('{a}{b} "." and "x" is ".x"', req(GET => "/proxy/adj?a=.&b=x&$A"),
       GET => '/v1/.x');
routed('{id} "." in "{id}.json" is "..json"',
       req(GET => "/q?res=json&id=.&$ODD"),
       GET => '/v1/..json?res=json&id=.');
routed('{object} ".x" is no dot segment',
       req(GET => "/proxy/objects/7?object=.x&$A"),
       GET => '/crm/v3/objects/.x/7');
routed('{id} ".x." is no dot segment', req(GET => "/q?res=contacts&id=.x.&$A"),
       GET => '/crm/v3/objects/contacts/.x.?res=contacts&id=.x.');

# --- log lines: request and record values escaped ---------------------------

{
    my $before = length $t->slurp('error.log');

    # an account header with ESC, a quote and a backslash (400), an
    # account with bytes 0xff 0xfe in the query (404)
    refusal('account header with ESC, quote, backslash',
            $t->http(GET => '/hdr/contacts',
                     [ Authorization => "Bearer $TOK",
                       'X-Account-Id' => "a\x1b\"b\\c" ]),
            400, 'invalid_request');
    refusal('account with bytes 0xff 0xfe',
            req(GET => "/proxy/contacts?integrated_account_id=\xff\xfe"),
            404, 'integrated_account_not_found');
    refusal('token id with a quote, a backslash and 0x01',
            $t->http(GET => '/proxy/contacts?integrated_account_id=acc_dev',
                     [ Authorization => "Bearer $TOK_ODD" ]),
            404, 'integrated_account_not_found');

    my $log = substr $t->slurp('error.log'), $before;
    like($log, qr/refused 400 invalid_request .*account="a\\x1B\\x22b\\x5Cc"/,
         'log: the account header is escaped');
    like($log, qr/refused 404 integrated_account_not_found .*account="\\xFF\\xFE"/,
         'log: the query account is escaped');
    like($log, qr/token_id="tok_\\x22odd\\x5C" environment_id="env_odd"/,
         'log: the token id of the record is escaped');
    # (nginx appends ", client: ..., request: "<request line>"" to every
    # line about a request, as it received it: the module's part is before)
    my @raw = grep { /[\x00-\x08\x0b-\x1f\x7f-\xff]/ }
              map { /(env_gateway: refused.*?)(?:, client: |$)/ ? $1 : () }
              split /\n/, $log;
    is(scalar @raw, 0, 'log: no refusal line has a raw control or 8-bit byte')
        or diag(join "\n", @raw);
}

# --- metrics still add up after all this ------------------------------------

{
    my $r = $t->http(GET => '/metrics', []);
    is($r->{status}, 200, 'metrics: 200');
    my @bad = grep { !/^(?:# (?:HELP|TYPE) .*|[a-z_]+(?:\{[a-z_]+="(?:[^"\\]|\\.)*"(?:,[a-z_]+="(?:[^"\\]|\\.)*")*\})? \d+(?:\.\d{6})?)$/ }
              split /\n/, $r->{body};
    is(scalar @bad, 0, 'metrics: every line is a comment or "name value"')
        or diag(join "\n", @bad[0 .. ($#bad > 5 ? 5 : $#bad)]);
    is(length $r->{body}, $r->{headers}{'content-length'},
       'metrics: Content-Length is the body\'s length');
    for my $code (sort keys %COUNT) {
        my $n = 0;
        $n += $_ for $r->{body} =~ /^env_gateway_requests_total\{environment="(?:[^"\\]|\\.)*",result="$code"\} (\d+)$/mg;
        is($n, $COUNT{$code}, "metrics: $code counted $COUNT{$code} times");
    }
}

$t->stop;
done_testing;
