# SPDX-License-Identifier: BSD-2-Clause
# Redis ACL users over TLS: username= and password_file= (read at start and
# reload), an ACL user with only the commands the gateway needs, a wrong
# password as one error line however many requests fail, and nginx -t on
# the parameters.

use strict;
use warnings;

use lib 't/lib';
use Test::More;
use Time::HiRes qw(sleep time);
use Digest::SHA qw(sha256_hex);
use EnvGwTest qw(unavailable);
use EnvGwTls;

my $t = EnvGwTest->new;
my $dir = $t->dir;
my $c = EnvGwTls::make_certs($t);
my $port = EnvGwTls::start_redis($t);

my $good = 'egw_acl_dev_token_0123456789';
$t->seed_gateway(tokens => { dev => $good });

# the gateway's user: read-only keys of its prefix, its one channel, and
# GET, SUBSCRIBE, PING (AUTH is always allowed)
my @gw_acl = ('gw', 'on', '>gw-pass-1', 'resetkeys', '%R~envgw:*',
              'resetchannels', '&envgw:invalidate', '-@all', '+get',
              '+subscribe', '+ping');
is($t->redis->acl('setuser', @gw_acl), 'OK', 'the gateway user is created');
# everyone else must authenticate
is($t->redis->acl('setuser', 'default', 'resetpass', '>admin-pass'), 'OK',
   'the default user has a password');
$t->{redis} = EnvGwTls::client($t, $port, user => 'default',
                               pass => 'admin-pass');

sub write_file {
    my ($name, $text, $mode) = @_;
    open my $fh, '>', "$dir/$name" or die;
    print $fh $text;
    close $fh;
    chmod $mode // 0600, "$dir/$name";
    return "$dir/$name";
}

sub gateway {
    my ($redis, %o) = @_;
    my $g = EnvGwTest->new;
    $g->{redis_port} = $port;
    $g->{redis} = $t->{redis};
    $g->start_nginx(<<"EOF", $o{fails} ? () : (subscribed => 1));
    env_gateway_redis 127.0.0.1:%%REDIS%% tls tls_ca=$c->{ca} $redis
                      connect_timeout=500ms read_timeout=500ms;
    env_gateway_cache zone=envgw:1m ttl=30s negative_ttl=1s;
    upstream backend { server 127.0.0.1:%%BACKEND%%; }
    server {
        listen 127.0.0.1:%%PORT%%;
        location / {
            env_gateway on;
            proxy_pass http://backend;
        }
    }
EOF
    return $g;
}

sub poll {
    my ($g, $tok, $want) = @_;
    my $st = 0;
    my $end = time + 10;
    while (time < $end) {
        $st = $g->get('/x', $tok)->{status};
        return $st if $st == $want;
        sleep 0.05;
    }
    return $st;
}

# --- the least-privileged user, its password in a file ----------------------

my $pwfile = write_file('gw.pass', "gw-pass-1\n");
{
    my $g = gateway("username=gw password_file=$pwfile");
    is($g->get('/x', $good)->{status}, 200,
       'ACL user with GET, SUBSCRIBE, PING, password_file=: 200');
    is($g->get('/x', 'egw_acl_unknown')->{status}, 401,
       'ACL user: an unknown token is 401');
    is($g->numsub, 1, 'ACL user: the subscriber is subscribed');

    # an invalidation reaches it (subscribed with the ACL user)
    my $key = 'envgw:token:' . sha256_hex($good);
    my $val = $t->redis->get($key);
    $t->redis->del($key);
    $t->redis->publish('envgw:invalidate', $key);
    is(poll($g, $good, 401), 401, 'ACL user: invalidations arrive');
    $t->redis->set($key, $val);
    $t->redis->publish('envgw:invalidate', $key);
    is(poll($g, $good, 200), 200, 'ACL user: the record is back');
    unlike($g->slurp('error.log'), qr/NOPERM|refused AUTH|SUBSCRIBE .* refused/,
           'ACL user: no command was refused');
    unlike($g->slurp('error.log'), qr/gw-pass/,
           'the password is not in error.log');

    # a new password: the running workers still read the old one from
    # the file's old content; a reload reads the file again
    my @old = $g->worker_pids;
    $t->redis->acl('setuser', 'gw', 'resetpass', '>gw-pass-2');
    write_file('gw.pass', "gw-pass-2\r\n");
    $t->redis->client('kill', 'user', 'gw');
    my $before = 'egw_acl_before_reload_0123456789';
    $t->seed_gateway(tokens => { dev => $before });
    unavailable($g->get('/x', $before),
                'password changed, not reloaded yet');
    $g->reload_nginx;
    my $end = time + 10;
    while (time < $end) {
        my %old = map { $_ => 1 } @old;
        my @w = $g->worker_pids;
        last if @w && !grep { $old{$_} } @w;
        sleep 0.05;
    }
    my $after = 'egw_acl_after_reload_0123456789';
    $t->seed_gateway(tokens => { dev => $after });
    is(poll($g, $after, 200), 200,
       'after reload: the new password from the file is used');
    like($g->slurp('error.log'), qr/\[error\].*refused AUTH as user "gw"/,
         'before the reload: the refusal was logged');
    $g->stop;
}

