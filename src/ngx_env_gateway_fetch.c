/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * env_gateway: record fetches for requests.
 *
 * A request asks for a record by key into one of its slots.  Concurrent
 * requests of a worker asking for the same key share one in-flight GET
 * (coalescing): the in-flight entry keeps a queue of waiting slots and the
 * reply is parsed once, then copied into each waiting request's pool.  A
 * request that goes away unlinks its slots (ngx_env_gateway_waiter_detach),
 * and the in-flight GET completes for nobody.  When a waiter's last slot is
 * answered, its resume event is posted: phases never run from inside the
 * Redis read handler.
 *
 * With env_gateway_cache, the shared zone is asked first: a fresh entry
 * answers at once (no wait, no Redis).  Redis answers are stored (records
 * for ttl, absences for negative_ttl); failures never are.  An expired
 * entry within stale_if_error is kept aside and served, marked STALE, only
 * if Redis then fails.  An answer that was in flight while an invalidation
 * arrived is served but not stored: it may predate the change.
 *
 * A reply above max_record (ngx_env_gateway_redis_oversize) is a record
 * nobody can use: its waiters get MALFORMED (500), and it is never cached.
 */

#include "ngx_env_gateway.h"

#include <hiredis/hiredis.h>


typedef struct {
    ngx_str_node_t      sn;         /* murmur2 of the key, the key */
    ngx_uint_t          kind;
    ngx_atomic_uint_t   epoch;      /* the cache's, when sent */
    ngx_queue_t         waiters;    /* ngx_env_gateway_slot_t */
    uint64_t            start;      /* usec, for the lookup duration */
} ngx_env_gateway_inflight_t;


/*
 * A kind of line a Redis behaviour can repeat for every request (an error
 * answered to every lookup, a stale copy served through an outage): the
 * first is written, then at most one every NGX_ENVGW_FETCH_QUIET ms, each
 * with the count of those left out since the last one written.
 */
#define NGX_ENVGW_FETCH_QUIET  10000   /* ms */

typedef struct {
    ngx_msec_t          logged;     /* when the last one was written */
    ngx_uint_t          skipped;    /* since then */
    unsigned            any:1;
} ngx_env_gateway_quiet_t;


static void ngx_env_gateway_fetch_reply(void *data, redisReply *reply);
static ngx_int_t ngx_env_gateway_fetch_parse(ngx_env_gateway_inflight_t *f,
    redisReply *reply, u_char **blob, size_t *blob_len, ngx_uint_t *kept);
static void ngx_env_gateway_invalidate(ngx_str_t *key);
static void ngx_env_gateway_fetch_subscribed(ngx_uint_t again);
static void ngx_env_gateway_fetch_unsubscribed(void);
static ngx_int_t ngx_env_gateway_fetch_successor(void);
static ngx_uint_t ngx_env_gateway_fetch_quiet(ngx_env_gateway_quiet_t *q,
    ngx_uint_t *skipped);


static ngx_rbtree_t                  ngx_env_gateway_inflight;
static ngx_rbtree_node_t             ngx_env_gateway_inflight_sentinel;
static ngx_env_gateway_main_conf_t  *ngx_env_gateway_gmcf;

static ngx_env_gateway_quiet_t       ngx_env_gateway_quiet_errors;
static ngx_env_gateway_quiet_t       ngx_env_gateway_quiet_stale;

static ngx_env_gateway_subscriber_hooks_t  ngx_env_gateway_fetch_hooks = {
    ngx_env_gateway_invalidate,
    ngx_env_gateway_fetch_subscribed,
    ngx_env_gateway_fetch_unsubscribed,
    ngx_env_gateway_fetch_successor
};


void
ngx_env_gateway_fetch_init(ngx_env_gateway_main_conf_t *gmcf)
{
    ngx_env_gateway_gmcf = gmcf;
    ngx_rbtree_init(&ngx_env_gateway_inflight,
                    &ngx_env_gateway_inflight_sentinel,
                    ngx_str_rbtree_insert_value);

    /* the cache follows the invalidation channel */
    if (gmcf->cache_zone) {
        ngx_env_gateway_subscriber_hooks(&ngx_env_gateway_fetch_hooks);
    }
}


/* a key changed in Redis (key == NULL or "*": anything may have) */
static void
ngx_env_gateway_invalidate(ngx_str_t *key)
{
    ngx_env_gateway_main_conf_t  *gmcf = ngx_env_gateway_gmcf;

    ngx_env_gateway_metric_inc(key ? NGX_ENVGW_M_INVALIDATIONS
                                   : NGX_ENVGW_M_CACHE_FLUSHES);

    if (key == NULL || (key->len == 1 && key->data[0] == '*')) {
        ngx_log_error(NGX_LOG_INFO, ngx_cycle->log, 0,
                      "env_gateway: dropping the whole cache");
        ngx_env_gateway_cache_flush(gmcf->cache_zone);
        return;
    }

    ngx_env_gateway_cache_delete(gmcf->cache_zone, key);
}


