# SPDX-License-Identifier: BSD-2-Clause
package FakeRedis;

# A small RESP server for the replies a real Redis cannot send, so that the
# gateway's defences against them can be tested through real nginx.  It
# runs in a forked child whose pid the EnvGwTest harness tracks and stops.
#
#   my $f = FakeRedis->new($t, keys => { 'envgw:token:<hash>' => ACTION },
#                          default => ACTION);
#   $f->port; $f->count('GET', $key); $f->stop;
#
# A GET is answered by the ACTION of its key (keys not listed: the default,
# else nil):
#   { value => STRING }            the string, at once
#   { value => S, drip_ms => N }   the reply one byte every N ms
#   { nil => 1, drip_ms => N }     "$-1\r\n", one byte every N ms
#   { raw => BYTES }               these bytes, then nothing more on that
#                                  connection (e.g. "*2147483647\r\n")
#   { huge => N }                  "$N\r\n" and N bytes, as fast as the
#                                  socket takes them
#   { truncate => N, value => S }  the first N bytes of the reply, then close
#   { never => 1 }                 no reply, nor any other on that connection
#   { close_first => 1, value => S }  the first GET of the key closes the
#                                  connection unanswered; later ones get S
# SUBSCRIBE, PING, AUTH and SELECT are answered as Redis does.  With
# error_all => TEXT every command, whatever it is, is answered "-TEXT"
# (a Redis still loading its data set answers so).  Every
# command is appended to <dir>/fakeredis-<port>.log ("GET <key>").

use strict;
use warnings;

use Errno qw(EAGAIN EWOULDBLOCK EINTR);
use IO::Select;
use IO::Socket::INET;
use POSIX ();
use Time::HiRes qw(time sleep);

sub new {
    my ($class, $t, %opt) = @_;
    my $self = bless { t => $t, keys => $opt{keys} || {},
                       default => $opt{default},
                       error_all => $opt{error_all} }, $class;
    my $port = $self->{port} = $opt{port} || EnvGwTest::free_port();
    $self->{log} = $t->dir . "/fakeredis-$port.log";
    $self->{name} = "fakeredis-$port";

    my $ls = IO::Socket::INET->new(Listen => 128, LocalAddr => '127.0.0.1',
                                   LocalPort => $port, Proto => 'tcp',
                                   ReuseAddr => 1)
        or die "fake redis: listen on $port: $!";

    my $pid = fork();
    die "fork: $!" unless defined $pid;
    if ($pid == 0) {
        eval { $self->serve($ls) };
        POSIX::_exit(0);
    }
    close $ls;
    $t->{pids}{ $self->{name} } = $pid;
    return $self;
}

sub port { $_[0]{port} }

sub stop {
    my ($self) = @_;
    $self->{t}->stop_pid($self->{name});
}

