#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# env_gateway_account_body_field: the integrated account read from a JSON
# request body (POST/PUT/PATCH), the body still reaching the upstream byte
# for byte: small bodies, bodies over client_body_buffer_size (temp file),
# chunked bodies written by hand, malformed / duplicated / mistyped fields,
# body and query accounts that agree or disagree, another environment's
# account.  Nothing refused ever reaches an upstream.

use strict;
use warnings;

use lib 't/lib';
use EnvGwTest;
use Test::More;
use Digest::SHA qw(sha256_hex);
use Digest::MD5 qw(md5_hex);
use IO::Socket::INET;
use JSON::PP;
use Time::HiRes qw(sleep time);

my $t = EnvGwTest->new;
$t->start_redis;

# the "echo" upstream: reads the whole body into one buffer, logs it (JSON
# escaped) with its length, then answers through the harness backend
my $echo = EnvGwTest::free_port();

$t->start_nginx(<<"CONF");
    env_gateway_redis 127.0.0.1:%%REDIS%% connect_timeout=500ms read_timeout=2s;

    log_format echo escape=json '{"m":"\$request_method","u":"\$request_uri",'
        '"len":"\$content_length","te":"\$http_transfer_encoding",'
        '"vars":"\$http_x_envgw_vars","body":"\$request_body"}';
    server {
        listen 127.0.0.1:$echo;
        access_log %%DIR%%/echo.log echo;
        client_max_body_size 8m;
        client_body_buffer_size 4m;
        client_body_in_single_buffer on;
        location / {
            proxy_pass http://127.0.0.1:%%BACKEND%%;
        }
    }

    server {
        listen 127.0.0.1:%%PORT%%;
        client_max_body_size 4m;
        client_body_buffer_size 8k;

        location ~ ^/proxy/(?<res>[^/]+)(?:/(?<rest>[^/]+))?\$ {
            env_gateway on;
            env_gateway_account \$arg_integrated_account_id;
            env_gateway_account_body_field integrated_account_id;
            env_gateway_route \$res \$rest;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Environment-Id \$env_gateway_environment_id;
            proxy_set_header X-Envgw-Vars "\$env_gateway_account_id|\$env_gateway_method";
            proxy_pass \$env_gateway_upstream_url;
        }
        # no route: the account stays optional
        location /plain/ {
            env_gateway on;
            env_gateway_account \$arg_integrated_account_id;
            env_gateway_account_body_field integrated_account_id;
            proxy_set_header X-Envgw-Vars "\$env_gateway_account_id|\$env_gateway_method";
            proxy_pass http://127.0.0.1:$echo;
        }
    }
CONF

# --- data ------------------------------------------------------------------

$t->env('env_dev',  'team_a', 'development');
$t->env('env_prod', 'team_a', 'production');

my %tok;
$tok{dev} = $t->token('egw_dev_' . substr(sha256_hex('rb-dev'), 0, 24),
    token_id => 'tok_rb_dev', team_id => 'team_a',
    environment_id => 'env_dev', environment => 'development');
$tok{prod} = $t->token('egw_prod_' . substr(sha256_hex('rb-prod'), 0, 24),
    token_id => 'tok_rb_prod', team_id => 'team_a',
    environment_id => 'env_prod', environment => 'production');

$t->account('acc_dev',  'env_dev',  integration => 'hubspot');
$t->account('acc_dev2', 'env_dev',  integration => 'hubspot');
$t->account('acc_prod', 'env_prod', integration => 'hubspot');

my $contacts = {
    list   => { method => 'GET',    path => '/crm/v3/objects/contacts' },
    get    => { method => 'GET',    path => '/crm/v3/objects/contacts/{id}' },
    create => { method => 'POST',   path => '/crm/v3/objects/contacts' },
    update => { method => 'PATCH',  path => '/crm/v3/objects/contacts/{id}' },
    delete => { method => 'DELETE', path => '/crm/v3/objects/contacts/{id}' },
    merge  => { method => 'POST',   path => '/crm/v3/objects/contacts/merge' },
};
for my $e (qw(env_dev env_prod)) {
    $t->put("integration:$e:hubspot", { upstream => "http://127.0.0.1:$echo",
        resources => { contacts => $contacts } });
}

