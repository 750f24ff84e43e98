#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-2-Clause
# make bench-callgrind-tls: what TLS to Redis costs the gateway, in
# instructions per request (exact and repeatable, unlike wall-clock CPU).
#
# One gateway nginx (master_process off) under callgrind per case, the
# backend and Redis outside valgrind; the same Redis over plain TCP and
# over TLS (bench/lib.sh start_redis):
#   nocache, nocache_tls   no env_gateway_cache: every request sends its
#                          lookups to Redis
#   warm, warm_tls         env_gateway_cache, warmed first: no Redis
# After a warm-up, counters are zeroed and N requests sent on one
# keep-alive connection (bench/hammer.pl); Ir per request of the whole
# worker.  Redis' own TLS cost is not in these figures (make bench shows
# it, "Redis µs/req").
#   BENCH_CG_REQUESTS=2000
set -euo pipefail
. "$(dirname "$0")/lib.sh"

MODULE=${1:-$BENCH_TOP/build/nginx/objs/ngx_env_gateway_module.so}
N=${BENCH_CG_REQUESTS:-2000}
command -v valgrind >/dev/null || { echo "bench: valgrind not installed" >&2; exit 1; }
bench_init
export BENCH_START_TIMEOUT=90

start_redis
seed_redis 1000 "$BENCH_DIR/pairs.txt"
read -r TOK ACC _ < "$BENCH_DIR/pairs.txt"

BK=$(free_port)
nginx_conf backend "
    server { listen 127.0.0.1:$BK;
             location / { default_type text/plain; return 200 \"ok\n\"; } }"
start_nginx backend "$BK"

HAMMER="$BENCH_TOP/bench/hammer.pl"
PROXY='proxy_http_version 1.1; proxy_set_header Connection "";'
PLAIN="env_gateway_redis 127.0.0.1:$REDIS_PORT;"
TLS="env_gateway_redis 127.0.0.1:$REDIS_TLS_PORT tls tls_ca=$TLS_DIR/ca.crt;"
CACHE="env_gateway_cache zone=envgw:8m ttl=1h negative_ttl=1h;"

declare -A IR
cg_case() {   # NAME HTTP-CONF
    local name=$1 conf=$2 port pid f
    port=$(free_port)
    nginx_conf "$name" "
    $conf
    upstream bench_backend { server 127.0.0.1:$BK; keepalive 8; }
    server { listen 127.0.0.1:$port;
             location / { env_gateway on;
                          env_gateway_account \$arg_integrated_account_id;
                          $PROXY proxy_pass http://bench_backend; } }" \
        "load_module $MODULE; master_process off;"
    start_nginx "$name" "$port" valgrind --tool=callgrind --dump-instr=no \
        --callgrind-out-file="$BENCH_DIR/$name/cg.out"
    pid=${NGX_PID[$name]}
    perl "$HAMMER" "$port" 200 / "$TOK" "$ACC" > /dev/null
    callgrind_control -z "$pid" > /dev/null
    echo "  $name: $(perl "$HAMMER" "$port" "$N" / "$TOK" "$ACC")" >&2
    callgrind_control -d "$name" "$pid" > /dev/null
    kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
    f=$(grep -l "^desc: Trigger: dump $name\$" "$BENCH_DIR/$name"/cg.out* | sed -n 1p)
    IR[$name]=$(sed -n 's/^summary: \([0-9]*\).*/\1/p;s/^totals: \([0-9]*\).*/\1/p' "$f" | sed -n 1p)
    if grep -h -E '\[(alert|emerg|crit)\]' "$BENCH_DIR/$name/error.log" >&2; then
        echo "bench: WARNING: alerts in $name's error.log (above)" >&2
    fi
}

echo "bench: callgrind, $N requests per case, Redis plain and TLS" >&2
cg_case nocache "$PLAIN"
cg_case nocache_tls "$TLS"
cg_case warm "$PLAIN $CACHE"
cg_case warm_tls "$TLS $CACHE"

per() { awk -v a="$1" -v n="$N" 'BEGIN { printf "%.0f", a / n }'; }
echo
echo "### callgrind: TLS to Redis ($N requests per case, one keep-alive connection)"
echo
echo "| case | Ir per request, whole gateway worker |"
echo "|---|---:|"
echo "| no cache, Redis over TCP | $(per "${IR[nocache]}") |"
echo "| no cache, Redis over TLS | $(per "${IR[nocache_tls]}") |"
echo "| **added by TLS, no cache** | **$(per $(( IR[nocache_tls] - IR[nocache] )))** |"
echo "| warm cache, Redis over TCP | $(per "${IR[warm]}") |"
echo "| warm cache, Redis over TLS | $(per "${IR[warm_tls]}") |"
echo "| added by TLS, warm cache | $(per $(( IR[warm_tls] - IR[warm] ))) |"
echo
machine
