/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * env_gateway: bounded text output.
 *
 * Every variable-length text the module builds (refusal bodies and
 * messages, the upstream URL, escaped log values, the metrics page) is
 * written twice by the same statements, as nginx sizes with
 * ngx_escape_uri(NULL, ...) before it writes:
 *
 *     ngx_env_gateway_text_init(&t);
 *
 *     do {
 *         ngx_env_gateway_text_str(&t, &a);
 *         ngx_env_gateway_text_escape(&t, b.data, b.len, type);
 *     } while ((rc = ngx_env_gateway_text_next(&t, pool)) == NGX_AGAIN);
 *
 * The first pass only measures; ngx_env_gateway_text_next() then allocates
 * exactly what was measured, and the second pass writes, every write
 * bounded by the end of that buffer.  A write that would not fit is not
 * made: the text fails (NGX_ERROR), and so does one shorter than measured.
 * So a length can only come from the data, and a wrong one is an error,
 * never a write past the end.
 */

#include "ngx_env_gateway.h"

#include <jansson.h>


/*
 * Bytes escaped as \xNN in log lines and messages: control characters,
 * '"', '\\', DEL and everything above (the set of nginx's access log).
 */
static uint32_t  ngx_env_gateway_escape_log_map[] = {
    0xffffffff, /* 1111 1111 1111 1111  1111 1111 1111 1111 */

                /* ?>=< ;:98 7654 3210  /.-, +*)( '&%$ #"!  */
    0x00000004, /* 0000 0000 0000 0000  0000 0000 0000 0100 */

                /* _^]\ [ZYX WVUT SRQP  ONML KJIH GFED CBA@ */
    0x10000000, /* 0001 0000 0000 0000  0000 0000 0000 0000 */

                /*  ~}| {zyx wvut srqp  onml kjih gfed cba` */
    0x80000000, /* 1000 0000 0000 0000  0000 0000 0000 0000 */

    0xffffffff, /* 1111 1111 1111 1111  1111 1111 1111 1111 */
    0xffffffff, /* 1111 1111 1111 1111  1111 1111 1111 1111 */
    0xffffffff, /* 1111 1111 1111 1111  1111 1111 1111 1111 */
    0xffffffff  /* 1111 1111 1111 1111  1111 1111 1111 1111 */
};


/*
 * As ngx_escape_uri(): with dst == NULL, the number of bytes to escape;
 * otherwise the escaped copy is written to dst and its end returned.
 */
static uintptr_t
ngx_env_gateway_escape_log(u_char *dst, u_char *src, size_t size)
{
    ngx_uint_t  n;

    static u_char  hex[] = "0123456789ABCDEF";

    if (dst == NULL) {
        n = 0;

        while (size--) {
            if (ngx_env_gateway_escape_log_map[*src >> 5]
                & (1U << (*src & 0x1f)))
            {
                n++;
            }

            src++;
        }

        return (uintptr_t) n;
    }

    while (size--) {
        if (ngx_env_gateway_escape_log_map[*src >> 5] & (1U << (*src & 0x1f))) {
            *dst++ = '\\';
            *dst++ = 'x';
            *dst++ = hex[*src >> 4];
            *dst++ = hex[*src & 0xf];
            src++;

        } else {
            *dst++ = *src++;
        }
    }

    return (uintptr_t) dst;
}


void
ngx_env_gateway_text_init(ngx_env_gateway_text_t *t)
{
    ngx_memzero(t, sizeof(ngx_env_gateway_text_t));
}


/*
 * End of a pass.  After the measuring pass: the buffer is allocated (from
 * "pool", or with ngx_alloc() for process-lifetime text when pool is NULL)
 * and NGX_AGAIN asks for the writing pass.  After the writing pass: NGX_OK
 * when it wrote exactly what was measured.  NGX_ERROR otherwise.
 */
