/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * env_gateway: a Redis connection, its failover, and the worker's lookup
 * connection.  What goes over it, and when it times out: _pipeline.c.
 *
 * Failure policy (fail closed, fail fast): on a connect error, a timeout, a
 * closed socket or a protocol error (ngx_env_gateway_redis_ft_e) the
 * connection is dropped, and the failure logged once, with errno.  Lookups
 * that were written on it and are within their deadline are re-sent once,
 * on a new connection, within that same deadline (a GET is safe to
 * repeat): a connection that Redis or a load balancer closed (idle timeout,
 * CLIENT KILL, a reset) costs a reconnect, not an answer.  Every other
 * outstanding command is answered with a NULL reply (the caller turns that
 * into 503).  A connection that answered is reopened at once to the same
 * server; otherwise the next server of the failover list is tried, and when
 * the whole list failed, a reconnect timer backs off from 50ms to 500ms.
 * While disconnected, new commands are refused at once instead of queueing.
 * Commands queued while connecting were never sent: when that connect
 * fails they move on to the next server instead of failing.  Connected to a
 * later server, the lookup connection probes the first one every
 * primary_retry with a plain TCP connect and moves back (when idle) once it
 * answers, so a healed primary is used again.  Subscribers stay where they
 * are while healthy (_subscriber.c).
 *
 * The worker's connections are started here: the Sentinels' first
 * (_sentinel.c), then the lookup connection, then the invalidation
 * subscriber (_subscriber.c).
 */

#include "ngx_env_gateway_redis.h"


#define NGX_ENVGW_BACKOFF_MIN         50
#define NGX_ENVGW_BACKOFF_MAX         500


static void ngx_env_gateway_redis_established(ngx_env_gateway_redis_t *rc);
static void ngx_env_gateway_redis_reconnect_handler(ngx_event_t *ev);
static void ngx_env_gateway_redis_auth_reply(void *data, redisReply *reply);
static void ngx_env_gateway_redis_handshake_reply(void *data,
    redisReply *reply);
static void ngx_env_gateway_redis_primary_handler(ngx_event_t *ev);
static void ngx_env_gateway_redis_probe_handler(ngx_event_t *ev);
static void ngx_env_gateway_redis_switch(ngx_env_gateway_redis_t *rc);
static void ngx_env_gateway_redis_switch_handler(ngx_event_t *ev);


static ngx_env_gateway_redis_t  *ngx_env_gateway_redis;      /* lookups */
static ngx_uint_t                ngx_env_gateway_redis_exiting;

/* the lookups go to a cluster's nodes (_cluster.c) */
static ngx_uint_t                ngx_env_gateway_redis_cluster;

/* an AUTH refusal was logged: the next ones are not, until one succeeds */
static ngx_uint_t                ngx_env_gateway_redis_auth_refused;


/* nginx's own lines about a connect (connect() failed ...) name the role */
static u_char *
ngx_env_gateway_redis_log_handler(ngx_log_t *log, u_char *buf, size_t len)
{
    ngx_env_gateway_redis_t  *rc = log->data;

    if (rc->state != NGX_ENVGW_REDIS_CONNECTING) {
        return buf;
    }

    return ngx_snprintf(buf, len, " while connecting to redis%s", rc->role);
}


ngx_env_gateway_redis_t *
ngx_env_gateway_redis_create(ngx_cycle_t *cycle,
    ngx_env_gateway_main_conf_t *gmcf, ngx_array_t *servers,
    const char *role)
{
    ngx_env_gateway_redis_t  *rc;

    rc = ngx_pcalloc(cycle->pool, sizeof(ngx_env_gateway_redis_t));
    if (rc == NULL) {
        return NULL;
    }

    rc->log = ngx_palloc(cycle->pool, sizeof(ngx_log_t));
    if (rc->log == NULL) {
        return NULL;
    }

    *rc->log = *cycle->log;
    rc->log->handler = ngx_env_gateway_redis_log_handler;
    rc->log->data = rc;

    rc->gmcf = gmcf;
    rc->servers = servers;
    rc->role = role;
    rc->max_record = ngx_env_gateway_max_record(gmcf);
    rc->backoff = NGX_ENVGW_BACKOFF_MIN;

    ngx_queue_init(&rc->cmds);
    ngx_queue_init(&rc->free);

    ngx_env_gateway_redis_event(rc, &rc->flush,
                                ngx_env_gateway_redis_flush_handler);
    ngx_env_gateway_redis_event(rc, &rc->reconnect,
                                ngx_env_gateway_redis_reconnect_handler);
    ngx_env_gateway_redis_event(rc, &rc->primary,
                                ngx_env_gateway_redis_primary_handler);

    /* background timers must not hold up a graceful shutdown */
    rc->reconnect.cancelable = 1;
    rc->primary.cancelable = 1;

    if (ngx_env_gateway_health_init(rc) != NGX_OK) {
        return NULL;
    }

    return rc;
}


