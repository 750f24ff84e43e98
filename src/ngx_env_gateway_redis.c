/*
 * env_gateway: the per-worker Redis client.
 *
 * nginx owns the socket (ngx_event_connect_peer, c->recv, c->send, nginx
 * timers); hiredis only encodes commands (redisFormatCommandArgv) and decodes
 * replies (redisReader).  Commands from every request of the worker are
 * appended to one outbound buffer and written by a posted "flush" event, so
 * the lookups of all requests that arrived in one event-loop iteration leave
 * in a single write.  Replies match commands in FIFO order.
 *
 * Failure policy (fail closed, fail fast): on a connect error, a read
 * timeout, a closed socket or a protocol error the connection is dropped,
 * every outstanding command is answered with a NULL reply (the caller turns
 * that into 503), and the next server of the failover list is tried; when
 * the whole list failed, a reconnect timer backs off from 50ms to 500ms.
 * While disconnected, new commands are refused at once instead of queueing.
 * Commands queued while connecting were never sent: when that connect
 * fails they move on to the next server instead of failing.  Connected to
 * a later server, the lookup connection probes the first one every
 * primary_retry with a plain TCP connect and moves back (when idle) once it
 * answers, so a healed primary is used again.  The subscriber stays where
 * it is while healthy: moving it would open a gap in the invalidations
 * (and with it a whole-cache drop), and a replica gets the primary's
 * messages anyway.
 *
 * Each worker also keeps a subscriber connection on <prefix>invalidate:
 * a message names a changed key, which is dropped from the shared cache.
 * After a gap in that subscription (reconnect), the whole cache is dropped,
 * since nothing in it can be known to be fresh.
 *
 * With "env_gateway_redis sentinel=NAME ...", the one server's address is
 * asked of the Sentinels (SENTINEL get-master-addr-by-name) before each
 * connect that follows a failure, and a second Sentinel connection listens
 * to +switch-master so a failover moves every connection at once.
 */

#include "ngx_env_gateway.h"

#include <hiredis/hiredis.h>


#define NGX_ENVGW_REDIS_DISCONNECTED  0
#define NGX_ENVGW_REDIS_CONNECTING    1
#define NGX_ENVGW_REDIS_READY         2

#define NGX_ENVGW_BACKOFF_MIN         50
#define NGX_ENVGW_BACKOFF_MAX         500
#define NGX_ENVGW_OUT_MIN             16384
#define NGX_ENVGW_PING_INTERVAL       5000


typedef struct {
    ngx_queue_t                        queue;
    ngx_env_gateway_redis_handler_pt   handler;
    void                              *data;
    uint64_t                           sent;      /* usec, for the RTT */
} ngx_env_gateway_cmd_t;


typedef struct ngx_env_gateway_redis_s  ngx_env_gateway_redis_t;

typedef void (*ngx_env_gateway_redis_event_pt)(ngx_env_gateway_redis_t *rc);
typedef void (*ngx_env_gateway_redis_message_pt)(ngx_env_gateway_redis_t *rc,
    ngx_str_t *payload);

struct ngx_env_gateway_redis_s {
    ngx_env_gateway_main_conf_t       *gmcf;
    ngx_array_t                       *servers;   /* failover list */
    ngx_str_t                          channel;   /* subscribers only */
    ngx_env_gateway_redis_message_pt   on_message;
    ngx_env_gateway_redis_event_pt     on_subscribed;
    ngx_env_gateway_redis_event_pt     on_unsubscribed;
    const char                        *role;      /* for log lines */
    ngx_uint_t                         current;   /* server index */
    ngx_uint_t                         failures;  /* in a row, this round */
    ngx_uint_t                         state;
    ngx_peer_connection_t              peer;
    ngx_connection_t                  *c;
    redisReader                       *reader;

    u_char                            *out;       /* outbound buffer */
    size_t                             out_pos;
    size_t                             out_len;
    size_t                             out_size;

    ngx_queue_t                        cmds;      /* awaiting replies */
    ngx_queue_t                        free;      /* spare command structs */
    ngx_uint_t                         ncmds;

    ngx_event_t                        flush;
    ngx_event_t                        reconnect;
    ngx_event_t                        primary;   /* return to server 0 */
    ngx_peer_connection_t              probe;     /* is server 0 back? */
    ngx_event_t                        ping;      /* subscriber health */
    ngx_msec_t                         backoff;
    ngx_log_t                         *log;

    unsigned                           subscriber:1;
    unsigned                           subscribed:1;
    unsigned                           ever_subscribed:1;
    unsigned                           resolving:1; /* asking Sentinels */
};


static void ngx_env_gateway_redis_connect(ngx_env_gateway_redis_t *rc);
static void ngx_env_gateway_redis_connected(ngx_env_gateway_redis_t *rc);
static void ngx_env_gateway_redis_fail(ngx_env_gateway_redis_t *rc,
    const char *why);
static void ngx_env_gateway_redis_read_handler(ngx_event_t *rev);
static void ngx_env_gateway_redis_write_handler(ngx_event_t *wev);
static void ngx_env_gateway_redis_flush_handler(ngx_event_t *ev);
static void ngx_env_gateway_redis_reconnect_handler(ngx_event_t *ev);
static void ngx_env_gateway_redis_flush(ngx_env_gateway_redis_t *rc);
static ngx_int_t ngx_env_gateway_redis_append(ngx_env_gateway_redis_t *rc,
    int argc, const char **argv, const size_t *argvlen);
