#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-2-Clause
# env_gateway edge-cluster demo, all on 127.0.0.1:
#
#   Redis primary P, replicas R1 and R2 (replicaof P, read-only)
#   gateway g1 reads R1 then P; g2 reads R2 then P; g3 reads P then R1
#   each gateway: its own nginx with the module and its own backend
#   a plain nginx load balancer, round robin over g1..g3
#   with Sentinel discovery in the module: three Sentinels and a g4 that
#   finds the primary through them (skipped when nginx -t refuses it)
#
# With REDIS=cluster (make cluster-demo REDIS=cluster), a Redis Cluster
# instead: 3 primaries and 3 replicas (CLUSTER_N1..N6=6580..6585) made by
# redis-cli --cluster create, every gateway on env_gateway_redis_cluster
# (g3 reading from the replicas), envgw --cluster writing.
#
# usage: cluster/cluster.sh start [MODULE.so] | stop | status
# Ports (override by environment): CLUSTER_P=6480 CLUSTER_R1=6481
# CLUSTER_R2=6482 CLUSTER_LB=8090 CLUSTER_G1..G4=8091..8094,
# backends CLUSTER_B1..B4=8191..8194, CLUSTER_S1..S3=26480..26482.
# Everything lives under cluster/run/ (pidfiles, logs, configs); stop
# signals only the pids recorded there.

set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
TOP=$(cd "$HERE/.." && pwd)
RUN=${CLUSTER_RUN:-$HERE/run}
NGINX=${NGINX:-/usr/sbin/nginx}
ENVGW=${ENVGW:-$TOP/cli/envgw}

P=${CLUSTER_P:-6480};   R1=${CLUSTER_R1:-6481}; R2=${CLUSTER_R2:-6482}
LB=${CLUSTER_LB:-8090}
G1=${CLUSTER_G1:-8091}; G2=${CLUSTER_G2:-8092}; G3=${CLUSTER_G3:-8093}
G4=${CLUSTER_G4:-8094}
B1=${CLUSTER_B1:-8191}; B2=${CLUSTER_B2:-8192}; B3=${CLUSTER_B3:-8193}
B4=${CLUSTER_B4:-8194}
S1=${CLUSTER_S1:-26480}; S2=${CLUSTER_S2:-26481}; S3=${CLUSTER_S3:-26482}
SENTINEL=${SENTINEL:-auto}     # auto | 0
REDIS=${REDIS:-primary}        # primary | cluster
N1=${CLUSTER_N1:-6580}; N2=${CLUSTER_N2:-6581}; N3=${CLUSTER_N3:-6582}
N4=${CLUSTER_N4:-6583}; N5=${CLUSTER_N5:-6584}; N6=${CLUSTER_N6:-6585}

say() { printf '%s\n' "$*"; }
die() { printf 'cluster: %s\n' "$*" >&2; exit 1; }

port_busy() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

wait_port() {
    local i
    for i in $(seq 1 200); do
        port_busy "$1" && return 0
        sleep 0.05
    done
    return 1
}

# the pid in FILE, if that process is still the one we started (its
# command line names WHAT)
our_pid() {
    local file=$1 what=$2 pid
    [ -s "$file" ] || return 1
    pid=$(cat "$file")
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    [ -r "/proc/$pid/cmdline" ] || return 1
    tr '\0' ' ' < "/proc/$pid/cmdline" | grep -q "$what" || return 1
    printf '%s' "$pid"
}

fill() {    # fill TEMPLATE OUT KEY=VALUE...  (values may hold newlines)
    local tpl=$1 out=$2
    shift 2
    perl -e '
        my ($tpl, $out, @kv) = @ARGV;
        my %v = map { split /=/, $_, 2 } @kv;
        local $/; open my $in, "<", $tpl or die "$tpl: $!";
        my $s = <$in>;
        $s =~ s/\@(\w+)\@/exists $v{$1} ? $v{$1} : die "no \@$1\@\n"/ge;
        open my $o, ">", $out or die "$out: $!"; print $o $s;
    ' "$tpl" "$out" "$@"
}

user_line() { [ "$(id -u)" = 0 ] && echo 'user root root;' || true; }

redis_lines() {
    local p
    for p in "$@"; do
        printf '    env_gateway_redis 127.0.0.1:%s connect_timeout=200ms read_timeout=500ms;\n' "$p"
    done
}

