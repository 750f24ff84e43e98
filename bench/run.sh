#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-2-Clause
# make bench: plain proxy_pass vs env_gateway (warm cache, no cache, /proxy/
# route), interleaved rounds, medians, one markdown table.
#
#   bench/run.sh [MODULE.so]
#   BENCH_DURATION=10 BENCH_ROUNDS=3 BENCH_CONNS=50 BENCH_TOKENS=1000
#   BENCH_SERVER_CPU=0 BENCH_CLIENT_CPU=1 BENCH_KEEP=1 (keep the temp dir)
#
# Server side: redis-server and four single-worker nginx instances, all
# pinned to BENCH_SERVER_CPU: "backend" (return 200, 3 bytes), "plain"
# (proxy_pass to it, no module loaded), "gw" (module with env_gateway_cache:
# the warm and /proxy/ route fronts, the "limit" front (warm, plus a token
# limit never reached), and metrics), "nocache" (module, no
# env_gateway_cache: every request asks Redis).  wrk (-t1) runs pinned to
# BENCH_CLIENT_CPU.  Server CPU per request = utime+stime of every server
# process (all nginx masters and workers, Redis) over the run / requests;
# it includes the backend for every variant alike.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

MODULE=${1:-$BENCH_TOP/build/nginx/objs/ngx_env_gateway_module.so}
DUR=${BENCH_DURATION:-10}
ROUNDS=${BENCH_ROUNDS:-3}
CONNS=${BENCH_CONNS:-50}
NTOK=${BENCH_TOKENS:-1000}
[ -f "$MODULE" ] || { echo "bench: $MODULE not found (make module)" >&2; exit 1; }
command -v wrk >/dev/null || { echo "bench: wrk not installed" >&2; exit 1; }

bench_init
LOAD_BEFORE=$(uptime)

start_redis
seed_redis "$NTOK" "$BENCH_DIR/pairs.txt"

BK=$(free_port); PL=$(free_port); WARM=$(free_port); ROUTE=$(free_port)
NC=$(free_port); MG=$(free_port); MN=$(free_port); LIM=$(free_port)

PROXY='proxy_http_version 1.1; proxy_set_header Connection "";'
GWPROXY="$PROXY"' proxy_set_header X-Environment-Id $env_gateway_environment_id;'

