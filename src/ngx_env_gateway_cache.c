/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * env_gateway: the shared-memory record cache.
 *
 * One zone for all workers: a hash table keyed by murmur2 of the Redis key
 * (then the key itself), holding parsed record blobs, so a warm hit is a
 * lookup and a memcpy into the request pool: no JSON, no Redis.  A hash
 * table rather than an rbtree: a hit reads the bucket and the entry (its
 * header, key and blob adjacent) instead of a node per tree level, and
 * with thousands of tokens those reads miss the CPU caches (measured with
 * make bench-profile).  Eviction is LRU with a second chance (CLOCK): a
 * hit only marks its entry referenced (moving it to the queue's head would
 * write two other entries); the eviction of a referenced entry moves it
 * to the head unmarked instead, so a used entry outlives a flood of others.
 * A bucket holds at most NGX_ENVGW_BUCKET_MAX entries: keys a client
 * chooses (account ids, unknown tokens cached as negatives) cannot grow a
 * chain that every lookup of that bucket, under the zone's lock, would
 * walk.  A full bucket drops its oldest negative entry for a new one; a
 * bucket full of positives drops its oldest for a positive and does not
 * take a negative (a negative never evicts a positive).
 *
 * The zone remembers where its records came from (the Redis servers,
 * Sentinels or Cluster seeds, db and key prefix): a reload that points the
 * gateway elsewhere empties it, and the workers of the previous
 * configuration, still finishing their requests, no longer store into it.
 *
 * Positive and negative ("no such key") entries live on separate LRU queues
 * and negatives may use at most a quarter of the zone: a flood of unknown
 * tokens evicts other negatives, never a good entry.  Redis errors are
 * never cached.  A full zone evicts the least recently used entries instead
 * of failing, and never logs [crit] (log_nomem off).  The zone survives a
 * HUP reload (same name and size).
 *
 * The zone also lists the processes subscribed to invalidations, each with
 * the generation of its configuration (one more at each reload): the first
 * subscriber with no other one live flushes the zone (a change may have
 * been missed), and a worker of an older configuration, shutting down,
 * stays subscribed until one of a newer one is (_subscriber.c).
 *
 * Times are ngx_current_msec, a monotonic clock shared by all processes.
 */

#include "ngx_env_gateway.h"


#define NGX_ENVGW_SUBSCRIBER_SLOTS   256


/* buckets of the hash table: one per so many bytes of the zone */
#define NGX_ENVGW_CACHE_BYTES_PER_BUCKET  256


typedef struct ngx_env_gateway_cnode_s  ngx_env_gateway_cnode_t;

struct ngx_env_gateway_cnode_s {
    ngx_env_gateway_cnode_t   *next;        /* in its bucket */
    uint32_t                   hash;
    uint32_t                   key_len;     /* the key, in data */
    ngx_queue_t                queue;
    ngx_msec_t                 expires;
    ngx_msec_t                 stale_until;
    uint32_t                   size;        /* its slab chunk, in bytes */
    uint32_t                   blob_len;
    uint8_t                    negative;
    uint8_t                    referenced;  /* hit since queued at head */
    u_char                     data[1];     /* key, then blob (aligned) */
};


/* a process holding a live invalidation subscription */
typedef struct {
    ngx_pid_t                  pid;         /* 0: a free slot */
    ngx_uint_t                 generation;  /* of its configuration */
} ngx_env_gateway_subscriber_t;


typedef struct {
    ngx_env_gateway_cnode_t  **buckets;
    ngx_uint_t                 mask;        /* buckets - 1, a power of 2 */
    ngx_queue_t                lru[2];      /* [0] positive, [1] negative */
    ngx_uint_t                 count[2];
    size_t                     bytes[2];
    size_t                     size;        /* of the zone */

    /* changes dropped so far: an answer asked before one is not stored */
    ngx_atomic_t               epoch;

    /* under the mutex */
    ngx_env_gateway_subscriber_t  subscribers[NGX_ENVGW_SUBSCRIBER_SLOTS];

    /* configurations loaded with the zone: one more on each reload */
    ngx_uint_t                 generation;

    /* ngx_env_gateway_cache_source() of the configuration storing */
    uint32_t                   source;
} ngx_env_gateway_shcache_t;


