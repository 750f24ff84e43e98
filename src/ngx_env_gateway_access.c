/*
 * env_gateway: the access-phase handler, readable top to bottom.
 *
 *   start:     credentials -> request sanity -> first fetches (token, and
 *              the named account and environment in the same round trip)
 *   evaluate:  token (401) -> environment (403) -> account (400/404);
 *              a check that needs a record not fetched yet fetches it and
 *              suspends; evaluate is re-run from the top on resume, so it
 *              is a function of the slots' states.
 *              -> route (404/405): the environment's integration record
 *              names the method and the upstream URL.
 *   allow:     variables are set, credentials hidden from the upstream.
 *
 * Any outcome that is not a positive answer is a refusal: fail closed.
 */

#include "ngx_env_gateway.h"

#include <jansson.h>


#define NGX_ENVGW_ACCOUNT_MAX  256
#define NGX_ENVGW_BODY_MAX     (1024 * 1024)

#define NGX_ENVGW_ST_NEW       0
#define NGX_ENVGW_ST_WAIT      1
#define NGX_ENVGW_ST_DONE      2


static ngx_int_t ngx_env_gateway_start(ngx_http_request_t *r,
    ngx_env_gateway_ctx_t *ctx, ngx_env_gateway_loc_conf_t *glcf);
static ngx_int_t ngx_env_gateway_evaluate(ngx_http_request_t *r,
    ngx_env_gateway_ctx_t *ctx, ngx_env_gateway_loc_conf_t *glcf);
static ngx_int_t ngx_env_gateway_allow(ngx_http_request_t *r,
    ngx_env_gateway_ctx_t *ctx, ngx_env_gateway_loc_conf_t *glcf);
static void ngx_env_gateway_resume(ngx_event_t *ev);
static ngx_int_t ngx_env_gateway_account(ngx_http_request_t *r,
    ngx_env_gateway_ctx_t *ctx, ngx_env_gateway_loc_conf_t *glcf,
    ngx_env_gateway_record_t *tok);
static ngx_int_t ngx_env_gateway_route(ngx_http_request_t *r,
    ngx_env_gateway_ctx_t *ctx);
static ngx_int_t ngx_env_gateway_body_account(ngx_http_request_t *r,
    ngx_env_gateway_ctx_t *ctx, ngx_env_gateway_loc_conf_t *glcf);
static ngx_int_t ngx_env_gateway_invalid(ngx_http_request_t *r,
    ngx_env_gateway_ctx_t *ctx, const char *why);
static ngx_int_t ngx_env_gateway_refuse_msg(ngx_http_request_t *r,
    ngx_env_gateway_ctx_t *ctx, ngx_uint_t refusal, const char *why);
static ngx_int_t ngx_env_gateway_account_syntax(ngx_str_t *id);
static ngx_int_t ngx_env_gateway_strip_arg(ngx_http_request_t *r,
    ngx_str_t *name);
static ngx_int_t ngx_env_gateway_read_body(ngx_http_request_t *r,
    ngx_env_gateway_ctx_t *ctx);
static void ngx_env_gateway_body_handler(ngx_http_request_t *r);
static void ngx_env_gateway_cleanup(void *data);


static ngx_str_t  ngx_env_gateway_family[] = {
    ngx_string(ENVGW_KEY_TOKEN),
    ngx_string(ENVGW_KEY_ACCOUNT),
    ngx_string(ENVGW_KEY_ENV),
    ngx_string(ENVGW_KEY_TENANT),
    ngx_string(ENVGW_KEY_INTEGRATION)
};

static ngx_str_t  ngx_env_gateway_arg_account =
    ngx_string("integrated_account_id");
static ngx_str_t  ngx_env_gateway_arg_env = ngx_string("environment_id");
static ngx_str_t  ngx_env_gateway_hdr_env = ngx_string("x-environment-id");


ngx_int_t
ngx_env_gateway_access_handler(ngx_http_request_t *r)
{
    ngx_int_t                    rc;
    ngx_pool_cleanup_t          *cln;
    ngx_env_gateway_ctx_t       *ctx;
    ngx_env_gateway_loc_conf_t  *glcf;

    glcf = ngx_http_get_module_loc_conf(r, ngx_env_gateway_module);

    if (!glcf->enable) {
        return NGX_DECLINED;
    }

    ctx = ngx_http_get_module_ctx(r, ngx_env_gateway_module);

    if (ctx == NULL) {
        ctx = ngx_pcalloc(r->pool, sizeof(ngx_env_gateway_ctx_t));
        if (ctx == NULL) {
            return NGX_ERROR;
        }

        cln = ngx_pool_cleanup_add(r->pool, 0);
        if (cln == NULL) {
            return NGX_ERROR;
        }

        cln->handler = ngx_env_gateway_cleanup;
        cln->data = &ctx->waiter;

        ctx->waiter.request = r;
        ctx->waiter.resume.handler = ngx_env_gateway_resume;
        ctx->waiter.resume.data = &ctx->waiter;
        ctx->waiter.resume.log = r->connection->log;

        for (rc = 0; rc < NGX_ENVGW_NSLOTS; rc++) {
            ctx->waiter.slots[rc].waiter = &ctx->waiter;
        }

        ngx_http_set_ctx(r, ctx, ngx_env_gateway_module);

        rc = ngx_env_gateway_start(r, ctx, glcf);

        if (rc != NGX_OK) {
            return rc;
        }

    } else if (ctx->waiter.pending || (ctx->body_reading && !ctx->body_read)) {
        return NGX_AGAIN;

    } else if (ctx->state == NGX_ENVGW_ST_DONE) {
        /* re-entered after an allow (e.g. "satisfy any" re-runs) */
        return NGX_OK;
    }

    return ngx_env_gateway_evaluate(r, ctx, glcf);
}


