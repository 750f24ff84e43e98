#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# Integration records as a hand edit (redis-cli SET) could leave them,
# through real nginx and Redis, without and with env_gateway_cache: every
# field the gateway reads (upstream, resources, a resource's methods, a
# method's "method" and "path", auth, oauth) missing, null, of the wrong
# type, empty, holding bytes a request line cannot carry, huge; a value
# that is not JSON, not an object, has a duplicate key or is not a Redis
# string; an upstream of another scheme or naming a host nginx has no
# upstream{} block for (and no resolver), with userinfo, a placeholder, or
# a "." or ".." segment (dots or %2e) in its path or a method's.  Each is 500
# gateway_misconfigured with one error.log line naming the record's key,
# nothing reaches an upstream, and asking again (the cache on) is 500
# again: a malformed record is never cached as good.  Huge valid values
# work, and a record above max_record is 500 naming the key and the limit.
# envgw refuses to write the upstreams the gateway refuses.

use strict;
use warnings;

use lib 't/lib';
use EnvGwTest qw(refused);
use Test::More;
use JSON::PP;

my $J = JSON::PP->new->canonical(1);

my $LIST = { method => 'GET', path => '/c' };

# a record whose fields are the valid ones, with %o replacing some
# (undef: the field is absent)
sub rec {
    my (%o) = @_;
    my %r = (upstream => 'http://hubspot_ok',
             resources => { contacts => { list => $LIST } });
    for (keys %o) {
        if (defined $o{$_}) { $r{$_} = $o{$_} } else { delete $r{$_} }
    }
    return $J->encode(\%r);
}

# the same, with the method "list" of contacts replaced
sub meth {
    my (%o) = @_;
    my %m = %$LIST;
    for (keys %o) {
        if (defined $o{$_}) { $m{$_} = $o{$_} } else { delete $m{$_} }
    }
    return rec(resources => { contacts => { list => \%m } });
}

my $null = JSON::PP::null;
my $huge = 'h' x 100_000;