typedef struct {
    ngx_env_gateway_shcache_t *sh;
    ngx_slab_pool_t           *shpool;
    ngx_env_gateway_main_conf_t  *gmcf;
    uint32_t                   source;      /* of this configuration */
    ngx_uint_t                 generation;  /* sh->generation it got */
} ngx_env_gateway_cache_ctx_t;


#define ngx_env_gateway_cnode_blob(n)                                      \
    ((n)->data + ngx_align((n)->key_len, 8))

/* entries a bucket holds at most */
#define NGX_ENVGW_BUCKET_MAX         8

/* referenced entries one eviction may pass over before it takes one */
#define NGX_ENVGW_SECOND_CHANCES     64

#define NGX_ENVGW_ENTRY_MAX(ctx)     ((ctx)->sh->size / 16)

/* evictions one insert may cause before it gives up (slab fragmentation) */
#define NGX_ENVGW_EVICT_MAX          64

#define ngx_env_gateway_cache_hash(key)                                    \
    ngx_murmur_hash2((key)->data, (key)->len)


/*
 * Where the records come from, as a CRC32: the Redis servers (as written)
 * and their db, the Sentinels and their master's name, Cluster mode, and
 * the key prefix.  Passwords, timeouts and TLS settings do not change
 * what the records say.
 */
static uint32_t
ngx_env_gateway_cache_source(ngx_env_gateway_main_conf_t *gmcf)
{
    uint32_t                   crc;
    ngx_uint_t                 i, k;
    ngx_array_t               *lists[2];
    ngx_env_gateway_server_t  *srv;

    ngx_crc32_init(crc);

    lists[0] = gmcf->servers;
    lists[1] = gmcf->sentinels;

    for (k = 0; k < 2; k++) {
        if (lists[k] == NULL) {
            continue;
        }

        srv = lists[k]->elts;

        for (i = 0; i < lists[k]->nelts; i++) {
            ngx_crc32_update(&crc, srv[i].name.data, srv[i].name.len);
            ngx_crc32_update(&crc, (u_char *) &srv[i].db, sizeof(ngx_int_t));
            ngx_crc32_update(&crc, (u_char *) "\n", 1);
        }

        ngx_crc32_update(&crc, (u_char *) "|", 1);
    }

    ngx_crc32_update(&crc, gmcf->sentinel_name.data, gmcf->sentinel_name.len);
    ngx_crc32_update(&crc, (u_char *) &gmcf->cluster, sizeof(ngx_flag_t));
    ngx_crc32_update(&crc, gmcf->prefix.data, gmcf->prefix.len);
    ngx_crc32_final(crc);

    return crc;
}


