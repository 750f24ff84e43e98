# SPDX-License-Identifier: BSD-2-Clause
# The audit trail: every envgw write appends one entry to the Redis stream
# <prefix>audit (time, actor, command, environments, changed keys) inside
# the MULTI/EXEC of the write itself; nothing else does; the stream keeps
# about --audit-maxlen entries; 'envgw audit' reads it back.

use strict;
use warnings;

use lib 't/lib';
use Test::More;
use JSON::PP;
use Time::HiRes qw(sleep);
use EnvGwTest;
use EnvGwCli;

my $t = EnvGwTest->new;
$t->start_redis;
my $c = EnvGwCli->new($t);
$c->subscribe;
my $r = $t->redis;
my $me = getpwuid($<);

sub xlen { $r->exists('envgw:audit') ? $r->xlen('envgw:audit') : 0 }

my $resources = $t->dir . '/res.json';
{
    open my $fh, '>', $resources or die;
    print $fh '{"contacts":{"list":{"method":"GET","path":"/contacts"}}}';
    close $fh;
}

# ---- an entry for every write, with the keys it published -------------------

# [ args, environments, command as recorded (default: the args) ]
my @writes = (
    [ [ qw(env create --team team_a --id env_a alpha) ], ['env_a'],
      'env create alpha --team team_a --id env_a' ],
    [ [ qw(env create --team team_a --id env_b beta) ], ['env_b'],
      'env create beta --team team_a --id env_b' ],
    [ [ 'integration', 'set', 'env_a', 'hubspot', '--upstream', 'http://h',
        '--resources', $resources ], ['env_a'] ],
    [ [ qw(method set env_a hubspot contacts merge POST /merge) ], ['env_a'] ],
    [ [ qw(method set env_a hubspot deals list GET /deals) ], ['env_a'] ],
    [ [ qw(method remove env_a hubspot deals list) ], ['env_a'] ],
    [ [ qw(promote env_a env_b) ], ['env_b'] ],
    [ [ qw(account add env_a acc_1 --integration hubspot --tenant acme) ],
      ['env_a'] ],
    [ [ qw(account disable acc_1) ], ['env_a'] ],
    [ [ qw(account enable acc_1) ], ['env_a'] ],
    [ [ qw(token create env_a --ttl 30d) ], ['env_a'] ],
    [ [ qw(token create env_a --kind account --account acc_1) ], ['env_a'] ],
    [ [ qw(account remove acc_1) ], ['env_a'] ],
    [ [ qw(integration remove env_b hubspot) ], ['env_b'] ],
);
my %tok;       # token id by the command that minted it
for my $w (@writes) {
    my ($args, $envs, $recorded) = @$w;
    $recorded //= join ' ', @$args;
    my $n = xlen();
    my $t0 = time;
    my ($res, $pub) = $c->run_published(@$args);
    is($res->{rc}, 0, "$recorded: exit 0") or diag $res->{err};
    $tok{$recorded} = $1 if $res->{out} =~ /^token_id: (\S+)$/m;
    is(xlen(), $n + 1, "$recorded: one audit entry");
    my $e = ($c->audit)[-1];
    is($e->{command}, $recorded, "$recorded: its command");
    is($e->{actor}, $me, "$recorded: the OS user as actor");
    ok($e->{time} >= $t0 && $e->{time} <= time, "$recorded: its time");
    is_deeply($e->{environments}, $envs, "$recorded: its environment");
    is_deeply([ sort @{ $e->{keys} } ], $pub,
              "$recorded: the keys it changed, as published");
}

# rotate and revoke name the token's environment, found from its record
my $tid = $tok{'token create env_a --ttl 30d'};
for my $args ([ 'token', 'rotate', $tid, '--grace', '1h' ],
              [ 'token', 'revoke', $tid ]) {
    my ($res, $pub) = $c->run_published(@$args);
    is($res->{rc}, 0, "@$args: exit 0");
    my $e = ($c->audit)[-1];
    is($e->{command}, "@$args", "@$args: recorded");
    is_deeply($e->{environments}, ['env_a'], "@$args: its environment");
    is_deeply([ sort @{ $e->{keys} } ], $pub, "@$args: its keys");
}

