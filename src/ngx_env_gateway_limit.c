/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * env_gateway: rate limits per token, account, tenant, environment, team.
 *
 *   env_gateway_limit_zone zone=NAME:SIZE [sync=off|redis]
 *       [sync_interval=100ms];                                  (http)
 *   env_gateway_limit KEY RATE [burst=N];          (http, server, location)
 *
 * Counting: a sliding window counter, the two-fixed-windows estimate of
 * Cloudflare's and nginx's own: windows of W ms aligned on the epoch, a
 * count for the current window and the final count of the one before, and
 *
 *     estimate = prev * (W - elapsed) / W + cur
 *
 * A request is admitted when estimate + 1 <= rate + burst, and only an
 * admitted request is counted (a client refused in a loop still gets its
 * rate).  burst=N admits N requests above the rate in any window: the
 * quota is rate + burst, which is also what RateLimit-Limit announces, so
 * RateLimit-Remaining reaches 0 at the last admitted request.
 *
 * The counters live in one shared zone: an rbtree keyed by a CRC32 of
 * (key kind, window, id), an LRU queue.  Creating a counter first frees
 * up to two counters whose windows are both over (they hold nothing); when
 * the zone is full the least recently used counters are evicted (counted
 * in env_gateway_rate_limit_evictions_total): a key evicted starts again
 * from zero, nothing is refused or let through for it.  If not even an
 * empty zone has room (never with a sane size), the request is refused
 * with 503, never passed.
 *
 * Checks run in two stages of the access check (_access.c): token, team
 * and environment limits once the token and the environment it acts in
 * are known (a 401 or 403 costs nothing), account and tenant limits after
 * the account check.  A stage's limits are decided under one lock, and
 * counted only when all of them admit; a stage runs once per request
 * (not again when the check resumes after a lookup or after an internal
 * redirect).  Windows are wall-clock milliseconds (ngx_timeofday()), so
 * that the nodes of a cluster agree on them.
 *
 * sync=redis: counters touched since the last round are sent to Redis
 * every sync_interval, by one worker of the node (whichever worker's timer
 * claims the interval in the zone first, so the rounds go on whatever
 * worker exits and the node sends one round an interval whatever its
 * number of workers).  A round is INCRBY <key> <count> + PEXPIRE for each
 * counter, queued at once on the worker's Redis connection and so written
 * together (_pipeline.c); INCRBY's reply is the cluster's count of the
 * window, which then replaces what the node knew.  So a counter's current
 * count is remote (the cluster's, as of the last reply) + inflight (sent,
 * not answered) + pending (counted here since).  A round that fails gives
 * its counts back to pending: counting goes on locally, and reaches Redis
 * when it answers again.  The outage is logged once (and its end once),
 * and counted in env_gateway_rate_limit_sync_failures_total.
 *
 * The files:
 *
 *   _limit.c          the directives, their merge, the metrics text.
 *   _limit_zone.c     the shared zone of counters and the sliding window
 *                     decision.
 *   _limit_check.c    the check of a stage's limits for a request.
 *   _limit_headers.c  the RateLimit-* and Retry-After response headers.
 *   _limit_sync.c     the sync=redis rounds.
 *
 * What they share is in ngx_env_gateway_limit.h.
 */

#include "ngx_env_gateway_limit.h"


ngx_str_t  ngx_env_gateway_limit_kinds[NGX_ENVGW_LIMIT_NKINDS] = {
    ngx_string("token"),
    ngx_string("account"),
    ngx_string("tenant"),
    ngx_string("environment"),
    ngx_string("team")
};


/* ------------------------------------------------------------------ */
/* configuration                                                       */

/*
 * A rate's window, "10s" (any nginx time), and its requests: both within
 * bounds (NGX_ENVGW_RATE_MAX, NGX_ENVGW_WINDOW_MAX).  Records' rate_limit
 * and the directive share it.
 */