ngx_int_t
ngx_env_gateway_cache_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_env_gateway_cache_ctx_t  *octx = data;

    size_t                        len;
    ngx_uint_t                    n;
    ngx_env_gateway_cache_ctx_t  *ctx;

    ctx = shm_zone->data;
    ctx->source = ngx_env_gateway_cache_source(ctx->gmcf);

    if (octx || shm_zone->shm.exists) {
        /* HUP reload: keep the entries, unless they came from elsewhere */
        if (octx) {
            ctx->sh = octx->sh;
            ctx->shpool = octx->shpool;

        } else {
            ctx->shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;
            ctx->sh = ctx->shpool->data;
        }

        /*
         * The workers of older configurations hand over to this one's:
         * its number is taken once the configuration can no longer fail
         * (ngx_env_gateway_cache_generation, at init_module).
         */
        ctx->generation = 0;

        if (ctx->sh->source != ctx->source) {
            ngx_log_error(NGX_LOG_NOTICE, shm_zone->shm.log, 0,
                          "env_gateway: the records' Redis or key prefix "
                          "changed: emptying the cache zone \"%V\"",
                          &shm_zone->shm.name);

            ngx_shmtx_lock(&ctx->shpool->mutex);
            ctx->sh->source = ctx->source;
            ngx_shmtx_unlock(&ctx->shpool->mutex);

            ngx_env_gateway_cache_flush(shm_zone);
        }

        return NGX_OK;
    }

    ctx->shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    ctx->sh = ngx_slab_calloc(ctx->shpool,
                              sizeof(ngx_env_gateway_shcache_t));
    if (ctx->sh == NULL) {
        return NGX_ERROR;
    }

    ctx->shpool->data = ctx->sh;

    /* the largest power of 2 not above the zone's share */
    for (n = 64; n * 2 <= shm_zone->shm.size / NGX_ENVGW_CACHE_BYTES_PER_BUCKET;
         n *= 2)
    {
        /* void */
    }

    ctx->sh->buckets = ngx_slab_calloc(ctx->shpool,
                                       n * sizeof(ngx_env_gateway_cnode_t *));
    if (ctx->sh->buckets == NULL) {
        return NGX_ERROR;
    }

    ctx->sh->mask = n - 1;

    ngx_queue_init(&ctx->sh->lru[0]);
    ngx_queue_init(&ctx->sh->lru[1]);
    ctx->sh->size = shm_zone->shm.size;
    ctx->sh->source = ctx->source;
    ctx->sh->generation = 0;
    ctx->generation = 0;

    len = sizeof(" in env_gateway_cache zone \"\"") + shm_zone->shm.name.len;

    ctx->shpool->log_ctx = ngx_slab_alloc(ctx->shpool, len);
    if (ctx->shpool->log_ctx == NULL) {
        return NGX_ERROR;
    }

    ngx_sprintf(ctx->shpool->log_ctx, " in env_gateway_cache zone \"%V\"%Z",
                &shm_zone->shm.name);

    ctx->shpool->log_nomem = 0;

    return NGX_OK;
}


ngx_int_t
ngx_env_gateway_cache_create(ngx_conf_t *cf, ngx_env_gateway_main_conf_t *gmcf,
    ngx_str_t *name, size_t size)
{
    ngx_env_gateway_cache_ctx_t  *ctx;

    ctx = ngx_pcalloc(cf->pool, sizeof(ngx_env_gateway_cache_ctx_t));
    if (ctx == NULL) {
        return NGX_ERROR;
    }

    gmcf->cache_zone = ngx_shared_memory_add(cf, name, size,
                                             &ngx_env_gateway_module);
    if (gmcf->cache_zone == NULL) {
        return NGX_ERROR;
    }

    if (gmcf->cache_zone->data) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "zone \"%V\" is already used", name);
        return NGX_ERROR;
    }

    gmcf->cache_zone->init = ngx_env_gateway_cache_init_zone;
    ctx->gmcf = gmcf;
    gmcf->cache_zone->data = ctx;

    return NGX_OK;
}


static ngx_env_gateway_cnode_t *
ngx_env_gateway_cache_find(ngx_env_gateway_shcache_t *sh, ngx_str_t *key,
    uint32_t hash)
{
    ngx_env_gateway_cnode_t  *n;

    for (n = sh->buckets[hash & sh->mask]; n; n = n->next) {
        if (n->hash == hash && n->key_len == key->len
            && ngx_memcmp(n->data, key->data, key->len) == 0)
        {
            return n;
        }
    }

    return NULL;
}


static void
ngx_env_gateway_cache_remove(ngx_env_gateway_cache_ctx_t *ctx,
    ngx_env_gateway_cnode_t *n)
{
    ngx_env_gateway_cnode_t  **pn;

    for (pn = &ctx->sh->buckets[n->hash & ctx->sh->mask];
         *pn != n;
         pn = &(*pn)->next)
    {
        /* void */
    }

    *pn = n->next;

    ngx_queue_remove(&n->queue);
    ctx->sh->count[n->negative]--;
    ctx->sh->bytes[n->negative] -= n->size;
    ngx_slab_free_locked(ctx->shpool, n);
}


