/*
 * env_gateway: a Redis connection, and the worker's lookup connection.
 *
 * nginx owns the socket (ngx_event_connect_peer, c->recv, c->send, nginx
 * timers); hiredis only encodes commands (redisFormatCommandArgv) and decodes
 * replies (redisReader).  Commands from every request of the worker are
 * appended to one outbound buffer and written by a posted "flush" event, so
 * the lookups of all requests that arrived in one event-loop iteration leave
 * in a single write.  Replies match commands in FIFO order.
 *
 * Deadlines: every command has its own, read_timeout after it was first
 * written, kept when it is sent again.  The connection's read timer is
 * armed for the earliest deadline, whatever bytes trickle in meanwhile;
 * when it fires, the commands past their deadline fail and the connection
 * is closed (the replies still due on it would no longer match the FIFO).
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
 * Sizes: no reply may exceed max_record.  The reader's object functions are
 * wrapped so that an aggregate announcing more elements than max_record
 * could hold is refused before hiredis allocates it, and the bytes of the
 * reply being read are counted after each read, so a reply above the limit
 * closes the connection without being buffered whole.  A GET whose reply
 * is a string above the limit gets ngx_env_gateway_redis_oversize instead.
 *
 * The worker's connections are started here: the Sentinels' first
 * (_sentinel.c), then the lookup connection, then the invalidation
 * subscriber (_subscriber.c).
 */

#include "ngx_env_gateway_redis.h"


#define NGX_ENVGW_BACKOFF_MIN         50
#define NGX_ENVGW_BACKOFF_MAX         500
#define NGX_ENVGW_OUT_MIN             16384

/*
 * The bytes around a bulk string's data: "$", up to 20 digits, two CRLFs.
 * A reply still incomplete after max_record plus this is above the limit.
 */
#define NGX_ENVGW_RESP_SLACK          32

/* the shortest RESP element ("+\r\n"): bounds an aggregate's count */
#define NGX_ENVGW_RESP_MIN_ELEMENT    3


typedef struct {
    ngx_queue_t                        queue;
    ngx_env_gateway_redis_handler_pt   handler;
    void                              *data;
    char                              *raw;       /* as formatted, to re-send;
                                                     NULL: never re-sent */
    size_t                             raw_len;
    uint64_t                           sent;      /* usec, for the RTT;
                                                     0: not written on c */
    ngx_msec_t                         deadline;  /* 0: never written */
    unsigned                           retried:1;
} ngx_env_gateway_cmd_t;


static void ngx_env_gateway_redis_connected(ngx_env_gateway_redis_t *rc);
static void ngx_env_gateway_redis_drop(ngx_env_gateway_redis_t *rc,
    ngx_uint_t ft, ngx_err_t err, const char *why);
static void ngx_env_gateway_redis_arm(ngx_env_gateway_redis_t *rc);
static void ngx_env_gateway_redis_read_handler(ngx_event_t *rev);
static void ngx_env_gateway_redis_write_handler(ngx_event_t *wev);
static void ngx_env_gateway_redis_flush_handler(ngx_event_t *ev);
static void ngx_env_gateway_redis_reconnect_handler(ngx_event_t *ev);
static void ngx_env_gateway_redis_flush(ngx_env_gateway_redis_t *rc);
static ngx_int_t ngx_env_gateway_redis_append(ngx_env_gateway_redis_t *rc,
    int argc, const char **argv, const size_t *argvlen, char **raw,
    size_t *raw_len);
static ngx_int_t ngx_env_gateway_redis_copy(ngx_env_gateway_redis_t *rc,
    char *raw, size_t len);
static ngx_env_gateway_cmd_t *ngx_env_gateway_redis_cmd_alloc(
    ngx_env_gateway_redis_t *rc);
static void ngx_env_gateway_redis_handshake_reply(void *data,
    redisReply *reply);
static void ngx_env_gateway_redis_primary_handler(ngx_event_t *ev);
static void ngx_env_gateway_redis_probe_handler(ngx_event_t *ev);
static void ngx_env_gateway_redis_switch(ngx_env_gateway_redis_t *rc);
static void ngx_env_gateway_redis_switch_handler(ngx_event_t *ev);
static void ngx_env_gateway_redis_message(ngx_env_gateway_redis_t *rc,
    redisReply *reply);


static ngx_env_gateway_redis_t  *ngx_env_gateway_redis;      /* lookups */
static ngx_uint_t                ngx_env_gateway_redis_exiting;

