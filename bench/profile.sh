#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-2-Clause
# make bench-profile: perf record -g on the gateway worker during a warm
# wrk run (BENCH_PROFILE_WORKLOAD=valid|mix, BENCH_DURATION=8 s), then the
# top of perf report (self and with children) for that worker.  Needs
# /usr/bin/perf (Debian linux-perf) and kernel.perf_event_paranoid <= 1
# (or root).
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
seed_redis 1000 "$BENCH_DIR/pairs.txt" --valid "$BENCH_DIR/valid.txt" --mix "$BENCH_DIR/mix.txt"

BK=$(free_port); GW=$(free_port)
nginx_conf backend "
    server { listen 127.0.0.1:$BK backlog=4096;
             location / { default_type text/plain; return 200 \"ok\n\"; } }"
PROXY='proxy_http_version 1.1; proxy_set_header Connection "";'
nginx_conf gw "
    env_gateway_redis 127.0.0.1:$REDIS_PORT;
    env_gateway_cache zone=envgw:32m ttl=1h negative_ttl=1h;
    upstream bench_backend { server 127.0.0.1:$BK; keepalive $((CONNS + 14)); keepalive_requests 100000; }
    server { listen 127.0.0.1:$GW backlog=4096;
             location / { env_gateway on;
                          env_gateway_account \$arg_integrated_account_id;
                          $PROXY proxy_set_header X-Environment-Id \$env_gateway_environment_id;
                          proxy_pass http://bench_backend; }
             location ~ ^/proxy/(?<res>[^/]+)(?:/(?<rest>[^/]+))?\$ {
                          env_gateway on;
                          env_gateway_account \$arg_integrated_account_id;
                          env_gateway_route \$res \$rest;
                          $PROXY proxy_set_header X-Environment-Id \$env_gateway_environment_id;
                          proxy_pass \$env_gateway_upstream_url; } }" \
    "load_module $MODULE;"
start_nginx backend "$BK"
start_nginx gw "$GW"
WORKER=$(children "${NGX_PID[gw]}" | head -1)

run_wrk "http://127.0.0.1:$GW" 2s "$CONNS" "$BENCH_DIR/$WL.txt" > /dev/null
"$PERF" record -q -g -F 4999 -p "$WORKER" -o "$BENCH_DIR/perf.data" -- sleep "$DUR" \
    > "$BENCH_DIR/perf.log" 2>&1 &
PERF_PID=$!
run_wrk "http://127.0.0.1:$GW" "${DUR}s" "$CONNS" "$BENCH_DIR/$WL.txt" >&2
wait "$PERF_PID" || { cat "$BENCH_DIR/perf.log" >&2; exit 1; }

echo "### perf: gateway worker, warm cache, workload $WL (${DUR}s, $(uptime | sed 's/.*load/load/'))"
echo
echo "Self (children excluded), % of the worker's samples:"
echo
echo '```'
"$PERF" report -i "$BENCH_DIR/perf.data" --no-children --sort dso,symbol --stdio -g none \
    --percent-limit 0.7 2>/dev/null | grep -v '^#' | grep . | head -45
echo '```'
echo
echo "Samples per object (self):"
echo
echo '```'
"$PERF" report -i "$BENCH_DIR/perf.data" --no-children --sort dso --stdio -g none \
    2>/dev/null | grep -v '^#' | grep . | head -12
echo '```'
echo
echo "User-space symbols (self), % of the worker's samples:"
echo
echo '```'
"$PERF" report -i "$BENCH_DIR/perf.data" --no-children --sort dso,symbol --stdio -g none \
    --dsos "nginx,ngx_env_gateway_module.so,libcrypto.so.3,libc.so.6,libpcre2-8.so.0.11.2" \
    2>/dev/null | grep -v '^#' | grep . | head -40
echo '```'
