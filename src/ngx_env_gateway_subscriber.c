/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * env_gateway: subscriptions, and the invalidation channel.
 *
 * A subscriber is a connection (_redis.c) that SUBSCRIBEs to one channel
 * after each handshake and PINGs every few seconds, so that a silent peer
 * is found by that PING's read timeout.  Pub/sub "message" pushes go to its
 * on_message.  Subscribers stay where they are while healthy (they do not
 * return to the first server as lookups do): moving one would open a gap in
 * its messages, and a replica gets the primary's messages anyway.
 *
 * Each worker keeps one on <prefix>invalidate when something registered for
 * invalidations (ngx_env_gateway_subscriber_hooks(): the cache side does):
 * a message names a changed key, told to hooks->changed.  Every
 * subscription is told to hooks->subscribed, with "again" set after the
 * first: a gap in which messages may have been lost.  The Sentinel events
 * (_sentinel.c) are a subscriber too.
 *
 * Handover: the workers a reload replaces are told to quit about 100 ms
 * after the new ones start, and the first subscriber with nobody else
 * subscribed flushes the zone.  So a worker shutting down gracefully keeps
 * its subscription, applying invalidations, until a process of a newer
 * configuration has subscribed (hooks->successor), then sends a PING and
 * leaves at its reply: whatever was published before that process
 * subscribed has been read by then.  It waits connect_timeout +
 * read_timeout of its server (NGX_ENVGW_HANDOVER_MAX at most) on a timer
 * that is not cancelable, so the worker stays meanwhile; SIGTERM and
 * worker_shutdown_timeout end the wait, and with no newer configuration
 * (nginx -s quit) nothing is waited for.  The start of the shutdown is
 * seen as nginx closes idle connections: the subscribed connection is
 * marked idle, and its read handler is called with c->close set.
 */

#include "ngx_env_gateway_redis.h"


#define NGX_ENVGW_PING_INTERVAL       5000

/* how long a worker shutting down waits at most for a newer subscriber */
#define NGX_ENVGW_HANDOVER_MAX        5000

/* how often it looks */
#define NGX_ENVGW_HANDOVER_POLL       20


static ngx_int_t ngx_env_gateway_subscriber_connected(
    ngx_env_gateway_redis_t *rc);
static void ngx_env_gateway_subscriber_dropped(ngx_env_gateway_redis_t *rc);
static void ngx_env_gateway_subscriber_reply(void *data, redisReply *reply);
static void ngx_env_gateway_subscriber_ping(ngx_event_t *ev);
static void ngx_env_gateway_inval_message(ngx_env_gateway_redis_t *rc,
    ngx_str_t *key);
static void ngx_env_gateway_inval_subscribed(ngx_env_gateway_redis_t *rc);
static void ngx_env_gateway_inval_unsubscribed(ngx_env_gateway_redis_t *rc);
static void ngx_env_gateway_inval_read_handler(ngx_event_t *rev);
static void ngx_env_gateway_handover_start(ngx_env_gateway_redis_t *rc);
static void ngx_env_gateway_handover_handler(ngx_event_t *ev);
static void ngx_env_gateway_handover_reply(void *data, redisReply *reply);
static void ngx_env_gateway_handover_end(const char *why);


static ngx_env_gateway_redis_t          *ngx_env_gateway_inval;
static ngx_env_gateway_subscriber_hooks_t  *ngx_env_gateway_inval_hooks;

/* a worker shutting down, waiting for a newer subscriber */
static ngx_event_t                 ngx_env_gateway_handover;
static ngx_msec_t                  ngx_env_gateway_handover_deadline;
static ngx_uint_t                  ngx_env_gateway_handover_state;

#define NGX_ENVGW_HANDOVER_NONE       0
#define NGX_ENVGW_HANDOVER_WAITING    1   /* for a newer subscriber */
#define NGX_ENVGW_HANDOVER_PING       2   /* for the last PING's reply */
#define NGX_ENVGW_HANDOVER_DONE       3