/* hiredis' reply functions, with createArray bounded by max_record */
static redisReplyObjectFunctions   ngx_env_gateway_reply_fn;
static void                     *(*ngx_env_gateway_create_array)(
                                     const redisReadTask *task, int elements);


/* what a command's handler gets for a string reply above max_record */
redisReply  ngx_env_gateway_redis_oversize = {
    REDIS_REPLY_ERROR, 0, sizeof("ERR reply above max_record") - 1,
    (char *) "ERR reply above max_record", 0, NULL
};


static uint64_t
ngx_env_gateway_usec(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);

    return (uint64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}


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

    rc->flush.handler = ngx_env_gateway_redis_flush_handler;
    rc->flush.data = rc;
    rc->flush.log = rc->log;

    /* background timers must not hold up a graceful shutdown */
    rc->reconnect.handler = ngx_env_gateway_redis_reconnect_handler;
    rc->reconnect.data = rc;
    rc->reconnect.log = rc->log;
    rc->reconnect.cancelable = 1;

    rc->primary.handler = ngx_env_gateway_redis_primary_handler;
    rc->primary.data = rc;
    rc->primary.log = rc->log;
    rc->primary.cancelable = 1;

    return rc;
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

    rc = ngx_env_gateway_redis_create(cycle, gmcf, gmcf->servers,
                                      " (lookups)");
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
    ngx_env_gateway_subscriber_exit();
    ngx_env_gateway_sentinel_exit();
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

    /* lookups are GETs: safe to send again on a new connection */
    return ngx_env_gateway_redis_send(rc, argc, argv, argvlen, handler, data,
                                      1);
}