/* an event of the connection rc, not of its socket */
void
ngx_env_gateway_redis_event(ngx_env_gateway_redis_t *rc, ngx_event_t *ev,
    ngx_event_handler_pt handler)
{
    ev->handler = handler;
    ev->data = rc;
    ev->log = rc->log;
}


/* a non-blocking connect() ended: 0, or why it failed */
static ngx_err_t
ngx_env_gateway_redis_connect_error(ngx_connection_t *c)
{
    int        err;
    socklen_t  len;

    err = 0;
    len = sizeof(int);

    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, (void *) &err, &len) == -1) {
        err = ngx_socket_errno;
    }

    return err;
}


ngx_int_t
ngx_env_gateway_redis_init_worker(ngx_cycle_t *cycle,
    ngx_env_gateway_main_conf_t *gmcf)
{
    ngx_env_gateway_redis_t  *rc;

    ngx_env_gateway_redis_exiting = 0;

    if (gmcf->sentinels
        && ngx_env_gateway_sentinel_init(cycle, gmcf) != NGX_OK)
    {
        return NGX_ERROR;
    }

    /* a cluster's lookups go to their slots' nodes (_cluster.c) */
    ngx_env_gateway_redis_cluster = gmcf->cluster;

    if (gmcf->cluster) {
        if (ngx_env_gateway_cluster_init(cycle, gmcf) != NGX_OK) {
            return NGX_ERROR;
        }

        return ngx_env_gateway_subscriber_init(cycle, gmcf);
    }

    rc = ngx_env_gateway_redis_create(cycle, gmcf, gmcf->servers,
                                      NGX_ENVGW_ROLE_LOOKUPS);
    if (rc == NULL) {
        return NGX_ERROR;
    }

    if (gmcf->sentinels) {
        ngx_env_gateway_sentinel_attach(rc);
    }

    ngx_env_gateway_redis = rc;
    ngx_env_gateway_redis_connect(rc);

    return ngx_env_gateway_subscriber_init(cycle, gmcf);
}


void
ngx_env_gateway_redis_close(ngx_env_gateway_redis_t *rc)
{
    if (rc == NULL) {
        return;
    }

    ngx_env_gateway_redis_fail(rc, NGX_ENVGW_FT_SHUTDOWN, NULL);

    if (rc->reconnect.timer_set) {
        ngx_del_timer(&rc->reconnect);
    }

    if (rc->primary.timer_set) {
        ngx_del_timer(&rc->primary);
    }

#if (NGX_SSL)
    ngx_env_gateway_tls_free(rc);
#endif
}


void
ngx_env_gateway_redis_exit_worker(void)
{
    ngx_env_gateway_redis_t  *rc;

    /* no reconnects, no error lines, new lookups refused */
    ngx_env_gateway_redis_exiting = 1;

    rc = ngx_env_gateway_redis;
    ngx_env_gateway_redis = NULL;

    ngx_env_gateway_redis_close(rc);
    ngx_env_gateway_cluster_exit();
    ngx_env_gateway_subscriber_exit();
    ngx_env_gateway_sentinel_exit();
    ngx_env_gateway_health_exit();
}


ngx_int_t
ngx_env_gateway_redis_command(int argc, const char **argv,
    const size_t *argvlen, ngx_env_gateway_redis_handler_pt handler,
    void *data)
{
    ngx_env_gateway_redis_t  *rc;

    if (ngx_env_gateway_redis_cluster) {
        return ngx_env_gateway_cluster_command(argc, argv, argvlen, handler,
                                               data);
    }

    rc = ngx_env_gateway_redis;

    if (rc == NULL || rc->state == NGX_ENVGW_REDIS_DISCONNECTED) {
        return NGX_DECLINED;
    }

    /* lookups are GETs: safe to send again on a new connection */
    return ngx_env_gateway_redis_send(rc, argc, argv, argvlen, handler, data,
                                      1);
}


