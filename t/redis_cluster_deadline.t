# SPDX-License-Identifier: BSD-2-Clause
# A Redis Cluster lookup keeps one deadline from its first send, across
# its redirects and re-sends to other nodes: read_timeout from when it was
# first handed to a node (connect_timeout more if that node was not
# connected yet).  Real redis-server nodes, frozen with SIGSTOP and
# thawed with SIGCONT (by pid):
#
# - an ASK to a frozen node: 503 within connect_timeout + read_timeout, not
#   a fresh read_timeout for each of its hops to that node (the ASK, the
#   re-send to the slot's owner after the frozen node's connection fails,
#   its ASK again ...: twice read_timeout, the frozen node failed twice);
# - a hop sent late to a node that answers late but within its own
#   read_timeout: the request gets its 503 at the lookup's deadline, the
#   node's connection stays up (no reconnect, no "command timed out" for
#   it) and a lookup behind the late one on it is answered 200.
#
# The bounds are generous (the suite also runs under ASan): the assertion
# is one deadline, not one per hop.

use strict;
use warnings;

use lib 't/lib';
use Test::More;
use Time::HiRes qw(sleep time);
use Digest::SHA qw(sha256_hex);
use IO::Socket::INET;
use EnvGwTest qw(unavailable);
use EnvGwRedisCluster;

my $CONNECT = 0.5;
my $READ = 2;
# one deadline and slack; a fresh read_timeout per hop took 2 x $READ
my $BOUND = $CONNECT + $READ + 1;

my $t = EnvGwTest->new;
# no replicas, and a node timeout longer than the test: a frozen node
# stays the owner of its slots, nothing fails over
my $c = EnvGwRedisCluster->start($t, primaries => 3, replicas => 0,
                                 node_timeout => 60000);
$t->{redis} = $c->client;
my $seeds = $c->seeds;
my ($A, $B, $C) = $c->primary_ports;

# nodes frozen by this test, thawed before anything is stopped
my %frozen;
sub freeze {
    my ($port) = @_;
    my $pid = $t->{pids}{"cluster-$port"} or die "no pid for node $port";
    kill 'STOP', $pid;
    $frozen{$port} = $pid;
}
sub thaw {
    my ($port) = @_;
    my $pid = delete $frozen{$port} or return;
    kill 'CONT', $pid;
}
END { kill 'CONT', $_ for values %frozen }

$t->env('env_dev', 'team_a', 'development');

# a token whose record is on the primary at $port, in a slot of its own
my %used_slot;
sub token_on {
    my ($name, $port) = @_;
    for my $i (1 .. 5000) {
        my $raw = "egw_cdl_${name}_$i" . ('d' x 20);
        my $key = 'envgw:token:' . sha256_hex($raw);
        my $slot = EnvGwRedisCluster::keyslot($key);
        next if $used_slot{$slot} || $c->owner($key) != $port;
        $used_slot{$slot} = 1;
        $t->token($raw, token_id => "tok_$name", team_id => 'team_a',
                  environment_id => 'env_dev', environment => 'development');
        return { raw => $raw, slot => $slot };
    }
    die "no token found for node $port";
}

my %tok = (
    ask  => token_on('ask', $A),     # its slot migrates from A to B
    back => token_on('back', $B),    # its slot migrates from B to A
    a    => token_on('a', $A),
    b    => token_on('b', $B),
    c    => token_on('c', $C),
);

# the slot's keys moved to $to, the slot still $from's: $from answers ASK
sub start_migration {
    my ($slot, $from, $to) = @_;
    my ($src, $dst) = ($c->node($from), $c->node($to));
    $dst->cluster('setslot', $slot, 'importing', $c->id_of($from));
    $src->cluster('setslot', $slot, 'migrating', $c->id_of($to));
    while (my @keys = $src->cluster('getkeysinslot', $slot, 100)) {
        $src->migrate('127.0.0.1', $to, '', 0, 5000, 'KEYS', @keys);
    }
}

# connections a node accepted so far
sub accepted {
    my ($port) = @_;
    return $c->node($port)->info('stats')->{total_connections_received};
}

# no cache: every request asks the cluster
$t->start_nginx(<<"EOF");
    env_gateway_redis_cluster $seeds connect_timeout=500ms read_timeout=2s;
    upstream backend { server 127.0.0.1:%%BACKEND%%; }
    server {
        listen 127.0.0.1:%%PORT%%;
        location / {
            env_gateway on;
            proxy_pass http://backend;
        }
    }
EOF

sub status { $t->get('/x', $tok{ $_[0] }{raw})->{status} // 0 }

# a request sent now, its answer read later
sub send_request {
    my ($name) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$t->{port}",
                                  Proto => 'tcp') or die "connect: $!";
    $s->autoflush(1);
    print $s "GET /x HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer "
           . "$tok{$name}{raw}\r\nConnection: close\r\n\r\n";
    return $s;
}

