/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * env_gateway: the phase handlers, readable top to bottom.
 *
 *   start:     what the request says (_request.c: the boundary, the one
 *              credential, what the request names) -> first fetches
 *              (token, and the named account and environment in the
 *              same round trip)
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
 * error_page, rewrite ... last, named locations) through its pool
 * cleanup (_ctx.c), as ngx_http_realip_module's does: a request checked
 * once keeps its identity and is checked again only for a location with
 * other settings.
 *
 * Any outcome that is not a positive answer is a refusal: fail closed.
 */

#include "ngx_env_gateway.h"


static ngx_int_t ngx_env_gateway_suspend(ngx_http_request_t *r,
    ngx_int_t rc);
static ngx_int_t ngx_env_gateway_check(ngx_http_request_t *r,
    ngx_env_gateway_loc_conf_t *glcf);
static ngx_int_t ngx_env_gateway_start(ngx_http_request_t *r,
    ngx_env_gateway_ctx_t *ctx, ngx_env_gateway_loc_conf_t *glcf);
static ngx_int_t ngx_env_gateway_prefetch(ngx_http_request_t *r,
    ngx_env_gateway_ctx_t *ctx, ngx_uint_t kind, ngx_str_t *id);
static ngx_int_t ngx_env_gateway_slot(ngx_http_request_t *r,
    ngx_env_gateway_ctx_t *ctx, ngx_uint_t kind, ngx_str_t *id,
    ngx_str_t *id2, ngx_uint_t absent);
static ngx_int_t ngx_env_gateway_evaluate(ngx_http_request_t *r,
    ngx_env_gateway_ctx_t *ctx, ngx_env_gateway_loc_conf_t *glcf);
static ngx_int_t ngx_env_gateway_account(ngx_http_request_t *r,
    ngx_env_gateway_ctx_t *ctx, ngx_env_gateway_loc_conf_t *glcf,
    ngx_env_gateway_record_t *tok);
static ngx_int_t ngx_env_gateway_account_agree(ngx_http_request_t *r,
    ngx_env_gateway_ctx_t *ctx, ngx_env_gateway_record_t *tok,
    ngx_str_t *account, ngx_str_t *other, const char *why);
static ngx_int_t ngx_env_gateway_tenant(ngx_http_request_t *r,
    ngx_env_gateway_ctx_t *ctx, ngx_str_t *account);
static ngx_int_t ngx_env_gateway_route(ngx_http_request_t *r,
    ngx_env_gateway_ctx_t *ctx, ngx_env_gateway_loc_conf_t *glcf);
static ngx_int_t ngx_env_gateway_allow(ngx_http_request_t *r,
    ngx_env_gateway_ctx_t *ctx, ngx_env_gateway_loc_conf_t *glcf);
static ngx_int_t ngx_env_gateway_limits(ngx_http_request_t *r,
    ngx_env_gateway_ctx_t *ctx, ngx_env_gateway_loc_conf_t *glcf,
    ngx_uint_t stage, ngx_env_gateway_record_t *tok);
static ngx_int_t ngx_env_gateway_upstream_credentials(ngx_http_request_t *r,
    ngx_env_gateway_ctx_t *ctx);


/* the key family of each record kind, in ngx_env_gateway_rec_kind_e order */
static ngx_str_t  ngx_env_gateway_family[NGX_ENVGW_REC_LAST] = {
    ngx_string(ENVGW_KEY_TOKEN),
    ngx_string(ENVGW_KEY_ACCOUNT),
    ngx_string(ENVGW_KEY_ENV),
    ngx_string(ENVGW_KEY_TENANT),
    ngx_string(ENVGW_KEY_INTEGRATION),
    ngx_string(ENVGW_KEY_CREDENTIALS)
};


/* ACCESS phase: main requests (nginx skips this phase for subrequests) */
ngx_int_t
ngx_env_gateway_access_handler(ngx_http_request_t *r)
{
    ngx_env_gateway_loc_conf_t  *glcf;

    glcf = ngx_http_get_module_loc_conf(r, ngx_env_gateway_module);

    if (!glcf->enable) {
        return NGX_DECLINED;
    }

    return ngx_env_gateway_suspend(r, ngx_env_gateway_check(r, glcf));
}


