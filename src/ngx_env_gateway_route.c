/*
 * env_gateway: per-environment methods.  Pure code: the integration record
 * in, the method and the upstream URL out.
 *
 * With no rest: GET -> list, POST -> create.  With a rest value: a custom
 * method of the resource named by rest is called, and only with its
 * declared verb (405 otherwise); a rest naming none is an id: GET -> get,
 * PATCH/PUT -> update, DELETE -> delete, anything else -> 404 naming rest.
 * Standard names (list, get, create, update, delete) are never custom.
 */

#include "ngx_env_gateway.h"


static ngx_str_t  ngx_env_gateway_std[] = {
    ngx_string("list"), ngx_string("get"), ngx_string("create"),
    ngx_string("update"), ngx_string("delete"), ngx_null_string
};


static ngx_uint_t
ngx_env_gateway_is_standard(ngx_str_t *name)
{
    ngx_str_t  *s;

    for (s = ngx_env_gateway_std; s->len; s++) {
        if (s->len == name->len
            && ngx_strncmp(s->data, name->data, name->len) == 0)
        {
            return 1;
        }
    }

    return 0;
}


/* the quad (resource, method, verb, path) of an integration record */
static ngx_str_t *
ngx_env_gateway_find_method(ngx_env_gateway_record_t *rec, ngx_str_t *res,
    ngx_str_t *method, ngx_uint_t *resource_known)
{
    ngx_uint_t   i;
    ngx_str_t   *f;

    f = rec->fields;

    for (i = 1; i + 3 < rec->nfields; i += 4) {
        if (ngx_env_gateway_str_ne(&f[i], res)) {
            continue;
        }

        *resource_known = 1;

        if (method && !ngx_env_gateway_str_ne(&f[i + 1], method)) {
            return &f[i];
        }
    }

    return NULL;
}


/*
 * Choose the method.  Returns NGX_ENVGW_OK with *quad set, or the refusal
 * code; *method_name is what a refusal message names.
 */
ngx_uint_t
ngx_env_gateway_route_select(ngx_env_gateway_record_t *rec,
    ngx_str_t *resource, ngx_str_t *rest, ngx_str_t *verb,
    ngx_str_t **quad, ngx_str_t *method_name)
{
    ngx_str_t   *q;
    ngx_uint_t   known;

    known = 0;
    *quad = NULL;

    if (rest->len && !ngx_env_gateway_is_standard(rest)) {
        q = ngx_env_gateway_find_method(rec, resource, rest, &known);

        if (q) {
            *method_name = *rest;
            *quad = q;

            /* a custom method answers only to its declared verb */
            if (q[2].len != verb->len
                || ngx_strncasecmp(q[2].data, verb->data, verb->len) != 0)
            {
                return NGX_ENVGW_METHOD_NOT_ALLOWED;
            }

            return NGX_ENVGW_OK;
        }
    }

    if (rest->len == 0) {
        if (verb->len == 3 && ngx_strncmp(verb->data, "GET", 3) == 0) {
            ngx_str_set(method_name, "list");

        } else if (verb->len == 4 && ngx_strncmp(verb->data, "POST", 4) == 0) {
            ngx_str_set(method_name, "create");

        } else {
            *method_name = *verb;
            return NGX_ENVGW_METHOD_NOT_FOUND;
        }

    } else {
        if (verb->len == 3 && ngx_strncmp(verb->data, "GET", 3) == 0) {
            ngx_str_set(method_name, "get");

        } else if ((verb->len == 5
                    && ngx_strncmp(verb->data, "PATCH", 5) == 0)
                   || (verb->len == 3
                       && ngx_strncmp(verb->data, "PUT", 3) == 0))
        {
            ngx_str_set(method_name, "update");

        } else if (verb->len == 6 && ngx_strncmp(verb->data, "DELETE", 6) == 0)
        {
            ngx_str_set(method_name, "delete");

        } else {
            /* POST /proxy/contacts/merge where merge is not defined here */
            *method_name = *rest;
            return NGX_ENVGW_METHOD_NOT_FOUND;
        }
    }

    q = ngx_env_gateway_find_method(rec, resource, method_name, &known);

    if (q == NULL) {
        return NGX_ENVGW_METHOD_NOT_FOUND;
    }

    *quad = q;

    return NGX_ENVGW_OK;
}


/* a value from the request that goes into a path: no path syntax at all */
ngx_int_t
ngx_env_gateway_path_value_ok(ngx_str_t *v)
{
    u_char  *p, *last;

    if (v->len == 0) {
        return NGX_OK;
    }

    p = v->data;
    last = p + v->len;

    for ( /* void */ ; p < last; p++) {
        if (*p < 0x20 || *p == 0x7f || *p == '/' || *p == '\\' || *p == '?'
            || *p == '#' || *p == '%')
        {
            return NGX_DECLINED;
        }

        if (*p == '.' && p + 1 < last && p[1] == '.') {
            return NGX_DECLINED;
        }
    }

    return NGX_OK;
}


/* RFC 3986 unreserved characters stay, everything else is %XX */
static u_char *
ngx_env_gateway_encode(u_char *dst, ngx_str_t *v)
{
    u_char   c;
    size_t   i;

    static u_char  hex[] = "0123456789ABCDEF";

    for (i = 0; i < v->len; i++) {
        c = v->data[i];

        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
            || (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_'
            || c == '~')
        {
            *dst++ = c;
            continue;
        }

        *dst++ = '%';
        *dst++ = hex[c >> 4];
        *dst++ = hex[c & 0xf];
    }

    return dst;
}


