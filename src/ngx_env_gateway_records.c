/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * env_gateway: Redis records (JSON) -> flat blobs.
 *
 * Pure code: no I/O, no nginx state beyond logging.  A blob is
 *   ngx_env_gateway_blob_t | uint32_t len[nfields] | field bytes
 * so that a request (or the shared cache) takes a record with one memcpy
 * and never parses JSON twice.  A record that is not valid JSON or lacks a
 * required field is refused (NGX_DECLINED) and logged with its key; unknown
 * fields are ignored however large.
 *
 * No fixed cap: the field table is sized from the record (jansson's counts
 * of its objects), and a field may be as long as the record.  What bounds
 * a record is max_record, enforced on the Redis reply before it gets here.
 */

#include "ngx_env_gateway.h"

#include <jansson.h>


/* token, account and environment records fit without an allocation */
#define NGX_ENVGW_FIELDS_INLINE  8

/*
 * expires_at written as a real (1767225600.0, or a writer's float clock
 * 1767225600.25) is taken in whole seconds, the fraction dropped (the token
 * expires early rather than late), when it lies in 1..2^53, where a double
 * still counts whole seconds exactly; anything else is malformed.
 */
#define NGX_ENVGW_REAL_INT_MAX   9007199254740992.0     /* 2^53 */


typedef struct {
    ngx_uint_t          n;
    ngx_uint_t          nalloc;
    const char        **str;
    size_t             *len;
    const char         *str0[NGX_ENVGW_FIELDS_INLINE];
    size_t              len0[NGX_ENVGW_FIELDS_INLINE];
    ngx_env_gateway_rate_t  rate;       /* a rate_limit field's bytes */
} ngx_env_gateway_fields_t;


static ngx_int_t ngx_env_gateway_expires_at(json_t *root,
    int64_t *expires_at, const char **err);


static ngx_int_t
ngx_env_gateway_fields_alloc(ngx_env_gateway_fields_t *f, size_t n,
    ngx_log_t *log)
{
    f->n = 0;

    if (n <= NGX_ENVGW_FIELDS_INLINE) {
        f->str = f->str0;
        f->len = f->len0;
        f->nalloc = NGX_ENVGW_FIELDS_INLINE;
        return NGX_OK;
    }

    f->str = ngx_alloc(n * (sizeof(const char *) + sizeof(size_t)), log);
    if (f->str == NULL) {
        return NGX_ERROR;
    }

    f->len = (size_t *) (f->str + n);
    f->nalloc = n;

    return NGX_OK;
}


static void
ngx_env_gateway_fields_free(ngx_env_gateway_fields_t *f)
{
    if (f->str && f->str != f->str0) {
        ngx_free(f->str);
    }

    f->str = NULL;
}


static ngx_int_t
ngx_env_gateway_opt_string(json_t *obj, const char *name, const char **s,
    size_t *len, const char **err)
{
    json_t  *v;

    v = json_object_get(obj, name);

    if (v == NULL || json_is_null(v)) {
        *s = "";
        *len = 0;
        return NGX_OK;
    }

    if (!json_is_string(v)) {
        *err = name;
        return NGX_DECLINED;
    }

    *s = json_string_value(v);
    *len = json_string_length(v);

    return NGX_OK;
}


static ngx_int_t
ngx_env_gateway_req_string(json_t *obj, const char *name, const char **s,
    size_t *len, const char **err)
{
    if (ngx_env_gateway_opt_string(obj, name, s, len, err) != NGX_OK
        || *len == 0)
    {
        *err = name;
        return NGX_DECLINED;
    }

    return NGX_OK;
}


/*
 * A field that the gateway writes into an identity header (X-Token-Id,
 * X-Environment ...), a log line and a metrics label: no control
 * character but HTAB.  A bare CR or LF would end the header line for some
 * backend parsers and start another: the backend would act on a header
 * the gateway never checked.  Such a record is malformed.
 */
