#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# Hardening, bad input, through real nginx + Redis: empty,
# oversized, binary and duplicated Authorization headers; odd schemes and
# spacing; empty, huge, unicode and percent-encoded account ids; JSON bodies
# nested 10000 deep, with duplicate keys or wrong types; chunked bodies;
# HEAD and OPTIONS; HTTP/2 (h2c, prior knowledge) including a client that
# resets its stream while the lookup waits on a paused Redis.
#
# Every case is a clear JSON refusal (or nginx's own 400/494 where nginx
# refuses before any module runs), or a correct pass; nothing refused
# reaches the backend, the worker never changes pid, and error.log has no
# alert/crit/crash (checked at stop).

use strict;
use warnings;

use lib 't/lib';
use EnvGwTest;
use Test::More;
use Digest::SHA qw(sha256_hex);
use IO::Socket::INET;
use JSON::PP;
use Time::HiRes qw(sleep time);

my $t = EnvGwTest->new;
$t->start_redis;

my $h2 = EnvGwTest::free_port();
my $e500 = EnvGwTest::free_port();

$t->start_nginx(<<"CONF");
    env_gateway_redis 127.0.0.1:%%REDIS%% connect_timeout=500ms read_timeout=1s;

    upstream backend     { server 127.0.0.1:%%BACKEND%%; }
    upstream hubspot_dev { server 127.0.0.1:%%BACKEND%%; }

    log_format redact '\$env_gateway_redacted_request|\$request|\$request_uri|\$args|\$status';

    # an upstream that fails, for error_page
    server {
        listen 127.0.0.1:$e500;
        location / { return 500 "boom"; }
    }

    server {
        listen 127.0.0.1:%%PORT%%;
        listen 127.0.0.1:$h2 http2;

        # documented edges (docs/security.md, "Limits and sharp edges")
        location /satany-deny/ {
            satisfy any; deny all;
            env_gateway on;
            proxy_pass http://backend;
        }
        location /satany-allow/ {
            satisfy any; allow 127.0.0.1; deny all;
            env_gateway on;
            proxy_pass http://backend;
        }
        location /satall-deny/ {
            deny all;
            env_gateway on;
            proxy_pass http://backend;
        }
        location /err/ {
            env_gateway on;
            proxy_intercept_errors on;
            error_page 500 = /gated_error;
            proxy_pass http://127.0.0.1:$e500;
        }
        location = /gated_error {
            env_gateway on;
            proxy_pass http://backend;
        }
        location /q/ {
            access_log %%DIR%%/redact.log redact;
            env_gateway on;
            env_gateway_token \$arg_api_key;
            proxy_pass http://backend;
        }

        location /api/ {
            env_gateway on;
            env_gateway_account \$arg_integrated_account_id;
            proxy_set_header X-Environment-Id \$env_gateway_environment_id;
            proxy_pass http://backend;
        }
        location /req/ {
            env_gateway on;
            env_gateway_account \$arg_integrated_account_id required;
            proxy_pass http://backend;
        }
        location ~ ^/proxy/(?<res>[^/]+)(?:/(?<rest>[^/]+))?\$ {
            env_gateway on;
            env_gateway_account \$arg_integrated_account_id;
            env_gateway_account_body_field integrated_account_id;
            env_gateway_route \$res \$rest;
            proxy_pass \$env_gateway_upstream_url;
        }
    }
CONF

# --- data ------------------------------------------------------------------

$t->env('env_dev',  'team_a', 'development');
$t->env('env_prod', 'team_a', 'production');

my $DEV = $t->token('egw_dev_' . substr(sha256_hex('hi-dev'), 0, 24),
    token_id => 'tok_hi_dev', team_id => 'team_a',
    environment_id => 'env_dev', environment => 'development');

$t->account('acc_dev',  'env_dev',  integration => 'hubspot');
$t->account('acc_prod', 'env_prod', integration => 'hubspot');

