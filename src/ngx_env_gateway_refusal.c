/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * env_gateway: refusals.  Every refusal is a JSON body
 * {"status":N,"error":"<code>","message":"<sentence>"} with
 * Content-Type: application/json; 401s carry WWW-Authenticate and 503s
 * Retry-After.  Messages never contain a token.
 */

#include "ngx_env_gateway.h"

#include <jansson.h>


typedef struct {
    ngx_uint_t   status;
    const char  *code;
    const char  *message;
    ngx_str_t    body;      /* the fixed body, encoded once per process */
} ngx_env_gateway_refusal_t;


/*
 * The one list of refusals, in ngx_env_gateway_refusal_e's order: status,
 * code (also the metrics' result label), fixed message.
 */
static ngx_env_gateway_refusal_t
    ngx_env_gateway_refusals[NGX_ENVGW_NREFUSALS] = {
    { 200, "allowed", "", ngx_null_string },
    { NGX_HTTP_UNAUTHORIZED, "missing_token",
      "A bearer token is required.", ngx_null_string },
    { NGX_HTTP_UNAUTHORIZED, "invalid_token",
      "The token is unknown, revoked or expired.", ngx_null_string },
    { NGX_HTTP_NOT_FOUND, "integrated_account_not_found",
      "No such integrated account.", ngx_null_string },
    { NGX_HTTP_BAD_REQUEST, "missing_integrated_account_id",
      "This endpoint requires an integrated_account_id.", ngx_null_string },
    { NGX_HTTP_FORBIDDEN, "environment_mismatch",
      "The token may not act in the requested environment.",
      ngx_null_string },
    { NGX_HTTP_NOT_FOUND, "method_not_found",
      "No such method in this environment.", ngx_null_string },
    { NGX_HTTP_NOT_ALLOWED, "method_not_allowed",
      "The method does not accept this HTTP verb.", ngx_null_string },
    { NGX_HTTP_SERVICE_UNAVAILABLE, "gateway_unavailable",
      "The gateway cannot verify credentials right now; retry shortly.",
      ngx_null_string },
    { NGX_HTTP_BAD_REQUEST, "invalid_request",
      "The request is ambiguous or malformed.", ngx_null_string },
    { NGX_HTTP_INTERNAL_SERVER_ERROR, "gateway_misconfigured",
      "A gateway record is malformed; see the gateway's error log.",
      ngx_null_string },
    /* Retry-After and RateLimit-* come from _limit.c's header filter */
    { NGX_HTTP_TOO_MANY_REQUESTS, "rate_limited",
      "Too many requests; retry after Retry-After seconds.",
      ngx_null_string },
    { NGX_HTTP_SERVICE_UNAVAILABLE, "credentials_unavailable",
      "The integrated account's upstream credentials are missing, expired "
      "or unusable.", ngx_null_string },
};


/*
 * {"status":N,"error":"<code>","message":"<message>"} and a newline, in
 * "pool", or in process memory when pool is NULL.  jansson escapes the
 * message and refuses one that is not UTF-8: the module's messages are
 * printable ASCII, their values escaped (ngx_env_gateway_refuse_detail).
 */
static ngx_int_t
ngx_env_gateway_refusal_body(ngx_env_gateway_refusal_t *rf,
    ngx_str_t *message, ngx_pool_t *pool, ngx_str_t *body)
{
    json_t                  *obj;
    ngx_int_t                rc;
    ngx_env_gateway_text_t   t;

    obj = json_pack("{s:i,s:s,s:s%}", "status", (int) rf->status,
                    "error", rf->code, "message",
                    (const char *) message->data, message->len);
    if (obj == NULL) {
        return NGX_ERROR;
    }

    ngx_env_gateway_text_init(&t);

    do {
        ngx_env_gateway_text_json(&t, obj, JSON_COMPACT);
        ngx_env_gateway_text_literal(&t, "\n");
    } while ((rc = ngx_env_gateway_text_next(&t, pool)) == NGX_AGAIN);

    json_decref(obj);

    if (rc != NGX_OK) {
        if (pool == NULL && t.start) {
            ngx_free(t.start);
        }

        return NGX_ERROR;
    }

    ngx_env_gateway_text_string(&t, body);

    return NGX_OK;
}


static ngx_str_t  ngx_env_gateway_www_auth =
    ngx_string("Bearer realm=\"env_gateway\"");


