/*
 * env_gateway: the phase handlers, readable top to bottom.
 *
 *   start:     the request boundary (path, headers, query: _boundary.c)
 *              -> the one credential -> what the request names -> first
 *              fetches (token, and the named account and environment in
 *              the same round trip)
 *   evaluate:  token (401) -> environment (403) -> account (400/404);
 *              a check that needs a record not fetched yet fetches it and
 *              suspends; evaluate is re-run from the top on resume, so it
 *              is a function of the slots' states.
 *              -> route (404/405): the environment's integration record
 *              names the method, its verb and the upstream URL.
 *   allow:     variables are set, credentials and client headers named
 *              like identity headers hidden, identity headers added.
 *
 * The check runs in the access phase for main requests, and again in the
 * precontent phase for whatever the access phase did not check: nginx
 * skips the access phase for subrequests (auth_request, SSI, mirror,
 * slice), and "satisfy any" skips the handlers after the first that
 * allows.  The context survives internal redirects (index, try_files,
 * error_page, rewrite ... last, named locations) through its pool cleanup,
 * as ngx_http_realip_module's does: a request checked once keeps its
 * identity and is checked again only for a location with other settings.
 *
 * Any outcome that is not a positive answer is a refusal: fail closed.
 */

#include "ngx_env_gateway.h"


#define NGX_ENVGW_ACCOUNT_MAX  256

#define NGX_ENVGW_ST_NEW       0
#define NGX_ENVGW_ST_WAIT      1
#define NGX_ENVGW_ST_DONE      2


static ngx_int_t ngx_env_gateway_check(ngx_http_request_t *r,
    ngx_env_gateway_loc_conf_t *glcf);
static ngx_env_gateway_ctx_t *ngx_env_gateway_create_ctx(
    ngx_http_request_t *r);
static void ngx_env_gateway_recheck(ngx_env_gateway_ctx_t *ctx);
static ngx_int_t ngx_env_gateway_start(ngx_http_request_t *r,
    ngx_env_gateway_ctx_t *ctx, ngx_env_gateway_loc_conf_t *glcf);
static ngx_int_t ngx_env_gateway_main_args(ngx_http_request_t *r,
    ngx_env_gateway_ctx_t *ctx, ngx_str_t *names,
    ngx_env_gateway_qarg_t *args);
static ngx_int_t ngx_env_gateway_redact_uri(ngx_http_request_t *r);
static ngx_int_t ngx_env_gateway_credential(ngx_http_request_t *r,
    ngx_env_gateway_ctx_t *ctx, ngx_env_gateway_loc_conf_t *glcf,
    ngx_env_gateway_headers_t *hdrs, ngx_env_gateway_qarg_t *args);
static ngx_int_t ngx_env_gateway_named(ngx_http_request_t *r,
    ngx_env_gateway_ctx_t *ctx, ngx_env_gateway_loc_conf_t *glcf,
    ngx_env_gateway_headers_t *hdrs, ngx_env_gateway_qarg_t *args);
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
static ngx_int_t ngx_env_gateway_invalid(ngx_http_request_t *r,
    ngx_env_gateway_ctx_t *ctx, const char *why);
static ngx_int_t ngx_env_gateway_refuse_msg(ngx_http_request_t *r,
    ngx_env_gateway_ctx_t *ctx, ngx_uint_t refusal, const char *why);
static ngx_int_t ngx_env_gateway_account_syntax(ngx_str_t *id);
static ngx_int_t ngx_env_gateway_strip_arg(ngx_http_request_t *r,
    ngx_str_t *name);
static void ngx_env_gateway_cleanup(void *data);
static ngx_uint_t ngx_env_gateway_method_flag(ngx_str_t *verb);


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
static ngx_str_t  ngx_env_gateway_arg_access_token =
    ngx_string("access_token");


/* the query arguments the gateway reads, in ngx_env_gateway_start() */
#define NGX_ENVGW_QA_ACCOUNT       0   /* integrated_account_id */
#define NGX_ENVGW_QA_ENV           1   /* environment_id */
#define NGX_ENVGW_QA_ACCESS_TOKEN  2   /* RFC 6750 access_token */
#define NGX_ENVGW_QA_TOKEN         3   /* env_gateway_token $arg_NAME */
#define NGX_ENVGW_QA_ACCOUNT_VAR   4   /* env_gateway_account $arg_NAME */
#define NGX_ENVGW_QA_METHOD        5   /* _method, on routes */
#define NGX_ENVGW_QA_N             6


