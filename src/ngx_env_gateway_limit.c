/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * env_gateway: rate limits per token, account, tenant, environment, team.
 *
 *   env_gateway_limit_zone zone=NAME:SIZE [sync=off|redis]
 *       [sync_interval=100ms];                                  (http)
 *   env_gateway_limit KEY RATE [burst=N];          (http, server, location)
 *
 * Counting: a sliding window counter, the two-fixed-windows estimate of
 * Cloudflare's and nginx's own: windows of W ms aligned on the epoch, a
 * count for the current window and the final count of the one before, and
 *
 *     estimate = prev * (W - elapsed) / W + cur
 *
 * A request is admitted when estimate + 1 <= rate + burst, and only an
 * admitted request is counted (a client refused in a loop still gets its
 * rate).  burst=N admits N requests above the rate in any window: the
 * quota is rate + burst, which is also what RateLimit-Limit announces, so
 * RateLimit-Remaining reaches 0 at the last admitted request.
 *
 * The counters live in one shared zone: an rbtree keyed by a CRC32 of
 * (key kind, window, id), an LRU queue.  Creating a counter first frees
 * up to two counters whose windows are both over (they hold nothing); when
 * the zone is full the least recently used counters are evicted (counted
 * in env_gateway_rate_limit_evictions_total): a key evicted starts again
 * from zero, nothing is refused or let through for it.  If not even an
 * empty zone has room (never with a sane size), the request is refused
 * with 503, never passed.
 *
 * Checks run in two stages of the access check (_access.c): token, team
 * and environment limits once the token and the environment it acts in
 * are known (a 401 or 403 costs nothing), account and tenant limits after
 * the account check.  A stage's limits are decided under one lock, and
 * counted only when all of them admit; a stage runs once per request
 * (not again when the check resumes after a lookup or after an internal
 * redirect).  Windows are wall-clock milliseconds (ngx_timeofday()), so
 * that the nodes of a cluster agree on them.
 *
 * sync=redis: counters touched since the last round are sent to Redis
 * every sync_interval, by one worker of the node (whichever worker's timer
 * claims the interval in the zone first, so the rounds go on whatever
 * worker exits and the node sends one round an interval whatever its
 * number of workers).  A round is INCRBY <key> <count> + PEXPIRE for each
 * counter, queued at once on the worker's Redis connection and so written
 * together (_pipeline.c); INCRBY's reply is the cluster's count of the
 * window, which then replaces what the node knew.  So a counter's current
 * count is remote (the cluster's, as of the last reply) + inflight (sent,
 * not answered) + pending (counted here since).  A round that fails gives
 * its counts back to pending: counting goes on locally, and reaches Redis
 * when it answers again.  The outage is logged once (and its end once),
 * and counted in env_gateway_rate_limit_sync_failures_total.
 */

#include "ngx_env_gateway.h"


#define NGX_ENVGW_LIMIT_SYNC_OFF      0
#define NGX_ENVGW_LIMIT_SYNC_REDIS    1

#define NGX_ENVGW_LIMIT_INTERVAL      100       /* ms */

/* counters of finished windows freed by one insert, before any eviction */
#define NGX_ENVGW_LIMIT_EXPIRE        2

/* evictions one insert may cause before it gives up */
#define NGX_ENVGW_LIMIT_EVICT_MAX     64


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


static ngx_int_t ngx_env_gateway_limit_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);
static ngx_int_t ngx_env_gateway_limit_header_filter(ngx_http_request_t *r);
static void ngx_env_gateway_limit_sync_handler(ngx_event_t *ev);
static void ngx_env_gateway_limit_synced(void *data, redisReply *reply);
static void ngx_env_gateway_limit_refused(ngx_env_gateway_round_t *round,
    redisReply *reply);


static ngx_str_t  ngx_env_gateway_limit_kinds[NGX_ENVGW_LIMIT_NKINDS] = {
    ngx_string("token"),
    ngx_string("account"),
    ngx_string("tenant"),
    ngx_string("environment"),
    ngx_string("team")
};


static const char  *ngx_env_gateway_limit_messages[NGX_ENVGW_LIMIT_NKINDS] = {
    "Too many requests with this token; retry after Retry-After seconds.",
    "Too many requests for this integrated account; retry after "
        "Retry-After seconds.",
    "Too many requests for this tenant; retry after Retry-After seconds.",
    "Too many requests in this environment; retry after Retry-After "
        "seconds.",
    "Too many requests for this team; retry after Retry-After seconds."
};


static ngx_http_output_header_filter_pt  ngx_env_gateway_next_header_filter;

/* the worker's sync: its zone, its timer, its round in flight */
static ngx_env_gateway_limit_zone_t  *ngx_env_gateway_limit_sync_zone;
static ngx_event_t                    ngx_env_gateway_limit_sync_ev;
static ngx_uint_t                     ngx_env_gateway_limit_rounds;


