# SPDX-License-Identifier: BSD-2-Clause
# A Redis Cluster for the tests: N primaries and a replica each on free
# loopback ports in the test's directory, created with `redis-cli --cluster
# create`, stopped (by pid) with the test's other services.  And a client
# that sends each key's command to the node owning its slot (CRC16 of the
# Redis Cluster specification, computed bit by bit here, independently of
# the module's table), following MOVED and ASK.
#
#   my $c = EnvGwRedisCluster->start($t, primaries => 3, replicas => 1);
#   $t->{redis} = $c->client;      # $t->put, $t->token ... write to it
#   $c->seeds                      # "127.0.0.1:P1 127.0.0.1:P2 ..."
#   $c->owner($key)                # the port of the primary of $key's slot
#
# With tls => 1 the nodes are TLS-only (--port 0 --tls-port, the cluster
# bus and replication over TLS too, certificates of EnvGwTls), created and
# spoken to with redis-cli --tls (EnvGwTls::Cli).

package EnvGwRedisCluster;

use strict;
use warnings;

use Time::HiRes qw(sleep time);
use POSIX ();
use Redis;
use EnvGwTest;
use EnvGwTls;

sub crc16 {
    my ($s) = @_;
    my $crc = 0;
    for my $byte (unpack 'C*', $s) {
        $crc ^= $byte << 8;
        for (1 .. 8) {
            $crc = ($crc & 0x8000) ? (($crc << 1) ^ 0x1021) : ($crc << 1);
            $crc &= 0xffff;
        }
    }
    return $crc;
}

sub keyslot {
    my ($key) = @_;
    if ($key =~ /^[^{]*\{([^}]+)\}/) {
        $key = $1;
    }
    return crc16($key) & 16383;
}