/* ACCESS phase: main requests (nginx skips this phase for subrequests) */
ngx_int_t
ngx_env_gateway_access_handler(ngx_http_request_t *r)
{
    ngx_env_gateway_loc_conf_t  *glcf;

    glcf = ngx_http_get_module_loc_conf(r, ngx_env_gateway_module);

    if (!glcf->enable) {
        return NGX_DECLINED;
    }

    return ngx_env_gateway_check(r, glcf);
}


/*
 * PRECONTENT phase: subrequests into a gated location, and main requests
 * the access phase let through without this module ("satisfy any").  A
 * request that passed for this location goes on to the next handler
 * (try_files, mirror), so NGX_OK becomes NGX_DECLINED here.
 */
ngx_int_t
ngx_env_gateway_precontent_handler(ngx_http_request_t *r)
{
    ngx_int_t                    rc;
    ngx_env_gateway_ctx_t       *ctx;
    ngx_env_gateway_loc_conf_t  *glcf;

    glcf = ngx_http_get_module_loc_conf(r, ngx_env_gateway_module);

    if (!glcf->enable) {
        return NGX_DECLINED;
    }

    ctx = ngx_env_gateway_get_ctx(r);

    if (ctx && ctx->state == NGX_ENVGW_ST_DONE
        && ctx->refusal == NGX_ENVGW_OK && ctx->checked == glcf
        && !ctx->redirected)
    {
        return NGX_DECLINED;
    }

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "env_gateway: precontent check, subrequest:%d",
                   r != r->main);

    rc = ngx_env_gateway_check(r, glcf);

    return (rc == NGX_OK) ? NGX_DECLINED : rc;
}


/*
 * The request's context, also after an internal redirect, which clears
 * every module's context: it is found again through its pool cleanup.  A
 * subrequest shares its parent's pool, so the waiter's request tells whose
 * context it is.
 */
ngx_env_gateway_ctx_t *
ngx_env_gateway_get_ctx(ngx_http_request_t *r)
{
    ngx_pool_cleanup_t        *cln;
    ngx_env_gateway_ctx_t     *ctx;
    ngx_env_gateway_waiter_t  *w;

    ctx = ngx_http_get_module_ctx(r, ngx_env_gateway_module);

    if (ctx || !r->internal) {
        return ctx;
    }

    for (cln = r->pool->cleanup; cln; cln = cln->next) {
        if (cln->handler != ngx_env_gateway_cleanup) {
            continue;
        }

        w = cln->data;

        if (w->request == r) {
            ctx = (ngx_env_gateway_ctx_t *)
                      ((u_char *) w - offsetof(ngx_env_gateway_ctx_t, waiter));
            ngx_http_set_ctx(r, ctx, ngx_env_gateway_module);

            /*
             * Redirected while its body was being read: nginx gave up on
             * the body (413, 400, a timeout) and sent the request to an
             * error_page.  The body will never be here.
             */
            if (ctx->body_reading && !ctx->body_read) {
                ctx->body_failed = 1;
            }

            ctx->redirected = 1;

            return ctx;
        }
    }

    return NULL;
}


static ngx_int_t
ngx_env_gateway_check(ngx_http_request_t *r, ngx_env_gateway_loc_conf_t *glcf)
{
    ngx_int_t               rc;
    ngx_env_gateway_ctx_t  *ctx;

    ctx = ngx_env_gateway_get_ctx(r);

    if (ctx == NULL) {
        ctx = ngx_env_gateway_create_ctx(r);
        if (ctx == NULL) {
            return NGX_ERROR;
        }
    }

    if (ctx->body_failed) {
        /* the body the check needs could not be read: refused */
        ngx_log_debug0(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "env_gateway: the body was not read, refused");
        return NGX_HTTP_BAD_REQUEST;
    }

    if (ctx->refusal != NGX_ENVGW_OK) {
        /* a refused request stays refused, wherever it goes next */
        ngx_log_debug0(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "env_gateway: refused before, refused again");
        return NGX_HTTP_FORBIDDEN;
    }

    switch (ctx->state) {

    case NGX_ENVGW_ST_WAIT:
        if (ctx->waiter.pending || (ctx->body_reading && !ctx->body_read)) {
            return NGX_AGAIN;
        }

        return ngx_env_gateway_evaluate(r, ctx, glcf);

    case NGX_ENVGW_ST_DONE:

        if (!ctx->redirected && ctx->checked == glcf) {
            /* run again in place ("satisfy", the precontent phase) */
            return NGX_OK;
        }

        /*
         * An internal redirect (index, try_files, error_page, named
         * locations) may name other arguments even into the same
         * location: check again, with the credential read before.
         */
        ngx_log_debug0(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "env_gateway: checked request redirected");

        ctx->redirected = 0;

        ngx_env_gateway_recheck(ctx);

        /* fall through */

    default: /* NGX_ENVGW_ST_NEW */
        rc = ngx_env_gateway_start(r, ctx, glcf);

        if (rc != NGX_OK) {
            return rc;
        }

        return ngx_env_gateway_evaluate(r, ctx, glcf);
    }
}


