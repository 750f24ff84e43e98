# SPDX-License-Identifier: BSD-2-Clause
# envgw export and apply against a real redis-server: an environment as one
# JSON document (stable, never a token or credential), applied back into an
# empty database (the same document again), into another environment (the
# whole-environment promote), with and without --prune, and --dry-run
# writing nothing.

use strict;
use warnings;

use lib 't/lib';
use Test::More;
use JSON::PP;
use Digest::SHA qw(sha256_hex);
use EnvGwTest;
use EnvGwCli;

my $t = EnvGwTest->new;
$t->start_redis;
my $c = EnvGwCli->new($t);
$c->subscribe;
my $r = $t->redis;
my $dir = $t->dir;

sub write_file {
    my ($name, $text) = @_;
    open my $fh, '>', "$dir/$name" or die;
    print $fh $text;
    close $fh;
    return "$dir/$name";
}

sub doc_file {
    my ($name, $doc) = @_;
    return write_file($name, JSON::PP->new->canonical->pretty->encode($doc));
}

# ---- a development environment with all an export holds ---------------------

$c->ok_run('env create', 'env', 'create', '--team', 'team_a', '--id',
           'env_dev', 'development');
my $resources = write_file('resources.json', <<'JSON');
{"contacts": {
   "list": {"method": "GET", "path": "/crm/v3/objects/contacts"},
   "get":  {"method": "GET", "path": "/crm/v3/objects/contacts/{id}"}}}
JSON
$c->ok_run('integration set', 'integration', 'set', 'env_dev', 'hubspot',
           '--upstream', 'http://hubspot_dev', '--resources', $resources);
$c->ok_run('custom method', 'method', 'set', 'env_dev', 'hubspot', 'contacts',
           'merge', 'POST', '/crm/v3/objects/contacts/merge');
# an auth declaration, as the credentials tooling writes it
{
    my $rec = $c->jget('envgw:integration:env_dev:hubspot');
    $rec->{auth} = { header => 'Authorization',
                     format => 'Bearer {access_token}' };
    $r->set('envgw:integration:env_dev:hubspot', encode_json($rec));
}
$c->ok_run('second integration', 'integration', 'set', 'env_dev', 'zendesk',
           '--upstream', 'http://zendesk_dev');
$c->ok_run('account', 'account', 'add', 'env_dev', 'acc_dev_acme',
           '--integration', 'hubspot', '--tenant', 'acme');
$c->ok_run('second account', 'account', 'add', 'env_dev', 'acc_dev_zd',
           '--integration', 'zendesk', '--tenant', 'acme');
my $data = $c->json('token', 'create', 'env_dev');
my $acct = $c->json('token', 'create', 'env_dev', '--kind', 'account',
                    '--account', 'acc_dev_zd');
$c->ok_run('disable it', 'account', 'disable', 'acc_dev_zd');
$r->set('envgw:credentials:acc_dev_acme',
        '{"v":1,"kid":"k1","nonce":"bm9uY2U=","ciphertext":"U0VDUkVUU0VDUkVU"}');
$r->set("envgw:last_used:$data->{token_id}", time);

# ---- export ---------------------------------------------------------------------

my $e1 = $c->ok_run('export', 'export', 'env_dev');
my $e2 = $c->ok_run('export again', 'export', 'env_dev');
is($e1->{out}, $e2->{out}, 'two exports are the same text');
my $doc = decode_json($e1->{out});
is($e1->{out}, JSON::PP->new->canonical->indent->indent_length(2)
                   ->space_after->encode($doc),
   'keys sorted at every level, two-space indent: it diffs line by line');
is_deeply([ sort keys %$doc ],
          [ qw(accounts envgw_export environment integrations tenants) ],
          'sections');
is($doc->{envgw_export}, 1, 'format 1');
is_deeply($doc->{environment}, { environment_id => 'env_dev',
                                 team_id => 'team_a', name => 'development' },
          'the environment record');
is_deeply($doc->{integrations}{hubspot},
          $c->jget('envgw:integration:env_dev:hubspot'),
          'an integration: its whole record, auth declaration included');
ok(exists $doc->{integrations}{hubspot}{resources}{contacts}{merge},
   '... with its custom method');
is_deeply($doc->{accounts},
          { acc_dev_acme => { integration => 'hubspot', tenant_id => 'acme',
                              status => 'active' },
            acc_dev_zd => { integration => 'zendesk', tenant_id => 'acme',
                            status => 'disabled' } },
          'accounts by id, a disabled one too');
