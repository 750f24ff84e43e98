/*
 * The JSON body field reader: ngx_env_gateway_body_account() from
 * src/ngx_env_gateway_access.c (static; the file is #included so the real
 * function is fuzzed).  The body arrives as an nginx chain of memory
 * buffers, split where the input says, as a request body read in pieces;
 * the field read is "integrated_account_id" (env_gateway_account_body_field).
 * ngx_env_gateway_refuse() and ngx_env_gateway_refuse_detail() are
 * replaced by stubs that record the refusal: sending the 400 needs a live
 * connection.
 *
 * Input: 1 byte giving the number of chain buffers (1..4), then the body.
 */

#include "fuzz_common.h"
#include "../src/ngx_env_gateway_access.c"


static ngx_uint_t  fuzz_refusal;


ngx_int_t
ngx_env_gateway_refuse(ngx_http_request_t *r, ngx_env_gateway_ctx_t *ctx,
    ngx_uint_t refusal)
{
    fuzz_refusal = refusal;
    ctx->refusal = refusal;

    return NGX_HTTP_BAD_REQUEST;
}


ngx_int_t
ngx_env_gateway_refuse_detail(ngx_http_request_t *r,
    ngx_env_gateway_ctx_t *ctx, ngx_uint_t refusal, const char *fmt, ...)
{
    return ngx_env_gateway_refuse(r, ctx, refusal);
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t                       pos, piece;
    ngx_int_t                    rc;
    ngx_str_t                    body;
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

    r->pool = pool;
    r->connection = NULL;
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

    fuzz_refusal = 0;

    rc = ngx_env_gateway_body_account(r, ctx, glcf);

    if (rc == NGX_OK) {
        if (fuzz_refusal) {
            abort();
        }

        if (ctx->body_account.len
            && memchr(ctx->body_account.data, 0, 0) != NULL)
        {
            abort();
        }

    } else if (rc != NGX_HTTP_BAD_REQUEST
               || fuzz_refusal != NGX_ENVGW_INVALID_REQUEST)
    {
        abort();
    }

    ngx_destroy_pool(pool);
    free(body.data);

    return 0;
}
