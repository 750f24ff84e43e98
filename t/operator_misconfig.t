#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# An operator's mistakes, each made on purpose: what nginx -t says (the
# directive's file and line, a warning or a failure), and, for what only a
# request can show, the refusal and the one error.log line, with nothing let
# through.  Keyring permissions and bad lines; a limit without its zone;
# TLS parameters without tls; tls_verify=off; password= with
# password_file=; a TLS-only Redis named without tls; a limit zone too
# small (at nginx -t, and for its keys at run time); env_gateway_status on a
# public location (nothing secret in it); a route to an integration
# declaring auth without env_gateway_secret_keys; sync=redis with a Redis
# user that may not INCRBY or PEXPIRE; envgw to a TLS port without --tls.
# The keyring commands of docs/credentials.md are run as printed.

use strict;
use warnings;

use lib 't/lib';
use EnvGwTest;
use EnvGwCli;
use EnvGwTls;
use Test::More;
use Time::HiRes qw(sleep time);

my $t = EnvGwTest->new;
my $dir = $t->dir;
my $TOP = $EnvGwTest::TOP;

sub write_file {
    my ($name, $text, $mode) = @_;
    open my $fh, '>', "$dir/$name" or die;
    print $fh $text;
    close $fh;
    chmod $mode // 0600, "$dir/$name";
    return "$dir/$name";
}

sub slurp {
    my ($path) = @_;
    open my $fh, '<', $path or die "$path: $!";
    local $/;
    return scalar <$fh>;
}

# --- the keyring commands of docs/credentials.md, as printed -----------------

