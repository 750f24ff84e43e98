/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * env_gateway: request bodies.
 *
 * A body is read in the access phase (after the token was checked: a
 * refused request never invites a body) when the backend could read an
 * identity from it:
 *
 *   - with env_gateway_account_body_field, a JSON body of any verb names
 *     the account in that field (duplicate keys refused: which one would
 *     the backend read?);
 *   - an application/x-www-form-urlencoded body is a place RFC 6750 puts
 *     a credential (access_token), and PHP ($_POST, $_REQUEST), Express
 *     and Go read integrated_account_id from it: both are read with the
 *     query's rules (_args.c).
 *
 * Bodies are read in full, up to NGX_ENVGW_BODY_MAX, from memory or from
 * nginx's temporary file, and kept for the upstream (preserve_body).
 */

#include "ngx_env_gateway.h"

#include <jansson.h>


#define NGX_ENVGW_BODY_MAX  (1024 * 1024)


/* "x-www-form-urlencoded" from offset 12, lowercase for ngx_strlcasestrn */
static ngx_str_t  ngx_env_gateway_form_type =
    ngx_string("application/x-www-form-urlencoded");


/*
 * A form body to some backend: parsers differ on what may follow the type
 * (PHP takes "...urlencoded,x", Go and Python "...urlencoded\t;"), so any
 * Content-Type that mentions the form type anywhere is read as a form.
 */
static ngx_uint_t
ngx_env_gateway_body_is_form(ngx_http_request_t *r)
{
    ngx_str_t  *type;

    if (r->headers_in.content_type == NULL) {
        return 0;
    }

    type = &r->headers_in.content_type->value;

    return ngx_strlcasestrn(type->data, type->data + type->len,
                            ngx_env_gateway_form_type.data + 12,
                            ngx_env_gateway_form_type.len - 12 - 1)
           != NULL;
}


/* does this request's body need reading before it may pass? */
ngx_uint_t
ngx_env_gateway_body_wanted(ngx_http_request_t *r,
    ngx_env_gateway_loc_conf_t *glcf)
{
    /* a subrequest has its main request's headers, and body */
    if (r->headers_in.content_length_n <= 0 && !r->headers_in.chunked) {
        return 0;
    }

    return glcf->body_field.len || ngx_env_gateway_body_is_form(r);
}


static void
ngx_env_gateway_body_handler(ngx_http_request_t *r)
{
    ngx_env_gateway_ctx_t  *ctx;

    ctx = ngx_env_gateway_get_ctx(r);
    ctx->body_read = 1;

    /* the upstream gets the body we read */
    r->preserve_body = 1;
    r->write_event_handler = ngx_http_core_run_phases;
    ngx_http_core_run_phases(r);
}


/*
 * Start reading the body; the phase handler is run again when it is here.
 * Returns what the access handler returns: NGX_DONE, or an HTTP status;
 * for a subrequest NGX_OK (its main request's body is here) or
 * NGX_DECLINED (it is not, and cannot be read first).
 */
ngx_int_t
ngx_env_gateway_body_read(ngx_http_request_t *r, ngx_env_gateway_ctx_t *ctx)
{
    ngx_int_t                 rc;
    ngx_http_request_body_t  *rb;

    if (r != r->main) {
        rb = r->main->request_body;

        if (rb == NULL || rb->rest != 0) {
            /*
             * An auth_request subrequest runs before its main request's
             * body is read: the body cannot be checked, fail closed.
             */
            return NGX_DECLINED;
        }

        ctx->body_read = 1;
        return NGX_OK;
    }

    ctx->body_reading = 1;

    ngx_log_debug0(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "env_gateway: reading the request body");

    rc = ngx_http_read_client_request_body(r, ngx_env_gateway_body_handler);

    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        /* nginx answers (413, 400); an error_page redirect stays refused */
        ctx->body_failed = 1;
        return rc;
    }

    ngx_http_finalize_request(r, NGX_DONE);

    return NGX_DONE;
}