$t->put('integration:env_dev:hubspot', { upstream => 'http://hubspot_dev',
    resources => { contacts => {
        list   => { method => 'GET',  path => '/crm/v3/objects/contacts' },
        get    => { method => 'GET',  path => '/crm/v3/objects/contacts/{id}' },
        create => { method => 'POST', path => '/crm/v3/objects/contacts' },
    } } });

my @workers = sort $t->worker_pids;
is(scalar @workers, 1, 'one worker');

# --- helpers -----------------------------------------------------------------

my $A = 'integrated_account_id';

sub nlines { my $n = () = $t->backend_log =~ /\n/g; $n }

# the backend writes its log line after its response: wait for it
sub nlines_at_least {
    my ($want) = @_;
    my $end = time + 10;
    my $n;
    sleep 0.01 while ($n = nlines()) < $want && time < $end;
    return $n;
}

# a raw request (any bytes), read to EOF
sub raw {
    my ($bytes, %opt) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$t->{port}",
                                  Proto => 'tcp', Timeout => 10)
        or die "connect: $!";
    print $s $bytes;
    local $/;
    my $in = '';
    eval {
        local $SIG{ALRM} = sub { die "timeout\n" };
        alarm($opt{timeout} || 10);
        $in = <$s> // '';
        alarm 0;
    };
    alarm 0;
    close $s;
    my $r = EnvGwTest::parse_response($in);
    $r->{timed_out} = 1 if $@;
    return $r;
}

sub req {
    my ($method, $path, @h) = @_;
    my $s = "$method $path HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n";
    $s .= "$_\r\n" for @h;
    return raw("$s\r\n");
}

sub auth { 'Authorization: ' . $_[0] }

sub refused {
    my ($r, $status, $code, $name, $before) = @_;
    EnvGwTest::refused($r, $status, $code, $name,
        defined $before ? (count => \&nlines, before => $before) : ());
}

sub passes {
    my ($r, $name, $before) = @_;
    is($r->{status}, 200, "$name: 200") or diag(substr $r->{raw}, 0, 400);
    like($r->{body}, qr/^backend /, "$name: the backend answered");
    is(nlines_at_least($before + 1), $before + 1, "$name: one backend line")
        if defined $before;
}

sub same_workers {
    my ($name) = @_;
    is(join(',', sort $t->worker_pids), join(',', @workers),
       "$name: worker pid unchanged");
}

# --- Authorization header ----------------------------------------------------

