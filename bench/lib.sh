# SPDX-License-Identifier: BSD-2-Clause
# bench/lib.sh: shared helpers for bench/run.sh, callgrind.sh, memory.sh.
# Everything runs on 127.0.0.1, on free ports, under one temp dir; every
# process started is recorded in BENCH_PIDS and stopped (by pid) on exit.

BENCH_TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
NGINX_BIN=${ENVGW_NGINX:-/usr/sbin/nginx}
SERVER_CPU=${BENCH_SERVER_CPU:-0}
CLIENT_CPU=${BENCH_CLIENT_CPU:-1}
CLK_TCK=$(getconf CLK_TCK)
BENCH_PIDS=()

bench_init() {
    BENCH_DIR=$(mktemp -d "${TMPDIR:-/tmp}/envgw-bench-XXXXXX")
    trap bench_cleanup EXIT
    trap 'exit 130' INT TERM
}

bench_cleanup() {
    local p i
    for p in "${BENCH_PIDS[@]}"; do
        kill -TERM "$p" 2>/dev/null || true
    done
    for p in "${BENCH_PIDS[@]}"; do
        for i in $(seq 1 100); do
            kill -0 "$p" 2>/dev/null || break
            sleep 0.05
        done
        kill -KILL "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    BENCH_PIDS=()
    if [ -n "${BENCH_DIR:-}" ]; then
        if [ -n "${BENCH_KEEP:-}" ]; then
            echo "bench: kept $BENCH_DIR" >&2
        else
            rm -rf "$BENCH_DIR"
        fi
    fi
}

free_port() {
    perl -MIO::Socket::INET -e 'my $s = IO::Socket::INET->new(Listen => 1,
        LocalAddr => "127.0.0.1", LocalPort => 0, Proto => "tcp") or die;
        print $s->sockport, "\n"'
}

wait_port() {   # port [seconds]
    local end=$(( $(date +%s) + ${2:-10} ))
    while [ "$(date +%s)" -le "$end" ]; do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    echo "bench: nothing listens on 127.0.0.1:$1" >&2
    return 1
}

# tls_certs -> TLS_DIR with ca.crt and server.crt/key for 127.0.0.1 (a
# throwaway CA made with the openssl CLI)
tls_certs() {
    TLS_DIR=$BENCH_DIR/tls
    mkdir -p "$TLS_DIR"
    local key=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
    openssl req -x509 -new "${key[@]}" -days 2 -keyout "$TLS_DIR/ca.key" \
        -out "$TLS_DIR/ca.crt" -subj '/CN=envgw bench CA' 2>/dev/null
    openssl req -new "${key[@]}" -keyout "$TLS_DIR/server.key" \
        -out "$TLS_DIR/server.csr" -subj '/CN=envgw bench redis' 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' > "$TLS_DIR/server.ext"
    openssl x509 -req -in "$TLS_DIR/server.csr" -CA "$TLS_DIR/ca.crt" \
        -CAkey "$TLS_DIR/ca.key" -CAcreateserial -days 2 \
        -extfile "$TLS_DIR/server.ext" -out "$TLS_DIR/server.crt" 2>/dev/null
}

# start_redis -> REDIS_PORT, REDIS_TLS_PORT (the same server over TLS,
# certificates of tls_certs: TLS_DIR/ca.crt verifies it), REDIS_PID
start_redis() {
    REDIS_PORT=$(free_port)
    REDIS_TLS_PORT=$(free_port)
    mkdir -p "$BENCH_DIR/redis"
    tls_certs
    taskset -c "$SERVER_CPU" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 \
        --tls-port "$REDIS_TLS_PORT" --tls-cert-file "$TLS_DIR/server.crt" \
        --tls-key-file "$TLS_DIR/server.key" --tls-ca-cert-file "$TLS_DIR/ca.crt" \
        --tls-auth-clients no \
        --save '' --appendonly no --daemonize no --dir "$BENCH_DIR/redis" \
        > "$BENCH_DIR/redis/out.log" 2>&1 &
    REDIS_PID=$!
    BENCH_PIDS+=("$REDIS_PID")
    wait_port "$REDIS_PORT"
    wait_port "$REDIS_TLS_PORT"
}