static ngx_table_elt_t *
ngx_env_gateway_add_header(ngx_http_request_t *r, const char *name,
    ngx_str_t *value)
{
    ngx_table_elt_t  *h;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NULL;
    }

    h->hash = 1;
    h->key.data = (u_char *) name;
    h->key.len = ngx_strlen(name);
    h->value = *value;
#if (nginx_version >= 1023000)
    /* auth_request follows www_authenticate's list of copies */
    h->next = NULL;
#endif

    return h;
}


/* a request or record value for the refusal log line: escaped */
static void
ngx_env_gateway_log_value(ngx_pool_t *pool, ngx_str_t *in, ngx_str_t *out)
{
    if (ngx_env_gateway_text_escaped(pool, in, NGX_ENVGW_ESCAPE_LOG, out)
        != NGX_OK)
    {
        ngx_str_set(out, "-");
    }
}


/*
 * The refusal as the module words it: the request is marked refused and
 * counted, the refusal log line written (its values escaped), and *body
 * set to the JSON body to send -- the message naming this request's
 * method or problem, encoded for it, or the refusal's fixed body.  The
 * fixed bodies are encoded once per process (a flood of bad tokens costs
 * no JSON encoding); if a message cannot be encoded, the fixed body of the
 * same refusal is used.  NGX_ERROR: not even the fixed body could be had.
 */
static ngx_int_t
ngx_env_gateway_refusal_build(ngx_http_request_t *r,
    ngx_env_gateway_ctx_t *ctx, ngx_uint_t refusal, ngx_str_t *body)
{
    ngx_str_t                    v, token_id, env_id, account;
    ngx_env_gateway_refusal_t   *rf;
    ngx_env_gateway_loc_conf_t  *glcf;

    glcf = ngx_http_get_module_loc_conf(r, ngx_env_gateway_module);
    rf = &ngx_env_gateway_refusals[refusal];
    ctx->refusal = refusal;

    ngx_env_gateway_metric_request(&ctx->environment, refusal);

    if (r->connection->log->log_level >= glcf->log_level) {
        ngx_env_gateway_log_value(r->pool, &ctx->token_id, &token_id);
        ngx_env_gateway_log_value(r->pool, &ctx->environment_id, &env_id);
        ngx_env_gateway_log_value(r->pool, ctx->account_id.len
                                           ? &ctx->account_id
                                           : &ctx->account_req,
                                  &account);

        ngx_log_error(glcf->log_level, r->connection->log, 0,
                      "env_gateway: refused %ui %s token_id=\"%V\" "
                      "environment_id=\"%V\" account=\"%V\"",
                      rf->status, rf->code, &token_id, &env_id, &account);
    }

    ngx_str_null(body);

    if (ctx->detail.len) {
        if (ngx_env_gateway_refusal_body(rf, &ctx->detail, r->pool, body)
            != NGX_OK)
        {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "env_gateway: the refusal message could not be "
                          "encoded, sending the fixed one");
            ngx_str_null(body);
        }
    }

    if (body->len) {
        return NGX_OK;
    }

    if (rf->body.len == 0) {
        v.data = (u_char *) rf->message;
        v.len = ngx_strlen(rf->message);

        if (ngx_env_gateway_refusal_body(rf, &v, NULL, &rf->body) != NGX_OK) {
            ngx_str_null(&rf->body);
            return NGX_ERROR;
        }
    }

    *body = rf->body;

    return NGX_OK;
}


/*
 * Send a built refusal (body NULL: it could not be built, a bare 500) and
 * finalize the request ourselves: the access phase would read NGX_OK as
 * "allowed", so the handler returns NGX_DONE after this.
 */
