/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * env_gateway: counters in shared memory (one small zone, summed over all
 * workers by construction) and their Prometheus text exposition.
 * Counters survive a HUP reload, as Prometheus expects of counters.
 */

#include "ngx_env_gateway.h"


/*
 * Request counts by environment: slot 0 is "no environment" (refused
 * before a token was known), then names as workers first count them (a
 * name is written once, under the zone's lock, then marked ready), and the
 * last slot is "other" for names beyond NGX_ENVGW_ENV_LABELS.
 */
#define NGX_ENVGW_ENV_NONE           0
#define NGX_ENVGW_ENV_OTHER          (NGX_ENVGW_ENV_LABELS + 1)
#define NGX_ENVGW_ENV_SLOTS          (NGX_ENVGW_ENV_LABELS + 2)

typedef struct {
    ngx_atomic_t   ready;
    size_t         len;
    u_char         name[NGX_ENVGW_ENV_LABEL_LEN];
    ngx_atomic_t   c[NGX_ENVGW_NREFUSALS];
} ngx_env_gateway_env_metrics_t;


typedef struct {
    ngx_atomic_t                   c[NGX_ENVGW_M_LAST];
    ngx_atomic_t                   nenvs;     /* named slots in use */
    ngx_env_gateway_env_metrics_t  envs[NGX_ENVGW_ENV_SLOTS];
} ngx_env_gateway_shmetrics_t;


static ngx_env_gateway_shmetrics_t  *ngx_env_gateway_metrics;
static ngx_slab_pool_t              *ngx_env_gateway_metrics_pool;

/* this worker's last environment and its slot */
static u_char      ngx_env_gateway_env_last[NGX_ENVGW_ENV_LABEL_LEN];
static size_t      ngx_env_gateway_env_last_len;
static ngx_uint_t  ngx_env_gateway_env_last_slot;

/* round-trip buckets, microseconds */
static ngx_uint_t  ngx_env_gateway_rtt_le[NGX_ENVGW_RTT_BUCKETS] = {
    100, 250, 500, 1000, 2500, 5000, 10000, 25000, 100000, 500000
};

/* lookup durations, microseconds: 0.1 ms .. 1 s */
static ngx_uint_t  ngx_env_gateway_lookup_le[NGX_ENVGW_LOOKUP_BUCKETS] = {
    100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000,
    500000, 1000000
};

static const char  *ngx_env_gateway_result_names[NGX_ENVGW_NREFUSALS] = {
    "allowed", "missing_token", "invalid_token",
    "integrated_account_not_found", "missing_integrated_account_id",
    "environment_mismatch", "method_not_found", "method_not_allowed",
    "gateway_unavailable", "invalid_request", "gateway_misconfigured",
    "rate_limited", "credentials_unavailable"
};


static ngx_int_t
ngx_env_gateway_metrics_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_slab_pool_t  *shpool;

    shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;
    ngx_env_gateway_metrics_pool = shpool;
    ngx_env_gateway_env_last_len = 0;
    ngx_env_gateway_env_last_slot = NGX_ENVGW_ENV_NONE;

    if (data) {
        shm_zone->data = data;
        ngx_env_gateway_metrics = data;
        return NGX_OK;
    }

    if (shm_zone->shm.exists) {
        shm_zone->data = shpool->data;
        ngx_env_gateway_metrics = shpool->data;
        return NGX_OK;
    }

    ngx_env_gateway_metrics = ngx_slab_calloc(shpool,
                                  sizeof(ngx_env_gateway_shmetrics_t));
    if (ngx_env_gateway_metrics == NULL) {
        return NGX_ERROR;
    }

    shpool->data = ngx_env_gateway_metrics;
    shm_zone->data = ngx_env_gateway_metrics;

    return NGX_OK;
}


ngx_int_t
ngx_env_gateway_metrics_create(ngx_conf_t *cf)
{
    ngx_shm_zone_t  *zone;

    static ngx_str_t  name = ngx_string("env_gateway_metrics");

    zone = ngx_shared_memory_add(cf, &name, 8 * ngx_pagesize,
                                 &ngx_env_gateway_module);
    if (zone == NULL) {
        return NGX_ERROR;
    }

    zone->init = ngx_env_gateway_metrics_init_zone;

    return NGX_OK;
}