my $doc = slurp("$TOP/docs/credentials.md");
my ($first) = $doc =~ /^(\(umask 077; printf 'k2025 [^\n]*> keys\.new\))$/m;
ok($first, 'credentials.md prints the command that makes the first keyring');
my ($again) = $doc =~ /^(\(umask 077; printf 'k2026 [^\n]*> keys\.new\))$/m;
ok($again, 'credentials.md prints the command that adds a key');

my $keys = "$dir/envgw.keys";
my $sh = sub {
    my ($cmd) = @_;
    $cmd =~ s{/etc/nginx/envgw\.keys}{$keys}g;
    return system('/bin/sh', '-c', "cd '$dir' && $cmd");
};
is($sh->($first // 'false'), 0, 'the first keyring: the command runs');
is((stat "$dir/keys.new")[2] & 0777, 0600,
   'the first keyring: its file is readable by its owner only');
rename "$dir/keys.new", $keys or die;
is($sh->($again // 'false'), 0, 'a new key: the command runs');
is((stat "$dir/keys.new")[2] & 0777, 0600,
   'a new key: keys.new is readable by its owner only');
like(slurp("$dir/keys.new"), qr/\Ak2026 \S{44}\nk2025 \S{44}\n\z/,
     'a new key: it comes first, the old one stays');
rename "$dir/keys.new", $keys or die;

# --- nginx -t ----------------------------------------------------------------

my $REDIS = 'env_gateway_redis 127.0.0.1:6379;';

# nginx -t must pass with a warning matching $re, at the marked line
sub warns {
    my ($name, $http, $re) = @_;
    my ($rc, $out, $path, $line) = $t->check_conf($http);
    is($rc, 0, "$name: nginx -t passes") or diag($out);
    like($out, qr/\[warn\].*$re.* in \Q$path\E:$line/, "$name: a warning "
         . "naming the file and line") or diag($out);
}

# nginx -t must fail with $re at the marked line
sub fails {
    my ($name, $http, $re) = @_;
    my ($rc, $out, $path, $line) = $t->check_conf($http);
    isnt($rc, 0, "$name: nginx -t fails");
    like($out, qr/\[emerg\].*$re.* in \Q$path\E:$line/, "$name: says why, "
         . "with the file and line") or diag($out);
}

sub keyring_conf {
    my ($file) = @_;
    return EnvGwTest::location_conf('env_gateway on;',
        "$REDIS\n    env_gateway_secret_keys $file; # <-");
}

my ($rc, $out) = $t->check_conf(keyring_conf($keys));
is($rc, 0, 'the documented keyring: nginx -t passes') or diag($out);
unlike($out, qr/\[warn\]/, 'the documented keyring: no warning');

chmod 0644, $keys;
warns('keyring readable by every user', keyring_conf($keys),
      qr/the keyring "\Q$keys\E" is readable by every user of this host: chmod o-r it/);
chmod 0602, $keys;
warns('keyring writable by every user', keyring_conf($keys),
      qr/the keyring "\Q$keys\E" is writable by every user of this host: chmod o-w it/);
chmod 0600, $keys;

my $kline = slurp($keys);
my $bad = write_file("bad.keys", $kline . "k3 not-base64!!\n");
fails('keyring with a bad line', keyring_conf($bad),
      qr/"\Q$bad\E" line 3: expected "<key id> <base64 of 32 bytes>"/);
my $short = write_file('short.keys',
                       "# 16 bytes\nk4 AAAAAAAAAAAAAAAAAAAAAA==\n");
fails('keyring with a 16-byte key', keyring_conf($short),
      qr/"\Q$short\E" line 2: the key is not the base64 of 32 bytes/);
my $dup = write_file('dup.keys', $kline . "\n" . $kline);
fails('keyring with a key id twice', keyring_conf($dup),
      qr/line 4: key id "k2026" is there twice/);

fails('a limit without a zone', EnvGwTest::location_conf(
          'env_gateway on; env_gateway_limit token 10r/s; # <-', $REDIS),
      qr/"env_gateway_limit" needs "env_gateway_limit_zone" in the http block/);
fails('a limit zone too small', EnvGwTest::location_conf(
          'env_gateway on; env_gateway_limit token 10r/s;',
          "$REDIS\n    env_gateway_limit_zone zone=l:8k; # <-"),
      qr/zone "zone=l:8k" is too small: at least 32k/);
fails('TLS parameters without tls', EnvGwTest::location_conf(
          'env_gateway on;',
          'env_gateway_redis 127.0.0.1:6379 tls_ca=/etc/ssl/certs/ca-certificates.crt tls_name=redis; # <-'),
      qr/"env_gateway_redis" has tls_ parameters without "tls"/);
warns('tls_verify=off', EnvGwTest::location_conf('env_gateway on;',
          'env_gateway_redis 127.0.0.1:6379 tls tls_verify=off; # <-'),
      qr/"env_gateway_redis" has tls_verify=off: the Redis server is not authenticated/);
my $pw = write_file('gw.pass', "secret\n");
fails('password= and password_file=', EnvGwTest::location_conf(
          'env_gateway on;',
          "env_gateway_redis 127.0.0.1:6379 username=gw password=x password_file=$pw; # <-"),
      qr/"env_gateway_redis" has both password= and password_file=: use one/);
chmod 0644, $pw;
warns('a password file readable by every user', EnvGwTest::location_conf(
          'env_gateway on;',
          "env_gateway_redis 127.0.0.1:6379 username=gw password_file=$pw; # <-"),
      qr/password_file "\Q$pw\E" is readable by every user/);
chmod 0600, $pw;

# --- envgw and the keyring's permissions ----------------------------------------

$t->start_redis;
my $cli = EnvGwCli->new($t);
$t->seed_gateway(tokens => { prod => 'egw_operator_prod_token_0123456789' },
                 envs => [qw(prod)], accounts => [], integrations => []);
$t->{backend_port} = EnvGwTest::free_port();
$cli->ok_run('integration set', 'integration', 'set', 'env_prod', 'hubspot',
             '--upstream', "http://127.0.0.1:$t->{backend_port}",
             '--auth', '{"header":"Authorization","format":"Bearer {access_token}"}');
$cli->ok_run('method set', 'method', 'set', 'env_prod', 'hubspot', 'contacts',
             'list', 'GET', '/crm/contacts');
$cli->ok_run('account add', 'account', 'add', 'env_prod', 'acc_prod_acme',
             '--integration', 'hubspot', '--tenant', 'acme');
my $r = $cli->ok_run('credentials set', 'credentials', 'set',
                     'acc_prod_acme', '--keys', $keys,
                     '--field', 'access_token=zq5ecret_operator');
is($r->{err}, '', 'credentials set: a keyring of mode 0600: no warning');
chmod 0646, $keys;
$r = $cli->ok_run('credentials show', 'credentials', 'show', 'acc_prod_acme',
                  '--keys', $keys);
like($r->{err}, qr/warning: the keyring \Q$keys\E is readable by every user of this host: chmod o-r it/,
     'envgw: a keyring every user may read is warned about');
like($r->{err}, qr/warning: the keyring \Q$keys\E is writable by every user of this host: chmod o-w it/,
     'envgw: a keyring every user may write is warned about');
chmod 0600, $keys;

# --- a route to an integration declaring auth, no env_gateway_secret_keys -------

my $TOKEN = 'egw_operator_prod_token_0123456789';

sub backend_lines { scalar(my @l = split /\n/, $t->backend_log) }

sub gateway {
    my ($top, $loc) = @_;
    $t->start_nginx(<<"CONF", subscribed => 1);
    env_gateway_redis 127.0.0.1:%%REDIS%% $top->{redis};
    env_gateway_cache zone=envgw:1m;
    $top->{http}
    server {
        listen 127.0.0.1:%%PORT%%;
        env_gateway_log_level warn;
        location ~ ^/proxy/(?<res>[^/]+)(?:/(?<rest>[^/]+))?\$ {
            env_gateway on;
            env_gateway_account \$arg_integrated_account_id;
            env_gateway_route \$res \$rest;
            $loc
            proxy_pass \$env_gateway_upstream_url;
        }
        # public, as an operator may leave it
        location = /env_gateway/status { env_gateway_status; }
    }
CONF
}

sub call {
    return $t->http('GET', '/proxy/contacts?integrated_account_id=acc_prod_acme',
                    [ Authorization => "Bearer $TOKEN" ]);
}

gateway({ redis => '', http => '' }, '');
my $before = backend_lines();
EnvGwTest::refused(call(), 503, 'credentials_unavailable',
                   'auth declared, no env_gateway_secret_keys',
                   count => \&backend_lines, before => $before);
my $log = $t->slurp('error.log');
my @why = $log =~ /^(.*credentials of integrated account "acc_prod_acme" unusable: no env_gateway_secret_keys in this configuration.*)$/mg;
is(scalar @why, 1, 'no env_gateway_secret_keys: one line says why');
like($why[0] // '', qr/\[warn\]/, 'no env_gateway_secret_keys: at warn');
unlike($log, qr/zq5ecret/, 'no env_gateway_secret_keys: no credential logged');
$t->stop_pid('nginx', 'QUIT');

# with the keyring the same request passes, the credential sent once
unlink "$dir/error.log";
gateway({ redis => '', http => "env_gateway_secret_keys $keys;" }, '');
$r = call();
is($r->{status}, 200, 'with env_gateway_secret_keys: 200');
like($r->{body}, qr/auth=Bearer zq5ecret_operator /,
     'with env_gateway_secret_keys: the backend gets the credential');
$t->stop_pid('nginx', 'QUIT');

# --- sync=redis with a Redis user that may not INCRBY, then not PEXPIRE ----------

$t->redis->acl('setuser', 'gw_nosync', 'on', '>nosync-pass', 'resetkeys',
               '%R~envgw:*', 'resetchannels', '&envgw:invalidate', '-@all',
               '+get', '+subscribe', '+ping');
my $nosync = write_file('nosync.pass', "nosync-pass\n");

sub limited_gateway {
    unlink "$dir/error.log";
    gateway({ redis => "username=gw_nosync password_file=$nosync",
              http => "env_gateway_secret_keys $keys;\n"
                      . "    env_gateway_limit_zone zone=lim:1m sync=redis "
                      . "sync_interval=50ms;" },
            'env_gateway_limit token 3r/m;');
}

sub sync_lines {
    my ($re) = @_;
    my $end = time + 5;
    my @l;
    while (time < $end) {
        @l = grep { /rate limit sync/ } split /\n/, $t->slurp('error.log');
        last if grep { /$re/ } @l;
        sleep 0.05;
    }
    return @l;
}

limited_gateway();
$before = backend_lines();
my @st = map { call()->{status} } 1 .. 3;
is_deeply(\@st, [200, 200, 200], 'sync=redis without INCRBY: the quota passes');
$r = call();
EnvGwTest::refused($r, 429, 'rate_limited',
                   'sync=redis without INCRBY: over the quota, counted locally',
                   count => \&backend_lines, before => $before + 3);
my $status = $t->get('/env_gateway/status');
like($status->{body}, qr/"ready":true/,
     'a public env_gateway_status answers whoever asks');
unlike($status->{body}, qr/nosync-pass|gw_nosync|nosync\.pass|\Q$keys\E|zq5ecret|\Q$TOKEN\E/,
       'a public env_gateway_status: no password, user, keyring or credential in it');
my @l = sync_lines(qr/incrby/);
is(scalar(grep { /\[error\].*Redis refused the round: "NOPERM [^"]*'incrby'[^"]*"; the gateway's Redis user needs INCRBY and PEXPIRE on keys envgw:ratelimit:\*; counting on this node only/ } @l),
   1, 'sync=redis without INCRBY: one error line names the refusal and what '
      . 'the user needs') or diag(join "\n", @l);
sleep 0.3;    # several more rounds, all refused
@l = sync_lines(qr/incrby/);
is(scalar @l, 1, 'sync=redis without INCRBY: logged once, not per round')
    or diag(join "\n", @l);
ok(!grep({ /did not answer/ } @l),
   'sync=redis without INCRBY: not taken for Redis down');
$t->stop_pid('nginx', 'QUIT');

# INCRBY allowed, PEXPIRE not: counters would never expire in Redis
$t->redis->acl('setuser', 'gw_nosync', '+incrby', '~envgw:ratelimit:*');
limited_gateway();
call();
@l = sync_lines(qr/pexpire/);
is(scalar(grep { /\[error\].*Redis refused the round: "NOPERM [^"]*'pexpire'/ } @l),
   1, 'sync=redis without PEXPIRE: one error line names it')
    or diag(join "\n", @l);
$t->stop_pid('nginx', 'QUIT');

# both allowed: no sync line at all
$t->redis->acl('setuser', 'gw_nosync', '+pexpire');
limited_gateway();
call();
# a round every 50 ms: poll (at least 0.3 s, several rounds, as before;
# at most 10 s) until Redis holds a counter that expires
my @ttl;
{
    my $from = time;
    while (1) {
        @ttl = map { $t->redis->pttl($_) } $t->redis->keys('envgw:ratelimit:*');
        last if time > $from + 10
            || (time >= $from + 0.3 && grep { $_ > 0 } @ttl);
        sleep 0.02;
    }
}
@l = grep { /rate limit sync/ } split /\n/, $t->slurp('error.log');
is(scalar @l, 0, 'sync=redis with INCRBY and PEXPIRE: no sync line')
    or diag(join "\n", @l);
ok(scalar(grep { $_ > 0 } @ttl),
   'sync=redis with INCRBY and PEXPIRE: counters in Redis that expire');
$t->stop_pid('nginx', 'QUIT');

# --- a TLS-only Redis named without tls --------------------------------------------

{
    my $g = EnvGwTest->new;
    EnvGwTls::make_certs($g);
    my $port = EnvGwTls::start_redis($g);
    $g->start_nginx(<<'CONF');
    env_gateway_redis 127.0.0.1:%%REDIS%% connect_timeout=500ms read_timeout=500ms;
    env_gateway_cache zone=envgw:1m;
    server {
        listen 127.0.0.1:%%PORT%%;
        location / {
            env_gateway on;
            proxy_pass http://127.0.0.1:%%BACKEND%%;
        }
    }
CONF
    EnvGwTest::unavailable($g->get('/x', $TOKEN), 'a TLS port without tls');
    is($g->backend_log, '', 'a TLS port without tls: nothing reached the backend');
    sleep 1.5;    # a dozen attempts or more of each connection
    my @err = grep { /\[error\]/ } split /\n/, $g->slurp('error.log');
    my @hint = grep { /redis 127\.0\.0\.1:$port \((lookups|invalidations)\) unreachable: connection (reset|closed) before any reply \(a TLS port needs the "tls" parameter\)/ } @err;
    ok(scalar(grep { /\(lookups\)/ } @hint) == 1
       && scalar(grep { /\(invalidations\)/ } @hint) == 1,
       'a TLS port without tls: one line per connection says a TLS port '
       . 'needs "tls"') or diag(join "\n", @err);
    is(scalar @err, 2, 'a TLS port without tls: and no line per attempt')
        or diag(join "\n", @err);
    my @connects = grep { /connected to redis .*\(lookups\)/ }
                   split /\n/, $g->slurp('error.log');
    ok(@connects <= 10, 'a TLS port without tls: the attempts back off ('
       . scalar(@connects) . ' connects in 1.5 s)');
    my $er = EnvGwCli->new($g)->run('env', 'list');
    is($er->{rc}, 1, 'envgw to a TLS port without --tls: exit 1');
    like($er->{err}, qr/^envgw: Redis at 127\.0\.0\.1:$port: .* before any reply \(a TLS port\? then --tls\)$/m,
         'envgw to a TLS port without --tls: says to try --tls');
    $g->stop;
}

# --- a limit zone too small for its keys ------------------------------------------

unlink "$dir/error.log";
$t->start_nginx(<<'CONF');
    env_gateway_redis 127.0.0.1:%%REDIS%%;
    env_gateway_limit_zone zone=small:32k;
    server {
        listen 127.0.0.1:%%PORT%%;
        location / {
            env_gateway on;
            env_gateway_limit token 3r/h;
            proxy_pass http://127.0.0.1:%%BACKEND%%;
        }
    }
CONF
my %seen;
for my $i (1 .. 400) {
    my $raw = $t->token("egw_operator_many_$i", token_id => "tok_many_$i"
                        . ('x' x 200), environment_id => 'env_prod',
                        environment => 'production', team_id => 'team_a');
    $seen{ $t->get('/x', $raw)->{status} }++;
}
is(join(',', sort keys %seen), '200',
   'a zone too small: every new key passes its first request');
my @full = grep { /env_gateway_limit_zone is full/ }
           split /\n/, $t->slurp('error.log');
is(scalar @full, 1, 'a zone too small: said once (one worker)')
    or diag(join "\n", @full);
like($full[0] // '', qr/\[warn\].*counters whose windows still count are evicted and their keys start again from zero; make the zone larger/,
     'a zone too small: at warn, with what it costs and what to do');
$t->stop_pid('nginx', 'QUIT');

$t->stop;
done_testing;
