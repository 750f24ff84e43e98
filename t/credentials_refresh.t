#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# envgw credentials refresh against a fake OAuth2 token endpoint (a small
# Perl HTTP server of this test): the refresh_token grant of RFC 6749
# section 6 with the account's client_id and client_secret; success
# stores the new tokens and expiry (the gateway then sends the new access
# token), 400 invalid_grant and 5xx leave the old record and say so;
# credentials not expiring within the window are left alone, and the
# integration's refresh_before widens a narrower --within.  --loop makes
# pass after pass and stops on SIGTERM between records: a grant in flight
# gets its answer written (a rotated refresh token is never lost).  Then
# the keyring directive's checks at nginx -t.

use strict;
use warnings;

use lib 't/lib';
use EnvGwTest;
use EnvGwCli;
use Test::More;
use JSON::PP;
use MIME::Base64 qw(encode_base64);
use POSIX ();

my $t = EnvGwTest->new;
$t->start_redis;
my $cli = EnvGwCli->new($t);
my $dir = $t->dir;

my $keys = "$dir/keys";
open my $kf, '>', $keys or die;
print $kf "# the keyring\n\nk1 " . encode_base64('k' x 32, '') . "\n";
close $kf;
chmod 0600, $keys;

sub envgw { $cli->run({ env => { ENVGW_SECRET_KEYS => $keys } }, @_) }

# --- the token endpoint ----------------------------------------------------

my $oport = EnvGwTest::free_port();
open my $sf, '>', "$dir/oauth.pl" or die;
print $sf <<'SRV';
use strict;
use warnings;
use IO::Socket::INET;
my ($port, $log) = @ARGV;
my $srv = IO::Socket::INET->new(LocalAddr => "127.0.0.1:$port", Listen => 16,
                                Proto => 'tcp', ReuseAddr => 1) or die;
