/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * env_gateway: sync=redis of the rate limits: every sync_interval one
 * worker of the node sends the counters touched since the last round to
 * Redis (INCRBY + PEXPIRE) and takes the cluster's counts from the
 * replies; a failed round gives its counts back to pending.
 */

#include "ngx_env_gateway_limit.h"


/* a sync round's entry: a counter's count sent with INCRBY */
typedef struct {
    struct ngx_env_gateway_round_s  *round;
    uint32_t                     hash;
    u_char                       kind;
    uint32_t                     window;
    uint64_t                     start;
    uint32_t                     count;
    ngx_str_t                    id1;
    ngx_str_t                    id2;
    ngx_str_t                    key;       /* the Redis key */
    ngx_str_t                    arg;       /* count, then the expiry */
    ngx_str_t                    ttl;
} ngx_env_gateway_sync_entry_t;


typedef struct ngx_env_gateway_round_s {
    ngx_pool_t                  *pool;
    ngx_uint_t                   waiting;   /* replies due */
    ngx_uint_t                   failed;
    ngx_str_t                    refused;   /* Redis's first error reply */
} ngx_env_gateway_round_t;

static void ngx_env_gateway_limit_sync_handler(ngx_event_t *ev);
static void ngx_env_gateway_limit_synced(void *data, redisReply *reply);
static void ngx_env_gateway_limit_refused(ngx_env_gateway_round_t *round,
    redisReply *reply);

/* the worker's sync: its zone, its timer, its round in flight */
static ngx_env_gateway_limit_zone_t  *ngx_env_gateway_limit_sync_zone;
static ngx_event_t                    ngx_env_gateway_limit_sync_ev;
static ngx_uint_t                     ngx_env_gateway_limit_rounds;


/* ------------------------------------------------------------------ */
/* sync=redis                                                          */

ngx_int_t
ngx_env_gateway_limit_init_worker(ngx_cycle_t *cycle,
    ngx_env_gateway_main_conf_t *gmcf)
{
    ngx_event_t                   *ev;
    ngx_env_gateway_limit_zone_t  *lz;

    if (gmcf->limit_zone == NULL) {
        return NGX_OK;
    }

    lz = gmcf->limit_zone->data;

    if (lz->sync != NGX_ENVGW_LIMIT_SYNC_REDIS) {
        return NGX_OK;
    }

    ngx_env_gateway_limit_sync_zone = lz;
    ngx_env_gateway_limit_rounds = 0;

    ev = &ngx_env_gateway_limit_sync_ev;
    ngx_memzero(ev, sizeof(ngx_event_t));
    ev->handler = ngx_env_gateway_limit_sync_handler;
    ev->log = cycle->log;
    ev->data = lz;
    ev->cancelable = 1;

    ngx_add_timer(ev, lz->interval);

    return NGX_OK;
}


/* a round's count not known to have reached Redis goes back to pending */
static void
ngx_env_gateway_limit_unsent(ngx_env_gateway_limit_zone_t *lz,
    ngx_env_gateway_sync_entry_t *e)
{
    ngx_env_gateway_lnode_t  *n;

    n = ngx_env_gateway_limit_find(lz->sh, e->hash, e->kind, e->window,
                                   &e->id1, &e->id2);

    if (n == NULL || n->start != e->start) {
        return;
    }

    n->inflight -= ngx_min(n->inflight, e->count);
    n->pending += e->count;

    if (!n->queued) {
        n->queued = 1;
        ngx_queue_insert_tail(&lz->sh->sync, &n->sync);
    }
}


/* a reply of the round came (or failed); the last one ends the round */
static void
ngx_env_gateway_limit_round_done(ngx_env_gateway_limit_zone_t *lz,
    ngx_env_gateway_round_t *round)
{
    if (--round->waiting) {
        return;
    }

    if (round->failed) {
        ngx_env_gateway_metric_inc(NGX_ENVGW_M_LIMIT_SYNC_FAILURES);

        if (ngx_atomic_cmp_set(&lz->sh->down, 0, 1)) {
            if (round->refused.len) {
                ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                              "env_gateway: rate limit sync: Redis refused "
                              "the round: \"%V\"; the gateway's Redis user "
                              "needs INCRBY and PEXPIRE on keys %V%s*; "
                              "counting on this node only until Redis "
                              "takes the rounds", &round->refused,
                              lz->prefix, ENVGW_KEY_RATELIMIT);

            } else {
                ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                              "env_gateway: rate limit sync: Redis did not "
                              "answer, counting on this node only until it "
                              "does");
            }
        }

    } else if (lz->sh->down && ngx_atomic_cmp_set(&lz->sh->down, 1, 0)) {
        ngx_log_error(NGX_LOG_NOTICE, ngx_cycle->log, 0,
                      "env_gateway: rate limit sync: Redis answers again, "
                      "counting across the cluster");
    }

    ngx_env_gateway_limit_rounds--;
    ngx_destroy_pool(round->pool);
}