void
ngx_env_gateway_subscriber_hooks(ngx_env_gateway_subscriber_hooks_t *hooks)
{
    ngx_env_gateway_inval_hooks = hooks;
}


ngx_env_gateway_redis_t *
ngx_env_gateway_subscriber_create(ngx_cycle_t *cycle,
    ngx_env_gateway_main_conf_t *gmcf, ngx_array_t *servers,
    ngx_str_t *channel, const char *role)
{
    ngx_env_gateway_redis_t  *rc;

    rc = ngx_env_gateway_redis_create(cycle, gmcf, servers, role);
    if (rc == NULL) {
        return NULL;
    }

    rc->subscriber = 1;
    rc->channel = *channel;
    rc->connected = ngx_env_gateway_subscriber_connected;
    rc->dropped = ngx_env_gateway_subscriber_dropped;

    /* a background timer must not hold up a graceful shutdown */
    ngx_env_gateway_redis_event(rc, &rc->ping,
                                ngx_env_gateway_subscriber_ping);
    rc->ping.cancelable = 1;

    return rc;
}


ngx_int_t
ngx_env_gateway_subscriber_init(ngx_cycle_t *cycle,
    ngx_env_gateway_main_conf_t *gmcf)
{
    ngx_env_gateway_redis_t  *rc;

    if (ngx_env_gateway_inval_hooks == NULL) {
        return NGX_OK;
    }

    rc = ngx_env_gateway_subscriber_create(cycle, gmcf, gmcf->servers,
                                           &gmcf->channel,
                                           " (invalidations)");
    if (rc == NULL) {
        return NGX_ERROR;
    }

    rc->on_message = ngx_env_gateway_inval_message;
    rc->on_subscribed = ngx_env_gateway_inval_subscribed;
    rc->on_unsubscribed = ngx_env_gateway_inval_unsubscribed;

    if (gmcf->sentinels) {
        ngx_env_gateway_sentinel_attach(rc);
    }

    ngx_env_gateway_inval = rc;
    ngx_env_gateway_handover_state = NGX_ENVGW_HANDOVER_NONE;
    ngx_env_gateway_redis_connect(rc);

    return NGX_OK;
}


void
ngx_env_gateway_subscriber_exit(void)
{
    ngx_env_gateway_redis_t  *rc;

    if (ngx_env_gateway_handover.timer_set) {
        ngx_del_timer(&ngx_env_gateway_handover);
    }

    rc = ngx_env_gateway_inval;
    ngx_env_gateway_inval = NULL;

    ngx_env_gateway_redis_close(rc);
}


/* after the handshake: SUBSCRIBE, never sent again on another connection */
static ngx_int_t
ngx_env_gateway_subscriber_connected(ngx_env_gateway_redis_t *rc)
{
    const char  *argv[2];
    size_t       argvlen[2];

    argv[0] = "SUBSCRIBE";
    argvlen[0] = 9;
    argv[1] = (const char *) rc->channel.data;
    argvlen[1] = rc->channel.len;

    ngx_log_debug2(NGX_LOG_DEBUG_EVENT, rc->log, 0,
                   "env_gateway: redis%s: SUBSCRIBE %V", rc->role,
                   &rc->channel);

    return ngx_env_gateway_redis_send(rc, 2, argv, argvlen,
                                      ngx_env_gateway_subscriber_reply, rc,
                                      0);
}


static void
ngx_env_gateway_subscriber_dropped(ngx_env_gateway_redis_t *rc)
{
    if (rc->ping.timer_set) {
        ngx_del_timer(&rc->ping);
    }

    if (!rc->subscribed) {
        return;
    }

    rc->subscribed = 0;

    if (rc->on_unsubscribed) {
        rc->on_unsubscribed(rc);
    }
}


