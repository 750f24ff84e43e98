/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * env_gateway: counters in shared memory (one small zone, summed over all
 * workers by construction) and their Prometheus text exposition.
 * Counters survive a HUP reload, as Prometheus expects of counters.
 */

#include "ngx_env_gateway.h"


typedef struct {
    ngx_atomic_t   c[NGX_ENVGW_M_LAST];
} ngx_env_gateway_shmetrics_t;


static ngx_env_gateway_shmetrics_t  *ngx_env_gateway_metrics;

/* round-trip buckets, microseconds */
static ngx_uint_t  ngx_env_gateway_rtt_le[NGX_ENVGW_RTT_BUCKETS] = {
    100, 250, 500, 1000, 2500, 5000, 10000, 25000, 100000, 500000
};

static const char  *ngx_env_gateway_result_names[NGX_ENVGW_NREFUSALS] = {
    "allowed", "missing_token", "invalid_token",
    "integrated_account_not_found", "missing_integrated_account_id",
    "environment_mismatch", "method_not_found", "method_not_allowed",
    "gateway_unavailable", "invalid_request", "gateway_misconfigured"
};


static ngx_int_t
ngx_env_gateway_metrics_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_slab_pool_t  *shpool;

    if (data) {
        shm_zone->data = data;
        ngx_env_gateway_metrics = data;
        return NGX_OK;
    }

    shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

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


void
ngx_env_gateway_metric_rtt(ngx_uint_t usec)
{
    ngx_uint_t     i;
    ngx_atomic_t  *c;

    if (ngx_env_gateway_metrics == NULL) {
        return;
    }

    for (i = 0; i < NGX_ENVGW_RTT_BUCKETS; i++) {
        if (usec <= ngx_env_gateway_rtt_le[i]) {
            break;
        }
    }

    c = ngx_env_gateway_metrics->c;

    (void) ngx_atomic_fetch_add(&c[NGX_ENVGW_M_RTT_BUCKET + i], 1);
    (void) ngx_atomic_fetch_add(&c[NGX_ENVGW_M_RTT_SUM_US], usec);
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


/*
 * The exposition, from a snapshot of the counters (so that the measuring
 * and the writing pass see the same numbers while workers count on).
 */
static void
ngx_env_gateway_metrics_text(ngx_env_gateway_text_t *t, ngx_atomic_uint_t *c,
    ngx_uint_t *entries, size_t *bytes)
{
    ngx_uint_t  i, cum;

    ngx_env_gateway_text_literal(t,
        "# HELP env_gateway_requests_total Requests checked, by result.\n"
        "# TYPE env_gateway_requests_total counter\n");

    for (i = 0; i < NGX_ENVGW_NREFUSALS; i++) {
        ngx_env_gateway_text_literal(t,
                                     "env_gateway_requests_total{result=\"");
        ngx_env_gateway_text_bytes(t,
            (u_char *) ngx_env_gateway_result_names[i],
            ngx_strlen(ngx_env_gateway_result_names[i]));
        ngx_env_gateway_text_literal(t, "\"} ");
        ngx_env_gateway_text_uint(t, c[NGX_ENVGW_M_REQUESTS + i], 0);
        ngx_env_gateway_text_literal(t, "\n");
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

    cum = 0;

    for (i = 0; i < NGX_ENVGW_RTT_BUCKETS; i++) {
        cum += c[NGX_ENVGW_M_RTT_BUCKET + i];

        ngx_env_gateway_text_literal(t,
            "env_gateway_redis_rtt_seconds_bucket{le=\"");
        ngx_env_gateway_metric_seconds(t, ngx_env_gateway_rtt_le[i]);
        ngx_env_gateway_text_literal(t, "\"} ");
        ngx_env_gateway_text_uint(t, cum, 0);
        ngx_env_gateway_text_literal(t, "\n");
    }

    cum += c[NGX_ENVGW_M_RTT_BUCKET + NGX_ENVGW_RTT_BUCKETS];

    ngx_env_gateway_metric_line(t,
        "env_gateway_redis_rtt_seconds_bucket{le=\"+Inf\"}", cum);

    ngx_env_gateway_text_literal(t, "env_gateway_redis_rtt_seconds_sum ");
    ngx_env_gateway_metric_seconds(t, c[NGX_ENVGW_M_RTT_SUM_US]);
    ngx_env_gateway_text_literal(t, "\n");

    ngx_env_gateway_metric_line(t, "env_gateway_redis_rtt_seconds_count",
                                cum);
}


ngx_int_t
ngx_env_gateway_metrics_handler(ngx_http_request_t *r)
{
    size_t                        bytes[2];
    ngx_int_t                     rc;
    ngx_str_t                     text;
    ngx_buf_t                    *b;
    ngx_uint_t                    i, entries[2];
    ngx_chain_t                   out;
    ngx_atomic_uint_t             c[NGX_ENVGW_M_LAST];
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

    entries[0] = entries[1] = 0;
    bytes[0] = bytes[1] = 0;

    if (gmcf->cache_zone) {
        ngx_env_gateway_cache_stats(gmcf->cache_zone, entries, bytes);
    }

    ngx_env_gateway_text_init(&t);

    do {
        ngx_env_gateway_metrics_text(&t, c, entries, bytes);
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
