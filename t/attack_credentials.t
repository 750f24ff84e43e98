#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# Upstream credentials under attack, through real nginx, Redis and envgw:
# the account's credential reaches the declared upstream and nothing else.
# Not a location without the gateway (or a gated one without a route)
# reached by error_page, not a mirror or auth_request subrequest, not the
# error log when the upstream cannot be reached (nginx names the upstream
# URI there), not nginx's proxy cache (another account's answer, a cache
# file), not proxy_set_header, add_header or a redirect reading
# $env_gateway_upstream_url, not the next request of a keep-alive
# connection; a client header spelled with '_' for '-' is hidden, and a
# client argument named like the query credential in any spelling never
# goes upstream beside it.  Expiry at its edges, and Redis gone with only
# the credentials record not cached, never send a request without them.

use strict;
use warnings;

use lib 't/lib';
use EnvGwTest;
use EnvGwCli;
use Test::More;
use JSON::PP qw(decode_json encode_json);
use MIME::Base64 qw(encode_base64);
use Time::HiRes qw(sleep);

my $t = EnvGwTest->new;
$t->start_redis;
my $cli = EnvGwCli->new($t);
my $dir = $t->dir;
my $echo = $t->start_echo;
my $dead = EnvGwTest::free_port();        # nobody listens there

my $MARK = 'zq7attack';
my %secret = map { $_ => "${MARK}_${_}_" . int(rand(1e9)) }
    qw(hdr qry dead deadq qry2);

open my $kf, '>', "$dir/keys" or die;
printf $kf "k1 %s\n", encode_base64('k' x 32, '');
close $kf;
chmod 0600, "$dir/keys";

sub envgw_ok {
    my ($name, @args) = @_;
    my $r = $cli->run({ env => { ENVGW_SECRET_KEYS => "$dir/keys" } }, @args);
    is($r->{rc}, 0, "$name: exit 0") or diag("$r->{out}\n$r->{err}");
}

$t->env('env_dev', 'team_a', 'development');
my $DEV = $t->token('egw_dev_' . ('d' x 24), token_id => 'tok_dev',
    team_id => 'team_a', environment_id => 'env_dev',
    environment => 'development');

open my $rf, '>', "$dir/res.json" or die;
print $rf '{"contacts":{"list":{"method":"GET","path":"/crm/contacts"}}}';
close $rf;

my $AUTH_H = '{"header":"X-Api-Key","format":"{api_key}"}';
my $AUTH_Q = '{"query":"hapikey","format":"{api_key}"}';
my $AUTH_Q2 = '{"query":"api_key","format":"{api_key}"}';
my $UP = "http://127.0.0.1:$echo";
my $DEAD = "http://127.0.0.1:$dead";

for ([i_hdr => $UP, $AUTH_H], [i_qry => $UP, $AUTH_Q],
     [i_dead => $DEAD, $AUTH_H], [i_deadq => $DEAD, $AUTH_Q],
     [i_qry2 => $UP, $AUTH_Q2], [i_plain => $UP, undef])
{
    my ($i, $up, $auth) = @$_;
    envgw_ok("integration $i", 'integration', 'set', 'env_dev', $i,
             '--upstream', $up, '--resources', "$dir/res.json",
             defined $auth ? ('--auth', $auth) : ());
}
$t->account('acc_plain', 'env_dev', integration => 'i_plain');

for (qw(hdr qry dead deadq qry2)) {
    $t->account("acc_$_", 'env_dev', integration => "i_$_");
    envgw_ok("credentials $_", 'credentials', 'set', "acc_$_",
             '--field', "api_key=$secret{$_}");
}

my $ROUTE = <<'L';
            env_gateway on;
            env_gateway_account $arg_integrated_account_id;
            env_gateway_route $res $rest;
            proxy_pass $env_gateway_upstream_url;
L

