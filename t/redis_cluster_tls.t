# SPDX-License-Identifier: BSD-2-Clause
# env_gateway_redis_cluster and envgw --cluster on a TLS-only Redis
# Cluster (3 primaries; the cluster bus and CLUSTER SLOTS on the TLS
# ports) with ACL users on every node: records on every primary are read
# over TLS as the gateway's user, a revocation written by envgw --cluster
# --tls as its own user reaches the gateway at once, an unknown CA and a
# wrong password are 503 gateway_unavailable, and nginx -t takes the
# directive's TLS and ACL parameters.

use strict;
use warnings;

use lib 't/lib';
use Test::More;
use Time::HiRes qw(sleep time);
use Digest::SHA qw(sha256_hex);
use EnvGwTest qw(unavailable refused);
use EnvGwCli;
use EnvGwTls;
use EnvGwRedisCluster;

my $t = EnvGwTest->new;
my $dir = $t->dir;
my $certs = EnvGwTls::make_certs($t);
my $cl = EnvGwRedisCluster->start($t, primaries => 3, replicas => 0,
                                  tls => 1);
$t->{redis} = $cl->client;
my @primaries = $cl->primary_ports;
is(scalar @primaries, 3, 'three TLS primaries');
like(join("\n", $cl->node($primaries[0])->cluster('nodes')),
     qr/127\.0\.0\.1:$primaries[1]\@/,
     'CLUSTER NODES names the TLS ports (tls-cluster yes)');

# --- ACL users, on every node (ACLs are per node in a cluster) ----------
# The gateway: GET (records), SUBSCRIBE (invalidations), PING (the
# subscriber's health check), and for the cluster layer CLUSTER SLOTS (the
# slot map, read at start and after a MOVED; "+cluster|slots", no other
# CLUSTER subcommand; without it lookups still work through MOVED but the
# gateway never reports ready, shown below) and ASKING (sent only before a
# lookup an ASK redirect names, while a slot migrates).  READONLY is
# needed only with read_from=replica (not used here).
my @gw_acl = ('resetkeys', '%R~envgw:*', 'resetchannels', '&envgw:invalidate',
              '-@all', '+get', '+subscribe', '+ping', '+cluster|slots',
              '+asking');
# envgw: the list of docs/deployment.md, and for --cluster CLUSTER SLOTS
# and ASKING as well, and EXISTS (a cluster write orders its SETs by
# whether each key exists: there is no MULTI across nodes)
my @cli_acl = ('resetkeys', '~envgw:*', 'resetchannels', '&envgw:invalidate',
               '-@all', map({ "+$_" } qw(get mget smembers scan type set del
               sadd srem watch unwatch multi exec publish xadd xrange ping)),
               '+cluster|slots', '+asking', '+exists');
my ($gw_pw, $cli_pw) = ('gw-cluster-tls-pass', 'cli-cluster-tls-pass');
# and the same users without the cluster additions, to show them needed
my @gw_plain = grep { $_ ne '+cluster|slots' } @gw_acl;
my @cli_plain = grep { $_ ne '+exists' } @cli_acl;
for my $port (@primaries) {
    my $n = $cl->node($port);
    is(scalar $n->acl('setuser', 'envgw-gateway', 'reset', 'on', ">$gw_pw",
                      @gw_acl), 'OK', "gateway user on $port");
    is(scalar $n->acl('setuser', 'envgw-admin', 'reset', 'on', ">$cli_pw",
                      @cli_acl), 'OK', "envgw user on $port");
    is(scalar $n->acl('setuser', 'gw-no-slots', 'reset', 'on', ">$gw_pw",
                      @gw_plain), 'OK', "gateway user without CLUSTER SLOTS "
                                        . "on $port");
    is(scalar $n->acl('setuser', 'admin-no-exists', 'reset', 'on',
                      ">$cli_pw", @cli_plain), 'OK',
       "envgw user without EXISTS on $port");
}
sub write_file {
    my ($name, $text) = @_;
    open my $fh, '>', "$dir/$name" or die "$dir/$name: $!";
    print $fh $text;
    close $fh;
    chmod 0600, "$dir/$name";
    return "$dir/$name";
}
my $gw_file = write_file('gw.pass', "$gw_pw\n");
my $bad_file = write_file('bad.pass', "not-the-password\n");
my $cli_file = write_file('cli.pass', "$cli_pw\n");