void
ngx_env_gateway_metric_add(ngx_uint_t i, ngx_uint_t n)
{
    if (ngx_env_gateway_metrics && n) {
        (void) ngx_atomic_fetch_add(&ngx_env_gateway_metrics->c[i], n);
    }
}


/* a histogram observation: its bucket (le[n] is +Inf) and its sum */
static void
ngx_env_gateway_metric_observe(ngx_uint_t *le, ngx_uint_t n,
    ngx_uint_t bucket, ngx_uint_t sum, ngx_uint_t usec)
{
    ngx_uint_t     i;
    ngx_atomic_t  *c;

    if (ngx_env_gateway_metrics == NULL) {
        return;
    }

    for (i = 0; i < n; i++) {
        if (usec <= le[i]) {
            break;
        }
    }

    c = ngx_env_gateway_metrics->c;

    (void) ngx_atomic_fetch_add(&c[bucket + i], 1);
    (void) ngx_atomic_fetch_add(&c[sum], usec);
}


void
ngx_env_gateway_metric_rtt(ngx_uint_t usec)
{
    ngx_env_gateway_metric_observe(ngx_env_gateway_rtt_le,
                                   NGX_ENVGW_RTT_BUCKETS,
                                   NGX_ENVGW_M_RTT_BUCKET,
                                   NGX_ENVGW_M_RTT_SUM_US, usec);
}


/* a monotonic clock for durations, microseconds */
uint64_t
ngx_env_gateway_metric_usec(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);

    return (uint64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}


/* a record lookup asked of Redis, from the GET to its answer or failure */
void
ngx_env_gateway_metric_lookup(ngx_uint_t usec)
{
    ngx_env_gateway_metric_observe(ngx_env_gateway_lookup_le,
                                   NGX_ENVGW_LOOKUP_BUCKETS,
                                   NGX_ENVGW_M_LOOKUP_BUCKET,
                                   NGX_ENVGW_M_LOOKUP_SUM_US, usec);
}


/* the slot of an environment's name among the ready ones, or 0 */
static ngx_uint_t
ngx_env_gateway_env_find(ngx_env_gateway_shmetrics_t *m, ngx_str_t *name)
{
    ngx_uint_t                      i, n;
    ngx_env_gateway_env_metrics_t  *e;

    n = ngx_min((ngx_uint_t) m->nenvs, NGX_ENVGW_ENV_LABELS);

    for (i = 1; i <= n; i++) {
        e = &m->envs[i];

        if (e->ready && e->len == name->len
            && ngx_memcmp(e->name, name->data, name->len) == 0)
        {
            return i;
        }
    }

    return 0;
}


/*
 * The slot of the environment "name": this worker's last one, a ready one,
 * or a new one claimed under the zone's lock; "other" when every slot is
 * taken or the name is too long to be a label.
 */
static ngx_uint_t
ngx_env_gateway_env_slot(ngx_env_gateway_shmetrics_t *m, ngx_str_t *name)
{
    ngx_uint_t                      i;
    ngx_env_gateway_env_metrics_t  *e;

    if (name->len == 0) {
        return NGX_ENVGW_ENV_NONE;
    }

    if (name->len == ngx_env_gateway_env_last_len
        && ngx_memcmp(ngx_env_gateway_env_last, name->data, name->len) == 0)
    {
        return ngx_env_gateway_env_last_slot;
    }

    /*
     * Too long to be a label; or "other", the label of the names beyond
     * those kept: a slot of its own would write every series twice.
     */
    if (name->len > NGX_ENVGW_ENV_LABEL_LEN
        || (name->len == sizeof("other") - 1
            && ngx_strncmp(name->data, "other", sizeof("other") - 1) == 0))
    {
        return NGX_ENVGW_ENV_OTHER;
    }

    i = ngx_env_gateway_env_find(m, name);

    if (i == 0) {
        ngx_shmtx_lock(&ngx_env_gateway_metrics_pool->mutex);

        i = ngx_env_gateway_env_find(m, name);

        if (i == 0 && m->nenvs < NGX_ENVGW_ENV_LABELS) {
            i = m->nenvs + 1;
            e = &m->envs[i];
            ngx_memcpy(e->name, name->data, name->len);
            e->len = name->len;
            ngx_memory_barrier();
            e->ready = 1;
            ngx_memory_barrier();
            m->nenvs = i;
        }

        ngx_shmtx_unlock(&ngx_env_gateway_metrics_pool->mutex);

        if (i == 0) {
            i = NGX_ENVGW_ENV_OTHER;
        }

        ngx_log_debug2(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                       "env_gateway: metrics: environment \"%V\", slot %ui",
                       name, i);
    }

    ngx_memcpy(ngx_env_gateway_env_last, name->data, name->len);
    ngx_env_gateway_env_last_len = name->len;
    ngx_env_gateway_env_last_slot = i;

    return i;
}


