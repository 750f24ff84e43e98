/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * env_gateway: a Redis connection's reachability, and how it is logged.
 *
 * While Redis cannot be reached a connection retries every 50..500 ms; a
 * line per attempt would be some 4 lines a second per worker.  Instead each
 * change of state is logged once and the failures in between are
 * summarised:
 *
 *   up -> down    the first failed attempt, with its cause (error);
 *   still down    at most one summary every NGX_ENVGW_HEALTH_SUMMARY ms:
 *                 the attempts failed since the last line, the last cause
 *                 (error);
 *   down -> up    once a new connection has stayed up for its server's
 *                 read_timeout and Redis has answered on it (a PING if
 *                 nothing else) (warn): a Redis that accepts connections
 *                 but never answers does not look healed at every
 *                 connect.
 *
 * nginx's own "connect() failed" lines (ngx_event_connect_peer() writes
 * them with the connection's log) go through a log of their own whose
 * writer keeps the words for these lines and writes nothing; any other
 * line written there (alerts, debug) is passed on unchanged.
 *
 * The same state is what env_gateway_status reports: connected, connecting
 * (a first connect, or a reconnect after a connection that worked), or down
 * (the last attempt failed), and since when.
 */

#include "ngx_env_gateway_redis.h"


#define NGX_ENVGW_HEALTH_SUMMARY      10000   /* ms */
#define NGX_ENVGW_HEALTH_CONNS        8


static void ngx_env_gateway_health_writer(ngx_log_t *log, ngx_uint_t level,
    u_char *buf, size_t len);
static void ngx_env_gateway_health_confirm(ngx_event_t *ev);
static void ngx_env_gateway_health_ping(ngx_env_gateway_redis_t *rc);


/* this worker's connections, for env_gateway_status */
static ngx_env_gateway_redis_t
    *ngx_env_gateway_health_conns[NGX_ENVGW_HEALTH_CONNS];


ngx_int_t
ngx_env_gateway_health_init(ngx_env_gateway_redis_t *rc)
{
    ngx_uint_t                 i;
    ngx_env_gateway_health_t  *h;

    h = &rc->health;

    /* nginx's connect() lines: the same log, but through our writer */
    h->quiet = *rc->log;
    h->quiet.writer = ngx_env_gateway_health_writer;
    h->quiet.wdata = rc;
    h->quiet.next = NULL;

    ngx_env_gateway_redis_event(rc, &h->confirm,
                                ngx_env_gateway_health_confirm);
    h->confirm.cancelable = 1;

    h->since = ngx_time();

    for (i = 0; i < NGX_ENVGW_HEALTH_CONNS; i++) {
        if (ngx_env_gateway_health_conns[i] == NULL) {
            ngx_env_gateway_health_conns[i] = rc;
            break;
        }
    }

    return NGX_OK;
}


/* the i-th connection of this worker, NULL after the last */
ngx_env_gateway_redis_t *
ngx_env_gateway_health_conn(ngx_uint_t i)
{
    return (i < NGX_ENVGW_HEALTH_CONNS) ? ngx_env_gateway_health_conns[i]
                                        : NULL;
}


void
ngx_env_gateway_health_exit(void)
{
    ngx_uint_t                 i;
    ngx_env_gateway_redis_t   *rc;

    for (i = 0; i < NGX_ENVGW_HEALTH_CONNS; i++) {
        rc = ngx_env_gateway_health_conns[i];

        if (rc && rc->health.confirm.timer_set) {
            ngx_del_timer(&rc->health.confirm);
        }

        ngx_env_gateway_health_conns[i] = NULL;
    }
}


/*
 * The writer of the connect log.  ngx_log_error_core() hands it the whole
 * line: "<time> [<level>] <pid>#<tid>: [*<n> ]<message>\n".  A connect()
 * failure (error or crit) is kept, without the prefix, as the last cause;
 * anything else is written to the connection's log chain as nginx would.
 */
static void
ngx_env_gateway_health_writer(ngx_log_t *log, ngx_uint_t level, u_char *buf,
    size_t len)
{
    ngx_str_t                  msg;
    ngx_log_t                 *l;
    ngx_env_gateway_redis_t   *rc;
    ngx_env_gateway_health_t  *h;

    rc = log->wdata;
    h = &rc->health;

    if (level != NGX_LOG_ERR && level != NGX_LOG_CRIT) {
        for (l = rc->log; l; l = l->next) {
            if (l->log_level < level) {
                break;
            }

            if (l->writer) {
                l->writer(l, level, buf, len);
                continue;
            }

            (void) ngx_write_fd(l->file->fd, buf, len);
        }

        return;
    }

    ngx_env_gateway_log_message(buf, len, &msg);

    h->last_len = ngx_min(msg.len, NGX_ENVGW_HEALTH_ERRLEN);
    ngx_memcpy(h->last, msg.data, h->last_len);
}


