/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * env_gateway: an account's upstream credential put into the request: the
 * header, basic or query value built from the decrypted fields by the
 * integration's declaration, the header in the request's list, the
 * argument in $env_gateway_upstream_url; and what keeps them to the
 * upstream alone: client headers of the name hidden, log lines and
 * responses' caching kept from them.
 */

#include "ngx_env_gateway_credentials.h"


static ngx_uint_t ngx_env_gateway_cred_name_is(ngx_str_t *key,
    ngx_str_t *name);
static ngx_table_elt_t *ngx_env_gateway_cred_inherited(ngx_http_request_t *r,
    ngx_table_elt_t *h);
static ngx_int_t ngx_env_gateway_cred_scrub(ngx_http_request_t *r,
    ngx_uint_t own);
static u_char *ngx_env_gateway_cred_log_error(ngx_http_request_t *r,
    ngx_http_request_t *sr, u_char *buf, size_t len);
static ngx_int_t ngx_env_gateway_cred_header_filter(ngx_http_request_t *r);


/* nginx's error log context handler, which ours wraps */
static ngx_http_log_handler_pt  ngx_env_gateway_log_error_next;

static ngx_http_output_header_filter_pt  ngx_env_gateway_cred_next_filter;


/* ------------------------------------------------------------------ */
/* building the values                                                 */

static ngx_env_gateway_cred_field_t *
ngx_env_gateway_cred_field(ngx_array_t *fields, u_char *name, size_t len)
{
    ngx_uint_t                     i;
    ngx_env_gateway_cred_field_t  *f;

    f = fields->elts;

    for (i = 0; i < fields->nelts; i++) {
        if (f[i].name.len == len
            && ngx_strncmp(f[i].name.data, name, len) == 0)
        {
            return &f[i];
        }
    }

    return NULL;
}


/*
 * The format with each "{field}" replaced by the field's value, measured
 * then written.  NGX_DECLINED: a field is missing (*missing names it);
 * NGX_ABORT: with "header", a value (or the format) has a control
 * character (CR, LF, NUL ...) that must never reach a header.
 */
ngx_int_t
ngx_env_gateway_cred_format(ngx_pool_t *pool, ngx_str_t *tmpl,
    ngx_array_t *fields, ngx_uint_t header, ngx_str_t *out,
    ngx_str_t *missing)
{
    u_char                        *p, *last, *close, *v;
    ngx_int_t                      rc;
    ngx_env_gateway_text_t         t;
    ngx_env_gateway_cred_field_t  *f;

    ngx_env_gateway_text_init(&t);

    do {
        p = tmpl->data;
        last = p + tmpl->len;

        while (p < last) {
            close = (*p == '{') ? ngx_strlchr(p, last, '}') : NULL;

            if (close == NULL) {
                /* a checked format has none; a header never gets one */
                if (header && ((*p < 0x20 && *p != '\t') || *p == 0x7f)) {
                    ngx_str_null(missing);
                    return NGX_ABORT;
                }

                ngx_env_gateway_text_bytes(&t, p, 1);
                p++;
                continue;
            }

            f = ngx_env_gateway_cred_field(fields, p + 1, close - p - 1);

            if (f == NULL) {
                missing->data = p + 1;
                missing->len = close - p - 1;
                return NGX_DECLINED;
            }

            if (header) {
                for (v = f->value.data; v < f->value.data + f->value.len; v++)
                {
                    if ((*v < 0x20 && *v != '\t') || *v == 0x7f) {
                        *missing = f->name;
                        return NGX_ABORT;
                    }
                }
            }

            ngx_env_gateway_text_str(&t, &f->value);
            p = close + 1;
        }

    } while ((rc = ngx_env_gateway_text_next(&t, pool)) == NGX_AGAIN);

    if (rc != NGX_OK) {
        return NGX_ERROR;
    }

    ngx_env_gateway_text_string(&t, out);

    return NGX_OK;
}


