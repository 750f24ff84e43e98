# SPDX-License-Identifier: BSD-2-Clause
package EnvGwTls;

# TLS Redis for the tests: certificates made with the openssl CLI in the
# test's temp dir (a throwaway CA, a server certificate for 127.0.0.1,
# localhost and redis.test, a client certificate, and a second, unrelated
# CA), a TLS-only redis-server (--port 0 --tls-port) started and stopped by
# pid through the EnvGwTest harness, and a redis-cli client over TLS that
# the harness's seeding helpers (put, token, numsub) use in place of the
# plain-TCP Redis module.

use strict;
use warnings;

use Test::More;

use EnvGwTest;

# make_certs($t): writes ca.crt, server.crt/key, client.crt/key,
# other-ca.crt into $t->dir; returns a hash of their paths
sub make_certs {
    my ($t) = @_;
    my $dir = $t->dir;
    return $t->{tls_certs} if $t->{tls_certs};

    my @key = ('-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1',
               '-nodes');
    my $run = sub {
        my $out = `@_ 2>&1`;
        die "openssl failed: @_\n$out" if $?;
    };
    for my $ca (qw(ca other-ca)) {
        $run->('openssl', 'req', '-x509', '-new', @key, '-days', '2',
               '-keyout', "$dir/$ca.key", '-out', "$dir/$ca.crt",
               '-subj', "'/CN=envgw test $ca'");
    }
    my %ext = (
        server => "subjectAltName=DNS:localhost,DNS:redis.test,"
                . "IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        client => "extendedKeyUsage=clientAuth\n",
    );
    for my $who (qw(server client)) {
        open my $fh, '>', "$dir/$who.ext" or die;
        print $fh $ext{$who};
        close $fh;
        $run->('openssl', 'req', '-new', @key, '-keyout', "$dir/$who.key",
               '-out', "$dir/$who.csr", '-subj', "'/CN=envgw test $who'");
        $run->('openssl', 'x509', '-req', '-in', "$dir/$who.csr",
               '-CA', "$dir/ca.crt", '-CAkey', "$dir/ca.key",
               '-CAcreateserial', '-days', '2', '-extfile', "$dir/$who.ext",
               '-out', "$dir/$who.crt");
    }
    chmod 0600, glob("$dir/*.key");
    return $t->{tls_certs} = {
        ca => "$dir/ca.crt", other_ca => "$dir/other-ca.crt",
        cert => "$dir/server.crt", key => "$dir/server.key",
        client_cert => "$dir/client.crt", client_key => "$dir/client.key",
    };
}

# the redis-server arguments of a TLS-only server on $port
sub server_args {
    my ($t, $port, %opt) = @_;
    my $c = make_certs($t);
    return ('--port', '0', '--tls-port', $port, '--bind', '127.0.0.1',
            '--tls-cert-file', $c->{cert}, '--tls-key-file', $c->{key},
            '--tls-ca-cert-file', $c->{ca},
            '--tls-auth-clients', $opt{auth_clients} ? 'yes' : 'no',
            '--save', '', '--appendonly', 'no', '--daemonize', 'no',
            '--dir', $t->dir, @{ $opt{args} || [] });
}

# start_redis($t, name => 'redis', auth_clients => 0|1, args => [...]):
# a TLS-only redis-server on a free port.  The one named "redis" (the
# default) becomes the harness's Redis: %%REDIS%% is its port and
# $t->redis a client() of it.  Returns the port.
sub start_redis {
    my ($t, %opt) = @_;
    my $name = $opt{name} || 'redis';
    my $port = $name eq 'redis' ? $t->redis_port : EnvGwTest::free_port();
    $t->spawn($name, 'redis-server', server_args($t, $port, %opt));
    EnvGwTest::wait_port($port) or die "redis ($name) did not start on $port";
    my $cli = client($t, $port, %opt);
    # the port accepts TCP at once; wait until it answers over TLS
    for (1 .. 200) {
        last if ($cli->ping // '') eq 'PONG';
        select undef, undef, undef, 0.02;
    }
    $t->{redis} = $cli if $name eq 'redis';
    return $port;
}

# client($t, $port, user => .., pass => .., cluster => 1): runs redis-cli
# over TLS, with the client certificate (with cluster, redis-cli -c: MOVED
# and ASK followed)
sub client {
    my ($t, $port, %opt) = @_;
    return bless { t => $t, port => $port, user => $opt{user},
                   pass => $opt{pass}, cluster => $opt{cluster} },
                 'EnvGwTls::Cli';
}

package EnvGwTls::Cli;

use POSIX ();

our $AUTOLOAD;

# $cli->COMMAND(@args): the reply's lines (list context) or its first line;
# "set" and friends, as the harness calls them on its Redis client
sub AUTOLOAD {
    my $self = shift;
    (my $cmd = $AUTOLOAD) =~ s/.*:://;
    return if $cmd eq 'DESTROY';
    return $self->command($cmd, @_);
}

sub command {
    my ($self, @args) = @_;
    my $c = EnvGwTls::make_certs($self->{t});
    my @cli = ('redis-cli', '--tls', '--cacert', $c->{ca},
               '--cert', $c->{client_cert}, '--key', $c->{client_key},
               '-h', '127.0.0.1', '-p', $self->{port}, '--raw');
    push @cli, '--user', $self->{user} if defined $self->{user};
    push @cli, '-c' if $self->{cluster};
    pipe my $r, my $w or die "pipe: $!";
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        close $r;
        $ENV{REDISCLI_AUTH} = $self->{pass} if defined $self->{pass};
        open STDIN, '<', '/dev/null';
        open STDOUT, '>&', $w;
        open STDERR, '>', '/dev/null';
        exec @cli, @args or POSIX::_exit(127);
    }
    close $w;
    my @lines = map { chomp; $_ } <$r>;
    close $r;
    waitpid $pid, 0;
    return wantarray ? @lines : $lines[0];
}

1;
