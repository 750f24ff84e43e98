#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# Request bodies the gateway reads differently from the backend.
#
#   1. Form content types the gateway does not take for a form (it wants
#      the type followed by nothing, ';' or a space) and a backend does:
#      PHP cuts the type at ',' ("application/x-www-form-urlencoded,x"
#      fills $_POST), Go trims spaces and tabs around it
#      ("application/x-www-form-urlencoded\t; charset=utf-8" fills
#      r.PostForm and r.FormValue).
#   2. Content-Encoding: gzip or deflate: the gateway reads the compressed
#      bytes, Express (body-parser) inflates them and reads the form.
#   3. JSON keys in another letter case: Go's encoding/json fills a struct
#      field tagged "integrated_account_id" from "Integrated_Account_Id" or
#      "INTEGRATED_ACCOUNT_ID" too (the last one wins); the gateway
#      (jansson) reads only the exact key and sees no duplicate.
#
# Each lets a development token send the production account (or a
# credential) to the backend.  Through real nginx, Redis, the echo backends
# of t/backends and, for 3, a Go backend that decodes into a struct (built
# here from the standard library only).  The oracle is t/differential.t's.

use strict;
use warnings;

use lib 't/lib';
use EnvGwTest;
use EnvGwBackends;
use Test::More;
use Digest::SHA qw(sha256_hex);
use File::Path qw(make_path);
use IO::Compress::Gzip qw(gzip $GzipError);
use IO::Compress::Deflate qw(deflate $DeflateError);

my $t = EnvGwTest->new;
$t->start_redis;

my ($bport, $skip) = EnvGwBackends::start($t, @EnvGwBackends::ALL);
my @B = grep { $bport->{$_} } @EnvGwBackends::ALL;

# --- a Go backend that reads the JSON body into a struct ---------------------

my $GO_STRUCT = <<'GO';
package main

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"regexp"
)

type body struct {
	Account string `json:"integrated_account_id"`
}

var token = regexp.MustCompile(`egwtok_[A-Za-z0-9_-]*`)

func echo(w http.ResponseWriter, r *http.Request) {
	raw, _ := io.ReadAll(r.Body)
	var b body
	accounts := []string{}
	if json.Unmarshal(raw, &b) == nil && b.Account != "" {
		accounts = append(accounts, b.Account)
	}
	creds := token.FindAllString(string(raw), -1)
	for _, v := range r.Header {
		for _, s := range v {
			creds = append(creds, token.FindAllString(s, -1)...)
		}
	}
	var env, acc interface{}
	if _, ok := r.Header["X-Environment-Id"]; ok {
		env = r.Header.Get("X-Environment-Id")
	}
	if _, ok := r.Header["X-Integrated-Account-Id"]; ok {
		acc = r.Header.Get("X-Integrated-Account-Id")
	}
	out, _ := json.Marshal(map[string]interface{}{
		"backend":            "gostruct",
		"body_account":       accounts,
		"headers":            r.Header,
		"environment_header": env,
		"account_header":     acc,
		"credentials":        creds,
	})
	w.Header().Set("Content-Type", "application/json")
	w.Write(out)
}

func main() {
	http.ListenAndServe("127.0.0.1:"+os.Args[1], http.HandlerFunc(echo))
}
GO

if (EnvGwBackends::have_cmd('go')) {
    my $dir = $t->dir . '/gostruct';
    make_path("$dir/cache", "$dir/path");
    open my $fh, '>', "$dir/main.go" or die;
    print $fh $GO_STRUCT;
    close $fh;
    local $ENV{GOCACHE} = "$dir/cache";
    local $ENV{GOPATH} = "$dir/path";
    local $ENV{GOPROXY} = 'off';
    local $ENV{GOFLAGS} = '';
    local $ENV{GO111MODULE} = 'off';
    local $ENV{CGO_ENABLED} = '0';
    my $out = `cd $dir && go build -o $dir/echo-gostruct main.go 2>&1`;
    if ($? == 0) {
        my $p = EnvGwTest::free_port();
        $t->spawn('backend-gostruct', "$dir/echo-gostruct", $p);
        if (EnvGwTest::wait_port($p, 20)) {
            $bport->{gostruct} = $p;
        } else {
            $skip->{gostruct} = 'did not start';
        }
    } else {
        $skip->{gostruct} = "go build failed: $out";
    }
} else {
    $skip->{gostruct} = 'go not found (Debian package golang-go)';
}

for my $b (sort keys %$skip) {
    diag("backend $b skipped: $skip->{$b}");
}

plan skip_all => 'no echo backend can run' unless %$bport;

my @ALLB = (@B, $bport->{gostruct} ? ('gostruct') : ());

