#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-2-Clause
# make bench: plain proxy_pass vs env_gateway variants on two workloads,
# interleaved rounds, one markdown table per workload.
#
#   bench/run.sh [MODULE.so]
#   BENCH_DURATION=8 BENCH_ROUNDS=3 BENCH_CONNS=50 BENCH_TOKENS=1000
#   BENCH_WARMUP=2 BENCH_SERVER_CPU=0 BENCH_CLIENT_CPU=1
#   BENCH_VARIANTS="plain warm" BENCH_WORKLOADS="valid mix" (subsets;
#   cluster_warm, cluster_nocache: the same records in a one-node Redis
#   Cluster, read with env_gateway_redis_cluster)
#   BENCH_KEEP=1 (keep the temp dir)
#
# Workloads (request lists written by bench/seed.pl, cycled by
# bench/workload.lua):
#   valid: every request passes, the account in the query (all 200);
#   mix:   half through the /proxy/ route front, 10 % accounts of another
#          environment (404), 5 % unknown tokens (401), the rest valid.
#
# Every variant is its own single-worker nginx (with the module loaded or
# not), all pinned to BENCH_SERVER_CPU with redis-server and the backend
# nginx (return 200, 3 bytes); wrk (-t1) runs pinned to BENCH_CLIENT_CPU.
# Server CPU per request = CPU time of every server process (all nginx
# masters and workers, Redis; /proc/PID/task/*/schedstat) over the run /
# requests; it includes the backend and Redis for every variant alike.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

MODULE=${1:-$BENCH_TOP/build/nginx/objs/ngx_env_gateway_module.so}
DUR=${BENCH_DURATION:-8}
ROUNDS=${BENCH_ROUNDS:-3}
CONNS=${BENCH_CONNS:-50}
NTOK=${BENCH_TOKENS:-1000}
WARMUP=${BENCH_WARMUP:-2}
[ -f "$MODULE" ] || { echo "bench: $MODULE not found (make module)" >&2; exit 1; }
command -v wrk >/dev/null || { echo "bench: wrk not installed" >&2; exit 1; }

bench_init
LOAD_BEFORE=$(uptime)

start_redis
seed_redis "$NTOK" "$BENCH_DIR/pairs.txt" \
    --valid "$BENCH_DIR/valid.txt" --mix "$BENCH_DIR/mix.txt"

