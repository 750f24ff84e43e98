#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-2-Clause
# make bench-callgrind: instructions per request on a warm cache hit.
#
# One nginx (master_process off) runs under callgrind with two fronts in the
# same process: "gw" (env_gateway on, env_gateway_cache) and "plain" (no
# env_gateway); the backend is another nginx, outside valgrind.  After a
# warm-up, counters are zeroed, N requests are sent on one keep-alive
# connection, and a dump is taken (callgrind_control) -- for each front.
#   run A (all code collected): Ir per request of the whole front, gw and
#        plain, and the inclusive Ir of ngx_env_gateway_access_handler.
#   run B (--toggle-collect=ngx_env_gateway_access_handler): only what runs
#        inside the handler is counted: its Ir per request and the list of
#        every function it reached -- checked for json_*, malloc & co and
#        for the shared-memory lock.
#   BENCH_CG_REQUESTS=2000
#   BENCH_CG_CACHE=0: no env_gateway_cache (every request asks Redis for
#        its records; the Redis server is outside valgrind, the worker's
#        side of the round trip and the parsing of the replies inside)
set -euo pipefail
. "$(dirname "$0")/lib.sh"

MODULE=${1:-$BENCH_TOP/build/nginx/objs/ngx_env_gateway_module.so}
N=${BENCH_CG_REQUESTS:-2000}
if [ "${BENCH_CG_CACHE:-1}" = 0 ]; then
    CG_CACHE=""; CG_WHAT="no cache (Redis asked on every request)"
    CG_PASS="pass, no cache"
else
    CG_CACHE="env_gateway_cache zone=envgw:8m ttl=1h negative_ttl=1h;"
    CG_WHAT="warm cache hit"
    CG_PASS="warm pass"
fi
command -v valgrind >/dev/null || { echo "bench: valgrind not installed" >&2; exit 1; }
bench_init
export BENCH_START_TIMEOUT=90

start_redis
seed_redis 1000 "$BENCH_DIR/pairs.txt"
read -r TOK ACC _ < "$BENCH_DIR/pairs.txt"
XACC=$(sed -n 2p "$BENCH_DIR/pairs.txt" | cut -d' ' -f2)     # another environment
UNKNOWN=egw_cg_0000000000000000000000000000000000000000     # in no record

