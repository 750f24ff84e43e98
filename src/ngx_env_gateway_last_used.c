/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * env_gateway: the last use of each token, <prefix>last_used:<token_id> =
 * Unix seconds (what `envgw token list` shows as last_used_at).
 *
 * Off the request path: a request let through only notes its token id in
 * this worker's table (a hash insert, no allocation, no Redis).  A timer
 * (env_gateway_last_used interval=, 60 s by default) writes the table as
 * one pipeline of SETs on the lookup connection, then empties it: at most
 * one write per token, interval and worker.  The table is bounded
 * (entries=): once full, tokens not in it yet are not recorded until the
 * next interval, and counted (env_gateway_last_used_dropped_total).
 *
 * Best effort, never in the way: Redis down at the flush, the interval's
 * uses are dropped; a SET refused (a read-only replica's READONLY, an
 * ACL's NOPERM, any error) is counted, logged once, and writing stops for
 * backoff= (5 min by default); a worker that exits loses its interval.
 * The cache never reads these keys.
 */

#include "ngx_env_gateway.h"


#define NGX_ENVGW_LAST_USED_INTERVAL  60000     /* ms */
#define NGX_ENVGW_LAST_USED_ENTRIES   4096
#define NGX_ENVGW_LAST_USED_BACKOFF   300000    /* ms */
#define NGX_ENVGW_LAST_USED_ID_AVG    48        /* arena bytes an entry */


typedef struct {
    uint32_t                     hash;
    uint32_t                     len;       /* 0: a free slot */
    u_char                      *data;      /* in the arena */
    time_t                       used;
} ngx_env_gateway_lu_entry_t;


typedef struct {
    ngx_env_gateway_lu_entry_t  *slots;
    ngx_uint_t                   mask;      /* slots - 1, a power of 2 */
    ngx_uint_t                   count;
    ngx_uint_t                   max;       /* entries= */
    u_char                      *arena;     /* the token ids */
    u_char                      *pos;
    u_char                      *end;
    ngx_uint_t                   dropped;   /* not recorded this interval */
    ngx_msec_t                   interval;
    ngx_msec_t                   backoff;
    ngx_msec_t                   resume;    /* writing again from then */
    unsigned                     refused:1; /* in a back-off period */
    ngx_str_t                    prefix;
    ngx_event_t                  timer;
    ngx_log_t                   *log;
} ngx_env_gateway_lu_t;


static void ngx_env_gateway_last_used_flush(ngx_event_t *ev);
static void ngx_env_gateway_last_used_reply(void *data, redisReply *reply);
static void ngx_env_gateway_last_used_clear(ngx_env_gateway_lu_t *lu);


/* this worker's table; NULL: not recording */
static ngx_env_gateway_lu_t  *ngx_env_gateway_lu;


/* env_gateway_last_used off | [interval=60s] [entries=4096] [backoff=5m] */
char *
ngx_env_gateway_last_used_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_env_gateway_main_conf_t  *gmcf = conf;

    ngx_int_t                     n;
    ngx_str_t                    *value, v;
    ngx_uint_t                    i;
    ngx_msec_t                    t;

    if (gmcf->last_used_set) {
        return "is duplicate";
    }

    gmcf->last_used_set = 1;
    value = cf->args->elts;

    if (cf->args->nelts == 2 && ngx_strcmp(value[1].data, "off") == 0) {
        gmcf->last_used_interval = 0;
        return NGX_CONF_OK;
    }

    for (i = 1; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "interval=", 9) == 0) {
            v.data = value[i].data + 9;
            v.len = value[i].len - 9;

            t = ngx_parse_time(&v, 0);
            if (t == (ngx_msec_t) NGX_ERROR || t < 1000) {
                return "has an invalid interval= (at least 1s)";
            }

            gmcf->last_used_interval = t;
            continue;
        }

        if (ngx_strncmp(value[i].data, "backoff=", 8) == 0) {
            v.data = value[i].data + 8;
            v.len = value[i].len - 8;

            t = ngx_parse_time(&v, 0);
            if (t == (ngx_msec_t) NGX_ERROR || t < 1000) {
                return "has an invalid backoff= (at least 1s)";
            }

            gmcf->last_used_backoff = t;
            continue;
        }

        if (ngx_strncmp(value[i].data, "entries=", 8) == 0) {
            n = ngx_atoi(value[i].data + 8, value[i].len - 8);
            if (n < 1 || n > 1048576) {
                return "has an invalid entries= (1 to 1048576)";
            }

            gmcf->last_used_entries = n;
            continue;
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid parameter \"%V\": off, or interval=, "
                           "entries=, backoff=", &value[i]);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/* defaults of what the directive did not say */
