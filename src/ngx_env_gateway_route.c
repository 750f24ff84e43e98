/* SPDX-License-Identifier: BSD-2-Clause */
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
    ngx_str_t *method)
{
    ngx_uint_t   i;
    ngx_str_t   *q;

    for (i = NGX_ENVGW_INT_FIRST;
         i + NGX_ENVGW_INT_NFIELDS <= rec->nfields;
         i += NGX_ENVGW_INT_NFIELDS)
    {
        q = &rec->fields[i];

        if (!ngx_env_gateway_str_ne(&q[NGX_ENVGW_INT_RESOURCE], res)
            && !ngx_env_gateway_str_ne(&q[NGX_ENVGW_INT_METHOD], method))
        {
            return q;
        }
    }

    return NULL;
}


/*
 * The standard method a request means, by its verb and whether it has a
 * rest value; no record is needed.  NGX_ENVGW_OK: *name is a standard
 * method; NGX_ENVGW_METHOD_NOT_FOUND: none, and *name is what a refusal
 * names (the verb, or the rest).
 */
ngx_uint_t
ngx_env_gateway_route_name(ngx_str_t *rest, ngx_str_t *verb, ngx_str_t *name)
{
    if (rest->len == 0) {
        if (verb->len == 3 && ngx_strncmp(verb->data, "GET", 3) == 0) {
            ngx_str_set(name, "list");

        } else if (verb->len == 4 && ngx_strncmp(verb->data, "POST", 4) == 0) {
            ngx_str_set(name, "create");

        } else {
            *name = *verb;
            return NGX_ENVGW_METHOD_NOT_FOUND;
        }

        return NGX_ENVGW_OK;
    }

    if (verb->len == 3 && ngx_strncmp(verb->data, "GET", 3) == 0) {
        ngx_str_set(name, "get");

    } else if ((verb->len == 5 && ngx_strncmp(verb->data, "PATCH", 5) == 0)
               || (verb->len == 3 && ngx_strncmp(verb->data, "PUT", 3) == 0))
    {
        ngx_str_set(name, "update");

    } else if (verb->len == 6 && ngx_strncmp(verb->data, "DELETE", 6) == 0) {
        ngx_str_set(name, "delete");

    } else {
        /* POST /proxy/contacts/merge where merge is not defined here */
        *name = *rest;
        return NGX_ENVGW_METHOD_NOT_FOUND;
    }

    return NGX_ENVGW_OK;
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
    ngx_str_t   *q, *declared;
    ngx_uint_t   refusal;

    *quad = NULL;

    if (rest->len && !ngx_env_gateway_is_standard(rest)) {
        q = ngx_env_gateway_find_method(rec, resource, rest);

        if (q) {
            *method_name = *rest;
            *quad = q;

            /* a custom method answers only to its declared verb */
            declared = &q[NGX_ENVGW_INT_VERB];

            if (declared->len != verb->len
                || ngx_strncasecmp(declared->data, verb->data, verb->len)
                   != 0)
            {
                return NGX_ENVGW_METHOD_NOT_ALLOWED;
            }

            return NGX_ENVGW_OK;
        }
    }

    refusal = ngx_env_gateway_route_name(rest, verb, method_name);

    if (refusal != NGX_ENVGW_OK) {
        return refusal;
    }

    *quad = ngx_env_gateway_find_method(rec, resource, method_name);

    return (*quad == NULL) ? NGX_ENVGW_METHOD_NOT_FOUND : NGX_ENVGW_OK;
}


/* nginx's method flag of a verb, as ngx_http_parse_request_line sets it */
ngx_uint_t
ngx_env_gateway_method_flag(ngx_str_t *verb)
{
    ngx_uint_t  i;

    static struct {
        ngx_str_t   name;
        ngx_uint_t  flag;
    } methods[] = {
        { ngx_string("GET"), NGX_HTTP_GET },
        { ngx_string("HEAD"), NGX_HTTP_HEAD },
        { ngx_string("POST"), NGX_HTTP_POST },
        { ngx_string("PUT"), NGX_HTTP_PUT },
        { ngx_string("DELETE"), NGX_HTTP_DELETE },
        { ngx_string("PATCH"), NGX_HTTP_PATCH },
        { ngx_string("OPTIONS"), NGX_HTTP_OPTIONS }
    };

    for (i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
        if (!ngx_env_gateway_str_ne(&methods[i].name, verb)) {
            return methods[i].flag;
        }
    }

    return NGX_HTTP_UNKNOWN;
}


