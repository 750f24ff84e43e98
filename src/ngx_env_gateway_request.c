/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * env_gateway: what the request says, read once at the start of a check.
 *
 *   the request line redacted -> the boundary (path, headers, query:
 *   _boundary.c) -> the one credential -> what the request names (the
 *   environment, the account, a tenant, an integration, the route's
 *   resource and rest).
 *
 * An ambiguity is a 400 (two places that disagree, a value given twice, a
 * spelling a backend could read as another); no usable credential is a
 * 401.  Nothing here asks Redis: _access.c fetches what this file found.
 */

#include "ngx_env_gateway.h"


#define NGX_ENVGW_ID_MAX           256

/* the query arguments the gateway reads */
#define NGX_ENVGW_QA_ACCOUNT       0   /* integrated_account_id */
#define NGX_ENVGW_QA_ENV           1   /* environment_id */
#define NGX_ENVGW_QA_ACCESS_TOKEN  2   /* RFC 6750 access_token */
#define NGX_ENVGW_QA_TOKEN         3   /* env_gateway_token $arg_NAME */
#define NGX_ENVGW_QA_ACCOUNT_VAR   4   /* env_gateway_account $arg_NAME */
#define NGX_ENVGW_QA_METHOD        5   /* _method, on routes */
#define NGX_ENVGW_QA_N             6


static void ngx_env_gateway_query_names(ngx_env_gateway_loc_conf_t *glcf,
    ngx_str_t *names);
static ngx_int_t ngx_env_gateway_query(ngx_http_request_t *r,
    ngx_env_gateway_ctx_t *ctx, ngx_env_gateway_loc_conf_t *glcf,
    ngx_env_gateway_qarg_t *args);
static ngx_int_t ngx_env_gateway_main_args(ngx_http_request_t *r,
    ngx_env_gateway_ctx_t *ctx, ngx_str_t *names,
    ngx_env_gateway_qarg_t *args);
static ngx_int_t ngx_env_gateway_credential(ngx_http_request_t *r,
    ngx_env_gateway_ctx_t *ctx, ngx_env_gateway_loc_conf_t *glcf,
    ngx_env_gateway_headers_t *hdrs, ngx_env_gateway_qarg_t *args);
static ngx_int_t ngx_env_gateway_token_value(ngx_http_request_t *r,
    ngx_env_gateway_ctx_t *ctx, ngx_env_gateway_loc_conf_t *glcf,
    ngx_env_gateway_headers_t *hdrs, ngx_env_gateway_qarg_t *qt,
    ngx_str_t *token);
static ngx_int_t ngx_env_gateway_main_token(ngx_http_request_t *r,
    ngx_env_gateway_ctx_t *ctx);
static ngx_int_t ngx_env_gateway_token_once(ngx_http_request_t *r,
    ngx_env_gateway_ctx_t *ctx, ngx_env_gateway_loc_conf_t *glcf,
    ngx_str_t *token);
static ngx_int_t ngx_env_gateway_hide_query_token(ngx_http_request_t *r,
    ngx_env_gateway_loc_conf_t *glcf);
static ngx_int_t ngx_env_gateway_named_env(ngx_http_request_t *r,
    ngx_env_gateway_ctx_t *ctx, ngx_env_gateway_headers_t *hdrs,
    ngx_env_gateway_qarg_t *args);
static ngx_int_t ngx_env_gateway_named_account(ngx_http_request_t *r,
    ngx_env_gateway_ctx_t *ctx, ngx_env_gateway_loc_conf_t *glcf,
    ngx_env_gateway_headers_t *hdrs, ngx_env_gateway_qarg_t *args);
static ngx_int_t ngx_env_gateway_named_values(ngx_http_request_t *r,
    ngx_env_gateway_ctx_t *ctx, ngx_env_gateway_loc_conf_t *glcf);
static ngx_int_t ngx_env_gateway_named_id(ngx_http_request_t *r,
    ngx_env_gateway_ctx_t *ctx, ngx_str_t *id, const char *why);