# how many times a command (and key) was received
sub count {
    my ($self, $cmd, $key) = @_;
    open my $fh, '<', $self->{log} or return 0;
    my $n = 0;
    while (<$fh>) {
        chomp;
        my ($c, $k) = split / /, $_, 2;
        $n++ if uc $c eq uc $cmd && (!defined $key || ($k // '') eq $key);
    }
    return $n;
}

# --- the child ------------------------------------------------------------

sub bulk { my ($s) = @_; return '$' . length($s) . "\r\n$s\r\n" }

sub serve {
    my ($self, $ls) = @_;
    $SIG{PIPE} = 'IGNORE';
    $SIG{TERM} = sub { POSIX::_exit(0) };
    $ls->blocking(0);

    open my $log, '>>', $self->{log} or die;
    $log->autoflush(1);
    $self->{logfh} = $log;
    $self->{asked} = {};

    my %conns;    # fileno -> connection

    for (;;) {
        my $now = time;
        my $rsel = IO::Select->new($ls, map { $_->{sock} } values %conns);
        my $wsel = IO::Select->new();
        my $wake = 1;

        for my $c (values %conns) {
            my $item = $c->{out}[0] or next;
            if ($item->{drip}) {
                my $d = $item->{next} - $now;
                $wake = $d if $d < $wake;
                $wake = 0 if $wake < 0;
            } else {
                $wsel->add($c->{sock});
            }
        }

        my ($r, $w) = IO::Select->select($rsel, $wsel, undef, $wake);

        for my $s (@{ $r || [] }) {
            if ($s == $ls) {
                while (my $ns = $ls->accept) {
                    $ns->blocking(0);
                    $conns{ fileno $ns } = { sock => $ns, in => '',
                                             out => [] };
                }
                next;
            }
            my $c = $conns{ fileno $s } or next;
            my $n = sysread($s, my $buf, 65536);
            if (!defined $n) {
                next if $! == EAGAIN || $! == EWOULDBLOCK || $! == EINTR;
                $self->close_conn(\%conns, $c);
                next;
            }
            if ($n == 0) {
                $self->close_conn(\%conns, $c);
                next;
            }
            $c->{in} .= $buf;
            $self->commands(\%conns, $c);
        }

        for my $c (values %conns) {
            $self->write_out(\%conns, $c);
        }
    }
}

sub close_conn {
    my ($self, $conns, $c) = @_;
    delete $conns->{ fileno $c->{sock} } if defined fileno $c->{sock};
    close $c->{sock};
    $c->{closed} = 1;
}

# parse complete "*N $len arg ..." commands off the input
sub commands {
    my ($self, $conns, $c) = @_;
    for (;;) {
        return if $c->{closed};
        my $in = $c->{in};
        return unless $in =~ /^\*(\d+)\r\n/;
        my $pos = length($&);
        my @args;
        for (1 .. $1) {
            my $hdr = substr($in, $pos);
            return unless $hdr =~ /^\$(\d+)\r\n/;
            my $len = $1;
            $pos += length($&);
            return if length($in) < $pos + $len + 2;
            push @args, substr($in, $pos, $len);
            $pos += $len + 2;
        }
        substr($c->{in}, 0, $pos) = '';
        print { $self->{logfh} } join(' ', @args), "\n";
        $self->answer($conns, $c, @args);
    }
}

sub queue {
    my ($c, %item) = @_;
    return if $c->{stuck};
    $item{data} //= '';
    $item{pos} = 0;
    $item{next} = time;
    push @{ $c->{out} }, \%item;
}

sub answer {
    my ($self, $conns, $c, $cmd, @args) = @_;
    $cmd = uc($cmd // '');

    if (defined $self->{error_all}) {
        queue($c, data => "-$self->{error_all}\r\n");
        return;
    }

    if ($cmd eq 'GET') {
        my $key = $args[0] // '';
        my $a = $self->{keys}{$key} || $self->{default} || { nil => 1 };
        my $asked = ++$self->{asked}{$key};
        my $reply = defined $a->{value} ? bulk($a->{value}) : "\$-1\r\n";

        if ($a->{close_first} && $asked == 1) {
            $self->close_conn($conns, $c);
            return;
        }
        if ($a->{never}) {
            $c->{stuck} = 1;
            return;
        }
        if (defined $a->{raw}) {
            queue($c, data => $a->{raw});
            $c->{stuck} = 1;
            return;
        }
        if ($a->{huge}) {
            queue($c, data => '$' . $a->{huge} . "\r\n",
                  huge => $a->{huge});
            $c->{stuck} = 1;
            return;
        }
        if (defined $a->{truncate}) {
            queue($c, data => substr($reply, 0, $a->{truncate}), close => 1);
            $c->{stuck} = 1;
            return;
        }
        queue($c, data => $reply, drip => $a->{drip_ms});
        return;
    }

    if ($cmd eq 'SUBSCRIBE') {
        my $ch = $args[0] // '';
        queue($c, data => "*3\r\n" . bulk('subscribe') . bulk($ch) . ":1\r\n");
        return;
    }
    if ($cmd eq 'PING') {
        queue($c, data => "+PONG\r\n");
        return;
    }
    if ($cmd eq 'AUTH' || $cmd eq 'SELECT') {
        queue($c, data => "+OK\r\n");
        return;
    }
    queue($c, data => "-ERR unknown command '$cmd'\r\n");
}

sub write_out {
    my ($self, $conns, $c) = @_;
    while (!$c->{closed} && (my $item = $c->{out}[0])) {
        my $now = time;
        my $chunk;

        if ($item->{pos} < length $item->{data}) {
            if ($item->{drip}) {
                return if $now < $item->{next};
                $chunk = substr($item->{data}, $item->{pos}, 1);
            } else {
                $chunk = substr($item->{data}, $item->{pos});
            }
        } elsif ($item->{huge}) {
            my $n = $item->{huge} < 65536 ? $item->{huge} : 65536;
            $chunk = 'x' x $n;
        }

        if (defined $chunk && length $chunk) {
            my $n = syswrite($c->{sock}, $chunk);
            if (!defined $n) {
                return if $! == EAGAIN || $! == EWOULDBLOCK || $! == EINTR;
                $self->close_conn($conns, $c);
                return;
            }
            if ($item->{pos} < length $item->{data}) {
                $item->{pos} += $n;
                $item->{next} = $now + $item->{drip} / 1000 if $item->{drip};
            } else {
                $item->{huge} -= $n;
                if ($item->{huge} == 0) {
                    $item->{data} .= "\r\n";
                }
            }
            return if $item->{drip} || $n < length $chunk;
            next;
        }

        # this item is done
        shift @{ $c->{out} };
        if ($item->{close}) {
            $self->close_conn($conns, $c);
            return;
        }
    }
}

1;