sub start {
    my ($class, $t, %o) = @_;
    my $self = bless { t => $t, primaries => $o{primaries} || 3,
                       replicas => $o{replicas} // 1,
                       node_timeout => $o{node_timeout} || 1000,
                       tls => $o{tls}, ports => [] }, $class;
    my $dir = $t->dir;
    my $n = $self->{primaries} * (1 + $self->{replicas});
    for my $i (1 .. $n) {
        my $port = EnvGwTest::free_port();
        push @{ $self->{ports} }, $port;
        # the cluster bus always asks the connecting node for a
        # certificate: the nodes present the client one (the server
        # certificate is for serverAuth only)
        my $c = $self->{tls} ? EnvGwTls::make_certs($t) : {};
        my @server = $self->{tls}
            ? (EnvGwTls::server_args($t, $port),
               '--tls-cluster', 'yes', '--tls-replication', 'yes',
               '--tls-client-cert-file', $c->{client_cert},
               '--tls-client-key-file', $c->{client_key})
            : ('--port', $port, '--bind', '127.0.0.1', '--save', '',
               '--appendonly', 'no', '--daemonize', 'no', '--dir', $dir);
        $t->spawn("cluster-$port", 'redis-server', @server,
                  '--cluster-enabled', 'yes',
                  '--cluster-config-file', "$dir/nodes-$port.conf",
                  '--cluster-node-timeout', $self->{node_timeout},
                  # the other primaries' slots stay served while one fails
                  # over (as docs/deployment.md advises)
                  '--cluster-require-full-coverage', 'no',
                  '--repl-diskless-sync-delay', '0');
    }
    for my $port (@{ $self->{ports} }) {
        EnvGwTest::wait_port($port) or die "cluster node $port did not start";
        next unless $self->{tls};
        # the port accepts TCP at once; wait until it answers over TLS
        for (1 .. 200) {
            last if ($self->node($port)->ping // '') eq 'PONG';
            sleep 0.02;
        }
    }
    my $nodes = join ' ', map { "127.0.0.1:$_" } @{ $self->{ports} };
    my $r = $self->{replicas};
    my $tls = '';
    if ($self->{tls}) {
        my $c = EnvGwTls::make_certs($t);
        $tls = "--tls --cacert $c->{ca} ";
    }
    # (bounded: nodes that cannot meet leave it waiting for the join)
    my $cmd = "timeout 60 redis-cli $tls--cluster create $nodes "
            . "--cluster-replicas $r --cluster-yes 2>&1";
    my $out = `$cmd`;
    $? == 0 or die "redis-cli --cluster create failed:\n$out";
    $self->wait_ok(20) or die "the cluster did not reach cluster_state:ok";
    return $self;
}

sub ports { @{ $_[0]{ports} } }
sub seeds { join ' ', map { "127.0.0.1:$_" } @{ $_[0]{ports} } }
sub node_timeout { $_[0]{node_timeout} }

sub node {
    my ($self, $port) = @_;
    return $self->{conn}{$port} ||= EnvGwTls::client($self->{t}, $port)
        if $self->{tls};
    return $self->{conn}{$port} ||= Redis->new(server => "127.0.0.1:$port",
                                               reconnect => 1,
                                               every => 100_000);
}

# every live node says cluster_state:ok and serves all slots, and each
# primary has $replicas replicas (default: as created)
sub wait_ok {
    my ($self, $timeout, $replicas) = @_;
    $replicas //= $self->{replicas};
    my $end = time + ($timeout || 10);
    NODE: while (time < $end) {
        for my $port (@{ $self->{ports} }) {
            next if $self->{down}{$port};
            # (one string from Redis, its lines from EnvGwTls::Cli)
            my $info = join "\n",
                eval { $self->node($port)->cluster('info') };
            if ($info !~ /cluster_state:ok/
                || $info !~ /cluster_slots_ok:16384/)
            {
                sleep 0.1;
                next NODE;
            }
        }
        # and every range has its replicas (they join after the create)
        $self->refresh;
        my %rep;
        for my $e (@{ $self->{map} }) {
            $rep{ $e->[0] } = @$e - 1 if $e;
        }
        if (grep { $_ < $replicas } values %rep) {
            sleep 0.1;
            next NODE;
        }
        return 1;
    }
    return 0;
}

# the slot map, as a node sees it: slot -> [primary port, replica ports]
sub refresh {
    my ($self) = @_;
    return $self->refresh_nodes if $self->{tls};
    for my $port (@{ $self->{ports} }) {
        next if $self->{down}{$port};
        my $slots = eval { [ $self->node($port)->cluster('slots') ] }
            or next;
        my @map;
        for my $r (@$slots) {
            my ($from, $to, $p, @rep) = @$r;
            $map[$_] = [ $p->[1], map { $_->[1] } @rep ] for $from .. $to;
        }
        $self->{map} = \@map;
        return;
    }
    die "no cluster node answers CLUSTER SLOTS";
}

# the same map from CLUSTER NODES (its lines, as redis-cli prints them):
# "id ip:port@bus flags primary-id ... slot-range ..."
sub refresh_nodes {
    my ($self) = @_;
    for my $port (@{ $self->{ports} }) {
        next if $self->{down}{$port};
        my @lines = grep { /\S/ } eval { $self->node($port)->cluster('nodes') };
        next unless @lines;
        my (%port_of, %replicas, @ranges);
        for my $l (@lines) {
            my ($id, $addr, $flags, $master, @rest) = split ' ', $l;
            next unless defined $addr && $addr =~ /:(\d+)@/;
            my $p = $1;
            next if $flags =~ /fail|noaddr|handshake/;
            $port_of{$id} = $p;
            if ($flags =~ /slave/) {
                push @{ $replicas{$master} }, $p;
                next;
            }
            for my $s (@rest[4 .. $#rest]) {
                push @ranges, [ $id, $1, $2 // $1 ]
                    if $s =~ /^(\d+)(?:-(\d+))?$/;
            }
        }
        my @map;
        for my $r (@ranges) {
            my ($id, $from, $to) = @$r;
            $map[$_] = [ $port_of{$id}, sort { $a <=> $b }
                                        @{ $replicas{$id} || [] } ]
                for $from .. $to;
        }
        $self->{map} = \@map;
        return;
    }
    die "no cluster node answers CLUSTER NODES";
}

sub owner {
    my ($self, $key) = @_;
    $self->refresh unless $self->{map};
    return $self->{map}[keyslot($key)][0];
}

sub replica_of {
    my ($self, $port) = @_;
    $self->refresh unless $self->{map};
    for my $e (@{ $self->{map} }) {
        return $e->[1] if $e && $e->[0] == $port;
    }
    return undef;
}

sub primary_ports {
    my ($self) = @_;
    $self->refresh;
    my %p = map { $_->[0] => 1 } grep { $_ } @{ $self->{map} };
    return sort { $a <=> $b } keys %p;
}

# stop one node by pid (SIGKILL: a crash)
sub kill_node {
    my ($self, $port) = @_;
    $self->{t}->stop_pid("cluster-$port", 'KILL');
    $self->{down}{$port} = 1;
    delete $self->{conn}{$port};
}

# the node's command for a key, MOVED and ASK followed
sub command {
    my ($self, $cmd, $key, @args) = @_;
    my $port = $self->owner($key);
    my $asking = 0;
    for (1 .. 5) {
        my $r = $self->node($port);
        $r->asking if $asking;
        my @res = eval { $r->$cmd($key, @args) };
        return wantarray ? @res : $res[0] unless $@;
        if ($@ =~ /\b(MOVED|ASK) \d+ [\d.]+:(\d+)/) {
            ($asking, $port) = ($1 eq 'ASK', $2);
            $self->refresh if $1 eq 'MOVED';
            next;
        }
        die $@;
    }
    die "$cmd $key: too many redirects";
}

sub client { EnvGwRedisCluster::Client->new($_[0]) }

# the node's id (CLUSTER MYID)
sub id_of { $_[0]->node($_[1])->cluster('myid') }

# Move one slot from its primary to the primary at $to, as redis-cli
# --cluster reshard does: IMPORTING on the target, MIGRATING on the source,
# MIGRATE of its keys, then the slot given to the target everywhere.
# $pause->() runs between the MIGRATE and the SETSLOT NODE (the ASK window).
# Returns the number of keys moved.
sub migrate_slot {
    my ($self, $slot, $to, $pause) = @_;
    $self->refresh;
    my $from = $self->{map}[$slot][0];
    die "slot $slot is on $to already" if $from == $to;
    my ($src, $dst) = ($self->node($from), $self->node($to));
    my ($src_id, $dst_id) = ($self->id_of($from), $self->id_of($to));
    $dst->cluster('setslot', $slot, 'importing', $src_id);
    $src->cluster('setslot', $slot, 'migrating', $dst_id);
    my $moved = 0;
    while (1) {
        my @keys = $src->cluster('getkeysinslot', $slot, 100);
        last unless @keys;
        $src->migrate('127.0.0.1', $to, '', 0, 5000, 'KEYS', @keys);
        $moved += @keys;
    }
    $pause->() if $pause;
    $dst->cluster('setslot', $slot, 'node', $dst_id);
    $src->cluster('setslot', $slot, 'node', $dst_id);
    for my $port ($self->primary_ports) {
        next if $port == $from || $port == $to;
        $self->node($port)->cluster('setslot', $slot, 'node', $dst_id);
    }
    $self->refresh;
    return $moved;
}

# the calls of a command on a node (INFO commandstats)
sub calls {
    my ($self, $port, $cmd) = @_;
    my $s = $self->node($port)->info('commandstats');
    return ref $s && $s->{"cmdstat_$cmd"}
           && $s->{"cmdstat_$cmd"} =~ /calls=(\d+)/ ? $1 : 0;
}

# A load in a child process: rounds over @cases ([name, path, token,
# expected status]) until stop_load; each answer is counted as expected,
# failed (another status) or, when a refusal was expected, a forbidden
# pass (a 200).  stop_load returns { requests, failed, forbidden,
# statuses => { status => n } }.
sub start_load {
    my ($self, $t, @cases) = @_;
    my $dir = $t->dir;
    my $n = ++$self->{loads};
    my $stop = "$dir/load$n.stop";
    my $out = "$dir/load$n.out";
    my $pid = fork();
    die "fork: $!" unless defined $pid;
    if ($pid == 0) {
        my %r = (requests => 0, failed => 0, forbidden => 0);
        my %st;
        until (-e $stop) {
            for my $case (@cases) {
                my ($name, $path, $token, $want) = @$case;
                my $got = $t->get($path, $token)->{status} // 0;
                $r{requests}++;
                $st{$got}++;
                next if $got == $want;
                $r{failed}++;
                $r{forbidden}++ if $got == 200;
                open my $fh, '>>', "$out.failures";
                printf $fh "%.3f %s %s (expected %s)\n", time, $name, $got,
                       $want;
                close $fh;
            }
        }
        open my $fh, '>', $out or POSIX::_exit(1);
        print $fh join(' ', map { "$_=$r{$_}" } sort keys %r), "\n";
        print $fh join(' ', map { "$_=$st{$_}" } sort keys %st), "\n";
        close $fh;
        POSIX::_exit(0);
    }
    $t->{pids}{"load$n"} = $pid;
    return { n => $n, pid => $pid, stop => $stop, out => $out };
}

sub stop_load {
    my ($self, $t, $load) = @_;
    open my $fh, '>', $load->{stop} or die;
    close $fh;
    waitpid($load->{pid}, 0);
    delete $t->{pids}{"load$load->{n}"};
    open $fh, '<', $load->{out} or die "the load wrote no result";
    my ($sum, $st) = <$fh>;
    close $fh;
    my %r = map { split /=/ } split ' ', $sum;
    $r{statuses} = { map { split /=/ } split ' ', $st // '' };
    my @f = -e "$load->{out}.failures"
            ? split(/\n/, $t->slurp("load$load->{n}.out.failures")) : ();
    $r{failures} = join "\n", @f > 20 ? (@f[0 .. 19], '...') : @f;
    return \%r;
}


# What EnvGwTest's helpers call on $t->redis, each to the key's node.
package EnvGwRedisCluster::Client;

sub new { bless { c => $_[1] }, $_[0] }

our $AUTOLOAD;

sub AUTOLOAD {
    my ($self, @args) = @_;
    (my $cmd = $AUTOLOAD) =~ s/.*:://;
    return if $cmd eq 'DESTROY';
    my $c = $self->{c};
    if ($cmd eq 'publish') {
        # any node: the cluster's bus carries it to every subscriber
        my ($port) = $c->primary_ports;
        return $c->node($port)->publish(@args);
    }
    return $c->command($cmd, @args);
}

1;