{
    my $n = nlines();
    passes(req(GET => '/api/x', auth("Bearer $DEV")), 'valid token', $n);

    $n = nlines();
    refused(req(GET => '/api/x', 'Authorization:'), 401, 'missing_token',
            'empty Authorization', $n);
    refused(req(GET => '/api/x', 'Authorization:    '), 401, 'missing_token',
            'blank Authorization', $n);
    refused(req(GET => '/api/x', auth('Bearer')), 401, 'missing_token',
            '"Bearer" alone', $n);
    refused(req(GET => '/api/x', auth('Bearer   ')), 401, 'missing_token',
            '"Bearer" and spaces', $n);
    refused(req(GET => '/api/x'), 401, 'missing_token', 'no Authorization', $n);

    # a token over the module's 4 KB but within nginx's 8 KB header buffers
    refused(req(GET => '/api/x', auth('Bearer ' . ('a' x 6000))), 401,
            'invalid_token', '6000-byte token', $n);

    # a header line over large_client_header_buffers (4 x 8k): nginx's own
    # 400 ("Request Header Or Cookie Too Large", logged as 494)
    for my $len (9000, 40000) {
        my $r = req(GET => '/api/x', auth('Bearer ' . ('a' x $len)));
        ok($r->{status} == 400 || $r->{status} == 494,
           "$len-byte Authorization: nginx's 400/494 (got $r->{status})");
        is(nlines(), $n, "$len-byte Authorization: no pass");
    }
    # many headers totalling more than the buffers
    {
        my $r = req(GET => '/api/x', auth("Bearer $DEV"),
                    map { "X-Pad-$_: " . ('p' x 7000) } 1 .. 6);
        ok($r->{status} == 400 || $r->{status} == 494,
           "headers over 32 KB: nginx's 400/494 (got $r->{status})");
        is(nlines(), $n, 'headers over 32 KB: no pass');
    }

    # binary bytes: not a b64token (401), or a byte nginx refuses (400)
    refused(req(GET => '/api/x', auth("Bearer \x01\x02\x7f\xff\xfe")), 401,
            'invalid_token', 'control and high bytes in the token', $n);
    refused(req(GET => '/api/x', auth("Bearer egw_\xc3\xa9t\xc3\xa9")), 401,
            'invalid_token', 'UTF-8 bytes in the token', $n);
    refused(req(GET => '/api/x', auth("Bearer $DEV\x01")), 401,
            'invalid_token', 'valid token plus a control byte', $n);
    refused(req(GET => '/api/x', auth("\xff\xfe\x01 $DEV")), 401,
            'missing_token', 'binary scheme', $n);
    {
        my $r = req(GET => '/api/x', auth("Bearer egw_\x00$DEV"));
        is($r->{status}, 400, 'NUL in the header: nginx\'s 400');
        is(nlines(), $n, 'NUL in the header: no pass');
    }

    # two Authorization headers: nginx 1.22 refuses the duplicate itself
    # ("client sent duplicate header line"), before any module: plain 400
    for my $pair ([$DEV, $DEV], [$DEV, 'egw_other'], ['', $DEV]) {
        my $r = req(GET => '/api/x', auth("Bearer $pair->[0]"),
                    auth("Bearer $pair->[1]"));
        is($r->{status}, 400, 'duplicate Authorization: 400');
        ok(!$r->{json}, 'duplicate Authorization: nginx\'s own (non-JSON) page');
        is(nlines(), $n, 'duplicate Authorization: no pass');
    }
    # case variants are the same header
    {
        my $r = req(GET => '/api/x', auth("Bearer $DEV"),
                    "authorization: Bearer $DEV");
        is($r->{status}, 400, 'Authorization + authorization: 400');
        is(nlines(), $n, 'Authorization + authorization: no pass');
    }
    # a comma-joined list of credentials in one header
    refused(req(GET => '/api/x', auth("Bearer $DEV, Bearer egw_x")), 400,
            'invalid_request', 'comma-joined credentials', $n);
    refused(req(GET => '/api/x', auth("Bearer $DEV,")), 400,
            'invalid_request', 'trailing comma', $n);

    same_workers('Authorization cases');
}

# --- schemes and spacing -----------------------------------------------------

{
    my $n = nlines();
    passes(req(GET => '/api/x', auth("Bearer  $DEV")), 'two spaces', $n);
    $n = nlines();
    passes(req(GET => '/api/x', auth("Bearer\t$DEV")), 'a tab', $n);
    $n = nlines();
    passes(req(GET => '/api/x', auth("bearer $DEV")), 'lowercase scheme', $n);
    $n = nlines();
    passes(req(GET => '/api/x', auth("BEARER $DEV")), 'uppercase scheme', $n);
    $n = nlines();
    passes(req(GET => '/api/x', auth("Bearer $DEV   ")), 'trailing spaces', $n);

    $n = nlines();
    refused(req(GET => '/api/x', auth("Bearer $DEV extra")), 401,
            'invalid_token', 'token then a word', $n);
    refused(req(GET => '/api/x', auth("Bearer egw_a egw_b")), 401,
            'invalid_token', 'two words', $n);
    refused(req(GET => '/api/x', auth("Basic " . 'dXNlcjpwYXNz')), 401,
            'missing_token', 'Basic scheme', $n);
    refused(req(GET => '/api/x', auth("Basic $DEV")), 401,
            'missing_token', 'Basic with our token', $n);
    refused(req(GET => '/api/x', auth("Token $DEV")), 401,
            'missing_token', 'Token scheme', $n);
    refused(req(GET => '/api/x', auth("Bearer$DEV")), 401,
            'missing_token', 'no space after Bearer', $n);
    refused(req(GET => '/api/x', auth("Bearerx $DEV")), 401,
            'missing_token', '"Bearerx" scheme', $n);
    refused(req(GET => '/api/x', auth($DEV)), 401,
            'missing_token', 'token without a scheme', $n);
    refused(req(GET => '/api/x', auth("Bearer \"$DEV\"")), 401,
            'invalid_token', 'quoted token', $n);
    refused(req(GET => '/api/x', auth("Bearer egw_unknown_token")), 401,
            'invalid_token', 'unknown token', $n);
    refused(req(GET => '/api/x', auth("Bearer ===")), 401,
            'invalid_token', 'only padding', $n);

    same_workers('scheme cases');
}

