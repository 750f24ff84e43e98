#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# Upstream credentials of integrated accounts, through real nginx, Redis,
# envgw and the Python and PHP echo backends: the credential set in each
# declared form (header, query argument, basic), replacing what the client
# sent; 503 credentials_unavailable when they are missing, expired, moved
# to another account, unreadable or incomplete, with no request upstream;
# Redis, the audit trail and the logs never holding a value; key rotation
# across an nginx reload; per-environment auth declarations in diff and
# promote.

use strict;
use warnings;

use lib 't/lib';
use EnvGwTest;
use EnvGwCli;
use EnvGwBackends;
use Test::More;
use JSON::PP;
use MIME::Base64 qw(encode_base64);
use Time::HiRes qw(sleep);

my $t = EnvGwTest->new;
$t->start_redis;
my $cli = EnvGwCli->new($t);
my $dir = $t->dir;

my ($port, $skip) = EnvGwBackends::start($t, 'python', 'php');
plan skip_all => "backends unavailable: " . join(', ', values %$skip)
    if !$port->{python} || !$port->{php};
my $PY = "http://127.0.0.1:$port->{python}";
my $PHP = "http://127.0.0.1:$port->{php}";

# every secret value holds this mark, so one pattern finds any copy
my $MARK = 'zq5ecret';
my %secret = map { $_ => "${MARK}_${_}_" . int(rand(1e9)) }
    qw(at_h api_q cid_b cs_b at_prod key_prod at_rot at_new at_old at_x);

sub keyfile {
    my ($name, @kids) = @_;
    open my $fh, '>', "$dir/$name" or die;
    for my $k (@kids) {
        printf $fh "%s %s\n", $k, encode_base64(substr("$k" x 32, 0, 32), '');
    }
    close $fh;
    chmod 0600, "$dir/$name";
    return "$dir/$name";
}

my $K1 = keyfile('keys1', 'k1');
my $K21 = keyfile('keys21', 'k2', 'k1');
my $K2 = keyfile('keys2', 'k2');
system('cp', $K1, "$dir/keys") == 0 or die;
chmod 0600, "$dir/keys";

sub envgw {
    my ($keys, @args) = @_;
    return $cli->run({ env => { ENVGW_SECRET_KEYS => $keys } }, @args);
}

sub envgw_ok {
    my ($name, $keys, @args) = @_;
    my $r = envgw($keys, @args);
    is($r->{rc}, 0, "$name: exit 0") or diag("$r->{out}\n$r->{err}");
    return $r;
}

# --- records ------------------------------------------------------------

$t->env('env_dev', 'team_a', 'development');
$t->env('env_prod', 'team_a', 'production');
my $DEV = $t->token('egw_dev_' . ('d' x 24), token_id => 'tok_dev',
    team_id => 'team_a', environment_id => 'env_dev',
    environment => 'development');
my $PROD = $t->token('egw_prod_' . ('p' x 24), token_id => 'tok_prod',
    team_id => 'team_a', environment_id => 'env_prod',
    environment => 'production');

my $res = '{"contacts":{"list":{"method":"GET","path":"/crm/contacts"}}}';
open my $rf, '>', "$dir/res.json" or die;
print $rf $res;
close $rf;

my $AUTH_H = '{"header":"Authorization","format":"Bearer {access_token}"}';
my $AUTH_Q = '{"query":"hapikey","format":"{api_key}"}';
my $AUTH_B = '{"basic":{"username":"{client_id}","password":"{client_secret}"}}';
my $AUTH_P = '{"header":"X-Api-Key","format":"{api_key}"}';

for ([env_dev => hs_header => $PY, $AUTH_H], [env_dev => hs_query => $PHP, $AUTH_Q],
     [env_dev => hs_basic => $PY, $AUTH_B], [env_dev => plain => $PY, undef],
     [env_prod => hs_header => $PY, $AUTH_P])
{
    my ($env, $i, $up, $auth) = @$_;
    envgw_ok("integration $env $i", $K1, 'integration', 'set', $env, $i,
             '--upstream', $up, '--resources', "$dir/res.json",
             defined $auth ? ('--auth', $auth) : ());
}