static ngx_int_t
ngx_env_gateway_header_string(json_t *obj, const char *name, const char **s,
    size_t *len, ngx_uint_t required, const char **err)
{
    size_t        i;
    const u_char  *p;

    if (ngx_env_gateway_opt_string(obj, name, s, len, err) != NGX_OK
        || (required && *len == 0))
    {
        *err = name;
        return NGX_DECLINED;
    }

    p = (const u_char *) *s;

    for (i = 0; i < *len; i++) {
        if ((p[i] < 0x20 && p[i] != '\t') || p[i] == 0x7f) {
            *err = name;
            return NGX_DECLINED;
        }
    }

    return NGX_OK;
}


static ngx_int_t
ngx_env_gateway_push(ngx_env_gateway_fields_t *f, const char *s, size_t len,
    const char **err)
{
    /* the table was sized by counting the same objects: never full */
    if (f->n == f->nalloc) {
        *err = "entries (counted differently)";
        return NGX_DECLINED;
    }

    f->str[f->n] = s;
    f->len[f->n] = len;
    f->n++;

    return NGX_OK;
}


/*
 * "rate_limit": {"requests": N, "window": "10s"} (token and environment
 * records), absent or null for none: the field "i" is the rate's bytes, or
 * empty.  Anything else is malformed, as a bad field of any kind is.
 */
static ngx_int_t
ngx_env_gateway_rate_limit(json_t *root, ngx_env_gateway_fields_t *f,
    ngx_uint_t i, const char **err)
{
    json_t     *v, *n, *w;
    ngx_str_t   window;

    f->str[i] = "";
    f->len[i] = 0;

    v = json_object_get(root, ENVGW_F_RATE_LIMIT);

    if (v == NULL || json_is_null(v)) {
        return NGX_OK;
    }

    n = json_object_get(v, ENVGW_F_REQUESTS);
    w = json_object_get(v, ENVGW_F_WINDOW);

    if (!json_is_object(v) || !json_is_integer(n) || !json_is_string(w)) {
        *err = ENVGW_F_RATE_LIMIT;
        return NGX_DECLINED;
    }

    window.data = (u_char *) json_string_value(w);
    window.len = json_string_length(w);

    if (ngx_env_gateway_rate_parse(&window, json_integer_value(n), &f->rate)
        != NGX_OK)
    {
        *err = ENVGW_F_RATE_LIMIT;
        return NGX_DECLINED;
    }

    f->str[i] = (const char *) &f->rate;
    f->len[i] = sizeof(ngx_env_gateway_rate_t);

    return NGX_OK;
}


static ngx_int_t
ngx_env_gateway_parse_token(json_t *root, ngx_env_gateway_fields_t *f,
    uint32_t *flags, int64_t *expires_at, const char **err)
{
    size_t       len;
    json_t      *v;
    const char  *s;

    static const char *names[NGX_ENVGW_TOK_RATE_LIMIT] = {
        ENVGW_F_TOKEN_ID, ENVGW_F_TEAM_ID, ENVGW_F_ENVIRONMENT_ID,
        ENVGW_F_ENVIRONMENT, ENVGW_F_ACCOUNT_ID
    };

    for (f->n = 0; f->n < NGX_ENVGW_TOK_RATE_LIMIT; f->n++) {
        if (ngx_env_gateway_header_string(root, names[f->n], &f->str[f->n],
                                          &f->len[f->n],
                                          f->n == NGX_ENVGW_TOK_ENV_ID, err)
            != NGX_OK)
        {
            return NGX_DECLINED;
        }
    }

    /* an unknown kind is an error, never a guess; absent means "data" */
    if (ngx_env_gateway_opt_string(root, ENVGW_F_KIND, &s, &len, err)
        != NGX_OK)
    {
        return NGX_DECLINED;
    }

    if (len == 0 || (len == 4 && ngx_strncmp(s, ENVGW_KIND_DATA, 4) == 0)) {
        /* data */

    } else if (len == 5 && ngx_strncmp(s, ENVGW_KIND_ADMIN, 5) == 0) {
        *flags |= NGX_ENVGW_TOK_KIND_ADMIN;

    } else if (len == 7 && ngx_strncmp(s, ENVGW_KIND_ACCOUNT, 7) == 0) {
        *flags |= NGX_ENVGW_TOK_KIND_ACCOUNT;

        if (f->len[NGX_ENVGW_TOK_ACCOUNT_ID] == 0) {
            *err = ENVGW_F_ACCOUNT_ID;
            return NGX_DECLINED;
        }

    } else {
        *err = ENVGW_F_KIND;
        return NGX_DECLINED;
    }

    if ((*flags & NGX_ENVGW_TOK_KIND_ADMIN)
        && f->len[NGX_ENVGW_TOK_TEAM_ID] == 0)
    {
        *err = ENVGW_F_TEAM_ID;
        return NGX_DECLINED;
    }

    if (ngx_env_gateway_expires_at(root, expires_at, err) != NGX_OK) {
        return NGX_DECLINED;
    }

    v = json_object_get(root, ENVGW_F_REVOKED);

    if (v && !json_is_null(v)) {
        if (!json_is_boolean(v)) {
            *err = ENVGW_F_REVOKED;
            return NGX_DECLINED;
        }

        if (json_is_true(v)) {
            *flags |= NGX_ENVGW_TOK_REVOKED;
        }
    }

    if (ngx_env_gateway_rate_limit(root, f, NGX_ENVGW_TOK_RATE_LIMIT, err)
        != NGX_OK)
    {
        return NGX_DECLINED;
    }

    f->n = NGX_ENVGW_TOK_NFIELDS;

    return NGX_OK;
}