void
ngx_env_gateway_redis_connect(ngx_env_gateway_redis_t *rc)
{
    ngx_int_t                  rv;
    ngx_connection_t          *c;
    ngx_env_gateway_server_t  *srv;

    srv = rc->servers->elts;
    srv = &srv[rc->current];

    rc->state = NGX_ENVGW_REDIS_CONNECTING;

    if (srv->sockaddr == NULL || !srv->resolved) {
        if (rc->resolve == NULL) {
            ngx_env_gateway_redis_fail(rc, NGX_ENVGW_FT_NO_MASTER,
                                       "no address");
            return;
        }

        /* the address is asked for (Sentinels); commands queue meanwhile */
        ngx_log_debug1(NGX_LOG_DEBUG_EVENT, rc->log, 0,
                       "env_gateway: redis%s: asking for the address",
                       rc->role);

        rc->resolve(rc);
        return;
    }

    ngx_memzero(&rc->peer, sizeof(ngx_peer_connection_t));
    rc->peer.sockaddr = srv->sockaddr;
    rc->peer.socklen = srv->socklen;
    rc->peer.name = &srv->name;
    rc->peer.get = ngx_event_get_peer;
    rc->peer.log = ngx_env_gateway_health_log(rc);   /* connect() lines */

    /* recv() and send() errors are logged once, by drop(), with errno */
    rc->peer.log_error = NGX_ERROR_INFO;

    rc->healthy = 0;
    rc->sent = 0;
    rc->generation++;

    ngx_log_debug2(NGX_LOG_DEBUG_EVENT, rc->log, 0,
                   "env_gateway: redis%s: connecting, %ui command(s) queued",
                   rc->role, rc->ncmds);

    rv = ngx_event_connect_peer(&rc->peer);

    if (rv == NGX_ERROR || rv == NGX_DECLINED || rv == NGX_BUSY) {
        if (rc->peer.connection) {
            ngx_close_connection(rc->peer.connection);
            rc->peer.connection = NULL;
        }

        /* ngx_event_connect_peer() logged why, with errno and the role */
        ngx_env_gateway_redis_fail(rc, NGX_ENVGW_FT_CONNECT, NULL);
        return;
    }

    c = rc->peer.connection;
    c->data = rc;
    c->log = rc->log;
    c->read->log = rc->log;
    c->write->log = rc->log;
    c->read->handler = ngx_env_gateway_redis_read_handler;
    c->write->handler = ngx_env_gateway_redis_write_handler;
    c->pool = NULL;
    rc->c = c;

    rc->reader = ngx_env_gateway_redis_reader(rc);
    if (rc->reader == NULL) {
        ngx_env_gateway_redis_fail(rc, NGX_ENVGW_FT_INTERNAL,
                                   "redisReaderCreate() failed");
        return;
    }

    if (rv == NGX_AGAIN) {
        ngx_log_debug1(NGX_LOG_DEBUG_EVENT, rc->log, 0,
                       "env_gateway: redis%s: connect in progress", rc->role);

        ngx_add_timer(c->write, srv->connect_timeout);
        return;
    }

    ngx_env_gateway_redis_established(rc);
}


/* the TCP connection is up: TLS first if the server has it */
static void
ngx_env_gateway_redis_established(ngx_env_gateway_redis_t *rc)
{
#if (NGX_SSL)
    ngx_env_gateway_server_t  *srv;

    srv = rc->servers->elts;

    if (srv[rc->current].ssl) {
        ngx_env_gateway_tls_handshake(rc);
        return;
    }
#endif

    if (rc->c->write->timer_set) {
        ngx_del_timer(rc->c->write);
    }

    ngx_env_gateway_redis_connected(rc);
}


/* the socket is closed, and with TLS its session ended and pool freed */
void
ngx_env_gateway_redis_close_connection(ngx_env_gateway_redis_t *rc)
{
    ngx_pool_t        *pool;
    ngx_connection_t  *c;

    c = rc->c;

#if (NGX_SSL)
    if (c->ssl) {
        ngx_env_gateway_tls_close(rc);
    }
#endif

    pool = c->pool;
    c->log = rc->log;
    c->read->log = rc->log;
    c->write->log = rc->log;

    ngx_close_connection(c);

    if (pool) {
        ngx_destroy_pool(pool);
    }

    rc->c = NULL;
    rc->peer.connection = NULL;
}


