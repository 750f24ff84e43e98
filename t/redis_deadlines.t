#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# Replies a real Redis does not send, from t/lib/FakeRedis.pm, through real
# nginx: every lookup has its own deadline (read_timeout from when it was
# written, whatever trickles in), a stuck lookup never blocks the worker,
# a connection closed mid-reply is retried once, and a reply above
# max_record (a huge bulk, an absurd aggregate, an endless error line)
# closes the connection at once: 500 for a record above the limit, 503
# otherwise.  Bounds are generous: this is about correctness, not speed.

use strict;
use warnings;

use lib 't/lib';
use EnvGwTest qw(refused);
use FakeRedis;
use Test::More;
use Digest::SHA qw(sha256_hex);
use IO::Socket::INET;
use JSON::PP;
use Time::HiRes qw(time sleep);

my $CONNECT = 0.3;
my $READ = 1.5;
my $BOUND = $CONNECT + $READ + 0.7;    # one lookup, plus scheduling slack

sub raw_token { 'egw_dl_' . substr(sha256_hex(join '-', 'deadline', @_), 0, 32) }
sub key_of { 'envgw:token:' . sha256_hex($_[0]) }

sub token_json {
    my ($id) = @_;
    return JSON::PP->new->canonical(1)->encode({
        token_id => "tok_$id", team_id => 'team_a',
        environment_id => 'env_dev', environment => 'development',
        kind => 'data', expires_at => undef, revoked => JSON::PP::false });
}

my %tok = map { $_ => raw_token($_) }
    qw(good drip never truncated closed_once huge aggregate errline
       bigarray);
my @slow = map { raw_token("slow$_") } 1 .. 8;

my %keys = (
    key_of($tok{good})        => { value => token_json('good') },
    key_of($tok{drip})        => { value => token_json('drip'), drip_ms => 50 },
    key_of($tok{never})       => { never => 1 },
    key_of($tok{truncated})   => { value => token_json('trunc'),
                                   truncate => 20 },
    key_of($tok{closed_once}) => { value => token_json('closed'),
                                   close_first => 1 },
    key_of($tok{huge})        => { huge => 1_000_000_000 },
    key_of($tok{aggregate})   => { raw => "*2147483647\r\n" },
    key_of($tok{errline})     => { raw => '-ERR ' . ('e' x 1_500_000) },
    # an aggregate whose count fits but whose elements never end
    key_of($tok{bigarray})    => { raw => "*300000\r\n"
                                          . (":1\r\n" x 300_000) },
    (map { key_of($_) => { nil => 1, drip_ms => 200 } } @slow),
);

my $t = EnvGwTest->new;
my $fake = FakeRedis->new($t, keys => \%keys);
my $fp = $fake->port;

$t->start_nginx(<<"CONF");
    env_gateway_redis 127.0.0.1:$fp connect_timeout=300ms read_timeout=1500ms;
    server {
        listen 127.0.0.1:%%PORT%%;
        location = /healthz { return 200 "ok\\n"; }
        location / {
            env_gateway on;
            proxy_pass http://127.0.0.1:%%BACKEND%%;
        }
    }
CONF

sub send_request {
    my ($path, $token) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$t->{port}",
                                  Proto => 'tcp') or die "connect: $!";
    $s->autoflush(1);
    print $s "GET $path HTTP/1.1\r\nHost: localhost\r\n"
           . "Authorization: Bearer $token\r\nConnection: close\r\n\r\n";
    return $s;
}

sub read_response { return EnvGwTest::read_response(@_) }

sub timed_get {
    my ($token) = @_;
    my $t0 = time;
    my $r = $t->get('/x', $token);
    return ($r, time - $t0);
}

# the lookup connection is back (it may be reconnecting after a drop)
sub recovered {
    my ($name) = @_;
    my $end = time + 10;
    my $st = 0;
    while (time < $end) {
        $st = $t->get('/x', $tok{good})->{status};
        last if $st == 200;
        sleep 0.05;
    }
    is($st, 200, "$name: a good token answers 200 afterwards");
}

recovered('start');

# --- a reply dripping one byte every 50 ms ----------------------------------

{
    my ($r, $dt) = timed_get($tok{drip});
    refused($r, 503, 'gateway_unavailable', 'dripping reply');
    ok($dt >= $READ - 0.1 && $dt <= $BOUND,
       sprintf('dripping reply: refused by the deadline, %.2f s '
               . '(read_timeout %.1f s, bound %.1f s)', $dt, $READ, $BOUND));
    diag(sprintf 'dripping reply (50 ms a byte): 503 after %.2f s', $dt);
    recovered('dripping reply');
}

# --- eight lookups queued behind replies that take 1 s each ----------------

{
    my $t0 = time;
    my @socks = map { send_request('/x', $_) } @slow;
    my (@st, @dt);
    for my $s (@socks) {
        my $r = read_response($s, 15);
        push @st, $r->{status};
        push @dt, time - $t0;
    }
    my $max = (sort { $b <=> $a } @dt)[0];
    my %n;
    $n{$_}++ for @st;
    diag(sprintf 'eight lookups behind 1 s replies: statuses %s, '
         . 'slowest %.2f s', join(',', @st), $max);
    ok($max <= $BOUND,
       sprintf 'eight slow lookups: all answered within %.1f s (%.2f s)',
       $BOUND, $max);
    is($n{401} // 0, 1, 'eight slow lookups: the one reply that completed '
       . 'in time is used (401, no such token)');
    is($n{503} // 0, 7, 'eight slow lookups: the other seven get 503 at '
       . 'their deadline');
    recovered('eight slow lookups');
}

