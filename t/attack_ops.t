#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# The operator's view under attack: env_gateway_status and
# env_gateway_redis_up say "ready" only while Redis answers on the lookup
# connection (a stopped Redis still completes connects; a Redis that
# answers every command with an error serves no lookup), and such a Redis
# does not make the error log grow with every request; nor do stale copies
# served through an outage.

use strict;
use warnings;

use lib 't/lib';
use EnvGwTest;
use Test::More;
use JSON::PP;
use IO::Socket::INET;
use POSIX qw(WNOHANG);
use Time::HiRes qw(time sleep);
use FakeRedis;
use Digest::SHA qw(sha256_hex);

my $TOKEN = 'egw_attackops_0123456789abcdef012345';

sub status {
    my ($t) = @_;
    my $r = $t->http('GET', '/status');
    $r->{json} = eval { decode_json($r->{body}) } unless $r->{json};
    return $r;
}

sub redis_up {
    my ($t) = @_;
    my $m = $t->http('GET', '/metrics')->{body};
    return $m =~ /^env_gateway_redis_up (\d+)$/m ? $1 : -1;
}

sub errors {
    my ($t) = @_;
    return scalar(grep { /\[error\]/ } split /\n/, $t->slurp('error.log'));
}

my $CONF = <<'CONF';
    env_gateway_redis 127.0.0.1:%%REDIS%% connect_timeout=200ms read_timeout=300ms;
    server {
        listen 127.0.0.1:%%PORT%%;
        location / {
            env_gateway on;
            proxy_pass http://127.0.0.1:%%BACKEND%%;
        }
        location = /status { env_gateway_status; }
        location = /metrics { env_gateway_metrics; }
    }
CONF

# --- a stopped Redis (SIGSTOP): connects complete, nothing answers ---------