static void
ngx_env_gateway_subscriber_reply(void *data, redisReply *reply)
{
    ngx_env_gateway_redis_t  *rc = data;

    if (reply == NULL) {
        return;
    }

    if (reply->type != REDIS_REPLY_ARRAY) {
        ngx_log_error(NGX_LOG_ERR, rc->log, 0,
                      "env_gateway: SUBSCRIBE %V refused", &rc->channel);
        ngx_env_gateway_redis_fail(rc, NGX_ENVGW_FT_REFUSED,
                                   "subscribe failed");
        return;
    }

    rc->subscribed = 1;

    ngx_log_debug2(NGX_LOG_DEBUG_EVENT, rc->log, 0,
                   "env_gateway: redis%s: subscribed to %V", rc->role,
                   &rc->channel);

    if (rc == ngx_env_gateway_inval && !ngx_exiting) {
        /* a graceful shutdown starts the handover (inval_read_handler) */
        rc->c->idle = 1;
        rc->c->read->handler = ngx_env_gateway_inval_read_handler;
    }

    if (rc->on_subscribed) {
        rc->on_subscribed(rc);
    }

    if (!rc->ping.timer_set) {
        ngx_add_timer(&rc->ping, NGX_ENVGW_PING_INTERVAL);
    }
}


static void
ngx_env_gateway_subscriber_ping(ngx_event_t *ev)
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
                                   ngx_env_gateway_redis_ignore, rc, 0)
        != NGX_OK)
    {
        ngx_env_gateway_redis_fail(rc, NGX_ENVGW_FT_INTERNAL, "out of memory");
        return;
    }

    ngx_add_timer(&rc->ping, NGX_ENVGW_PING_INTERVAL);
}


static void
ngx_env_gateway_inval_message(ngx_env_gateway_redis_t *rc, ngx_str_t *key)
{
    ngx_log_debug2(NGX_LOG_DEBUG_EVENT, rc->log, 0,
                   "env_gateway: redis%s: \"%V\" changed", rc->role, key);

    ngx_env_gateway_inval_hooks->changed(key);
}


static void
ngx_env_gateway_inval_subscribed(ngx_env_gateway_redis_t *rc)
{
    ngx_env_gateway_inval_hooks->subscribed(rc->ever_subscribed);

    rc->ever_subscribed = 1;

    /*
     * Redis is back: the dropped entries are about to be asked for, so the
     * lookup connection must not sit out the rest of its backoff.
     */
    ngx_env_gateway_redis_nudge();
}


static void
ngx_env_gateway_inval_unsubscribed(ngx_env_gateway_redis_t *rc)
{
    ngx_env_gateway_inval_hooks->unsubscribed();
}


/*
 * The subscribed connection's read handler.  c->close is nginx at a
 * graceful shutdown: closing idle connections as it starts (the handover
 * starts), or worker_shutdown_timeout (the handover ends).
 */
static void
ngx_env_gateway_inval_read_handler(ngx_event_t *rev)
{
    ngx_connection_t         *c;
    ngx_env_gateway_redis_t  *rc;

    c = rev->data;
    rc = c->data;

    if (c->close) {
        c->close = 0;
        c->idle = 0;

        if (ngx_env_gateway_handover_state == NGX_ENVGW_HANDOVER_NONE) {
            ngx_env_gateway_handover_start(rc);

        } else if (ngx_env_gateway_handover_state
                   != NGX_ENVGW_HANDOVER_DONE)
        {
            ngx_env_gateway_handover_end("worker_shutdown_timeout");
        }

        if (rc->c != c) {
            return;
        }
    }

    ngx_env_gateway_redis_read_handler(rev);
}