void
ngx_env_gateway_redis_connected(ngx_env_gateway_redis_t *rc)
{
    int                        argc, n;
    size_t                     old, argvlen[3];
    u_char                    *tmp;
    const char                *argv[3];
    u_char                     db[NGX_INT_T_LEN];
    ngx_queue_t                handshake;
    ngx_env_gateway_cmd_t     *cmd;
    ngx_env_gateway_server_t  *srv;

    srv = rc->servers->elts;
    srv = &srv[rc->current];

    rc->state = NGX_ENVGW_REDIS_READY;
    rc->failures = 0;

    /* the backoff starts again once a connection has given a good reply */

    ngx_env_gateway_health_connected(rc);

#if (NGX_SSL)
    if (rc->c->ssl) {
        ngx_log_error(NGX_LOG_INFO, rc->log, 0,
                      "env_gateway: connected to redis %V%s over %s, %s "
                      "TLS session", &srv->name, rc->role,
                      SSL_get_version(rc->c->ssl->connection),
                      SSL_session_reused(rc->c->ssl->connection)
                      ? "resumed" : "new");
    } else
#endif
    {
        ngx_log_error(NGX_LOG_INFO, rc->log, 0,
                      "env_gateway: connected to redis %V%s", &srv->name,
                      rc->role);
    }

    ngx_env_gateway_metric_inc(NGX_ENVGW_M_REDIS_CONNECTS);

    if (rc->current != 0 && !rc->subscriber && !rc->primary.timer_set) {
        ngx_add_timer(&rc->primary, rc->gmcf->primary_retry);
    }

    /*
     * AUTH and SELECT must precede whatever was queued while connecting:
     * format them at the end of the buffer, then rotate them to the front.
     */

    old = rc->out_len;
    ngx_queue_init(&handshake);

    for (argc = 0; argc < 2; argc++) {

        if (argc == 0) {
            if (srv->password.len == 0) {
                continue;
            }

            /* AUTH [username] password */
            n = 0;
            argv[n] = "AUTH";
            argvlen[n++] = 4;

            if (srv->username.len) {
                argv[n] = (const char *) srv->username.data;
                argvlen[n++] = srv->username.len;
            }

            argv[n] = (const char *) srv->password.data;
            argvlen[n++] = srv->password.len;

        } else {
            if (srv->db < 0) {
                continue;
            }
            n = 2;
            argv[0] = "SELECT";
            argvlen[0] = 6;
            argv[1] = (const char *) db;
            argvlen[1] = ngx_sprintf(db, "%i", srv->db) - db;
        }

        cmd = ngx_env_gateway_redis_cmd_alloc(rc);
        if (cmd == NULL) {
            goto nomem;
        }

        /* the handshake is sent anew on every connection, never re-sent */
        cmd->handler = (argc == 0) ? ngx_env_gateway_redis_auth_reply
                                   : ngx_env_gateway_redis_handshake_reply;
        cmd->data = rc;
        cmd->raw = NULL;
        cmd->sent = 0;
        cmd->deadline = 0;
        cmd->retried = 0;
        ngx_queue_insert_tail(&handshake, &cmd->queue);
        rc->ncmds++;

        if (ngx_env_gateway_redis_append(rc, n, argv, argvlen, NULL, NULL)
            != NGX_OK)
        {
            goto nomem;
        }
    }

    if (!ngx_queue_empty(&handshake)) {
        if (old > rc->out_pos) {
            tmp = ngx_alloc(old - rc->out_pos, rc->log);
            if (tmp == NULL) {
                goto nomem;
            }

            ngx_memcpy(tmp, rc->out + rc->out_pos, old - rc->out_pos);
            ngx_memmove(rc->out + rc->out_pos, rc->out + old,
                        rc->out_len - old);
            ngx_memcpy(rc->out + rc->out_pos + (rc->out_len - old), tmp,
                       old - rc->out_pos);
            ngx_free(tmp);
        }

        ngx_queue_add(&handshake, &rc->cmds);
        ngx_queue_init(&rc->cmds);
        ngx_queue_add(&rc->cmds, &handshake);
    }

    /* a subscriber's SUBSCRIBE goes after the handshake */
    if (rc->connected && rc->connected(rc) != NGX_OK) {
        ngx_env_gateway_redis_fail(rc, NGX_ENVGW_FT_INTERNAL,
                                   "out of memory");
        return;
    }

    ngx_env_gateway_health_hello(rc);

    ngx_env_gateway_redis_flush(rc);

    return;

nomem:

    /* the handshake commands join the queue so that drop() answers them */
    ngx_queue_add(&handshake, &rc->cmds);
    ngx_queue_init(&rc->cmds);
    ngx_queue_add(&rc->cmds, &handshake);

    ngx_env_gateway_redis_fail(rc, NGX_ENVGW_FT_INTERNAL, "out of memory");
}


