# SPDX-License-Identifier: BSD-2-Clause
package EnvGwCluster;

# Building blocks for multi-node tests: several redis-server
# processes (a primary, replicas, optional sentinels), several gateway nginx
# instances made from cluster/gateway.conf.in, and a load balancer from
# cluster/lb.conf.in, all on free loopback ports.  Processes are spawned
# through EnvGwTest (one temp dir, stopped by pid, never by name).

use strict;
use warnings;

use EnvGwTest;
use Test::More;
use Time::HiRes qw(sleep time);
use POSIX qw(WNOHANG);

our $TOP = $EnvGwTest::TOP;

sub new {
    my ($class, %opt) = @_;
    my $t = EnvGwTest->new;
    my $self = bless { t => $t, dir => $t->dir, nodes => {},
                       workers => 2, %opt }, $class;
    $self->{envgw} = $ENV{ENVGW_BIN} || "$TOP/cli/envgw";
    return $self;
}

sub t { $_[0]{t} }
sub dir { $_[0]{dir} }
sub port { $_[0]{nodes}{$_[1]}{port} }

sub node_dir {
    my ($self, $name) = @_;
    my $d = "$self->{dir}/$name";
    mkdir $d;
    return $d;
}

# --- redis -----------------------------------------------------------------

# start_redis(NAME, replicaof => PORT, port => PORT, args => [...])
sub start_redis {
    my ($self, $name, %opt) = @_;
    my $port = $opt{port} || EnvGwTest::free_port();
    my $d = $self->node_dir($name);
    my @args = ('redis-server', '--port', $port, '--bind', '127.0.0.1',
                '--save', '', '--appendonly', 'no', '--daemonize', 'no',
                '--dir', $d, '--logfile', "$d/redis.log");
    push @args, '--replicaof', '127.0.0.1', $opt{replicaof},
                '--replica-read-only', 'yes' if $opt{replicaof};
    push @args, @{ $opt{args} || [] };
    $self->{t}->spawn("redis_$name", @args);
    EnvGwTest::wait_port($port) or die "redis $name did not start on $port";
    $self->{nodes}{$name} = { kind => 'redis', port => $port, %opt };
    return $port;
}

# a sentinel monitoring MASTER_PORT under the name $opt{master} || 'envgw'
sub start_sentinel {
    my ($self, $name, $master_port, %opt) = @_;
    my $port = EnvGwTest::free_port();
    my $d = $self->node_dir($name);
    my $m = $opt{master} || 'envgw';
    open my $fh, '>', "$d/sentinel.conf" or die;
    print $fh <<"S";
port $port
bind 127.0.0.1
dir $d
logfile $d/sentinel.log
sentinel resolve-hostnames no
sentinel monitor $m 127.0.0.1 $master_port 2
sentinel down-after-milliseconds $m 1000
sentinel failover-timeout $m 5000
sentinel parallel-syncs $m 1
S
    close $fh;
    $self->{t}->spawn("redis_$name", 'redis-server', "$d/sentinel.conf",
                      '--sentinel', '--daemonize', 'no');
    EnvGwTest::wait_port($port) or die "sentinel $name did not start";
    $self->{nodes}{$name} = { kind => 'sentinel', port => $port };
    return $port;
}

sub redis {
    my ($self, $name) = @_;
    require Redis;
    return Redis->new(server => '127.0.0.1:' . $self->port($name),
                      reconnect => 0, cnx_timeout => 2, read_timeout => 5);
}

sub stop {
    my ($self, $name, $sig) = @_;
    my $n = $self->{nodes}{$name} or return;
    my $proc = $n->{kind} eq 'gateway' || $n->{kind} eq 'lb'
             ? "nginx_$name" : "redis_$name";
    $self->{t}->stop_pid($proc, $sig || ($proc =~ /^nginx/ ? 'QUIT' : 'TERM'));
    $n->{stopped} = 1;
}