BK=$(free_port)
nginx_conf backend "
    server { listen 127.0.0.1:$BK;
             location / { default_type text/plain; return 200 \"ok\n\"; } }"
start_nginx backend "$BK"

# an account of the first environment whose integration declares "auth",
# with encrypted credentials: the "routecred" path decrypts and injects
printf 'kcg %s\n' "$(head -c 32 /dev/urandom | base64)" > "$BENCH_DIR/secret_keys"
chmod 0600 "$BENCH_DIR/secret_keys"
CENV=$(sed -n 1p "$BENCH_DIR/pairs.txt" | cut -d' ' -f3)
CACC=acct_cg_cred
ENVGW_C=("$BENCH_TOP/cli/envgw" --redis "127.0.0.1:$REDIS_PORT")
export ENVGW_SECRET_KEYS="$BENCH_DIR/secret_keys"
rcli GET "envgw:integration:$CENV:hubspot" \
    | sed 's/^{/{"auth":{"header":"Authorization","format":"Bearer {access_token}"},/' \
    | rcli -x SET "envgw:integration:$CENV:hubspotc" > /dev/null
rcli SET "envgw:account:$CACC" "{\"integrated_account_id\":\"$CACC\",\"environment_id\":\"$CENV\",\"integration\":\"hubspotc\",\"status\":\"active\"}" > /dev/null
"${ENVGW_C[@]}" credentials set "$CACC" --field "access_token=at_$(head -c 18 /dev/urandom | base64)" > /dev/null

HAMMER="$BENCH_TOP/bench/hammer.pl"
PROXY=$BENCH_PROXY

cg_run() {   # NAME VALGRIND-OPTIONS...
    local name=$1; shift
    local GW PL LM d
    GW=$(free_port); PL=$(free_port); LM=$(free_port)
    nginx_conf "$name" "
    env_gateway_redis 127.0.0.1:$REDIS_PORT;
    $CG_CACHE
    env_gateway_limit_zone zone=envgw_limits:8m;
    env_gateway_secret_keys $BENCH_DIR/secret_keys;
    upstream bench_backend { server 127.0.0.1:$BK; keepalive 8; }
    server { listen 127.0.0.1:$LM;
             location / { env_gateway on;
                          env_gateway_account \$arg_integrated_account_id;
                          env_gateway_limit token 1000000000r/s;
                          $PROXY proxy_pass http://bench_backend; } }
    server { listen 127.0.0.1:$GW;
             $(gw_locations) }
    server { listen 127.0.0.1:$PL;
             location / { $PROXY proxy_pass http://bench_backend; } }" \
        "load_module $MODULE; master_process off;"
    start_nginx "$name" "$GW" valgrind --tool=callgrind --dump-instr=no \
        --callgrind-out-file="$BENCH_DIR/$name/cg.out" "$@"
    local pid=${NGX_PID[$name]}
    wait_port "$PL" 30
    # warm: the first request fetches token, account and environment from
    # Redis and fills the cache; the rest warm nginx's own pools and paths
    local scen port path tok acc
    # dump-name port path token account: the gateway's warm pass, plain,
    # the /proxy/ route, an unknown token (401, negatively cached) and an
    # account of another environment (404), and the warm pass with a token
    # limit that is never reached
    for scen in "gw $GW / $TOK $ACC" "plain $PL / $TOK $ACC" \
                "route $GW /proxy/contacts $TOK $ACC" "r401 $GW / $UNKNOWN $ACC" \
                "r404 $GW / $TOK $XACC" "limit $LM / $TOK $ACC" \
                "routecred $GW /proxy/contacts $TOK $CACC"
    do
        read -r d port path tok acc <<< "$scen"
        perl "$HAMMER" "$port" 200 "$path" "$tok" "$acc" > /dev/null
        callgrind_control -z "$pid" > /dev/null
        echo "  $name $d: $(perl "$HAMMER" "$port" "$N" "$path" "$tok" "$acc")" >&2
        callgrind_control -d "$d" "$pid" > /dev/null
    done
    kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
}

dump_file() { grep -l "^desc: Trigger: dump $2\$" "$BENCH_DIR/$1"/cg.out* | sed -n 1p; }
total_ir() { sed -n 's/^summary: \([0-9]*\).*/\1/p;s/^totals: \([0-9]*\).*/\1/p' "$1" | sed -n 1p; }
incl_ir() {  # file function: inclusive Ir of the function (not of inlined pieces)
    callgrind_annotate --auto=no --inclusive=yes --threshold=100 "$1" 2>/dev/null \
        | awk -v f="$2" '!d && $0 ~ (":" f "(\\.[a-z]+\\.[0-9]+)? \\[") { g=$1; gsub(",", "", g); print g; d=1 }'
}

echo "bench: callgrind, $N warm requests per front" >&2
cg_run cgA
cg_run cgB --toggle-collect=ngx_env_gateway_access_handler

A_GW=$(dump_file cgA gw); A_PL=$(dump_file cgA plain); B_GW=$(dump_file cgB gw)
[ -n "$A_GW" ] && [ -n "$A_PL" ] && [ -n "$B_GW" ] || { ls -l "$BENCH_DIR"/cg*/ >&2; echo "bench: dumps missing" >&2; exit 1; }

# the report below cuts listings with head: no pipefail from here
set +o pipefail
gw_total=$(total_ir "$A_GW"); pl_total=$(total_ir "$A_PL")
h_incl=$(incl_ir "$A_GW" ngx_env_gateway_access_handler)
b_total=$(total_ir "$B_GW")
per() { awk -v a="$1" -v n="$N" 'BEGIN { printf "%.0f", a / n }'; }

callgrind_annotate --auto=no --inclusive=yes --threshold=100 "$B_GW" > "$BENCH_DIR/handler_functions.txt" 2>/dev/null
callgrind_annotate --auto=no --inclusive=no --threshold=100 "$A_GW" > "$BENCH_DIR/gw_self.txt" 2>/dev/null
callgrind_annotate --auto=no --inclusive=no --threshold=100 "$A_PL" > "$BENCH_DIR/plain_self.txt" 2>/dev/null
# functions (self cost) inside the handler, per request
fnlist() {  # annotate output -> "Ir/request  file:function", toggle artifacts (100%) dropped
    awk -v n="$N" '/^ *[0-9,]+ +\(/ && !/PROGRAM TOTALS/ && !/\(100\.0%\)/ {
        ir=$1; gsub(",", "", ir); line=$0; sub(/^ *[0-9,]+ +\([^)]*\) +/, "", line);
        sub(/ \[.*$/, "", line); sub(/^.*\//, "", line); printf "%10.1f  %s\n", ir / n, line }' "$1"
}
callgrind_annotate --auto=no --inclusive=no --threshold=100 "$B_GW" 2>/dev/null > "$BENCH_DIR/handler_self.txt"

echo
echo "### callgrind: $CG_WHAT ($N requests per front, one keep-alive connection)"
echo
echo "| measure | Ir per request |"
echo "|---|---:|"
echo "| whole front worker, plain proxy_pass | $(per "$pl_total") |"
echo "| whole front worker, env_gateway $CG_PASS | $(per "$gw_total") |"
echo "| added by env_gateway (difference) | $(per $((gw_total - pl_total))) |"
echo "| ngx_env_gateway_access_handler inclusive (run A) | $(per "${h_incl:-0}") |"
echo "| ngx_env_gateway_access_handler inclusive (run B, toggle-collect) | $(per "$b_total") |"
# JSON parsing and heap allocation anywhere in the worker (the no-cache
# path parses Redis replies outside the handler)
objsum() {  # annotate output, object regex -> self Ir of its functions
    awk -v re="$2" '/^ *[0-9,]+ +\(/ && !/PROGRAM TOTALS/ && $0 ~ re {
        ir=$1; gsub(",", "", ir); s += ir } END { print s + 0 }' "$1"
}
echo "| libjansson, whole front worker (self) | $(per "$(objsum "$BENCH_DIR/gw_self.txt" 'libjansson')") |"
echo "| malloc/free/realloc, whole front worker (self) | $(per "$(objsum "$BENCH_DIR/gw_self.txt" ':(_int_malloc|_int_free|malloc|free|realloc|calloc|_int_realloc|malloc_consolidate|cfree)[@ ]')") |"
echo
echo "Every path ($N requests each on one keep-alive connection, Ir per request):"
echo
echo "| path | whole front worker | minus plain proxy_pass | access handler inclusive (run B) |"
echo "|---|---:|---:|---:|"
for d in gw route routecred r401 r404 limit; do
    fa=$(dump_file cgA "$d"); fb=$(dump_file cgB "$d")
    [ -n "$fa" ] && [ -n "$fb" ] || continue
    ta=$(total_ir "$fa"); tb=$(total_ir "$fb")
    case $d in
        gw) what="$CG_PASS, / (200)" ;;
        route) what="$CG_PASS, /proxy/contacts route (200)" ;;
        routecred) what="$CG_PASS, /proxy/contacts route with credentials injected (200)" ;;
        r401) what="unknown token (401${CG_CACHE:+, negative cache})" ;;
        limit) what="$CG_PASS, / with env_gateway_limit token (200, never reached)" ;;
        r404) what="account of another environment (404)" ;;
    esac
    echo "| $what | $(per "$ta") | $(per $((ta - pl_total))) | $(per "$tb") |"