/* the Redis key of a round's entry and its arguments, in the round's pool */
static ngx_int_t
ngx_env_gateway_limit_entry_key(ngx_env_gateway_limit_zone_t *lz,
    ngx_pool_t *pool, ngx_env_gateway_sync_entry_t *e)
{
    ngx_int_t               rc;
    ngx_env_gateway_text_t  t;

    ngx_env_gateway_text_init(&t);

    do {
        ngx_env_gateway_text_str(&t, lz->prefix);
        ngx_env_gateway_text_literal(&t, ENVGW_KEY_RATELIMIT);
        ngx_env_gateway_text_str(&t, &ngx_env_gateway_limit_kinds[e->kind]);
        ngx_env_gateway_text_literal(&t, ":");
        ngx_env_gateway_text_str(&t, &e->id1);

        if (e->id2.len) {
            ngx_env_gateway_text_literal(&t, ":");
            ngx_env_gateway_text_str(&t, &e->id2);
        }

        ngx_env_gateway_text_literal(&t, ":");
        ngx_env_gateway_text_uint(&t, e->window, 0);
        ngx_env_gateway_text_literal(&t, ":");
        ngx_env_gateway_text_uint(&t, e->start, 0);
    } while ((rc = ngx_env_gateway_text_next(&t, pool)) == NGX_AGAIN);

    if (rc != NGX_OK) {
        return NGX_ERROR;
    }

    ngx_env_gateway_text_string(&t, &e->key);

    ngx_env_gateway_text_init(&t);

    do {
        ngx_env_gateway_text_uint(&t, e->count, 0);
    } while ((rc = ngx_env_gateway_text_next(&t, pool)) == NGX_AGAIN);

    if (rc != NGX_OK) {
        return NGX_ERROR;
    }

    ngx_env_gateway_text_string(&t, &e->arg);

    /* kept while it can be a previous window, and an interval more */

    ngx_env_gateway_text_init(&t);

    do {
        ngx_env_gateway_text_uint(&t, 2 * (uint64_t) e->window + lz->interval,
                                  0);
    } while ((rc = ngx_env_gateway_text_next(&t, pool)) == NGX_AGAIN);

    if (rc != NGX_OK) {
        return NGX_ERROR;
    }

    ngx_env_gateway_text_string(&t, &e->ttl);

    return NGX_OK;
}


/*
 * An error reply (an ACL user without INCRBY or PEXPIRE: NOPERM) is Redis
 * refusing the round, not Redis down: its first one is kept for the log.
 */
static void
ngx_env_gateway_limit_refused(ngx_env_gateway_round_t *round,
    redisReply *reply)
{
    u_char  *p;

    if (reply == NULL || reply->type != REDIS_REPLY_ERROR
        || reply->len == 0 || round->refused.len)
    {
        return;
    }

    p = ngx_pnalloc(round->pool, reply->len);
    if (p == NULL) {
        return;
    }

    ngx_memcpy(p, reply->str, reply->len);

    round->refused.data = p;
    round->refused.len = reply->len;
}


static void
ngx_env_gateway_limit_expired(void *data, redisReply *reply)
{
    ngx_env_gateway_sync_entry_t  *e = data;

    if (reply && reply->type == REDIS_REPLY_ERROR) {
        /* the counts were taken, but the keys would never expire */
        e->round->failed = 1;
        ngx_env_gateway_limit_refused(e->round, reply);
    }

    ngx_env_gateway_limit_round_done(ngx_env_gateway_limit_sync_zone,
                                     e->round);
}


/* INCRBY's reply: the cluster's count of the counter's window */
static void
ngx_env_gateway_limit_synced(void *data, redisReply *reply)
{
    ngx_env_gateway_sync_entry_t  *e = data;

    uint64_t                       total;
    ngx_env_gateway_lnode_t       *n;
    ngx_env_gateway_limit_zone_t  *lz;

    lz = ngx_env_gateway_limit_sync_zone;

    ngx_shmtx_lock(&lz->shpool->mutex);

    if (reply == NULL || reply->type != REDIS_REPLY_INTEGER
        || reply->integer < 0)
    {
        e->round->failed = 1;
        ngx_env_gateway_limit_refused(e->round, reply);
        ngx_env_gateway_limit_unsent(lz, e);

    } else {
        total = ngx_min((uint64_t) reply->integer, NGX_MAX_UINT32_VALUE);

        n = ngx_env_gateway_limit_find(lz->sh, e->hash, e->kind, e->window,
                                       &e->id1, &e->id2);

        if (n && n->start == e->start) {
            n->inflight -= ngx_min(n->inflight, e->count);

            if (total > n->remote) {
                n->remote = (uint32_t) total;
            }

        } else if (n && n->start == e->start + e->window && total > n->prev) {
            /* the window ended meanwhile: its final count */
            n->prev = (uint32_t) total;
        }
    }

    ngx_shmtx_unlock(&lz->shpool->mutex);

    ngx_env_gateway_limit_round_done(lz, e->round);
}


/*
 * A round: every counter touched since the last one, INCRBY its count
 * (0 for a counter only refused: a read of the cluster's count) and
 * PEXPIRE.  The commands are queued together, so they leave in one write.
 */
