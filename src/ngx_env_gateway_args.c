/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * env_gateway: the query arguments iterator, and the one place where the
 * argument-name rules of the request boundary live.
 *
 * nginx reads "?a=1&b=2" by splitting on '&' and matching names byte for
 * byte in any case ($arg_NAME).  Backends read the same string with other
 * parsers, and several of them read names nginx would not match as one of
 * the names the gateway consumes or treats as credentials:
 *
 *   PHP ($_GET):     percent-decoding and '+' before matching; leading
 *                    spaces dropped; '.', ' ' and an unmatched '[' become
 *                    '_'; "name[...]" is an array "name"; a NUL ends it;
 *                    its built-in server skips a '?' that starts the query.
 *   Express (qs):    percent-decoding; "name[]", "name[0]", "name[x]" and
 *                    "[name]" are "name".
 *   Python < 3.9.2, Perl CGI, some Java servlets: ';' separates arguments
 *                    as '&' does.
 *   Go, Python, PHP, Rails: names are case-sensitive, nginx's $arg_ is not.
 *
 * ngx_env_gateway_arg_match() says whether an argument is byte-identical
 * to a name (EXACT), or is not but could be read as it by one of those
 * parsers (ALIAS: the request is ambiguous and is refused), or neither.
 * Pure code: no allocation, no I/O.
 */

#include "ngx_env_gateway.h"


/*
 * ngx_strlchr() with libc's memchr(): every argument of every request is
 * scanned for '&', '=' and, once per name the gateway reads, ';'; the
 * byte-at-a-time loop was an eighth of the access handler's instructions
 * (make bench-callgrind).
 */
static ngx_inline u_char *
ngx_env_gateway_chr(u_char *p, u_char *last, u_char c)
{
    return (p < last) ? memchr(p, c, last - p) : NULL;
}


void
ngx_env_gateway_args_init(ngx_env_gateway_args_t *it, ngx_str_t *args)
{
    it->pos = args->data;
    it->last = args->len ? args->data + args->len : args->data;
}


/*
 * The next argument of the query, split on '&' as nginx does; empty
 * segments ("a&&b") are skipped.  NGX_OK: *arg is set; NGX_DONE: no more.
 */
ngx_int_t
ngx_env_gateway_args_next(ngx_env_gateway_args_t *it,
    ngx_env_gateway_arg_t *arg)
{
    u_char  *p, *end, *eq;

    for ( ;; ) {
        p = it->pos;

        if (p == NULL || p >= it->last) {
            return NGX_DONE;
        }

        end = ngx_env_gateway_chr(p, it->last, '&');
        if (end == NULL) {
            end = it->last;
        }

        it->pos = (end < it->last) ? end + 1 : it->last;

        if (end > p) {
            break;
        }
    }

    eq = ngx_env_gateway_chr(p, end, '=');

    arg->raw.data = p;
    arg->raw.len = end - p;

    arg->name.data = p;
    arg->name.len = (eq ? eq : end) - p;

    arg->value.data = eq ? eq + 1 : end;
    arg->value.len = end - arg->value.data;

    arg->has_value = (eq != NULL);

    return NGX_OK;
}


/* a value carries escaping another parser would undo: '%' or '+' */
ngx_uint_t
ngx_env_gateway_arg_escaped(ngx_str_t *s)
{
    u_char  *p, *last;

    p = s->data;
    last = p + s->len;

    for ( /* void */ ; p < last; p++) {
        if (*p == '%' || *p == '+') {
            return 1;
        }
    }

    return 0;
}


static ngx_inline ngx_int_t
ngx_env_gateway_hex(u_char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }

    c |= 0x20;

    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }

    return -1;
}


/*
 * Does a raw argument name read as "name" by a form parser?  The raw
 * bytes are decoded as a form parser does ("%XX", '+' is a space) and
 * compared, without a copy, in any case, after PHP's rewriting (leading
 * spaces dropped, '.' and ' ' read as '_').  With "bracket_ends" a '['
 * ends the name ("name[0]", "name[]"); without it a '[' reads as '_'
 * (PHP's unmatched bracket).  A NUL ends the name.
 */
