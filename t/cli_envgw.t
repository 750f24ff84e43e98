#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause
# envgw, the admin tool, driven against a real, private redis-server.
#
#   ENVGW_BIN=cli/envgw prove t/cli_envgw.t
#
# Starts redis-server on a free port (killed at the end), subscribes to the
# invalidation channel with redis-cli, and checks what every command writes
# and publishes -- and that bad input writes nothing.

use strict;
use warnings;
use Test::More;
use File::Temp qw(tempfile tempdir);
use IO::Socket::INET;
use POSIX qw(WNOHANG);
use Time::HiRes qw(sleep);
use Digest::SHA qw(sha256_hex);
use JSON::PP;
use Redis;

my $BIN = $ENV{ENVGW_BIN} || 'cli/envgw';
$BIN = "./$BIN" if $BIN !~ m{/};
plan skip_all => "envgw binary $BIN not built (make -C cli)" unless -x $BIN;
for my $tool (qw(redis-server redis-cli)) {
    plan skip_all => "$tool not installed"
        unless grep { -x "$_/$tool" } split /:/, $ENV{PATH};
}

my $json = JSON::PP->new->canonical;
my $tmp  = tempdir(CLEANUP => 1);

# ---- a private redis-server ------------------------------------------------

sub free_port {
    my $s = IO::Socket::INET->new(Listen => 1, LocalAddr => '127.0.0.1',
                                  LocalPort => 0, Proto => 'tcp')
        or die "cannot bind: $!";
    my $port = $s->sockport;
    close $s;
    return $port;
}

my $port = free_port();
my ($redis_pid, $sub_pid);
END {
    # kill exactly what we started
    for my $pid (grep { defined } $sub_pid, $redis_pid) {
        kill 'TERM', $pid;
        waitpid $pid, 0;
    }
}

$redis_pid = fork // die "fork: $!";
if ($redis_pid == 0) {
    open STDOUT, '>', "$tmp/redis.log";
    open STDERR, '>&', \*STDOUT;
    exec 'redis-server', '--port', $port, '--save', '', '--appendonly', 'no',
         '--bind', '127.0.0.1', '--daemonize', 'no',
         '--unixsocket', "$tmp/redis.sock", '--unixsocketperm', '700';
    exit 127;
}

my $r;
for (1 .. 100) {
    $r = eval { Redis->new(server => "127.0.0.1:$port", reconnect => 0) };
    last if $r && eval { $r->ping };
    sleep 0.05;
}
BAIL_OUT("redis-server did not start on port $port") unless $r && $r->ping;

$ENV{ENVGW_REDIS} = "127.0.0.1:$port";
delete @ENV{qw(ENVGW_PREFIX ENVGW_REDIS_PASSWORD)};

# ---- running envgw -----------------------------------------------------------

# run(@args) or run({stdin => "..."}, @args) -> {rc, out, err}
my $runs = 0;
sub run {
    my $opt = ref $_[0] eq 'HASH' ? shift : {};
    my @args = @_;
    $runs++;
    my ($o, $e, $i) = map { "$tmp/run$runs.$_" } qw(out err in);
    open my $fh, '>', $i or die;
    print $fh $opt->{stdin} // '';
    close $fh;
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        open STDIN, '<', $i;
        open STDOUT, '>', $o;
        open STDERR, '>', $e;
        exec $BIN, @args;
        exit 127;
    }
    waitpid $pid, 0;
    my $rc = $? >> 8;
    local $/;
    open my $of, '<', $o; my $out = <$of>;
    open my $ef, '<', $e; my $err = <$ef>;
    return { rc => $rc, out => $out // '', err => $err // '' };
}

sub ok_run {
    my ($name, @args) = @_;
    my $res = run(@args);
    is($res->{rc}, 0, "$name: exit 0")
        or diag("stdout: $res->{out}\nstderr: $res->{err}");
    return $res;
}

# Every key with its value, canonical: to prove "nothing changed".
sub dump_all {
    my $d = '';
    for my $k (sort $r->keys('*')) {
        my $t = $r->type($k);
        my $v = $t eq 'string' ? $r->get($k)
              : $t eq 'set'    ? join(',', sort $r->smembers($k))
              : "<$t>";
        $d .= "$k = $v\n";
    }
    return $d;
}

sub jget {
    my ($k) = @_;
    my $v = $r->get($k);
    return defined $v ? decode_json_any($v) : undef;
}

sub decode_json_any { JSON::PP->new->allow_nonref->decode($_[0]) }

# ---- invalidation subscriber -------------------------------------------------