rcli() { redis-cli -h 127.0.0.1 -p "$REDIS_PORT" "$@"; }

# seed_redis NTOKENS PAIRS_FILE [seed.pl options...]
seed_redis() {
    local n=$1 pairs=$2; shift 2
    perl "$BENCH_TOP/bench/seed.pl" --tokens "$n" --envs 3 --pairs "$pairs" "$@" \
        | rcli --pipe > "$BENCH_DIR/seed.log" 2>&1 \
        || { cat "$BENCH_DIR/seed.log" >&2; return 1; }
}

# nginx_conf NAME HTTP_BODY [MAIN_EXTRA]: writes $BENCH_DIR/NAME/nginx.conf
nginx_conf() {
    local name=$1 http=$2 extra=${3:-} d="$BENCH_DIR/$1" user=""
    mkdir -p "$d/logs"
    [ "$(id -u)" = 0 ] && user="user root root;"
    cat > "$d/nginx.conf" <<CONF
$extra
$user
worker_processes 1;
error_log $d/error.log warn;
pid $d/nginx.pid;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $d/body;
    proxy_temp_path $d/proxy;
    fastcgi_temp_path $d/fastcgi;
    uwsgi_temp_path $d/uwsgi;
    scgi_temp_path $d/scgi;
    keepalive_requests 100000;
$http
}
CONF
}

# start_nginx NAME PORT [wrapper...]: runs nginx (daemon off) pinned to
# SERVER_CPU; sets NGX_PID[NAME]
declare -A NGX_PID
start_nginx() {
    local name=$1 port=$2; shift 2
    local d="$BENCH_DIR/$name"
    taskset -c "$SERVER_CPU" "$@" "$NGINX_BIN" -p "$d/" -c "$d/nginx.conf" \
        -e "$d/error.log" -g 'daemon off;' > "$d/out.log" 2>&1 &
    NGX_PID[$name]=$!
    BENCH_PIDS+=("$!")
    wait_port "$port" "${BENCH_START_TIMEOUT:-10}" || {
        cat "$d/error.log" "$d/out.log" >&2; return 1; }
}

