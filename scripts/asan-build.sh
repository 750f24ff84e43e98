#!/bin/bash
# Build nginx 1.22.1 (upstream source from Debian's source package) with
# env_gateway compiled in statically, AddressSanitizer + UBSan and
# NGX_DEBUG_PALLOC (every pool allocation is its own malloc, so ASan sees
# overflows of pool memory).
#
#   scripts/asan-build.sh [BUILDDIR]   (default build/asan)
#   -> BUILDDIR/nginx-1.22.1/objs/nginx
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
CC_OPT="-O1 -g $SAN -DNGX_DEBUG_PALLOC=1"
LD_OPT="-fsanitize=address,undefined"
CONF_ARGS=(--with-debug --with-http_v2_module --with-http_ssl_module
    --with-threads --with-http_auth_request_module
    --add-module="$REPO" --with-cc="$CC"
    --with-cc-opt="$CC_OPT" --with-ld-opt="$LD_OPT")

# redo configure when its inputs change
sig=$(printf '%s\n' "${CONF_ARGS[@]}" | cat - "$REPO/config" | sha256sum | cut -c1-16)
if [ ! -f "$SRC/objs/Makefile" ] || [ "$(cat "$SRC/.envgw-conf" 2>/dev/null)" != "$sig" ]; then
    echo "asan-build: configure ($CC)" >&2
    ( cd "$SRC" && ./configure "${CONF_ARGS[@]}" ) > "$OUT/configure.log" 2>&1 \
        || { tail -30 "$OUT/configure.log" >&2; exit 1; }
    echo "$sig" > "$SRC/.envgw-conf"
fi

echo "asan-build: make -j$JOBS" >&2
make -s -C "$SRC" -f objs/Makefile -j"$JOBS" binary > "$OUT/make.log" 2>&1 \
    || { grep -E 'error|Error' "$OUT/make.log" | head -30 >&2; exit 1; }
ASAN_OPTIONS=detect_leaks=0 "$SRC/objs/nginx" -V 2>&1 | head -1 >&2
echo "$SRC/objs/nginx"
