# SPDX-License-Identifier: BSD-2-Clause
# envgw as a tool: --version, JSON errors with --json, a command group alone
# printing its help, token list with created_at, expires_at, last_used_at
# (the gateway's <prefix>last_used:<token_id>, set here in Redis directly)
# and --expiring, and the bash completion that the package installs.

use strict;
use warnings;

use lib 't/lib';
use Test::More;
use JSON::PP;
use File::Temp qw(tempdir);
use EnvGwTest;
use EnvGwCli;

my $t = EnvGwTest->new;
$t->start_redis;
my $c = EnvGwCli->new($t);
my $r = $t->redis;
my $TOP = $EnvGwTest::TOP;

# ---- --version ------------------------------------------------------------------

{
    open my $fh, '<', "$TOP/debian/changelog" or die;
    my ($version) = <$fh> =~ /\(([^)-]+)/;
    my $res = $c->ok_run('--version', '--version');
    is($res->{out}, "envgw $version\n", "--version: envgw $version "
                                      . '(debian/changelog)');
    $res = $c->ok_run('--json --version', '--json', '--version');
    is_deeply(decode_json($res->{out}), { name => 'envgw',
                                          version => $version },
              '--json --version');
}

# ---- --json: errors are JSON too ------------------------------------------------

sub json_err {
    my ($res) = @_;
    return [ map { eval { decode_json($_) } // { unparsed => $_ } }
             split /\n/, $res->{err} ];
}

{
    my $res = $c->run('--json', 'token', 'create');
    is($res->{rc}, 2, 'usage error with --json: exit 2');
    is_deeply(json_err($res),
              [ { error => 'token create: missing arguments', exit => 2,
                  usage => 'usage: envgw token create ENV [--kind '
                         . 'data|admin|account] [--ttl DURATION] '
                         . '[--account ID] [--rate-limit N/WINDOW]' } ],
              '... one JSON object on stderr: error, exit, usage');
    is($res->{out}, '', '... nothing on stdout');

    $res = $c->run('token', 'list', 'env_nope', '--json');
    is($res->{rc}, 1, 'a failure with --json after the command: exit 1');
    is_deeply(json_err($res),
              [ { error => "unknown environment 'env_nope' (no key "
                         . "envgw:env:env_nope; see 'envgw env list')",
                  exit => 1 } ], '... JSON');

    $res = $c->run('--json');
    is_deeply(json_err($res), [ { error => 'no command given', exit => 2,
                                  usage => "try 'envgw --help'" } ],
              'no command with --json: JSON');

    $res = $c->run('--json', 'frobnicate');
    is_deeply(json_err($res), [ { error => "unknown command 'frobnicate'",
                                  exit => 2, usage => "try 'envgw --help'" } ],
              'an unknown command with --json: JSON');

    $res = $c->run('--json', 'env', 'create', '--team', 't', "\xff\xfe");
    is(json_err($res)->[0]{error} =~ /bad environment name '\?\?'/ ? 1 : 0, 1,
       'bytes that are not UTF-8 still make valid JSON');

    $c->ok_run('env', 'env', 'create', '--team', 't', '--id', 'env_a', 'a');
    $res = $c->run('--json', 'account', 'add', 'env_a', 'acc_1',
                   '--integration', 'hubspot', '--tenant', 'acme');
    is($res->{rc}, 0, 'a warning with --json');
    is_deeply(json_err($res),
              [ { warning => "integration 'hubspot' is not installed in "
                           . "env_a yet (see 'envgw integration set')" } ],
              '... is a JSON line too');
    ok(eval { decode_json($res->{out}) }, '... and stdout stays JSON');

    $res = $c->run('env', 'list', 'extra');
    like($res->{err}, qr/^envgw: env list: unexpected argument 'extra'\nusage: envgw env list/,
         'without --json: text, as before');
}

# ---- a group alone prints its help ---------------------------------------------

for my $g (qw(token env account integration method)) {
    my $res = $c->run($g);
    is($res->{rc}, 0, "envgw $g alone: exit 0");
    like($res->{out}, qr/^  envgw $g \w+/m, "... lists the $g commands");
    unlike($res->{out}, qr/^  envgw (?!$g )\w/m, '... and only them');
}
like($c->run('token')->{out}, qr/envgw token create.*\n.*\n  envgw token list.*\n.*\n  envgw token revoke.*\n.*\n  envgw token rotate/,
     'envgw token: create, list, revoke, rotate');

# ---- token list: created_at, expires_at, last_used_at; --expiring ----------------

{
    my $now = time;
    my %tok;
    $tok{used}  = $c->json('token', 'create', 'env_a', '--ttl', '3d');
    $tok{later} = $c->json('token', 'create', 'env_a', '--ttl', '30d');
    $tok{never} = $c->json('token', 'create', 'env_a');
    $tok{gone}  = $c->json('token', 'create', 'env_a', '--ttl', '1d');
    $c->ok_run('revoke', 'token', 'revoke', $tok{gone}{token_id});

    my $used_at = $now - 3600;
    $r->set("envgw:last_used:$tok{used}{token_id}", $used_at);

    my $rows = { map { $_->{token_id} => $_ }
                 @{ $c->json('token', 'list', 'env_a') } };
    my $u = $rows->{ $tok{used}{token_id} };
    is($u->{last_used_at}, $used_at,
       'last_used_at: read from <prefix>last_used:<token_id>');
    ok(abs($u->{created_at} - $now) < 30, 'created_at');
    is($u->{expires_at}, $tok{used}{expires_at}, 'expires_at');
    my $n = $rows->{ $tok{never}{token_id} };
    ok(exists $n->{last_used_at} && !defined $n->{last_used_at},
       'a token never used: last_used_at null');
    ok(exists $n->{expires_at} && !defined $n->{expires_at},
       'no expiry: expires_at null');

    my $text = $c->ok_run('token list', 'token', 'list', 'env_a')->{out};
    like($text, qr/^TOKEN_ID\s+KIND\s+STATE\s+ENVIRONMENT\s+EXPIRES\s+LAST_USED\s+CREATED\s+ACCOUNT$/m,
         'token list: the columns');
    my @g = gmtime($used_at);
    my $iso = sprintf '%04d-%02d-%02dT%02d:%02d:%02dZ', $g[5] + 1900,
              $g[4] + 1, @g[3, 2, 1, 0];
    like($text, qr/^\Q$tok{used}{token_id}\E\s+data\s+active\s+a\s+\S+Z\s+\Q$iso\E\s+\S+Z\s+-$/m,
         'token list: the last use as a UTC time');
    like($text, qr/^\Q$tok{never}{token_id}\E\s+data\s+active\s+a\s+never\s+-\s+\S+Z\s+-$/m,
         'token list: "-" for a token never used');

    my @exp = map { $_->{token_id} }
              @{ $c->json('token', 'list', 'env_a', '--expiring', '7d') };
    is_deeply(\@exp, [ $tok{used}{token_id} ],
              '--expiring 7d: only the active token that expires within 7 days');
    is(scalar @{ $c->json('token', 'list', 'env_a', '--expiring', '60d') }, 2,
       '--expiring 60d: the 3d and the 30d token');
    my $res = $c->run('token', 'list', 'env_a', '--expiring', 'soon');
    is($res->{rc}, 2, 'bad --expiring: exit 2');

    $r->set("envgw:last_used:$tok{later}{token_id}", 'yesterday');
    $res = $c->run('--json', 'token', 'list', 'env_a');
    is($res->{rc}, 0, 'a last_used key that is not a time: still exit 0');
    like($res->{err}, qr/last_used:\Q$tok{later}{token_id}\E holds 'yesterday'/,
         '... with a warning');
    my ($l) = grep { $_->{token_id} eq $tok{later}{token_id} }
              @{ decode_json($res->{out}) };
    ok(!defined $l->{last_used_at}, '... and no last_used_at');
}

# ---- bash completion ---------------------------------------------------------

SKIP: {
    skip 'no bash', 1 unless -x '/bin/bash';
    my $comp = "$TOP/cli/envgw.bash-completion";
    my $bin = $c->bin;
    my $port = $t->{redis_port};

    # what completing the last word of the line offers
    my $complete = sub {
        my @words = @_;
        my $script = "source '$comp'\nCOMP_WORDS=("
                   . join(' ', map { "'$_'" } @words)
                   . ")\nCOMP_CWORD=$#words\n_envgw\n"
                   . 'printf "%s\n" "${COMPREPLY[@]}"' . "\n";
        open my $fh, '>', $t->dir . '/comp.sh' or die;
        print $fh $script;
        close $fh;
        return [ grep { length } split /\n/, `bash '@{[ $t->dir ]}/comp.sh'` ];
    };

    # every command and option of 'envgw --help' is completed
    my $help = $c->ok_run('--help', '--help')->{out};
    my @cmds = $help =~ /^  envgw (.+)$/mg;
    my %groups;
    for my $line (@cmds) {
        # "token create ENV [--kind ...]", "diff ENV_A ENV_B [--upstreams]"
        my ($words, $usage) = $line =~ /^([a-z]+(?: [a-z]+)?)(?: (.*))?$/;
        my @w = split / /, $words;
        $groups{ $w[0] }{ $w[1] // '' } = [ ($usage // '') =~ /(--[a-z-]+)/g ];
    }
    my $top = $complete->('envgw', '');
    for my $g (sort keys %groups) {
        ok((grep { $_ eq $g } @$top), "completes command $g");
        for my $sub (sort keys %{ $groups{$g} }) {
            my @words = ('envgw', $g);
            if ($sub ne '') {
                my $subs = $complete->('envgw', $g, '');
                ok((grep { $_ eq $sub } @$subs), "completes $g $sub");
                push @words, $sub;
            }
            my $opts = $complete->(@words, '--');
            for my $o (@{ $groups{$g}{$sub} }) {
                ok((grep { $_ eq $o } @$opts), "completes $g $sub $o");
            }
        }
    }
    my $g = $complete->('envgw', '--');
    ok((grep { $_ eq '--version' } @$g) && (grep { $_ eq '--json' } @$g),
       'completes the global options');
    is_deeply($complete->('envgw', 'token', 'create', '--kind', ''),
              [ qw(data admin account) ], 'completes --kind');
    $c->ok_run('second env', 'env', 'create', '--team', 't', '--id',
               'env_b', 'b');
    is_deeply($complete->($bin, '--redis', "127.0.0.1:$port", 'token', 'list',
                          ''),
              [ qw(env_a env_b) ], 'completes environment ids from Redis');
    is_deeply($complete->($bin, '--redis', "127.0.0.1:$port", 'diff', 'env_a',
                          'env_'),
              [ qw(env_a env_b) ], '... for both environments of diff');
    is_deeply($complete->($bin, '--redis', "127.0.0.1:$port", 'account',
                          'add', 'env_a', ''),
              [], '... and not where an account id goes');
}

# ---- installed where bash-completion finds it ---------------------------------

{
    my $dest = tempdir(CLEANUP => 1);
    my $out = `make -s -C '$TOP/cli' install DESTDIR='$dest' 2>&1`;
    is($?, 0, 'make -C cli install') or diag $out;
    ok(-x "$dest/usr/bin/envgw", '... installs /usr/bin/envgw');
    my $f = "$dest/usr/share/bash-completion/completions/envgw";
    ok(-f $f, '... and /usr/share/bash-completion/completions/envgw');
    is(`cmp '$f' '$TOP/cli/envgw.bash-completion' && echo same`, "same\n",
       '... the completion script');
}

# the Debian package, when 'make deb' has built it since the script changed
SKIP: {
    my ($deb) = sort { -M $a <=> -M $b } glob("$TOP/build/deb/envgw_*.deb");
    skip 'no build/deb/envgw_*.deb newer than the completion script (make deb)', 1
        unless $deb && -M $deb < -M "$TOP/cli/envgw.bash-completion";
    like(scalar `dpkg-deb -c '$deb'`,
         qr{ \./usr/share/bash-completion/completions/envgw$}m,
         'the envgw package installs the bash completion');
}

$t->stop;
done_testing;