my $n = 0;
while (my $c = $srv->accept) {
    my $buf = '';
    while ($buf !~ /\r\n\r\n/) {
        sysread($c, $buf, 65536, length $buf) or last;
    }
    my ($head, $body) = split /\r\n\r\n/, $buf, 2;
    my ($len) = $head =~ /content-length:\s*(\d+)/i;
    while (length($body) < ($len // 0)) {
        sysread($c, $body, 65536, length $body) or last;
    }
    open my $l, '>>', $log;
    print $l "$body\n";
    close $l;
    my ($status, $out);
    $n++;
    if ($body =~ /refresh_token=rt_short/) {
        # always due again: a pass of --loop refreshes it each time
        ($status, $out) = ('200 OK', qq({"access_token":"at_short_$n","expires_in":30,"refresh_token":"rt_short_$n"}));
    } elsif ($body =~ /refresh_token=rt_slow/) {
        # an answer that takes its time, rotating the refresh token
        sleep 2;
        ($status, $out) = ('200 OK', qq({"access_token":"at_slow_$n","expires_in":3600,"refresh_token":"rt_slow_next"}));
    } elsif ($body =~ /refresh_token=rt_ok/) {
        ($status, $out) = ('200 OK', qq({"access_token":"at_new_$n","token_type":"bearer","expires_in":3600,"refresh_token":"rt_ok_next"}));
    } elsif ($body =~ /refresh_token=rt_bad/) {
        ($status, $out) = ('400 Bad Request', '{"error":"invalid_grant","error_description":"refresh token revoked"}');
    } else {
        ($status, $out) = ('503 Service Unavailable', 'busy');
    }
    print $c "HTTP/1.1 $status\r\nContent-Type: application/json\r\n"
           . "Content-Length: " . length($out) . "\r\nConnection: close\r\n\r\n$out";
    close $c;
}
SRV
close $sf;
$t->spawn('oauth', $^X, "$dir/oauth.pl", $oport, "$dir/oauth.log");
EnvGwTest::wait_port($oport) or die 'oauth server did not start';

# --- records ------------------------------------------------------------------

$t->env('env_dev', 'team_a', 'development');
my $DEV = $t->token('egw_dev_' . ('r' x 24), token_id => 'tok_r',
    team_id => 'team_a', environment_id => 'env_dev',
    environment => 'development');

my $r;
$t->{backend_port} = EnvGwTest::free_port();
open my $rf, '>', "$dir/res.json" or die;
print $rf '{"contacts":{"list":{"method":"GET","path":"/crm/contacts"}}}';
close $rf;
$r = envgw('integration', 'set', 'env_dev', 'hubspot', '--upstream',
           "http://127.0.0.1:$t->{backend_port}", '--resources', "$dir/res.json",
           '--auth', '{"header":"Authorization","format":"Bearer {access_token}"}',
           '--oauth', qq({"token_url":"http://127.0.0.1:$oport/oauth/v1/token","refresh_before":"5m"}));
is($r->{rc}, 0, 'integration set --auth --oauth') or diag($r->{err});
$r = envgw('integration', 'set', 'env_dev', 'hubspot', '--oauth',
           '{"token_url":"ftp://x"}');
is($r->{rc}, 2, 'integration set --oauth: not an http(s) URL is refused');

my $soon = time + 60;
for ([acc_ok => 'rt_ok_0', $soon], [acc_bad => 'rt_bad', $soon],
     [acc_down => 'rt_down', $soon], [acc_later => 'rt_ok_9', time + 86400])
{
    my ($acc, $rt, $exp) = @$_;
    $t->account($acc, 'env_dev');
    $r = envgw('credentials', 'set', $acc, '--field', "access_token=at_old_$acc",
               '--field', "refresh_token=$rt", '--field', 'client_id=cid',
               '--field', 'client_secret=csecret', '--expires-at', $exp);
    is($r->{rc}, 0, "credentials set $acc") or diag($r->{err});
}
my %before = map { $_ => $t->redis->get("envgw:credentials:$_") }
             qw(acc_ok acc_bad acc_down acc_later);

$t->start_nginx(<<"CONF", subscribed => 1);
    env_gateway_redis 127.0.0.1:%%REDIS%%;
    env_gateway_cache zone=c:1m ttl=30s;
    env_gateway_secret_keys $keys;
    server {
        listen 127.0.0.1:%%PORT%%;
        location ~ ^/proxy/(?<res>[^/]+)\$ {
            env_gateway on;
            env_gateway_account \$arg_integrated_account_id;
            env_gateway_route \$res;
            proxy_pass \$env_gateway_upstream_url;
        }
    }
CONF

like($t->get("/proxy/contacts?integrated_account_id=acc_ok", $DEV)->{body},
     qr/auth=Bearer at_old_acc_ok /, 'before refresh: the old access token');

# --- refresh -------------------------------------------------------------------

$r = envgw('credentials', 'refresh', '--within', '10m');
is($r->{rc}, 1, 'refresh: exit 1 (some failed)');
like($r->{out}, qr/refreshed the credentials of acc_ok \(expires /,
     'refresh: acc_ok refreshed');
like($r->{err}, qr/refresh of the credentials of acc_bad failed: the token endpoint answered 400 invalid_grant; the stored credentials are kept/,
     'refresh: 400 invalid_grant reported clearly');
like($r->{err}, qr/refresh of the credentials of acc_down failed: the token endpoint answered 503; the stored credentials are kept/,
     'refresh: 503 reported');
unlike($r->{out} . $r->{err}, qr/acc_later/, 'refresh: not due, not touched');
unlike($r->{out} . $r->{err}, qr/at_new|at_old|rt_ok|csecret/,
       'refresh: no value printed');

my $log = $t->slurp('oauth.log');
like($log, qr/^grant_type=refresh_token&refresh_token=rt_ok_0&client_id=cid&client_secret=csecret$/m,
     'refresh: the RFC 6749 refresh_token grant with the client credentials');
is(scalar(() = $log =~ /grant_type/g), 3, 'refresh: three grants asked');

isnt($t->redis->get('envgw:credentials:acc_ok'), $before{acc_ok},
     'refresh: acc_ok rewritten');
is($t->redis->get("envgw:credentials:$_"), $before{$_}, "refresh: $_ unchanged")
    for qw(acc_bad acc_down acc_later);

my $rec = decode_json($t->redis->get('envgw:credentials:acc_ok'));
cmp_ok(abs($rec->{expires_at} - (time + 3600)), '<', 30,
       'refresh: expires_at from expires_in');
like($t->get("/proxy/contacts?integrated_account_id=acc_ok", $DEV)->{body},
     qr/auth=Bearer at_new_\d+ /,
     'after refresh: the gateway sends the new access token (invalidated)');

# the rotated refresh_token is kept for the next refresh
$r = envgw('credentials', 'refresh', '--within', '2h');
like($r->{out}, qr/refreshed the credentials of acc_ok/, 'second refresh: acc_ok');
like($t->slurp('oauth.log'), qr/refresh_token=rt_ok_next&/,
     'second refresh: with the refresh_token the endpoint returned');
unlike(join('', map { $t->redis->get($_) } $t->redis->keys('*credentials*')),
       qr/at_new|rt_ok|csecret/, 'redis: no value in clear');

# expired without refresh: 503
$t->redis->set('envgw:credentials:acc_bad', $before{acc_bad});
$r = envgw('credentials', 'set', 'acc_bad', '--field', 'access_token=x',
           '--expires-at', '1');
my $res = $t->get("/proxy/contacts?integrated_account_id=acc_bad", $DEV);
is($res->{status}, 503, 'expired: 503');

# --- refresh_before: the integration's window, when longer than --within ------

envgw('credentials', 'remove', $_) for qw(acc_bad acc_down);
for ([acc_rb => time + 120], [acc_far => time + 600]) {
    my ($acc, $exp) = @$_;
    $t->account($acc, 'env_dev');
    $r = envgw('credentials', 'set', $acc, '--field', "access_token=at_old_$acc",
               '--field', 'refresh_token=rt_ok_rb', '--field', 'client_id=cid',
               '--field', 'client_secret=csecret', '--expires-at', $exp);
    is($r->{rc}, 0, "credentials set $acc") or diag($r->{err});
}
my $far = $t->redis->get('envgw:credentials:acc_far');
my $rb = $t->redis->get('envgw:credentials:acc_rb');
$r = envgw('credentials', 'refresh', '--within', '1m');
is($r->{rc}, 0, 'refresh --within 1m: exit 0') or diag($r->{err});
like($r->{out}, qr/refreshed the credentials of acc_rb /,
     'refresh --within 1m: expiring in 2 min, inside refresh_before (5m): '
     . 'refreshed');
isnt($t->redis->get('envgw:credentials:acc_rb'), $rb, '... acc_rb rewritten');
unlike($r->{out} . $r->{err}, qr/acc_far/,
       'refresh --within 1m: expiring in 10 min, outside both: not touched');
is($t->redis->get('envgw:credentials:acc_far'), $far, '... acc_far unchanged');
unlike($r->{out}, qr/acc_(?:ok|later) /, 'refresh --within 1m: nothing else');

# --- --loop, and SIGTERM -------------------------------------------------------

# envgw credentials refresh ... started in the background; stopped by pid
sub start_loop {
    my ($name, @args) = @_;
    local $ENV{ENVGW_SECRET_KEYS} = $keys;
    return $t->spawn($name, $cli->bin, '--redis',
                     "127.0.0.1:$t->{redis_port}", 'credentials', 'refresh',
                     @args);
}

# SIGTERM to it; its wait status once it exited (undef if it did not)
sub term {
    my ($name) = @_;
    my $pid = delete $t->{pids}{$name};
    kill 'TERM', $pid;
    my $end = time + 10;
    while (time < $end) {
        return $? if waitpid($pid, POSIX::WNOHANG()) == $pid;
        select(undef, undef, undef, 0.05);
    }
    kill 'KILL', $pid;
    waitpid($pid, 0);
    return undef;
}

sub grants { my ($re) = @_; scalar(() = $t->slurp('oauth.log') =~ /$re/g) }

$t->account('acc_short', 'env_dev');
$r = envgw('credentials', 'set', 'acc_short', '--field', 'access_token=at_s',
           '--field', 'refresh_token=rt_short_0', '--field', 'client_id=cid',
           '--field', 'client_secret=csecret', '--expires-at', time + 30);
is($r->{rc}, 0, 'credentials set acc_short (always due)') or diag($r->{err});

start_loop('loop', '--within', '1m', '--loop', '1s');
my $end = time + 20;
select(undef, undef, undef, 0.1) while grants(qr/refresh_token=rt_short/) < 3
                                       && time < $end;
cmp_ok(grants(qr/refresh_token=rt_short/), '>=', 3,
       '--loop 1s: a pass after another (3 grants for the due record)');
# the endpoint's answer to its n-th request (n: the line of oauth.log)
# rotates the refresh token to rt_short_<n>: each grant after the first
# must send the one the previous grant got
{
    my @lines = split /\n/, $t->slurp('oauth.log');
    my ($prev, @bad);
    for my $i (0 .. $#lines) {
        my ($k) = $lines[$i] =~ /refresh_token=rt_short_(\d+)&/ or next;
        push @bad, "line @{[ $i + 1 ]}: rt_short_$k after line $prev"
            if defined $prev && $k != $prev;
        $prev = $i + 1;
    }
    is("@bad", '', '--loop: each pass sends the refresh token the previous '
                   . 'one stored');
}
my $st = term('loop');
ok(defined $st, '--loop: SIGTERM stops it');
is($st, 0, '--loop: ... exit status 0 (its passes succeeded)');
my $lout = $t->slurp('loop.out');
is(scalar(() = $lout =~ /refreshed the credentials of acc_short/g),
   grants(qr/refresh_token=rt_short/),
   '--loop: every grant asked got its answer written');
like($lout, qr/refresh stopped by a signal/, '--loop: says it stopped');
my $n = grants(qr/refresh_token=rt_short/);
select(undef, undef, undef, 1.5);
is(grants(qr/refresh_token=rt_short/), $n, '--loop: no pass after SIGTERM');
like($t->get("/proxy/contacts?integrated_account_id=acc_short", $DEV)->{body},
     qr/auth=Bearer at_short_\d+ /,
     '--loop: the gateway sends the last access token stored');
envgw('credentials', 'remove', 'acc_short');

# SIGTERM while a grant is in flight: the answer (a rotated refresh token)
# is written before it stops
$t->account('acc_slow', 'env_dev');
$r = envgw('credentials', 'set', 'acc_slow', '--field', 'access_token=at_w',
           '--field', 'refresh_token=rt_slow', '--field', 'client_id=cid',
           '--field', 'client_secret=csecret', '--expires-at', time + 30);
is($r->{rc}, 0, 'credentials set acc_slow') or diag($r->{err});
start_loop('slow', '--within', '1m', '--loop', '60s');
$end = time + 10;
select(undef, undef, undef, 0.05) while grants(qr/refresh_token=rt_slow&/) < 1
                                        && time < $end;
is(grants(qr/refresh_token=rt_slow&/), 1, 'slow grant asked');
$st = term('slow');
is($st, 0, 'SIGTERM during a grant: exit 0, once the record is done');
like($t->slurp('slow.out'), qr/refreshed the credentials of acc_slow/,
     'SIGTERM during a grant: the answer was written');
like($t->get("/proxy/contacts?integrated_account_id=acc_slow", $DEV)->{body},
     qr/auth=Bearer at_slow_\d+ /,
     'SIGTERM during a grant: the gateway sends the new access token');
$r = envgw('credentials', 'refresh', '--within', '2h');
like($t->slurp('oauth.log'), qr/refresh_token=rt_slow_next&/,
     'SIGTERM during a grant: the rotated refresh token was kept');

# --- the keyring directive at nginx -t ------------------------------------------

sub keyring_conf {
    my ($file) = @_;
    return EnvGwTest::location_conf('return 200;',
        "env_gateway_redis 127.0.0.1:6379; env_gateway_secret_keys $file; # <-");
}

sub write_keys {
    my ($name, $text, $mode) = @_;
    open my $fh, '>', "$dir/$name" or die;
    print $fh $text;
    close $fh;
    chmod $mode // 0600, "$dir/$name";
    return "$dir/$name";
}

my $k32 = encode_base64('x' x 32, '');
my ($rc, $out) = $t->check_conf(keyring_conf($keys));
is($rc, 0, 'nginx -t: a good keyring') or diag($out);
unlike($out, qr/readable by every user/, 'nginx -t: mode 0600: no warning');

($rc, $out) = $t->check_conf(keyring_conf(write_keys('wr', "k1 $k32\n", 0644)));
is($rc, 0, 'nginx -t: a world-readable keyring is accepted');
like($out, qr/\[warn\].*readable by every user/, 'nginx -t: ... with a warning');

for ([missing => undef, qr/open\(\) ".*nokeys" failed/],
     [short => "k1 " . encode_base64('x' x 16, '') . "\n", qr/line 1: .*32 bytes/],
     [garbage => "k1 !!!!\n", qr/line 1: expected/],
     [nokid => "$k32\n", qr/line 1: expected/],
     [twice => "k1 $k32\nk1 $k32\n", qr/line 2: key id "k1" is there twice/],
     [empty => "# nothing\n", qr/has no keys/])
{
    my ($name, $text, $want) = @$_;
    my $file = defined $text ? write_keys($name, $text) : "$dir/nokeys";
    ($rc, $out) = $t->check_conf(keyring_conf($file));
    isnt($rc, 0, "nginx -t: keyring $name refused");
    like($out, $want, "nginx -t: keyring $name: says why");
    unlike($out, qr/\Q$k32\E/, "nginx -t: keyring $name: no key in the message");
}

$t->stop;
done_testing;