# wait until every named replica reports master_link_status:up
sub wait_replicas {
    my ($self, @names) = @_;
    my $end = time + 15;
    for my $r (@names) {
        while (1) {
            my $info = eval { $self->redis($r)->info('replication') } || {};
            last if ($info->{master_link_status} // '') eq 'up';
            die "replica $r never synced" if time > $end;
            sleep 0.05;
        }
    }
}

# WAIT on the primary: the writes so far reached N replicas (or died)
sub wait_sync {
    my ($self, $primary, $n) = @_;
    my $got = eval { $self->redis($primary)->wait($n, 2000) } // 0;
    return $got >= $n;
}

# --- envgw -----------------------------------------------------------------

# envgw against $self->{primary} (a node name); returns stdout, dies on error
sub envgw {
    my ($self, @args) = @_;
    my $addr = '127.0.0.1:' . $self->port($self->{primary});
    my $out = '';
    open my $fh, '-|', $self->{envgw}, '--redis', $addr, @args
        or die "envgw: $!";
    { local $/; $out = <$fh> // ''; }
    close $fh;
    die "envgw @args: exit " . ($? >> 8) . "\n$out" if $?;
    return $out;
}

# --- nginx -----------------------------------------------------------------

sub fill {
    my ($self, $file, %v) = @_;
    open my $fh, '<', "$TOP/cluster/$file" or die "$file: $!";
    local $/;
    my $s = <$fh>;
    close $fh;
    $s =~ s/\@(\w+)\@/exists $v{$1} ? $v{$1} : die "no value for \@$1\@ in $file"/ge;
    return $s;
}

sub user_line { $> == 0 ? 'user root root;' : '' }

# redis_lines([port, ...]) -> "env_gateway_redis 127.0.0.1:P ...;" lines
sub redis_lines {
    my ($self, @ports) = @_;
    return join '', map {
        "    env_gateway_redis 127.0.0.1:$_ connect_timeout=200ms read_timeout=500ms;\n"
    } @ports;
}

sub gateway_conf {
    my ($self, $name, %opt) = @_;
    my $d = $self->node_dir($name);
    my $port = $opt{port} || EnvGwTest::free_port();
    my $backend = $opt{backend} || EnvGwTest::free_port();
    my $conf = $self->fill('gateway.conf.in',
        MODULE => $self->{t}{module}, USER => user_line(), DIR => $d,
        WORKERS => $opt{workers} || $self->{workers}, PORT => $port,
        BACKEND => $backend, NAME => $name,
        REDIS => $opt{redis_conf} // $self->redis_lines(@{ $opt{redis} }));
    open my $fh, '>', "$d/nginx.conf" or die;
    print $fh $conf;
    close $fh;
    return ("$d/nginx.conf", $port, $backend);
}

# nginx -t on a gateway configuration; returns (exit code, output)
sub gateway_conf_test {
    my ($self, $name, %opt) = @_;
    my ($conf) = $self->gateway_conf($name, %opt);
    my $d = $self->node_dir($name);
    my $out = `$self->{t}{nginx} -t -p $d/ -c $conf -e $d/t.log 2>&1`;
    return ($? >> 8, $out);
}

# subscribers of the invalidation channel over the running Redis servers
sub subscribers {
    my ($self) = @_;
    my $n = 0;
    for my $name (keys %{ $self->{nodes} }) {
        my $node = $self->{nodes}{$name};
        next if $node->{kind} ne 'redis' || $node->{stopped};
        my @r = eval { $self->redis($name)->pubsub('numsub',
                                                   'envgw:invalidate') };
        $n += $r[1] // 0;
    }
    return $n;
}

# start_gateway(NAME, redis => [PORT, ...]) or redis_conf => "lines"
sub start_gateway {
    my ($self, $name, %opt) = @_;
    my ($conf, $port, $backend) = $self->gateway_conf($name, %opt);
    my $d = $self->node_dir($name);
    my $subscribers = $self->subscribers;
    $self->{t}->spawn("nginx_$name", $self->{t}{nginx}, '-p', "$d/",
                      '-c', $conf, '-e', "$d/error.log",
                      '-g', 'daemon off;');
    EnvGwTest::wait_port($port) && EnvGwTest::wait_port($backend)
        or die "gateway $name did not start:\n"
               . slurp("$d/error.log") . slurp("$self->{dir}/nginx_$name.out");
    $self->{nodes}{$name} = { kind => 'gateway', port => $port,
                              backend => $backend, dir => $d, %opt };
    # the workers running and subscribed (an invalidation published before
    # reaches no one): one more subscriber a worker, at most 10 s
    my $want = $subscribers + ($opt{workers} || $self->{workers});
    my $end = time + 10;
    sleep 0.02 while $self->subscribers < $want && time < $end;
    diag("gateway $name: fewer than $want subscribers after 10 s")
        if $self->subscribers < $want;
    return $port;
}

sub start_lb {
    my ($self, $name, @gateways) = @_;
    my $d = $self->node_dir($name);
    my $port = EnvGwTest::free_port();
    my $conf = $self->fill('lb.conf.in', USER => user_line(), DIR => $d,
        PORT => $port,
        GATEWAYS => join '', map { "        server 127.0.0.1:"
                                   . $self->port($_) . ";\n" } @gateways);
    open my $fh, '>', "$d/nginx.conf" or die;
    print $fh $conf;
    close $fh;
    $self->{t}->spawn("nginx_$name", $self->{t}{nginx}, '-p', "$d/",
                      '-c', "$d/nginx.conf", '-e', "$d/error.log",
                      '-g', 'daemon off;');
    EnvGwTest::wait_port($port) or die "lb did not start:\n"
        . slurp("$d/error.log");
    $self->{nodes}{$name} = { kind => 'lb', port => $port, dir => $d };
    return $port;
}

sub slurp {
    my ($file) = @_;
    open my $fh, '<', $file or return '';
    local $/;
    return scalar <$fh>;
}

# --- http ------------------------------------------------------------------

# get(NODE, PATH, TOKEN, headers...) -> response hashref (EnvGwTest::http)
sub get {
    my ($self, $node, $path, $token, @h) = @_;
    return $self->{t}->http('GET', $path,
        [ (defined $token ? (Authorization => "Bearer $token") : ()), @h ],
        undef, port => $self->port($node), timeout => 5);
}

sub metrics {
    my ($self, $node) = @_;
    my $r = $self->get($node, '/env_gateway/metrics');
    my %m;
    for (split /\n/, $r->{body}) {
        next if /^#/;
        my ($k, $v) = /^(\S+)\s+(\S+)$/ or next;
        $m{$k} = $v;
    }
    return \%m;
}

# backend.log of a gateway node, parsed: [{msec, method, uri, env, token,
# account, arg_account, auth}]
sub backend_lines {
    my ($self, $name) = @_;
    my @out;
    for (split /\n/, slurp("$self->{nodes}{$name}{dir}/backend.log")) {
        my ($msec, $method, $uri, $rest) = split / /, $_, 4;
        my %f = (msec => $msec, method => $method, uri => $uri, line => $_);
        $f{$1} = $2 while $rest =~ /(\w+)=(\S*)/g;
        $f{$_} = '' for grep { ($f{$_} // '-') eq '-' }
                        qw(env token account arg_account auth);
        push @out, \%f;
    }
    return @out;
}

# no [alert], [emerg], [crit] or crash in any nginx error.log
sub check_logs {
    my ($self) = @_;
    for my $name (sort keys %{ $self->{nodes} }) {
        my $n = $self->{nodes}{$name};
        next unless $n->{kind} eq 'gateway' || $n->{kind} eq 'lb';
        my @bad = grep { /\[(alert|emerg|crit)\]|exited on signal|AddressSanitizer|runtime error:/ }
                  split /\n/, slurp("$n->{dir}/error.log");
        ok(!@bad, "$name: error.log has no alert, emerg, crit or crash")
            or diag(join "\n", @bad[0 .. ($#bad > 10 ? 10 : $#bad)]);
    }
}

sub stop_all {
    my ($self) = @_;
    return if $self->{stopped}++;
    for my $name (keys %{ $self->{nodes} }) {
        next unless $self->{nodes}{$name}{kind} =~ /^(gateway|lb)$/;
        $self->stop($name);
    }
    for my $name (keys %{ $self->{nodes} }) {
        $self->stop($name);
    }
    $self->check_logs;
}

sub percentile {
    my ($p, @v) = @_;
    @v = sort { $a <=> $b } @v;
    return undef unless @v;
    my $i = int($p / 100 * @v + 0.999999) - 1;
    $i = 0 if $i < 0;
    $i = $#v if $i > $#v;
    return $v[$i];
}

1;