static ngx_env_gateway_cmd_t *ngx_env_gateway_redis_cmd_alloc(
    ngx_env_gateway_redis_t *rc);
static void ngx_env_gateway_redis_handshake_reply(void *data,
    redisReply *reply);


static void ngx_env_gateway_redis_primary_handler(ngx_event_t *ev);
static void ngx_env_gateway_redis_probe_handler(ngx_event_t *ev);
static void ngx_env_gateway_redis_switch(ngx_env_gateway_redis_t *rc);
static void ngx_env_gateway_redis_switch_handler(ngx_event_t *ev);
static void ngx_env_gateway_redis_ping_handler(ngx_event_t *ev);
static void ngx_env_gateway_redis_subscribed(void *data, redisReply *reply);
static void ngx_env_gateway_redis_ignore(void *data, redisReply *reply);
static ngx_int_t ngx_env_gateway_redis_send(ngx_env_gateway_redis_t *rc,
    int argc, const char **argv, const size_t *argvlen,
    ngx_env_gateway_redis_handler_pt handler, void *data);
static void ngx_env_gateway_redis_message(ngx_env_gateway_redis_t *rc,
    redisReply *reply);


static void ngx_env_gateway_inval_message(ngx_env_gateway_redis_t *rc,
    ngx_str_t *payload);
static void ngx_env_gateway_inval_subscribed(ngx_env_gateway_redis_t *rc);
static void ngx_env_gateway_inval_unsubscribed(ngx_env_gateway_redis_t *rc);
static void ngx_env_gateway_redis_nudge(ngx_env_gateway_redis_t *rc);
static void ngx_env_gateway_sentinel_resolve(ngx_env_gateway_redis_t *rc);
static void ngx_env_gateway_sentinel_reply(void *data, redisReply *reply);
static void ngx_env_gateway_sentinel_switch(ngx_env_gateway_redis_t *rc,
    ngx_str_t *payload);


static ngx_env_gateway_redis_t  *ngx_env_gateway_redis;      /* lookups */
static ngx_env_gateway_redis_t  *ngx_env_gateway_redis_sub;  /* invalidate */
static ngx_env_gateway_redis_t  *ngx_env_gateway_sentinel;   /* queries */
static ngx_env_gateway_redis_t  *ngx_env_gateway_sentinel_sub;
static ngx_uint_t                ngx_env_gateway_sentinel_asking;


static uint64_t
ngx_env_gateway_usec(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);

    return (uint64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}


static ngx_env_gateway_redis_t *
ngx_env_gateway_redis_create(ngx_cycle_t *cycle,
    ngx_env_gateway_main_conf_t *gmcf, ngx_array_t *servers,
    const char *role)
{
    ngx_env_gateway_redis_t  *rc;

    rc = ngx_pcalloc(cycle->pool, sizeof(ngx_env_gateway_redis_t));
    if (rc == NULL) {
        return NULL;
    }

    rc->gmcf = gmcf;
    rc->servers = servers;
    rc->role = role;
    rc->log = cycle->log;
    rc->backoff = NGX_ENVGW_BACKOFF_MIN;

    ngx_queue_init(&rc->cmds);
    ngx_queue_init(&rc->free);

    rc->flush.handler = ngx_env_gateway_redis_flush_handler;
    rc->flush.data = rc;
    rc->flush.log = cycle->log;

    /* background timers must not hold up a graceful shutdown */
    rc->reconnect.handler = ngx_env_gateway_redis_reconnect_handler;
    rc->reconnect.data = rc;
    rc->reconnect.log = cycle->log;
    rc->reconnect.cancelable = 1;

    rc->primary.handler = ngx_env_gateway_redis_primary_handler;
    rc->primary.data = rc;
    rc->primary.log = cycle->log;
    rc->primary.cancelable = 1;

    rc->ping.handler = ngx_env_gateway_redis_ping_handler;
    rc->ping.data = rc;
    rc->ping.log = cycle->log;
    rc->ping.cancelable = 1;

    return rc;
}


