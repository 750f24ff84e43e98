/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * env_gateway: the request boundary.  What the backend acts on is what the
 * gateway checked, so every part of a request that nginx and a backend
 * could read differently is read here once, and ambiguity is refused:
 *
 *   path       dot segments (literal or percent-encoded, also "..;"),
 *              encoded '/' or '\', a backslash or a NUL: refused;
 *   headers    names compared in any case with '_' and '-' taken as equal
 *              (nginx's $http_NAME and "underscores_in_headers on" do so,
 *              PHP's $_SERVER and CGI do so): the credential header, the
 *              X-Environment-Id input and the account header are found in
 *              every spelling, repeats refused; every client header named
 *              like an identity header or a credential never goes upstream;
 *   query      one pass with the arguments iterator: consumed and
 *              credential names byte-identical or refused (_args.c);
 *   cookies    a credential cookie given twice is refused.
 *
 * The identity headers the gateway owns are added to the upstream request
 * from what it checked (ngx_env_gateway_identity()).
 */

#include "ngx_env_gateway.h"


/* the identity headers, in the order of NGX_ENVGW_ID_* */
static ngx_str_t  ngx_env_gateway_identity_names[] = {
    ngx_string("X-Environment-Id"),
    ngx_string("X-Environment"),
    ngx_string("X-Team-Id"),
    ngx_string("X-Token-Id"),
    ngx_string("X-Integrated-Account-Id"),
    ngx_string("X-Tenant-Id")
};

static ngx_str_t  ngx_env_gateway_identity_lc[] = {
    ngx_string("x-environment-id"),
    ngx_string("x-environment"),
    ngx_string("x-team-id"),
    ngx_string("x-token-id"),
    ngx_string("x-integrated-account-id"),
    ngx_string("x-tenant-id")
};

static size_t  ngx_env_gateway_identity_field[] = {
    offsetof(ngx_env_gateway_ctx_t, environment_id),
    offsetof(ngx_env_gateway_ctx_t, environment),
    offsetof(ngx_env_gateway_ctx_t, team_id),
    offsetof(ngx_env_gateway_ctx_t, token_id),
    offsetof(ngx_env_gateway_ctx_t, account_id),
    offsetof(ngx_env_gateway_ctx_t, tenant_id)
};

/* headers that name another verb to frameworks (Rails, Express, Laravel) */
static ngx_str_t  ngx_env_gateway_method_override[] = {
    ngx_string("x-http-method-override"),
    ngx_string("x-http-method"),
    ngx_string("x-method-override")
};

/*
 * ngx_hash_key() of the names above and of "keep-alive", computed once:
 * every passed request sets its identity headers and hides its credential
 */
static ngx_uint_t  ngx_env_gateway_identity_hash[NGX_ENVGW_NIDENTITY];
static ngx_uint_t  ngx_env_gateway_hidden_hash;
static ngx_uint_t  ngx_env_gateway_hashed;

static ngx_str_t  ngx_env_gateway_authorization = ngx_string("authorization");
static ngx_str_t  ngx_env_gateway_cookie = ngx_string("cookie");
static ngx_str_t  ngx_env_gateway_content_encoding =
    ngx_string("content-encoding");


/*
 * Header names compare in any case with '_', '-' and every other byte that
 * is not a letter or digit equal (nginx's $http_NAME takes '_' for '-',
 * CGI and PHP take any such byte for '_', "ignore_invalid_headers off" lets
 * them through).  "name" is lowercase with '-' (as
 * ngx_env_gateway_source() stores it).
 */
static ngx_uint_t
ngx_env_gateway_header_is(ngx_table_elt_t *h, ngx_str_t *name)
{
    u_char      c;
    ngx_uint_t  i;

    if (h->key.len != name->len || name->len == 0) {
        return 0;
    }

    for (i = 0; i < name->len; i++) {
        c = ngx_tolower(h->key.data[i]);

        /* CGI and PHP read every byte but a letter or digit as '_' */
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))) {
            c = '-';
        }

        if (c != ngx_tolower(name->data[i])) {
            return 0;
        }
    }

    return 1;
}