start_redis() {    # NAME PORT [PRIMARY_PORT]
    local name=$1 port=$2 primary=${3:-}
    local d=$RUN/$name
    mkdir -p "$d"
    local args=(--port "$port" --bind 127.0.0.1 --save '' --appendonly no
                --daemonize yes --pidfile "$d/redis.pid" --dir "$d"
                --logfile "$d/redis.log")
    [ -n "$primary" ] && args+=(--replicaof 127.0.0.1 "$primary"
                                --replica-read-only yes)
    redis-server "${args[@]}"
    wait_port "$port" || die "redis $name did not start (see $d/redis.log)"
}

start_cluster_node() {    # NAME PORT
    local name=$1 port=$2 d=$RUN/$1
    mkdir -p "$d"
    redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
        --daemonize yes --pidfile "$d/redis.pid" --dir "$d" \
        --logfile "$d/redis.log" --cluster-enabled yes \
        --cluster-config-file "$d/nodes.conf" --cluster-node-timeout 2000 \
        --cluster-require-full-coverage no
    wait_port "$port" || die "redis $name did not start (see $d/redis.log)"
}

start_sentinel() {    # NAME PORT
    local name=$1 port=$2 d=$RUN/$1
    mkdir -p "$d"
    cat > "$d/sentinel.conf" <<EOF
port $port
bind 127.0.0.1
daemonize yes
pidfile $d/redis.pid
dir $d
logfile $d/sentinel.log
sentinel resolve-hostnames no
sentinel monitor envgw 127.0.0.1 $P 2
sentinel down-after-milliseconds envgw 2000
sentinel failover-timeout envgw 10000
EOF
    redis-server "$d/sentinel.conf" --sentinel
    wait_port "$port" || die "sentinel $name did not start"
}

gateway_conf() {    # NAME PORT BACKEND REDIS_LINES -> prints the conf path
    local name=$1 port=$2 backend=$3 redis=$4 d=$RUN/$1
    mkdir -p "$d"
    fill "$HERE/gateway.conf.in" "$d/nginx.conf" \
        "MODULE=$MODULE" "USER=$(user_line)" "DIR=$d" "WORKERS=2" \
        "PORT=$port" "BACKEND=$backend" "NAME=$name" "REDIS=$redis"
    printf '%s' "$d/nginx.conf"
}

start_nginx() {    # NAME CONF PORT
    local name=$1 conf=$2 port=$3 d=$RUN/$1
    "$NGINX" -p "$d/" -c "$conf" -e "$d/error.log" \
        || die "nginx $name did not start (see $d/error.log)"
    wait_port "$port" || die "nginx $name not listening on $port"
}