my (%gw, $http);
for my $b (@ALLB) {
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

EnvGwTest::wait_port($gw{$_}) or die "gateway port for $_" for @ALLB;

my $TD = 'egwtok_dev_' . substr(sha256_hex('attack-body-dev'), 0, 32);
my $TP = 'egwtok_prod_' . substr(sha256_hex('attack-body-prod'), 0, 32);

$t->seed_gateway(envs => [qw(dev prod)], tokens => { dev => $TD, prod => $TP });

my (%dev, %prod);
for my $b (@ALLB) {
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

sub compress {
    my ($how, $in) = @_;
    my $out;
    if ($how eq 'gzip') {
        gzip(\$in => \$out) or die $GzipError;
    } else {
        deflate(\$in => \$out) or die $DeflateError;
    }
    return $out;
}

# judge one request through the gateway of backend $b
sub through {
    my ($b, $name, $m, $path, $h, $body, %o) = @_;
    my @h = (Authorization => "Bearer $TD", map { fill($_, $b) } @$h);
    $body = fill($body, $b);
    $body = compress($o{encoding}, $body) if $o{encoding};
    my $r = $t->http($m, fill($path, $b), \@h, $body, port => $gw{$b});
    my ($kind, $detail) = EnvGwBackends::judge($b, $r, %oracle);
    my $why = ref $detail ? join('; ', @$detail) : ($detail // '');

    if ($o{control}) {
        is($kind, 'pass', "$name -> $b") or diag("  $kind: $why");
    } else {
        ok($kind ne 'violation' && $kind ne 'error', "$name -> $b")
            or diag("  $kind: $why");
    }
}

# --- 1. form content types ---------------------------------------------------

my $F = 'application/x-www-form-urlencoded';

for my $b (@B) {
    through($b, 'control: a form body with the development account', 'POST',
            '/q/x', [ 'Content-Type' => $F ], 'integrated_account_id={D}',
            control => 1);

    for my $ct ("$F,text/plain", "$F\t; charset=utf-8", "$F\t;") {
        (my $show = $ct) =~ s/\t/\\t/g;
        through($b, "Content-Type '$show', production account", 'POST',
                '/q/x', [ 'Content-Type' => $ct ],
                'integrated_account_id={P}');
        through($b, "Content-Type '$show', production account beside the "
                    . 'query', 'POST', '/q/x?integrated_account_id={D}',
                [ 'Content-Type' => $ct ], 'integrated_account_id={P}');
        through($b, "Content-Type '$show', production account, PUT", 'PUT',
                '/q/x', [ 'Content-Type' => $ct ],
                'integrated_account_id={P}');
        through($b, "Content-Type '$show', a credential field", 'POST',
                '/q/x?integrated_account_id={D}', [ 'Content-Type' => $ct ],
                'access_token={TP}');
    }
}

# --- 2. compressed bodies ----------------------------------------------------

for my $b (@B) {
    for my $enc (qw(gzip deflate)) {
        through($b, "Content-Encoding $enc form body, production account",
                'POST', '/q/x', [ 'Content-Type' => $F,
                                  'Content-Encoding' => $enc ],
                'integrated_account_id={P}', encoding => $enc);
        through($b, "Content-Encoding $enc form body on a body-field "
                    . 'location', 'POST', '/body/x?integrated_account_id={D}',
                [ 'Content-Type' => $F, 'Content-Encoding' => $enc ],
                'integrated_account_id={P}', encoding => $enc);
        through($b, "Content-Encoding $enc form body, a credential field",
                'POST', '/q/x?integrated_account_id={D}',
                [ 'Content-Type' => $F, 'Content-Encoding' => $enc ],
                'access_token={TD}', encoding => $enc);
    }
}

# --- 3. JSON keys in another case, read by a Go struct ----------------------

if ($bport->{gostruct}) {
    my $J = [ 'Content-Type' => 'application/json' ];
    through('gostruct', 'control: the development account in a JSON body',
            'POST', '/body/x?integrated_account_id={D}', $J,
            '{"integrated_account_id":"{D}"}', control => 1);
    through('gostruct', 'JSON: the key in capitals only', 'POST', '/body/x',
            $J, '{"INTEGRATED_ACCOUNT_ID":"{P}"}');
    through('gostruct', 'JSON: the exact key, then a case variant', 'POST',
            '/body/x?integrated_account_id={D}', $J,
            '{"integrated_account_id":"{D}","Integrated_Account_Id":"{P}"}');
    through('gostruct', 'JSON: a case variant on a GET', 'GET',
            '/body/x?integrated_account_id={D}', $J,
            '{"integrated_account_id":"{D}","integrated_ACCOUNT_id":"{P}"}');
}

$t->stop;
done_testing;