/* ------------------------------------------------------------------ */
/* path                                                                */

/*
 * A raw path segment that some server resolves as "." or "..": literal,
 * percent-encoded in any mix ("%2e.", ".%2E"), or with a ";" parameter
 * ("..;" is ".." for Java servlet containers).  Also read for the paths
 * of integration records (_records.c).
 */
ngx_uint_t
ngx_env_gateway_dot_segment(u_char *p, u_char *last)
{
    ngx_uint_t  dots;

    dots = 0;

    while (p < last && *p != ';') {
        if (*p == '.') {
            p++;

        } else if (last - p >= 3 && p[0] == '%' && p[1] == '2'
                   && (p[2] == 'e' || p[2] == 'E'))
        {
            p += 3;

        } else {
            return 0;
        }

        if (++dots > 2) {
            return 0;
        }
    }

    return dots > 0;
}


/*
 * NGX_OK: the raw path means one thing; NGX_DECLINED: nginx and a backend
 * may resolve it to different resources (the caller refuses it).
 */
ngx_int_t
ngx_env_gateway_path_check(ngx_http_request_t *r)
{
    u_char  *p, *last, *seg;

    if (r->unparsed_uri.len == 0) {
        return NGX_OK;
    }

    p = r->unparsed_uri.data;
    last = p + r->unparsed_uri.len;

    /*
     * A request target has no fragment (RFC 9112, 3.2): nginx ends the
     * path at '#', other servers read on past it.
     */
    /* memchr(), not ngx_strlchr()'s byte loop: every request's target */
    if (memchr(p, '#', last - p)) {
        return NGX_DECLINED;
    }

    /* the path ends at the query */
    seg = memchr(p, '?', last - p);
    if (seg) {
        last = seg;
    }

    seg = p;

    for ( /* void */ ; p < last; p++) {

        switch (*p) {

        case '\0':
        case '\\':
            return NGX_DECLINED;

        case '%':
            if (last - p >= 3) {
                if ((p[1] == '2' && (p[2] == 'f' || p[2] == 'F'))
                    || (p[1] == '5' && (p[2] == 'c' || p[2] == 'C'))
                    || (p[1] == '0' && p[2] == '0'))
                {
                    return NGX_DECLINED;
                }
            }
            break;

        case '/':
            if (ngx_env_gateway_dot_segment(seg, p)) {
                return NGX_DECLINED;
            }

            seg = p + 1;
            break;

        default:
            if (*p < 0x20 || *p == 0x7f) {
                return NGX_DECLINED;
            }
        }
    }

    if (ngx_env_gateway_dot_segment(seg, last)) {
        return NGX_DECLINED;
    }

    return NGX_OK;
}


/* ------------------------------------------------------------------ */
/* headers                                                             */

/*
 * Remember a client header for ngx_env_gateway_identity(): one that must
 * never reach the upstream ("list" is ctx->hide), or a Cookie header whose
 * credential cookies are dropped (ctx->cookies).
 */
static ngx_int_t
ngx_env_gateway_remember(ngx_http_request_t *r, ngx_array_t **list,
    ngx_table_elt_t *h)
{
    ngx_table_elt_t  **p;

    if (*list == NULL) {
        *list = ngx_array_create(r->pool, 4, sizeof(ngx_table_elt_t *));
        if (*list == NULL) {
            return NGX_ERROR;
        }
    }

    p = ngx_array_push(*list);
    if (p == NULL) {
        return NGX_ERROR;
    }

    *p = h;

    return NGX_OK;
}


/*
 * What a cookie pair ("name=value", without the ';') is to the gateway:
 * 1 the configured credential cookie, 2 a cookie named like a credential
 * argument (access_token, the configured token argument), 0 neither.
 * Names are read as backends read them: whitespace around the name
 * dropped (nginx's $cookie_NAME skips spaces before '=', qs and Python
 * trim), then the argument-name rules (_args.c: PHP's '.', ' ', '[',
 * case, percent-encoding).
 */
