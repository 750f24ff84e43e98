# SPDX-License-Identifier: BSD-2-Clause
package EnvGwTest;

# A small harness in nginx-tests' style: a temp dir, redis-server and nginx
# (with the module) on free loopback ports, plain-socket HTTP, and a teardown
# that stops only what it started (by pid) and fails on [alert], [emerg],
# crashed workers or sanitizer reports in error.log.

use strict;
use warnings;

use Cwd qw(abs_path);
use Digest::SHA qw(sha256_hex);
use File::Basename qw(dirname);
use File::Temp qw(tempdir);
use IO::Socket::INET;
use JSON::PP;
use POSIX qw(WNOHANG);
use Test::More;
use Time::HiRes qw(sleep time);

use Exporter qw(import);
our @EXPORT_OK = qw(refused unavailable series_value);

our $TOP = abs_path(dirname(__FILE__) . '/../..');
our $JSON = JSON::PP->new->canonical(1);

sub new {
    my ($class, %opt) = @_;
    my $self = bless { pids => {}, %opt }, $class;
    $self->{dir} = tempdir('envgw-t-XXXXXX', TMPDIR => 1,
                           CLEANUP => !$ENV{ENVGW_KEEP});
    $self->{module} = $ENV{ENVGW_MODULE}
        || "$TOP/build/nginx/objs/ngx_env_gateway_module.so";
    $self->{nginx} = $ENV{ENVGW_NGINX} || '/usr/sbin/nginx';
    $self->{prefix} = 'envgw:';
    return $self;
}

sub dir { $_[0]{dir} }

# A port nobody listens on, and never one this process handed out before:
# the kernel may offer a just-closed port again, and two servers of one
# nginx.conf on the same port would share it silently.
my %given_ports;

sub free_port {
    for (1 .. 100) {
        my $s = IO::Socket::INET->new(Listen => 1, LocalAddr => '127.0.0.1',
                                      LocalPort => 0, Proto => 'tcp',
                                      ReuseAddr => 1)
            or die "no free port: $!";
        my $p = $s->sockport;
        close $s;
        next if $given_ports{$p}++;
        return $p;
    }
    die "no free port not handed out before";
}

sub spawn {
    my ($self, $name, @cmd) = @_;
    my $pid = fork();
    die "fork: $!" unless defined $pid;
    if ($pid == 0) {
        open STDIN, '<', '/dev/null';
        open STDOUT, '>>', "$self->{dir}/$name.out";
        open STDERR, '>&', \*STDOUT;
        exec @cmd or POSIX::_exit(127);
    }
    $self->{pids}{$name} = $pid;
    return $pid;
}

sub wait_port {
    my ($port, $timeout) = @_;
    my $end = time + ($timeout || 10);
    while (time < $end) {
        my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port",
                                      Proto => 'tcp');
        if ($s) { close $s; return 1; }
        sleep 0.02;
    }
    return 0;
}

# --- redis ---------------------------------------------------------------

sub start_redis {
    my ($self, %opt) = @_;
    my $port = $self->{redis_port} ||= free_port();
    my @args = ('redis-server', '--port', $port, '--bind', '127.0.0.1',
                '--save', '', '--appendonly', 'no', '--daemonize', 'no',
                '--dir', $self->{dir}, @{ $opt{args} || [] });
    $self->spawn('redis', @args);
    wait_port($port) or die "redis did not start on $port";
    delete $self->{redis};
    return $port;
}

sub stop_redis {
    my ($self) = @_;
    $self->stop_pid('redis');
    delete $self->{redis};
}

sub redis_port { $_[0]{redis_port} ||= free_port() }

sub redis {
    my ($self) = @_;
    require Redis;
    $self->{redis} ||= Redis->new(server => "127.0.0.1:$self->{redis_port}",
                                  reconnect => 2, every => 100_000);
    return $self->{redis};
}

sub put {
    my ($self, $key, $value) = @_;
    $value = $JSON->encode($value) if ref $value;
    $self->redis->set($self->{prefix} . $key, $value);
}

sub env {
    my ($self, $id, $team, $name) = @_;
    $self->put("env:$id", { environment_id => $id, team_id => $team,
                            name => $name });
}

