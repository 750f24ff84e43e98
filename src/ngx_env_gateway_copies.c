/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * env_gateway: copies of the credential.  The one credential a request
 * carries (_request.c) is hidden from the upstream in the places the
 * gateway knows; a second copy of the same bytes anywhere else - the path,
 * the query under another name, percent-encoded, another header, a body
 * field - would reach the backend, so a request carrying one is refused,
 * and the copies are redacted from what nginx logs of it.
 */

#include "ngx_env_gateway.h"


/* occurrences of "s" in "in" */
static ngx_uint_t
ngx_env_gateway_occurrences(ngx_str_t *in, ngx_str_t *s)
{
    u_char      *p, *last, *f;
    ngx_uint_t   n;

    if (in->len < s->len || s->len == 0) {
        return 0;
    }

    n = 0;
    p = in->data;
    last = p + in->len;

    while ((size_t) (last - p) >= s->len) {
        f = memmem(p, last - p, s->data, s->len);
        if (f == NULL) {
            break;
        }

        n++;
        p = f + s->len;
    }

    return n;
}


/*
 * Occurrences of "s" in "in" as a form or URI parser decodes it ("%XX",
 * and '+' for a space when "plus"); the decoded copy is never longer than
 * the input.  NGX_ERROR (as (ngx_uint_t) -1) when memory runs out.
 */
static ngx_uint_t
ngx_env_gateway_decoded_occurrences(ngx_pool_t *pool, ngx_str_t *in,
    ngx_str_t *s)
{
    u_char      *dst, *src;
    ngx_str_t    dec;
    ngx_uint_t   n;

    if (in->len < s->len || s->len == 0
        || ngx_strlchr(in->data, in->data + in->len, '%') == NULL)
    {
        return 0;
    }

    dec.data = ngx_pnalloc(pool, in->len);
    if (dec.data == NULL) {
        return (ngx_uint_t) NGX_ERROR;
    }

    src = in->data;
    dst = dec.data;
    ngx_unescape_uri(&dst, &src, in->len, 0);
    dec.len = dst - dec.data;

    n = ngx_env_gateway_occurrences(&dec, s);

    ngx_pfree(pool, dec.data);

    return n;
}


/*
 * Copies of the credential in the request headers other than its own
 * (raw or percent-decoded, counted once per header and kind); with
 * "redact" every header holding one is replaced by "[REDACTED]".
 */
static ngx_uint_t
ngx_env_gateway_header_copies(ngx_http_request_t *r,
    ngx_env_gateway_ctx_t *ctx, ngx_str_t *token, ngx_uint_t redact)
{
    ngx_uint_t        i, n, k, d;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    n = 0;
    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (&h[i] == ctx->credential || h[i].hash == 0) {
            continue;
        }

        k = ngx_env_gateway_occurrences(&h[i].value, token);
        d = ngx_env_gateway_decoded_occurrences(r->pool, &h[i].value, token);

        if (d == (ngx_uint_t) NGX_ERROR) {
            if (!redact) {
                return (ngx_uint_t) NGX_ERROR;
            }

            d = 1;
        }

        if (redact && (k || d)) {
            ngx_str_set(&h[i].value, "[REDACTED]");
        }

        n += ngx_max(k, d);
    }

    return n;
}


/*
 * The credential's bytes anywhere else in the request, raw or
 * percent-decoded, under whatever name: in the path, the query or another
 * header (a copy the backend may read, and that hiding the known places
 * would not remove).  "in_query" and "in_headers" are the copies the
 * configured place itself accounts for.  Tokens shorter than
 * NGX_ENVGW_TOKEN_SEARCH_MIN are not searched for.
 * Returns where a copy was found (NGX_ENVGW_COPY_IN_URI or _HEADERS), 0
 * when none was, or NGX_ERROR.
 */
ngx_int_t
ngx_env_gateway_token_elsewhere(ngx_http_request_t *r,
    ngx_env_gateway_ctx_t *ctx, ngx_str_t *token, ngx_uint_t in_query,
    ngx_uint_t in_headers)
{
    ngx_str_t   uri;
    ngx_uint_t  n, d;

    if (token->len < NGX_ENVGW_TOKEN_SEARCH_MIN) {
        return 0;
    }

    /* the request target as sent: path and query */
    uri = ctx->target.data ? ctx->target : r->unparsed_uri;

    n = ngx_env_gateway_occurrences(&uri, token);
    d = ngx_env_gateway_decoded_occurrences(r->pool, &uri, token);

    if (d == (ngx_uint_t) NGX_ERROR) {
        return NGX_ERROR;
    }

    if (n > in_query || d > in_query) {
        return NGX_ENVGW_COPY_IN_URI;
    }

    n = ngx_env_gateway_header_copies(r, ctx, token, 0);

    if (n == (ngx_uint_t) NGX_ERROR) {
        return NGX_ERROR;
    }

    if (n <= in_headers) {
        return 0;
    }

    /*
     * The request is refused: no header that holds a copy may take it
     * into a log line (nginx's "host:" and "referrer:", access logs).
     */
    (void) ngx_env_gateway_header_copies(r, ctx, token, 1);

    return NGX_ENVGW_COPY_IN_HEADERS;
}


/* a copy of the credential in a request body (raw, or decoded for forms) */
ngx_int_t
ngx_env_gateway_token_in(ngx_pool_t *pool, ngx_str_t *in, ngx_str_t *token)
{
    ngx_uint_t  d;

    if (token->len < NGX_ENVGW_TOKEN_SEARCH_MIN) {
        return 0;
    }

    if (ngx_env_gateway_occurrences(in, token)) {
        return 1;
    }

    d = ngx_env_gateway_decoded_occurrences(pool, in, token);

    if (d == (ngx_uint_t) NGX_ERROR) {
        return NGX_ERROR;
    }

    return d > 0;
}