# --- account ids -------------------------------------------------------------

{
    my $T = auth("Bearer $DEV");
    my $n = nlines();
    passes(req(GET => "/api/x?$A=", $T), 'empty account, optional', $n);
    $n = nlines();
    passes(req(GET => "/api/x?$A", $T), 'account name without "=", optional',
           $n);
    $n = nlines();
    passes(req(GET => "/api/x?$A=acc_dev", $T), 'own account', $n);

    $n = nlines();
    refused(req(GET => "/req/x?$A=", $T), 400,
            'missing_integrated_account_id', 'empty account, required', $n);
    refused(req(GET => '/req/x', $T), 400,
            'missing_integrated_account_id', 'no account, required', $n);
    refused(req(GET => "/api/x?$A=acc_prod", $T), 404,
            'integrated_account_not_found', 'another environment\'s account',
            $n);
    refused(req(GET => "/api/x?$A=" . ('a' x 300), $T), 404,
            'integrated_account_not_found', '300-byte account', $n);
    refused(req(GET => "/api/x?$A=" . ('a' x 7000), $T), 404,
            'integrated_account_not_found', '7000-byte account', $n);
    refused(req(GET => "/api/x?$A=acc_%C3%A9", $T), 400, 'invalid_request',
            'percent-encoded UTF-8 account', $n);
    refused(req(GET => "/api/x?$A=acc_\xc3\xa9", $T), 404,
            'integrated_account_not_found', 'raw UTF-8 account', $n);
    refused(req(GET => "/api/x?$A=\xff\xfe", $T), 404,
            'integrated_account_not_found', 'raw binary account', $n);
    refused(req(GET => "/api/x?$A=%41cc_dev", $T), 400, 'invalid_request',
            '%41 in the account', $n);
    refused(req(GET => "/api/x?integrated%5Faccount_id=acc_dev", $T), 400,
            'invalid_request', 'percent-encoded argument name', $n);
    refused(req(GET => "/api/x?$A=acc+dev", $T), 400, 'invalid_request',
            '"+" in the account', $n);
    refused(req(GET => "/api/x?$A=acc_dev&$A=acc_dev", $T), 400,
            'invalid_request', 'account given twice', $n);
    refused(req(GET => "/api/x?$A=acc_dev&INTEGRATED_ACCOUNT_ID=acc_prod", $T),
            400, 'invalid_request', 'account given twice, other case', $n);
    refused(req(GET => "/api/x?$A=../acc_dev", $T), 400, 'invalid_request',
            'dots and slash in the account', $n);
    refused(req(GET => "/api/x?$A=acc\\dev", $T), 400, 'invalid_request',
            'backslash in the account', $n);

    # the token is checked first: a bad account learns nothing without it
    refused(req(GET => "/api/x?$A=" . ('a' x 300)), 401, 'missing_token',
            'huge account, no token', $n);

    same_workers('account cases');
}

# --- JSON bodies -------------------------------------------------------------

sub post {
    my ($path, $body, @h) = @_;
    return raw("POST $path HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
               . join('', map { "$_\r\n" } auth("Bearer $DEV"),
                      'Content-Type: application/json', @h)
               . 'Content-Length: ' . length($body) . "\r\n\r\n$body");
}

sub chunked {
    my ($path, $body, $size) = @_;
    my $s = "POST $path HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
          . auth("Bearer $DEV") . "\r\nContent-Type: application/json\r\n"
          . "Transfer-Encoding: chunked\r\n\r\n";
    for (my $i = 0; $i < length $body; $i += $size) {
        my $c = substr $body, $i, $size;
        $s .= sprintf("%x\r\n", length $c) . "$c\r\n";
    }
    return raw("${s}0\r\n\r\n");
}