ngx_int_t
ngx_env_gateway_text_next(ngx_env_gateway_text_t *t, ngx_pool_t *pool)
{
    u_char  *buf;

    if (t->failed) {
        return NGX_ERROR;
    }

    if (t->start == NULL) {
        /* at least one byte: a valid pointer for an empty text too */
        buf = pool ? ngx_pnalloc(pool, t->len ? t->len : 1)
                   : ngx_alloc(t->len ? t->len : 1, ngx_cycle->log);
        if (buf == NULL) {
            t->failed = 1;
            return NGX_ERROR;
        }

        t->start = buf;
        t->pos = buf;
        t->end = buf + t->len;

        return NGX_AGAIN;
    }

    if (t->pos != t->end) {
        /* the writing pass wrote less than the measuring pass measured */
        t->failed = 1;
        return NGX_ERROR;
    }

    return NGX_OK;
}


void
ngx_env_gateway_text_string(ngx_env_gateway_text_t *t, ngx_str_t *s)
{
    s->data = t->start;
    s->len = t->pos - t->start;
}


/*
 * Room for "len" more bytes: while measuring, count them; while writing,
 * say whether they fit.  A text that failed takes nothing more.
 */
static ngx_uint_t
ngx_env_gateway_text_room(ngx_env_gateway_text_t *t, size_t len)
{
    if (t->failed) {
        return 0;
    }

    if (t->start == NULL) {
        if (t->len + len < t->len) {
            t->failed = 1;                      /* size_t wraps */
            return 0;
        }

        t->len += len;
        return 0;
    }

    if (len > (size_t) (t->end - t->pos)) {
        t->failed = 1;
        return 0;
    }

    return 1;
}


void
ngx_env_gateway_text_bytes(ngx_env_gateway_text_t *t, u_char *p, size_t len)
{
    if (len && ngx_env_gateway_text_room(t, len)) {
        t->pos = ngx_cpymem(t->pos, p, len);
    }
}


void
ngx_env_gateway_text_str(ngx_env_gateway_text_t *t, ngx_str_t *s)
{
    ngx_env_gateway_text_bytes(t, s->data, s->len);
}


/*
 * "p" escaped:
 *   NGX_ENVGW_ESCAPE_LOG   \xNN for control bytes, '"', '\\', DEL and
 *                          bytes >= 0x80 (log lines, refusal messages);
 *   NGX_ENVGW_ESCAPE_PATH  %XX for all but RFC 3986's unreserved
 *                          characters (nginx's NGX_ESCAPE_URI_COMPONENT):
 *                          a value that is one path segment.
 */
void
ngx_env_gateway_text_escape(ngx_env_gateway_text_t *t, u_char *p, size_t len,
    ngx_uint_t type)
{
    size_t  n;

    if (len == 0) {
        return;
    }

    if (type == NGX_ENVGW_ESCAPE_PATH) {
        n = ngx_escape_uri(NULL, p, len, NGX_ESCAPE_URI_COMPONENT);

        /* each escaped byte becomes 3 ("%XX") */
        if (ngx_env_gateway_text_room(t, len + 2 * n)) {
            t->pos = (u_char *) ngx_escape_uri(t->pos, p, len,
                                               NGX_ESCAPE_URI_COMPONENT);
        }

        return;
    }

    n = ngx_env_gateway_escape_log(NULL, p, len);

    /* each escaped byte becomes 4 ("\xNN") */
    if (ngx_env_gateway_text_room(t, len + 3 * n)) {
        t->pos = (u_char *) ngx_env_gateway_escape_log(t->pos, p, len);
    }
}


/* a decimal number, zero-padded to "width" digits (at most NGX_INT64_LEN) */
void
ngx_env_gateway_text_uint(ngx_env_gateway_text_t *t, uint64_t n,
    size_t width)
{
    u_char  *p, *last;
    u_char   num[NGX_INT64_LEN];

    last = num + NGX_INT64_LEN;
    p = last;

    do {
        *--p = (u_char) ('0' + n % 10);
        n /= 10;
    } while (n && p > num);

    while ((size_t) (last - p) < width && p > num) {
        *--p = '0';
    }

    ngx_env_gateway_text_bytes(t, p, last - p);
}