sub read_response { return EnvGwTest::read_response($_[0], 15) }

# every node answers through the gateway (after a thaw: its connection
# reopened)
sub all_answer {
    my ($name) = @_;
    my $end = time + 10;
    my %st;
    while (time < $end) {
        %st = map { $_ => status($_) } sort keys %tok;
        last unless grep { $_ != 200 } values %st;
        sleep 0.1;
    }
    is_deeply(\%st, { map { $_ => 200 } keys %tok },
              "$name: every token answers 200");
}

# lines of a lookup refused by its deadline while its node answered late
sub late_lines {
    my ($port) = @_;
    my $re = qr/redis \(cluster node 127\.0\.0\.1:$port\): slot \d+ /
           . qr/answered \d+ ms after the lookup's deadline/;
    return scalar(() = $t->slurp('error.log') =~ /$re/g);
}

# a node's connection failed for a command's deadline
sub timed_out_on {
    my ($port) = @_;
    my $re = qr/redis 127\.0\.0\.1:$port \(cluster node [^)]*\)/
           . qr/(?::| unreachable:) command timed out/;
    return scalar(() = $t->slurp('error.log') =~ /$re/g);
}

all_answer('before');

# --- ASK to a frozen node ----------------------------------------------------

start_migration($tok{ask}{slot}, $A, $B);
is(status('ask'), 200, 'slot migrating from A to B: the ASK is followed');

my $accepted_a = accepted($A);
freeze($B);

my $t0 = time;
my $r = $t->get('/x', $tok{ask}{raw});
my $dt = time - $t0;
unavailable($r, 'ASK to a frozen node');
ok($dt < $BOUND, sprintf('ASK to a frozen node: answered in %.2f s, within '
   . 'connect_timeout + read_timeout (bound %.1f s with slack; a '
   . 'read_timeout per hop to it: %.0f s)', $dt, $BOUND, 2 * $READ));
diag(sprintf 'ASK to a frozen node: 503 after %.2f s (read_timeout %.1f s)',
     $dt, $READ);

# the other nodes, A (which answered the ASK) among them, still answer
is(status('a'), 200, 'B frozen: a token on A answers 200');
is(status('c'), 200, 'B frozen: a token on C answers 200');

thaw($B);
all_answer('B thawed');
is(accepted($A), $accepted_a,
   'the gateway kept its connection to A (no new connection accepted)');
is(timed_out_on($A), 0, 'no "command timed out" for A');
# logged once: by the frozen node's connection, which failed once (a fresh
# read_timeout per hop failed it once per hop), and no line of its own
is(timed_out_on($B), 1, 'the frozen node B timed out once');
is(late_lines($_), 0, "no late-answer line for $_") for $A, $B;

# --- a hop sent late to a node that answers late -------------------------------
#
# The slot of "back" migrates from B to A: B answers ASK, A has the key.
# Both frozen; B thawed at 0.6 x read_timeout, so the ASK hop reaches A
# with 0.4 x read_timeout left of the lookup's deadline; A thawed at
# 1.3 x read_timeout: after that deadline, within A's own read_timeout
# for the hop (until 1.6 x read_timeout).

start_migration($tok{back}{slot}, $B, $A);
is(status('back'), 200, 'slot migrating from B to A: the ASK is followed');

$accepted_a = accepted($A);
my $timeouts_a = timed_out_on($A);

freeze($A);
freeze($B);

# until $at seconds after $t0
sub until_at {
    my ($at) = @_;
    my $left = $t0 + $at - time;
    sleep $left if $left > 0;
}

$t0 = time;
my $s_back = send_request('back');
until_at(0.6 * $READ);
thaw($B);
until_at(0.7 * $READ);
# a lookup on A's connection, behind the late one
my $s_a = send_request('a');
until_at(1.3 * $READ);
thaw($A);

$r = read_response($s_back);
unavailable($r, 'hop sent late to a slow node: refused at the deadline');
my $r_a = read_response($s_a);
is($r_a->{status}, 200,
   'a lookup behind the late one on A\'s connection answers 200');

all_answer('A and B thawed');
is(accepted($A), $accepted_a,
   'the late lookup did not close A\'s connection (no new connection '
   . 'accepted)');
is(timed_out_on($A), $timeouts_a, 'no "command timed out" for A');
# logged once: A answered, late, and no connection failed for it
is(late_lines($A), 1, 'the refused lookup was logged once, as answered late '
   . 'by A');
is(timed_out_on($B), 1, 'no "command timed out" more for B');

my $log = $t->slurp('error.log');
for my $name (sort keys %tok) {
    unlike($log, qr/\Q$tok{$name}{raw}\E/, "no raw token \"$name\" in the log");
}

thaw($_) for keys %frozen;
$t->stop;

done_testing;
