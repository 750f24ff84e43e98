/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Upstream credentials: the credentials record parser, the auth
 * declaration checks of the integration parser, the in-place JSON reader
 * of decrypted fields (_credentials.c), the {field} templating and the
 * header, basic and query values built from them (_credentials_inject.c).
 * Checked: a header value never holds a control character, a basic value
 * is "Basic " and base64, a query credential is "<url>?name=" or
 * "<url>&name=" and an escaped value, parsed fields lie inside the buffer,
 * and a template the declaration check accepts never fails for another
 * reason than a missing field or a control character.
 *
 * Input: newline-separated fields
 *   integration JSON \n decrypted fields JSON \n upstream URL \n
 *   credentials record JSON \n a raw template
 */

#include "fuzz_common.h"

#include <ctype.h>


static void
fuzz_check_fields(ngx_array_t *fields, ngx_str_t *buf)
{
    ngx_uint_t                     i;
    ngx_env_gateway_cred_field_t  *f;

    f = fields->elts;

    for (i = 0; i < fields->nelts; i++) {
        if (f[i].name.data < buf->data || f[i].value.data < buf->data
            || f[i].name.data + f[i].name.len > buf->data + buf->len
            || f[i].value.data + f[i].value.len > buf->data + buf->len)
        {
            abort();
        }
    }
}


static void
fuzz_check_header(ngx_str_t *v)
{
    size_t  i;

    for (i = 0; i < v->len; i++) {
        if ((v->data[i] < 0x20 && v->data[i] != '\t') || v->data[i] == 0x7f) {
            abort();
        }
    }
}


static void
fuzz_build(ngx_pool_t *pool, ngx_env_gateway_record_t *rec,
    ngx_array_t *fields, ngx_str_t *url)
{
    u_char                  *p, *last;
    ngx_int_t                rc;
    ngx_str_t               *name;
    const char              *why;
    ngx_env_gateway_cred_t   cred;

    ngx_memzero(&cred, sizeof(ngx_env_gateway_cred_t));
    why = NULL;

    rc = ngx_env_gateway_cred_build(pool, rec, fields, url, &cred, &why);

    if (rc == NGX_DECLINED) {
        if (why == NULL || cred.value.len || cred.url.len) {
            abort();
        }

        return;
    }

    if (rc != NGX_OK) {
        abort();
    }

    name = &rec->fields[NGX_ENVGW_INT_AUTH_NAME];

    if (rec->flags & NGX_ENVGW_INT_AUTH_QUERY) {
        if (cred.value.len || cred.url.len < url->len + name->len + 2
            || ngx_memcmp(cred.url.data, url->data, url->len) != 0
            || (cred.url.data[url->len] != '?'
                && cred.url.data[url->len] != '&')
            || ngx_memcmp(cred.url.data + url->len + 1, name->data,
                          name->len) != 0
            || cred.url.data[url->len + 1 + name->len] != '=')
        {
            abort();
        }

        /* the value is escaped: no argument or fragment syntax */
        last = cred.url.data + cred.url.len;

        for (p = cred.url.data + url->len + name->len + 2; p < last; p++) {
            if (*p == '&' || *p == '#' || *p == ' ' || *p < 0x20
                || *p >= 0x7f)
            {
                abort();
            }
        }

        return;
    }

    if (cred.url.len || cred.value.len == 0) {
        abort();
    }

    fuzz_check_header(&cred.value);

    if (rec->flags & NGX_ENVGW_INT_AUTH_BASIC) {
        if (cred.value.len < 6
            || ngx_strncmp(cred.value.data, "Basic ", 6) != 0)
        {
            abort();
        }

        for (p = cred.value.data + 6; p < cred.value.data + cred.value.len;
             p++)
        {
            if (!isalnum(*p) && *p != '+' && *p != '/' && *p != '=') {
                abort();
            }
        }
    }
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    u_char                    *blob;
    size_t                     blob_len;
    ngx_int_t                  rc;
    ngx_str_t                  f[5], out, missing;
    ngx_pool_t                *pool;
    ngx_array_t                fields;
    ngx_env_gateway_record_t   rec;

    static ngx_str_t  ikey = ngx_string("envgw:integration:fuzz:hubspot");
    static ngx_str_t  ckey = ngx_string("envgw:credentials:acc");

    fuzz_init();

    fuzz_split(data, size, '\n', f, 5);

    pool = ngx_create_pool(1024, fuzz_log);
    if (pool == NULL) {
        abort();
    }

    /* the credentials record as Redis holds it */

    if (ngx_env_gateway_record_parse(NGX_ENVGW_REC_CREDENTIALS, f[3].data,
                                     f[3].len, fuzz_log, &ckey, &blob,
                                     &blob_len)
        == NGX_OK)
    {
        if (ngx_env_gateway_record_load(pool, blob, blob_len, &rec) != NGX_OK
            || rec.nfields != NGX_ENVGW_CRED_NFIELDS)
        {
            abort();
        }

        ngx_free(blob);
    }

    /* the decrypted fields, read in place */

    if (ngx_array_init(&fields, pool, 4, sizeof(ngx_env_gateway_cred_field_t))
        != NGX_OK)
    {
        abort();
    }

    rc = ngx_env_gateway_cred_parse(f[1].data, f[1].len, &fields);

    if (rc == NGX_OK) {
        fuzz_check_fields(&fields, &f[1]);

    } else if (rc != NGX_DECLINED) {
        abort();
    }

    /* a raw template, checked as a declaration and expanded */

    (void) ngx_env_gateway_auth_name_ok((char *) f[4].data, f[4].len, 1);
    (void) ngx_env_gateway_auth_name_ok((char *) f[4].data, f[4].len, 0);

    if (rc == NGX_OK) {
        rc = ngx_env_gateway_cred_format(pool, &f[4], &fields, 1, &out,
                                         &missing);

        if (rc == NGX_OK) {
            fuzz_check_header(&out);

        } else if (rc == NGX_ERROR
                   && ngx_env_gateway_auth_format_ok((char *) f[4].data,
                                                     f[4].len)
                      == NGX_OK)
        {
            abort();
        }
    }

    /* an integration's declaration, and what it builds */

    if (ngx_env_gateway_record_parse(NGX_ENVGW_REC_INTEGRATION, f[0].data,
                                     f[0].len, fuzz_log, &ikey, &blob,
                                     &blob_len)
        == NGX_OK)
    {
        if (ngx_env_gateway_record_load(pool, blob, blob_len, &rec) != NGX_OK
            || rec.nfields < NGX_ENVGW_INT_FIRST)
        {
            abort();
        }

        ngx_free(blob);

        if ((rec.flags & NGX_ENVGW_INT_AUTH) && fields.nelts) {
            fuzz_build(pool, &rec, &fields, &f[2]);
        }
    }

    ngx_destroy_pool(pool);
    fuzz_free(f, 5);

    return 0;
}