/* drop the least recently used entry of a class; 0 if there was none */
static ngx_uint_t
ngx_env_gateway_cache_evict(ngx_env_gateway_cache_ctx_t *ctx,
    ngx_uint_t negative)
{
    ngx_uint_t                chances;
    ngx_queue_t              *q;
    ngx_env_gateway_cnode_t  *n;

    if (ngx_queue_empty(&ctx->sh->lru[negative])) {
        return 0;
    }

    for (chances = NGX_ENVGW_SECOND_CHANCES; /* void */ ; chances--) {
        q = ngx_queue_last(&ctx->sh->lru[negative]);
        n = ngx_queue_data(q, ngx_env_gateway_cnode_t, queue);

        if (!n->referenced || chances == 0) {
            break;
        }

        n->referenced = 0;
        ngx_queue_remove(q);
        ngx_queue_insert_head(&ctx->sh->lru[negative], q);
    }

    ngx_env_gateway_cache_remove(ctx, n);

    return 1;
}


/*
 * What the slab allocator takes for an entry: a power of 2 (at least its
 * smallest chunk) up to half a page, whole pages above.  Quotas and the
 * bytes reported count this, not the bytes asked for: 138 bytes of a
 * negative entry hold a chunk of 256.
 */
static size_t
ngx_env_gateway_cache_chunk(ngx_slab_pool_t *shpool, size_t size)
{
    size_t  chunk;

    if (size > ngx_pagesize / 2) {
        return ngx_align(size, ngx_pagesize);
    }

    for (chunk = shpool->min_size; chunk < size; chunk <<= 1) {
        /* void */
    }

    return chunk;
}


/*
 * Look a key up.  NGX_OK: a fresh entry (a positive one is loaded into rec;
 * *negative tells which).  NGX_BUSY: only a stale positive entry, loaded
 * into rec, usable if Redis fails.  NGX_DECLINED: nothing usable.
 */
ngx_int_t
ngx_env_gateway_cache_get(ngx_shm_zone_t *zone, ngx_str_t *key,
    ngx_pool_t *pool, ngx_env_gateway_record_t *rec, ngx_uint_t *negative)
{
    uint32_t                      hash;
    ngx_int_t                     rc;
    ngx_msec_t                    now;
    ngx_env_gateway_cnode_t      *n;
    ngx_env_gateway_cache_ctx_t  *ctx;

    ctx = zone->data;
    hash = ngx_env_gateway_cache_hash(key);
    now = ngx_current_msec;

    ngx_shmtx_lock(&ctx->shpool->mutex);

    n = ngx_env_gateway_cache_find(ctx->sh, key, hash);

    if (n == NULL) {
        ngx_shmtx_unlock(&ctx->shpool->mutex);
        return NGX_DECLINED;
    }

    if ((ngx_msec_int_t) (n->expires - now) > 0) {
        rc = NGX_OK;

        if (!n->referenced) {
            n->referenced = 1;
        }

    } else if (!n->negative && (ngx_msec_int_t) (n->stale_until - now) > 0) {
        rc = NGX_BUSY;

    } else {
        ngx_env_gateway_cache_remove(ctx, n);
        ngx_shmtx_unlock(&ctx->shpool->mutex);

        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                       "env_gateway: cache: \"%V\" expired, removed", key);

        return NGX_DECLINED;
    }

    *negative = n->negative;

    if (!n->negative
        && ngx_env_gateway_record_load(pool, ngx_env_gateway_cnode_blob(n),
                                       n->blob_len, rec)
           != NGX_OK)
    {
        rc = NGX_DECLINED;
    }

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    return rc;
}


/*
 * Store a positive entry (blob) or a negative one (blob == NULL), unless a
 * change was dropped since epoch (ngx_env_gateway_cache_epoch() when the
 * answer was asked for): the answer may predate it.  The key's older entry
 * is dropped in any case.  Returns how many entries were evicted to make
 * room.
 */
