/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * env_gateway: upstream credentials of integrated accounts.
 *
 * An integration may declare "auth" (a header with a format, a query
 * argument, basic auth).  On a route location the account's credentials
 * record (AES-256-GCM of a JSON object of fields) is decrypted with the
 * keyring of env_gateway_secret_keys into request memory, the declared
 * value is built from its fields, and the plaintext is wiped at once.
 *
 *   header, basic: the value goes into the request's header list, every
 *       client header of that name hidden.  Its hash is 0: nginx's $http_
 *       variables skip such a header, the proxy module sends it.
 *   query: the argument is appended to the upstream URL, which only the
 *       first evaluation of $env_gateway_upstream_url by the upstream
 *       module (proxy_pass) gets; every other read gets the URL without.
 *
 * The built values live in the request pool and are wiped by a pool
 * cleanup.  Missing, expired, undecryptable (another key, another
 * account's or environment's record) or incomplete credentials refuse the
 * request with 503 credentials_unavailable: never a request without them.
 * No log line (debug included), variable or body carries a value.
 *
 * Additional data (binds a record to its account and environment):
 *   be32(len(account id)) account id be32(len(environment id)) env id
 */

#include "ngx_env_gateway.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>


#define NGX_ENVGW_KEYS_FILE_MAX      (64 * 1024)
#define NGX_ENVGW_KID_MAX            64
#define NGX_ENVGW_AUTH_NAME_MAX      128
#define NGX_ENVGW_FIELD_NAME_MAX     64


static void ngx_env_gateway_keys_cleanup(void *data);
static void ngx_env_gateway_wipe_cleanup(void *data);
static ngx_int_t ngx_env_gateway_cred_decrypt(ngx_http_request_t *r,
    ngx_env_gateway_ctx_t *ctx, ngx_str_t *plain, const char **why);
static ngx_int_t ngx_env_gateway_cred_refuse(ngx_http_request_t *r,
    ngx_env_gateway_ctx_t *ctx, const char *why);
static ngx_uint_t ngx_env_gateway_cred_name_is(ngx_str_t *key,
    ngx_str_t *name);
static ngx_table_elt_t *ngx_env_gateway_cred_inherited(ngx_http_request_t *r,
    ngx_table_elt_t *h);
static ngx_int_t ngx_env_gateway_cred_scrub(ngx_http_request_t *r,
    ngx_uint_t own);
static u_char *ngx_env_gateway_cred_log_error(ngx_http_request_t *r,
    ngx_http_request_t *sr, u_char *buf, size_t len);
static ngx_int_t ngx_env_gateway_cred_header_filter(ngx_http_request_t *r);


/* the worker's AES-256-GCM decryption context */
static EVP_CIPHER_CTX  *ngx_env_gateway_evp;

/* nginx's error log context handler, which ours wraps */
static ngx_http_log_handler_pt  ngx_env_gateway_log_error_next;

static ngx_http_output_header_filter_pt  ngx_env_gateway_cred_next_filter;


static ngx_str_t  ngx_env_gateway_reserved_headers[] = {
    ngx_string("host"),
    ngx_string("content-length"),
    ngx_string("transfer-encoding"),
    ngx_string("connection"),
    ngx_string("keep-alive"),
    ngx_string("te"),
    ngx_string("upgrade"),
    ngx_string("expect"),
    ngx_string("cookie"),
    ngx_string("x-environment-id"),
    ngx_string("x-environment"),
    ngx_string("x-team-id"),
    ngx_string("x-token-id"),
    ngx_string("x-integrated-account-id"),
    ngx_string("x-tenant-id"),
    ngx_null_string
};


/* ------------------------------------------------------------------ */
/* the keyring                                                         */

/*
 * env_gateway_secret_keys FILE: lines "<kid> <base64 of 32 bytes>", blank
 * lines and "#" comments allowed; the first key writes (envgw), all read.
 * Read at every configuration load; the keys stay in the cycle's pool,
 * wiped when the cycle goes.
 */
