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
    char        *body;      /* the encoded fixed body, once per process */
} ngx_env_gateway_refusal_t;


static ngx_env_gateway_refusal_t  ngx_env_gateway_refusals[] = {
    { 200, "ok", "", NULL },
    { NGX_HTTP_UNAUTHORIZED, "missing_token",
      "A bearer token is required.", NULL },
    { NGX_HTTP_UNAUTHORIZED, "invalid_token",
      "The token is unknown, revoked or expired.", NULL },
    { NGX_HTTP_NOT_FOUND, "integrated_account_not_found",
      "No such integrated account.", NULL },
    { NGX_HTTP_BAD_REQUEST, "missing_integrated_account_id",
      "This endpoint requires an integrated_account_id.", NULL },
    { NGX_HTTP_FORBIDDEN, "environment_mismatch",
      "The token may not act in the requested environment.", NULL },
    { NGX_HTTP_NOT_FOUND, "method_not_found",
      "No such method in this environment.", NULL },
    { NGX_HTTP_NOT_ALLOWED, "method_not_allowed",
      "The method does not accept this HTTP verb.", NULL },
    { NGX_HTTP_SERVICE_UNAVAILABLE, "gateway_unavailable",
      "The gateway cannot verify credentials right now; retry shortly.", NULL },
    { NGX_HTTP_BAD_REQUEST, "invalid_request",
      "The request is ambiguous or malformed.", NULL },
    { NGX_HTTP_INTERNAL_SERVER_ERROR, "gateway_misconfigured",
      "A gateway record is malformed; see the gateway's error log.", NULL },
};


/* {"status":N,"error":"<code>","message":"<message>"}, malloc'd */
static char *
ngx_env_gateway_refusal_body(ngx_env_gateway_refusal_t *rf,
    const char *message)
{
    char    *body;
    json_t  *obj;

    obj = json_pack("{s:i,s:s,s:s}", "status", (int) rf->status,
                    "error", rf->code, "message", message);
    body = obj ? json_dumps(obj, JSON_COMPACT) : NULL;
    json_decref(obj);

    return body;
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

    return h;
}


/*
 * Send the refusal and finalize the request ourselves: the access phase
 * would read NGX_OK as "allowed", so the handler returns NGX_DONE after this.
 */
ngx_int_t
ngx_env_gateway_refuse(ngx_http_request_t *r, ngx_env_gateway_ctx_t *ctx,
    ngx_uint_t refusal)
{
    char                        *body;
    size_t                       len;
    ngx_int_t                    rc;
    ngx_buf_t                   *b;
    ngx_str_t                    v;
    ngx_chain_t                  out;
    ngx_env_gateway_refusal_t   *rf;
    ngx_env_gateway_loc_conf_t  *glcf;

    static ngx_str_t  retry_after = ngx_string("1");

    glcf = ngx_http_get_module_loc_conf(r, ngx_env_gateway_module);
    rf = &ngx_env_gateway_refusals[refusal];
    ctx->refusal = refusal;

    ngx_env_gateway_metric_inc(NGX_ENVGW_M_REQUESTS + refusal);

    ngx_log_error(glcf->log_level, r->connection->log, 0,
                  "env_gateway: refused %ui %s token_id=\"%V\" "
                  "environment_id=\"%V\" account=\"%V\"",
                  rf->status, rf->code, &ctx->token_id, &ctx->environment_id,
                  ctx->account_id.len ? &ctx->account_id : &ctx->account_req);

    /*
     * No "100 Continue" for a refused request: the body is not invited
     * (nginx's own special responses do the same).
     */
    r->expect_tested = 1;

    if (ngx_http_discard_request_body(r) != NGX_OK) {
        r->keepalive = 0;
    }

    /*
     * The fixed bodies are encoded once per process (a flood of bad tokens
     * costs no JSON encoding); a message naming this request's method or
     * problem is encoded for it.
     */
    if (ctx->detail.len) {
        body = ngx_env_gateway_refusal_body(rf, (char *) ctx->detail.data);

    } else {
        if (rf->body == NULL) {
            rf->body = ngx_env_gateway_refusal_body(rf, rf->message);
        }

        body = rf->body;
    }

    if (body == NULL) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return NGX_DONE;
    }

    len = ngx_strlen(body);

    b = ngx_create_temp_buf(r->pool, len + 1);
    if (b != NULL) {
        b->last = ngx_cpymem(b->last, body, len);
        *b->last++ = '\n';
    }

    if (body != rf->body) {
        free(body);
    }

    if (b == NULL) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return NGX_DONE;
    }

    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    r->headers_out.status = rf->status;
    r->headers_out.content_length_n = b->last - b->pos;
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