children() { cat /proc/"$1"/task/*/children 2>/dev/null | tr ' ' '\n' | grep . || true; }

# upstream keepalive to bench_backend, as every front uses it
BENCH_PROXY='proxy_http_version 1.1; proxy_set_header Connection "";'

# the gateway's locations of every bench front: / passes the request on
# (the account in the query), /proxy/RESOURCE[/REST] is routed; the
# identity headers are the module's own (no proxy_set_header), and the
# route's regex is nested in /proxy/ so that / runs no regex
gw_locations() {  # [DIRECTIVES for both env_gateway locations]
    local extra=${1:-}
    echo "location / { env_gateway on; $extra
                     env_gateway_account \$arg_integrated_account_id;
                     $BENCH_PROXY proxy_pass http://bench_backend; }
        location /proxy/ {
            location ~ ^/proxy/(?<res>[^/]+)(?:/(?<rest>[^/]+))?\$ {
                     env_gateway on; $extra
                     env_gateway_account \$arg_integrated_account_id;
                     env_gateway_route \$res \$rest;
                     $BENCH_PROXY proxy_pass \$env_gateway_upstream_url; } }"
}

# all server pids: every nginx master and its workers, and redis
server_pids() {
    local p
    for p in "${NGX_PID[@]}"; do echo "$p"; children "$p"; done
    [ -n "${REDIS_PID:-}" ] && echo "$REDIS_PID"
}

# cpu_ticks PID...: sum of utime+stime (clock ticks)
cpu_ticks() {
    local p t=0 v
    for p in "$@"; do
        v=$(sed 's/^.*) //' /proc/"$p"/stat 2>/dev/null | awk '{print $12 + $13}')
        t=$(( t + ${v:-0} ))
    done
    echo "$t"
}

# cpu_ns PID...: CPU time run so far by every thread of the processes, in
# nanoseconds (/proc/PID/task/*/schedstat; exact, where utime+stime is
# sampled at CLK_TCK); falls back to utime+stime when schedstat is absent
cpu_ns() {
    local p t f v
    if [ ! -r /proc/self/schedstat ]; then
        echo $(( $(cpu_ticks "$@") * 1000000000 / CLK_TCK ))
        return
    fi
    t=0
    for p in "$@"; do
        for f in /proc/"$p"/task/*/schedstat; do
            read -r v _ < "$f" 2>/dev/null || continue
            t=$(( t + v ))
        done
    done
    echo "$t"
}

rss_kb() { awk '/^VmRSS:/ {print $2}' /proc/"$1"/status; }

# run_wrk URL DURATION CONNS ARGS...: prints the BENCH line
run_wrk() {
    local url=$1 dur=$2 conns=$3; shift 3
    taskset -c "$CLIENT_CPU" wrk -t1 -c"$conns" -d"$dur" --timeout 5s \
        -s "$BENCH_TOP/bench/workload.lua" "$url" -- "$@" | grep '^BENCH '
}

field() { tr " " "\n" <<< "$2" | sed -n "s/^$1=//p"; }

# callgrind cases of one gateway front (make bench-callgrind-tls,
# -cluster): cg_case NAME HTTP-CONF [TOKEN ACCOUNT] runs a gateway nginx
# (master_process off) under callgrind with HTTP-CONF in http{}, warms it,
# sends N requests on one keep-alive connection and sets IR[NAME] to the
# worker's instructions.  Uses MODULE, N, BK (the backend's port) and
# TOK/ACC (the default token and account) of the calling script.
declare -A IR
CG_HAMMER="$BENCH_TOP/bench/hammer.pl"
cg_case() {   # NAME HTTP-CONF [TOKEN ACCOUNT]
    local name=$1 conf=$2 port pid f tok=${3:-$TOK} acc=${4:-$ACC}
    port=$(free_port)
    nginx_conf "$name" "
    $conf
    upstream bench_backend { server 127.0.0.1:$BK; keepalive 8; }
    server { listen 127.0.0.1:$port;
             location / { env_gateway on;
                          env_gateway_account \$arg_integrated_account_id;
                          $BENCH_PROXY proxy_pass http://bench_backend; } }" \
        "load_module $MODULE; master_process off;"
    start_nginx "$name" "$port" valgrind --tool=callgrind --dump-instr=no \
        --callgrind-out-file="$BENCH_DIR/$name/cg.out"
    pid=${NGX_PID[$name]}
    perl "$CG_HAMMER" "$port" 200 / "$tok" "$acc" > /dev/null
    callgrind_control -z "$pid" > /dev/null
    echo "  $name: $(perl "$CG_HAMMER" "$port" "$N" / "$tok" "$acc")" >&2
    callgrind_control -d "$name" "$pid" > /dev/null
    kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
    f=$(grep -l "^desc: Trigger: dump $name\$" "$BENCH_DIR/$name"/cg.out* | sed -n 1p)
    IR[$name]=$(sed -n 's/^summary: \([0-9]*\).*/\1/p;s/^totals: \([0-9]*\).*/\1/p' "$f" | sed -n 1p)
    if grep -h -E '\[(alert|emerg|crit)\]' "$BENCH_DIR/$name/error.log" >&2; then
        echo "bench: WARNING: alerts in $name's error.log (above)" >&2
    fi
}
cg_per() { awk -v a="$1" -v n="$N" 'BEGIN { printf "%.0f", a / n }'; }

machine() {
    echo "- machine: $(nproc) CPUs, $(lscpu | sed -n 's/^Model name: *//p' | head -1), kernel $(uname -r)"
    echo "- software: $("$NGINX_BIN" -v 2>&1 | sed 's/.*: //'), redis $(redis-server --version | sed 's/.* v=\([^ ]*\).*/\1/'), $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2)"
}