static ngx_env_gateway_ctx_t *
ngx_env_gateway_create_ctx(ngx_http_request_t *r)
{
    ngx_uint_t              i;
    ngx_pool_cleanup_t     *cln;
    ngx_env_gateway_ctx_t  *ctx;

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_env_gateway_ctx_t));
    if (ctx == NULL) {
        return NULL;
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NULL;
    }

    cln->handler = ngx_env_gateway_cleanup;
    cln->data = &ctx->waiter;

    ctx->waiter.request = r;
    ctx->waiter.resume.handler = ngx_env_gateway_resume;
    ctx->waiter.resume.data = &ctx->waiter;
    ctx->waiter.resume.log = r->connection->log;

    for (i = 0; i < NGX_ENVGW_NSLOTS; i++) {
        ctx->waiter.slots[i].waiter = &ctx->waiter;
    }

    ngx_http_set_ctx(r, ctx, ngx_env_gateway_module);

    return ctx;
}


/*
 * Check a request that passed once again, for the settings of the
 * location an internal redirect took it to: the credential was read (and
 * hidden) before, so its token record is kept; everything else is read
 * again from the request and fetched again (from the cache, usually).
 */
static void
ngx_env_gateway_recheck(ngx_env_gateway_ctx_t *ctx)
{
    ngx_uint_t               i;
    ngx_env_gateway_slot_t  *slot;

    /*
     * A record fetched ahead and not needed by the first check (the
     * environment a request names with its token's own) may still be in
     * flight: unlink it before its slot is reused, or the slot would be
     * queued twice.
     */
    ngx_env_gateway_waiter_detach(&ctx->waiter);

    for (i = 0; i < NGX_ENVGW_NSLOTS; i++) {
        if (i == NGX_ENVGW_SLOT_TOKEN) {
            continue;
        }

        slot = &ctx->waiter.slots[i];
        slot->status = NGX_ENVGW_FETCH_NONE;
        slot->cache = NGX_ENVGW_CACHE_NONE;
        slot->stale = 0;
        ngx_memzero(&slot->rec, sizeof(ngx_env_gateway_record_t));
    }

    ngx_str_null(&ctx->account_req);
    ngx_str_null(&ctx->env_req);
    ngx_str_null(&ctx->account_id);
    ngx_str_null(&ctx->integration);
    ngx_str_null(&ctx->tenant_id);
    ngx_str_null(&ctx->tenant_req);
    ngx_str_null(&ctx->integration_req);
    ngx_str_null(&ctx->resource);
    ngx_str_null(&ctx->rest);
    ngx_str_null(&ctx->method);
    ngx_str_null(&ctx->upstream_url);
    ngx_str_null(&ctx->upstream_method);
    ngx_str_null(&ctx->detail);

    ctx->account_bad = 0;
    ctx->env_bad = 0;
    ctx->state = NGX_ENVGW_ST_NEW;
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
    ngx_env_gateway_ctx_t     *ctx;
    ngx_env_gateway_waiter_t  *w;

    w = ev->data;
    r = w->request;
    c = r->connection;
    ctx = (ngx_env_gateway_ctx_t *)
              ((u_char *) w - offsetof(ngx_env_gateway_ctx_t, waiter));

    ngx_http_set_log_request(c->log, r);

    /*
     * A record fetched ahead may arrive after the check ended (allowed or
     * refused): the request has moved on, its phases must not run again.
     */
    if (ctx->state != NGX_ENVGW_ST_WAIT || ctx->refusal != NGX_ENVGW_OK) {
        ngx_log_debug0(NGX_LOG_DEBUG_HTTP, c->log, 0,
                       "env_gateway: records here after the check");
        return;
    }

    ngx_log_debug0(NGX_LOG_DEBUG_HTTP, c->log, 0,
                   "env_gateway: records here, resuming");

    ngx_http_core_run_phases(r);
    ngx_http_run_posted_requests(c);
}