void
ngx_env_gateway_last_used_conf(ngx_env_gateway_main_conf_t *gmcf)
{
    if (!gmcf->last_used_set) {
        gmcf->last_used_interval = NGX_ENVGW_LAST_USED_INTERVAL;
    }

    if (gmcf->last_used_interval && gmcf->last_used_entries == 0) {
        gmcf->last_used_entries = NGX_ENVGW_LAST_USED_ENTRIES;
    }

    if (gmcf->last_used_interval && gmcf->last_used_backoff == 0) {
        gmcf->last_used_backoff = NGX_ENVGW_LAST_USED_BACKOFF;
    }
}


/* in a worker: the table, and the first flush one interval from now */
ngx_int_t
ngx_env_gateway_last_used_init(ngx_cycle_t *cycle,
    ngx_env_gateway_main_conf_t *gmcf)
{
    size_t                 size;
    ngx_uint_t             slots;
    ngx_env_gateway_lu_t  *lu;

    ngx_env_gateway_lu = NULL;

    if (gmcf->last_used_interval == 0) {
        return NGX_OK;
    }

    lu = ngx_pcalloc(cycle->pool, sizeof(ngx_env_gateway_lu_t));
    if (lu == NULL) {
        return NGX_ERROR;
    }

    /* at most half full: probes stay short */
    for (slots = 2; slots < 2 * gmcf->last_used_entries; slots <<= 1) {
        /* void */
    }

    lu->slots = ngx_pcalloc(cycle->pool,
                            slots * sizeof(ngx_env_gateway_lu_entry_t));
    if (lu->slots == NULL) {
        return NGX_ERROR;
    }

    size = gmcf->last_used_entries * NGX_ENVGW_LAST_USED_ID_AVG;

    lu->arena = ngx_palloc(cycle->pool, size);
    if (lu->arena == NULL) {
        return NGX_ERROR;
    }

    lu->mask = slots - 1;
    lu->max = gmcf->last_used_entries;
    lu->pos = lu->arena;
    lu->end = lu->arena + size;
    lu->interval = gmcf->last_used_interval;
    lu->backoff = gmcf->last_used_backoff;
    lu->prefix = gmcf->prefix;
    lu->log = cycle->log;

    lu->timer.handler = ngx_env_gateway_last_used_flush;
    lu->timer.data = lu;
    lu->timer.log = cycle->log;
    lu->timer.cancelable = 1;

    ngx_add_timer(&lu->timer, lu->interval);

    ngx_env_gateway_lu = lu;

    return NGX_OK;
}


/*
 * The request path: the token "id" was let through now.  A hash insert;
 * nothing else.
 */
void
ngx_env_gateway_last_used(ngx_str_t *id)
{
    uint32_t                     hash;
    ngx_uint_t                   i;
    ngx_env_gateway_lu_t        *lu;
    ngx_env_gateway_lu_entry_t  *e;

    lu = ngx_env_gateway_lu;

    if (lu == NULL || id->len == 0) {
        return;
    }
    hash = ngx_murmur_hash2(id->data, id->len);

    for (i = hash & lu->mask; /* void */ ; i = (i + 1) & lu->mask) {
        e = &lu->slots[i];

        if (e->len == 0) {
            break;
        }

        if (e->hash == hash && e->len == id->len
            && ngx_memcmp(e->data, id->data, id->len) == 0)
        {
            e->used = ngx_time();
            return;
        }
    }

    if (lu->count >= lu->max || (size_t) (lu->end - lu->pos) < id->len) {
        lu->dropped++;
        return;
    }

    e->hash = hash;
    e->len = id->len;
    e->data = lu->pos;
    e->used = ngx_time();
    lu->pos = ngx_cpymem(lu->pos, id->data, id->len);
    lu->count++;
}


