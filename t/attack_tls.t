#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# TLS to Redis under attack: Redis servers whose certificate must not be
# accepted by a gateway with tls_verify on (the default) and the CA that
# issued the good certificate: an expired certificate, a self-signed one
# naming the right address, the CA's own certificate served by the server,
# a certificate of that CA for another name, one for a client only.  Each
# is Redis unavailable: 503, nothing reaches the backend, one error line,
# although each server holds the token (a verification let through: 200).

use strict;
use warnings;

use lib 't/lib';
use Test::More;
use EnvGwTest qw(unavailable);
use EnvGwTls;

my $t = EnvGwTest->new;
my $dir = $t->dir;
my $c = EnvGwTls::make_certs($t);
EnvGwTls::start_redis($t);

my $tok = $t->seed_gateway(tokens => { dev => 'egw_tls_attack_token_0123456789' });
my $good = $tok->{dev};
# the servers below start from this dump: a verification let through would
# find the token and answer 200
$t->redis->command('SAVE');

sub run {
    my $out = `@_ 2>&1`;
    die "openssl failed: @_\n$out" if $?;
}

my @key = ('-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1',
           '-nodes');

# a certificate of the test CA: name, extensions, days (negative: expired)
sub issued {
    my ($name, $ext, $days) = @_;
    open my $fh, '>', "$dir/$name.ext" or die;
    print $fh $ext;
    close $fh;
    run('openssl', 'req', '-new', @key, '-keyout', "$dir/$name.key",
        '-out', "$dir/$name.csr", '-subj', "'/CN=127.0.0.1'");
    run('openssl', 'x509', '-req', '-in', "$dir/$name.csr", '-CA', $c->{ca},
        '-CAkey', "$dir/ca.key", '-CAcreateserial', '-days', $days,
        '-extfile', "$dir/$name.ext", '-out', "$dir/$name.crt");
    chmod 0600, "$dir/$name.key";
    return ("$dir/$name.crt", "$dir/$name.key");
}

my $SAN = "subjectAltName=DNS:localhost,IP:127.0.0.1\n";
my %certs = (
    expired => [ issued('expired', $SAN . "extendedKeyUsage=serverAuth\n",
                        -1) ],
    other_name => [ issued('othername', "subjectAltName=DNS:other.test\n"
                           . "extendedKeyUsage=serverAuth\n", 2) ],
    client_only => [ issued('clientonly', $SAN
                            . "extendedKeyUsage=clientAuth\n", 2) ],
    ca_itself => [ $c->{ca}, "$dir/ca.key" ],
);
run('openssl', 'req', '-x509', '-new', @key, '-days', '2',
    '-keyout', "$dir/self.key", '-out', "$dir/self.crt",
    '-subj', "'/CN=127.0.0.1'", '-addext', "'subjectAltName=IP:127.0.0.1'");
chmod 0600, "$dir/self.key";
$certs{self_signed} = [ "$dir/self.crt", "$dir/self.key" ];

# a gateway of its own on the Redis of $port, with the test CA
sub gateway {
    my ($port) = @_;
    my $g = EnvGwTest->new;
    $g->{redis_port} = $port;
    $g->start_nginx(<<"EOF");
    env_gateway_redis 127.0.0.1:%%REDIS%% tls tls_ca=$c->{ca}
                      connect_timeout=500ms read_timeout=500ms;
    server {
        listen 127.0.0.1:%%PORT%%;
        location / {
            env_gateway on;
            proxy_pass http://127.0.0.1:%%BACKEND%%;
        }
    }
EOF
    return $g;
}

# the control: the CA's server certificate, the same configuration
my $g = gateway($t->redis_port);
is($g->get('/x', $good)->{status}, 200, 'the CA\'s server certificate: 200');
$g->stop;

for my $case (
    [ expired => 'an expired certificate of the CA',
      qr/TLS certificate verify error: \(10:certificate has expired\)/ ],
    [ self_signed => 'a self-signed certificate naming the address',
      qr/TLS certificate verify error/ ],
    [ ca_itself => 'the CA\'s own certificate as the server\'s',
      qr/TLS certificate does not match "127\.0\.0\.1"/ ],
    [ other_name => 'a certificate of the CA for another name',
      qr/TLS certificate does not match "127\.0\.0\.1"/ ],
    [ client_only => 'a certificate of the CA for clients only',
      qr/TLS certificate verify error: \(26:unsuitable certificate purpose\)/ ])
{
    my ($which, $name, $re) = @$case;
    my ($crt, $key) = @{ $certs{$which} };
    my $port = EnvGwTls::start_redis($t, name => "redis_$which",
        args => [ '--tls-cert-file', $crt, '--tls-key-file', $key ]);
    $g = gateway($port);
    my $r = $g->get('/x', $good);
    unavailable($r, $name);
    unlike($g->backend_log, qr/\S/, "$name: nothing reached the backend");
    my @err = grep { /\[error\]/ && /$re/ } split /\n/, $g->slurp('error.log');
    ok(@err >= 1, "$name: the error line says why")
        or diag($g->slurp('error.log'));
    $g->stop;
}

done_testing;
