# SPDX-License-Identifier: BSD-2-Clause
# envgw against a TLS-only Redis with ACL users: --tls --cacert --tls-name
# --cert --key --user --password-file and their ENVGW_REDIS_* variables;
# the ACL user with the commands envgw needs writes what a gateway (its own
# ACL user, over TLS) serves at once; verification failures and option
# mistakes are refused with a message.

use strict;
use warnings;

use lib 't/lib';
use Test::More;
use JSON::PP;
use EnvGwTest;
use EnvGwCli;
use EnvGwTls;

my $t = EnvGwTest->new;
my $dir = $t->dir;
my $c = EnvGwTls::make_certs($t);
my $port = EnvGwTls::start_redis($t);

# envgw's user: every command it sends, on its prefix and channel
my @envgw_acl = ('envgw', 'on', '>envgw-pass', 'resetkeys', '~envgw:*',
                 'resetchannels', '&envgw:invalidate', '-@all',
                 map { "+$_" } qw(get mget smembers scan type set del sadd
                                  srem watch unwatch multi exec publish
                                  xadd xrange ping));
my @gw_acl = ('gw', 'on', '>gw-pass', 'resetkeys', '%R~envgw:*',
              'resetchannels', '&envgw:invalidate', '-@all', '+get',
              '+subscribe', '+ping');
is($t->redis->acl('setuser', @envgw_acl), 'OK', 'the envgw user');
is($t->redis->acl('setuser', @gw_acl), 'OK', 'the gateway user');
is($t->redis->acl('setuser', 'default', 'resetpass', '>admin-pass'), 'OK',
   'the default user needs a password');
$t->{redis} = EnvGwTls::client($t, $port, user => 'default',
                               pass => 'admin-pass');

sub write_file {
    my ($name, $text) = @_;
    open my $fh, '>', "$dir/$name" or die;
    print $fh $text;
    close $fh;
    chmod 0600, "$dir/$name";
    return "$dir/$name";
}

my $envgw_pw = write_file('envgw.pass', "envgw-pass\n");
my $gw_pw = write_file('gw.pass', "gw-pass\n");

my $cli = EnvGwCli->new($t);
my @tls = ('--tls', '--cacert', $c->{ca}, '--user', 'envgw',
           '--password-file', $envgw_pw);

sub envgw_json {
    my $res = $cli->run(@tls, '--json', @_);
    is($res->{rc}, 0, "envgw @_ over TLS: exit 0") or diag($res->{err});
    return eval { JSON::PP->new->decode($res->{out}) } // {};
}

$t->start_nginx(<<"EOF", subscribed => 1);
    env_gateway_redis 127.0.0.1:%%REDIS%% tls tls_ca=$c->{ca}
                      username=gw password_file=$gw_pw;
    env_gateway_cache zone=envgw:1m ttl=30s negative_ttl=30s;
    upstream backend { server 127.0.0.1:%%BACKEND%%; }
    server {
        listen 127.0.0.1:%%PORT%%;
        location / {
            env_gateway on;
            env_gateway_account \$arg_integrated_account_id;
            proxy_pass http://backend;
        }
    }
EOF

envgw_json('env', 'create', '--team', 'team_a', '--id', 'env_dev',
           'development');
envgw_json('account', 'add', 'env_dev', 'acc_dev', '--integration',
           'hubspot', '--tenant', 'acme');