/*
 * A re-subscription follows a gap in which messages may have been lost:
 * drop everything.  The first one at worker start needs no drop unless no
 * other process is subscribed (the zone may have been kept over a gap).
 */
static void
ngx_env_gateway_fetch_subscribed(ngx_uint_t again)
{
    if (!ngx_env_gateway_cache_subscribers(ngx_env_gateway_gmcf->cache_zone,
                                           1)
        || again)
    {
        ngx_env_gateway_invalidate(NULL);
    }
}


static void
ngx_env_gateway_fetch_unsubscribed(void)
{
    (void) ngx_env_gateway_cache_subscribers(ngx_env_gateway_gmcf->cache_zone,
                                             0);
}


/* a worker shutting down: has one of a newer configuration subscribed? */
static ngx_int_t
ngx_env_gateway_fetch_successor(void)
{
    return ngx_env_gateway_cache_successor(ngx_env_gateway_gmcf->cache_zone);
}


/* Redis cannot answer: a stale copy, if allowed and kept, or 503 */
static void
ngx_env_gateway_unavailable(ngx_env_gateway_slot_t *slot, ngx_str_t *key)
{
    ngx_uint_t  skipped;

    if (slot->stale) {
        slot->status = NGX_ENVGW_FETCH_FOUND;
        slot->cache = NGX_ENVGW_CACHE_STALE;
        ngx_env_gateway_metric_inc(NGX_ENVGW_M_CACHE_STALE);

        if (ngx_env_gateway_fetch_quiet(&ngx_env_gateway_quiet_stale,
                                        &skipped))
        {
            ngx_log_error(NGX_LOG_WARN,
                          slot->waiter->request->connection->log, 0,
                          "env_gateway: redis unavailable, serving stale "
                          "\"%V\" (%ui more since the last such line, "
                          "written at most every %M s)", key, skipped,
                          (ngx_msec_t) NGX_ENVGW_FETCH_QUIET / 1000);
        }

        return;
    }

    slot->status = NGX_ENVGW_FETCH_UNAVAILABLE;
}


/*
 * Build "<prefix><family><id>[:<id2>]" and fetch it into the slot.
 * Returns NGX_OK when the slot is answered already (for now: Redis is down),
 * NGX_AGAIN when the request must wait, NGX_ERROR on allocation failure.
 */