$t->account($_->[0], $_->[1], integration => $_->[2]) for
    [acc_h => env_dev => 'hs_header'], [acc_q => env_dev => 'hs_query'],
    [acc_b => env_dev => 'hs_basic'], [acc_none => env_dev => 'hs_header'],
    [acc_exp => env_dev => 'hs_header'], [acc_moved => env_dev => 'hs_header'],
    [acc_crlf => env_dev => 'hs_header'], [acc_miss => env_dev => 'hs_header'],
    [acc_plain => env_dev => 'plain'], [acc_prod => env_prod => 'hs_header'],
    [acc_old => env_dev => 'hs_header'], [acc_new => env_dev => 'hs_header'];

envgw_ok('credentials set header', $K1, 'credentials', 'set', 'acc_h',
         '--field', "access_token=$secret{at_h}",
         '--field', "refresh_token=${MARK}_rt");
envgw_ok('credentials set query', $K1, 'credentials', 'set', 'acc_q',
         '--field', "api_key=$secret{api_q}");
open my $cf, '>', "$dir/basic.json" or die;
print $cf encode_json({ client_id => $secret{cid_b},
                        client_secret => $secret{cs_b} });
close $cf;
envgw_ok('credentials set --from-file', $K1, 'credentials', 'set', 'acc_b',
         '--from-file', "$dir/basic.json");
envgw_ok('credentials set expired', $K1, 'credentials', 'set', 'acc_exp',
         '--field', "access_token=$secret{at_x}", '--expires-at', '1000');
envgw_ok('credentials set with CR LF', $K1, 'credentials', 'set', 'acc_crlf',
         '--field', "access_token=${MARK}\r\nX-Evil: 1");
envgw_ok('credentials set without the format\'s field', $K1, 'credentials',
         'set', 'acc_miss', '--field', "api_key=${MARK}_miss");
envgw_ok('credentials set prod', $K1, 'credentials', 'set', 'acc_prod',
         '--field', "access_token=$secret{at_prod}",
         '--field', "api_key=$secret{key_prod}");

# a ciphertext copied to another account of the same environment
$t->redis->set('envgw:credentials:acc_moved',
               $t->redis->get('envgw:credentials:acc_h'));

my $r = envgw($K1, 'credentials', 'set', 'acc_h', '--field', 'novalue');
is($r->{rc}, 2, 'credentials set: --field without = is a usage error');
$r = envgw($K1, 'credentials', 'set', 'acc_h');
is($r->{rc}, 2, 'credentials set: no field is a usage error');
$r = envgw($K1, 'credentials', 'set', 'acc_unknown', '--field', 'a=b');
is($r->{rc}, 1, 'credentials set: an unknown account fails');
$r = envgw('', 'credentials', 'set', 'acc_h', '--field', 'a=b');
isnt($r->{rc}, 0, 'credentials set: no keyring fails');
like($r->{err}, qr/keyring/, 'credentials set: no keyring: says so');
$r = envgw($K1, 'integration', 'set', 'env_dev', 'hs_header', '--auth',
           '{"header":"Host","format":"{a}"}');
is($r->{rc}, 2, 'integration set --auth: a reserved header is refused');
$r = envgw($K1, 'integration', 'set', 'env_dev', 'hs_header', '--auth',
           '{"header":"X-A","format":"no placeholder"}');
is($r->{rc}, 2, 'integration set --auth: a format without a field is refused');

my $show = envgw_ok('credentials show', $K1, 'credentials', 'show', 'acc_h');
like($show->{out}, qr/key k1, expires never, fields access_token, refresh_token/,
     'credentials show: key id, expiry and field names');