# a token's raw value and id: mint TOKEN_VAR ID_VAR ENV
mint() {
    local json
    json=$($gw --json token create "$3")
    printf -v "$1" '%s' "$(sed -n 's/.*"token": *"\([^"]*\)".*/\1/p' <<<"$json")"
    printf -v "$2" '%s' "$(sed -n 's/.*"token_id": *"\([^"]*\)".*/\1/p' <<<"$json")"
}

status_of() { curl -s -o /dev/null -w '%{http_code}' "$@"; }

# The Redis Cluster variant (REDIS=cluster)
cmd_start_cluster() {
    local p n ports="$N1 $N2 $N3 $N4 $N5 $N6 $LB $G1 $G2 $G3 $B1 $B2 $B3"
    for p in $ports; do
        port_busy "$p" && die "port $p is in use (override CLUSTER_* ports)"
    done
    mkdir -p "$RUN"
    n=0
    for p in $N1 $N2 $N3 $N4 $N5 $N6; do
        n=$((n + 1))
        start_cluster_node "n$n" "$p"
    done
    redis-cli --cluster create 127.0.0.1:$N1 127.0.0.1:$N2 127.0.0.1:$N3 \
        127.0.0.1:$N4 127.0.0.1:$N5 127.0.0.1:$N6 --cluster-replicas 1 \
        --cluster-yes > "$RUN/n1/create.log" 2>&1 \
        || die "redis-cli --cluster create failed (see $RUN/n1/create.log)"
    for _ in $(seq 1 100); do
        redis-cli -p "$N1" cluster info | grep -q 'cluster_state:ok' && break
        sleep 0.1
    done

    # --- demo data, written by envgw --cluster ------------------------------
    local e
    gw="$ENVGW --cluster --redis 127.0.0.1:$N1"
    for e in env_demo_a env_demo_b; do
        $gw env create --team team_demo --id "$e" "${e#env_demo_}" >/dev/null
        $gw integration set "$e" hubspot --upstream http://backend >/dev/null
        $gw account add "$e" "acct_${e}_1" --integration hubspot --tenant acme >/dev/null
    done
    local TOK_A TOK_A_ID TOK_B TOK_B_ID
    mint TOK_A TOK_A_ID env_demo_a
    mint TOK_B TOK_B_ID env_demo_b
    printf 'TOKEN_A=%s\nTOKEN_A_ID=%s\nTOKEN_B=%s\nTOKEN_B_ID=%s\n' \
        "$TOK_A" "$TOK_A_ID" "$TOK_B" "$TOK_B_ID" > "$RUN/tokens"

    # --- gateways and load balancer -----------------------------------------
    local conf seeds="127.0.0.1:$N1 127.0.0.1:$N2 127.0.0.1:$N3"
    local line="    env_gateway_redis_cluster $seeds connect_timeout=200ms read_timeout=500ms"
    conf=$(gateway_conf g1 "$G1" "$B1" "$line;")
    start_nginx g1 "$conf" "$G1"
    conf=$(gateway_conf g2 "$G2" "$B2" "$line;")
    start_nginx g2 "$conf" "$G2"
    conf=$(gateway_conf g3 "$G3" "$B3" "$line read_from=replica;")
    start_nginx g3 "$conf" "$G3"
    local upstreams
    upstreams=$(printf '        server 127.0.0.1:%s;\n' "$G1" "$G2" "$G3")
    mkdir -p "$RUN/lb"
    fill "$HERE/lb.conf.in" "$RUN/lb/nginx.conf" "USER=$(user_line)" \
        "DIR=$RUN/lb" "PORT=$LB" "GATEWAYS=$upstreams"
    start_nginx lb "$RUN/lb/nginx.conf" "$LB"
    sleep 0.3   # workers connect, read the slot map and subscribe

    say ""
    say "env_gateway edge cluster on a Redis Cluster is up (all on 127.0.0.1):"
    say "  Redis Cluster :$N1 :$N2 :$N3 (primaries) :$N4 :$N5 :$N6 (replicas)"
    say "  gateways g1 :$G1  g2 :$G2 (primaries)  g3 :$G3 (read_from=replica)"
    say "  load balancer  http://127.0.0.1:$LB/"
    say "  tokens in $RUN/tokens; logs in $RUN/<node>/"
    say ""
    say "Try:"
    say "  curl -i -H 'Authorization: Bearer $TOK_A' 'http://127.0.0.1:$LB/orders?integrated_account_id=acct_env_demo_a_1'"
    say "  curl -i -H 'Authorization: Bearer $TOK_A' 'http://127.0.0.1:$LB/orders?integrated_account_id=acct_env_demo_b_1'   # 404"
    say "  redis-cli -c -p $N1 cluster shards      # where the slots are"
    say "  $gw token revoke $TOK_B_ID"
    say ""

    local TOK_R TOK_R_ID g
    mint TOK_R TOK_R_ID env_demo_a
    redis-cli -c -p "$N1" wait 1 2000 >/dev/null 2>&1 || true
    say "Revocation demo with $TOK_R_ID:"
    for g in "$G1" "$G2" "$G3"; do
        status_of -H "Authorization: Bearer $TOK_R" "http://127.0.0.1:$g/orders" >/dev/null
        say "  gateway :$g -> $(status_of -H "Authorization: Bearer $TOK_R" "http://127.0.0.1:$g/orders") (cached)"
    done
    say "  \$ envgw --cluster --redis 127.0.0.1:$N1 token revoke $TOK_R_ID"
    $gw token revoke "$TOK_R_ID" >/dev/null
    sleep 0.05
    for g in "$G1" "$G2" "$G3"; do
        say "  gateway :$g -> $(status_of -H "Authorization: Bearer $TOK_R" "http://127.0.0.1:$g/orders")"
    done
    say ""
    say "Stop with: make cluster-demo-stop"
}

cmd_start() {
    MODULE=${1:-${MODULE:-$TOP/build/nginx/objs/ngx_env_gateway_module.so}}
    [ -f "$MODULE" ] || die "no module at $MODULE (make module)"
    [ -x "$ENVGW" ] || die "no envgw at $ENVGW (make cli)"
    command -v redis-server >/dev/null || die "redis-server not installed"
    command -v curl >/dev/null || die "curl not installed"
    if ls "$RUN"/*/*.pid >/dev/null 2>&1; then
        die "already running? ($RUN has pidfiles; make cluster-demo-stop)"
    fi
    case "$REDIS" in
        primary) ;;
        cluster) cmd_start_cluster; return ;;
        *)       die "REDIS=$REDIS: primary or cluster" ;;
    esac

    local use_sentinel=0 ports="$P $R1 $R2 $LB $G1 $G2 $G3 $B1 $B2 $B3"
    mkdir -p "$RUN"
    if [ "$SENTINEL" != 0 ]; then
        # Sentinel discovery: used only when the module
        # accepts "env_gateway_redis sentinel=NAME host:port..."
        local probe
        probe=$(gateway_conf g4probe 1 1 \
            "    env_gateway_redis sentinel=envgw 127.0.0.1:$S1 127.0.0.1:$S2 127.0.0.1:$S3;")
        if "$NGINX" -t -p "$RUN/g4probe/" -c "$probe" -e "$RUN/g4probe/t.log" \
                >/dev/null 2>&1; then
            use_sentinel=1
            ports="$ports $G4 $B4 $S1 $S2 $S3"
        else
            say "Sentinel discovery: not supported by this module build (skipped)"
        fi
        rm -rf "$RUN/g4probe"
    fi

    local p
    for p in $ports; do
        port_busy "$p" && die "port $p is in use (override CLUSTER_* ports)"
    done

    start_redis p "$P"
    start_redis r1 "$R1" "$P"
    start_redis r2 "$R2" "$P"
    if [ $use_sentinel = 1 ]; then
        start_sentinel s1 "$S1"; start_sentinel s2 "$S2"; start_sentinel s3 "$S3"
    fi

    # wait for the replicas' initial sync
    for p in "$R1" "$R2"; do
        for _ in $(seq 1 100); do
            redis-cli -p "$p" info replication | grep -q 'master_link_status:up' && break
            sleep 0.1
        done
    done

    # --- demo data, written to the primary --------------------------------
    local e
    gw="$ENVGW --redis 127.0.0.1:$P"
    for e in env_demo_a env_demo_b; do
        $gw env create --team team_demo --id "$e" "${e#env_demo_}" >/dev/null
        $gw integration set "$e" hubspot --upstream http://backend >/dev/null
        $gw account add "$e" "acct_${e}_1" --integration hubspot --tenant acme >/dev/null
    done
    local TOK_A TOK_A_ID TOK_B TOK_B_ID
    mint TOK_A TOK_A_ID env_demo_a
    mint TOK_B TOK_B_ID env_demo_b
    printf 'TOKEN_A=%s\nTOKEN_A_ID=%s\nTOKEN_B=%s\nTOKEN_B_ID=%s\n' \
        "$TOK_A" "$TOK_A_ID" "$TOK_B" "$TOK_B_ID" > "$RUN/tokens"
    redis-cli -p "$P" wait 2 2000 >/dev/null

    # --- gateways and load balancer -----------------------------------------
    local conf
    conf=$(gateway_conf g1 "$G1" "$B1" "$(redis_lines "$R1" "$P")")
    start_nginx g1 "$conf" "$G1"
    conf=$(gateway_conf g2 "$G2" "$B2" "$(redis_lines "$R2" "$P")")
    start_nginx g2 "$conf" "$G2"
    conf=$(gateway_conf g3 "$G3" "$B3" "$(redis_lines "$P" "$R1")")
    start_nginx g3 "$conf" "$G3"
    local upstreams
    upstreams=$(printf '        server 127.0.0.1:%s;\n' "$G1" "$G2" "$G3")
    if [ $use_sentinel = 1 ]; then
        conf=$(gateway_conf g4 "$G4" "$B4" \
            "    env_gateway_redis sentinel=envgw 127.0.0.1:$S1 127.0.0.1:$S2 127.0.0.1:$S3;")
        start_nginx g4 "$conf" "$G4"
        upstreams+=$'\n'"        server 127.0.0.1:$G4;"
    fi
    mkdir -p "$RUN/lb"
    fill "$HERE/lb.conf.in" "$RUN/lb/nginx.conf" "USER=$(user_line)" \
        "DIR=$RUN/lb" "PORT=$LB" "GATEWAYS=$upstreams"
    start_nginx lb "$RUN/lb/nginx.conf" "$LB"
    sleep 0.3   # workers connect and subscribe

    local gws=("$G1" "$G2" "$G3")
    [ $use_sentinel = 1 ] && gws+=("$G4")

    say ""
    say "env_gateway edge cluster is up (all on 127.0.0.1):"
    say "  Redis primary :$P   replicas :$R1 :$R2"
    [ $use_sentinel = 1 ] && say "  Sentinels :$S1 :$S2 :$S3 (master name envgw)"
    say "  gateways g1 :$G1 (reads :$R1, then :$P)  g2 :$G2 (:$R2, then :$P)  g3 :$G3 (:$P, then :$R1)"
    [ $use_sentinel = 1 ] && say "           g4 :$G4 (primary found through the Sentinels)"
    say "  load balancer  http://127.0.0.1:$LB/"
    say "  tokens in $RUN/tokens; logs in $RUN/<node>/"
    say ""
    say "Try:"
    say "  curl -i -H 'Authorization: Bearer $TOK_A' 'http://127.0.0.1:$LB/orders?integrated_account_id=acct_env_demo_a_1'"
    say "  curl -i -H 'Authorization: Bearer $TOK_A' 'http://127.0.0.1:$LB/orders?integrated_account_id=acct_env_demo_b_1'   # 404"
    say "  curl -i -H 'Authorization: Bearer egw_nope' http://127.0.0.1:$LB/orders                                       # 401"
    say "  $ENVGW --redis 127.0.0.1:$P token revoke $TOK_B_ID"
    say ""

    # --- revocation demo: a fresh token, cached on every gateway ----------
    local TOK_R TOK_R_ID g
    mint TOK_R TOK_R_ID env_demo_a
    redis-cli -p "$P" wait 2 2000 >/dev/null
    say "Revocation demo with $TOK_R_ID:"
    for g in "${gws[@]}"; do
        status_of -H "Authorization: Bearer $TOK_R" "http://127.0.0.1:$g/orders" >/dev/null
        say "  gateway :$g -> $(status_of -H "Authorization: Bearer $TOK_R" "http://127.0.0.1:$g/orders") (cached)"
    done
    say "  \$ envgw --redis 127.0.0.1:$P token revoke $TOK_R_ID"
    $gw token revoke "$TOK_R_ID" >/dev/null
    sleep 0.05
    for g in "${gws[@]}"; do
        say "  gateway :$g -> $(status_of -H "Authorization: Bearer $TOK_R" "http://127.0.0.1:$g/orders")"
    done
    say ""
    say "Stop with: make cluster-demo-stop"
}

cmd_stop() {
    local f pid n=0
    # gateways and the load balancer first, then Redis and the Sentinels
    for f in "$RUN"/*/nginx.pid; do
        [ -e "$f" ] || continue
        if pid=$(our_pid "$f" nginx); then
            kill -QUIT "$pid" && n=$((n + 1))
        fi
    done
    for f in "$RUN"/*/redis.pid; do
        [ -e "$f" ] || continue
        if pid=$(our_pid "$f" redis); then
            kill -TERM "$pid" && n=$((n + 1))
        fi
    done
    # wait for them to exit, then forget the pidfiles
    for _ in $(seq 1 100); do
        local alive=0
        for f in "$RUN"/*/nginx.pid "$RUN"/*/redis.pid; do
            [ -e "$f" ] || continue
            our_pid "$f" 'nginx\|redis' >/dev/null && alive=1
        done
        [ $alive = 0 ] && break
        sleep 0.1
    done
    rm -f "$RUN"/*/nginx.pid "$RUN"/*/redis.pid
    say "cluster: stopped $n process(es)"
}

cmd_status() {
    local f pid
    for f in "$RUN"/*/nginx.pid "$RUN"/*/redis.pid; do
        [ -e "$f" ] || continue
        if pid=$(our_pid "$f" 'nginx\|redis'); then
            say "running  $(basename "$(dirname "$f")") pid $pid"
        else
            say "gone     $(basename "$(dirname "$f")")"
        fi
    done
}

case "${1:-}" in
    start)  shift; cmd_start "$@" ;;
    stop)   cmd_stop ;;
    status) cmd_status ;;
    *)      die "usage: $0 start [MODULE.so] | stop | status" ;;
esac