/*
 * An HTTP token (RFC 9110, 5.6.2): one or more tchar.  A declared verb
 * that is not one cannot be named in an Allow header.
 */
ngx_uint_t
ngx_env_gateway_http_token(ngx_str_t *s)
{
    u_char  *p, *last;

    static u_char  tchar[] = "!#$%&'*+-.^_`|~";

    if (s->len == 0) {
        return 0;
    }

    last = s->data + s->len;

    for (p = s->data; p < last; p++) {
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')
            || (*p >= '0' && *p <= '9'))
        {
            continue;
        }

        if (ngx_strlchr(tchar, tchar + sizeof(tchar) - 1, *p) == NULL) {
            return 0;
        }
    }

    return 1;
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


/*
 * The value of the query argument that fills the placeholder {name}: the
 * one argument whose name is byte-identical to it, percent-decoded.
 * NGX_DECLINED when there is none, two, or one a backend parser could
 * read as that name (NGX_ENVGW_ARG_ALIAS): the value would be a guess.
 */
static ngx_int_t
ngx_env_gateway_template_arg(ngx_pool_t *pool, ngx_str_t *args,
    ngx_str_t *name, ngx_str_t *value)
{
    u_char                  *dst, *src;
    ngx_uint_t               n;
    ngx_env_gateway_arg_t    arg, found;
    ngx_env_gateway_args_t   it;

    n = 0;
    ngx_memzero(&found, sizeof(ngx_env_gateway_arg_t));

    ngx_env_gateway_args_init(&it, args);

    while (ngx_env_gateway_args_next(&it, &arg) == NGX_OK) {

        switch (ngx_env_gateway_arg_match(&arg, name)) {

        case NGX_ENVGW_ARG_EXACT:
            if (n++) {
                return NGX_DECLINED;
            }

            found = arg;
            break;

        case NGX_ENVGW_ARG_ALIAS:
            return NGX_DECLINED;

        default: /* NGX_ENVGW_ARG_OTHER */
            break;
        }
    }

    if (n == 0 || found.value.len == 0) {
        return NGX_DECLINED;
    }

    /* decoding never lengthens: the value's own length is enough */
    value->data = ngx_pnalloc(pool, found.value.len);
    if (value->data == NULL) {
        return NGX_ERROR;
    }

    src = found.value.data;
    dst = value->data;
    ngx_unescape_uri(&dst, &src, found.value.len, NGX_UNESCAPE_URI);
    value->len = dst - value->data;

    return NGX_OK;
}


/* a placeholder of the template and the value it expands to */
typedef struct {
    ngx_str_t    name;
    ngx_str_t   *value;
} ngx_env_gateway_ph_t;


/*
 * Is the path segment being expanded "." or ".." once decoded ("%2e"
 * included), and did a template value take part in it?  Fed the bytes of
 * the template and the values' bytes as they will be written.
 */
typedef struct {
    ngx_uint_t   dots;
    ngx_uint_t   other;         /* a byte that is not part of a dot */
    ngx_uint_t   esc;           /* bytes of a "%XX" still to come */
    u_char       hi;            /* the first of them */
    ngx_str_t    name;          /* the last placeholder in it, if any */
} ngx_env_gateway_segment_t;


static void
ngx_env_gateway_segment_feed(ngx_env_gateway_segment_t *seg, u_char c)
{
    switch (seg->esc) {

    case 2:
        seg->hi = c;
        seg->esc = 1;
        return;

    case 1:
        seg->esc = 0;

        if (seg->hi == '2' && (c | 0x20) == 'e') {
            seg->dots++;

        } else {
            seg->other = 1;
        }

        return;

    default:
        if (c == '%') {
            seg->esc = 2;

        } else if (c == '.') {
            seg->dots++;

        } else {
            seg->other = 1;
        }
    }
}


/*
 * The segment ends: did a template value make it "." or ".."?  If so,
 * *name is the placeholder that did.
 */
static ngx_uint_t
ngx_env_gateway_segment_end(ngx_env_gateway_segment_t *seg, ngx_str_t *name)
{
    ngx_uint_t  bad;

    bad = seg->name.data && !seg->other && !seg->esc
          && (seg->dots == 1 || seg->dots == 2);

    *name = seg->name;

    ngx_memzero(seg, sizeof(ngx_env_gateway_segment_t));

    return bad;
}