ngx_int_t
ngx_env_gateway_redis_init_worker(ngx_cycle_t *cycle,
    ngx_env_gateway_main_conf_t *gmcf)
{
    ngx_env_gateway_redis_t  *rc;

    static ngx_str_t  switch_master = ngx_string("+switch-master");

    if (gmcf->sentinels) {
        ngx_env_gateway_sentinel = ngx_env_gateway_redis_create(cycle, gmcf,
                                       gmcf->sentinels, " (sentinel)");
        rc = ngx_env_gateway_redis_create(cycle, gmcf, gmcf->sentinels,
                                          " (sentinel events)");
        if (ngx_env_gateway_sentinel == NULL || rc == NULL) {
            return NGX_ERROR;
        }

        rc->subscriber = 1;
        rc->channel = switch_master;
        rc->on_message = ngx_env_gateway_sentinel_switch;
        ngx_env_gateway_sentinel_sub = rc;

        ngx_env_gateway_redis_connect(ngx_env_gateway_sentinel);
        ngx_env_gateway_redis_connect(ngx_env_gateway_sentinel_sub);
    }

    ngx_env_gateway_redis = ngx_env_gateway_redis_create(cycle, gmcf,
                                                         gmcf->servers, "");
    if (ngx_env_gateway_redis == NULL) {
        return NGX_ERROR;
    }

    ngx_env_gateway_redis_connect(ngx_env_gateway_redis);

    if (gmcf->cache_zone) {
        rc = ngx_env_gateway_redis_create(cycle, gmcf, gmcf->servers,
                                          " (invalidations)");
        if (rc == NULL) {
            return NGX_ERROR;
        }

        rc->subscriber = 1;
        rc->channel = gmcf->channel;
        rc->on_message = ngx_env_gateway_inval_message;
        rc->on_subscribed = ngx_env_gateway_inval_subscribed;
        rc->on_unsubscribed = ngx_env_gateway_inval_unsubscribed;
        ngx_env_gateway_redis_sub = rc;

        ngx_env_gateway_redis_connect(rc);
    }

    return NGX_OK;
}


static void
ngx_env_gateway_redis_close(ngx_env_gateway_redis_t *rc)
{
    if (rc == NULL) {
        return;
    }

    ngx_env_gateway_redis_fail(rc, NULL);

    if (rc->reconnect.timer_set) {
        ngx_del_timer(&rc->reconnect);
    }

    if (rc->primary.timer_set) {
        ngx_del_timer(&rc->primary);
    }

    if (rc->ping.timer_set) {
        ngx_del_timer(&rc->ping);
    }
}


void
ngx_env_gateway_redis_exit_worker(void)
{
    ngx_env_gateway_redis_t  *rc, *sub;

    ngx_env_gateway_redis_t  *sq, *sw;

    rc = ngx_env_gateway_redis;
    sub = ngx_env_gateway_redis_sub;
    sq = ngx_env_gateway_sentinel;
    sw = ngx_env_gateway_sentinel_sub;

    /* "shutdown" for fail(): no reconnects, no error lines */
    ngx_env_gateway_redis = NULL;
    ngx_env_gateway_redis_sub = NULL;
    ngx_env_gateway_sentinel = NULL;
    ngx_env_gateway_sentinel_sub = NULL;

    ngx_env_gateway_redis_close(rc);
    ngx_env_gateway_redis_close(sub);
    ngx_env_gateway_redis_close(sq);
    ngx_env_gateway_redis_close(sw);
}


ngx_int_t
ngx_env_gateway_redis_command(int argc, const char **argv,
    const size_t *argvlen, ngx_env_gateway_redis_handler_pt handler,
    void *data)
{
    ngx_env_gateway_redis_t  *rc;

    rc = ngx_env_gateway_redis;

    if (rc == NULL || rc->state == NGX_ENVGW_REDIS_DISCONNECTED) {
        return NGX_DECLINED;
    }

    return ngx_env_gateway_redis_send(rc, argc, argv, argvlen, handler, data);
}


static ngx_int_t
ngx_env_gateway_redis_send(ngx_env_gateway_redis_t *rc, int argc,
    const char **argv, const size_t *argvlen,
    ngx_env_gateway_redis_handler_pt handler, void *data)
{
    ngx_env_gateway_cmd_t  *cmd;

    cmd = ngx_env_gateway_redis_cmd_alloc(rc);
    if (cmd == NULL) {
        return NGX_ERROR;
    }

    if (ngx_env_gateway_redis_append(rc, argc, argv, argvlen) != NGX_OK) {
        ngx_queue_insert_head(&rc->free, &cmd->queue);
        return NGX_ERROR;
    }

    cmd->handler = handler;
    cmd->data = data;
    cmd->sent = 0;
    ngx_queue_insert_tail(&rc->cmds, &cmd->queue);
    rc->ncmds++;

    ngx_env_gateway_metric_inc(NGX_ENVGW_M_REDIS_COMMANDS);

    if (rc->state == NGX_ENVGW_REDIS_READY && !rc->flush.posted) {
        ngx_post_event(&rc->flush, &ngx_posted_events);
    }

    return NGX_OK;
}


static ngx_env_gateway_cmd_t *
ngx_env_gateway_redis_cmd_alloc(ngx_env_gateway_redis_t *rc)
{
    ngx_queue_t  *q;

    if (!ngx_queue_empty(&rc->free)) {
        q = ngx_queue_head(&rc->free);
        ngx_queue_remove(q);
        return ngx_queue_data(q, ngx_env_gateway_cmd_t, queue);
    }

    return ngx_alloc(sizeof(ngx_env_gateway_cmd_t), rc->log);
}


static ngx_int_t
ngx_env_gateway_redis_reserve(ngx_env_gateway_redis_t *rc, size_t len)
{
    u_char  *p;
    size_t   size;

    if (rc->out_len + len <= rc->out_size) {
        return NGX_OK;
    }

    /* reclaim what was already written before growing */
    if (rc->out_pos > 0) {
        ngx_memmove(rc->out, rc->out + rc->out_pos, rc->out_len - rc->out_pos);
        rc->out_len -= rc->out_pos;
        rc->out_pos = 0;

        if (rc->out_len + len <= rc->out_size) {
            return NGX_OK;
        }
    }

    size = ngx_max(rc->out_size * 2, NGX_ENVGW_OUT_MIN);
    while (size < rc->out_len + len) {
        size *= 2;
    }

    p = ngx_alloc(size, rc->log);
    if (p == NULL) {
        return NGX_ERROR;
    }

    if (rc->out) {
        ngx_memcpy(p, rc->out, rc->out_len);
        ngx_free(rc->out);
    }

    rc->out = p;
    rc->out_size = size;

    return NGX_OK;
}


