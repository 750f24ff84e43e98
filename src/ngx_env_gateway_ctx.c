/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * env_gateway: the request's context.  It lives in the request pool; a
 * pool cleanup unlinks its slots from the in-flight fetches, so nothing
 * outside the request refers to it once the request is gone.  The
 * context survives internal redirects (index, try_files, error_page,
 * rewrite ... last, named locations) through that cleanup, as
 * ngx_http_realip_module's does; its records arriving resume the phases.
 */

#include "ngx_env_gateway.h"


static void ngx_env_gateway_cleanup(void *data);
static void ngx_env_gateway_resume(ngx_event_t *ev);


/*
 * The request's context, also after an internal redirect, which clears
 * every module's context: it is found again through its pool cleanup.  A
 * subrequest shares its parent's pool, so the waiter's request tells whose
 * context it is.
 */
ngx_env_gateway_ctx_t *
ngx_env_gateway_get_ctx(ngx_http_request_t *r)
{
    ngx_pool_cleanup_t        *cln;
    ngx_env_gateway_ctx_t     *ctx;
    ngx_env_gateway_waiter_t  *w;

    ctx = ngx_http_get_module_ctx(r, ngx_env_gateway_module);

    if (ctx || !r->internal) {
        return ctx;
    }

    for (cln = r->pool->cleanup; cln; cln = cln->next) {
        if (cln->handler != ngx_env_gateway_cleanup) {
            continue;
        }

        w = cln->data;

        if (w->request == r) {
            ctx = (ngx_env_gateway_ctx_t *)
                      ((u_char *) w - offsetof(ngx_env_gateway_ctx_t, waiter));
            ngx_http_set_ctx(r, ctx, ngx_env_gateway_module);

            /*
             * Redirected while its body was being read: nginx gave up on
             * the body (413, 400, a timeout) and sent the request to an
             * error_page.  The body will never be here.
             */
            if (ctx->body_reading && !ctx->body_read) {
                ctx->body_failed = 1;
            }

            ctx->redirected = 1;

            return ctx;
        }
    }

    return NULL;
}


ngx_env_gateway_ctx_t *
ngx_env_gateway_create_ctx(ngx_http_request_t *r)
{
    ngx_uint_t              i;
    ngx_pool_cleanup_t     *cln;
    ngx_env_gateway_ctx_t  *ctx;

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_env_gateway_ctx_t));
    if (ctx == NULL) {
        return NULL;
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NULL;
    }

    cln->handler = ngx_env_gateway_cleanup;
    cln->data = &ctx->waiter;

    ctx->waiter.request = r;
    ctx->waiter.resume.handler = ngx_env_gateway_resume;
    ctx->waiter.resume.data = &ctx->waiter;
    ctx->waiter.resume.log = r->connection->log;

    for (i = 0; i < NGX_ENVGW_NSLOTS; i++) {
        ctx->waiter.slots[i].waiter = &ctx->waiter;
    }

    ngx_http_set_ctx(r, ctx, ngx_env_gateway_module);

    return ctx;
}


/*
 * Check a request that passed once again, for the settings of the
 * location an internal redirect took it to: the credential was read (and
 * hidden) before, so its token record is kept; everything else is read
 * again from the request and fetched again (from the cache, usually).
 */
void
ngx_env_gateway_ctx_reset(ngx_env_gateway_ctx_t *ctx)
{
    ngx_uint_t               i;
    ngx_env_gateway_slot_t  *slot;

    /*
     * A record fetched ahead and not needed by the first check (the
     * environment a request names with its token's own) may still be in
     * flight: unlink it before its slot is reused, or the slot would be
     * queued twice.
     */
    ngx_env_gateway_waiter_detach(&ctx->waiter);

    for (i = 0; i < NGX_ENVGW_NSLOTS; i++) {
        if (i == NGX_ENVGW_REC_TOKEN) {
            continue;
        }

        slot = &ctx->waiter.slots[i];
        slot->status = NGX_ENVGW_FETCH_NONE;
        slot->cache = NGX_ENVGW_CACHE_NONE;
        slot->stale = 0;
        ngx_memzero(&slot->rec, sizeof(ngx_env_gateway_record_t));
    }

    ngx_str_null(&ctx->account_req);
    ngx_str_null(&ctx->env_req);
    ngx_str_null(&ctx->account_id);
    ngx_str_null(&ctx->integration);
    ngx_str_null(&ctx->tenant_id);
    ngx_str_null(&ctx->tenant_req);
    ngx_str_null(&ctx->integration_req);
    ngx_str_null(&ctx->resource);
    ngx_str_null(&ctx->rest);
    ngx_str_null(&ctx->method);
    ngx_str_null(&ctx->upstream_url);
    ngx_str_null(&ctx->upstream_method);
    ngx_str_null(&ctx->detail);

    ctx->account_bad = 0;
    ctx->env_bad = 0;
    ctx->state = NGX_ENVGW_ST_NEW;
}


static void
ngx_env_gateway_cleanup(void *data)
{
    ngx_env_gateway_waiter_detach(data);
}


static void
ngx_env_gateway_resume(ngx_event_t *ev)
{
    ngx_connection_t          *c;
    ngx_http_request_t        *r;
    ngx_env_gateway_ctx_t     *ctx;
    ngx_env_gateway_waiter_t  *w;

    w = ev->data;
    r = w->request;
    c = r->connection;
    ctx = (ngx_env_gateway_ctx_t *)
              ((u_char *) w - offsetof(ngx_env_gateway_ctx_t, waiter));

    ngx_http_set_log_request(c->log, r);

    /*
     * A record fetched ahead may arrive after the check ended (allowed or
     * refused): the request has moved on, its phases must not run again.
     */
    if (ctx->state != NGX_ENVGW_ST_WAIT || ctx->refusal != NGX_ENVGW_OK) {
        ngx_log_debug0(NGX_LOG_DEBUG_HTTP, c->log, 0,
                       "env_gateway: records here after the check");
        return;
    }

    ngx_log_debug0(NGX_LOG_DEBUG_HTTP, c->log, 0,
                   "env_gateway: records here, resuming");

    /* nginx's default again: the client was watched while waiting */
    if (r->read_event_handler == ngx_http_test_reading) {
        r->read_event_handler = ngx_http_block_reading;
    }

    ngx_http_core_run_phases(r);
    ngx_http_run_posted_requests(c);
}