/*
 * What goes upstream, from the integration's declaration and the
 * decrypted fields: cred->value (a header's) or cred->url (the upstream
 * URL with the argument).  Every buffer holding a credential is in
 * "pool" and registered to be wiped.  NGX_DECLINED: unusable, *why says
 * why (naming no value).
 */
ngx_int_t
ngx_env_gateway_cred_build(ngx_pool_t *pool,
    ngx_env_gateway_record_t *integration, ngx_array_t *fields,
    ngx_str_t *url, ngx_env_gateway_cred_t *cred, const char **why)
{
    u_char                  *p, *last;
    size_t                   n;
    ngx_int_t                rc;
    ngx_str_t                user, pass, pair, value, enc, missing, *name;
    ngx_uint_t               flags;
    ngx_env_gateway_text_t   t;

    flags = integration->flags;
    name = &integration->fields[NGX_ENVGW_INT_AUTH_NAME];

    cred->name = *name;

    if (flags & NGX_ENVGW_INT_AUTH_BASIC) {
        rc = ngx_env_gateway_cred_format(pool,
                 &integration->fields[NGX_ENVGW_INT_AUTH_FORMAT], fields, 1,
                 &user, &missing);

        if (rc == NGX_OK) {
            if (ngx_env_gateway_wipe_later(pool, &user) != NGX_OK) {
                return NGX_ERROR;
            }

            rc = ngx_env_gateway_cred_format(pool,
                     &integration->fields[NGX_ENVGW_INT_AUTH_FORMAT2], fields,
                     1, &pass, &missing);
        }

        if (rc == NGX_OK) {
            if (ngx_env_gateway_wipe_later(pool, &pass) != NGX_OK) {
                return NGX_ERROR;
            }

            if (ngx_strlchr(user.data, user.data + user.len, ':')) {
                *why = "the basic username has a \":\"";
                return NGX_DECLINED;
            }

            /* "user:pass", then "Basic " and its base64 */

            ngx_env_gateway_text_init(&t);

            do {
                ngx_env_gateway_text_str(&t, &user);
                ngx_env_gateway_text_literal(&t, ":");
                ngx_env_gateway_text_str(&t, &pass);
            } while ((rc = ngx_env_gateway_text_next(&t, pool)) == NGX_AGAIN);

            if (rc != NGX_OK) {
                return NGX_ERROR;
            }

            ngx_env_gateway_text_string(&t, &pair);

            value.len = sizeof("Basic ") - 1
                        + ngx_base64_encoded_length(pair.len);
            value.data = ngx_pnalloc(pool, value.len);
            if (value.data == NULL) {
                OPENSSL_cleanse(pair.data, pair.len);
                return NGX_ERROR;
            }

            enc.data = ngx_cpymem(value.data, "Basic ", sizeof("Basic ") - 1);
            ngx_encode_base64(&enc, &pair);
            OPENSSL_cleanse(pair.data, pair.len);

            cred->value = value;

            if (enc.data + enc.len != value.data + value.len) {
                return NGX_ERROR;
            }

            return ngx_env_gateway_wipe_later(pool, &cred->value);
        }

    } else {
        rc = ngx_env_gateway_cred_format(pool,
                 &integration->fields[NGX_ENVGW_INT_AUTH_FORMAT], fields,
                 flags & NGX_ENVGW_INT_AUTH_HEADER, &value, &missing);

        if (rc == NGX_OK && (flags & NGX_ENVGW_INT_AUTH_HEADER)) {
            cred->value = value;
            return ngx_env_gateway_wipe_later(pool, &cred->value);
        }

        if (rc == NGX_OK) {
            /* the URL, then "?" or "&", name=, the value escaped */

            if (ngx_env_gateway_wipe_later(pool, &value) != NGX_OK) {
                return NGX_ERROR;
            }

            n = ngx_escape_uri(NULL, value.data, value.len, NGX_ESCAPE_ARGS);

            last = url->data + url->len;

            cred->url.len = url->len + 1 + name->len + 1 + value.len + 2 * n;
            cred->url.data = ngx_pnalloc(pool, cred->url.len);
            if (cred->url.data == NULL) {
                return NGX_ERROR;
            }

            p = ngx_cpymem(cred->url.data, url->data, url->len);
            *p++ = ngx_strlchr(url->data, last, '?') ? '&' : '?';
            p = ngx_cpymem(p, name->data, name->len);
            *p++ = '=';
            p = (u_char *) ngx_escape_uri(p, value.data, value.len,
                                          NGX_ESCAPE_ARGS);

            if ((size_t) (p - cred->url.data) != cred->url.len) {
                return NGX_ERROR;
            }

            return ngx_env_gateway_wipe_later(pool, &cred->url);
        }
    }

    if (rc == NGX_DECLINED) {
        *why = "a field the format names is missing";
        return NGX_DECLINED;
    }

    if (rc == NGX_ABORT) {
        *why = "a field has control characters";
        return NGX_DECLINED;
    }

    return NGX_ERROR;
}


