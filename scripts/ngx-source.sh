#!/bin/bash
# SPDX-License-Identifier: BSD-2-Clause
# Fetch upstream nginx 1.22.1 from Debian's source package and extract it.
#
#   scripts/ngx-source.sh DESTDIR     -> DESTDIR/nginx-1.22.1 (upstream tree)
#
# The downloaded files (.dsc, orig and debian tarballs) are cached in
# DESTDIR/src, so a second run needs no network.  On a fresh machine it adds a
# deb-src twin of /etc/apt/sources.list.d/debian.sources (needs root) and runs
# `apt-get update` first.
set -euo pipefail

DEST=${1:?usage: $0 DESTDIR}
NGX_VERSION=1.22.1
ORIG=nginx_${NGX_VERSION}.orig.tar.gz
mkdir -p "$DEST/src"
DEST=$(cd "$DEST" && pwd)

if [ -f "$DEST/nginx-$NGX_VERSION/configure" ]; then
    exit 0
fi

say() { echo "ngx-source: $*" >&2; }

if [ ! -s "$DEST/src/$ORIG" ]; then
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO=sudo
    have_src() {
        grep -rqsE '^(Types:.*deb-src|deb-src )' /etc/apt/sources.list \
            /etc/apt/sources.list.d/ 2>/dev/null
    }
    if ! have_src; then
        base=/etc/apt/sources.list.d/debian.sources
        if [ -f "$base" ]; then
            say "adding /etc/apt/sources.list.d/debian-src.sources (deb-src twin of $base)"
            sed 's/^Types:.*/Types: deb-src/' "$base" \
                | $SUDO tee /etc/apt/sources.list.d/debian-src.sources >/dev/null
        elif [ -f /etc/apt/sources.list ]; then
            say "adding deb-src lines to /etc/apt/sources.list.d/debian-src.list"
            sed -n 's/^deb /deb-src /p' /etc/apt/sources.list \
                | $SUDO tee /etc/apt/sources.list.d/debian-src.list >/dev/null
        else
            say "no Debian apt source found to mirror as deb-src"; exit 1
        fi
        $SUDO apt-get update -qq
    elif ! apt-cache showsrc nginx 2>/dev/null | grep -q "^Version: $NGX_VERSION"; then
        $SUDO apt-get update -qq
    fi
    # the installed nginx's exact source version first, then every 1.22.1
    # source apt lists: the orig tarball (upstream nginx) is the same in all.
    # Only the orig tarball matters: a mirror missing the .dsc or the debian
    # tarball makes apt-get fail but still leaves the orig file behind.
    vers=$(dpkg-query -W -f='${Version}' nginx 2>/dev/null || true)
    case "$vers" in "$NGX_VERSION"-*) ;; *) vers= ;; esac
    vers="$vers $(apt-cache showsrc nginx | sed -n "s/^Version: \($NGX_VERSION-.*\)/\1/p")"
    for ver in $vers; do
        [ -s "$DEST/src/$ORIG" ] && break
        say "apt-get source --download-only nginx=$ver"
        ( cd "$DEST/src" && apt-get source -qq --download-only "nginx=$ver" ) \
            || say "apt-get source nginx=$ver failed (checking for $ORIG anyway)"
    done
    [ -s "$DEST/src/$ORIG" ] || { say "$ORIG not downloaded"; exit 1; }
    # check it against the checksum apt's source index lists
    want=$(apt-cache showsrc nginx | awk -v f="$ORIG" \
        '/^Checksums-Sha256:/ {c=1; next} /^[^ ]/ {c=0} c && $3 == f {print $1; exit}')
    have=$(sha256sum "$DEST/src/$ORIG" | cut -d' ' -f1)
    if [ -n "$want" ] && [ "$want" != "$have" ]; then
        say "$ORIG sha256 $have does not match apt's $want"
        rm -f "$DEST/src/$ORIG"; exit 1
    fi
fi

tar -xzf "$DEST/src/$ORIG" -C "$DEST"
[ -f "$DEST/nginx-$NGX_VERSION/configure" ] || { say "bad tarball"; exit 1; }
say "upstream nginx $NGX_VERSION in $DEST/nginx-$NGX_VERSION"