ngx_int_t
ngx_env_gateway_fetch(ngx_http_request_t *r, ngx_env_gateway_slot_t *slot,
    ngx_uint_t kind, ngx_str_t *family, ngx_str_t *id, ngx_str_t *id2)
{
    u_char                       *p;
    size_t                        len;
    uint32_t                      hash;
    ngx_int_t                     rc;
    ngx_str_t                     key;
    ngx_uint_t                    negative;
    const char                   *argv[2];
    size_t                        argvlen[2];
    ngx_env_gateway_inflight_t   *f;
    ngx_env_gateway_main_conf_t  *gmcf;

    gmcf = ngx_http_get_module_main_conf(r, ngx_env_gateway_module);

    len = gmcf->prefix.len + family->len + id->len;
    if (id2) {
        len += 1 + id2->len;
    }

    key.data = ngx_pnalloc(r->pool, len);
    if (key.data == NULL) {
        return NGX_ERROR;
    }

    p = ngx_cpymem(key.data, gmcf->prefix.data, gmcf->prefix.len);
    p = ngx_cpymem(p, family->data, family->len);
    p = ngx_cpymem(p, id->data, id->len);
    if (id2) {
        *p++ = ':';
        p = ngx_cpymem(p, id2->data, id2->len);
    }
    key.len = p - key.data;

    slot->stale = 0;
    slot->cache = NGX_ENVGW_CACHE_NONE;

    if (gmcf->cache_zone) {
        rc = ngx_env_gateway_cache_get(gmcf->cache_zone, &key, r->pool,
                                       &slot->rec, &negative);

        if (rc == NGX_OK) {
            ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                           "env_gateway: cache %s \"%V\"",
                           negative ? "negative hit" : "hit", &key);

            slot->cache = NGX_ENVGW_CACHE_HIT;
            slot->status = negative ? NGX_ENVGW_FETCH_NOT_FOUND
                                    : NGX_ENVGW_FETCH_FOUND;
            ngx_env_gateway_metric_inc(negative ? NGX_ENVGW_M_CACHE_NEG_HIT
                                                : NGX_ENVGW_M_CACHE_HIT);
            return NGX_OK;
        }

        slot->stale = (rc == NGX_BUSY && gmcf->cache_stale);
        slot->cache = NGX_ENVGW_CACHE_MISS;

        ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "env_gateway: cache miss \"%V\"%s", &key,
                       slot->stale ? ", a stale copy kept aside" : "");
        ngx_env_gateway_metric_inc(NGX_ENVGW_M_CACHE_MISS);
    }

    hash = ngx_murmur_hash2(key.data, key.len);

    f = (ngx_env_gateway_inflight_t *)
            ngx_str_rbtree_lookup(&ngx_env_gateway_inflight, &key, hash);

    if (f == NULL) {
        f = ngx_alloc(sizeof(ngx_env_gateway_inflight_t) + key.len,
                      r->connection->log);
        if (f == NULL) {
            return NGX_ERROR;
        }

        f->sn.str.data = (u_char *) (f + 1);
        f->sn.str.len = key.len;
        ngx_memcpy(f->sn.str.data, key.data, key.len);
        f->kind = kind;
        f->sn.node.key = hash;
        f->epoch = gmcf->cache_zone
                   ? ngx_env_gateway_cache_epoch(gmcf->cache_zone) : 0;
        ngx_queue_init(&f->waiters);
        f->start = ngx_env_gateway_metric_usec();

        argv[0] = "GET";
        argvlen[0] = 3;
        argv[1] = (const char *) f->sn.str.data;
        argvlen[1] = f->sn.str.len;

        rc = ngx_env_gateway_redis_command(2, argv, argvlen,
                                           ngx_env_gateway_fetch_reply, f);

        if (rc != NGX_OK) {
            ngx_free(f);

            if (rc == NGX_ERROR) {
                return NGX_ERROR;
            }

            /* disconnected: answer now rather than queue behind an outage */
            ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                           "env_gateway: redis disconnected, \"%V\" not "
                           "asked", &key);

            ngx_env_gateway_unavailable(slot, &key);
            return NGX_OK;
        }

        ngx_rbtree_insert(&ngx_env_gateway_inflight, &f->sn.node);

        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "env_gateway: GET \"%V\"", &key);

    } else {
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "env_gateway: \"%V\" asked already, waiting for it",
                       &key);
    }

    slot->status = NGX_ENVGW_FETCH_PENDING;
    slot->linked = 1;
    ngx_queue_insert_tail(&f->waiters, &slot->link);
    slot->waiter->pending++;

    return NGX_AGAIN;
}