char *
ngx_env_gateway_secret_keys(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_env_gateway_main_conf_t *gmcf = conf;

    u_char                 *buf, *p, *last, *eol, *sp, *next;
    char                   *rv;
    size_t                  size;
    ssize_t                 n;
    ngx_fd_t                fd;
    ngx_str_t              *value, name, kid, b64, dec;
    ngx_uint_t              line, i;
    ngx_file_info_t         fi;
    ngx_pool_cleanup_t     *cln;
    ngx_env_gateway_key_t  *key, *keys;

    if (gmcf->secret_keys) {
        return "is duplicate";
    }

    value = cf->args->elts;
    name = value[1];

    if (ngx_conf_full_name(cf->cycle, &name, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    gmcf->secret_keys = ngx_array_create(cf->pool, 2,
                                         sizeof(ngx_env_gateway_key_t));
    if (gmcf->secret_keys == NULL) {
        return NGX_CONF_ERROR;
    }

    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        return NGX_CONF_ERROR;
    }

    cln->handler = ngx_env_gateway_keys_cleanup;
    cln->data = gmcf->secret_keys;

    fd = ngx_open_file(name.data, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);

    if (fd == NGX_INVALID_FILE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           ngx_open_file_n " \"%V\" failed", &name);
        return NGX_CONF_ERROR;
    }

    buf = NULL;
    size = 0;
    rv = NGX_CONF_ERROR;

    if (ngx_fd_info(fd, &fi) == NGX_FILE_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           ngx_fd_info_n " \"%V\" failed", &name);
        goto done;
    }

    if (ngx_file_size(&fi) > NGX_ENVGW_KEYS_FILE_MAX) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" is larger than %d bytes: not a keyring",
                           &name, NGX_ENVGW_KEYS_FILE_MAX);
        goto done;
    }

    if (fi.st_mode & S_IROTH) {
        ngx_conf_log_error(NGX_LOG_WARN, cf, 0,
                           "the keyring \"%V\" is readable by every user "
                           "of this host: chmod o-r it", &name);
    }

    if (fi.st_mode & S_IWOTH) {
        /* anyone could put a key of theirs first: envgw encrypts with it */
        ngx_conf_log_error(NGX_LOG_WARN, cf, 0,
                           "the keyring \"%V\" is writable by every user "
                           "of this host: chmod o-w it", &name);
    }

    size = (size_t) ngx_file_size(&fi);

    buf = ngx_pnalloc(cf->temp_pool, size + 1);
    if (buf == NULL) {
        goto done;
    }

    n = ngx_read_fd(fd, buf, size);

    if (n == NGX_ERROR || (size_t) n != size) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           ngx_read_fd_n " \"%V\" failed", &name);
        goto done;
    }

    p = buf;
    last = buf + size;

    for (line = 1; p < last; line++, p = next) {
        eol = ngx_strlchr(p, last, '\n');
        if (eol == NULL) {
            eol = last;
        }

        next = (eol < last) ? eol + 1 : last;

        while (p < eol && (*p == ' ' || *p == '\t')) {
            p++;
        }

        while (eol > p && (eol[-1] == ' ' || eol[-1] == '\t'
                           || eol[-1] == '\r'))
        {
            eol--;
        }

        if (p == eol || *p == '#') {
            continue;
        }

        sp = p;
        while (sp < eol && *sp != ' ' && *sp != '\t') {
            sp++;
        }

        kid.data = p;
        kid.len = sp - p;

        while (sp < eol && (*sp == ' ' || *sp == '\t')) {
            sp++;
        }

        b64.data = sp;
        b64.len = eol - sp;

        if (kid.len == 0 || ngx_env_gateway_id_syntax(&kid) != NGX_OK
            || kid.len > NGX_ENVGW_KID_MAX || b64.len == 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"%V\" line %ui: expected \"<key id> "
                               "<base64 of 32 bytes>\"", &name, line);
            goto done;
        }

        keys = gmcf->secret_keys->elts;

        for (i = 0; i < gmcf->secret_keys->nelts; i++) {
            if (!ngx_env_gateway_str_ne(&keys[i].kid, &kid)) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "\"%V\" line %ui: key id \"%V\" is "
                                   "there twice", &name, line, &kid);
                goto done;
            }
        }

        dec.data = ngx_pnalloc(cf->temp_pool,
                               ngx_base64_decoded_length(b64.len));
        if (dec.data == NULL) {
            goto done;
        }

        if (ngx_decode_base64(&dec, &b64) != NGX_OK) {
            OPENSSL_cleanse(dec.data, ngx_base64_decoded_length(b64.len));
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"%V\" line %ui: expected \"<key id> "
                               "<base64 of 32 bytes>\"", &name, line);
            goto done;
        }

        if (dec.len != NGX_ENVGW_KEY_LEN) {
            OPENSSL_cleanse(dec.data, dec.len);
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"%V\" line %ui: the key is not the base64 "
                               "of 32 bytes", &name, line);
            goto done;
        }

        key = ngx_array_push(gmcf->secret_keys);
        if (key == NULL) {
            OPENSSL_cleanse(dec.data, dec.len);
            goto done;
        }

        key->kid.data = ngx_pstrdup(cf->pool, &kid);
        key->kid.len = kid.len;
        ngx_memcpy(key->key, dec.data, NGX_ENVGW_KEY_LEN);
        OPENSSL_cleanse(dec.data, dec.len);

        if (key->kid.data == NULL) {
            goto done;
        }
    }

    if (gmcf->secret_keys->nelts == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "\"%V\" has no keys",
                           &name);
        goto done;
    }

    rv = NGX_CONF_OK;

