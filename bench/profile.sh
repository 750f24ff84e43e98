#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-2-Clause
# make bench-profile: where the gateway worker's time goes, against plain
# proxy_pass, in CPU time per request.
#
# Two single-worker nginx, "gw" (the bench's gateway configuration) and
# "plain" (proxy_pass, no module), in front of the same backend, all on one
# core as in make bench.  For each, in turn (plain, gw, plain, gw): a 2 s
# wrk pass unmeasured, then a BENCH_DURATION (8 s) pass during which perf
# samples the worker (perf record -g -F 4999) and its CPU time is read from
# /proc/PID/task/*/schedstat.  Each symbol's share of the samples times the
# worker's CPU time per request gives its µs per request; the tables show
# plain, the gateway and the difference, by object and by symbol (the
# second pass of each; the first warms both).
#   BENCH_PROFILE_WORKLOAD=valid|mix (valid)
#   BENCH_PROFILE_CACHE=0: the gateway without env_gateway_cache
#   BENCH_TOKENS=1000: tokens (and accounts) in the request list
# Needs /usr/bin/perf (Debian linux-perf) and kernel.perf_event_paranoid
# <= 1 (or root).  In a VM without a PMU perf samples with the cpu-clock
# timer: time spent with interrupts off is charged to where they come back
# on (finish_task_switch, _raw_spin_unlock_irqrestore), so read the kernel
# rows as a whole.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

MODULE=${1:-$BENCH_TOP/build/nginx/objs/ngx_env_gateway_module.so}
DUR=${BENCH_DURATION:-8}
WL=${BENCH_PROFILE_WORKLOAD:-valid}
CONNS=${BENCH_CONNS:-50}
PERF=${PERF:-perf}
command -v "$PERF" >/dev/null || { echo "bench: perf not installed" >&2; exit 1; }
bench_init

start_redis
seed_redis "${BENCH_TOKENS:-1000}" "$BENCH_DIR/pairs.txt" --valid "$BENCH_DIR/valid.txt" --mix "$BENCH_DIR/mix.txt"

BK=$(free_port); GW=$(free_port); PL=$(free_port)
CACHE="env_gateway_cache zone=envgw:32m ttl=1h negative_ttl=1h;"
[ "${BENCH_PROFILE_CACHE:-1}" = 0 ] && CACHE=""

nginx_conf backend "
    server { listen 127.0.0.1:$BK backlog=4096;
             location / { default_type text/plain; return 200 \"ok\n\"; } }"
PROXY=$BENCH_PROXY
UPSTREAM="upstream bench_backend { server 127.0.0.1:$BK; keepalive $((CONNS + 14));
                                   keepalive_requests 100000; }"
nginx_conf gw "
    env_gateway_redis 127.0.0.1:$REDIS_PORT;
    $CACHE
    $UPSTREAM
    server { listen 127.0.0.1:$GW backlog=4096;
             $(gw_locations) }" \
    "load_module $MODULE;"
nginx_conf plain "
    $UPSTREAM
    server { listen 127.0.0.1:$PL backlog=4096;
             location / { $PROXY proxy_pass http://bench_backend; } }"
start_nginx backend "$BK"
start_nginx gw "$GW"
start_nginx plain "$PL"

declare -A USPR   # name -> worker CPU µs per request
profile() {  # name port
    local name=$1 port=$2 w pp c0 c1 line req
    w=$(children "${NGX_PID[$name]}" | head -1)
    run_wrk "http://127.0.0.1:$port" 2s "$CONNS" "$BENCH_DIR/$WL.txt" > /dev/null
    "$PERF" record -q -g -F 4999 -p "$w" -o "$BENCH_DIR/$name.data" -- sleep "$DUR" \
        > "$BENCH_DIR/perf.log" 2>&1 &
    pp=$!
    c0=$(cpu_ns "$w")
    line=$(run_wrk "http://127.0.0.1:$port" "${DUR}s" "$CONNS" "$BENCH_DIR/$WL.txt")
    c1=$(cpu_ns "$w")
    wait "$pp" || { cat "$BENCH_DIR/perf.log" >&2; exit 1; }
    req=$(field requests "$line")
    USPR[$name]=$(awk -v c=$((c1 - c0)) -v n="$req" 'BEGIN { printf "%.3f", c / n / 1000 }')
    echo "  $name: $req requests, worker ${USPR[$name]} µs/request" >&2
    # "object symbol µs/request", self samples
    "$PERF" report -i "$BENCH_DIR/$name.data" --no-children --sort dso,symbol --stdio \
        -g none 2>/dev/null | grep -v '^#' | grep '%' \
        | awk -v t="${USPR[$name]}" '{ p = $1; sub("%", "", p); s = $4;
              for (i = 5; i <= NF && $i != "-"; i++) s = s " " $i;
              printf "%s\t%s\t%.4f\n", $2, s, p * t / 100 }' > "$BENCH_DIR/$name.sym"
}
for pass in 1 2; do
    profile plain "$PL"
    profile gw "$GW"
done

# table: key column from both files, plain, gateway, added, largest added first
compare() {  # awk key expression over (object, symbol) -> key
    awk -F '\t' -v OFS='\t' "
        FNR == 1 { f++ }
        { k = $1; v[f, k] += \$3; keys[k] = 1 }
        END { for (k in keys) printf \"%s\t%.3f\t%.3f\t%+.3f\n\", k, v[1, k], v[2, k], v[2, k] - v[1, k] }" \
        "$BENCH_DIR/plain.sym" "$BENCH_DIR/gw.sym" | sort -t "$(printf '\t')" -k4,4gr
}

set +o pipefail
echo "### perf: gateway worker against plain proxy_pass, ${CACHE:+warm cache}${CACHE:-no cache}, workload $WL"
echo
echo "${DUR} s per worker, second of two interleaved passes; $(uptime | sed 's/.*load/load/')."
echo "Worker CPU per request (schedstat): plain ${USPR[plain]} µs, gateway ${USPR[gw]} µs,"
echo "added $(awk -v a="${USPR[gw]}" -v b="${USPR[plain]}" 'BEGIN { printf "%+.3f", a - b }') µs."
echo
echo "By object (µs per request, self):"
echo
echo "| object | plain | gateway | added |"
echo "|---|---:|---:|---:|"
compare '$1' | awk -F '\t' '{ printf "| %s | %s | %s | %s |\n", $1, $2, $3, $4 }'
echo
echo "By symbol, the 30 that the gateway adds most to (µs per request, self):"
echo
echo "| object: symbol | plain | gateway | added |"
echo "|---|---:|---:|---:|"
compare '$1 ": " $2' | head -30 | awk -F '\t' '{ printf "| %s | %s | %s | %s |\n", $1, $2, $3, $4 }'
