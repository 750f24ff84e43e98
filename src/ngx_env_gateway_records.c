/*
 * env_gateway: Redis records (JSON) -> flat blobs.
 *
 * Pure code: no I/O, no nginx state beyond logging.  A blob is
 *   ngx_env_gateway_blob_t | uint32_t len[nfields] | field bytes
 * so that a request (or the shared cache) takes a record with one memcpy
 * and never parses JSON twice.  A record that is not valid JSON or lacks a
 * required field is refused (NGX_DECLINED) and logged with its key; unknown
 * fields are ignored however large.
 */

#include "ngx_env_gateway.h"

#include <jansson.h>


#define NGX_ENVGW_MAX_FIELDS  4096


typedef struct {
    ngx_uint_t          n;
    const char         *str[NGX_ENVGW_MAX_FIELDS];
    size_t              len[NGX_ENVGW_MAX_FIELDS];
} ngx_env_gateway_fields_t;


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


static ngx_int_t
ngx_env_gateway_push(ngx_env_gateway_fields_t *f, const char *s, size_t len,
    const char **err)
{
    if (f->n == NGX_ENVGW_MAX_FIELDS) {
        *err = "too many entries";
        return NGX_DECLINED;
    }

    f->str[f->n] = s;
    f->len[f->n] = len;
    f->n++;

    return NGX_OK;
}


static ngx_int_t
ngx_env_gateway_parse_token(json_t *root, ngx_env_gateway_fields_t *f,
    uint32_t *flags, int64_t *expires_at, const char **err)
{
    size_t       len;
    json_t      *v;
    const char  *s;

    static const char *names[NGX_ENVGW_TOK_NFIELDS] = {
        ENVGW_F_TOKEN_ID, ENVGW_F_TEAM_ID, ENVGW_F_ENVIRONMENT_ID,
        ENVGW_F_ENVIRONMENT, ENVGW_F_ACCOUNT_ID
    };

    for (f->n = 0; f->n < NGX_ENVGW_TOK_NFIELDS; f->n++) {
        if (f->n == NGX_ENVGW_TOK_ENV_ID) {
            if (ngx_env_gateway_req_string(root, names[f->n], &f->str[f->n],
                                           &f->len[f->n], err)
                != NGX_OK)
            {
                return NGX_DECLINED;
            }
            continue;
        }

        if (ngx_env_gateway_opt_string(root, names[f->n], &f->str[f->n],
                                       &f->len[f->n], err)
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

    v = json_object_get(root, ENVGW_F_EXPIRES_AT);

    if (v && !json_is_null(v)) {
        if (json_is_integer(v) && json_integer_value(v) > 0) {
            *expires_at = json_integer_value(v);

        } else if (json_is_real(v) && json_real_value(v) >= 1) {
            *expires_at = (int64_t) json_real_value(v);

        } else {
            *err = ENVGW_F_EXPIRES_AT;
            return NGX_DECLINED;
        }
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

    for (f->n = 0; f->n < NGX_ENVGW_ACC_NFIELDS; f->n++) {
        if (((f->n == NGX_ENVGW_ACC_ENV_ID)
             ? ngx_env_gateway_req_string
             : ngx_env_gateway_opt_string)(root, names[f->n], &f->str[f->n],
                                           &f->len[f->n], err)
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
    static const char *names[NGX_ENVGW_ENV_NFIELDS] = {
        ENVGW_F_ENVIRONMENT_ID, ENVGW_F_TEAM_ID, ENVGW_F_NAME
    };

    for (f->n = 0; f->n < NGX_ENVGW_ENV_NFIELDS; f->n++) {
        if (((f->n == NGX_ENVGW_ENV_NAME)
             ? ngx_env_gateway_opt_string
             : ngx_env_gateway_req_string)(root, names[f->n], &f->str[f->n],
                                           &f->len[f->n], err)
            != NGX_OK)
        {
            return NGX_DECLINED;
        }
    }

    return NGX_OK;
}


static ngx_int_t
ngx_env_gateway_parse_tenant(json_t *root, ngx_env_gateway_fields_t *f,
    const char **err)
{
    json_t      *v;
    const char  *name;

    f->n = 0;

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


static ngx_int_t
ngx_env_gateway_parse_integration(json_t *root, ngx_env_gateway_fields_t *f,
    const char **err)
{
    json_t      *resources, *methods, *m, *verb, *path;
    const char  *rname, *mname;

    f->n = 1;

    if (ngx_env_gateway_req_string(root, ENVGW_F_UPSTREAM, &f->str[0],
                                   &f->len[0], err)
        != NGX_OK)
    {
        return NGX_DECLINED;
    }

    resources = json_object_get(root, ENVGW_F_RESOURCES);

    if (resources == NULL || json_is_null(resources)) {
        return NGX_OK;
    }

    if (!json_is_object(resources)) {
        *err = ENVGW_F_RESOURCES;
        return NGX_DECLINED;
    }

    json_object_foreach(resources, rname, methods) {
        if (!json_is_object(methods)) {
            *err = rname;
            return NGX_DECLINED;
        }

        json_object_foreach(methods, mname, m) {
            verb = json_object_get(m, ENVGW_F_METHOD);
            path = json_object_get(m, ENVGW_F_PATH);

            if (!json_is_object(m) || !json_is_string(verb)
                || !json_is_string(path) || json_string_length(path) == 0
                || json_string_value(path)[0] != '/')
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
    ngx_env_gateway_fields_t  *f;

    /* the field table is big: keep it off the worker's stack */
    static ngx_env_gateway_fields_t  fields;

    f = &fields;
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
            rc = ngx_env_gateway_parse_tenant(root, f, &err);
            break;

        default: /* NGX_ENVGW_REC_INTEGRATION */
            rc = ngx_env_gateway_parse_integration(root, f, &err);
            break;
        }
    }

    if (rc != NGX_OK) {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "env_gateway: malformed record \"%V\": "
                      "bad or missing \"%s\"", key, err);
        json_decref(root);
        return NGX_DECLINED;
    }

    size = sizeof(ngx_env_gateway_blob_t) + f->n * sizeof(uint32_t);
    for (i = 0; i < f->n; i++) {
        size += f->len[i];
    }

    p = ngx_alloc(size, log);
    if (p == NULL) {
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
        lens[i] = f->len[i];
        p = ngx_cpymem(p, f->str[i], f->len[i]);
    }

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