/*
 * AUTH refused (a wrong password, a disabled user) is one line in the
 * worker's log, not one per connection or attempt, until AUTH succeeds.
 */
static void
ngx_env_gateway_redis_auth_reply(void *data, redisReply *reply)
{
    ngx_env_gateway_redis_t   *rc = data;
    ngx_env_gateway_server_t  *srv;

    if (reply == NULL) {
        return;
    }

    if (reply->type != REDIS_REPLY_ERROR) {
        if (ngx_env_gateway_redis_auth_refused) {
            ngx_log_error(NGX_LOG_NOTICE, rc->log, 0,
                          "env_gateway: redis%s: AUTH accepted again",
                          rc->role);
        }

        ngx_env_gateway_redis_auth_refused = 0;
        return;
    }

    srv = rc->servers->elts;
    srv = &srv[rc->current];

    if (!ngx_env_gateway_redis_auth_refused) {
        ngx_env_gateway_redis_auth_refused = 1;

        ngx_log_error(NGX_LOG_ERR, rc->log, 0,
                      "env_gateway: redis %V%s refused AUTH%s%V%s: %*s "
                      "(logged once until AUTH succeeds)", &srv->name,
                      rc->role, srv->username.len ? " as user \"" : "",
                      &srv->username, srv->username.len ? "\"" : "",
                      (size_t) reply->len, reply->str);

    } else {
        ngx_log_debug3(NGX_LOG_DEBUG_EVENT, rc->log, 0,
                       "env_gateway: redis%s refused AUTH again: %*s",
                       rc->role, (size_t) reply->len, reply->str);
    }

    ngx_env_gateway_redis_fail(rc, NGX_ENVGW_FT_REFUSED, NULL);
}


static void
ngx_env_gateway_redis_handshake_reply(void *data, redisReply *reply)
{
    ngx_env_gateway_redis_t  *rc = data;

    if (reply == NULL) {
        return;
    }

    if (reply->type == REDIS_REPLY_ERROR) {
        ngx_log_error(NGX_LOG_ERR, rc->log, 0,
                      "env_gateway: redis refused SELECT: %*s",
                      (size_t) reply->len, reply->str);
        ngx_env_gateway_redis_fail(rc, NGX_ENVGW_FT_REFUSED,
                                   "handshake failed");
    }
}


void
ngx_env_gateway_redis_write_handler(ngx_event_t *wev)
{
    ngx_err_t                 err;
    ngx_connection_t         *c;
    ngx_env_gateway_redis_t  *rc;

    c = wev->data;
    rc = c->data;

    if (rc->state == NGX_ENVGW_REDIS_CONNECTING) {

        if (wev->timedout) {
            ngx_env_gateway_redis_fail(rc, NGX_ENVGW_FT_TIMEOUT,
                                       "connect timed out");
            return;
        }

        err = ngx_env_gateway_redis_connect_error(c);

        if (err) {
            ngx_env_gateway_redis_drop(rc, NGX_ENVGW_FT_CONNECT, err,
                                       "connect() failed");
            return;
        }

        /* the connect's timer stays to bound a TLS handshake */
        ngx_env_gateway_redis_established(rc);
        return;
    }

    ngx_env_gateway_redis_flush(rc);
}


void
ngx_env_gateway_redis_ignore(void *data, redisReply *reply)
{
}


/* a sibling connection found Redis answering: the lookups reconnect now */
void
ngx_env_gateway_redis_nudge(void)
{
    ngx_env_gateway_redis_t  *rc;

    rc = ngx_env_gateway_redis;

    if (rc == NULL || rc->state != NGX_ENVGW_REDIS_DISCONNECTED
        || !rc->reconnect.timer_set)
    {
        return;
    }

    ngx_log_debug1(NGX_LOG_DEBUG_EVENT, rc->log, 0,
                   "env_gateway: redis%s: reconnecting now, not after "
                   "the backoff", rc->role);

    ngx_del_timer(&rc->reconnect);
    rc->failures = 0;
    rc->current = 0;
    ngx_env_gateway_redis_connect(rc);
}