static ngx_uint_t
ngx_env_gateway_cookie_kind(u_char *start, u_char *end,
    ngx_env_gateway_loc_conf_t *glcf)
{
    u_char                 *eq, *last;
    ngx_env_gateway_arg_t   arg;

    static ngx_str_t  access_token = ngx_string("access_token");

    while (start < end && (*start == ' ' || *start == '\t')) {
        start++;
    }

    eq = ngx_strlchr(start, end, '=');
    if (eq == NULL) {
        return 0;
    }

    last = eq;

    while (last > start && (last[-1] == ' ' || last[-1] == '\t')) {
        last--;
    }

    ngx_memzero(&arg, sizeof(ngx_env_gateway_arg_t));
    arg.name.data = start;
    arg.name.len = last - start;
    arg.raw = arg.name;

    if (glcf->token_cookie.len
        && ngx_env_gateway_arg_match(&arg, &glcf->token_cookie)
           != NGX_ENVGW_ARG_OTHER)
    {
        return 1;
    }

    if (ngx_env_gateway_arg_match(&arg, &access_token) != NGX_ENVGW_ARG_OTHER
        || ngx_env_gateway_arg_match(&arg, &glcf->token_arg)
           != NGX_ENVGW_ARG_OTHER)
    {
        return 2;
    }

    return 0;
}


/*
 * One Cookie header: how many credential cookies (and the value of the
 * first configured one), how many named like credential arguments.
 */
static void
ngx_env_gateway_cookie_scan(ngx_str_t *header,
    ngx_env_gateway_loc_conf_t *glcf, ngx_str_t *value, ngx_uint_t *ntoken,
    ngx_uint_t *nother)
{
    u_char  *p, *last, *end, *eq;

    *ntoken = 0;
    *nother = 0;

    p = header->data;
    last = p + header->len;

    while (p < last) {
        end = ngx_strlchr(p, last, ';');
        if (end == NULL) {
            end = last;
        }

        switch (ngx_env_gateway_cookie_kind(p, end, glcf)) {

        case 1:
            if ((*ntoken)++ == 0) {
                eq = ngx_strlchr(p, end, '=');
                value->data = eq + 1;
                value->len = end - value->data;
            }

            break;

        case 2:
            (*nother)++;
            break;
        }

        p = end + 1;
    }
}


/*
 * One pass over the request headers.  Fills "hdrs" with what the gateway
 * reads (each found in every spelling, counted) and marks for hiding every
 * header that is a credential or named like an identity header.
 */