done:

    if (buf) {
        OPENSSL_cleanse(buf, size);
    }

    if (ngx_close_file(fd) == NGX_FILE_ERROR) {
        ngx_conf_log_error(NGX_LOG_ALERT, cf, ngx_errno,
                           ngx_close_file_n " \"%V\" failed", &name);
    }

    return rv;
}


static void
ngx_env_gateway_keys_cleanup(void *data)
{
    ngx_array_t  *keys = data;

    if (keys->nelts) {
        OPENSSL_cleanse(keys->elts, keys->nelts * keys->size);
    }
}


/* a request-pool buffer wiped when the request ends (or at once) */
static void
ngx_env_gateway_wipe_cleanup(void *data)
{
    ngx_str_t  *s = data;

    if (s->len) {
        OPENSSL_cleanse(s->data, s->len);
        s->len = 0;
    }
}


static ngx_int_t
ngx_env_gateway_wipe_later(ngx_pool_t *pool, ngx_str_t *s)
{
    ngx_pool_cleanup_t  *cln;

    cln = ngx_pool_cleanup_add(pool, sizeof(ngx_str_t));
    if (cln == NULL) {
        return NGX_ERROR;
    }

    cln->handler = ngx_env_gateway_wipe_cleanup;
    *(ngx_str_t *) cln->data = *s;

    return NGX_OK;
}


/* ------------------------------------------------------------------ */
/* declarations (checked by _records.c)                               */

static ngx_uint_t
ngx_env_gateway_field_char(u_char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
           || (c >= '0' && c <= '9') || c == '_';
}


/*
 * A format: literal text (printable, no control characters) and
 * "{field}" placeholders, at least one; "{" and "}" only as placeholders.
 */
ngx_int_t
ngx_env_gateway_auth_format_ok(const char *s, size_t len)
{
    u_char      *p, *last, *close, *q;
    ngx_uint_t   n;

    p = (u_char *) s;
    last = p + len;
    n = 0;

    while (p < last) {
        if (*p == '{') {
            close = ngx_strlchr(p, last, '}');

            if (close == NULL || close == p + 1
                || close - p - 1 > NGX_ENVGW_FIELD_NAME_MAX)
            {
                return NGX_DECLINED;
            }

            for (q = p + 1; q < close; q++) {
                if (!ngx_env_gateway_field_char(*q)) {
                    return NGX_DECLINED;
                }
            }

            n++;
            p = close + 1;
            continue;
        }

        if (*p == '}' || *p < 0x20 || *p == 0x7f) {
            return NGX_DECLINED;
        }

        p++;
    }

    return n ? NGX_OK : NGX_DECLINED;
}


/*
 * A header name: an RFC 9110 token, not one nginx, the proxy or this
 * module owns.  An argument name: unreserved characters only, so it needs
 * no escaping and reads the same to every parser.
 */