static void
ngx_env_gateway_redis_probe_close(ngx_env_gateway_redis_t *rc)
{
    if (rc->probe.connection) {
        ngx_close_connection(rc->probe.connection);
        rc->probe.connection = NULL;
    }
}


/* connected to a later server: is the first one answering again? */
static void
ngx_env_gateway_redis_primary_handler(ngx_event_t *ev)
{
    ngx_int_t                  rv;
    ngx_connection_t          *c;
    ngx_env_gateway_server_t  *srv;
    ngx_env_gateway_redis_t   *rc = ev->data;

    if (rc->current == 0 || rc->state != NGX_ENVGW_REDIS_READY
        || ngx_exiting || ngx_quit || ngx_terminate)
    {
        return;
    }

    srv = rc->servers->elts;

    if (srv[0].sockaddr == NULL || rc->probe.connection) {
        return;
    }

    ngx_memzero(&rc->probe, sizeof(ngx_peer_connection_t));
    rc->probe.sockaddr = srv[0].sockaddr;
    rc->probe.socklen = srv[0].socklen;
    rc->probe.name = &srv[0].name;
    rc->probe.get = ngx_event_get_peer;
    rc->probe.log = ngx_env_gateway_health_log(rc);
    rc->probe.log_error = NGX_ERROR_INFO;

    rv = ngx_event_connect_peer(&rc->probe);

    if (rv == NGX_ERROR || rv == NGX_DECLINED || rv == NGX_BUSY) {
        ngx_env_gateway_redis_probe_close(rc);
        ngx_add_timer(&rc->primary, rc->gmcf->primary_retry);
        return;
    }

    c = rc->probe.connection;
    c->data = rc;
    c->log = rc->log;
    c->read->log = rc->log;
    c->write->log = rc->log;
    c->read->handler = ngx_env_gateway_redis_probe_handler;
    c->write->handler = ngx_env_gateway_redis_probe_handler;
    c->pool = NULL;

    if (rv == NGX_AGAIN) {
        ngx_add_timer(c->write, srv[0].connect_timeout);
        return;
    }

    ngx_env_gateway_redis_probe_handler(c->write);
}


static void
ngx_env_gateway_redis_probe_handler(ngx_event_t *ev)
{
    ngx_connection_t         *c;
    ngx_env_gateway_redis_t  *rc;

    c = ev->data;
    rc = c->data;

    if (ev->timedout || ngx_env_gateway_redis_connect_error(c)) {
        ngx_env_gateway_redis_probe_close(rc);
        ngx_add_timer(&rc->primary, rc->gmcf->primary_retry);
        return;
    }

    ngx_env_gateway_redis_probe_close(rc);
    ngx_env_gateway_redis_switch(rc);
}


/* the first server answers: move there once no command is in flight */
static void
ngx_env_gateway_redis_switch(ngx_env_gateway_redis_t *rc)
{
    if (rc->current == 0 || rc->state != NGX_ENVGW_REDIS_READY) {
        return;
    }

    if (rc->ncmds || rc->out_len) {
        /* busy: look again shortly, without another probe */
        rc->primary.handler = ngx_env_gateway_redis_switch_handler;
        ngx_add_timer(&rc->primary, 10);
        return;
    }

    ngx_log_error(NGX_LOG_INFO, rc->log, 0,
                  "env_gateway: the first redis server answers again");

    ngx_env_gateway_redis_close_connection(rc);
    redisReaderFree(rc->reader);
    rc->reader = NULL;

    rc->current = 0;
    rc->failures = 0;
    rc->state = NGX_ENVGW_REDIS_DISCONNECTED;

    ngx_env_gateway_redis_connect(rc);
}


static void
ngx_env_gateway_redis_switch_handler(ngx_event_t *ev)
{
    ngx_env_gateway_redis_t  *rc = ev->data;

    rc->primary.handler = ngx_env_gateway_redis_primary_handler;

    if (ngx_exiting || ngx_quit || ngx_terminate) {
        return;
    }

    ngx_env_gateway_redis_switch(rc);
}