static ngx_uint_t ngx_env_gateway_key_value_ok(ngx_str_t *v);


static ngx_str_t  ngx_env_gateway_arg_account =
    ngx_string("integrated_account_id");
static ngx_str_t  ngx_env_gateway_arg_env = ngx_string("environment_id");
static ngx_str_t  ngx_env_gateway_arg_access_token =
    ngx_string("access_token");


/*
 * Read what the request says into the context.  NGX_OK: read, the caller
 * fetches; NGX_DONE: refused (the refusal is sent); NGX_ERROR.
 */
ngx_int_t
ngx_env_gateway_request_read(ngx_http_request_t *r,
    ngx_env_gateway_ctx_t *ctx, ngx_env_gateway_loc_conf_t *glcf)
{
    ngx_int_t                   rc;
    ngx_env_gateway_qarg_t      args[NGX_ENVGW_QA_N];
    ngx_env_gateway_headers_t   hdrs;

    /* the target as sent, before redaction: copies of the credential */
    if (ctx->target.data == NULL) {
        ctx->target = r->unparsed_uri;
    }

    if (ngx_env_gateway_redact_line(r, glcf) != NGX_OK) {
        return NGX_ERROR;
    }

    /* 1. the request boundary: one reading of path, headers and query */

    if (ngx_env_gateway_path_check(r) != NGX_OK) {
        return ngx_env_gateway_refuse_invalid(r, ctx,
                   "The path has a dot segment, an encoded slash or "
                   "backslash, a backslash or a NUL byte.");
    }

    if (ngx_env_gateway_read_headers(r, ctx, glcf, &hdrs) != NGX_OK) {
        return NGX_ERROR;
    }

    rc = ngx_env_gateway_query(r, ctx, glcf, args);
    if (rc != NGX_OK) {
        return rc;
    }

    /*
     * On a route the gateway picks the verb: a verb named elsewhere
     * (X-HTTP-Method-Override, _method) would be a second one, which
     * Rails, Express's method-override and Laravel act on.
     */
    if (glcf->route_resource
        && (hdrs.method_override || args[NGX_ENVGW_QA_METHOD].count))
    {
        return ngx_env_gateway_refuse_invalid(r, ctx,
                   "The request names its HTTP method a second time "
                   "(X-HTTP-Method-Override or _method).");
    }

    /* 2. the one credential */

    rc = ngx_env_gateway_credential(r, ctx, glcf, &hdrs, args);
    if (rc != NGX_OK) {
        return rc;
    }

    /* 3. what the request names, unambiguously */

    rc = ngx_env_gateway_named_env(r, ctx, &hdrs, args);
    if (rc != NGX_OK) {
        return rc;
    }

    rc = ngx_env_gateway_named_account(r, ctx, glcf, &hdrs, args);
    if (rc != NGX_OK) {
        return rc;
    }

    return ngx_env_gateway_named_values(r, ctx, glcf);
}


/*
 * The query arguments a route's upstream URL does not pass on: those the
 * gateway read.  "names" holds NGX_ENVGW_CONSUMED_MAX; returns how many.
 */
ngx_uint_t
ngx_env_gateway_request_consumed(ngx_env_gateway_loc_conf_t *glcf,
    ngx_str_t *names)
{
    ngx_uint_t  n;

    /* ngx_str_set() evaluates its argument twice: no n++ inside it */
    names[0] = ngx_env_gateway_arg_account;
    names[1] = ngx_env_gateway_arg_env;
    n = 2;

    if (glcf->token_arg.len) {
        names[n++] = glcf->token_arg;
    }

    if (glcf->account_arg.len) {
        names[n++] = glcf->account_arg;
    }

    return n;
}


/*
 * An account or environment id we will look up: printable ASCII, no path
 * or URL syntax, no quote (ids become Redis keys, which log lines name).
 * NGX_OK: usable; NGX_DECLINED: cannot exist (404 after the token check);
 * NGX_ABORT: ambiguous (400).
 */