done
for d in route r401 r404; do
    fa=$(dump_file cgA "$d")
    [ -n "$fa" ] || continue
    callgrind_annotate --auto=no --inclusive=no --threshold=100 "$fa" 2>/dev/null > "$BENCH_DIR/${d}_self.txt"
    echo
    echo "Top self cost, whole front worker, $d (Ir per request):"
    echo
    echo '```'
    fnlist "$BENCH_DIR/${d}_self.txt" | head -25
    echo '```'
done
echo
echo "Functions reached inside the handler on a warm hit (self Ir per request, run B):"
echo
echo '```'
fnlist "$BENCH_DIR/handler_self.txt"
echo '```'
bad=$(fnlist "$BENCH_DIR/handler_self.txt" | awk '{ $1=""; print }' \
      | grep -E '(^| |:)(json_|jansson|malloc|calloc|realloc|posix_memalign|memalign|free|_int_malloc|ngx_alloc|ngx_memalign|ngx_palloc_large|ngx_palloc_block)' || true)
if [ -n "$bad" ]; then
    echo "warm hit check: FOUND in the handler: $bad"
else
    echo "warm hit check: no json_*, no malloc/calloc/realloc/free/posix_memalign, no pool block/large allocation inside the handler."
fi
get=$(incl_ir "$B_GW" ngx_env_gateway_cache_get)
ld=$(incl_ir "$B_GW" ngx_env_gateway_record_load)
find=$(incl_ir "$B_GW" ngx_env_gateway_cache_find)
crc=$(callgrind_annotate --auto=no --inclusive=no --threshold=100 "$B_GW" 2>/dev/null | awk '!d && /ngx_crc32.h:ngx_env_gateway_cache_get/ { g=$1; gsub(",", "", g); print g; d=1 }')
lookups=$(callgrind_annotate --auto=no --inclusive=yes --tree=calling --threshold=100 "$B_GW" 2>/dev/null | sed -n 's/.*> .*:ngx_env_gateway_cache_get (\([0-9,]*\)x).*/\1/p' | tr -d , | awk '{ s += $1 } END { print s + 0 }')
selfget=$(callgrind_annotate --auto=no --inclusive=no --threshold=100 "$B_GW" 2>/dev/null | awk '!d && /ngx_env_gateway_cache.c:ngx_env_gateway_cache_get \[/ { g=$1; gsub(",", "", g); print g; d=1 }')
lk=$(callgrind_annotate --auto=no --inclusive=no --threshold=100 "$B_GW" 2>/dev/null | awk '/:ngx_shmtx_(un)?lock \[/ { g=$1; gsub(",", "", g); s += g } END { print s + 0 }')
held=$(( ${find:-0} + ${ld:-0} + ${selfget:-0} + ${lk:-0} ))
echo "shared-memory lock: $(awk -v l="$lookups" -v n="$N" 'BEGIN { printf "%.1f", l / n }') cache lookups per request. The key hash (crc32, $(per "${crc:-0}") Ir/request) is computed before the lock; under ngx_shmtx_lock run cache_find ($(per "${find:-0}")), the LRU touch and cache_get itself ($(per "${selfget:-0}")), record_load, the copy of the blob into the request pool ($(per "${ld:-0}")), and lock+unlock ($(per "${lk:-0}")): about $(awk -v a="$held" -v l="$lookups" 'BEGIN { if (l) printf "%.0f", a / l }') instructions per lookup with the lock held, no I/O, no allocation beyond the pool."
echo
echo "Inclusive cost inside the handler (run B, Ir per request, top 20):"
echo
echo '```'
callgrind_annotate --auto=no --inclusive=yes --threshold=100 "$B_GW" 2>/dev/null > "$BENCH_DIR/handler_incl.txt"
fnlist "$BENCH_DIR/handler_incl.txt" | head -20
echo '```'
echo
echo "Heap allocations inside the handler (callers of malloc/free, run B):"
echo
echo '```'
callgrind_annotate --auto=no --inclusive=yes --tree=caller --threshold=100 "$B_GW" 2>/dev/null \
    | awk -v RS= '/\* [^\n]*:(malloc|free|calloc|realloc|posix_memalign) \[/ { gsub(/ \[[^\n]*/, ""); print; print "" }'
echo '```'
echo
echo "Top self cost, whole front worker, env_gateway warm (Ir per request):"
echo
echo '```'
fnlist "$BENCH_DIR/gw_self.txt" | head -25
echo '```'
echo
echo "Top self cost, whole front worker, plain (Ir per request):"
echo
echo '```'
fnlist "$BENCH_DIR/plain_self.txt" | head -15
echo '```'