BK=$(free_port)
nginx_conf backend "
    server { listen 127.0.0.1:$BK backlog=4096;
             location / { default_type text/plain; return 200 \"ok\n\"; } }"
start_nginx backend "$BK"

# ---- building blocks of the variants' nginx.conf -------------------------

# keepalive >= the client connections: with fewer, every request beyond
# the idle pool connects to the backend and closes after (measured: a
# quarter of the front worker's CPU in connect/close at -c50, keepalive 32)
UPSTREAM="upstream bench_backend { server 127.0.0.1:$BK; keepalive $((CONNS + 14));
                                   keepalive_requests 100000; }"
PROXY=$BENCH_PROXY
GW_REDIS="env_gateway_redis 127.0.0.1:$REDIS_PORT;"
GW_CACHE="env_gateway_cache zone=envgw:32m ttl=1h negative_ttl=5s;"
# the same Redis over TLS, its certificate verified
GW_REDIS_TLS="env_gateway_redis 127.0.0.1:$REDIS_TLS_PORT tls tls_ca=$TLS_DIR/ca.crt;"

# plain: every path proxied as it is, no module loaded
PLAIN_LOC="location / { $PROXY proxy_pass http://bench_backend; }"

# the gateway: / passes the request on, /proxy/RESOURCE[/REST] is routed
GW_LOC=$(gw_locations)

# the gateway with a token limit never reached (sync=off): what counting
# adds to a warm request
GW_LIMIT="env_gateway_limit_zone zone=envgw_limits:16m;"
GW_LIMIT_LOC=$(gw_locations "env_gateway_limit token 1000000000r/s;")

# ---- the variants: one line each -----------------------------------------
# variant NAME WORKLOADS MODULE(yes|no) LABEL HTTP-CONF LOCATIONS
#   HTTP-CONF goes in http{} (upstream bench_backend is always there),
#   LOCATIONS in the variant's server{}; "plain" is the reference.
V_NAMES=()
declare -A V_WL V_MOD V_LABEL V_HTTP V_LOC
variant() {
    V_NAMES+=("$1"); V_WL[$1]=$2; V_MOD[$1]=$3; V_LABEL[$1]=$4
    V_HTTP[$1]=$5; V_LOC[$1]=$6
}

variant plain   "valid mix" no  "plain proxy_pass (no module)"   ""                      "$PLAIN_LOC"
variant warm    "valid mix" yes "env_gateway, warm cache"        "$GW_REDIS $GW_CACHE"   "$GW_LOC"
# what the gateway's product costs by itself: plain proxy_pass sending six
# static headers the size of the identity headers (the backend parses them),
# and the gateway with env_gateway_identity_headers off
PLAIN_ID_LOC="location / { $PROXY proxy_set_header X-Environment-Id env_bench_1;
    proxy_set_header X-Environment staging; proxy_set_header X-Team-Id team_bench;
    proxy_set_header X-Token-Id tok_b_123;
    proxy_set_header X-Integrated-Account-Id acct_b_123;
    proxy_set_header X-Tenant-Id tenant_123; proxy_pass http://bench_backend; }"
variant plain_id "valid mix" no "plain proxy_pass + six static headers" "" "$PLAIN_ID_LOC"
# the cheapest token check nginx itself can express, no module: the 1000
# tokens and accounts as static maps (nginx's hash), the account's
# environment compared with the token's by a regex over both, the
# credential hidden and the six headers set (valid workload: every
# request passes)
{
    echo "map_hash_bucket_size 128;"
    echo "map \$http_authorization \$bench_tenv { default \"\";"
    awk '{ printf "    \"Bearer %s\" %s;\n", $1, $3 }' "$BENCH_DIR/pairs.txt"
    echo "}"
    echo "map \$arg_integrated_account_id \$bench_aenv { default none;"
    awk '{ printf "    %s %s;\n", $2, $3 }' "$BENCH_DIR/pairs.txt"
    echo "}"
    echo "map \$bench_tenv:\$bench_aenv \$bench_ok { default 0; \"~^([^:]+):\\1\$\" 1; }"
} > "$BENCH_DIR/tokenmap.conf"
MAP_LOC="location / { if (\$bench_ok = 0) { return 404; }
    $PROXY proxy_set_header Authorization \"\";
    proxy_set_header X-Environment-Id \$bench_tenv;
    proxy_set_header X-Environment staging; proxy_set_header X-Team-Id team_bench;
    proxy_set_header X-Token-Id tok_b_123;
    proxy_set_header X-Integrated-Account-Id \$arg_integrated_account_id;
    proxy_set_header X-Tenant-Id tenant_123; proxy_pass http://bench_backend; }"
variant plain_map "valid" no "nginx maps of the tokens and accounts (no module)" \
                             "include $BENCH_DIR/tokenmap.conf;" "$MAP_LOC"
variant noid    "valid mix" yes "env_gateway, warm cache, identity headers off" \
                                 "$GW_REDIS $GW_CACHE env_gateway_identity_headers off;" "$GW_LOC"
# nginx's request pool (request_pool_size, 4k by default) grown by malloc
# in 4k blocks: wrk's request fits plain proxy_pass in two, the gateway's
# context and records take a third; both with 16k
PL16="request_pool_size 16k;"
variant plain16k "valid mix" no "plain proxy_pass, request_pool_size 16k" "$PL16" "$PLAIN_LOC"
variant warm16k "valid mix" yes "env_gateway, warm cache, request_pool_size 16k" \
                                 "$GW_REDIS $GW_CACHE $PL16" "$GW_LOC"
variant nocache "valid mix" yes "env_gateway, no cache"          "$GW_REDIS"             "$GW_LOC"
variant limit   "valid mix" yes "env_gateway, warm cache, a token limit never reached" \
                                 "$GW_REDIS $GW_CACHE $GW_LIMIT" "$GW_LIMIT_LOC"
# the same records under another prefix, each integration declaring
# "auth" and each account holding encrypted credentials (seeded below):
# the /proxy/ requests of "mix" decrypt and inject them
GW_CRED="env_gateway_key_prefix envgwc:; env_gateway_secret_keys $BENCH_DIR/secret_keys;"
variant cred    "mix"       yes "env_gateway, warm cache, upstream credentials" \
                                "$GW_REDIS $GW_CACHE $GW_CRED" "$GW_LOC"
variant tls_warm "valid mix" yes "env_gateway, warm cache, Redis over TLS" "$GW_REDIS_TLS $GW_CACHE" "$GW_LOC"
variant tls_nocache "valid mix" yes "env_gateway, no cache, Redis over TLS" "$GW_REDIS_TLS" "$GW_LOC"
variant nolastuse "valid mix" yes "env_gateway, warm cache, last use off" "$GW_REDIS $GW_CACHE env_gateway_last_used off;" "$GW_LOC"
variant lastuse1s "valid mix" yes "env_gateway, warm cache, last use every 1 s" "$GW_REDIS $GW_CACHE env_gateway_last_used interval=1s;" "$GW_LOC"
# the same records in a Redis Cluster of one node that holds every slot
# (started and seeded below when a cluster variant runs): what the
# module's cluster layer adds, the network being the same
CLUSTER_PORT=$(free_port)
GW_CLUSTER="env_gateway_redis_cluster 127.0.0.1:$CLUSTER_PORT;"
variant cluster_warm "valid mix" yes "env_gateway, warm cache, Redis Cluster" "$GW_CLUSTER $GW_CACHE" "$GW_LOC"
variant cluster_nocache "valid mix" yes "env_gateway, no cache, Redis Cluster" "$GW_CLUSTER" "$GW_LOC"

# ---------------------------------------------------------------------------

if [ -n "${BENCH_VARIANTS:-}" ]; then     # plain first, once
    V_NAMES=(plain)
    for v in $BENCH_VARIANTS; do [ "$v" = plain ] || V_NAMES+=("$v"); done
fi

# credentials: a keyring, then through envgw (encryption needs it) the auth
# declaration of each environment's integration and one record an account
if [[ " ${V_NAMES[*]} " == *" cred "* ]]; then
    printf 'kbench %s\n' "$(head -c 32 /dev/urandom | base64)" > "$BENCH_DIR/secret_keys"
    chmod 0600 "$BENCH_DIR/secret_keys"
    perl "$BENCH_TOP/bench/seed.pl" --tokens "$NTOK" --envs 3 --prefix envgwc: \
        --pairs "$BENCH_DIR/pairs_cred.txt" | rcli --pipe > "$BENCH_DIR/seed_cred.log" 2>&1
    ENVGW_C=("$BENCH_TOP/cli/envgw" --redis "127.0.0.1:$REDIS_PORT" --prefix envgwc:)
    export ENVGW_SECRET_KEYS="$BENCH_DIR/secret_keys"
    for e in 0 1 2; do
        "${ENVGW_C[@]}" integration set "env_bench_$e" hubspot \
            --auth '{"header":"Authorization","format":"Bearer {access_token}"}' > /dev/null
    done
    while read -r _ acct _; do
        "${ENVGW_C[@]}" credentials set "$acct" \
            --field "access_token=at_$(head -c 18 /dev/urandom | base64 | tr '+/' '-_')" > /dev/null
    done < "$BENCH_DIR/pairs_cred.txt"
fi

# the cluster variants' Redis: cluster-enabled, every slot its own, seeded
# as the other (seed.pl writes the same records every time)
declare -A V_RPID V_RPORT
if [[ " ${V_NAMES[*]} " == *" cluster_"* ]]; then
    mkdir -p "$BENCH_DIR/rcluster"
    taskset -c "$SERVER_CPU" redis-server --port "$CLUSTER_PORT" --bind 127.0.0.1 \
        --cluster-enabled yes --cluster-config-file "$BENCH_DIR/rcluster/nodes.conf" \
        --save '' --appendonly no --daemonize no --dir "$BENCH_DIR/rcluster" \
        > "$BENCH_DIR/rcluster/out.log" 2>&1 &
    CLUSTER_PID=$!
    BENCH_PIDS+=("$CLUSTER_PID")
    wait_port "$CLUSTER_PORT"
    redis-cli -p "$CLUSTER_PORT" cluster addslotsrange 0 16383 > /dev/null
    for _ in $(seq 1 100); do
        redis-cli -p "$CLUSTER_PORT" cluster info | grep -q 'cluster_state:ok' && break
        sleep 0.1
    done
    perl "$BENCH_TOP/bench/seed.pl" --tokens "$NTOK" --envs 3 --pairs "$BENCH_DIR/pairs_cluster.txt" \
        | redis-cli -p "$CLUSTER_PORT" --pipe > "$BENCH_DIR/seed_cluster.log" 2>&1
    for v in "${V_NAMES[@]}"; do
        [[ $v == cluster_* ]] && V_RPID[$v]=$CLUSTER_PID && V_RPORT[$v]=$CLUSTER_PORT
    done
fi
WORKLOADS=(${BENCH_WORKLOADS:-valid mix})

declare -A PORT MPORT EXPECT
for v in "${V_NAMES[@]}"; do
    [ -n "${V_LABEL[$v]:-}" ] || { echo "bench: no variant $v" >&2; exit 1; }
    PORT[$v]=$(free_port)
    main="" metrics=""
    if [ "${V_MOD[$v]}" = yes ]; then
        MPORT[$v]=$(free_port)
        main="load_module $MODULE;"
        metrics="server { listen 127.0.0.1:${MPORT[$v]};
                          location = /metrics { env_gateway_metrics; } }"
    fi
    nginx_conf "v_$v" "
    $UPSTREAM
    ${V_HTTP[$v]}
    server { listen 127.0.0.1:${PORT[$v]} backlog=4096;
             ${V_LOC[$v]} }
    $metrics" "$main"
    start_nginx "v_$v" "${PORT[$v]}"