ngx_int_t
ngx_env_gateway_id_syntax(ngx_str_t *id)
{
    u_char  *p, *last;

    p = id->data;
    last = p + id->len;

    for ( /* void */ ; p < last; p++) {
        if (*p < 0x20 || *p == 0x7f || *p == '/' || *p == '?' || *p == '#'
            || *p == '%' || *p == '\\' || *p == ' ' || *p == '"')
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

    if (id->len > NGX_ENVGW_ID_MAX) {
        return NGX_DECLINED;
    }

    return NGX_OK;
}


/* ------------------------------------------------------------------ */
/* the query                                                           */

/* the names the query is read for, each once */
static void
ngx_env_gateway_query_names(ngx_env_gateway_loc_conf_t *glcf,
    ngx_str_t *names)
{
    names[NGX_ENVGW_QA_ACCOUNT] = ngx_env_gateway_arg_account;
    names[NGX_ENVGW_QA_ENV] = ngx_env_gateway_arg_env;
    names[NGX_ENVGW_QA_ACCESS_TOKEN] = ngx_env_gateway_arg_access_token;
    names[NGX_ENVGW_QA_TOKEN] = glcf->token_arg;
    names[NGX_ENVGW_QA_ACCOUNT_VAR] = glcf->account_arg;
    ngx_str_null(&names[NGX_ENVGW_QA_METHOD]);

    if (glcf->route_resource) {
        ngx_str_set(&names[NGX_ENVGW_QA_METHOD], "_method");
    }

    /* a configured name equal to a fixed one is read once, as the fixed */
    if (!ngx_env_gateway_str_ne(&glcf->token_arg,
                                &ngx_env_gateway_arg_access_token))
    {
        ngx_str_null(&names[NGX_ENVGW_QA_TOKEN]);
    }

    if (!ngx_env_gateway_str_ne(&glcf->account_arg,
                                &ngx_env_gateway_arg_account))
    {
        ngx_str_null(&names[NGX_ENVGW_QA_ACCOUNT_VAR]);
    }
}


static ngx_int_t
ngx_env_gateway_query(ngx_http_request_t *r, ngx_env_gateway_ctx_t *ctx,
    ngx_env_gateway_loc_conf_t *glcf, ngx_env_gateway_qarg_t *args)
{
    ngx_int_t   rc;
    ngx_str_t   names[NGX_ENVGW_QA_N], *bad;

    ngx_env_gateway_query_names(glcf, names);

    if (ngx_env_gateway_read_args(&r->args, names, args, NGX_ENVGW_QA_N,
                                  &bad)
        != NGX_OK)
    {
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "env_gateway: query argument spelled like \"%V\"",
                       bad);

        return ngx_env_gateway_refuse_invalid(r, ctx,
                   "A query argument is spelled so that a backend could "
                   "read it as one the gateway reads (an account, an "
                   "environment or a credential).");
    }

    /*
     * A subrequest (auth_request) checks for a request whose query goes
     * upstream with the main request: that query is read too, and must
     * not disagree with the subrequest's own.
     */
    if (r != r->main && r->main->args.len
        && r->main->args.data != r->args.data)
    {
        rc = ngx_env_gateway_main_args(r, ctx, names, args);
        if (rc != NGX_OK) {
            return rc;
        }
    }

    if (names[NGX_ENVGW_QA_TOKEN].len == 0 && glcf->token_arg.len) {
        args[NGX_ENVGW_QA_TOKEN] = args[NGX_ENVGW_QA_ACCESS_TOKEN];
    }

    if (names[NGX_ENVGW_QA_ACCOUNT_VAR].len == 0 && glcf->account_arg.len) {
        args[NGX_ENVGW_QA_ACCOUNT_VAR] = args[NGX_ENVGW_QA_ACCOUNT];
    }

    return NGX_OK;
}


