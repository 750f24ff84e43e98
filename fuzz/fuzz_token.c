/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Token extraction from header values: ngx_env_gateway_bearer(), then
 * ngx_env_gateway_token_syntax() and ngx_env_gateway_sha256_hex() on what
 * it returns, and ngx_env_gateway_redact() of the input taken as a request
 * line / URI (credential arguments replaced by "[REDACTED]").
 *
 * Input: a header value.  Its bytes up to the first NUL (if any) also name
 * the $arg_ argument redact() hides.
 */

#include "fuzz_common.h"


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    u_char       hex[ENVGW_SHA256_HEX_LEN];
    ngx_int_t    rc;
    ngx_str_t    header, token, arg, out;
    ngx_pool_t  *pool;
    const void  *nul;

    fuzz_init();

    header = fuzz_str(data, size);

    rc = ngx_env_gateway_bearer(&header, &token);

    if (rc == NGX_OK) {
        /* the token lies inside the header, trimmed, non-empty */
        if (token.len == 0 || token.data < header.data
            || token.data + token.len > header.data + header.len
            || token.data[0] == ' ' || token.data[token.len - 1] == ' ')
        {
            abort();
        }

        if (ngx_env_gateway_token_syntax(&token) == NGX_OK) {
            ngx_env_gateway_sha256_hex(&token, hex);
        }

    } else if (rc != NGX_DECLINED && rc != NGX_ABORT) {
        abort();
    }

    /* the token syntax check on the raw value too (custom token headers) */
    (void) ngx_env_gateway_token_syntax(&header);

    pool = ngx_create_pool(1024, fuzz_log);
    if (pool == NULL) {
        abort();
    }

    nul = memchr(data, 0, size);
    arg = fuzz_str(data, nul ? (size_t) ((const uint8_t *) nul - data) : 0);

    if (ngx_env_gateway_redact(pool, &header, &arg, &out) == NGX_OK) {
        if (memchr(header.data, '?', header.len) == NULL
            && (out.len != header.len
                || memcmp(out.data, header.data, out.len) != 0))
        {
            abort();   /* nothing to redact must mean unchanged */
        }
    }

    ngx_destroy_pool(pool);
    free(arg.data);
    free(header.data);

    return 0;
}