/*
 * After the identity headers: the credential header replaces every client
 * header of its name (any case); without one, a header set by an earlier
 * check of this request (before an internal redirect) is hidden.
 */
ngx_int_t
ngx_env_gateway_credentials_inject(ngx_http_request_t *r,
    ngx_env_gateway_ctx_t *ctx)
{
    ngx_uint_t               i;
    ngx_list_part_t         *part;
    ngx_table_elt_t         *h;
    ngx_env_gateway_cred_t  *cred;

    /*
     * A subrequest has its own list by now (_boundary.c): the credential
     * header of a request it was made from is not for its upstream.
     */
    if (r != r->main
        && ngx_env_gateway_cred_scrub(r, ctx->own_headers) != NGX_OK)
    {
        return NGX_ERROR;
    }

    cred = ctx->cred;

    if (cred == NULL) {
        return NGX_OK;
    }

    if (cred->value.len == 0) {
        if (cred->header) {
            ngx_env_gateway_hide(r, cred->header);
            cred->header = NULL;
        }

        return NGX_OK;
    }

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

        if (&h[i] != cred->header
            && ngx_env_gateway_cred_name_is(&h[i].key, &cred->name))
        {
            ngx_log_debug0(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                           "env_gateway: client header named like the "
                           "credential header hidden");

            ngx_env_gateway_hide(r, &h[i]);
        }
    }

    h = cred->header;

    if (h == NULL) {
        h = ngx_list_push(&r->headers_in.headers);
        if (h == NULL) {
            return NGX_ERROR;
        }

        cred->header = h;
    }

    h->key = cred->name;
    h->lowcase_key = ngx_pnalloc(r->pool, cred->name.len);
    if (h->lowcase_key == NULL) {
        return NGX_ERROR;
    }

    ngx_strlow(h->lowcase_key, cred->name.data, cred->name.len);

    /* 0: no $http_ variable finds it; the proxy module sends it */
    h->hash = 0;
    h->value = cred->value;
#if (nginx_version >= 1023000)
    h->next = NULL;
#endif

    return NGX_OK;
}


/*
 * $env_gateway_upstream_url.  With a query credential, the first read by
 * the upstream module (r->upstream exists: proxy_pass evaluating its URL)
 * gets the URL with the argument; every other read, before or after (a
 * log, a header), the URL without it.
 */