# [ name, raw value at the key ]: each one is 500 gateway_misconfigured
my @bad = (
    # the value itself
    [ 'not JSON',               '{"upstream":"http://hubspot_ok"' ],
    [ 'not JSON: text',         'upstream=http://hubspot_ok' ],
    [ 'empty string',           '' ],
    [ 'JSON null',              'null' ],
    [ 'JSON array',             '["http://hubspot_ok"]' ],
    [ 'JSON string',            '"http://hubspot_ok"' ],
    [ 'JSON number',            '42' ],
    [ 'duplicate upstream',     '{"upstream":"http://hubspot_ok",'
                                . '"upstream":"http://hubspot_ok",'
                                . '"resources":{"contacts":{"list":'
                                . '{"method":"GET","path":"/c"}}}}' ],
    [ 'trailing garbage',       rec() . 'x' ],

    # upstream
    [ 'upstream missing',       rec(upstream => undef) ],
    [ 'upstream null',          rec(upstream => $null) ],
    [ 'upstream number',        rec(upstream => 42) ],
    [ 'upstream true',          rec(upstream => JSON::PP::true) ],
    [ 'upstream array',         rec(upstream => ['http://hubspot_ok']) ],
    [ 'upstream object',        rec(upstream => { url => 'http://hubspot_ok' }) ],
    [ 'upstream empty',         rec(upstream => '') ],
    [ 'upstream no scheme',     rec(upstream => 'hubspot_ok') ],
    [ 'upstream ftp',           rec(upstream => 'ftp://hubspot_ok') ],
    [ 'upstream no host',       rec(upstream => 'http://') ],
    [ 'upstream no host, path', rec(upstream => 'http:///c') ],
    [ 'upstream CRLF',          rec(upstream => "http://hubspot_ok/x\r\n"
                                               . "X-Injected: 1\r\n") ],
    [ 'upstream space',         rec(upstream => 'http://hubspot_ok/a b') ],
    [ 'upstream fragment',      rec(upstream => 'http://hubspot_ok/#x') ],
    [ 'upstream unknown host',  rec(upstream => 'http://hubspot_none') ],
    [ 'upstream unknown port',  rec(upstream => 'http://hubspot_ok:8443') ],
    [ 'upstream huge host',     rec(upstream => "http://$huge") ],
    [ 'upstream .. in its path', rec(upstream => 'http://hubspot_ok/v3/../admin') ],
    [ 'upstream . at its end',  rec(upstream => 'http://hubspot_ok/v3/.') ],
    [ 'upstream %2e%2e segment', rec(upstream => 'http://hubspot_ok/v3/%2E%2e/x') ],
    [ 'upstream placeholder',   rec(upstream => 'http://hubspot_ok/{id}') ],
    [ 'upstream userinfo',      rec(upstream => 'http://x@hubspot_ok/v3') ],

    # resources (absent or null: no methods, a 404, tested below)
    [ 'resources number',       rec(resources => 42) ],
    [ 'resources string',       rec(resources => 'contacts') ],
    [ 'resources array',        rec(resources => [ { list => $LIST } ]) ],
    [ 'resource null',          rec(resources => { contacts => $null }) ],
    [ 'resource number',        rec(resources => { contacts => 1 }) ],
    [ 'resource array',         rec(resources => { contacts => [$LIST] }) ],
    [ 'method entry null',      rec(resources => { contacts => { list => $null } }) ],
    [ 'method entry string',    rec(resources => { contacts => { list => '/c' } }) ],
    [ 'method entry array',     rec(resources => { contacts => { list => ['GET', '/c'] } }) ],

    # a method's "method" (verb)
    [ 'verb missing',           meth(method => undef) ],
    [ 'verb null',              meth(method => $null) ],
    [ 'verb number',            meth(method => 1) ],
    [ 'verb array',             meth(method => ['GET']) ],
    [ 'verb empty',             meth(method => '') ],
    [ 'verb CRLF',              meth(method => "GET /x HTTP/1.1\r\nX-Injected: 1"
                                               . "\r\n\r\nGET") ],
    [ 'verb space',             meth(method => 'GET /x') ],

    # a method's "path"
    [ 'path missing',           meth(path => undef) ],
    [ 'path null',              meth(path => $null) ],
    [ 'path number',            meth(path => 7) ],
    [ 'path object',            meth(path => { p => '/c' }) ],
    [ 'path empty',             meth(path => '') ],
    [ 'path relative',          meth(path => 'c') ],
    [ 'path CRLF',              meth(path => "/c HTTP/1.1\r\nX-Injected: 1\r\n\r\n") ],
    [ 'path space',             meth(path => '/c d') ],
    [ 'path tab',               meth(path => "/c\td") ],
    [ 'path NUL',               meth(path => "/c\0d") ],
    [ 'path query',             meth(path => '/c?x=1') ],
    [ 'path fragment',          meth(path => '/c#x') ],
    [ 'path backslash',         meth(path => '/c\\d') ],
    [ 'path huge, then space',  meth(path => "/$huge d") ],
    [ 'path .. segment',        meth(path => '/c/../admin') ],
    [ 'path .. at the end',     meth(path => '/c/..') ],
    [ 'path . segment',         meth(path => '/c/./d') ],
    [ 'path %2e%2e segment',    meth(path => '/c/%2e%2E/admin') ],
    [ 'path %2e segment',       meth(path => '/c/%2E/d') ],
    [ 'path .%2e at the end',   meth(path => '/c/.%2e') ],

    # auth and oauth (optional; present, they must be followable)
    [ 'auth number',            rec(auth => 1) ],
    [ 'auth string',            rec(auth => 'Bearer {access_token}') ],
    [ 'auth empty object',      rec(auth => {}) ],
    [ 'auth header, no format', rec(auth => { header => 'Authorization' }) ],
    [ 'auth header empty',      rec(auth => { header => '', format => 'x' }) ],
    [ 'auth format null',       rec(auth => { header => 'X-Key', format => $null }) ],
    [ 'auth format number',     rec(auth => { query => 'key', format => 1 }) ],
    [ 'auth two kinds',         rec(auth => { header => 'X-Key', query => 'k',
                                              format => '{api_key}' }) ],
    [ 'auth basic string',      rec(auth => { basic => 'u:p' }) ],
    [ 'auth basic no password', rec(auth => { basic => { username => '{u}' } }) ],
    [ 'oauth number',           rec(oauth => 1) ],
    [ 'oauth empty object',     rec(oauth => {}) ],
    [ 'oauth token_url null',   rec(oauth => { token_url => $null }) ],
    [ 'oauth token_url empty',  rec(oauth => { token_url => '' }) ],
    [ 'oauth refresh number',   rec(oauth => { token_url => 'https://a/t',
                                               refresh_before => 300 }) ],
);