{
    my $n = nlines();
    passes(post('/proxy/contacts', '{"integrated_account_id":"acc_dev"}'),
           'body account', $n);

    $n = nlines();
    {
        # within jansson's depth limit (2048): parsed, the query account used
        my $deep = ('{"a":' x 100) . '1' . ('}' x 100);
        passes(post("/proxy/contacts?$A=acc_dev", $deep),
               'object nested 100 deep', $n);
        $n = nlines();
    }
    for my $depth (3000, 10000, 100000) {
        my $deep = ('{"a":' x $depth) . '1' . ('}' x $depth);
        refused(post("/proxy/contacts?$A=acc_dev", $deep), 400,
                'invalid_request', "object nested $depth deep", $n);
        my $arr = ('[' x $depth) . (']' x $depth);
        refused(post("/proxy/contacts?$A=acc_dev", $arr), 400,
                'invalid_request', "array nested $depth deep", $n);
        my $inner = '{"integrated_account_id":"acc_dev","x":'
                  . ('[' x $depth) . (']' x $depth) . '}';
        refused(post('/proxy/contacts', $inner), 400, 'invalid_request',
                "account next to an array nested $depth deep", $n);
    }
    # unclosed nesting (truncated), chunked
    refused(chunked("/proxy/contacts?$A=acc_dev", '[' x 50000, 4093), 400,
            'invalid_request', 'unclosed nesting 50000 deep, chunked', $n);

    refused(post('/proxy/contacts',
                 '{"integrated_account_id":"acc_dev","integrated_account_id":"acc_dev"}'),
            400, 'invalid_request', 'duplicate account keys', $n);
    refused(post('/proxy/contacts',
                 '{"integrated_account_id":"acc_dev","x":1,"x":2}'),
            400, 'invalid_request', 'duplicate other keys', $n);
    refused(post('/proxy/contacts',
                 '{"integrated_account_id":"acc_dev","o":{"k":1,"k":2}}'),
            400, 'invalid_request', 'duplicate keys in a nested object', $n);
    refused(post('/proxy/contacts', '{"integrated_account_id":42}'), 400,
            'invalid_request', 'account a number', $n);
    refused(post('/proxy/contacts', '{"integrated_account_id":["acc_dev"]}'),
            400, 'invalid_request', 'account an array', $n);
    refused(post('/proxy/contacts', '{"integrated_account_id":{"a":1}}'),
            400, 'invalid_request', 'account an object', $n);
    refused(post('/proxy/contacts', '{"integrated_account_id":false}'),
            400, 'invalid_request', 'account false', $n);
    refused(post('/proxy/contacts', '{"integrated_account_id":""}'),
            400, 'invalid_request', 'account empty string', $n);
    refused(post('/proxy/contacts', '{"integrated_account_id":null}'), 400,
            'missing_integrated_account_id', 'account null (absent)', $n);
    refused(post('/proxy/contacts', '["acc_dev"]'), 400, 'invalid_request',
            'top-level array', $n);
    refused(post('/proxy/contacts', '"acc_dev"'), 400, 'invalid_request',
            'top-level string', $n);
    refused(post('/proxy/contacts', '{"integrated_account_id":"acc_dev"'),
            400, 'invalid_request', 'truncated object', $n);
    refused(post('/proxy/contacts', "\xff\xfe{}"), 400, 'invalid_request',
            'binary body', $n);
    refused(post('/proxy/contacts',
                 qq({"integrated_account_id":"acc_\\u0000dev"})), 400,
            'invalid_request', 'NUL escaped in the account', $n);
    refused(post('/proxy/contacts',
                 '{"integrated_account_id":"acc_prod"}'), 404,
            'integrated_account_not_found', 'body: another environment', $n);
    refused(post('/proxy/contacts', '{"integrated_account_id":"acc_\u00e9"}'),
            404, 'integrated_account_not_found', 'body: unicode account', $n);
    refused(post("/proxy/contacts?$A=acc_dev",
                 '{"integrated_account_id":"acc_prod"}'), 400,
            'invalid_request', 'body and query disagree', $n);

    $n = nlines();
    passes(post("/proxy/contacts?$A=acc_dev", '{"integrated_account_id":null}'),
           'null body account, query account', $n);

    $n = nlines();
    passes(chunked('/proxy/contacts', '{"integrated_account_id":"acc_dev"}', 5),
           'chunked body', $n);
    $n = nlines();
    my $big = '{"pad":"' . ('x' x 100_000) . '","integrated_account_id":"acc_dev"}';
    passes(chunked('/proxy/contacts', $big, 4093), 'chunked 100 KB body', $n);

    same_workers('JSON body cases');
}