static void
ngx_env_gateway_handover_start(ngx_env_gateway_redis_t *rc)
{
    ngx_msec_t                 bound;
    ngx_env_gateway_server_t  *srv;

    ngx_env_gateway_handover_state = NGX_ENVGW_HANDOVER_DONE;

    if (!ngx_exiting || ngx_terminate || !rc->subscribed
        || rc->state != NGX_ENVGW_REDIS_READY
        || ngx_env_gateway_inval_hooks->successor == NULL
        || ngx_env_gateway_inval_hooks->successor() == NGX_DECLINED)
    {
        /* nobody to hand over to: it leaves with the worker */
        ngx_log_debug0(NGX_LOG_DEBUG_EVENT, rc->log, 0,
                       "env_gateway: redis (invalidations): no handover");
        return;
    }

    srv = rc->servers->elts;
    bound = ngx_min(srv[rc->current].connect_timeout
                    + srv[rc->current].read_timeout,
                    NGX_ENVGW_HANDOVER_MAX);

    ngx_log_debug1(NGX_LOG_DEBUG_EVENT, rc->log, 0,
                   "env_gateway: redis (invalidations): subscribed until a "
                   "newer worker is, %M ms at most", bound);

    ngx_env_gateway_handover_state = NGX_ENVGW_HANDOVER_WAITING;
    ngx_env_gateway_handover_deadline = ngx_current_msec + bound;

    /* not cancelable: the worker stays while it waits */
    ngx_env_gateway_redis_event(rc, &ngx_env_gateway_handover,
                                ngx_env_gateway_handover_handler);
    ngx_env_gateway_handover.cancelable = 0;

    ngx_env_gateway_handover_handler(&ngx_env_gateway_handover);
}


static void
ngx_env_gateway_handover_handler(ngx_event_t *ev)
{
    const char               *argv[1];
    size_t                    argvlen[1];
    ngx_msec_int_t            left;
    ngx_env_gateway_redis_t  *rc = ev->data;

    if (ngx_env_gateway_inval != rc || !rc->subscribed
        || rc->state != NGX_ENVGW_REDIS_READY)
    {
        /* the subscription was lost meanwhile: nothing to hand over */
        ngx_env_gateway_handover_end(NULL);
        return;
    }

    left = (ngx_msec_int_t) (ngx_env_gateway_handover_deadline
                             - ngx_current_msec);

    if (left <= 0) {
        ngx_env_gateway_handover_end("no newer worker subscribed in time");
        return;
    }

    if (ngx_env_gateway_handover_state == NGX_ENVGW_HANDOVER_WAITING) {

        if (ngx_env_gateway_inval_hooks->successor() != NGX_OK) {
            ngx_add_timer(ev, ngx_min((ngx_msec_t) left,
                                      NGX_ENVGW_HANDOVER_POLL));
            return;
        }

        /*
         * A newer worker is subscribed.  What was published before its
         * SUBSCRIBE is on this connection before the reply to this PING.
         */
        argv[0] = "PING";
        argvlen[0] = 4;

        if (ngx_env_gateway_redis_send(rc, 1, argv, argvlen,
                                       ngx_env_gateway_handover_reply, rc, 0)
            != NGX_OK)
        {
            ngx_env_gateway_handover_end("out of memory");
            return;
        }

        ngx_log_debug0(NGX_LOG_DEBUG_EVENT, rc->log, 0,
                       "env_gateway: redis (invalidations): a newer worker "
                       "is subscribed, last PING");

        ngx_env_gateway_handover_state = NGX_ENVGW_HANDOVER_PING;
    }

    /* the PING's reply, by the deadline still */
    ngx_add_timer(ev, (ngx_msec_t) left);
}


static void
ngx_env_gateway_handover_reply(void *data, redisReply *reply)
{
    if (reply == NULL) {
        /* dropped: unsubscribed already, nothing more to wait for */
        ngx_env_gateway_handover_state = NGX_ENVGW_HANDOVER_DONE;

        if (ngx_env_gateway_handover.timer_set) {
            ngx_del_timer(&ngx_env_gateway_handover);
        }

        return;
    }

    ngx_env_gateway_handover_end(NULL);
}


/* the wait is over: unsubscribed, the worker may exit */
static void
ngx_env_gateway_handover_end(const char *why)
{
    ngx_env_gateway_handover_state = NGX_ENVGW_HANDOVER_DONE;

    if (why) {
        ngx_log_error(NGX_LOG_INFO, ngx_cycle->log, 0,
                      "env_gateway: the invalidation subscription is "
                      "closed, not handed over: %s", why);
    }

    ngx_env_gateway_subscriber_exit();
}
