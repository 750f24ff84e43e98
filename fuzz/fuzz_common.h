/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * env_gateway fuzz targets: shared set-up.
 *
 * The targets link the module's sources (built with -fsanitize=fuzzer) and
 * nginx 1.22.1's core objects from the ASan build tree (build/asan), so
 * ngx_palloc & co. are nginx's own, with NGX_DEBUG_PALLOC: every pool
 * allocation is a separate malloc and ASan sees overruns of pool memory.
 */

#ifndef ENVGW_FUZZ_COMMON_H
#define ENVGW_FUZZ_COMMON_H

#include "ngx_env_gateway.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>


extern ngx_uint_t  ngx_use_stderr;

static ngx_log_t  *fuzz_log;


/* once per process: time cache, page size, a log writing to /dev/null */
static void
fuzz_init(void)
{
    if (fuzz_log) {
        return;
    }

    ngx_pagesize = getpagesize();
    ngx_cacheline_size = NGX_CPU_CACHE_LINE;
    ngx_time_init();
    fuzz_log = ngx_log_init(NULL, (u_char *) "/dev/null");
    fuzz_log->log_level = NGX_LOG_INFO;   /* the module's ERR lines run */
    ngx_use_stderr = 0;
}


/* a heap copy of exactly len bytes (never NULL): ASan sees any overread */
static ngx_str_t
fuzz_str(const uint8_t *data, size_t len)
{
    ngx_str_t  s;

    s.data = malloc(len ? len : 1);
    if (s.data == NULL) {
        abort();
    }

    if (len) {
        memcpy(s.data, data, len);
    }

    s.len = len;

    return s;
}


/* split data at each sep into at most n heap strings; returns the count */
static ngx_uint_t
fuzz_split(const uint8_t *data, size_t size, u_char sep, ngx_str_t *out,
    ngx_uint_t n)
{
    size_t      i, start;
    ngx_uint_t  k;

    k = 0;
    start = 0;

    for (i = 0; i <= size && k < n; i++) {
        if (i == size || (k < n - 1 && data[i] == sep)) {
            out[k++] = fuzz_str(data + start, i - start);
            start = i + 1;
        }
    }

    while (k < n) {
        out[k++] = fuzz_str(data, 0);
    }

    return n;
}


static void
fuzz_free(ngx_str_t *s, ngx_uint_t n)
{
    while (n--) {
        free(s[n].data);
    }
}

#endif /* ENVGW_FUZZ_COMMON_H */