is_deeply($doc->{tenants}, { acme => { hubspot => 'acc_dev_acme',
                                       zendesk => 'acc_dev_zd' } },
          'tenants');
my $hash = sha256_hex($data->{token});
unlike($e1->{out}, qr/egw_|tok_|\Q$hash\E|credentials|ciphertext|U0VDUkVU|last_used/,
       'no token, token id, hash, credential or last use in the document');

my $file = write_file('dev.json', $e1->{out});

# ---- into an empty database: the same environment again ---------------------

{
    my ($res, $pub) = $c->run_published('--db', '1', 'apply', $file);
    is($res->{rc}, 0, 'apply into an empty database') or diag $res->{err};
    like($res->{out}, qr/^\+ environment env_dev$/m, 'plan: + environment');
    like($res->{out}, qr/^\+ integration hubspot$/m, 'plan: + integration');
    like($res->{out}, qr/^    \+ contacts\.merge: POST \/crm\/v3\/objects\/contacts\/merge$/m,
         'plan: its methods');
    like($res->{out}, qr/^\+ account acc_dev_zd$/m, 'plan: + account');
    like($res->{out}, qr/^\+ tenant acme$/m, 'plan: + tenant');
    like($res->{out}, qr/^applied: 6 to create, 0 to change, 0 to remove in env_dev$/m,
         'plan: the count');
    my $copy = $c->ok_run('export the copy', '--db', '1', 'export', 'env_dev');
    is($copy->{out}, $e1->{out}, 'the export of the copy is the same document');
    $r->select(1);
    my @keys = sort $r->keys('envgw:*');
    $r->select(0);
    is_deeply($pub, [ sort grep { !/audit/ } @keys ],
              'every key it wrote was published');
    unlike(join(' ', @keys), qr/token/, 'no token was written');

    my $xlen = do { $r->select(1); my $n = $r->xlen('envgw:audit');
                    $r->select(0); $n };
    ($res, $pub) = $c->run_published('--db', '1', 'apply', $file);
    is($res->{rc}, 0, 'apply again: exit 0');
    like($res->{err}, qr/already matches/, '... nothing to do');
    is_deeply($pub, [], '... nothing published');
    $r->select(1);
    is($r->xlen('envgw:audit'), $xlen, '... and no audit entry');
    $r->select(0);
}

# ---- the whole-environment promote into an empty environment -----------------

$c->ok_run('an empty environment', 'env', 'create', '--team', 'team_a',
           '--id', 'env_new', 'staging');
{
    my ($res, $pub) = $c->run_published('apply', $file, '--env', 'env_new');
    is($res->{rc}, 0, 'apply --env into an empty environment')
        or diag $res->{err};
    like($res->{err}, qr/accounts and tenants stay in env_dev/,
         '... says the accounts stay');
    is_deeply($pub, [ 'envgw:integration:env_new:hubspot',
                      'envgw:integration:env_new:zendesk',
                      'envgw:integrations:env_new' ],
              '... writes and publishes the integrations only');
    my $d = $c->run('diff', 'env_dev', 'env_new', '--upstreams');
    is($d->{rc}, 0, 'diff --upstreams with the source is empty')
        or diag $d->{out};
    is($d->{out}, '', '... no line');
    my $new = decode_json($c->ok_run('export', 'export', 'env_new')->{out});
    is_deeply($new->{integrations}, $doc->{integrations},
              'its integrations are the document\'s');
    is($new->{environment}{name}, 'staging', 'the environment keeps its name');
    is_deeply([ $new->{accounts}, $new->{tenants} ], [ {}, {} ],
              'no accounts, no tenants');
}

# ---- into production: its upstream stays; --dry-run; --prune -----------------

$c->ok_run('production', 'env', 'create', '--team', 'team_a', '--id',
           'env_prod', 'production');
$c->ok_run('its hubspot', 'integration', 'set', 'env_prod', 'hubspot',
           '--upstream', 'http://hubspot_prod', '--resources', $resources);