static void
ngx_env_gateway_fetch_reply(void *data, redisReply *reply)
{
    u_char                      *blob;
    size_t                       blob_len;
    ngx_int_t                    rc;
    ngx_uint_t                   status, evicted, kept, skipped;
    ngx_log_t                   *log;
    ngx_queue_t                 *q;
    ngx_http_request_t          *r;
    ngx_env_gateway_slot_t      *slot;
    ngx_env_gateway_waiter_t    *w;
    ngx_env_gateway_main_conf_t *gmcf;
    ngx_env_gateway_inflight_t  *f = data;

    ngx_rbtree_delete(&ngx_env_gateway_inflight, &f->sn.node);

    ngx_env_gateway_metric_lookup(ngx_env_gateway_metric_usec() - f->start);

    log = ngx_cycle->log;
    blob = NULL;
    blob_len = 0;
    kept = 0;

    if (reply == NULL) {
        status = NGX_ENVGW_FETCH_UNAVAILABLE;

    } else if (reply == &ngx_env_gateway_redis_oversize) {
        /* a misconfiguration (of the record or the limit), not an outage */
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "env_gateway: record \"%V\" is above max_record "
                      "(%uz bytes)", &f->sn.str,
                      ngx_env_gateway_max_record(ngx_env_gateway_gmcf));
        status = NGX_ENVGW_FETCH_MALFORMED;

    } else if (reply->type == REDIS_REPLY_NIL) {
        status = NGX_ENVGW_FETCH_NOT_FOUND;

    } else if (reply->type == REDIS_REPLY_STRING) {
        rc = ngx_env_gateway_fetch_parse(f, reply, &blob, &blob_len, &kept);
        status = (rc == NGX_OK) ? NGX_ENVGW_FETCH_FOUND
                 : (rc == NGX_DECLINED) ? NGX_ENVGW_FETCH_MALFORMED
                 : NGX_ENVGW_FETCH_UNAVAILABLE;

    } else if (reply->type == REDIS_REPLY_ERROR
               && ngx_strncmp(reply->str, "WRONGTYPE", 9) != 0)
    {
        if (ngx_env_gateway_fetch_quiet(&ngx_env_gateway_quiet_errors,
                                        &skipped))
        {
            ngx_log_error(NGX_LOG_ERR, log, 0,
                          "env_gateway: redis error for \"%V\": %*s "
                          "(%ui more since the last such line, written at "
                          "most every %M s)", &f->sn.str, (size_t) reply->len,
                          reply->str, skipped,
                          (ngx_msec_t) NGX_ENVGW_FETCH_QUIET / 1000);
        }

        status = NGX_ENVGW_FETCH_UNAVAILABLE;

    } else {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "env_gateway: malformed record \"%V\": "
                      "not a string value", &f->sn.str);
        status = NGX_ENVGW_FETCH_MALFORMED;
    }

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, log, 0,
                   "env_gateway: \"%V\" answered, status %ui", &f->sn.str,
                   status);

    gmcf = ngx_env_gateway_gmcf;

    evicted = 0;

    if (gmcf->cache_zone) {
        if (status == NGX_ENVGW_FETCH_FOUND) {
            evicted = ngx_env_gateway_cache_put(gmcf->cache_zone, &f->sn.str,
                                                blob, blob_len,
                                                gmcf->cache_ttl,
                                                gmcf->cache_stale, f->epoch);

        } else if (status == NGX_ENVGW_FETCH_NOT_FOUND) {
            evicted = ngx_env_gateway_cache_put(gmcf->cache_zone, &f->sn.str,
                                                NULL, 0,
                                                gmcf->cache_negative_ttl, 0,
                                                f->epoch);

        } else if (status == NGX_ENVGW_FETCH_MALFORMED) {
            /*
             * Redis holds an unusable record: an older copy must not be
             * served stale through a later outage (ttl 0 stores nothing
             * and drops what the key had)
             */
            (void) ngx_env_gateway_cache_put(gmcf->cache_zone, &f->sn.str,
                                             NULL, 0, 0, 0, f->epoch);
        }

        ngx_env_gateway_metric_add(NGX_ENVGW_M_CACHE_EVICTIONS, evicted);
    }

    while (!ngx_queue_empty(&f->waiters)) {
        q = ngx_queue_head(&f->waiters);
        ngx_queue_remove(q);

        slot = ngx_queue_data(q, ngx_env_gateway_slot_t, link);
        slot->linked = 0;
        slot->status = status;

        w = slot->waiter;
        r = w->request;

        if (status == NGX_ENVGW_FETCH_UNAVAILABLE) {
            ngx_env_gateway_unavailable(slot, &f->sn.str);

        } else if (status == NGX_ENVGW_FETCH_FOUND
            && ngx_env_gateway_record_load(r->pool, blob, blob_len,
                                           &slot->rec)
               != NGX_OK)
        {
            slot->status = NGX_ENVGW_FETCH_UNAVAILABLE;
        }

        if (--w->pending == 0) {
            ngx_post_event(&w->resume, &ngx_posted_events);
        }
    }

    if (blob && !kept) {
        ngx_free(blob);
    }

    ngx_free(f);
}


/*
 * The record of a reply as a blob.  Without a shared cache, through the
 * worker's table of records parsed before (_parsed.c): Redis is still
 * asked on every request, so a revocation or any change is seen at once;
 * only the parse of bytes equal to those parsed last time is skipped.
 * With a cache the zone keeps the parsed form for every worker already.
 */
static ngx_int_t
ngx_env_gateway_fetch_parse(ngx_env_gateway_inflight_t *f, redisReply *reply,
    u_char **blob, size_t *blob_len, ngx_uint_t *kept)
{
    *kept = 0;

    if (ngx_env_gateway_gmcf->cache_zone == NULL) {
        return ngx_env_gateway_parsed_record(f->kind, (u_char *) reply->str,
                                             reply->len, ngx_cycle->log,
                                             &f->sn.str, blob, blob_len,
                                             kept);
    }

    return ngx_env_gateway_record_parse(f->kind, (u_char *) reply->str,
                                        reply->len, ngx_cycle->log,
                                        &f->sn.str, blob, blob_len);
}


/* 1: write the line now (*skipped: those left out before it); 0: count it */
static ngx_uint_t
ngx_env_gateway_fetch_quiet(ngx_env_gateway_quiet_t *q, ngx_uint_t *skipped)
{
    if (q->any && ngx_current_msec - q->logged < NGX_ENVGW_FETCH_QUIET) {
        q->skipped++;
        return 0;
    }

    *skipped = q->skipped;

    q->any = 1;
    q->logged = ngx_current_msec;
    q->skipped = 0;

    return 1;
}


void
ngx_env_gateway_waiter_detach(ngx_env_gateway_waiter_t *w)
{
    ngx_uint_t  i;

    for (i = 0; i < NGX_ENVGW_NSLOTS; i++) {
        if (w->slots[i].linked) {
            ngx_queue_remove(&w->slots[i].link);
            w->slots[i].linked = 0;
        }
    }

    w->pending = 0;

    if (w->resume.posted) {
        ngx_delete_posted_event(&w->resume);
    }
}