static ngx_int_t
ngx_env_gateway_redis_append(ngx_env_gateway_redis_t *rc, int argc,
    const char **argv, const size_t *argvlen)
{
    int    len;
    char  *cmd;

    /* arguments go as (data, length): untrusted bytes are never formatted */
    len = redisFormatCommandArgv(&cmd, argc, argv, argvlen);
    if (len < 0) {
        return NGX_ERROR;
    }

    if (ngx_env_gateway_redis_reserve(rc, len) != NGX_OK) {
        free(cmd);
        return NGX_ERROR;
    }

    ngx_memcpy(rc->out + rc->out_len, cmd, len);
    rc->out_len += len;
    free(cmd);

    return NGX_OK;
}


static void
ngx_env_gateway_redis_connect(ngx_env_gateway_redis_t *rc)
{
    ngx_int_t                  rv;
    ngx_connection_t          *c;
    ngx_env_gateway_server_t  *srv;

    srv = rc->servers->elts;
    srv = &srv[rc->current];

    rc->state = NGX_ENVGW_REDIS_CONNECTING;

    if (srv->sockaddr == NULL || !srv->resolved) {
        /* the address comes from the Sentinels; commands queue meanwhile */
        ngx_env_gateway_sentinel_resolve(rc);
        return;
    }

    ngx_memzero(&rc->peer, sizeof(ngx_peer_connection_t));
    rc->peer.sockaddr = srv->sockaddr;
    rc->peer.socklen = srv->socklen;
    rc->peer.name = &srv->name;
    rc->peer.get = ngx_event_get_peer;
    rc->peer.log = rc->log;
    rc->peer.log_error = NGX_ERROR_ERR;

    rv = ngx_event_connect_peer(&rc->peer);

    if (rv == NGX_ERROR || rv == NGX_DECLINED || rv == NGX_BUSY) {
        if (rc->peer.connection) {
            ngx_close_connection(rc->peer.connection);
            rc->peer.connection = NULL;
        }
        ngx_env_gateway_redis_fail(rc, "connect() failed");
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

    rc->reader = redisReaderCreate();
    if (rc->reader == NULL) {
        ngx_env_gateway_redis_fail(rc, "redisReaderCreate() failed");
        return;
    }

    if (rv == NGX_AGAIN) {
        ngx_add_timer(c->write, srv->connect_timeout);
        return;
    }

    ngx_env_gateway_redis_connected(rc);
}


static void
ngx_env_gateway_redis_connected(ngx_env_gateway_redis_t *rc)
{
    int                        argc;
    size_t                     old, argvlen[2];
    u_char                    *tmp;
    const char                *argv[2];
    u_char                     db[NGX_INT_T_LEN];
    ngx_queue_t                handshake;
    ngx_env_gateway_cmd_t     *cmd;
    ngx_env_gateway_server_t  *srv;

    srv = rc->servers->elts;
    srv = &srv[rc->current];

    rc->state = NGX_ENVGW_REDIS_READY;
    rc->failures = 0;
    rc->backoff = NGX_ENVGW_BACKOFF_MIN;

    ngx_log_error(NGX_LOG_INFO, rc->log, 0,
                  "env_gateway: connected to redis %V%s", &srv->name,
                  rc->role);

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
            argv[0] = "AUTH";
            argvlen[0] = 4;
            argv[1] = (const char *) srv->password.data;
            argvlen[1] = srv->password.len;

        } else {
            if (srv->db < 0) {
                continue;
            }
            argv[0] = "SELECT";
            argvlen[0] = 6;
            argv[1] = (const char *) db;
            argvlen[1] = ngx_sprintf(db, "%i", srv->db) - db;
        }

        cmd = ngx_env_gateway_redis_cmd_alloc(rc);
        if (cmd == NULL
            || ngx_env_gateway_redis_append(rc, 2, argv, argvlen) != NGX_OK)
        {
            ngx_env_gateway_redis_fail(rc, "out of memory");
            return;
        }

        cmd->handler = ngx_env_gateway_redis_handshake_reply;
        cmd->data = rc;
        ngx_queue_insert_tail(&handshake, &cmd->queue);
        rc->ncmds++;
    }

    if (!ngx_queue_empty(&handshake)) {
        if (old > rc->out_pos) {
            tmp = ngx_alloc(old - rc->out_pos, rc->log);
            if (tmp == NULL) {
                ngx_env_gateway_redis_fail(rc, "out of memory");
                return;
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

    if (rc->subscriber) {
        argv[0] = "SUBSCRIBE";
        argvlen[0] = 9;
        argv[1] = (const char *) rc->channel.data;
        argvlen[1] = rc->channel.len;

        if (ngx_env_gateway_redis_send(rc, 2, argv, argvlen,
                                       ngx_env_gateway_redis_subscribed, rc)
            != NGX_OK)
        {
            ngx_env_gateway_redis_fail(rc, "out of memory");
            return;
        }
    }

    ngx_env_gateway_redis_flush(rc);
}


static void
ngx_env_gateway_redis_subscribed(void *data, redisReply *reply)
{
    ngx_env_gateway_redis_t  *rc = data;

    if (reply == NULL) {
        return;
    }

    if (reply->type != REDIS_REPLY_ARRAY) {
        ngx_log_error(NGX_LOG_ERR, rc->log, 0,
                      "env_gateway: SUBSCRIBE %V refused", &rc->channel);
        ngx_env_gateway_redis_fail(rc, "subscribe failed");
        return;
    }

    rc->subscribed = 1;

    if (rc->on_subscribed) {
        rc->on_subscribed(rc);
    }

    if (!rc->ping.timer_set) {
        ngx_add_timer(&rc->ping, NGX_ENVGW_PING_INTERVAL);
    }
}


static void
ngx_env_gateway_redis_ping_handler(ngx_event_t *ev)
{
    const char               *argv[1];
    size_t                    argvlen[1];
    ngx_env_gateway_redis_t  *rc = ev->data;

    if (rc->state != NGX_ENVGW_REDIS_READY || !rc->subscribed) {
        return;
    }

    /* a silent peer is found by the read timeout of this PING */
    argv[0] = "PING";
    argvlen[0] = 4;

    if (ngx_env_gateway_redis_send(rc, 1, argv, argvlen,
                                   ngx_env_gateway_redis_ignore, rc)
        != NGX_OK)
    {
        ngx_env_gateway_redis_fail(rc, "out of memory");
        return;
    }

    ngx_add_timer(&rc->ping, NGX_ENVGW_PING_INTERVAL);
}


static void
ngx_env_gateway_redis_ignore(void *data, redisReply *reply)
{
}


/* a "message" push on a subscriber connection */
static void
ngx_env_gateway_redis_message(ngx_env_gateway_redis_t *rc, redisReply *reply)
{
    ngx_str_t    payload;
    redisReply  *p;

    p = reply->element[2];

    if (p->type != REDIS_REPLY_STRING) {
        return;
    }

    payload.data = (u_char *) p->str;
    payload.len = p->len;

    rc->on_message(rc, &payload);
}


static void
ngx_env_gateway_inval_message(ngx_env_gateway_redis_t *rc, ngx_str_t *key)
{
    ngx_env_gateway_invalidate(key);
}


/*
 * A re-subscription follows a gap in which messages may have been lost:
 * drop everything.  The first one at worker start needs no drop unless no
 * other process is subscribed (the zone may have been kept over a gap).
 */
static void
ngx_env_gateway_inval_subscribed(ngx_env_gateway_redis_t *rc)
{
    if (!ngx_env_gateway_subscriber_overlap(1) || rc->ever_subscribed) {
        ngx_env_gateway_invalidate(NULL);
    }

    rc->ever_subscribed = 1;

    /*
     * Redis is back: the dropped entries are about to be asked for, so the
     * lookup connection must not sit out the rest of its backoff.
     */
    ngx_env_gateway_redis_nudge(ngx_env_gateway_redis);
}


/* a sibling connection found Redis answering: reconnect now */
static void
ngx_env_gateway_redis_nudge(ngx_env_gateway_redis_t *rc)
{
    if (rc == NULL || rc->state != NGX_ENVGW_REDIS_DISCONNECTED
        || !rc->reconnect.timer_set)
    {
        return;
    }

    ngx_del_timer(&rc->reconnect);
    rc->failures = 0;
    rc->current = 0;
    ngx_env_gateway_redis_connect(rc);
}


static void
ngx_env_gateway_inval_unsubscribed(ngx_env_gateway_redis_t *rc)
{
    (void) ngx_env_gateway_subscriber_overlap(0);
}


static ngx_uint_t
ngx_env_gateway_redis_is_message(redisReply *reply)
{
    return reply->type == REDIS_REPLY_ARRAY && reply->elements == 3
           && reply->element[0]->type == REDIS_REPLY_STRING
           && reply->element[0]->len == 7
           && ngx_strncmp(reply->element[0]->str, "message", 7) == 0;
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
    rc->probe.log = rc->log;
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
    int                       err;
    socklen_t                 len;
    ngx_connection_t         *c;
    ngx_env_gateway_redis_t  *rc;

    c = ev->data;
    rc = c->data;

    err = 0;
    len = sizeof(int);

    if (ev->timedout
        || getsockopt(c->fd, SOL_SOCKET, SO_ERROR, (void *) &err, &len) == -1
        || err)
    {
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

    ngx_close_connection(rc->c);
    rc->c = NULL;
    rc->peer.connection = NULL;
    redisReaderFree(rc->reader);
    rc->reader = NULL;

    rc->current = 0;
    rc->failures = 0;
    rc->state = NGX_ENVGW_REDIS_DISCONNECTED;

    ngx_env_gateway_redis_connect(rc);
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
                      "env_gateway: redis refused AUTH/SELECT: %*s",
                      (size_t) reply->len, reply->str);
        ngx_env_gateway_redis_fail(rc, "handshake failed");
    }
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


static void
ngx_env_gateway_redis_write_handler(ngx_event_t *wev)
{
    int                       err;
    socklen_t                 len;
    ngx_connection_t         *c;
    ngx_env_gateway_redis_t  *rc;

    c = wev->data;
    rc = c->data;

    if (rc->state == NGX_ENVGW_REDIS_CONNECTING) {

        if (wev->timedout) {
            ngx_env_gateway_redis_fail(rc, "connect timed out");
            return;
        }

        if (wev->timer_set) {
            ngx_del_timer(wev);
        }

        err = 0;
        len = sizeof(int);

        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, (void *) &err, &len)
            == -1)
        {
            err = ngx_socket_errno;
        }

        if (err) {
            ngx_log_error(NGX_LOG_ERR, rc->log, err,
                          "env_gateway: connect() to redis %V failed",
                          rc->peer.name);
            ngx_env_gateway_redis_fail(rc, NULL);
            return;
        }

        ngx_env_gateway_redis_connected(rc);
        return;
    }

    ngx_env_gateway_redis_flush(rc);
}