/* a checked request: its result (refusal code) in its environment */
void
ngx_env_gateway_metric_request(ngx_str_t *environment, ngx_uint_t result)
{
    ngx_uint_t                    i;
    ngx_env_gateway_shmetrics_t  *m;

    m = ngx_env_gateway_metrics;

    if (m == NULL) {
        return;
    }

    i = ngx_env_gateway_env_slot(m, environment);

    (void) ngx_atomic_fetch_add(&m->envs[i].c[result], 1);
}


/* "<name> <value>\n"; name is a C string (labels included) */
static void
ngx_env_gateway_metric_line(ngx_env_gateway_text_t *t, const char *name,
    uint64_t value)
{
    ngx_env_gateway_text_bytes(t, (u_char *) name, ngx_strlen(name));
    ngx_env_gateway_text_literal(t, " ");
    ngx_env_gateway_text_uint(t, value, 0);
    ngx_env_gateway_text_literal(t, "\n");
}


/* microseconds as seconds: "1.000250" */
static void
ngx_env_gateway_metric_seconds(ngx_env_gateway_text_t *t, uint64_t usec)
{
    ngx_env_gateway_text_uint(t, usec / 1000000, 0);
    ngx_env_gateway_text_literal(t, ".");
    ngx_env_gateway_text_uint(t, usec % 1000000, 6);
}


/* a label value as the text format wants it: \\, \" and \n escaped */
void
ngx_env_gateway_metrics_label(ngx_env_gateway_text_t *t, u_char *p,
    size_t len)
{
    u_char  *last, *start;

    last = p + len;

    for (start = p; p < last; p++) {
        if (*p != '\\' && *p != '"' && *p != '\n') {
            continue;
        }

        ngx_env_gateway_text_bytes(t, start, p - start);

        if (*p == '\n') {
            ngx_env_gateway_text_literal(t, "\\n");

        } else {
            ngx_env_gateway_text_literal(t, "\\");
            ngx_env_gateway_text_bytes(t, p, 1);
        }

        start = p + 1;
    }

    ngx_env_gateway_text_bytes(t, start, p - start);
}


/* "<name>_bucket{le=..}", "_sum" and "_count" of a histogram */
static void
ngx_env_gateway_metric_histogram(ngx_env_gateway_text_t *t, const char *name,
    ngx_uint_t *le, ngx_uint_t n, ngx_atomic_uint_t *bucket,
    ngx_atomic_uint_t sum)
{
    size_t      len;
    ngx_uint_t  i, cum;

    len = ngx_strlen(name);
    cum = 0;

    for (i = 0; i <= n; i++) {
        cum += bucket[i];

        ngx_env_gateway_text_bytes(t, (u_char *) name, len);
        ngx_env_gateway_text_literal(t, "_bucket{le=\"");

        if (i < n) {
            ngx_env_gateway_metric_seconds(t, le[i]);

        } else {
            ngx_env_gateway_text_literal(t, "+Inf");
        }

        ngx_env_gateway_text_literal(t, "\"} ");
        ngx_env_gateway_text_uint(t, cum, 0);
        ngx_env_gateway_text_literal(t, "\n");
    }

    ngx_env_gateway_text_bytes(t, (u_char *) name, len);
    ngx_env_gateway_text_literal(t, "_sum ");
    ngx_env_gateway_metric_seconds(t, sum);
    ngx_env_gateway_text_literal(t, "\n");

    ngx_env_gateway_text_bytes(t, (u_char *) name, len);
    ngx_env_gateway_text_literal(t, "_count ");
    ngx_env_gateway_text_uint(t, cum, 0);
    ngx_env_gateway_text_literal(t, "\n");
}


