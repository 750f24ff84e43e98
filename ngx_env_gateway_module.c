/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * env_gateway: environment isolation in front of existing backends.
 *
 * This file is the module's face, in nginx's order: directives, module
 * context and module, the request handlers it owns (variables,
 * env_gateway_authorize), configuration create/merge, the directive
 * handlers, and init (phase registration, the worker's Redis client).
 * The request logic lives in src/.
 */

#include "ngx_env_gateway.h"


/* defaults: each used once */
#define NGX_ENVGW_REDIS_PORT             6379
#define NGX_ENVGW_SENTINEL_PORT          26379
#define NGX_ENVGW_CONNECT_TIMEOUT        500     /* ms */
#define NGX_ENVGW_READ_TIMEOUT           1000    /* ms */
#define NGX_ENVGW_PRIMARY_RETRY          5000    /* ms */
#define NGX_ENVGW_CACHE_TTL              30000   /* ms */
#define NGX_ENVGW_CACHE_NEGATIVE_TTL     5000    /* ms */
#define NGX_ENVGW_LOG_LEVEL              NGX_LOG_INFO

static ngx_int_t ngx_env_gateway_preconfiguration(ngx_conf_t *cf);
static ngx_int_t ngx_env_gateway_postconfiguration(ngx_conf_t *cf);
static void *ngx_env_gateway_create_main_conf(ngx_conf_t *cf);
static char *ngx_env_gateway_init_main_conf(ngx_conf_t *cf, void *conf);
static void *ngx_env_gateway_create_loc_conf(ngx_conf_t *cf);
static char *ngx_env_gateway_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static char *ngx_env_gateway_redis_params(ngx_conf_t *cf,
    ngx_env_gateway_main_conf_t *gmcf, ngx_env_gateway_server_t *srv,
    ngx_uint_t first);
static char *ngx_env_gateway_cluster_directive(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_env_gateway_redis_directive(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_env_gateway_token_directive(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_env_gateway_account_directive(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_env_gateway_prefix_directive(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_env_gateway_enable_directive(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_env_gateway_log_level_directive(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_env_gateway_route_directive(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_env_gateway_body_field_directive(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_env_gateway_cache_directive(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_env_gateway_metrics_directive(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_env_gateway_authorize_directive(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_env_gateway_status_directive(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static ngx_int_t ngx_env_gateway_authorize_handler(ngx_http_request_t *r);
static ngx_int_t ngx_env_gateway_cache_status_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_env_gateway_redacted_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static void ngx_env_gateway_server_init(ngx_env_gateway_server_t *srv);
static char *ngx_env_gateway_parse_server(ngx_conf_t *cf,
    ngx_str_t *addr, ngx_env_gateway_server_t *srv, in_port_t default_port);
static ngx_int_t ngx_env_gateway_init_module(ngx_cycle_t *cycle);
static ngx_int_t ngx_env_gateway_init_process(ngx_cycle_t *cycle);
static void ngx_env_gateway_exit_process(ngx_cycle_t *cycle);
static ngx_int_t ngx_env_gateway_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);


static ngx_conf_enum_t  ngx_env_gateway_log_levels[] = {
    { ngx_string("info"), NGX_LOG_INFO },
    { ngx_string("notice"), NGX_LOG_NOTICE },
    { ngx_string("warn"), NGX_LOG_WARN },
    { ngx_string("error"), NGX_LOG_ERR },
    { ngx_null_string, 0 }
};


static ngx_command_t  ngx_env_gateway_commands[] = {

    { ngx_string("env_gateway_redis"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_env_gateway_redis_directive,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("env_gateway_redis_cluster"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_env_gateway_cluster_directive,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("env_gateway_key_prefix"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_env_gateway_prefix_directive,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("env_gateway_cache"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_env_gateway_cache_directive,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("env_gateway_secret_keys"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_env_gateway_secret_keys,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("env_gateway_metrics"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_env_gateway_metrics_directive,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("env_gateway"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_env_gateway_enable_directive,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_env_gateway_loc_conf_t, enable),
      NULL },

    { ngx_string("env_gateway_token"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_env_gateway_token_directive,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("env_gateway_account"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE12,
      ngx_env_gateway_account_directive,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("env_gateway_route"),
      NGX_HTTP_LOC_CONF|NGX_CONF_TAKE12,
      ngx_env_gateway_route_directive,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("env_gateway_account_body_field"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_env_gateway_body_field_directive,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("env_gateway_tenant"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_set_complex_value_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_env_gateway_loc_conf_t, tenant),
      NULL },

    { ngx_string("env_gateway_integration"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_set_complex_value_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_env_gateway_loc_conf_t, integration),
      NULL },

    { ngx_string("env_gateway_hide_credentials"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_env_gateway_loc_conf_t, hide_credentials),
      NULL },

    { ngx_string("env_gateway_identity_headers"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_env_gateway_loc_conf_t, identity_headers),
      NULL },

    { ngx_string("env_gateway_authorize"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_env_gateway_authorize_directive,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("env_gateway_log_level"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_env_gateway_log_level_directive,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_env_gateway_loc_conf_t, log_level),
      &ngx_env_gateway_log_levels },

    /* rate limits (src/ngx_env_gateway_limit.c) */

    { ngx_string("env_gateway_limit_zone"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_env_gateway_limit_zone_directive,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("env_gateway_last_used"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_env_gateway_last_used_directive,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("env_gateway_limit"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE23,
      ngx_env_gateway_limit_directive,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("env_gateway_status"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_env_gateway_status_directive,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_env_gateway_module_ctx = {
    ngx_env_gateway_preconfiguration,      /* preconfiguration */
    ngx_env_gateway_postconfiguration,     /* postconfiguration */

    ngx_env_gateway_create_main_conf,      /* create main configuration */
    ngx_env_gateway_init_main_conf,        /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_env_gateway_create_loc_conf,       /* create location configuration */
    ngx_env_gateway_merge_loc_conf         /* merge location configuration */
};


ngx_module_t  ngx_env_gateway_module = {
    NGX_MODULE_V1,
    &ngx_env_gateway_module_ctx,           /* module context */
    ngx_env_gateway_commands,              /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    ngx_env_gateway_init_module,           /* init module */
    ngx_env_gateway_init_process,          /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_env_gateway_exit_process,          /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static ngx_http_variable_t  ngx_env_gateway_vars[] = {

    { ngx_string("env_gateway_environment_id"), NULL,
      ngx_env_gateway_variable,
      offsetof(ngx_env_gateway_ctx_t, environment_id),
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("env_gateway_environment"), NULL,
      ngx_env_gateway_variable,
      offsetof(ngx_env_gateway_ctx_t, environment),
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("env_gateway_team_id"), NULL,
      ngx_env_gateway_variable,
      offsetof(ngx_env_gateway_ctx_t, team_id),
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("env_gateway_token_id"), NULL,
      ngx_env_gateway_variable,
      offsetof(ngx_env_gateway_ctx_t, token_id),
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("env_gateway_account_id"), NULL,
      ngx_env_gateway_variable,
      offsetof(ngx_env_gateway_ctx_t, account_id),
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("env_gateway_integration"), NULL,
      ngx_env_gateway_variable,
      offsetof(ngx_env_gateway_ctx_t, integration),
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("env_gateway_tenant_id"), NULL,
      ngx_env_gateway_variable,
      offsetof(ngx_env_gateway_ctx_t, tenant_id),
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("env_gateway_method"), NULL,
      ngx_env_gateway_variable,
      offsetof(ngx_env_gateway_ctx_t, method),
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("env_gateway_upstream_url"), NULL,
      ngx_env_gateway_upstream_url_variable,
      offsetof(ngx_env_gateway_ctx_t, upstream_url),
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("env_gateway_upstream_method"), NULL,
      ngx_env_gateway_variable,
      offsetof(ngx_env_gateway_ctx_t, upstream_method),
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("env_gateway_redacted_request"), NULL,
      ngx_env_gateway_redacted_variable, 0,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("env_gateway_cache_status"), NULL,
      ngx_env_gateway_cache_status_variable, 0,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

      ngx_http_null_variable
};


/* ------------------------------------------------------------------ */
/* request handlers and variables                                      */

static ngx_int_t
ngx_env_gateway_authorize_handler(ngx_http_request_t *r)
{
    ngx_int_t                    rc;
    ngx_env_gateway_ctx_t       *ctx;
    ngx_env_gateway_loc_conf_t  *glcf;

    glcf = ngx_http_get_module_loc_conf(r, ngx_env_gateway_module);
    ctx = ngx_env_gateway_get_ctx(r);

    /* fail closed: only a request this location's check passed */
    if (!glcf->enable || ctx == NULL || ctx->refusal != NGX_ENVGW_OK
        || ctx->checked != glcf)
    {
        return NGX_HTTP_FORBIDDEN;
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    r->headers_out.status = NGX_HTTP_NO_CONTENT;
    r->header_only = 1;

    return ngx_http_send_header(r);
}


/*
 * Values of a request the gateway allowed; empty (not found) before the
 * check, or when it refused, so a refused request never carries half an
 * identity upstream or into a log.
 */
static ngx_int_t
ngx_env_gateway_variable(ngx_http_request_t *r, ngx_http_variable_value_t *v,
    uintptr_t data)
{
    ngx_str_t              *s;
    ngx_env_gateway_ctx_t  *ctx;

    ctx = ngx_env_gateway_get_ctx(r);

    if (ctx == NULL || ctx->refusal != NGX_ENVGW_OK) {
        v->not_found = 1;
        return NGX_OK;
    }

    s = (ngx_str_t *) ((char *) ctx + data);

    if (s->len == 0) {
        v->not_found = 1;
        return NGX_OK;
    }

    v->len = s->len;
    v->data = s->data;
    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;

    return NGX_OK;
}


/*
 * HIT when every record came from the cache, STALE when any was served
 * stale, MISS when any was asked of Redis; empty without a cache.
 */
static ngx_int_t
ngx_env_gateway_cache_status_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_uint_t              i, status;
    ngx_env_gateway_ctx_t  *ctx;

    static ngx_str_t  names[] = {
        ngx_null_string, ngx_string("HIT"), ngx_string("MISS"),
        ngx_string("STALE")
    };

    ctx = ngx_env_gateway_get_ctx(r);
    status = NGX_ENVGW_CACHE_NONE;

    if (ctx) {
        for (i = 0; i < NGX_ENVGW_NSLOTS; i++) {
            if (ctx->waiter.slots[i].cache > status) {
                status = ctx->waiter.slots[i].cache;
            }
        }
    }

    if (status == NGX_ENVGW_CACHE_NONE) {
        v->not_found = 1;
        return NGX_OK;
    }

    v->len = names[status].len;
    v->data = names[status].data;
    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;

    return NGX_OK;
}


/*
 * $request with the values of credential arguments replaced, for
 * log_format: the argument named by "env_gateway_token $arg_NAME" and
 * RFC 6750's access_token.  Everything else is kept byte for byte.
 */
static ngx_int_t
ngx_env_gateway_redacted_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_str_t                    out;
    ngx_env_gateway_loc_conf_t  *glcf;

    glcf = ngx_http_get_module_loc_conf(r, ngx_env_gateway_module);

    if (r->request_line.data == NULL) {
        v->not_found = 1;
        return NGX_OK;
    }

    if (ngx_env_gateway_redact(r->pool, &r->request_line, &glcf->token_arg,
                               &out)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    v->len = out.len;
    v->data = out.data;
    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;

    return NGX_OK;
}


/* ------------------------------------------------------------------ */
/* configuration: create and merge                                    */

static ngx_int_t
ngx_env_gateway_preconfiguration(ngx_conf_t *cf)
{
    ngx_http_variable_t  *var, *v;

    for (v = ngx_env_gateway_vars; v->name.len; v++) {
        var = ngx_http_add_variable(cf, &v->name, v->flags);
        if (var == NULL) {
            return NGX_ERROR;
        }

        var->get_handler = v->get_handler;
        var->data = v->data;
    }

    return NGX_OK;
}


static void *
ngx_env_gateway_create_main_conf(ngx_conf_t *cf)
{
    ngx_env_gateway_main_conf_t  *gmcf;

    gmcf = ngx_pcalloc(cf->pool, sizeof(ngx_env_gateway_main_conf_t));
    if (gmcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     gmcf->servers = NULL;
     *     gmcf->prefix = { 0, NULL };
     *     gmcf->used = 0;
     *     gmcf->cache_zone = NULL;
     */

    gmcf->cache_ttl = NGX_CONF_UNSET_MSEC;
    gmcf->primary_retry = NGX_CONF_UNSET_MSEC;

    return gmcf;
}


static char *
ngx_env_gateway_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_env_gateway_main_conf_t  *gmcf = conf;

    if (gmcf->prefix.data == NULL) {
        ngx_str_set(&gmcf->prefix, ENVGW_DEFAULT_PREFIX);
    }

    gmcf->channel.len = gmcf->prefix.len + sizeof(ENVGW_CHANNEL_INVALIDATE)
                        - 1;
    gmcf->channel.data = ngx_pnalloc(cf->pool, gmcf->channel.len);
    if (gmcf->channel.data == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memcpy(ngx_cpymem(gmcf->channel.data, gmcf->prefix.data,
                          gmcf->prefix.len),
               ENVGW_CHANNEL_INVALIDATE, sizeof(ENVGW_CHANNEL_INVALIDATE) - 1);

    if (gmcf->primary_retry == NGX_CONF_UNSET_MSEC) {
        gmcf->primary_retry = NGX_ENVGW_PRIMARY_RETRY;
    }

    ngx_env_gateway_last_used_conf(gmcf);

    return NGX_CONF_OK;
}


static void *
ngx_env_gateway_create_loc_conf(ngx_conf_t *cf)
{
    ngx_env_gateway_loc_conf_t  *glcf;

    glcf = ngx_pcalloc(cf->pool, sizeof(ngx_env_gateway_loc_conf_t));
    if (glcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     glcf->token = NULL;
     *     glcf->token_header = { 0, NULL };
     *     glcf->token_arg = { 0, NULL };
     *     glcf->account = NULL;
     *     glcf->account_arg = { 0, NULL };
     */

    glcf->tenant = NGX_CONF_UNSET_PTR;
    glcf->integration = NGX_CONF_UNSET_PTR;
    glcf->enable = NGX_CONF_UNSET;
    glcf->account_required = NGX_CONF_UNSET;
    glcf->hide_credentials = NGX_CONF_UNSET;
    glcf->identity_headers = NGX_CONF_UNSET;
    glcf->log_level = NGX_CONF_UNSET_UINT;

    return glcf;
}


static char *
ngx_env_gateway_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_env_gateway_loc_conf_t  *prev = parent;
    ngx_env_gateway_loc_conf_t  *conf = child;

    ngx_env_gateway_main_conf_t  *gmcf;

    ngx_conf_merge_value(conf->enable, prev->enable, 0);

    if (conf->enable_file.data == NULL) {
        conf->enable_file = prev->enable_file;
        conf->enable_line = prev->enable_line;
    }
    ngx_conf_merge_value(conf->hide_credentials, prev->hide_credentials, 1);
    ngx_conf_merge_value(conf->identity_headers, prev->identity_headers, 1);
    ngx_conf_merge_uint_value(conf->log_level, prev->log_level,
                              NGX_ENVGW_LOG_LEVEL);

    if (conf->token == NULL) {
        conf->token = prev->token;
        conf->token_header = prev->token_header;
        conf->token_arg = prev->token_arg;
        conf->token_cookie = prev->token_cookie;
    }

    if (conf->account == NULL) {
        conf->account = prev->account;
        conf->account_arg = prev->account_arg;
        conf->account_header = prev->account_header;
        conf->account_required = prev->account_required;
    }

    ngx_conf_merge_value(conf->account_required, prev->account_required, 0);
    ngx_conf_merge_ptr_value(conf->tenant, prev->tenant, NULL);
    ngx_conf_merge_ptr_value(conf->integration, prev->integration, NULL);
    ngx_conf_merge_str_value(conf->body_field, prev->body_field, "");

    if (conf->route_resource && !conf->enable) {
        /* found only now, at the end of http{}: point at the directive */
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "\"env_gateway_route\" needs \"env_gateway on\" in "
                      "the same location in %V:%ui",
                      &conf->route_file, conf->route_line);
        return NGX_CONF_ERROR;
    }

    if (conf->route_resource && conf->account == NULL
        && conf->tenant == NULL && conf->body_field.len == 0)
    {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "\"env_gateway_route\" needs an account source "
                      "(\"env_gateway_account\", \"env_gateway_tenant\" or "
                      "\"env_gateway_account_body_field\") in %V:%ui",
                      &conf->route_file, conf->route_line);
        return NGX_CONF_ERROR;
    }

    if (ngx_env_gateway_limit_merge(cf, prev, conf) != NGX_CONF_OK) {
        return NGX_CONF_ERROR;
    }

    if (conf->enable) {
        gmcf = ngx_http_conf_get_module_main_conf(cf, ngx_env_gateway_module);

        if (!gmcf->used) {
            gmcf->used = 1;
            gmcf->used_file = conf->enable_file;
            gmcf->used_line = conf->enable_line;
        }
    }

    return NGX_CONF_OK;
}


/* ------------------------------------------------------------------ */
/* directives                                                          */

/*
 * A directive's error as nginx prints it: "<directive>" directive <text>,
 * with the file and line; the text is formatted into the config pool.
 */
char *
ngx_env_gateway_conf_error(ngx_conf_t *cf, const char *fmt, ...)
{
    u_char   *p, *last;
    va_list   args;

    p = ngx_pnalloc(cf->pool, NGX_MAX_CONF_ERRSTR);
    if (p == NULL) {
        return NGX_CONF_ERROR;
    }

    last = p + NGX_MAX_CONF_ERRSTR - 1;

    va_start(args, fmt);
    last = ngx_vslprintf(p, last, fmt, args);
    va_end(args);

    *last = '\0';

    return (char *) p;
}


/*
 * "$http_x_api_key" -> "x-api-key", "$arg_key" -> "key", "$cookie_sid" ->
 * "sid".  "${name}" and any case of the name are the same variable for
 * nginx, so they are the same place here.
 */
static void
ngx_env_gateway_source(ngx_conf_t *cf, ngx_str_t *value, ngx_str_t *header,
    ngx_str_t *arg, ngx_str_t *cookie)
{
    u_char      *p;
    ngx_str_t    name;
    ngx_uint_t   i;

    ngx_str_null(header);
    ngx_str_null(arg);

    if (cookie) {
        ngx_str_null(cookie);
    }

    if (value->len < 2 || value->data[0] != '$') {
        return;
    }

    name.data = value->data + 1;
    name.len = value->len - 1;

    if (name.data[0] == '{') {
        if (name.len < 3 || name.data[name.len - 1] != '}') {
            return;
        }

        name.data++;
        name.len -= 2;
    }

    p = ngx_pnalloc(cf->pool, name.len);
    if (p == NULL) {
        return;
    }

    for (i = 0; i < name.len; i++) {
        p[i] = ngx_tolower(name.data[i]);

        if (!((p[i] >= 'a' && p[i] <= 'z')
              || (p[i] >= '0' && p[i] <= '9')
              || p[i] == '_'))
        {
            return;
        }
    }

    name.data = p;

    if (name.len > 5 && ngx_strncmp(name.data, "http_", 5) == 0) {
        header->data = name.data + 5;
        header->len = name.len - 5;

        for (i = 0; i < header->len; i++) {
            if (header->data[i] == '_') {
                header->data[i] = '-';
            }
        }

        return;
    }

    if (name.len > 4 && ngx_strncmp(name.data, "arg_", 4) == 0) {
        arg->data = name.data + 4;
        arg->len = name.len - 4;
        return;
    }

    if (cookie && name.len > 7 && ngx_strncmp(name.data, "cookie_", 7) == 0) {
        cookie->data = name.data + 7;
        cookie->len = name.len - 7;
    }
}


static char *
ngx_env_gateway_enable_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_env_gateway_loc_conf_t  *glcf = conf;

    char  *rv;

    rv = ngx_conf_set_flag_slot(cf, cmd, conf);

    if (rv == NGX_CONF_OK) {
        glcf->enable_file = cf->conf_file->file.name;
        glcf->enable_line = cf->conf_file->line;
    }

    return rv;
}


static char *
ngx_env_gateway_token_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_env_gateway_loc_conf_t  *glcf = conf;

    ngx_str_t                         *value;
    ngx_http_compile_complex_value_t   ccv;

    if (glcf->token) {
        return "is duplicate";
    }

    value = cf->args->elts;

    glcf->token = ngx_palloc(cf->pool, sizeof(ngx_http_complex_value_t));
    if (glcf->token == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(&ccv, sizeof(ngx_http_compile_complex_value_t));
    ccv.cf = cf;
    ccv.value = &value[1];
    ccv.complex_value = glcf->token;

    if (ngx_http_compile_complex_value(&ccv) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    ngx_env_gateway_source(cf, &value[1], &glcf->token_header,
                           &glcf->token_arg, &glcf->token_cookie);

    if (glcf->token_header.len == 0 && glcf->token_arg.len == 0
        && glcf->token_cookie.len == 0)
    {
        ngx_conf_log_error(NGX_LOG_WARN, cf, 0,
                           "env_gateway_token \"%V\" is neither $http_NAME "
                           "nor $arg_NAME nor $cookie_NAME: "
                           "env_gateway_hide_credentials "
                           "cannot remove it from upstream requests",
                           &value[1]);
    }

    return NGX_CONF_OK;
}


static char *
ngx_env_gateway_account_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_env_gateway_loc_conf_t  *glcf = conf;

    ngx_str_t                         *value;
    ngx_http_compile_complex_value_t   ccv;

    if (glcf->account) {
        return "is duplicate";
    }

    value = cf->args->elts;

    glcf->account_required = 0;

    if (cf->args->nelts == 3) {
        if (ngx_strcmp(value[2].data, "required") != 0) {
            return ngx_env_gateway_conf_error(cf, "has an invalid parameter "
                                              "\"%V\": the only one is "
                                              "\"required\"", &value[2]);
        }

        glcf->account_required = 1;
    }

    glcf->account = ngx_palloc(cf->pool, sizeof(ngx_http_complex_value_t));
    if (glcf->account == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(&ccv, sizeof(ngx_http_compile_complex_value_t));
    ccv.cf = cf;
    ccv.value = &value[1];
    ccv.complex_value = glcf->account;

    if (ngx_http_compile_complex_value(&ccv) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    ngx_env_gateway_source(cf, &value[1], &glcf->account_header,
                           &glcf->account_arg, NULL);

    return NGX_CONF_OK;
}


/* env_gateway_route <resource> [<rest>] */
static char *
ngx_env_gateway_route_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_env_gateway_loc_conf_t  *glcf = conf;

    ngx_str_t                         *value;
    ngx_uint_t                         i;
    ngx_http_complex_value_t          *cv[2];
    ngx_http_compile_complex_value_t   ccv;

    if (glcf->route_resource) {
        return "is duplicate";
    }

    value = cf->args->elts;
    cv[0] = NULL;
    cv[1] = NULL;

    for (i = 1; i < cf->args->nelts; i++) {
        cv[i - 1] = ngx_palloc(cf->pool, sizeof(ngx_http_complex_value_t));
        if (cv[i - 1] == NULL) {
            return NGX_CONF_ERROR;
        }

        ngx_memzero(&ccv, sizeof(ngx_http_compile_complex_value_t));
        ccv.cf = cf;
        ccv.value = &value[i];
        ccv.complex_value = cv[i - 1];

        if (ngx_http_compile_complex_value(&ccv) != NGX_OK) {
            return NGX_CONF_ERROR;
        }
    }

    glcf->route_resource = cv[0];
    glcf->route_file = cf->conf_file->file.name;
    glcf->route_line = cf->conf_file->line;
    glcf->route_rest = (cf->args->nelts == 3) ? cv[1] : NULL;

    return NGX_CONF_OK;
}


static char *
ngx_env_gateway_body_field_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_env_gateway_loc_conf_t  *glcf = conf;

    ngx_str_t  *value;

    if (glcf->body_field.data) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (value[1].len == 0 || ngx_strlchr(value[1].data,
                                         value[1].data + value[1].len, '\0'))
    {
        return "needs a field name";
    }

    /* a NUL-terminated copy for jansson */
    glcf->body_field.len = value[1].len;
    glcf->body_field.data = ngx_pnalloc(cf->pool, value[1].len + 1);
    if (glcf->body_field.data == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memcpy(glcf->body_field.data, value[1].data, value[1].len);
    glcf->body_field.data[value[1].len] = '\0';

    return NGX_CONF_OK;
}


/* ngx_conf_set_enum_slot's message would not say what is allowed */
static char *
ngx_env_gateway_log_level_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_env_gateway_loc_conf_t  *glcf = conf;

    ngx_str_t        *value;
    ngx_conf_enum_t  *e;

    if (glcf->log_level != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    value = cf->args->elts;

    for (e = ngx_env_gateway_log_levels; e->name.len; e++) {
        if (e->name.len == value[1].len
            && ngx_strcmp(e->name.data, value[1].data) == 0)
        {
            glcf->log_level = e->value;
            return NGX_CONF_OK;
        }
    }

    return ngx_env_gateway_conf_error(cf, "has an invalid level \"%V\": "
                                      "use info, notice, warn or error",
                                      &value[1]);
}


/*
 * env_gateway_authorize: the content of a location whose requests the
 * gateway checked.  A request that gets here passed (refusals answered
 * earlier): 204 No Content.  For auth_request endpoints, where "return"
 * would answer in the rewrite phase, before any check.
 */
static char *
ngx_env_gateway_authorize_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_env_gateway_authorize_handler;

    return NGX_CONF_OK;
}


static char *
ngx_env_gateway_metrics_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    if (clcf->handler == ngx_env_gateway_metrics_handler) {
        return "is duplicate";
    }

    clcf->handler = ngx_env_gateway_metrics_handler;

    return NGX_CONF_OK;
}


static char *
ngx_env_gateway_status_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    if (clcf->handler == ngx_env_gateway_status_handler) {
        return "is duplicate";
    }

    clcf->handler = ngx_env_gateway_status_handler;

    return NGX_CONF_OK;
}


static char *
ngx_env_gateway_prefix_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_env_gateway_main_conf_t  *gmcf = conf;

    ngx_str_t   *value;
    ngx_uint_t   i;

    if (gmcf->prefix.data) {
        return "is duplicate";
    }

    value = cf->args->elts;

    for (i = 0; i < value[1].len; i++) {
        if (value[1].data[i] <= ' ' || value[1].data[i] >= 0x7f) {
            return ngx_env_gateway_conf_error(cf, "has an invalid prefix "
                                              "\"%V\": no spaces or control "
                                              "characters", &value[1]);
        }
    }

    gmcf->prefix = value[1];

    return NGX_CONF_OK;
}


/* a server's settings before its directive's parameters */
static void
ngx_env_gateway_server_init(ngx_env_gateway_server_t *srv)
{
    ngx_memzero(srv, sizeof(ngx_env_gateway_server_t));
    srv->db = -1;
    srv->connect_timeout = NGX_ENVGW_CONNECT_TIMEOUT;
    srv->read_timeout = NGX_ENVGW_READ_TIMEOUT;
}


/* "ip:port", "host:port" (resolved now, once) or "unix:/path" */
static char *
ngx_env_gateway_parse_server(ngx_conf_t *cf, ngx_str_t *addr,
    ngx_env_gateway_server_t *srv, in_port_t default_port)
{
    ngx_url_t  u;

    ngx_env_gateway_server_init(srv);
    srv->resolved = 1;

    ngx_memzero(&u, sizeof(ngx_url_t));
    u.url = *addr;
    u.default_port = default_port;

    if (ngx_parse_url(cf->pool, &u) != NGX_OK) {
        if (u.err && ngx_strcmp(u.err, "host not found") == 0) {
            return ngx_env_gateway_conf_error(cf,
                       "cannot resolve \"%V\": a host name is resolved "
                       "once, when nginx reads its configuration; use an "
                       "IP address or unix:/path, or make the name "
                       "resolvable", &u.url);
        }

        return ngx_env_gateway_conf_error(cf, "has an invalid address "
                                          "\"%V\"%s%s", &u.url,
                                          u.err ? ": " : "",
                                          u.err ? u.err : "");
    }

    if (u.naddrs == 0 || u.addrs == NULL) {
        return ngx_env_gateway_conf_error(cf, "address \"%V\" has no "
                                          "address", &u.url);
    }

    if (u.naddrs > 1) {
        ngx_conf_log_error(NGX_LOG_WARN, cf, 0,
                           "redis host \"%V\" has several addresses, "
                           "using the first: list each as its own "
                           "env_gateway_redis line for failover", &u.url);
    }

    srv->name = *addr;
    srv->sockaddr = u.addrs[0].sockaddr;
    srv->socklen = u.addrs[0].socklen;

    return NGX_CONF_OK;
}


/*
 * env_gateway_redis 127.0.0.1:6379 | unix:/path [password=..] [db=N]
 *     [connect_timeout=500ms] [read_timeout=1s] [max_record=1m];
 * repeated: an ordered failover list.  A host name is resolved here, once.
 * max_record is one limit for the whole gateway: lines may repeat it, not
 * contradict it.
 */
static char *
ngx_env_gateway_redis_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_env_gateway_main_conf_t  *gmcf = conf;

    char                        *rv;
    ngx_str_t                   *value;
    ngx_uint_t                   i, first;
    ngx_env_gateway_server_t    *srv, *sn, *other;

    value = cf->args->elts;
    first = 2;

    if (gmcf->cluster) {
        return "cannot be mixed with env_gateway_redis_cluster";
    }

    if (ngx_strncmp(value[1].data, "sentinel=", 9) == 0) {
        if (gmcf->servers) {
            return "with sentinel= must be the only env_gateway_redis line";
        }

        gmcf->sentinel_name.data = value[1].data + 9;
        gmcf->sentinel_name.len = value[1].len - 9;

        if (gmcf->sentinel_name.len == 0) {
            return "needs a master name in sentinel=NAME";
        }

        gmcf->sentinels = ngx_array_create(cf->pool, 3,
                                           sizeof(ngx_env_gateway_server_t));
        if (gmcf->sentinels == NULL) {
            return NGX_CONF_ERROR;
        }

        for ( /* void */ ; first < cf->args->nelts; first++) {
            if (ngx_strlchr(value[first].data,
                            value[first].data + value[first].len, '=')
                || (value[first].len == 3
                    && ngx_strncmp(value[first].data, "tls", 3) == 0))
            {
                break;
            }

            srv = ngx_array_push(gmcf->sentinels);
            if (srv == NULL) {
                return NGX_CONF_ERROR;
            }

            rv = ngx_env_gateway_parse_server(cf, &value[first], srv,
                                             NGX_ENVGW_SENTINEL_PORT);
            if (rv != NGX_CONF_OK) {
                return rv;
            }
        }

        if (gmcf->sentinels->nelts == 0) {
            return "with sentinel= needs Sentinel addresses";
        }

    } else if (gmcf->sentinels) {
        return "cannot be mixed with a sentinel= line";
    }

    if (gmcf->servers == NULL) {
        gmcf->servers = ngx_array_create(cf->pool, 2,
                                         sizeof(ngx_env_gateway_server_t));
        if (gmcf->servers == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    srv = ngx_array_push(gmcf->servers);
    if (srv == NULL) {
        return NGX_CONF_ERROR;
    }

    if (gmcf->sentinels) {
        /* the address comes from the Sentinels, in each worker */
        ngx_env_gateway_server_init(srv);
        srv->name = gmcf->sentinel_name;

    } else {
        rv = ngx_env_gateway_parse_server(cf, &value[1], srv,
                                          NGX_ENVGW_REDIS_PORT);
        if (rv != NGX_CONF_OK) {
            return rv;
        }

        /* the same server twice is a typo, not a failover */
        other = gmcf->servers->elts;
        for (i = 0; i + 1 < gmcf->servers->nelts; i++) {
            if (ngx_cmp_sockaddr(other[i].sockaddr, other[i].socklen,
                                 srv->sockaddr, srv->socklen, 1)
                == NGX_OK)
            {
                return ngx_env_gateway_conf_error(cf, "lists \"%V\" a "
                                                  "second time", &value[1]);
            }
        }
    }

    rv = ngx_env_gateway_redis_params(cf, gmcf, srv, first);
    if (rv != NGX_CONF_OK) {
        return rv;
    }

    if (gmcf->sentinels) {
        /* the Sentinels are reached as the master is: TLS, not AUTH */
        sn = gmcf->sentinels->elts;
        for (i = 0; i < gmcf->sentinels->nelts; i++) {
            sn[i].connect_timeout = srv->connect_timeout;
            sn[i].read_timeout = srv->read_timeout;
#if (NGX_SSL)
            sn[i].ssl = srv->ssl;
#endif
            sn[i].tls_verify = srv->tls_verify;
            sn[i].tls_name = srv->tls_name;
        }
    }

    return NGX_CONF_OK;
}


/*
 * env_gateway_redis_cluster SEED [SEED...] [read_from=primary|replica]
 *     [the parameters of env_gateway_redis, db= excepted];
 * the seeds are where the slot map is first asked, and the invalidation
 * subscriber's failover list.  Every node is reached with the parameters
 * given here.
 */
static char *
ngx_env_gateway_cluster_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_env_gateway_main_conf_t  *gmcf = conf;

    char                      *rv;
    ngx_str_t                 *value;
    ngx_uint_t                 i, j, first;
    ngx_env_gateway_server_t  *srv;

    value = cf->args->elts;

    if (gmcf->cluster) {
        return "is duplicate";
    }

    if (gmcf->servers || gmcf->sentinels) {
        return "cannot be mixed with env_gateway_redis";
    }

    gmcf->servers = ngx_array_create(cf->pool, 3,
                                     sizeof(ngx_env_gateway_server_t));
    if (gmcf->servers == NULL) {
        return NGX_CONF_ERROR;
    }

    gmcf->cluster = 1;

    for (first = 1; first < cf->args->nelts; first++) {
        if (ngx_strlchr(value[first].data,
                        value[first].data + value[first].len, '=')
            || (value[first].len == 3
                && ngx_strncmp(value[first].data, "tls", 3) == 0))
        {
            break;
        }

        srv = ngx_array_push(gmcf->servers);
        if (srv == NULL) {
            return NGX_CONF_ERROR;
        }

        rv = ngx_env_gateway_parse_server(cf, &value[first], srv,
                                          NGX_ENVGW_REDIS_PORT);
        if (rv != NGX_CONF_OK) {
            return rv;
        }

        if (srv->sockaddr->sa_family == AF_UNIX) {
            return ngx_env_gateway_conf_error(cf, "has \"%V\": cluster "
                                              "nodes are reached over TCP",
                                              &value[first]);
        }
    }

    if (gmcf->servers->nelts == 0) {
        return "needs at least one seed node address";
    }

    /* read_from= is this directive's own; the rest are env_gateway_redis' */
    for (i = first; i < cf->args->nelts; i++) {
        if (ngx_strncmp(value[i].data, "read_from=", 10) != 0) {
            continue;
        }

        if (value[i].len == 17
            && ngx_strncmp(value[i].data + 10, "primary", 7) == 0)
        {
            gmcf->cluster_replica = 0;

        } else if (value[i].len == 17
                   && ngx_strncmp(value[i].data + 10, "replica", 7) == 0)
        {
            gmcf->cluster_replica = 1;

        } else {
            return ngx_env_gateway_conf_error(cf, "has an invalid value in "
                                              "\"%V\": primary or replica",
                                              &value[i]);
        }

        for (j = i; j + 1 < cf->args->nelts; j++) {
            value[j] = value[j + 1];
        }

        cf->args->nelts--;
        i--;
    }

    srv = gmcf->servers->elts;

    rv = ngx_env_gateway_redis_params(cf, gmcf, &srv[0], first);
    if (rv != NGX_CONF_OK) {
        return rv;
    }

    if (srv[0].db >= 0) {
        return "cannot take db=: a cluster has database 0 only";
    }

    for (i = 1; i < gmcf->servers->nelts; i++) {
        srv[i].password = srv[0].password;
        srv[i].connect_timeout = srv[0].connect_timeout;
        srv[i].read_timeout = srv[0].read_timeout;
        srv[i].username = srv[0].username;
#if (NGX_SSL)
        srv[i].ssl = srv[0].ssl;
#endif
        srv[i].tls_name = srv[0].tls_name;
        srv[i].tls_verify = srv[0].tls_verify;
    }

    return NGX_CONF_OK;
}


/*
 * The parameters of an env_gateway_redis or env_gateway_redis_cluster line
 * from value[first] on, into srv: password=, db=, timeouts, max_record=,
 * and the TLS and ACL ones (_tls.c).
 */
static char *
ngx_env_gateway_redis_params(ngx_conf_t *cf,
    ngx_env_gateway_main_conf_t *gmcf, ngx_env_gateway_server_t *srv,
    ngx_uint_t first)
{
    u_char                      *p;
    ssize_t                      size;
    ngx_int_t                    rc;
    ngx_str_t                   *value, s;
    ngx_uint_t                   i;
    ngx_env_gateway_tls_conf_t   tc;

    value = cf->args->elts;

    ngx_memzero(&tc, sizeof(ngx_env_gateway_tls_conf_t));
    tc.verify = -1;

    for (i = first; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "password=", 9) == 0) {
            srv->password.data = value[i].data + 9;
            srv->password.len = value[i].len - 9;

            if (srv->password.len == 0) {
                goto invalid;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "db=", 3) == 0) {
            srv->db = ngx_atoi(value[i].data + 3, value[i].len - 3);

            if (srv->db == NGX_ERROR) {
                goto invalid;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "connect_timeout=", 16) == 0) {
            s.data = value[i].data + 16;
            s.len = value[i].len - 16;

            srv->connect_timeout = ngx_parse_time(&s, 0);
            if (srv->connect_timeout == (ngx_msec_t) NGX_ERROR
                || srv->connect_timeout == 0)
            {
                goto invalid;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "read_timeout=", 13) == 0) {
            s.data = value[i].data + 13;
            s.len = value[i].len - 13;

            srv->read_timeout = ngx_parse_time(&s, 0);
            if (srv->read_timeout == (ngx_msec_t) NGX_ERROR
                || srv->read_timeout == 0)
            {
                goto invalid;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "max_record=", 11) == 0) {
            s.data = value[i].data + 11;
            s.len = value[i].len - 11;

            size = ngx_parse_size(&s);

            if (size == NGX_ERROR || size < NGX_ENVGW_MAX_RECORD_MIN
                || size > NGX_ENVGW_MAX_RECORD_MAX)
            {
                return ngx_env_gateway_conf_error(cf, "has an invalid value "
                                                  "in \"%V\": a size from "
                                                  "1k to 512m, like 1m",
                                                  &value[i]);
            }

            if (gmcf->max_record && gmcf->max_record != (size_t) size) {
                return ngx_env_gateway_conf_error(cf, "has \"%V\" where an "
                                                  "earlier line has "
                                                  "max_record=%uz: one "
                                                  "limit for all servers",
                                                  &value[i],
                                                  gmcf->max_record);
            }

            gmcf->max_record = size;
            continue;
        }

        /* tls, tls_*=, username=, password_file= (_tls.c) */
        rc = ngx_env_gateway_tls_param(cf, &tc, srv, &value[i]);

        if (rc == NGX_OK) {
            continue;
        }

        if (rc == NGX_ERROR) {
            return NGX_CONF_ERROR;
        }

        /*
         * A misspelled "password=", or a password after a space: an
         * unknown parameter is named up to its "=", never by its value.
         */
        p = ngx_strlchr(value[i].data, value[i].data + value[i].len, '=');

        if (p == NULL) {
            return ngx_env_gateway_conf_error(cf, "has an unknown parameter "
                                              "(not shown: it could be a "
                                              "password); password=, "
                                              "password_file=, username=, "
                                              "db=, connect_timeout=, "
                                              "read_timeout=, max_record=, "
                                              "tls, tls_verify=, tls_ca=, "
                                              "tls_name=, tls_cert=, "
                                              "tls_key= are known");
        }

        s.data = value[i].data;
        s.len = p + 1 - value[i].data;

        return ngx_env_gateway_conf_error(cf, "has an unknown parameter "
                                          "\"%V\" (its value not shown): "
                                          "password=, "
                                          "password_file=, username=, db=, "
                                          "connect_timeout=, read_timeout=, "
                                          "max_record=, tls, tls_verify=, "
                                          "tls_ca=, tls_name=, tls_cert=, "
                                          "tls_key= are known", &s);
    }

    if (ngx_env_gateway_tls_conf(cf, &tc, srv) != NGX_CONF_OK) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;

invalid:

    return ngx_env_gateway_conf_error(cf, "has an invalid value in \"%V\": "
                                      "a time like 500ms or 1s, a database "
                                      "number, a non-empty password",
                                      &value[i]);
}

/*
 * env_gateway_cache zone=name:size [ttl=30s] [negative_ttl=5s]
 *     [stale_if_error=0]
 */
static char *
ngx_env_gateway_cache_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_env_gateway_main_conf_t  *gmcf = conf;

    u_char      *p;
    size_t       size;
    ngx_str_t   *value, name, s;
    ngx_uint_t   i;
    ngx_msec_t  *t;

    if (gmcf->cache_ttl != NGX_CONF_UNSET_MSEC) {
        return "is duplicate";
    }

    value = cf->args->elts;

    gmcf->cache_ttl = NGX_ENVGW_CACHE_TTL;
    gmcf->cache_negative_ttl = NGX_ENVGW_CACHE_NEGATIVE_TTL;
    gmcf->cache_stale = 0;
    ngx_str_null(&name);
    size = 0;

    for (i = 1; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "zone=", 5) == 0) {
            name.data = value[i].data + 5;
            p = (u_char *) ngx_strchr(name.data, ':');

            if (p == NULL) {
                return ngx_env_gateway_conf_error(cf, "has no size in \"%V\": "
                                                  "zone=name:size", &value[i]);
            }

            name.len = p - name.data;

            if (name.len == 0) {
                return ngx_env_gateway_conf_error(cf, "needs a zone name in "
                                                  "\"%V\"", &value[i]);
            }

            if (name.len >= 19
                && ngx_strncmp(name.data, "env_gateway_metrics", 19) == 0)
            {
                return ngx_env_gateway_conf_error(cf, "cannot use the zone "
                                                  "name \"%V\": the module's "
                                                  "counters use it", &name);
            }

            s.data = p + 1;
            s.len = value[i].data + value[i].len - s.data;

            size = ngx_parse_size(&s);

            if (size == (size_t) NGX_ERROR) {
                return ngx_env_gateway_conf_error(cf, "has an invalid size in "
                                                  "\"%V\"", &value[i]);
            }

            if (size < 8 * ngx_pagesize) {
                return ngx_env_gateway_conf_error(cf, "has a zone too small in "
                                                  "\"%V\": at least %uzk",
                                                  &value[i],
                                                  8 * ngx_pagesize / 1024);
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "ttl=", 4) == 0) {
            t = &gmcf->cache_ttl;
            s.data = value[i].data + 4;
            s.len = value[i].len - 4;

        } else if (ngx_strncmp(value[i].data, "negative_ttl=", 13) == 0) {
            t = &gmcf->cache_negative_ttl;
            s.data = value[i].data + 13;
            s.len = value[i].len - 13;

        } else if (ngx_strncmp(value[i].data, "stale_if_error=", 15) == 0) {
            t = &gmcf->cache_stale;
            s.data = value[i].data + 15;
            s.len = value[i].len - 15;

        } else {
            return ngx_env_gateway_conf_error(cf, "has an unknown parameter "
                                              "\"%V\": zone=, ttl=, "
                                              "negative_ttl=, stale_if_error= "
                                              "are known", &value[i]);
        }

        *t = ngx_parse_time(&s, 0);

        if (*t == (ngx_msec_t) NGX_ERROR) {
            return ngx_env_gateway_conf_error(cf, "has an invalid time in "
                                              "\"%V\"", &value[i]);
        }
    }

    if (name.len == 0) {
        return ngx_env_gateway_conf_error(cf, "needs a zone name in "
                                          "zone=name:size");
    }

    if (gmcf->cache_ttl == 0) {
        return ngx_env_gateway_conf_error(cf, "needs ttl above 0: leave the "
                                          "directive out for no cache");
    }

    if (ngx_env_gateway_cache_create(cf, gmcf, &name, size) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/* ------------------------------------------------------------------ */
/* init                                                                */

static ngx_int_t
ngx_env_gateway_postconfiguration(ngx_conf_t *cf)
{
    ngx_http_handler_pt          *h;
    ngx_http_core_main_conf_t    *cmcf;
    ngx_env_gateway_main_conf_t  *gmcf;

    gmcf = ngx_http_conf_get_module_main_conf(cf, ngx_env_gateway_module);

    if (!gmcf->used) {
        return NGX_OK;
    }

    if (gmcf->servers == NULL) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "\"env_gateway on\" needs \"env_gateway_redis\" in "
                      "the http block in %V:%ui",
                      &gmcf->used_file, gmcf->used_line);
        return NGX_ERROR;
    }

    if (ngx_env_gateway_metrics_create(cf) != NGX_OK) {
        return NGX_ERROR;
    }

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_ACCESS_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_env_gateway_access_handler;

    /* subrequests and "satisfy any" skip the access phase: check there */
    h = ngx_array_push(&cmcf->phases[NGX_HTTP_PRECONTENT_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_env_gateway_precontent_handler;

    if (ngx_env_gateway_credentials_init(cf) != NGX_OK) {
        return NGX_ERROR;
    }

    return ngx_env_gateway_limit_init(cf);
}


/*
 * The configuration is in use from here on (ngx_init_cycle calls
 * init_module once its listening sockets are open): the cache zone learns
 * it is the newest, for the handover of invalidations at a reload.
 */
static ngx_int_t
ngx_env_gateway_init_module(ngx_cycle_t *cycle)
{
    ngx_env_gateway_main_conf_t  *gmcf;

    gmcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_env_gateway_module);

    if (gmcf != NULL && gmcf->cache_zone != NULL) {
        ngx_env_gateway_cache_generation(gmcf->cache_zone);
    }

    return NGX_OK;
}


static ngx_int_t
ngx_env_gateway_init_process(ngx_cycle_t *cycle)
{
    ngx_env_gateway_main_conf_t  *gmcf;

    /* workers only: never the master, the cache manager or the loader */
    if (ngx_process != NGX_PROCESS_WORKER
        && ngx_process != NGX_PROCESS_SINGLE)
    {
        return NGX_OK;
    }

    gmcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_env_gateway_module);

    if (gmcf == NULL || !gmcf->used || gmcf->servers == NULL) {
        return NGX_OK;
    }

    ngx_env_gateway_fetch_init(gmcf);

    if (ngx_env_gateway_limit_init_worker(cycle, gmcf) != NGX_OK) {
        return NGX_ERROR;
    }

    if (ngx_env_gateway_redis_init_worker(cycle, gmcf) != NGX_OK) {
        return NGX_ERROR;
    }

    return ngx_env_gateway_last_used_init(cycle, gmcf);
}


static void
ngx_env_gateway_exit_process(ngx_cycle_t *cycle)
{
    ngx_env_gateway_redis_exit_worker();
}