static void
ngx_env_gateway_redis_flush_handler(ngx_event_t *ev)
{
    ngx_env_gateway_redis_t  *rc = ev->data;

    if (rc->state == NGX_ENVGW_REDIS_READY) {
        ngx_env_gateway_redis_flush(rc);
    }
}


static void
ngx_env_gateway_redis_flush(ngx_env_gateway_redis_t *rc)
{
    ssize_t                    n;
    uint64_t                   now;
    ngx_queue_t               *q;
    ngx_env_gateway_cmd_t     *cmd;
    ngx_connection_t          *c;
    ngx_env_gateway_server_t  *srv;

    c = rc->c;

    while (rc->out_pos < rc->out_len) {

        n = c->send(c, rc->out + rc->out_pos, rc->out_len - rc->out_pos);

        if (n == NGX_AGAIN) {
            if (ngx_handle_write_event(c->write, 0) != NGX_OK) {
                ngx_env_gateway_redis_fail(rc, "write event failed");
            }
            break;
        }

        if (n == NGX_ERROR) {
            ngx_env_gateway_redis_fail(rc, "send() failed");
            return;
        }

        rc->out_pos += n;
    }

    if (rc->out_pos == rc->out_len) {
        rc->out_pos = 0;
        rc->out_len = 0;
    }

    /* stamp the commands written now (newest last: walk back) */
    now = 0;

    for (q = ngx_queue_last(&rc->cmds);
         q != ngx_queue_sentinel(&rc->cmds);
         q = ngx_queue_prev(q))
    {
        cmd = ngx_queue_data(q, ngx_env_gateway_cmd_t, queue);
        if (cmd->sent) {
            break;
        }

        if (now == 0) {
            now = ngx_env_gateway_usec();
        }

        cmd->sent = now;
    }

    /*
     * The read timer bounds how long a command may wait for its reply; it
     * is not cancelable, so a graceful shutdown waits for (or times out)
     * the lookups of requests still in flight.
     */
    if (rc->ncmds && !c->read->timer_set) {
        srv = rc->servers->elts;
        ngx_add_timer(c->read, srv[rc->current].read_timeout);
    }
}