/* ------------------------------------------------------------------ */
/* refusals                                                            */

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


/*
 * An account or environment id we will look up: printable ASCII, no path
 * or URL syntax, no quote (ids become Redis keys, which log lines name).
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

    if (id->len > NGX_ENVGW_ACCOUNT_MAX) {
        return NGX_DECLINED;
    }

    return NGX_OK;
}


/* ------------------------------------------------------------------ */
/* start                                                               */

static ngx_int_t
ngx_env_gateway_start(ngx_http_request_t *r, ngx_env_gateway_ctx_t *ctx,
    ngx_env_gateway_loc_conf_t *glcf)
{
    ngx_int_t                   rc;
    ngx_str_t                   names[NGX_ENVGW_QA_N], *bad;
    ngx_env_gateway_qarg_t      args[NGX_ENVGW_QA_N];
    ngx_env_gateway_headers_t   hdrs;

    ctx->state = NGX_ENVGW_ST_WAIT;
    ctx->checked = glcf;

    /*
     * A credential in the query must not reach a log line: nginx appends
     * the request line to every error line of this request, and
     * $request_uri would carry it into access logs.
     */
    if (r == r->main && r->args.len) {
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

    /* 1. the request boundary: one reading of path, headers and query */

    if (ngx_env_gateway_path_check(r) != NGX_OK) {
        return ngx_env_gateway_invalid(r, ctx,
                   "The path has a dot segment, an encoded slash or "
                   "backslash, a backslash or a NUL byte.");
    }

    if (ngx_env_gateway_read_headers(r, ctx, glcf, &hdrs) != NGX_OK) {
        return NGX_ERROR;
    }

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

    if (ngx_env_gateway_read_args(&r->args, names, args, NGX_ENVGW_QA_N,
                                  &bad)
        != NGX_OK)
    {
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "env_gateway: query argument spelled like \"%V\"",
                       bad);

        return ngx_env_gateway_invalid(r, ctx,
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

    /*
     * On a route the gateway picks the verb: a verb named elsewhere
     * (X-HTTP-Method-Override, _method) would be a second one, which
     * Rails, Express's method-override and Laravel act on.
     */
    if (glcf->route_resource
        && (hdrs.method_override || args[NGX_ENVGW_QA_METHOD].count))
    {
        return ngx_env_gateway_invalid(r, ctx,
                   "The request names its HTTP method a second time "
                   "(X-HTTP-Method-Override or _method).");
    }

    /* 2. the one credential */

    rc = ngx_env_gateway_credential(r, ctx, glcf, &hdrs, args);
    if (rc != NGX_OK) {
        return rc;
    }

    /* 3. what the request names, unambiguously */

    rc = ngx_env_gateway_named(r, ctx, glcf, &hdrs, args);
    if (rc != NGX_OK) {
        return rc;
    }

    /* 4. one round trip for everything known now */

    if (ctx->waiter.slots[NGX_ENVGW_SLOT_TOKEN].status
        == NGX_ENVGW_FETCH_NONE)
    {
        rc = ngx_env_gateway_fetch(r,
                 &ctx->waiter.slots[NGX_ENVGW_SLOT_TOKEN],
                 NGX_ENVGW_REC_TOKEN,
                 &ngx_env_gateway_family[NGX_ENVGW_REC_TOKEN],
                 &(ngx_str_t) { ENVGW_SHA256_HEX_LEN, ctx->token_hash },
                 NULL);
        if (rc == NGX_ERROR) {
            return NGX_ERROR;
        }

        if (rc == NGX_OK) {
            /* Redis is down: the token cannot be checked */
            return NGX_OK;
        }
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

    if (ctx->env_req.len && !ctx->env_bad) {
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
        return ngx_env_gateway_invalid(r, ctx,
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
            return ngx_env_gateway_invalid(r, ctx,
                       "The subrequest and its main request name different "
                       "values for an argument the gateway reads.");
        }

        if (args[i].count == 0) {
            args[i] = margs[i];
        }
    }

    return NGX_OK;
}


/*
 * The request target carries a copy of the credential somewhere a name
 * cannot tell: the request line nginx logs, $request_uri and $args lose
 * the whole target (method and protocol are kept).
 */
static ngx_int_t
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
    ngx_int_t                    rc;
    ngx_str_t                    token;
    ngx_uint_t                   places, level;
    ngx_env_gateway_ctx_t       *mctx;
    ngx_env_gateway_qarg_t      *qt;

    if (ctx->have_token) {
        return NGX_OK;
    }

    if (hdrs->authorization.count > 1 || hdrs->token.count > 1
        || hdrs->cookie.count > 1 || args[NGX_ENVGW_QA_ACCESS_TOKEN].count > 1
        || args[NGX_ENVGW_QA_TOKEN].count > 1)
    {
        return ngx_env_gateway_invalid(r, ctx,
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

    if (places > 1) {
        return ngx_env_gateway_invalid(r, ctx,
                   "The request carries more than one credential.");
    }

    ngx_str_null(&token);

    if (glcf->token == NULL) {
        ctx->credential = hdrs->authorization.first;

        if (ctx->credential) {
            rc = ngx_env_gateway_bearer(&ctx->credential->value, &token);

            if (rc == NGX_ABORT) {
                return ngx_env_gateway_invalid(r, ctx,
                           "The Authorization header carries several "
                           "credentials.");
            }
        }

    } else if (glcf->token_header.len) {
        ctx->credential = hdrs->token.first;

        if (ctx->credential) {
            token = ctx->credential->value;
        }

    } else if (glcf->token_arg.len) {
        token = qt->value;

    } else if (glcf->token_cookie.len) {
        ctx->cookie = hdrs->cookie.first;
        token = hdrs->cookie_value;

    } else {
        /*
         * Any other complex value: evaluating variables logs their values
         * at debug level, and this one is a credential.
         */
        level = r->connection->log->log_level;
        r->connection->log->log_level &= ~NGX_LOG_DEBUG_ALL;

        rc = ngx_http_complex_value(r, glcf->token, &token);

        r->connection->log->log_level = level;

        if (rc != NGX_OK) {
            return NGX_ERROR;
        }
    }

    if (token.len == 0) {
        mctx = (r != r->main) ? ngx_env_gateway_get_ctx(r->main) : NULL;

        if (places == 0 && mctx && mctx->have_token
            && mctx->state == NGX_ENVGW_ST_DONE
            && mctx->refusal == NGX_ENVGW_OK)
        {
            /* a subrequest of a request that passed with its credential */
            ngx_log_debug0(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                           "env_gateway: subrequest reuses the main "
                           "request's token");

            ngx_memcpy(ctx->token_hash, mctx->token_hash,
                       ENVGW_SHA256_HEX_LEN);
            ctx->waiter.slots[NGX_ENVGW_SLOT_TOKEN].status =
                NGX_ENVGW_FETCH_FOUND;
            ctx->waiter.slots[NGX_ENVGW_SLOT_TOKEN].rec =
                mctx->waiter.slots[NGX_ENVGW_SLOT_TOKEN].rec;
            ctx->waiter.slots[NGX_ENVGW_SLOT_TOKEN].cache =
                mctx->waiter.slots[NGX_ENVGW_SLOT_TOKEN].cache;
            ctx->have_token = 1;

            return NGX_OK;
        }

        return ngx_env_gateway_refuse(r, ctx, NGX_ENVGW_MISSING_TOKEN);
    }

    if (ngx_env_gateway_token_syntax(&token) != NGX_OK) {
        return ngx_env_gateway_refuse(r, ctx, NGX_ENVGW_INVALID_TOKEN);
    }

    /* the same credential again, under a name the gateway does not know */
    if (glcf->token == NULL || glcf->token_header.len || glcf->token_arg.len
        || glcf->token_cookie.len)
    {
        rc = ngx_env_gateway_token_elsewhere(r, ctx, &token,
                                             glcf->token_arg.len ? 1 : 0,
                                             glcf->token_cookie.len ? 1 : 0);
        if (rc == NGX_ERROR) {
            return NGX_ERROR;
        }

        if (rc != 0) {
            if (rc == NGX_ENVGW_COPY_IN_URI
                && ngx_env_gateway_redact_uri(r) != NGX_OK)
            {
                return NGX_ERROR;
            }

            return ngx_env_gateway_invalid(r, ctx,
                       "The credential appears more than once in the "
                       "request.");
        }
    }

    ngx_env_gateway_sha256_hex(&token, ctx->token_hash);
    ctx->have_token = 1;
    ctx->token = token;

    /* a query credential leaves $args at once: refused requests log it */
    if (glcf->hide_credentials) {
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
    }

    return NGX_OK;
}


/*
 * The environment and the account the request names.  The standard
 * integrated_account_id argument is read whatever env_gateway_account
 * says (a typo there must not open the gate); two places naming
 * different accounts are refused.
 */
static ngx_int_t
ngx_env_gateway_named(ngx_http_request_t *r, ngx_env_gateway_ctx_t *ctx,
    ngx_env_gateway_loc_conf_t *glcf, ngx_env_gateway_headers_t *hdrs,
    ngx_env_gateway_qarg_t *args)
{
    ngx_int_t         rc;
    ngx_str_t         id, *standard;
    ngx_uint_t        i;
    ngx_table_elt_t  *h;

    static ngx_uint_t  consumed[] = {
        NGX_ENVGW_QA_ACCOUNT, NGX_ENVGW_QA_ENV, NGX_ENVGW_QA_ACCOUNT_VAR
    };

    for (i = 0; i < sizeof(consumed) / sizeof(consumed[0]); i++) {
        if (args[consumed[i]].count > 1) {
            return ngx_env_gateway_invalid(r, ctx,
                       "A query argument the gateway reads is given twice.");
        }

        if (args[consumed[i]].escaped) {
            return ngx_env_gateway_invalid(r, ctx,
                       "A query argument the gateway reads is "
                       "percent-encoded.");
        }
    }

    /* the environment: environment_id and X-Environment-Id */

    ctx->env_req = args[NGX_ENVGW_QA_ENV].value;

    if (hdrs->environment.count > 1) {
        return ngx_env_gateway_invalid(r, ctx,
                   "The X-Environment-Id header is given twice.");
    }

    h = hdrs->environment.first;

    if (h) {
        if (ctx->env_req.len && ngx_env_gateway_str_ne(&ctx->env_req,
                                                       &h->value))
        {
            return ngx_env_gateway_invalid(r, ctx,
                       "The environment_id argument and the "
                       "X-Environment-Id header disagree.");
        }

        ctx->env_req = h->value;
    }

    if (ctx->env_req.len) {
        rc = ngx_env_gateway_account_syntax(&ctx->env_req);

        if (rc == NGX_ABORT) {
            return ngx_env_gateway_invalid(r, ctx,
                       "The environment id has characters that are not "
                       "allowed.");
        }

        /* cannot exist: never fetched, refused as another environment */
        ctx->env_bad = (rc != NGX_OK);
    }

    /* the account */

    if (hdrs->account.count > 1) {
        return ngx_env_gateway_invalid(r, ctx,
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
        return ngx_env_gateway_invalid(r, ctx,
                   "The request names two different integrated accounts.");
    }

    ctx->account_req = id.len ? id : *standard;

    if (ctx->account_req.len) {
        rc = ngx_env_gateway_account_syntax(&ctx->account_req);

        if (rc == NGX_ABORT) {
            return ngx_env_gateway_invalid(r, ctx,
                       "The integrated_account_id has characters "
                       "that are not allowed.");
        }

        ctx->account_bad = (rc != NGX_OK);
    }

    if (glcf->tenant) {
        if (ngx_http_complex_value(r, glcf->tenant, &ctx->tenant_req)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        /* a tenant id becomes part of a Redis key: no quote either */
        if (ctx->tenant_req.len
            && (ngx_env_gateway_path_value_ok(&ctx->tenant_req) != NGX_OK
                || ngx_strlchr(ctx->tenant_req.data,
                               ctx->tenant_req.data + ctx->tenant_req.len,
                               '"')))
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

        if (ngx_env_gateway_path_value_ok(&ctx->integration_req) != NGX_OK
            || (ctx->integration_req.len
                && ngx_strlchr(ctx->integration_req.data,
                               ctx->integration_req.data
                               + ctx->integration_req.len, '"')))
        {
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
        if (!(tok->flags & NGX_ENVGW_TOK_KIND_ADMIN) || ctx->env_bad) {
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
    const char                *why;
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

    /*
     * A body the backend could read an identity from: with a body field,
     * every request with a body, whatever its verb (GET, DELETE, MERGE);
     * any form body (_body.c).
     */
    if (ngx_env_gateway_body_wanted(r, glcf)) {
        if (!ctx->body_read) {
            rc = ngx_env_gateway_body_read(r, ctx);

            if (rc == NGX_DECLINED) {
                return ngx_env_gateway_invalid(r, ctx,
                           "The request has a body the gateway must read, "
                           "and a subrequest cannot read it first.");
            }

            if (rc != NGX_OK) {
                return rc;
            }
        }

        if (!ctx->body_parsed) {
            rc = ngx_env_gateway_body_parse(r, ctx, glcf, &why);

            if (rc == NGX_DECLINED) {
                return ngx_env_gateway_invalid(r, ctx, why);
            }

            if (rc != NGX_OK) {
                return NGX_ERROR;
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

    /* the upstream is called with the method's declared verb */
    ctx->upstream_method = quad[2];

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "env_gateway: routed, method of %uz bytes, "
                   "upstream URL of %uz bytes",
                   ctx->method.len, ctx->upstream_url.len);

    return NGX_OK;
}


/* ------------------------------------------------------------------ */
/* allow                                                               */

/*
 * Drop the arguments named "name" (byte for byte, as the boundary allows
 * no other spelling) from the query forwarded upstream.  The new query is
 * never longer than the old one: every kept argument is copied once.
 */
static ngx_int_t
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


/* nginx's method flag of a verb, as ngx_http_parse_request_line sets it */
static ngx_uint_t
ngx_env_gateway_method_flag(ngx_str_t *verb)
{
    ngx_uint_t  i;

    static struct {
        ngx_str_t   name;
        ngx_uint_t  flag;
    } methods[] = {
        { ngx_string("GET"), NGX_HTTP_GET },
        { ngx_string("HEAD"), NGX_HTTP_HEAD },
        { ngx_string("POST"), NGX_HTTP_POST },
        { ngx_string("PUT"), NGX_HTTP_PUT },
        { ngx_string("DELETE"), NGX_HTTP_DELETE },
        { ngx_string("PATCH"), NGX_HTTP_PATCH },
        { ngx_string("OPTIONS"), NGX_HTTP_OPTIONS }
    };

    for (i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
        if (!ngx_env_gateway_str_ne(&methods[i].name, verb)) {
            return methods[i].flag;
        }
    }

    return NGX_HTTP_UNKNOWN;
}


static ngx_int_t
ngx_env_gateway_allow(ngx_http_request_t *r, ngx_env_gateway_ctx_t *ctx,
    ngx_env_gateway_loc_conf_t *glcf)
{
    ctx->state = NGX_ENVGW_ST_DONE;
    ctx->refusal = NGX_ENVGW_OK;
    ngx_str_null(&ctx->token);

    /*
     * A lookup asked ahead and not needed (an environment prefetched after
     * an internal redirect): its answer must not run this request's phases
     * again.
     */
    if (ctx->waiter.pending) {
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "env_gateway: %ui lookups not needed",
                       ctx->waiter.pending);

        ngx_env_gateway_waiter_detach(&ctx->waiter);
    }

    ngx_env_gateway_metric_inc(NGX_ENVGW_M_REQUESTS + NGX_ENVGW_OK);

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "env_gateway: allowed, environment \"%V\", "
                   "account \"%V\", method \"%V\"",
                   &ctx->environment_id, &ctx->account_id, &ctx->method);

    /*
     * On a route the upstream request uses the method's declared verb:
     * what the backend acts on is what the gateway chose.
     */
    if (ctx->upstream_method.len
        && ngx_env_gateway_str_ne(&ctx->upstream_method, &r->method_name))
    {
        r->method_name = ctx->upstream_method;
        r->method = ngx_env_gateway_method_flag(&ctx->upstream_method);
    }

    return ngx_env_gateway_identity(r, ctx, glcf);
}
