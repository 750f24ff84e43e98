#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# Debian packages (make deb): libnginx-mod-http-env-gateway and envgw install
# on this machine the way Debian's own libnginx-mod-* do -- the module in
# /usr/lib/nginx/modules, its load snippet in modules-available, enabled by a
# modules-enabled symlink --, they ship every page of docs/, the example
# configuration, the man page and a DEP-5 copyright naming BSD-2-Clause,
# conf.example passes `nginx -t` with the module loaded by that symlink
# alone, the installed module answers requests, and removing then purging
# leaves nothing behind.
#
# It installs packages into the system (dpkg -i, as root), so it runs only
# under `make test-deb` (ENVGW_TEST_DEB=1), never in `make test`.  It builds
# build/deb/*.deb with `make deb` when they are missing.  Never leaves the
# packages installed: an END block purges whatever this test installed, and
# packages it did not install are left alone (the test skips).

use strict;
use warnings;

use lib 't/lib';
use EnvGwTest;
use Fcntl qw(:flock);
use Test::More;
use Time::HiRes qw(sleep);

my $TOP = $EnvGwTest::TOP;
my $MOD_PKG = 'libnginx-mod-http-env-gateway';
my $CLI_PKG = 'envgw';
my $SO = '/usr/lib/nginx/modules/ngx_env_gateway_module.so';
my $AVAIL = '/usr/share/nginx/modules-available/mod-http-env-gateway.conf';
my $ENABLED = '/etc/nginx/modules-enabled/50-mod-http-env-gateway.conf';
my $NGINX = '/usr/sbin/nginx';

sub have { system("command -v $_[0] >/dev/null 2>&1") == 0 }

plan skip_all => 'installs the packages into the system: '
                 . 'run it with `make test-deb` (ENVGW_TEST_DEB=1)'
    unless $ENV{ENVGW_TEST_DEB};
if ($> != 0 || !have('dpkg')) {
    plan tests => 1;
    fail('make test-deb installs packages with dpkg: run it as root');
    exit;
}
plan skip_all => "needs Debian's nginx ($NGINX)" unless -x $NGINX;

sub installed {
    my ($pkg) = @_;
    my $s = `dpkg-query -W -f='\${Status}' $pkg 2>/dev/null`;
    return $s =~ /\binstall ok installed\b/;
}

sub pkg_known {
    my ($pkg) = @_;
    my $s = `dpkg-query -W -f='\${Status}' $pkg 2>/dev/null`;
    return $? == 0 && $s !~ /not-installed/;
}

for my $p ($MOD_PKG, $CLI_PKG) {
    plan skip_all => "$p is already installed here: not touching an "
                   . "installation this test did not make" if pkg_known($p);
}

# one run of this test at a time on the machine (others may run make test)
open my $lock, '>', '/tmp/envgw-deb-package-test.lock' or die "lock: $!";
flock($lock, LOCK_EX) or die "flock: $!";

sub debs {
    my %d;
    for my $p ($MOD_PKG, $CLI_PKG) {
        my @f = sort { -M $a <=> -M $b } glob("$TOP/build/deb/${p}_*.deb");
        $d{$p} = $f[0] if @f;
    }
    return \%d;
}

my $debs = debs();
if (!$debs->{$MOD_PKG} || !$debs->{$CLI_PKG}) {
    my $tools = have('dpkg-buildpackage') && have('dh')
        && -e '/usr/share/perl5/Debian/Debhelper/Buildsystem/nginx_mod.pm';
    plan skip_all => 'no build/deb/*.deb: run `make deb` first' unless $tools;
    diag('building the packages: make deb (about 1.5 minutes)');
    my $out = `make -s -C $TOP deb 2>&1`;
    $debs = debs();
    plan skip_all => "make deb failed:\n$out"
        unless $debs->{$MOD_PKG} && $debs->{$CLI_PKG};
}

my $t = EnvGwTest->new(module => $SO);
my $dir = $t->dir;

# dpkg fails at once when another apt/dpkg holds its lock: wait for it
sub dpkg {
    my (@args) = @_;
    my $out = '';
    for (1 .. 120) {
        $out = `dpkg @args 2>&1`;
        return (0, $out) if $? == 0;
        last unless $out =~ /lock/i;
        sleep 1;
    }
    return ($? >> 8 || 1, $out);
}

my $we_installed = 0;

# a signal ends the test through exit, so the END block still runs
$SIG{$_} = sub { exit 1 } for qw(INT TERM HUP);

END {
    # whatever happened above: leave the machine as it was
    if ($we_installed) {
        my @left = grep { pkg_known($_) } ($MOD_PKG, $CLI_PKG);
        if (@left) {
            my ($rc, $out) = dpkg('--purge', @left);
            print STDERR "# cleanup: dpkg --purge @left failed: $out\n" if $rc;
        }
    }
}

# --- the package files -----------------------------------------------------