ngx_uint_t
ngx_env_gateway_cache_put(ngx_shm_zone_t *zone, ngx_str_t *key,
    u_char *blob, size_t blob_len, ngx_msec_t ttl, ngx_msec_t stale,
    ngx_atomic_uint_t epoch)
{
    size_t                        size, chunk;
    uint32_t                      hash;
    ngx_uint_t                    negative, evicted, tries, chain;
    ngx_env_gateway_cnode_t      *n, *last, *last_negative;
    ngx_env_gateway_cache_ctx_t  *ctx;

    ctx = zone->data;
    hash = ngx_env_gateway_cache_hash(key);
    negative = (blob == NULL);

    size = offsetof(ngx_env_gateway_cnode_t, data) + ngx_align(key->len, 8)
           + blob_len;

    ngx_shmtx_lock(&ctx->shpool->mutex);

    /*
     * Whatever is cached for the key is older than this answer: dropped
     * even when the answer is not stored (ttl 0, too large, changed while
     * asked for), or stale_if_error would serve it (a revoked token's
     * older record) after Redis gave a newer one.
     */
    n = ngx_env_gateway_cache_find(ctx->sh, key, hash);
    if (n) {
        ngx_env_gateway_cache_remove(ctx, n);
    }

    /* a worker of a previous configuration, its records from elsewhere */
    if (ttl == 0 || ctx->sh->source != ctx->source) {
        ngx_shmtx_unlock(&ctx->shpool->mutex);
        return 0;
    }

    if (ctx->sh->epoch != epoch) {
        ngx_shmtx_unlock(&ctx->shpool->mutex);

        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                       "env_gateway: cache: \"%V\" changed while asked for, "
                       "not stored", key);
        return 0;
    }

    /*
     * An entry that could only fit by emptying most of the zone is not
     * worth it: serve it uncached rather than evict everyone else.  (The
     * only size limit here; sizes are kept in 32 bits, far above any
     * max_record.)
     */
    if (size > NGX_ENVGW_ENTRY_MAX(ctx) || size > NGX_MAX_UINT32_VALUE) {
        ngx_shmtx_unlock(&ctx->shpool->mutex);

        ngx_log_debug2(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                       "env_gateway: cache: an entry of %uz bytes is above "
                       "1/16 of the zone, not stored (\"%V\")", size, key);
        return 0;
    }

    chunk = ngx_env_gateway_cache_chunk(ctx->shpool, size);

    evicted = 0;

    /* a full bucket (newest first) drops its oldest negative entry */
    chain = 0;
    last = NULL;
    last_negative = NULL;

    for (n = ctx->sh->buckets[hash & ctx->sh->mask]; n; n = n->next) {
        chain++;
        last = n;

        if (n->negative) {
            last_negative = n;
        }
    }

    if (chain >= NGX_ENVGW_BUCKET_MAX) {

        if (last_negative) {
            last = last_negative;

        } else if (negative) {
            goto full;
        }

        ngx_log_debug2(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                       "env_gateway: cache: bucket full, \"%*s\" dropped",
                       (size_t) last->key_len, last->data);

        ngx_env_gateway_cache_remove(ctx, last);
        evicted++;
    }

    /* negatives stay within a quarter of the zone, evicting each other */
    if (negative) {
        while (ctx->sh->bytes[1] + chunk > ctx->sh->size / 4) {
            if (!ngx_env_gateway_cache_evict(ctx, 1)) {
                break;
            }

            evicted++;
        }
    }

    for (tries = 0; /* void */; tries++) {
        n = ngx_slab_alloc_locked(ctx->shpool, size);
        if (n) {
            break;
        }

        if (tries == NGX_ENVGW_EVICT_MAX) {
            goto full;
        }

        /* a negative never evicts a positive entry */
        if (ngx_env_gateway_cache_evict(ctx, 1)) {
            evicted++;
            continue;
        }

        if (negative || !ngx_env_gateway_cache_evict(ctx, 0)) {
            goto full;
        }

        evicted++;
    }

    n->hash = hash;
    n->expires = ngx_current_msec + ttl;
    n->stale_until = n->expires + stale;
    n->referenced = 0;
    n->size = chunk;
    n->key_len = key->len;
    n->negative = negative;
    n->blob_len = blob_len;
    ngx_memcpy(n->data, key->data, key->len);

    if (blob_len) {
        ngx_memcpy(ngx_env_gateway_cnode_blob(n), blob, blob_len);
    }

    /* shared memory: the same address in every process */
    n->next = ctx->sh->buckets[hash & ctx->sh->mask];
    ctx->sh->buckets[hash & ctx->sh->mask] = n;
    ngx_queue_insert_head(&ctx->sh->lru[negative], &n->queue);
    ctx->sh->count[negative]++;
    ctx->sh->bytes[negative] += chunk;

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    ngx_log_debug4(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "env_gateway: cache: stored \"%V\" (%s, %uz bytes), "
                   "%ui evicted", key, negative ? "negative" : "positive",
                   size, evicted);

    return evicted;