done
sleep 0.3

metric() {  # port name-with-labels
    curl -s "http://127.0.0.1:$1/metrics" | awk -v k="$2" '$1 == k {print $2}' | head -1
}
redis_cmds() {  # [variant]: the Redis that variant reads
    redis-cli -h 127.0.0.1 -p "${V_RPORT[${1:-}]:-$REDIS_PORT}" info stats \
        | tr -d "\r" | sed -n "s/^total_commands_processed://p"
}
miss_count() {
    [ -n "${MPORT[$1]:-}" ] || { echo 0; return; }
    local v; v=$(metric "${MPORT[$1]}" 'env_gateway_cache_lookups_total{outcome="miss"}')
    echo "${v:-0}"
}
runs_in() { [[ " ${V_WL[$1]} " == *" $2 "* ]]; }

# sanity: the first 20 requests of each workload answer what they should
# (a plain proxy: 200 to all)
for wl in "${WORKLOADS[@]}"; do
    for v in "${V_NAMES[@]}"; do
        runs_in "$v" "$wl" || continue
        head -20 "$BENCH_DIR/$wl.txt" | while read -r tok path want; do
            [ "${V_MOD[$v]}" = yes ] || want=200
            code=$(curl -s -o /dev/null -w '%{http_code}' \
                -H "Authorization: Bearer $tok" "http://127.0.0.1:${PORT[$v]}$path")
            [ "$code" = "$want" ] || { echo "bench: $v ($wl) answered $code, not $want" >&2
                cat "$BENCH_DIR"/*/error.log >&2; exit 1; }
        done
    done
    # share of refusals the gateway answers in this workload
    EXPECT[$wl]=$(awk '$3 != 200 { r++ } END { printf "%.4f", r / NR }' "$BENCH_DIR/$wl.txt")
done

mapfile -t SPIDS < <(server_pids)
RES="$BENCH_DIR/results.tsv"
: > "$RES"
nrun=0
for wl in "${WORKLOADS[@]}"; do
    for v in "${V_NAMES[@]}"; do runs_in "$v" "$wl" && nrun=$((nrun + 1)); done
done
echo "bench: $ROUNDS rounds x $nrun runs x (${WARMUP}s warm-up + ${DUR}s), $CONNS connections, $NTOK tokens/accounts in 3 environments: about $(( ROUNDS * nrun * (DUR + WARMUP + 1) )) s" >&2

for round in $(seq 1 "$ROUNDS"); do
    for wl in "${WORKLOADS[@]}"; do
        for v in "${V_NAMES[@]}"; do
            runs_in "$v" "$wl" || continue
            url="http://127.0.0.1:${PORT[$v]}"
            # every variant alike: a pass over the requests, not measured
            # (fills the cache, opens upstream keepalive connections)
            run_wrk "$url" "${WARMUP}s" "$CONNS" "$BENCH_DIR/$wl.txt" > /dev/null
            mapfile -t FPIDS < <(echo "${NGX_PID[v_$v]}"; children "${NGX_PID[v_$v]}")
            rpid=${V_RPID[$v]:-$REDIS_PID}
            m0=$(miss_count "$v"); c0=$(redis_cmds "$v")
            t0=$(cpu_ns "${SPIDS[@]}" ${CLUSTER_PID:-}); f0=$(cpu_ns "${FPIDS[@]}"); r0=$(cpu_ns "$rpid")
            line=$(run_wrk "$url" "${DUR}s" "$CONNS" "$BENCH_DIR/$wl.txt")
            t1=$(cpu_ns "${SPIDS[@]}" ${CLUSTER_PID:-}); f1=$(cpu_ns "${FPIDS[@]}"); r1=$(cpu_ns "$rpid")
            m1=$(miss_count "$v"); c1=$(redis_cmds "$v")
            errs=$(( $(field err_connect "$line") + $(field err_read "$line") + $(field err_write "$line") + $(field err_timeout "$line") ))
            want=${EXPECT[$wl]}
            [ "${V_MOD[$v]}" = yes ] || want=0
            printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' \
                "$round" "$wl" "$v" "$(field requests "$line")" "$(field rps "$line")" \
                "$(field p50_us "$line")" "$(field p99_us "$line")" "$(field non2xx "$line")" \
                "$want" "$((t1 - t0))" "$((f1 - f0))" "$((r1 - r0))" "$((m1 - m0))" \
                "$errs" "$((c1 - c0))" >> "$RES"
            echo "  round $round $wl $v: $line cpu_ns=$((t1 - t0)) front_ns=$((f1 - f0)) redis_ns=$((r1 - r0)) cache_misses=$((m1 - m0)) redis_cmds=$((c1 - c0))" >&2
        done
    done
done

LOAD_AFTER=$(uptime)

# workers must not have crashed or logged alerts
if grep -h -E '\[(alert|emerg|crit)\]|exited on signal' "$BENCH_DIR"/*/error.log >&2; then
    echo "bench: WARNING: alerts in error.log (above)" >&2
fi

labels=()
for v in "${V_NAMES[@]}"; do labels+=("$v=${V_LABEL[$v]}"); done
perl "$BENCH_TOP/bench/table.pl" "$RES" "${labels[@]}"
echo
machine
echo "- load before: ${LOAD_BEFORE#*load }"
echo "- load after:  ${LOAD_AFTER#*load }"
echo "- command: make bench (BENCH_DURATION=$DUR BENCH_ROUNDS=$ROUNDS BENCH_CONNS=$CONNS BENCH_TOKENS=$NTOK BENCH_WARMUP=$WARMUP): server processes on CPU $SERVER_CPU, wrk -t1 -c$CONNS on CPU $CLIENT_CPU"