ngx_int_t
ngx_env_gateway_redis_send(ngx_env_gateway_redis_t *rc, int argc,
    const char **argv, const size_t *argvlen,
    ngx_env_gateway_redis_handler_pt handler, void *data, ngx_uint_t retry)
{
    ngx_env_gateway_cmd_t  *cmd;

    cmd = ngx_env_gateway_redis_cmd_alloc(rc);
    if (cmd == NULL) {
        return NGX_ERROR;
    }

    cmd->raw = NULL;

    if (ngx_env_gateway_redis_append(rc, argc, argv, argvlen,
                                     retry ? &cmd->raw : NULL,
                                     &cmd->raw_len)
        != NGX_OK)
    {
        ngx_queue_insert_head(&rc->free, &cmd->queue);
        return NGX_ERROR;
    }

    cmd->handler = handler;
    cmd->data = data;
    cmd->sent = 0;
    cmd->deadline = 0;
    cmd->retried = 0;
    ngx_queue_insert_tail(&rc->cmds, &cmd->queue);
    rc->ncmds++;

    ngx_log_debug3(NGX_LOG_DEBUG_EVENT, rc->log, 0,
                   "env_gateway: redis%s: command queued, %ui outstanding, "
                   "state %ui", rc->role, rc->ncmds, rc->state);

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


/*
 * Format a command onto the outbound buffer.  With raw != NULL the
 * formatted bytes are also handed back (to be re-sent after a drop; the
 * caller frees them), otherwise they are freed here.
 */
static ngx_int_t
ngx_env_gateway_redis_append(ngx_env_gateway_redis_t *rc, int argc,
    const char **argv, const size_t *argvlen, char **raw, size_t *raw_len)
{
    int    len;
    char  *cmd;

    /* arguments go as (data, length): untrusted bytes are never formatted */
    len = redisFormatCommandArgv(&cmd, argc, argv, argvlen);
    if (len < 0) {
        return NGX_ERROR;
    }

    if (ngx_env_gateway_redis_copy(rc, cmd, len) != NGX_OK) {
        free(cmd);
        return NGX_ERROR;
    }

    if (raw) {
        *raw = cmd;
        *raw_len = len;

    } else {
        free(cmd);
    }

    return NGX_OK;
}


static ngx_int_t
ngx_env_gateway_redis_copy(ngx_env_gateway_redis_t *rc, char *raw,
    size_t len)
{
    if (ngx_env_gateway_redis_reserve(rc, len) != NGX_OK) {
        return NGX_ERROR;
    }

    ngx_memcpy(rc->out + rc->out_len, raw, len);
    rc->out_len += len;

    return NGX_OK;
}


/* a command is done with: its struct goes back to the free list */
static void
ngx_env_gateway_redis_cmd_free(ngx_env_gateway_redis_t *rc,
    ngx_env_gateway_cmd_t *cmd)
{
    if (cmd->raw) {
        free(cmd->raw);
        cmd->raw = NULL;
    }

    ngx_queue_insert_head(&rc->free, &cmd->queue);
}


/*
 * hiredis' createArray, refusing a count that max_record could not hold
 * (every element takes at least NGX_ENVGW_RESP_MIN_ELEMENT bytes): a rogue
 * "*2147483647" must not make the worker calloc 16 GB.  NULL makes the
 * reader fail (as out of memory); rc->refused tells the two apart.
 */
static void *
ngx_env_gateway_redis_create_array(const redisReadTask *task, int elements)
{
    size_t                    limit;
    ngx_env_gateway_redis_t  *rc;

    /* hiredis 0.14 hands every task the reader's privdata */
    rc = task->privdata;
    limit = rc ? rc->max_record : NGX_ENVGW_MAX_RECORD;

    if ((size_t) elements > limit / NGX_ENVGW_RESP_MIN_ELEMENT) {
        if (rc) {
            rc->refused = elements;
        }

        return NULL;
    }

    return ngx_env_gateway_create_array(task, elements);
}


static redisReader *
ngx_env_gateway_redis_reader(ngx_env_gateway_redis_t *rc)
{
    redisReader  *r;

    r = redisReaderCreate();
    if (r == NULL) {
        return NULL;
    }

    if (ngx_env_gateway_create_array == NULL) {
        ngx_env_gateway_reply_fn = *r->fn;
        ngx_env_gateway_create_array = r->fn->createArray;
        ngx_env_gateway_reply_fn.createArray =
                                            ngx_env_gateway_redis_create_array;
    }

    r->fn = &ngx_env_gateway_reply_fn;
    r->privdata = rc;

    rc->fed = 0;
    rc->mark = 0;
    rc->refused = 0;

    return r;
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
    rc->peer.log = rc->log;

    /* recv() and send() errors are logged once, by drop(), with errno */
    rc->peer.log_error = NGX_ERROR_INFO;

    rc->healthy = 0;
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
        if (cmd == NULL) {
            goto nomem;
        }

        /* the handshake is sent anew on every connection, never re-sent */
        cmd->handler = ngx_env_gateway_redis_handshake_reply;
        cmd->data = rc;
        cmd->raw = NULL;
        cmd->sent = 0;
        cmd->deadline = 0;
        cmd->retried = 0;
        ngx_queue_insert_tail(&handshake, &cmd->queue);
        rc->ncmds++;

        if (ngx_env_gateway_redis_append(rc, 2, argv, argvlen, NULL, NULL)
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

    ngx_env_gateway_redis_flush(rc);

    return;

nomem:

    /* the handshake commands join the queue so that drop() answers them */
    ngx_queue_add(&handshake, &rc->cmds);
    ngx_queue_init(&rc->cmds);
    ngx_queue_add(&rc->cmds, &handshake);

    ngx_env_gateway_redis_fail(rc, NGX_ENVGW_FT_INTERNAL, "out of memory");
}


void
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
        ngx_env_gateway_redis_fail(rc, NGX_ENVGW_FT_REFUSED,
                                   "handshake failed");
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
            ngx_env_gateway_redis_fail(rc, NGX_ENVGW_FT_TIMEOUT,
                                       "connect timed out");
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
            ngx_env_gateway_redis_drop(rc, NGX_ENVGW_FT_CONNECT, err,
                                       "connect() failed");
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
    ngx_err_t                  err;
    ngx_msec_t                 deadline;
    ngx_queue_t               *q;
    ngx_env_gateway_cmd_t     *cmd;
    ngx_connection_t          *c;
    ngx_env_gateway_server_t  *srv;

    c = rc->c;

    while (rc->out_pos < rc->out_len) {

        n = c->send(c, rc->out + rc->out_pos, rc->out_len - rc->out_pos);

        if (n == NGX_AGAIN) {
            if (ngx_handle_write_event(c->write, 0) != NGX_OK) {
                ngx_env_gateway_redis_fail(rc, NGX_ENVGW_FT_INTERNAL,
                                           "write event failed");
                return;
            }

            break;
        }

        if (n == NGX_ERROR) {
            err = ngx_socket_errno;
            ngx_env_gateway_redis_drop(rc, NGX_ENVGW_FT_RESET, err,
                                       "send() failed");
            return;
        }

        rc->out_pos += n;
    }

    ngx_log_debug2(NGX_LOG_DEBUG_EVENT, rc->log, 0,
                   "env_gateway: redis%s: written, %uz byte(s) left",
                   rc->role, rc->out_len - rc->out_pos);

    if (rc->out_pos == rc->out_len) {
        rc->out_pos = 0;
        rc->out_len = 0;
    }

    /*
     * Stamp the commands written now (newest last: walk back): a deadline
     * is read_timeout from the first write, whatever comes before it; a
     * command sent again keeps the one it had.
     */
    now = 0;
    srv = rc->servers->elts;
    deadline = ngx_current_msec + srv[rc->current].read_timeout;

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

        if (cmd->deadline == 0) {
            cmd->deadline = deadline;
        }
    }

    ngx_env_gateway_redis_arm(rc);
}