my $subfile = "$tmp/invalidate.txt";
$sub_pid = fork // die "fork: $!";
if ($sub_pid == 0) {
    open STDOUT, '>', $subfile;
    open STDERR, '>', '/dev/null';
    exec 'redis-cli', '-p', $port, 'subscribe', 'envgw:invalidate';
    exit 127;
}
for (1 .. 100) {
    my %n = $r->pubsub('numsub', 'envgw:invalidate');
    last if ($n{'envgw:invalidate'} // 0) >= 1;
    sleep 0.05;
}

my $mark = 0;
sub messages {
    open my $fh, '<', $subfile or return ();
    my @l = map { chomp; $_ } <$fh>;
    my @m;
    for (my $i = 0; $i + 2 < @l; $i++) {
        if ($l[$i] eq 'message' && $l[$i + 1] eq 'envgw:invalidate') {
            push @m, $l[$i + 2];
            $i += 2;
        }
    }
    return @m;
}

# Publishes a marker and waits until the subscriber has seen it, so that
# everything published before it has been received too.
sub sync_marker {
    my $m = "__mark_" . ++$mark;
    $r->publish('envgw:invalidate', $m);
    for (1 .. 200) {
        return $m if grep { $_ eq $m } messages();
        sleep 0.02;
    }
    die "subscriber never saw $m";
}

# Runs envgw and returns (result, [keys published during the run]).
sub run_published {
    my $before = sync_marker();
    my $res = run(@_);
    my $after = sync_marker();
    my @m = messages();
    my ($b) = grep { $m[$_] eq $before } 0 .. $#m;
    my ($a) = grep { $m[$_] eq $after } 0 .. $#m;
    return ($res, [ sort @m[$b + 1 .. $a - 1] ]);
}

# ---- help ----------------------------------------------------------------------

{
    my $h = ok_run('--help', '--help');
    like($h->{out}, qr/^usage: envgw/m, 'tool help');
    for my $c ('env create', 'env list', 'token create', 'token list',
               'token revoke', 'token rotate', 'account add',
               'account remove', 'account list', 'integration set',
               'integration list', 'method set', 'method remove', 'diff',
               'promote') {
        my $res = run(split(/ /, $c), '--help');
        is($res->{rc}, 0, "$c --help exits 0");
        like($res->{out}, qr/^usage: envgw \Q$c\E /m, "$c --help: usage");
    }
    my $res = run('help', 'token', 'rotate');
    like($res->{out}, qr/usage: envgw token rotate TOKEN_ID --grace/,
         'envgw help token rotate');
    $res = run();
    is($res->{rc}, 2, 'no command: exit 2');
    $res = run('frobnicate');
    is($res->{rc}, 2, 'unknown command: exit 2');
    like($res->{err}, qr/^envgw: unknown command 'frobnicate'/, '... says so');
}

# ---- environments ------------------------------------------------------------

my ($res, $pub);

($res, $pub) = run_published('env', 'create', '--team', 'team_a', '--id',
                             'env_dev', 'development');
is($res->{rc}, 0, 'env create --id') or diag $res->{err};
is($res->{out}, "env_dev\n", 'env create prints the environment_id');
is_deeply(jget('envgw:env:env_dev'),
          { environment_id => 'env_dev', team_id => 'team_a',
            name => 'development' }, 'env record');
is_deeply($pub, [ 'envgw:env:env_dev', 'envgw:envs' ],
          'env create publishes its keys');

$res = ok_run('env create generated id', 'env', 'create', '--team', 'team_a',
              'production');
chomp(my $PROD = $res->{out});
like($PROD, qr/^env_[0-9a-f]{16}$/, 'generated environment_id env_<hex>');
is(jget("envgw:env:$PROD")->{name}, 'production', 'generated env record');
ok_run('third env, other team', 'env', 'create', '--team', 'team_b', '--id',
       'env_other', 'staging');

{
    my $before = dump_all();
    my $dup = run('env', 'create', '--team', 'team_a', '--id', 'env_dev',
                  'again');
    is($dup->{rc}, 1, 'duplicate env id: exit 1');
    like($dup->{err}, qr/^envgw: environment 'env_dev' already exists/,
         '... says so');
    is(dump_all(), $before, '... and writes nothing');
}

$res = ok_run('env list', 'env', 'list');
like($res->{out}, qr/^env_dev\s+team_a\s+development$/m, 'env list: dev');
like($res->{out}, qr/^\Q$PROD\E\s+team_a\s+production$/m, 'env list: prod');
$res = ok_run('env list --team --json', 'env', 'list', '--team', 'team_b',
              '--json');
is_deeply([ map { $_->{environment_id} } @{ decode_json($res->{out}) } ],
          ['env_other'], 'env list --team filters (json)');

# ---- integrations and methods ------------------------------------------------

my $resfile = "$tmp/resources.json";
{
    open my $fh, '>', $resfile or die;
    print $fh <<'JSON';
{"contacts": {
   "list": {"method": "get", "path": "/crm/v3/objects/contacts"},
   "get":  {"method": "GET", "path": "/crm/v3/objects/contacts/{id}"}}}
JSON
    close $fh;
}
my %base = (contacts => {
    list => { method => 'GET', path => '/crm/v3/objects/contacts' },
    get  => { method => 'GET', path => '/crm/v3/objects/contacts/{id}' } });

for my $e ([ 'env_dev', 'http://hubspot_dev' ], [ $PROD, 'https://hubspot_prod' ]) {
    ($res, $pub) = run_published('integration', 'set', $e->[0], 'hubspot',
                                 '--upstream', $e->[1], '--resources',
                                 $resfile);
    is($res->{rc}, 0, "integration set $e->[0]") or diag $res->{err};
    is_deeply(jget("envgw:integration:$e->[0]:hubspot"),
              { upstream => $e->[1], resources => \%base },
              "integration record of $e->[0] (verbs uppercased)");
    is_deeply($pub, [ "envgw:integration:$e->[0]:hubspot",
                      "envgw:integrations:$e->[0]" ],
              'integration set publishes its keys');
}

($res, $pub) = run_published('method', 'set', 'env_dev', 'hubspot',
                             'contacts', 'merge', 'post',
                             '/crm/v3/objects/contacts/merge');
is($res->{rc}, 0, 'method set: custom method in dev') or diag $res->{err};
is_deeply(jget('envgw:integration:env_dev:hubspot')->{resources}{contacts}{merge},
          { method => 'POST', path => '/crm/v3/objects/contacts/merge' },
          'method stored, verb uppercased');
is(jget('envgw:integration:env_dev:hubspot')->{upstream}, 'http://hubspot_dev',
   'method set keeps the upstream');
is_deeply($pub, ['envgw:integration:env_dev:hubspot'],
          'method set publishes the integration key');

ok_run('method set then remove', 'method', 'set', 'env_dev', 'hubspot',
       'deals', 'list', 'GET', '/crm/v3/objects/deals');
($res, $pub) = run_published('method', 'remove', 'env_dev', 'hubspot',
                             'deals', 'list');
is($res->{rc}, 0, 'method remove');
ok(!exists jget('envgw:integration:env_dev:hubspot')->{resources}{deals},
   'method remove drops the method (and the emptied resource)');
is_deeply($pub, ['envgw:integration:env_dev:hubspot'],
          'method remove publishes');

$res = ok_run('integration list', 'integration', 'list', 'env_dev');
like($res->{out}, qr/^hubspot\s+3\s+http:\/\/hubspot_dev$/m,
     'integration list: name, method count, upstream');

# upstream-only update keeps resources
ok_run('integration set --upstream only', 'integration', 'set', $PROD,
       'hubspot', '--upstream', 'http://hubspot_prod');
is_deeply(jget("envgw:integration:$PROD:hubspot"),
          { upstream => 'http://hubspot_prod', resources => \%base },
          'integration set without --resources keeps the resources');

# ---- diff and promote ----------------------------------------------------------

$res = run('diff', 'env_dev', $PROD);
is($res->{rc}, 1, 'diff: envs differ -> exit 1');
is($res->{out},
   "+ hubspot contacts.merge POST /crm/v3/objects/contacts/merge (only in env_dev)\n",
   'diff shows the development-only custom method');
$res = run('diff', $PROD, 'env_dev');
is($res->{out},
   "- hubspot contacts.merge POST /crm/v3/objects/contacts/merge (only in env_dev)\n",
   'reversed diff: - for the second env');
$res = run('--json', 'diff', 'env_dev', $PROD);
is_deeply(decode_json($res->{out}),
          [ { op => '+', type => 'method', integration => 'hubspot',
              resource => 'contacts', method => 'merge',
              only_in => 'env_dev',
              definition => { method => 'POST',
                              path => '/crm/v3/objects/contacts/merge' } } ],
          'diff --json is a structured array');
$res = run('diff', 'env_dev', 'env_other');
like($res->{out}, qr/^\+ integration hubspot \(only in env_dev\)$/m,
     'diff: integration only in one env');

{
    my $before = dump_all();
    ($res, $pub) = run_published('promote', 'env_dev', $PROD, '--dry-run');
    is($res->{rc}, 0, 'promote --dry-run: exit 0');
    like($res->{out}, qr/would apply: \+ hubspot contacts\.merge POST/,
         'promote --dry-run shows the change');
    is(dump_all(), $before, 'promote --dry-run writes nothing');
    is_deeply($pub, [], 'promote --dry-run publishes nothing');
}

($res, $pub) = run_published('promote', 'env_dev', $PROD, '--integration',
                             'hubspot', '--method', 'contacts.merge');
is($res->{rc}, 0, 'promote --method contacts.merge') or diag $res->{err};
is_deeply(jget("envgw:integration:$PROD:hubspot"),
          { upstream => 'http://hubspot_prod',
            resources => { contacts => {
                %{ $base{contacts} },
                merge => { method => 'POST',
                           path => '/crm/v3/objects/contacts/merge' } } } },
          'promote: method present in prod, prod upstream kept');
is_deeply($pub, [ "envgw:integration:$PROD:hubspot",
                  "envgw:integrations:$PROD" ], 'promote publishes');
$res = run('diff', 'env_dev', $PROD);
is($res->{rc}, 0, 'diff after promote: equal -> exit 0');
is($res->{out}, '', 'diff after promote: no lines');

ok_run('promote again: nothing to do', 'promote', 'env_dev', $PROD);

# a differing definition, then promote everything
ok_run('diverge a method', 'method', 'set', $PROD, 'hubspot', 'contacts',
       'get', 'GET', '/crm/v3/objects/contacts/{id}/v2');
$res = run('diff', 'env_dev', $PROD);
is($res->{out},
   "~ hubspot contacts.get: GET /crm/v3/objects/contacts/{id} vs GET /crm/v3/objects/contacts/{id}/v2\n",
   'diff: ~ for a method defined differently');
ok_run('promote all', 'promote', 'env_dev', $PROD);
is(run('diff', 'env_dev', $PROD)->{rc}, 0, 'promote all: equal again');

# promote into an env that lacks the integration: FROM's upstream + warning
$res = run('promote', 'env_dev', 'env_other');
is($res->{rc}, 0, 'promote creates a missing integration');
like($res->{err}, qr/^envgw: warning: env_other has no integration 'hubspot'/m,
     '... with a warning about the upstream');
is(jget('envgw:integration:env_other:hubspot')->{upstream},
   'http://hubspot_dev', "... using FROM's upstream");
is(run('diff', 'env_dev', 'env_other')->{rc}, 0, '... and the envs agree');

# ---- tokens ----------------------------------------------------------------------

($res, $pub) = run_published('token', 'create', 'env_dev');
is($res->{rc}, 0, 'token create') or diag $res->{err};
my ($raw) = $res->{out} =~ /^token: (\S+)$/m;
my ($tid) = $res->{out} =~ /^token_id: (\S+)$/m;
like($raw, qr/^egw_[A-Za-z0-9_-]{43}$/, 'raw token: egw_ + 256 bits base64url');
like($tid, qr/^tok_[0-9a-f]{12}$/, 'token_id: tok_ + 12 hex');
my @seen = $res->{out} =~ /\Q$raw\E/g;
is(scalar @seen, 1, 'the raw token is printed exactly once');
my $hash = sha256_hex($raw);
my $trec = jget("envgw:token:$hash");
ok($trec, 'record stored under the SHA-256 of the token');
is_deeply({ map { $_ => $trec->{$_} }
            qw(token_id team_id environment_id environment kind) },
          { token_id => $tid, team_id => 'team_a', environment_id => 'env_dev',
            environment => 'development', kind => 'data' },
          'token record fields');
ok(exists $trec->{expires_at} && !defined $trec->{expires_at},
   'data token without --ttl: expires_at null');
ok(JSON::PP::is_bool($trec->{revoked}) && !$trec->{revoked},
   'revoked: false');
is(decode_json_any($r->get("envgw:token_id:$tid")), $hash,
   'token_id index is the JSON string of the hash');
is($r->get("envgw:token_id:$tid"), "\"$hash\"", '... with quotes');
is_deeply($pub, [ sort "envgw:token:$hash", "envgw:token_id:$tid",
                  'envgw:tokens:env_dev' ], 'token create publishes its keys');
unlike(dump_all(), qr/\Q$raw\E/, 'the raw token is nowhere in Redis');
{
    my $secret = substr($raw, 4);
    unlike(dump_all(), qr/\Q$secret\E/, '... not even without its prefix');
}

$res = ok_run('token create --json --ttl 30d', '--json', 'token', 'create',
              'env_dev', '--ttl', '30d', '--kind', 'admin');
my $j = decode_json($res->{out});
like($j->{token}, qr/^egw_/, '--json output contains "token"');
is($j->{kind}, 'admin', 'admin token');
ok(abs($j->{expires_at} - (time + 30 * 86400)) < 30, '--ttl 30d');
is(jget('envgw:token:' . sha256_hex($j->{token}))->{expires_at},
   $j->{expires_at}, 'stored expiry matches');
my $admin_tid = $j->{token_id};

$res = ok_run('token list', 'token', 'list', 'env_dev');
like($res->{out}, qr/^\Q$tid\E\s+data\s+active\s+development\s+never/m,
     'token list: id, kind, state, environment, expiry');
like($res->{out}, qr/^\Q$admin_tid\E\s+admin\s+active/m, 'token list: admin');
unlike($res->{out}, qr/egw_|\Q$hash\E/, 'token list shows no token, no hash');
$res = ok_run('token list --json', 'token', 'list', 'env_dev', '--json');
unlike($res->{out}, qr/egw_|\Q$hash\E/, 'token list --json: no token, no hash');
is(scalar @{ decode_json($res->{out}) }, 2, 'token list --json: 2 tokens');

# revoke
($res, $pub) = run_published('token', 'revoke', $tid);
is($res->{rc}, 0, 'token revoke');
ok(jget("envgw:token:$hash")->{revoked}, 'revoke sets "revoked":true');
is_deeply($pub, ["envgw:token:$hash"], 'revoke publishes the token key');
like(run('token', 'list', 'env_dev')->{out}, qr/^\Q$tid\E\s+data\s+revoked/m,
     'token list shows it revoked');
{
    my $before = dump_all();
    my $rr = run('token', 'rotate', $tid, '--grace', '1h');
    is($rr->{rc}, 1, 'rotating a revoked token is refused');
    like($rr->{err}, qr/^envgw: token '\Q$tid\E' is revoked/, '... says so');
    is(dump_all(), $before, '... and writes nothing');
}

# rotate
$res = ok_run('token create (to rotate)', 'token', 'create', 'env_dev');
my ($raw2) = $res->{out} =~ /^token: (\S+)$/m;
my ($tid2) = $res->{out} =~ /^token_id: (\S+)$/m;
my $hash2 = sha256_hex($raw2);
($res, $pub) = run_published('token', 'rotate', $tid2, '--grace', '1h');
is($res->{rc}, 0, 'token rotate --grace 1h') or diag $res->{err};
my ($raw3) = $res->{out} =~ /^token: (\S+)$/m;
my ($tid3) = $res->{out} =~ /^token_id: (\S+)$/m;
like($raw3, qr/^egw_/, 'rotate prints a new raw token');
isnt($raw3, $raw2, '... a different one');
my $old = jget("envgw:token:$hash2");
ok(abs($old->{expires_at} - (time + 3600)) < 30,
   'old token now expires after the grace (now+1h)');
ok(!$old->{revoked}, 'old token still valid during the grace');
my $new = jget('envgw:token:' . sha256_hex($raw3));
is_deeply([ @$new{qw(token_id environment_id kind team_id)} ],
          [ $tid3, 'env_dev', 'data', 'team_a' ],
          'new token: same environment, kind, team');
is_deeply($pub, [ sort "envgw:token:$hash2", 'envgw:token:' . sha256_hex($raw3),
                  "envgw:token_id:$tid3", 'envgw:tokens:env_dev' ],
          'rotate publishes the old and new keys');
unlike(dump_all(), qr/\Q$raw3\E/, 'rotated raw token not in Redis');

# rotate keeps an earlier expiry
$res = ok_run('token with short ttl', '--json', 'token', 'create', 'env_dev',
              '--ttl', '10m');
my $short = decode_json($res->{out});
ok_run('rotate with a longer grace', 'token', 'rotate', $short->{token_id},
       '--grace', '2d');
is(jget('envgw:token:' . sha256_hex($short->{token}))->{expires_at},
   $short->{expires_at}, 'rotate keeps an earlier expiry of the old token');

# ---- accounts ------------------------------------------------------------------

($res, $pub) = run_published('account', 'add', 'env_dev', 'acc_dev_1',
                             '--integration', 'hubspot', '--tenant', 'acme');
is($res->{rc}, 0, 'account add') or diag $res->{err};
is_deeply(jget('envgw:account:acc_dev_1'),
          { integrated_account_id => 'acc_dev_1', environment_id => 'env_dev',
            integration => 'hubspot', tenant_id => 'acme',
            status => 'active' }, 'account record');
is_deeply(jget('envgw:tenant:env_dev:acme'), { hubspot => 'acc_dev_1' },
          'tenant index');
is_deeply($pub, [ 'envgw:account:acc_dev_1', 'envgw:accounts:env_dev',
                  'envgw:tenant:env_dev:acme' ], 'account add publishes');

ok_run('second integration for the same tenant', 'account', 'add', 'env_dev',
       'acc_dev_2', '--integration', 'salesforce', '--tenant', 'acme');
is_deeply(jget('envgw:tenant:env_dev:acme'),
          { hubspot => 'acc_dev_1', salesforce => 'acc_dev_2' },
          'tenant index merges');
ok_run('same tenant in prod', 'account', 'add', $PROD, 'acc_prod_1',
       '--integration', 'hubspot', '--tenant', 'acme');
is_deeply(jget("envgw:tenant:$PROD:acme"), { hubspot => 'acc_prod_1' },
          'same tenant_id in another env is another account');

$res = ok_run('account list', 'account', 'list', 'env_dev');
like($res->{out}, qr/^acc_dev_1\s+hubspot\s+acme\s+active$/m, 'account list');
unlike($res->{out}, qr/acc_prod_1/, 'account list: only this env');

# account tokens
$res = ok_run('account token', '--json', 'token', 'create', 'env_dev',
              '--kind', 'account', '--account', 'acc_dev_1');
$j = decode_json($res->{out});
is($j->{integrated_account_id}, 'acc_dev_1', 'account token names its account');
ok(abs($j->{expires_at} - (time + 3600)) < 30,
   'account token: default ttl 1h');
is(jget('envgw:token:' . sha256_hex($j->{token}))->{integrated_account_id},
   'acc_dev_1', 'stored with integrated_account_id');

($res, $pub) = run_published('account', 'remove', 'acc_dev_1');
is($res->{rc}, 0, 'account remove');
ok(!$r->exists('envgw:account:acc_dev_1'), 'account record deleted');
is_deeply(jget('envgw:tenant:env_dev:acme'), { salesforce => 'acc_dev_2' },
          'tenant index entry removed, others kept');
my $acc_tok_key = 'envgw:token:' . sha256_hex($j->{token});
is_deeply($pub, [ sort 'envgw:account:acc_dev_1', 'envgw:accounts:env_dev',
                  'envgw:tenant:env_dev:acme', $acc_tok_key ],
          'account remove publishes, its account token too');
ok(jget($acc_tok_key)->{revoked}, 'account remove revokes its account token');
ok_run('remove the last account of the tenant', 'account', 'remove',
       'acc_dev_2');
ok(!$r->exists('envgw:tenant:env_dev:acme'),
   'emptied tenant index key is deleted');

# ---- bad input: clear error, non-zero exit, nothing written --------------------

my $bad_json = "$tmp/bad.json";
{ open my $fh, '>', $bad_json; print $fh '{"contacts": {"list": '; close $fh }
my $bad_shape = "$tmp/bad_shape.json";
{ open my $fh, '>', $bad_shape;
  print $fh '{"contacts":{"list":{"method":"GET","path":"/ok"},'
          . '"evil":{"method":"GET","path":"/a/../admin"}}}';
  close $fh }
my $bad_verb = "$tmp/bad_verb.json";
{ open my $fh, '>', $bad_verb;
  print $fh '{"contacts":{"list":{"method":"FETCH","path":"/ok"}}}';
  close $fh }

my $closed_port = free_port();
my @bad = (
    # [ description, expected exit, stderr pattern, args... ]
    [ 'env create without --team', 2, qr/--team is required/,
      'env', 'create', 'x' ],
    [ 'env create without name', 2, qr/missing arguments/,
      'env', 'create', '--team', 't' ],
    [ 'env create bad id', 2, qr/bad environment id/,
      'env', 'create', '--team', 't', '--id', 'a:b', 'x' ],
    [ 'env create unknown option', 2, qr/unknown option '--colour'/,
      'env', 'create', '--team', 't', '--colour', 'red', 'x' ],
    [ 'env list extra argument', 2, qr/unexpected argument/,
      'env', 'list', 'extra' ],
    [ 'token create unknown env', 1, qr/unknown environment 'env_nope'/,
      'token', 'create', 'env_nope' ],
    [ 'token create missing env', 2, qr/missing arguments/,
      'token', 'create' ],
    [ 'token create bad kind', 2, qr/bad --kind 'root'/,
      'token', 'create', 'env_dev', '--kind', 'root' ],
    [ 'token create bad ttl', 2, qr/bad --ttl '3x'/,
      'token', 'create', 'env_dev', '--ttl', '3x' ],
    [ 'token create zero ttl', 2, qr/bad --ttl '0'/,
      'token', 'create', 'env_dev', '--ttl', '0' ],
    [ 'token create negative ttl', 2, qr/bad --ttl/,
      'token', 'create', 'env_dev', '--ttl', '-5m' ],
    [ 'account token without --account', 2, qr/needs --account/,
      'token', 'create', 'env_dev', '--kind', 'account' ],
    [ '--account with a data token', 2, qr/only for --kind account/,
      'token', 'create', 'env_dev', '--account', 'acc_prod_1' ],
    [ 'account token for an account of another env', 1,
      qr/does not belong to environment 'env_dev'/,
      'token', 'create', 'env_dev', '--kind', 'account', '--account',
      'acc_prod_1' ],
    [ 'account token for a missing account', 1, qr/no integrated account/,
      'token', 'create', 'env_dev', '--kind', 'account', '--account',
      'acc_nope' ],
    [ 'token list unknown env', 1, qr/unknown environment/,
      'token', 'list', 'env_nope' ],
    [ 'token revoke missing token', 1, qr/no token with id 'tok_nope'/,
      'token', 'revoke', 'tok_nope' ],
    [ 'token revoke no args', 2, qr/missing arguments/, 'token', 'revoke' ],
    [ 'token rotate without --grace', 2, qr/--grace is required/,
      'token', 'rotate', $tid3 ],
    [ 'token rotate bad grace', 2, qr/bad --grace/,
      'token', 'rotate', $tid3, '--grace', 'soon' ],
    [ 'token rotate missing token', 1, qr/no token with id/,
      'token', 'rotate', 'tok_nope', '--grace', '1h' ],
    [ 'account add unknown env', 1, qr/unknown environment/,
      'account', 'add', 'env_nope', 'acc_x', '--integration', 'hubspot',
      '--tenant', 'acme' ],
    [ 'account add duplicate id (other env)', 1, qr/'acc_prod_1' already exists/,
      'account', 'add', 'env_dev', 'acc_prod_1', '--integration', 'hubspot',
      '--tenant', 'other' ],
    [ 'account add second account for tenant+integration', 1,
      qr/tenant 'acme' already has a hubspot account/,
      'account', 'add', $PROD, 'acc_prod_2', '--integration', 'hubspot',
      '--tenant', 'acme' ],
    [ 'account add without --tenant', 2, qr/--tenant is required/,
      'account', 'add', 'env_dev', 'acc_x', '--integration', 'hubspot' ],
    [ 'account add bad tenant', 2, qr/bad tenant id/,
      'account', 'add', 'env_dev', 'acc_x', '--integration', 'hubspot',
      '--tenant', 'a/b' ],
    [ 'account remove missing', 1, qr/no integrated account 'acc_nope'/,
      'account', 'remove', 'acc_nope' ],
    [ 'account list unknown env', 1, qr/unknown environment/,
      'account', 'list', 'env_nope' ],
    [ 'integration set unknown env', 1, qr/unknown environment/,
      'integration', 'set', 'env_nope', 'hubspot', '--upstream', 'http://x' ],
    [ 'integration set bad upstream', 2, qr/bad upstream 'ftp:\/\/x'/,
      'integration', 'set', 'env_dev', 'hubspot', '--upstream', 'ftp://x' ],
    [ 'integration set new without --upstream', 2, qr/--upstream is required/,
      'integration', 'set', 'env_dev', 'zendesk', '--resources', $resfile ],
    [ 'integration set malformed resources file', 2, qr/not valid JSON/,
      'integration', 'set', 'env_dev', 'hubspot', '--resources', $bad_json ],
    [ 'integration set bad path in resources file', 2,
      qr/"contacts\.evil": path "\/a\/\.\.\/admin"/,
      'integration', 'set', 'env_dev', 'hubspot', '--resources', $bad_shape ],
    [ 'integration set bad verb in resources file', 2,
      qr/"contacts\.list": bad HTTP method "FETCH"/,
      'integration', 'set', 'env_dev', 'hubspot', '--resources', $bad_verb ],
    [ 'integration set missing resources file', 2, qr/cannot read/,
      'integration', 'set', 'env_dev', 'hubspot', '--resources',
      "$tmp/nope.json" ],
    [ 'method set bad verb', 2, qr/bad HTTP method 'FETCH'/,
      'method', 'set', 'env_dev', 'hubspot', 'contacts', 'x', 'FETCH', '/x' ],
    [ 'method set relative path', 2, qr/must start with \//,
      'method', 'set', 'env_dev', 'hubspot', 'contacts', 'x', 'GET', 'x' ],
    [ 'method set path with ..', 2, qr/\.\. segments/,
      'method', 'set', 'env_dev', 'hubspot', 'contacts', 'x', 'GET',
      '/a/../b' ],
    [ 'method set path with ?', 2, qr/\? or #/,
      'method', 'set', 'env_dev', 'hubspot', 'contacts', 'x', 'GET',
      '/a?b=1' ],
    [ 'method set path with space', 2, qr/whitespace/,
      'method', 'set', 'env_dev', 'hubspot', 'contacts', 'x', 'GET',
      '/a b' ],
    [ 'method set unclosed placeholder', 2, qr/bad placeholder/,
      'method', 'set', 'env_dev', 'hubspot', 'contacts', 'x', 'GET',
      '/a/{id' ],
    [ 'method set encoded dots', 2, qr/encoded/,
      'method', 'set', 'env_dev', 'hubspot', 'contacts', 'x', 'GET',
      '/a/%2e%2E/b' ],
    [ 'method set bad resource name', 2, qr/bad resource name/,
      'method', 'set', 'env_dev', 'hubspot', 'con.tacts', 'x', 'GET', '/x' ],
    [ 'method set missing args', 2, qr/missing arguments/,
      'method', 'set', 'env_dev', 'hubspot', 'contacts', 'x', 'GET' ],
    [ 'method set unknown env', 1, qr/unknown environment/,
      'method', 'set', 'env_nope', 'hubspot', 'contacts', 'x', 'GET', '/x' ],
    [ 'method set integration not installed', 1, qr/not installed/,
      'method', 'set', 'env_dev', 'zendesk', 'tickets', 'x', 'GET', '/x' ],
    [ 'method remove missing method', 1, qr/no method contacts\.nope/,
      'method', 'remove', 'env_dev', 'hubspot', 'contacts', 'nope' ],
    [ 'diff unknown env', 2, qr/unknown environment/,
      'diff', 'env_dev', 'env_nope' ],
    [ 'diff one arg', 2, qr/missing arguments/, 'diff', 'env_dev' ],
    [ 'promote unknown env', 1, qr/unknown environment/,
      'promote', 'env_dev', 'env_nope' ],
    [ 'promote same env', 2, qr/same environment/,
      'promote', 'env_dev', 'env_dev' ],
    [ 'promote unknown method', 1, qr/no method 'nope'/,
      'promote', 'env_dev', $PROD, '--method', 'nope' ],
    [ 'promote unknown integration', 1, qr/'zendesk' is not installed/,
      'promote', 'env_dev', $PROD, '--integration', 'zendesk' ],
    [ 'Redis unreachable', 1,
      qr/cannot connect to Redis at 127\.0\.0\.1:$closed_port/,
      '--redis', "127.0.0.1:$closed_port", 'token', 'create', 'env_dev' ],
    [ 'bad --redis', 1, qr/bad --redis address/,
      '--redis', 'localhost:notaport', 'env', 'list' ],
    [ 'bad --db', 2, qr/--db wants a database number/,
      '--db', 'x', 'env', 'list' ],
);
for my $b (@bad) {
    my ($desc, $want, $pat, @args) = @$b;
    my $before = dump_all();
    my ($res, $pub) = run_published(@args);
    is($res->{rc}, $want, "$desc: exit $want")
        or diag("stdout: $res->{out}\nstderr: $res->{err}");
    like($res->{err}, qr/^envgw: /, "$desc: message starts with envgw:");
    like($res->{err}, $pat, "$desc: says why") or diag $res->{err};
    is($res->{out}, '', "$desc: nothing on stdout");
    is(dump_all(), $before, "$desc: Redis unchanged");
    is_deeply($pub, [], "$desc: nothing published");
}


# ---- records written by hand; malformed records -------------------------------

{
    # an integration record nobody indexed: diff must still see it
    $r->set('envgw:integration:env_dev:zendesk',
            '{"upstream":"http://zd","resources":{"tickets":{"list":'
          . '{"method":"GET","path":"/tickets"}}}}');
    my $res = run('diff', 'env_dev', $PROD);
    is($res->{rc}, 1, 'diff sees an unindexed, hand-written integration');
    like($res->{out}, qr/^\+ integration zendesk \(only in env_dev\)$/m,
         '... as an integration only in env_dev');
    like($res->{out},
         qr/^\+ zendesk tickets\.list GET \/tickets \(only in env_dev\)$/m,
         '... with its methods');
    $r->del('envgw:integration:env_dev:zendesk');

    # a malformed record is reported with its key, and not overwritten
    $r->set("envgw:integration:$PROD:broken", '{"resources":{}}');
    $r->set('envgw:integration:env_dev:broken', '{"upstream":"http://b"}');
    my $before = dump_all();
    $res = run('diff', 'env_dev', $PROD);
    is($res->{rc}, 2, 'diff with a malformed record: exit 2');
    like($res->{err},
         qr/^envgw: malformed record at key envgw:integration:\Q$PROD\E:broken/,
         '... naming the key');
    $res = run('method', 'set', $PROD, 'broken', 'a', 'b', 'GET', '/x');
    is($res->{rc}, 1, 'method set on a malformed record: exit 1');
    like($res->{err}, qr/^envgw: malformed record/, '... says so');
    is(dump_all(), $before, '... and writes nothing');
    $r->del("envgw:integration:$PROD:broken", 'envgw:integration:env_dev:broken');

    # an index key of the wrong type: refused before anything is written
    $r->set('envgw:accounts:env_other', 'oops');
    $before = dump_all();
    $res = run('account', 'add', 'env_other', 'acc_wt', '--integration',
               'hubspot', '--tenant', 'wt');
    is($res->{rc}, 1, 'index key of the wrong type: exit 1');
    like($res->{err}, qr/^envgw: key envgw:accounts:env_other is a string/,
         '... says which key');
    is(dump_all(), $before, '... and no half-written account');
    $r->del('envgw:accounts:env_other');
}

# ---- connection options: unix socket, password, options after the command -----

{
    my $res = ok_run('--redis unix:', '--redis', "unix:$tmp/redis.sock",
                     'env', 'list', '--json');
    ok(scalar @{ decode_json($res->{out}) } >= 3, 'unix socket works');
    $res = ok_run('--redis after the command', 'env', 'list', '--redis',
                  "unix:$tmp/redis.sock");

    $r->config_set('requirepass', 's3cret');   # this connection stays in
    $res = run('env', 'list');
    is($res->{rc}, 1, 'password required but not given: exit 1');
    like($res->{err}, qr/^envgw: Redis at 127\.0\.0\.1:$port: .*NOAUTH/,
         '... says so');
    $res = run('--password', 'wrong', 'env', 'list');
    is($res->{rc}, 1, 'wrong password: exit 1');
    like($res->{err}, qr/^envgw: Redis at .*: authentication failed/,
         '... says so');
    ok_run('--password', '--password', 's3cret', 'env', 'list');
    {
        local $ENV{ENVGW_REDIS_PASSWORD} = 's3cret';
        ok_run('ENVGW_REDIS_PASSWORD', 'env', 'list');
    }
    $r->config_set('requirepass', '');
}


# ---- concurrent writers: WATCH + retry loses no update -------------------------

{
    my @pids;
    for my $i (1 .. 10) {
        my $pid = fork // die;
        if ($pid == 0) {
            open STDOUT, '>', '/dev/null';
            open STDERR, '>', "$tmp/conc$i.err";
            exec $BIN, 'method', 'set', 'env_other', 'hubspot', 'conc',
                 "m$i", 'GET', "/conc/$i";
            exit 127;
        }
        push @pids, $pid;
    }
    my $fails = 0;
    for (@pids) { waitpid $_, 0; $fails++ if $? }
    is($fails, 0, '10 concurrent method sets all succeed');
    is_deeply([ sort keys %{ jget('envgw:integration:env_other:hubspot')
                              ->{resources}{conc} } ],
              [ sort map { "m$_" } 1 .. 10 ],
              '... and none of them is lost');

    @pids = ();
    for my $i (1 .. 8) {
        my $pid = fork // die;
        if ($pid == 0) {
            open STDOUT, '>', '/dev/null';
            open STDERR, '>', '/dev/null';
            exec $BIN, 'account', 'add', 'env_other', "acc_c$i",
                 '--integration', "integ$i", '--tenant', 'shared';
            exit 127;
        }
        push @pids, $pid;
    }
    $fails = 0;
    for (@pids) { waitpid $_, 0; $fails++ if $? }
    is($fails, 0, '8 concurrent account adds for one tenant succeed');
    is_deeply(jget('envgw:tenant:env_other:shared'),
              { map { ("integ$_" => "acc_c$_") } 1 .. 8 },
              '... and the tenant index has all of them');
}

# ---- transactions: every write is one MULTI/EXEC with its PUBLISHes ------------

{
    my $monfile = "$tmp/monitor.txt";
    my $mon = fork // die;
    if ($mon == 0) {
        open STDOUT, '>', $monfile;
        open STDERR, '>', '/dev/null';
        exec 'redis-cli', '-p', $port, 'monitor';
        exit 127;
    }
    # MONITOR shows what runs once it is attached: wait until it shows a
    # PING, and after the write until it shows an ECHO sent after it (at
    # most 10 s each)
    my $shows = sub {
        my ($re, $ask) = @_;
        my $end = Time::HiRes::time() + 10;
        while (Time::HiRes::time() < $end) {
            $ask->() if $ask;
            if (open my $f, '<', $monfile) {
                return 1 if grep { $_ =~ $re } <$f>;
            }
            sleep 0.02;
        }
        return 0;
    };
    ok($shows->(qr/"ping"/i, sub { $r->ping }), 'MONITOR attached');
    ok_run('account add (monitored)', 'account', 'add', 'env_dev', 'acc_m',
           '--integration', 'hubspot', '--tenant', 'mon');
    $r->echo('monitor-end');
    ok($shows->(qr/"monitor-end"/), 'MONITOR showed everything before the ECHO');
    kill 'TERM', $mon;
    waitpid $mon, 0;
    open my $fh, '<', $monfile;
    my @cmds = map { /"(\w+)"/ ? uc $1 : () } <$fh>;
    my @writes = grep { /^(SET|DEL|SADD|SREM|PUBLISH|MULTI|EXEC)$/ } @cmds;
    is_deeply(\@writes,
              [ qw(MULTI SET SET SADD PUBLISH PUBLISH PUBLISH EXEC) ],
              'account add: writes and PUBLISHes inside one MULTI/EXEC');
    ok((grep { $_ eq 'WATCH' } @cmds) >= 2, 'read-modify-write uses WATCH');
}

# ---- options: --prefix, unix socket-free aliases, ENVGW_PREFIX ------------------

{
    local $ENV{ENVGW_PREFIX} = 'other:';
    my $res = ok_run('ENVGW_PREFIX', 'env', 'create', '--team', 't', '--id',
                     'env_p', 'prod');
    ok($r->exists('other:env:env_p'), 'ENVGW_PREFIX chooses the key prefix');
    ok(!$r->exists('envgw:env:env_p'), '... and not the default one');
    $res = ok_run('--prefix', '--prefix', 'third:', 'env', 'list', '--json');
    is_deeply(decode_json($res->{out}), [], '--prefix overrides ENVGW_PREFIX');
}

done_testing();