/*
 * The message of a line ngx_log_error_core() formatted, "<time>
 * [<level>] <pid>#<tid>: [*<n> ]<message>\n": without the prefix, the
 * connection number and the line end (the whole line if it has no
 * prefix).  The log writers of the transport keep it as a failure's cause.
 */
void
ngx_env_gateway_log_message(u_char *buf, size_t len, ngx_str_t *msg)
{
    u_char  *p, *last;

    last = buf + len;

    while (last > buf && (last[-1] == LF || last[-1] == CR)) {
        last--;
    }

    p = ngx_strlchr(buf, last, '#');

    if (p) {
        for ( /* void */ ; p + 1 < last; p++) {
            if (p[0] == ':' && p[1] == ' ') {
                p += 2;
                break;
            }
        }

        if (p < last && *p == '*') {
            p = ngx_strlchr(p, last, ' ');
            p = p ? p + 1 : last;
        }

    } else {
        p = buf;
    }

    msg->data = p;
    msg->len = last - p;
}


/* a connection is established (its handshake queued) */
void
ngx_env_gateway_health_connected(ngx_env_gateway_redis_t *rc)
{
    ngx_env_gateway_server_t  *srv;
    ngx_env_gateway_health_t  *h;

    h = &rc->health;
    h->failing = 0;
    h->since = ngx_time();

    /*
     * Looked at again after a while: a connection nothing has answered on
     * by then asks PING (a stopped Redis still completes connects); back
     * after an outage, that is said once it has stayed up and answered.
     * Not at once: a TLS server that refuses the client's certificate
     * after the handshake would reset the connection over that PING, and
     * its alert, the cause the log must name, would be lost.
     */
    srv = rc->servers->elts;
    h->confirm_gen = rc->generation;

    if (h->confirm.timer_set) {
        ngx_del_timer(&h->confirm);
    }

    ngx_add_timer(&h->confirm, srv[rc->current].read_timeout);
}


static void
ngx_env_gateway_health_confirm(ngx_event_t *ev)
{
    ngx_env_gateway_server_t  *srv;
    ngx_env_gateway_health_t  *h;
    ngx_env_gateway_redis_t   *rc = ev->data;

    h = &rc->health;

    if (ngx_exiting || ngx_quit || ngx_terminate
        || rc->state != NGX_ENVGW_REDIS_READY
        || rc->generation != h->confirm_gen)
    {
        return;
    }

    srv = rc->servers->elts;

    if (!rc->healthy) {
        /* up, but nothing answered yet: not reachable until it does */
        ngx_env_gateway_health_ping(rc);
        ngx_add_timer(&h->confirm, srv[rc->current].read_timeout);
        return;
    }

    if (!h->outage) {
        return;
    }

    h->outage = 0;

    ngx_log_error(NGX_LOG_WARN, rc->log, 0,
                  "env_gateway: redis %V%s reachable again after %M s, "
                  "%ui attempt(s) failed", &srv[rc->current].name, rc->role,
                  (ngx_current_msec - h->down_at) / 1000, h->total);
}


/*
 * A connection was dropped (not at shutdown).  Returns 1 when the failure
 * was a failed attempt, logged (or counted for the next summary) here;
 * 0 when a connection that worked was dropped: the caller logs that as
 * before, once, and the attempts that follow come here.
 */
ngx_uint_t
ngx_env_gateway_health_failed(ngx_env_gateway_redis_t *rc,
    ngx_uint_t was_ready, ngx_err_t err, const char *why)
{
    u_char                    *p, *last;
    ngx_msec_t                 elapsed;
    ngx_env_gateway_server_t  *srv;
    ngx_env_gateway_health_t  *h;

    h = &rc->health;
    srv = rc->servers->elts;
    srv = &srv[rc->current];

    if (h->confirm.timer_set) {
        ngx_del_timer(&h->confirm);
    }

    if (was_ready && !h->outage) {
        h->since = ngx_time();
        h->failing = 0;
        return 0;
    }

    /* the cause: given, or nginx's connect() line kept by the writer */
    if (why) {
        last = h->last + NGX_ENVGW_HEALTH_ERRLEN;
        p = ngx_slprintf(h->last, last, "%s", why);

        if (err) {
            p = ngx_log_errno(p, last, err);
        }

        h->last_len = p - h->last;

    } else if (h->last_len == 0) {
        h->last_len = ngx_sprintf(h->last, "connect() failed") - h->last;
    }

    if (!h->failing) {
        h->failing = 1;
        h->since = ngx_time();
    }

    if (!h->outage) {
        h->outage = 1;
        h->down_at = ngx_current_msec;
        h->window = ngx_current_msec;
        h->attempts = 0;
        h->total = 1;

        ngx_log_error(NGX_LOG_ERR, rc->log, 0,
                      "env_gateway: redis %V%s unreachable: %*s; further "
                      "failed attempts are summarised every %M s",
                      &srv->name, rc->role, h->last_len, h->last,
                      (ngx_msec_t) NGX_ENVGW_HEALTH_SUMMARY / 1000);
        return 1;
    }

    h->attempts++;
    h->total++;

    elapsed = ngx_current_msec - h->window;

    ngx_log_debug3(NGX_LOG_DEBUG_EVENT, rc->log, 0,
                   "env_gateway: redis%s: attempt failed, %ui in this "
                   "window, %M ms into it", rc->role, h->attempts, elapsed);

    if (elapsed >= NGX_ENVGW_HEALTH_SUMMARY) {
        ngx_log_error(NGX_LOG_ERR, rc->log, 0,
                      "env_gateway: redis %V%s still unreachable: %ui "
                      "attempt(s) failed in the last %M s, last error: %*s",
                      &srv->name, rc->role, h->attempts, elapsed / 1000,
                      h->last_len, h->last);

        h->window = ngx_current_msec;
        h->attempts = 0;
    }

    return 1;
}