/*
 * The exposition, from a snapshot of the counters (so that the measuring
 * and the writing pass see the same numbers while workers count on).
 * envs: the environment slots, those not ready skipped ("other" only once
 * it counted something).
 */
static void
ngx_env_gateway_metrics_text(ngx_env_gateway_text_t *t, ngx_atomic_uint_t *c,
    ngx_env_gateway_env_metrics_t *envs, ngx_uint_t *entries, size_t *bytes,
    ngx_uint_t redis_up)
{
    ngx_uint_t                      i, j;
    ngx_env_gateway_env_metrics_t  *e;

    ngx_env_gateway_text_literal(t,
        "# HELP env_gateway_requests_total Requests checked, by "
        "environment and result.\n"
        "# TYPE env_gateway_requests_total counter\n");

    for (j = 0; j < NGX_ENVGW_ENV_SLOTS; j++) {
        e = &envs[j];

        if (!e->ready) {
            continue;
        }

        for (i = 0; i < NGX_ENVGW_NREFUSALS; i++) {
            ngx_env_gateway_text_literal(t,
                "env_gateway_requests_total{environment=\"");
            ngx_env_gateway_metrics_label(t, e->name, e->len);
            ngx_env_gateway_text_literal(t, "\",result=\"");
            ngx_env_gateway_text_bytes(t,
                (u_char *) ngx_env_gateway_result_names[i],
                ngx_strlen(ngx_env_gateway_result_names[i]));
            ngx_env_gateway_text_literal(t, "\"} ");
            ngx_env_gateway_text_uint(t, e->c[i], 0);
            ngx_env_gateway_text_literal(t, "\n");
        }
    }

    ngx_env_gateway_text_literal(t,
        "# HELP env_gateway_cache_lookups_total Cache lookups, by outcome.\n"
        "# TYPE env_gateway_cache_lookups_total counter\n");
    ngx_env_gateway_metric_line(t,
        "env_gateway_cache_lookups_total{outcome=\"hit\"}",
        c[NGX_ENVGW_M_CACHE_HIT]);
    ngx_env_gateway_metric_line(t,
        "env_gateway_cache_lookups_total{outcome=\"negative_hit\"}",
        c[NGX_ENVGW_M_CACHE_NEG_HIT]);
    ngx_env_gateway_metric_line(t,
        "env_gateway_cache_lookups_total{outcome=\"miss\"}",
        c[NGX_ENVGW_M_CACHE_MISS]);
    ngx_env_gateway_metric_line(t,
        "env_gateway_cache_lookups_total{outcome=\"stale\"}",
        c[NGX_ENVGW_M_CACHE_STALE]);

    ngx_env_gateway_text_literal(t,
        "# HELP env_gateway_cache_evictions_total Entries evicted to make "
        "room.\n# TYPE env_gateway_cache_evictions_total counter\n");
    ngx_env_gateway_metric_line(t, "env_gateway_cache_evictions_total",
                                c[NGX_ENVGW_M_CACHE_EVICTIONS]);

    ngx_env_gateway_text_literal(t,
        "# HELP env_gateway_cache_invalidations_total Invalidation "
        "messages handled, once per subscribed worker.\n"
        "# TYPE env_gateway_cache_invalidations_total counter\n");
    ngx_env_gateway_metric_line(t, "env_gateway_cache_invalidations_total",
                                c[NGX_ENVGW_M_INVALIDATIONS]);

    ngx_env_gateway_text_literal(t,
        "# HELP env_gateway_cache_flushes_total Whole-cache drops after "
        "a gap in invalidations.\n"
        "# TYPE env_gateway_cache_flushes_total counter\n");
    ngx_env_gateway_metric_line(t, "env_gateway_cache_flushes_total",
                                c[NGX_ENVGW_M_CACHE_FLUSHES]);

    ngx_env_gateway_text_literal(t,
        "# HELP env_gateway_cache_entries Entries in the cache zone.\n"
        "# TYPE env_gateway_cache_entries gauge\n");
    ngx_env_gateway_metric_line(t,
        "env_gateway_cache_entries{type=\"positive\"}", entries[0]);
    ngx_env_gateway_metric_line(t,
        "env_gateway_cache_entries{type=\"negative\"}", entries[1]);

    ngx_env_gateway_text_literal(t,
        "# HELP env_gateway_cache_bytes Bytes of entries in the cache "
        "zone.\n# TYPE env_gateway_cache_bytes gauge\n");
    ngx_env_gateway_metric_line(t,
        "env_gateway_cache_bytes{type=\"positive\"}", bytes[0]);
    ngx_env_gateway_metric_line(t,
        "env_gateway_cache_bytes{type=\"negative\"}", bytes[1]);

    ngx_env_gateway_text_literal(t,
        "# HELP env_gateway_redis_commands_total Redis commands sent.\n"
        "# TYPE env_gateway_redis_commands_total counter\n");
    ngx_env_gateway_metric_line(t, "env_gateway_redis_commands_total",
                                c[NGX_ENVGW_M_REDIS_COMMANDS]);

    ngx_env_gateway_text_literal(t,
        "# HELP env_gateway_redis_errors_total Redis failures (refused, "
        "closed, error replies).\n"
        "# TYPE env_gateway_redis_errors_total counter\n");
    ngx_env_gateway_metric_line(t, "env_gateway_redis_errors_total",
                                c[NGX_ENVGW_M_REDIS_ERRORS]);

    ngx_env_gateway_text_literal(t,
        "# HELP env_gateway_redis_timeouts_total Redis connect or read "
        "timeouts.\n# TYPE env_gateway_redis_timeouts_total counter\n");
    ngx_env_gateway_metric_line(t, "env_gateway_redis_timeouts_total",
                                c[NGX_ENVGW_M_REDIS_TIMEOUTS]);

    ngx_env_gateway_text_literal(t,
        "# HELP env_gateway_redis_reconnects_total Redis connections "
        "established.\n"
        "# TYPE env_gateway_redis_reconnects_total counter\n");
    ngx_env_gateway_metric_line(t, "env_gateway_redis_reconnects_total",
                                c[NGX_ENVGW_M_REDIS_CONNECTS]);

    ngx_env_gateway_text_literal(t,
        "# HELP env_gateway_redis_rtt_seconds Redis round-trip time.\n"
        "# TYPE env_gateway_redis_rtt_seconds histogram\n");
    ngx_env_gateway_metric_histogram(t, "env_gateway_redis_rtt_seconds",
                                     ngx_env_gateway_rtt_le,
                                     NGX_ENVGW_RTT_BUCKETS,
                                     &c[NGX_ENVGW_M_RTT_BUCKET],
                                     c[NGX_ENVGW_M_RTT_SUM_US]);

    ngx_env_gateway_text_literal(t,
        "# HELP env_gateway_redis_lookup_duration_seconds Record lookups "
        "asked of Redis, from the GET to its answer or failure.\n"
        "# TYPE env_gateway_redis_lookup_duration_seconds histogram\n");
    ngx_env_gateway_metric_histogram(t,
        "env_gateway_redis_lookup_duration_seconds",
        ngx_env_gateway_lookup_le, NGX_ENVGW_LOOKUP_BUCKETS,
        &c[NGX_ENVGW_M_LOOKUP_BUCKET], c[NGX_ENVGW_M_LOOKUP_SUM_US]);

    ngx_env_gateway_text_literal(t,
        "# HELP env_gateway_redis_up Whether the answering worker's lookup "
        "connection to Redis is up.\n"
        "# TYPE env_gateway_redis_up gauge\n");
    ngx_env_gateway_metric_line(t, "env_gateway_redis_up", redis_up);

    ngx_env_gateway_text_literal(t,
        "# HELP env_gateway_last_used_writes_total Token last-use times "
        "written to Redis.\n"
        "# TYPE env_gateway_last_used_writes_total counter\n");
    ngx_env_gateway_metric_line(t, "env_gateway_last_used_writes_total",
                                c[NGX_ENVGW_M_LAST_USED_WRITES]);

    ngx_env_gateway_text_literal(t,
        "# HELP env_gateway_last_used_dropped_total Token uses not "
        "recorded: the table of an interval was full.\n"
        "# TYPE env_gateway_last_used_dropped_total counter\n");
    ngx_env_gateway_metric_line(t, "env_gateway_last_used_dropped_total",
                                c[NGX_ENVGW_M_LAST_USED_DROPPED]);

    ngx_env_gateway_text_literal(t,
        "# HELP env_gateway_last_used_errors_total Last-use writes Redis "
        "refused (read-only replica, ACL) or that failed.\n"
        "# TYPE env_gateway_last_used_errors_total counter\n");
    ngx_env_gateway_metric_line(t, "env_gateway_last_used_errors_total",
                                c[NGX_ENVGW_M_LAST_USED_ERRORS]);

    ngx_env_gateway_limit_metrics(t, c);
    ngx_env_gateway_credentials_metrics(t, c);
}