# apply and env delete
{
    my $doc = $c->ok_run('export', 'export', 'env_a')->{out};
    my $file = $t->dir . '/a.json';
    open my $fh, '>', $file or die;
    print $fh $doc;
    close $fh;
    my ($res, $pub) = $c->run_published('apply', $file, '--env', 'env_b');
    is($res->{rc}, 0, 'apply: exit 0');
    my $e = ($c->audit)[-1];
    is($e->{command}, "apply $file --env env_b", 'apply: recorded');
    is_deeply([ sort @{ $e->{keys} } ], $pub, 'apply: its keys');

    ($res, $pub) = $c->run_published(qw(env delete env_b --force));
    is($res->{rc}, 0, 'env delete: exit 0');
    $e = ($c->audit)[-1];
    is($e->{command}, 'env delete env_b --force', 'env delete: recorded');
    is_deeply([ sort @{ $e->{keys} } ], $pub, 'env delete: its keys');
}

# ---- no entry for what writes nothing -------------------------------------------

{
    my @none = (
        [ 'a read', qw(env list) ],
        [ 'a read', qw(token list env_a) ],
        [ 'a read', qw(export env_a) ],
        [ 'a read', qw(audit) ],
        [ 'a failed write', qw(env create --team team_a --id env_a again) ],
        [ 'a refused write', qw(token create env_nope) ],
        [ 'a no-op', qw(method set env_a hubspot contacts merge POST /merge) ],
        [ 'a no-op', 'token', 'revoke', $tid ],
        [ 'a dry run', qw(promote env_a env_other --dry-run) ],
    );
    for my $n (@none) {
        my ($what, @args) = @$n;
        my $before = xlen();
        $c->run(@args);
        is(xlen(), $before, "$what (@args): no audit entry");
    }
}

# ---- --actor; global options are not recorded ----------------------------------

{
    $c->ok_run('--actor', '--actor', 'alice@example', 'env', 'create',
               '--team', 'team_a', '--id', 'env_c', 'gamma');
    is(($c->audit)[-1]{actor}, 'alice@example', '--actor names the actor');
    my $res = $c->run('--actor', "a\nb", 'env', 'list');
    is($res->{rc}, 2, 'an actor with a control character: exit 2');

    $r->config_set('requirepass', 's3cret');
    $c->ok_run('with a password', '--password', 's3cret', '--db', '0',
               'integration', 'set', 'env_c', 'zendesk', '--upstream',
               'http://z');
    $r->config_set('requirepass', '');
    unlike(join("\n", map { $_->{command} } $c->audit), qr/s3cret|--db/,
           'the password and other global options are never recorded');
}

# ---- the same transaction as the write ----------------------------------------

{
    $t->spawn('monitor', 'redis-cli', '-p', $t->{redis_port}, 'monitor');
    # MONITOR shows what runs once it is attached: wait until it shows a
    # PING, and after the write until it shows an ECHO sent after it (at
    # most 10 s each)
    my $shows = sub {
        my ($re, $ask) = @_;
        my $end = Time::HiRes::time() + 10;
        while (Time::HiRes::time() < $end) {
            $ask->() if $ask;
            return 1 if $t->slurp('monitor.out') =~ $re;
            sleep 0.02;
        }
        return 0;
    };
    ok($shows->(qr/"ping"/i, sub { $r->ping }), 'MONITOR attached');
    $c->ok_run('monitored write', qw(method set env_c zendesk t list GET /t));
    $r->echo('monitor-end');
    ok($shows->(qr/"monitor-end"/), 'MONITOR showed everything before the ECHO');
    $t->stop_pid('monitor');
    my @cmds = map { /"(\w+)"/ ? uc $1 : () } split /\n/, $t->slurp('monitor.out');
    my @w = grep { /^(SET|XADD|PUBLISH|MULTI|EXEC)$/ } @cmds;
    is_deeply(\@w, [ qw(MULTI SET XADD PUBLISH EXEC) ],
              'XADD stands inside the MULTI/EXEC of the write');
}