$c->ok_run('a production-only method', 'method', 'set', 'env_prod',
           'hubspot', 'contacts', 'archive', 'POST', '/archive');
{
    my $before = $c->dump_all;
    my ($res, $pub) = $c->run_published('apply', $file, '--env', 'env_prod',
                                        '--dry-run');
    is($res->{rc}, 0, 'apply --dry-run: exit 0');
    like($res->{out}, qr/^~ integration hubspot\n    \+ auth: .*\n    \+ contacts\.merge: POST \/crm\/v3\/objects\/contacts\/merge\n/m,
         '... the plan: what changes in hubspot');
    like($res->{out}, qr/^\+ integration zendesk$/m, '... and what is created');
    like($res->{out}, qr/^plan: 1 to create, 1 to change, 0 to remove in env_prod$/m,
         '... counted');
    like($res->{err}, qr/dry run: nothing written/, '... says nothing is written');
    is($c->dump_all, $before, '--dry-run changes nothing (audit included)');
    is_deeply($pub, [], '--dry-run publishes nothing');

    my $j = $c->run('--json', 'apply', $file, '--env', 'env_prod', '--dry-run');
    my $out = eval { decode_json($j->{out}) } || {};
    is_deeply([ @$out{qw(environment_id document dry_run applied)} ],
              [ 'env_prod', 'env_dev', JSON::PP::true, JSON::PP::false ],
              '--json: the plan as data');
    is_deeply([ map { "$_->{op} $_->{type} $_->{id}" } @{ $out->{changes} } ],
              [ '~ integration hubspot', '+ integration zendesk' ],
              '--json: the changes');

    ($res, $pub) = $c->run_published('apply', $file, '--env', 'env_prod');
    is($res->{rc}, 0, 'apply --env env_prod') or diag $res->{err};
    like($res->{err}, qr/env_prod keeps its upstream http:\/\/hubspot_prod of hubspot/,
         '... says production keeps its upstream');
    like($res->{err}, qr/warning: env_prod has no integration 'zendesk'/,
         '... warns about the new one\'s upstream');
    my $rec = $c->jget('envgw:integration:env_prod:hubspot');
    is($rec->{upstream}, 'http://hubspot_prod', 'the production upstream stays');
    ok($rec->{resources}{contacts}{merge}, 'the custom method is promoted');
    is_deeply($rec->{auth}, $doc->{integrations}{hubspot}{auth},
              'the auth declaration too');
    ok($rec->{resources}{contacts}{archive},
       'without --prune the production-only method stays');
    is(run_rc('diff', 'env_dev', 'env_prod'), 1, 'diff: production has more');

    ($res, $pub) = $c->run_published('apply', $file, '--env', 'env_prod',
                                     '--prune');
    is($res->{rc}, 0, 'apply --prune') or diag $res->{err};
    like($res->{out}, qr/^~ integration hubspot\n    - contacts\.archive: POST \/archive$/m,
         '... plans the removal');
    ok(!$c->jget('envgw:integration:env_prod:hubspot')->{resources}{contacts}{archive},
       '--prune removes it');
    is($c->jget('envgw:integration:env_prod:hubspot')->{upstream},
       'http://hubspot_prod', '--prune keeps the upstream of production');
    is_deeply($pub, ['envgw:integration:env_prod:hubspot'], '... publishes it');
    is(run_rc('diff', 'env_dev', 'env_prod'), 0, 'diff: equal now');
}

sub run_rc { $c->run(@_)->{rc} }

# ---- the same environment: nothing removed without --prune -------------------