static void
ngx_env_gateway_last_used_clear(ngx_env_gateway_lu_t *lu)
{
    ngx_uint_t  i;

    if (lu->count) {
        for (i = 0; i <= lu->mask; i++) {
            lu->slots[i].len = 0;
        }
    }

    lu->count = 0;
    lu->pos = lu->arena;
    lu->dropped = 0;
}


/* the timer: one pipeline of SETs, then an empty table */
static void
ngx_env_gateway_last_used_flush(ngx_event_t *ev)
{
    u_char                      *key, *p, value[NGX_TIME_T_LEN];
    size_t                       len, max, argvlen[3];
    ngx_int_t                    rc;
    ngx_uint_t                   i, sent;
    const char                  *argv[3];
    ngx_env_gateway_lu_t        *lu = ev->data;
    ngx_env_gateway_lu_entry_t  *e;

    if (ngx_exiting || ngx_quit || ngx_terminate) {
        return;
    }

    ngx_add_timer(&lu->timer, lu->interval);

    ngx_env_gateway_metric_add(NGX_ENVGW_M_LAST_USED_DROPPED, lu->dropped);

    if (lu->count == 0) {
        ngx_env_gateway_last_used_clear(lu);
        return;
    }

    if (lu->refused && (ngx_msec_int_t) (lu->resume - ngx_current_msec) > 0) {
        ngx_log_debug1(NGX_LOG_DEBUG_EVENT, lu->log, 0,
                       "env_gateway: last use of %ui token(s) not written: "
                       "backing off", lu->count);
        ngx_env_gateway_last_used_clear(lu);
        return;
    }

    lu->refused = 0;

    /* the longest key, measured, then each one written in its place */
    max = 0;

    for (i = 0; i <= lu->mask; i++) {
        max = ngx_max(max, lu->slots[i].len);
    }

    len = lu->prefix.len + sizeof(ENVGW_KEY_LAST_USED) - 1 + max;

    key = ngx_alloc(len, lu->log);
    if (key == NULL) {
        ngx_env_gateway_last_used_clear(lu);
        return;
    }

    p = ngx_cpymem(key, lu->prefix.data, lu->prefix.len);
    p = ngx_cpymem(p, ENVGW_KEY_LAST_USED,
                   sizeof(ENVGW_KEY_LAST_USED) - 1);

    argv[0] = "SET";
    argvlen[0] = 3;
    argv[1] = (const char *) key;
    argv[2] = (const char *) value;
    sent = 0;

    for (i = 0; i <= lu->mask; i++) {
        e = &lu->slots[i];

        if (e->len == 0) {
            continue;
        }

        argvlen[1] = ngx_cpymem(p, e->data, e->len) - key;
        argvlen[2] = ngx_sprintf(value, "%T", e->used) - value;

        /* formatted into the connection's buffer: written as one */
        rc = ngx_env_gateway_redis_command(3, argv, argvlen,
                                           ngx_env_gateway_last_used_reply,
                                           lu);
        if (rc != NGX_OK) {
            break;
        }

        sent++;
    }

    ngx_free(key);

    ngx_log_debug2(NGX_LOG_DEBUG_EVENT, lu->log, 0,
                   "env_gateway: last use of %ui token(s), %ui SET(s) "
                   "queued", lu->count, sent);

    ngx_env_gateway_last_used_clear(lu);
}


static void
ngx_env_gateway_last_used_reply(void *data, redisReply *reply)
{
    ngx_env_gateway_lu_t  *lu = data;

    if (reply == NULL) {
        /* the connection went away: these uses are lost, nothing more */
        return;
    }

    if (reply->type != REDIS_REPLY_ERROR) {
        ngx_env_gateway_metric_inc(NGX_ENVGW_M_LAST_USED_WRITES);
        return;
    }

    ngx_env_gateway_metric_inc(NGX_ENVGW_M_LAST_USED_ERRORS);

    if (lu->refused) {
        return;
    }

    /* a replica (READONLY), an ACL (NOPERM): said once, then a pause */
    lu->refused = 1;
    lu->resume = ngx_current_msec + lu->backoff;

    ngx_log_error(NGX_LOG_WARN, lu->log, 0,
                  "env_gateway: redis refused to record a token's last "
                  "use: \"%*s\"; not writing last uses for %M s",
                  (size_t) reply->len, reply->str, lu->backoff / 1000);
}
