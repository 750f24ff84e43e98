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
 */

#include "ngx_env_gateway_redis.h"


#define NGX_ENVGW_PING_INTERVAL       5000


static ngx_int_t ngx_env_gateway_subscriber_connected(
    ngx_env_gateway_redis_t *rc);
static void ngx_env_gateway_subscriber_dropped(ngx_env_gateway_redis_t *rc);
static void ngx_env_gateway_subscriber_reply(void *data, redisReply *reply);
static void ngx_env_gateway_subscriber_ping(ngx_event_t *ev);
static void ngx_env_gateway_inval_message(ngx_env_gateway_redis_t *rc,
    ngx_str_t *key);
static void ngx_env_gateway_inval_subscribed(ngx_env_gateway_redis_t *rc);
static void ngx_env_gateway_inval_unsubscribed(ngx_env_gateway_redis_t *rc);


static ngx_env_gateway_redis_t          *ngx_env_gateway_inval;
static ngx_env_gateway_subscriber_hooks_t  *ngx_env_gateway_inval_hooks;


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
    ngx_env_gateway_redis_connect(rc);

    return NGX_OK;
}


void
ngx_env_gateway_subscriber_exit(void)
{
    ngx_env_gateway_redis_t  *rc;

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
