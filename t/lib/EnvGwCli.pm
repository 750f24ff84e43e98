# SPDX-License-Identifier: BSD-2-Clause
package EnvGwCli;

# envgw, the admin tool, driven against the redis-server of an EnvGwTest:
# runs the tool (exit status, stdout, stderr), records the keys it
# publishes on <prefix>invalidate with a redis-cli subscriber the harness
# started (and stops, by pid), dumps Redis to show that nothing changed,
# and reads the audit stream.

use strict;
use warnings;

use JSON::PP;
use POSIX ();
use Test::More;
use Time::HiRes qw(sleep);

use EnvGwTest;

# new($t): $t has started redis-server
sub new {
    my ($class, $t) = @_;
    my $bin = $ENV{ENVGW_BIN} || "$EnvGwTest::TOP/cli/envgw";
    return bless { t => $t, bin => $bin, runs => 0, mark => 0 }, $class;
}

sub bin { $_[0]{bin} }

# run(@args) or run({stdin => .., env => {..}}, @args) -> {rc, out, err}
sub run {
    my $self = shift;
    my $opt = ref $_[0] eq 'HASH' ? shift : {};
    my $dir = $self->{t}->dir;
    my $n = ++$self->{runs};
    my ($o, $e, $i) = map { "$dir/envgw$n.$_" } qw(out err in);
    open my $fh, '>', $i or die "$i: $!";
    print $fh $opt->{stdin} // '';
    close $fh;
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        $ENV{$_} = $opt->{env}{$_} for keys %{ $opt->{env} || {} };
        open STDIN, '<', $i;
        open STDOUT, '>', $o;
        open STDERR, '>', $e;
        { exec $self->{bin}, '--redis', "127.0.0.1:$self->{t}{redis_port}",
               @_; }
        POSIX::_exit(127);
    }
    waitpid $pid, 0;
    my %res = (rc => $? >> 8);
    for ([out => $o], [err => $e]) {
        open my $f, '<', $_->[1] or die;
        local $/;
        $res{ $_->[0] } = <$f> // '';
    }
    return \%res;
}

sub ok_run {
    my ($self, $name, @args) = @_;
    my $res = $self->run(@args);
    is($res->{rc}, 0, "$name: exit 0")
        or diag("stdout: $res->{out}\nstderr: $res->{err}");
    return $res;
}

# the decoded --json output of a command that must succeed
sub json {
    my ($self, @args) = @_;
    my $res = $self->ok_run("envgw @args", '--json', @args);
    return eval { JSON::PP->new->allow_nonref->decode($res->{out}) } // {};
}

# ---- the invalidation channel -----------------------------------------------

sub subscribe {
    my ($self) = @_;
    my $t = $self->{t};
    $t->spawn('subscriber', 'redis-cli', '-p', $t->{redis_port}, 'subscribe',
              'envgw:invalidate');
    for (1 .. 200) {
        my %n = $t->redis->pubsub('numsub', 'envgw:invalidate');
        return if ($n{'envgw:invalidate'} // 0) >= 1;
        sleep 0.02;
    }
    die 'the subscriber did not subscribe';
}

sub messages {
    my ($self) = @_;
    my @l = split /\n/, $self->{t}->slurp('subscriber.out');
    my @m;
    for (my $i = 0; $i + 2 < @l; $i++) {
        if ($l[$i] eq 'message' && $l[$i + 1] eq 'envgw:invalidate') {
            push @m, $l[$i + 2];
            $i += 2;
        }
    }
    return @m;
}

# publishes a marker and waits until the subscriber has it, and so all
# that was published before
sub sync_marker {
    my ($self) = @_;
    my $m = '__mark_' . ++$self->{mark};
    $self->{t}->redis->publish('envgw:invalidate', $m);
    for (1 .. 250) {
        return $m if grep { $_ eq $m } $self->messages;
        sleep 0.02;
    }
    die "the subscriber never saw $m";
}

# run_published(@args) -> ($res, [sorted keys published during the run])
sub run_published {
    my ($self, @args) = @_;
    my $before = $self->sync_marker;
    my $res = $self->run(@args);
    my $after = $self->sync_marker;
    my @m = $self->messages;
    my ($b) = grep { $m[$_] eq $before } 0 .. $#m;
    my ($a) = grep { $m[$_] eq $after } 0 .. $#m;
    return ($res, [ sort @m[$b + 1 .. $a - 1] ]);
}

# ---- Redis ------------------------------------------------------------------

# every key and its value, the audit stream by its length
sub dump_all {
    my ($self) = @_;
    my $r = $self->{t}->redis;
    my $d = '';
    for my $k (sort $r->keys('*')) {
        my $type = $r->type($k);
        my $v = $type eq 'string' ? $r->get($k)
              : $type eq 'set'    ? join(',', sort $r->smembers($k))
              : $type eq 'stream' ? 'entries=' . $r->xlen($k)
              : "<$type>";
        $d .= "$k = $v\n";
    }
    return $d;
}

sub jget {
    my ($self, $key) = @_;
    my $v = $self->{t}->redis->get($key);
    return defined $v ? JSON::PP->new->allow_nonref->decode($v) : undef;
}

# the entries of the audit stream, oldest first: {id, time, actor, ...}
sub audit {
    my ($self, $key) = @_;
    my @e;
    for my $entry ($self->{t}->redis->xrange($key // 'envgw:audit', '-', '+')) {
        my ($id, $fields) = @$entry;
        my %f = (@$fields, id => $id);
        $f{$_} = decode_json($f{$_}) for grep { exists $f{$_} }
                                           qw(keys environments);
        push @e, \%f;
    }
    return @e;
}

1;
