# SPDX-License-Identifier: BSD-2-Clause
package EnvGwCache;

# Helpers shared by the cache tests (t/cache_*.t): one gateway config with
# the cache status exposed, token seeding, worker and subscriber counts,
# Redis GET counts, metrics, and a keep-alive client for floods.

use strict;
use warnings;

use Exporter qw(import);
use Digest::SHA qw(sha256_hex);
use IO::Socket::INET;
use Time::HiRes qw(time sleep);

use EnvGwTest;

our @EXPORT = qw($CHANNEL conf raw_token token_key seed_env mk_token workers numsub wait_subscribed gets metrics cstatus backend_vars ka_open ka_get murmur2);

our $CHANNEL = 'envgw:invalidate';

sub conf {
    my ($cache) = @_;
    return <<"CONF";
    env_gateway_redis 127.0.0.1:%%REDIS%% connect_timeout=200ms read_timeout=500ms;
    env_gateway_cache $cache;
    upstream backend { server 127.0.0.1:%%BACKEND%%; keepalive 16; }
    server {
        listen 127.0.0.1:%%PORT%%;
        location = /env_gateway/metrics { env_gateway_metrics; }
        location / {
            env_gateway on;
            env_gateway_account \$arg_integrated_account_id;
            add_header X-Cache-Status \$env_gateway_cache_status always;
            add_header X-Worker \$pid always;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Envgw-Vars "\$env_gateway_cache_status|\$env_gateway_token_id";
            proxy_pass http://backend;
        }
    }
CONF
}

# --- helpers ------------------------------------------------------------------

sub raw_token { 'egw_' . substr(sha256_hex(join '-', @_), 0, 40) }
sub token_key { 'envgw:token:' . sha256_hex($_[0]) }

sub seed_env {
    my ($t) = @_;
    $t->env('env_dev', 'team_a', 'development');
}

sub mk_token {
    my ($t, $raw, %extra) = @_;
    (my $id = 'tok_' . substr(sha256_hex($raw), 0, 10));
    $t->token($raw, token_id => $id, team_id => 'team_a',
              environment_id => 'env_dev', environment => 'development',
              %extra);
    return $id;
}

sub workers { $_[0]->worker_pids }

# the harness's readiness probes of the invalidation subscribers
sub numsub { $_[0]->numsub }

sub wait_subscribed {
    my ($t, $n, $max) = @_;
    return $t->wait_subscribed($n, $max);
}

sub gets {
    my ($t) = @_;
    my $s = $t->redis->info('commandstats')->{cmdstat_get} // '';
    return $s =~ /calls=(\d+)/ ? $1 : 0;
}

sub metrics {
    my ($t) = @_;
    my $r = $t->get('/env_gateway/metrics');
    my %m;
    for (split /\n/, $r->{body}) {
        next if /^#/ || !/\S/;
        my ($k, $v) = /^(\S+)\s+(\S+)$/ or next;
        $m{$k} = $v;
        # requests by result, summed over the environment label
        $m{"env_gateway_requests_total{result=\"$1\"}"} += $v
            if $k =~ /^env_gateway_requests_total\{environment="(?:[^"\\]|\\.)*",result="(\w+)"\}$/;
    }
    return \%m;
}

sub cstatus { $_[0]{headers}{'x-cache-status'} // '' }

sub backend_vars {
    my ($r) = @_;
    return $r->{body} =~ /vars=(\S*)$/m ? $1 : '';
}

# keep-alive client for floods
sub ka_open {
    my ($t) = @_;
    return IO::Socket::INET->new(PeerAddr => "127.0.0.1:$t->{port}",
                                 Proto => 'tcp', Timeout => 10)
        || die "connect: $!";
}

sub ka_get {
    my ($t, $sref, $path, $token) = @_;
    for my $try (1 .. 2) {
        $$sref ||= ka_open($t);
        my $s = $$sref;
        print $s "GET $path HTTP/1.1\r\nHost: localhost\r\n"
               . "Authorization: Bearer $token\r\n\r\n";
        my $head = '';
        while ($head !~ /\r\n\r\n$/) {
            my $n = sysread($s, my $c, 1);
            last unless $n;
            $head .= $c;
        }
        if ($head eq '') {
            close $s;
            $$sref = undef;
            next;
        }
        my ($len) = $head =~ /^Content-Length:\s*(\d+)/mi;
        my $body = '';
        while (defined $len && length $body < $len) {
            my $n = sysread($s, my $c, $len - length $body);
            last unless $n;
            $body .= $c;
        }
        if ($head =~ /^Connection:\s*close/mi) {
            close $s;
            $$sref = undef;
        }
        return EnvGwTest::parse_response($head . $body);
    }
    return { status => 0, headers => {}, body => '' };
}

# nginx's ngx_murmur_hash2 (src/core/ngx_hash.c), 32-bit: the cache zone's
# bucket of a Redis key is murmur2(key) % buckets
sub mul32 {
    my ($a, $b) = @_;
    return ((($a & 0xffff) * $b) + (((($a >> 16) * $b) & 0xffff) << 16))
           & 0xffffffff;
}

sub murmur2 {
    my @d = unpack 'C*', $_[0];
    my $h = 0 ^ scalar @d;
    my $i = 0;
    while (@d - $i >= 4) {
        my $k = $d[$i] | $d[$i + 1] << 8 | $d[$i + 2] << 16 | $d[$i + 3] << 24;
        $k = mul32($k, 0x5bd1e995);
        $k ^= $k >> 24;
        $k = mul32($k, 0x5bd1e995);
        $h = mul32($h, 0x5bd1e995) ^ $k;
        $i += 4;
    }
    my $left = @d - $i;
    $h ^= $d[$i + 2] << 16 if $left >= 3;
    $h ^= $d[$i + 1] << 8 if $left >= 2;
    if ($left >= 1) {
        $h ^= $d[$i];
        $h = mul32($h, 0x5bd1e995);
    }
    $h ^= $h >> 13;
    $h = mul32($h, 0x5bd1e995);
    $h ^= $h >> 15;
    return $h;
}

1;