$t->start_nginx(<<"CONF", subscribed => 1);
    env_gateway_redis 127.0.0.1:%%REDIS%%;
    env_gateway_cache zone=cred:1m ttl=30s;
    env_gateway_secret_keys $dir/keys;
    underscores_in_headers on;
    proxy_cache_path %%DIR%%/cache keys_zone=api:1m;

    log_format all '\$request|\$http_x_api_key|\$args|\$request_uri|'
                   '\$env_gateway_upstream_url|\$upstream_addr';
    server {
        listen 127.0.0.1:%%PORT%%;
        access_log %%DIR%%/access.log all;

        # the upstream cannot be reached: nginx's error page handling
        location ~ ^/proxy/(?<res>[^/]+)(?:/(?<rest>[^/]+))?\$ {
$ROUTE
            proxy_intercept_errors on;
            error_page 502 504 = /fallback;
        }

        # a mirror of every routed request to a shadow service
        location ~ ^/mirrored/(?<res>[^/]+)(?:/(?<rest>[^/]+))?\$ {
$ROUTE
            mirror /shadow;
        }

        # an authorisation service asked before the upstream
        location ~ ^/authreq/(?<res>[^/]+)(?:/(?<rest>[^/]+))?\$ {
$ROUTE
            auth_request /authsvc;
        }

        # the same, the authorisation location behind the gateway too
        location ~ ^/authgated/(?<res>[^/]+)(?:/(?<rest>[^/]+))?\$ {
$ROUTE
            auth_request /authsvc_gated;
        }

        location = /authsvc_gated {
            internal;
            env_gateway on;
            env_gateway_account \$arg_integrated_account_id;
            proxy_pass http://127.0.0.1:$echo/authsvc_gated;
            proxy_pass_request_body off;
        }

        # error_page into a gated location without a route
        location ~ ^/deadgated/(?<res>[^/]+)(?:/(?<rest>[^/]+))?\$ {
$ROUTE
            proxy_intercept_errors on;
            error_page 502 504 = /fallback_gated;
        }

        location = /fallback_gated {
            env_gateway on;
            env_gateway_account \$arg_integrated_account_id;
            proxy_pass http://127.0.0.1:$echo/fallback_gated;
        }

        # an operator's habit: strip the client's header of that name
        location ~ ^/strip/(?<res>[^/]+)(?:/(?<rest>[^/]+))?\$ {
$ROUTE
            proxy_set_header X-Api-Key "";
            proxy_set_header Authorization "";
        }

        # an operator caching the third-party API's answers
        location ~ ^/cached/(?<res>[^/]+)(?:/(?<rest>[^/]+))?\$ {
$ROUTE
            proxy_cache api;
            proxy_cache_valid 200 10m;
            add_header X-Cache \$upstream_cache_status;
        }

        # the URL variable read around proxy_pass
        location ~ ^/qvars/(?<res>[^/]+)(?:/(?<rest>[^/]+))?\$ {
$ROUTE
            proxy_set_header X-Url \$env_gateway_upstream_url;
            add_header X-Url \$env_gateway_upstream_url always;
            proxy_intercept_errors on;
            error_page 502 = \@redirect;
        }

        location \@redirect {
            return 302 \$env_gateway_upstream_url;
        }

        location = /fallback {
            proxy_pass http://127.0.0.1:$echo/fallback;
        }

        location = /shadow {
            internal;
            proxy_pass http://127.0.0.1:$echo/shadow;
        }

        location = /authsvc {
            internal;
            proxy_pass http://127.0.0.1:$echo/authsvc;
            proxy_pass_request_body off;
        }
    }
CONF

