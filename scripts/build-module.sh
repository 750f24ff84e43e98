#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-2-Clause
# Build ngx_env_gateway_module.so out of tree against Debian's nginx-dev.
# Serialized with flock: several `make` runs (tests, benchmarks) may start
# at once and must not configure the same build tree concurrently.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
src=${NGINX_SRC:-/usr/share/nginx/src}
build=${BUILD:-$top/build}
tree=$build/nginx

if [ ! -d "$src" ]; then
    echo "env_gateway: $src not found: apt-get install nginx-dev" >&2
    exit 1
fi

mkdir -p "$build"
exec 9>"$build/.module.lock"
flock 9

if [ ! -f "$tree/objs/Makefile" ] || [ "$top/config" -nt "$tree/objs/Makefile" ]
then
    rm -rf "$tree"
    cp -r "$src" "$tree"
    (
        cd "$tree"
        . ./conf_flags
        ./configure "${NGX_CONF_FLAGS[@]}" --add-dynamic-module="$top" \
            --with-cc-opt="-g -O2 -fPIC" > "$build/configure.log" 2>&1
    ) || { tail -20 "$build/configure.log" >&2; exit 1; }
fi

# nginx's own flags (-W -Wall -Wpointer-arith -Wno-unused-parameter -Werror)
# come from its auto/cc/gcc
make -s -C "$tree" -f objs/Makefile modules
