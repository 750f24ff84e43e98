# SPDX-License-Identifier: BSD-2-Clause
package EnvGwBackends;

# Echo backends written with the parsers users run (t/backends/): PHP's
# built-in server, Express 4, Python's http.server, Go's net/http.  Each
# answers every request with a JSON object of what its own parser read of
# it.  start() runs them on free loopback ports through the harness's
# spawn (so EnvGwTest::stop ends them by pid); a backend whose runtime is
# missing is reported with the reason, never silently left out.

use strict;
use warnings;

use Cwd qw(abs_path);
use File::Basename qw(dirname);
use File::Path qw(make_path);
use JSON::PP;

our $DIR = abs_path(dirname(__FILE__) . '/../backends');

our @ALL = qw(php node python go);

sub have_cmd {
    my ($cmd) = @_;
    for my $d (split /:/, $ENV{PATH} || '/usr/bin:/bin') {
        return "$d/$cmd" if -x "$d/$cmd";
    }
    return undef;
}

# (name => undef) when the backend can run, (name => reason) when not
sub availability {
    my %why;
    $why{php} = have_cmd('php') ? undef
        : 'php not found (Debian package php-cli)';
    $why{node} = !have_cmd('node')
        ? 'node not found (Debian package nodejs)'
        : !-e "$DIR/node/node_modules/express/package.json"
        ? "Express not installed in $DIR/node (run 'make backends-deps')"
        : undef;
    $why{python} = have_cmd('python3') ? undef
        : 'python3 not found';
    $why{go} = have_cmd('go') ? undef
        : 'go not found (Debian package golang-go)';
    return %why;
}

# build the Go backend into the test's temp dir; the Go caches live there
# too, so nothing is written to $HOME and nothing is fetched
sub build_go {
    my ($t) = @_;
    my $dir = $t->dir . '/go';
    make_path("$dir/cache", "$dir/path");
    my $bin = "$dir/echo-go";
    local $ENV{GOCACHE} = "$dir/cache";
    local $ENV{GOPATH} = "$dir/path";
    local $ENV{GOPROXY} = 'off';
    local $ENV{GOFLAGS} = '';
    local $ENV{GO111MODULE} = 'off';
    local $ENV{CGO_ENABLED} = '0';
    my $out = `cd $DIR/go && go build -o $bin main.go 2>&1`;
    return ($? == 0 ? $bin : undef, $out);
}

# start the named backends; returns { name => port } of those that run and
# { name => reason } of those that do not
sub start {
    my ($t, @names) = @_;
    my %why = availability();
    my (%port, %skip);

    for my $b (@names) {
        if (!exists $why{$b}) {
            $skip{$b} = 'no such backend (one of: ' . join(' ', @ALL) . ')';
            next;
        }
        if (defined $why{$b}) {
            $skip{$b} = $why{$b};
            next;
        }

        my $p = EnvGwTest::free_port();
        my @cmd;

        if ($b eq 'php') {
            @cmd = ('php', '-n', '-d', 'variables_order=EGPCS',
                    '-d', 'display_errors=stderr',
                    '-S', "127.0.0.1:$p", "$DIR/php/router.php");
        } elsif ($b eq 'node') {
            @cmd = ('node', "$DIR/node/server.js", $p);
        } elsif ($b eq 'python') {
            @cmd = ('python3', "$DIR/python/server.py", $p);
        } elsif ($b eq 'go') {
            my ($bin, $out) = build_go($t);
            unless ($bin) {
                $skip{$b} = "go build failed: $out";
                next;
            }
            @cmd = ($bin, $p);
        }

        $t->spawn("backend-$b", @cmd);

        unless (EnvGwTest::wait_port($p, 20)) {
            $t->stop_pid("backend-$b");
            $skip{$b} = "did not start: " . $t->slurp("backend-$b.out");
            next;
        }

        $port{$b} = $p;
    }

    return (\%port, \%skip);
}

# --- the gateway in front of them ------------------------------------------

