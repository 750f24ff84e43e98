#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# Running upstream credentials, through real nginx (error_log at debug),
# Redis, envgw and an echo upstream: env_gateway_credentials_total counts
# each request's result once (injected, missing, expired, unknown_key,
# undecryptable, malformed, unusable) beside
# env_gateway_requests_total{result="credentials_unavailable"}, and
# promtool reads the exposition; the shared memory of the worker (the
# cache zone holding the credentials records) has their ciphertext and
# never a plaintext value nor a keyring key, and no plaintext record is
# left anywhere in the worker's memory once the requests are done; the
# module's lines of a debug log carry no credential value, raw token or
# key.

use strict;
use warnings;

use lib 't/lib';
use EnvGwTest;
use EnvGwCli;
use Test::More;
use JSON::PP qw(decode_json encode_json);
use MIME::Base64 qw(encode_base64);

my $t = EnvGwTest->new;
$t->start_redis;
my $cli = EnvGwCli->new($t);
my $dir = $t->dir;
my $echo = $t->start_echo;

# an upstream that takes requests and never answers: a request to it stays
# in flight, its memory alive, while the test reads the worker's memory
my $hang = EnvGwTest::free_port();
$t->spawn('hang', $^X, '-MIO::Socket::INET', '-e', <<'HANG', $hang);
my $s = IO::Socket::INET->new(LocalAddr => "127.0.0.1:$ARGV[0]", Listen => 16,
                              ReuseAddr => 1) or die;
my @c;
while (my $c = $s->accept) { push @c, $c }
HANG
EnvGwTest::wait_port($hang) or die 'the hanging upstream did not start';

# every secret value holds this mark, so one pattern finds any copy
my $MARK = 'zq9opsec';
my %secret = map { $_ => "${MARK}_${_}_" . int(rand(1e9)) }
    qw(at_h api_q cid_b cs_b rt_h at_hang);

# the keyring: k1, random bytes (found in memory only where they are)
my $KEY = join '', map { chr(int(rand(256))) } 1 .. 32;
my $KEY64 = encode_base64($KEY, '');
open my $kf, '>', "$dir/keys" or die;
print $kf "k1 $KEY64\n";
close $kf;
chmod 0600, "$dir/keys";
# a keyring the gateway does not have, for a record under another key id
open $kf, '>', "$dir/keys9" or die;
printf $kf "k9 %s\n", encode_base64('9' x 32, '');
close $kf;
chmod 0600, "$dir/keys9";

sub envgw_ok {
    my ($name, $keys, @args) = @_;
    my $r = $cli->run({ env => { ENVGW_SECRET_KEYS => $keys } }, @args);
    is($r->{rc}, 0, "$name: exit 0") or diag("$r->{out}\n$r->{err}");
}

$t->env('env_dev', 'team_a', 'development');
my $DEV = $t->token('egw_dev_' . ('o' x 24), token_id => 'tok_ops',
    team_id => 'team_a', environment_id => 'env_dev',
    environment => 'development');

open my $rf, '>', "$dir/res.json" or die;
print $rf '{"contacts":{"list":{"method":"GET","path":"/crm/contacts"}}}';
close $rf;