/* a JSON document, measured and written by jansson's json_dumpb() */
void
ngx_env_gateway_text_json(ngx_env_gateway_text_t *t, struct json_t *json,
    size_t flags)
{
    size_t  n;

    if (t->failed) {
        return;
    }

    if (t->start == NULL) {
        n = json_dumpb(json, NULL, 0, flags);

        if (n == 0) {
            t->failed = 1;
            return;
        }

        (void) ngx_env_gateway_text_room(t, n);
        return;
    }

    /* json_dumpb() never writes more than it is given */
    n = json_dumpb(json, (char *) t->pos, t->end - t->pos, flags);

    if (n == 0 || !ngx_env_gateway_text_room(t, n)) {
        t->failed = 1;
        return;
    }

    t->pos += n;
}


/*
 * A message: "fmt" copied as is, but for each "%V", which is the next
 * argument (an ngx_str_t *) escaped as NGX_ENVGW_ESCAPE_LOG.  The result
 * is printable ASCII whatever the values' bytes or lengths.
 */
static void
ngx_env_gateway_text_vformat(ngx_env_gateway_text_t *t, const char *fmt,
    va_list args)
{
    u_char     *p, *lit;
    ngx_str_t  *v;

    p = (u_char *) fmt;
    lit = p;

    while (*p) {
        if (p[0] == '%' && p[1] == 'V') {
            ngx_env_gateway_text_bytes(t, lit, p - lit);

            v = va_arg(args, ngx_str_t *);
            ngx_env_gateway_text_escape(t, v->data, v->len,
                                        NGX_ENVGW_ESCAPE_LOG);
            p += 2;
            lit = p;
            continue;
        }

        p++;
    }

    ngx_env_gateway_text_bytes(t, lit, p - lit);
}


ngx_int_t
ngx_env_gateway_text_format(ngx_pool_t *pool, ngx_str_t *out,
    const char *fmt, va_list args)
{
    va_list                 pass;
    ngx_int_t               rc;
    ngx_env_gateway_text_t  t;

    ngx_env_gateway_text_init(&t);

    do {
        va_copy(pass, args);
        ngx_env_gateway_text_vformat(&t, fmt, pass);
        va_end(pass);
    } while ((rc = ngx_env_gateway_text_next(&t, pool)) == NGX_AGAIN);

    if (rc != NGX_OK) {
        return NGX_ERROR;
    }

    ngx_env_gateway_text_string(&t, out);

    return NGX_OK;
}


/*
 * "in" escaped into "out"; a value with nothing to escape is "out" as it
 * is, without a copy.
 */
ngx_int_t
ngx_env_gateway_text_escaped(ngx_pool_t *pool, ngx_str_t *in,
    ngx_uint_t type, ngx_str_t *out)
{
    ngx_int_t               rc;
    ngx_env_gateway_text_t  t;

    if (in->len == 0
        || (type == NGX_ENVGW_ESCAPE_LOG
            && ngx_env_gateway_escape_log(NULL, in->data, in->len) == 0)
        || (type == NGX_ENVGW_ESCAPE_PATH
            && ngx_escape_uri(NULL, in->data, in->len,
                              NGX_ESCAPE_URI_COMPONENT) == 0))
    {
        *out = *in;
        return NGX_OK;
    }

    ngx_env_gateway_text_init(&t);

    do {
        ngx_env_gateway_text_escape(&t, in->data, in->len, type);
    } while ((rc = ngx_env_gateway_text_next(&t, pool)) == NGX_AGAIN);

    if (rc != NGX_OK) {
        return NGX_ERROR;
    }

    ngx_env_gateway_text_string(&t, out);

    return NGX_OK;
}
