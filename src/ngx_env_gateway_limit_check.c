/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * env_gateway: the check of a stage's rate limits for a request: the
 * limits that apply and their keys, decided and counted in the zone
 * (_limit_zone.c) under one lock; a refusal is a 429.
 */

#include "ngx_env_gateway_limit.h"


static const char  *ngx_env_gateway_limit_messages[NGX_ENVGW_LIMIT_NKINDS] = {
    "Too many requests with this token; retry after Retry-After seconds.",
    "Too many requests for this integrated account; retry after "
        "Retry-After seconds.",
    "Too many requests for this tenant; retry after Retry-After seconds.",
    "Too many requests in this environment; retry after Retry-After "
        "seconds.",
    "Too many requests for this team; retry after Retry-After seconds."
};


/* ------------------------------------------------------------------ */
/* the check                                                           */

/* the key of a limit kind for this request; NGX_DECLINED: it has none */
static ngx_int_t
ngx_env_gateway_limit_id(ngx_env_gateway_ctx_t *ctx, ngx_uint_t kind,
    ngx_str_t *id1, ngx_str_t *id2)
{
    ngx_str_null(id2);

    switch (kind) {

    case NGX_ENVGW_LIMIT_TOKEN:
        if (ctx->token_id.len) {
            *id1 = ctx->token_id;

        } else {
            /* a record without token_id: its key's hash names it */
            id1->data = ctx->token_hash;
            id1->len = ENVGW_SHA256_HEX_LEN;
        }

        return NGX_OK;

    case NGX_ENVGW_LIMIT_ACCOUNT:
        *id1 = ctx->account_id;
        break;

    case NGX_ENVGW_LIMIT_TENANT:
        /* a tenant_id names a tenant of one environment */
        *id1 = ctx->environment_id;
        *id2 = ctx->tenant_id;

        if (id2->len == 0) {
            return NGX_DECLINED;
        }

        break;

    case NGX_ENVGW_LIMIT_ENVIRONMENT:
        *id1 = ctx->environment_id;
        break;

    default: /* NGX_ENVGW_LIMIT_TEAM */
        *id1 = ctx->team_id;
        break;
    }

    return id1->len ? NGX_OK : NGX_DECLINED;
}


/* a record's rate_limit: NGX_OK and *rate, or NGX_DECLINED for none */
static ngx_int_t
ngx_env_gateway_limit_override(ngx_env_gateway_record_t *rec, ngx_uint_t i,
    ngx_env_gateway_rate_t *rate)
{
    if (rec == NULL || rec->nfields <= i
        || rec->fields[i].len != sizeof(ngx_env_gateway_rate_t))
    {
        return NGX_DECLINED;
    }

    ngx_memcpy(rate, rec->fields[i].data, sizeof(ngx_env_gateway_rate_t));

    return NGX_OK;
}


/*
 * The limits of a stage for this request: the location's lines of the
 * stage's kinds, a record's rate_limit replacing the location's token
 * (environment) lines.  *keys is NULL when none applies.
 */
static ngx_int_t
ngx_env_gateway_limit_keys(ngx_http_request_t *r, ngx_env_gateway_ctx_t *ctx,
    ngx_env_gateway_loc_conf_t *glcf, ngx_uint_t stage,
    ngx_env_gateway_record_t *tok, ngx_env_gateway_record_t *env,
    ngx_env_gateway_limit_key_t **keys, ngx_uint_t *nkeys)
{
    ngx_uint_t                    i, n, kind, over[NGX_ENVGW_LIMIT_NKINDS];
    ngx_env_gateway_rate_t        rate[NGX_ENVGW_LIMIT_NKINDS];
    ngx_env_gateway_limit_t      *lim;
    ngx_env_gateway_limit_key_t  *k;

    *keys = NULL;
    *nkeys = 0;

    lim = glcf->limits->elts;
    n = 0;

    for (i = 0; i < glcf->limits->nelts; i++) {
        kind = lim[i].kind;

        if ((kind == NGX_ENVGW_LIMIT_ACCOUNT || kind == NGX_ENVGW_LIMIT_TENANT)
            == (stage == NGX_ENVGW_LIMIT_STAGE_ACCOUNT))
        {
            n++;
        }
    }

    if (n == 0) {
        return NGX_OK;
    }

    k = ngx_palloc(r->pool, n * sizeof(ngx_env_gateway_limit_key_t));
    if (k == NULL) {
        return NGX_ERROR;
    }

    ngx_memzero(over, sizeof(over));

    if (stage == NGX_ENVGW_LIMIT_STAGE_TOKEN) {
        over[NGX_ENVGW_LIMIT_TOKEN] =
            (ngx_env_gateway_limit_override(tok, NGX_ENVGW_TOK_RATE_LIMIT,
                                        &rate[NGX_ENVGW_LIMIT_TOKEN])
             == NGX_OK);
        over[NGX_ENVGW_LIMIT_ENVIRONMENT] =
            (ngx_env_gateway_limit_override(env, NGX_ENVGW_ENV_RATE_LIMIT,
                                        &rate[NGX_ENVGW_LIMIT_ENVIRONMENT])
             == NGX_OK);
    }

    n = 0;

    for (i = 0; i < glcf->limits->nelts; i++) {
        kind = lim[i].kind;

        if ((kind == NGX_ENVGW_LIMIT_ACCOUNT || kind == NGX_ENVGW_LIMIT_TENANT)
            != (stage == NGX_ENVGW_LIMIT_STAGE_ACCOUNT))
        {
            continue;
        }

        if (ngx_env_gateway_limit_id(ctx, kind, &k[n].id1, &k[n].id2)
            != NGX_OK)
        {
            ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                           "env_gateway: no %V to limit",
                           &ngx_env_gateway_limit_kinds[kind]);
            continue;
        }

        k[n].kind = kind;

        if (over[kind] == 1) {
            /* the record's rate replaces the location's lines: once */
            over[kind] = 2;
            k[n].cap = rate[kind].requests;
            k[n].window = rate[kind].window;

        } else if (over[kind] == 2) {
            continue;

        } else {
            k[n].cap = lim[i].rate + lim[i].burst;
            k[n].window = lim[i].window;
        }

        k[n].hash = ngx_env_gateway_limit_hash(kind, k[n].window, &k[n].id1,
                                               &k[n].id2);
        n++;
    }

    *keys = k;
    *nkeys = n;

    return NGX_OK;
}