ngx_int_t
ngx_env_gateway_read_headers(ngx_http_request_t *r,
    ngx_env_gateway_ctx_t *ctx, ngx_env_gateway_loc_conf_t *glcf,
    ngx_env_gateway_headers_t *hdrs)
{
    u_char            c;
    ngx_str_t         cookie;
    ngx_uint_t        i, k, n, nother, hide;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    ngx_memzero(hdrs, sizeof(ngx_env_gateway_headers_t));

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

        if (h[i].hash == 0) {
            continue;
        }

        /* after an internal redirect: the identity headers the gateway set */
        for (k = 0; k < NGX_ENVGW_NIDENTITY; k++) {
            if (&h[i] == ctx->identity[k]) {
                break;
            }
        }

        if (k < NGX_ENVGW_NIDENTITY) {
            continue;
        }

        /*
         * The names compared below start with 'a', 'c', 'x' or the
         * configured names' first byte: a header whose first byte reads
         * (as in ngx_env_gateway_header_is()) as none of them (Host,
         * User-Agent, ...) skips the thirteen comparisons.
         */
        if (h[i].key.len) {
            c = ngx_tolower(h[i].key.data[0]);

            if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))) {
                c = '-';
            }

            if (c != 'a' && c != 'c' && c != 'x'
                && (glcf->token_header.len == 0
                    || c != ngx_tolower(glcf->token_header.data[0]))
                && (glcf->account_header.len == 0
                    || c != ngx_tolower(glcf->account_header.data[0])))
            {
                continue;
            }
        }

        hide = 0;

        /* a credential header goes upstream only with hide_credentials off */
        if (ngx_env_gateway_header_is(&h[i], &ngx_env_gateway_authorization)) {
            if (hdrs->authorization.count++ == 0) {
                hdrs->authorization.first = &h[i];
            }

            hide = glcf->hide_credentials;
        }

        if (glcf->token_header.len
            && ngx_env_gateway_header_is(&h[i], &glcf->token_header))
        {
            if (hdrs->token.count++ == 0) {
                hdrs->token.first = &h[i];
            }

            hide = glcf->hide_credentials;
        }

        for (k = 0; k < sizeof(ngx_env_gateway_method_override)
                        / sizeof(ngx_str_t); k++)
        {
            if (ngx_env_gateway_header_is(&h[i],
                                          &ngx_env_gateway_method_override[k]))
            {
                hdrs->method_override++;
            }
        }

        if (glcf->account_header.len
            && ngx_env_gateway_header_is(&h[i], &glcf->account_header))
        {
            if (hdrs->account.count++ == 0) {
                hdrs->account.first = &h[i];
            }
        }

        for (k = 0; k < NGX_ENVGW_NIDENTITY; k++) {
            if (ngx_env_gateway_header_is(&h[i],
                                          &ngx_env_gateway_identity_lc[k]))
            {
                if (k == NGX_ENVGW_ID_ENVIRONMENT_ID
                    && hdrs->environment.count++ == 0)
                {
                    hdrs->environment.first = &h[i];
                }

                hide = 1;
            }
        }

        /* Express inflates gzip and deflate bodies before parsing them */
        if (ngx_env_gateway_header_is(&h[i],
                                      &ngx_env_gateway_content_encoding)
            && !(h[i].value.len == 8
                 && ngx_strncasecmp(h[i].value.data, (u_char *) "identity",
                                    8) == 0))
        {
            ctx->body_encoded = 1;
        }

        if (ngx_env_gateway_header_is(&h[i], &ngx_env_gateway_cookie)) {

            ngx_env_gateway_cookie_scan(&h[i].value, glcf, &cookie, &n,
                                        &nother);

            /* the configured credential cookie */
            if (n) {
                if (hdrs->cookie.count == 0) {
                    hdrs->cookie.first = &h[i];
                    hdrs->cookie_value = cookie;
                }

                hdrs->cookie.count += n;
            }

            /* cookies named like a credential argument are credentials */
            hdrs->other_cookies += nother;

            if ((n || nother) && glcf->hide_credentials
                && ngx_env_gateway_remember(r, &ctx->cookies, &h[i]) != NGX_OK)
            {
                return NGX_ERROR;
            }
        }

        if (hide && ngx_env_gateway_remember(r, &ctx->hide, &h[i]) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/* ------------------------------------------------------------------ */
/* query                                                               */

/*
 * One pass over the query with the arguments iterator.  For each name the
 * gateway reads (names[i], empty when unused) it counts EXACT occurrences
 * and keeps the first; any ALIAS spelling makes the request ambiguous
 * (NGX_DECLINED, *bad names the argument the gateway reads).
 */
ngx_int_t
ngx_env_gateway_read_args(ngx_str_t *args, ngx_str_t *names,
    ngx_env_gateway_qarg_t *found, ngx_uint_t n, ngx_str_t **bad)
{
    ngx_uint_t              i, m;
    ngx_env_gateway_arg_t   arg;
    ngx_env_gateway_args_t  it;

    ngx_memzero(found, n * sizeof(ngx_env_gateway_qarg_t));

    ngx_env_gateway_args_init(&it, args);

    while (ngx_env_gateway_args_next(&it, &arg) == NGX_OK) {

        for (i = 0; i < n; i++) {
            m = ngx_env_gateway_arg_match(&arg, &names[i]);

            if (m == NGX_ENVGW_ARG_OTHER) {
                continue;
            }

            if (m == NGX_ENVGW_ARG_ALIAS) {
                *bad = &names[i];
                return NGX_DECLINED;
            }

            if (found[i].count++ == 0) {
                found[i].value = arg.value;
                found[i].escaped = ngx_env_gateway_arg_escaped(&arg.value);
            }
        }
    }

    return NGX_OK;
}


/* ------------------------------------------------------------------ */
/* upstream                                                            */

static void
ngx_env_gateway_hash_names(void)
{
    ngx_uint_t  i;

    if (ngx_env_gateway_hashed) {
        return;
    }

    for (i = 0; i < NGX_ENVGW_NIDENTITY; i++) {
        ngx_env_gateway_identity_hash[i] =
                        ngx_hash_key(ngx_env_gateway_identity_lc[i].data,
                                     ngx_env_gateway_identity_lc[i].len);
    }

    ngx_env_gateway_hidden_hash = ngx_hash_key((u_char *) "keep-alive", 10);
    ngx_env_gateway_hashed = 1;
}


/*
 * Hide a request header from every upstream module without moving list
 * elements (headers_in pointers refer to them): it becomes an empty
 * "Keep-Alive", which proxy_pass always replaces with its own and the
 * other upstream modules pass as an empty HTTP_KEEP_ALIVE.
 */
void
ngx_env_gateway_hide(ngx_http_request_t *r, ngx_table_elt_t *h)
{
    static ngx_str_t  hidden = ngx_string("Keep-Alive");
    static ngx_str_t  hidden_lc = ngx_string("keep-alive");

    ngx_env_gateway_hash_names();

    h->key = hidden;
    h->lowcase_key = hidden_lc.data;
    h->hash = ngx_env_gateway_hidden_hash;
    ngx_str_null(&h->value);

    if (h == r->headers_in.authorization) {
        r->headers_in.authorization = NULL;
    }
}


/*
 * The Cookie header without the credential cookie: the kept parts are
 * copied as they were, joined by ';', so the result is never longer than
 * the header (each write is checked against the end all the same).
 */
static ngx_int_t
ngx_env_gateway_drop_cookie(ngx_http_request_t *r, ngx_table_elt_t *h,
    ngx_env_gateway_loc_conf_t *glcf)
{
    u_char  *p, *last, *end, *start, *dst, *out, *out_end;

    out = ngx_pnalloc(r->pool, h->value.len);
    if (out == NULL) {
        return NGX_ERROR;
    }

    dst = out;
    out_end = out + h->value.len;
    p = h->value.data;
    last = p + h->value.len;

    while (p < last) {
        end = ngx_strlchr(p, last, ';');
        if (end == NULL) {
            end = last;
        }

        start = p;

        while (start < end && (*start == ' ' || *start == '\t')) {
            start++;
        }

        if (start < end && ngx_env_gateway_cookie_kind(p, end, glcf) == 0) {
            if ((size_t) (out_end - dst) < (size_t) (end - p) + 1) {
                return NGX_ERROR;
            }

            if (dst != out) {
                *dst++ = ';';
            }

            dst = ngx_cpymem(dst, (dst == out) ? start : p,
                             end - ((dst == out) ? start : p));
        }

        p = end + 1;
    }

    h->value.data = out;
    h->value.len = dst - out;

    if (h->value.len == 0) {
        ngx_env_gateway_hide(r, h);
    }

    return NGX_OK;
}


/*
 * A subrequest shares its parent's header list: give it a list of its own
 * (element copies) before changing anything, so that hiding or adding a
 * header in the subrequest leaves the parent's request as it was.
 */
static ngx_int_t
ngx_env_gateway_own_headers(ngx_http_request_t *r, ngx_env_gateway_ctx_t *ctx)
{
    ngx_uint_t        i, k;
    ngx_list_t        list;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h, *copy, **hide, **cookies;

    if (r == r->main || ctx->own_headers) {
        return NGX_OK;
    }

    if (ngx_list_init(&list, r->pool, 20, sizeof(ngx_table_elt_t)) != NGX_OK) {
        return NGX_ERROR;
    }

    hide = ctx->hide ? ctx->hide->elts : NULL;
    cookies = ctx->cookies ? ctx->cookies->elts : NULL;

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

        copy = ngx_list_push(&list);
        if (copy == NULL) {
            return NGX_ERROR;
        }

        *copy = h[i];

        for (k = 0; hide && k < ctx->hide->nelts; k++) {
            if (hide[k] == &h[i]) {
                hide[k] = copy;
            }
        }

        for (k = 0; cookies && k < ctx->cookies->nelts; k++) {
            if (cookies[k] == &h[i]) {
                cookies[k] = copy;
            }
        }

        if (ctx->cookie == &h[i]) {
            ctx->cookie = copy;
        }
    }

    r->headers_in.headers = list;

    /* "last" must point into the request's list, not at the local copy */
    if (list.last == &list.part) {
        r->headers_in.headers.last = &r->headers_in.headers.part;
    }

    r->headers_in.authorization = NULL;
    ctx->own_headers = 1;

    return NGX_OK;
}