static void
ngx_env_gateway_limit_sync(ngx_env_gateway_limit_zone_t *lz, uint64_t now,
    ngx_log_t *log)
{
    size_t                         argvlen[3];
    ngx_int_t                      rc;
    ngx_uint_t                     i, nentries;
    ngx_pool_t                    *pool;
    ngx_array_t                    entries;
    ngx_queue_t                   *q;
    const char                    *argv[3];
    ngx_env_gateway_round_t       *round;
    ngx_env_gateway_lnode_t       *n;
    ngx_env_gateway_sync_entry_t  *e;

    pool = ngx_create_pool(4096, log);
    if (pool == NULL) {
        return;
    }

    round = ngx_pcalloc(pool, sizeof(ngx_env_gateway_round_t));
    if (round == NULL
        || ngx_array_init(&entries, pool, 16,
                          sizeof(ngx_env_gateway_sync_entry_t))
           != NGX_OK)
    {
        ngx_destroy_pool(pool);
        return;
    }

    round->pool = pool;

    ngx_shmtx_lock(&lz->shpool->mutex);

    if (now < lz->sh->next_sync) {
        /* another worker of this node has this interval */
        ngx_shmtx_unlock(&lz->shpool->mutex);
        ngx_destroy_pool(pool);
        return;
    }

    lz->sh->next_sync = now + lz->interval;

    while (!ngx_queue_empty(&lz->sh->sync)) {
        q = ngx_queue_head(&lz->sh->sync);
        n = ngx_queue_data(q, ngx_env_gateway_lnode_t, sync);

        e = ngx_array_push(&entries);
        if (e == NULL) {
            break;
        }

        e->id1.data = ngx_pnalloc(pool, n->len1 + n->len2 + 1);
        if (e->id1.data == NULL) {
            entries.nelts--;
            break;
        }

        ngx_queue_remove(q);
        n->queued = 0;

        ngx_env_gateway_limit_roll(n, now);

        ngx_memcpy(e->id1.data, n->data, n->len1 + n->len2);
        e->id1.len = n->len1;
        e->id2.data = e->id1.data + n->len1;
        e->id2.len = n->len2;
        e->round = round;
        e->hash = n->node.key;
        e->kind = n->kind;
        e->window = n->window;
        e->start = n->start;
        e->count = n->pending;

        n->inflight += n->pending;
        n->pending = 0;
    }

    nentries = entries.nelts;
    e = entries.elts;

    /* what could not be listed goes back, for the next round */
    if (!ngx_queue_empty(&lz->sh->sync)) {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "env_gateway: rate limit sync: out of memory, "
                      "counters left for the next round");
    }

    ngx_shmtx_unlock(&lz->shpool->mutex);

    if (nentries == 0) {
        ngx_destroy_pool(pool);
        return;
    }

    ngx_env_gateway_metric_inc(NGX_ENVGW_M_LIMIT_SYNCS);
    ngx_env_gateway_limit_rounds++;

    /* two replies an entry, and one for this function's own hold */
    round->waiting = 2 * nentries + 1;

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, log, 0,
                   "env_gateway: rate limit sync of %ui counters", nentries);

    for (i = 0; i < nentries; i++) {

        if (ngx_env_gateway_limit_entry_key(lz, pool, &e[i]) != NGX_OK) {
            rc = NGX_ERROR;

        } else {
            argv[0] = "INCRBY";
            argvlen[0] = sizeof("INCRBY") - 1;
            argv[1] = (const char *) e[i].key.data;
            argvlen[1] = e[i].key.len;
            argv[2] = (const char *) e[i].arg.data;
            argvlen[2] = e[i].arg.len;

            rc = ngx_env_gateway_redis_command(3, argv, argvlen,
                                               ngx_env_gateway_limit_synced,
                                               &e[i]);
        }

        if (rc != NGX_OK) {
            /* not sent (Redis is down): both replies are in */
            round->failed = 1;

            ngx_shmtx_lock(&lz->shpool->mutex);
            ngx_env_gateway_limit_unsent(lz, &e[i]);
            ngx_shmtx_unlock(&lz->shpool->mutex);

            round->waiting -= 2;
            continue;
        }

        argv[0] = "PEXPIRE";
        argvlen[0] = sizeof("PEXPIRE") - 1;
        argv[2] = (const char *) e[i].ttl.data;
        argvlen[2] = e[i].ttl.len;

        if (ngx_env_gateway_redis_command(3, argv, argvlen,
                                          ngx_env_gateway_limit_expired,
                                          &e[i])
            != NGX_OK)
        {
            round->waiting--;
        }
    }

    ngx_env_gateway_limit_round_done(lz, round);
}


static void
ngx_env_gateway_limit_sync_handler(ngx_event_t *ev)
{
    ngx_env_gateway_limit_zone_t  *lz = ev->data;

    if (ngx_exiting || ngx_quit || ngx_terminate) {
        return;
    }

    /* a round still waiting for Redis: this worker sends no other */
    if (ngx_env_gateway_limit_rounds == 0) {
        ngx_env_gateway_limit_sync(lz, ngx_env_gateway_limit_now(), ev->log);
    }

    ngx_add_timer(ev, lz->interval);
}

