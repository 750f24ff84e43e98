/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Request bodies: ngx_env_gateway_body_parse() from
 * src/ngx_env_gateway_body.c, the JSON body field reader and the form body
 * reader.  The body arrives as an nginx chain of memory buffers, split
 * where the input says, as a request body read in pieces; the field read
 * is "integrated_account_id" (env_gateway_account_body_field).
 *
 * Input: 1 byte: the number of chain buffers (1..4) in its low bits, a
 * form body (application/x-www-form-urlencoded) when bit 0x80 is set; then
 * the body.
 */

#include "fuzz_common.h"


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t                       pos, piece;
    ngx_int_t                    rc;
    ngx_str_t                    body;
    const char                  *why;
    ngx_connection_t            *c;
    ngx_table_elt_t             *type;
    ngx_buf_t                   *b;
    ngx_uint_t                   nbufs, i;
    ngx_pool_t                  *pool;
    ngx_chain_t                 *cl, **ll;
    ngx_http_request_t          *r;
    ngx_env_gateway_ctx_t       *ctx;
    ngx_env_gateway_loc_conf_t  *glcf;

    static u_char  field[] = "integrated_account_id";

    fuzz_init();

    if (size < 1) {
        return 0;
    }

    nbufs = 1 + data[0] % 4;
    body = fuzz_str(data + 1, size - 1);

    pool = ngx_create_pool(1024, fuzz_log);
    if (pool == NULL) {
        abort();
    }

    r = ngx_pcalloc(pool, sizeof(ngx_http_request_t));
    ctx = ngx_pcalloc(pool, sizeof(ngx_env_gateway_ctx_t));
    glcf = ngx_pcalloc(pool, sizeof(ngx_env_gateway_loc_conf_t));
    if (r == NULL || ctx == NULL || glcf == NULL) {
        abort();
    }

    c = ngx_pcalloc(pool, sizeof(ngx_connection_t));
    type = ngx_pcalloc(pool, sizeof(ngx_table_elt_t));
    if (c == NULL || type == NULL) {
        abort();
    }

    c->log = fuzz_log;
    r->pool = pool;
    r->connection = c;
    r->main = r;

    if (data[0] & 0x80) {
        ngx_str_set(&type->key, "Content-Type");
        ngx_str_set(&type->value, "application/x-www-form-urlencoded");
        r->headers_in.content_type = type;
    }
    glcf->body_field.data = field;
    glcf->body_field.len = sizeof(field) - 1;

    r->request_body = ngx_pcalloc(pool, sizeof(ngx_http_request_body_t));
    if (r->request_body == NULL) {
        abort();
    }

    ll = &r->request_body->bufs;
    pos = 0;

    for (i = 0; i < nbufs; i++) {
        piece = (i == nbufs - 1) ? body.len - pos : (body.len - pos) / 2;

        b = ngx_calloc_buf(pool);
        cl = ngx_alloc_chain_link(pool);
        if (b == NULL || cl == NULL) {
            abort();
        }

        b->pos = body.data + pos;
        b->last = b->pos + piece;
        b->start = b->pos;
        b->end = b->last;
        b->temporary = 1;
        b->memory = 1;

        cl->buf = b;
        cl->next = NULL;
        *ll = cl;
        ll = &cl->next;
        pos += piece;
    }

    why = NULL;

    rc = ngx_env_gateway_body_parse(r, ctx, glcf, &why);

    if (rc == NGX_OK) {
        if (why != NULL) {
            abort();
        }

        /* an account read is never empty */
        if (ctx->body_account.data && ctx->body_account.len == 0) {
            abort();
        }

    } else if (rc != NGX_DECLINED || why == NULL) {
        abort();
    }

    ngx_destroy_pool(pool);
    free(body.data);

    return 0;
}