# ---- a wrong type refuses the write before anything is written -----------------

{
    $r->set('wt:audit', 'not a stream');
    my $before = $c->dump_all;
    my $res = $c->run('--prefix', 'wt:', 'env', 'create', '--team', 't',
                      'x');
    is($res->{rc}, 1, 'audit key of another type: exit 1');
    like($res->{err}, qr/key wt:audit is a string, not a stream/, '... says so');
    is($c->dump_all, $before, '... and writes nothing');
    $r->del('wt:audit');
}

# ---- the cap --------------------------------------------------------------------

{
    # trimming with ~ removes whole stream nodes: small nodes make it visible
    $r->config_set('stream-node-max-entries', 4);
    for my $i (1 .. 30) {
        $c->run('--prefix', 'cap:', '--audit-maxlen', '5', 'env', 'create',
                '--team', 't', '--id', "e$i", 'x');
    }
    my $n = $r->xlen('cap:audit');
    ok($n >= 5 && $n <= 5 + 4, "--audit-maxlen 5: $n entries left of 30");
    for my $i (1 .. 20) {
        $c->run({ env => { ENVGW_AUDIT_MAXLEN => 12 } }, '--prefix', 'cap2:',
                'env', 'create', '--team', 't', '--id', "e$i", 'x');
    }
    $n = $r->xlen('cap2:audit');
    ok($n >= 12 && $n <= 12 + 4, "ENVGW_AUDIT_MAXLEN=12: $n entries left of 20");
    $r->config_set('stream-node-max-entries', 100);
    my $res = $c->run('--audit-maxlen', '0', 'env', 'list');
    is($res->{rc}, 2, '--audit-maxlen 0: exit 2');
}

# ---- envgw audit ------------------------------------------------------------------

{
    my $all = $c->json('audit');
    is(scalar @$all, scalar($c->audit), 'audit --json: every entry');
    is_deeply([ sort keys %{ $all->[0] } ],
              [ qw(actor command environments id keys time) ],
              '... with its fields');
    is($all->[0]{command}, 'env create alpha --team team_a --id env_a',
       '... oldest first');

    my $b = $c->json('audit', '--env', 'env_b');
    ok(@$b >= 3 && !grep({ !grep { $_ eq 'env_b' } @{ $_->{environments} } }
                         @$b),
       'audit --env: only entries of that environment');

    my $text = $c->ok_run('audit', 'audit', '--env', 'env_c');
    like($text->{out}, qr/^TIME\s+ACTOR\s+COMMAND$/m, 'audit: a header');
    like($text->{out}, qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\s+alice\@example\s+env create gamma --team team_a --id env_c$/m,
         'audit: time, actor, command');
    like($text->{out}, qr/^    changed: envgw:env:env_c, envgw:envs$/m,
         'audit: the changed keys');

    is(scalar @{ $c->json('audit', '--since', '1h') }, scalar @$all,
       '--since 1h: all of them');
    my $future = time + 3600;
    is_deeply($c->json('audit', '--since', $future), [],
              '--since a later time: none');
    my $res = $c->ok_run('none as text', 'audit', '--since', $future);
    like($res->{err}, qr/no audit entries since/, '... says so');
    my @d = gmtime(time + 86400);
    is_deeply($c->json('audit', '--since', sprintf('%04d-%02d-%02d',
                                                     $d[5] + 1900, $d[4] + 1,
                                                     $d[3])),
              [], '--since tomorrow\'s date: none');
    is(scalar @{ $c->json('audit', '--since', '2000-01-01T00:00:00Z') },
       scalar @$all, '--since a UTC time long ago: all');
    $res = $c->run('audit', '--since', 'yesterday');
    is($res->{rc}, 2, 'bad --since: exit 2');
    like($res->{err}, qr/bad --since 'yesterday'/, '... says so');
}

$t->stop;
done_testing;
