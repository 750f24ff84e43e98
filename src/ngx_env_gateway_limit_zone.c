/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * env_gateway: the rate limits' shared zone: the counters, an rbtree keyed
 * by a CRC32 of (kind, window, ids) and an LRU queue, made, freed and
 * evicted; and the sliding window decision on one counter.
 * See ngx_env_gateway_limit.c for how limits count.
 */

#include "ngx_env_gateway_limit.h"


/* counters of finished windows freed by one insert, before any eviction */
#define NGX_ENVGW_LIMIT_EXPIRE        2

/* evictions one insert may cause before it gives up */
#define NGX_ENVGW_LIMIT_EVICT_MAX     64


/* ------------------------------------------------------------------ */
/* the zone                                                            */

/*
 * The order of counters of one hash: kind, window, the ids' lengths, the
 * ids' bytes.  0: the same key.
 */
static ngx_int_t
ngx_env_gateway_limit_cmp(ngx_uint_t kind, uint32_t window, ngx_str_t *id1,
    ngx_str_t *id2, ngx_env_gateway_lnode_t *n)
{
    ngx_int_t  rc;

    if (kind != n->kind) {
        return (kind < n->kind) ? -1 : 1;
    }

    if (window != n->window) {
        return (window < n->window) ? -1 : 1;
    }

    if (id1->len != n->len1) {
        return (id1->len < n->len1) ? -1 : 1;
    }

    if (id2->len != n->len2) {
        return (id2->len < n->len2) ? -1 : 1;
    }

    rc = ngx_memcmp(id1->data, n->data, id1->len);

    if (rc == 0 && id2->len) {
        rc = ngx_memcmp(id2->data, n->data + id1->len, id2->len);
    }

    return rc;
}


static void
ngx_env_gateway_limit_rbtree_insert(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel)
{
    ngx_str_t                  id1, id2;
    ngx_rbtree_node_t        **p;
    ngx_env_gateway_lnode_t   *n;

    n = (ngx_env_gateway_lnode_t *) node;

    id1.data = n->data;
    id1.len = n->len1;
    id2.data = n->data + n->len1;
    id2.len = n->len2;

    for ( ;; ) {

        if (node->key < temp->key) {
            p = &temp->left;

        } else if (node->key > temp->key) {
            p = &temp->right;

        } else { /* node->key == temp->key */
            p = (ngx_env_gateway_limit_cmp(n->kind, n->window, &id1, &id2,
                                           (ngx_env_gateway_lnode_t *) temp)
                 < 0)
                ? &temp->left : &temp->right;
        }

        if (*p == sentinel) {
            break;
        }

        temp = *p;
    }

    *p = node;
    node->parent = temp;
    node->left = sentinel;
    node->right = sentinel;
    ngx_rbt_red(node);
}


ngx_int_t
ngx_env_gateway_limit_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_env_gateway_limit_zone_t  *olz = data;

    size_t                         len;
    ngx_env_gateway_limit_zone_t  *lz;

    lz = shm_zone->data;

    if (olz) {
        /* HUP reload: keep the counters */
        lz->sh = olz->sh;
        lz->shpool = olz->shpool;
        return NGX_OK;
    }

    lz->shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (shm_zone->shm.exists) {
        lz->sh = lz->shpool->data;
        return NGX_OK;
    }

    lz->sh = ngx_slab_calloc(lz->shpool, sizeof(ngx_env_gateway_shlimit_t));
    if (lz->sh == NULL) {
        return NGX_ERROR;
    }

    lz->shpool->data = lz->sh;

    ngx_rbtree_init(&lz->sh->rbtree, &lz->sh->sentinel,
                    ngx_env_gateway_limit_rbtree_insert);
    ngx_queue_init(&lz->sh->lru);
    ngx_queue_init(&lz->sh->sync);

    len = sizeof(" in env_gateway_limit_zone \"\"") + shm_zone->shm.name.len;

    lz->shpool->log_ctx = ngx_slab_alloc(lz->shpool, len);
    if (lz->shpool->log_ctx == NULL) {
        return NGX_ERROR;
    }

    ngx_sprintf(lz->shpool->log_ctx, " in env_gateway_limit_zone \"%V\"%Z",
                &shm_zone->shm.name);

    /* a full zone evicts: no [crit] line for it */
    lz->shpool->log_nomem = 0;

    return NGX_OK;
}