/* ------------------------------------------------------------------ */
/* configuration                                                       */

/*
 * A directive's error as nginx prints it: "<directive>" directive <text>,
 * with the file and line; the text is formatted into the config pool.
 */
static char *
ngx_env_gateway_limit_conf_error(ngx_conf_t *cf, const char *fmt, ...)
{
    u_char   *p, *last;
    va_list   args;

    p = ngx_pnalloc(cf->pool, NGX_MAX_CONF_ERRSTR);
    if (p == NULL) {
        return NGX_CONF_ERROR;
    }

    last = p + NGX_MAX_CONF_ERRSTR - 1;

    va_start(args, fmt);
    last = ngx_vslprintf(p, last, fmt, args);
    va_end(args);

    *last = '\0';

    return (char *) p;
}

/*
 * A rate's window, "10s" (any nginx time), and its requests: both within
 * bounds (NGX_ENVGW_RATE_MAX, NGX_ENVGW_WINDOW_MAX).  Records' rate_limit
 * and the directive share it.
 */
ngx_int_t
ngx_env_gateway_rate_parse(ngx_str_t *window, int64_t requests,
    ngx_env_gateway_rate_t *rate)
{
    ngx_msec_t  ms;

    if (requests < 1 || requests > NGX_ENVGW_RATE_MAX || window->len == 0) {
        return NGX_ERROR;
    }

    if (window->len == 1) {
        /* "r/s", "r/m", "r/h", "r/d": one unit */
        switch (window->data[0]) {
        case 's':
            ms = 1000;
            break;
        case 'm':
            ms = 60 * 1000;
            break;
        case 'h':
            ms = 3600 * 1000;
            break;
        case 'd':
            ms = 86400 * 1000;
            break;
        default:
            return NGX_ERROR;
        }

    } else {
        ms = ngx_parse_time(window, 0);

        if (ms == (ngx_msec_t) NGX_ERROR) {
            return NGX_ERROR;
        }
    }

    if (ms == 0 || ms > NGX_ENVGW_WINDOW_MAX) {
        return NGX_ERROR;
    }

    rate->requests = (uint32_t) requests;
    rate->window = (uint32_t) ms;

    return NGX_OK;
}


/* env_gateway_limit_zone zone=NAME:SIZE [sync=off|redis] [sync_interval=] */
char *
ngx_env_gateway_limit_zone_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_env_gateway_main_conf_t  *gmcf = conf;

    u_char                        *p;
    ssize_t                        size;
    ngx_str_t                     *value, name, s;
    ngx_uint_t                     i;
    ngx_env_gateway_limit_zone_t  *lz;

    if (gmcf->limit_zone) {
        return "is duplicate";
    }

    value = cf->args->elts;

    lz = ngx_pcalloc(cf->pool, sizeof(ngx_env_gateway_limit_zone_t));
    if (lz == NULL) {
        return NGX_CONF_ERROR;
    }

    lz->sync = NGX_ENVGW_LIMIT_SYNC_OFF;
    lz->interval = NGX_ENVGW_LIMIT_INTERVAL;
    lz->prefix = &gmcf->prefix;
    ngx_str_null(&name);
    size = 0;

    for (i = 1; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "zone=", 5) == 0) {
            name.data = value[i].data + 5;
            p = (u_char *) ngx_strchr(name.data, ':');

            if (p == NULL || p == name.data) {
                return ngx_env_gateway_limit_conf_error(cf,
                                   "invalid zone \"%V\": zone=name:size",
                                   &value[i]);
            }

            name.len = p - name.data;
            s.data = p + 1;
            s.len = value[i].data + value[i].len - s.data;

            size = ngx_parse_size(&s);

            if (size == NGX_ERROR) {
                return ngx_env_gateway_limit_conf_error(cf,
                                   "invalid zone size \"%V\"", &value[i]);
            }

            if (size < (ssize_t) (8 * ngx_pagesize)) {
                return ngx_env_gateway_limit_conf_error(cf,
                                   "zone \"%V\" is too small: at least %uzk",
                                   &value[i], 8 * ngx_pagesize / 1024);
            }

            continue;
        }

        if (ngx_strcmp(value[i].data, "sync=off") == 0) {
            lz->sync = NGX_ENVGW_LIMIT_SYNC_OFF;
            continue;
        }

        if (ngx_strcmp(value[i].data, "sync=redis") == 0) {
            lz->sync = NGX_ENVGW_LIMIT_SYNC_REDIS;
            continue;
        }

        if (ngx_strncmp(value[i].data, "sync_interval=", 14) == 0) {
            s.data = value[i].data + 14;
            s.len = value[i].len - 14;

            lz->interval = ngx_parse_time(&s, 0);

            if (lz->interval == (ngx_msec_t) NGX_ERROR
                || lz->interval == 0)
            {
                return ngx_env_gateway_limit_conf_error(cf,
                                   "invalid time \"%V\": a time above 0, "
                                   "like 100ms", &value[i]);
            }

            continue;
        }

        return ngx_env_gateway_limit_conf_error(cf,
                           "unknown parameter \"%V\": zone=, sync=off|redis "
                           "and sync_interval= are known", &value[i]);
    }

    if (name.len == 0) {
        return ngx_env_gateway_limit_conf_error(cf,
                           "needs zone=name:size");
    }

    gmcf->limit_zone = ngx_shared_memory_add(cf, &name, size,
                                             &ngx_env_gateway_module);
    if (gmcf->limit_zone == NULL) {
        return NGX_CONF_ERROR;
    }

    if (gmcf->limit_zone->data) {
        return ngx_env_gateway_limit_conf_error(cf,
                           "zone \"%V\" is already used", &name);
    }

    gmcf->limit_zone->init = ngx_env_gateway_limit_init_zone;
    gmcf->limit_zone->data = lz;

    return NGX_CONF_OK;
}