static void
ngx_env_gateway_redis_read_handler(ngx_event_t *rev)
{
    void                      *reply;
    ssize_t                    n;
    ngx_queue_t               *q;
    ngx_connection_t          *c;
    ngx_env_gateway_cmd_t     *cmd;
    ngx_env_gateway_server_t  *srv;
    ngx_env_gateway_redis_t   *rc;
    u_char                     buf[16384];

    c = rev->data;
    rc = c->data;

    if (rev->timedout) {
        ngx_env_gateway_redis_fail(rc, "read timed out");
        return;
    }

    for ( ;; ) {

        n = c->recv(c, buf, sizeof(buf));

        if (n == NGX_AGAIN) {
            break;
        }

        if (n == 0 || n == NGX_ERROR) {
            ngx_env_gateway_redis_fail(rc, "connection closed");
            return;
        }

        if (redisReaderFeed(rc->reader, (const char *) buf, n) != REDIS_OK) {
            ngx_env_gateway_redis_fail(rc, "reader out of memory");
            return;
        }

        for ( ;; ) {
            reply = NULL;

            if (redisReaderGetReply(rc->reader, &reply) != REDIS_OK) {
                ngx_env_gateway_redis_fail(rc, "protocol error");
                return;
            }

            if (reply == NULL) {
                break;
            }

            if (rc->subscriber && rc->subscribed
                && ngx_env_gateway_redis_is_message(reply))
            {
                ngx_env_gateway_redis_message(rc, reply);
                freeReplyObject(reply);
                continue;
            }

            if (ngx_queue_empty(&rc->cmds)) {
                freeReplyObject(reply);
                ngx_env_gateway_redis_fail(rc, "unexpected reply");
                return;
            }

            q = ngx_queue_head(&rc->cmds);
            ngx_queue_remove(q);
            rc->ncmds--;
            cmd = ngx_queue_data(q, ngx_env_gateway_cmd_t, queue);

            if (cmd->sent) {
                ngx_env_gateway_metric_rtt(ngx_env_gateway_usec()
                                           - cmd->sent);
            }

            cmd->handler(cmd->data, reply);

            freeReplyObject(reply);
            ngx_queue_insert_head(&rc->free, &cmd->queue);

            if (rc->c != c) {
                /* the handler dropped the connection */
                return;
            }
        }
    }

    if (ngx_handle_read_event(rev, 0) != NGX_OK) {
        ngx_env_gateway_redis_fail(rc, "read event failed");
        return;
    }

    if (rev->timer_set) {
        ngx_del_timer(rev);
    }

    if (rc->ncmds) {
        srv = rc->servers->elts;
        ngx_add_timer(rev, srv[rc->current].read_timeout);
    }
}