# --- HEAD and OPTIONS --------------------------------------------------------

{
    my $T = auth("Bearer $DEV");
    my $n = nlines();
    my $r = req(HEAD => '/api/x', $T);
    is($r->{status}, 200, 'HEAD valid: 200');
    is($r->{body}, '', 'HEAD valid: no body');
    is(nlines_at_least($n + 1), $n + 1, 'HEAD valid: reached the backend');

    $n = nlines();
    for my $c ([ [], 401, 'no token' ],
               [ [ auth('Bearer egw_nope') ], 401, 'unknown token' ],
               [ [ $T ], 404, 'other environment', "?$A=acc_prod" ],
               [ [ $T ], 400, 'encoded account', "?$A=%41" ]) {
        my ($h, $status, $name, $q) = @$c;
        $r = req(HEAD => '/api/x' . ($q // ''), @$h);
        is($r->{status}, $status, "HEAD, $name: $status");
        is($r->{body}, '', "HEAD, $name: no body");
        like($r->{headers}{'content-type'} // '', qr{application/json},
             "HEAD, $name: JSON content type");
        is(nlines(), $n, "HEAD, $name: no pass");
    }

    $n = nlines();
    $r = req(HEAD => "/proxy/contacts?$A=acc_dev", $T);
    is($r->{status}, 404, 'HEAD on a route: 404 (no mapping for HEAD)');
    is($r->{body}, '', 'HEAD on a route: no body');
    is(nlines(), $n, 'HEAD on a route: no pass');

    refused(req(OPTIONS => "/proxy/contacts?$A=acc_dev", $T), 404,
            'method_not_found', 'OPTIONS on a route', $n);
    refused(req(OPTIONS => "/proxy/contacts/42?$A=acc_dev", $T), 404,
            'method_not_found', 'OPTIONS on a route with rest', $n);
    refused(req(OPTIONS => '/api/x'), 401, 'missing_token',
            'OPTIONS without a token', $n);

    $n = nlines();
    passes(req(OPTIONS => '/api/x', $T), 'OPTIONS, no route, valid token', $n);

    same_workers('HEAD/OPTIONS cases');
}

# --- HTTP/2 (h2c prior knowledge) --------------------------------------------

SKIP: {
    my $v = `curl --version 2>/dev/null`;
    skip 'curl with HTTP2 not installed', 1 unless $v =~ /\bHTTP2\b/;

    my $curl = sub {
        my (@args) = @_;
        my $out = `curl -s -i --http2-prior-knowledge @args 2>/dev/null`;
        my $rc = $? >> 8;
        my ($head, $body) = split /\r\n\r\n/, $out, 2;
        my %h;
        my ($status) = ($head // '') =~ m{^HTTP/2 (\d+)};
        for (split /\r\n/, $head // '') {
            my ($k, $v) = split /:\s*/, $_, 2;
            $h{lc $k} = $v if defined $v;
        }
        my $json = ($h{'content-type'} // '') =~ /json/
            ? eval { JSON::PP->new->decode($body) } : undef;
        return { status => $status // 0, headers => \%h, body => $body // '',
                 json => $json, rc => $rc, raw => $out };
    };
    my $u = "http://127.0.0.1:$h2";

    my $n = nlines();
    my $r = $curl->("-H 'Authorization: Bearer $DEV'", "'$u/api/x?$A=acc_dev'");
    is($r->{status}, 200, 'h2 valid: 200') or diag($r->{raw});
    like($r->{body}, qr/^backend GET .* env=env_dev auth= /,
         'h2 valid: backend got the env, not the token');
    is(nlines_at_least($n + 1), $n + 1, 'h2 valid: one backend line');

    $n = nlines();
    $r = $curl->("'$u/api/x'");
    refused($r, 401, 'missing_token', 'h2 no token', $n);
    $r = $curl->("-H 'Authorization: Bearer egw_nope'", "'$u/api/x'");
    refused($r, 401, 'invalid_token', 'h2 unknown token', $n);
    $r = $curl->("-H 'Authorization: Bearer $DEV'", "'$u/api/x?$A=acc_prod'");
    refused($r, 404, 'integrated_account_not_found', 'h2 other env', $n);
    $r = $curl->("-H 'Authorization: Bearer $DEV'",
                 "'$u/proxy/contacts?$A=acc_dev'", '-X OPTIONS');
    refused($r, 404, 'method_not_found', 'h2 OPTIONS on a route', $n);

    # two authorization fields in one h2 request: nginx's duplicate check
    $r = $curl->("-H 'Authorization: Bearer $DEV'",
                 "-H 'authorization: Bearer egw_x'", "'$u/api/x'");
    is($r->{status}, 400, 'h2 duplicate authorization: 400');
    is(nlines(), $n, 'h2 duplicate authorization: no pass');

    # oversized field: nginx's http2_max_field_size refuses it
    $r = $curl->("-H 'Authorization: Bearer " . ('a' x 20000) . "'",
                 "'$u/api/x'");
    # (nginx 1.22 drops the connection: no response, status 0 here)
    isnt($r->{status}, 200,
         "h2 20 KB Authorization: refused (status $r->{status})");
    is(nlines(), $n, 'h2 20 KB Authorization: no pass');

    # h2 POST with a JSON body (no content-length: DATA frames)
    $n = nlines();
    $r = $curl->("-H 'Authorization: Bearer $DEV'",
                 "-H 'Content-Type: application/json'",
                 "--data-binary '{\"integrated_account_id\":\"acc_dev\"}'",
                 "'$u/proxy/contacts'");
    is($r->{status}, 200, 'h2 POST body account: 200') or diag($r->{raw});
    is(nlines_at_least($n + 1), $n + 1,
       'h2 POST body account: one backend line');
    $n = nlines();
    $r = $curl->("-H 'Authorization: Bearer $DEV'",
                 "-H 'Content-Type: application/json'",
                 "--data-binary '{\"integrated_account_id\":\"acc_prod\"}'",
                 "'$u/proxy/contacts'");
    refused($r, 404, 'integrated_account_not_found', 'h2 POST other env', $n);

    # clients resetting their streams while the lookup waits on a paused
    # Redis: the waiters are detached, the late replies find nobody
    my $rpid = $t->{pids}{redis};
    kill 'STOP', $rpid;
    my @kids;
    for my $i (1 .. 6) {
        my $tok = $i % 2 ? $DEV : "egw_pending_$i";
        my $pid = fork // die;
        if (!$pid) {
            exec 'sh', '-c', "curl -s -o /dev/null --http2-prior-knowledge "
                . "--max-time 0.05 -H 'Authorization: Bearer $tok' "
                . "'$u/api/x?$A=acc_dev&i=$i' >/dev/null 2>&1";
        }
        push @kids, $pid;
    }
    # and a HTTP/1.1 client going away the same way
    {
        my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$t->{port}",
                                      Proto => 'tcp');
        print $s "GET /api/x?i=h1 HTTP/1.1\r\nHost: x\r\n"
               . auth("Bearer $DEV") . "\r\n\r\n";
        sleep 0.05;
        close $s;
    }
    waitpid $_, 0 for @kids;
    sleep 0.2;
    kill 'CONT', $rpid;

    # the connection timed out (read_timeout=1s) or answers now: either
    # way the gateway serves again
    my ($ok, $end) = (0, time + 5);
    while (time < $end) {
        $r = $curl->("-H 'Authorization: Bearer $DEV'", "'$u/api/x?after=1'");
        last if ($ok = $r->{status} == 200);
        sleep 0.1;
    }
    ok($ok, 'h2 after the resets: 200 again');
    unlike($t->backend_log, qr/[?&]i=/, 'no reset request reached the backend');

    same_workers('HTTP/2 cases');
}

# --- documented edges ---------------------------------------------------------

{
    my $T = auth("Bearer $DEV");
    my $n = nlines();
    passes(req(GET => '/satany-deny/x', $T),
           'satisfy any + deny all: a valid token passes', $n);
    $n = nlines();
    refused(req(GET => '/satany-allow/x'), 401, 'missing_token',
            'satisfy any + allow 127.0.0.1: no token still 401', $n);
    my $r = req(GET => '/satall-deny/x', $T);
    is($r->{status}, 403, 'satisfy all + deny all: valid token 403');
    is(nlines(), $n, 'satisfy all + deny all: no pass');

    # error_page to a gated location: the request keeps the identity it
    # was checked with, though its credential was hidden before
    $r = req(GET => '/err/x', $T);
    is($r->{status}, 200, 'error_page to a gated location after an allow: 200')
        or diag(substr $r->{raw}, 0, 400);
    like($r->{body}, qr{^backend GET /gated_error env=env_dev auth= },
         'error_page to a gated location: the identity, no credential');

    # a query token: $request and $request_uri are rewritten, $args of a
    # refused request is not
    $n = nlines();
    passes(req(GET => '/q/x?api_key=' . $DEV . '&a=1'), 'query token', $n);
    $n = nlines();
    refused(req(GET => '/q/x?api_key=egw_wrongQQQ&a=1'), 401,
            'invalid_token', 'wrong query token', $n);
    my $log = '';
    my $end = time + 10;
    sleep 0.02 until ($log = $t->slurp('redact.log')) =~ /401\n/ || time > $end;
    my @l = split /\n/, $log;
    like($l[0] // '', qr{^GET /q/x\?api_key=\[REDACTED\]&a=1 HTTP/1.1\|GET /q/x\?api_key=\[REDACTED\]&a=1 HTTP/1.1\|/q/x\?api_key=\[REDACTED\]&a=1\|a=1\|200$},
         'allowed: token in no logged variable');
    like($l[1] // '', qr{^GET /q/x\?api_key=\[REDACTED\]&a=1 HTTP/1.1\|GET /q/x\?api_key=\[REDACTED\]&a=1 HTTP/1.1\|/q/x\?api_key=\[REDACTED\]&a=1\|a=1\|401$},
         'refused: token in no logged variable, $args included');
    unlike($t->slurp('error.log'), qr/egw_wrongQQQ/,
           'refused query token: not in error.log');

    same_workers('documented edges');
}

# --- afterwards ----------------------------------------------------------------

{
    my $n = nlines();
    passes(req(GET => '/api/x', auth("Bearer $DEV")), 'still serving', $n);
    unlike($t->backend_log, qr/\Q$DEV\E/, 'no token in the backend log');
    # nginx's own info line for a rejected duplicate header quotes both
    # header lines (the module never runs for it); nothing else may
    my @lines = grep { /\Q$DEV\E/ } split /\n/, $t->slurp('error.log');
    is(scalar(grep { !/client sent duplicate header line/ } @lines), 0,
       'no token in error.log but nginx\'s duplicate-header lines');
    is(scalar(grep { /env_gateway/ } @lines), 0,
       'no env_gateway line carries the token');
    ok(scalar(grep { /client sent duplicate header line/ } @lines),
       'nginx\'s own duplicate-header line (info) quotes the token '
       . '(documented in docs/security.md)');
    unlike($t->slurp('error.log'), qr/worker process \d+ exited/,
           'no worker exited');
    same_workers('end');
}

$t->stop;
done_testing;