/*
 * The read timer fires at the earliest deadline of the commands written:
 * the first one's (deadlines grow along the FIFO), or that of a command
 * sent again after a drop, which kept its own.  It is not cancelable, so a
 * graceful shutdown waits for (or times out) the lookups of requests still
 * in flight.
 */
static void
ngx_env_gateway_redis_arm(ngx_env_gateway_redis_t *rc)
{
    ngx_msec_t              deadline;
    ngx_event_t            *rev;
    ngx_msec_int_t          left;
    ngx_env_gateway_cmd_t  *cmd;

    rev = rc->c->read;
    deadline = 0;

    if (ngx_queue_empty(&rc->cmds)) {
        rc->resend_deadline = 0;

    } else {
        cmd = ngx_queue_data(ngx_queue_head(&rc->cmds),
                             ngx_env_gateway_cmd_t, queue);

        if (cmd->sent) {
            deadline = cmd->deadline;

            if (rc->resend_deadline
                && (ngx_msec_int_t) (rc->resend_deadline - deadline) < 0)
            {
                deadline = rc->resend_deadline;
            }
        }
    }

    if (deadline == 0) {
        /* nothing written is waiting: flush() arms the timer */
        if (rev->timer_set) {
            ngx_del_timer(rev);
        }

        return;
    }

    if (rev->timer_set) {
        if (rev->timer.key == deadline) {
            return;
        }

        ngx_del_timer(rev);
    }

    left = (ngx_msec_int_t) (deadline - ngx_current_msec);

    ngx_log_debug2(NGX_LOG_DEBUG_EVENT, rc->log, 0,
                   "env_gateway: redis%s: oldest command due in %i ms",
                   rc->role, (ngx_int_t) left);

    ngx_add_timer(rev, left > 0 ? (ngx_msec_t) left : 1);
}