/* env_gateway_limit token|account|tenant|environment|team RATE [burst=N] */
char *
ngx_env_gateway_limit_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_env_gateway_loc_conf_t  *glcf = conf;

    u_char                   *p, *last;
    ngx_int_t                 n, burst;
    ngx_str_t                *value, window;
    ngx_uint_t                i, kind;
    ngx_env_gateway_rate_t    rate;
    ngx_env_gateway_limit_t  *lim;

    value = cf->args->elts;

    for (kind = 0; kind < NGX_ENVGW_LIMIT_NKINDS; kind++) {
        if (ngx_env_gateway_limit_kinds[kind].len == value[1].len
            && ngx_strncmp(ngx_env_gateway_limit_kinds[kind].data,
                           value[1].data, value[1].len) == 0)
        {
            break;
        }
    }

    if (kind == NGX_ENVGW_LIMIT_NKINDS) {
        return ngx_env_gateway_limit_conf_error(cf,
                           "unknown key \"%V\": token, account, tenant, "
                           "environment or team", &value[1]);
    }

    /* "Nr/s", "Nr/m", "Nr/<nginx time>" */

    p = value[2].data;
    last = p + value[2].len;

    while (p < last && *p >= '0' && *p <= '9') {
        p++;
    }

    n = ngx_atoi(value[2].data, p - value[2].data);

    window.data = p + 2;
    window.len = (last - p > 2) ? (size_t) (last - p - 2) : 0;

    if (n == NGX_ERROR || last - p < 3 || p[0] != 'r' || p[1] != '/'
        || ngx_env_gateway_rate_parse(&window, n, &rate) != NGX_OK)
    {
        return ngx_env_gateway_limit_conf_error(cf,
                           "invalid rate \"%V\": Nr/s, Nr/m or Nr/<time> "
                           "like 500r/10s, with N from 1 to %d and a "
                           "window up to 7d", &value[2], NGX_ENVGW_RATE_MAX);
    }

    burst = 0;

    for (i = 3; i < cf->args->nelts; i++) {
        if (ngx_strncmp(value[i].data, "burst=", 6) == 0) {
            burst = ngx_atoi(value[i].data + 6, value[i].len - 6);

            if (burst == NGX_ERROR || burst > NGX_ENVGW_RATE_MAX) {
                return ngx_env_gateway_limit_conf_error(cf,
                                   "invalid burst \"%V\": a number from 0 "
                                   "to %d", &value[i], NGX_ENVGW_RATE_MAX);
            }

            continue;
        }

        return ngx_env_gateway_limit_conf_error(cf,
                           "unknown parameter \"%V\": burst= is known",
                           &value[i]);
    }

    if (glcf->limits == NULL) {
        glcf->limits = ngx_array_create(cf->pool, 2,
                                        sizeof(ngx_env_gateway_limit_t));
        if (glcf->limits == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    lim = ngx_array_push(glcf->limits);
    if (lim == NULL) {
        return NGX_CONF_ERROR;
    }

    lim->kind = kind;
    lim->rate = rate.requests;
    lim->burst = (uint32_t) burst;
    lim->window = rate.window;
    lim->file = cf->conf_file->file.name;
    lim->line = cf->conf_file->line;

    return NGX_CONF_OK;
}


/*
 * A location's env_gateway_limit lines replace the ones it would inherit
 * (as limit_req's do).  Limits need the zone.
 */
char *
ngx_env_gateway_limit_merge(ngx_conf_t *cf, ngx_env_gateway_loc_conf_t *prev,
    ngx_env_gateway_loc_conf_t *conf)
{
    ngx_env_gateway_limit_t      *lim;
    ngx_env_gateway_main_conf_t  *gmcf;

    if (conf->limits == NULL) {
        conf->limits = prev->limits;
    }

    if (conf->limits == NULL) {
        return NGX_CONF_OK;
    }

    gmcf = ngx_http_conf_get_module_main_conf(cf, ngx_env_gateway_module);

    if (gmcf->limit_zone == NULL) {
        /* found only now, at the end of http{}: point at the directive */
        lim = conf->limits->elts;

        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "\"env_gateway_limit\" needs \"env_gateway_limit_zone\" "
                      "in the http block in %V:%ui", &lim->file, lim->line);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/* postconfiguration: RateLimit-* headers on the responses */
ngx_int_t
ngx_env_gateway_limit_init(ngx_conf_t *cf)
{
    ngx_env_gateway_main_conf_t  *gmcf;

    gmcf = ngx_http_conf_get_module_main_conf(cf, ngx_env_gateway_module);

    if (gmcf->limit_zone == NULL) {
        return NGX_OK;
    }

    ngx_env_gateway_next_header_filter = ngx_http_top_header_filter;
    ngx_http_top_header_filter = ngx_env_gateway_limit_header_filter;

    return NGX_OK;
}


/*
 * Does the token stage, not checked yet, have an environment limit (which
 * the environment record may replace)?
 */
ngx_uint_t
ngx_env_gateway_limit_wants_env(ngx_env_gateway_ctx_t *ctx,
    ngx_env_gateway_loc_conf_t *glcf)
{
    ngx_uint_t                    i;
    ngx_env_gateway_limit_t      *lim;
    ngx_env_gateway_limit_ctx_t  *lc;

    lc = ctx->limit;

    if (glcf->limits == NULL
        || (lc && lc->glcf == glcf
            && (lc->stages & NGX_ENVGW_LIMIT_STAGE_TOKEN)))
    {
        return 0;
    }

    lim = glcf->limits->elts;

    for (i = 0; i < glcf->limits->nelts; i++) {
        if (lim[i].kind == NGX_ENVGW_LIMIT_ENVIRONMENT) {
            return 1;
        }
    }

    return 0;
}


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


static ngx_int_t
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


static uint64_t
ngx_env_gateway_limit_now(void)
{
    ngx_time_t  *tp;

    tp = ngx_timeofday();

    return (uint64_t) tp->sec * 1000 + tp->msec;
}


static uint32_t
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


static ngx_env_gateway_lnode_t *
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
static ngx_env_gateway_lnode_t *
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
static void
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
static ngx_int_t
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


/* ------------------------------------------------------------------ */
/* the check                                                           */

/* the key of a limit kind for this request; NGX_DECLINED: it has none */
static ngx_int_t
ngx_env_gateway_limit_id(ngx_env_gateway_ctx_t *ctx, ngx_uint_t kind,
    ngx_str_t *id1, ngx_str_t *id2)
{
    ngx_str_null(id2);

    switch (kind) {

    case NGX_ENVGW_LIMIT_TOKEN:
        if (ctx->token_id.len) {
            *id1 = ctx->token_id;

        } else {
            /* a record without token_id: its key's hash names it */
            id1->data = ctx->token_hash;
            id1->len = ENVGW_SHA256_HEX_LEN;
        }

        return NGX_OK;

    case NGX_ENVGW_LIMIT_ACCOUNT:
        *id1 = ctx->account_id;
        break;

    case NGX_ENVGW_LIMIT_TENANT:
        /* a tenant_id names a tenant of one environment */
        *id1 = ctx->environment_id;
        *id2 = ctx->tenant_id;

        if (id2->len == 0) {
            return NGX_DECLINED;
        }

        break;

    case NGX_ENVGW_LIMIT_ENVIRONMENT:
        *id1 = ctx->environment_id;
        break;

    default: /* NGX_ENVGW_LIMIT_TEAM */
        *id1 = ctx->team_id;
        break;
    }

    return id1->len ? NGX_OK : NGX_DECLINED;
}


/* a record's rate_limit: NGX_OK and *rate, or NGX_DECLINED for none */
static ngx_int_t
ngx_env_gateway_limit_override(ngx_env_gateway_record_t *rec, ngx_uint_t i,
    ngx_env_gateway_rate_t *rate)
{
    if (rec == NULL || rec->nfields <= i
        || rec->fields[i].len != sizeof(ngx_env_gateway_rate_t))
    {
        return NGX_DECLINED;
    }

    ngx_memcpy(rate, rec->fields[i].data, sizeof(ngx_env_gateway_rate_t));

    return NGX_OK;
}


/*
 * The limits of a stage for this request: the location's lines of the
 * stage's kinds, a record's rate_limit replacing the location's token
 * (environment) lines.  *keys is NULL when none applies.
 */
static ngx_int_t
ngx_env_gateway_limit_keys(ngx_http_request_t *r, ngx_env_gateway_ctx_t *ctx,
    ngx_env_gateway_loc_conf_t *glcf, ngx_uint_t stage,
    ngx_env_gateway_record_t *tok, ngx_env_gateway_record_t *env,
    ngx_env_gateway_limit_key_t **keys, ngx_uint_t *nkeys)
{
    ngx_uint_t                    i, n, kind, over[NGX_ENVGW_LIMIT_NKINDS];
    ngx_env_gateway_rate_t        rate[NGX_ENVGW_LIMIT_NKINDS];
    ngx_env_gateway_limit_t      *lim;
    ngx_env_gateway_limit_key_t  *k;

    *keys = NULL;
    *nkeys = 0;

    lim = glcf->limits->elts;
    n = 0;

    for (i = 0; i < glcf->limits->nelts; i++) {
        kind = lim[i].kind;

        if ((kind == NGX_ENVGW_LIMIT_ACCOUNT || kind == NGX_ENVGW_LIMIT_TENANT)
            == (stage == NGX_ENVGW_LIMIT_STAGE_ACCOUNT))
        {
            n++;
        }
    }

    if (n == 0) {
        return NGX_OK;
    }

    k = ngx_palloc(r->pool, n * sizeof(ngx_env_gateway_limit_key_t));
    if (k == NULL) {
        return NGX_ERROR;
    }

    ngx_memzero(over, sizeof(over));

    if (stage == NGX_ENVGW_LIMIT_STAGE_TOKEN) {
        over[NGX_ENVGW_LIMIT_TOKEN] =
            (ngx_env_gateway_limit_override(tok, NGX_ENVGW_TOK_RATE_LIMIT,
                                        &rate[NGX_ENVGW_LIMIT_TOKEN])
             == NGX_OK);
        over[NGX_ENVGW_LIMIT_ENVIRONMENT] =
            (ngx_env_gateway_limit_override(env, NGX_ENVGW_ENV_RATE_LIMIT,
                                        &rate[NGX_ENVGW_LIMIT_ENVIRONMENT])
             == NGX_OK);
    }

    n = 0;

    for (i = 0; i < glcf->limits->nelts; i++) {
        kind = lim[i].kind;

        if ((kind == NGX_ENVGW_LIMIT_ACCOUNT || kind == NGX_ENVGW_LIMIT_TENANT)
            != (stage == NGX_ENVGW_LIMIT_STAGE_ACCOUNT))
        {
            continue;
        }

        if (ngx_env_gateway_limit_id(ctx, kind, &k[n].id1, &k[n].id2)
            != NGX_OK)
        {
            ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                           "env_gateway: no %V to limit",
                           &ngx_env_gateway_limit_kinds[kind]);
            continue;
        }

        k[n].kind = kind;

        if (over[kind] == 1) {
            /* the record's rate replaces the location's lines: once */
            over[kind] = 2;
            k[n].cap = rate[kind].requests;
            k[n].window = rate[kind].window;

        } else if (over[kind] == 2) {
            continue;

        } else {
            k[n].cap = lim[i].rate + lim[i].burst;
            k[n].window = lim[i].window;
        }

        k[n].hash = ngx_env_gateway_limit_hash(kind, k[n].window, &k[n].id1,
                                               &k[n].id2);
        n++;
    }

    *keys = k;
    *nkeys = n;

    return NGX_OK;
}


/*
 * A request is counted once in a counter, whatever internal redirects and
 * subrequests it makes: the counters its main request (with any of its
 * subrequests, before or after a redirect) counted in are kept with the
 * main request, the keys of this check found there marked.  The set, or
 * NULL on an allocation failure.
 */
static ngx_array_t *
ngx_env_gateway_limit_counted(ngx_http_request_t *r,
    ngx_env_gateway_ctx_t *ctx, ngx_env_gateway_limit_key_t *keys,
    ngx_uint_t nkeys)
{
    ngx_uint_t                    i, j;
    ngx_env_gateway_ctx_t        *mctx;
    ngx_env_gateway_limit_key_t  *c;
    ngx_env_gateway_limit_ctx_t  *mlc;

    mctx = (r == r->main) ? ctx : ngx_env_gateway_get_ctx(r->main);

    if (mctx == NULL) {
        /* a main request the gateway never saw: this request's own set */
        mctx = ctx;
    }

    mlc = mctx->limit;

    if (mlc == NULL) {
        mlc = ngx_pcalloc(r->main->pool, sizeof(ngx_env_gateway_limit_ctx_t));
        if (mlc == NULL) {
            return NULL;
        }

        mctx->limit = mlc;
    }

    if (mlc->counted == NULL) {
        mlc->counted = ngx_array_create(r->main->pool, 2,
                                        sizeof(ngx_env_gateway_limit_key_t));
        if (mlc->counted == NULL) {
            return NULL;
        }
    }

    c = mlc->counted->elts;

    for (i = 0; i < nkeys; i++) {
        keys[i].counted = 0;

        for (j = 0; j < mlc->counted->nelts; j++) {
            if (c[j].hash == keys[i].hash && c[j].kind == keys[i].kind
                && c[j].window == keys[i].window
                && !ngx_env_gateway_str_ne(&c[j].id1, &keys[i].id1)
                && !ngx_env_gateway_str_ne(&c[j].id2, &keys[i].id2))
            {
                ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                               "env_gateway: %V rate limit: this request is "
                               "counted already",
                               &ngx_env_gateway_limit_kinds[keys[i].kind]);

                keys[i].counted = 1;
                break;
            }
        }
    }

    return mlc->counted;
}


