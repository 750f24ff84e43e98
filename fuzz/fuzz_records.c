/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Record JSON -> blob -> struct for every record kind:
 * ngx_env_gateway_record_parse(), then ngx_env_gateway_record_load() into a
 * pool, then a check that every field lies inside the loaded copy; the
 * worker's table of parsed records (ngx_env_gateway_parsed_record()) gives
 * the same blob, or the same refusal, whatever it kept before.
 *
 * Input: the record JSON.  Every input is parsed as each of the five kinds
 * (token, account, env, tenant, integration), so one corpus serves all.
 *
 * A token's environment name becomes a label value of the metrics
 * (env_gateway_requests_total{environment="..."}): it is escaped as the
 * module does, and the escaped text must hold no raw quote or newline and
 * read back as the name.
 *
 * The fields of a token, account or environment record go into identity
 * headers: a record that parses holds no control character in them but
 * HTAB (a bare CR or LF would end the header line for some backends).
 */

#include "fuzz_common.h"


static void
fuzz_label(ngx_str_t *name)
{
    u_char                  *p, *last, *n, *nlast;
    ngx_int_t                rc;
    ngx_str_t                out;
    ngx_pool_t              *pool;
    ngx_env_gateway_text_t   t;

    pool = ngx_create_pool(1024, fuzz_log);
    if (pool == NULL) {
        abort();
    }

    ngx_env_gateway_text_init(&t);

    do {
        ngx_env_gateway_metrics_label(&t, name->data, name->len);
    } while ((rc = ngx_env_gateway_text_next(&t, pool)) == NGX_AGAIN);

    if (rc != NGX_OK) {
        abort();
    }

    ngx_env_gateway_text_string(&t, &out);

    /* read it back: \\, \" and \n only, and it is the name */
    p = out.data;
    last = p + out.len;
    n = name->data;
    nlast = n + name->len;

    while (p < last) {
        if (*p == '"' || *p == '\n') {
            abort();
        }

        if (*p == '\\') {
            if (p + 1 == last) {
                abort();
            }

            p++;

            if (n == nlast
                || !((*p == '\\' && *n == '\\') || (*p == '"' && *n == '"')
                     || (*p == 'n' && *n == '\n')))
            {
                abort();
            }

        } else if (n == nlast || *p != *n) {
            abort();
        }

        p++;
        n++;
    }

    if (n != nlast) {
        abort();
    }

    ngx_destroy_pool(pool);
}


/* fields 0 .. n-1 but "skip" */
static void
fuzz_header_safe(ngx_env_gateway_record_t *rec, ngx_uint_t n,
    ngx_uint_t skip)
{
    size_t      j;
    ngx_uint_t  i;
    u_char      c;

    for (i = 0; i < n; i++) {
        if (i == skip) {
            continue;
        }

        for (j = 0; j < rec->fields[i].len; j++) {
            c = rec->fields[i].data[j];

            if ((c < 0x20 && c != '\t') || c == 0x7f) {
                abort();
            }
        }
    }
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    u_char                    *blob, *kblob;
    size_t                     blob_len, kblob_len, total;
    ngx_str_t                  json;
    size_t                     j;
    ngx_uint_t                 kind, i, n, kept;
    static volatile u_char     sum;
    ngx_pool_t                *pool;
    ngx_env_gateway_record_t   rec;

    static ngx_str_t  key = ngx_string("envgw:fuzz:key");

    fuzz_init();

    json = fuzz_str(data, size);

    for (kind = 0; kind < NGX_ENVGW_REC_LAST; kind++) {
        blob = NULL;
        blob_len = 0;

        if (ngx_env_gateway_record_parse(kind, json.data, json.len, fuzz_log,
                                         &key, &blob, &blob_len)
            != NGX_OK)
        {
            /* nor through the table of parsed records: nothing kept */
            if (ngx_env_gateway_parsed_record(kind, json.data, json.len,
                                              fuzz_log, &key, &kblob,
                                              &kblob_len, &kept)
                == NGX_OK)
            {
                abort();
            }

            continue;
        }

        /*
         * The table of parsed records (kept across inputs: the previous
         * input, or another kind, under the same key) gives the same
         * blob, parsed the first time and kept the second.
         */
        for (n = 0; n < 2; n++) {
            if (ngx_env_gateway_parsed_record(kind, json.data, json.len,
                                              fuzz_log, &key, &kblob,
                                              &kblob_len, &kept)
                != NGX_OK
                || kblob_len != blob_len
                || ngx_memcmp(kblob, blob, blob_len) != 0)
            {
                abort();
            }

            if (!kept) {
                ngx_free(kblob);
            }
        }

        pool = ngx_create_pool(1024, fuzz_log);
        if (pool == NULL) {
            abort();
        }

        if (ngx_env_gateway_record_load(pool, blob, blob_len, &rec)
            != NGX_OK)
        {
            abort();
        }

        total = sizeof(ngx_env_gateway_blob_t)
                + rec.nfields * sizeof(uint32_t);

        for (i = 0; i < rec.nfields; i++) {
            total += rec.fields[i].len;

            /* touch every byte: ASan checks it lies in the copy */
            for (j = 0; j < rec.fields[i].len; j++) {
                sum += rec.fields[i].data[j];
            }
        }

        if (total != blob_len) {
            abort();
        }

        switch (kind) {
        case NGX_ENVGW_REC_TOKEN:
            if (rec.nfields != NGX_ENVGW_TOK_NFIELDS
                || rec.fields[NGX_ENVGW_TOK_ENV_ID].len == 0)
            {
                abort();
            }

            fuzz_label(&rec.fields[NGX_ENVGW_TOK_ENV_NAME]);
            fuzz_header_safe(&rec, NGX_ENVGW_TOK_RATE_LIMIT,
                             NGX_ENVGW_TOK_RATE_LIMIT);
            break;
        case NGX_ENVGW_REC_ACCOUNT:
            if (rec.nfields != NGX_ENVGW_ACC_NFIELDS) {
                abort();
            }
            /* the integration's name is never a header */
            fuzz_header_safe(&rec, NGX_ENVGW_ACC_NFIELDS,
                             NGX_ENVGW_ACC_INTEGRATION);
            break;
        case NGX_ENVGW_REC_ENV:
            if (rec.nfields != NGX_ENVGW_ENV_NFIELDS) {
                abort();
            }
            fuzz_header_safe(&rec, NGX_ENVGW_ENV_RATE_LIMIT,
                             NGX_ENVGW_ENV_RATE_LIMIT);
            break;
        case NGX_ENVGW_REC_TENANT:
            if (rec.nfields % 2) {
                abort();
            }
            break;
        case NGX_ENVGW_REC_CREDENTIALS:
            if (rec.nfields != NGX_ENVGW_CRED_NFIELDS) {
                abort();
            }
            break;
        default:
            if (rec.nfields < NGX_ENVGW_INT_FIRST
                || (rec.nfields - NGX_ENVGW_INT_FIRST) % 4 != 0
                || rec.fields[NGX_ENVGW_INT_UPSTREAM].len == 0
                || ((rec.flags & NGX_ENVGW_INT_AUTH)
                    && rec.fields[NGX_ENVGW_INT_AUTH_NAME].len == 0))
            {
                abort();
            }
        }

        ngx_destroy_pool(pool);
        ngx_free(blob);
    }

    free(json.data);

    return 0;
}
