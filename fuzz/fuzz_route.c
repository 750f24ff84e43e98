/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Route selection and template expansion: an integration record is parsed
 * and loaded (as the module does), then ngx_env_gateway_route_select()
 * picks the method for (resource, rest, verb), ngx_env_gateway_path_value_ok()
 * vets rest, and ngx_env_gateway_route_url() expands the chosen path
 * template with rest and the query arguments.  The template is also
 * expanded directly from the input, so templates the record parser would
 * refuse ({ without }, no leading /, ...) are covered too.
 *
 * A 405's Allow header carries the method's declared verb only when
 * ngx_env_gateway_http_token() says it is an HTTP token: checked against
 * RFC 9110's tchar here, for the declared verb and for the input's verb.
 *
 * Input: newline-separated fields
 *   integration JSON \n resource \n rest \n verb \n query args \n template
 */

#include "fuzz_common.h"

#include <ctype.h>


/* RFC 9110 5.6.2: token = 1*tchar */
static void
fuzz_token_check(ngx_str_t *s)
{
    size_t      i;
    ngx_uint_t  want;

    want = (s->len > 0);

    for (i = 0; i < s->len; i++) {
        if (!isalnum(s->data[i])
            && strchr("!#$%&'*+-.^_`|~", s->data[i]) == NULL)
        {
            want = 0;
        }

        /* a byte isalnum() takes for a letter in some locale is none */
        if (s->data[i] >= 0x80 || s->data[i] == '\0') {
            want = 0;
        }
    }

    if (ngx_env_gateway_http_token(s) != want) {
        abort();
    }
}


static void
fuzz_url(ngx_str_t *upstream, ngx_str_t *tmpl, ngx_str_t *rest,
    ngx_str_t *args)
{
    u_char      *p;
    ngx_int_t    rc;
    ngx_str_t    url, bad;
    ngx_uint_t   i;
    ngx_pool_t  *pool;
    const char  *why;

    static ngx_str_t  consumed[] = {
        ngx_string("integrated_account_id"), ngx_string("environment_id"),
        ngx_string("access_token")
    };

    pool = ngx_create_pool(1024, fuzz_log);
    if (pool == NULL) {
        abort();
    }

    ngx_str_null(&bad);
    why = NULL;

    rc = ngx_env_gateway_route_url(pool, upstream, tmpl, rest, args,
                                   consumed, 3, &url, &bad, &why);

    if (rc == NGX_OK) {
        /* the URL starts with the upstream (minus a doubled slash) */
        if (url.len + 1 < upstream->len
            || ngx_strncmp(url.data, upstream->data,
                           upstream->len ? upstream->len - 1 : 0) != 0)
        {
            abort();
        }

        /* inserted values are percent-encoded: no raw '#' can appear
         * unless the template or the upstream had one */
        p = memchr(url.data, '#', url.len);
        if (p && !memchr(tmpl->data, '#', tmpl->len)
            && !memchr(upstream->data, '#', upstream->len)
            && !memchr(args->data, '#', args->len))
        {
            abort();
        }

    } else if (rc == NGX_DECLINED) {
        for (i = 0; i < 3; i++) {
            if (bad.data == consumed[i].data) {
                break;  /* a consumed argument spelled another way */
            }
        }

        if (why == NULL
            || (i == 3
                && (bad.data == NULL || bad.data < tmpl->data
                    || bad.data + bad.len > tmpl->data + tmpl->len)))
        {
            abort();   /* *bad must name a piece of the template */
        }

    } else {
        abort();
    }

    ngx_destroy_pool(pool);
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    u_char                    *blob;
    size_t                     blob_len;
    ngx_str_t                  f[6], *quad, method, upstream;
    ngx_uint_t                 rc;
    ngx_pool_t                *pool;
    ngx_env_gateway_record_t   rec;

    static ngx_str_t  key = ngx_string("envgw:integration:fuzz:hubspot");

    fuzz_init();

    fuzz_split(data, size, '\n', f, 6);

    (void) ngx_env_gateway_path_value_ok(&f[2]);
    (void) ngx_env_gateway_path_value_ok(&f[1]);
    fuzz_token_check(&f[3]);

    upstream.data = (u_char *) "http://hubspot_prod/";
    upstream.len = sizeof("http://hubspot_prod/") - 1;

    if (ngx_env_gateway_record_parse(NGX_ENVGW_REC_INTEGRATION, f[0].data,
                                     f[0].len, fuzz_log, &key, &blob,
                                     &blob_len)
        == NGX_OK)
    {
        pool = ngx_create_pool(1024, fuzz_log);
        if (pool == NULL
            || ngx_env_gateway_record_load(pool, blob, blob_len, &rec)
               != NGX_OK)
        {
            abort();
        }

        ngx_str_null(&method);

        rc = ngx_env_gateway_route_select(&rec, &f[1], &f[2], &f[3], &quad,
                                          &method);

        if (rc == NGX_ENVGW_OK || rc == NGX_ENVGW_METHOD_NOT_ALLOWED) {
            if (quad == NULL || quad < rec.fields + NGX_ENVGW_INT_FIRST
                || quad + 4 > rec.fields + rec.nfields)
            {
                abort();
            }

            if (rc == NGX_ENVGW_METHOD_NOT_ALLOWED) {
                fuzz_token_check(&quad[NGX_ENVGW_INT_VERB]);
            }

            if (rc == NGX_ENVGW_OK
                && ngx_env_gateway_path_value_ok(&f[2]) == NGX_OK)
            {
                fuzz_url(&rec.fields[NGX_ENVGW_INT_UPSTREAM], &quad[3],
                         &f[2], &f[4]);
            }

        } else if (rc != NGX_ENVGW_METHOD_NOT_FOUND) {
            abort();
        }

        ngx_destroy_pool(pool);
        ngx_free(blob);
    }

    fuzz_url(&upstream, &f[5], &f[2], &f[4]);
    fuzz_url(&f[1], &f[5], &f[2], &f[4]);

    fuzz_free(f, 6);

    return 0;
}