/* seconds from milliseconds, rounded up, at least 1 */
static time_t
ngx_env_gateway_limit_sec(uint64_t ms)
{
    return (ms > 1000) ? (time_t) ((ms + 999) / 1000) : 1;
}


/*
 * The limits of a stage (NGX_ENVGW_LIMIT_STAGE_*): NGX_OK when they admit
 * the request (it is counted), NGX_DONE when one refused it (429 sent),
 * NGX_ERROR.
 */
ngx_int_t
ngx_env_gateway_limit_check(ngx_http_request_t *r, ngx_env_gateway_ctx_t *ctx,
    ngx_env_gateway_loc_conf_t *glcf, ngx_uint_t stage,
    ngx_env_gateway_record_t *tok, ngx_env_gateway_record_t *env)
{
    uint64_t                       now, remaining, wait, worst;
    ngx_int_t                      rc;
    ngx_uint_t                     i, nkeys, refused;
    ngx_env_gateway_lnode_t       *n;
    ngx_env_gateway_limit_ctx_t   *lc;
    ngx_array_t                   *counted;
    ngx_env_gateway_limit_key_t   *keys, *k;
    ngx_env_gateway_main_conf_t   *gmcf;
    ngx_env_gateway_limit_zone_t  *lz;

    lc = ctx->limit;

    /* after an internal redirect the limits of the new location count */
    if (lc && lc->glcf != glcf) {
        lc->stages = 0;
        lc->glcf = glcf;
    }

    if (lc && (lc->stages & stage)) {
        return NGX_OK;
    }

    if (ngx_env_gateway_limit_keys(r, ctx, glcf, stage, tok, env, &keys,
                                   &nkeys)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (lc == NULL) {
        lc = ngx_pcalloc(r->pool, sizeof(ngx_env_gateway_limit_ctx_t));
        if (lc == NULL) {
            return NGX_ERROR;
        }

        lc->glcf = glcf;
        ctx->limit = lc;
    }

    lc->stages |= stage;

    if (nkeys == 0) {
        return NGX_OK;
    }

    counted = ngx_env_gateway_limit_counted(r, ctx, keys, nkeys);
    if (counted == NULL) {
        return NGX_ERROR;
    }

    gmcf = ngx_http_get_module_main_conf(r, ngx_env_gateway_module);
    lz = gmcf->limit_zone->data;
    now = ngx_env_gateway_limit_now();
    refused = NGX_ENVGW_LIMIT_NKINDS;
    worst = 0;

    ngx_shmtx_lock(&lz->shpool->mutex);

    /* decide every limit of the stage; count only if all of them admit */

    for (i = 0; i < nkeys; i++) {
        n = ngx_env_gateway_limit_get(lz, &keys[i], now, r->connection->log);
        if (n == NULL) {
            ngx_shmtx_unlock(&lz->shpool->mutex);
            return ngx_env_gateway_refuse(r, ctx, NGX_ENVGW_UNAVAILABLE);
        }

        ngx_env_gateway_limit_roll(n, now);

        rc = ngx_env_gateway_limit_decide(n, keys[i].cap, now,
                                          keys[i].counted, &remaining, &wait);

        if (rc == NGX_BUSY) {
            if (refused == NGX_ENVGW_LIMIT_NKINDS || wait > worst) {
                refused = keys[i].kind;
                worst = wait;
                lc->limit = keys[i].cap;
            }

            /* the next round reads the cluster's count of it */
            if (lz->sync && !n->queued) {
                n->queued = 1;
                ngx_queue_insert_tail(&lz->sh->sync, &n->sync);
            }

            continue;
        }

        if (refused == NGX_ENVGW_LIMIT_NKINDS
            && (!lc->set || remaining < lc->remaining))
        {
            lc->set = 1;
            lc->limit = keys[i].cap;
            lc->remaining = (uint32_t) remaining;
            lc->reset = ngx_env_gateway_limit_sec(wait);
        }
    }

    if (refused == NGX_ENVGW_LIMIT_NKINDS) {
        for (i = 0; i < nkeys; i++) {
            if (keys[i].counted) {
                continue;
            }

            n = ngx_env_gateway_limit_get(lz, &keys[i], now,
                                          r->connection->log);
            if (n == NULL) {
                ngx_shmtx_unlock(&lz->shpool->mutex);
                return ngx_env_gateway_refuse(r, ctx, NGX_ENVGW_UNAVAILABLE);
            }

            ngx_env_gateway_limit_roll(n, now);

            if (n->pending < NGX_MAX_UINT32_VALUE) {
                n->pending++;
            }

            if (lz->sync && !n->queued) {
                n->queued = 1;
                ngx_queue_insert_tail(&lz->sh->sync, &n->sync);
            }
        }
    }

    ngx_shmtx_unlock(&lz->shpool->mutex);

    if (refused == NGX_ENVGW_LIMIT_NKINDS) {
        for (i = 0; i < nkeys; i++) {
            if (keys[i].counted) {
                continue;
            }

            /* the ids copied: the set lives as long as the main request */

            k = ngx_array_push(counted);
            if (k == NULL) {
                return NGX_ERROR;
            }

            *k = keys[i];

            if (k->id1.len) {
                k->id1.data = ngx_pstrdup(r->main->pool, &keys[i].id1);
                if (k->id1.data == NULL) {
                    return NGX_ERROR;
                }
            }

            if (k->id2.len) {
                k->id2.data = ngx_pstrdup(r->main->pool, &keys[i].id2);
                if (k->id2.data == NULL) {
                    return NGX_ERROR;
                }
            }
        }

        ngx_log_debug4(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "env_gateway: %ui rate limits admit, tightest %uD, "
                       "remaining %uD, reset %T",
                       nkeys, lc->limit, lc->remaining, lc->reset);
        return NGX_OK;
    }

    lc->set = 1;
    lc->refused = 1;
    lc->remaining = 0;
    lc->reset = ngx_env_gateway_limit_sec(worst);

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "env_gateway: %V rate limit refuses, retry after %T",
                   &ngx_env_gateway_limit_kinds[refused], lc->reset);

    ngx_env_gateway_metric_inc(NGX_ENVGW_M_LIMITED + refused);

    return ngx_env_gateway_refuse_msg(r, ctx, NGX_ENVGW_RATE_LIMITED,
                                      ngx_env_gateway_limit_messages[refused]);
}