# store a token record; returns the raw token
sub token {
    my ($self, $raw, %rec) = @_;
    $rec{kind} ||= 'data';
    $rec{revoked} = JSON::PP::false unless exists $rec{revoked};
    $rec{expires_at} = undef unless exists $rec{expires_at};
    $rec{token_id} ||= 'tok_' . substr(sha256_hex($raw), 0, 8);
    $self->put('token:' . sha256_hex($raw), \%rec);
    return $raw;
}

sub account {
    my ($self, $id, $env, %rec) = @_;
    $self->put("account:$id", { integrated_account_id => $id,
        environment_id => $env, integration => 'hubspot',
        tenant_id => 'acme', status => 'active', %rec });
}

# --- nginx ---------------------------------------------------------------

# $http is the body of the http{} block; %%REDIS%%, %%PORT%%, %%BACKEND%%
# and %%DIR%% are replaced.
sub start_nginx {
    my ($self, $http, %opt) = @_;
    my $dir = $self->{dir};
    $self->{port} ||= free_port();
    $self->{backend_port} ||= free_port();
    $self->{ready_port} ||= free_port();
    $self->redis_port;

    my $workers = $opt{workers} || 1;
    # error_level => 'debug': the module's debug lines (nginx --with-debug)
    my $level = $opt{error_level} || 'info';
    # workers must write request bodies into our 0700 temp dir
    my $user = $> == 0 ? "user root root;" : "";
    my $conf = <<"CONF";
load_module $self->{module};
$user
daemon off;
master_process on;
worker_processes $workers;
error_log $dir/error.log $level;
pid $dir/nginx.pid;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $dir/body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;

    log_format backend '\$request_method \$request_uri env=\$http_x_environment_id '
                       'auth=\$http_authorization key=\$http_x_api_key';
    server {
        listen 127.0.0.1:%%BACKEND%%;
        # identity headers carry record values of any length
        large_client_header_buffers 4 1m;
        access_log $dir/backend.log backend;
        location / {
            default_type text/plain;
            return 200 "backend \$request_method \$request_uri env=\$http_x_environment_id auth=\$http_authorization key=\$http_x_api_key vars=\$http_x_envgw_vars\\n";
        }
    }

    # the harness's readiness probe (wait_ready): answered by a worker
    server {
        listen 127.0.0.1:$self->{ready_port};
        access_log off;
        location / { return 204; }
    }

$http
}
CONF
    $conf =~ s/%%REDIS%%/$self->{redis_port}/g;
    $conf =~ s/%%PORT%%/$self->{port}/g;
    $conf =~ s/%%BACKEND%%/$self->{backend_port}/g;
    $conf =~ s/%%DIR%%/$dir/g;

    open my $fh, '>', "$dir/nginx.conf" or die;
    print $fh $conf;
    close $fh;
    mkdir "$dir/logs";

    $self->spawn('nginx', $self->{nginx}, '-p', "$dir/", '-c',
                 "$dir/nginx.conf", '-e', "$dir/error.log");
    wait_port($self->{port}) or die "nginx did not start:\n"
        . $self->slurp("error.log") . $self->slurp("nginx.out");
    $self->wait_ready or die "no nginx worker answered:\n"
        . $self->slurp("error.log");
    if ($opt{subscribed}) {
        $self->wait_subscribed($opt{subscribed})
            or die "the invalidation subscribers did not subscribe:\n"
                   . $self->slurp("error.log");
    }
    return $self->{port};
}

# readiness: the listening sockets exist as soon as the master has bound
# them; a worker is running once a request is answered.  The probe goes to
# the harness's own server (no access log, no module, no upstream), so no
# count a test keeps sees it.
sub wait_ready {
    my ($self, $timeout) = @_;
    my $end = time + ($timeout || 10);
    while (time < $end) {
        my $r = $self->http('GET', '/', [], undef,
                            port => $self->{ready_port}, timeout => 2);
        return 1 if $r->{status} == 204;
        sleep 0.02;
    }
    return 0;
}

# the channel on which writers publish invalidations
sub channel { $_[0]{prefix} . 'invalidate' }

# subscribers on the invalidation channel (PUBSUB NUMSUB)
sub numsub {
    my ($self) = @_;
    my @r = $self->redis->pubsub('numsub', $self->channel);
    return $r[1] // 0;
}

