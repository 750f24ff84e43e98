/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * env_gateway: commands pipelined on a Redis connection (_redis.c).
 *
 * nginx owns the socket (ngx_event_connect_peer, c->recv, c->send, nginx
 * timers); hiredis only encodes commands (redisFormatCommandArgv) and decodes
 * replies (redisReader).  Commands from every request of the worker are
 * appended to one outbound buffer and written by a posted "flush" event, so
 * the lookups of all requests that arrived in one event-loop iteration leave
 * in a single write.  Replies match commands in FIFO order; pub/sub
 * "message" pushes on a subscriber go to its on_message.
 *
 * Deadlines: every command has its own, read_timeout after it was first
 * written, kept when it is sent again.  The connection's read timer is
 * armed for the earliest deadline, whatever bytes trickle in meanwhile;
 * when it fires, the commands past their deadline fail and the connection
 * is closed (the replies still due on it would no longer match the FIFO).
 * Which commands go again after a drop: ngx_env_gateway_redis_requeue().
 *
 * Sizes: no reply may exceed max_record.  The reader's object functions are
 * wrapped so that an aggregate announcing more elements than max_record
 * could hold is refused before hiredis allocates it, and the bytes of the
 * reply being read are counted after each read, so a reply above the limit
 * closes the connection without being buffered whole.  A GET whose reply
 * is a string above the limit gets ngx_env_gateway_redis_oversize instead.
 */

#include "ngx_env_gateway_redis.h"


#define NGX_ENVGW_OUT_MIN             16384

/*
 * The bytes around a bulk string's data: "$", up to 20 digits, two CRLFs.
 * A reply still incomplete after max_record plus this is above the limit.
 */
#define NGX_ENVGW_RESP_SLACK          32

/* the shortest RESP element ("+\r\n"): bounds an aggregate's count */
#define NGX_ENVGW_RESP_MIN_ELEMENT    3


static void ngx_env_gateway_redis_arm(ngx_env_gateway_redis_t *rc);
static ngx_uint_t ngx_env_gateway_redis_is_message(redisReply *reply);
static void ngx_env_gateway_redis_message(ngx_env_gateway_redis_t *rc,
    redisReply *reply);


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


ngx_env_gateway_cmd_t *
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
ngx_int_t
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


ngx_int_t
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
void
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


redisReader *
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


/*
 * A connection is dropped: which commands go again on the next one, which
 * fail (moved to failed).  With keep, all wait for the next server.
 * Otherwise a lookup not written on the dropped connection, or written
 * once, goes again within its deadline if resend; the others fail, the
 * first one too if head_fails (its reply was unusable).  Those going again
 * are written anew to the outbound buffer.  Returns the first command if
 * it failed.
 */
ngx_env_gateway_cmd_t *
ngx_env_gateway_redis_requeue(ngx_env_gateway_redis_t *rc, ngx_uint_t keep,
    ngx_uint_t resend, ngx_uint_t head_fails, ngx_queue_t *failed,
    ngx_uint_t *nfailed, ngx_uint_t *nretried)
{
    ngx_uint_t              first;
    ngx_queue_t            *q, *next;
    ngx_env_gateway_cmd_t  *cmd, *head;

    head = NULL;
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
            if (resend && cmd->raw
                && !(first && head_fails)
                && (cmd->sent == 0 || !cmd->retried)
                && (cmd->deadline == 0
                    || (ngx_msec_int_t)
                           (cmd->deadline - ngx_current_msec) > 0))
            {
                if (cmd->sent) {
                    cmd->retried = 1;
                    (*nretried)++;
                }

                cmd->sent = 0;
                first = 0;
                continue;
            }

            if (first) {
                head = cmd;
            }

            first = 0;
            ngx_queue_remove(q);
            ngx_queue_insert_tail(failed, q);
            (*nfailed)++;
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
                ngx_queue_insert_tail(failed, q);
                (*nfailed)++;
                *nretried -= cmd->retried;
            }
        }

        rc->ncmds -= *nfailed;
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


    return head;
}


void
ngx_env_gateway_redis_flush_handler(ngx_event_t *ev)
{
    ngx_env_gateway_redis_t  *rc = ev->data;

    if (rc->state == NGX_ENVGW_REDIS_READY) {
        ngx_env_gateway_redis_flush(rc);
    }
}


void
ngx_env_gateway_redis_flush(ngx_env_gateway_redis_t *rc)
{
    ssize_t                    n;
    uint64_t                   now;
    ngx_err_t                  err;
    ngx_uint_t                 ft;
    const char                *why;
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
            ft = NGX_ENVGW_FT_RESET;
            why = ngx_env_gateway_tls_why(rc, "send() failed", &err, &ft);
            ngx_env_gateway_redis_drop(rc, ft, err, why);
            return;
        }

        rc->out_pos += n;
        rc->sent = 1;
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


void
ngx_env_gateway_redis_read_handler(ngx_event_t *rev)
{
    void                      *reply;
    ssize_t                    n;
    ngx_err_t                  err;
    const char                *why;
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
            ft = NGX_ENVGW_FT_RESET;
            why = ngx_env_gateway_tls_why(rc, "recv() failed", &err, &ft);
            ngx_env_gateway_redis_drop(rc, ft, err, why);
            return;
        }

        ngx_log_debug2(NGX_LOG_DEBUG_EVENT, rc->log, 0,
                       "env_gateway: redis%s: read %z byte(s)", rc->role, n);

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


static ngx_uint_t
ngx_env_gateway_redis_is_message(redisReply *reply)
{
    return reply->type == REDIS_REPLY_ARRAY && reply->elements == 3
           && reply->element[0]->type == REDIS_REPLY_STRING
           && reply->element[0]->len == 7
           && ngx_strncmp(reply->element[0]->str, "message", 7) == 0;
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
