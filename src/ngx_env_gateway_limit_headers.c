/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * env_gateway: the RateLimit-Limit, -Remaining and -Reset headers of the
 * tightest limit a request was checked against, and Retry-After on a 429
 * of the gateway (an output header filter).
 */

#include "ngx_env_gateway_limit.h"


static ngx_int_t ngx_env_gateway_limit_header_filter(ngx_http_request_t *r);


static ngx_http_output_header_filter_pt  ngx_env_gateway_next_header_filter;


/* ------------------------------------------------------------------ */
/* RateLimit-* headers                                                 */

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

