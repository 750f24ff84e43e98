/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * env_gateway: bearer token extraction and hashing (pure code), and the
 * credential kept out of the request line, $request_uri and the query
 * that goes upstream.
 *
 * Only the SHA-256 of a token is ever looked up, logged as a key or kept:
 * the raw token lives in the request's header buffer and nowhere else.
 */

/*
 * SHA256_Init() and friends are deprecated in OpenSSL 3.0 but remain the
 * allocation-free way to hash: EVP_Digest() fetches the algorithm and
 * allocates a provider context on every call (measured with valgrind: one
 * to three malloc()s per digest, about half the warm path's instructions).
 * nginx's own headers define OPENSSL_SUPPRESS_DEPRECATED for the same
 * reason, but only in a tree configured with SSL: a module built in a bare
 * `configure --with-compat` tree (for nginx.org's packages) defines it here.
 */
#ifndef OPENSSL_SUPPRESS_DEPRECATED
#define OPENSSL_SUPPRESS_DEPRECATED
#endif

#include "ngx_env_gateway.h"

#include <openssl/sha.h>


#define NGX_ENVGW_TOKEN_MAX  4096


static void ngx_env_gateway_hex(u_char *dst, u_char *src, size_t len);


/*
 * "Bearer <token>": scheme case-insensitive, one or more spaces.
 * NGX_OK: token found; NGX_DECLINED: no bearer token (other scheme, empty);
 * NGX_ABORT: ambiguous (a comma-joined list of credentials).
 */
ngx_int_t
ngx_env_gateway_bearer(ngx_str_t *header, ngx_str_t *token)
{
    u_char  *p, *last;

    p = header->data;
    last = p + header->len;

    /* memchr(), not ngx_strlchr()'s byte loop: every request's header */
    if (header->len && memchr(p, ',', header->len) != NULL) {
        return NGX_ABORT;
    }

    while (p < last && (*p == ' ' || *p == '\t')) {
        p++;
    }

    /* "bearer" in any case: a letter's case is its 0x20 bit */
    if (last - p < 7
        || (p[0] | 0x20) != 'b' || (p[1] | 0x20) != 'e'
        || (p[2] | 0x20) != 'a' || (p[3] | 0x20) != 'r'
        || (p[4] | 0x20) != 'e' || (p[5] | 0x20) != 'r'
        || (p[6] != ' ' && p[6] != '\t'))
    {
        return NGX_DECLINED;
    }

    p += 7;

    while (p < last && (*p == ' ' || *p == '\t')) {
        p++;
    }

    while (last > p && (last[-1] == ' ' || last[-1] == '\t')) {
        last--;
    }

    if (p == last) {
        return NGX_DECLINED;
    }

    token->data = p;
    token->len = last - p;

    return NGX_OK;
}


/*
 * RFC 6750 b64token: 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" )
 * *"=".  Anything else (spaces inside, control or non-ASCII bytes) cannot
 * be a token we issued: refuse without asking Redis.
 */
ngx_int_t
ngx_env_gateway_token_syntax(ngx_str_t *token)
{
    u_char      *p, *last;
    ngx_uint_t   i;

    /* b64token characters: ALPHA DIGIT - . _ ~ + / (a bit per byte) */
    static uint32_t  b64token[] = {
        0x00000000, /* control characters */
        0x03ffe800, /* 0-9 / . - + */
        0x87fffffe, /* _ A-Z */
        0x47fffffe, /* ~ a-z */
        0x00000000, 0x00000000, 0x00000000, 0x00000000 /* non-ASCII */
    };

    /* the same set a byte per byte: one load a character on every request */
    static u_char      b64byte[256];
    static ngx_uint_t  b64byte_set;

    if (!b64byte_set) {
        for (i = 0; i < 256; i++) {
            b64byte[i] = (b64token[i >> 5] & (1U << (i & 0x1f))) ? 1 : 0;
        }

        b64byte_set = 1;
    }

    if (token->len == 0 || token->len > NGX_ENVGW_TOKEN_MAX) {
        return NGX_DECLINED;
    }

    p = token->data;
    last = p + token->len;

    while (p < last && b64byte[*p]) {
        p++;
    }

    while (p < last && *p == '=') {
        p++;
    }

    return (p == last) ? NGX_OK : NGX_DECLINED;
}


void
ngx_env_gateway_sha256_hex(ngx_str_t *in, u_char *out)
{
    SHA256_CTX  sha;
    u_char      md[SHA256_DIGEST_LENGTH];

    if (SHA256_Init(&sha) != 1
        || SHA256_Update(&sha, in->data, in->len) != 1
        || SHA256_Final(md, &sha) != 1)
    {
        /* cannot happen with a working libcrypto; never match anything */
        ngx_memset(out, 'x', ENVGW_SHA256_HEX_LEN);
        return;
    }

    ngx_env_gateway_hex(out, md, SHA256_DIGEST_LENGTH);
}