/* this worker's lookup connection is up and answers (env_gateway_redis_up) */
ngx_uint_t
ngx_env_gateway_lookups_up(void)
{
    ngx_int_t                 ready;
    ngx_uint_t                i;
    ngx_env_gateway_redis_t  *rc;

    /* a cluster's lookups: every primary of the slot map (_cluster.c) */
    ready = ngx_env_gateway_cluster_ready();

    if (ready != NGX_DECLINED) {
        return ready;
    }

    for (i = 0; i < NGX_ENVGW_HEALTH_CONNS; i++) {
        rc = ngx_env_gateway_health_conns[i];

        if (rc && ngx_env_gateway_health_lookups(rc)) {
            return ngx_env_gateway_health_answering(rc);
        }
    }

    return 0;
}


/* what env_gateway_status says of the connection */
const char *
ngx_env_gateway_health_state(ngx_env_gateway_redis_t *rc)
{
    if (ngx_env_gateway_health_answering(rc)) {
        return "connected";
    }

    return rc->health.failing ? "down" : "connecting";
}


/*
 * Asked by env_gateway_status before it answers: an idle lookup
 * connection asks PING, so that a Redis that stopped answering since its
 * last reply is found by that PING's read timeout, without any request.
 * Its answer is for the next probe: this one reads the state as it is.
 * (Not at a metrics scrape: the scrape would change the command counters
 * it reports.)
 */
void
ngx_env_gateway_health_probe(void)
{
    ngx_uint_t                i;
    ngx_env_gateway_redis_t  *rc;

    for (i = 0; i < NGX_ENVGW_HEALTH_CONNS; i++) {
        rc = ngx_env_gateway_health_conns[i];

        if (rc && ngx_env_gateway_health_lookups(rc)) {
            ngx_env_gateway_health_ping(rc);
        }
    }
}


/*
 * A new lookup connection over plain TCP with nothing queued on it (no
 * AUTH or SELECT, no request waiting) asks PING at once, so that a worker
 * that has served nothing yet is ready as soon as Redis answers: after a
 * start or a reload, a load balancer's probe must not see 503 for a
 * read_timeout.  Over TLS the PING waits for the confirm timer (see
 * ngx_env_gateway_health_connected).
 */
void
ngx_env_gateway_health_hello(ngx_env_gateway_redis_t *rc)
{
#if (NGX_SSL)
    if (rc->c->ssl) {
        return;
    }
#endif

    if (ngx_env_gateway_health_lookups(rc)) {
        ngx_env_gateway_health_ping(rc);
    }
}


/* an idle connection (not a subscriber) asks PING */
static void
ngx_env_gateway_health_ping(ngx_env_gateway_redis_t *rc)
{
    const char  *argv[1];
    size_t       argvlen[1];

    if (rc->subscriber || rc->state != NGX_ENVGW_REDIS_READY || rc->ncmds) {
        return;
    }

    ngx_log_debug1(NGX_LOG_DEBUG_EVENT, rc->log, 0,
                   "env_gateway: redis%s: idle, PING", rc->role);

    argv[0] = "PING";
    argvlen[0] = 4;

    /* out of memory: nothing asked, the state stays as it is */
    (void) ngx_env_gateway_redis_send(rc, 1, argv, argvlen,
                                      ngx_env_gateway_redis_ignore, rc, 0);
}


/*
 * The connection is up and Redis has given a good reply on it: connected
 * alone is not enough (a stopped Redis still completes connects, a Redis
 * refusing every command with an error answers nothing useful).
 */
ngx_uint_t
ngx_env_gateway_health_answering(ngx_env_gateway_redis_t *rc)
{
    return rc->state == NGX_ENVGW_REDIS_READY && rc->healthy;
}