/*
 * A request is counted once in a counter, whatever internal redirects and
 * subrequests it makes: the counters its main request (with any of its
 * subrequests, before or after a redirect) counted in are kept with the
 * main request, the keys of this check found there marked.  The set, or
 * NULL on an allocation failure.
 */
static ngx_array_t *
ngx_env_gateway_limit_counted(ngx_http_request_t *r,
    ngx_env_gateway_ctx_t *ctx, ngx_env_gateway_limit_key_t *keys,
    ngx_uint_t nkeys)
{
    ngx_uint_t                    i, j;
    ngx_env_gateway_ctx_t        *mctx;
    ngx_env_gateway_limit_key_t  *c;
    ngx_env_gateway_limit_ctx_t  *mlc;

    mctx = (r == r->main) ? ctx : ngx_env_gateway_get_ctx(r->main);

    if (mctx == NULL) {
        /* a main request the gateway never saw: this request's own set */
        mctx = ctx;
    }

    mlc = mctx->limit;

    if (mlc == NULL) {
        mlc = ngx_pcalloc(r->main->pool, sizeof(ngx_env_gateway_limit_ctx_t));
        if (mlc == NULL) {
            return NULL;
        }

        mctx->limit = mlc;
    }

    if (mlc->counted == NULL) {
        mlc->counted = ngx_array_create(r->main->pool, 2,
                                        sizeof(ngx_env_gateway_limit_key_t));
        if (mlc->counted == NULL) {
            return NULL;
        }
    }

    c = mlc->counted->elts;

    for (i = 0; i < nkeys; i++) {
        keys[i].counted = 0;

        for (j = 0; j < mlc->counted->nelts; j++) {
            if (c[j].hash == keys[i].hash && c[j].kind == keys[i].kind
                && c[j].window == keys[i].window
                && !ngx_env_gateway_str_ne(&c[j].id1, &keys[i].id1)
                && !ngx_env_gateway_str_ne(&c[j].id2, &keys[i].id2))
            {
                ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                               "env_gateway: %V rate limit: this request is "
                               "counted already",
                               &ngx_env_gateway_limit_kinds[keys[i].kind]);

                keys[i].counted = 1;
                break;
            }
        }
    }

    return mlc->counted;
}


/* seconds from milliseconds, rounded up, at least 1 */
static time_t
ngx_env_gateway_limit_sec(uint64_t ms)
{
    return (ms > 1000) ? (time_t) ((ms + 999) / 1000) : 1;
}


/*
 * The limits of a stage (NGX_ENVGW_LIMIT_STAGE_*): NGX_OK when they admit
 * the request (it is counted), NGX_DONE when one refused it (429 sent),
 * NGX_ERROR.
 */