ngx_int_t
ngx_env_gateway_upstream_url_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_str_t               *s;
    ngx_env_gateway_ctx_t   *ctx;
    ngx_env_gateway_cred_t  *cred;

    ctx = ngx_env_gateway_get_ctx(r);

    if (ctx == NULL || ctx->refusal != NGX_ENVGW_OK
        || ctx->upstream_url.len == 0)
    {
        v->not_found = 1;
        return NGX_OK;
    }

    s = &ctx->upstream_url;
    cred = ctx->cred;

    if (cred && cred->url.len && r->upstream && !cred->url_given) {
        cred->url_given = 1;

        /*
         * nginx names the upstream URI in every error log line about the
         * upstream ("upstream: ..."): the request's lines go through our
         * handler, which leaves the query out.  A request whose log
         * lines cannot (another module's handler) is not sent at all:
         * never without its credential, never with it in the log.
         */
        if (r->main->log_handler != ngx_env_gateway_cred_log_error) {
            if (ngx_env_gateway_log_error_next == NULL) {
                ngx_env_gateway_log_error_next = r->main->log_handler;
            }

            if (r->main->log_handler == ngx_env_gateway_log_error_next) {
                r->main->log_handler = ngx_env_gateway_cred_log_error;
            }
        }

        if (r->main->log_handler == ngx_env_gateway_cred_log_error) {
            ngx_log_debug0(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                           "env_gateway: upstream URL with the credential "
                           "argument given to the upstream module");

            s = &cred->url;

        } else {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "env_gateway: the error log of this request is "
                          "not the module's to redact: a request with the "
                          "credential argument is not sent");
            return NGX_ERROR;
        }
    }

    v->len = s->len;
    v->data = s->data;
    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;

    return NGX_OK;
}


/* ------------------------------------------------------------------ */
/* nowhere else                                                        */

/*
 * A client header named like the credential header, as backends read
 * names: any case, and every byte but a letter or digit alike ('_' for
 * '-': nginx's $http_, CGI, PHP).
 */
static ngx_uint_t
ngx_env_gateway_cred_name_is(ngx_str_t *key, ngx_str_t *name)
{
    u_char      a, b;
    ngx_uint_t  i;

    if (key->len != name->len) {
        return 0;
    }

    for (i = 0; i < name->len; i++) {
        a = ngx_tolower(key->data[i]);
        b = ngx_tolower(name->data[i]);

        if (!((a >= 'a' && a <= 'z') || (a >= '0' && a <= '9'))) {
            a = '-';
        }

        if (!((b >= 'a' && b <= 'z') || (b >= '0' && b <= '9'))) {
            b = '-';
        }

        if (a != b) {
            return 0;
        }
    }

    return 1;
}


/*
 * The credential header of a request this subrequest was made from (it
 * shares or copied their header list): the element itself or a copy.
 */
static ngx_table_elt_t *
ngx_env_gateway_cred_inherited(ngx_http_request_t *r, ngx_table_elt_t *h)
{
    ngx_table_elt_t        *c;
    ngx_http_request_t     *p;
    ngx_env_gateway_ctx_t  *pctx;

    for (p = r->parent; p; p = p->parent) {
        pctx = ngx_env_gateway_get_ctx(p);

        if (pctx == NULL || pctx->cred == NULL || pctx->cred->header == NULL)
        {
            continue;
        }

        c = pctx->cred->header;

        if (h == c
            || (h->key.data == c->key.data && h->value.data == c->value.data))
        {
            return c;
        }
    }

    return NULL;
}


/*
 * A subrequest gets no credential header of the requests it was made
 * from: hidden in a list of its own ("own"), or its shared list replaced
 * by a copy without it (the parent's list is left as it is).
 */
static ngx_int_t
ngx_env_gateway_cred_scrub(ngx_http_request_t *r, ngx_uint_t own)
{
    ngx_uint_t        i, found;
    ngx_list_t        list;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h, *copy;

    found = 0;

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

        if (ngx_env_gateway_cred_inherited(r, &h[i])) {
            found++;

            if (own) {
                ngx_env_gateway_hide(r, &h[i]);
            }
        }
    }

    if (found == 0 || own) {
        return NGX_OK;
    }

    ngx_log_debug0(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "env_gateway: subrequest without the credential header "
                   "of its parent");

    if (ngx_list_init(&list, r->pool, 20, sizeof(ngx_table_elt_t)) != NGX_OK) {
        return NGX_ERROR;
    }

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

        if (ngx_env_gateway_cred_inherited(r, &h[i])) {
            continue;
        }

        copy = ngx_list_push(&list);
        if (copy == NULL) {
            return NGX_ERROR;
        }

        *copy = h[i];
    }

    r->headers_in.headers = list;

    /* "last" must point into the request's list, not at the local copy */
    if (list.last == &list.part) {
        r->headers_in.headers.last = &r->headers_in.headers.part;
    }

    r->headers_in.authorization = NULL;

    return NGX_OK;
}