{
    my $info = `dpkg-deb -f $debs->{$MOD_PKG} Depends Recommends Section`;
    like($info, qr/Depends:.*\bnginx-abi-[\d.]+-\d+\b/,
         "$MOD_PKG depends on nginx's module ABI")
        or diag($info);
    my $abi = `grep -h '^nginx:abi=' /usr/share/nginx/src/debian/libnginx-mod.abisubstvars 2>/dev/null`;
    if ($abi =~ /=(\S+)/) {
        like($info, qr/\b\Q$1\E\b/, "the ABI is nginx-dev's ($1)");
    }
    my $files = `dpkg-deb -c $debs->{$MOD_PKG}`;
    like($files, qr{\./usr/lib/nginx/modules/ngx_env_gateway_module\.so$}m,
         'ships the module .so');
    like($files, qr{\./usr/share/nginx/modules-available/mod-http-env-gateway\.conf$}m,
         'ships the modules-available snippet');
    my $doc = "./usr/share/doc/$MOD_PKG";
    for my $page (map { (split m{/})[-1] } glob("$TOP/docs/*.md")) {
        like($files, qr{^\S+\s+\S+\s+\d+\s+\S+\s+\S+\s+\Q$doc/$page\E(?:\.gz)?$}m,
             "$MOD_PKG ships docs/$page");
    }
    like($files, qr{\Q$doc\E/examples/conf\.example$}m,
         "$MOD_PKG ships conf.example as an example");
    like($files, qr{\Q$doc\E/copyright$}m, "$MOD_PKG ships its copyright");
    $files = `dpkg-deb -c $debs->{$CLI_PKG}`;
    like($files, qr{\./usr/bin/envgw$}m, "$CLI_PKG ships /usr/bin/envgw");
    like($files, qr{\./usr/share/man/man1/envgw\.1\.gz$}m,
         "$CLI_PKG ships the man page");
    like($files, qr{\./usr/share/doc/$CLI_PKG/cli\.md(?:\.gz)?$}m,
         "$CLI_PKG ships docs/cli.md");
}

