#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-2-Clause
# The nginx version matrix: build nginx and env_gateway from each nginx
# source tarball in a folder, and run the test suite (or a named subset)
# against each.
#
#   scripts/matrix.sh TARBALL_DIR [OUTDIR]      (make test-matrix)
#
# For every TARBALL_DIR/nginx-<version>.tar.gz (oldest first):
#   OUTDIR/<version>/nginx    nginx itself: Debian's set of modules
#                             (conf_flags of nginx-dev, paths left out),
#                             --with-compat, like nginx.org's packages
#   OUTDIR/<version>/module   the module alone, built the way
#                             docs/install.md says to build it for an
#                             nginx.org package: `configure --with-compat
#                             --add-dynamic-module=...` and `make modules`
#                             in a second, bare tree of the same version
# then `prove` runs MATRIX_TESTS with ENVGW_NGINX and ENVGW_MODULE pointing
# at those two.  A tarball is either nginx.org's release layout (./configure)
# or the repository layout (auto/configure).
#
# Environment:
#   MATRIX_TESTS   test files or folders      (default: every t/*.t that
#                  starts nginx; see DEFAULT_SKIP below)
#   MATRIX_PICK    all | newest               (default all)
#   MATRIX_SANITIZE=1  both built by clang with AddressSanitizer, UBSan and
#                  NGX_DEBUG_PALLOC, as scripts/asan-build.sh builds 1.22
#                  (in OUTDIR/<version>-asan; any report fails the test)
#   ENVGW_BIN      the admin tool             (default cli/envgw)
#   JOBS           parallel compile jobs      (default 2)
#
# Prints one line per version and writes OUTDIR/summary.txt; each version's
# build and test logs stay in OUTDIR/<version>/.  Exits non-zero when any
# version fails to build or to pass.  A missing or empty TARBALL_DIR is not
# an error: it says so and exits 0.
set -uo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
DIR=${1:?usage: $0 TARBALL_DIR [OUTDIR]}
OUT=${2:-$REPO/build/matrix}
PICK=${MATRIX_PICK:-all}
JOBS=${JOBS:-2}
ENVGW=${ENVGW_BIN:-$REPO/cli/envgw}

# not about nginx: the fuzz replays (their nginx objects are the 1.22 ASan
# tree's), the Debian package test (Debian's own nginx, `make test-deb`)
# and the check of the docs' links
DEFAULT_SKIP="fuzz_regressions.t deb_package.t docs_links.t"

say() { printf 'matrix: %s\n' "$*" >&2; }

if [ ! -d "$DIR" ]; then
    say "no tarball folder $DIR: nothing to run"
    say "  put nginx-<version>.tar.gz files there or pass NGINX_TARBALLS=DIR"
    exit 0
fi
mapfile -t TARBALLS < <(ls "$DIR"/nginx-*.tar.gz 2>/dev/null \
                        | sed 's|.*/nginx-\(.*\)\.tar\.gz$|\1 &|' \
                        | sort -V | cut -d' ' -f2-)
if [ "${#TARBALLS[@]}" = 0 ]; then
    say "no nginx-<version>.tar.gz in $DIR: nothing to run"
    exit 0
fi
case $PICK in
    all) ;;
    newest) TARBALLS=("${TARBALLS[-1]}") ;;
    *) say "MATRIX_PICK must be all or newest"; exit 2 ;;
esac

[ -x "$ENVGW" ] || { say "$ENVGW not built (make cli)"; exit 2; }

if [ -n "${MATRIX_TESTS:-}" ]; then
    read -r -a TESTS <<< "$MATRIX_TESTS"
else
    TESTS=()
    for f in "$REPO"/t/*.t; do
        case " $DEFAULT_SKIP " in *" ${f##*/} "*) continue ;; esac
        TESTS+=("t/${f##*/}")
    done
fi

# Debian's nginx modules (nginx-dev's conf_flags without its paths), so the
# suite finds what it uses (auth_request, SSI, mirror, slice ...)
FLAGS=(--with-compat --with-debug --with-pcre-jit --with-threads
       --with-http_ssl_module --with-http_v2_module
       --with-http_stub_status_module --with-http_realip_module
       --with-http_auth_request_module --with-http_dav_module
       --with-http_slice_module)

MODFLAGS=(--with-compat --with-http_ssl_module)
SUFFIX=
PROVE_ENV=()
if [ "${MATRIX_SANITIZE:-0}" = 1 ]; then
    command -v clang >/dev/null || { say "MATRIX_SANITIZE=1 needs clang"; exit 2; }
    SAN="-fsanitize=address,undefined -fno-omit-frame-pointer"
    IGNORE=$REPO/scripts/ubsan-nginx-core.ignore
    # -Bsymbolic: see scripts/asan-build.sh (the module's own ngx_modules[])
    SANFLAGS=(--with-cc=clang
              "--with-cc-opt=-O1 -g $SAN -fsanitize-ignorelist=$IGNORE -DNGX_DEBUG_PALLOC=1"
              "--with-ld-opt=-fsanitize=address,undefined -Wl,-Bsymbolic")
    FLAGS+=("${SANFLAGS[@]}")
    MODFLAGS+=("${SANFLAGS[@]}")
    SUFFIX=-asan
    PROVE_ENV=(ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:disable_coredump=1:detect_stack_use_after_return=1:strict_string_checks=1
               UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1)
