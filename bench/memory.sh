#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-2-Clause
# make bench-memory: (1) VmRSS of the gateway worker before and after
# BENCH_MEM_REQUESTS (1,000,000) requests over 1000 tokens/accounts, half on
# the warm "/" front and half on the /proxy/ route; (2) cache entries per MB:
# a second nginx with a small zone (BENCH_MEM_ZONE, 1m) is filled with
# BENCH_MEM_FILL distinct token records (token only, no account) and the
# env_gateway_cache_entries / _bytes / _evictions metrics are read.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

MODULE=${1:-$BENCH_TOP/build/nginx/objs/ngx_env_gateway_module.so}
TOTAL=${BENCH_MEM_REQUESTS:-1000000}
ZONE=${BENCH_MEM_ZONE:-1m}
FILL=${BENCH_MEM_FILL:-20000}
bench_init

start_redis
seed_redis 1000 "$BENCH_DIR/pairs.txt"
seed_redis "$FILL" "$BENCH_DIR/fill.txt" --no-accounts --tag f

BK=$(free_port); GW=$(free_port); RT=$(free_port); MG=$(free_port)
FZ=$(free_port); FM=$(free_port)
PROXY=$BENCH_PROXY
nginx_conf backend "
    server { listen 127.0.0.1:$BK backlog=4096;
             location / { default_type text/plain; return 200 \"ok\n\"; } }"
nginx_conf gw "
    env_gateway_redis 127.0.0.1:$REDIS_PORT;
    env_gateway_cache zone=envgw:32m ttl=1h;
    upstream bench_backend { server 127.0.0.1:$BK; keepalive 32; }
    server { listen 127.0.0.1:$GW backlog=4096; $(gw_locations) }
    server { listen 127.0.0.1:$RT backlog=4096; $(gw_locations) }
    server { listen 127.0.0.1:$MG; location = /metrics { env_gateway_metrics; } }" \
    "load_module $MODULE;"
nginx_conf fill "
    env_gateway_redis 127.0.0.1:$REDIS_PORT;
    env_gateway_cache zone=fill:$ZONE ttl=1h;
    server { listen 127.0.0.1:$FZ backlog=4096;
             location / { env_gateway on; proxy_pass http://127.0.0.1:$BK; } }
    server { listen 127.0.0.1:$FM; location = /metrics { env_gateway_metrics; } }" \
    "load_module $MODULE;"
start_nginx backend "$BK"
start_nginx gw "$GW"
start_nginx fill "$FZ"
sleep 0.3
W=$(children "${NGX_PID[gw]}" | head -1)

# warm-up pass (fills the cache, grows pools to their steady size)
run_wrk "http://127.0.0.1:$GW" 2s 50 "$BENCH_DIR/pairs.txt" / > /dev/null
run_wrk "http://127.0.0.1:$RT" 2s 50 "$BENCH_DIR/pairs.txt" /proxy/contacts > /dev/null
RSS0=$(rss_kb "$W")
done_n=0 non2xx=0 i=0 min=$RSS0 max=$RSS0
echo "bench-memory: worker $W RSS after warm-up ${RSS0} kB; running $TOTAL requests" >&2
while [ "$done_n" -lt "$TOTAL" ]; do
    if [ $((i % 2)) = 0 ]; then url="http://127.0.0.1:$GW" path=/; else url="http://127.0.0.1:$RT" path=/proxy/contacts; fi
    line=$(run_wrk "$url" 5s 50 "$BENCH_DIR/pairs.txt" "$path")
    done_n=$(( done_n + $(field requests "$line") ))
    non2xx=$(( non2xx + $(field non2xx "$line") ))
    r=$(rss_kb "$W")
    [ "$r" -lt "$min" ] && min=$r; [ "$r" -gt "$max" ] && max=$r
    echo "  $done_n requests: RSS $r kB" >&2
    i=$((i + 1))
done
RSS1=$(rss_kb "$W")

# cache entries per MB
run_wrk "http://127.0.0.1:$FZ" 4s 20 "$BENCH_DIR/fill.txt" / noaccount > /dev/null
m=$(curl -s "http://127.0.0.1:$FM/metrics")
mv() { awk -v k="$1" '$1 == k {print $2}' <<< "$m" | head -1; }
ENT=$(mv 'env_gateway_cache_entries{type="positive"}')
BYT=$(mv 'env_gateway_cache_bytes{type="positive"}')
EVI=$(mv 'env_gateway_cache_evictions_total')
zone_mb=$(awk -v z="$ZONE" 'BEGIN { n = z + 0; u = tolower(substr(z, length(z))); if (u == "k") n /= 1024; else if (u != "m") n /= 1048576; print n }')

echo "### memory"
echo
echo "- gateway worker VmRSS: ${RSS0} kB after warm-up, ${RSS1} kB after $done_n requests (min $min, max $max kB over the run): change $(awk -v a="$RSS0" -v b="$RSS1" 'BEGIN { printf "%+.2f%%", (b - a) * 100 / a }'); non-2xx: $non2xx"
echo "- cache zone $ZONE filled with $FILL distinct tokens (token records, plus 3 environment records): ${ENT:-?} positive entries, ${BYT:-?} bytes of entries, ${EVI:-?} evictions -> $(awk -v e="${ENT:-0}" -v z="$zone_mb" 'BEGIN { printf "%.0f", e / z }') entries per MB of zone, $(awk -v e="${ENT:-0}" -v b="${BYT:-0}" 'BEGIN { if (e) printf "%.0f", b / e }') bytes per entry as counted by env_gateway_cache_bytes"