{
    my $edit = decode_json($e1->{out});
    delete $edit->{integrations}{hubspot}{resources}{contacts}{get};
    delete $edit->{integrations}{hubspot}{auth};
    $edit->{integrations}{hubspot}{upstream} = 'http://hubspot_dev2';
    delete $edit->{integrations}{zendesk};
    delete $edit->{accounts}{acc_dev_zd};
    delete $edit->{tenants}{acme}{zendesk};
    $edit->{accounts}{acc_dev_acme}{status} = 'disabled';
    my $f = doc_file('edited.json', $edit);

    my ($res, $pub) = $c->run_published('apply', $f);
    is($res->{rc}, 0, 'apply an edited document') or diag $res->{err};
    is($res->{out}, "~ integration hubspot\n"
                  . "    ~ upstream: \"http://hubspot_dev\" -> \"http://hubspot_dev2\"\n"
                  . "~ account acc_dev_acme\n"
                  . "    ~ status: \"active\" -> \"disabled\"\n"
                  . "applied: 0 to create, 2 to change, 0 to remove in env_dev\n",
       '... the plan: only changes');
    my $now = decode_json($c->ok_run('export', 'export', 'env_dev')->{out});
    ok($now->{integrations}{hubspot}{resources}{contacts}{get}
       && $now->{integrations}{hubspot}{auth} && $now->{integrations}{zendesk}
       && $now->{accounts}{acc_dev_zd} && $now->{tenants}{acme}{zendesk},
       'without --prune no method, field, integration, account or tenant '
       . 'entry is removed');
    is_deeply($pub, [ 'envgw:account:acc_dev_acme',
                      'envgw:integration:env_dev:hubspot' ],
              '... the two changed keys are published');

    my $tok_key = 'envgw:token:' . sha256_hex($acct->{token});
    ($res, $pub) = $c->run_published('apply', $f, '--prune');
    is($res->{rc}, 0, 'apply --prune') or diag $res->{err};
    like($res->{out}, qr/^- account acc_dev_zd \(and revoke 1 account token\)$/m,
         '... plans the account removal with its token');
    like($res->{out}, qr/^- integration zendesk$/m, '... the integration');
    like($res->{out}, qr/^    - auth: /m, '... the field');
    like($res->{out}, qr/^    - contacts\.get: GET /m, '... the method');
    $now = decode_json($c->ok_run('export', 'export', 'env_dev')->{out});
    is_deeply($now, $edit, 'after --prune the export is the document');
    ok($c->jget($tok_key)->{revoked}, 'the removed account\'s token is revoked');
    ok(!$r->sismember('envgw:accounts:env_dev', 'acc_dev_zd'),
       'and the account left the index');
    is_deeply($pub, [ sort 'envgw:account:acc_dev_zd',
                      'envgw:accounts:env_dev',
                      'envgw:integration:env_dev:hubspot',
                      'envgw:integration:env_dev:zendesk',
                      'envgw:integrations:env_dev',
                      'envgw:tenant:env_dev:acme', $tok_key ],
              '... every changed key is published');

    # from stdin
    my $in = $c->run({ stdin => $e1->{out} }, 'apply', '-', '--dry-run');
    is($in->{rc}, 0, 'apply - reads stdin');
    like($in->{out}, qr/^\+ integration zendesk$/m, '... and plans from it');
}

# ---- documents refused: exit status, message, nothing written -----------------

{
    my $base = decode_json($e1->{out});
    my $other = decode_json($e1->{out});
    $other->{environment}{environment_id} = 'env_x';
    my %bad = (
        'not JSON'          => [ 2, qr/not valid JSON/, write_file('b1', '{"a":') ],
        'not a document'    => [ 2, qr/"envgw_export" must be 1/,
                                 doc_file('b2', { environment => {} }) ],
        'unknown section'   => [ 2, qr/unknown section "tokens"/,
                                 doc_file('b3', { %$base, tokens => {} }) ],
        'bad path'          => [ 2, qr/integration "hubspot": method "contacts.list": path/,
                                 do { my $d = decode_json($e1->{out});
                                      $d->{integrations}{hubspot}{resources}{contacts}{list}{path} = '/a/../b';
                                      doc_file('b4', $d) } ],
        'no upstream'       => [ 2, qr/integration "zendesk" has no string "upstream"/,
                                 do { my $d = decode_json($e1->{out});
                                      delete $d->{integrations}{zendesk}{upstream};
                                      doc_file('b5', $d) } ],
        'tenant not indexed'=> [ 2, qr/account "acc_dev_zd" is not the zendesk account of tenant "acme"/,
                                 do { my $d = decode_json($e1->{out});
                                      delete $d->{tenants}{acme}{zendesk};
                                      doc_file('b6', $d) } ],
        'account of another environment' =>
                               [ 1, qr/integrated account 'acc_dev_acme' belongs to environment 'env_dev'/,
                                 doc_file('b7', $other) ],
        'unknown --env'     => [ 1, qr/unknown environment 'env_nope'/, $file,
                                 '--env', 'env_nope' ],
    );
    for my $name (sort keys %bad) {
        my ($rc, $pat, @args) = @{ $bad{$name} };
        my $before = $c->dump_all;
        my ($res, $pub) = $c->run_published('apply', @args);
        is($res->{rc}, $rc, "$name: exit $rc") or diag $res->{err};
        like($res->{err}, $pat, "$name: says why");
        is($res->{out}, '', "$name: no plan");
        is($c->dump_all, $before, "$name: nothing written");
        is_deeply($pub, [], "$name: nothing published");
    }
}

$t->stop;
done_testing;