{
    my $t = EnvGwTest->new;
    $t->start_redis;
    $t->env('env_dev', 'team_a', 'development');
    $t->token($TOKEN, token_id => 'tok_ops', team_id => 'team_a',
              environment_id => 'env_dev', environment => 'development');
    $t->start_nginx($CONF);

    is($t->get('/x', $TOKEN)->{status}, 200, 'stopped: a request passes first');
    is(status($t)->{status}, 200, 'stopped: status 200 while Redis answers');

    my $pid = $t->{pids}{redis};
    kill 'STOP', $pid;

    my $e0 = errors($t);
    my (@req, @st, @up);
    my $end = time + 4;
    while (time < $end) {
        push @req, $t->get('/x', $TOKEN)->{status};
        my $r = status($t);
        push @st, $r->{status};
        push @up, redis_up($t);
        sleep 0.1;
    }
    my $after = time;

    is(scalar(grep { $_ == 200 } @req), 0,
       'stopped: no request is let through (' . scalar(@req) . ' asked)');
    # the first status may come before the first timeout is seen
    my @late = @st[2 .. $#st];
    is(scalar(grep { $_ == 200 } @late), 0,
       'stopped: status never 200 once a lookup timed out ('
       . join(',', @st) . ')');
    is(scalar(grep { $_ == 1 } @up[2 .. $#up]), 0,
       'stopped: env_gateway_redis_up never 1 once a lookup timed out');
    # no lookups now: the worker reconnects on its own, and a completed
    # connect alone is not "ready"
    my @idle;
    for (1 .. 10) {
        push @idle, status($t)->{status};
        sleep 0.1;
    }
    is(scalar(grep { $_ == 200 } @idle), 0,
       'stopped, no traffic: status never 200 (' . join(',', @idle) . ')');
    my $r = status($t);
    isnt($r->{json}{connections}{lookups}{state}, 'connected',
         'stopped: lookups not "connected"');

    # one line for the connection that worked, the outage line, at most a
    # summary: not a line per request or per reconnect
    my $de = errors($t) - $e0;
    cmp_ok($de, '<=', 3, "stopped: $de error lines for "
           . scalar(@req) . ' requests over 4 s');
    like($t->slurp('error.log'), qr/unreachable: command timed out/,
         'stopped: the outage is logged with its cause');

    kill 'CONT', $pid;
    my $ok = 0;
    $end = time + 10;
    while (time < $end) {
        last if ($ok = status($t)->{status} == 200);
        sleep 0.05;
    }
    ok($ok, 'stopped: status 200 again once Redis answers');
    is($t->get('/x', $TOKEN)->{status}, 200, 'stopped: requests pass again');
    $t->stop;
}

# --- a Redis answering every command with an error -------------------------

{
    my $t = EnvGwTest->new;
    my $fake = FakeRedis->new($t, error_all =>
                              'LOADING Redis is loading the dataset in memory');
    $t->{redis_port} = $fake->port;
    $t->start_nginx($CONF);

    my $e0 = errors($t);
    my @req = map { $t->get('/x', $TOKEN)->{status} } 1 .. 40;
    is(scalar(grep { $_ == 503 } @req), 40,
       'errors: every request 503 (' . join(',', @req[0 .. 4]) . ', ...)');

    my $r = status($t);
    is($r->{status}, 503, 'errors: status 503');
    isnt($r->{json}{connections}{lookups}{state}, 'connected',
         'errors: lookups not "connected"');
    is(redis_up($t), 0, 'errors: env_gateway_redis_up 0');

    my $log = $t->slurp('error.log');
    my $de = errors($t) - $e0;
    cmp_ok($de, '<=', 3, "errors: $de error lines for 40 requests");
    like($log, qr/LOADING Redis is loading the dataset/,
         'errors: the error Redis gives is logged');
    unlike($log, qr/egw_attackops/, 'errors: no token in the log');
    $t->stop;
}

# --- stale copies served through an outage: not a line per request --------

{
    my $t = EnvGwTest->new;
    $t->start_redis;
    $t->env('env_dev', 'team_a', 'development');
    $t->token($TOKEN, token_id => 'tok_ops', team_id => 'team_a',
              environment_id => 'env_dev', environment => 'development');
    (my $conf = $CONF) =~ s/(read_timeout=300ms;)/$1
    env_gateway_cache zone=envgw:1m ttl=1s stale_if_error=60s;/;
    $t->start_nginx($conf, subscribed => 1);

    is($t->get('/x', $TOKEN)->{status}, 200, 'stale: warm');
    sleep 1.3;
    $t->stop_redis;

    my @req = map { $t->get('/x', $TOKEN)->{status} } 1 .. 30;
    is(scalar(grep { $_ == 200 } @req), 30, 'stale: 30 requests served');
    my @warn = grep { /\[warn\].*serving stale/ }
               split /\n/, $t->slurp('error.log');
    is(scalar(@warn), 1, 'stale: one "serving stale" line for 30 requests');
    like($warn[0] // '', qr/serving stale "envgw:token:[0-9a-f]{64}"/,
         'stale: the line names the key');
    $t->stop;
}

# --- environment labels: no duplicate series, a clean exposition -----------

{
    my $t = EnvGwTest->new;
    $t->start_redis;
    $t->start_nginx($CONF);

    # "other" is also the label of the names beyond the 16 kept: an
    # environment of that name must not make two series of one label set
    my @names = ('other', "tab\there", "caf\xc3\xa9 \xe2\x98\x83",
                 'x' x 65, "q\"b\\s", "\xe2\x80\xae rtl",
                 map { sprintf 'e%02d', $_ } 1 .. 20);
    my $n = 0;
    for my $name (@names) {
        $n++;
        my $tok = 'egw_l_' . substr(sha256_hex("labels-$n"), 0, 32);
        $t->token($tok, token_id => "tok_l_$n", team_id => 'team_a',
                  environment_id => "env_l_$n", environment => $name);
        is($t->get('/x', $tok)->{status}, 200, "labels: request $n passes");
    }

    my $m = $t->http('GET', '/metrics')->{body};
    my (%seen, @dup);
    for (split /\n/, $m) {
        next if /^#/ || !/\S/;
        my ($series) = /^(\S+(?:\{.*\})?) \S+$/ or next;
        push @dup, $series if $seen{$series}++;
    }
    is(scalar(@dup), 0, 'labels: no series written twice')
        or diag(join "\n", @dup[0 .. ($#dup > 5 ? 5 : $#dup)]);

    my $allowed = 0;
    $allowed += $1 while $m =~ /^env_gateway_requests_total\{[^\n]*,result="allowed"\} (\d+)$/mg;
    is($allowed, scalar(@names), 'labels: every allowed request counted once');
    like($m, qr/^env_gateway_requests_total\{environment="other",result="allowed"\} (\d+)$/m,
         'labels: "other" present');

    SKIP: {
        my $promtool = `command -v promtool 2>/dev/null`;
        chomp $promtool;
        skip 'promtool not installed (Debian package prometheus)', 1
            unless $promtool;
        my $f = $t->dir . '/metrics.txt';
        open my $fh, '>', $f or die;
        print $fh $m;
        close $fh;
        my $out = `$promtool check metrics < $f 2>&1`;
        is($? >> 8, 0, 'labels: promtool check metrics: exit 0')
            or diag($out);
    }
    $t->stop;
}

# --- record values that would end an identity header line ------------------

{
    my $t = EnvGwTest->new;
    $t->start_redis;
    my $echo = $t->start_echo;
    (my $conf = $CONF) =~ s{proxy_pass http://127\.0\.0\.1:%%BACKEND%%;}
                           {proxy_pass http://127.0.0.1:$echo;};
    $t->start_nginx($conf);

    my %good = (token_id => 'tok_ok', team_id => 'team_a',
                environment_id => 'env_dev', environment => 'development');
    my $n = 0;
    for my $case (
        [ environment => "dev\r\nX-Token-Id: tok_admin" ],
        [ environment => "dev\rX-Token-Id: tok_admin" ],
        [ environment => "dev\nX-Token-Id: tok_admin" ],
        [ token_id => "tok\r\nX-Environment-Id: env_prod" ],
        [ team_id => "team\x00a" ],
        [ environment_id => "env\x0bdev" ],
        [ environment => "dev\x7f" ],
        [ integrated_account_id => "acc\nX" ],
    ) {
        my ($field, $value) = @$case;
        $n++;
        my $tok = 'egw_hdr_' . substr(sha256_hex("hdr-$n"), 0, 32);
        $t->token($tok, %good, $field => $value);
        my $before = $t->echo_count;
        my $r = $t->get('/x', $tok);
        (my $shown = $value) =~ s/([\x00-\x1f\x7f])/sprintf '\\x%02x', ord $1/ge;
        is($r->{status}, 500, "header: $field \"$shown\": 500");
        like($r->{body}, qr/gateway_misconfigured/,
             "header: $field \"$shown\": gateway_misconfigured");
        is($t->echo_count, $before, "header: $field \"$shown\": "
           . 'nothing reached the upstream');
    }

    # an environment record named by an admin token: the same rule
    $t->put('env:env_bad', { environment_id => 'env_bad',
                             team_id => 'team_a',
                             name => "bad\r\nX-Team-Id: team_b" });
    my $admin = 'egw_hdr_admin_0123456789abcdef0123';
    $t->token($admin, %good, kind => 'admin');
    my $before = $t->echo_count;
    my $r = $t->get('/x', $admin, 'X-Environment-Id' => 'env_bad');
    is($r->{status}, 500, 'header: environment record name with CRLF: 500');
    is($t->echo_count, $before,
       'header: environment record name with CRLF: nothing upstream');

    # a tab is a header value's own whitespace: still served
    my $tab = 'egw_hdr_tab_0123456789abcdef012345';
    $t->token($tab, %good, environment => "dev\tblue");
    is($t->get('/x', $tab)->{status}, 200, 'header: a tab in a name: 200');

    like($t->slurp('error.log'), qr/malformed record "envgw:token:[0-9a-f]{64}": bad or missing "environment"/,
         'header: the record is logged as malformed, by its key');
    $t->stop;
}

# --- an idle connection, closed by a Redis shutting down --------------------

{
    my $t = EnvGwTest->new;
    $t->start_redis;
    (my $conf = $CONF) =~ s/read_timeout=300ms/read_timeout=3s/;
    $t->start_nginx($conf);
    my $port = $t->redis_port;
    # connected, no request and no status asked (only the connection's own
    # PING, asked once it is up)
    sleep 0.2;
    $t->stop_redis;
    my $log = '';
    my $end = time + 10;
    while (time < $end) {
        $log = $t->slurp('error.log');
        last if $log =~ /unreachable: /;
        sleep 0.05;
    }
    unlike($log, qr/TLS port/,
           'shutdown: an idle connection closed by Redis is no TLS port');
    like($log, qr/\(lookups\) unreachable: connect\(\)(?: to 127\.0\.0\.1:$port)? failed \(111: Connection refused\)/,
         'shutdown: the outage line says why (connection refused)');
    $t->stop;
}

done_testing();