static ngx_uint_t
ngx_env_gateway_is_id(ngx_str_t *name)
{
    return name->len == 2 && ngx_strncmp(name->data, "id", 2) == 0;
}


/*
 * The placeholders of the template, in order, with their values: rest for
 * {id}, the query argument for {name}; none may have path syntax or make
 * a "." or ".." segment.  NGX_DECLINED: *bad and *why say which and why.
 */
static ngx_int_t
ngx_env_gateway_template_values(ngx_pool_t *pool, ngx_str_t *tmpl,
    ngx_str_t *rest, ngx_str_t *args, ngx_array_t *phs, ngx_str_t *bad,
    const char **why)
{
    u_char                     *p, *last, *close, *v, *vlast;
    ngx_int_t                   rc;
    ngx_str_t                   name, *value;
    ngx_env_gateway_ph_t       *ph;
    ngx_env_gateway_segment_t   seg;

    ngx_memzero(&seg, sizeof(ngx_env_gateway_segment_t));

    p = tmpl->data;
    last = p + tmpl->len;

    for ( ;; ) {

        if (p == last || *p == '/') {
            if (ngx_env_gateway_segment_end(&seg, bad)) {
                *why = "Method %V of resource %V: the value of {%V} would "
                       "be a \".\" or \"..\" path segment.";
                return NGX_DECLINED;
            }

            if (p == last) {
                return NGX_OK;
            }

            p++;
            continue;
        }

        close = (*p == '{') ? ngx_strlchr(p, last, '}') : NULL;

        if (close == NULL) {
            ngx_env_gateway_segment_feed(&seg, *p++);
            continue;
        }

        name.data = p + 1;
        name.len = close - p - 1;
        p = close + 1;

        if (seg.esc) {
            /* "%2{id}": the value would finish the template's escape */
            *bad = name;
            *why = "Method %V of resource %V: the value of {%V} would "
                   "complete a percent-escape of the path template.";
            return NGX_DECLINED;
        }

        if (ngx_env_gateway_is_id(&name)) {
            value = rest;

        } else {
            value = ngx_palloc(pool, sizeof(ngx_str_t));
            if (value == NULL) {
                return NGX_ERROR;
            }

            rc = ngx_env_gateway_template_arg(pool, args, &name, value);

            if (rc == NGX_ERROR) {
                return NGX_ERROR;
            }

            if (rc != NGX_OK) {
                value = NULL;
            }
        }

        if (value == NULL || ngx_env_gateway_path_value_ok(value) != NGX_OK)
        {
            *bad = name;
            *why = "Method %V of resource %V needs one query argument "
                   "\"%V\" without path characters.";
            return NGX_DECLINED;
        }

        ph = ngx_array_push(phs);
        if (ph == NULL) {
            return NGX_ERROR;
        }

        ph->name = name;
        ph->value = value;

        /*
         * bytes escaped as %XX are never a dot; '.' is written as is, and
         * no value has a '%' (path_value_ok) to start an escape with
         */
        seg.name = name;

        for (v = value->data, vlast = v + value->len; v < vlast; v++) {
            if (ngx_escape_uri(NULL, v, 1, NGX_ESCAPE_URI_COMPONENT)) {
                seg.other = 1;

            } else {
                ngx_env_gateway_segment_feed(&seg, *v);
            }
        }
    }
}


/*
 * One pass of ngx_env_gateway_route_url(), measuring or writing: the same
 * statements over the same data (see _text.c).
 */
