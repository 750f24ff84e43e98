/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * env_gateway: rate limits, between their own files (_limit.c,
 * _limit_zone.c, _limit_check.c, _limit_headers.c, _limit_sync.c).
 */

#ifndef NGX_ENV_GATEWAY_LIMIT_H
#define NGX_ENV_GATEWAY_LIMIT_H

#include "ngx_env_gateway.h"


#define NGX_ENVGW_LIMIT_SYNC_OFF      0
#define NGX_ENVGW_LIMIT_SYNC_REDIS    1

#define NGX_ENVGW_LIMIT_INTERVAL      100       /* ms */


/* a env_gateway_limit line */
typedef struct {
    ngx_uint_t                   kind;
    uint32_t                     rate;
    uint32_t                     burst;
    ngx_msec_t                   window;
    ngx_str_t                    file;      /* where the line is */
    ngx_uint_t                   line;
} ngx_env_gateway_limit_t;


/* a counter in the zone */
typedef struct {
    ngx_rbtree_node_t            node;      /* key: the CRC32 */
    ngx_queue_t                  lru;
    ngx_queue_t                  sync;      /* touched since the last round */
    uint64_t                     start;     /* of the current window, ms */
    uint32_t                     window;    /* ms */
    uint32_t                     prev;      /* the window before */
    uint32_t                     remote;    /* the cluster's, from Redis */
    uint32_t                     inflight;  /* sent to Redis, not answered */
    uint32_t                     pending;   /* counted here since */
    uint32_t                     len1;
    uint32_t                     len2;
    u_char                       kind;
    u_char                       queued;    /* on the sync queue */
    u_char                       data[1];   /* id1, then id2 */
} ngx_env_gateway_lnode_t;


typedef struct {
    ngx_rbtree_t                 rbtree;
    ngx_rbtree_node_t            sentinel;
    ngx_queue_t                  lru;
    ngx_queue_t                  sync;
    uint64_t                     next_sync; /* ms: the next round's claim */
    ngx_atomic_t                 down;      /* the sync fails: logged */
} ngx_env_gateway_shlimit_t;


typedef struct {
    ngx_env_gateway_shlimit_t   *sh;
    ngx_slab_pool_t             *shpool;
    ngx_uint_t                   sync;
    ngx_msec_t                   interval;
    ngx_str_t                   *prefix;    /* the key prefix */
} ngx_env_gateway_limit_zone_t;


/* what a request knows of its limits (ctx->limit) */
typedef struct {
    ngx_uint_t                   stages;    /* the stages checked */
    void                        *glcf;      /* ... for this location */
    ngx_array_t                 *counted;   /* the counters it counted in */
    uint32_t                     limit;     /* of the tightest limit */
    uint32_t                     remaining;
    time_t                       reset;     /* seconds */
    unsigned                     set:1;     /* a limit was checked */
    unsigned                     refused:1; /* reset is a Retry-After */
} ngx_env_gateway_limit_ctx_t;


/* a limit that applies to this request: its rate and its key */
typedef struct {
    ngx_uint_t                   kind;
    uint32_t                     cap;       /* rate + burst */
    ngx_msec_t                   window;
    ngx_str_t                    id1;
    ngx_str_t                    id2;
    uint32_t                     hash;
    ngx_uint_t                   counted;   /* by this request before */
} ngx_env_gateway_limit_key_t;


extern ngx_str_t  ngx_env_gateway_limit_kinds[NGX_ENVGW_LIMIT_NKINDS];

/* _limit_zone.c */
ngx_int_t ngx_env_gateway_limit_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);
uint64_t ngx_env_gateway_limit_now(void);
uint32_t ngx_env_gateway_limit_hash(ngx_uint_t kind, ngx_msec_t window,
    ngx_str_t *id1, ngx_str_t *id2);
ngx_env_gateway_lnode_t *ngx_env_gateway_limit_find(
    ngx_env_gateway_shlimit_t *sh, uint32_t hash, ngx_uint_t kind,
    uint32_t window, ngx_str_t *id1, ngx_str_t *id2);
ngx_env_gateway_lnode_t *ngx_env_gateway_limit_get(
    ngx_env_gateway_limit_zone_t *lz, ngx_env_gateway_limit_key_t *k,
    uint64_t now, ngx_log_t *log);
void ngx_env_gateway_limit_roll(ngx_env_gateway_lnode_t *n, uint64_t now);
ngx_int_t ngx_env_gateway_limit_decide(ngx_env_gateway_lnode_t *n,
    uint32_t cap, uint64_t now, ngx_uint_t counted, uint64_t *remaining,
    uint64_t *wait);

#endif /* NGX_ENV_GATEWAY_LIMIT_H */