ngx_int_t
ngx_env_gateway_rate_parse(ngx_str_t *window, int64_t requests,
    ngx_env_gateway_rate_t *rate)
{
    ngx_msec_t  ms;

    if (requests < 1 || requests > NGX_ENVGW_RATE_MAX || window->len == 0) {
        return NGX_ERROR;
    }

    if (window->len == 1) {
        /* "r/s", "r/m", "r/h", "r/d": one unit */
        switch (window->data[0]) {
        case 's':
            ms = 1000;
            break;
        case 'm':
            ms = 60 * 1000;
            break;
        case 'h':
            ms = 3600 * 1000;
            break;
        case 'd':
            ms = 86400 * 1000;
            break;
        default:
            return NGX_ERROR;
        }

    } else {
        ms = ngx_parse_time(window, 0);

        if (ms == (ngx_msec_t) NGX_ERROR) {
            return NGX_ERROR;
        }
    }

    if (ms == 0 || ms > NGX_ENVGW_WINDOW_MAX) {
        return NGX_ERROR;
    }

    rate->requests = (uint32_t) requests;
    rate->window = (uint32_t) ms;

    return NGX_OK;
}


/* env_gateway_limit_zone zone=NAME:SIZE [sync=off|redis] [sync_interval=] */
char *
ngx_env_gateway_limit_zone_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_env_gateway_main_conf_t  *gmcf = conf;

    u_char                        *p;
    ssize_t                        size;
    ngx_str_t                     *value, name, s;
    ngx_uint_t                     i;
    ngx_env_gateway_limit_zone_t  *lz;

    if (gmcf->limit_zone) {
        return "is duplicate";
    }

    value = cf->args->elts;

    lz = ngx_pcalloc(cf->pool, sizeof(ngx_env_gateway_limit_zone_t));
    if (lz == NULL) {
        return NGX_CONF_ERROR;
    }

    lz->sync = NGX_ENVGW_LIMIT_SYNC_OFF;
    lz->interval = NGX_ENVGW_LIMIT_INTERVAL;
    lz->prefix = &gmcf->prefix;
    ngx_str_null(&name);
    size = 0;

    for (i = 1; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "zone=", 5) == 0) {
            name.data = value[i].data + 5;
            p = (u_char *) ngx_strchr(name.data, ':');

            if (p == NULL || p == name.data) {
                return ngx_env_gateway_conf_error(cf,
                                   "invalid zone \"%V\": zone=name:size",
                                   &value[i]);
            }

            name.len = p - name.data;
            s.data = p + 1;
            s.len = value[i].data + value[i].len - s.data;

            size = ngx_parse_size(&s);

            if (size == NGX_ERROR) {
                return ngx_env_gateway_conf_error(cf,
                                   "invalid zone size \"%V\"", &value[i]);
            }

            if (size < (ssize_t) (8 * ngx_pagesize)) {
                return ngx_env_gateway_conf_error(cf,
                                   "zone \"%V\" is too small: at least %uzk",
                                   &value[i], 8 * ngx_pagesize / 1024);
            }

            continue;
        }

        if (ngx_strcmp(value[i].data, "sync=off") == 0) {
            lz->sync = NGX_ENVGW_LIMIT_SYNC_OFF;
            continue;
        }

        if (ngx_strcmp(value[i].data, "sync=redis") == 0) {
            lz->sync = NGX_ENVGW_LIMIT_SYNC_REDIS;
            continue;
        }

        if (ngx_strncmp(value[i].data, "sync_interval=", 14) == 0) {
            s.data = value[i].data + 14;
            s.len = value[i].len - 14;

            lz->interval = ngx_parse_time(&s, 0);

            if (lz->interval == (ngx_msec_t) NGX_ERROR
                || lz->interval == 0)
            {
                return ngx_env_gateway_conf_error(cf,
                                   "invalid time \"%V\": a time above 0, "
                                   "like 100ms", &value[i]);
            }

            continue;
        }

        return ngx_env_gateway_conf_error(cf,
                           "unknown parameter \"%V\": zone=, sync=off|redis "
                           "and sync_interval= are known", &value[i]);
    }

    if (name.len == 0) {
        return ngx_env_gateway_conf_error(cf,
                           "needs zone=name:size");
    }

    gmcf->limit_zone = ngx_shared_memory_add(cf, &name, size,
                                             &ngx_env_gateway_module);
    if (gmcf->limit_zone == NULL) {
        return NGX_CONF_ERROR;
    }

    if (gmcf->limit_zone->data) {
        return ngx_env_gateway_conf_error(cf,
                           "zone \"%V\" is already used", &name);
    }

    gmcf->limit_zone->init = ngx_env_gateway_limit_init_zone;
    gmcf->limit_zone->data = lz;

    return NGX_CONF_OK;
}