static void
ngx_env_gateway_url_write(ngx_env_gateway_text_t *t, ngx_str_t *upstream,
    ngx_str_t *tmpl, ngx_str_t *args, ngx_array_t *phs, ngx_array_t *drop)
{
    u_char                  *p, *last, *close;
    ngx_str_t                up, *names;
    ngx_uint_t               i, k, first, skip;
    ngx_env_gateway_ph_t    *ph;
    ngx_env_gateway_arg_t    arg;
    ngx_env_gateway_args_t   it;

    /* "http://up/" + "/path": no double slash */
    up = *upstream;

    if (up.len && up.data[up.len - 1] == '/'
        && tmpl->len && tmpl->data[0] == '/')
    {
        up.len--;
    }

    ngx_env_gateway_text_str(t, &up);

    /* the template, its placeholders replaced by their encoded values */

    ph = phs->elts;
    k = 0;

    p = tmpl->data;
    last = p + tmpl->len;

    while (p < last) {
        close = (*p == '{') ? ngx_strlchr(p, last, '}') : NULL;

        if (close == NULL) {
            for (close = p + 1; close < last && *close != '{'; close++) {
                /* void */
            }

            ngx_env_gateway_text_bytes(t, p, close - p);
            p = close;
            continue;
        }

        p = close + 1;

        if (k == phs->nelts) {
            /* cannot be: the same template was walked for the values */
            t->failed = 1;
            return;
        }

        ngx_env_gateway_text_escape(t, ph[k].value->data, ph[k].value->len,
                                    NGX_ENVGW_ESCAPE_PATH);
        k++;
    }

    /* the query, argument by argument as sent, minus those dropped */

    names = drop->elts;
    first = 1;

    ngx_env_gateway_args_init(&it, args);

    while (ngx_env_gateway_args_next(&it, &arg) == NGX_OK) {
        skip = 0;

        for (i = 0; !skip && i < drop->nelts; i++) {
            skip = (ngx_env_gateway_arg_match(&arg, &names[i])
                    == NGX_ENVGW_ARG_EXACT);
        }

        if (skip) {
            continue;
        }

        if (first) {
            ngx_env_gateway_text_literal(t, "?");
            first = 0;

        } else {
            ngx_env_gateway_text_literal(t, "&");
        }

        ngx_env_gateway_text_str(t, &arg.raw);
    }
}


/*
 * upstream + template (with {id} = rest and {name} = the query argument
 * "name", each percent-encoded) + the query minus the arguments the
 * gateway consumed (the fixed ones, and those put into the path).
 * NGX_DECLINED: a template argument is missing, ambiguous or has path
 * syntax, a value would be a "." or ".." segment, or a consumed argument
 * is spelled as a backend parser could read as it (the access code
 * refuses those first); *why is the refusal message, a format for the
 * method, the resource and *bad.  The URL is measured, then written.
 */
ngx_int_t
ngx_env_gateway_route_url(ngx_pool_t *pool, ngx_str_t *upstream,
    ngx_str_t *tmpl, ngx_str_t *rest, ngx_str_t *args, ngx_str_t *consumed,
    ngx_uint_t nconsumed, ngx_str_t *url, ngx_str_t *bad, const char **why)
{
    ngx_int_t                rc;
    ngx_str_t               *name;
    ngx_uint_t               i;
    ngx_array_t              phs, drop;
    ngx_env_gateway_ph_t    *ph;
    ngx_env_gateway_arg_t    arg;
    ngx_env_gateway_args_t   it;
    ngx_env_gateway_text_t   t;

    if (ngx_array_init(&phs, pool, 4, sizeof(ngx_env_gateway_ph_t))
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    rc = ngx_env_gateway_template_values(pool, tmpl, rest, args, &phs, bad,
                                         why);
    if (rc != NGX_OK) {
        return rc;
    }

    if (ngx_array_init(&drop, pool, nconsumed + phs.nelts, sizeof(ngx_str_t))
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    /* the names not forwarded: consumed ones, those put into the path */

    ngx_env_gateway_args_init(&it, args);

    while (ngx_env_gateway_args_next(&it, &arg) == NGX_OK) {
        for (i = 0; i < nconsumed; i++) {
            if (ngx_env_gateway_arg_match(&arg, &consumed[i])
                == NGX_ENVGW_ARG_ALIAS)
            {
                *bad = consumed[i];
                *why = "Method %V of resource %V: the query argument "
                       "\"%V\" is spelled in a way another parser would "
                       "read differently.";
                return NGX_DECLINED;
            }
        }
    }

    for (i = 0; i < nconsumed; i++) {
        name = ngx_array_push(&drop);
        if (name == NULL) {
            return NGX_ERROR;
        }

        *name = consumed[i];
    }

    ph = phs.elts;

    for (i = 0; i < phs.nelts; i++) {
        if (ngx_env_gateway_is_id(&ph[i].name)) {
            continue;
        }

        name = ngx_array_push(&drop);
        if (name == NULL) {
            return NGX_ERROR;
        }

        *name = ph[i].name;
    }

    /* measured, then written */

    ngx_env_gateway_text_init(&t);

    do {
        ngx_env_gateway_url_write(&t, upstream, tmpl, args, &phs, &drop);
    } while ((rc = ngx_env_gateway_text_next(&t, pool)) == NGX_AGAIN);

    if (rc != NGX_OK) {
        return NGX_ERROR;
    }

    ngx_env_gateway_text_string(&t, url);

    return NGX_OK;
}
