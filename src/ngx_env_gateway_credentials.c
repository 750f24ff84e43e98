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
 *
 * The files:
 *
 *   _keys.c                 the keyring (env_gateway_secret_keys).
 *   _credentials.c          the auth declaration checks, the decryption
 *                           of the record and its fields read in place.
 *   _credentials_inject.c   the header, basic and query values built from
 *                           the fields, put into the request, and kept
 *                           out of logs, variables and caches.
 *
 * What they share is in ngx_env_gateway_credentials.h.
 */

#include "ngx_env_gateway_credentials.h"


#define NGX_ENVGW_AUTH_NAME_MAX      128
#define NGX_ENVGW_FIELD_NAME_MAX     64


static void ngx_env_gateway_wipe_cleanup(void *data);
static ngx_int_t ngx_env_gateway_cred_decrypt(ngx_http_request_t *r,
    ngx_env_gateway_ctx_t *ctx, ngx_str_t *plain, ngx_uint_t *result,
    const char **why);
static ngx_int_t ngx_env_gateway_cred_refuse(ngx_http_request_t *r,
    ngx_env_gateway_ctx_t *ctx, ngx_uint_t result, const char *why);


/* the worker's AES-256-GCM decryption context */
static EVP_CIPHER_CTX  *ngx_env_gateway_evp;

/* env_gateway_credentials_total's result label, by NGX_ENVGW_CRED_* */
static ngx_str_t  ngx_env_gateway_cred_results[NGX_ENVGW_CRED_NRESULTS] = {
    ngx_string("injected"),
    ngx_string("missing"),
    ngx_string("expired"),
    ngx_string("unknown_key"),
    ngx_string("undecryptable"),
    ngx_string("malformed"),
    ngx_string("unusable")
};

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


ngx_int_t
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
/* requests                                                            */

static ngx_int_t
ngx_env_gateway_cred_refuse(ngx_http_request_t *r, ngx_env_gateway_ctx_t *ctx,
    ngx_uint_t result, const char *why)
{
    ngx_env_gateway_metric_inc(NGX_ENVGW_M_CREDENTIALS + result);

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
 * wiped).  NGX_DECLINED with *result and *why: an unknown key id, a bad
 * encoding, or a tag that does not match (another key, or additional
 * data of another account or environment: a moved record).
 */
static ngx_int_t
ngx_env_gateway_cred_decrypt(ngx_http_request_t *r,
    ngx_env_gateway_ctx_t *ctx, ngx_str_t *plain, ngx_uint_t *result,
    const char **why)
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
        *result = NGX_ENVGW_CRED_UNKNOWN_KEY;
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
        *result = NGX_ENVGW_CRED_UNKNOWN_KEY;
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
        *result = NGX_ENVGW_CRED_MALFORMED;
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
    *result = NGX_ENVGW_CRED_UNDECRYPTABLE;
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
    ngx_uint_t                 result;
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
        return ngx_env_gateway_cred_refuse(r, ctx, NGX_ENVGW_CRED_EXPIRED,
                                           "expired");
    }

    rc = ngx_env_gateway_cred_decrypt(r, ctx, &plain, &result, &why);

    if (rc == NGX_ERROR) {
        return NGX_ERROR;
    }

    if (rc != NGX_OK) {
        return ngx_env_gateway_cred_refuse(r, ctx, result, why);
    }

    if (ngx_array_init(&fields, r->pool, 4,
                       sizeof(ngx_env_gateway_cred_field_t))
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    rc = ngx_env_gateway_cred_parse(plain.data, plain.len, &fields);

    if (rc == NGX_OK) {
        result = NGX_ENVGW_CRED_UNUSABLE;
        rc = ngx_env_gateway_cred_build(r->pool, integration, &fields,
                                        &ctx->upstream_url, cred, &why);

    } else if (rc == NGX_DECLINED) {
        result = NGX_ENVGW_CRED_MALFORMED;
        why = "the decrypted fields are not a JSON object of strings";
    }

    /* the plaintext is not needed any more */
    OPENSSL_cleanse(plain.data, plain.len);

    if (rc == NGX_ERROR) {
        return NGX_ERROR;
    }

    if (rc != NGX_OK) {
        ngx_env_gateway_credentials_clear(ctx);
        return ngx_env_gateway_cred_refuse(r, ctx, result, why);
    }

    ngx_env_gateway_metric_inc(NGX_ENVGW_M_CREDENTIALS
                               + NGX_ENVGW_CRED_INJECTED);

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "env_gateway: credentials of \"%V\" built, "
                   "header of %uz bytes, URL of %uz bytes",
                   &ctx->account_id, cred->value.len, cred->url.len);

    return NGX_OK;
}


/*
 * The credentials record of a route location's account could not be had
 * (_access.c refuses the request): counted when there is none
 * (credentials_unavailable) or it is malformed (gateway_misconfigured).
 * Redis unreachable is gateway_unavailable, counted with the requests.
 */
void
ngx_env_gateway_credentials_absent(ngx_env_gateway_slot_t *slot)
{
    switch (slot->status) {

    case NGX_ENVGW_FETCH_NOT_FOUND:
        ngx_env_gateway_metric_inc(NGX_ENVGW_M_CREDENTIALS
                                   + NGX_ENVGW_CRED_MISSING);
        break;

    case NGX_ENVGW_FETCH_MALFORMED:
        ngx_env_gateway_metric_inc(NGX_ENVGW_M_CREDENTIALS
                                   + NGX_ENVGW_CRED_MALFORMED);
        break;

    default:
        break;
    }
}


/* env_gateway_credentials_total, every result (0 until it happens) */
void
ngx_env_gateway_credentials_metrics(ngx_env_gateway_text_t *t,
    ngx_atomic_uint_t *c)
{
    ngx_uint_t  i;

    ngx_env_gateway_text_literal(t,
        "# HELP env_gateway_credentials_total Upstream credentials of "
        "accounts on route locations, by result.\n"
        "# TYPE env_gateway_credentials_total counter\n");

    for (i = 0; i < NGX_ENVGW_CRED_NRESULTS; i++) {
        ngx_env_gateway_text_literal(t,
                                     "env_gateway_credentials_total{result=\"");
        ngx_env_gateway_text_str(t, &ngx_env_gateway_cred_results[i]);
        ngx_env_gateway_text_literal(t, "\"} ");
        ngx_env_gateway_text_uint(t, c[NGX_ENVGW_M_CREDENTIALS + i], 0);
        ngx_env_gateway_text_literal(t, "\n");
    }
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