/* env_gateway_limit token|account|tenant|environment|team RATE [burst=N] */
char *
ngx_env_gateway_limit_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_env_gateway_loc_conf_t  *glcf = conf;

    u_char                   *p, *last;
    ngx_int_t                 n, burst;
    ngx_str_t                *value, window;
    ngx_uint_t                i, kind;
    ngx_env_gateway_rate_t    rate;
    ngx_env_gateway_limit_t  *lim;

    value = cf->args->elts;

    for (kind = 0; kind < NGX_ENVGW_LIMIT_NKINDS; kind++) {
        if (ngx_env_gateway_limit_kinds[kind].len == value[1].len
            && ngx_strncmp(ngx_env_gateway_limit_kinds[kind].data,
                           value[1].data, value[1].len) == 0)
        {
            break;
        }
    }

    if (kind == NGX_ENVGW_LIMIT_NKINDS) {
        return ngx_env_gateway_conf_error(cf,
                           "unknown key \"%V\": token, account, tenant, "
                           "environment or team", &value[1]);
    }

    /* "Nr/s", "Nr/m", "Nr/<nginx time>" */

    p = value[2].data;
    last = p + value[2].len;

    while (p < last && *p >= '0' && *p <= '9') {
        p++;
    }

    n = ngx_atoi(value[2].data, p - value[2].data);

    window.data = p + 2;
    window.len = (last - p > 2) ? (size_t) (last - p - 2) : 0;

    if (n == NGX_ERROR || last - p < 3 || p[0] != 'r' || p[1] != '/'
        || ngx_env_gateway_rate_parse(&window, n, &rate) != NGX_OK)
    {
        return ngx_env_gateway_conf_error(cf,
                           "invalid rate \"%V\": Nr/s, Nr/m or Nr/<time> "
                           "like 500r/10s, with N from 1 to %d and a "
                           "window up to 7d", &value[2], NGX_ENVGW_RATE_MAX);
    }

    burst = 0;

    for (i = 3; i < cf->args->nelts; i++) {
        if (ngx_strncmp(value[i].data, "burst=", 6) == 0) {
            burst = ngx_atoi(value[i].data + 6, value[i].len - 6);

            if (burst == NGX_ERROR || burst > NGX_ENVGW_RATE_MAX) {
                return ngx_env_gateway_conf_error(cf,
                                   "invalid burst \"%V\": a number from 0 "
                                   "to %d", &value[i], NGX_ENVGW_RATE_MAX);
            }

            continue;
        }

        return ngx_env_gateway_conf_error(cf,
                           "unknown parameter \"%V\": burst= is known",
                           &value[i]);
    }

    if (glcf->limits == NULL) {
        glcf->limits = ngx_array_create(cf->pool, 2,
                                        sizeof(ngx_env_gateway_limit_t));
        if (glcf->limits == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    lim = ngx_array_push(glcf->limits);
    if (lim == NULL) {
        return NGX_CONF_ERROR;
    }

    lim->kind = kind;
    lim->rate = rate.requests;
    lim->burst = (uint32_t) burst;
    lim->window = rate.window;
    lim->file = cf->conf_file->file.name;
    lim->line = cf->conf_file->line;

    return NGX_CONF_OK;
}


/*
 * A location's env_gateway_limit lines replace the ones it would inherit
 * (as limit_req's do).  Limits need the zone.
 */
char *
ngx_env_gateway_limit_merge(ngx_conf_t *cf, ngx_env_gateway_loc_conf_t *prev,
    ngx_env_gateway_loc_conf_t *conf)
{
    ngx_env_gateway_limit_t      *lim;
    ngx_env_gateway_main_conf_t  *gmcf;

    if (conf->limits == NULL) {
        conf->limits = prev->limits;
    }

    if (conf->limits == NULL) {
        return NGX_CONF_OK;
    }

    gmcf = ngx_http_conf_get_module_main_conf(cf, ngx_env_gateway_module);

    if (gmcf->limit_zone == NULL) {
        /* found only now, at the end of http{}: point at the directive */
        lim = conf->limits->elts;

        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "\"env_gateway_limit\" needs \"env_gateway_limit_zone\" "
                      "in the http block in %V:%ui", &lim->file, lim->line);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}

/*
 * Does the token stage, not checked yet, have an environment limit (which
 * the environment record may replace)?
 */
ngx_uint_t
ngx_env_gateway_limit_wants_env(ngx_env_gateway_ctx_t *ctx,
    ngx_env_gateway_loc_conf_t *glcf)
{
    ngx_uint_t                    i;
    ngx_env_gateway_limit_t      *lim;
    ngx_env_gateway_limit_ctx_t  *lc;

    lc = ctx->limit;

    if (glcf->limits == NULL
        || (lc && lc->glcf == glcf
            && (lc->stages & NGX_ENVGW_LIMIT_STAGE_TOKEN)))
    {
        return 0;
    }

    lim = glcf->limits->elts;

    for (i = 0; i < glcf->limits->nelts; i++) {
        if (lim[i].kind == NGX_ENVGW_LIMIT_ENVIRONMENT) {
            return 1;
        }
    }

    return 0;
}


/* ------------------------------------------------------------------ */
/* metrics                                                             */

void
ngx_env_gateway_limit_metrics(ngx_env_gateway_text_t *t, ngx_atomic_uint_t *c)
{
    ngx_uint_t  i;

    ngx_env_gateway_text_literal(t,
        "# HELP env_gateway_rate_limited_total Requests refused by a rate "
        "limit, by key.\n"
        "# TYPE env_gateway_rate_limited_total counter\n");

    for (i = 0; i < NGX_ENVGW_LIMIT_NKINDS; i++) {
        ngx_env_gateway_text_literal(t,
                                     "env_gateway_rate_limited_total{key=\"");
        ngx_env_gateway_text_str(t, &ngx_env_gateway_limit_kinds[i]);
        ngx_env_gateway_text_literal(t, "\"} ");
        ngx_env_gateway_text_uint(t, c[NGX_ENVGW_M_LIMITED + i], 0);
        ngx_env_gateway_text_literal(t, "\n");
    }

    ngx_env_gateway_text_literal(t,
        "# HELP env_gateway_rate_limit_evictions_total Rate limit counters "
        "evicted from a full zone.\n"
        "# TYPE env_gateway_rate_limit_evictions_total counter\n"
        "env_gateway_rate_limit_evictions_total ");
    ngx_env_gateway_text_uint(t, c[NGX_ENVGW_M_LIMIT_EVICTIONS], 0);

    ngx_env_gateway_text_literal(t,
        "\n# HELP env_gateway_rate_limit_syncs_total Rounds of counts sent "
        "to Redis (sync=redis).\n"
        "# TYPE env_gateway_rate_limit_syncs_total counter\n"
        "env_gateway_rate_limit_syncs_total ");
    ngx_env_gateway_text_uint(t, c[NGX_ENVGW_M_LIMIT_SYNCS], 0);

    ngx_env_gateway_text_literal(t,
        "\n# HELP env_gateway_rate_limit_sync_failures_total Rounds Redis "
        "did not take: counting went on locally.\n"
        "# TYPE env_gateway_rate_limit_sync_failures_total counter\n"
        "env_gateway_rate_limit_sync_failures_total ");
    ngx_env_gateway_text_uint(t, c[NGX_ENVGW_M_LIMIT_SYNC_FAILURES], 0);
    ngx_env_gateway_text_literal(t, "\n");
}