/* the body in one buffer of its own length; NGX_DECLINED: too large */
static ngx_int_t
ngx_env_gateway_body_data(ngx_http_request_t *r, ngx_str_t *body)
{
    u_char                   *p;
    off_t                     len, size;
    ssize_t                   n;
    ngx_buf_t                *b;
    ngx_chain_t              *cl;
    ngx_http_request_body_t  *rb;

    ngx_str_null(body);

    /* what the upstream gets: the main request's body */
    rb = r->main->request_body;

    if (rb == NULL || rb->bufs == NULL) {
        return NGX_OK;
    }

    len = 0;

    for (cl = rb->bufs; cl; cl = cl->next) {
        len += ngx_buf_size(cl->buf);
    }

    if (len == 0) {
        return NGX_OK;
    }

    if (len > NGX_ENVGW_BODY_MAX) {
        return NGX_DECLINED;
    }

    body->data = ngx_pnalloc(r->pool, len);
    if (body->data == NULL) {
        return NGX_ERROR;
    }

    p = body->data;

    for (cl = rb->bufs; cl; cl = cl->next) {
        b = cl->buf;
        size = ngx_buf_size(b);

        if (size == 0) {
            /* e.g. the empty last_buf; b->pos may be NULL */
            continue;
        }

        if (size > body->data + len - p) {
            return NGX_ERROR;
        }

        if (b->in_file) {
            n = ngx_read_file(b->file, p, size, b->file_pos);
            if (n != size) {
                return NGX_ERROR;
            }

        } else {
            ngx_memcpy(p, b->pos, size);
        }

        p += size;
    }

    body->len = p - body->data;

    return NGX_OK;
}


static ngx_int_t
ngx_env_gateway_body_json(ngx_http_request_t *r, ngx_env_gateway_ctx_t *ctx,
    ngx_env_gateway_loc_conf_t *glcf, ngx_str_t *body, const char **why)
{
    json_t        *root, *v, *kv;
    const char    *key;
    json_error_t   err;

    root = json_loadb((char *) body->data, body->len, JSON_REJECT_DUPLICATES,
                      &err);

    if (root == NULL || !json_is_object(root)) {
        json_decref(root);
        *why = "The request body is not a JSON object.";
        return NGX_DECLINED;
    }

    /* Go's encoding/json matches struct fields in any case */
    json_object_foreach(root, key, kv) {
        if (ngx_strcasecmp((u_char *) key, glcf->body_field.data) == 0
            && ngx_strcmp(key, glcf->body_field.data) != 0)
        {
            json_decref(root);
            *why = "The body names the integrated account field twice, in "
                   "another letter case.";
            return NGX_DECLINED;
        }
    }

    v = json_object_get(root, (const char *) glcf->body_field.data);

    if (v && !json_is_null(v)) {
        if (!json_is_string(v) || json_string_length(v) == 0) {
            json_decref(root);
            *why = "The integrated account in the body is not a non-empty "
                   "string.";
            return NGX_DECLINED;
        }

        ctx->body_account.len = json_string_length(v);
        ctx->body_account.data = ngx_pnalloc(r->pool, ctx->body_account.len);
        if (ctx->body_account.data == NULL) {
            json_decref(root);
            return NGX_ERROR;
        }

        ngx_memcpy(ctx->body_account.data, json_string_value(v),
                   ctx->body_account.len);
    }

    json_decref(root);

    return NGX_OK;
}


/*
 * A form body: no credential in any spelling, and the account, when named
 * (byte-identical name, once, unescaped), is an account source.
 */
static ngx_int_t
ngx_env_gateway_body_form(ngx_http_request_t *r, ngx_env_gateway_ctx_t *ctx,
    ngx_env_gateway_loc_conf_t *glcf, ngx_str_t *body, const char **why)
{
    ngx_str_t                names[6], *bad;
    ngx_uint_t               i;
    ngx_env_gateway_qarg_t   found[6];

    ngx_str_set(&names[0], "access_token");
    names[1] = glcf->token_arg;
    ngx_str_set(&names[2], "integrated_account_id");
    names[3] = glcf->body_field;
    ngx_str_set(&names[4], "environment_id");
    ngx_str_null(&names[5]);

    if (glcf->route_resource) {
        ngx_str_set(&names[5], "_method");
    }

    if (!ngx_env_gateway_str_ne(&names[1], &names[0])) {
        ngx_str_null(&names[1]);
    }

    if (!ngx_env_gateway_str_ne(&names[3], &names[2])) {
        ngx_str_null(&names[3]);
    }

    if (ngx_env_gateway_read_args(body, names, found, 6, &bad) != NGX_OK) {
        *why = "A form field is spelled so that a backend could read it as "
               "one the gateway reads (an account or a credential).";
        return NGX_DECLINED;
    }

    if (found[0].count || found[1].count) {
        *why = "The request body carries a credential.";
        return NGX_DECLINED;
    }

    /* PHP's $_REQUEST and Go's FormValue read the form's environment */
    if (found[4].count
        && (found[4].count > 1
            || ngx_env_gateway_str_ne(&found[4].value, &ctx->environment_id)))
    {
        *why = "The body names another environment.";
        return NGX_DECLINED;
    }

    if (found[5].count) {
        *why = "The request names its HTTP method a second time "
               "(_method).";
        return NGX_DECLINED;
    }

    for (i = 2; i < 4; i++) {
        if (found[i].count == 0) {
            continue;
        }

        if (found[i].count > 1 || found[i].escaped
            || found[i].value.len == 0)
        {
            *why = "The integrated account form field is given twice, "
                   "percent-encoded or empty.";
            return NGX_DECLINED;
        }

        if (ctx->body_account.len
            && ngx_env_gateway_str_ne(&ctx->body_account, &found[i].value))
        {
            *why = "The body names two different integrated accounts.";
            return NGX_DECLINED;
        }

        ctx->body_account = found[i].value;
    }

    return NGX_OK;
}