# [ name, raw value, status, error ]: valid records that are not refused
# as misconfigured
my @good = (
    [ 'valid',                  rec(), 200 ],
    [ 'resources missing',      rec(resources => undef), 404,
      'method_not_found' ],
    [ 'resources null',         rec(resources => $null), 404,
      'method_not_found' ],
    [ 'resources empty',        rec(resources => {}), 404,
      'method_not_found' ],
    [ 'resource empty',         rec(resources => { contacts => {} }), 404,
      'method_not_found' ],
    [ 'auth null',              rec(auth => $null), 200 ],
    [ 'oauth null',             rec(oauth => $null), 200 ],
    [ 'upstream with a path',   rec(upstream => 'http://hubspot_ok/v3'), 200 ],
    [ 'upstream, port, IP',     undef, 200 ],          # filled in below
    [ 'huge path',              meth(path => "/$huge"), 200 ],
    [ 'path with dots in names', meth(path => '/c/v1.2/..x/x..'), 200 ],
    [ 'path with other escapes', meth(path => '/c/a%20b%41'), 200 ],
    [ 'path with escaped dots in names', meth(path => '/c/%2e%2e%2e/a%2e'), 200 ],
    [ 'upstream path with dots in names',
      rec(upstream => 'http://hubspot_ok/v..1/.x/%2ex'), 200 ],
    [ 'upstream with @ in its path', rec(upstream => 'http://hubspot_ok/@me'), 200 ],
    [ 'huge unknown field',     rec(notes => $huge), 200 ],
    [ 'many resources',         rec(resources => { contacts => { list => $LIST },
        map { ("r$_" => { list => $LIST }) } 1 .. 2000 }), 200 ],
);

for my $cache (0, 1) {
    suite($cache);
}

done_testing;