# readiness of the cache: $n workers subscribed to the invalidation channel
# (10 s at most by default: ASan workers on a busy machine)
sub wait_subscribed {
    my ($self, $n, $timeout) = @_;
    my $end = time + ($timeout || 10);
    while (time < $end) {
        return 1 if $self->numsub == $n;
        sleep 0.02;
    }
    return 0;
}

sub nginx_t {
    my ($self, $conf) = @_;
    my $out = `$self->{nginx} -t -p $self->{dir}/ -c $conf -e $self->{dir}/t.log 2>&1`;
    return ($? >> 8, $out);
}

# `nginx -t` on a full nginx.conf written around an http{} body; returns
# (rc, output, path, line) where line is the number of the last line marked
# "# <-" (the directive a failure should point at)
sub check_conf {
    my ($self, $http) = @_;
    my $dir = $self->{dir};
    my $case = ++$self->{conf_case};
    my $path = "$dir/case$case.conf";
    my $conf = <<"CONF";
load_module $self->{module};
pid $dir/case$case.pid;
error_log $dir/case$case-error.log;
events { worker_connections 64; }
http {
    access_log off;
    client_body_temp_path $dir/body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
$http
}
CONF
    my ($line, $n) = (undef, 0);
    for (split /\n/, $conf) {
        $n++;
        $line = $n if /# <-/;
    }
    open my $fh, '>', $path or die;
    print $fh $conf;
    close $fh;
    my ($rc, $out) = $self->nginx_t($path);
    return ($rc, $out, $path, $line);
}

# an http{} body for check_conf: $top at http level (default: a Redis
# line), $loc inside "location /"
sub location_conf {
    my ($loc, $top) = @_;
    $top //= 'env_gateway_redis 127.0.0.1:6379;';
    return <<"H";
    $top
    server {
        listen 127.0.0.1:8080;
        location / {
            $loc
            return 200;
        }
    }
H
}

# check_conf that must pass
sub conf_ok {
    my ($self, $name, $http) = @_;
    my ($rc, $out) = $self->check_conf($http);
    is($rc, 0, "$name: accepted") or diag($out);
    return $out;
}

sub reload_nginx {
    my ($self) = @_;
    kill 'HUP', $self->{pids}{nginx};
}

# the workers of this instance's nginx master, sorted; /proc entries that
# vanish while we scan (other tests running) are skipped
sub worker_pids {
    my ($self) = @_;
    my $m = $self->{pids}{nginx} or return ();
    my @w;
    for my $d (glob '/proc/[0-9]*') {
        my ($pid) = $d =~ m{/proc/(\d+)$} or next;
        open my $f, '<', "$d/stat" or next;
        my $stat = <$f>;
        close $f;
        next unless defined $stat && $stat =~ /.*\)\s+\S+\s+(\d+)/s;
        push @w, $pid if $1 == $m;
    }
    return sort { $a <=> $b } @w;
}

sub slurp {
    my ($self, $name) = @_;
    open my $fh, '<', "$self->{dir}/$name" or return '';
    local $/;
    return scalar <$fh>;
}

sub backend_log { $_[0]->slurp('backend.log') }

# --- http ----------------------------------------------------------------

# http(METHOD, PATH, [header => value, ...], body) -> hashref
sub http {
    my ($self, $method, $path, $headers, $body, %opt) = @_;
    my $port = $opt{port} || $self->{port};
    my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port",
                                  Proto => 'tcp', Timeout => 10)
        or die "connect: $!";
    my $req = "$method $path HTTP/1.1\r\nHost: localhost\r\n"
            . "Connection: close\r\n";
    my @h = @{ $headers || [] };
    while (my ($k, $v) = splice @h, 0, 2) {
        $req .= "$k: $v\r\n";
    }
    if (defined $body) {
        $req .= "Content-Length: " . length($body) . "\r\n";
    }
    $req .= "\r\n";
    $req .= $body if defined $body;
    print $s $req;
    local $/;
    my $timeout = $opt{timeout} || 10;
    my $raw = '';
    eval {
        local $SIG{ALRM} = sub { die "timeout\n" };
        alarm $timeout;
        $raw = <$s> // '';
        alarm 0;
    };
    alarm 0;
    close $s;
    return parse_response($raw);
}

