#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# Argument names that a backend parser reads as integrated_account_id or
# access_token and the gateway reads as some other name.
#
# PHP's built-in server (its http_parser skips every '?' that starts the
# query) reads "??integrated_account_id=X" as integrated_account_id=X; the
# gateway reads an argument named "?integrated_account_id".
#
# Express (qs, also express.urlencoded({extended: true})) reads a name that
# starts with a bracket, "[integrated_account_id]=X" (or its encoded
# "%5Bintegrated_account_id%5D"), as integrated_account_id: qs takes a
# leading "[...]" segment as the root key.  The gateway's alias rules
# (_args.c) cover "name[...]" but not "[name]", so the production account
# reaches an Express backend with a development token, in the query and in
# a form body, and a second credential reaches it as req.query.access_token.
#
# Through real nginx, Redis and the echo backends of t/backends (PHP,
# Express, Python, Go).  The oracle is t/differential.t's: a request is
# refused by the gateway, or what the backend read shows only development
# accounts, the development environment and no credential.

use strict;
use warnings;

use lib 't/lib';
use EnvGwTest;
use EnvGwBackends;
use Test::More;
use Digest::SHA qw(sha256_hex);

my $t = EnvGwTest->new;
$t->start_redis;

my ($bport, $skip) = EnvGwBackends::start($t, @EnvGwBackends::ALL);
my @B = grep { $bport->{$_} } @EnvGwBackends::ALL;

for my $b (sort keys %$skip) {
    diag("backend $b skipped: $skip->{$b}");
}

plan skip_all => 'no echo backend can run' unless @B;

my (%gw, $http);
for my $b (@B) {
    my $p = $gw{$b} = EnvGwTest::free_port();
    $http .= "    server {\n        listen 127.0.0.1:$p;\n"
           . EnvGwBackends::locations($bport->{$b}) . "    }\n";
}

$t->start_nginx(<<"CONF");
    env_gateway_redis 127.0.0.1:%%REDIS%% connect_timeout=500ms read_timeout=2s;
    server {
        listen 127.0.0.1:%%PORT%%;
        location / { return 204; }
    }
$http
CONF

EnvGwTest::wait_port($gw{$_}) or die "gateway port for $_" for @B;

my $TD = 'egwtok_dev_' . substr(sha256_hex('attack-args-dev'), 0, 32);
my $TP = 'egwtok_prod_' . substr(sha256_hex('attack-args-prod'), 0, 32);

$t->seed_gateway(envs => [qw(dev prod)], tokens => { dev => $TD, prod => $TP });

my (%dev, %prod);
my $contacts = {
    list => { method => 'GET', path => '/crm/v3/objects/contacts' },
    get  => { method => 'GET', path => '/crm/v3/objects/contacts/{id}' },
};
for my $b (@B) {
    for my $e (qw(env_dev env_prod)) {
        $t->put("integration:$e:$b", {
            upstream => "http://127.0.0.1:$bport->{$b}",
            resources => { contacts => $contacts } });
    }
    $t->account("acc_dev_$b", 'env_dev', integration => $b);
    $t->account("acc_prod_$b", 'env_prod', integration => $b);
    $dev{"acc_dev_$b"} = 1;
    $prod{"acc_prod_$b"} = 1;
}

my %oracle = (dev => \%dev, prod => \%prod, env => 'env_dev',
              tokens => [ $TD, $TP ], token_names => [ '{TD}', '{TP}' ]);

sub fill {
    my ($s, $b) = @_;
    return $s unless defined $s;
    my %r = (D => "acc_dev_$b", P => "acc_prod_$b", TD => $TD, TP => $TP);
    $s =~ s/\{(D|P|TD|TP)\}/$r{$1}/g;
    return $s;
}

my $form = [ 'Content-Type' => 'application/x-www-form-urlencoded' ];

# a credential the backend reads under the name $name (query, form, body)
sub read_as {
    my ($r, $name) = @_;
    $r = EnvGwBackends::dechunk($r);
    my $j = $r->{json};
    return () unless ref $j eq 'HASH' && $j->{backend};
    return grep { /egwtok_/ }
           map { EnvGwBackends::flat(ref $_ eq 'HASH' ? $_->{$name} : undef) }
           $j->{query}, $j->{form}, $j->{body};
}

# [ name, method, path, headers, body, control, no Authorization, the
# credential name a backend must not read ]
my @cases = (
    [ 'control: the development account passes', 'GET',
      '/q/x?integrated_account_id={D}', [], undef, 1 ],

    [ 'a bracketed name', 'GET', '/q/x?[integrated_account_id]={P}' ],
    [ 'a bracketed name, encoded', 'GET',
      '/q/x?%5Bintegrated_account_id%5D={P}' ],
    [ 'a bracketed name after the checked one', 'GET',
      '/q/x?integrated_account_id={D}&[integrated_account_id]={P}' ],
    [ 'a bracketed name with an index', 'GET',
      '/q/x?[integrated_account_id][0]={P}' ],
    [ 'a bracketed name where the account is required', 'GET',
      '/req/x?integrated_account_id={D}&[integrated_account_id]={P}' ],
    [ 'a bracketed name on a route', 'GET',
      '/proxy/contacts?integrated_account_id={D}&[integrated_account_id]={P}' ],
    [ "a '?' before the name (PHP's built-in server skips it)", 'GET',
      '/q/x??integrated_account_id={P}' ],
    [ "two '?' before the name", 'GET', '/q/x???integrated_account_id={P}' ],
    [ "a '?' before the name, the account source misspelled", 'GET',
      '/typo/x??integrated_account_id={P}' ],
    [ 'a bracketed name in a form body', 'POST', '/q/x', $form,
      '[integrated_account_id]={P}' ],
    [ 'a bracketed name in a form body beside the query', 'POST',
      '/q/x?integrated_account_id={D}', $form,
      '[integrated_account_id]={P}' ],
    [ 'a bracketed access_token in the query', 'GET',
      '/q/x?integrated_account_id={D}&[access_token]={TP}', [], undef, 0, 0,
      'access_token' ],
    [ 'a bracketed access_token in a form body', 'POST',
      '/q/x?integrated_account_id={D}', $form, '[access_token]={TP}', 0, 0,
      'access_token' ],
    [ 'a bracketed configured token argument', 'GET',
      '/tok/x?api_key={TD}&integrated_account_id={D}&[api_key]={TP}', [],
      undef, 0, 1, 'api_key' ],
);

for my $c (@cases) {
    my ($name, $m, $path, $h, $body, $control, $noauth, $cred) = @$c;
    for my $b (@B) {
        my @h = map { fill($_, $b) } @{ $h || [] };
        unshift @h, Authorization => "Bearer $TD" unless $noauth;
        my $r = $t->http($m, fill($path, $b), \@h, fill($body, $b),
                         port => $gw{$b});
        my ($kind, $detail) = EnvGwBackends::judge($b, $r, %oracle);
        my $why = ref $detail ? join('; ', @$detail) : ($detail // '');

        if ($cred) {
            my @got = read_as($r, $cred);
            ok(!@got, "$name -> $b: no credential read as $cred")
                or diag("  $b read $cred = @got");
            next;
        }

        if ($control) {
            is($kind, 'pass', "$name -> $b") or diag("  $kind: $why");
            next;
        }

        ok($kind ne 'violation' && $kind ne 'error', "$name -> $b")
            or diag("  $kind: $why");
    }
}

$t->stop;
done_testing;