# the licence: debian/copyright is machine-readable (DEP-5), BSD-2-Clause,
# with the LICENSE file's text
{
    open my $fh, '<', "$TOP/debian/copyright" or die "debian/copyright: $!";
    my $c = do { local $/; <$fh> };
    like($c, qr{\AFormat: https://www\.debian\.org/doc/packaging-manuals/copyright-format/1\.0/\n}m,
         'debian/copyright is DEP-5');
    like($c, qr{^Files: \*\nCopyright: 2026, the env_gateway authors\nLicense: BSD-2-Clause$}m,
         'every file: BSD-2-Clause, the env_gateway authors');
    open $fh, '<', "$TOP/LICENSE" or die "LICENSE: $!";
    my $l = do { local $/; <$fh> };
    like($l, qr/\ACopyright \(c\) 2026, the env_gateway authors\n/,
         'LICENSE names the authors');
    my ($body) = $c =~ /^License: BSD-2-Clause\n((?: .*\n)+)/m;
    $body //= '';
    $body =~ s/^ \.$//mg;
    $body =~ s/^ //mg;
    (my $text = $l) =~ s/\A.*\n\n//;
    is($body, $text, 'debian/copyright carries the text of LICENSE');
}

# --- install -------------------------------------------------------------

$we_installed = 1;
my ($rc, $out) = dpkg('-i', $debs->{$CLI_PKG}, $debs->{$MOD_PKG});
is($rc, 0, 'dpkg -i installs both packages') or diag($out);
ok(installed($MOD_PKG), "$MOD_PKG installed");
ok(installed($CLI_PKG), "$CLI_PKG installed");

ok(-f $SO, "module at $SO");
ok(-f $AVAIL, "snippet at $AVAIL");
{
    open my $fh, '<', $AVAIL;
    my $snippet = $fh ? do { local $/; <$fh> } : '';
    # comment lines (the licence header) aside, one load_module line
    (my $directives = $snippet) =~ s/^\s*#.*\n//mg;
    is($directives, "load_module modules/ngx_env_gateway_module.so;\n",
       'the snippet loads the module from nginx\'s modules directory');
}
ok(-l $ENABLED, "enabled on install: $ENABLED is a symlink");
is(readlink($ENABLED) // '', $AVAIL, '... to the modules-available snippet');

# --- envgw ---------------------------------------------------------------

$out = `/usr/bin/envgw --help 2>&1`;
is($? >> 8, 0, 'envgw --help exits 0');
like($out, qr/^usage: envgw/m, 'envgw --help prints the usage');
ok(-f '/usr/share/man/man1/envgw.1.gz', 'man page at /usr/share/man/man1/envgw.1.gz');
SKIP: {
    skip 'man is not installed', 2 unless have('man');
    my $path = `man -w envgw 2>&1`;
    like($path, qr{/usr/share/man/man1/envgw\.1\.gz}, 'man -w envgw finds it');
    my $page = `MANWIDTH=80 man envgw 2>/dev/null | col -b 2>/dev/null`;
    like($page, qr/envgw - admin tool for the env_gateway nginx module/,
         'man envgw renders the page');
}

# --- nginx -t with conf.example, the module loaded by modules-enabled --------

{
    open my $fh, '<', "$TOP/conf.example" or die "conf.example: $!";
    my $conf = do { local $/; <$fh> };
    close $fh;

    # as /etc/nginx/nginx.conf does: the package's snippet loads the module
    my $n = $conf =~ s{^\s*load_module\s+\S*ngx_env_gateway_module\.so\s*;[^\n]*\n}
                      {include /etc/nginx/modules-enabled/*.conf;\n}mg;
    is($n, 1, 'conf.example: its load_module line replaced by the '
              . 'modules-enabled include');

    # file paths of the example go into the test's directory
    mkdir "$dir/example";
    my $i = 0;
    $conf =~ s{^(\s*(?:pid|lock_file|error_log|access_log
                   |(?:client_body|proxy|fastcgi|uwsgi|scgi)_temp_path)\s+)
               ((?:/|\.\.?/|[\w.-]+/)[^\s;]*|[\w.-]+\.(?:log|pid))}
              {$1 . "$dir/example/" . ++$i . '-' . (split m{/}, $2)[-1]}gmxe;

    my $path = "$dir/example/nginx.conf";
    open $fh, '>', $path or die;
    print $fh $conf;
    close $fh;

    # no -p: Debian's prefix, where modules/ is /usr/lib/nginx/modules
    $out = `$NGINX -t -c $path -e $dir/example/t.log 2>&1`;
    is($? >> 8, 0, 'nginx -t accepts conf.example with the packaged module')
        or diag($out);
    like($out, qr/test is successful/, 'nginx -t: test is successful');

    # without the include, the module's directives are unknown: the module
    # really comes from the package's snippet
    (my $bare = $conf) =~ s{^include /etc/nginx/modules-enabled/\*\.conf;\n}{}m;
    open $fh, '>', "$dir/example/bare.conf" or die;
    print $fh $bare;
    close $fh;
    $out = `$NGINX -t -c $dir/example/bare.conf -e $dir/example/t.log 2>&1`;
    like($out, qr/unknown directive "env_gateway_\w+"/,
         'without modules-enabled the directives are unknown');
}

# --- the installed module works --------------------------------------------

{
    $t->start_redis;
    $t->env('env_prod', 'team_1', 'production');
    my $tok = $t->token('egw_deb_package_test', token_id => 'tok_deb',
                        environment_id => 'env_prod', team_id => 'team_1',
                        environment => 'production');
    $t->start_nginx(<<'H');
    env_gateway_redis 127.0.0.1:%%REDIS%%;
    server {
        listen 127.0.0.1:%%PORT%%;
        location / {
            env_gateway on;
            proxy_set_header X-Environment-Id $env_gateway_environment_id;
            proxy_pass http://127.0.0.1:%%BACKEND%%;
        }
    }
H
    my $r = $t->get('/x', $tok);
    is($r->{status}, 200, 'the packaged module lets a valid token through');
    like($r->{body}, qr/env=env_prod/, '... stamped with its environment');
    $r = $t->get('/x');
    is($r->{status}, 401, 'and refuses a request without a token');
    is($r->{json}{error}, 'missing_token', '... as missing_token');
    $t->stop;
}

# --- remove, then purge ------------------------------------------------------

($rc, $out) = dpkg('-r', $MOD_PKG, $CLI_PKG);
is($rc, 0, 'dpkg -r removes both') or diag($out);
ok(!-e $SO, 'module file removed');
ok(!-e $AVAIL, 'snippet removed');
ok(!-e $ENABLED && !-l $ENABLED, 'modules-enabled symlink removed');
ok(!-e '/usr/bin/envgw', '/usr/bin/envgw removed');
ok(!-e '/usr/share/man/man1/envgw.1.gz', 'man page removed');
ok(!installed($_), "$_ no longer installed") for $MOD_PKG, $CLI_PKG;
$out = `$NGINX -t -c /etc/nginx/nginx.conf 2>&1`;
is($? >> 8, 0, 'the system nginx.conf still passes nginx -t') or diag($out);

($rc, $out) = dpkg('--purge', $MOD_PKG, $CLI_PKG);
is($rc, 0, 'dpkg --purge purges both') or diag($out);
ok(!-l "$ENABLED.removed", 'no .removed symlink left after purge');
ok(!pkg_known($_), "$_ gone from dpkg's database") for $MOD_PKG, $CLI_PKG;
$we_installed = 0 unless grep { pkg_known($_) } $MOD_PKG, $CLI_PKG;

done_testing;