# --- records on every primary, written by envgw --cluster --tls ---------
$t->{redis_port} = $primaries[-1];    # envgw's --redis: one seed
my $cli = EnvGwCli->new($t);
my @envgw = ('--cluster', '--tls', '--cacert', $certs->{ca},
             '--user', 'envgw-admin', '--password-file', $cli_file);
for my $e ([ 'env_dev', 'development' ], [ 'env_prod', 'production' ]) {
    $cli->ok_run("envgw --cluster --tls env create $e->[0]", @envgw, 'env',
                 'create', '--team', 'team_a', '--id', $e->[0], $e->[1]);
}
my (%tok_on, %id_of);
for (1 .. 40) {
    my $j = $cli->json(@envgw, 'token', 'create', 'env_dev');
    my $raw = ref $j eq 'HASH' ? $j->{token} : undef;
    last unless defined $raw;
    my $port = $cl->owner('envgw:token:' . sha256_hex($raw));
    next if $tok_on{$port};
    ($tok_on{$port}, $id_of{$port}) = ($raw, $j->{token_id} // $j->{id});
    last if keys %tok_on == 3;
}
is(scalar keys %tok_on, 3, 'envgw --cluster --tls: a token on each primary');

# one gateway per Redis setting (the directive is http-level)
sub gateway {
    my ($params) = @_;
    my $g = EnvGwTest->new;
    $g->{redis} = $t->{redis};
    my $seeds = $cl->seeds;
    $g->start_nginx(<<"CONF");
    env_gateway_redis_cluster $seeds $params
                              connect_timeout=500ms read_timeout=1s;
    env_gateway_cache zone=envgw:1m ttl=60s negative_ttl=60s;
    upstream backend { server 127.0.0.1:%%BACKEND%%; }
    server {
        listen 127.0.0.1:%%PORT%%;
        location / {
            env_gateway on;
            proxy_pass http://backend;
        }
        location = /status { env_gateway_status; }
    }
CONF
    return $g;
}

my $good = "tls tls_ca=$certs->{ca} username=envgw-gateway "
         . "password_file=$gw_file";
{
    my $g = gateway($good);
    my $st;
    my $end = time + 10;
    while (time < $end) {
        $st = $g->get('/status');
        last if $st->{status} == 200;
        sleep 0.02;
    }
    is($st->{status}, 200, 'TLS cluster as an ACL user: ready');
    for my $port (sort keys %tok_on) {
        my $r = $g->get('/x', $tok_on{$port});
        is($r->{status}, 200, "token whose record is on primary $port: 200");
        like($r->{body}, qr/env=env_dev/, '... stamped with its environment');
    }
    refused($g->get('/x', 'egw_cluster_tls_nobody_' . ('q' x 20)), 401,
            'invalid_token', 'a token nobody created, over TLS');
    my $log = $g->slurp('error.log');
    for my $port (@primaries) {
        my $node = qr/\(cluster node [^)]+\)/;
        like($log, qr/connected to redis 127\.0\.0\.1:$port $node over TLSv1/,
             "the lookup connection to node $port is TLS");
    }
    like($log, qr/\(invalidations\) over TLSv1/,
         'the invalidation subscriber is TLS');
    unlike($log, qr/NOPERM|WRONGPASS/, 'no command refused to the ACL user');

    # the subscriber is subscribed before the revocation is written
    my $subscribed = 0;
    for (1 .. 250) {
        for my $port (@primaries) {
            my @n = $cl->node($port)->pubsub('numsub', 'envgw:invalidate');
            $subscribed = 1 if ($n[1] // 0) > 0;
        }
        last if $subscribed;
        sleep 0.02;
    }
    ok($subscribed, 'the gateway subscribed to envgw:invalidate');

    # every token is cached: revoked by envgw, the 401 comes from the
    # invalidation, not from a ttl (60 s)
    for my $port (sort keys %tok_on) {
        is($g->get('/x', $tok_on{$port})->{status}, 200,
           "token on $port cached");
        $cli->ok_run("envgw --cluster --tls token revoke (record on $port)",
                     @envgw, 'token', 'revoke', $id_of{$port});
        my $t0 = time;
        my $status = 0;
        while (time - $t0 < 10) {
            $status = $g->get('/x', $tok_on{$port})->{status};
            last if $status == 401;
            sleep 0.002;
        }
        is($status, 401, sprintf('revocation on %d reached the gateway '
                                 . '(%.1f ms)', $port, (time - $t0) * 1000));
    }
    $g->stop;
}

# a fresh token for the failure cases (none of them may read it)
my $j = $cli->json(@envgw, 'token', 'create', 'env_dev');
my $fresh = ref $j eq 'HASH' ? $j->{token} : undef;
ok(defined $fresh, 'envgw --cluster --tls token create');
$fresh //= 'egw_cluster_tls_none_' . ('n' x 20);

# envgw --cluster without EXISTS: refused by Redis, said clearly, nothing
# written
{
    my @no = @envgw;
    $no[5] = 'admin-no-exists';
    my $res = $cli->run(@no, 'env', 'create', '--team', 'team_a', '--id',
                        'env_x', 'x-env');
    isnt($res->{rc}, 0, 'envgw --cluster as a user without EXISTS: fails');
    like($res->{err}, qr/NOPERM.*'exists'/, '... Redis says which command');
    is($t->{redis}->get('envgw:env:env_x'), '', '... nothing written');
}

# --- failures: 503 gateway_unavailable, nothing reaches the backend -----
for my $case (
    [ "tls tls_ca=$certs->{other_ca} username=envgw-gateway "
      . "password_file=$gw_file", 'an unknown CA',
      qr/TLS certificate verify error/ ],
    [ "tls tls_ca=$certs->{ca} username=envgw-gateway "
      . "password_file=$bad_file", 'a wrong password',
      qr/refused AUTH as user "envgw-gateway": WRONGPASS/ ],
) {
    my ($params, $name, $re) = @$case;
    my $g = gateway($params);
    my $r;
    for (1 .. 3) {
        $r = $g->get('/x', $fresh);
        last if $r->{status} == 503;
        sleep 0.05;
    }
    unavailable($r, $name);
    unlike($g->backend_log, qr/\S/, "$name: nothing reached the backend");
    like($g->slurp('error.log'), qr/\[error\].*$re/,
         "$name: error.log says why") or diag($g->slurp('error.log'));
    unlike($g->slurp('error.log'), qr/\Q$gw_pw\E|not-the-password/,
           "$name: no password in error.log");
    $g->stop;
}

# --- a gateway user without CLUSTER SLOTS: no slot map, so each lookup
# goes to a node and follows its MOVED (a round trip more), error.log
# names the refusal and env_gateway_status stays 503; the answers are
# still right
{
    my $g = gateway("tls tls_ca=$certs->{ca} username=gw-no-slots "
                    . "password_file=$gw_file");
    my $r;
    my $end = time + 10;
    while (time < $end) {
        $r = $g->get('/x', $fresh);
        last if $r->{status} == 200;
        sleep 0.02;
    }
    is($r->{status}, 200, 'without CLUSTER SLOTS: a valid token, 200 '
                          . '(through MOVED)');
    refused($g->get('/x', 'egw_cluster_tls_nobody_' . ('r' x 20)), 401,
            'invalid_token', 'without CLUSTER SLOTS: an unknown token');
    # (the map is asked for on a timer: the line may come after the answers)
    my $refused = qr/\[error\].*refused CLUSTER SLOTS: NOPERM/;
    $end = time + 10;
    while (time < $end) {
        last if $g->slurp('error.log') =~ $refused;
        sleep 0.02;
    }
    like($g->slurp('error.log'), $refused,
         'without CLUSTER SLOTS: error.log names the refusal');
    # readiness needs the slot map: a load balancer takes this one out
    is($g->get('/status')->{status}, 503,
       'without CLUSTER SLOTS: env_gateway_status 503 (no slot map)');
    $g->stop;
}

# --- nginx -t takes the parameters ----------------------------------------
my $tc = EnvGwTest->new;
$tc->conf_ok('cluster with tls, tls_ca, tls_name, tls_cert/tls_key, '
             . 'username, password_file', EnvGwTest::location_conf(
    'env_gateway on;', 'env_gateway_redis_cluster ' . $cl->seeds
    . " tls tls_ca=$certs->{ca} tls_name=redis.test "
    . "tls_cert=$certs->{client_cert} tls_key=$certs->{client_key} "
    . "username=envgw-gateway password_file=$gw_file;"));

$t->stop;
done_testing;