# --- rate limits synced through Redis: INCRBY and PEXPIRE on its counters ---------

{
    $t->redis->acl('setuser', 'gw_sync', 'on', '>sync-pass', 'resetkeys',
                   '%R~envgw:*', '~envgw:ratelimit:*', 'resetchannels',
                   '&envgw:invalidate', '-@all', '+get', '+subscribe', '+ping',
                   '+incrby', '+pexpire');
    my $pw = write_file('sync.pass', "sync-pass\n");
    my $g = EnvGwTest->new;
    $g->{redis_port} = $port;
    $g->{redis} = $t->{redis};
    $g->start_nginx(<<"EOF", subscribed => 1);
    env_gateway_redis 127.0.0.1:%%REDIS%% tls tls_ca=$c->{ca}
                      username=gw_sync password_file=$pw;
    env_gateway_cache zone=envgw:1m ttl=30s;
    env_gateway_limit_zone zone=envgw_limits:1m sync=redis sync_interval=50ms;
    server {
        listen 127.0.0.1:%%PORT%%;
        location / {
            env_gateway on;
            env_gateway_limit token 5r/h;
            proxy_pass http://127.0.0.1:%%BACKEND%%;
        }
    }
EOF
    my @st = map { $g->get('/x', $good)->{status} } 1 .. 7;
    is_deeply(\@st, [ (200) x 5, 429, 429 ],
              'sync=redis over TLS with its ACL user: the limit holds');
    my @keys;
    for (1 .. 40) {
        @keys = grep { /^envgw:ratelimit:token:/ }
                $t->redis->keys('envgw:ratelimit:*');
        last if @keys;
        sleep 0.05;
    }
    ok(scalar @keys, 'sync=redis over TLS: the counter is in Redis');
    unlike($g->slurp('error.log'), qr/NOPERM/,
           'sync=redis over TLS: INCRBY and PEXPIRE are allowed');
    $g->stop;
}

# --- a token's last use: SET on envgw:last_used:* -----------------------------
# With +set on read-write ~envgw:last_used:* the gateway records it; the
# read-only user above cannot (NOPERM): said once at warn, the writes pause,
# and requests are not affected.