nginx_conf backend "
    server { listen 127.0.0.1:$BK backlog=4096;
             location / { default_type text/plain; return 200 \"ok\n\"; } }"

nginx_conf plain "
    upstream backend { server 127.0.0.1:$BK; keepalive 32; keepalive_requests 100000; }
    server { listen 127.0.0.1:$PL backlog=4096;
             location / { $PROXY proxy_pass http://backend; } }"

nginx_conf gw "
    env_gateway_redis 127.0.0.1:$REDIS_PORT;
    env_gateway_cache zone=envgw:32m ttl=1h negative_ttl=5s;
    env_gateway_limit_zone zone=envgw_limits:16m;
    upstream bench_backend { server 127.0.0.1:$BK; keepalive 32; keepalive_requests 100000; }
    server { listen 127.0.0.1:$LIM backlog=4096;
             location / { env_gateway on;
                          env_gateway_account \$arg_integrated_account_id;
                          env_gateway_limit token 1000000000r/s;
                          $GWPROXY proxy_pass http://bench_backend; } }
    server { listen 127.0.0.1:$WARM backlog=4096;
             location / { env_gateway on;
                          env_gateway_account \$arg_integrated_account_id;
                          $GWPROXY proxy_pass http://bench_backend; } }
    server { listen 127.0.0.1:$ROUTE backlog=4096;
             location ~ ^/proxy/(?<res>[^/]+)(?:/(?<rest>[^/]+))?\$ {
                          env_gateway on;
                          env_gateway_account \$arg_integrated_account_id;
                          env_gateway_route \$res \$rest;
                          $GWPROXY proxy_pass \$env_gateway_upstream_url; } }
    server { listen 127.0.0.1:$MG; location = /metrics { env_gateway_metrics; } }" \
    "load_module $MODULE;"

nginx_conf nocache "
    env_gateway_redis 127.0.0.1:$REDIS_PORT;
    upstream bench_backend { server 127.0.0.1:$BK; keepalive 32; keepalive_requests 100000; }
    server { listen 127.0.0.1:$NC backlog=4096;
             location / { env_gateway on;
                          env_gateway_account \$arg_integrated_account_id;
                          $GWPROXY proxy_pass http://bench_backend; } }
    server { listen 127.0.0.1:$MN; location = /metrics { env_gateway_metrics; } }" \
    "load_module $MODULE;"

start_nginx backend "$BK"
start_nginx plain "$PL"
start_nginx gw "$WARM"
start_nginx nocache "$NC"
sleep 0.3

declare -A URL=( [plain]="http://127.0.0.1:$PL" [warm]="http://127.0.0.1:$WARM"
                 [nocache]="http://127.0.0.1:$NC" [route]="http://127.0.0.1:$ROUTE"
                 [limit]="http://127.0.0.1:$LIM" )
declare -A PATHV=( [plain]=/ [warm]=/ [nocache]=/ [route]=/proxy/contacts [limit]=/ )
declare -A METRICS=( [warm]=$MG [route]=$MG [nocache]=$MN [limit]=$MG )
VARIANTS="plain warm nocache route limit"

metric() {  # port name-with-labels
    curl -s "http://127.0.0.1:$1/metrics" | awk -v k="$2" '$1 == k {print $2}' | head -1
}
redis_cmds() { rcli info stats | tr -d "\r" | sed -n "s/^total_commands_processed://p"; }
miss_count() {
    [ -n "${METRICS[$1]:-}" ] || { echo 0; return; }
    local v; v=$(metric "${METRICS[$1]}" 'env_gateway_cache_lookups_total{outcome="miss"}')
    echo "${v:-0}"
}

# sanity: one request per variant answers 200
TOK=$(head -1 "$BENCH_DIR/pairs.txt" | cut -d' ' -f1)
ACC=$(head -1 "$BENCH_DIR/pairs.txt" | cut -d' ' -f2)
for v in $VARIANTS; do
    code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOK" \
        "${URL[$v]}${PATHV[$v]}?integrated_account_id=$ACC")
    [ "$code" = 200 ] || { echo "bench: $v answered $code" >&2;
        cat "$BENCH_DIR"/*/error.log >&2; exit 1; }
done

mapfile -t SPIDS < <(server_pids)
RES="$BENCH_DIR/results.tsv"
: > "$RES"
echo "bench: ${ROUNDS} rounds x 5 variants x ${DUR}s, $CONNS connections, $NTOK tokens/accounts in 3 environments" >&2

for round in $(seq 1 "$ROUNDS"); do
    for v in $VARIANTS; do
        if [ "$v" = warm ] || [ "$v" = route ] || [ "$v" = limit ]; then
            # warm the cache: two passes over every pair, not measured
            run_wrk "${URL[$v]}" 2s 10 "$BENCH_DIR/pairs.txt" "${PATHV[$v]}" > /dev/null
        fi
        m0=$(miss_count "$v")
        c0=$(redis_cmds)
        t0=$(cpu_ticks "${SPIDS[@]}")
        line=$(run_wrk "${URL[$v]}" "${DUR}s" "$CONNS" "$BENCH_DIR/pairs.txt" "${PATHV[$v]}")
        t1=$(cpu_ticks "${SPIDS[@]}")
        m1=$(miss_count "$v")
        c1=$(redis_cmds)
        req=$(field requests "$line")
        errs=$(( $(field err_connect "$line") + $(field err_read "$line") + $(field err_write "$line") + $(field err_timeout "$line") ))
        cpu_us=$(awk -v t=$((t1 - t0)) -v hz="$CLK_TCK" -v n="$req" 'BEGIN { printf "%.2f", t / hz * 1e6 / n }')
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$v" "$(field rps "$line")" \
            "$(field p50_us "$line")" "$(field p99_us "$line")" "$(field non2xx "$line")" \
            "$cpu_us" "$((m1 - m0))" "$errs" "$(awk -v c=$((c1 - c0)) -v n="$req" 'BEGIN { printf "%.2f", c / n }')" >> "$RES"
        echo "  round $round $v: $line cpu_us_per_req=$cpu_us cache_misses=$((m1 - m0))" >&2
    done
done

LOAD_AFTER=$(uptime)

# workers must not have crashed or logged alerts
if grep -h -E '\[(alert|emerg|crit)\]|exited on signal' "$BENCH_DIR"/*/error.log >&2; then
    echo "bench: WARNING: alerts in error.log (above)" >&2
fi

perl "$BENCH_TOP/bench/table.pl" "$RES"
echo
machine
echo "- load before: ${LOAD_BEFORE#*load }"
echo "- load after:  ${LOAD_AFTER#*load }"
echo "- command: make bench (BENCH_DURATION=$DUR BENCH_ROUNDS=$ROUNDS BENCH_CONNS=$CONNS BENCH_TOKENS=$NTOK): server processes on CPU $SERVER_CPU, wrk -t1 -c$CONNS on CPU $CLIENT_CPU"
