#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-2-Clause
# env_gateway demo: Redis + nginx (conf.example) + a sample backend on loopback,
# seeded with three environments by envgw.
#
#   demo/demo.sh start [MODULE_PATH]   (make demo)
#   demo/demo.sh stop                  (make demo-stop)
#   demo/demo.sh status
#
# Environment:
#   DEMO_PORT          gateway port            (default 8080)
#   DEMO_BACKEND_PORT  sample backend port     (default 8081)
#   DEMO_REDIS_PORT    redis-server port       (default 6390)
#   DEMO_RUN           state directory         (default demo/run)
#   ENVGW_BIN          the admin tool          (default cli/envgw)
#   ENVGW_NGINX        the nginx binary        (default /usr/sbin/nginx)
#
# stop ends exactly the nginx and redis-server this script started, found by
# the pid files in the state directory, and nothing else.

set -euo pipefail

TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PORT=${DEMO_PORT:-8080}
BACKEND_PORT=${DEMO_BACKEND_PORT:-8081}
REDIS_PORT=${DEMO_REDIS_PORT:-6390}
RUN=${DEMO_RUN:-$TOP/demo/run}
ENVGW=${ENVGW_BIN:-$TOP/cli/envgw}
NGINX=${ENVGW_NGINX:-/usr/sbin/nginx}
CONF_EXAMPLE=$TOP/conf.example
RESOURCES=$TOP/demo/hubspot-resources.json

say() { printf '%s\n' "$*"; }
die() { printf 'demo: %s\n' "$*" >&2; exit 1; }

mkdir -p "$RUN"
RUN=$(cd "$RUN" && pwd)

# --- processes ---------------------------------------------------------------

# pid_of NAME: the live pid recorded in $RUN, if it still is that program
pid_of() {
    local name=$1 file pid pattern
    case $name in
        nginx) file=$RUN/logs/nginx.pid; pattern="nginx: master process.*$RUN" ;;
        redis) file=$RUN/redis.pid;      pattern="redis-server" ;;
    esac
    [ -s "$file" ] || return 1
    pid=$(tr -dc 0-9 < "$file")
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
    tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$pattern" \
        || return 1
    printf '%s\n' "$pid"
}

# stop_one NAME SIGNAL: signal the recorded pid and wait until it is gone
stop_one() {
    local name=$1 sig=$2 pid i
    pid=$(pid_of "$name") || return 0
    kill "-$sig" "$pid" 2>/dev/null || true
    for i in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || { say "stopped $name (pid $pid)"; return 0; }
        sleep 0.1
    done
    say "demo: $name (pid $pid) did not stop on $sig; killing it" >&2
    kill -KILL "$pid" 2>/dev/null || true
    for i in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    return 1
}

running() { pid_of nginx >/dev/null || pid_of redis >/dev/null; }

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {
    local i
    for i in $(seq 1 100); do
        port_busy "$1" && return 0
        sleep 0.1
    done
    return 1
}

do_stop() {
    if ! running; then
        say "demo is not running (no live pid in $RUN)"
        return 0
    fi
    stop_one nginx QUIT
    stop_one redis TERM
    rm -f "$RUN/redis.pid"
}

# --- start ----------------------------------------------------------------------

egw() { "$ENVGW" --redis "127.0.0.1:$REDIS_PORT" "$@"; }

# mint a data token in ENV and print the raw token (from --json output)
mint() {
    egw --json token create "$1" 2>>"$RUN/seed.log" \
        | perl -MJSON::PP -0777 -ne 'print JSON::PP->new->decode($_)->{token}'
}