# --- a lookup that is never answered -----------------------------------------

{
    my $t0 = time;
    my $s = send_request('/x', $tok{never});
    sleep 0.1;
    my $h0 = time;
    my $h = $t->get('/healthz');
    my $hdt = time - $h0;
    is($h->{status}, 200, 'stuck lookup: /healthz on the same worker: 200');
    ok($hdt < $READ / 3,
       sprintf '/healthz answered in %.3f s, well before read_timeout', $hdt);
    my $g0 = time;
    my $g = $t->get('/x', $tok{good});
    my $gdt = time - $g0;
    my $r = read_response($s, 15);
    my $dt = time - $t0;
    refused($r, 503, 'gateway_unavailable', 'stuck lookup');
    ok($dt >= $READ - 0.1 && $dt <= $BOUND,
       sprintf 'stuck lookup: 503 at its deadline (%.2f s)', $dt);
    diag(sprintf 'never answered: healthz %.3f s, 503 after %.2f s; a '
         . 'lookup queued behind it: %d after %.2f s', $hdt, $dt,
         $g->{status}, $gdt);
    ok($g->{status} == 200 || $g->{status} == 503,
       'a lookup queued behind the stuck one: an answer, never a pass');
    ok($gdt <= 2 * $BOUND,
       sprintf 'a lookup queued behind the stuck one: answered in %.2f s',
       $gdt);
    recovered('stuck lookup');
}

# --- a reply cut short by a closed connection ---------------------------------

{
    my ($r, $dt) = timed_get($tok{truncated});
    refused($r, 503, 'gateway_unavailable', 'truncated reply');
    ok($dt < $READ, sprintf 'truncated reply: at once (%.2f s)', $dt);
    is($fake->count('GET', key_of($tok{truncated})), 2,
       'truncated reply: the lookup was sent again once, not more');
    recovered('truncated reply');
}

{
    my ($r, $dt) = timed_get($tok{closed_once});
    is($r->{status}, 200,
       'connection closed before the reply: sent again, 200');
    is($fake->count('GET', key_of($tok{closed_once})), 2,
       'connection closed before the reply: two GETs');
    ok($dt < $READ, sprintf 'connection closed before the reply: %.2f s',
       $dt);
}

# --- replies above max_record ----------------------------------------------------

{
    my $h0 = time;
    my ($r, $dt) = timed_get($tok{aggregate});
    refused($r, 503, 'gateway_unavailable', '*2147483647');
    ok($dt < 1, sprintf '*2147483647: refused at once (%.3f s)', $dt);
    my ($h, $hdt) = (undef, 0);
    {
        my $x = time;
        $h = $t->get('/healthz');
        $hdt = time - $x;
    }
    is($h->{status}, 200, '*2147483647: the worker answers /healthz');
    like($t->slurp('error.log'), qr/announces 2147483647 elements, more than max_record \(1048576 bytes\)/,
         '*2147483647: logged with the count and the limit');
    diag(sprintf '*2147483647: 503 after %.3f s, healthz %.3f s', $dt, $hdt);
    recovered('*2147483647');
}

{
    my ($r, $dt) = timed_get($tok{huge});
    refused($r, 500, 'gateway_misconfigured', '1 GB bulk string');
    ok($dt < 2, sprintf '1 GB bulk string: refused after about 1 MB, '
       . 'not buffered (%.3f s)', $dt);
    my $key = key_of($tok{huge});
    like($t->slurp('error.log'),
         qr/record "\Q$key\E" is above max_record \(1048576 bytes\)/,
         '1 GB bulk string: the log line names the key and the limit');
    diag(sprintf '1 GB bulk string: 500 after %.3f s', $dt);
    recovered('1 GB bulk string');
}

{
    my ($r, $dt) = timed_get($tok{errline});
    refused($r, 503, 'gateway_unavailable', '1.5 MB error line');
    ok($dt < 2, sprintf '1.5 MB error line: refused at once (%.3f s)', $dt);
    like($t->slurp('error.log'), qr/a reply is above max_record/,
         '1.5 MB error line: logged');
    recovered('1.5 MB error line');
}

{
    my ($r, $dt) = timed_get($tok{bigarray});
    refused($r, 503, 'gateway_unavailable',
               'aggregate of 300000 elements, 1.2 MB');
    ok($dt < 2, sprintf 'aggregate of 300000 elements: %.3f s', $dt);
    recovered('aggregate of 300000 elements');
}

# the worker never restarted through all of this
is(scalar(my @w = $t->worker_pids), 1, 'one worker, never restarted');
unlike($t->slurp('error.log'), qr/\Q$tok{good}\E|\Q$tok{huge}\E/,
       'no raw token in error.log');

$t->stop;
done_testing;