/*
 * Before the request goes upstream: every client credential and every
 * client header named like an identity header is hidden, the credential
 * cookie is dropped from Cookie, and (with env_gateway_identity_headers
 * on) the identity headers are set from what was checked.  Called again
 * after an internal redirect, it updates the headers it added.
 */
ngx_int_t
ngx_env_gateway_identity(ngx_http_request_t *r, ngx_env_gateway_ctx_t *ctx,
    ngx_env_gateway_loc_conf_t *glcf)
{
    ngx_str_t         *v;
    ngx_uint_t         i;
    ngx_table_elt_t   *h, **hide;

    ngx_env_gateway_hash_names();

    /*
     * Hidden in the request's own header list first: for a subrequest
     * that is its main request's list, which goes upstream too
     * (auth_request).
     */
    if (ctx->hide) {
        hide = ctx->hide->elts;

        for (i = 0; i < ctx->hide->nelts; i++) {
            ngx_env_gateway_hide(r, hide[i]);
        }

        ctx->hide->nelts = 0;
    }

    if (glcf->hide_credentials && ctx->cookies) {
        hide = ctx->cookies->elts;

        for (i = 0; i < ctx->cookies->nelts; i++) {
            if (ngx_env_gateway_drop_cookie(r, hide[i], glcf) != NGX_OK) {
                return NGX_ERROR;
            }
        }

        ctx->cookies->nelts = 0;
    }

    ctx->cookie = NULL;

    /* the identity headers of a subrequest go into a list of its own */
    if (ngx_env_gateway_own_headers(r, ctx) != NGX_OK) {
        return NGX_ERROR;
    }

    if (!glcf->identity_headers) {
        /* redirected from a location that set them: not here */
        for (i = 0; i < NGX_ENVGW_NIDENTITY; i++) {
            if (ctx->identity[i]) {
                ngx_env_gateway_hide(r, ctx->identity[i]);
                ctx->identity[i] = NULL;
            }
        }

        return NGX_OK;
    }

    for (i = 0; i < NGX_ENVGW_NIDENTITY; i++) {
        v = (ngx_str_t *) ((char *) ctx + ngx_env_gateway_identity_field[i]);
        h = ctx->identity[i];

        if (v->len == 0) {
            if (h) {
                ngx_env_gateway_hide(r, h);
                ctx->identity[i] = NULL;
            }

            continue;
        }

        if (h == NULL) {
            h = ngx_list_push(&r->headers_in.headers);
            if (h == NULL) {
                return NGX_ERROR;
            }

            ctx->identity[i] = h;
        }

        h->key = ngx_env_gateway_identity_names[i];
        h->lowcase_key = ngx_env_gateway_identity_lc[i].data;
        h->hash = ngx_env_gateway_identity_hash[i];
        h->value = *v;
#if (nginx_version >= 1023000)
        h->next = NULL;
#endif
    }

    return NGX_OK;
}