static void
ngx_env_gateway_redis_read_handler(ngx_event_t *rev)
{
    void                      *reply;
    ssize_t                    n;
    ngx_err_t                  err;
    ngx_uint_t                 generation, ft, level;
    ngx_queue_t               *q;
    redisReply                *r;
    redisReader               *reader;
    ngx_connection_t          *c;
    ngx_env_gateway_cmd_t     *cmd;
    ngx_env_gateway_server_t  *srv;
    ngx_env_gateway_redis_t   *rc;
    u_char                     buf[16384];

    c = rev->data;
    rc = c->data;
    srv = rc->servers->elts;
    generation = rc->generation;

    if (rc->state == NGX_ENVGW_REDIS_CONNECTING) {
        /* a refused connect shows on both events: the write handler tells */
        ngx_env_gateway_redis_write_handler(c->write);
        return;
    }

    if (rev->timedout) {
        rev->timedout = 0;
        rc->resend_deadline = 0;

        for (q = ngx_queue_head(&rc->cmds);
             q != ngx_queue_sentinel(&rc->cmds);
             q = ngx_queue_next(q))
        {
            cmd = ngx_queue_data(q, ngx_env_gateway_cmd_t, queue);

            if (cmd->deadline == 0) {
                continue;
            }

            if ((ngx_msec_int_t) (cmd->deadline - ngx_current_msec) <= 0) {
                ngx_env_gateway_redis_fail(rc, NGX_ENVGW_FT_TIMEOUT,
                                           "command timed out");
                return;
            }

            if (cmd->retried
                && (rc->resend_deadline == 0
                    || (ngx_msec_int_t)
                           (cmd->deadline - rc->resend_deadline) < 0))
            {
                rc->resend_deadline = cmd->deadline;
            }
        }

        /* nothing is due yet */
        ngx_env_gateway_redis_arm(rc);
        return;
    }

    for ( ;; ) {

        n = c->recv(c, buf, sizeof(buf));

        if (n == NGX_AGAIN) {
            break;
        }

        if (n == 0) {
            ngx_env_gateway_redis_fail(rc, NGX_ENVGW_FT_CLOSED,
                                       "connection closed by redis");
            return;
        }

        if (n == NGX_ERROR) {
            err = ngx_socket_errno;
            ngx_env_gateway_redis_drop(rc, NGX_ENVGW_FT_RESET, err,
                                       "recv() failed");
            return;
        }

        reader = rc->reader;

        if (redisReaderFeed(reader, (const char *) buf, n) != REDIS_OK) {
            ngx_env_gateway_redis_fail(rc, NGX_ENVGW_FT_INTERNAL,
                                       "reader out of memory");
            return;
        }

        rc->fed += n;

        for ( ;; ) {
            reply = NULL;

            if (redisReaderGetReply(reader, &reply) != REDIS_OK) {

                if (rc->refused) {
                    ngx_log_error(NGX_LOG_ERR, rc->log, 0,
                                  "env_gateway: redis %V%s: a reply announces "
                                  "%d elements, more than max_record "
                                  "(%uz bytes) can hold; closing the "
                                  "connection", &srv[rc->current].name,
                                  rc->role, rc->refused, rc->max_record);
                } else {
                    ngx_log_error(NGX_LOG_ERR, rc->log, 0,
                                  "env_gateway: redis %V%s: protocol error: "
                                  "%s", &srv[rc->current].name, rc->role,
                                  reader->errstr);
                }

                ngx_env_gateway_redis_fail(rc, NGX_ENVGW_FT_PROTOCOL, NULL);
                return;
            }

            if (reply == NULL) {
                break;
            }

            /* the next reply starts after the bytes this one left unread */
            rc->mark = rc->fed - (off_t) (reader->len - reader->pos);

            r = reply;

            if (rc->subscriber && rc->subscribed
                && ngx_env_gateway_redis_is_message(r))
            {
                ngx_env_gateway_redis_message(rc, r);
                freeReplyObject(r);
                continue;
            }

            if (ngx_queue_empty(&rc->cmds)) {
                freeReplyObject(r);
                ngx_env_gateway_redis_fail(rc, NGX_ENVGW_FT_PROTOCOL,
                                           "unexpected reply");
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

            if (r->type != REDIS_REPLY_ERROR) {
                rc->healthy = 1;
            }

            if (r->type == REDIS_REPLY_STRING && r->len > rc->max_record) {
                ngx_log_debug3(NGX_LOG_DEBUG_EVENT, rc->log, 0,
                               "env_gateway: redis%s: a string reply of %uz "
                               "bytes, above max_record %uz", rc->role,
                               r->len, rc->max_record);
                cmd->handler(cmd->data, &ngx_env_gateway_redis_oversize);

            } else {
                cmd->handler(cmd->data, r);
            }

            freeReplyObject(r);
            ngx_env_gateway_redis_cmd_free(rc, cmd);

            if (rc->c != c || rc->generation != generation) {
                /* the handler dropped the connection */
                return;
            }
        }

        /*
         * The reply being read, counted from its first byte (the elements
         * of an aggregate already parsed included): above max_record, it
         * is not waited for, let alone buffered whole.
         */
        if (rc->fed - rc->mark
            > (off_t) (rc->max_record + NGX_ENVGW_RESP_SLACK))
        {
            ft = NGX_ENVGW_FT_PROTOCOL;
            level = NGX_LOG_ERR;

            if (!rc->subscriber && reader->ridx == 0
                && reader->rstack[0].type == REDIS_REPLY_STRING)
            {
                /* a GET's value: the record is too big, not Redis down */
                ft = NGX_ENVGW_FT_OVERSIZE;
                level = NGX_LOG_INFO;
            }

            ngx_log_error(level, rc->log, 0,
                          "env_gateway: redis %V%s: a reply is above "
                          "max_record (%uz bytes); closing the connection",
                          &srv[rc->current].name, rc->role, rc->max_record);

            ngx_env_gateway_redis_fail(rc, ft, NULL);
            return;
        }
    }

    if (ngx_handle_read_event(rev, 0) != NGX_OK) {
        ngx_env_gateway_redis_fail(rc, NGX_ENVGW_FT_INTERNAL,
                                   "read event failed");
        return;
    }

    ngx_env_gateway_redis_arm(rc);
}


void
ngx_env_gateway_redis_fail(ngx_env_gateway_redis_t *rc, ngx_uint_t ft,
    const char *why)
{
    ngx_env_gateway_redis_drop(rc, ft, 0, why);
}


/*
 * Drop the connection.  Lookups written on it and still within their
 * deadline are kept, to be re-sent once on the next connection within that
 * deadline; so are lookups not written yet.  The other outstanding commands (past their
 * deadline, re-sent already, internal ones such as AUTH or PING, all of
 * them at shutdown, and after a protocol error or an oversize reply the one
 * whose reply was being read) are answered with NULL, or with
 * ngx_env_gateway_redis_oversize for NGX_ENVGW_FT_OVERSIZE.
 *
 * ft: the kind of failure (ngx_env_gateway_redis_ft_e); why: the log line's
 * words, with errno err; NULL: the cause was logged already.
 */
static void
ngx_env_gateway_redis_drop(ngx_env_gateway_redis_t *rc, ngx_uint_t ft,
    ngx_err_t err, const char *why)
{
    ngx_uint_t                 n, was_ready, keep, shutdown, healthy,
                               nfailed, nretried, first, level, head_fails;
    ngx_queue_t               *q, *next, failed;
    redisReply                *reply;
    ngx_env_gateway_cmd_t     *cmd, *oversize;
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
     * Commands queued while connecting were never sent: while another
     * server of the list remains to be tried this round, they wait for it.
     */
    keep = (!shutdown && !was_ready && rc->failures + 1 < n);

    rc->state = NGX_ENVGW_REDIS_DISCONNECTED;

    /* which commands go again, which fail */

    ngx_queue_init(&failed);
    nfailed = 0;
    nretried = 0;
    oversize = NULL;
    rc->resend_deadline = 0;

    if (!keep) {
        first = 1;

        for (q = ngx_queue_head(&rc->cmds);
             q != ngx_queue_sentinel(&rc->cmds);
             q = next)
        {
            next = ngx_queue_next(q);
            cmd = ngx_queue_data(q, ngx_env_gateway_cmd_t, queue);

            /*
             * Kept: a lookup not written on this connection, or written
             * once; either way still within its deadline, which it keeps.
             */
            if (!shutdown && was_ready && cmd->raw
                && !(first && head_fails)
                && (cmd->sent == 0 || !cmd->retried)
                && (cmd->deadline == 0
                    || (ngx_msec_int_t)
                           (cmd->deadline - ngx_current_msec) > 0))
            {
                if (cmd->sent) {
                    cmd->retried = 1;
                    nretried++;
                }

                cmd->sent = 0;
                first = 0;
                continue;
            }

            if (first && ft == NGX_ENVGW_FT_OVERSIZE) {
                oversize = cmd;
            }

            first = 0;
            ngx_queue_remove(q);
            ngx_queue_insert_tail(&failed, q);
            nfailed++;
        }

        /* the outbound buffer: the kept commands, in their order */
        rc->out_pos = 0;
        rc->out_len = 0;

        for (q = ngx_queue_head(&rc->cmds);
             q != ngx_queue_sentinel(&rc->cmds);
             q = next)
        {
            next = ngx_queue_next(q);
            cmd = ngx_queue_data(q, ngx_env_gateway_cmd_t, queue);

            if (ngx_env_gateway_redis_copy(rc, cmd->raw, cmd->raw_len)
                != NGX_OK)
            {
                ngx_queue_remove(q);
                ngx_queue_insert_tail(&failed, q);
                nfailed++;
                nretried -= cmd->retried;
            }
        }

        rc->ncmds -= nfailed;
    }

    /* the earliest deadline the commands going again keep */
    for (q = ngx_queue_head(&rc->cmds);
         q != ngx_queue_sentinel(&rc->cmds);
         q = ngx_queue_next(q))
    {
        cmd = ngx_queue_data(q, ngx_env_gateway_cmd_t, queue);

        if (cmd->deadline
            && (rc->resend_deadline == 0
                || (ngx_msec_int_t) (cmd->deadline - rc->resend_deadline)
                   < 0))
        {
            rc->resend_deadline = cmd->deadline;
        }
    }

    if (why && !shutdown) {
        /* a connection closed when idle, and reopened, is no error */
        level = (nfailed || !was_ready) ? NGX_LOG_ERR
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

    if (was_ready && (healthy || !ngx_queue_empty(&rc->cmds))) {
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

    if (was_ready) {
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