uint64_t
ngx_env_gateway_limit_now(void)
{
    ngx_time_t  *tp;

    tp = ngx_timeofday();

    return (uint64_t) tp->sec * 1000 + tp->msec;
}


uint32_t
ngx_env_gateway_limit_hash(ngx_uint_t kind, ngx_msec_t window, ngx_str_t *id1,
    ngx_str_t *id2)
{
    u_char    k;
    uint32_t  crc, w;

    k = (u_char) kind;
    w = (uint32_t) window;

    ngx_crc32_init(crc);
    ngx_crc32_update(&crc, &k, 1);
    ngx_crc32_update(&crc, (u_char *) &w, sizeof(uint32_t));
    ngx_crc32_update(&crc, id1->data, id1->len);
    ngx_crc32_update(&crc, (u_char *) "\n", 1);
    ngx_crc32_update(&crc, id2->data, id2->len);
    ngx_crc32_final(crc);

    return crc;
}


ngx_env_gateway_lnode_t *
ngx_env_gateway_limit_find(ngx_env_gateway_shlimit_t *sh, uint32_t hash,
    ngx_uint_t kind, uint32_t window, ngx_str_t *id1, ngx_str_t *id2)
{
    ngx_int_t           rc;
    ngx_rbtree_node_t  *node, *sentinel;

    node = sh->rbtree.root;
    sentinel = sh->rbtree.sentinel;

    while (node != sentinel) {

        if (hash < node->key) {
            node = node->left;
            continue;
        }

        if (hash > node->key) {
            node = node->right;
            continue;
        }

        /* hash == node->key */

        rc = ngx_env_gateway_limit_cmp(kind, window, id1, id2,
                                       (ngx_env_gateway_lnode_t *) node);

        if (rc == 0) {
            return (ngx_env_gateway_lnode_t *) node;
        }

        node = (rc < 0) ? node->left : node->right;
    }

    return NULL;
}


static void
ngx_env_gateway_limit_free(ngx_env_gateway_limit_zone_t *lz,
    ngx_env_gateway_lnode_t *n)
{
    ngx_rbtree_delete(&lz->sh->rbtree, &n->node);
    ngx_queue_remove(&n->lru);

    if (n->queued) {
        ngx_queue_remove(&n->sync);
    }

    ngx_slab_free_locked(lz->shpool, n);
}


/*
 * A full zone evicts its least recently used counter.  One whose window
 * still counts makes its key start again from zero, so the zone is too
 * small for its keys: said once per worker, at warn, for the operator.
 */
static void
ngx_env_gateway_limit_evict(ngx_env_gateway_limit_zone_t *lz,
    ngx_env_gateway_lnode_t *n, uint64_t now, ngx_log_t *log)
{
    static ngx_uint_t  warned;

    if (!warned && now < n->start + 2 * (uint64_t) n->window) {
        warned = 1;
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "env_gateway: env_gateway_limit_zone is full: "
                      "counters whose windows still count are evicted and "
                      "their keys start again from zero; make the zone "
                      "larger (env_gateway_rate_limit_evictions_total)");
    }

    ngx_env_gateway_limit_free(lz, n);

    ngx_env_gateway_metric_inc(NGX_ENVGW_M_LIMIT_EVICTIONS);
}


/*
 * A counter for the key, found or made.  Making one first frees up to
 * NGX_ENVGW_LIMIT_EXPIRE counters whose windows are both over, then
 * evicts the least recently used while the zone has no room.
 */