static ngx_int_t
ngx_env_gateway_refusal_send(ngx_http_request_t *r, ngx_uint_t refusal,
    ngx_str_t *body)
{
    ngx_int_t                    rc;
    ngx_buf_t                   *b;
    ngx_str_t                    v;
    ngx_chain_t                  out;
    ngx_env_gateway_refusal_t   *rf;

    static ngx_str_t  retry_after = ngx_string("1");

    rf = &ngx_env_gateway_refusals[refusal];

    /*
     * No "100 Continue" for a refused request: the body is not invited
     * (nginx's own special responses do the same).
     */
    r->expect_tested = 1;

    if (ngx_http_discard_request_body(r) != NGX_OK) {
        r->keepalive = 0;
    }

    if (body == NULL) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return NGX_DONE;
    }

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return NGX_DONE;
    }

    b->pos = body->data;
    b->last = body->data + body->len;
    b->start = b->pos;
    b->end = b->last;
    b->memory = 1;
    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    r->headers_out.status = rf->status;
    r->headers_out.content_length_n = body->len;
    ngx_str_set(&r->headers_out.content_type, "application/json");
    r->headers_out.content_type_len = r->headers_out.content_type.len;
    r->headers_out.content_type_lowcase = NULL;

    if (rf->status == NGX_HTTP_UNAUTHORIZED) {
        /* auth_request passes on a subrequest's headers_out.www_authenticate */
        r->headers_out.www_authenticate =
            ngx_env_gateway_add_header(r, "WWW-Authenticate",
                                       &ngx_env_gateway_www_auth);

        if (r->headers_out.www_authenticate == NULL) {
            ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
            return NGX_DONE;
        }
    }

    if (rf->status == NGX_HTTP_SERVICE_UNAVAILABLE) {
        v = retry_after;
        if (ngx_env_gateway_add_header(r, "Retry-After", &v) == NULL) {
            ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
            return NGX_DONE;
        }
    }

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        ngx_http_finalize_request(r, rc);
        return NGX_DONE;
    }

    out.buf = b;
    out.next = NULL;

    ngx_http_finalize_request(r, ngx_http_output_filter(r, &out));

    return NGX_DONE;
}


/* refuse the request: build the refusal, then send it (NGX_DONE) */
ngx_int_t
ngx_env_gateway_refuse(ngx_http_request_t *r, ngx_env_gateway_ctx_t *ctx,
    ngx_uint_t refusal)
{
    ngx_str_t  body;

    if (ngx_env_gateway_refusal_build(r, ctx, refusal, &body) != NGX_OK) {
        return ngx_env_gateway_refusal_send(r, refusal, NULL);
    }

    /* a 405 names the verb the method takes (empty: none can be named) */
    if (refusal == NGX_ENVGW_METHOD_NOT_ALLOWED
        && ngx_env_gateway_add_header(r, "Allow", &ctx->allow) == NULL)
    {
        return ngx_env_gateway_refusal_send(r, refusal, NULL);
    }

    return ngx_env_gateway_refusal_send(r, refusal, &body);
}


/*
 * A refusal whose message names request or record values: "fmt" with a
 * "%V" (ngx_str_t *) for each value, which is escaped (\xNN for control
 * bytes, quotes, backslashes and bytes >= 0x7f), whatever its length.
 * The body stays the module's own valid JSON whatever bytes the values
 * carry; if the message cannot be built, the refusal's fixed one is sent.
 */
ngx_int_t
ngx_env_gateway_refuse_detail(ngx_http_request_t *r,
    ngx_env_gateway_ctx_t *ctx, ngx_uint_t refusal, const char *fmt, ...)
{
    va_list  args;

    va_start(args, fmt);

    if (ngx_env_gateway_text_format(r->pool, &ctx->detail, fmt, args)
        != NGX_OK)
    {
        ngx_str_null(&ctx->detail);
    }

    va_end(args);

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "env_gateway: refusal %ui, message of %uz bytes",
                   refusal, ctx->detail.len);

    return ngx_env_gateway_refuse(r, ctx, refusal);
}


/* a refusal whose message says what was wrong (a NUL-terminated string) */
ngx_int_t
ngx_env_gateway_refuse_msg(ngx_http_request_t *r, ngx_env_gateway_ctx_t *ctx,
    ngx_uint_t refusal, const char *why)
{
    ctx->detail.data = (u_char *) why;
    ctx->detail.len = ngx_strlen(why);

    return ngx_env_gateway_refuse(r, ctx, refusal);
}


/* 400 invalid_request, saying why */
ngx_int_t
ngx_env_gateway_refuse_invalid(ngx_http_request_t *r,
    ngx_env_gateway_ctx_t *ctx, const char *why)
{
    return ngx_env_gateway_refuse_msg(r, ctx, NGX_ENVGW_INVALID_REQUEST, why);
}


/* the code of a refusal ("allowed" for NGX_ENVGW_OK), as metrics name it */
const char *
ngx_env_gateway_refusal_code(ngx_uint_t refusal)
{
    return ngx_env_gateway_refusals[refusal].code;
}
