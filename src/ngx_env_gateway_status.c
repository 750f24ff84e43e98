/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * env_gateway: env_gateway_status, readiness for a load balancer.
 *
 * A JSON document of the answering worker's view: each of its Redis
 * connections (lookups, invalidations, and the Sentinels' when
 * configured) with the server it uses, its state (connected, connecting,
 * down: _health.c) and since when; whether the invalidation subscriber is
 * subscribed; the cache zone's entries and bytes; the worker's pid.
 * Status 200 when lookups can be served (the worker's lookup connection is
 * connected and Redis has given a good reply on it), 503 when not.  An
 * idle lookup connection is asked PING for the next probe (_health.c).  Workers connect on their own: another worker
 * may answer differently for a moment.
 */

#include "ngx_env_gateway_redis.h"

#include <jansson.h>


static json_t *ngx_env_gateway_status_json(ngx_http_request_t *r,
    ngx_uint_t *ready);
static json_t *ngx_env_gateway_status_conn(ngx_env_gateway_redis_t *rc,
    ngx_str_t *role);
static void ngx_env_gateway_status_role(ngx_env_gateway_redis_t *rc,
    u_char *buf, size_t size, ngx_str_t *role);


/* a 405 of the module's own handlers names what they answer */
ngx_int_t
ngx_env_gateway_get_only(ngx_http_request_t *r)
{
    ngx_table_elt_t  *h;

    if (r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD)) {
        return NGX_OK;
    }

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "Allow");
    ngx_str_set(&h->value, "GET, HEAD");
#if (nginx_version >= 1023000)
    h->next = NULL;
#endif

    return NGX_HTTP_NOT_ALLOWED;
}


ngx_int_t
ngx_env_gateway_status_handler(ngx_http_request_t *r)
{
    json_t                  *obj;
    ngx_int_t                rc;
    ngx_str_t                text;
    ngx_buf_t               *b;
    ngx_uint_t               ready;
    ngx_chain_t              out;
    ngx_table_elt_t         *h;
    ngx_env_gateway_text_t   t;

    rc = ngx_env_gateway_get_only(r);
    if (rc != NGX_OK) {
        return rc;
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    ngx_env_gateway_health_probe();

    obj = ngx_env_gateway_status_json(r, &ready);
    if (obj == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_env_gateway_text_init(&t);

    do {
        ngx_env_gateway_text_json(&t, obj, JSON_COMPACT);
        ngx_env_gateway_text_literal(&t, "\n");
    } while ((rc = ngx_env_gateway_text_next(&t, r->pool)) == NGX_AGAIN);

    json_decref(obj);

    if (rc != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_env_gateway_text_string(&t, &text);

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "env_gateway: status, ready %ui, %uz bytes", ready,
                   text.len);

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

    /* a health check must see the state now, never a cached answer */
    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "Cache-Control");
    ngx_str_set(&h->value, "no-store");
#if (nginx_version >= 1023000)
    h->next = NULL;
#endif

    r->headers_out.status = ready ? NGX_HTTP_OK
                                  : NGX_HTTP_SERVICE_UNAVAILABLE;
    r->headers_out.content_length_n = text.len;
    ngx_str_set(&r->headers_out.content_type, "application/json");
    r->headers_out.content_type_len = r->headers_out.content_type.len;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}


/*
 * {"ready":B,"pid":N,"connections":{"lookups":{...},"invalidations":
 * {...,"subscribed":B},...},"cache":{...}|null}
 */
static json_t *
ngx_env_gateway_status_json(ngx_http_request_t *r, ngx_uint_t *ready)
{
    size_t                        bytes[2];
    json_t                       *obj, *conns, *conn, *cache;
    ngx_str_t                     role;
    u_char                        buf[32];
    ngx_uint_t                    i, entries[2];
    ngx_env_gateway_redis_t      *rc;
    ngx_env_gateway_main_conf_t  *gmcf;

    gmcf = ngx_http_get_module_main_conf(r, ngx_env_gateway_module);

    *ready = 0;

    obj = json_object();
    conns = json_object();

    if (obj == NULL || conns == NULL
        || json_object_set_new(obj, "connections", conns) != 0)
    {
        json_decref(obj);
        json_decref(conns);
        return NULL;
    }

    for (i = 0; (rc = ngx_env_gateway_health_conn(i)) != NULL; i++) {
        ngx_env_gateway_status_role(rc, buf, sizeof(buf), &role);

        conn = ngx_env_gateway_status_conn(rc, &role);

        if (conn == NULL
            || json_object_setn_new(conns, (const char *) role.data,
                                    role.len, conn)
               != 0)
        {
            json_decref(obj);
            return NULL;
        }

        /* lookups can be served: the lookup connection answers */
        if (ngx_env_gateway_health_lookups(rc)
            && ngx_env_gateway_health_answering(rc))
        {
            *ready = 1;
        }
    }

    /* a cluster: every primary of the slot map connected (_cluster.c) */
    if (gmcf->cluster) {
        *ready = (ngx_env_gateway_cluster_ready() == 1);
    }

    cache = json_null();

    if (gmcf->cache_zone) {
        ngx_env_gateway_cache_stats(gmcf->cache_zone, entries, bytes);

        cache = json_pack("{s:I,s:I,s:I,s:I,s:I}",
                          "entries", (json_int_t) entries[0],
                          "negative_entries", (json_int_t) entries[1],
                          "bytes", (json_int_t) bytes[0],
                          "negative_bytes", (json_int_t) bytes[1],
                          "zone_bytes",
                          (json_int_t) gmcf->cache_zone->shm.size);
    }

    if (cache == NULL
        || json_object_set_new(obj, "cache", cache) != 0
        || json_object_set_new(obj, "ready", json_boolean(*ready)) != 0
        || json_object_set_new(obj, "pid", json_integer(ngx_pid)) != 0)
    {
        json_decref(obj);
        return NULL;
    }

    return obj;
}


/* {"server":S,"state":S,"since":N[,"subscribed":B,"channel":S]} */
static json_t *
ngx_env_gateway_status_conn(ngx_env_gateway_redis_t *rc, ngx_str_t *role)
{
    json_t                    *conn;
    ngx_env_gateway_server_t  *srv;

    srv = rc->servers->elts;
    srv = &srv[rc->current];

    conn = json_pack("{s:s%,s:s,s:I}",
                     "server", (const char *) srv->name.data, srv->name.len,
                     "state", ngx_env_gateway_health_state(rc),
                     "since", (json_int_t) rc->health.since);

    if (conn == NULL || !rc->subscriber) {
        return conn;
    }

    if (json_object_set_new(conn, "subscribed",
                            json_boolean(rc->subscribed))
        != 0
        || json_object_set_new(conn, "channel",
                               json_stringn((const char *) rc->channel.data,
                                            rc->channel.len))
           != 0)
    {
        json_decref(conn);
        return NULL;
    }

    return conn;
}


/* " (sentinel events)" -> "sentinel_events", into buf */
static void
ngx_env_gateway_status_role(ngx_env_gateway_redis_t *rc, u_char *buf,
    size_t size, ngx_str_t *role)
{
    u_char  *p, *last;
    size_t   n;

    p = (u_char *) rc->role;
    last = p + ngx_strlen(p);

    while (p < last && (*p == ' ' || *p == '(')) {
        p++;
    }

    while (last > p && last[-1] == ')') {
        last--;
    }

    for (n = 0; p < last && n < size; p++, n++) {
        buf[n] = (*p == ' ') ? '_' : *p;
    }

    role->data = buf;
    role->len = n;
}