/*
 * While a main request waits for Redis, watch its client as the upstream
 * module does (ngx_http_test_reading): a client that goes away ends the
 * request there, before it could go upstream (nginx 1.29+ no longer
 * notices it later, with keepalive to upstreams by default).  The resume
 * puts nginx's default back.
 */
static ngx_int_t
ngx_env_gateway_suspend(ngx_http_request_t *r, ngx_int_t rc)
{
    ngx_env_gateway_ctx_t  *ctx;

    if (rc != NGX_AGAIN || r != r->main) {
        return rc;
    }

    ctx = ngx_http_get_module_ctx(r, ngx_env_gateway_module);

    if (ctx && ctx->waiter.pending && !ctx->body_reading
        && r->read_event_handler == ngx_http_block_reading)
    {
        r->read_event_handler = ngx_http_test_reading;
    }

    return rc;
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
        /* no upstream credentials of a route location outside it */
        if (ngx_env_gateway_credentials_leave(r) != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

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

    rc = ngx_env_gateway_suspend(r, ngx_env_gateway_check(r, glcf));

    return (rc == NGX_OK) ? NGX_DECLINED : rc;
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

        ngx_env_gateway_ctx_reset(ctx);

        /* fall through */

    default: /* NGX_ENVGW_ST_NEW */
        rc = ngx_env_gateway_start(r, ctx, glcf);

        if (rc != NGX_OK) {
            return rc;
        }

        return ngx_env_gateway_evaluate(r, ctx, glcf);
    }
}


/* ------------------------------------------------------------------ */
/* start                                                               */

/*
 * What the request says (_request.c), then one round trip for every
 * record known now: the token, and the account and the environment the
 * request names.
 */