ngx_env_gateway_lnode_t *
ngx_env_gateway_limit_get(ngx_env_gateway_limit_zone_t *lz,
    ngx_env_gateway_limit_key_t *k, uint64_t now, ngx_log_t *log)
{
    size_t                    size;
    ngx_uint_t                i;
    ngx_queue_t              *q;
    ngx_env_gateway_lnode_t  *n;

    n = ngx_env_gateway_limit_find(lz->sh, k->hash, k->kind,
                                   (uint32_t) k->window, &k->id1, &k->id2);
    if (n) {
        ngx_queue_remove(&n->lru);
        ngx_queue_insert_head(&lz->sh->lru, &n->lru);
        return n;
    }

    for (i = 0; i < NGX_ENVGW_LIMIT_EXPIRE; i++) {
        if (ngx_queue_empty(&lz->sh->lru)) {
            break;
        }

        q = ngx_queue_last(&lz->sh->lru);
        n = ngx_queue_data(q, ngx_env_gateway_lnode_t, lru);

        if (now < n->start + 2 * (uint64_t) n->window) {
            break;
        }

        ngx_env_gateway_limit_free(lz, n);
    }

    size = offsetof(ngx_env_gateway_lnode_t, data) + k->id1.len + k->id2.len;

    for (i = 0; /* void */ ; i++) {
        n = ngx_slab_alloc_locked(lz->shpool, size);

        if (n) {
            break;
        }

        if (i == NGX_ENVGW_LIMIT_EVICT_MAX
            || ngx_queue_empty(&lz->sh->lru))
        {
            ngx_log_error(NGX_LOG_ERR, log, 0,
                          "env_gateway: no room for a rate limit counter "
                          "of %uz bytes in env_gateway_limit_zone", size);
            return NULL;
        }

        q = ngx_queue_last(&lz->sh->lru);
        ngx_env_gateway_limit_evict(lz,
            ngx_queue_data(q, ngx_env_gateway_lnode_t, lru), now, log);
    }

    ngx_memzero(n, offsetof(ngx_env_gateway_lnode_t, data));

    n->node.key = k->hash;
    n->kind = (u_char) k->kind;
    n->window = (uint32_t) k->window;
    n->start = now - now % k->window;
    n->len1 = (uint32_t) k->id1.len;
    n->len2 = (uint32_t) k->id2.len;
    ngx_memcpy(n->data, k->id1.data, k->id1.len);

    if (k->id2.len) {
        /* no ngx_memcpy() from the NULL data of an empty id */
        ngx_memcpy(n->data + k->id1.len, k->id2.data, k->id2.len);
    }

    ngx_rbtree_insert(&lz->sh->rbtree, &n->node);
    ngx_queue_insert_head(&lz->sh->lru, &n->lru);

    return n;
}


/* the count of a counter's current window */
#define ngx_env_gateway_limit_cur(n)                                       \
    ((uint64_t) (n)->remote + (n)->inflight + (n)->pending)


/* into the window "now" is in: the current count becomes the previous */
void
ngx_env_gateway_limit_roll(ngx_env_gateway_lnode_t *n, uint64_t now)
{
    uint64_t  start, cur;

    start = now - now % n->window;

    if (start == n->start) {
        return;
    }

    cur = ngx_env_gateway_limit_cur(n);

    n->prev = (start == n->start + n->window)
              ? (uint32_t) ngx_min(cur, NGX_MAX_UINT32_VALUE) : 0;
    n->start = start;
    n->remote = 0;
    n->inflight = 0;
    n->pending = 0;
}


/*
 * The decision of one limit on one counter, "now" in its current window.
 * The estimate is kept multiplied by the window (no division until the
 * answer): est = prev * (W - elapsed) + cur * W.  NGX_OK with the
 * remaining quota after this request, or NGX_BUSY with the milliseconds
 * until one more request would be admitted.
 */
ngx_int_t
ngx_env_gateway_limit_decide(ngx_env_gateway_lnode_t *n, uint32_t cap,
    uint64_t now, ngx_uint_t counted, uint64_t *remaining, uint64_t *wait)
{
    uint64_t  w, elapsed, prev, cur, est, need, own;

    w = n->window;
    elapsed = now - n->start;
    prev = n->prev;
    cur = ngx_env_gateway_limit_cur(n);

    est = prev * (w - elapsed) + cur * w;

    /* a request counted in this counter before is in the estimate */
    own = counted ? 0 : w;

    if (est + own <= (uint64_t) cap * w) {
        *remaining = ((uint64_t) cap * w - est - own) / w;
        *wait = w - elapsed;
        return NGX_OK;
    }

    if (cur < cap) {
        /* the previous window's weight decays below the quota in time */
        need = w - ((uint64_t) (cap - 1 - cur) * w) / prev;
        *wait = (need > elapsed) ? need - elapsed : 1;

    } else {
        /* the next window, this one's count as its previous */
        need = (cap - 1 >= cur) ? 0 : w - ((uint64_t) (cap - 1) * w) / cur;
        *wait = (w - elapsed) + need;
    }

    *remaining = 0;

    return NGX_BUSY;
}

