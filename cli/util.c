/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * envgw: memory pool, errors, output, input validation, random tokens.
 */

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>

#include <openssl/evp.h>

#include "envgw.h"

/* ---- memory pool -------------------------------------------------------- */

typedef struct {
    void  *p;
    void (*fn)(void *);
} pool_item_t;

static pool_item_t *pool;
static size_t pool_n, pool_cap;

static void oom(void)
{
    fputs("envgw: out of memory\n", stderr);
    exit(EXIT_FAIL);
}

void *pool_keep(void *p, void (*fn)(void *))
{
    if (p == NULL)
        oom();
    if (pool_n == pool_cap) {
        size_t cap = pool_cap ? pool_cap * 2 : 64;
        pool_item_t *np = realloc(pool, cap * sizeof(*np));
        if (np == NULL)
            oom();
        pool = np;
        pool_cap = cap;
    }
    pool[pool_n].p = p;
    pool[pool_n].fn = fn;
    pool_n++;
    return p;
}

char *pstrdup(const char *s)
{
    return pool_keep(strdup(s), free);
}

static void json_free(void *p)
{
    json_decref(p);
}

json_t *pjson(json_t *j)
{
    return pool_keep(j, json_free);
}

void pool_drain(void)
{
    /* newest first: a later item may refer to an earlier one */
    while (pool_n > 0) {
        pool_n--;
        pool[pool_n].fn(pool[pool_n].p);
    }
    free(pool);
    pool = NULL;
    pool_cap = 0;
}

/* ---- errors and output -------------------------------------------------- */

/* A JSON string of a message, whatever bytes it holds: jansson refuses
 * invalid UTF-8, so bytes above 0x7f become '?' when it does. */
static json_t *json_message(char *msg)
{
    json_t *j = json_string(msg);
    char *p;

    if (j != NULL)
        return j;
    for (p = msg; *p; p++) {
        if ((unsigned char) *p > 0x7f)
            *p = '?';
    }
    return json_string(msg);
}

static char *vfmt(const char *fmt, va_list ap)
{
    char *s = NULL;

    if (vasprintf(&s, fmt, ap) < 0)
        s = NULL;
    return pool_keep(s, free);
}

char *pfmt(const char *fmt, ...)
{
    va_list ap;
    char *s;

    va_start(ap, fmt);
    s = vfmt(fmt, ap);
    va_end(ap);
    return s;
}

/*
 * One message on stderr: "envgw: <lead><msg>" for humans, or with --json
 * one line holding a JSON object {"<kind>": msg, ...extra}.  Never on
 * stdout, which stays the command's result.
 */
static void say(const char *kind, const char *lead, json_t *extra,
                char *msg)
{
    json_t *j;
    char *line;

    if (!g_opt.json) {
        fprintf(stderr, "envgw: %s%s\n", lead, msg);
        return;
    }
    j = json_object();
    json_object_set_new(j, kind, json_message(msg));
    if (extra)
        json_object_update(j, extra);
    line = json_dumps(j, JSON_COMPACT);
    fprintf(stderr, "%s\n", line ? line : "{\"error\":\"out of memory\"}");
    free(line);
    json_decref(j);
}

void report_error(int exit_code, const char *usage, char *msg)
{
    json_t *extra = json_pack("{s:i}", "exit", exit_code);

    if (usage)
        json_object_set_new(extra, "usage", json_string(usage));
    say("error", "", extra, msg);
    json_decref(extra);
    if (usage && !g_opt.json)
        fprintf(stderr, "%s\n", usage);
}

void die(const char *fmt, ...)
{
    int code = g_opt.fail_code ? g_opt.fail_code : EXIT_FAIL;
    va_list ap;
    char *msg;

    va_start(ap, fmt);
    msg = vfmt(fmt, ap);
    va_end(ap);
    report_error(code, NULL, msg);
    exit(code);
}

void warnx_(const char *fmt, ...)
{
    va_list ap;
    char *msg;

    va_start(ap, fmt);
    msg = vfmt(fmt, ap);
    va_end(ap);
    say("warning", "warning: ", NULL, msg);
}

/* Informational lines for humans go to stderr so stdout stays parseable. */
void note(const char *fmt, ...)
{
    va_list ap;
    char *msg;

    va_start(ap, fmt);
    msg = vfmt(fmt, ap);
    va_end(ap);
    say("note", "", NULL, msg);
}

void print_json(json_t *j)
{
    char *s = json_dumps(j, JSON_INDENT(2) | JSON_ENCODE_ANY);

    if (s == NULL)
        oom();
    puts(s);
    free(s);
}

/*
 * A list command's rows: printed as JSON with --json; without, a note when
 * there are none.  True when that is all there is to print.
 */