/*
 * ngx_hex_dump() two hex digits at a time, from a table of the 256 byte
 * values: the hash of every request's credential is written this way.
 */
static void
ngx_env_gateway_hex(u_char *dst, u_char *src, size_t len)
{
    ngx_uint_t  i;

    static u_char      hex[] = "0123456789abcdef";
    static u_char      pairs[512];
    static ngx_uint_t  pairs_set;

    if (!pairs_set) {
        for (i = 0; i < 256; i++) {
            pairs[2 * i] = hex[i >> 4];
            pairs[2 * i + 1] = hex[i & 0xf];
        }

        pairs_set = 1;
    }

    while (len--) {
        ngx_memcpy(dst, &pairs[2 * *src++], 2);
        dst += 2;
    }
}


/* a credential argument: access_token or the configured name, any spelling */
static ngx_uint_t
ngx_env_gateway_secret_arg(ngx_env_gateway_arg_t *arg, ngx_str_t *name)
{
    static ngx_str_t  access_token = ngx_string("access_token");

    return ngx_env_gateway_arg_match(arg, &access_token) != NGX_ENVGW_ARG_OTHER
           || ngx_env_gateway_arg_match(arg, name) != NGX_ENVGW_ARG_OTHER;
}


/*
 * A request line or URI with the value of every credential argument
 * replaced by "[REDACTED]": RFC 6750's access_token and the argument named
 * by "env_gateway_token $arg_NAME", in every spelling the boundary knows
 * (percent-encoded, case variants, PHP's and qs' forms, ';' parts: _args.c).
 * An argument with no '=' is redacted whole.  Everything else is kept byte
 * for byte, including " HTTP/1.1".  The length comes from a measuring pass
 * over the same arguments as the writing pass, and every write is bounded.
 */
ngx_int_t
ngx_env_gateway_redact(ngx_pool_t *pool, ngx_str_t *in, ngx_str_t *arg,
    ngx_str_t *out)
{
    u_char                  *p, *last, *q, *tail, *dst, *start, *end;
    size_t                   len, keep;
    ngx_str_t                query;
    ngx_uint_t               pass, first, secrets;
    ngx_env_gateway_arg_t    a;
    ngx_env_gateway_args_t   it;

    static ngx_str_t  redacted = ngx_string("[REDACTED]");

    p = in->data;
    last = p + in->len;

    q = ngx_strlchr(p, last, '?');

    if (q == NULL) {
        *out = *in;
        return NGX_OK;
    }

    /*
     * A request line's query ends at the space before the protocol: the
     * last space, so that a line nginx refused for a space inside the URI
     * has its whole query redacted.
     */
    for (tail = last; tail > q + 1 && tail[-1] != ' '; tail--) {
        /* void */
    }

    tail = (tail > q + 1) ? tail - 1 : NULL;

    query.data = q + 1;
    query.len = (tail ? tail : last) - query.data;

    start = NULL;
    dst = NULL;
    end = NULL;
    len = 0;
    secrets = 0;

    for (pass = 0; pass < 2; pass++) {

        if (pass == 1) {
            if (secrets == 0) {
                /* nothing to redact: the input as it is */
                *out = *in;
                return NGX_OK;
            }

            start = ngx_pnalloc(pool, len);
            if (start == NULL) {
                return NGX_ERROR;
            }

            dst = start;
            end = start + len;
        }

        len = (q + 1 - p) + (tail ? (size_t) (last - tail) : 0);

        if (dst) {
            dst = ngx_cpymem(dst, p, q + 1 - p);
        }

        first = 1;
        ngx_env_gateway_args_init(&it, &query);

        while (ngx_env_gateway_args_next(&it, &a) == NGX_OK) {

            if (ngx_env_gateway_secret_arg(&a, arg)) {
                keep = a.has_value ? (size_t) (a.value.data - a.raw.data) : 0;
                secrets++;

            } else {
                keep = a.raw.len;
            }

            len += !first + keep + (keep < a.raw.len ? redacted.len : 0);

            if (dst) {
                if ((size_t) (end - dst) < len - (dst - start)) {
                    return NGX_ERROR;
                }

                if (!first) {
                    *dst++ = '&';
                }

                dst = ngx_cpymem(dst, a.raw.data, keep);

                if (keep < a.raw.len) {
                    dst = ngx_cpymem(dst, redacted.data, redacted.len);
                }
            }

            first = 0;
        }
    }

    if (tail) {
        if ((size_t) (end - dst) != (size_t) (last - tail)) {
            return NGX_ERROR;
        }

        dst = ngx_cpymem(dst, tail, last - tail);
    }

    out->data = start;
    out->len = dst - start;

    return NGX_OK;
}