/* a subrequest: the main request's query, merged into "args" */
static ngx_int_t
ngx_env_gateway_main_args(ngx_http_request_t *r, ngx_env_gateway_ctx_t *ctx,
    ngx_str_t *names, ngx_env_gateway_qarg_t *args)
{
    ngx_str_t               *bad;
    ngx_uint_t               i;
    ngx_env_gateway_qarg_t   margs[NGX_ENVGW_QA_N];

    if (ngx_env_gateway_read_args(&r->main->args, names, margs,
                                  NGX_ENVGW_QA_N, &bad)
        != NGX_OK)
    {
        return ngx_env_gateway_refuse_invalid(r, ctx,
                   "A query argument is spelled so that a backend could "
                   "read it as one the gateway reads (an account, an "
                   "environment or a credential).");
    }

    for (i = 0; i < NGX_ENVGW_QA_N; i++) {
        if (margs[i].count == 0) {
            continue;
        }

        if (args[i].count
            && ngx_env_gateway_str_ne(&args[i].value, &margs[i].value))
        {
            return ngx_env_gateway_refuse_invalid(r, ctx,
                       "The subrequest and its main request name different "
                       "values for an argument the gateway reads.");
        }

        if (args[i].count == 0) {
            args[i] = margs[i];
        }
    }

    return NGX_OK;
}


/* ------------------------------------------------------------------ */
/* the credential                                                      */

/*
 * Exactly one credential: the configured place, plus the places RFC 6750
 * defines (Authorization, an access_token query argument), each in every
 * spelling.  Two of them, or one given twice, are refused; a credential
 * only in a place this location does not read is no credential (401).
 * After an internal redirect the credential read before (and hidden) is
 * kept; a subrequest without a credential of its own reuses its main
 * request's token when the main request passed the gateway.
 */
static ngx_int_t
ngx_env_gateway_credential(ngx_http_request_t *r, ngx_env_gateway_ctx_t *ctx,
    ngx_env_gateway_loc_conf_t *glcf, ngx_env_gateway_headers_t *hdrs,
    ngx_env_gateway_qarg_t *args)
{
    ngx_int_t                rc;
    ngx_str_t                token;
    ngx_uint_t               places;
    ngx_env_gateway_qarg_t  *qt;

    if (ctx->have_token) {
        ngx_log_debug0(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "env_gateway: credential read before, kept");
        return NGX_OK;
    }

    if (hdrs->authorization.count > 1 || hdrs->token.count > 1
        || hdrs->cookie.count > 1 || args[NGX_ENVGW_QA_ACCESS_TOKEN].count > 1
        || args[NGX_ENVGW_QA_TOKEN].count > 1)
    {
        return ngx_env_gateway_refuse_invalid(r, ctx,
                   "The credential is given twice.");
    }

    qt = &args[NGX_ENVGW_QA_TOKEN];

    places = (hdrs->authorization.count > 0)
             + (hdrs->token.count > 0 && hdrs->token.first
                != hdrs->authorization.first)
             + (hdrs->cookie.count > 0)
             + hdrs->other_cookies
             + (args[NGX_ENVGW_QA_ACCESS_TOKEN].count > 0)
             + (glcf->token_arg.len && qt->count > 0
                && qt->value.data
                   != args[NGX_ENVGW_QA_ACCESS_TOKEN].value.data);

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "env_gateway: credential in %ui places", places);

    if (places > 1) {
        return ngx_env_gateway_refuse_invalid(r, ctx,
                   "The request carries more than one credential.");
    }

    rc = ngx_env_gateway_token_value(r, ctx, glcf, hdrs, qt, &token);
    if (rc != NGX_OK) {
        return rc;
    }

    if (token.len == 0) {
        if (places == 0 && ngx_env_gateway_main_token(r, ctx) == NGX_OK) {
            return NGX_OK;
        }

        return ngx_env_gateway_refuse(r, ctx, NGX_ENVGW_MISSING_TOKEN);
    }

    if (ngx_env_gateway_token_syntax(&token) != NGX_OK) {
        return ngx_env_gateway_refuse(r, ctx, NGX_ENVGW_INVALID_TOKEN);
    }

    rc = ngx_env_gateway_token_once(r, ctx, glcf, &token);
    if (rc != NGX_OK) {
        return rc;
    }

    ngx_env_gateway_sha256_hex(&token, ctx->token_hash);
    ctx->have_token = 1;
    ctx->token = token;

    /* a query credential leaves $args at once: refused requests log it */
    if (glcf->hide_credentials) {
        return ngx_env_gateway_hide_query_token(r, glcf);
    }

    return NGX_OK;
}