static ngx_int_t
ngx_env_gateway_parse_account(json_t *root, ngx_env_gateway_fields_t *f,
    uint32_t *flags, const char **err)
{
    size_t       len;
    const char  *s;

    static const char *names[NGX_ENVGW_ACC_NFIELDS] = {
        ENVGW_F_ACCOUNT_ID, ENVGW_F_ENVIRONMENT_ID, ENVGW_F_INTEGRATION,
        ENVGW_F_TENANT_ID
    };

    /* the integration's name is looked up and named, never a header */
    for (f->n = 0; f->n < NGX_ENVGW_ACC_NFIELDS; f->n++) {
        if (((f->n == NGX_ENVGW_ACC_INTEGRATION)
             ? ngx_env_gateway_opt_string(root, names[f->n], &f->str[f->n],
                                          &f->len[f->n], err)
             : ngx_env_gateway_header_string(root, names[f->n],
                                             &f->str[f->n], &f->len[f->n],
                                             f->n == NGX_ENVGW_ACC_ENV_ID,
                                             err))
            != NGX_OK)
        {
            return NGX_DECLINED;
        }
    }

    /* no status means active; any other status is not usable */
    if (ngx_env_gateway_opt_string(root, ENVGW_F_STATUS, &s, &len, err)
        != NGX_OK)
    {
        return NGX_DECLINED;
    }

    if (len == 0 || (len == sizeof(ENVGW_STATUS_ACTIVE) - 1
                     && ngx_strncmp(s, ENVGW_STATUS_ACTIVE, len) == 0))
    {
        *flags |= NGX_ENVGW_ACC_ACTIVE;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_env_gateway_parse_env(json_t *root, ngx_env_gateway_fields_t *f,
    const char **err)
{
    static const char *names[NGX_ENVGW_ENV_RATE_LIMIT] = {
        ENVGW_F_ENVIRONMENT_ID, ENVGW_F_TEAM_ID, ENVGW_F_NAME
    };

    for (f->n = 0; f->n < NGX_ENVGW_ENV_RATE_LIMIT; f->n++) {
        if (ngx_env_gateway_header_string(root, names[f->n], &f->str[f->n],
                                          &f->len[f->n],
                                          f->n != NGX_ENVGW_ENV_NAME, err)
            != NGX_OK)
        {
            return NGX_DECLINED;
        }
    }

    if (ngx_env_gateway_rate_limit(root, f, NGX_ENVGW_ENV_RATE_LIMIT, err)
        != NGX_OK)
    {
        return NGX_DECLINED;
    }

    f->n = NGX_ENVGW_ENV_NFIELDS;

    return NGX_OK;
}


static ngx_int_t
ngx_env_gateway_parse_tenant(json_t *root, ngx_env_gateway_fields_t *f,
    ngx_log_t *log, const char **err)
{
    json_t      *v;
    const char  *name;

    /* pairs (integration, account id) */
    if (ngx_env_gateway_fields_alloc(f, 2 * json_object_size(root), log)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    json_object_foreach(root, name, v) {
        if (!json_is_string(v)) {
            *err = name;
            return NGX_DECLINED;
        }

        if (ngx_env_gateway_push(f, name, ngx_strlen(name), err) != NGX_OK
            || ngx_env_gateway_push(f, json_string_value(v),
                                    json_string_length(v), err)
               != NGX_OK)
        {
            return NGX_DECLINED;
        }
    }

    return NGX_OK;
}


/*
 * expires_at of a token or credentials record: seconds since the epoch, a
 * positive number.  An integer beyond 64 bits never gets here (jansson
 * refuses the JSON); a real is converted only once it is known to be in
 * range (NaN and infinities fail the comparisons), so no value makes the
 * conversion undefined.
 */
static ngx_int_t
ngx_env_gateway_expires_at(json_t *root, int64_t *expires_at,
    const char **err)
{
    json_t  *v;

    v = json_object_get(root, ENVGW_F_EXPIRES_AT);

    if (v && !json_is_null(v)) {
        if (json_is_integer(v) && json_integer_value(v) > 0) {
            *expires_at = json_integer_value(v);

        } else if (json_is_real(v) && json_real_value(v) >= 1
                   && json_real_value(v) <= NGX_ENVGW_REAL_INT_MAX)
        {
            /* truncation: a positive real is rounded down */
            *expires_at = (int64_t) json_real_value(v);

        } else {
            *err = ENVGW_F_EXPIRES_AT;
            return NGX_DECLINED;
        }
    }

    return NGX_OK;
}


/*
 * An integration's "auth": {"header":NAME,"format":F}, {"query":NAME,
 * "format":F} or {"basic":{"username":F,"password":F}}, and "oauth":
 * {"token_url":URL,"refresh_before":DURATION} (read by envgw only, checked
 * here all the same).  A declaration the gateway cannot follow exactly is
 * malformed: the record is refused, and so are the requests that need it.
 */
static ngx_int_t
ngx_env_gateway_parse_auth(json_t *root, ngx_env_gateway_fields_t *f,
    uint32_t *flags, const char **err)
{
    size_t       len;
    json_t      *auth, *basic, *oauth, *v;
    ngx_uint_t   i, n;
    const char  *s, *key;

    static const char *kinds[] = {
        ENVGW_F_AUTH_HEADER, ENVGW_F_AUTH_QUERY, ENVGW_F_AUTH_BASIC
    };

    for (i = NGX_ENVGW_INT_AUTH_NAME; i < NGX_ENVGW_INT_FIRST; i++) {
        f->str[i] = "";
        f->len[i] = 0;
    }

    oauth = json_object_get(root, ENVGW_F_OAUTH);

    if (oauth && !json_is_null(oauth)) {
        if (!json_is_object(oauth)
            || ngx_env_gateway_req_string(oauth, ENVGW_F_TOKEN_URL, &s, &len,
                                          err)
               != NGX_OK
            || ngx_env_gateway_opt_string(oauth, ENVGW_F_REFRESH_BEFORE, &s,
                                          &len, err)
               != NGX_OK)
        {
            *err = ENVGW_F_OAUTH;
            return NGX_DECLINED;
        }
    }

    auth = json_object_get(root, ENVGW_F_AUTH);

    if (auth == NULL || json_is_null(auth)) {
        return NGX_OK;
    }

    *err = ENVGW_F_AUTH;

    if (!json_is_object(auth)) {
        return NGX_DECLINED;
    }

    /* exactly one of header, query, basic, and nothing unknown */

    n = 0;

    json_object_foreach(auth, key, v) {
        for (i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
            if (ngx_strcmp(key, kinds[i]) == 0) {
                n++;
                *flags |= (NGX_ENVGW_INT_AUTH_HEADER << i);
                break;
            }
        }

        if (i == sizeof(kinds) / sizeof(kinds[0])
            && ngx_strcmp(key, ENVGW_F_FORMAT) != 0)
        {
            return NGX_DECLINED;
        }
    }

    if (n != 1) {
        return NGX_DECLINED;
    }

    if (*flags & NGX_ENVGW_INT_AUTH_BASIC) {
        basic = json_object_get(auth, ENVGW_F_AUTH_BASIC);

        if (!json_is_object(basic)
            || json_object_get(auth, ENVGW_F_FORMAT) != NULL
            || json_object_size(basic) != 2)
        {
            return NGX_DECLINED;
        }

        if (ngx_env_gateway_req_string(basic, ENVGW_F_USERNAME,
                                       &f->str[NGX_ENVGW_INT_AUTH_FORMAT],
                                       &f->len[NGX_ENVGW_INT_AUTH_FORMAT],
                                       err)
               != NGX_OK
            || ngx_env_gateway_req_string(basic, ENVGW_F_PASSWORD,
                                          &f->str[NGX_ENVGW_INT_AUTH_FORMAT2],
                                          &f->len[NGX_ENVGW_INT_AUTH_FORMAT2],
                                          err)
               != NGX_OK)
        {
            *err = ENVGW_F_AUTH;
            return NGX_DECLINED;
        }

        f->str[NGX_ENVGW_INT_AUTH_NAME] = "Authorization";
        f->len[NGX_ENVGW_INT_AUTH_NAME] = sizeof("Authorization") - 1;

    } else {
        key = (*flags & NGX_ENVGW_INT_AUTH_HEADER) ? ENVGW_F_AUTH_HEADER
                                                   : ENVGW_F_AUTH_QUERY;

        if (ngx_env_gateway_req_string(auth, key,
                                       &f->str[NGX_ENVGW_INT_AUTH_NAME],
                                       &f->len[NGX_ENVGW_INT_AUTH_NAME], err)
               != NGX_OK
            || ngx_env_gateway_req_string(auth, ENVGW_F_FORMAT,
                                          &f->str[NGX_ENVGW_INT_AUTH_FORMAT],
                                          &f->len[NGX_ENVGW_INT_AUTH_FORMAT],
                                          err)
               != NGX_OK)
        {
            *err = ENVGW_F_AUTH;
            return NGX_DECLINED;
        }

        *err = ENVGW_F_AUTH;

        if (ngx_env_gateway_auth_name_ok(f->str[NGX_ENVGW_INT_AUTH_NAME],
                                         f->len[NGX_ENVGW_INT_AUTH_NAME],
                                         *flags & NGX_ENVGW_INT_AUTH_HEADER)
            != NGX_OK)
        {
            return NGX_DECLINED;
        }
    }

    n = (*flags & NGX_ENVGW_INT_AUTH_BASIC) ? NGX_ENVGW_INT_AUTH_FORMAT2
                                            : NGX_ENVGW_INT_AUTH_FORMAT;

    for (i = NGX_ENVGW_INT_AUTH_FORMAT; i <= n; i++) {
        if (ngx_env_gateway_auth_format_ok(f->str[i], f->len[i]) != NGX_OK) {
            return NGX_DECLINED;
        }
    }

    return NGX_OK;
}


/*
 * envgw:credentials:<account id>: {"v":1,"kid":..,"nonce":..,
 * "ciphertext":..,"expires_at":N|null}.  Kept as written: the shared
 * cache holds ciphertext only; _credentials.c decrypts per request.
 */
static ngx_int_t
ngx_env_gateway_parse_credentials(json_t *root, ngx_env_gateway_fields_t *f,
    int64_t *expires_at, const char **err)
{
    json_t  *v;

    static const char *names[NGX_ENVGW_CRED_NFIELDS] = {
        ENVGW_F_KID, ENVGW_F_NONCE, ENVGW_F_CIPHERTEXT
    };

    v = json_object_get(root, ENVGW_F_VERSION);

    if (!json_is_integer(v) || json_integer_value(v) != ENVGW_CRED_VERSION) {
        *err = ENVGW_F_VERSION;
        return NGX_DECLINED;
    }

    for (f->n = 0; f->n < NGX_ENVGW_CRED_NFIELDS; f->n++) {
        if (ngx_env_gateway_req_string(root, names[f->n], &f->str[f->n],
                                       &f->len[f->n], err)
            != NGX_OK)
        {
            return NGX_DECLINED;
        }
    }

    return ngx_env_gateway_expires_at(root, expires_at, err);
}


/*
 * Bytes that the upstream URL is made of go into the upstream request
 * line as they are: none may end it or change what it means (a space or
 * CR LF would start another request or header for the upstream, "#" and
 * "?" would move the path into a fragment or the query).  "bad" lists the
 * printable bytes refused besides.
 */
static ngx_int_t
ngx_env_gateway_url_bytes_ok(const char *s, size_t len, const char *bad)
{
    size_t         i;
    const u_char  *p;

    p = (const u_char *) s;

    for (i = 0; i < len; i++) {
        if (p[i] <= 0x20 || p[i] >= 0x7f || ngx_strchr(bad, p[i]) != NULL) {
            return NGX_DECLINED;
        }
    }

    return NGX_OK;
}


/*
 * No segment of a path (from its first '/') is "." or "..", which the
 * upstream would resolve into a climb out of its API (RFC 3986 section
 * 5.2.4).
 */
static ngx_int_t
ngx_env_gateway_dots_ok(const u_char *p, size_t len)
{
    size_t  i, seg;

    seg = 0;

    for (i = 0; i <= len; i++) {

        if (i < len && p[i] != '/') {
            continue;
        }

        if (ngx_env_gateway_dot_segment((u_char *) p + seg,
                                        (u_char *) p + i))
        {
            return NGX_DECLINED;
        }

        seg = i + 1;
    }

    return NGX_OK;
}


/*
 * A method's "path": bytes a request line carries (above), and no "." or
 * ".." segment of its own, written with dots or "%2e".  Dots and
 * percent-encoded bytes next to a placeholder are checked with the value,
 * per request (_route.c).
 */
static ngx_int_t
ngx_env_gateway_path_ok(const char *s, size_t len)
{
    if (ngx_env_gateway_url_bytes_ok(s, len, "#?\\") != NGX_OK) {
        return NGX_DECLINED;
    }

    return ngx_env_gateway_dots_ok((const u_char *) s, len);
}


/*
 * "upstream": http:// or https://, a host, then an optional path: what
 * proxy_pass $env_gateway_upstream_url can use, never guessed.  Whether
 * nginx knows the host is a question of the configuration, answered per
 * request (_access.c).
 */
static ngx_int_t
ngx_env_gateway_upstream_ok(const char *s, size_t len)
{
    size_t         n;
    const u_char  *p, *last, *slash;

    if (len > 7 && ngx_strncasecmp((u_char *) s, (u_char *) "http://", 7)
                   == 0)
    {
        n = 7;

    } else if (len > 8
               && ngx_strncasecmp((u_char *) s, (u_char *) "https://", 8)
                  == 0)
    {
        n = 8;

    } else {
        return NGX_DECLINED;
    }

    if (s[n] == '/' || s[n] == ':') {
        return NGX_DECLINED;
    }

    /*
     * Braces too: a "{placeholder}" is a method path's, never expanded
     * in the upstream, whose bytes go upstream as they are.
     */
    if (ngx_env_gateway_url_bytes_ok(s, len, "#?\\{}") != NGX_OK) {
        return NGX_DECLINED;
    }

    /*
     * The authority: no userinfo ("http://a@b/" is host "a@b" to nginx,
     * another host to a reader); the path: no "." or ".." segment.
     */
    p = (const u_char *) s + n;
    last = (const u_char *) s + len;

    slash = ngx_strlchr((u_char *) p, (u_char *) last, '/');

    if (ngx_strlchr((u_char *) p, (u_char *) (slash ? slash : last), '@')
        != NULL)
    {
        return NGX_DECLINED;
    }

    if (slash == NULL) {
        return NGX_OK;
    }

    return ngx_env_gateway_dots_ok(slash, last - slash);
}


static ngx_int_t
ngx_env_gateway_parse_integration(json_t *root, ngx_env_gateway_fields_t *f,
    uint32_t *flags, ngx_log_t *log, const char **err)
{
    size_t       n, upstream_len;
    json_t      *resources, *methods, *m, *verb, *path;
    const char  *rname, *mname, *upstream;

    if (ngx_env_gateway_req_string(root, ENVGW_F_UPSTREAM, &upstream,
                                   &upstream_len, err)
        != NGX_OK)
    {
        return NGX_DECLINED;
    }

    if (ngx_env_gateway_upstream_ok(upstream, upstream_len) != NGX_OK) {
        *err = ENVGW_F_UPSTREAM;
        return NGX_DECLINED;
    }

    resources = json_object_get(root, ENVGW_F_RESOURCES);

    if (resources != NULL && json_is_null(resources)) {
        resources = NULL;
    }

    if (resources != NULL && !json_is_object(resources)) {
        *err = ENVGW_F_RESOURCES;
        return NGX_DECLINED;
    }

    /*
     * the upstream, the auth declaration, then a quad (resource, method,
     * verb, path) a method
     */

    n = NGX_ENVGW_INT_FIRST;

    if (resources) {
        json_object_foreach(resources, rname, methods) {
            if (!json_is_object(methods)) {
                *err = rname;
                return NGX_DECLINED;
            }

            n += 4 * json_object_size(methods);
        }
    }

    if (ngx_env_gateway_fields_alloc(f, n, log) != NGX_OK) {
        return NGX_ERROR;
    }

    f->str[NGX_ENVGW_INT_UPSTREAM] = upstream;
    f->len[NGX_ENVGW_INT_UPSTREAM] = upstream_len;
    f->n = NGX_ENVGW_INT_FIRST;

    if (ngx_env_gateway_parse_auth(root, f, flags, err) != NGX_OK) {
        return NGX_DECLINED;
    }

    if (resources == NULL) {
        return NGX_OK;
    }

    json_object_foreach(resources, rname, methods) {
        json_object_foreach(methods, mname, m) {
            verb = json_object_get(m, ENVGW_F_METHOD);
            path = json_object_get(m, ENVGW_F_PATH);

            if (!json_is_object(m) || !json_is_string(verb)
                || !json_is_string(path) || json_string_length(path) == 0
                || json_string_value(path)[0] != '/'
                || ngx_env_gateway_path_ok(json_string_value(path),
                                           json_string_length(path))
                   != NGX_OK)
            {
                *err = mname;
                return NGX_DECLINED;
            }

            if (ngx_env_gateway_push(f, rname, ngx_strlen(rname), err)
                != NGX_OK
                || ngx_env_gateway_push(f, mname, ngx_strlen(mname), err)
                   != NGX_OK
                || ngx_env_gateway_push(f, json_string_value(verb),
                                        json_string_length(verb), err)
                   != NGX_OK
                || ngx_env_gateway_push(f, json_string_value(path),
                                        json_string_length(path), err)
                   != NGX_OK)
            {
                return NGX_DECLINED;
            }
        }
    }

    return NGX_OK;
}


ngx_int_t
ngx_env_gateway_record_parse(ngx_uint_t kind, u_char *json, size_t len,
    ngx_log_t *log, ngx_str_t *key, u_char **blob, size_t *blob_len)
{
    u_char                    *p;
    size_t                     size;
    json_t                    *root;
    uint32_t                   flags, *lens;
    int64_t                    expires_at;
    ngx_int_t                  rc;
    ngx_uint_t                 i;
    const char                *err;
    json_error_t               jerr;
    ngx_env_gateway_blob_t    *b;
    ngx_env_gateway_fields_t   fields, *f;

    f = &fields;
    f->str = NULL;
    flags = 0;
    expires_at = 0;
    err = "not a JSON object";

    root = json_loadb((const char *) json, len,
                      JSON_REJECT_DUPLICATES,
                      &jerr);

    if (root == NULL) {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "env_gateway: malformed record \"%V\": %s",
                      key, jerr.text);
        return NGX_DECLINED;
    }

    rc = NGX_DECLINED;

    if (json_is_object(root)) {

        if (kind != NGX_ENVGW_REC_TENANT && kind != NGX_ENVGW_REC_INTEGRATION)
        {
            /* a fixed handful of fields */
            (void) ngx_env_gateway_fields_alloc(f, NGX_ENVGW_FIELDS_INLINE,
                                                log);
        }

        switch (kind) {

        case NGX_ENVGW_REC_TOKEN:
            rc = ngx_env_gateway_parse_token(root, f, &flags, &expires_at,
                                             &err);
            break;

        case NGX_ENVGW_REC_ACCOUNT:
            rc = ngx_env_gateway_parse_account(root, f, &flags, &err);
            break;

        case NGX_ENVGW_REC_ENV:
            rc = ngx_env_gateway_parse_env(root, f, &err);
            break;

        case NGX_ENVGW_REC_TENANT:
            rc = ngx_env_gateway_parse_tenant(root, f, log, &err);
            break;

        case NGX_ENVGW_REC_INTEGRATION:
            rc = ngx_env_gateway_parse_integration(root, f, &flags, log,
                                                   &err);
            break;

        case NGX_ENVGW_REC_CREDENTIALS:
            rc = ngx_env_gateway_parse_credentials(root, f, &expires_at,
                                                   &err);
            break;
        }
    }

    if (rc == NGX_ERROR) {
        ngx_env_gateway_fields_free(f);
        json_decref(root);
        return NGX_ERROR;
    }

    if (rc != NGX_OK) {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "env_gateway: malformed record \"%V\": "
                      "bad or missing \"%s\"", key, err);
        ngx_env_gateway_fields_free(f);
        json_decref(root);
        return NGX_DECLINED;
    }

    /* the blob keeps 32-bit lengths: more than any max_record allows */
    size = sizeof(ngx_env_gateway_blob_t) + f->n * sizeof(uint32_t);
    for (i = 0; i < f->n; i++) {
        if (f->len[i] > NGX_MAX_UINT32_VALUE) {
            ngx_log_error(NGX_LOG_ERR, log, 0,
                          "env_gateway: malformed record \"%V\": "
                          "a field of %uz bytes", key, f->len[i]);
            ngx_env_gateway_fields_free(f);
            json_decref(root);
            return NGX_DECLINED;
        }

        size += f->len[i];
    }

    p = ngx_alloc(size, log);
    if (p == NULL) {
        ngx_env_gateway_fields_free(f);
        json_decref(root);
        return NGX_ERROR;
    }

    b = (ngx_env_gateway_blob_t *) p;
    b->nfields = f->n;
    b->flags = flags;
    b->expires_at = expires_at;

    lens = (uint32_t *) (p + sizeof(ngx_env_gateway_blob_t));
    p = (u_char *) (lens + f->n);

    for (i = 0; i < f->n; i++) {
        lens[i] = (uint32_t) f->len[i];
        p = ngx_cpymem(p, f->str[i], f->len[i]);
    }

    ngx_env_gateway_fields_free(f);
    json_decref(root);

    *blob = (u_char *) b;
    *blob_len = size;

    return NGX_OK;
}


/* copy a blob into a pool and index its fields */
ngx_int_t
ngx_env_gateway_record_load(ngx_pool_t *pool, u_char *blob, size_t blob_len,
    ngx_env_gateway_record_t *rec)
{
    u_char                  *p;
    uint32_t                *lens;
    ngx_uint_t               i;
    ngx_env_gateway_blob_t  *b;

    p = ngx_palloc(pool, blob_len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(p, blob, blob_len);

    b = (ngx_env_gateway_blob_t *) p;

    rec->fields = ngx_palloc(pool, (b->nfields + 1) * sizeof(ngx_str_t));
    if (rec->fields == NULL) {
        return NGX_ERROR;
    }

    rec->flags = b->flags;
    rec->expires_at = b->expires_at;
    rec->nfields = b->nfields;

    lens = (uint32_t *) (p + sizeof(ngx_env_gateway_blob_t));
    p = (u_char *) (lens + b->nfields);

    for (i = 0; i < b->nfields; i++) {
        rec->fields[i].len = lens[i];
        rec->fields[i].data = p;
        p += lens[i];
    }

    return NGX_OK;
}