my $tok = envgw_json('token', 'create', 'env_dev');
like($tok->{token} // '', qr/^egw_/, 'token create over TLS prints a token');
is($t->get('/x?integrated_account_id=acc_dev', $tok->{token})->{status}, 200,
   'the token envgw wrote over TLS is served by the TLS gateway');
my $list = envgw_json('token', 'list', 'env_dev');
is(scalar @{ ref $list eq 'ARRAY' ? $list : $list->{tokens} || [] }, 1,
   'token list over TLS');
envgw_json('token', 'revoke', $tok->{token_id});
is($t->get('/x?integrated_account_id=acc_dev', $tok->{token})->{status}, 401,
   'a revocation over TLS is published to the gateway at once');
my $audit = $cli->run(@tls, 'audit');
like($audit->{out}, qr/token revoke/, 'audit over TLS (XRANGE)');

# the environment variables instead of the options
{
    my $res = $cli->run({ env => {
        ENVGW_REDIS_TLS => '1', ENVGW_REDIS_CACERT => $c->{ca},
        ENVGW_REDIS_USER => 'envgw', ENVGW_REDIS_PASSWORD_FILE => $envgw_pw,
        ENVGW_REDIS_TLS_NAME => 'redis.test' } }, 'env', 'list');
    is($res->{rc}, 0, 'ENVGW_REDIS_TLS, _CACERT, _USER, _PASSWORD_FILE, '
       . '_TLS_NAME: exit 0') or diag($res->{err});
    like($res->{out}, qr/env_dev/, '... and the environments are listed');
}

# the client certificate, to a server that requires one
{
    my $mport = EnvGwTls::start_redis($t, name => 'redis_mtls',
                                      auth_clients => 1);
    # envgw run against the second server (a view of $t that owns no pid)
    my $m = EnvGwCli->new(bless { %$t, pids => {}, stopped => 1,
                                  redis_port => $mport }, 'EnvGwTest');
    my $res = $m->run('--tls', '--cacert', $c->{ca}, '--cert',
                      $c->{client_cert}, '--key', $c->{client_key},
                      'env', 'list');
    is($res->{rc}, 0, '--cert and --key to a server requiring them: exit 0')
        or diag($res->{err});
    $res = $m->run('--tls', '--cacert', $c->{ca}, 'env', 'list');
    is($res->{rc}, 1, 'no client certificate where one is required: exit 1');
    like($res->{err}, qr/Redis at 127\.0\.0\.1:$mport: .*certificate required/,
         '... with a message') or diag($res->{err});
}

# what fails, and why
my @fail = (
    [ [ '--tls', '--cacert', $c->{other_ca}, @tls[3 .. 6] ], 1,
      qr/TLS to Redis at 127\.0\.0\.1:$port: certificate verify failed/,
      'an unknown CA' ],
    [ [ @tls, '--tls-name', 'wrong.test' ], 1,
      qr/certificate verify failed: .*(?i:hostname mismatch).*want "wrong\.test"/,
      'a wrong --tls-name' ],
    [ [ '--tls', @tls[3 .. 6] ], 1, qr/certificate verify failed/,
      'the system store does not know the test CA' ],
    [ [ @tls[0 .. 4], '--password', 'wrong' ], 1,
      qr/authentication failed: WRONGPASS/, 'a wrong password' ],
    [ [ @tls[0 .. 2] ], 1, qr/NOAUTH|authentication/i, 'no password' ],
    [ [ '--cacert', $c->{ca} ], 2, qr/need --tls/, '--cacert without --tls' ],
    [ [ @tls, '--cert', $c->{client_cert} ], 2,
      qr/--cert and --key go together/, '--cert without --key' ],
    [ [ @tls, '--password', 'x' ], 2,
      qr/--password and --password-file: use one/,
      '--password and --password-file' ],
    [ [ '--tls', '--cacert', $c->{ca}, '--user', 'envgw',
        '--password-file', write_file('empty.pass', "\n") ], 1,
      qr/password file .* is empty/, 'an empty password file' ],
    [ [ '--tls', '--cacert', $c->{ca}, '--user', 'envgw' ], 2,
      qr/--user needs --password/, '--user without a password' ],
);
for my $case (@fail) {
    my ($args, $rc, $re, $name) = @$case;
    my $res = $cli->run(@$args, 'env', 'list');
    is($res->{rc}, $rc, "$name: exit $rc");
    like($res->{err}, $re, "$name: the message says why") or diag($res->{err});
    unlike($res->{err}, qr/envgw-pass/, "$name: no password in the message");
}

# a plain-TCP client of the TLS-only server gets nothing
{
    my $res = $cli->run(@tls[3 .. 6], 'env', 'list');
    is($res->{rc}, 1, 'without --tls to a TLS-only Redis: exit 1');
}

# ACL: envgw's user cannot read outside its prefix, the gateway's cannot write
{
    my $g = EnvGwTls::client($t, $port, user => 'gw', pass => 'gw-pass');
    like(scalar $g->set('envgw:x', '1') // '', qr/NOPERM/,
         "the gateway's user cannot write");
}

$t->stop;
done_testing;