unlike($show->{out} . $show->{err}, qr/$MARK/, 'credentials show: no value');

# --- nginx --------------------------------------------------------------

my $LOC = <<'L';
            env_gateway on;
            env_gateway_account $arg_integrated_account_id;
            env_gateway_route $res $rest;
            proxy_pass $env_gateway_upstream_url;
L

$t->start_nginx(<<"CONF", subscribed => 1);
    env_gateway_redis 127.0.0.1:%%REDIS%%;
    env_gateway_cache zone=cred:1m ttl=30s;
    env_gateway_secret_keys $dir/keys;

    log_format full '\$request|\$http_authorization|\$env_gateway_upstream_url|'
                    '\$args|\$http_x_api_key';
    server {
        listen 127.0.0.1:%%PORT%%;
        access_log %%DIR%%/access.log full;
        location ~ ^/proxy/(?<res>[^/]+)(?:/(?<rest>[^/]+))?\$ {
$LOC
        }
    }
CONF

sub call {
    my ($acc, $token, @h) = @_;
    my $r = $t->http('GET', "/proxy/contacts?integrated_account_id=$acc",
                     [ Authorization => "Bearer " . ($token // $DEV), @h ]);
    EnvGwBackends::dechunk($r);
    $r->{echo} = eval { decode_json($r->{body}) } if $r->{status} == 200;
    return $r;
}

sub hdr {
    my ($echo, $name) = @_;
    my ($k) = grep { lc $_ eq lc $name } keys %{ $echo->{headers} || {} };
    return defined $k ? $echo->{headers}{$k} : [];
}

# header
$r = call('acc_h');
is($r->{status}, 200, 'header: 200');
is_deeply(hdr($r->{echo}, 'Authorization'), ["Bearer $secret{at_h}"],
          'header: the backend gets the account\'s token, and only it');
is($r->{echo}{path}, '/crm/contacts', 'header: the routed path');

# query
$r = $t->http('GET', '/proxy/contacts?integrated_account_id=acc_q&hapikey=client&x=1',
              [ Authorization => "Bearer $DEV" ]);
EnvGwBackends::dechunk($r);
$r->{echo} = eval { decode_json($r->{body}) };
is($r->{status}, 200, 'query: 200');
is($r->{echo}{backend}, 'php', 'query: PHP answered');
is($r->{echo}{query}{hapikey}, $secret{api_q},
   'query: PHP reads the account\'s key, not the client\'s');
is($r->{echo}{query}{x}, '1', 'query: other arguments kept');
is_deeply(hdr($r->{echo}, 'HTTP_AUTHORIZATION'), [],
          'query: no Authorization upstream');

# basic
$r = call('acc_b');
is($r->{status}, 200, 'basic: 200');
is_deeply(hdr($r->{echo}, 'Authorization'),
          [ 'Basic ' . encode_base64("$secret{cid_b}:$secret{cs_b}", '') ],
          'basic: Basic base64(client_id:client_secret)');

# an integration without auth: nothing added, the client's credential hidden
$r = call('acc_plain');
is($r->{status}, 200, 'no auth: 200');
is_deeply(hdr($r->{echo}, 'Authorization'), [], 'no auth: no Authorization');

# refusals: 503 credentials_unavailable, nothing upstream
for ([acc_none => 'missing'], [acc_exp => 'expired'],
     [acc_moved => 'moved to another account'],
     [acc_crlf => 'CR LF in a header value'],
     [acc_miss => 'the format\'s field missing'])
{
    my ($acc, $why) = @$_;
    $r = call($acc);
    is($r->{status}, 503, "$why: 503");
    is($r->{json}{error}, 'credentials_unavailable',
       "$why: credentials_unavailable");
    unlike($r->{body}, qr/$MARK|backend/, "$why: no value, no upstream answer");
}
like($t->slurp('error.log'),
     qr/credentials of integrated account "acc_moved" unusable: it does not decrypt/,
     'moved: the error log says why');
like($t->slurp('error.log'),
     qr/credentials of integrated account "acc_exp" unusable: expired/,
     'expired: the error log says why');

# a malformed auth declaration is a malformed record: 500, fail closed
my $bad = decode_json($t->redis->get('envgw:integration:env_dev:hs_header'));
$bad->{auth} = { header => 'Bad Header', format => '{access_token}' };
$t->redis->set('envgw:integration:env_dev:bad', encode_json($bad));
$t->account('acc_badauth', 'env_dev', integration => 'bad');
$r = call('acc_badauth');
is($r->{status}, 500, 'bad auth declaration: 500');
is($r->{json}{error}, 'gateway_misconfigured',
   'bad auth declaration: gateway_misconfigured');

# --- per environment: diff and promote ------------------------------------

# the client's own header of that name (any case) never goes upstream
$r = call('acc_prod', $PROD, 'x-api-key' => 'client-own-value');
is($r->{status}, 200, 'production: 200');
is_deeply(hdr($r->{echo}, 'X-Api-Key'), [ $secret{key_prod} ],
          'production: its own declaration (X-Api-Key), the client\'s replaced');
unlike($r->{body}, qr/client-own-value/, 'production: nothing of the client\'s');
is_deeply(hdr($r->{echo}, 'Authorization'), [],
          'production: no Authorization');

$r = envgw($K1, 'diff', 'env_dev', 'env_prod');
is($r->{rc}, 1, 'diff: the auth declarations differ');
like($r->{out}, qr/~ hs_header auth: \{"format":"Bearer \{access_token\}","header":"Authorization"\} vs \{"format":"\{api_key\}","header":"X-Api-Key"\}/,
     'diff: shows both declarations');

$r = envgw_ok('promote without --auth', $K1, 'promote', 'env_dev', 'env_prod',
              '--integration', 'hs_header');
is(decode_json($t->redis->get('envgw:integration:env_prod:hs_header'))
       ->{auth}{header}, 'X-Api-Key', 'promote without --auth: auth kept');

$r = envgw_ok('promote --auth', $K1, 'promote', 'env_dev', 'env_prod',
              '--integration', 'hs_header', '--auth');
like($r->{out}, qr/~ hs_header auth/, 'promote --auth: prints the change');
is_deeply(decode_json($t->redis->get('envgw:integration:env_prod:hs_header'))
              ->{auth}, decode_json($AUTH_H), 'promote --auth: copied');
$r = envgw($K1, 'diff', 'env_dev', 'env_prod');
unlike($r->{out}, qr/auth/, 'diff after promote: no auth difference');

$r = call('acc_prod', $PROD);
is_deeply(hdr($r->{echo}, 'Authorization'), ["Bearer $secret{at_prod}"],
          'after promote: production sends the promoted form (invalidated)');
is_deeply(hdr($r->{echo}, 'X-Api-Key'), [], 'after promote: no X-Api-Key');

# --- key rotation across a reload --------------------------------------------

sub reload_with {
    my ($keys) = @_;
    my @old = $t->worker_pids;
    system('cp', $keys, "$dir/keys") == 0 or die;
    chmod 0600, "$dir/keys";
    $t->reload_nginx;
    my $end = time + 10;
    while (time < $end) {
        my @now = $t->worker_pids;
        my %o = map { $_ => 1 } @old;
        last if @now && !grep { $o{$_} } @now;
        sleep 0.05;
    }
    $t->wait_ready;
    $t->wait_subscribed(1);
}

envgw_ok('a record under k1', $K1, 'credentials', 'set', 'acc_old',
         '--field', "access_token=$secret{at_old}");
reload_with($K21);
$r = call('acc_h');
is_deeply(hdr($r->{echo}, 'Authorization'), ["Bearer $secret{at_h}"],
          'rotation: k1 records still read after the reload');
envgw_ok('credentials set with k2 first', $K21, 'credentials', 'set',
         'acc_new', '--field', "access_token=$secret{at_new}");
is(decode_json($t->redis->get('envgw:credentials:acc_new'))->{kid}, 'k2',
   'rotation: new writes use the first key');
$r = call('acc_new');
is_deeply(hdr($r->{echo}, 'Authorization'), ["Bearer $secret{at_new}"],
          'rotation: a k2 record is read');

$r = envgw($K21, 'keys', 'rotate');
is($r->{rc}, 1, 'keys rotate: exit 1 (a record it cannot read)');
like($r->{out}, qr/re-encrypted \d+ credentials records? with key k2/,
     'keys rotate: reports');
my @kids = map { decode_json($t->redis->get($_))->{kid} }
           $t->redis->keys('envgw:credentials:*');
# acc_moved cannot be re-encrypted: its additional data is another account's
is(scalar(grep { $_ ne 'k2' } @kids), 1,
   'keys rotate: every readable record is under k2 (the moved one is not)');
like($r->{err}, qr/acc_moved: it does not decrypt/,
     'keys rotate: names the record it cannot read');
$r = envgw($K21, 'keys', 'rotate');
like($r->{out}, qr/re-encrypted 0 .* \(\d+ already were/,
     'keys rotate again: nothing to do');

reload_with($K2);
$r = call('acc_old');
is_deeply(hdr($r->{echo}, 'Authorization'), ["Bearer $secret{at_old}"],
          'rotation: a rotated record is read with k1 gone');

# a record written with the retired key only
envgw_ok('a record under k1 after k1 is gone', $K1, 'credentials', 'set',
         'acc_old', '--field', "access_token=$secret{at_old}");
$r = call('acc_old');
is($r->{status}, 503, 'unknown key id: 503');
like($t->slurp('error.log'), qr/"acc_old" unusable: its key id is not in the keyring/,
     'unknown key id: the error log says why');

envgw_ok('credentials remove', $K2, 'credentials', 'remove', 'acc_old');
ok(!defined $t->redis->get('envgw:credentials:acc_old'),
   'credentials remove: gone');
$r = call('acc_old');
is($r->{status}, 503, 'removed: 503 (invalidated)');

# --- nothing in clear: Redis (every key, the audit trail), logs -------------

sub dump_redis {
    my $all = '';
    for my $k ($t->redis->keys('*')) {
        my $type = $t->redis->type($k);
        my @v = $type eq 'string' ? ($t->redis->get($k))
              : $type eq 'set' ? $t->redis->smembers($k)
              : $type eq 'hash' ? $t->redis->hgetall($k)
              : $type eq 'list' ? $t->redis->lrange($k, 0, -1)
              : $type eq 'stream'
              ? map { ref $_ ? @{ $_->[1] } : $_ } $t->redis->xrange($k, '-', '+')
              : ();
        $all .= "$k\n" . join("\n", map { $_ // '' } @v) . "\n";
    }
    return $all;
}

my $dump = dump_redis();
like($dump, qr/credentials:acc_h/, 'redis dump: has the credentials keys');
like($dump, qr/credentials set acc_h --field access_token --field refresh_token/,
     'audit: records the field names');
unlike($dump, qr/$MARK/, 'redis dump (records, audit stream): no value');
for my $f (qw(error.log access.log)) {
    my $log = $t->slurp($f);
    ok(length $log, "$f written");
    unlike($log, qr/$MARK/, "$f: no value");
}
unlike(join('', map { $t->slurp($_) } map { s{.*/}{}r } glob("$dir/envgw*.out")),
       qr/$MARK/, 'envgw output: no value');
like($t->slurp('access.log'), qr{HTTP/1\.1\|-\|http://[^|]*/crm/contacts\|}m,
     'access log: $http_authorization and the upstream URL carry nothing');

$t->stop;
done_testing;