/* the token, from where this location reads it (empty: none there) */
static ngx_int_t
ngx_env_gateway_token_value(ngx_http_request_t *r, ngx_env_gateway_ctx_t *ctx,
    ngx_env_gateway_loc_conf_t *glcf, ngx_env_gateway_headers_t *hdrs,
    ngx_env_gateway_qarg_t *qt, ngx_str_t *token)
{
    ngx_int_t   rc;
    ngx_uint_t  level;

    ngx_str_null(token);

    if (glcf->token == NULL) {
        ctx->credential = hdrs->authorization.first;

        if (ctx->credential
            && ngx_env_gateway_bearer(&ctx->credential->value, token)
               == NGX_ABORT)
        {
            return ngx_env_gateway_refuse_invalid(r, ctx,
                       "The Authorization header carries several "
                       "credentials.");
        }

    } else if (glcf->token_header.len) {
        ctx->credential = hdrs->token.first;

        if (ctx->credential) {
            *token = ctx->credential->value;
        }

    } else if (glcf->token_arg.len) {
        *token = qt->value;

    } else if (glcf->token_cookie.len) {
        ctx->cookie = hdrs->cookie.first;
        *token = hdrs->cookie_value;

    } else {
        /*
         * Any other complex value: evaluating variables logs their values
         * at debug level, and this one is a credential.
         */
        level = r->connection->log->log_level;
        r->connection->log->log_level &= ~NGX_LOG_DEBUG_ALL;

        rc = ngx_http_complex_value(r, glcf->token, token);

        r->connection->log->log_level = level;

        if (rc != NGX_OK) {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/*
 * A subrequest with no credential of its own, of a main request that
 * passed with its credential: its token record is used.  NGX_DECLINED:
 * there is none.
 */
static ngx_int_t
ngx_env_gateway_main_token(ngx_http_request_t *r, ngx_env_gateway_ctx_t *ctx)
{
    ngx_env_gateway_ctx_t   *mctx;
    ngx_env_gateway_slot_t  *slot, *mslot;

    mctx = (r != r->main) ? ngx_env_gateway_get_ctx(r->main) : NULL;

    if (mctx == NULL || !mctx->have_token
        || mctx->state != NGX_ENVGW_ST_DONE
        || mctx->refusal != NGX_ENVGW_OK)
    {
        return NGX_DECLINED;
    }

    ngx_log_debug0(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "env_gateway: subrequest reuses the main request's token");

    slot = &ctx->waiter.slots[NGX_ENVGW_REC_TOKEN];
    mslot = &mctx->waiter.slots[NGX_ENVGW_REC_TOKEN];

    ngx_memcpy(ctx->token_hash, mctx->token_hash, ENVGW_SHA256_HEX_LEN);
    slot->status = NGX_ENVGW_FETCH_FOUND;
    slot->rec = mslot->rec;
    slot->cache = mslot->cache;
    ctx->have_token = 1;

    return NGX_OK;
}


/* the same credential again, under a name the gateway does not know */
static ngx_int_t
ngx_env_gateway_token_once(ngx_http_request_t *r, ngx_env_gateway_ctx_t *ctx,
    ngx_env_gateway_loc_conf_t *glcf, ngx_str_t *token)
{
    ngx_int_t  rc;

    if (glcf->token && glcf->token_header.len == 0
        && glcf->token_arg.len == 0 && glcf->token_cookie.len == 0)
    {
        /* any other complex value: no place to compare with */
        return NGX_OK;
    }

    rc = ngx_env_gateway_token_elsewhere(r, ctx, token,
                                         glcf->token_arg.len ? 1 : 0,
                                         glcf->token_cookie.len ? 1 : 0);
    if (rc == NGX_ERROR) {
        return NGX_ERROR;
    }

    if (rc == 0) {
        return NGX_OK;
    }

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "env_gateway: a copy of the credential, in %s",
                   rc == NGX_ENVGW_COPY_IN_URI ? "the URI" : "the headers");

    if (rc == NGX_ENVGW_COPY_IN_URI && ngx_env_gateway_redact_uri(r) != NGX_OK)
    {
        return NGX_ERROR;
    }

    return ngx_env_gateway_refuse_invalid(r, ctx,
               "The credential appears more than once in the request.");
}


/* the query's credential arguments leave the query that goes upstream */
static ngx_int_t
ngx_env_gateway_hide_query_token(ngx_http_request_t *r,
    ngx_env_gateway_loc_conf_t *glcf)
{
    if (ngx_env_gateway_strip_arg(r, &ngx_env_gateway_arg_access_token)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (glcf->token_arg.len
        && ngx_env_gateway_strip_arg(r, &glcf->token_arg) != NGX_OK)
    {
        return NGX_ERROR;
    }

    /* auth_request: the main request's query goes upstream */
    if (r != r->main
        && (ngx_env_gateway_strip_arg(r->main,
                                      &ngx_env_gateway_arg_access_token)
            != NGX_OK
            || (glcf->token_arg.len
                && ngx_env_gateway_strip_arg(r->main, &glcf->token_arg)
                   != NGX_OK)))
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* ------------------------------------------------------------------ */
/* what the request names                                              */

/*
 * The environment the request names: environment_id and
 * X-Environment-Id, which must agree.  The query arguments the gateway
 * reads are checked here first: each at most once, none percent-encoded.
 */
static ngx_int_t
ngx_env_gateway_named_env(ngx_http_request_t *r, ngx_env_gateway_ctx_t *ctx,
    ngx_env_gateway_headers_t *hdrs, ngx_env_gateway_qarg_t *args)
{
    ngx_int_t         rc;
    ngx_uint_t        i;
    ngx_table_elt_t  *h;

    static ngx_uint_t  consumed[] = {
        NGX_ENVGW_QA_ACCOUNT, NGX_ENVGW_QA_ENV, NGX_ENVGW_QA_ACCOUNT_VAR
    };

    for (i = 0; i < sizeof(consumed) / sizeof(consumed[0]); i++) {
        if (args[consumed[i]].count > 1) {
            return ngx_env_gateway_refuse_invalid(r, ctx,
                       "A query argument the gateway reads is given twice.");
        }

        if (args[consumed[i]].escaped) {
            return ngx_env_gateway_refuse_invalid(r, ctx,
                       "A query argument the gateway reads is "
                       "percent-encoded.");
        }
    }

    ctx->env_req = args[NGX_ENVGW_QA_ENV].value;

    if (hdrs->environment.count > 1) {
        return ngx_env_gateway_refuse_invalid(r, ctx,
                   "The X-Environment-Id header is given twice.");
    }

    h = hdrs->environment.first;

    if (h) {
        if (ctx->env_req.len && ngx_env_gateway_str_ne(&ctx->env_req,
                                                       &h->value))
        {
            return ngx_env_gateway_refuse_invalid(r, ctx,
                       "The environment_id argument and the "
                       "X-Environment-Id header disagree.");
        }

        ctx->env_req = h->value;
    }

    /* cannot exist: never fetched, refused as another environment */
    rc = ngx_env_gateway_named_id(r, ctx, &ctx->env_req,
                                  "The environment id has characters that "
                                  "are not allowed.");
    if (rc != NGX_OK && rc != NGX_DECLINED) {
        /* refused: the request may be finalized, its context gone */
        return rc;
    }

    ctx->env_bad = (rc == NGX_DECLINED);

    return NGX_OK;
}


/*
 * The account the request names.  The standard integrated_account_id
 * argument is read whatever env_gateway_account says (a typo there must
 * not open the gate); two places naming different accounts are refused.
 */
static ngx_int_t
ngx_env_gateway_named_account(ngx_http_request_t *r,
    ngx_env_gateway_ctx_t *ctx, ngx_env_gateway_loc_conf_t *glcf,
    ngx_env_gateway_headers_t *hdrs, ngx_env_gateway_qarg_t *args)
{
    ngx_int_t   rc;
    ngx_str_t   id, *standard;

    if (hdrs->account.count > 1) {
        return ngx_env_gateway_refuse_invalid(r, ctx,
                   "The integrated account header is given twice.");
    }

    standard = &args[NGX_ENVGW_QA_ACCOUNT].value;
    ngx_str_null(&id);

    if (glcf->account) {
        if (glcf->account_arg.len) {
            id = args[NGX_ENVGW_QA_ACCOUNT_VAR].value;

        } else if (glcf->account_header.len) {
            if (hdrs->account.first) {
                id = hdrs->account.first->value;
            }

        } else if (ngx_http_complex_value(r, glcf->account, &id) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    if (id.len && standard->len && ngx_env_gateway_str_ne(&id, standard)) {
        return ngx_env_gateway_refuse_invalid(r, ctx,
                   "The request names two different integrated accounts.");
    }

    ctx->account_req = id.len ? id : *standard;

    rc = ngx_env_gateway_named_id(r, ctx, &ctx->account_req,
                                  "The integrated_account_id has characters "
                                  "that are not allowed.");
    if (rc != NGX_OK && rc != NGX_DECLINED) {
        /* refused: the request may be finalized, its context gone */
        return rc;
    }

    ctx->account_bad = (rc == NGX_DECLINED);

    return NGX_OK;
}


/*
 * An id the request names (empty: none): NGX_OK, usable; NGX_DECLINED,
 * it cannot exist (never fetched, refused later as not found); NGX_DONE,
 * refused as ambiguous, saying "why".
 */
static ngx_int_t
ngx_env_gateway_named_id(ngx_http_request_t *r, ngx_env_gateway_ctx_t *ctx,
    ngx_str_t *id, const char *why)
{
    ngx_int_t  rc;

    if (id->len == 0) {
        return NGX_OK;
    }

    rc = ngx_env_gateway_id_syntax(id);

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "env_gateway: id named, syntax %i", rc);

    if (rc == NGX_ABORT) {
        return ngx_env_gateway_refuse_invalid(r, ctx, why);
    }

    return rc;
}


/* the tenant, the integration and the route's resource and rest */
static ngx_int_t
ngx_env_gateway_named_values(ngx_http_request_t *r,
    ngx_env_gateway_ctx_t *ctx, ngx_env_gateway_loc_conf_t *glcf)
{
    if (glcf->tenant) {
        if (ngx_http_complex_value(r, glcf->tenant, &ctx->tenant_req)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        if (!ngx_env_gateway_key_value_ok(&ctx->tenant_req)) {
            return ngx_env_gateway_refuse_invalid(r, ctx,
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

        if (!ngx_env_gateway_key_value_ok(&ctx->integration_req)) {
            return ngx_env_gateway_refuse_invalid(r, ctx,
                       "The integration name has characters that are not "
                       "allowed.");
        }
    }

    if (glcf->route_resource == NULL) {
        return NGX_OK;
    }

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
        return ngx_env_gateway_refuse_invalid(r, ctx,
                   "A path value has '/', '..', '?', '#', '%' or "
                   "control characters.");
    }

    return NGX_OK;
}


/* a value that becomes part of a Redis key: no path syntax, no quote */
static ngx_uint_t
ngx_env_gateway_key_value_ok(ngx_str_t *v)
{
    if (ngx_env_gateway_path_value_ok(v) != NGX_OK) {
        return 0;
    }

    return v->len == 0 || ngx_strlchr(v->data, v->data + v->len, '"') == NULL;
}