for my $case ([ 'gw_lu', [ '~envgw:last_used:*', '+set' ], 1 ],
              [ 'gw_nolu', [], 0 ]) {
    my ($user, $extra, $allowed) = @$case;
    $t->redis->acl('setuser', $user, 'on', '>lu-pass', 'resetkeys',
                   '%R~envgw:*', 'resetchannels', '&envgw:invalidate',
                   '-@all', '+get', '+subscribe', '+ping', @$extra);
    $t->redis->del('envgw:last_used:tok_dev');
    my $pw = write_file("$user.pass", "lu-pass\n");
    my $g = EnvGwTest->new;
    $g->{redis_port} = $port;
    $g->{redis} = $t->{redis};
    $g->start_nginx(<<"EOF", subscribed => 1);
    env_gateway_redis 127.0.0.1:%%REDIS%% tls tls_ca=$c->{ca}
                      username=$user password_file=$pw;
    env_gateway_cache zone=envgw:1m ttl=30s;
    env_gateway_last_used interval=1s;
    server {
        listen 127.0.0.1:%%PORT%%;
        location / {
            env_gateway on;
            proxy_pass http://127.0.0.1:%%BACKEND%%;
        }
    }
EOF
    my ($ok, $n, $log, $written) = (0, 0, '', 0);
    my $end = time + 10;
    while (time < $end) {
        $n++;
        $ok++ if $g->get('/x', $good)->{status} == 200;
        $log = $g->slurp('error.log');
        $written = $t->redis->exists('envgw:last_used:tok_dev');
        last if $n >= 10 && ($allowed ? $written
                                      : $log =~ /last use/);
        sleep 0.1;
    }
    is($ok, $n, "last use as $user: $n requests, every one 200");
    if ($allowed) {
        ok($written, 'last use with +set ~envgw:last_used:*: recorded');
        unlike($log, qr/NOPERM/, 'last use with +set: nothing refused');
    } else {
        ok(!$written, 'last use without +set: nothing written');
        my @l = grep { /refused to record a token's last use/ }
                split /\n/, $log;
        is(scalar @l, 1, 'last use without +set: the refusal said once')
            or diag($log);
        like($l[0] // '', qr/\[warn\].*NOPERM/,
             'last use without +set: at warn, with Redis\' NOPERM');
        unlike($l[0] // '', qr/egw_/, 'last use without +set: no token');
    }
    $g->stop;
}

# --- each of those commands is needed -------------------------------------------

for my $case ([ 'get', qr/redis error for "envgw:token:[0-9a-f]+": NOPERM/,
                'GET' ],
              [ 'subscribe', qr/SUBSCRIBE envgw:invalidate refused/,
                'SUBSCRIBE' ]) {
    my ($cmd, $re, $name) = @$case;
    my @acl = grep { $_ ne "+$cmd" } @gw_acl;
    $acl[0] = "gw_no_$cmd";
    @acl = map { $_ eq '>gw-pass-1' ? '>less-pass' : $_ } @acl;
    $t->redis->acl('setuser', @acl);
    my $pw = write_file("no_$cmd.pass", "less-pass\n");
    my $g = gateway("username=gw_no_$cmd password_file=$pw", fails => 1);
    my $r;
    my $end = time + 10;
    while (time < $end) {
        $r = $g->get('/x', $good);
        last if $g->slurp('error.log') =~ $re;
        sleep 0.05;
    }
    like($g->slurp('error.log'), $re, "without $name: refused by Redis");
    unavailable($g->get('/x', $good), "without $name") if $cmd eq 'get';
    $g->stop;
}

# --- a wrong password: 503, and one error line --------------------------------

{
    my $bad = write_file('bad.pass', "not-the-password\n");
    my $g = gateway("username=gw password_file=$bad", fails => 1);
    my @st = map { sleep 0.05; $g->get('/x', $good . $_)->{status} } 1 .. 10;
    unavailable($g->get('/x', $good), 'wrong password');
    ok(!grep({ $_ != 503 } @st), 'wrong password: every request is 503');
    my @lines = grep { /refused AUTH/ } split /\n/, $g->slurp('error.log');
    is(scalar @lines, 1, 'wrong password: exactly one log line')
        or diag(join "\n", @lines);
    like($lines[0] // '', qr/\[error\].*redis 127\.0\.0\.1:$port \(\w+\) refused AUTH as user "gw": WRONGPASS/,
         'wrong password: the line names the server, the user and the reason');
    unlike($g->slurp('error.log'), qr/not-the-password/,
           'wrong password: the password is not logged');
    $g->stop;
}

# --- nginx -t ------------------------------------------------------------------

my $wr = write_file('world.pass', "gw-pass-2\n", 0644);
my $empty = write_file('empty.pass', "\n");
for my $case (
    [ "password=x password_file=$pwfile",
      qr/"env_gateway_redis" has both password= and password_file=/,
      'password= and password_file=' ],
    [ "password_file=$empty", qr/password_file ".*empty\.pass" is empty/,
      'an empty password file' ],
    [ "password_file=$dir/missing.pass",
      qr/cannot open password_file ".*missing\.pass"/,
      'a missing password file' ],
    [ 'username=gw', qr/username= without password=/,
      'username= without a password' ],
    [ "tls tls_cert=$c->{client_cert}", qr/tls_cert= and tls_key= together/,
      'tls_cert= without tls_key=' ],
    [ 'tls tls_verify=maybe', qr/invalid value in "tls_verify=maybe"/,
      'tls_verify=maybe' ],
    [ "tls_ca=$c->{ca}", qr/tls_ parameters without "tls"/,
      'tls_ca= without tls' ],
    [ 'tls tls_name=', qr/empty value in "tls_name="/, 'an empty tls_name=' ],
    [ "tls tls_ca=$dir/missing.crt", qr/missing\.crt/,
      'a missing tls_ca= file' ],
) {
    my ($params, $re, $name) = @$case;
    my ($rc, $out) = $t->check_conf(EnvGwTest::location_conf('env_gateway on;',
        "env_gateway_redis 127.0.0.1:6379 $params;"));
    isnt($rc, 0, "nginx -t: $name is an error");
    like($out, $re, "nginx -t: $name: the message says why") or diag($out);
}

{
    my ($rc, $out) = $t->check_conf(EnvGwTest::location_conf('env_gateway on;',
        "env_gateway_redis 127.0.0.1:6379 username=gw password_file=$wr;"));
    is($rc, 0, 'nginx -t: a world-readable password file is accepted');
    like($out, qr/\[warn\].*password_file ".*world\.pass" is readable by every user/,
         'nginx -t: ... with a warning');
    unlike($out, qr/gw-pass/, 'nginx -t: the password is not shown');

    ($rc, $out) = $t->check_conf(EnvGwTest::location_conf('env_gateway on;',
        "env_gateway_redis 127.0.0.1:6379 tls tls_verify=off "
        . "tls_cert=$c->{client_cert} tls_key=$c->{client_key} "
        . "tls_name=redis.test username=gw password_file=$pwfile;"));
    is($rc, 0, 'nginx -t: every TLS and ACL parameter together') or diag($out);
}

$t->stop;
done_testing;