# the response on a socket a request was written to, read until the server
# closes it (Connection: close) or $timeout seconds (default 15) pass
sub read_response {
    my ($s, $timeout) = @_;
    my $raw = '';
    eval {
        local $SIG{ALRM} = sub { die "timeout\n" };
        alarm($timeout // 15);
        local $/;
        $raw = <$s> // '';
        alarm 0;
    };
    alarm 0;
    close $s;
    return parse_response($raw);
}

# the value of one series in a Prometheus exposition, exactly as written
# (labels included), or undef
sub series_value {
    my ($body, $series) = @_;
    for (split /\n/, $body) {
        my ($k, $v) = /^(\S+(?:\{.*\})?) (\S+)$/ or next;
        return $v if $k eq $series;
    }
    return undef;
}

sub parse_response {
    my ($raw) = @_;
    my ($head, $body) = split /\r\n\r\n/, $raw, 2;
    my %r = (raw => $raw, body => $body // '', headers => {});
    return { %r, status => 0 } unless defined $head && length $head;
    my @lines = split /\r\n/, $head;
    my $status_line = shift @lines;
    ($r{status}) = $status_line =~ m{^HTTP/\S+ (\d+)};
    $r{status} //= 0;
    for (@lines) {
        my ($k, $v) = split /:\s*/, $_, 2;
        $r{headers}{lc $k} = $v;
    }
    if (($r{headers}{'content-type'} // '') =~ m{application/json}) {
        $r{json} = eval { JSON::PP->new->decode($r{body}) };
    }
    return \%r;
}

sub get {
    my ($self, $path, $token, @h) = @_;
    return $self->http('GET', $path,
        [ (defined $token ? (Authorization => "Bearer $token") : ()), @h ]);
}

# --- teardown --------------------------------------------------------------

sub stop_pid {
    my ($self, $name, $sig) = @_;
    my $pid = delete $self->{pids}{$name} or return;
    kill($sig || 'TERM', $pid);
    my $end = time + 10;
    while (time < $end) {
        return if waitpid($pid, WNOHANG) == $pid;
        sleep 0.02;
    }
    kill 'KILL', $pid;
    waitpid($pid, 0);
}

sub check_log {
    my ($self) = @_;
    my $log = $self->slurp('error.log');
    my @bad = grep { /\[(alert|emerg|crit)\]|exited on signal|AddressSanitizer|runtime error:|LeakSanitizer/ }
              split /\n/, $log;
    # "worker process exited" on our own SIGKILL tests is flagged by them
    @bad = grep { !/$self->{allow_log}/ } @bad if $self->{allow_log};
    ok(!@bad, 'error.log has no alert, emerg, crit or crash')
        or diag(join "\n", @bad[0 .. ($#bad > 20 ? 20 : $#bad)]);
}

sub stop {
    my ($self) = @_;
    return if $self->{stopped}++;
    $self->stop_pid('nginx', 'QUIT') if $self->{pids}{nginx};
    for my $name (keys %{ $self->{pids} }) {
        $self->stop_pid($name);
    }
    $self->check_log if -e "$self->{dir}/error.log" && !$self->{no_log_check};
}

sub DESTROY {
    my ($self) = @_;
    local $?;
    for my $name (keys %{ $self->{pids} || {} }) {
        $self->stop_pid($name);
    }
}


# --- an upstream that echoes everything (boundary and lifecycle tests) -----

# A one-connection-at-a-time HTTP server on a free port that answers 200
# with the raw request (request line, every header as sent, body) as its
# body, and appends each request to echo.log.  Returns its port.
sub start_echo {
    my ($self) = @_;
    my $port = $self->{echo_port} ||= free_port();
    my $script = "$self->{dir}/echo.pl";
    open my $fh, '>', $script or die "$script: $!";
    print $fh <<'ECHO';
use strict;
use warnings;
use IO::Socket::INET;
my ($port, $log) = @ARGV;
$SIG{PIPE} = 'IGNORE';
my $srv = IO::Socket::INET->new(LocalAddr => "127.0.0.1:$port", Listen => 128,
                                Proto => 'tcp', ReuseAddr => 1)
    or die "listen $port: $!";
while (my $c = $srv->accept) {
    binmode $c;
    my $buf = '';
    while ($buf !~ /\r\n\r\n/) {
        my $n = sysread($c, $buf, 65536, length $buf);
        last unless $n;
    }
    # a connection that sent nothing (a port probe) is no request
    if ($buf eq '') {
        close $c;
        next;
    }
    my ($head, $body) = split /\r\n\r\n/, $buf, 2;
    $body //= '';
    if (defined $head && $head =~ /^transfer-encoding:\s*chunked/mi) {
        while ($body !~ /(?:^|\r\n)0\r\n\r\n\z/) {
            my $n = sysread($c, $body, 65536, length $body);
            last unless $n;
        }
    } elsif (defined $head && $head =~ /^content-length:\s*(\d+)/mi) {
        my $len = $1;
        while (length $body < $len) {
            my $n = sysread($c, $body, $len - length $body, length $body);
            last unless $n;
        }
    }
    my $req = ($head // '') . "\r\n\r\n" . $body;
    if (open my $l, '>>', $log) {
        binmode $l;
        print $l 'REQ ' . length($req) . "\n" . $req . "\n";
        close $l;
    }
    print $c "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
           . "Content-Length: " . length($req) . "\r\n"
           . "Connection: close\r\n\r\n" . $req;
    close $c;
}
ECHO
    close $fh;
    $self->spawn('echo', $^X, $script, $port, "$self->{dir}/echo.log");
    wait_port($port) or die "echo server did not start on $port";
    return $port;
}

sub echo_port { $_[0]{echo_port} }

# every request the echo server received, in order: hashrefs with method,
# uri, headers (a list of [name, value] as sent) and body
sub echo_requests {
    my ($self) = @_;
    my $log = $self->slurp('echo.log');
    my @r;
    while ($log =~ /\GREQ (\d+)\n/gc) {
        my $req = substr($log, pos($log), $1);
        pos($log) += $1 + 1;
        my ($head, $body) = split /\r\n\r\n/, $req, 2;
        my @lines = split /\r\n/, $head;
        my ($method, $uri) = split / /, shift(@lines) // '';
        my @h = map { [ split /:[ \t]*/, $_, 2 ] } @lines;
        push @r, { method => $method, uri => $uri, headers => \@h,
                   body => $body // '', raw => $req };
    }
    return @r;
}

sub echo_count { scalar(my @r = $_[0]->echo_requests) }

# values of the headers of an echoed request whose name reads as $name when
# compared as backends do: any case, '_' and '-' taken as equal
sub echo_header {
    my ($req, $name) = @_;
    (my $want = lc $name) =~ tr/_/-/;
    return map { $_->[1] } grep {
        (my $n = lc $_->[0]) =~ tr/_/-/;
        $n eq $want;
    } @{ $req->{headers} };
}

# the same, with the names as sent
sub echo_header_names {
    my ($req, $name) = @_;
    (my $want = lc $name) =~ tr/_/-/;
    return map { $_->[0] } grep {
        (my $n = lc $_->[0]) =~ tr/_/-/;
        $n eq $want;
    } @{ $req->{headers} };
}

# two environments of one team, a data token in each, an account in each:
# returns { dev => raw token, prod => raw token }
sub seed_two_envs {
    my ($self) = @_;
    $self->env('env_dev', 'team_a', 'development');
    $self->env('env_prod', 'team_a', 'production');
    my %tok;
    for my $e (qw(dev prod)) {
        $tok{$e} = $self->token('egw_' . $e . '_' . substr(sha256_hex("lc-$e"),
                                                          0, 24),
            token_id => "tok_$e", team_id => 'team_a',
            environment_id => "env_$e",
            environment => $e eq 'dev' ? 'development' : 'production');
        $self->account("acc_$e", "env_$e", tenant_id => "tenant_$e");
    }
    return \%tok;
}

our %ENV_NAME = (dev => 'development', stg => 'staging',
                 prod => 'production');

# The gateway most tests run against: team_a's environments env_<e> (e of
# dev, stg, prod), a data token in each given one, and an account
# acc_<e>_<integration> of each given integration in each environment of
# "accounts".  seed_gateway(envs => [qw(dev prod)], tokens => { dev => RAW },
# integrations => [...], accounts => [qw(dev)], account => { field => v })
# returns { e => raw token }.
sub seed_gateway {
    my ($self, %o) = @_;
    my @envs = @{ $o{envs} || [qw(dev prod)] };
    $self->env("env_$_", 'team_a', $ENV_NAME{$_}) for @envs;
    my %tok = %{ $o{tokens} || {} };
    for my $e (sort keys %tok) {
        $self->token($tok{$e}, token_id => "tok_$e", team_id => 'team_a',
                     environment_id => "env_$e",
                     environment => $ENV_NAME{$e});
    }
    for my $e (@{ $o{accounts} || \@envs }) {
        for my $b (@{ $o{integrations} || [] }) {
            $self->account("acc_${e}_$b", "env_$e", integration => $b,
                           %{ $o{account} || {} });
        }
    }
    return \%tok;
}

# The refusal contract, one test each: the status; Content-Type
# application/json; a body that is the JSON object {"status","error",
# "message"} and nothing else, its status the answer's, its error $code, a
# message; WWW-Authenticate: Bearer realm="env_gateway" on a 401 and on no
# other; Retry-After in seconds on a 503 or 429 and on no other.  Options:
#   count => CODE, before => N   CODE->() is still N: nothing reached an
#                                upstream (the caller's count of requests)
#   retry_after => V             Retry-After is exactly V
# Returns true when every check held.
sub refused {
    my ($r, $status, $code, $name, %opt) = @_;
    my $ok = is($r->{status}, $status, "$name: status $status");
    $ok &= like($r->{headers}{'content-type'} // '', qr{^application/json},
                "$name: Content-Type application/json");
    my $j = ref $r->{json} eq 'HASH' ? $r->{json} : {};
    $ok &= is_deeply([ sort keys %$j ], [qw(error message status)],
                     "$name: JSON {status, error, message}");
    $ok &= is($j->{status}, $status, "$name: JSON status $status");
    $ok &= is($j->{error}, $code, "$name: error $code");
    $ok &= ok(defined $j->{message} && !ref $j->{message}
              && length $j->{message}, "$name: a message");
    if ($status == 401) {
        $ok &= is($r->{headers}{'www-authenticate'},
                  'Bearer realm="env_gateway"', "$name: WWW-Authenticate");
    } else {
        $ok &= ok(!exists $r->{headers}{'www-authenticate'},
                  "$name: no WWW-Authenticate");
    }
    if ($status == 503 || $status == 429) {
        $ok &= defined $opt{retry_after}
            ? is($r->{headers}{'retry-after'}, $opt{retry_after},
                 "$name: Retry-After: $opt{retry_after}")
            : like($r->{headers}{'retry-after'} // '', qr/^\d+$/,
                   "$name: Retry-After");
    } else {
        $ok &= ok(!exists $r->{headers}{'retry-after'},
                  "$name: no Retry-After");
    }
    if ($opt{count}) {
        $ok &= is($opt{count}->(), $opt{before},
                  "$name: nothing reached an upstream");
    }
    diag(substr $r->{raw}, 0, 600) unless $ok;
    return $ok;
}


# the 503 of a gateway that cannot reach Redis and has nothing usable
# cached: refused(..., 503, 'gateway_unavailable', ...)
sub unavailable {
    my ($r, $name, %opt) = @_;
    return refused($r, 503, 'gateway_unavailable', $name, %opt);
}

# send bytes as they are (a request line, headers and a body written by the
# test) and read the answer until the server closes: parsed as http() does
sub raw_http {
    my ($self, $bytes, %opt) = @_;
    my $port = $opt{port} || $self->{port};
    my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port",
                                  Proto => 'tcp', Timeout => 10)
        or die "connect: $!";
    binmode $s;
    print $s $bytes;
    local $/;
    my $raw = '';
    eval {
        local $SIG{ALRM} = sub { die "timeout\n" };
        alarm($opt{timeout} || 10);
        $raw = <$s> // '';
        alarm 0;
    };
    alarm 0;
    close $s;
    return parse_response($raw);
}

1;