for ([hs_header => '{"header":"Authorization","format":"Bearer {access_token}"}'],
     [hs_query => '{"query":"hapikey","format":"{api_key}"}'],
     [hs_basic => '{"basic":{"username":"{client_id}","password":"{client_secret}"}}'],
     [plain => undef],
     [hs_hang => '{"header":"Authorization","format":"Bearer {access_token}"}',
      $hang])
{
    my ($i, $auth, $up) = @$_;
    envgw_ok("integration $i", "$dir/keys", 'integration', 'set', 'env_dev',
             $i, '--upstream', 'http://127.0.0.1:' . ($up // $echo),
             '--resources',
             "$dir/res.json", defined $auth ? ('--auth', $auth) : ());
}

$t->account($_->[0], 'env_dev', integration => $_->[1]) for
    [acc_h => 'hs_header'], [acc_q => 'hs_query'], [acc_b => 'hs_basic'],
    [acc_plain => 'plain'], [acc_none => 'hs_header'],
    [acc_exp => 'hs_header'], [acc_kid => 'hs_header'],
    [acc_moved => 'hs_header'], [acc_nonce => 'hs_header'],
    [acc_notjson => 'hs_header'], [acc_badrec => 'hs_header'],
    [acc_miss => 'hs_header'], [acc_crlf => 'hs_header'],
    [acc_hang => 'hs_hang'];

envgw_ok('credentials acc_h', "$dir/keys", 'credentials', 'set', 'acc_h',
         '--field', "access_token=$secret{at_h}",
         '--field', "refresh_token=$secret{rt_h}");
envgw_ok('credentials acc_q', "$dir/keys", 'credentials', 'set', 'acc_q',
         '--field', "api_key=$secret{api_q}");
envgw_ok('credentials acc_b', "$dir/keys", 'credentials', 'set', 'acc_b',
         '--field', "client_id=$secret{cid_b}",
         '--field', "client_secret=$secret{cs_b}");
envgw_ok('credentials acc_hang', "$dir/keys", 'credentials', 'set',
         'acc_hang', '--field', "access_token=$secret{at_hang}");
envgw_ok('credentials acc_exp', "$dir/keys", 'credentials', 'set', 'acc_exp',
         '--field', "access_token=${MARK}_exp", '--expires-at', '1000');
envgw_ok('credentials acc_kid (k9)', "$dir/keys9", 'credentials', 'set',
         'acc_kid', '--field', "access_token=${MARK}_kid");
envgw_ok('credentials acc_miss', "$dir/keys", 'credentials', 'set',
         'acc_miss', '--field', "api_key=${MARK}_miss");
envgw_ok('credentials acc_crlf', "$dir/keys", 'credentials', 'set',
         'acc_crlf', '--field', "access_token=${MARK}\r\nX-Evil: 1");

my $rec_h = $t->redis->get('envgw:credentials:acc_h');
# another account's record: its additional data is not acc_moved's
$t->redis->set('envgw:credentials:acc_moved', $rec_h);
# a nonce that is not 12 bytes
my $bad = decode_json($rec_h);
$bad->{nonce} = encode_base64('n' x 8, '');
$t->redis->set('envgw:credentials:acc_nonce', encode_json($bad));
# a record that is not the schema's
$t->redis->set('envgw:credentials:acc_badrec', '{"v":1,"kid":"k1"}');

# a record that decrypts to something else than a JSON object of strings:
# sealed here as envgw seals (AES-256-GCM, additional data be32-prefixed
# account and environment ids), with Python's cryptography when it is here
my $notjson = 0;
{
    my $aad = pack('N/a* N/a*', 'acc_notjson', 'env_dev');
    my $py = <<'PY';
import base64, json, os, sys
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
key = base64.b64decode(sys.argv[1]); aad = base64.b64decode(sys.argv[2])
nonce = os.urandom(12)
ct = AESGCM(key).encrypt(nonce, b'["not", "an object"]', aad)
print(json.dumps({"v": 1, "kid": "k1", "nonce": base64.b64encode(nonce).decode(),
                  "ciphertext": base64.b64encode(ct).decode(), "expires_at": None}))
PY
    open my $pf, '>', "$dir/seal.py" or die;
    print $pf $py;
    close $pf;
    my $out = `python3 $dir/seal.py $KEY64 @{[ encode_base64($aad, '') ]} 2>/dev/null`;
    if ($? == 0 && $out =~ /^\{/) {
        $t->redis->set('envgw:credentials:acc_notjson', $out);
        $notjson = 1;
    }
}

$t->start_nginx(<<"CONF", subscribed => 1, error_level => 'debug');
    env_gateway_redis 127.0.0.1:%%REDIS%%;
    env_gateway_cache zone=credops:1m ttl=30s;
    env_gateway_secret_keys $dir/keys;

    server {
        listen 127.0.0.1:%%PORT%%;
        location ~ ^/proxy/(?<res>[^/]+)\$ {
            env_gateway on;
            env_gateway_account \$arg_integrated_account_id;
            env_gateway_route \$res;
            proxy_pass \$env_gateway_upstream_url;
        }
        location = /metrics { env_gateway_metrics; }
    }
CONF

sub scrape { return $t->http('GET', '/metrics')->{body} }

sub value { return EnvGwTest::series_value(@_) }

my @RESULTS = qw(injected missing expired unknown_key undecryptable
                 malformed unusable);
my $C = 'env_gateway_credentials_total';
my $R = 'env_gateway_requests_total{environment="development",result=';

my $m0 = scrape();
like($m0, qr/^# TYPE $C counter$/m, "$C: a counter");
like($m0, qr/^# HELP $C \S/m, "$C: with its help line");
is(value($m0, qq/$C\{result="$_"}/), 0, "$C\{result=\"$_\"}: 0 at first")
    for @RESULTS;
is(scalar(() = $m0 =~ /^$C\{/mg), scalar @RESULTS,
   "$C: one series a result, no other");

sub call {
    my ($acc, @more) = @_;
    return $t->get("/proxy/contacts?integrated_account_id=$acc@more", $DEV);
}

# the requests, and what each must answer
my %want = (injected => 0, missing => 0, expired => 0, unknown_key => 0,
            undecryptable => 0, malformed => 0, unusable => 0);
my ($unavailable, $misconfigured, $allowed) = (0, 0, 0);

for my $case ([acc_h => 3, 200, 'injected'], [acc_q => 2, 200, 'injected'],
              [acc_b => 1, 200, 'injected'], [acc_plain => 2, 200, undef],
              [acc_none => 2, 503, 'missing'], [acc_exp => 1, 503, 'expired'],
              [acc_kid => 2, 503, 'unknown_key'],
              [acc_moved => 2, 503, 'undecryptable'],
              [acc_nonce => 1, 503, 'malformed'],
              ($notjson ? [acc_notjson => 1, 503, 'malformed'] : ()),
              [acc_badrec => 2, 500, 'malformed'],
              [acc_miss => 1, 503, 'unusable'],
              [acc_crlf => 2, 503, 'unusable'])
{
    my ($acc, $n, $status, $result) = @$case;
    for my $i (1 .. $n) {
        my $r = call($acc);
        is($r->{status}, $status, "$acc, request $i: $status");
        if ($status == 503) {
            is($r->{json}{error}, 'credentials_unavailable',
               "$acc, request $i: credentials_unavailable");
        }
    }
    $want{$result} += $n if defined $result;
    $unavailable += $n if $status == 503;
    $misconfigured += $n if $status == 500;
    $allowed += $n if $status == 200;
}
# refused before the credentials: not counted there
is(call('acc_h', '', )->{status}, 200, 'one more injected');
$want{injected}++;
$allowed++;
is($t->get('/proxy/nosuch?integrated_account_id=acc_h', $DEV)->{status}, 404,
   'an unknown resource: 404, before the credentials');
is($t->get('/proxy/contacts?integrated_account_id=acc_h')->{status}, 401,
   'no token: 401, before the credentials');

my $m = scrape();
for (@RESULTS) {
    is(value($m, qq/$C\{result="$_"}/), $want{$_},
       "$C\{result=\"$_\"}: $want{$_}, once a request that had it");
}
is(value($m, qq/${R}"credentials_unavailable"}/), $unavailable,
   "requests_total credentials_unavailable: $unavailable, every 503");
is(value($m, qq/${R}"gateway_misconfigured"}/), $misconfigured,
   'requests_total gateway_misconfigured: the malformed record');
is(value($m, qq/${R}"allowed"}/), $allowed, "requests_total allowed: $allowed");
is($t->echo_count, $want{injected} + 2,
   'the upstream saw the injected requests and the plain ones, no other');

SKIP: {
    my $promtool = `command -v promtool 2>/dev/null`;
    chomp $promtool;
    skip 'promtool not installed (Debian package prometheus)', 2
        unless $promtool;
    my $f = "$dir/metrics.txt";
    open my $fh, '>', $f or die;
    print $fh $m;
    close $fh;
    my $out = `$promtool check metrics < $f 2>&1`;
    is($? >> 8, 0, 'promtool check metrics: exit 0') or diag($out);
    is($out, '', 'promtool check metrics: no problem reported') or diag($out);
}

# --- memory: shared zones hold ciphertext only ---------------------------------

# the mappings of a process: [start, end, perms, name]
sub mappings {
    my ($pid) = @_;
    no warnings 'portable';     # 64-bit addresses
    open my $fh, '<', "/proc/$pid/maps" or return ();
    my @m;
    while (<$fh>) {
        my ($s, $e, $perms, $name) =
            /^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \S+\s*(.*)$/ or next;
        push @m, [ hex $s, hex $e, $perms, $name ];
    }
    return @m;
}

# the bytes of the readable mappings chosen, through /proc/<pid>/mem
sub memory {
    my ($pid, @maps) = @_;
    open my $mem, '<:raw', "/proc/$pid/mem" or return undef;
    my @chunks;
    for my $map (@maps) {
        my ($s, $e) = @$map;
        my $buf = '';
        next unless sysseek($mem, $s, 0);
        my $n = sysread($mem, $buf, $e - $s);
        push @chunks, $buf if $n;
    }
    return join "\0", @chunks;
}

my ($worker) = $t->worker_pids;
my @maps = mappings($worker);
my @shared = grep { $_->[2] =~ /^r.-s/ } @maps;
my $shm = memory($worker, @shared);

SKIP: {
    skip "/proc/$worker/mem cannot be read here (not root, or ptrace "
         . 'restricted)', 10 unless defined $shm && length $shm;

    ok(scalar(grep { $_->[3] =~ m{^/dev/zero|^/SYSV|^$} } @shared),
       'the worker has shared anonymous mappings (nginx\'s zones)');
    my $ct = decode_json($rec_h)->{ciphertext};
    ok(index($shm, $ct) >= 0,
       'shared memory: the cache zone holds acc_h\'s record, its ciphertext');
    ok(index($shm, 'envgw:credentials:acc_q') >= 0,
       'shared memory: the credentials records are cached by key');
    my @found = grep { index($shm, $secret{$_}) >= 0 } sort keys %secret;
    is("@found", '', 'shared memory: no plaintext value');
    ok(index($shm, $MARK) < 0, 'shared memory: nothing of any value');
    my $basic = encode_base64("$secret{cid_b}:$secret{cs_b}", '');
    ok(index($shm, $basic) < 0, 'shared memory: no built Basic value');
    ok(index($shm, $KEY) < 0 && index($shm, $KEY64) < 0,
       'shared memory: no keyring key');

    # a request in flight (its upstream never answers): the header built
    # for it is in its pool, which is alive; the decrypted record it was
    # built from, in the same pool, is wiped already.  The whole private
    # memory of the worker is read (mappings up to 1 GB: the heap, not a
    # sanitizer's reserved shadow).
    my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$t->{port}",
                                  Proto => 'tcp') or die;
    print $s "GET /proxy/contacts?integrated_account_id=acc_hang HTTP/1.1\r\n"
           . "Host: localhost\r\nAuthorization: Bearer $DEV\r\n\r\n";
    my $priv = '';
    my $built = "Bearer $secret{at_hang}";
    for (1 .. 200) {
        my @own = grep { $_->[2] =~ /^r.-p/ && $_->[1] - $_->[0] <= 1 << 30
                         && $_->[3] !~ /^\[(?:vvar|vsyscall)\]$/ }
                  mappings($worker);
        $priv = memory($worker, @own) // '';
        last if index($priv, $built) >= 0;
        select(undef, undef, undef, 0.05);
    }
    ok(index($priv, $built) >= 0 && index($priv, $KEY) >= 0,
       'worker memory, a request in flight: its built header and the '
       . 'keyring key are found (the scan sees the heap)');
    my @plain = grep { index($priv, $_) >= 0 }
        qq("access_token":"$secret{at_hang}"),
        qq("access_token":"$secret{at_h}"), qq("api_key":"$secret{api_q}"),
        qq("client_id":"$secret{cid_b}"), qq("refresh_token":"$secret{rt_h}"),
        qq($secret{cid_b}:$secret{cs_b});
    is("@plain", '', 'worker memory: no decrypted record (the one of the '
                     . 'request in flight included), no basic pair: wiped');
    close $s;
}

# --- the debug log: the module's lines carry no value ------------------------------

my $log = $t->slurp('error.log');
my @mod = grep { /env_gateway/ } split /\n/, $log;
SKIP: {
    # an nginx built without --with-debug (a bare --with-compat tree) has
    # no debug lines; the checks below still read every other line
    skip 'the module was built without --with-debug', 1
        unless grep { /\[debug\].*env_gateway:/ } @mod;
    ok(scalar(grep { /\[debug\].*env_gateway: credentials of "acc_h" built, header of \d+ bytes/ } @mod),
       'debug log: the module says it built acc_h\'s header (lengths only)');
}
ok(scalar(grep { /\[warn\].*credentials of integrated account "acc_moved" unusable/ } @mod),
   'debug log: the refusal line names the account');
my @leak;
for my $line (@mod) {
    for my $what ([value => qr/$MARK/], [token => qr/\Q$DEV\E/],
                  [key => qr/\Q$KEY64\E|\Q$KEY\E/],
                  [basic => qr/\Q@{[ encode_base64("$secret{cid_b}:$secret{cs_b}", '') ]}\E/])
    {
        push @leak, "$what->[0]: $line" if $line =~ $what->[1];
    }
}
is(scalar @leak, 0, 'debug log: no line of the module carries a value, the '
                    . 'raw token or a key') or diag(join "\n", @leak[0 .. 4]);
ok(index($log, $KEY64) < 0 && index($log, $KEY) < 0,
   'debug log: no keyring key in any line');

# nginx's own debug lines print what the proxy module sends upstream and
# the headers it received (docs/credentials.md says so): the entries with a
# value or the raw token are those, and no other (an entry is a line with
# a time and the lines that follow it without one)
my @entries = split /\n(?=\d{4}\/\d\d\/\d\d \d\d:\d\d:\d\d )/, $log;
my (%with_value, %with_token);
for (@entries) {
    my ($what) = /\[\w+\] \d+#\d+: (?:\*\d+ )?([a-z_ ]+?)(?::| \d|$)/m;
    $what //= '?';
    $with_value{$what}++ if /$MARK/;
    $with_token{$what}++ if /\Q$DEV\E/;
}
ok($with_value{'http proxy header'}, 'debug log: nginx\'s proxy module prints '
   . 'the header it sends (the documented limit of the debug level)');
is(join(',', sort grep { $_ ne 'http proxy header' && $_ ne 'http script var' }
             keys %with_value), '',
   'debug log: a value is only in nginx\'s proxy header and script lines');
is(join(',', sort grep { $_ ne 'http header' } keys %with_token), '',
   'debug log: the raw token only in nginx\'s own received-header lines');

$t->stop;
done_testing();