sub suite {
    my ($cache) = @_;
    my $mode = $cache ? 'cache' : 'no cache';

    my $t = EnvGwTest->new;
    $t->start_redis;
    my $echo = $t->start_echo;

    my $zone = $cache
        ? 'env_gateway_cache zone=envgw:4m ttl=60s negative_ttl=60s;' : '';

    $t->start_nginx(<<"CONF", $cache ? (subscribed => 1) : ());
    env_gateway_redis 127.0.0.1:%%REDIS%% connect_timeout=500ms read_timeout=2s max_record=512k;
    $zone
    upstream hubspot_ok { server 127.0.0.1:$echo; }

    server {
        listen 127.0.0.1:%%PORT%%;
        large_client_header_buffers 4 64k;
        location ~ ^/proxy/(?<res>[^/]+)(?:/(?<rest>[^/]+))?\$ {
            env_gateway on;
            env_gateway_account \$arg_integrated_account_id;
            env_gateway_route \$res \$rest;
            proxy_pass \$env_gateway_upstream_url;
        }
    }
CONF

    my $tok = $t->seed_gateway(envs => [qw(dev)],
                               tokens => { dev => 'egw_dev_malformed_0001' });

    my $n = 0;
    my $call = sub {
        my ($acc) = @_;
        return $t->get("/proxy/contacts?integrated_account_id=$acc",
                       $tok->{dev});
    };
    my $key_lines = sub {
        my ($key) = @_;
        return scalar grep { /\[error\].*env_gateway: .*"\Q$key\E"/ }
                      split /\n/, $t->slurp('error.log');
    };

    # one integration per case: no case sees another's cached record
    my $case = sub {
        my ($name, $value, %o) = @_;
        $n++;
        my $int = "int$n";
        my $acc = "acc_$n";
        my $key = "envgw:integration:env_dev:$int";
        $t->account($acc, 'env_dev', integration => $int);
        if (ref $value eq 'CODE') {
            $value->($key);
        } else {
            $t->redis->set($key, $value);
        }
        return ($acc, $key);
    };

    for my $c (@bad) {
        my ($name, $value) = @$c;
        my ($acc, $key) = $case->(@$c);
        for my $try (1, 2) {
            my $before = $t->echo_count;
            my $lines = $key_lines->($key);
            my $r = $call->($acc);
            refused($r, 500, 'gateway_misconfigured', "$mode: $name ($try)",
                    count => sub { $t->echo_count }, before => $before);
            is($key_lines->($key) - $lines, 1,
               "$mode: $name ($try): one error.log line names $key");
        }
    }

    # a value that is no Redis string
    {
        my ($acc, $key) = $case->('a hash', sub {
            $t->redis->hset($_[0], upstream => 'http://hubspot_ok');
        });
        my $before = $t->echo_count;
        refused($call->($acc), 500, 'gateway_misconfigured',
                "$mode: a Redis hash at the key",
                count => sub { $t->echo_count }, before => $before);
        is($key_lines->($key), 1, "$mode: a Redis hash: the key is logged");
    }

    # above max_record: the key and the limit are named
    {
        my ($acc, $key) = $case->('above max_record',
                                  rec(notes => 'x' x (600 * 1024)));
        my $before = $t->echo_count;
        refused($call->($acc), 500, 'gateway_misconfigured',
                "$mode: above max_record",
                count => sub { $t->echo_count }, before => $before);
        like($t->slurp('error.log'),
             qr/env_gateway: record "\Q$key\E" is above max_record \(524288 bytes\)/,
             "$mode: above max_record: key and limit logged");
    }

    # the same nginx never sent a request on a malformed record by its own
    # means (proxy_pass of an unusable URL, a resolver lookup)
    unlike($t->slurp('error.log'),
           qr/invalid URL prefix|no resolver defined|no host in|invalid host/,
           "$mode: no malformed upstream reached proxy_pass");

    for my $c (@good) {
        my ($name, $value, $status, $error) = @$c;
        $value //= rec(upstream => "http://127.0.0.1:$echo");
        my ($acc, $key) = $case->($name, $value);
        for my $try (1, 2) {
            my $before = $t->echo_count;
            my $r = $call->($acc);
            if ($status == 200) {
                is($r->{status}, 200, "$mode: $name ($try): 200");
                is($t->echo_count, $before + 1,
                   "$mode: $name ($try): one request upstream");
            } else {
                refused($r, $status, $error, "$mode: $name ($try)",
                        count => sub { $t->echo_count }, before => $before);
            }
        }
        is($key_lines->($key), 0, "$mode: $name: no error names the key");
    }

    # the huge path reached the upstream exactly
    my @req = $t->echo_requests;
    ok((grep { $_->{uri} eq "/$huge" } @req),
       "$mode: the huge path reached the upstream as written");
    ok((grep { $_->{uri} eq '/v3/c' } @req),
       "$mode: an upstream with a path prefixes the method's path");

    # a malformed record fixed (and its key published) is used at once
    {
        my ($acc, $key) = $case->('fixed later', rec(upstream => 42));
        refused($call->($acc), 500, 'gateway_misconfigured',
                "$mode: before the fix");
        $t->redis->set($key, rec());
        $t->redis->publish($t->channel, $key);
        my $r;
        for (1 .. 50) {
            $r = $call->($acc);
            last if $r->{status} == 200;
            select undef, undef, undef, 0.05;
        }
        is($r->{status}, 200, "$mode: fixed and published: 200");
    }

    # envgw writes no upstream the gateway refuses
    if (!$cache) {
        require EnvGwCli;
        my $cli = EnvGwCli->new($t);
        for my $up ('http://hubspot_ok?x=1', 'http://hubspot_ok/a\\b',
                    'http://hubspot_ok/#x', 'hubspot_ok',
                    'http://hubspot_ok/v3/../admin', 'http://hubspot_ok/.',
                    'http://hubspot_ok/%2e%2E/x', 'http://hubspot_ok/{id}',
                    'http://x@hubspot_ok/v3')
        {
            my $res = $cli->run('integration', 'set', 'env_dev', 'hub',
                                '--upstream', $up);
            is($res->{rc}, 2, "envgw integration set --upstream '$up': "
                              . "exit 2");
            like($res->{err}, qr/bad upstream/, "envgw: '$up': bad upstream");
        }
        is($t->redis->exists('envgw:integration:env_dev:hub'), 0,
           'envgw wrote none of them');
    }

    $t->stop;
}