sub call {
    my ($prefix, $acc, $extra, @h) = @_;
    return $t->http('GET', "/$prefix/contacts?integrated_account_id=$acc"
                           . ($extra // ''),
                    [ Authorization => "Bearer $DEV", @h ]);
}

# the echoed requests since the last call
my $seen = 0;
sub new_requests {
    my @all = $t->echo_requests;
    my @new = @all[$seen .. $#all];
    $seen = @all;
    return @new;
}

sub by_uri {
    my ($re, @reqs) = @_;
    return grep { $_->{uri} =~ $re } @reqs;
}

# --- the declared upstream gets it -----------------------------------------

my $r = call('proxy', 'acc_hdr');
is($r->{status}, 200, 'header credential: 200');
my @req = new_requests();
my ($up) = by_uri(qr{^/crm/contacts}, @req);
is_deeply([ EnvGwTest::echo_header($up, 'X-Api-Key') ], [ $secret{hdr} ],
          'header credential: the upstream gets the account\'s key');

# --- another location reached by error_page: nothing of it ----------------

$r = call('proxy', 'acc_dead');
is($r->{status}, 200, 'error_page to a location without the gateway: 200');
@req = new_requests();
my ($fb) = by_uri(qr{^/fallback}, @req);
ok($fb, 'error_page: the fallback service was called');
unlike($fb ? $fb->{raw} : '', qr/$MARK/,
       'error_page: the fallback service gets no credential header');

$r = call('proxy', 'acc_deadq');
is($r->{status}, 200, 'error_page, query credential: 200');
@req = new_requests();
($fb) = by_uri(qr{^/fallback}, @req);
ok($fb, 'error_page, query credential: the fallback service was called');
unlike($fb ? $fb->{raw} : '', qr/$MARK/,
       'error_page, query credential: the fallback gets no credential');

# --- mirror and auth_request subrequests into such a location -------------

$r = call('mirrored', 'acc_hdr');
is($r->{status}, 200, 'mirror: 200');
sleep 1;
@req = new_requests();
my ($sh) = by_uri(qr{^/shadow}, @req);
($up) = by_uri(qr{^/crm/contacts}, @req);
ok($sh, 'mirror: the shadow service was called');
unlike($sh ? $sh->{raw} : '', qr/$MARK/,
       'mirror: the shadow service gets no credential header');
is_deeply([ EnvGwTest::echo_header($up, 'X-Api-Key') ], [ $secret{hdr} ],
          'mirror: the upstream still gets the account\'s key');

$r = call('mirrored', 'acc_qry');
is($r->{status}, 200, 'mirror, query credential: 200');
sleep 1;
@req = new_requests();
($sh) = by_uri(qr{^/shadow}, @req);
unlike($sh ? $sh->{raw} : '', qr/$MARK/,
       'mirror, query credential: the shadow gets no credential');

$r = call('authreq', 'acc_hdr');
is($r->{status}, 200, 'auth_request: 200');
@req = new_requests();
my ($as) = by_uri(qr{^/authsvc}, @req);
($up) = by_uri(qr{^/crm/contacts}, @req);
ok($as, 'auth_request: the authorisation service was called');
unlike($as ? $as->{raw} : '', qr/$MARK/,
       'auth_request: the authorisation service gets no credential header');
is_deeply([ EnvGwTest::echo_header($up, 'X-Api-Key') ], [ $secret{hdr} ],
          'auth_request: the upstream still gets the account\'s key');

$r = call('authgated', 'acc_hdr');
is($r->{status}, 200, 'auth_request into a gated location: 200');
@req = new_requests();
($as) = by_uri(qr{^/authsvc_gated}, @req);
($up) = by_uri(qr{^/crm/contacts}, @req);
ok($as, 'auth_request into a gated location: its service was called');
unlike($as ? $as->{raw} : '', qr/$MARK/,
       'auth_request into a gated location: no credential header there');
is_deeply([ EnvGwTest::echo_header($as, 'X-Integrated-Account-Id') ],
          [ 'acc_hdr' ], 'auth_request into a gated location: identity there');
is_deeply([ EnvGwTest::echo_header($up, 'X-Api-Key') ], [ $secret{hdr} ],
          'auth_request into a gated location: the upstream gets the key');

$r = call('deadgated', 'acc_dead');
is($r->{status}, 200, 'error_page into a gated location: 200');
@req = new_requests();
($fb) = by_uri(qr{^/fallback_gated}, @req);
ok($fb, 'error_page into a gated location: its service was called');
unlike($fb ? $fb->{raw} : '', qr/$MARK/,
       'error_page into a gated location: no credential header there');

# --- $env_gateway_upstream_url: the argument only in proxy_pass's read ---

$r = call('qvars', 'acc_qry');
@req = new_requests();
($up) = by_uri(qr{^/crm/contacts}, @req);
is($r->{status}, 200, 'URL variable: 200');
like($up ? $up->{uri} : '', qr/hapikey=\Q$secret{qry}\E/,
     'URL variable: proxy_pass got the URL with the argument');
my @xu = EnvGwTest::echo_header($up // {}, 'X-Url');
is(scalar @xu, 1, 'URL variable: proxy_set_header sent it');
unlike($xu[0] // '', qr/$MARK/, 'URL variable: proxy_set_header without it');
ok(defined $r->{headers}{'x-url'}, 'URL variable: add_header set it');
unlike($r->{headers}{'x-url'} // '', qr/$MARK/,
       'URL variable: add_header without it');

$r = call('qvars', 'acc_deadq');
@req = new_requests();
is($r->{status}, 302, 'URL variable after error_page: a redirect');
like($r->{headers}{location} // '', qr{^http://127\.0\.0\.1:\d+/crm/contacts},
     'URL variable after error_page: the Location is the upstream URL');
unlike($r->{raw}, qr/$MARK/, 'URL variable after error_page: no credential '
       . 'in the redirect');

# --- keep-alive: one client connection, several accounts ------------------

my $req = '';
for (['acc_hdr', 'keep-alive'], ['acc_qry', 'keep-alive'],
     ['acc_plain', 'close'])
{
    $req .= "GET /proxy/contacts?integrated_account_id=$_->[0] HTTP/1.1\r\n"
          . "Host: localhost\r\nAuthorization: Bearer $DEV\r\n"
          . "Connection: $_->[1]\r\n\r\n";
}
$r = $t->raw_http($req);
is($r->{status}, 200, 'pipelined requests: answered');
@req = new_requests();
is(scalar @req, 3, 'pipelined requests: three upstream requests');
is_deeply([ EnvGwTest::echo_header($req[0], 'X-Api-Key') ], [ $secret{hdr} ],
          'pipelined, first (header credential): its key');
is_deeply([ EnvGwTest::echo_header($req[1] // {}, 'X-Api-Key') ], [],
          'pipelined, second (query credential): no header of the first');
like($req[1] ? $req[1]{uri} : '', qr/hapikey=\Q$secret{qry}\E/,
     'pipelined, second: its own key in the query');
unlike($req[2] ? $req[2]{raw} : '', qr/$MARK/,
       'pipelined, third (no auth declared): no credential of the others');

# --- proxy_set_header of the credential header's name ----------------------

$r = call('strip', 'acc_hdr');
@req = new_requests();
if ($r->{status} == 200) {
    ($up) = by_uri(qr{^/crm/contacts}, @req);
    is_deeply([ EnvGwTest::echo_header($up, 'X-Api-Key') ], [ $secret{hdr} ],
              'proxy_set_header X-Api-Key "": the account\'s key still goes');
} else {
    is(scalar @req, 0, 'proxy_set_header X-Api-Key "": refused, nothing sent');
}

# --- nginx's proxy cache: one account's answer never served to another ----

$t->account('acc_hdrb', 'env_dev', integration => 'i_hdr');
$t->account('acc_qryb', 'env_dev', integration => 'i_qry');
my %second = (hdrb => "${MARK}_hdrb_" . int(rand(1e9)),
              qryb => "${MARK}_qryb_" . int(rand(1e9)));
envgw_ok("credentials $_", 'credentials', 'set', "acc_$_",
         '--field', "api_key=$second{$_}") for sort keys %second;

for my $pair ([ 'acc_hdr', 'acc_hdrb', $secret{hdr}, $second{hdrb},
                'header credential' ],
              [ 'acc_qry', 'acc_qryb', $secret{qry}, $second{qryb},
                'query credential' ])
{
    my ($a1, $a2, $k1, $k2, $name) = @$pair;
    my $r1 = call('cached', $a1);
    my $r2 = call('cached', $a2);
    @req = new_requests();
    is($r1->{status}, 200, "proxy_cache, $name: first account 200");
    is($r2->{status}, 200, "proxy_cache, $name: second account 200");
    unlike($r2->{body}, qr/\Q$k1\E/,
           "proxy_cache, $name: the second account never gets the "
           . "first one's answer");
    is(scalar @req, 2, "proxy_cache, $name: each account's request went "
       . "upstream");
}
my @files = grep { -f } glob($t->dir . '/cache/*');
my $cached = join '', map { local $/; open my $f, '<', $_; <$f> } @files;
unlike($cached, qr/$MARK/, 'proxy_cache: no credential in the cache files');

# --- client headers named like the credential header ----------------------

$r = call('proxy', 'acc_hdr', '', 'x-api-key' => 'client1',
          'X_API_KEY' => 'client2', 'X-Api_Key' => 'client3',
          'X-API-KEY' => 'client4', 'x.api.key' => 'client5');
is($r->{status}, 200, 'client credential headers: 200');
@req = new_requests();
($up) = by_uri(qr{^/crm/contacts}, @req);
is_deeply([ EnvGwTest::echo_header($up, 'X-Api-Key') ], [ $secret{hdr} ],
          'client headers named like the credential header with _ for -: '
          . 'hidden, only the account\'s key goes upstream');
unlike($up ? $up->{raw} : '', qr/client[0-9]/,
       'client credential headers: none of them upstream');

# --- client arguments named like the query credential ---------------------

for my $arg ('hapikey=c', 'HAPIKEY=c', 'hapi%6Bey=c', 'hapikey[]=c',
             'hapikey%00=c', 'hapi.key=c', 'x=1;hapikey=c', 'hapikey=c&hapikey=d')
{
    $r = call('proxy', 'acc_qry', "&$arg");
    @req = new_requests();
    if ($r->{status} == 200) {
        ($up) = by_uri(qr{^/crm/contacts}, @req);
        my (undef, $q) = split /\?/, $up->{uri} // '', 2;
        my @hk;
        for (split /[&;]/, $q // '') {
            my ($k, $v) = split /=/, $_, 2;
            (my $n = lc $k) =~ s/%6b/k/gi;
            $n =~ s/(%00|\[\])//g;
            push @hk, $v if $n =~ /^hapi_?key$/;
        }
        is_deeply(\@hk, [ $secret{qry} ],
                  "client argument $arg: only the account's key upstream");
    } else {
        is($r->{status}, 400, "client argument $arg: refused 400");
        is(scalar @req, 0, "client argument $arg: nothing upstream");
    }
}

# PHP reads '.', ' ', '+' and '[' in a name as '_': "api.key" is api_key
for my $arg ('api.key=c', 'api+key=c', 'api%20key=c', 'api[key=c',
             'API_KEY=c', 'api_key[0]=c', 'api%5Fkey=c')
{
    $r = call('proxy', 'acc_qry2', "&$arg");
    @req = new_requests();
    is($r->{status}, 400, "client argument $arg beside api_key: refused 400");
    is(scalar @req, 0, "client argument $arg beside api_key: nothing upstream");
}
$r = call('proxy', 'acc_qry2', '&api_key=c');
@req = new_requests();
($up) = by_uri(qr{^/crm/contacts}, @req);
like($up ? $up->{uri} : '', qr/\?(?:[^&]*&)*api_key=\Q$secret{qry2}\E$/,
     'client api_key: dropped, the account\'s key upstream');
unlike($up ? $up->{uri} : '', qr/api_key=c/, 'client api_key: not upstream');

# --- expiry at its edges: never a request without a usable credential ----

my $now = time;
my $n = 0;
for my $case ([ 'now', $now ], [ 'a second ago', $now - 1 ], [ '0', 0 ],
              [ '-1', -1 ], [ 'a string', "" . ($now + 3600) ],
              [ 'a float 0.5', 0.5 ], [ 'a huge float', 1e300 ],
              [ 'true', JSON::PP::true ], [ 'an object', {} ],
              [ 'an array', [ $now + 3600 ] ], [ 'a float ago', $now - 0.5 ])
{
    my ($name, $v) = @$case;
    my $acc = 'acc_edge' . $n++;
    $t->account($acc, 'env_dev', integration => 'i_hdr');
    envgw_ok("credentials $acc", 'credentials', 'set', $acc,
             '--field', "api_key=$secret{hdr}");
    my $rec = decode_json($t->redis->get("envgw:credentials:$acc"));
    $t->redis->set("envgw:credentials:$acc",
                   encode_json({ %$rec, expires_at => $v }));
    $r = call('proxy', $acc);
    @req = new_requests();
    ok($r->{status} == 503 || $r->{status} == 500,
       "expires_at $name: refused ($r->{status})");
    is(scalar @req, 0, "expires_at $name: nothing upstream");
    unlike($r->{body}, qr/$MARK/, "expires_at $name: no value in the body");
}

# the control: the same record with a future expiry is used
$t->account('acc_edge_ok', 'env_dev', integration => 'i_hdr');
envgw_ok('credentials acc_edge_ok', 'credentials', 'set', 'acc_edge_ok',
         '--field', "api_key=$secret{hdr}", '--expires-at', '1h');
$r = call('proxy', 'acc_edge_ok');
@req = new_requests();
is($r->{status}, 200, 'expires_at in an hour: 200');
is_deeply([ EnvGwTest::echo_header($req[0] // {}, 'X-Api-Key') ],
          [ $secret{hdr} ], 'expires_at in an hour: the key upstream');

# --- Redis gone with only the credentials record not in the cache ------

$t->account('acc_cold', 'env_dev', integration => 'i_hdr');
$r = call('proxy', 'acc_cold');
is($r->{status}, 503, 'no credentials yet: 503');
envgw_ok('credentials acc_cold', 'credentials', 'set', 'acc_cold',
         '--field', "api_key=$secret{hdr}");
sleep 0.5;                      # the invalidation reaches the gateway
new_requests();
$t->stop_redis;
$r = call('proxy', 'acc_cold');
@req = new_requests();
is($r->{status}, 503, 'Redis gone, credentials not cached: 503');
is(scalar @req, 0, 'Redis gone, credentials not cached: nothing upstream');
$r = call('proxy', 'acc_hdr');
@req = new_requests();
is_deeply([ EnvGwTest::echo_header($req[0] // {}, 'X-Api-Key') ],
          [ $r->{status} == 200 ? $secret{hdr} : () ],
          'Redis gone, all cached: the account\'s own key or nothing at all');

# --- logs ------------------------------------------------------------------

$t->stop;
my $log = $t->slurp('error.log');
unlike($log, qr/$MARK/,
       'error.log (upstream unreachable): no credential');
my @lines = grep { /$MARK/ } split /\n/, $log;
diag(join "\n", @lines[0 .. ($#lines > 5 ? 5 : $#lines)]) if @lines;
unlike($t->slurp('access.log'), qr/$MARK/, 'access.log: no credential');

done_testing;