ngx_int_t
ngx_env_gateway_auth_name_ok(const char *s, size_t len, ngx_uint_t header)
{
    u_char     *p, *last, c;
    ngx_str_t  *r;

    static u_char  tchar[] = "!#$%&'*+-.^_`|~";

    if (len == 0 || len > NGX_ENVGW_AUTH_NAME_MAX) {
        return NGX_DECLINED;
    }

    p = (u_char *) s;
    last = p + len;

    for ( /* void */ ; p < last; p++) {
        c = *p;

        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
            || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.')
        {
            continue;
        }

        if (c == '~' || (header && c != '\0' && ngx_strchr(tchar, c)))
        {
            continue;
        }

        return NGX_DECLINED;
    }

    if (!header) {
        return NGX_OK;
    }

    for (r = ngx_env_gateway_reserved_headers; r->len; r++) {
        if (r->len == len && ngx_strncasecmp(r->data, (u_char *) s, len) == 0)
        {
            return NGX_DECLINED;
        }
    }

    return NGX_OK;
}


/* ------------------------------------------------------------------ */
/* the plaintext: a JSON object of strings, read in place              */

static u_char *
ngx_env_gateway_json_ws(u_char *p, u_char *last)
{
    while (p < last && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
    {
        p++;
    }

    return p;
}


static ngx_int_t
ngx_env_gateway_json_hex4(u_char *p, u_char *last, ngx_uint_t *cp)
{
    ngx_int_t  n;

    if (last - p < 4) {
        return NGX_DECLINED;
    }

    n = ngx_hextoi(p, 4);
    if (n == NGX_ERROR) {
        return NGX_DECLINED;
    }

    *cp = (ngx_uint_t) n;

    return NGX_OK;
}


/*
 * A JSON string at *pp ('"'), unescaped in place (never longer than its
 * escaped form); *pp moves past it.  NUL, unpaired surrogates and raw
 * control characters are refused.
 */
static ngx_int_t
ngx_env_gateway_json_string(u_char **pp, u_char *last, ngx_str_t *out)
{
    u_char      *p, *w, *start, c;
    ngx_uint_t   cp, lo;

    p = *pp;

    if (p == last || *p != '"') {
        return NGX_DECLINED;
    }

    p++;
    start = p;
    w = p;

    for ( ;; ) {
        if (p == last) {
            return NGX_DECLINED;
        }

        c = *p++;

        if (c == '"') {
            break;
        }

        if (c < 0x20) {
            return NGX_DECLINED;
        }

        if (c != '\\') {
            *w++ = c;
            continue;
        }

        if (p == last) {
            return NGX_DECLINED;
        }

        c = *p++;

        switch (c) {
        case '"': case '\\': case '/':
            *w++ = c;
            continue;
        case 'b':
            *w++ = '\b';
            continue;
        case 'f':
            *w++ = '\f';
            continue;
        case 'n':
            *w++ = '\n';
            continue;
        case 'r':
            *w++ = '\r';
            continue;
        case 't':
            *w++ = '\t';
            continue;
        case 'u':
            break;
        default:
            return NGX_DECLINED;
        }

        if (ngx_env_gateway_json_hex4(p, last, &cp) != NGX_OK) {
            return NGX_DECLINED;
        }

        p += 4;

        if (cp >= 0xdc00 && cp <= 0xdfff) {
            return NGX_DECLINED;
        }

        if (cp >= 0xd800 && cp <= 0xdbff) {
            if (last - p < 6 || p[0] != '\\' || p[1] != 'u'
                || ngx_env_gateway_json_hex4(p + 2, last, &lo) != NGX_OK
                || lo < 0xdc00 || lo > 0xdfff)
            {
                return NGX_DECLINED;
            }

            p += 6;
            cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
        }

        if (cp == 0) {
            return NGX_DECLINED;
        }

        if (cp < 0x80) {
            *w++ = (u_char) cp;

        } else if (cp < 0x800) {
            *w++ = (u_char) (0xc0 | (cp >> 6));
            *w++ = (u_char) (0x80 | (cp & 0x3f));

        } else if (cp < 0x10000) {
            *w++ = (u_char) (0xe0 | (cp >> 12));
            *w++ = (u_char) (0x80 | ((cp >> 6) & 0x3f));
            *w++ = (u_char) (0x80 | (cp & 0x3f));

        } else {
            *w++ = (u_char) (0xf0 | (cp >> 18));
            *w++ = (u_char) (0x80 | ((cp >> 12) & 0x3f));
            *w++ = (u_char) (0x80 | ((cp >> 6) & 0x3f));
            *w++ = (u_char) (0x80 | (cp & 0x3f));
        }
    }

    out->data = start;
    out->len = w - start;
    *pp = p;

    return NGX_OK;
}


/*
 * The decrypted fields: {"name":"value",...}, strings only, no name
 * twice.  Parsed in place: the fields point into the buffer, which the
 * caller wipes.  Jansson is not used here, so that no copy of a value is
 * made in memory nobody wipes.
 */
static ngx_int_t ngx_env_gateway_cred_object(u_char *p, size_t len,
    ngx_array_t *fields);


ngx_int_t
ngx_env_gateway_cred_parse(u_char *p, size_t len, ngx_array_t *fields)
{
    ngx_int_t  rc;

    rc = ngx_env_gateway_cred_object(p, len, fields);

    if (rc != NGX_OK) {
        /* no half-read field is left for anyone to use */
        fields->nelts = 0;
    }

    return rc;
}


static ngx_int_t
ngx_env_gateway_cred_object(u_char *p, size_t len, ngx_array_t *fields)
{
    u_char                        *last;
    ngx_uint_t                     i;
    ngx_env_gateway_cred_field_t  *f, *all;

    last = p + len;
    p = ngx_env_gateway_json_ws(p, last);

    if (p == last || *p++ != '{') {
        return NGX_DECLINED;
    }

    p = ngx_env_gateway_json_ws(p, last);

    if (p < last && *p == '}') {
        p++;
        goto end;
    }

    for ( ;; ) {
        f = ngx_array_push(fields);
        if (f == NULL) {
            return NGX_ERROR;
        }

        if (ngx_env_gateway_json_string(&p, last, &f->name) != NGX_OK) {
            return NGX_DECLINED;
        }

        p = ngx_env_gateway_json_ws(p, last);

        if (p == last || *p++ != ':') {
            return NGX_DECLINED;
        }

        p = ngx_env_gateway_json_ws(p, last);

        if (ngx_env_gateway_json_string(&p, last, &f->value) != NGX_OK) {
            return NGX_DECLINED;
        }

        all = fields->elts;

        for (i = 0; i + 1 < fields->nelts; i++) {
            if (!ngx_env_gateway_str_ne(&all[i].name, &f->name)) {
                return NGX_DECLINED;
            }
        }

        p = ngx_env_gateway_json_ws(p, last);

        if (p == last) {
            return NGX_DECLINED;
        }

        if (*p == ',') {
            p = ngx_env_gateway_json_ws(p + 1, last);
            continue;
        }

        if (*p++ != '}') {
            return NGX_DECLINED;
        }

        break;
    }

end:

    p = ngx_env_gateway_json_ws(p, last);

    return (p == last) ? NGX_OK : NGX_DECLINED;
}


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


/* ------------------------------------------------------------------ */
/* requests                                                            */

static ngx_int_t
ngx_env_gateway_cred_refuse(ngx_http_request_t *r, ngx_env_gateway_ctx_t *ctx,
    const char *why)
{
    ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                  "env_gateway: credentials of integrated account \"%V\" "
                  "unusable: %s", &ctx->account_id, why);

    return ngx_env_gateway_refuse(r, ctx, NGX_ENVGW_CREDENTIALS_UNAVAILABLE);
}