seed() {
    local id name tok
    : > "$RUN/seed.log"
    for e in env_dev:development env_stg:staging env_prod:production; do
        id=${e%%:*} name=${e#*:}
        egw env create --team team_demo --id "$id" "$name" >>"$RUN/seed.log"
        egw integration set "$id" hubspot --upstream "http://hubspot_$name" \
            --resources "$RESOURCES" >>"$RUN/seed.log"
    done
    # a custom method, in development only
    egw method set env_dev hubspot contacts merge POST \
        /crm/v3/objects/contacts/merge >>"$RUN/seed.log"
    egw account add env_dev  acc_dev_acme  --integration hubspot --tenant acme >>"$RUN/seed.log"
    egw account add env_stg  acc_stg_acme  --integration hubspot --tenant acme >>"$RUN/seed.log"
    egw account add env_prod acc_prod_acme --integration hubspot --tenant acme >>"$RUN/seed.log"

    DEV_TOKEN=$(mint env_dev)
    STG_TOKEN=$(mint env_stg)
    PROD_TOKEN=$(mint env_prod)
    for tok in "$DEV_TOKEN" "$STG_TOKEN" "$PROD_TOKEN"; do
        [[ $tok == egw_* ]] || die "token create failed (see $RUN/seed.log)"
    done
    (
        umask 077
        cat > "$RUN/tokens.env" <<EOF
# env_gateway demo: raw data tokens (printed once by envgw, kept here for the demo)
GATEWAY=http://127.0.0.1:$PORT
REDIS=127.0.0.1:$REDIS_PORT
DEV_TOKEN=$DEV_TOKEN
STG_TOKEN=$STG_TOKEN
PROD_TOKEN=$PROD_TOKEN
EOF
    )
}

write_conf() {
    sed -e "s|^\([[:space:]]*load_module[[:space:]]\{1,\}\)[^[:space:];]*ngx_env_gateway_module\.so|\1$MODULE|" \
        -e "s|127\.0\.0\.1:8080;|127.0.0.1:$PORT;|g" \
        -e "s|127\.0\.0\.1:8081;|127.0.0.1:$BACKEND_PORT;|g" \
        -e "s|127\.0\.0\.1:6390\([; ]\)|127.0.0.1:$REDIS_PORT\1|g" \
        "$CONF_EXAMPLE" > "$RUN/nginx.conf"
}

# run a demo request; prints its status code
status_of() { curl -s -o /dev/null -w '%{http_code}' "$@" || true; }

show() {
    local want=$1 what=$2; shift 2
    local got line
    got=$(status_of "$@")
    line="curl -sS -w 'HTTP %{http_code}\\n'"
    for a in "$@"; do
        if [[ $a =~ ^[A-Za-z0-9_./:=-]+$ ]]; then line+=" $a"; else line+=" '$a'"; fi
    done
    if [ "$got" = "$want" ]; then
        printf '# %s  -> %s\n%s\n\n' "$what" "$got" "$line"
    else
        printf '# %s  -> expected %s, got %s (see %s)\n%s\n\n' \
            "$what" "$want" "$got" "$RUN/logs/error.log" "$line"
        FAILED=1
    fi
}

# on a failed start, stop what was started
on_fail() {
    local rc=$?
    [ "$rc" = 0 ] && return 0
    echo "demo: start failed; stopping what it started" >&2
    do_stop >&2 || true
    exit "$rc"
}

do_start() {
    MODULE=${1:-$TOP/build/nginx/objs/ngx_env_gateway_module.so}
    [ -f "$MODULE" ] || die "module not found: $MODULE (run make)"
    MODULE=$(cd "$(dirname "$MODULE")" && pwd)/$(basename "$MODULE")
    [ -x "$ENVGW" ] || die "admin tool not found: $ENVGW (run make)"
    command -v redis-server >/dev/null || die "redis-server not installed (make deps)"
    [ -x "$NGINX" ] || die "nginx not found: $NGINX (make deps)"
    command -v curl >/dev/null || die "curl not installed (make deps)"

    if running; then
        say "demo already running in $RUN: stopping it first"
        do_stop
    fi
    for p in "$PORT" "$BACKEND_PORT" "$REDIS_PORT"; do
        port_busy "$p" && die "127.0.0.1:$p is in use; free it or choose other ports:
  DEMO_PORT=.. DEMO_BACKEND_PORT=.. DEMO_REDIS_PORT=.. $0 start"
    done

    mkdir -p "$RUN/logs" "$RUN/temp"
    trap on_fail EXIT

    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' \
        --appendonly no --daemonize yes --pidfile "$RUN/redis.pid" \
        --dir "$RUN" --logfile "$RUN/redis.log"
    wait_port "$REDIS_PORT" || die "redis-server did not start (see $RUN/redis.log)"
    for i in $(seq 1 50); do
        egw env list >/dev/null 2>&1 && break
        sleep 0.1
    done
    say "redis-server on 127.0.0.1:$REDIS_PORT (pid $(pid_of redis))"

    seed
    say "seeded env_dev (development), env_stg (staging), env_prod (production)"

    write_conf
    "$NGINX" -p "$RUN/" -c "$RUN/nginx.conf" -e "$RUN/logs/error.log" \
        || die "nginx did not start (see $RUN/logs/error.log)"
    wait_port "$PORT" || die "nginx does not listen on $PORT (see $RUN/logs/error.log)"
    for i in $(seq 1 50); do pid_of nginx >/dev/null && break; sleep 0.1; done
    say "nginx on 127.0.0.1:$PORT (pid $(pid_of nginx)), sample backend on 127.0.0.1:$BACKEND_PORT"
    trap - EXIT

    local G=http://127.0.0.1:$PORT A="Authorization: Bearer"
    FAILED=0
    say ""
    say "Tokens are in $RUN/tokens.env. Try:"
    say ""
    show 200 "development token, development account: allowed, backend sees X-Environment-Id env_dev" \
        -H "$A $DEV_TOKEN" "$G/crm/contacts?integrated_account_id=acc_dev_acme"
    show 401 "no token: missing_token" \
        "$G/crm/contacts?integrated_account_id=acc_dev_acme"
    show 404 "development token, production account: integrated_account_not_found" \
        -H "$A $DEV_TOKEN" "$G/crm/contacts?integrated_account_id=acc_prod_acme"
    show 200 "custom method contacts.merge in development: proxied to hubspot_development" \
        -X POST -H "$A $DEV_TOKEN" "$G/proxy/contacts/merge?integrated_account_id=acc_dev_acme"
    show 404 "the same method in production: method_not_found (not promoted yet)" \
        -X POST -H "$A $PROD_TOKEN" "$G/proxy/contacts/merge?integrated_account_id=acc_prod_acme"
    show 200 "a built-in method in production: contacts.get -> hubspot_production" \
        -H "$A $PROD_TOKEN" "$G/proxy/contacts/123?integrated_account_id=acc_prod_acme"
    say "# metrics (Prometheus text)"
    say "curl -s $G/env_gateway/metrics"
    say ""
    say "# promote the custom method, then the production call above answers 200:"
    say "$ENVGW --redis 127.0.0.1:$REDIS_PORT diff env_dev env_prod"
    say "$ENVGW --redis 127.0.0.1:$REDIS_PORT promote env_dev env_prod --method contacts.merge"
    say ""
    say "Logs: $RUN/logs/   Stop: make demo-stop (or $0 stop)"
    [ "$FAILED" = 0 ] || { say "demo: some requests did not answer as expected" >&2; return 1; }
}

do_status() {
    local p
    if p=$(pid_of nginx); then say "nginx running (pid $p)"; else say "nginx not running"; fi
    if p=$(pid_of redis); then say "redis-server running (pid $p)"; else say "redis-server not running"; fi
}

case ${1:-} in
    start)  shift; do_start "$@" ;;
    stop)   do_stop ;;
    status) do_status ;;
    *)      say "usage: $0 start [MODULE_PATH] | stop | status" >&2; exit 2 ;;
esac