# --- helpers -----------------------------------------------------------------

sub echo_entries {
    return map { JSON::PP->new->decode($_) }
           grep { length } split /\n/, $t->slurp('echo.log');
}

sub nlines {
    my $n = 0;
    for my $f ('backend.log', 'echo.log') {
        my $s = $t->slurp($f);
        $n += () = $s =~ /\n/g;
    }
    return $n;
}

sub post {
    my ($m, $path, $body, $tk, @h) = @_;
    return $t->http($m, $path,
        [ Authorization => 'Bearer ' . $tok{$tk || 'dev'},
          'Content-Type' => 'application/json', @h ], $body);
}

# a forwarded request: 200, and the upstream's last entry has the body intact
sub passes {
    my ($r, $body, $name, %want) = @_;
    is($r->{status}, 200, "$name: 200") or diag(substr $r->{raw}, 0, 600);
    # the upstream writes its log line after answering: give it a moment
    my ($e, $end) = ({}, time + 2);
    while (1) {
        my @e = echo_entries();
        $e = $e[-1] || {};
        last if md5_hex($e->{body} // '') eq md5_hex($body) || time > $end;
        select(undef, undef, undef, 0.02);
    }
    is(length($e->{body} // ''), length($body),
       "$name: upstream got " . length($body) . ' bytes');
    is(md5_hex($e->{body} // ''), md5_hex($body), "$name: body intact (md5)");
    is($e->{vars}, $want{vars}, "$name: account|method = $want{vars}")
        if $want{vars};
    is($e->{u}, $want{uri}, "$name: upstream URI $want{uri}") if $want{uri};
    return $e;
}

sub refused {
    my ($r, $status, $code, $name, $before) = @_;
    EnvGwTest::refused($r, $status, $code, $name,
        defined $before ? (count => \&nlines, before => $before) : ());
}

my $A = 'integrated_account_id';

# --- small bodies ------------------------------------------------------------

{
    my $b = '{"integrated_account_id":"acc_dev","properties":{"email":"a@b.c","name":"Zo\u00eb \u2603"}}';
    passes(post(POST => '/proxy/contacts', $b), $b, 'small body, POST create',
           vars => 'acc_dev|create', uri => '/crm/v3/objects/contacts');

    my $pretty = qq({\n  "properties" : { "x" : [1, 2.5, true, null] },\n)
               . qq(  "integrated_account_id" : "acc_dev"\n}\n);
    passes(post(PATCH => '/proxy/contacts/42', $pretty), $pretty,
           'pretty body, PATCH update', vars => 'acc_dev|update',
           uri => '/crm/v3/objects/contacts/42');
    passes(post(PUT => '/proxy/contacts/42', $b), $b, 'PUT update',
           vars => 'acc_dev|update', uri => '/crm/v3/objects/contacts/42');
    passes(post(POST => '/proxy/contacts/merge', $b), $b,
           'custom method POST merge', vars => 'acc_dev|merge',
           uri => '/crm/v3/objects/contacts/merge');

    # the field escaped in JSON is the same account
    my $esc = '{"integrated_account_id":"acc\u005fdev"}';
    passes(post(POST => '/proxy/contacts', $esc), $esc,
           'escaped account string', vars => 'acc_dev|create');

    # the account only in the query, the body without the field
    my $nof = '{"properties":{"a":1}}';
    passes(post(POST => "/proxy/contacts?$A=acc_dev", $nof), $nof,
           'query account, body without the field', vars => 'acc_dev|create');

    # both, agreeing
    passes(post(POST => "/proxy/contacts?$A=acc_dev&limit=1", $b), $b,
           'body and query agree', vars => 'acc_dev|create',
           uri => '/crm/v3/objects/contacts?limit=1');

    # null means absent: the query account is used
    my $null = '{"integrated_account_id":null}';
    passes(post(POST => "/proxy/contacts?$A=acc_dev", $null), $null,
           'null field, query account', vars => 'acc_dev|create');

    # empty body with a query account
    my $r = post(POST => "/proxy/contacts?$A=acc_dev", '');
    is($r->{status}, 200, 'empty body, query account: 200');

    # no route: the account stays optional
    passes(post(POST => '/plain/x', '{"a":1}'), '{"a":1}',
           'no route, no account: passes', vars => '|');
    passes(post(POST => '/plain/x', $b), $b, 'no route, body account',
           vars => 'acc_dev|');
}

# --- bodies over client_body_buffer_size (8k): in a temp file ----------------

{
    my $fill = join '', map { sprintf '"k%05d":"%s",', $_, 'v' x 40 } 1 .. 4000;
    chop $fill;
    my $first = qq({"integrated_account_id":"acc_dev",$fill});
    my $last = qq({$fill,"integrated_account_id":"acc_dev"});
    cmp_ok(length $first, '>', 150_000, 'big body: ' . length($first) . ' bytes');

    passes(post(POST => '/proxy/contacts', $first), $first,
           'big body, account first', vars => 'acc_dev|create');
    passes(post(POST => '/proxy/contacts', $last), $last,
           'big body, account last', vars => 'acc_dev|create');
    passes(post(PATCH => '/proxy/contacts/7', $last), $last,
           'big body, PATCH', vars => 'acc_dev|update');
    like($t->slurp('error.log'),
         qr/a client request body is buffered to a temporary file/,
         'the big bodies went through a temp file');

    my $before = nlines();
    my $big_prod = qq({$fill,"integrated_account_id":"acc_prod"});
    refused(post(POST => '/proxy/contacts', $big_prod), 404,
            'integrated_account_not_found',
            'big body, another environment\'s account last', $before);

    $before = nlines();
    refused(post(POST => "/proxy/contacts?$A=acc_dev2", $last), 400,
            'invalid_request', 'big body disagreeing with the query', $before);

    $before = nlines();
    my $broken = substr($last, 0, -1);
    refused(post(POST => "/proxy/contacts?$A=acc_dev", $broken), 400,
            'invalid_request', 'big body, truncated JSON', $before);

    # over the 1 MB the gateway parses: refused, never passed unread
    my $huge = '{"integrated_account_id":"acc_dev","pad":"' . ('p' x 1_300_000)
             . '"}';
    $before = nlines();
    refused(post(POST => '/proxy/contacts', $huge), 400, 'invalid_request',
            'body over 1 MB', $before);
    $before = nlines();
    refused(post(POST => "/proxy/contacts?$A=acc_dev", $huge), 400,
            'invalid_request', 'body over 1 MB, query account too', $before);
}

# --- malformed or ambiguous bodies -------------------------------------------

my @bad = (
    [ 'malformed JSON',       '{"integrated_account_id":"acc_dev"' ],
    [ 'trailing garbage',     '{"integrated_account_id":"acc_dev"} x' ],
    [ 'not an object',        '["acc_dev"]' ],
    [ 'a bare string',        '"acc_dev"' ],
    [ 'duplicate key',        '{"integrated_account_id":"acc_dev","integrated_account_id":"acc_dev"}' ],
    [ 'duplicate key, disagreeing',
                              '{"integrated_account_id":"acc_dev","integrated_account_id":"acc_prod"}' ],
    [ 'account a number',     '{"integrated_account_id":12345}' ],
    [ 'account true',         '{"integrated_account_id":true}' ],
    [ 'account an array',     '{"integrated_account_id":["acc_dev"]}' ],
    [ 'account an object',    '{"integrated_account_id":{"id":"acc_dev"}}' ],
    [ 'account empty',        '{"integrated_account_id":""}' ],
    [ 'account with a slash', '{"integrated_account_id":"acc/../dev"}' ],
    [ 'account with NUL',     '{"integrated_account_id":"acc_dev\u0000x"}' ],
    [ 'account with newline', '{"integrated_account_id":"acc_dev\nx"}' ],
    [ 'invalid UTF-8',        qq({"integrated_account_id":"acc_\xff\xfe"}) ],
    [ 'form body',            'integrated_account_id=acc_dev' ],
);

for my $case (@bad) {
    my ($name, $body) = @$case;
    my $before = nlines();
    refused(post(POST => '/proxy/contacts', $body), 400, 'invalid_request',
            "$name (body only)", $before);
    $before = nlines();
    refused(post(POST => "/proxy/contacts?$A=acc_dev", $body), 400,
            'invalid_request', "$name (with a query account)", $before);
}

{
    my $before = nlines();
    refused(post(POST => "/proxy/contacts?$A=acc_dev2",
                 '{"integrated_account_id":"acc_dev"}'),
            400, 'invalid_request', 'body and query disagree', $before);

    $before = nlines();
    refused(post(POST => '/proxy/contacts', '{"integrated_account_id":"acc_prod"}'),
            404, 'integrated_account_not_found',
            'body account of another environment', $before);

    $before = nlines();
    refused(post(POST => '/proxy/contacts', '{"integrated_account_id":"acc_nope"}'),
            404, 'integrated_account_not_found', 'unknown body account',
            $before);

    # the same 404 with the production token and a development account
    $before = nlines();
    refused(post(POST => '/proxy/contacts', '{"integrated_account_id":"acc_dev"}',
                 'prod'),
            404, 'integrated_account_not_found',
            'prod token, dev account in the body', $before);
    passes(post(POST => '/proxy/contacts', '{"integrated_account_id":"acc_prod"}',
                'prod'), '{"integrated_account_id":"acc_prod"}',
           'prod token, prod account in the body', vars => 'acc_prod|create');

    $before = nlines();
    refused($t->get('/proxy/contacts'), 401, 'missing_token',
            'no token', $before);
    $before = nlines();
    refused(post(POST => '/proxy/contacts', '{}'), 400,
            'missing_integrated_account_id', 'POST {} with no account',
            $before);
    $before = nlines();
    refused(post(POST => '/proxy/contacts', ''), 400,
            'missing_integrated_account_id', 'POST empty with no account',
            $before);
    $before = nlines();
    refused($t->get('/proxy/contacts', $tok{dev}), 400,
            'missing_integrated_account_id', 'GET, no body, no account',
            $before);
    $before = nlines();
    refused($t->get('/proxy/contacts/5', $tok{dev}), 400,
            'missing_integrated_account_id', 'GET id, no body, no account',
            $before);

    # every request with a body is read for the account, whatever its verb
    $before = nlines();
    refused(post(DELETE => '/proxy/contacts/5?integrated_account_id=acc_dev',
                 '{"integrated_account_id":"acc_prod"}'),
            400, 'invalid_request',
            'DELETE: a body account that disagrees with the query', $before);
    $before = nlines();
    refused(post(DELETE => '/proxy/contacts/5',
                 '{"integrated_account_id":"acc_prod"}'),
            404, 'integrated_account_not_found',
            'DELETE: the body names another environment\'s account', $before);
}

# --- an account token and a body account -----------------------------------

{
    $tok{acct} = $t->token('egw_acct_' . substr(sha256_hex('rb-acct'), 0, 24),
        token_id => 'tok_rb_acct', kind => 'account', team_id => 'team_a',
        environment_id => 'env_dev', environment => 'development',
        integrated_account_id => 'acc_dev', expires_at => time + 600);
    my $own = '{"integrated_account_id":"acc_dev","x":1}';
    passes(post(POST => '/proxy/contacts', $own, 'acct'), $own,
           'account token, its own account in the body',
           vars => 'acc_dev|create');
    passes(post(POST => '/proxy/contacts', '{"x":2}', 'acct'), '{"x":2}',
           'account token, no account in the body', vars => 'acc_dev|create');

    # the contract: an account token naming any other account gets the 404
    # of a missing account (in the query it does; in the body it is a 400)
    for my $other ('acc_dev2', 'acc_prod', 'acc_nope') {
        my $before = nlines();
        my $r = post(POST => '/proxy/contacts',
                     qq({"integrated_account_id":"$other"}), 'acct');
        {
            is($r->{status}, 404, "account token, body names $other: 404");
        }
        isnt($r->{status}, 200, "account token, body names $other: refused");
        is(nlines(), $before, "account token, body names $other: "
           . 'nothing reached an upstream');
        my $q = post(POST => "/proxy/contacts?$A=$other", '{}', 'acct');
        is($q->{status}, 404, "account token, query names $other: 404");
    }
}

# --- chunked request bodies, written by hand ---------------------------------

sub raw_request {
    my ($head, @pieces) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$t->{port}",
                                  Proto => 'tcp', Timeout => 10)
        or die "connect: $!";
    $s->autoflush(1);
    print $s $head;
    for my $p (@pieces) {
        sleep 0.02;
        print $s $p;
    }
    local $/;
    my $raw = '';
    eval {
        local $SIG{ALRM} = sub { die "timeout\n" };
        alarm 10;
        $raw = <$s> // '';
        alarm 0;
    };
    alarm 0;
    close $s;
    return EnvGwTest::parse_response($raw);
}

sub chunked {
    my ($path, $body, $size, $tk) = @_;
    my @chunks;
    for (my $i = 0; $i < length $body; $i += $size) {
        my $c = substr($body, $i, $size);
        push @chunks, sprintf("%x\r\n", length $c) . $c . "\r\n";
    }
    push @chunks, "0\r\n\r\n";
    my $head = "POST $path HTTP/1.1\r\nHost: localhost\r\n"
             . 'Authorization: Bearer ' . $tok{$tk || 'dev'} . "\r\n"
             . "Content-Type: application/json\r\n"
             . "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
    # several chunks per write, a few writes
    my @writes;
    my $per = @chunks > 8 ? int(@chunks / 8) : 1;
    while (@chunks) {
        push @writes, join '', splice @chunks, 0, $per;
    }
    return raw_request($head, @writes);
}

{
    my $b = '{"properties":{"n":1},"integrated_account_id":"acc_dev"}';
    # 7-byte chunks split the field name and the value
    my $e = passes(chunked('/proxy/contacts', $b, 7), $b,
                   'chunked small body', vars => 'acc_dev|create');
    is($e->{te}, '', 'chunked: the upstream got a plain body');
    is($e->{len}, length $b, 'chunked: with a Content-Length');

    my $fill = join ',', map { qq("f$_":") . ('z' x 50) . '"' } 1 .. 3000;
    my $big = qq({$fill,"integrated_account_id":"acc_dev"});
    passes(chunked('/proxy/contacts', $big, 4093), $big,
           'chunked big body (temp file)', vars => 'acc_dev|create');

    my $before = nlines();
    refused(chunked('/proxy/contacts', '{"integrated_account_id":"acc_prod"}', 5),
            404, 'integrated_account_not_found',
            'chunked, another environment\'s account', $before);
    $before = nlines();
    refused(chunked("/proxy/contacts?$A=acc_dev2", $b, 3), 400,
            'invalid_request', 'chunked, disagreeing with the query', $before);
    $before = nlines();
    refused(chunked('/proxy/contacts', '{"integrated_account_id":', 4), 400,
            'invalid_request', 'chunked, malformed', $before);
}

# --- keep-alive after a body was read and refused ----------------------------

{
    my $bad = '{"integrated_account_id":12}';
    my $good = '{"integrated_account_id":"acc_dev","after":"refusal"}';
    my $auth = 'Authorization: Bearer ' . $tok{dev} . "\r\n";
    my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$t->{port}",
                                  Proto => 'tcp', Timeout => 10) or die;
    $s->autoflush(1);
    print $s "POST /proxy/contacts HTTP/1.1\r\nHost: localhost\r\n$auth"
           . 'Content-Length: ' . length($bad) . "\r\n\r\n$bad";
    print $s "POST /proxy/contacts HTTP/1.1\r\nHost: localhost\r\n$auth"
           . "Connection: close\r\n"
           . 'Content-Length: ' . length($good) . "\r\n\r\n$good";
    local $/;
    my $raw = '';
    eval {
        local $SIG{ALRM} = sub { die "timeout\n" };
        alarm 10;
        $raw = <$s> // '';
        alarm 0;
    };
    alarm 0;
    my @st = $raw =~ m{^HTTP/1\.1 (\d+)}mg;
    is("@st", '400 200', 'pipelined: refusal after a read body, then a pass');
    my @e = echo_entries();
    is($e[-1]{body}, $good, 'pipelined: the second body reached the upstream');
}

$t->stop;
done_testing;