static ngx_int_t
ngx_env_gateway_decode(ngx_pool_t *pool, ngx_str_t *b64, ngx_str_t *out)
{
    out->data = ngx_pnalloc(pool, ngx_base64_decoded_length(b64->len) + 1);
    if (out->data == NULL) {
        return NGX_ERROR;
    }

    return (ngx_decode_base64(out, b64) == NGX_OK) ? NGX_OK : NGX_DECLINED;
}


/*
 * The record's plaintext into *plain (request pool, registered to be
 * wiped).  NGX_DECLINED with *why: an unknown key id, a bad encoding, or
 * a tag that does not match (another key, or additional data of another
 * account or environment: a moved record).
 */
static ngx_int_t
ngx_env_gateway_cred_decrypt(ngx_http_request_t *r,
    ngx_env_gateway_ctx_t *ctx, ngx_str_t *plain, const char **why)
{
    int                           len, fin;
    u_char                        be[2][4];
    ngx_int_t                     rc;
    ngx_str_t                    *f, nonce, ct, aad;
    ngx_uint_t                    i;
    EVP_CIPHER_CTX               *evp;
    ngx_env_gateway_key_t        *keys, *key;
    ngx_env_gateway_text_t        t;
    ngx_env_gateway_record_t     *rec;
    ngx_env_gateway_main_conf_t  *gmcf;

    gmcf = ngx_http_get_module_main_conf(r, ngx_env_gateway_module);
    rec = &ctx->waiter.slots[NGX_ENVGW_REC_CREDENTIALS].rec;
    f = rec->fields;

    if (gmcf->secret_keys == NULL) {
        *why = "no env_gateway_secret_keys in this configuration";
        return NGX_DECLINED;
    }

    keys = gmcf->secret_keys->elts;
    key = NULL;

    for (i = 0; i < gmcf->secret_keys->nelts; i++) {
        if (!ngx_env_gateway_str_ne(&keys[i].kid, &f[NGX_ENVGW_CRED_KID])) {
            key = &keys[i];
            break;
        }
    }

    if (key == NULL) {
        *why = "its key id is not in the keyring";
        return NGX_DECLINED;
    }

    rc = ngx_env_gateway_decode(r->pool, &f[NGX_ENVGW_CRED_NONCE], &nonce);
    if (rc == NGX_OK) {
        rc = ngx_env_gateway_decode(r->pool, &f[NGX_ENVGW_CRED_CIPHERTEXT],
                                    &ct);
    }

    if (rc == NGX_ERROR) {
        return NGX_ERROR;
    }

    if (rc != NGX_OK || nonce.len != NGX_ENVGW_NONCE_LEN
        || ct.len <= NGX_ENVGW_TAG_LEN || ct.len - NGX_ENVGW_TAG_LEN > INT_MAX)
    {
        *why = "a bad nonce or ciphertext";
        return NGX_DECLINED;
    }

    ct.len -= NGX_ENVGW_TAG_LEN;

    /* additional data: be32 length-prefixed account id, environment id */

    be[0][0] = (u_char) (ctx->account_id.len >> 24);
    be[0][1] = (u_char) (ctx->account_id.len >> 16);
    be[0][2] = (u_char) (ctx->account_id.len >> 8);
    be[0][3] = (u_char) ctx->account_id.len;
    be[1][0] = (u_char) (ctx->environment_id.len >> 24);
    be[1][1] = (u_char) (ctx->environment_id.len >> 16);
    be[1][2] = (u_char) (ctx->environment_id.len >> 8);
    be[1][3] = (u_char) ctx->environment_id.len;

    ngx_env_gateway_text_init(&t);

    do {
        ngx_env_gateway_text_bytes(&t, be[0], 4);
        ngx_env_gateway_text_str(&t, &ctx->account_id);
        ngx_env_gateway_text_bytes(&t, be[1], 4);
        ngx_env_gateway_text_str(&t, &ctx->environment_id);
    } while ((rc = ngx_env_gateway_text_next(&t, r->pool)) == NGX_AGAIN);

    if (rc != NGX_OK) {
        return NGX_ERROR;
    }

    ngx_env_gateway_text_string(&t, &aad);

    plain->len = ct.len;
    plain->data = ngx_pnalloc(r->pool, ct.len);
    if (plain->data == NULL) {
        return NGX_ERROR;
    }

    if (ngx_env_gateway_wipe_later(r->pool, plain) != NGX_OK) {
        return NGX_ERROR;
    }

    /* one cipher context a worker, set up once: no allocation a request */

    evp = ngx_env_gateway_evp;

    if (evp == NULL) {
        evp = EVP_CIPHER_CTX_new();
        if (evp == NULL) {
            return NGX_ERROR;
        }

        if (EVP_DecryptInit_ex(evp, EVP_aes_256_gcm(), NULL, NULL, NULL) != 1
            || EVP_CIPHER_CTX_ctrl(evp, EVP_CTRL_GCM_SET_IVLEN,
                                   NGX_ENVGW_NONCE_LEN, NULL)
               != 1)
        {
            EVP_CIPHER_CTX_free(evp);
            return NGX_ERROR;
        }

        ngx_env_gateway_evp = evp;
    }

    rc = NGX_DECLINED;
    *why = "it does not decrypt (another key, or a record of another "
           "account or environment)";

    if (EVP_DecryptInit_ex(evp, NULL, NULL, key->key, nonce.data) == 1
        && EVP_DecryptUpdate(evp, NULL, &len, aad.data, (int) aad.len) == 1
        && EVP_DecryptUpdate(evp, plain->data, &len, ct.data, (int) ct.len)
           == 1
        && EVP_CIPHER_CTX_ctrl(evp, EVP_CTRL_GCM_SET_TAG, NGX_ENVGW_TAG_LEN,
                               ct.data + ct.len) == 1
        && EVP_DecryptFinal_ex(evp, plain->data + len, &fin) == 1
        && (size_t) (len + fin) == ct.len)
    {
        rc = NGX_OK;
    }

    return rc;
}