/* ------------------------------------------------------------------ */
/* the credential kept out of logs and out of the upstream query       */

/*
 * A credential in the query must not reach a log line: nginx appends the
 * request line to every error line of this request, and $request_uri
 * would carry it into access logs.
 */
ngx_int_t
ngx_env_gateway_redact_line(ngx_http_request_t *r,
    ngx_env_gateway_loc_conf_t *glcf)
{
    u_char  *line;

    if (r != r->main || r->args.len == 0) {
        return NGX_OK;
    }

    line = r->request_line.data;

    if (ngx_env_gateway_redact(r->pool, &r->request_line, &glcf->token_arg,
                               &r->request_line)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    /*
     * Nothing was redacted (the common case): the target has no
     * credential either, and proxy_pass keeps sending it as received.
     */
    if (r->request_line.data == line) {
        return NGX_OK;
    }

    if (glcf->hide_credentials) {
        if (ngx_env_gateway_redact(r->pool, &r->unparsed_uri,
                                   &glcf->token_arg, &r->unparsed_uri)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        r->valid_unparsed_uri = 0;
    }

    return NGX_OK;
}


/*
 * The request target carries a copy of the credential somewhere a name
 * cannot tell: the request line nginx logs, $request_uri and $args lose
 * the whole target (method and protocol are kept).
 */
ngx_int_t
ngx_env_gateway_redact_uri(ngx_http_request_t *r)
{
    u_char                  *sp, *last, *lsp;
    ngx_int_t                rc;
    ngx_env_gateway_text_t   t;

    static ngx_str_t  redacted = ngx_string("[REDACTED]");

    if (r != r->main || r->request_line.len == 0) {
        return NGX_OK;
    }

    last = r->request_line.data + r->request_line.len;
    sp = ngx_strlchr(r->request_line.data, last, ' ');

    for (lsp = last; lsp > r->request_line.data && lsp[-1] != ' '; lsp--) {
        /* void */
    }

    if (sp == NULL) {
        sp = last;
    }

    lsp = (lsp > sp + 1) ? lsp - 1 : last;

    ngx_env_gateway_text_init(&t);

    do {
        ngx_env_gateway_text_bytes(&t, r->request_line.data,
                                   sp - r->request_line.data);
        ngx_env_gateway_text_literal(&t, " ");
        ngx_env_gateway_text_str(&t, &redacted);
        ngx_env_gateway_text_bytes(&t, lsp, last - lsp);
    } while ((rc = ngx_env_gateway_text_next(&t, r->pool)) == NGX_AGAIN);

    if (rc != NGX_OK) {
        return NGX_ERROR;
    }

    ngx_env_gateway_text_string(&t, &r->request_line);

    r->unparsed_uri = redacted;
    r->valid_unparsed_uri = 0;
    ngx_str_null(&r->args);

    return NGX_OK;
}


/*
 * Drop the arguments named "name" (byte for byte, as the boundary allows
 * no other spelling) from the query forwarded upstream.  The new query is
 * never longer than the old one: every kept argument is copied once.
 */
ngx_int_t
ngx_env_gateway_strip_arg(ngx_http_request_t *r, ngx_str_t *name)
{
    u_char                  *start, *dst, *end;
    ngx_env_gateway_arg_t    arg;
    ngx_env_gateway_args_t   it;

    if (r->args.len == 0) {
        return NGX_OK;
    }

    start = ngx_pnalloc(r->pool, r->args.len);
    if (start == NULL) {
        return NGX_ERROR;
    }

    dst = start;
    end = start + r->args.len;

    ngx_env_gateway_args_init(&it, &r->args);

    while (ngx_env_gateway_args_next(&it, &arg) == NGX_OK) {
        if (ngx_env_gateway_arg_match(&arg, name) == NGX_ENVGW_ARG_EXACT) {
            continue;
        }

        if ((size_t) (end - dst) < arg.raw.len + (dst != start)) {
            return NGX_ERROR;
        }

        if (dst != start) {
            *dst++ = '&';
        }

        dst = ngx_cpymem(dst, arg.raw.data, arg.raw.len);
    }

    if ((size_t) (dst - start) != r->args.len) {
        r->args.data = start;
        r->args.len = dst - start;
        r->valid_unparsed_uri = 0;
    }

    return NGX_OK;
}