/*
 * The value of query argument "name", unescaped.  NGX_DECLINED: absent;
 * NGX_ABORT: given twice.
 */
static ngx_int_t
ngx_env_gateway_arg_value(ngx_pool_t *pool, ngx_str_t *args, ngx_str_t *name,
    ngx_str_t *value)
{
    u_char      *p, *last, *end, *eq, *dst, *src;
    ngx_uint_t   n;

    if (args->len == 0) {
        return NGX_DECLINED;
    }

    n = 0;
    p = args->data;
    last = p + args->len;

    while (p < last) {
        end = ngx_strlchr(p, last, '&');
        if (end == NULL) {
            end = last;
        }

        eq = ngx_strlchr(p, end, '=');

        if (eq && (size_t) (eq - p) == name->len
            && ngx_strncasecmp(p, name->data, name->len) == 0)
        {
            if (n++) {
                return NGX_ABORT;
            }

            value->data = ngx_pnalloc(pool, end - eq);
            if (value->data == NULL) {
                return NGX_ERROR;
            }

            src = eq + 1;
            dst = value->data;
            ngx_unescape_uri(&dst, &src, end - eq - 1, NGX_UNESCAPE_URI);
            value->len = dst - value->data;
        }

        p = end + 1;
    }

    return n ? NGX_OK : NGX_DECLINED;
}


/*
 * upstream + template (with {id} = rest and {name} = query argument, each
 * percent-encoded) + the query minus the arguments the gateway consumed
 * (the fixed ones, and those put into the path).
 * NGX_DECLINED: a template argument is missing, ambiguous or has path
 * syntax; *bad names it.
 */
ngx_int_t
ngx_env_gateway_route_url(ngx_pool_t *pool, ngx_str_t *upstream,
    ngx_str_t *tmpl, ngx_str_t *rest, ngx_str_t *args, ngx_str_t *consumed,
    ngx_uint_t nconsumed, ngx_str_t *url, ngx_str_t *bad)
{
    u_char      *p, *last, *start, *close, *dst, *end, *eq, *q, *query;
    size_t       len;
    ngx_int_t    rc;
    ngx_str_t    name, value, used[16];
    ngx_uint_t   i, nused, skip;

    nused = 0;

    /* worst case: every byte of every inserted value encoded */
    len = upstream->len + tmpl->len + 1 + args->len;

    for (p = tmpl->data, last = p + tmpl->len; p < last; p++) {
        if (*p == '{') {
            len += 3 * ngx_max(rest->len, args->len);
        }
    }

    start = ngx_pnalloc(pool, len);
    if (start == NULL) {
        return NGX_ERROR;
    }

    dst = ngx_cpymem(start, upstream->data, upstream->len);

    /* "http://up/" + "/path": no double slash */
    if (upstream->len && upstream->data[upstream->len - 1] == '/'
        && tmpl->len && tmpl->data[0] == '/')
    {
        dst--;
    }

    p = tmpl->data;
    last = p + tmpl->len;

    while (p < last) {
        if (*p != '{') {
            *dst++ = *p++;
            continue;
        }

        close = ngx_strlchr(p, last, '}');
        if (close == NULL) {
            *dst++ = *p++;
            continue;
        }

        name.data = p + 1;
        name.len = close - p - 1;
        p = close + 1;

        if (name.len == 2 && ngx_strncmp(name.data, "id", 2) == 0) {
            dst = ngx_env_gateway_encode(dst, rest);
            continue;
        }

        rc = ngx_env_gateway_arg_value(pool, args, &name, &value);

        if (rc == NGX_ERROR) {
            return NGX_ERROR;
        }

        if (rc != NGX_OK || value.len == 0
            || ngx_env_gateway_path_value_ok(&value) != NGX_OK)
        {
            *bad = name;
            return NGX_DECLINED;
        }

        dst = ngx_env_gateway_encode(dst, &value);

        if (nused < 16) {
            used[nused++] = name;
        }
    }

    /* the query, minus what was consumed */
    query = dst + 1;
    q = query;
    p = args->data;
    last = args->len ? p + args->len : p;    /* no arithmetic on NULL */

    while (p < last) {
        end = ngx_strlchr(p, last, '&');
        if (end == NULL) {
            end = last;
        }

        eq = ngx_strlchr(p, end, '=');
        name.data = p;
        name.len = (eq ? eq : end) - p;
        skip = (name.len == 0);

        for (i = 0; !skip && i < nconsumed; i++) {
            skip = !ngx_env_gateway_arg_ne(&name, &consumed[i]);
        }

        for (i = 0; !skip && i < nused; i++) {
            skip = !ngx_env_gateway_arg_ne(&name, &used[i]);
        }

        if (!skip) {
            if (q != query) {
                *q++ = '&';
            }
            q = ngx_cpymem(q, p, end - p);
        }

        p = end + 1;
    }

    if (q != query) {
        *dst = '?';
        dst = q;
    }

    url->data = start;
    url->len = dst - start;

    return NGX_OK;
}
