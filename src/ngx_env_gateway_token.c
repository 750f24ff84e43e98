/*
 * env_gateway: bearer token extraction and hashing.  Pure code.
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
 * reason.
 */
#include "ngx_env_gateway.h"

#include <openssl/sha.h>


#define NGX_ENVGW_TOKEN_MAX  4096


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

    if (ngx_strlchr(p, last, ',') != NULL) {
        return NGX_ABORT;
    }

    while (p < last && (*p == ' ' || *p == '\t')) {
        p++;
    }

    if (last - p < 7 || ngx_strncasecmp(p, (u_char *) "bearer", 6) != 0
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
    u_char  *p, *last;

    /* b64token characters: ALPHA DIGIT - . _ ~ + / (a bit per byte) */
    static uint32_t  b64token[] = {
        0x00000000, /* control characters */
        0x03ffe800, /* 0-9 / . - + */
        0x87fffffe, /* _ A-Z */
        0x47fffffe, /* ~ a-z */
        0x00000000, 0x00000000, 0x00000000, 0x00000000 /* non-ASCII */
    };

    if (token->len == 0 || token->len > NGX_ENVGW_TOKEN_MAX) {
        return NGX_DECLINED;
    }

    p = token->data;
    last = p + token->len;

    while (p < last && (b64token[*p >> 5] & (1U << (*p & 0x1f)))) {
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

    ngx_hex_dump(out, md, SHA256_DIGEST_LENGTH);
}


/*
 * A request line or URI with the values of credential arguments replaced
 * by "[REDACTED]": the argument named by "env_gateway_token $arg_NAME" and
 * RFC 6750's access_token (names in any case, as $arg_NAME matches).
 * Everything else is kept byte for byte, including " HTTP/1.1".
 */
ngx_int_t
ngx_env_gateway_redact(ngx_pool_t *pool, ngx_str_t *in, ngx_str_t *arg,
    ngx_str_t *out)
{
    u_char      *p, *last, *q, *end, *eq, *dst, *start, *tail;
    size_t       nlen;
    ngx_uint_t   secret;

    static ngx_str_t  access_token = ngx_string("access_token");
    static ngx_str_t  redacted = ngx_string("[REDACTED]");

    p = in->data;
    last = p + in->len;

    q = ngx_strlchr(p, last, '?');

    if (q == NULL) {
        *out = *in;
        return NGX_OK;
    }

    /* at most one "[REDACTED]" per argument */
    nlen = in->len + redacted.len;
    for (end = q; end < last; end++) {
        if (*end == '&') {
            nlen += redacted.len;
        }
    }

    start = ngx_pnalloc(pool, nlen);
    if (start == NULL) {
        return NGX_ERROR;
    }

    dst = ngx_cpymem(start, p, q + 1 - p);
    p = q + 1;

    /* a request line's query ends at the space before the protocol */
    tail = ngx_strlchr(p, last, ' ');
    if (tail) {
        last = tail;
    }

    while (p < last) {
        end = ngx_strlchr(p, last, '&');
        if (end == NULL) {
            end = last;
        }

        eq = ngx_strlchr(p, end, '=');
        nlen = (eq ? eq : end) - p;

        secret = (nlen == access_token.len
                  && ngx_strncasecmp(p, access_token.data, nlen) == 0)
                 || (arg->len && nlen == arg->len
                     && ngx_strncasecmp(p, arg->data, nlen) == 0);

        if (secret && eq) {
            dst = ngx_cpymem(dst, p, eq + 1 - p);
            dst = ngx_cpymem(dst, redacted.data, redacted.len);

        } else {
            dst = ngx_cpymem(dst, p, end - p);
        }

        if (end < last) {
            *dst++ = '&';
        }

        p = end + 1;
    }

    if (tail) {
        dst = ngx_cpymem(dst, tail, in->data + in->len - tail);
    }

    out->data = start;
    out->len = dst - start;

    return NGX_OK;
}