fi

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
exec 9>"$OUT/.lock"
flock 9

# unpack TARBALL into DEST (a fresh copy when the tarball changed)
unpack() {
    local tarball=$1 dest=$2 sum
    sum=$(sha256sum "$tarball" | cut -c1-16)
    if [ -f "$dest/.envgw-tarball" ] && [ "$(cat "$dest/.envgw-tarball")" = "$sum" ]; then
        return 0
    fi
    rm -rf "$dest"
    mkdir -p "$dest"
    tar -xzf "$tarball" -C "$dest" --strip-components=1 || return 1
    echo "$sum" > "$dest/.envgw-tarball"
}

configure_cmd() {
    if [ -x "$1/configure" ]; then echo ./configure; else echo auto/configure; fi
}

# build VERSION TARBALL: nginx in DEST/nginx, the module in DEST/module
build() {
    local ver=$1 tarball=$2 dest=$OUT/$1$SUFFIX cfg sig
    mkdir -p "$dest"
    unpack "$tarball" "$dest/nginx" && unpack "$tarball" "$dest/module" || {
        say "$ver: cannot unpack $tarball"; return 1; }

    cfg=$(configure_cmd "$dest/nginx")
    sig=$(printf '%s\n' "${FLAGS[@]}" | sha256sum | cut -c1-16)
    if [ ! -f "$dest/nginx/objs/Makefile" ] \
        || [ "$(cat "$dest/nginx/.envgw-conf" 2>/dev/null)" != "$sig" ]; then
        ( cd "$dest/nginx" && $cfg "${FLAGS[@]}" ) > "$dest/nginx-configure.log" 2>&1 \
            || { say "$ver: nginx configure failed ($dest/nginx-configure.log)"; return 1; }
        echo "$sig" > "$dest/nginx/.envgw-conf"
    fi
    make -C "$dest/nginx" -f objs/Makefile -j"$JOBS" binary \
        > "$dest/nginx-make.log" 2>&1 \
        || { say "$ver: nginx build failed ($dest/nginx-make.log)"; return 1; }

    # the module: rebuilt from scratch each run (seconds), so a change to
    # the module's sources or its config is always picked up
    cfg=$(configure_cmd "$dest/module")
    ( cd "$dest/module" && rm -rf objs \
      && $cfg "${MODFLAGS[@]}" --add-dynamic-module="$REPO" ) \
        > "$dest/module-configure.log" 2>&1 \
        || { say "$ver: module configure failed ($dest/module-configure.log)"; return 1; }
    make -C "$dest/module" -f objs/Makefile -j"$JOBS" modules \
        > "$dest/module-make.log" 2>&1 \
        || { say "$ver: module build failed:"
             grep -E 'error|warning' "$dest/module-make.log" | head -20 >&2
             return 1; }
}

status=0
: > "$OUT/summary.txt"
for tarball in "${TARBALLS[@]}"; do
    ver=$(basename "$tarball" .tar.gz); ver=${ver#nginx-}
    dest=$OUT/$ver$SUFFIX
    ver=$ver$SUFFIX
    say "$ver: building nginx and the module (logs in $dest/)"
    if ! build "${ver%-asan}" "$tarball"; then
        line="nginx $ver: BUILD FAILED (see $dest/)"
        status=1
    else
        nginx=$dest/nginx/objs/nginx
        module=$dest/module/objs/ngx_env_gateway_module.so
        say "$ver: $(ASAN_OPTIONS=detect_leaks=0 "$nginx" -v 2>&1); prove ${#TESTS[@]} test file(s)"
        ( cd "$REPO" && env "${PROVE_ENV[@]}" ENVGW_NGINX="$nginx" \
              ENVGW_MODULE="$module" ENVGW_BIN="$ENVGW" prove "${TESTS[@]}" ) \
            > "$dest/prove.log" 2>&1
        rc=$?
        result=$(sed -n 's/^Files=\([0-9]*\), Tests=\([0-9]*\),.*/\1 files, \2 tests/p' \
                     "$dest/prove.log" | tail -1)
        if [ "$rc" = 0 ]; then
            line="nginx $ver: PASS ($result)"
        else
            failed=$(awk '/^Test Summary Report/ {s=1; next}
                          s && /^t\/[^ ]+\.t / {print $1}' "$dest/prove.log" \
                     | sed 's|^t/||' | sort -u | tr '\n' ' ')
            line="nginx $ver: FAIL ($result; failed: ${failed:-see log}; $dest/prove.log)"
            status=1
        fi
    fi
    echo "$line" | tee -a "$OUT/summary.txt"
done
exit "$status"