/*
 * A request in a location without the gateway (an error_page, a named
 * location, a mirror or auth_request subrequest, post_action): nothing of
 * the credentials of a route location it came from or was made from goes
 * to that location's upstream.
 */
ngx_int_t
ngx_env_gateway_credentials_leave(ngx_http_request_t *r)
{
    ngx_env_gateway_ctx_t   *ctx;
    ngx_env_gateway_cred_t  *cred;

    if (r != r->main) {
        return ngx_env_gateway_cred_scrub(r, 0);
    }

    ctx = ngx_env_gateway_get_ctx(r);

    if (ctx == NULL || ctx->cred == NULL) {
        return NGX_OK;
    }

    cred = ctx->cred;

    if (cred->header) {
        ngx_log_debug0(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "env_gateway: credential header hidden in a location "
                       "without the gateway");

        ngx_env_gateway_hide(r, cred->header);
        cred->header = NULL;
    }

    ngx_env_gateway_credentials_clear(ctx);

    return NGX_OK;
}


/*
 * The error log context of a request that gave an upstream module a URL
 * with the credential argument: nginx's, with the upstream URI (of the
 * request or of any of its subrequests, after any internal redirect) up
 * to its query.
 */
static u_char *
ngx_env_gateway_cred_log_error(ngx_http_request_t *r, ngx_http_request_t *sr,
    u_char *buf, size_t len)
{
    u_char               *p, *q;
    ngx_str_t             uri;
    ngx_http_upstream_t  *u;

    u = sr->upstream;

    if (u == NULL || u->uri.len == 0) {
        return ngx_env_gateway_log_error_next(r, sr, buf, len);
    }

    uri = u->uri;

    q = ngx_strlchr(uri.data, uri.data + uri.len, '?');
    if (q) {
        u->uri.len = q - uri.data;
    }

    p = ngx_env_gateway_log_error_next(r, sr, buf, len);

    u->uri = uri;

    return p;
}


/*
 * postconfiguration, with env_gateway_secret_keys: the answer to a request
 * sent with an account's credentials is never stored in nginx's cache
 * (proxy_cache): the upstream URL, the cache key, is the same for every
 * account of an integration (a query credential would be in the key, and
 * on disk).
 */
ngx_int_t
ngx_env_gateway_credentials_init(ngx_conf_t *cf)
{
    ngx_env_gateway_main_conf_t  *gmcf;

    gmcf = ngx_http_conf_get_module_main_conf(cf, ngx_env_gateway_module);

    if (gmcf->secret_keys == NULL) {
        return NGX_OK;
    }

    ngx_env_gateway_cred_next_filter = ngx_http_top_header_filter;
    ngx_http_top_header_filter = ngx_env_gateway_cred_header_filter;

    return NGX_OK;
}


static ngx_int_t
ngx_env_gateway_cred_header_filter(ngx_http_request_t *r)
{
    ngx_env_gateway_ctx_t  *ctx;

    if (r->upstream == NULL) {
        return ngx_env_gateway_cred_next_filter(r);
    }

    ctx = ngx_http_get_module_ctx(r, ngx_env_gateway_module);

    if (ctx && ctx->cred && (ctx->cred->header || ctx->cred->url_given)
        && r->upstream->cacheable)
    {
        ngx_log_debug0(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "env_gateway: an answer to a request with "
                       "credentials is not cached");

        r->upstream->cacheable = 0;
    }

    return ngx_env_gateway_cred_next_filter(r);
}