ngx_int_t
ngx_env_gateway_limit_check(ngx_http_request_t *r, ngx_env_gateway_ctx_t *ctx,
    ngx_env_gateway_loc_conf_t *glcf, ngx_uint_t stage,
    ngx_env_gateway_record_t *tok, ngx_env_gateway_record_t *env)
{
    uint64_t                       now, remaining, wait, worst;
    ngx_int_t                      rc;
    ngx_uint_t                     i, nkeys, refused;
    ngx_env_gateway_lnode_t       *n;
    ngx_env_gateway_limit_ctx_t   *lc;
    ngx_array_t                   *counted;
    ngx_env_gateway_limit_key_t   *keys, *k;
    ngx_env_gateway_main_conf_t   *gmcf;
    ngx_env_gateway_limit_zone_t  *lz;

    lc = ctx->limit;

    /* after an internal redirect the limits of the new location count */
    if (lc && lc->glcf != glcf) {
        lc->stages = 0;
        lc->glcf = glcf;
    }

    if (lc && (lc->stages & stage)) {
        return NGX_OK;
    }

    if (ngx_env_gateway_limit_keys(r, ctx, glcf, stage, tok, env, &keys,
                                   &nkeys)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (lc == NULL) {
        lc = ngx_pcalloc(r->pool, sizeof(ngx_env_gateway_limit_ctx_t));
        if (lc == NULL) {
            return NGX_ERROR;
        }

        lc->glcf = glcf;
        ctx->limit = lc;
    }

    lc->stages |= stage;

    if (nkeys == 0) {
        return NGX_OK;
    }

    counted = ngx_env_gateway_limit_counted(r, ctx, keys, nkeys);
    if (counted == NULL) {
        return NGX_ERROR;
    }

    gmcf = ngx_http_get_module_main_conf(r, ngx_env_gateway_module);
    lz = gmcf->limit_zone->data;
    now = ngx_env_gateway_limit_now();
    refused = NGX_ENVGW_LIMIT_NKINDS;
    worst = 0;

    ngx_shmtx_lock(&lz->shpool->mutex);

    /* decide every limit of the stage; count only if all of them admit */

    for (i = 0; i < nkeys; i++) {
        n = ngx_env_gateway_limit_get(lz, &keys[i], now, r->connection->log);
        if (n == NULL) {
            ngx_shmtx_unlock(&lz->shpool->mutex);
            return ngx_env_gateway_refuse(r, ctx, NGX_ENVGW_UNAVAILABLE);
        }

        ngx_env_gateway_limit_roll(n, now);

        rc = ngx_env_gateway_limit_decide(n, keys[i].cap, now,
                                          keys[i].counted, &remaining, &wait);

        if (rc == NGX_BUSY) {
            if (refused == NGX_ENVGW_LIMIT_NKINDS || wait > worst) {
                refused = keys[i].kind;
                worst = wait;
                lc->limit = keys[i].cap;
            }

            /* the next round reads the cluster's count of it */
            if (lz->sync && !n->queued) {
                n->queued = 1;
                ngx_queue_insert_tail(&lz->sh->sync, &n->sync);
            }

            continue;
        }

        if (refused == NGX_ENVGW_LIMIT_NKINDS
            && (!lc->set || remaining < lc->remaining))
        {
            lc->set = 1;
            lc->limit = keys[i].cap;
            lc->remaining = (uint32_t) remaining;
            lc->reset = ngx_env_gateway_limit_sec(wait);
        }
    }

    if (refused == NGX_ENVGW_LIMIT_NKINDS) {
        for (i = 0; i < nkeys; i++) {
            if (keys[i].counted) {
                continue;
            }

            n = ngx_env_gateway_limit_get(lz, &keys[i], now,
                                          r->connection->log);
            if (n == NULL) {
                ngx_shmtx_unlock(&lz->shpool->mutex);
                return ngx_env_gateway_refuse(r, ctx, NGX_ENVGW_UNAVAILABLE);
            }

            ngx_env_gateway_limit_roll(n, now);

            if (n->pending < NGX_MAX_UINT32_VALUE) {
                n->pending++;
            }

            if (lz->sync && !n->queued) {
                n->queued = 1;
                ngx_queue_insert_tail(&lz->sh->sync, &n->sync);
            }
        }
    }

    ngx_shmtx_unlock(&lz->shpool->mutex);

    if (refused == NGX_ENVGW_LIMIT_NKINDS) {
        for (i = 0; i < nkeys; i++) {
            if (keys[i].counted) {
                continue;
            }

            /* the ids copied: the set lives as long as the main request */

            k = ngx_array_push(counted);
            if (k == NULL) {
                return NGX_ERROR;
            }

            *k = keys[i];

            if (k->id1.len) {
                k->id1.data = ngx_pstrdup(r->main->pool, &keys[i].id1);
                if (k->id1.data == NULL) {
                    return NGX_ERROR;
                }
            }

            if (k->id2.len) {
                k->id2.data = ngx_pstrdup(r->main->pool, &keys[i].id2);
                if (k->id2.data == NULL) {
                    return NGX_ERROR;
                }
            }
        }

        ngx_log_debug4(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "env_gateway: %ui rate limits admit, tightest %uD, "
                       "remaining %uD, reset %T",
                       nkeys, lc->limit, lc->remaining, lc->reset);
        return NGX_OK;
    }

    lc->set = 1;
    lc->refused = 1;
    lc->remaining = 0;
    lc->reset = ngx_env_gateway_limit_sec(worst);

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "env_gateway: %V rate limit refuses, retry after %T",
                   &ngx_env_gateway_limit_kinds[refused], lc->reset);

    ngx_env_gateway_metric_inc(NGX_ENVGW_M_LIMITED + refused);

    return ngx_env_gateway_refuse_msg(r, ctx, NGX_ENVGW_RATE_LIMITED,
                                      ngx_env_gateway_limit_messages[refused]);
}