static ngx_int_t
ngx_env_gateway_start(ngx_http_request_t *r, ngx_env_gateway_ctx_t *ctx,
    ngx_env_gateway_loc_conf_t *glcf)
{
    ngx_int_t  rc;

    ctx->state = NGX_ENVGW_ST_WAIT;
    ctx->checked = glcf;

    rc = ngx_env_gateway_request_read(r, ctx, glcf);
    if (rc != NGX_OK) {
        return rc;
    }

    if (ctx->waiter.slots[NGX_ENVGW_REC_TOKEN].status
        == NGX_ENVGW_FETCH_NONE)
    {
        rc = ngx_env_gateway_prefetch(r, ctx, NGX_ENVGW_REC_TOKEN,
                 &(ngx_str_t) { ENVGW_SHA256_HEX_LEN, ctx->token_hash });

        if (rc != NGX_AGAIN) {
            /* NGX_OK: answered at once (Redis is down), or NGX_ERROR */
            return rc;
        }
    }

    if (ctx->account_req.len && !ctx->account_bad) {
        if (ngx_env_gateway_prefetch(r, ctx, NGX_ENVGW_REC_ACCOUNT,
                                     &ctx->account_req)
            == NGX_ERROR)
        {
            return NGX_ERROR;
        }
    }

    if (ctx->env_req.len && !ctx->env_bad) {
        if (ngx_env_gateway_prefetch(r, ctx, NGX_ENVGW_REC_ENV,
                                     &ctx->env_req)
            == NGX_ERROR)
        {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/* fetch a record before evaluation needs it: NGX_OK, NGX_AGAIN, NGX_ERROR */
static ngx_int_t
ngx_env_gateway_prefetch(ngx_http_request_t *r, ngx_env_gateway_ctx_t *ctx,
    ngx_uint_t kind, ngx_str_t *id)
{
    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "env_gateway: fetching record kind %ui ahead", kind);

    return ngx_env_gateway_fetch(r, &ctx->waiter.slots[kind], kind,
                                 &ngx_env_gateway_family[kind], id, NULL);
}

/* ------------------------------------------------------------------ */
/* evaluation                                                          */

/*
 * The common answers of a slot: NGX_OK when its record is here, NGX_AGAIN
 * when it is being fetched, NGX_DONE when a refusal was sent (unavailable,
 * malformed, or no record and "absent" is a refusal), NGX_DECLINED when
 * the record does not exist and "absent" is NGX_ENVGW_OK.
 */
static ngx_int_t
ngx_env_gateway_slot(ngx_http_request_t *r, ngx_env_gateway_ctx_t *ctx,
    ngx_uint_t i, ngx_str_t *id, ngx_str_t *id2, ngx_uint_t absent)
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
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "env_gateway: no record of kind %ui", i);

        if (absent != NGX_ENVGW_OK) {
            return ngx_env_gateway_refuse(r, ctx, absent);
        }

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

    rc = ngx_env_gateway_slot(r, ctx, NGX_ENVGW_REC_TOKEN, NULL, NULL,
                              NGX_ENVGW_INVALID_TOKEN);
    if (rc != NGX_OK) {
        return rc;
    }

    tok = &ctx->waiter.slots[NGX_ENVGW_REC_TOKEN].rec;
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

        rc = ngx_env_gateway_slot(r, ctx, NGX_ENVGW_REC_ENV, &ctx->env_req,
                                  NULL, NGX_ENVGW_ENV_MISMATCH);
        if (rc != NGX_OK) {
            return rc;
        }

        rec = &ctx->waiter.slots[NGX_ENVGW_REC_ENV].rec;

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

    /* rate limits of the token, its team, the environment: 429 */

    if (glcf->limits) {
        rc = ngx_env_gateway_limits(r, ctx, glcf,
                                    NGX_ENVGW_LIMIT_STAGE_TOKEN, tok);
        if (rc != NGX_OK) {
            return rc;
        }
    }

    /* account: 400/404 */

    rc = ngx_env_gateway_account(r, ctx, glcf, tok);
    if (rc != NGX_OK) {
        return rc;
    }

    /* rate limits of the account and its tenant: 429 */

    if (glcf->limits) {
        rc = ngx_env_gateway_limits(r, ctx, glcf,
                                    NGX_ENVGW_LIMIT_STAGE_ACCOUNT, tok);
        if (rc != NGX_OK) {
            return rc;
        }
    }

    /* route: 404/405 */

    if (glcf->route_resource) {
        rc = ngx_env_gateway_route(r, ctx, glcf);
        if (rc != NGX_OK) {
            return rc;
        }

        /* the account's upstream credentials: 503 without them */

        rc = ngx_env_gateway_upstream_credentials(r, ctx);
        if (rc != NGX_OK) {
            return rc;
        }

    } else {
        /* redirected from a route location: nothing of its credentials */
        ngx_env_gateway_credentials_clear(ctx);
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
    ngx_str_t                 *f, account, tenant_account;
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

    /* a JSON body field, a form body (_body.c) */

    rc = ngx_env_gateway_body_account(r, ctx, glcf);
    if (rc != NGX_OK) {
        return rc;
    }

    if (ctx->body_account.len) {
        rc = ngx_env_gateway_account_agree(r, ctx, tok, &account,
                                           &ctx->body_account,
                 "The body and the request name different integrated "
                 "accounts.");
        if (rc != NGX_OK) {
            return rc;
        }
    }

    if (ctx->tenant_req.len) {
        rc = ngx_env_gateway_tenant(r, ctx, &tenant_account);
        if (rc != NGX_OK) {
            return rc;
        }

        rc = ngx_env_gateway_account_agree(r, ctx, tok, &account,
                                           &tenant_account,
                 "The tenant and the request name different integrated "
                 "accounts.");
        if (rc != NGX_OK) {
            return rc;
        }
    }

    if (account.len == 0) {
        if (glcf->account_required || glcf->route_resource) {
            return ngx_env_gateway_refuse(r, ctx, NGX_ENVGW_MISSING_ACCOUNT);
        }

        return NGX_OK;
    }

    if (account.data != ctx->account_req.data) {
        rc = ngx_env_gateway_id_syntax(&account);

        if (rc == NGX_ABORT) {
            return ngx_env_gateway_refuse_invalid(r, ctx,
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

    rc = ngx_env_gateway_slot(r, ctx, NGX_ENVGW_REC_ACCOUNT, &account, NULL,
                              NGX_ENVGW_ACCOUNT_NOT_FOUND);
    if (rc != NGX_OK) {
        return rc;
    }

    rec = &ctx->waiter.slots[NGX_ENVGW_REC_ACCOUNT].rec;

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


/*
 * A second source of the account agrees with the first (or is the only
 * one): *account becomes it.  An account token knows only its own
 * account (404); otherwise two sources that disagree are a 400.
 */
static ngx_int_t
ngx_env_gateway_account_agree(ngx_http_request_t *r,
    ngx_env_gateway_ctx_t *ctx, ngx_env_gateway_record_t *tok,
    ngx_str_t *account, ngx_str_t *other, const char *why)
{
    if (account->len && ngx_env_gateway_str_ne(account, other)) {
        ngx_log_debug0(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "env_gateway: two sources name different accounts");

        if (tok->flags & NGX_ENVGW_TOK_KIND_ACCOUNT) {
            return ngx_env_gateway_refuse(r, ctx,
                                          NGX_ENVGW_ACCOUNT_NOT_FOUND);
        }

        return ngx_env_gateway_refuse_invalid(r, ctx, why);
    }

    *account = *other;

    return NGX_OK;
}


/*
 * The account of the tenant the request names, through the tenant index:
 * its one integration, or the one the request names.
 */
static ngx_int_t
ngx_env_gateway_tenant(ngx_http_request_t *r, ngx_env_gateway_ctx_t *ctx,
    ngx_str_t *account)
{
    ngx_int_t                  rc;
    ngx_str_t                 *pair, *f;
    ngx_uint_t                 i;
    ngx_env_gateway_record_t  *rec;

    rc = ngx_env_gateway_slot(r, ctx, NGX_ENVGW_REC_TENANT,
                              &ctx->environment_id, &ctx->tenant_req,
                              NGX_ENVGW_ACCOUNT_NOT_FOUND);
    if (rc != NGX_OK) {
        return rc;
    }

    rec = &ctx->waiter.slots[NGX_ENVGW_REC_TENANT].rec;
    pair = NULL;

    for (i = 0; i + NGX_ENVGW_TEN_NFIELDS <= rec->nfields;
         i += NGX_ENVGW_TEN_NFIELDS)
    {
        f = &rec->fields[i];

        if (ctx->integration_req.len
            && ngx_env_gateway_str_ne(&f[NGX_ENVGW_TEN_INTEGRATION],
                                      &ctx->integration_req))
        {
            continue;
        }

        if (pair) {
            return ngx_env_gateway_refuse_invalid(r, ctx,
                       "The tenant has several integrations: name one.");
        }

        pair = f;
    }

    if (pair == NULL) {
        return ngx_env_gateway_refuse(r, ctx, NGX_ENVGW_ACCOUNT_NOT_FOUND);
    }

    *account = pair[NGX_ENVGW_TEN_ACCOUNT_ID];

    return NGX_OK;
}


/*
 * A record that parsed but cannot be used as this configuration stands:
 * logged naming its key (the values escaped), refused 500 as a malformed
 * record is.
 */
static ngx_int_t
ngx_env_gateway_route_unusable(ngx_http_request_t *r,
    ngx_env_gateway_ctx_t *ctx, const char *why)
{
    ngx_str_t                     env, integration;
    ngx_env_gateway_main_conf_t  *gmcf;

    gmcf = ngx_http_get_module_main_conf(r, ngx_env_gateway_module);

    if (ngx_env_gateway_text_escaped(r->pool, &ctx->environment_id,
                                     NGX_ENVGW_ESCAPE_LOG, &env)
        != NGX_OK
        || ngx_env_gateway_text_escaped(r->pool, &ctx->integration,
                                        NGX_ENVGW_ESCAPE_LOG, &integration)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                  "env_gateway: malformed record \"%V%V%V:%V\": %s",
                  &gmcf->prefix,
                  &ngx_env_gateway_family[NGX_ENVGW_REC_INTEGRATION], &env,
                  &integration, why);

    return ngx_env_gateway_refuse(r, ctx, NGX_ENVGW_MISCONFIGURED);
}


/*
 * Can proxy_pass reach the record's upstream as nginx is configured?  Its
 * host and port name an upstream{} block (matched as nginx's upstream
 * module matches them), or it is an address, or the location has a
 * resolver: otherwise nginx would answer the request itself (a 502 of no
 * resolver), not the gateway.  An upstream found reachable is remembered
 * by the location (the answer depends only on the configuration), so
 * that the next request with it compares bytes instead of parsing.
 */
static ngx_int_t
ngx_env_gateway_upstream_known(ngx_http_request_t *r,
    ngx_env_gateway_loc_conf_t *glcf, ngx_str_t *upstream)
{
    size_t                          add;
    in_port_t                       port;
    ngx_url_t                       u;
    ngx_uint_t                      i;
    ngx_env_gateway_known_t        *known;
    ngx_http_core_loc_conf_t       *clcf;
    ngx_http_upstream_srv_conf_t  **uscfp, *uscf;
    ngx_http_upstream_main_conf_t  *umcf;

    known = &glcf->known;

    for (i = 0; i < NGX_ENVGW_KNOWN_UPSTREAMS; i++) {
        if (known->url[i].len == upstream->len
            && ngx_memcmp(known->url[i].data, upstream->data, upstream->len)
               == 0)
        {
            return NGX_OK;
        }
    }

    /* the record's parser let only http:// and https:// through */
    if (ngx_strncasecmp(upstream->data, (u_char *) "http://", 7) == 0) {
        add = 7;
        port = 80;

    } else {
        add = 8;
        port = 443;
    }

    ngx_memzero(&u, sizeof(ngx_url_t));

    u.url.len = upstream->len - add;
    u.url.data = upstream->data + add;
    u.default_port = port;
    u.uri_part = 1;
    u.no_resolve = 1;

    if (ngx_parse_url(r->pool, &u) != NGX_OK) {
        return NGX_DECLINED;
    }

    umcf = ngx_http_get_module_main_conf(r, ngx_http_upstream_module);
    uscfp = umcf->upstreams.elts;

    for (i = 0; i < umcf->upstreams.nelts; i++) {
        uscf = uscfp[i];

        if (uscf->host.len == u.host.len
            && ((uscf->port == 0 && u.no_port) || uscf->port == u.port)
            && ngx_strncasecmp(uscf->host.data, u.host.data, u.host.len) == 0)
        {
            goto reachable;
        }
    }

    if (u.naddrs) {
        goto reachable;
    }

    clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);

    if (clcf->resolver && clcf->resolver->connections.nelts) {
        goto reachable;
    }

    return NGX_DECLINED;

reachable:

    /* out of memory: not remembered, checked again next time */
    i = known->next;

    if (known->url[i].data) {
        ngx_free(known->url[i].data);
        ngx_str_null(&known->url[i]);
    }

    known->url[i].data = ngx_alloc(upstream->len, r->connection->log);

    if (known->url[i].data) {
        ngx_memcpy(known->url[i].data, upstream->data, upstream->len);
        known->url[i].len = upstream->len;
        known->next = (i + 1) % NGX_ENVGW_KNOWN_UPSTREAMS;
    }

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "env_gateway: upstream \"%V\" reachable, remembered",
                   upstream);

    return NGX_OK;
}


/*
 * The environment's integration record names the method the request
 * means, its verb and the upstream URL.
 */
static ngx_int_t
ngx_env_gateway_route(ngx_http_request_t *r, ngx_env_gateway_ctx_t *ctx,
    ngx_env_gateway_loc_conf_t *glcf)
{
    ngx_int_t                  rc;
    ngx_str_t                 *quad, name, bad;
    ngx_str_t                  consumed[NGX_ENVGW_CONSUMED_MAX + 1];
    ngx_uint_t                 refusal, n;
    const char                *why;
    ngx_env_gateway_record_t  *rec;

    if (ctx->integration.len == 0) {
        return ngx_env_gateway_refuse_msg(r, ctx, NGX_ENVGW_MISCONFIGURED,
                   "The integrated account names no integration.");
    }

    rc = ngx_env_gateway_slot(r, ctx, NGX_ENVGW_REC_INTEGRATION,
                              &ctx->environment_id, &ctx->integration,
                              NGX_ENVGW_OK);

    if (rc != NGX_OK && rc != NGX_DECLINED) {
        return rc;
    }

    name = ctx->environment.len ? ctx->environment : ctx->environment_id;

    /* messages name request and record values: refuse_detail escapes them */

    if (rc == NGX_DECLINED) {
        (void) ngx_env_gateway_route_name(&ctx->rest, &r->method_name,
                                          &ctx->method);

        return ngx_env_gateway_refuse_detail(r, ctx,
                   NGX_ENVGW_METHOD_NOT_FOUND,
                   "Integration %V is not installed in the %V environment, "
                   "so method %V of resource %V is not defined there.",
                   &ctx->integration, &name, &ctx->method, &ctx->resource);
    }

    rec = &ctx->waiter.slots[NGX_ENVGW_REC_INTEGRATION].rec;

    refusal = ngx_env_gateway_route_select(rec, &ctx->resource, &ctx->rest,
                                           &r->method_name, &quad,
                                           &ctx->method);

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "env_gateway: route selected, refusal %ui", refusal);

    if (refusal == NGX_ENVGW_METHOD_NOT_FOUND) {
        return ngx_env_gateway_refuse_detail(r, ctx, refusal,
                   "Method %V of resource %V is not defined for "
                   "integration %V in the %V environment.",
                   &ctx->method, &ctx->resource, &ctx->integration, &name);
    }

    if (refusal == NGX_ENVGW_METHOD_NOT_ALLOWED) {
        /* Allow: the declared verb, if it can be written as a token */
        if (ngx_env_gateway_http_token(&quad[NGX_ENVGW_INT_VERB])) {
            ctx->allow = quad[NGX_ENVGW_INT_VERB];

        } else {
            ngx_str_null(&ctx->allow);
        }

        return ngx_env_gateway_refuse_detail(r, ctx, refusal,
                   "Method %V of resource %V takes %V, not %V.",
                   &ctx->method, &ctx->resource, &quad[NGX_ENVGW_INT_VERB],
                   &r->method_name);
    }

    /* the verb and the host the upstream request is made of, as they are */

    if (!ngx_env_gateway_http_token(&quad[NGX_ENVGW_INT_VERB])) {
        return ngx_env_gateway_route_unusable(r, ctx,
                   "the selected method's verb is not an HTTP token");
    }

    if (ngx_env_gateway_upstream_known(r, glcf,
                                       &rec->fields[NGX_ENVGW_INT_UPSTREAM])
        != NGX_OK)
    {
        return ngx_env_gateway_route_unusable(r, ctx,
                   "its upstream names no upstream{} block, and the "
                   "location has no resolver");
    }

    n = ngx_env_gateway_request_consumed(glcf, consumed);

    /* a client argument named like the credential argument is dropped */
    if (rec->flags & NGX_ENVGW_INT_AUTH_QUERY) {
        consumed[n++] = rec->fields[NGX_ENVGW_INT_AUTH_NAME];
    }

    rc = ngx_env_gateway_route_url(r->pool,
                                   &rec->fields[NGX_ENVGW_INT_UPSTREAM],
                                   &quad[NGX_ENVGW_INT_PATH], &ctx->rest,
                                   &r->args, consumed, n, &ctx->upstream_url,
                                   &bad, &why);

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
    ctx->upstream_method = quad[NGX_ENVGW_INT_VERB];

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "env_gateway: routed, method of %uz bytes, "
                   "upstream URL of %uz bytes",
                   ctx->method.len, ctx->upstream_url.len);

    return NGX_OK;
}


/*
 * A stage of rate limits (_limit.c).  An environment limit may be
 * replaced by the environment record's rate_limit: the record of the
 * environment the request acts in is fetched for it (no record: the
 * location's limit; Redis unavailable: 503, as for any record).
 */
static ngx_int_t
ngx_env_gateway_limits(ngx_http_request_t *r, ngx_env_gateway_ctx_t *ctx,
    ngx_env_gateway_loc_conf_t *glcf, ngx_uint_t stage,
    ngx_env_gateway_record_t *tok)
{
    ngx_int_t                  rc;
    ngx_env_gateway_record_t  *env;

    env = NULL;

    if (stage == NGX_ENVGW_LIMIT_STAGE_TOKEN
        && ngx_env_gateway_limit_wants_env(ctx, glcf))
    {
        rc = ngx_env_gateway_slot(r, ctx, NGX_ENVGW_REC_ENV,
                                  &ctx->environment_id, NULL, NGX_ENVGW_OK);

        if (rc == NGX_OK) {
            env = &ctx->waiter.slots[NGX_ENVGW_REC_ENV].rec;

            if (ngx_env_gateway_str_ne(&env->fields[NGX_ENVGW_ENV_ID],
                                       &ctx->environment_id))
            {
                env = NULL;
            }

        } else if (rc != NGX_DECLINED) {
            return rc;
        }
    }

    return ngx_env_gateway_limit_check(r, ctx, glcf, stage, tok, env);
}


/*
 * An integration that declares "auth" is called with the account's
 * credentials (_credentials.c), never without: the credentials record is
 * fetched like the others, and its absence is a refusal.
 */
static ngx_int_t
ngx_env_gateway_upstream_credentials(ngx_http_request_t *r,
    ngx_env_gateway_ctx_t *ctx)
{
    ngx_int_t                  rc;
    ngx_env_gateway_slot_t    *slot;
    ngx_env_gateway_record_t  *rec;

    rec = &ctx->waiter.slots[NGX_ENVGW_REC_INTEGRATION].rec;

    if (!(rec->flags & NGX_ENVGW_INT_AUTH)) {
        ngx_env_gateway_credentials_clear(ctx);
        return NGX_OK;
    }

    slot = &ctx->waiter.slots[NGX_ENVGW_REC_CREDENTIALS];

    if (slot->status == NGX_ENVGW_FETCH_NONE) {
        rc = ngx_env_gateway_fetch(r, slot, NGX_ENVGW_REC_CREDENTIALS,
                     &ngx_env_gateway_family[NGX_ENVGW_REC_CREDENTIALS],
                     &ctx->account_id, NULL);
        if (rc == NGX_ERROR) {
            return NGX_ERROR;
        }
    }

    /* counted before a refusal, which may end the request and its ctx */
    ngx_env_gateway_credentials_absent(slot);

    rc = ngx_env_gateway_slot(r, ctx, NGX_ENVGW_REC_CREDENTIALS,
                              &ctx->account_id, NULL,
                              NGX_ENVGW_CREDENTIALS_UNAVAILABLE);
    if (rc != NGX_OK) {
        return rc;
    }

    return ngx_env_gateway_credentials(r, ctx, rec);
}


/* ------------------------------------------------------------------ */
/* allow                                                               */


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

    ngx_env_gateway_metric_request(&ctx->environment, NGX_ENVGW_OK);
    ngx_env_gateway_last_used(&ctx->token_id);

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

    if (ngx_env_gateway_identity(r, ctx, glcf) != NGX_OK) {
        return NGX_ERROR;
    }

    return ngx_env_gateway_credentials_inject(r, ctx);
}
