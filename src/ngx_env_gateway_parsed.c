/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * env_gateway: the records this worker parsed recently, for a gateway
 * without a shared cache (no env_gateway_cache).
 *
 * Without a cache every request asks Redis for its token and account, and
 * Redis answers with the same bytes for as long as a record is unchanged:
 * parsing that JSON again (jansson, its allocations) was the largest part
 * of a no-cache request's added cost.  This table keeps, per Redis key,
 * the exact bytes of the last record parsed and the blob made from them.
 * A reply whose bytes are equal to the kept ones, compared in full (never
 * by a hash alone), of the same record kind, takes the kept blob; anything
 * else is parsed as before and replaces the entry.
 *
 * Redis is still asked on every request: a revoked, expired, disabled or
 * changed record arrives as other bytes and is parsed at once, so nothing
 * here delays a change (this is not a cache of answers, only of parses).
 * A record that does not parse is never kept, and is logged every time as
 * before.  Whoever uses a kept blob copies it (record_load into a request
 * pool): no request can alter an entry.
 *
 * Bounded: at most NGX_ENVGW_PARSED_MAX entries and NGX_ENVGW_PARSED_SIZE
 * bytes per worker, least recently used dropped first; a record above
 * NGX_ENVGW_PARSED_ENTRY_MAX bytes is parsed and not kept.
 */

#include "ngx_env_gateway.h"


#define NGX_ENVGW_PARSED_MAX        4096
#define NGX_ENVGW_PARSED_SIZE       (4 * 1024 * 1024)
#define NGX_ENVGW_PARSED_ENTRY_MAX  (NGX_ENVGW_PARSED_SIZE / 16)


/* one allocation: this header, the blob, the key, the record's bytes */
typedef struct {
    ngx_str_node_t      sn;         /* murmur2 of the key, the key */
    ngx_queue_t         lru;
    ngx_uint_t          kind;
    size_t              size;       /* of the allocation */
    u_char             *json;
    size_t              json_len;
    u_char             *blob;
    size_t              blob_len;
} ngx_env_gateway_parsed_t;


static void ngx_env_gateway_parsed_drop(ngx_env_gateway_parsed_t *e);


static ngx_rbtree_t        ngx_env_gateway_parsed_tree;
static ngx_rbtree_node_t   ngx_env_gateway_parsed_sentinel;
static ngx_queue_t         ngx_env_gateway_parsed_lru;
static ngx_uint_t          ngx_env_gateway_parsed_n;
static size_t              ngx_env_gateway_parsed_bytes;
static ngx_uint_t          ngx_env_gateway_parsed_inited;


static void
ngx_env_gateway_parsed_drop(ngx_env_gateway_parsed_t *e)
{
    ngx_rbtree_delete(&ngx_env_gateway_parsed_tree, &e->sn.node);
    ngx_queue_remove(&e->lru);

    ngx_env_gateway_parsed_n--;
    ngx_env_gateway_parsed_bytes -= e->size;

    ngx_free(e);
}


/*
 * As ngx_env_gateway_record_parse(), through the table.  On NGX_OK,
 * *kept says who owns *blob: 1, the table (valid until the next call
 * here; the caller copies it and does not free it), 0, the caller (it
 * frees it with ngx_free(), as a blob of record_parse()).
 */
ngx_int_t
ngx_env_gateway_parsed_record(ngx_uint_t kind, u_char *json, size_t len,
    ngx_log_t *log, ngx_str_t *key, u_char **blob, size_t *blob_len,
    ngx_uint_t *kept)
{
    u_char                    *p;
    size_t                     size;
    uint32_t                   hash;
    ngx_int_t                  rc;
    ngx_queue_t               *q;
    ngx_env_gateway_parsed_t  *e;

    *kept = 0;

    if (!ngx_env_gateway_parsed_inited) {
        ngx_rbtree_init(&ngx_env_gateway_parsed_tree,
                        &ngx_env_gateway_parsed_sentinel,
                        ngx_str_rbtree_insert_value);
        ngx_queue_init(&ngx_env_gateway_parsed_lru);
        ngx_env_gateway_parsed_inited = 1;
    }

    hash = ngx_murmur_hash2(key->data, key->len);

    e = (ngx_env_gateway_parsed_t *)
            ngx_str_rbtree_lookup(&ngx_env_gateway_parsed_tree, key, hash);

    if (e) {
        if (e->kind == kind && e->json_len == len
            && ngx_memcmp(e->json, json, len) == 0)
        {
            ngx_log_debug1(NGX_LOG_DEBUG_HTTP, log, 0,
                           "env_gateway: record \"%V\" unchanged, "
                           "parsed before", key);

            ngx_queue_remove(&e->lru);
            ngx_queue_insert_head(&ngx_env_gateway_parsed_lru, &e->lru);

            *blob = e->blob;
            *blob_len = e->blob_len;
            *kept = 1;

            return NGX_OK;
        }

        /* another record under this key now: parsed afresh */
        ngx_env_gateway_parsed_drop(e);
    }

    rc = ngx_env_gateway_record_parse(kind, json, len, log, key, blob,
                                      blob_len);
    if (rc != NGX_OK) {
        return rc;
    }

    size = sizeof(ngx_env_gateway_parsed_t) + key->len + len + *blob_len;

    if (size > NGX_ENVGW_PARSED_ENTRY_MAX) {
        return NGX_OK;
    }

    while (ngx_env_gateway_parsed_n >= NGX_ENVGW_PARSED_MAX
           || ngx_env_gateway_parsed_bytes + size > NGX_ENVGW_PARSED_SIZE)
    {
        q = ngx_queue_last(&ngx_env_gateway_parsed_lru);
        ngx_env_gateway_parsed_drop(
            ngx_queue_data(q, ngx_env_gateway_parsed_t, lru));
    }

    e = ngx_alloc(size, log);
    if (e == NULL) {
        /* the blob is the caller's: only the table goes without */
        return NGX_OK;
    }

    /* the blob first, aligned as the header is, then the key and bytes */
    p = (u_char *) (e + 1);

    e->blob = p;
    e->blob_len = *blob_len;
    p = ngx_cpymem(p, *blob, *blob_len);

    e->sn.str.data = p;
    e->sn.str.len = key->len;
    p = ngx_cpymem(p, key->data, key->len);

    e->json = p;
    e->json_len = len;
    ngx_memcpy(p, json, len);

    e->sn.node.key = hash;
    e->kind = kind;
    e->size = size;

    ngx_rbtree_insert(&ngx_env_gateway_parsed_tree, &e->sn.node);
    ngx_queue_insert_head(&ngx_env_gateway_parsed_lru, &e->lru);
    ngx_env_gateway_parsed_n++;
    ngx_env_gateway_parsed_bytes += size;

    ngx_free(*blob);

    *blob = e->blob;
    *kept = 1;

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, log, 0,
                   "env_gateway: record \"%V\" parsed and kept, "
                   "%ui records, %uz bytes", key, ngx_env_gateway_parsed_n,
                   ngx_env_gateway_parsed_bytes);

    return NGX_OK;
}