bool list_printed(json_t *rows, const char *none_fmt, ...)
{
    va_list ap;

    if (g_opt.json) {
        print_json(rows);
        return true;
    }
    if (json_array_size(rows) > 0)
        return false;
    va_start(ap, none_fmt);
    say("note", "", NULL, vfmt(none_fmt, ap));
    va_end(ap);
    return true;
}

const char *fmt_time(long long t)
{
    time_t tt = (time_t) t;
    struct tm tm;
    char buf[64];

    if (t <= 0)
        return "never";
    if (gmtime_r(&tt, &tm) == NULL)
        return pfmt("%lld", t);
    strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
    return pstrdup(buf);
}

/* ---- validation --------------------------------------------------------- */

static bool all_chars(const char *s, size_t max, const char *extra)
{
    size_t n = strlen(s);

    if (n == 0 || n > max)
        return false;
    for (; *s; s++) {
        unsigned char c = (unsigned char) *s;
        if (!isascii(c) || !(isalnum(c) || strchr(extra, c)))
            return false;
    }
    return true;
}

/* Ids end up inside keys separated by ':' and in URLs: keep them plain. */
bool valid_id(const char *s)
{
    return all_chars(s, 128, "_-.") && strstr(s, "..") == NULL
           && s[0] != '.';
}

bool valid_name(const char *s)
{
    return all_chars(s, 64, "_-");
}

bool valid_env_name(const char *s)
{
    return all_chars(s, 64, "_-.");
}

/* A tenant id is the customer's own label: allow the usual punctuation of
 * such labels (emails, domains) but nothing the gateway would refuse in a
 * request (/, ?, #, %, "..", spaces or control characters). */
bool valid_tenant(const char *s)
{
    return all_chars(s, 256, "_-.@+=~!$&*,;:") && strstr(s, "..") == NULL;
}

const char *check_upstream(const char *url)
{
    const char *host, *path, *at, *seg;
    const unsigned char *p;

    if (strncmp(url, "http://", 7) == 0)
        host = url + 7;
    else if (strncmp(url, "https://", 8) == 0)
        host = url + 8;
    else
        return "must start with http:// or https://";
    if (*host == '\0' || *host == '/' || *host == ':')
        return "has no host";
    if (strlen(url) > 2048)
        return "is too long";
    for (p = (const unsigned char *) url; *p; p++) {
        if (*p <= 0x20 || *p >= 0x7f)
            return "contains whitespace or control characters";
    }
    if (strchr(url, '#') != NULL)
        return "must not contain a fragment (#)";
    /* the method's path is appended: a query here would swallow it */
    if (strchr(url, '?') != NULL || strchr(url, '\\') != NULL)
        return "must not contain ? or a backslash";
    /* placeholders are a method path's: the upstream is sent as it is */
    if (strchr(url, '{') != NULL || strchr(url, '}') != NULL)
        return "must not contain { or }";
    path = strchr(host, '/');
    at = strchr(host, '@');
    if (at != NULL && (path == NULL || at < path))
        return "must not contain userinfo (user@)";
    /* a . or .. segment (or %2e) would climb out of the upstream's API */
    for (seg = path; seg != NULL; seg = strchr(seg + 1, '/')) {
        const char *s = seg + 1;
        size_t len = strcspn(s, "/"), i = 0, dots = 0;
        while (i < len) {
            if (s[i] == '.')
                i++;
            else if (len - i >= 3 && strncasecmp(s + i, "%2e", 3) == 0)
                i += 3;
            else
                break;
            dots++;
        }
        if (i == len && (dots == 1 || dots == 2))
            return "must not contain . or .. segments";
    }
    return NULL;
}

const char *check_path(const char *path)
{
    const unsigned char *p;
    const char *seg;

    if (path[0] != '/')
        return "must start with /";
    if (strlen(path) > 2048)
        return "is too long";
    for (p = (const unsigned char *) path; *p; p++) {
        if (*p <= 0x20 || *p >= 0x7f)
            return "must not contain whitespace or control characters";
        if (*p == '?' || *p == '#')
            return "must not contain ? or #";
        if (*p == '\\')
            return "must not contain a backslash";
        /* an encoded dot or slash could become ".." or "/" upstream */
        if (*p == '%' && p[1] && p[2]
            && (strncasecmp((const char *) p, "%2e", 3) == 0
                || strncasecmp((const char *) p, "%2f", 3) == 0
                || strncasecmp((const char *) p, "%5c", 3) == 0))
            return "must not contain an encoded . / or \\";
        /* placeholders: {id} or {argname}, nothing nested or unclosed */
        if (*p == '{') {
            const unsigned char *q = p + 1;
            while (isalnum(*q) || *q == '_')
                q++;
            if (q == p + 1 || *q != '}')
                return "has a bad placeholder (want {id} or {name})";
            p = q;
        } else if (*p == '}') {
            return "has an unmatched }";
        }
    }
    /* ".." as a whole segment would let a template climb out of the API */
    for (seg = path; seg != NULL; seg = strchr(seg + 1, '/')) {
        const char *s = seg + 1;
        size_t len = strcspn(s, "/");
        if ((len == 2 && s[0] == '.' && s[1] == '.')
            || (len == 1 && s[0] == '.'))
            return "must not contain . or .. segments";
    }
    return NULL;
}

