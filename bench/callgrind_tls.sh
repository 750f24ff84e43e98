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

PLAIN="env_gateway_redis 127.0.0.1:$REDIS_PORT;"
TLS="env_gateway_redis 127.0.0.1:$REDIS_TLS_PORT tls tls_ca=$TLS_DIR/ca.crt;"
CACHE="env_gateway_cache zone=envgw:8m ttl=1h negative_ttl=1h;"


echo "bench: callgrind, $N requests per case, Redis plain and TLS" >&2
cg_case nocache "$PLAIN"
cg_case nocache_tls "$TLS"
cg_case warm "$PLAIN $CACHE"
cg_case warm_tls "$TLS $CACHE"

echo
echo "### callgrind: TLS to Redis ($N requests per case, one keep-alive connection)"
echo
echo "| case | Ir per request, whole gateway worker |"
echo "|---|---:|"
echo "| no cache, Redis over TCP | $(cg_per "${IR[nocache]}") |"
echo "| no cache, Redis over TLS | $(cg_per "${IR[nocache_tls]}") |"
echo "| **added by TLS, no cache** | **$(cg_per $(( IR[nocache_tls] - IR[nocache] )))** |"
echo "| warm cache, Redis over TCP | $(cg_per "${IR[warm]}") |"
echo "| warm cache, Redis over TLS | $(cg_per "${IR[warm_tls]}") |"
echo "| added by TLS, warm cache | $(cg_per $(( IR[warm_tls] - IR[warm] ))) |"
echo
machine