/*
 * Called on a route location whose integration declares "auth", once the
 * account's credentials record is here: decrypt, build what goes
 * upstream, wipe the plaintext.  NGX_OK, or a refusal.
 */
ngx_int_t
ngx_env_gateway_credentials(ngx_http_request_t *r, ngx_env_gateway_ctx_t *ctx,
    ngx_env_gateway_record_t *integration)
{
    ngx_int_t                  rc;
    ngx_str_t                  plain;
    ngx_array_t                fields;
    const char                *why;
    ngx_env_gateway_cred_t    *cred;
    ngx_env_gateway_record_t  *rec;

    if (ctx->cred == NULL) {
        ctx->cred = ngx_pcalloc(r->pool, sizeof(ngx_env_gateway_cred_t));
        if (ctx->cred == NULL) {
            return NGX_ERROR;
        }
    }

    ngx_env_gateway_credentials_clear(ctx);

    cred = ctx->cred;
    rec = &ctx->waiter.slots[NGX_ENVGW_REC_CREDENTIALS].rec;

    if (rec->expires_at && rec->expires_at <= (int64_t) ngx_time()) {
        return ngx_env_gateway_cred_refuse(r, ctx, "expired");
    }

    rc = ngx_env_gateway_cred_decrypt(r, ctx, &plain, &why);

    if (rc == NGX_ERROR) {
        return NGX_ERROR;
    }

    if (rc != NGX_OK) {
        return ngx_env_gateway_cred_refuse(r, ctx, why);
    }

    if (ngx_array_init(&fields, r->pool, 4,
                       sizeof(ngx_env_gateway_cred_field_t))
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    rc = ngx_env_gateway_cred_parse(plain.data, plain.len, &fields);

    if (rc == NGX_OK) {
        rc = ngx_env_gateway_cred_build(r->pool, integration, &fields,
                                        &ctx->upstream_url, cred, &why);

    } else if (rc == NGX_DECLINED) {
        why = "the decrypted fields are not a JSON object of strings";
    }

    /* the plaintext is not needed any more */
    OPENSSL_cleanse(plain.data, plain.len);

    if (rc == NGX_ERROR) {
        return NGX_ERROR;
    }

    if (rc != NGX_OK) {
        ngx_env_gateway_credentials_clear(ctx);
        return ngx_env_gateway_cred_refuse(r, ctx, why);
    }

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "env_gateway: credentials of \"%V\" built, "
                   "header of %uz bytes, URL of %uz bytes",
                   &ctx->account_id, cred->value.len, cred->url.len);

    return NGX_OK;
}


/* forget (and wipe) what a previous check built */
void
ngx_env_gateway_credentials_clear(ngx_env_gateway_ctx_t *ctx)
{
    ngx_env_gateway_cred_t  *cred;

    cred = ctx->cred;

    if (cred == NULL) {
        return;
    }

    if (cred->value.len) {
        OPENSSL_cleanse(cred->value.data, cred->value.len);
    }

    if (cred->url.len) {
        OPENSSL_cleanse(cred->url.data, cred->url.len);
    }

    ngx_str_null(&cred->value);
    ngx_str_null(&cred->url);
    cred->url_given = 0;
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