const char *normalize_http_method(const char *m)
{
    static const char *verbs[] = {
        "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", NULL
    };
    char up[16];
    size_t i, n = strlen(m);

    if (n == 0 || n >= sizeof(up))
        return NULL;
    for (i = 0; i < n; i++)
        up[i] = (char) toupper((unsigned char) m[i]);
    up[n] = '\0';
    for (i = 0; verbs[i]; i++) {
        if (strcmp(up, verbs[i]) == 0)
            return verbs[i];
    }
    return NULL;
}

/* "90", "90s", "15m", "12h", "30d" -> seconds.  At most ten years. */
bool parse_duration(const char *s, long long *secs, bool allow_zero)
{
    long long n = 0, mult = 1;
    const char *p = s;

    if (!isdigit((unsigned char) *p))
        return false;
    while (isdigit((unsigned char) *p)) {
        n = n * 10 + (*p - '0');
        if (n > 10LL * 366 * 86400)
            return false;
        p++;
    }
    switch (*p) {
    case '\0': case 's': mult = 1; break;
    case 'm': mult = 60; break;
    case 'h': mult = 3600; break;
    case 'd': mult = 86400; break;
    default: return false;
    }
    if (*p != '\0' && p[1] != '\0')
        return false;
    n *= mult;
    if (n > 10LL * 366 * 86400 || (n == 0 && !allow_zero))
        return false;
    *secs = n;
    return true;
}

/* ---- random and hashing ------------------------------------------------- */

void random_bytes(unsigned char *buf, size_t n)
{
    /* getrandom() blocks until the kernel CSPRNG is seeded, never weak */
    while (n > 0) {
        ssize_t r = getrandom(buf, n, 0);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            die("cannot read random bytes: %s", strerror(errno));
        }
        buf += r;
        n -= (size_t) r;
    }
}

/* Pooled lowercase hex of n bytes. */
static char *hex_of(const unsigned char *buf, size_t n)
{
    static const char hexdig[] = "0123456789abcdef";
    char *out = pool_keep(malloc(n * 2 + 1), free);
    size_t i;

    for (i = 0; i < n; i++) {
        out[2 * i] = hexdig[buf[i] >> 4];
        out[2 * i + 1] = hexdig[buf[i] & 15];
    }
    out[n * 2] = '\0';
    return out;
}

char *random_hex(size_t nbytes)
{
    unsigned char buf[64];

    if (nbytes > sizeof(buf))
        nbytes = sizeof(buf);
    random_bytes(buf, nbytes);
    return hex_of(buf, nbytes);
}

/* egw_ + base64url(32 random bytes), no padding: 256 bits of entropy. */
char *new_raw_token(void)
{
    static const char b64[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    unsigned char buf[32];
    char enc[64];
    size_t i, o = 0;

    random_bytes(buf, sizeof(buf));
    for (i = 0; i + 2 < sizeof(buf); i += 3) {
        unsigned v = (unsigned) buf[i] << 16 | (unsigned) buf[i + 1] << 8
                     | buf[i + 2];
        enc[o++] = b64[(v >> 18) & 63];
        enc[o++] = b64[(v >> 12) & 63];
        enc[o++] = b64[(v >> 6) & 63];
        enc[o++] = b64[v & 63];
    }
    /* 32 = 30 + 2 remaining bytes -> 3 characters */
    {
        unsigned v = (unsigned) buf[30] << 16 | (unsigned) buf[31] << 8;
        enc[o++] = b64[(v >> 18) & 63];
        enc[o++] = b64[(v >> 12) & 63];
        enc[o++] = b64[(v >> 6) & 63];
    }
    enc[o] = '\0';
    OPENSSL_cleanse(buf, sizeof(buf));
    return pfmt("%s%s", ENVGW_TOKEN_PREFIX, enc);
}

char *sha256_hex(const char *s)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;

    if (EVP_Digest(s, strlen(s), md, &len, EVP_sha256(), NULL) != 1
        || len * 2 != ENVGW_SHA256_HEX_LEN)
        die("SHA-256 failed");
    return hex_of(md, len);
}
