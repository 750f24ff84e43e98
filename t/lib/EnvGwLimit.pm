# SPDX-License-Identifier: BSD-2-Clause
package EnvGwLimit;

# Helpers of the rate limit tests (t/limit_*.t): tokens of a team, bursts
# of requests, the counters of the metrics page, and the window a burst
# ran in (windows are aligned on the epoch, in wall-clock milliseconds).

use strict;
use warnings;

use Digest::SHA qw(sha256_hex);
use Time::HiRes qw(time);

use Exporter qw(import);
our @EXPORT = qw(limit_token burst statuses metric metrics_text
                 same_window count_of);

# a data token of env_<e> (team_a unless given); returns the raw token
sub limit_token {
    my ($t, $name, %rec) = @_;
    my $raw = 'egw_' . substr(sha256_hex("limit-$name"), 0, 40);
    my $e = delete $rec{env} // 'prod';
    $t->token($raw, token_id => "tok_$name", team_id => 'team_a',
              environment_id => "env_$e", environment => $e, %rec);
    return $raw;
}

# $n requests GET $path with the token: (responses, start time, end time)
sub burst {
    my ($t, $n, $path, $token, %opt) = @_;
    my @h = @{ $opt{headers} || [] };
    my $t0 = time;
    my @r = map { $t->get($path, $token, @h, ) } 1 .. $n;
    return (\@r, $t0, time);
}

sub statuses { join ',', map { $_->{status} } @{ $_[0] } }

sub count_of {
    my ($rs, $status) = @_;
    return scalar grep { $_->{status} == $status } @$rs;
}

sub metrics_text {
    my ($t, %opt) = @_;
    return $t->get('/env_gateway/metrics', undef, %opt)->{body};
}

# the value of one metric line ("name{labels}"), or undef
sub metric {
    my ($t, $name) = @_;
    my $text = metrics_text($t);
    return $text =~ /^\Q$name\E (\d+)$/m ? $1 : undef;
}

# did times t0..t1 (seconds) fall in one window of $w seconds
sub same_window {
    my ($t0, $t1, $w) = @_;
    return int($t0 * 1000 / ($w * 1000)) == int($t1 * 1000 / ($w * 1000));
}

1;
