#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# The user-facing files (README.md, docs/*.md, conf.example, the man page)
# are self-contained: every relative link leads to a file of the repository
# (and, with a #fragment, to a heading of it), every repository path they
# name in backquotes exists, and none points at notes a user does not have.
# Every page of docs/ is linked from the README.

use strict;
use warnings;

use lib 't/lib';
use EnvGwTest;
use File::Basename qw(dirname);
use Test::More;

my $TOP = $EnvGwTest::TOP;
my @files = ('README.md', 'conf.example', 'cli/envgw.1',
             map { substr $_, length("$TOP/") } glob("$TOP/docs/*.md"));

sub slurp {
    my ($path) = @_;
    open my $fh, '<', $path or return;
    local $/;
    return scalar <$fh>;
}

# GitHub's anchors: lower case, punctuation other than '-' and '_' dropped,
# spaces to '-'
sub anchors {
    my ($text) = @_;
    my %a;
    for my $h ($text =~ /^#{1,6}\s+(.*?)\s*$/mg) {
        (my $s = lc $h) =~ s/[^\w\- ]//g;
        $s =~ s/ /-/g;
        $a{$s} = 1;
    }
    return \%a;
}

my $dirs = join '|', qw(docs t src fuzz bench cluster demo scripts mk debian
                        cli);

for my $file (@files) {
    my $text = slurp("$TOP/$file");
    ok(defined $text, "$file exists") or next;
    my $base = dirname("$TOP/$file");

    unlike($text, qr/CONTRACT\.md|shared notes|\/work\//,
           "$file: no pointer to notes outside the repository");

    # markdown links [text](target)
    for my $target ($text =~ /\]\(([^)\s]+)\)/g) {
        next if $target =~ m{^(?:https?|mailto):};
        my ($path, $frag) = split /#/, $target, 2;
        my $dest = length $path ? "$base/$path" : "$TOP/$file";
        ok(-e $dest, "$file: link $target leads to a file");
        next unless defined $frag && -f $dest && $dest =~ /\.md$/;
        ok(anchors(slurp($dest))->{$frag}, "$file: link $target leads to a heading");
    }

    # repository paths in backquotes, e.g. `t/cluster_edge.t`, `docs/x.md`
    my %seen;
    for my $p ($text =~ /`((?:$dirs)\/[\w.*\/-]*)`/g) {
        # what the build or the demo makes is not in the repository
        next if $seen{$p}++ || $p =~ m{^(?:t/tmp|demo/run)\b|^cli/envgw$};
        (my $pat = $p) =~ s{/$}{};
        my @match = grep { -e } glob("$TOP/$pat");
        ok(@match, "$file: `$p` exists in the repository");
    }
}

# every page of docs/ is reachable from the README
my $readme = slurp("$TOP/README.md") // '';
for my $page (glob("$TOP/docs/*.md")) {
    my $name = substr $page, length("$TOP/");
    like($readme, qr/\]\(\Q$name\E\)/, "README links $name");
}

done_testing;