/* ------------------------------------------------------------------ */
/* RateLimit-* headers                                                 */

/* the decimal digits of n, as ngx_env_gateway_text_uint() writes it */
static size_t
ngx_env_gateway_limit_digits(uint64_t n)
{
    size_t  len;

    len = 1;

    while (n >= 10) {
        n /= 10;
        len++;
    }

    return len;
}

/* a header of the gateway's own, its value from the text "v" */
static ngx_int_t
ngx_env_gateway_limit_header(ngx_http_request_t *r, ngx_str_t *name,
    u_char *p, u_char *last)
{
    ngx_table_elt_t  *h;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->hash = 1;
    h->key = *name;
    h->value.data = p;
    h->value.len = last - p;
#if (nginx_version >= 1023000)
    h->next = NULL;
#endif

    return NGX_OK;
}


/*
 * The tightest limit's RateLimit-Limit, -Remaining and -Reset on the
 * response of every request a limit checked, whatever produced it
 * (proxy_pass, another content handler, the gateway's own refusals), and
 * Retry-After on a 429 of the gateway.  Headers of these names from an
 * upstream are replaced.
 */
static ngx_int_t
ngx_env_gateway_limit_header_filter(ngx_http_request_t *r)
{
    u_char                       *p;
    ngx_int_t                     rc;
    ngx_uint_t                    i, retry;
    ngx_list_part_t              *part;
    ngx_table_elt_t              *h;
    ngx_env_gateway_ctx_t        *ctx;
    ngx_env_gateway_text_t        t;
    ngx_env_gateway_limit_ctx_t  *lc;

    static ngx_str_t  limit = ngx_string("RateLimit-Limit");
    static ngx_str_t  remaining = ngx_string("RateLimit-Remaining");
    static ngx_str_t  reset = ngx_string("RateLimit-Reset");
    static ngx_str_t  retry_after = ngx_string("Retry-After");

    if (r != r->main) {
        return ngx_env_gateway_next_header_filter(r);
    }

    ctx = ngx_env_gateway_get_ctx(r);

    if (ctx == NULL || ctx->limit == NULL) {
        return ngx_env_gateway_next_header_filter(r);
    }

    lc = ctx->limit;

    if (!lc->set) {
        return ngx_env_gateway_next_header_filter(r);
    }

    retry = (lc->refused
             && r->headers_out.status == NGX_HTTP_TOO_MANY_REQUESTS);

    /* an upstream's RateLimit-* (and Retry-After) are replaced */

    part = &r->headers_out.headers.part;
    h = part->elts;

    for (i = 0; /* void */ ; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].hash == 0) {
            continue;
        }

        if ((h[i].key.len == limit.len || h[i].key.len == remaining.len)
            && ngx_strncasecmp(h[i].key.data, (u_char *) "ratelimit-", 10)
               == 0)
        {
            if ((h[i].key.len == limit.len
                 && (ngx_strncasecmp(h[i].key.data, limit.data, limit.len)
                     == 0
                     || ngx_strncasecmp(h[i].key.data, reset.data, reset.len)
                        == 0))
                || (h[i].key.len == remaining.len
                    && ngx_strncasecmp(h[i].key.data, remaining.data,
                                       remaining.len)
                       == 0))
            {
                h[i].hash = 0;
            }

        } else if (retry && h[i].key.len == retry_after.len
                   && ngx_strncasecmp(h[i].key.data, retry_after.data,
                                      retry_after.len)
                      == 0)
        {
            h[i].hash = 0;
        }
    }

    /* the three numbers in one text, measured then written */

    ngx_env_gateway_text_init(&t);

    do {
        ngx_env_gateway_text_uint(&t, lc->limit, 0);
        ngx_env_gateway_text_uint(&t, lc->remaining, 0);
        ngx_env_gateway_text_uint(&t, lc->reset, 0);
    } while ((rc = ngx_env_gateway_text_next(&t, r->pool)) == NGX_AGAIN);

    if (rc != NGX_OK) {
        return NGX_ERROR;
    }

    /* split where each number ends: the same digits, counted again */

    p = t.start;

    if (ngx_env_gateway_limit_header(r, &limit, p,
                                     p + ngx_env_gateway_limit_digits(
                                             lc->limit))
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    p += ngx_env_gateway_limit_digits(lc->limit);

    if (ngx_env_gateway_limit_header(r, &remaining, p,
                                     p + ngx_env_gateway_limit_digits(
                                             lc->remaining))
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    p += ngx_env_gateway_limit_digits(lc->remaining);

    if (ngx_env_gateway_limit_header(r, &reset, p, t.pos) != NGX_OK) {
        return NGX_ERROR;
    }

    if (retry && ngx_env_gateway_limit_header(r, &retry_after, p, t.pos)
                 != NGX_OK)
    {
        return NGX_ERROR;
    }

    return ngx_env_gateway_next_header_filter(r);
}


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


/* ------------------------------------------------------------------ */
/* metrics                                                             */

void
ngx_env_gateway_limit_metrics(ngx_env_gateway_text_t *t, ngx_atomic_uint_t *c)
{
    ngx_uint_t  i;

    ngx_env_gateway_text_literal(t,
        "# HELP env_gateway_rate_limited_total Requests refused by a rate "
        "limit, by key.\n"
        "# TYPE env_gateway_rate_limited_total counter\n");

    for (i = 0; i < NGX_ENVGW_LIMIT_NKINDS; i++) {
        ngx_env_gateway_text_literal(t,
                                     "env_gateway_rate_limited_total{key=\"");
        ngx_env_gateway_text_str(t, &ngx_env_gateway_limit_kinds[i]);
        ngx_env_gateway_text_literal(t, "\"} ");
        ngx_env_gateway_text_uint(t, c[NGX_ENVGW_M_LIMITED + i], 0);
        ngx_env_gateway_text_literal(t, "\n");
    }

    ngx_env_gateway_text_literal(t,
        "# HELP env_gateway_rate_limit_evictions_total Rate limit counters "
        "evicted from a full zone.\n"
        "# TYPE env_gateway_rate_limit_evictions_total counter\n"
        "env_gateway_rate_limit_evictions_total ");
    ngx_env_gateway_text_uint(t, c[NGX_ENVGW_M_LIMIT_EVICTIONS], 0);

    ngx_env_gateway_text_literal(t,
        "\n# HELP env_gateway_rate_limit_syncs_total Rounds of counts sent "
        "to Redis (sync=redis).\n"
        "# TYPE env_gateway_rate_limit_syncs_total counter\n"
        "env_gateway_rate_limit_syncs_total ");
    ngx_env_gateway_text_uint(t, c[NGX_ENVGW_M_LIMIT_SYNCS], 0);

    ngx_env_gateway_text_literal(t,
        "\n# HELP env_gateway_rate_limit_sync_failures_total Rounds Redis "
        "did not take: counting went on locally.\n"
        "# TYPE env_gateway_rate_limit_sync_failures_total counter\n"
        "env_gateway_rate_limit_sync_failures_total ");
    ngx_env_gateway_text_uint(t, c[NGX_ENVGW_M_LIMIT_SYNC_FAILURES], 0);
    ngx_env_gateway_text_literal(t, "\n");
}
