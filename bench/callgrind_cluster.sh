#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-2-Clause
# make bench-callgrind-cluster: what env_gateway_redis_cluster costs the
# gateway over env_gateway_redis, in instructions per request.
#
# One gateway nginx (master_process off) under callgrind per case, the
# backend and Redis outside valgrind.  Both read one Redis, seeded alike:
# a plain one (env_gateway_redis) and a cluster-enabled one that holds all
# 16384 slots itself (env_gateway_redis_cluster), so the difference is the
# module's cluster layer (the key's slot, the per-node dispatch, the kept
# command) and not the network:
#   nocache, nocache_cluster   no env_gateway_cache: every request sends
#                              its lookups to Redis
#   warm, warm_cluster         env_gateway_cache, warmed first: no Redis
# After a warm-up, counters are zeroed and N requests sent on one
# keep-alive connection (bench/hammer.pl); Ir per request of the whole
# worker.
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

# the cluster of one node: every slot its own, the same records
PLAIN_PORT=$REDIS_PORT
REDIS_PORT=$(free_port)
mkdir -p "$BENCH_DIR/rcluster"
taskset -c "$SERVER_CPU" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 \
    --cluster-enabled yes --cluster-config-file "$BENCH_DIR/rcluster/nodes.conf" \
    --save '' --appendonly no --daemonize no --dir "$BENCH_DIR/rcluster" \
    > "$BENCH_DIR/rcluster/out.log" 2>&1 &
BENCH_PIDS+=("$!")
wait_port "$REDIS_PORT"
rcli cluster addslotsrange 0 16383 > /dev/null
for _ in $(seq 1 100); do
    rcli cluster info | grep -q 'cluster_state:ok' && break
    sleep 0.1
done
seed_redis 1000 "$BENCH_DIR/pairs_cluster.txt"
CLUSTER_PORT=$REDIS_PORT
REDIS_PORT=$PLAIN_PORT

BK=$(free_port)
nginx_conf backend "
    server { listen 127.0.0.1:$BK;
             location / { default_type text/plain; return 200 \"ok\n\"; } }"
start_nginx backend "$BK"

PLAIN="env_gateway_redis 127.0.0.1:$REDIS_PORT;"
CLUSTER="env_gateway_redis_cluster 127.0.0.1:$CLUSTER_PORT;"
CACHE="env_gateway_cache zone=envgw:8m ttl=1h negative_ttl=1h;"


read -r CTOK CACC _ < "$BENCH_DIR/pairs_cluster.txt"
echo "bench: callgrind, $N requests per case, one Redis and a one-node cluster" >&2
cg_case nocache "$PLAIN"
cg_case nocache_cluster "$CLUSTER" "$CTOK" "$CACC"
cg_case warm "$PLAIN $CACHE"
cg_case warm_cluster "$CLUSTER $CACHE" "$CTOK" "$CACC"

echo
echo "### callgrind: env_gateway_redis_cluster ($N requests per case, one keep-alive connection)"
echo
echo "| case | Ir per request, whole gateway worker |"
echo "|---|---:|"
echo "| no cache, env_gateway_redis | $(cg_per "${IR[nocache]}") |"
echo "| no cache, env_gateway_redis_cluster | $(cg_per "${IR[nocache_cluster]}") |"
echo "| **added by the cluster layer, no cache** | **$(cg_per $(( IR[nocache_cluster] - IR[nocache] )))** |"
echo "| warm cache, env_gateway_redis | $(cg_per "${IR[warm]}") |"
echo "| warm cache, env_gateway_redis_cluster | $(cg_per "${IR[warm_cluster]}") |"
echo "| added by the cluster layer, warm cache | $(cg_per $(( IR[warm_cluster] - IR[warm] ))) |"
echo
machine