/*
 * Read what the body names.  NGX_OK: ctx->body_account is set (or
 * empty); NGX_DECLINED: the body is ambiguous, *why says how (400).
 */
ngx_int_t
ngx_env_gateway_body_parse(ngx_http_request_t *r, ngx_env_gateway_ctx_t *ctx,
    ngx_env_gateway_loc_conf_t *glcf, const char **why)
{
    ngx_int_t  rc;
    ngx_str_t  body;

    ctx->body_parsed = 1;

    if (ctx->body_encoded) {
        *why = "The request body is content-encoded: the gateway cannot "
               "read what the backend would.";
        return NGX_DECLINED;
    }

    rc = ngx_env_gateway_body_data(r, &body);

    if (rc == NGX_DECLINED) {
        *why = "The request body is too large to read the integrated "
               "account from.";
        return NGX_DECLINED;
    }

    if (rc != NGX_OK || body.len == 0) {
        return rc;
    }

    /* a second copy of the credential, in a field of any name */
    if (ctx->token.len) {
        rc = ngx_env_gateway_token_in(r->pool, &body, &ctx->token);

        if (rc == NGX_ERROR) {
            return NGX_ERROR;
        }

        if (rc) {
            *why = "The credential appears more than once in the request.";
            return NGX_DECLINED;
        }
    }

    if (ngx_env_gateway_body_is_form(r)) {
        ngx_log_debug0(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "env_gateway: form body");

        return ngx_env_gateway_body_form(r, ctx, glcf, &body, why);
    }

    if (glcf->body_field.len) {
        ngx_log_debug0(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "env_gateway: JSON body");

        return ngx_env_gateway_body_json(r, ctx, glcf, &body, why);
    }

    return NGX_OK;
}


/*
 * The account a body names, into ctx->body_account, when the backend
 * could read an identity from the body: with a body field, every request
 * with a body, whatever its verb (GET, DELETE, MERGE); any form body.
 * NGX_OK (no body wanted, or read and parsed), NGX_AGAIN (being read),
 * NGX_DONE (refused), or an error.
 */
ngx_int_t
ngx_env_gateway_body_account(ngx_http_request_t *r,
    ngx_env_gateway_ctx_t *ctx, ngx_env_gateway_loc_conf_t *glcf)
{
    ngx_int_t    rc;
    const char  *why;

    if (!ngx_env_gateway_body_wanted(r, glcf)) {
        return NGX_OK;
    }

    if (!ctx->body_read) {
        rc = ngx_env_gateway_body_read(r, ctx);

        if (rc == NGX_DECLINED) {
            return ngx_env_gateway_refuse_invalid(r, ctx,
                       "The request has a body the gateway must read, "
                       "and a subrequest cannot read it first.");
        }

        if (rc != NGX_OK) {
            return rc;
        }
    }

    if (!ctx->body_parsed) {
        rc = ngx_env_gateway_body_parse(r, ctx, glcf, &why);

        if (rc == NGX_DECLINED) {
            return ngx_env_gateway_refuse_invalid(r, ctx, why);
        }

        if (rc != NGX_OK) {
            return NGX_ERROR;
        }
    }

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "env_gateway: body read, names an account:%d",
                   ctx->body_account.len != 0);

    return NGX_OK;
}