/*
 * Drop the connection.  Lookups written on it and still within their
 * deadline are kept, to be re-sent once on the next connection within that
 * deadline; so are lookups not written yet.  The other outstanding commands
 * (past their deadline, re-sent already, internal ones such as AUTH or
 * PING, all of them at shutdown, and after a protocol error or an oversize
 * reply the one whose reply was being read) are answered with NULL, or with
 * ngx_env_gateway_redis_oversize for NGX_ENVGW_FT_OVERSIZE.
 *
 * ft: the kind of failure (ngx_env_gateway_redis_ft_e); why: the log line's
 * words, with errno err; NULL: the cause was logged already.
 */
void
ngx_env_gateway_redis_drop(ngx_env_gateway_redis_t *rc, ngx_uint_t ft,
    ngx_err_t err, const char *why)
{
    ngx_uint_t                 n, was_ready, keep, shutdown, healthy,
                               nfailed, nretried, level, head_fails, worked;
    ngx_queue_t               *q, failed;
    redisReply                *reply;
    ngx_env_gateway_cmd_t     *cmd, *head, *oversize;
    ngx_env_gateway_server_t  *srv;

    srv = rc->servers->elts;
    n = rc->servers->nelts;
    shutdown = (ft == NGX_ENVGW_FT_SHUTDOWN || ngx_env_gateway_redis_exiting
                || ngx_exiting || ngx_quit || ngx_terminate);

    /* the reply being read when it failed is not asked again */
    head_fails = (ft == NGX_ENVGW_FT_PROTOCOL || ft == NGX_ENVGW_FT_OVERSIZE);

    was_ready = (rc->state == NGX_ENVGW_REDIS_READY);
    healthy = rc->healthy;
    rc->healthy = 0;

    /*
     * A connection that never gave a good reply may not have worked: a
     * failed attempt, logged and backed off as one (below).  An idle
     * connection that never sent anything (a worker without lookups yet)
     * closed by Redis (a restart, its "timeout" setting) did: it is
     * reopened at once.
     */
    worked = was_ready;

    if (healthy) {
        /* it worked: a failure from now on backs off from the start */
        rc->backoff = NGX_ENVGW_BACKOFF_MIN;
    }

    if (was_ready && !healthy && ft == NGX_ENVGW_FT_TIMEOUT) {
        /* connected, never answered: a failed attempt too */
        worked = 0;
    }

    /*
     * Closed with a command asked and unanswered: a TLS port does that to
     * the first bytes it reads.  A connection nothing was asked on yet and
     * closed by the server (Redis shutting down) is only closed: its cause
     * is told by the attempts that follow, never as a TLS port.
     */
    if (was_ready && !healthy && rc->sent && rc->ncmds
        && (ft == NGX_ENVGW_FT_CLOSED || ft == NGX_ENVGW_FT_RESET))
    {
        worked = 0;

#if (NGX_SSL)
        if (srv[rc->current].ssl == NULL)
#endif
        {
            why = (ft == NGX_ENVGW_FT_RESET)
                  ? "connection reset before any reply (a TLS port needs "
                    "the \"tls\" parameter)"
                  : "connection closed before any reply (a TLS port needs "
                    "the \"tls\" parameter)";
        }
    }

    /*
     * Commands queued while connecting were never sent: while another
     * server of the list remains to be tried this round, they wait for it.
     */
    keep = (!shutdown && !was_ready && rc->failures + 1 < n);

    rc->state = NGX_ENVGW_REDIS_DISCONNECTED;

    /* which commands go again, which fail */

    ngx_queue_init(&failed);
    nfailed = 0;
    nretried = 0;

    head = ngx_env_gateway_redis_requeue(rc, keep, !shutdown && was_ready,
                                         head_fails, &failed, &nfailed,
                                         &nretried);

    oversize = (ft == NGX_ENVGW_FT_OVERSIZE) ? head : NULL;

    /* failed attempts while Redis is unreachable: logged by _health.c */
    if (!shutdown && !ngx_env_gateway_health_failed(rc, worked, err, why)
        && why)
    {
        /* a connection closed when idle, and reopened, is no error */
        level = (nfailed || !worked || ft == NGX_ENVGW_FT_TLS)
                ? NGX_LOG_ERR
                : nretried ? NGX_LOG_WARN : NGX_LOG_INFO;

        if (keep) {
            ngx_log_error(level, rc->log, err,
                          "env_gateway: redis %V%s: %s, %ui command(s) "
                          "moved to the next server",
                          &srv[rc->current].name, rc->role, why, rc->ncmds);

        } else {
            ngx_log_error(level, rc->log, err,
                          "env_gateway: redis %V%s: %s, %ui command(s) "
                          "failed, %ui sent again on a new connection",
                          &srv[rc->current].name, rc->role, why, nfailed,
                          nretried);
        }
    }

    ngx_log_debug5(NGX_LOG_DEBUG_EVENT, rc->log, 0,
                   "env_gateway: redis%s: dropped (failure %ui), %ui failed, "
                   "%ui kept, %ui re-sent", rc->role, ft, nfailed, rc->ncmds,
                   nretried);

    if (!shutdown) {
        ngx_env_gateway_metric_inc(ft == NGX_ENVGW_FT_TIMEOUT
                                   ? NGX_ENVGW_M_REDIS_TIMEOUTS
                                   : NGX_ENVGW_M_REDIS_ERRORS);
    }

    if (rc->dropped) {
        rc->dropped(rc);
    }

    /* an address given by the Sentinels is asked again after any failure */
    if (rc->resolve) {
        srv[rc->current].resolved = 0;
    }

    rc->resolving = 0;

    if (rc->c) {
        ngx_env_gateway_redis_close_connection(rc);
    }

    if (rc->reader) {
        redisReaderFree(rc->reader);
        rc->reader = NULL;
    }

    if (rc->flush.posted) {
        ngx_delete_posted_event(&rc->flush);
    }

    if (rc->primary.timer_set) {
        ngx_del_timer(&rc->primary);
    }

    rc->primary.handler = ngx_env_gateway_redis_primary_handler;
    ngx_env_gateway_redis_probe_close(rc);

    /* handlers may queue new commands: they are refused meanwhile */
    while (!ngx_queue_empty(&failed)) {
        q = ngx_queue_head(&failed);
        ngx_queue_remove(q);
        cmd = ngx_queue_data(q, ngx_env_gateway_cmd_t, queue);
        reply = (cmd == oversize) ? &ngx_env_gateway_redis_oversize : NULL;
        cmd->handler(cmd->data, reply);
        ngx_env_gateway_redis_cmd_free(rc, cmd);
    }

    if (shutdown || rc->reconnect.timer_set
        || rc->state != NGX_ENVGW_REDIS_DISCONNECTED)
    {
        return;
    }

    if (worked && (healthy || !ngx_queue_empty(&rc->cmds))) {
        /*
         * A connection that worked, or that lookups are waiting on, was
         * dropped rather than refused: the same server again, at once.
         */
        ngx_log_debug1(NGX_LOG_DEBUG_EVENT, rc->log, 0,
                       "env_gateway: redis%s: reconnecting to the same server",
                       rc->role);

        rc->failures = 0;
        ngx_env_gateway_redis_connect(rc);
        return;
    }

    /* next server of the failover list; back off once all have failed */
    rc->current = (rc->current + 1) % n;

    if (worked) {
        rc->failures = 0;
    }

    rc->failures++;

    if (rc->failures < n) {
        ngx_log_debug2(NGX_LOG_DEBUG_EVENT, rc->log, 0,
                       "env_gateway: redis%s: next server, #%ui", rc->role,
                       rc->current);

        /* keep queued commands connectable: state is "connecting" */
        if (keep) {
            ngx_env_gateway_redis_connect(rc);
            return;
        }

        ngx_add_timer(&rc->reconnect, 1);
        return;
    }

    ngx_log_debug2(NGX_LOG_DEBUG_EVENT, rc->log, 0,
                   "env_gateway: redis%s: every server failed, again in %M ms",
                   rc->role, rc->backoff);

    rc->failures = 0;
    ngx_add_timer(&rc->reconnect, rc->backoff);
    rc->backoff = ngx_min(rc->backoff * 2, NGX_ENVGW_BACKOFF_MAX);
}


static void
ngx_env_gateway_redis_reconnect_handler(ngx_event_t *ev)
{
    ngx_env_gateway_redis_t  *rc = ev->data;

    if (ngx_exiting || ngx_quit || ngx_terminate) {
        return;
    }

    if (rc->state == NGX_ENVGW_REDIS_DISCONNECTED) {
        ngx_env_gateway_redis_connect(rc);
    }
}
