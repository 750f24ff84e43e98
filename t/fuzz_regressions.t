#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause
# Replays the fuzz corpora and the crash regression inputs through the
# libFuzzer binaries (built by `make fuzz-build` into build/fuzz/): each file
# is run once (no fuzzing) and must not crash or trip ASan/UBSan.
#
#   fuzz/corpus/<target>/*        seed inputs
#   fuzz/regressions/<target>/*   inputs that once crashed a parser
#
# Skips when the binaries are not there (no clang, or nginx's source could
# not be fetched): `make test` builds them when it can.

use strict;
use warnings;

use File::Basename qw(dirname);
use Cwd qw(abs_path);
use Test::More;

my $top = abs_path(dirname(__FILE__) . '/..');
my $bin = $ENV{ENVGW_FUZZ_DIR} || "$top/build/fuzz";
my @targets = qw(token records route resp body access credentials);

my @missing = grep { !-x "$bin/fuzz_$_" } @targets;
plan skip_all => "fuzz targets not built (@missing missing in $bin): "
    . "run 'make fuzz-build' (needs clang)" if @missing;

for my $t (@targets) {
    my @inputs = grep { -f } map { glob("$top/fuzz/$_/$t/*") }
                 qw(corpus regressions);
    ok(@inputs, "$t: has inputs") or next;

    # one run over all files; on failure rerun one by one to name the culprit
    local $ENV{ASAN_OPTIONS} = 'detect_leaks=1:abort_on_error=1';
    local $ENV{UBSAN_OPTIONS} = 'print_stacktrace=1:halt_on_error=1';
    my $out = run("$bin/fuzz_$t", @inputs);
    if ($? == 0 && $out !~ /runtime error:|Sanitizer/) {
        pass("$t: " . scalar(@inputs) . " inputs replayed");
        next;
    }
    for my $f (@inputs) {
        my $o = run("$bin/fuzz_$t", $f);
        ok($? == 0 && $o !~ /runtime error:|Sanitizer/,
           "$t: " . substr($f, length($top) + 1))
            or diag(join "\n", grep { /ERROR|runtime error|SUMMARY|^\s+#\d/ }
                               split /\n/, $o);
    }
}

done_testing;

sub run {
    my @cmd = @_;
    my $pid = open(my $fh, '-|') // die "fork: $!";
    if (!$pid) {
        open STDERR, '>&', \*STDOUT;
        exec @cmd or exit 127;
    }
    local $/;
    my $out = <$fh> // '';
    close $fh;
    return $out;
}