full:

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "env_gateway: cache: no room for \"%V\", %ui evicted",
                   key, evicted);

    return evicted;
}


void
ngx_env_gateway_cache_delete(ngx_shm_zone_t *zone, ngx_str_t *key)
{
    ngx_env_gateway_cnode_t      *n;
    ngx_env_gateway_cache_ctx_t  *ctx;

    ctx = zone->data;

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "env_gateway: cache: dropping \"%V\"", key);

    ngx_shmtx_lock(&ctx->shpool->mutex);

    /* first the epoch: an answer asked for before is not stored after */
    (void) ngx_atomic_fetch_add(&ctx->sh->epoch, 1);

    n = ngx_env_gateway_cache_find(ctx->sh, key,
                                   ngx_env_gateway_cache_hash(key));
    if (n) {
        ngx_env_gateway_cache_remove(ctx, n);
    }

    ngx_shmtx_unlock(&ctx->shpool->mutex);
}


/* after a gap in invalidations, nothing cached can be known to be fresh */
void
ngx_env_gateway_cache_flush(ngx_shm_zone_t *zone)
{
    ngx_uint_t                    i;
    ngx_queue_t                  *q;
    ngx_env_gateway_cnode_t      *n;
    ngx_env_gateway_cache_ctx_t  *ctx;

    ctx = zone->data;

    ngx_shmtx_lock(&ctx->shpool->mutex);

    (void) ngx_atomic_fetch_add(&ctx->sh->epoch, 1);

    for (i = 0; i < 2; i++) {
        while (!ngx_queue_empty(&ctx->sh->lru[i])) {
            q = ngx_queue_head(&ctx->sh->lru[i]);
            n = ngx_queue_data(q, ngx_env_gateway_cnode_t, queue);
            ngx_env_gateway_cache_remove(ctx, n);
        }
    }

    ngx_shmtx_unlock(&ctx->shpool->mutex);
}


void
ngx_env_gateway_cache_stats(ngx_shm_zone_t *zone, ngx_uint_t *entries,
    size_t *bytes)
{
    ngx_env_gateway_cache_ctx_t  *ctx;

    ctx = zone->data;

    ngx_shmtx_lock(&ctx->shpool->mutex);
    entries[0] = ctx->sh->count[0];
    entries[1] = ctx->sh->count[1];
    bytes[0] = ctx->sh->bytes[0];
    bytes[1] = ctx->sh->bytes[1];
    ngx_shmtx_unlock(&ctx->shpool->mutex);
}


ngx_atomic_uint_t
ngx_env_gateway_cache_epoch(ngx_shm_zone_t *zone)
{
    ngx_env_gateway_cache_ctx_t  *ctx;

    ctx = zone->data;

    return ctx->sh->epoch;
}