static void
ngx_env_gateway_cleanup(void *data)
{
    ngx_env_gateway_waiter_detach(data);
}


static void
ngx_env_gateway_resume(ngx_event_t *ev)
{
    ngx_connection_t          *c;
    ngx_http_request_t        *r;
    ngx_env_gateway_waiter_t  *w;

    w = ev->data;
    r = w->request;
    c = r->connection;

    ngx_http_set_log_request(c->log, r);

    ngx_http_core_run_phases(r);
    ngx_http_run_posted_requests(c);
}


/* ------------------------------------------------------------------ */
/* request sanity                                                      */

typedef struct {
    ngx_str_t    value;
    ngx_uint_t   count;
    ngx_uint_t   encoded;     /* the name or the value was escaped */
} ngx_env_gateway_qarg_t;

#define NGX_ENVGW_ARG_ACCOUNT      0   /* integrated_account_id */
#define NGX_ENVGW_ARG_ENV          1   /* environment_id */
#define NGX_ENVGW_ARG_TOKEN        2   /* env_gateway_token $arg_NAME */
#define NGX_ENVGW_ARG_ACCOUNT_VAR  3   /* env_gateway_account $arg_NAME */


typedef struct {
    ngx_uint_t        count;
    ngx_table_elt_t  *first;
} ngx_env_gateway_hdr_t;

#define NGX_ENVGW_HDR_ENV          0   /* X-Environment-Id */
#define NGX_ENVGW_HDR_TOKEN        1   /* env_gateway_token $http_NAME */
#define NGX_ENVGW_HDR_ACCOUNT      2   /* env_gateway_account $http_NAME */


/*
 * Find arguments by name in one pass over the query, counting repeats and
 * noticing any escaping in a name or value: "?integrated%5Faccount_id=x"
 * or a "+" or "%" in a value may be read differently by the upstream than
 * by us.  Names match in any case, as nginx's $arg_NAME does.
 */
static void
ngx_env_gateway_scan_args(ngx_http_request_t *r, ngx_str_t **names,
    ngx_env_gateway_qarg_t *args, ngx_uint_t n)
{
    u_char      *p, *last, *end, *eq, *dst, *src, *name;
    u_char       dec[64];
    size_t       nlen;
    ngx_uint_t   i, decoded;

    ngx_memzero(args, n * sizeof(ngx_env_gateway_qarg_t));

    if (r->args.len == 0) {
        return;
    }

    p = r->args.data;
    last = p + r->args.len;

    while (p < last) {
        end = ngx_strlchr(p, last, '&');
        if (end == NULL) {
            end = last;
        }

        eq = ngx_strlchr(p, end, '=');
        nlen = (eq ? eq : end) - p;
        name = p;
        decoded = 0;

        if (nlen < sizeof(dec) && ngx_strlchr(p, p + nlen, '%')) {
            src = p;
            dst = dec;
            ngx_unescape_uri(&dst, &src, nlen, NGX_UNESCAPE_URI);
            name = dec;
            nlen = dst - dec;
            decoded = 1;
        }

        for (i = 0; i < n; i++) {
            if (nlen != names[i]->len
                || ngx_strncasecmp(name, names[i]->data, nlen) != 0)
            {
                continue;
            }

            args[i].count++;
            args[i].value.data = eq ? eq + 1 : end;
            args[i].value.len = end - args[i].value.data;

            if (decoded
                || ngx_strlchr(args[i].value.data, end, '%')
                || ngx_strlchr(args[i].value.data, end, '+'))
            {
                args[i].encoded = 1;
            }
        }

        p = end + 1;
    }
}


/*
 * Find request headers by lowercase name in one pass over the list,
 * counting repeats and keeping the first of each.
 */
static void
ngx_env_gateway_scan_headers(ngx_http_request_t *r, ngx_str_t **names,
    ngx_env_gateway_hdr_t *hdrs, ngx_uint_t n)
{
    ngx_uint_t        i, k;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    ngx_memzero(hdrs, n * sizeof(ngx_env_gateway_hdr_t));

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

        for (k = 0; k < n; k++) {
            if (h[i].key.len == names[k]->len
                && ngx_strncmp(h[i].lowcase_key, names[k]->data,
                               names[k]->len) == 0
                && hdrs[k].count++ == 0)
            {
                hdrs[k].first = &h[i];
            }
        }
    }
}


/* a refusal whose message says what was wrong (a NUL-terminated string) */
static ngx_int_t
ngx_env_gateway_refuse_msg(ngx_http_request_t *r, ngx_env_gateway_ctx_t *ctx,
    ngx_uint_t refusal, const char *why)
{
    ctx->detail.data = (u_char *) why;
    ctx->detail.len = ngx_strlen(why);

    return ngx_env_gateway_refuse(r, ctx, refusal);
}