/*
 * Drop the connection and answer every outstanding command with NULL.
 * why == NULL: the cause was logged already (or this is shutdown).
 */
static void
ngx_env_gateway_redis_fail(ngx_env_gateway_redis_t *rc, const char *why)
{
    ngx_uint_t                 n, was_ready, keep, shutdown;
    ngx_queue_t               *q, failed;
    ngx_env_gateway_cmd_t     *cmd;
    ngx_env_gateway_server_t  *srv;

    srv = rc->servers->elts;
    n = rc->servers->nelts;
    shutdown = (rc != ngx_env_gateway_redis && rc != ngx_env_gateway_redis_sub
                && rc != ngx_env_gateway_sentinel
                && rc != ngx_env_gateway_sentinel_sub)
               || ngx_exiting || ngx_quit || ngx_terminate;

    was_ready = (rc->state == NGX_ENVGW_REDIS_READY);

    /*
     * Commands queued while connecting were never sent: while another
     * server of the list remains to be tried this round, they wait for it.
     */
    keep = (!shutdown && !was_ready && rc->failures + 1 < n);

    if (why && !shutdown) {
        ngx_log_error(NGX_LOG_ERR, rc->log, 0,
                      "env_gateway: redis %V%s: %s, %ui command(s) %s",
                      &srv[rc->current].name, rc->role, why, rc->ncmds,
                      keep ? "moved to the next server" : "failed");
    }

    if (!shutdown) {
        ngx_env_gateway_metric_inc((why && ngx_strstr(why, "timed out"))
                                   ? NGX_ENVGW_M_REDIS_TIMEOUTS
                                   : NGX_ENVGW_M_REDIS_ERRORS);
    }

    rc->state = NGX_ENVGW_REDIS_DISCONNECTED;

    if (rc->subscribed) {
        rc->subscribed = 0;
        if (rc->on_unsubscribed) {
            rc->on_unsubscribed(rc);
        }
    }

    /* a Sentinel-given address is asked again after any failure */
    if (rc->gmcf->sentinels && rc->servers == rc->gmcf->servers) {
        srv[rc->current].resolved = 0;
    }

    rc->resolving = 0;

    if (rc->c) {
        ngx_close_connection(rc->c);
        rc->c = NULL;
        rc->peer.connection = NULL;
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

    if (!keep) {
        rc->out_pos = 0;
        rc->out_len = 0;

        /* handlers may queue new commands: they are refused meanwhile */
        ngx_queue_init(&failed);
        if (!ngx_queue_empty(&rc->cmds)) {
            ngx_queue_add(&failed, &rc->cmds);
            ngx_queue_init(&rc->cmds);
        }
        rc->ncmds = 0;

        while (!ngx_queue_empty(&failed)) {
            q = ngx_queue_head(&failed);
            ngx_queue_remove(q);
            cmd = ngx_queue_data(q, ngx_env_gateway_cmd_t, queue);
            cmd->handler(cmd->data, NULL);
            ngx_queue_insert_head(&rc->free, &cmd->queue);
        }
    }

    if (shutdown || rc->reconnect.timer_set) {
        return;
    }

    /* next server of the failover list; back off once all have failed */
    rc->current = (rc->current + 1) % n;

    if (was_ready) {
        rc->failures = 0;
    }

    rc->failures++;

    if (rc->failures < n) {
        /* keep queued commands connectable: state is "connecting" */
        if (keep) {
            ngx_env_gateway_redis_connect(rc);
            return;
        }

        ngx_add_timer(&rc->reconnect, 1);
        return;
    }

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


/* ------------------------------------------------------------------ */
/* Sentinel                                                            */

static void
ngx_env_gateway_sentinel_resolve(ngx_env_gateway_redis_t *rc)
{
    ngx_int_t                 rv;
    const char               *argv[3];
    size_t                    argvlen[3];
    ngx_env_gateway_redis_t  *sq;

    sq = ngx_env_gateway_sentinel;
    rc->resolving = 1;

    if (ngx_env_gateway_sentinel_asking) {
        return;
    }

    if (sq == NULL || sq->state == NGX_ENVGW_REDIS_DISCONNECTED) {
        rc->resolving = 0;
        ngx_env_gateway_redis_fail(rc, "no Sentinel reachable");
        return;
    }

    argv[0] = "SENTINEL";
    argvlen[0] = 8;
    argv[1] = "get-master-addr-by-name";
    argvlen[1] = 23;
    argv[2] = (const char *) rc->gmcf->sentinel_name.data;
    argvlen[2] = rc->gmcf->sentinel_name.len;

    rv = ngx_env_gateway_redis_send(sq, 3, argv, argvlen,
                                    ngx_env_gateway_sentinel_reply, NULL);
    if (rv != NGX_OK) {
        rc->resolving = 0;
        ngx_env_gateway_redis_fail(rc, "out of memory");
        return;
    }

    ngx_env_gateway_sentinel_asking = 1;
}


/* "ip", "port" -> the one server's address (per worker) */
static ngx_int_t
ngx_env_gateway_sentinel_set(ngx_env_gateway_main_conf_t *gmcf,
    ngx_str_t *ip, ngx_str_t *port)
{
    u_char                    *p;
    ngx_int_t                  n;
    ngx_addr_t                 addr;
    ngx_pool_t                *pool;
    ngx_env_gateway_server_t  *srv;

    n = ngx_atoi(port->data, port->len);
    if (n < 1 || n > 65535) {
        return NGX_ERROR;
    }

    pool = ngx_cycle->pool;

    if (ngx_parse_addr(pool, &addr, ip->data, ip->len) != NGX_OK) {
        return NGX_ERROR;
    }

    ngx_inet_set_port(addr.sockaddr, (in_port_t) n);

    srv = gmcf->servers->elts;

    if (srv->sockaddr && srv->socklen == addr.socklen
        && ngx_cmp_sockaddr(srv->sockaddr, srv->socklen, addr.sockaddr,
                            addr.socklen, 1) == NGX_OK)
    {
        srv->resolved = 1;
        return NGX_OK;
    }

    p = ngx_pnalloc(pool, NGX_SOCKADDR_STRLEN);
    if (p == NULL) {
        return NGX_ERROR;
    }

    srv->name.len = ngx_sock_ntop(addr.sockaddr, addr.socklen, p,
                                  NGX_SOCKADDR_STRLEN, 1);
    srv->name.data = p;
    srv->sockaddr = addr.sockaddr;
    srv->socklen = addr.socklen;
    srv->resolved = 1;

    ngx_log_error(NGX_LOG_NOTICE, ngx_cycle->log, 0,
                  "env_gateway: Sentinels name %V as master \"%V\"",
                  &srv->name, &gmcf->sentinel_name);

    return NGX_DECLINED;
}


static void
ngx_env_gateway_sentinel_reply(void *data, redisReply *reply)
{
    ngx_int_t                 rc;
    ngx_str_t                 ip, port;
    ngx_uint_t                i;
    ngx_env_gateway_redis_t  *waiting[2];

    ngx_env_gateway_sentinel_asking = 0;

    waiting[0] = ngx_env_gateway_redis;
    waiting[1] = ngx_env_gateway_redis_sub;

    rc = NGX_ERROR;

    if (reply && reply->type == REDIS_REPLY_ARRAY && reply->elements == 2
        && reply->element[0]->type == REDIS_REPLY_STRING
        && reply->element[1]->type == REDIS_REPLY_STRING
        && waiting[0])
    {
        ip.data = (u_char *) reply->element[0]->str;
        ip.len = reply->element[0]->len;
        port.data = (u_char *) reply->element[1]->str;
        port.len = reply->element[1]->len;

        rc = ngx_env_gateway_sentinel_set(waiting[0]->gmcf, &ip, &port);
    }

    for (i = 0; i < 2; i++) {
        if (waiting[i] == NULL || !waiting[i]->resolving) {
            continue;
        }

        waiting[i]->resolving = 0;

        if (rc == NGX_ERROR) {
            ngx_env_gateway_redis_fail(waiting[i],
                                       "the Sentinels name no master");
            continue;
        }

        ngx_env_gateway_redis_connect(waiting[i]);
    }
}


/* "+switch-master": <name> <old-ip> <old-port> <new-ip> <new-port> */
static void
ngx_env_gateway_sentinel_switch(ngx_env_gateway_redis_t *rc,
    ngx_str_t *payload)
{
    u_char      *p, *last, *sp;
    ngx_str_t    f[5];
    ngx_uint_t   i;

    p = payload->data;
    last = p + payload->len;

    for (i = 0; i < 5; i++) {
        sp = ngx_strlchr(p, last, ' ');
        f[i].data = p;
        f[i].len = (sp ? sp : last) - p;
        p = sp ? sp + 1 : last;
    }

    if (f[4].len == 0 || ngx_env_gateway_str_ne(&f[0],
                                                &rc->gmcf->sentinel_name))
    {
        return;
    }

    if (ngx_env_gateway_sentinel_set(rc->gmcf, &f[3], &f[4]) != NGX_DECLINED)
    {
        return;
    }

    /* move the lookup and invalidation connections to the new master */
    if (ngx_env_gateway_redis
        && ngx_env_gateway_redis->state != NGX_ENVGW_REDIS_DISCONNECTED
        && !ngx_env_gateway_redis->resolving)
    {
        ngx_env_gateway_redis_fail(ngx_env_gateway_redis, "master switched");
    }

    if (ngx_env_gateway_redis_sub
        && ngx_env_gateway_redis_sub->state != NGX_ENVGW_REDIS_DISCONNECTED
        && !ngx_env_gateway_redis_sub->resolving)
    {
        ngx_env_gateway_redis_fail(ngx_env_gateway_redis_sub,
                                   "master switched");
    }
}