# the locations under test, each proxying to backend port $bport; one server
# block of them per backend and per underscores_in_headers setting
sub locations {
    my ($bport) = @_;
    my $to = "proxy_pass http://127.0.0.1:$bport;";
    return <<"L";
        proxy_connect_timeout 2s;
        proxy_read_timeout 10s;
        location / { return 404; }
        # no gateway: the oracle's own checks (/open/X reaches the backend
        # as /X)
        location /open/ {
            proxy_pass http://127.0.0.1:$bport/;
        }
        location /q/ {
            env_gateway on;
            env_gateway_account \$arg_integrated_account_id;
            $to
        }
        location /req/ {
            env_gateway on;
            env_gateway_account \$arg_integrated_account_id required;
            $to
        }
        location /h/ {
            env_gateway on;
            env_gateway_account \$http_x_integrated_account_id;
            $to
        }
        location ~ ^/cap/(?<acc>[^/]+)/ {
            env_gateway on;
            env_gateway_account \$acc;
            $to
        }
        location /body/ {
            env_gateway on;
            env_gateway_account \$arg_integrated_account_id;
            env_gateway_account_body_field integrated_account_id;
            $to
        }
        location /key/ {
            env_gateway on;
            env_gateway_token \$http_x_api_key;
            env_gateway_account \$arg_integrated_account_id;
            $to
        }
        location /tok/ {
            env_gateway on;
            env_gateway_token \$arg_api_key;
            env_gateway_account \$arg_integrated_account_id;
            $to
        }
        location /typo/ {
            env_gateway on;
            env_gateway_account \$arg_integrated_acount_id;
            $to
        }
        location ~ ^/proxy/(?<res>[^/]+)(?:/(?<rest>[^/]+))?\$ {
            env_gateway on;
            env_gateway_account \$arg_integrated_account_id;
            env_gateway_route \$res \$rest;
            proxy_pass \$env_gateway_upstream_url;
        }
L
}

# --- the oracle --------------------------------------------------------------

# every scalar inside a parsed value (arrays and objects of qs, PHP, JSON)
sub flat {
    my ($v) = @_;
    return () unless defined $v;
    return map { flat($_) } @$v if ref $v eq 'ARRAY';
    return map { flat($v->{$_}) } sort keys %$v if ref $v eq 'HASH';
    return () if JSON::PP::is_bool($v);
    return ("$v");
}

# a header name as a comparison key: PHP's HTTP_X_FOO and X_Foo both give
# x-foo
sub hkey {
    my ($b, $k) = @_;
    $k = lc $k;
    $k =~ s/^http_// if $b eq 'php';
    $k =~ tr/_/-/;
    return $k;
}

# where string $needle occurs in a parsed echo: "headers.authorization",
# "query.access_token", ... (the backend's own credentials list left out)
sub found {
    my ($v, $needle, $at) = @_;
    return () unless defined $v;
    if (ref $v eq 'HASH') {
        return map {
            my $k = $_;
            ($at eq '' && $k eq 'credentials') ? ()
                : ((index($k, $needle) >= 0 ? ("$at$k (name)") : ()),
                   found($v->{$k}, $needle, "$at$k."))
        } sort keys %$v;
    }
    if (ref $v eq 'ARRAY') {
        my $a = $at;
        return map { found($_, $needle, $a) } @$v;
    }
    return () if ref $v;
    (my $p = $at) =~ s/\.$//;
    return index("$v", $needle) >= 0 ? ($p) : ();
}