ngx_int_t
ngx_env_gateway_metrics_handler(ngx_http_request_t *r)
{
    size_t                        bytes[2];
    ngx_int_t                     rc;
    ngx_str_t                     text;
    ngx_buf_t                    *b;
    ngx_uint_t                    i, j, entries[2], redis_up;
    ngx_chain_t                   out;
    ngx_atomic_uint_t             c[NGX_ENVGW_M_LAST];
    ngx_env_gateway_env_metrics_t   envs[NGX_ENVGW_ENV_SLOTS];
    ngx_env_gateway_env_metrics_t  *e;
    ngx_env_gateway_text_t        t;
    ngx_env_gateway_main_conf_t  *gmcf;

    rc = ngx_env_gateway_get_only(r);
    if (rc != NGX_OK) {
        return rc;
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    if (ngx_env_gateway_metrics == NULL) {
        return NGX_HTTP_SERVICE_UNAVAILABLE;
    }

    gmcf = ngx_http_get_module_main_conf(r, ngx_env_gateway_module);

    for (i = 0; i < NGX_ENVGW_M_LAST; i++) {
        c[i] = ngx_env_gateway_metrics->c[i];
    }

    /* the environments: none (""), the named ones ready, "other" if used */
    for (j = 0; j < NGX_ENVGW_ENV_SLOTS; j++) {
        e = &ngx_env_gateway_metrics->envs[j];
        envs[j].ready = (j == NGX_ENVGW_ENV_NONE || e->ready);
        envs[j].len = 0;

        if (envs[j].ready && j != NGX_ENVGW_ENV_NONE) {
            envs[j].len = e->len;
            ngx_memcpy(envs[j].name, e->name, e->len);
        }

        for (i = 0; i < NGX_ENVGW_NREFUSALS; i++) {
            envs[j].c[i] = e->c[i];

            if (j == NGX_ENVGW_ENV_OTHER && e->c[i]) {
                envs[j].ready = 1;
            }
        }
    }

    envs[NGX_ENVGW_ENV_OTHER].len = sizeof("other") - 1;
    ngx_memcpy(envs[NGX_ENVGW_ENV_OTHER].name, "other", sizeof("other") - 1);

    redis_up = ngx_env_gateway_lookups_up();

    entries[0] = entries[1] = 0;
    bytes[0] = bytes[1] = 0;

    if (gmcf->cache_zone) {
        ngx_env_gateway_cache_stats(gmcf->cache_zone, entries, bytes);
    }

    ngx_env_gateway_text_init(&t);

    do {
        ngx_env_gateway_metrics_text(&t, c, envs, entries, bytes, redis_up);
    } while ((rc = ngx_env_gateway_text_next(&t, r->pool)) == NGX_AGAIN);

    if (rc != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_env_gateway_text_string(&t, &text);

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b->start = text.data;
    b->pos = text.data;
    b->last = text.data + text.len;
    b->end = b->last;
    b->temporary = 1;
    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_length_n = text.len;
    ngx_str_set(&r->headers_out.content_type, "text/plain; version=0.0.4");

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}
