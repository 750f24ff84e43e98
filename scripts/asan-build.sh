#!/bin/bash
# SPDX-License-Identifier: BSD-2-Clause
# Build nginx 1.22.1 (upstream source from Debian's source package) and
# env_gateway in the same tree with AddressSanitizer + UBSan and
# NGX_DEBUG_PALLOC (every pool allocation is its own malloc, so ASan sees
# overflows of pool memory).
#
#   scripts/asan-build.sh [BUILDDIR]   (default build/asan)
#   -> BUILDDIR/nginx-1.22.1/objs/nginx
#      BUILDDIR/nginx-1.22.1/objs/ngx_env_gateway_module.so
#
# ENVGW_ASAN_LINK=dynamic (default) builds the module as a dynamic module of
# this very nginx, so the test harness's `load_module` lines work unchanged
# (ENVGW_MODULE points at the .so above).  ENVGW_ASAN_LINK=static compiles it
# into the binary (--add-module); tests then must drop `load_module`.
#
# CC (default clang, falls back to gcc) picks the compiler.  Re-running only
# recompiles what changed (configure is redone when `config` changes).
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:-$REPO/build/asan}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
SRC=$OUT/nginx-1.22.1
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 2)}

if [ -z "${CC:-}" ]; then
    if command -v clang >/dev/null; then CC=clang; else CC=gcc; fi
fi

"$REPO/scripts/ngx-source.sh" "$OUT"

SAN="-fsanitize=address,undefined -fno-omit-frame-pointer"
IGNORE=$REPO/scripts/ubsan-nginx-core.ignore
CC_OPT="-O1 -g $SAN -fsanitize-ignorelist=$IGNORE -DNGX_DEBUG_PALLOC=1"
[ "$CC" = gcc ] && CC_OPT="-O1 -g $SAN -fno-sanitize=alignment,nonnull-attribute,pointer-overflow -DNGX_DEBUG_PALLOC=1"
LD_OPT="-fsanitize=address,undefined"
LINK=${ENVGW_ASAN_LINK:-dynamic}
case "$LINK" in
    # -Bsymbolic: the module's .so has its own (auto-generated) global
    # ngx_modules[]; without it that name binds to nginx's ngx_modules and
    # ASan, registering the .so's 16-byte global at nginx's address, poisons
    # nginx's array after 16 bytes: a false global-buffer-overflow in
    # ngx_cycle_modules() on every reload.
    dynamic) ADD=--add-dynamic-module="$REPO"; TARGETS="binary modules"
             LD_OPT="$LD_OPT -Wl,-Bsymbolic" ;;
    static)  ADD=--add-module="$REPO"; TARGETS=binary ;;
    *) echo "asan-build: ENVGW_ASAN_LINK must be dynamic or static" >&2; exit 1 ;;
esac
CONF_ARGS=(--with-debug --with-http_v2_module --with-http_ssl_module
    --with-threads --with-http_auth_request_module
    "$ADD" --with-cc="$CC"
    --with-cc-opt="$CC_OPT" --with-ld-opt="$LD_OPT")

# redo configure when its inputs change
sig=$(printf '%s\n' "${CONF_ARGS[@]}" | cat - "$REPO/config" "$IGNORE" | sha256sum | cut -c1-16)
if [ ! -f "$SRC/objs/Makefile" ] || [ "$(cat "$SRC/.envgw-conf" 2>/dev/null)" != "$sig" ]; then
    echo "asan-build: configure ($CC, $LINK module)" >&2
    ( cd "$SRC" && ./configure "${CONF_ARGS[@]}" ) > "$OUT/configure.log" 2>&1 \
        || { tail -30 "$OUT/configure.log" >&2; exit 1; }
    echo "$sig" > "$SRC/.envgw-conf"
fi

echo "asan-build: make -j$JOBS" >&2
make -s -C "$SRC" -f objs/Makefile -j"$JOBS" $TARGETS > "$OUT/make.log" 2>&1 \
    || { grep -E 'error|Error' "$OUT/make.log" | head -30 >&2; exit 1; }
ASAN_OPTIONS=detect_leaks=0 "$SRC/objs/nginx" -V 2>&1 | sed -n 1p >&2
echo "$SRC/objs/nginx"