# the harness's response with a chunked body decoded (and its JSON read)
sub dechunk {
    my ($r) = @_;
    return $r unless ($r->{headers}{'transfer-encoding'} // '') =~ /chunked/i;
    my ($in, $out) = ($r->{body}, '');
    while ($in =~ s/^([0-9a-fA-F]+)[^\r\n]*\r\n//) {
        my $n = hex $1;
        last if $n == 0;
        $out .= substr($in, 0, $n, '');
        $in =~ s/^\r\n//;
    }
    $r->{body} = $out;
    if (($r->{headers}{'content-type'} // '') =~ m{application/json}) {
        $r->{json} = eval { JSON::PP->new->decode($out) };
    }
    return $r;
}

# judge one response of backend $b; %o: dev => {id => 1} (the accounts of
# the token's environment), prod => {id => 1} (another's, named as such),
# env => the token's environment id, tokens => [raw tokens], token_names =>
# [how to print each].
# Returns (kind, detail): kind is
#   refused   the module's JSON refusal (detail: its error code)
#   nginx     nginx's own 4xx page (detail: the status)
#   backend   the backend's own refusal (Express: a body it cannot parse)
#   pass      the backend answered and everything it read was checked
#   violation the backend answered and acted on something else (detail:
#             a list of reasons)
#   error     anything else: no answer, a 5xx that is not the module's
sub judge {
    my ($b, $r, %o) = @_;
    $r = dechunk($r);
    my $st = $r->{status} || 0;
    my $j = $r->{json};

    if ($st >= 400 && ref $j eq 'HASH' && !exists $j->{backend}) {
        if (($j->{status} // '') eq $st && defined $j->{error}
            && defined $j->{message})
        {
            return ('refused', $j->{error});
        }
        return ('error', "$st with a JSON body that is not a refusal");
    }

    if ($st >= 400 && ref $j eq 'HASH' && ($j->{backend} // '') eq $b
        && exists $j->{refused})
    {
        return ('backend', "$st $j->{refused}");
    }

    if ($st >= 400 && $st < 500) {
        return ('nginx', $st);
    }

    unless ($st == 200 && ref $j eq 'HASH' && ($j->{backend} // '') eq $b) {
        my $head = substr($r->{raw} // '', 0, 200);
        $head =~ s/[^\x20-\x7e]/./g;
        return ('error', "unexpected answer: $head");
    }

    my (@why, @acc);

    push @acc, map { ['query', $_] } flat($j->{query_account});
    push @acc, map { ['body', $_] } flat($j->{body_account});
    push @acc, map { ['path', $_] } flat($j->{path_account});
    push @acc, map { ['form_value', $_] } flat($j->{form_value});

    my $hdrs = $j->{headers} || {};
    for my $k (sort keys %$hdrs) {
        my $hk = hkey($b, $k);
        if ($hk eq 'x-integrated-account-id') {
            push @acc, map { ["header $k", $_] } flat($hdrs->{$k});
        } elsif ($hk eq 'x-environment-id') {
            for my $v (flat($hdrs->{$k})) {
                push @why, "environment header $k=$v"
                    if $v ne $o{env};
            }
        }
    }

    my $ah = $j->{account_header};
    for my $a (@acc) {
        my ($where, $v) = @$a;
        next if $v eq '';
        if (!$o{dev}{$v}) {
            push @why, ($o{prod}{$v} ? 'prod account' : 'foreign account')
                       . " in $where: $v";
        } elsif (defined $ah && $v ne $ah) {
            push @why, "account in $where ($v) is not the "
                       . "X-Integrated-Account-Id ($ah)";
        }
    }

    my $eh = $j->{environment_header};
    if (!defined $eh) {
        push @why, 'no environment header';
    } elsif ($eh ne $o{env}) {
        push @why, "environment header: $eh";
    }

    # the backend's own list, then where each token shows in what it read
    my @cred = @{ $j->{credentials} || [] };
    my %seen;
    for my $i (0 .. $#{ $o{tokens} }) {
        my $tok = $o{tokens}[$i];
        my @at = found($j, $tok, '');
        next unless @at || index($r->{body}, $tok) >= 0;
        @at = ('the echo') unless @at;
        my %u = map { $_ => 1 } @at;
        push @why, "credential $o{token_names}[$i] reached the backend in "
                   . join(', ', sort keys %u);
        $seen{$tok} = 1;
    }
    my @other = grep { my $c = $_; !grep { index($c, $_) >= 0 } keys %seen }
                @cred;
    push @why, scalar(@other) . " other credential(s) reached the backend"
        if @other;

    return @why ? ('violation', \@why) : ('pass', undef);
}

1;