/* 400 invalid_request, saying why */
static ngx_int_t
ngx_env_gateway_invalid(ngx_http_request_t *r, ngx_env_gateway_ctx_t *ctx,
    const char *why)
{
    return ngx_env_gateway_refuse_msg(r, ctx, NGX_ENVGW_INVALID_REQUEST, why);
}


static ngx_int_t
ngx_env_gateway_check_arg(ngx_http_request_t *r, ngx_env_gateway_ctx_t *ctx,
    ngx_env_gateway_qarg_t *arg)
{
    if (arg->count > 1) {
        return ngx_env_gateway_invalid(r, ctx,
                   "A query argument the gateway reads is given twice.");
    }

    if (arg->encoded) {
        return ngx_env_gateway_invalid(r, ctx,
                   "A query argument the gateway reads is percent-encoded.");
    }

    return NGX_OK;
}


/*
 * An account id we will look up: printable ASCII, no path or URL syntax.
 * NGX_OK: usable; NGX_DECLINED: cannot exist (404 after the token check);
 * NGX_ABORT: ambiguous (400).
 */
static ngx_int_t
ngx_env_gateway_account_syntax(ngx_str_t *id)
{
    u_char  *p, *last;

    p = id->data;
    last = p + id->len;

    for ( /* void */ ; p < last; p++) {
        if (*p < 0x20 || *p == 0x7f || *p == '/' || *p == '?' || *p == '#'
            || *p == '%' || *p == '\\' || *p == ' ')
        {
            return NGX_ABORT;
        }

        if (*p == '.' && p + 1 < last && p[1] == '.') {
            return NGX_ABORT;
        }

        if (*p >= 0x80) {
            return NGX_DECLINED;
        }
    }

    if (id->len > NGX_ENVGW_ACCOUNT_MAX) {
        return NGX_DECLINED;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_env_gateway_start(ngx_http_request_t *r, ngx_env_gateway_ctx_t *ctx,
    ngx_env_gateway_loc_conf_t *glcf)
{
    ngx_int_t               rc;
    ngx_str_t               token, id, *names[4];
    ngx_uint_t              i, nargs;
    ngx_table_elt_t        *h;
    ngx_env_gateway_qarg_t   args[4];
    ngx_env_gateway_hdr_t   hdrs[3];

    ctx->state = NGX_ENVGW_ST_WAIT;

    /*
     * 0. a token in the query must not reach a log line: nginx appends the
     * request line to every error line of this request, and $request_uri
     * would carry it into access logs.
     */
    if (glcf->token_arg.len) {
        if (ngx_env_gateway_redact(r->pool, &r->request_line,
                                   &glcf->token_arg, &r->request_line)
            != NGX_OK)
        {
            return NGX_ERROR;
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
    }

    /* the query arguments the gateway reads, in one pass */

    names[NGX_ENVGW_ARG_ACCOUNT] = &ngx_env_gateway_arg_account;
    names[NGX_ENVGW_ARG_ENV] = &ngx_env_gateway_arg_env;
    names[NGX_ENVGW_ARG_TOKEN] = &glcf->token_arg;
    names[NGX_ENVGW_ARG_ACCOUNT_VAR] = &glcf->account_arg;
    nargs = glcf->account_arg.len ? 4 : 3;

    /* the usual $arg_integrated_account_id is the fixed name: look once */
    if (nargs == 4
        && !ngx_env_gateway_arg_ne(&glcf->account_arg,
                                   &ngx_env_gateway_arg_account))
    {
        nargs = 3;
    }

    ngx_env_gateway_scan_args(r, names, args, nargs);

    if (glcf->account_arg.len && nargs == 3) {
        args[NGX_ENVGW_ARG_ACCOUNT_VAR] = args[NGX_ENVGW_ARG_ACCOUNT];
    }

    /* and the request headers it reads, in one pass too */

    names[NGX_ENVGW_HDR_ENV] = &ngx_env_gateway_hdr_env;
    names[NGX_ENVGW_HDR_TOKEN] = &glcf->token_header;
    names[NGX_ENVGW_HDR_ACCOUNT] = &glcf->account_header;

    ngx_env_gateway_scan_headers(r, names, hdrs, 3);

    /* 1. the one credential */

    if (glcf->token == NULL) {
        h = r->headers_in.authorization;
        ctx->credential = h;

        if (h == NULL) {
            return ngx_env_gateway_refuse(r, ctx, NGX_ENVGW_MISSING_TOKEN);
        }

        rc = ngx_env_gateway_bearer(&h->value, &token);

        if (rc == NGX_ABORT) {
            return ngx_env_gateway_invalid(r, ctx,
                       "The Authorization header carries several "
                       "credentials.");
        }

        if (rc == NGX_DECLINED) {
            return ngx_env_gateway_refuse(r, ctx, NGX_ENVGW_MISSING_TOKEN);
        }

    } else {
        if (hdrs[NGX_ENVGW_HDR_TOKEN].count > 1) {
            return ngx_env_gateway_invalid(r, ctx,
                       "The credential header is given twice.");
        }

        ctx->credential = hdrs[NGX_ENVGW_HDR_TOKEN].first;

        if (glcf->token_arg.len && args[NGX_ENVGW_ARG_TOKEN].count > 1) {
            return ngx_env_gateway_invalid(r, ctx,
                       "The credential argument is given twice.");
        }

        if (ngx_http_complex_value(r, glcf->token, &token) != NGX_OK) {
            return NGX_ERROR;
        }

        if (token.len == 0) {
            return ngx_env_gateway_refuse(r, ctx, NGX_ENVGW_MISSING_TOKEN);
        }
    }

    if (ngx_env_gateway_token_syntax(&token) != NGX_OK) {
        return ngx_env_gateway_refuse(r, ctx, NGX_ENVGW_INVALID_TOKEN);
    }

    ngx_env_gateway_sha256_hex(&token, ctx->token_hash);

    /* a query token leaves $args at once: refused requests log it too */
    if (glcf->hide_credentials && glcf->token_arg.len) {
        if (ngx_env_gateway_strip_arg(r, &glcf->token_arg) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    /* 2. what the request names, unambiguously */

    for (i = 0; i < nargs; i++) {
        if (i == NGX_ENVGW_ARG_TOKEN) {
            continue;
        }

        rc = ngx_env_gateway_check_arg(r, ctx, &args[i]);
        if (rc != NGX_OK) {
            return rc;
        }
    }

    ctx->env_req = args[NGX_ENVGW_ARG_ENV].value;

    h = hdrs[NGX_ENVGW_HDR_ENV].first;

    if (hdrs[NGX_ENVGW_HDR_ENV].count > 1) {
        return ngx_env_gateway_invalid(r, ctx,
                   "The X-Environment-Id header is given twice.");
    }

    if (h) {
        if (ctx->env_req.len
            && (ctx->env_req.len != h->value.len
                || ngx_strncmp(ctx->env_req.data, h->value.data,
                               h->value.len) != 0))
        {
            return ngx_env_gateway_invalid(r, ctx,
                       "The environment_id argument and the "
                       "X-Environment-Id header disagree.");
        }

        ctx->env_req = h->value;
    }

    if (hdrs[NGX_ENVGW_HDR_ACCOUNT].count > 1) {
        return ngx_env_gateway_invalid(r, ctx,
                   "The integrated account header is given twice.");
    }

    if (glcf->account) {
        if (glcf->account_arg.len) {
            /* what $arg_NAME would give, found by the scan above */
            id = args[NGX_ENVGW_ARG_ACCOUNT_VAR].value;

        } else if (ngx_http_complex_value(r, glcf->account, &id) != NGX_OK) {
            return NGX_ERROR;
        }

        ctx->account_req = id;

        if (id.len) {
            rc = ngx_env_gateway_account_syntax(&id);

            if (rc == NGX_ABORT) {
                return ngx_env_gateway_invalid(r, ctx,
                           "The integrated_account_id has characters "
                           "that are not allowed.");
            }

            ctx->account_bad = (rc != NGX_OK);
        }
    }

    if (glcf->tenant) {
        if (ngx_http_complex_value(r, glcf->tenant, &ctx->tenant_req)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        if (ctx->tenant_req.len
            && ngx_env_gateway_path_value_ok(&ctx->tenant_req) != NGX_OK)
        {
            return ngx_env_gateway_invalid(r, ctx,
                       "The tenant_id has characters that are not allowed.");
        }
    }

    if (glcf->integration) {
        if (ngx_http_complex_value(r, glcf->integration,
                                   &ctx->integration_req)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        if (ngx_env_gateway_path_value_ok(&ctx->integration_req) != NGX_OK) {
            return ngx_env_gateway_invalid(r, ctx,
                       "The integration name has characters that are not "
                       "allowed.");
        }
    }

    if (glcf->route_resource) {
        if (ngx_http_complex_value(r, glcf->route_resource, &ctx->resource)
            != NGX_OK
            || (glcf->route_rest
                && ngx_http_complex_value(r, glcf->route_rest, &ctx->rest)
                   != NGX_OK))
        {
            return NGX_ERROR;
        }

        if (ctx->resource.len == 0
            || ngx_env_gateway_path_value_ok(&ctx->resource) != NGX_OK
            || ngx_env_gateway_path_value_ok(&ctx->rest) != NGX_OK)
        {
            return ngx_env_gateway_invalid(r, ctx,
                       "A path value has '/', '..', '?', '#', '%' or "
                       "control characters.");
        }
    }

    /* 3. one round trip for everything known now */

    rc = ngx_env_gateway_fetch(r, &ctx->waiter.slots[NGX_ENVGW_SLOT_TOKEN],
                               NGX_ENVGW_REC_TOKEN,
                               &ngx_env_gateway_family[NGX_ENVGW_REC_TOKEN],
                               &(ngx_str_t) { ENVGW_SHA256_HEX_LEN,
                                              ctx->token_hash },
                               NULL);
    if (rc == NGX_ERROR) {
        return NGX_ERROR;
    }

    if (rc == NGX_OK) {
        /* Redis is down: the token cannot be checked */
        return NGX_OK;
    }

    if (ctx->account_req.len && !ctx->account_bad) {
        rc = ngx_env_gateway_fetch(r,
                 &ctx->waiter.slots[NGX_ENVGW_SLOT_ACCOUNT],
                 NGX_ENVGW_REC_ACCOUNT,
                 &ngx_env_gateway_family[NGX_ENVGW_REC_ACCOUNT],
                 &ctx->account_req, NULL);
        if (rc == NGX_ERROR) {
            return NGX_ERROR;
        }
    }

    if (ctx->env_req.len) {
        rc = ngx_env_gateway_fetch(r, &ctx->waiter.slots[NGX_ENVGW_SLOT_ENV],
                                   NGX_ENVGW_REC_ENV,
                                   &ngx_env_gateway_family[NGX_ENVGW_REC_ENV],
                                   &ctx->env_req, NULL);
        if (rc == NGX_ERROR) {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/* ------------------------------------------------------------------ */
/* evaluation                                                          */

/*
 * The common answers of a slot: NGX_OK when its record is here, NGX_AGAIN
 * when it is being fetched, NGX_DONE when a refusal was sent (unavailable
 * or malformed), NGX_DECLINED when the record does not exist.
 */
static ngx_int_t
ngx_env_gateway_slot(ngx_http_request_t *r, ngx_env_gateway_ctx_t *ctx,
    ngx_uint_t i, ngx_str_t *id, ngx_str_t *id2)
{
    ngx_int_t                rc;
    ngx_env_gateway_slot_t  *slot;

    slot = &ctx->waiter.slots[i];

    if (slot->status == NGX_ENVGW_FETCH_NONE) {
        rc = ngx_env_gateway_fetch(r, slot, i, &ngx_env_gateway_family[i],
                                   id, id2);
        if (rc == NGX_ERROR) {
            return NGX_ERROR;
        }
    }

    switch (slot->status) {

    case NGX_ENVGW_FETCH_FOUND:
        return NGX_OK;

    case NGX_ENVGW_FETCH_PENDING:
        return NGX_AGAIN;

    case NGX_ENVGW_FETCH_NOT_FOUND:
        return NGX_DECLINED;

    case NGX_ENVGW_FETCH_MALFORMED:
        return ngx_env_gateway_refuse(r, ctx, NGX_ENVGW_MISCONFIGURED);

    default: /* NGX_ENVGW_FETCH_UNAVAILABLE */
        return ngx_env_gateway_refuse(r, ctx, NGX_ENVGW_UNAVAILABLE);
    }
}


static ngx_int_t
ngx_env_gateway_evaluate(ngx_http_request_t *r, ngx_env_gateway_ctx_t *ctx,
    ngx_env_gateway_loc_conf_t *glcf)
{
    ngx_int_t                  rc;
    ngx_str_t                 *f;
    ngx_env_gateway_record_t  *tok, *rec;

    /* token: 401 */

    rc = ngx_env_gateway_slot(r, ctx, NGX_ENVGW_SLOT_TOKEN, NULL, NULL);

    if (rc == NGX_DECLINED) {
        return ngx_env_gateway_refuse(r, ctx, NGX_ENVGW_INVALID_TOKEN);
    }

    if (rc != NGX_OK) {
        return rc;
    }

    tok = &ctx->waiter.slots[NGX_ENVGW_SLOT_TOKEN].rec;
    f = tok->fields;

    ctx->token_id = f[NGX_ENVGW_TOK_TOKEN_ID];
    ctx->environment_id = f[NGX_ENVGW_TOK_ENV_ID];

    if ((tok->flags & NGX_ENVGW_TOK_REVOKED)
        || (tok->expires_at && tok->expires_at <= (int64_t) ngx_time()))
    {
        return ngx_env_gateway_refuse(r, ctx, NGX_ENVGW_INVALID_TOKEN);
    }

    ctx->team_id = f[NGX_ENVGW_TOK_TEAM_ID];
    ctx->environment_id = f[NGX_ENVGW_TOK_ENV_ID];
    ctx->environment = f[NGX_ENVGW_TOK_ENV_NAME];

    /* environment: 403 */

    if (ctx->env_req.len
        && (ctx->env_req.len != ctx->environment_id.len
            || ngx_strncmp(ctx->env_req.data, ctx->environment_id.data,
                           ctx->env_req.len) != 0))
    {
        if (!(tok->flags & NGX_ENVGW_TOK_KIND_ADMIN)) {
            return ngx_env_gateway_refuse(r, ctx, NGX_ENVGW_ENV_MISMATCH);
        }

        /* an admin token may name another environment of its team */

        rc = ngx_env_gateway_slot(r, ctx, NGX_ENVGW_SLOT_ENV, &ctx->env_req,
                                  NULL);

        if (rc == NGX_DECLINED) {
            return ngx_env_gateway_refuse(r, ctx, NGX_ENVGW_ENV_MISMATCH);
        }

        if (rc != NGX_OK) {
            return rc;
        }

        rec = &ctx->waiter.slots[NGX_ENVGW_SLOT_ENV].rec;

        if (ngx_env_gateway_str_ne(&rec->fields[NGX_ENVGW_ENV_TEAM_ID],
                           &ctx->team_id)
            || ngx_env_gateway_str_ne(&rec->fields[NGX_ENVGW_ENV_ID],
                                      &ctx->env_req))
        {
            return ngx_env_gateway_refuse(r, ctx, NGX_ENVGW_ENV_MISMATCH);
        }

        ctx->environment_id = ctx->env_req;
        ctx->environment = rec->fields[NGX_ENVGW_ENV_NAME];
    }

    /* account: 400/404 */

    rc = ngx_env_gateway_account(r, ctx, glcf, tok);
    if (rc != NGX_OK) {
        return rc;
    }

    /* route: 404/405 */

    if (glcf->route_resource) {
        rc = ngx_env_gateway_route(r, ctx);
        if (rc != NGX_OK) {
            return rc;
        }
    }

    return ngx_env_gateway_allow(r, ctx, glcf);
}


/*
 * The account the request acts on, from wherever it may be named: the
 * request (query, header), the account token, a JSON body field, the
 * tenant index.  Two sources that disagree are refused, never chosen from.
 */
static ngx_int_t
ngx_env_gateway_account(ngx_http_request_t *r, ngx_env_gateway_ctx_t *ctx,
    ngx_env_gateway_loc_conf_t *glcf, ngx_env_gateway_record_t *tok)
{
    ngx_int_t                  rc;
    ngx_str_t                 *f, account, *pair;
    ngx_uint_t                 i;
    ngx_env_gateway_record_t  *rec;

    f = tok->fields;
    account = ctx->account_req;

    if (tok->flags & NGX_ENVGW_TOK_KIND_ACCOUNT) {
        if (account.len
            && ngx_env_gateway_str_ne(&account, &f[NGX_ENVGW_TOK_ACCOUNT_ID]))
        {
            return ngx_env_gateway_refuse(r, ctx,
                                          NGX_ENVGW_ACCOUNT_NOT_FOUND);
        }

        account = f[NGX_ENVGW_TOK_ACCOUNT_ID];
    }

    if (glcf->body_field.len
        && (r->method & (NGX_HTTP_POST|NGX_HTTP_PUT|NGX_HTTP_PATCH)))
    {
        if (!ctx->body_read) {
            return ngx_env_gateway_read_body(r, ctx);
        }

        if (!ctx->body_parsed) {
            rc = ngx_env_gateway_body_account(r, ctx, glcf);
            if (rc != NGX_OK) {
                return rc;
            }
        }

        if (ctx->body_account.len) {
            if (account.len
                && ngx_env_gateway_str_ne(&account, &ctx->body_account))
            {
                /* an account token knows only its own account */
                if (tok->flags & NGX_ENVGW_TOK_KIND_ACCOUNT) {
                    return ngx_env_gateway_refuse(r, ctx,
                                               NGX_ENVGW_ACCOUNT_NOT_FOUND);
                }

                return ngx_env_gateway_invalid(r, ctx,
                           "The body and the request name different "
                           "integrated accounts.");
            }

            account = ctx->body_account;
        }
    }

    if (ctx->tenant_req.len) {
        rc = ngx_env_gateway_slot(r, ctx, NGX_ENVGW_SLOT_TENANT,
                                  &ctx->environment_id, &ctx->tenant_req);

        if (rc == NGX_DECLINED) {
            return ngx_env_gateway_refuse(r, ctx,
                                          NGX_ENVGW_ACCOUNT_NOT_FOUND);
        }

        if (rc != NGX_OK) {
            return rc;
        }

        rec = &ctx->waiter.slots[NGX_ENVGW_SLOT_TENANT].rec;
        pair = NULL;

        for (i = 0; i + 1 < rec->nfields; i += 2) {
            if (ctx->integration_req.len == 0
                || !ngx_env_gateway_str_ne(&rec->fields[i],
                                           &ctx->integration_req))
            {
                if (pair) {
                    return ngx_env_gateway_invalid(r, ctx,
                               "The tenant has several integrations: "
                               "name one.");
                }

                pair = &rec->fields[i];
            }
        }

        if (pair == NULL) {
            return ngx_env_gateway_refuse(r, ctx,
                                          NGX_ENVGW_ACCOUNT_NOT_FOUND);
        }

        if (account.len && ngx_env_gateway_str_ne(&account, &pair[1])) {
            if (tok->flags & NGX_ENVGW_TOK_KIND_ACCOUNT) {
                return ngx_env_gateway_refuse(r, ctx,
                                              NGX_ENVGW_ACCOUNT_NOT_FOUND);
            }

            return ngx_env_gateway_invalid(r, ctx,
                       "The tenant and the request name different "
                       "integrated accounts.");
        }

        account = pair[1];
    }

    if (account.len == 0) {
        if (glcf->account_required || glcf->route_resource) {
            return ngx_env_gateway_refuse(r, ctx, NGX_ENVGW_MISSING_ACCOUNT);
        }

        return NGX_OK;
    }

    if (account.data != ctx->account_req.data) {
        rc = ngx_env_gateway_account_syntax(&account);

        if (rc == NGX_ABORT) {
            return ngx_env_gateway_invalid(r, ctx,
                       "The integrated_account_id has characters that are "
                       "not allowed.");
        }

        if (rc != NGX_OK) {
            return ngx_env_gateway_refuse(r, ctx,
                                          NGX_ENVGW_ACCOUNT_NOT_FOUND);
        }

    } else if (ctx->account_bad) {
        return ngx_env_gateway_refuse(r, ctx, NGX_ENVGW_ACCOUNT_NOT_FOUND);
    }

    rc = ngx_env_gateway_slot(r, ctx, NGX_ENVGW_SLOT_ACCOUNT, &account, NULL);

    if (rc == NGX_DECLINED) {
        return ngx_env_gateway_refuse(r, ctx, NGX_ENVGW_ACCOUNT_NOT_FOUND);
    }

    if (rc != NGX_OK) {
        return rc;
    }

    rec = &ctx->waiter.slots[NGX_ENVGW_SLOT_ACCOUNT].rec;

    /* another environment's account answers exactly like no account */
    if (!(rec->flags & NGX_ENVGW_ACC_ACTIVE)
        || ngx_env_gateway_str_ne(&rec->fields[NGX_ENVGW_ACC_ENV_ID],
                                  &ctx->environment_id)
        || ngx_env_gateway_str_ne(&rec->fields[NGX_ENVGW_ACC_ID], &account))
    {
        return ngx_env_gateway_refuse(r, ctx, NGX_ENVGW_ACCOUNT_NOT_FOUND);
    }

    ctx->account_id = account;
    ctx->integration = rec->fields[NGX_ENVGW_ACC_INTEGRATION];
    ctx->tenant_id = rec->fields[NGX_ENVGW_ACC_TENANT_ID];

    return NGX_OK;
}


static ngx_int_t
ngx_env_gateway_route(ngx_http_request_t *r, ngx_env_gateway_ctx_t *ctx)
{
    ngx_int_t                    rc;
    ngx_str_t                   *quad, name, bad, consumed[6];
    ngx_uint_t                   refusal, n;
    const char                  *why;
    ngx_env_gateway_record_t    *rec, none;
    ngx_env_gateway_loc_conf_t  *glcf;

    glcf = ngx_http_get_module_loc_conf(r, ngx_env_gateway_module);

    if (ctx->integration.len == 0) {
        return ngx_env_gateway_refuse_msg(r, ctx, NGX_ENVGW_MISCONFIGURED,
                   "The integrated account names no integration.");
    }

    rc = ngx_env_gateway_slot(r, ctx, NGX_ENVGW_SLOT_INTEGRATION,
                              &ctx->environment_id, &ctx->integration);

    if (rc != NGX_OK && rc != NGX_DECLINED) {
        return rc;
    }

    name = ctx->environment.len ? ctx->environment : ctx->environment_id;

    /* messages name request and record values: refuse_detail escapes them */

    if (rc == NGX_DECLINED) {
        /* name the method the request meant: select from an empty record */
        none.flags = 0;
        none.expires_at = 0;
        none.nfields = 0;
        none.fields = NULL;

        (void) ngx_env_gateway_route_select(&none, &ctx->resource,
                                            &ctx->rest, &r->method_name,
                                            &quad, &ctx->method);

        return ngx_env_gateway_refuse_detail(r, ctx,
                   NGX_ENVGW_METHOD_NOT_FOUND,
                   "Integration %V is not installed in the %V environment, "
                   "so method %V of resource %V is not defined there.",
                   &ctx->integration, &name, &ctx->method, &ctx->resource);
    }

    rec = &ctx->waiter.slots[NGX_ENVGW_SLOT_INTEGRATION].rec;

    refusal = ngx_env_gateway_route_select(rec, &ctx->resource, &ctx->rest,
                                           &r->method_name, &quad,
                                           &ctx->method);

    if (refusal == NGX_ENVGW_METHOD_NOT_FOUND) {
        return ngx_env_gateway_refuse_detail(r, ctx, refusal,
                   "Method %V of resource %V is not defined for "
                   "integration %V in the %V environment.",
                   &ctx->method, &ctx->resource, &ctx->integration, &name);
    }

    if (refusal == NGX_ENVGW_METHOD_NOT_ALLOWED) {
        return ngx_env_gateway_refuse_detail(r, ctx, refusal,
                   "Method %V of resource %V takes %V, not %V.",
                   &ctx->method, &ctx->resource, &quad[2], &r->method_name);
    }

    /* ngx_str_set() evaluates its argument twice: no n++ inside it */
    consumed[0] = ngx_env_gateway_arg_account;
    consumed[1] = ngx_env_gateway_arg_env;
    n = 2;
    if (glcf->token_arg.len) {
        consumed[n++] = glcf->token_arg;
    }
    if (glcf->account_arg.len) {
        consumed[n++] = glcf->account_arg;
    }

    rc = ngx_env_gateway_route_url(r->pool,
                                   &rec->fields[NGX_ENVGW_INT_UPSTREAM],
                                   &quad[3], &ctx->rest, &r->args, consumed,
                                   n, &ctx->upstream_url, &bad, &why);

    if (rc == NGX_ERROR) {
        return NGX_ERROR;
    }

    if (rc == NGX_DECLINED) {
        return ngx_env_gateway_refuse_detail(r, ctx,
                                             NGX_ENVGW_INVALID_REQUEST, why,
                                             &ctx->method, &ctx->resource,
                                             &bad);
    }

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "env_gateway: routed, method of %uz bytes, "
                   "upstream URL of %uz bytes",
                   ctx->method.len, ctx->upstream_url.len);

    return NGX_OK;
}


/* ------------------------------------------------------------------ */
/* JSON body                                                           */

static ngx_int_t
ngx_env_gateway_read_body(ngx_http_request_t *r, ngx_env_gateway_ctx_t *ctx)
{
    ngx_int_t  rc;

    ctx->body_reading = 1;

    rc = ngx_http_read_client_request_body(r, ngx_env_gateway_body_handler);

    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return rc;
    }

    ngx_http_finalize_request(r, NGX_DONE);

    return NGX_DONE;
}


static void
ngx_env_gateway_body_handler(ngx_http_request_t *r)
{
    ngx_env_gateway_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_env_gateway_module);
    ctx->body_read = 1;

    /* the upstream gets the body we read */
    r->preserve_body = 1;
    r->write_event_handler = ngx_http_core_run_phases;
    ngx_http_core_run_phases(r);
}


static ngx_int_t
ngx_env_gateway_body_account(ngx_http_request_t *r, ngx_env_gateway_ctx_t *ctx,
    ngx_env_gateway_loc_conf_t *glcf)
{
    u_char        *data, *p;
    off_t          len, size;
    json_t        *root, *v;
    ssize_t        n;
    ngx_buf_t     *b;
    ngx_chain_t   *cl;
    json_error_t   err;

    ctx->body_parsed = 1;

    if (r->request_body == NULL || r->request_body->bufs == NULL) {
        return NGX_OK;
    }

    len = 0;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        len += ngx_buf_size(cl->buf);
    }

    if (len == 0) {
        return NGX_OK;
    }

    if (len > NGX_ENVGW_BODY_MAX) {
        return ngx_env_gateway_invalid(r, ctx,
                   "The request body is too large to read the integrated "
                   "account from.");
    }

    data = ngx_pnalloc(r->pool, len);
    if (data == NULL) {
        return NGX_ERROR;
    }

    p = data;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        b = cl->buf;
        size = ngx_buf_size(b);

        if (size == 0) {
            /* e.g. the empty last_buf; b->pos may be NULL */
            continue;
        }

        if (b->in_file) {
            n = ngx_read_file(b->file, p, size, b->file_pos);
            if (n != size) {
                return NGX_ERROR;
            }

        } else {
            ngx_memcpy(p, b->pos, size);
        }

        p += size;
    }

    /* duplicate keys are ambiguous: which one would the upstream read? */
    root = json_loadb((char *) data, len, JSON_REJECT_DUPLICATES, &err);

    if (root == NULL || !json_is_object(root)) {
        json_decref(root);
        return ngx_env_gateway_invalid(r, ctx,
                   "The request body is not a JSON object.");
    }

    v = json_object_get(root, (const char *) glcf->body_field.data);

    if (v && !json_is_null(v)) {
        if (!json_is_string(v) || json_string_length(v) == 0) {
            json_decref(root);
            return ngx_env_gateway_invalid(r, ctx,
                       "The integrated account in the body is not a "
                       "non-empty string.");
        }

        ctx->body_account.len = json_string_length(v);
        ctx->body_account.data = ngx_pnalloc(r->pool, ctx->body_account.len);
        if (ctx->body_account.data == NULL) {
            json_decref(root);
            return NGX_ERROR;
        }

        ngx_memcpy(ctx->body_account.data, json_string_value(v),
                   ctx->body_account.len);
    }

    json_decref(root);

    return NGX_OK;
}


/* ------------------------------------------------------------------ */
/* allow                                                               */

/* drop "name=..." from the query string forwarded upstream */
static ngx_int_t
ngx_env_gateway_strip_arg(ngx_http_request_t *r, ngx_str_t *name)
{
    u_char  *p, *last, *end, *eq, *dst, *start;

    if (r->args.len == 0) {
        return NGX_OK;
    }

    p = r->args.data;
    last = p + r->args.len;

    start = ngx_pnalloc(r->pool, r->args.len);
    if (start == NULL) {
        return NGX_ERROR;
    }

    dst = start;

    while (p < last) {
        end = ngx_strlchr(p, last, '&');
        if (end == NULL) {
            end = last;
        }

        eq = ngx_strlchr(p, end, '=');

        if (!((size_t) ((eq ? eq : end) - p) == name->len
              && ngx_strncasecmp(p, name->data, name->len) == 0))
        {
            if (dst != start) {
                *dst++ = '&';
            }
            dst = ngx_cpymem(dst, p, end - p);
        }

        p = end + 1;
    }

    if ((size_t) (dst - start) != r->args.len) {
        r->args.data = start;
        r->args.len = dst - start;
        r->valid_unparsed_uri = 0;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_env_gateway_allow(ngx_http_request_t *r, ngx_env_gateway_ctx_t *ctx,
    ngx_env_gateway_loc_conf_t *glcf)
{
    ngx_table_elt_t  *h;

    static ngx_str_t  hidden = ngx_string("Keep-Alive");
    static ngx_str_t  hidden_lc = ngx_string("keep-alive");

    ctx->state = NGX_ENVGW_ST_DONE;

    ngx_env_gateway_metric_inc(NGX_ENVGW_M_REQUESTS + NGX_ENVGW_OK);

    /*
     * Hide the credential header (the one element, repeats were refused)
     * from every upstream module without moving list elements, which other
     * headers_in pointers refer to: it becomes an empty "Keep-Alive", which
     * proxy_pass always replaces with its own.  A query token was stripped
     * from the arguments when read.
     */
    h = ctx->credential;

    if (glcf->hide_credentials && h) {
        h->key = hidden;
        h->lowcase_key = hidden_lc.data;
        h->hash = ngx_hash_key(hidden_lc.data, hidden_lc.len);
        ngx_str_null(&h->value);

        if (h == r->headers_in.authorization) {
            r->headers_in.authorization = NULL;
        }
    }

    return NGX_OK;
}