/* a process that registered is alive (its slot is freed if not) */
static ngx_uint_t
ngx_env_gateway_cache_alive(ngx_env_gateway_subscriber_t *slot)
{
    if (kill(slot->pid, 0) == 0 || ngx_errno != NGX_ESRCH) {
        return 1;
    }

    /* a crashed process' slot */
    slot->pid = 0;

    return 0;
}


/*
 * add: register this process as subscribed to the zone's invalidations and
 * tell whether another live process is subscribed too (then no change was
 * missed meanwhile); !add: unregister.  Slots of crashed processes are
 * recognised by kill(0).
 */
ngx_uint_t
ngx_env_gateway_cache_subscribers(ngx_shm_zone_t *zone, ngx_uint_t add)
{
    ngx_uint_t                     i, other, mine;
    ngx_env_gateway_subscriber_t  *s;
    ngx_env_gateway_cache_ctx_t   *ctx;

    ctx = zone->data;
    s = ctx->sh->subscribers;
    other = 0;
    mine = 0;

    ngx_shmtx_lock(&ctx->shpool->mutex);

    for (i = 0; i < NGX_ENVGW_SUBSCRIBER_SLOTS; i++) {

        if (s[i].pid == ngx_pid) {
            if (!add) {
                s[i].pid = 0;
            }

            mine = 1;
            continue;
        }

        if (s[i].pid == 0) {
            if (add && !mine) {
                s[i].pid = ngx_pid;
                s[i].generation = ctx->generation;
                mine = 1;
            }

            continue;
        }

        if (ngx_env_gateway_cache_alive(&s[i])) {
            other = 1;
        }
    }

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "env_gateway: cache: %s subscribers (configuration %ui), "
                   "another one live: %ui", add ? "joined the" : "left the",
                   ctx->generation, other);

    return other;
}


/*
 * The configuration that uses the zone is the newest: called at
 * init_module, after its listening sockets are open, when a reload can no
 * longer fail (ngx_init_cycle), so that a reload that fails leaves the
 * workers of the running configuration nobody to wait for.
 */
void
ngx_env_gateway_cache_generation(ngx_shm_zone_t *zone)
{
    ngx_env_gateway_cache_ctx_t  *ctx;

    ctx = zone->data;

    ngx_shmtx_lock(&ctx->shpool->mutex);
    ctx->generation = ++ctx->sh->generation;
    ngx_shmtx_unlock(&ctx->shpool->mutex);
}


/*
 * Asked by a worker shutting down gracefully, still subscribed: has a
 * process of a newer configuration subscribed?  NGX_OK: yes, this one may
 * leave.  NGX_AGAIN: a newer configuration was loaded (a reload), none of
 * its processes has subscribed yet.  NGX_DECLINED: no newer configuration
 * uses the zone (nginx -s quit, a binary upgrade, a reload that dropped or
 * renamed the zone): nobody is coming.
 */
ngx_int_t
ngx_env_gateway_cache_successor(ngx_shm_zone_t *zone)
{
    ngx_int_t                      rc;
    ngx_uint_t                     i;
    ngx_env_gateway_subscriber_t  *s;
    ngx_env_gateway_cache_ctx_t   *ctx;

    ctx = zone->data;
    s = ctx->sh->subscribers;

    ngx_shmtx_lock(&ctx->shpool->mutex);

    if (ctx->sh->generation == ctx->generation) {
        rc = NGX_DECLINED;
        goto done;
    }

    rc = NGX_AGAIN;

    for (i = 0; i < NGX_ENVGW_SUBSCRIBER_SLOTS; i++) {

        if (s[i].pid == 0 || s[i].pid == ngx_pid
            || s[i].generation <= ctx->generation)
        {
            continue;
        }

        if (ngx_env_gateway_cache_alive(&s[i])) {
            rc = NGX_OK;
            break;
        }
    }

done:

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "env_gateway: cache: a subscriber of a configuration "
                   "newer than %ui: %i", ctx->generation, rc);

    return rc;
}