static ngx_uint_t
ngx_env_gateway_name_reads_as(ngx_str_t *raw, ngx_str_t *name,
    ngx_uint_t bracket_ends)
{
    u_char      *p, *last, c;
    size_t       n;
    ngx_int_t    hi, lo;
    ngx_uint_t   leading;

    p = raw->data;
    last = p + raw->len;
    n = 0;
    leading = 1;

    while (p < last) {
        c = *p++;

        if (c == '+') {
            c = ' ';

        } else if (c == '%' && last - p >= 2
                   && (hi = ngx_env_gateway_hex(p[0])) >= 0
                   && (lo = ngx_env_gateway_hex(p[1])) >= 0)
        {
            c = (u_char) (hi << 4 | lo);
            p += 2;
        }

        if (c == '\0') {
            break;
        }

        /*
         * PHP drops leading spaces (and its built-in server a second '?'
         * that starts the query); qs reads "[name]" as "name"
         */
        if (leading
            && (c == ' ' || c == '?' || (c == '[' && bracket_ends)))
        {
            continue;
        }

        leading = 0;

        if (c == '[' || (c == ']' && bracket_ends)) {
            if (bracket_ends) {
                break;
            }

            c = '_';
        }

        if (c == '.' || c == ' ') {
            c = '_';
        }

        if (n == name->len || ngx_tolower(c) != ngx_tolower(name->data[n])) {
            return 0;
        }

        n++;
    }

    return n == name->len;
}


/*
 * How an argument relates to "name" (a name the gateway consumes or
 * treats as a credential):
 *   NGX_ENVGW_ARG_EXACT  its name is byte-identical to "name";
 *   NGX_ENVGW_ARG_ALIAS  it is not, but a common backend parser reads it
 *                        (or a ';'-separated part of it) as "name";
 *   NGX_ENVGW_ARG_OTHER  neither.
 */
ngx_uint_t
ngx_env_gateway_arg_match(ngx_env_gateway_arg_t *arg, ngx_str_t *name)
{
    u_char      *p, *semi, *last, *eq, c;
    ngx_str_t    part;
    ngx_uint_t   exact;

    if (name->len == 0) {
        return NGX_ENVGW_ARG_OTHER;
    }

    exact = (arg->name.len == name->len
             && ngx_strncmp(arg->name.data, name->data, name->len) == 0);

    /* "x=1;name=2": the parts after each ';' are arguments elsewhere */

    p = arg->raw.data;
    last = p + arg->raw.len;

    for ( ;; ) {
        semi = ngx_env_gateway_chr(p, last, ';');
        if (semi == NULL) {
            break;
        }

        p = semi + 1;
        semi = ngx_env_gateway_chr(p, last, ';');
        eq = ngx_env_gateway_chr(p, semi ? semi : last, '=');

        part.data = p;
        part.len = (eq ? eq : (semi ? semi : last)) - p;

        if (ngx_env_gateway_name_reads_as(&part, name, 1)
            || ngx_env_gateway_name_reads_as(&part, name, 0))
        {
            return NGX_ENVGW_ARG_ALIAS;
        }
    }

    if (exact) {
        return NGX_ENVGW_ARG_EXACT;
    }

    /*
     * A first byte that no parser rewrites, drops or decodes is read as
     * itself: unless it is name's first in some case, no parser reads the
     * argument as name (most arguments of most requests end here).
     */
    if (arg->name.len) {
        c = arg->name.data[0];

        if (c != '%' && c != '+' && c != ' ' && c != '?' && c != '['
            && c != ']' && c != '.' && c != '\0'
            && ngx_tolower(c) != ngx_tolower(name->data[0]))
        {
            return NGX_ENVGW_ARG_OTHER;
        }
    }

    if (ngx_env_gateway_name_reads_as(&arg->name, name, 1)
        || ngx_env_gateway_name_reads_as(&arg->name, name, 0))
    {
        return NGX_ENVGW_ARG_ALIAS;
    }

    return NGX_ENVGW_ARG_OTHER;
}
