/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * The whole access decision.  A request (method, raw URI with its query,
 * headers, a body), a location's configuration and the records the
 * lookups answer are decoded from the input; the module's access handler
 * then runs start -> evaluate -> allow on them as nginx's access phase
 * would, and every outcome is checked (abort() on any violation):
 *
 *   - it is an allow, or exactly one refusal, and stays so when the
 *     handler runs again;
 *   - a refusal's body reads back with jansson as exactly
 *     {"status":N,"error":CODE,"message":TEXT} of that refusal, is
 *     printable ASCII, and is sent with its Content-Length, Content-Type,
 *     WWW-Authenticate (401) and Retry-After (503);
 *   - on allow: the environment is the token's (or, for an admin token, one
 *     of its team's), the account is active and of that environment,
 *     $env_gateway_upstream_url is byte for byte the record's upstream, the
 *     method's template with its values percent-encoded by nginx's encoder
 *     and the query without the consumed arguments; no credential goes
 *     upstream with hide_credentials on (no credential header, argument or
 *     cookie, and none of its bytes anywhere); the identity headers hold
 *     exactly the checked values and no client header named like one is
 *     left;
 *   - the log, captured through a writer of the request's ngx_log_t: no
 *     line but debug ones has a raw control byte, the refusal line is
 *     printable ASCII with its three quoted values, and no line -- nor the
 *     request line, Host or Referer that nginx appends to a request's
 *     error lines -- carries a credential's bytes.
 *
 * The fetch layer (_fetch.c) is replaced: a fetch is answered from the
 * decoded records through the real ngx_env_gateway_record_parse() and
 * ngx_env_gateway_record_load(), either at once (as a cache hit) or after
 * the handler returned NGX_AGAIN (as a Redis reply: the handler then runs
 * again, as the resume event runs the phases).  _refusal.c is #included
 * and runs as it is, building the refusal's body and log line; only the
 * four nginx calls its sender makes are captured (discard the body, send
 * the header, the output filter, finalize).  _access.c is #included so
 * that its static functions are the ones run.
 *
 * Input: fields [tag][length, 2 bytes little endian][bytes]; texts may
 * reference a table of 16 strings, so one value (an account id, a
 * placeholder name thousands of bytes long) can be in the request and the
 * records at once.  The format is in fuzz/README.md.
 */

#include "fuzz_common.h"

#include <jansson.h>


/* the refusal sender's nginx calls, captured */
static ngx_int_t fuzz_discard_request_body(ngx_http_request_t *r);
static ngx_int_t fuzz_send_header(ngx_http_request_t *r);
static ngx_int_t fuzz_output_filter(ngx_http_request_t *r, ngx_chain_t *in);
static void fuzz_finalize_request(ngx_http_request_t *r, ngx_int_t rc);

#define ngx_http_discard_request_body  fuzz_discard_request_body
#define ngx_http_send_header           fuzz_send_header
#define ngx_http_output_filter         fuzz_output_filter
#define ngx_http_finalize_request      fuzz_finalize_request

#include "../src/ngx_env_gateway_refusal.c"

#undef ngx_http_discard_request_body
#undef ngx_http_send_header
#undef ngx_http_output_filter
#undef ngx_http_finalize_request

#include "../src/ngx_env_gateway_access.c"


#define FUZZ_NSTR          16
#define FUZZ_NHEADERS      24
#define FUZZ_TEXT_MAX      (256 * 1024)     /* one expanded text */
#define FUZZ_STEPS         (4 * 1024 * 1024) /* expansion work per input */
#define FUZZ_DEPTH         4
#define FUZZ_ROUNDS        8                /* handler runs per request */
#define FUZZ_NPENDING      16
#define FUZZ_NCAND         32

/* what a lookup answers, per record */
#define FUZZ_FOUND         0
#define FUZZ_NOT_FOUND     1
#define FUZZ_UNAVAILABLE   2
#define FUZZ_MALFORMED     3

/* configuration byte 0: where the token is */
#define FUZZ_TOKEN_DEFAULT 0                /* Authorization: Bearer */
#define FUZZ_TOKEN_HTTP    1                /* $http_NAME */
#define FUZZ_TOKEN_ARG     2                /* $arg_NAME */
#define FUZZ_TOKEN_COOKIE  3                /* $cookie_NAME */
#define FUZZ_TOKEN_OTHER   4                /* any other complex value */

/* configuration byte 1: the account */
#define FUZZ_ACCOUNT_NONE  0
#define FUZZ_ACCOUNT_ARG   1                /* $arg_NAME */
#define FUZZ_ACCOUNT_HTTP  2                /* $http_NAME */
#define FUZZ_ACCOUNT_CV    3                /* a capture: its value */

/* configuration byte 2 */
#define FUZZ_BODY_FIELD    0x01
#define FUZZ_ROUTE         0x02
#define FUZZ_ROUTE_REST    0x04
#define FUZZ_HIDE          0x08
#define FUZZ_IDENTITY      0x10
#define FUZZ_REQUIRED      0x20
#define FUZZ_TENANT        0x40
#define FUZZ_INTEGRATION   0x80

/* configuration byte 3: log level (bits 0-1), then */
#define FUZZ_REVERSE       0x04             /* answers in reverse order */

/* configuration byte 4: bit N set: record N answers after NGX_AGAIN */

/*
 * configuration bytes 5-7: bytes 0-2 of a second location; byte 8, bit 0:
 * after an allow, an internal redirect takes the request there
 */
#define FUZZ_REDIRECT      0x01


typedef struct {
    u_char                      *data;
    size_t                       len;
    size_t                       size;
} fuzz_buf_t;


typedef struct {
    ngx_str_t                    s[FUZZ_NSTR];      /* string table */
    u_char                       cfg[9];
    ngx_str_t                    method;
    ngx_str_t                    uri;
    ngx_str_t                    body;
    ngx_uint_t                   has_body;
    ngx_str_t                    token_name;
    ngx_str_t                    account_name;
    ngx_str_t                    body_field;
    ngx_str_t                    token_value;       /* FUZZ_TOKEN_OTHER */
    ngx_str_t                    account_value;     /* FUZZ_ACCOUNT_CV */
    ngx_str_t                    resource;
    ngx_str_t                    rest;
    ngx_str_t                    tenant;
    ngx_str_t                    integration;
    ngx_uint_t                   nheaders;
    ngx_str_t                    hname[FUZZ_NHEADERS];
    ngx_str_t                    hvalue[FUZZ_NHEADERS];
    ngx_uint_t                   mode[NGX_ENVGW_REC_LAST];
    ngx_str_t                    rec[NGX_ENVGW_REC_LAST];
} fuzz_input_t;


typedef struct {
    ngx_env_gateway_slot_t      *slot;
    ngx_uint_t                   kind;
    ngx_str_t                    key;
} fuzz_pending_t;


typedef struct {
    ngx_uint_t                   discards;
    ngx_uint_t                   headers;
    ngx_uint_t                   outputs;
    ngx_uint_t                   finalizes;
    ngx_int_t                    finalize_rc;
    ngx_uint_t                   last_buf;
    fuzz_buf_t                   body;
} fuzz_sent_t;


static ngx_log_t        fuzz_clog;          /* the captured log */
static ngx_cycle_t      fuzz_cycle;
static fuzz_buf_t       fuzz_lines;         /* captured lines, NUL-separated */
static ngx_uint_t       fuzz_steps;

static fuzz_input_t    *fuzz_in;
static fuzz_pending_t   fuzz_pending[FUZZ_NPENDING];
static ngx_uint_t       fuzz_npending;
static ngx_uint_t       fuzz_fetches;
static fuzz_sent_t      fuzz_sent;

static ngx_env_gateway_loc_conf_t  *fuzz_locs[2];  /* the locations */

static ngx_str_t        fuzz_cand[FUZZ_NCAND];  /* credential values */
static ngx_uint_t       fuzz_ncand;

static ngx_str_t        fuzz_keys[4 * NGX_ENVGW_NSLOTS];   /* odd ones */
static ngx_uint_t       fuzz_nkeys;
static ngx_str_t        fuzz_loaded[4 * NGX_ENVGW_NSLOTS]; /* records */
static ngx_uint_t       fuzz_nloaded;

static ngx_uint_t       fuzz_verbose;       /* ENVGW_FUZZ_VERBOSE=1 */

/*
 * ENVGW_FUZZ_SKIP=appended,keys,pending leaves out a check whose finding is
 * known and reported, to fuzz on past it: "appended", a credential in what
 * nginx appends to error lines (request line, Host, Referer); "keys", a
 * record key with a raw control byte or quote in a log line; "pending", an
 * allow while a fetch of the request is still in flight.
 */
/* the nginx configuration the route reads: main_conf, loc_conf slots */
#define FUZZ_NCONF  3

static ngx_http_upstream_main_conf_t  fuzz_umcf;
static ngx_http_core_loc_conf_t       fuzz_clcf;
static ngx_resolver_t                 fuzz_resolver;

static ngx_uint_t       fuzz_skip_appended;
static ngx_uint_t       fuzz_skip_keys;
static ngx_uint_t       fuzz_skip_pending;


/* the defaults: a development token routed to a method with {id}, {name} */

static const char  *fuzz_default_s[FUZZ_NSTR] = {
    "egw_dev_Zm9vYmFyYmF6cXV4cXV1eGNvcmdl",          /* 0 token */
    "env_dev",                                       /* 1 environment */
    "acc_dev_acme",                                  /* 2 account */
    "hubspot",                                       /* 3 integration */
    "contacts",                                      /* 4 resource */
    "42",                                            /* 5 rest */
    "http://hubspot_development/",                   /* 6 upstream */
    "/crm/v3/objects/\0014/{id}/associations/{\001<}",  /* 7 path */
    "team_1",                                        /* 8 team */
    "tok_dev_1",                                     /* 9 token id */
    "development",                                   /* 10 env name */
    "tenant_1",                                      /* 11 tenant */
    "name",                                          /* 12 placeholder */
    "GET",                                           /* 13 its verb */
    "merge",                                         /* 14 custom method */
    "deals"                                          /* 15 {name} value */
};

static const char  *fuzz_default_rec[NGX_ENVGW_REC_LAST] = {
    "{\"token_id\":\"\0029\",\"team_id\":\"\0028\","
    "\"environment_id\":\"\0021\",\"environment\":\"\002:\","
    "\"kind\":\"data\"}",

    "{\"integrated_account_id\":\"\0022\",\"environment_id\":\"\0021\","
    "\"integration\":\"\0023\",\"tenant_id\":\"\002;\","
    "\"status\":\"active\"}",

    "{\"environment_id\":\"\0021\",\"team_id\":\"\0028\","
    "\"name\":\"\002:\"}",

    "{\"\0023\":\"\0022\"}",

    "{\"upstream\":\"\0026\",\"resources\":{\"\0024\":{"
    "\"get\":{\"method\":\"\002=\",\"path\":\"\0027\"},"
    "\"\002>\":{\"method\":\"POST\","
    "\"path\":\"/crm/v3/objects/\0024/\002>\"},"
    "\"list\":{\"method\":\"GET\",\"path\":\"/crm/v3/objects/\0024\"}}}}",

    /* credentials: fetched only for an integration that declares auth */
    "{\"v\":1,\"kid\":\"k1\",\"nonce\":\"AAAAAAAAAAAAAAAA\","
    "\"ciphertext\":\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\"}"
};

static u_char  fuzz_default_cfg[9] = {
    FUZZ_TOKEN_DEFAULT, FUZZ_ACCOUNT_ARG,
    FUZZ_ROUTE | FUZZ_ROUTE_REST | FUZZ_HIDE | FUZZ_IDENTITY,
    0, 0x1f,
    FUZZ_TOKEN_DEFAULT, FUZZ_ACCOUNT_ARG, FUZZ_HIDE | FUZZ_IDENTITY,
    0
};

static ngx_str_t  fuzz_identity_lc[NGX_ENVGW_NIDENTITY] = {
    ngx_string("x-environment-id"),
    ngx_string("x-environment"),
    ngx_string("x-team-id"),
    ngx_string("x-token-id"),
    ngx_string("x-integrated-account-id"),
    ngx_string("x-tenant-id")
};

static size_t  fuzz_identity_field[NGX_ENVGW_NIDENTITY] = {
    offsetof(ngx_env_gateway_ctx_t, environment_id),
    offsetof(ngx_env_gateway_ctx_t, environment),
    offsetof(ngx_env_gateway_ctx_t, team_id),
    offsetof(ngx_env_gateway_ctx_t, token_id),
    offsetof(ngx_env_gateway_ctx_t, account_id),
    offsetof(ngx_env_gateway_ctx_t, tenant_id)
};

static ngx_uint_t  fuzz_log_levels[] = {
    NGX_LOG_INFO, NGX_LOG_NOTICE, NGX_LOG_WARN, NGX_LOG_ERR
};


/* ------------------------------------------------------------------ */
/* buffers and texts                                                   */

static void
fuzz_put(fuzz_buf_t *b, const u_char *p, size_t n)
{
    size_t  size;

    if (n == 0) {
        return;
    }

    if (b->len + n > b->size) {
        size = b->size ? b->size : 256;

        while (size < b->len + n) {
            size *= 2;
        }

        b->data = realloc(b->data, size);
        if (b->data == NULL) {
            abort();
        }

        b->size = size;
    }

    memcpy(b->data + b->len, p, n);
    b->len += n;
}


static void
fuzz_put_json(fuzz_buf_t *b, fuzz_buf_t *t)
{
    u_char   c, esc[6];
    size_t   i;

    static u_char  hex[] = "0123456789abcdef";

    for (i = 0; i < t->len && b->len < FUZZ_TEXT_MAX; i++) {
        c = t->data[i];

        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = c;
            fuzz_put(b, esc, 2);

        } else if (c < 0x20) {
            esc[0] = '\\';
            esc[1] = 'u';
            esc[2] = '0';
            esc[3] = '0';
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 0xf];
            fuzz_put(b, esc, 6);

        } else {
            /* bytes >= 0x80 as they are: not UTF-8 makes a bad record */
            fuzz_put(b, &c, 1);
        }
    }
}


/*
 * A text with its references expanded:
 *   \x01 i       string i (i & 0x0f) of the table
 *   \x02 i       string i as the inside of a JSON string
 *   \x03 h l i   string i repeated ((h << 8 | l) & 0x1fff) times
 *   \x04         the repetition's number, in decimal
 *   \x05 c       the byte c itself
 * Table strings are texts too (at most FUZZ_DEPTH levels deep).
 */
static void
fuzz_expand(fuzz_input_t *in, fuzz_buf_t *b, ngx_str_t *src, ngx_uint_t depth,
    ngx_uint_t counter)
{
    u_char      *p, *last, c, num[NGX_INT_T_LEN];
    ngx_uint_t   n, k, idx;
    fuzz_buf_t   t;

    p = src->data;
    last = p + src->len;

    while (p < last) {

        if (b->len >= FUZZ_TEXT_MAX || fuzz_steps == 0) {
            return;
        }

        fuzz_steps--;
        c = *p++;

        switch (c) {

        case 0x01:
        case 0x02:
            if (p == last) {
                break;
            }

            idx = *p++ & 0x0f;

            if (depth == FUZZ_DEPTH) {
                break;
            }

            if (c == 0x01) {
                fuzz_expand(in, b, &in->s[idx], depth + 1, counter);
                break;
            }

            ngx_memzero(&t, sizeof(fuzz_buf_t));
            fuzz_expand(in, &t, &in->s[idx], depth + 1, counter);
            fuzz_put_json(b, &t);
            free(t.data);
            break;

        case 0x03:
            if (last - p < 3) {
                p = last;
                break;
            }

            n = ((ngx_uint_t) p[0] << 8 | p[1]) & 0x1fff;
            idx = p[2] & 0x0f;
            p += 3;

            if (depth == FUZZ_DEPTH) {
                break;
            }

            for (k = 0; k < n && b->len < FUZZ_TEXT_MAX && fuzz_steps; k++) {
                fuzz_steps--;
                fuzz_expand(in, b, &in->s[idx], depth + 1, k);
            }

            break;

        case 0x04:
            fuzz_put(b, num, ngx_sprintf(num, "%ui", counter) - num);
            break;

        case 0x05:
            if (p < last) {
                fuzz_put(b, p++, 1);
            }
            break;

        default:
            fuzz_put(b, &c, 1);
        }
    }
}


/* a text expanded into a pool allocation of exactly its length */
static ngx_str_t
fuzz_text(fuzz_input_t *in, ngx_pool_t *pool, ngx_str_t *src)
{
    ngx_str_t   s;
    fuzz_buf_t  b;

    ngx_memzero(&b, sizeof(fuzz_buf_t));
    fuzz_expand(in, &b, src, 0, 0);

    if (b.len > FUZZ_TEXT_MAX) {
        b.len = FUZZ_TEXT_MAX;
    }

    s.len = b.len;
    s.data = ngx_pnalloc(pool, b.len ? b.len : 1);
    if (s.data == NULL) {
        abort();
    }

    if (b.len) {
        ngx_memcpy(s.data, b.data, b.len);
    }

    free(b.data);

    return s;
}


static ngx_uint_t
fuzz_contains(ngx_str_t *hay, ngx_str_t *needle)
{
    return needle->len && hay->len >= needle->len
           && memmem(hay->data, hay->len, needle->data, needle->len) != NULL;
}


static ngx_uint_t
fuzz_eq(ngx_str_t *a, ngx_str_t *b)
{
    return a->len == b->len
           && (a->len == 0 || memcmp(a->data, b->data, a->len) == 0);
}


/* a header name as the boundary reads it: any case, '_' is '-' */
static ngx_uint_t
fuzz_name_is(ngx_str_t *key, ngx_str_t *lc)
{
    u_char      c;
    size_t      i;

    if (key->len != lc->len || lc->len == 0) {
        return 0;
    }

    for (i = 0; i < lc->len; i++) {
        c = ngx_tolower(key->data[i]);

        if (c == '_') {
            c = '-';
        }

        if (c != lc->data[i]) {
            return 0;
        }
    }

    return 1;
}


/* ------------------------------------------------------------------ */
/* the input                                                           */

static void
fuzz_set(ngx_str_t *s, const char *text)
{
    s->data = (u_char *) text;
    s->len = ngx_strlen(text);
}


static void
fuzz_decode(fuzz_input_t *in, const uint8_t *data, size_t size)
{
    u_char      tag;
    size_t      pos, len, n;
    ngx_str_t   v;
    ngx_uint_t  i, kind, headers;

    ngx_memzero(in, sizeof(fuzz_input_t));

    for (i = 0; i < FUZZ_NSTR; i++) {
        fuzz_set(&in->s[i], fuzz_default_s[i]);
    }

    for (i = 0; i < NGX_ENVGW_REC_LAST; i++) {
        fuzz_set(&in->rec[i], fuzz_default_rec[i]);
    }

    ngx_memcpy(in->cfg, fuzz_default_cfg, sizeof(fuzz_default_cfg));

    fuzz_set(&in->method, "\001=");
    fuzz_set(&in->uri, "/proxy/\0014/\0015?integrated_account_id=\0012"
                       "&\001<=\001?");
    fuzz_set(&in->token_value, "\0010");
    fuzz_set(&in->account_value, "\0012");
    fuzz_set(&in->resource, "\0014");
    fuzz_set(&in->rest, "\0015");
    fuzz_set(&in->tenant, "\001;");
    fuzz_set(&in->integration, "\0013");
    fuzz_set(&in->body_field, "integrated_account_id");

    headers = 0;
    pos = 0;

    while (pos < size) {
        tag = data[pos++];

        if (size - pos >= 2) {
            len = data[pos] | (size_t) data[pos + 1] << 8;
            pos += 2;

        } else {
            len = size - pos;
            pos = size;
        }

        if (len > size - pos) {
            len = size - pos;
        }

        v.data = (u_char *) data + pos;
        v.len = len;
        pos += len;

        switch (tag) {

        case 'C':
            for (i = 0; i < v.len && i < sizeof(in->cfg); i++) {
                in->cfg[i] = v.data[i];
            }
            break;

        case 'S':
            if (v.len) {
                in->s[v.data[0] & 0x0f].data = v.data + 1;
                in->s[v.data[0] & 0x0f].len = v.len - 1;
            }
            break;

        case 'M':
            in->method = v;
            break;

        case 'U':
            in->uri = v;
            break;

        case 'B':
            in->body = v;
            in->has_body = 1;
            break;

        case 'H':
            if (!headers) {
                /* the first header given replaces the default ones */
                headers = 1;
                in->nheaders = 0;
            }

            if (in->nheaders == FUZZ_NHEADERS || v.len == 0) {
                break;
            }

            n = v.data[0];
            if (n > v.len - 1) {
                n = v.len - 1;
            }

            in->hname[in->nheaders].data = v.data + 1;
            in->hname[in->nheaders].len = n;
            in->hvalue[in->nheaders].data = v.data + 1 + n;
            in->hvalue[in->nheaders].len = v.len - 1 - n;
            in->nheaders++;
            break;

        case 'T':
        case 'A':
        case 'E':
        case 'N':
        case 'I':
            kind = (tag == 'T') ? NGX_ENVGW_REC_TOKEN
                   : (tag == 'A') ? NGX_ENVGW_REC_ACCOUNT
                   : (tag == 'E') ? NGX_ENVGW_REC_ENV
                   : (tag == 'N') ? NGX_ENVGW_REC_TENANT
                   : NGX_ENVGW_REC_INTEGRATION;

            if (v.len == 0) {
                break;
            }

            in->mode[kind] = v.data[0] & 3;

            if (v.len > 1) {
                in->rec[kind].data = v.data + 1;
                in->rec[kind].len = v.len - 1;
            }
            break;

        case 'K':
            in->token_name = v;
            break;

        case 'L':
            in->account_name = v;
            break;

        case 'F':
            in->body_field = v;
            break;

        case 'W':
            in->token_value = v;
            break;

        case 'V':
            in->account_value = v;
            break;

        case 'R':
            in->resource = v;
            break;

        case 'Z':
            in->rest = v;
            break;

        case 'X':
            in->tenant = v;
            break;

        case 'Y':
            in->integration = v;
            break;

        default:
            break;
        }
    }

    if (!headers) {
        fuzz_set(&in->hname[0], "Host");
        fuzz_set(&in->hvalue[0], "gw.example");
        fuzz_set(&in->hname[1], "Authorization");
        fuzz_set(&in->hvalue[1], "Bearer \0010");
        in->nheaders = 2;
    }
}


/* a configured name: [a-z0-9_]+ as the directives accept it */
static ngx_str_t
fuzz_conf_name(ngx_pool_t *pool, ngx_str_t *raw, const char *dflt,
    ngx_uint_t header)
{
    size_t      i;
    ngx_str_t   s;

    static u_char  alphabet[] = "abcdefghijklmnopqrstuvwxyz0123456789_";

    if (raw->len == 0) {
        fuzz_set(raw, dflt);
    }

    s.len = raw->len;
    s.data = ngx_pnalloc(pool, s.len);
    if (s.data == NULL) {
        abort();
    }

    for (i = 0; i < s.len; i++) {
        s.data[i] = ngx_strchr(alphabet, raw->data[i]) && raw->data[i]
                    ? raw->data[i]
                    : alphabet[raw->data[i] % (sizeof(alphabet) - 1)];

        /* "$http_x_api_key" reads the header "x-api-key" */
        if (header && s.data[i] == '_') {
            s.data[i] = '-';
        }
    }

    return s;
}


static ngx_http_complex_value_t *
fuzz_cv(ngx_pool_t *pool, ngx_str_t *value)
{
    ngx_http_complex_value_t  *cv;

    cv = ngx_pcalloc(pool, sizeof(ngx_http_complex_value_t));
    if (cv == NULL) {
        abort();
    }

    /* no lengths: ngx_http_complex_value() gives the value as it is */
    cv->value = *value;

    return cv;
}


/*
 * The upstreams a location remembered (ngx_env_gateway_upstream_known) live
 * as long as the worker; here the location lives as long as one input.
 */
static void
fuzz_conf_cleanup(void *data)
{
    ngx_uint_t                   i;
    ngx_env_gateway_loc_conf_t  *glcf = data;

    for (i = 0; i < NGX_ENVGW_KNOWN_UPSTREAMS; i++) {
        ngx_free(glcf->known.url[i].data);
    }
}


static ngx_env_gateway_loc_conf_t *
fuzz_conf(fuzz_input_t *in, ngx_pool_t *pool, u_char *cfg)
{
    ngx_str_t                    v, name;
    ngx_pool_cleanup_t          *cln;
    ngx_env_gateway_loc_conf_t  *glcf;

    static ngx_str_t  dummy = ngx_string("$configured");

    glcf = ngx_pcalloc(pool, sizeof(ngx_env_gateway_loc_conf_t));
    if (glcf == NULL) {
        abort();
    }

    cln = ngx_pool_cleanup_add(pool, 0);
    if (cln == NULL) {
        abort();
    }

    cln->handler = fuzz_conf_cleanup;
    cln->data = glcf;

    glcf->enable = 1;
    glcf->hide_credentials = (cfg[2] & FUZZ_HIDE) ? 1 : 0;
    glcf->identity_headers = (cfg[2] & FUZZ_IDENTITY) ? 1 : 0;
    glcf->log_level = fuzz_log_levels[cfg[3] & 3];

    switch (cfg[0] % 5) {

    case FUZZ_TOKEN_HTTP:
        glcf->token = fuzz_cv(pool, &dummy);
        glcf->token_header = fuzz_conf_name(pool, &in->token_name,
                                            "x_api_key", 1);
        break;

    case FUZZ_TOKEN_ARG:
        glcf->token = fuzz_cv(pool, &dummy);
        glcf->token_arg = fuzz_conf_name(pool, &in->token_name, "api_key",
                                         0);
        break;

    case FUZZ_TOKEN_COOKIE:
        glcf->token = fuzz_cv(pool, &dummy);
        glcf->token_cookie = fuzz_conf_name(pool, &in->token_name,
                                            "session", 0);
        break;

    case FUZZ_TOKEN_OTHER:
        v = fuzz_text(in, pool, &in->token_value);
        glcf->token = fuzz_cv(pool, &v);
        break;

    default:
        break;
    }

    switch (cfg[1] & 3) {

    case FUZZ_ACCOUNT_ARG:
        glcf->account = fuzz_cv(pool, &dummy);
        glcf->account_arg = fuzz_conf_name(pool, &in->account_name,
                                           "integrated_account_id", 0);
        break;

    case FUZZ_ACCOUNT_HTTP:
        glcf->account = fuzz_cv(pool, &dummy);
        glcf->account_header = fuzz_conf_name(pool, &in->account_name,
                                              "x_integrated_account", 1);
        break;

    case FUZZ_ACCOUNT_CV:
        v = fuzz_text(in, pool, &in->account_value);
        glcf->account = fuzz_cv(pool, &v);
        break;

    default:
        break;
    }

    glcf->account_required = (cfg[2] & FUZZ_REQUIRED) ? 1 : 0;

    if (cfg[2] & FUZZ_BODY_FIELD) {
        /* a NUL-terminated name without NUL, as the directive keeps it */
        name = fuzz_text(in, pool, &in->body_field);

        if (name.len && !ngx_strlchr(name.data, name.data + name.len, '\0'))
        {
            glcf->body_field.data = ngx_pnalloc(pool, name.len + 1);
            if (glcf->body_field.data == NULL) {
                abort();
            }

            ngx_memcpy(glcf->body_field.data, name.data, name.len);
            glcf->body_field.data[name.len] = '\0';
            glcf->body_field.len = name.len;
        }
    }

    if (cfg[2] & FUZZ_TENANT) {
        v = fuzz_text(in, pool, &in->tenant);
        glcf->tenant = fuzz_cv(pool, &v);
    }

    if (cfg[2] & FUZZ_INTEGRATION) {
        v = fuzz_text(in, pool, &in->integration);
        glcf->integration = fuzz_cv(pool, &v);
    }

    /* a route needs an account source: nginx -t refuses it otherwise */
    if ((cfg[2] & FUZZ_ROUTE)
        && (glcf->account || glcf->tenant || glcf->body_field.len))
    {
        v = fuzz_text(in, pool, &in->resource);
        glcf->route_resource = fuzz_cv(pool, &v);

        if (cfg[2] & FUZZ_ROUTE_REST) {
            v = fuzz_text(in, pool, &in->rest);
            glcf->route_rest = fuzz_cv(pool, &v);
        }
    }

    return glcf;
}


/* ------------------------------------------------------------------ */
/* the request                                                         */

/*
 * The raw URI as nginx's request line parser lets it through: starting
 * with '/', no space or control byte (a client would send those as %XX).
 */
static ngx_str_t
fuzz_uri(ngx_pool_t *pool, ngx_str_t *raw)
{
    u_char      *p, c;
    size_t       i, n;
    ngx_str_t    uri;

    static u_char  hex[] = "0123456789ABCDEF";

    n = 1;

    for (i = 0; i < raw->len; i++) {
        c = raw->data[i];
        n += (c <= 0x20 || c == 0x7f) ? 3 : 1;
    }

    uri.data = ngx_pnalloc(pool, n);
    if (uri.data == NULL) {
        abort();
    }

    p = uri.data;

    if (raw->len == 0 || raw->data[0] != '/') {
        *p++ = '/';
    }

    for (i = 0; i < raw->len; i++) {
        c = raw->data[i];

        if (c <= 0x20 || c == 0x7f) {
            *p++ = '%';
            *p++ = hex[c >> 4];
            *p++ = hex[c & 0xf];

        } else {
            *p++ = c;
        }
    }

    uri.len = p - uri.data;

    return uri;
}


/*
 * A header line as nginx's parser lets it through: a name without
 * control bytes, spaces or ':' (others are kept with
 * "ignore_invalid_headers off"), a value without NUL, CR or LF, without
 * leading or trailing spaces.
 */
static ngx_int_t
fuzz_header(ngx_http_request_t *r, ngx_str_t *name, ngx_str_t *value)
{
    u_char           *p, *last;
    size_t            i;
    ngx_table_elt_t  *h;

    if (name->len == 0) {
        return NGX_DECLINED;
    }

    for (i = 0; i < name->len; i++) {
        if (name->data[i] <= 0x20 || name->data[i] == 0x7f
            || name->data[i] == ':')
        {
            name->data[i] = 'x';
        }
    }

    for (i = 0; i < value->len; i++) {
        if (value->data[i] == '\0' || value->data[i] == CR
            || value->data[i] == LF)
        {
            value->data[i] = '.';
        }
    }

    p = value->data;
    last = p + value->len;

    while (p < last && *p == ' ') {
        p++;
    }

    while (last > p && last[-1] == ' ') {
        last--;
    }

    h = ngx_list_push(&r->headers_in.headers);
    if (h == NULL) {
        abort();
    }

    h->key = *name;
    h->value.data = p;
    h->value.len = last - p;

    h->lowcase_key = ngx_pnalloc(r->pool, name->len);
    if (h->lowcase_key == NULL) {
        abort();
    }

    ngx_strlow(h->lowcase_key, name->data, name->len);
    h->hash = ngx_hash_key(h->lowcase_key, name->len);

    if (h->hash == 0) {
        h->hash = 1;
    }

    /* the headers nginx's own handlers keep a pointer to (the first) */

    if (name->len == 13 && ngx_strncmp(h->lowcase_key, "authorization", 13)
                           == 0
        && r->headers_in.authorization == NULL)
    {
        r->headers_in.authorization = h;
    }

    if (name->len == 12 && ngx_strncmp(h->lowcase_key, "content-type", 12)
                           == 0
        && r->headers_in.content_type == NULL)
    {
        r->headers_in.content_type = h;
    }

    if (name->len == 4 && ngx_strncmp(h->lowcase_key, "host", 4) == 0
        && r->headers_in.host == NULL)
    {
        r->headers_in.host = h;
    }

    if (name->len == 7 && ngx_strncmp(h->lowcase_key, "referer", 7) == 0
        && r->headers_in.referer == NULL)
    {
        r->headers_in.referer = h;
    }

    return NGX_OK;
}


static ngx_http_request_t *
fuzz_request(fuzz_input_t *in, ngx_pool_t *pool,
    ngx_env_gateway_loc_conf_t *glcf, ngx_env_gateway_main_conf_t *gmcf)
{
    u_char              *p, *q;
    size_t               piece, pos;
    ngx_str_t            name, value, uri;
    ngx_buf_t           *b;
    ngx_uint_t           i, nbufs;
    ngx_chain_t         *cl, **ll;
    ngx_connection_t    *c;
    ngx_http_request_t  *r;

    r = ngx_pcalloc(pool, sizeof(ngx_http_request_t));
    c = ngx_pcalloc(pool, sizeof(ngx_connection_t));
    if (r == NULL || c == NULL) {
        abort();
    }

    c->log = &fuzz_clog;
    c->pool = pool;

    r->pool = pool;
    r->connection = c;
    r->main = r;
    r->count = 1;

    r->main_conf = ngx_pcalloc(pool, FUZZ_NCONF * sizeof(void *));
    r->loc_conf = ngx_pcalloc(pool, FUZZ_NCONF * sizeof(void *));
    r->ctx = ngx_pcalloc(pool, sizeof(void *));
    if (r->main_conf == NULL || r->loc_conf == NULL || r->ctx == NULL) {
        abort();
    }

    r->main_conf[ngx_env_gateway_module.ctx_index] = gmcf;
    r->loc_conf[ngx_env_gateway_module.ctx_index] = glcf;
    r->main_conf[ngx_http_upstream_module.ctx_index] = &fuzz_umcf;
    r->loc_conf[ngx_http_core_module.ctx_index] = &fuzz_clcf;

    /* the method: any bytes (HTTP/2 and HTTP/3 carry it as a field) */
    r->method_name = fuzz_text(in, pool, &in->method);
    r->method = ngx_env_gateway_method_flag(&r->method_name);

    value = fuzz_text(in, pool, &in->uri);
    uri = fuzz_uri(pool, &value);

    r->unparsed_uri = uri;
    r->valid_unparsed_uri = 1;

    q = ngx_strlchr(uri.data, uri.data + uri.len, '?');

    r->uri.data = uri.data;
    r->uri.len = (q ? q : uri.data + uri.len) - uri.data;

    if (q) {
        r->args.data = q + 1;
        r->args.len = uri.data + uri.len - (q + 1);
    }

    r->request_line.len = r->method_name.len + 1 + uri.len
                          + sizeof(" HTTP/1.1") - 1;
    r->request_line.data = ngx_pnalloc(pool, r->request_line.len);
    if (r->request_line.data == NULL) {
        abort();
    }

    p = ngx_cpymem(r->request_line.data, r->method_name.data,
                   r->method_name.len);
    *p++ = ' ';
    p = ngx_cpymem(p, uri.data, uri.len);
    ngx_memcpy(p, " HTTP/1.1", sizeof(" HTTP/1.1") - 1);

    /* small list parts: the module walks every part */
    if (ngx_list_init(&r->headers_in.headers, pool, 3,
                      sizeof(ngx_table_elt_t))
        != NGX_OK
        || ngx_list_init(&r->headers_out.headers, pool, 2,
                         sizeof(ngx_table_elt_t))
           != NGX_OK)
    {
        abort();
    }

    for (i = 0; i < in->nheaders; i++) {
        name = fuzz_text(in, pool, &in->hname[i]);
        value = fuzz_text(in, pool, &in->hvalue[i]);
        (void) fuzz_header(r, &name, &value);
    }

    r->headers_in.content_length_n = -1;

    if (in->has_body) {
        value = fuzz_text(in, pool, &in->body);
        r->headers_in.content_length_n = value.len;

        r->request_body = ngx_pcalloc(pool, sizeof(ngx_http_request_body_t));
        if (r->request_body == NULL) {
            abort();
        }

        /* read in one to three buffers */
        nbufs = 1 + (in->cfg[3] >> 4) % 3;
        ll = &r->request_body->bufs;
        pos = 0;

        for (i = 0; i < nbufs; i++) {
            piece = (i == nbufs - 1) ? value.len - pos : (value.len - pos) / 2;

            b = ngx_calloc_buf(pool);
            cl = ngx_alloc_chain_link(pool);
            if (b == NULL || cl == NULL) {
                abort();
            }

            b->pos = value.data + pos;
            b->last = b->pos + piece;
            b->start = b->pos;
            b->end = b->last;
            b->temporary = 1;

            cl->buf = b;
            cl->next = NULL;
            *ll = cl;
            ll = &cl->next;
            pos += piece;
        }
    }

    return r;
}


/* ------------------------------------------------------------------ */
/* the credential values a request carries, before anything is hidden  */

static void
fuzz_cand_add(ngx_str_t *v)
{
    ngx_uint_t  i;

    if (v->len < NGX_ENVGW_TOKEN_SEARCH_MIN || fuzz_ncand == FUZZ_NCAND) {
        return;
    }

    for (i = 0; i < fuzz_ncand; i++) {
        if (fuzz_eq(&fuzz_cand[i], v)) {
            return;
        }
    }

    fuzz_cand[fuzz_ncand] = fuzz_str(v->data, v->len);
    fuzz_ncand++;
}


static void
fuzz_cookies(ngx_str_t *header, ngx_str_t *name, ngx_str_t *value,
    ngx_uint_t *count)
{
    u_char  *p, *last, *end, *eq, *start;

    p = header->data;
    last = p + header->len;

    while (p < last) {
        end = ngx_strlchr(p, last, ';');
        if (end == NULL) {
            end = last;
        }

        for (start = p; start < end && (*start == ' ' || *start == '\t');
             start++)
        {
            /* void */
        }

        eq = ngx_strlchr(start, end, '=');

        if (eq && name->len && (size_t) (eq - start) == name->len
            && ngx_strncasecmp(start, name->data, name->len) == 0)
        {
            (*count)++;

            if (value) {
                value->data = eq + 1;
                value->len = end - value->data;
                fuzz_cand_add(value);
            }
        }

        p = end + 1;
    }
}


static void
fuzz_candidates(ngx_http_request_t *r, ngx_env_gateway_loc_conf_t *glcf)
{
    ngx_str_t                names[3], token, cookie;
    ngx_uint_t               i, k, n;
    ngx_list_part_t         *part;
    ngx_table_elt_t         *h;
    ngx_env_gateway_arg_t    arg;
    ngx_env_gateway_args_t   it;

    static ngx_str_t  authorization = ngx_string("authorization");
    static ngx_str_t  cookie_lc = ngx_string("cookie");

    names[0] = glcf->token_cookie;
    ngx_str_set(&names[1], "access_token");
    names[2] = glcf->token_arg;

    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (fuzz_name_is(&h[i].key, &authorization)
            && ngx_env_gateway_bearer(&h[i].value, &token) == NGX_OK)
        {
            fuzz_cand_add(&token);
        }

        if (glcf->token_header.len
            && fuzz_name_is(&h[i].key, &glcf->token_header))
        {
            fuzz_cand_add(&h[i].value);
        }

        if (fuzz_name_is(&h[i].key, &cookie_lc)) {
            for (k = 0; k < 3; k++) {
                n = 0;
                fuzz_cookies(&h[i].value, &names[k], &cookie, &n);
            }
        }
    }

    ngx_env_gateway_args_init(&it, &r->args);

    while (ngx_env_gateway_args_next(&it, &arg) == NGX_OK) {
        for (k = 1; k < 3; k++) {
            if (ngx_env_gateway_arg_match(&arg, &names[k])
                != NGX_ENVGW_ARG_OTHER)
            {
                fuzz_cand_add(&arg.value);
            }
        }
    }

    if (glcf->token && glcf->token_header.len == 0
        && glcf->token_arg.len == 0 && glcf->token_cookie.len == 0)
    {
        fuzz_cand_add(&glcf->token->value);
    }
}


/*
 * May the credential's bytes show up in an output without a leak?  Only
 * when they are also a value the outputs name legitimately: a record's
 * field, a configured value (of either location), the method, the path or
 * the body.
 */
static ngx_uint_t
fuzz_echoed(ngx_str_t *cand, ngx_http_request_t *r,
    ngx_env_gateway_ctx_t *ctx, ngx_env_gateway_loc_conf_t *glcf,
    ngx_str_t *path, ngx_str_t *body)
{
    ngx_uint_t                 i, k;
    ngx_env_gateway_slot_t    *slot;
    ngx_http_complex_value_t  *cvs[6];

    for (k = 0; k < NGX_ENVGW_NSLOTS; k++) {
        slot = &ctx->waiter.slots[k];

        if (slot->status != NGX_ENVGW_FETCH_FOUND) {
            continue;
        }

        for (i = 0; i < slot->rec.nfields; i++) {
            if (fuzz_contains(&slot->rec.fields[i], cand)) {
                return 1;
            }
        }
    }

    for (i = 0; i < 2 && fuzz_locs[i]; i++) {
        glcf = fuzz_locs[i];

        cvs[0] = glcf->account;
        cvs[1] = glcf->tenant;
        cvs[2] = glcf->integration;
        cvs[3] = glcf->route_resource;
        cvs[4] = glcf->route_rest;
        cvs[5] = glcf->token;

        for (k = 0; k < 6; k++) {
            if (cvs[k] && fuzz_contains(&cvs[k]->value, cand)) {
                return 1;
            }
        }
    }

    return fuzz_contains(&r->method_name, cand) || fuzz_contains(path, cand)
           || fuzz_contains(body, cand);
}


/* ------------------------------------------------------------------ */
/* the replaced fetch layer                                            */

static void
fuzz_answer(ngx_http_request_t *r, ngx_env_gateway_slot_t *slot,
    ngx_uint_t kind, ngx_str_t *key)
{
    u_char     *blob;
    size_t      blob_len;
    ngx_int_t   rc;

    switch (fuzz_in->mode[kind]) {

    case FUZZ_NOT_FOUND:
        slot->status = NGX_ENVGW_FETCH_NOT_FOUND;
        return;

    case FUZZ_UNAVAILABLE:
        slot->status = NGX_ENVGW_FETCH_UNAVAILABLE;
        return;

    case FUZZ_MALFORMED:
        /* a value that is not a string (WRONGTYPE) */
        slot->status = NGX_ENVGW_FETCH_MALFORMED;
        return;

    default:
        break;
    }

    blob = NULL;
    blob_len = 0;

    /* as the Redis reply handler does: parsed once, loaded into the pool */
    rc = ngx_env_gateway_record_parse(kind, fuzz_in->rec[kind].data,
                                      fuzz_in->rec[kind].len,
                                      ngx_cycle->log, key, &blob, &blob_len);

    if (rc == NGX_OK) {
        if (ngx_env_gateway_record_load(r->pool, blob, blob_len, &slot->rec)
            != NGX_OK)
        {
            abort();
        }

        ngx_free(blob);
        slot->status = NGX_ENVGW_FETCH_FOUND;

        /* where its fields are: a key naming one names a record's value */
        if (slot->rec.nfields && fuzz_nloaded < 4 * NGX_ENVGW_NSLOTS) {
            fuzz_loaded[fuzz_nloaded].data = slot->rec.fields[0].data;
            fuzz_loaded[fuzz_nloaded].len =
                   slot->rec.fields[slot->rec.nfields - 1].data
                   + slot->rec.fields[slot->rec.nfields - 1].len
                   - slot->rec.fields[0].data;
            fuzz_nloaded++;
        }

    } else if (rc == NGX_DECLINED) {
        slot->status = NGX_ENVGW_FETCH_MALFORMED;

    } else {
        slot->status = NGX_ENVGW_FETCH_UNAVAILABLE;
    }
}


/* a value of the request's (not a record's) with a control byte or quote */
static ngx_uint_t
fuzz_odd_request_value(ngx_str_t *v)
{
    size_t      i;
    ngx_uint_t  k;

    for (k = 0; k < fuzz_nloaded; k++) {
        if (v->data >= fuzz_loaded[k].data
            && v->data + v->len <= fuzz_loaded[k].data + fuzz_loaded[k].len)
        {
            return 0;
        }
    }

    for (i = 0; i < v->len; i++) {
        if (v->data[i] < 0x20 || v->data[i] == 0x7f || v->data[i] == '"') {
            return 1;
        }
    }

    return 0;
}


ngx_int_t
ngx_env_gateway_fetch(ngx_http_request_t *r, ngx_env_gateway_slot_t *slot,
    ngx_uint_t kind, ngx_str_t *family, ngx_str_t *id, ngx_str_t *id2)
{
    u_char                       *p;
    size_t                        i;
    ngx_str_t                     key;
    fuzz_pending_t               *f;
    ngx_env_gateway_main_conf_t  *gmcf;

    gmcf = ngx_http_get_module_main_conf(r, ngx_env_gateway_module);

    /* a slot is fetched into its own place, and never twice at once */
    if (kind >= NGX_ENVGW_REC_LAST
        || slot != &slot->waiter->slots[kind]
        || slot->waiter->request != r
        || slot->status == NGX_ENVGW_FETCH_PENDING || slot->linked
        || ++fuzz_fetches > 4 * NGX_ENVGW_NSLOTS)
    {
        abort();
    }

    /* a token is looked up by its SHA-256 only */
    if (kind == NGX_ENVGW_REC_TOKEN) {
        if (id->len != ENVGW_SHA256_HEX_LEN || id2 != NULL) {
            abort();
        }

        for (i = 0; i < id->len; i++) {
            if (!((id->data[i] >= '0' && id->data[i] <= '9')
                  || (id->data[i] >= 'a' && id->data[i] <= 'f')))
            {
                abort();
            }
        }
    }

    /* "<prefix><family><id>[:<id2>]", as _fetch.c builds it */
    key.len = gmcf->prefix.len + family->len + id->len
              + (id2 ? 1 + id2->len : 0);
    key.data = ngx_pnalloc(r->pool, key.len);
    if (key.data == NULL) {
        abort();
    }

    p = ngx_cpymem(key.data, gmcf->prefix.data, gmcf->prefix.len);
    p = ngx_cpymem(p, family->data, family->len);
    p = ngx_cpymem(p, id->data, id->len);

    if (id2) {
        *p++ = ':';
        ngx_memcpy(p, id2->data, id2->len);
    }

    /* a key naming the request's control bytes or quotes: never raw */
    if (fuzz_odd_request_value(id) || (id2 && fuzz_odd_request_value(id2))) {
        fuzz_keys[fuzz_nkeys++] = key;
    }

    slot->stale = 0;
    slot->cache = NGX_ENVGW_CACHE_NONE;

    if (!(fuzz_in->cfg[4] & (1 << kind))) {
        /* answered at once, as from the cache */
        slot->cache = NGX_ENVGW_CACHE_HIT;
        fuzz_answer(r, slot, kind, &key);
        return NGX_OK;
    }

    if (fuzz_npending == FUZZ_NPENDING) {
        abort();
    }

    f = &fuzz_pending[fuzz_npending++];
    f->slot = slot;
    f->kind = kind;
    f->key = key;

    slot->cache = NGX_ENVGW_CACHE_MISS;
    slot->status = NGX_ENVGW_FETCH_PENDING;
    slot->linked = 1;
    slot->waiter->pending++;

    return NGX_AGAIN;
}


/* the replies arrive: every waiting slot is answered */
static void
fuzz_replies(void)
{
    ngx_uint_t       i;
    fuzz_pending_t   f;

    while (fuzz_npending) {
        i = (fuzz_in->cfg[3] & FUZZ_REVERSE) ? fuzz_npending - 1 : 0;
        f = fuzz_pending[i];

        ngx_memmove(&fuzz_pending[i], &fuzz_pending[i + 1],
                    (fuzz_npending - i - 1) * sizeof(fuzz_pending_t));
        fuzz_npending--;

        f.slot->linked = 0;

        if (f.slot->waiter->pending == 0) {
            abort();
        }

        fuzz_answer(f.slot->waiter->request, f.slot, f.kind, &f.key);
        f.slot->waiter->pending--;
    }
}


void
ngx_env_gateway_waiter_detach(ngx_env_gateway_waiter_t *w)
{
    ngx_uint_t  i;

    for (i = 0; i < fuzz_npending; /* void */) {
        if (fuzz_pending[i].slot->waiter != w) {
            i++;
            continue;
        }

        fuzz_pending[i].slot->linked = 0;
        ngx_memmove(&fuzz_pending[i], &fuzz_pending[i + 1],
                    (fuzz_npending - i - 1) * sizeof(fuzz_pending_t));
        fuzz_npending--;
    }

    w->pending = 0;
}


void
ngx_env_gateway_fetch_init(ngx_env_gateway_main_conf_t *gmcf)
{
}


void
ngx_env_gateway_invalidate(ngx_str_t *key)
{
}


/* ------------------------------------------------------------------ */
/* the refusal sender's nginx calls                                    */

static ngx_int_t
fuzz_discard_request_body(ngx_http_request_t *r)
{
    fuzz_sent.discards++;
    return NGX_OK;
}


static ngx_int_t
fuzz_send_header(ngx_http_request_t *r)
{
    if (r->header_sent) {
        abort();
    }

    r->header_sent = 1;
    fuzz_sent.headers++;

    return NGX_OK;
}


static ngx_int_t
fuzz_output_filter(ngx_http_request_t *r, ngx_chain_t *in)
{
    ngx_chain_t  *cl;

    fuzz_sent.outputs++;

    for (cl = in; cl; cl = cl->next) {
        fuzz_put(&fuzz_sent.body, cl->buf->pos, cl->buf->last - cl->buf->pos);
        fuzz_sent.last_buf = cl->buf->last_buf;
    }

    return NGX_OK;
}


static void
fuzz_finalize_request(ngx_http_request_t *r, ngx_int_t rc)
{
    fuzz_sent.finalizes++;
    fuzz_sent.finalize_rc = rc;
}


/* ------------------------------------------------------------------ */
/* the log                                                             */

static void
fuzz_log_writer(ngx_log_t *log, ngx_uint_t level, u_char *buf, size_t len)
{
    u_char  nul;

    nul = '\0';
    fuzz_put(&fuzz_lines, buf, len);
    fuzz_put(&fuzz_lines, &nul, 1);
}


/*
 * Every captured line: the refusal line is printable ASCII with exactly
 * its three quoted values; no line but debug ones names a record key with
 * a raw control byte or quote of the request's (a key part taken from a
 * record is the record's, as is what jansson says of a record's bytes); no
 * line carries a credential value.
 */
static void
fuzz_check_log(ngx_http_request_t *r, ngx_env_gateway_ctx_t *ctx,
    ngx_env_gateway_loc_conf_t *glcf, ngx_str_t *path, ngx_str_t *body)
{
    u_char      *p, *last, *end;
    size_t       i, quotes;
    ngx_str_t    line;
    ngx_uint_t   k;

    p = fuzz_lines.data;
    last = p + fuzz_lines.len;

    for ( /* void */ ; p < last; p = end + 1) {
        end = memchr(p, '\0', last - p);
        if (end == NULL) {
            abort();
        }

        line.data = p;
        line.len = end - p;

        for (k = 0; k < fuzz_ncand; k++) {
            if (fuzz_contains(&line, &fuzz_cand[k])
                && !fuzz_echoed(&fuzz_cand[k], r, ctx, glcf, path, body))
            {
                abort();
            }
        }

        if (memmem(line.data, line.len, " [debug] ", 9)) {
            continue;
        }

        for (k = 0; !fuzz_skip_keys && k < fuzz_nkeys; k++) {
            if (fuzz_contains(&line, &fuzz_keys[k])) {
                abort();
            }
        }

        if (memmem(line.data, line.len, "env_gateway: refused ", 21) == NULL)
        {
            continue;
        }

        /* the line ends with its linefeed */
        for (i = 0, quotes = 0; i + 1 < line.len; i++) {
            if (line.data[i] < 0x20 || line.data[i] > 0x7e) {
                abort();
            }

            quotes += (line.data[i] == '"');
        }

        /* token_id="..." environment_id="..." account="..." (or cut) */
        if (quotes > 6 || (quotes < 6 && line.len < NGX_MAX_ERROR_STR)) {
            abort();
        }
    }

    /*
     * What nginx appends to the request's error lines, and access logs.
     * Only once the gateway has read a credential: bytes it never read as
     * one (a token sent where this location reads none, refused as
     * missing_token) cannot be told from any other value.
     */
    for (k = 0; !fuzz_skip_appended && ctx->have_token && k < fuzz_ncand;
         k++)
    {
        if ((fuzz_contains(&r->request_line, &fuzz_cand[k])
             || (r->headers_in.host
                 && fuzz_contains(&r->headers_in.host->value, &fuzz_cand[k]))
             || (r->headers_in.referer
                 && fuzz_contains(&r->headers_in.referer->value,
                                  &fuzz_cand[k])))
            && !fuzz_echoed(&fuzz_cand[k], r, ctx, glcf, path, body))
        {
            abort();
        }
    }
}


/* ------------------------------------------------------------------ */
/* the outcomes                                                        */

static void
fuzz_check_refusal(ngx_http_request_t *r, ngx_env_gateway_ctx_t *ctx,
    ngx_env_gateway_loc_conf_t *glcf, ngx_str_t *path, ngx_str_t *body)
{
    size_t                      i;
    json_t                     *root, *status, *error, *message;
    ngx_str_t                   sent, msg;
    ngx_uint_t                  k, www, retry;
    const char                 *s;
    json_error_t                err;
    ngx_list_part_t            *part;
    ngx_table_elt_t            *h;
    ngx_env_gateway_refusal_t  *rf;

    if (ctx->refusal == NGX_ENVGW_OK || ctx->refusal >= NGX_ENVGW_NREFUSALS
        || fuzz_sent.discards != 1 || fuzz_sent.headers != 1
        || fuzz_sent.outputs != 1 || fuzz_sent.finalizes != 1
        || fuzz_sent.finalize_rc != NGX_OK || !fuzz_sent.last_buf)
    {
        abort();
    }

    rf = &ngx_env_gateway_refusals[ctx->refusal];

    if (r->headers_out.status != rf->status
        || r->headers_out.content_length_n != (off_t) fuzz_sent.body.len
        || r->headers_out.content_type.len != sizeof("application/json") - 1
        || ngx_strncmp(r->headers_out.content_type.data, "application/json",
                       sizeof("application/json") - 1) != 0)
    {
        abort();
    }

    www = 0;
    retry = 0;

    part = &r->headers_out.headers.part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        www += (h[i].key.len == sizeof("WWW-Authenticate") - 1);
        retry += (h[i].key.len == sizeof("Retry-After") - 1);
    }

    if (www != (rf->status == NGX_HTTP_UNAUTHORIZED)
        || retry != (rf->status == NGX_HTTP_SERVICE_UNAVAILABLE))
    {
        abort();
    }

    /* printable ASCII, one line */
    sent.data = fuzz_sent.body.data;
    sent.len = fuzz_sent.body.len;

    if (sent.len < 2 || sent.data[sent.len - 1] != '\n') {
        abort();
    }

    for (i = 0; i + 1 < sent.len; i++) {
        if (sent.data[i] < 0x20 || sent.data[i] > 0x7e) {
            abort();
        }
    }

    root = json_loadb((const char *) sent.data, sent.len, 0, &err);

    if (root == NULL || !json_is_object(root) || json_object_size(root) != 3)
    {
        abort();
    }

    status = json_object_get(root, "status");
    error = json_object_get(root, "error");
    message = json_object_get(root, "message");

    if (!json_is_integer(status)
        || json_integer_value(status) != (json_int_t) rf->status
        || !json_is_string(error)
        || ngx_strcmp(json_string_value(error), rf->code) != 0
        || !json_is_string(message) || json_string_length(message) == 0)
    {
        abort();
    }

    s = json_string_value(message);
    msg.data = (u_char *) s;
    msg.len = json_string_length(message);

    for (i = 0; i < msg.len; i++) {
        if (msg.data[i] < 0x20 || msg.data[i] > 0x7e) {
            abort();
        }
    }

    for (k = 0; k < fuzz_ncand; k++) {
        if (fuzz_contains(&sent, &fuzz_cand[k])
            && !fuzz_echoed(&fuzz_cand[k], r, ctx, glcf, path, body))
        {
            abort();
        }
    }

    json_decref(root);
}


/*
 * $env_gateway_upstream_url, byte for byte: the upstream (without its
 * last '/' when the template starts with one), the template with {id} =
 * rest and {name} = the query argument "name" decoded and percent-encoded
 * by nginx's encoder, then the query without the consumed arguments.
 */
static void
fuzz_check_url(ngx_http_request_t *r, ngx_env_gateway_ctx_t *ctx,
    ngx_env_gateway_loc_conf_t *glcf)
{
    u_char                    *p, *last, *close, *dst, *src;
    size_t                     n;
    ngx_str_t                 *f, *quad, up, name, value, drop[64];
    ngx_uint_t                 i, k, ndrop, first, skip, found;
    fuzz_buf_t                 url, tmp;
    ngx_env_gateway_arg_t      arg;
    ngx_env_gateway_args_t     it;
    ngx_env_gateway_record_t  *rec;

    if (ctx->waiter.slots[NGX_ENVGW_REC_INTEGRATION].status
        != NGX_ENVGW_FETCH_FOUND)
    {
        abort();
    }

    rec = &ctx->waiter.slots[NGX_ENVGW_REC_INTEGRATION].rec;
    f = rec->fields;
    quad = NULL;

    for (i = NGX_ENVGW_INT_FIRST; i + 3 < rec->nfields; i += 4) {
        if (fuzz_eq(&f[i], &ctx->resource) && fuzz_eq(&f[i + 1], &ctx->method))
        {
            quad = &f[i];
            break;
        }
    }

    /* the method chosen exists, and the upstream is called with its verb */
    if (quad == NULL || !fuzz_eq(&r->method_name, &quad[2])) {
        abort();
    }

    up = f[NGX_ENVGW_INT_UPSTREAM];

    if (up.len && up.data[up.len - 1] == '/'
        && quad[3].len && quad[3].data[0] == '/')
    {
        up.len--;
    }

    ngx_memzero(&url, sizeof(fuzz_buf_t));
    fuzz_put(&url, up.data, up.len);

    ngx_str_set(&drop[0], "integrated_account_id");
    ngx_str_set(&drop[1], "environment_id");
    drop[2] = glcf->token_arg;
    drop[3] = glcf->account_arg;
    ndrop = 4;

    p = quad[3].data;
    last = p + quad[3].len;

    while (p < last) {
        close = (*p == '{') ? ngx_strlchr(p, last, '}') : NULL;

        if (close == NULL) {
            fuzz_put(&url, p, 1);
            p++;
            continue;
        }

        name.data = p + 1;
        name.len = close - p - 1;
        p = close + 1;

        ngx_memzero(&tmp, sizeof(fuzz_buf_t));

        if (name.len == 2 && ngx_strncmp(name.data, "id", 2) == 0) {
            value = ctx->rest;

        } else {
            found = 0;
            ngx_env_gateway_args_init(&it, &r->args);

            while (ngx_env_gateway_args_next(&it, &arg) == NGX_OK) {
                if (fuzz_eq(&arg.name, &name)) {
                    found = 1;
                    break;
                }
            }

            if (!found || arg.value.len == 0) {
                abort();
            }

            tmp.data = malloc(arg.value.len);
            if (tmp.data == NULL) {
                abort();
            }

            dst = tmp.data;
            src = arg.value.data;
            ngx_unescape_uri(&dst, &src, arg.value.len, NGX_UNESCAPE_URI);

            value.data = tmp.data;
            value.len = dst - tmp.data;

            if (ndrop < 64) {
                drop[ndrop++] = name;
            }
        }

        n = ngx_escape_uri(NULL, value.data, value.len,
                           NGX_ESCAPE_URI_COMPONENT);

        dst = malloc(value.len + 2 * n + 1);
        if (dst == NULL) {
            abort();
        }

        src = (u_char *) ngx_escape_uri(dst, value.data, value.len,
                                        NGX_ESCAPE_URI_COMPONENT);
        fuzz_put(&url, dst, src - dst);

        free(dst);
        free(tmp.data);
    }

    first = 1;
    ngx_env_gateway_args_init(&it, &r->args);

    while (ngx_env_gateway_args_next(&it, &arg) == NGX_OK) {
        skip = 0;

        for (k = 0; k < ndrop; k++) {
            if (drop[k].len && fuzz_eq(&arg.name, &drop[k])) {
                skip = 1;
            }
        }

        if (skip) {
            continue;
        }

        fuzz_put(&url, (u_char *) (first ? "?" : "&"), 1);
        fuzz_put(&url, arg.raw.data, arg.raw.len);
        first = 0;
    }

    if (url.len != ctx->upstream_url.len
        || (url.len && memcmp(url.data, ctx->upstream_url.data, url.len)))
    {
        abort();
    }

    free(url.data);
}


static void
fuzz_check_allow(ngx_http_request_t *r, ngx_env_gateway_ctx_t *ctx,
    ngx_env_gateway_loc_conf_t *glcf, ngx_str_t *path, ngx_str_t *body)
{
    size_t                     i;
    ngx_str_t                 *tf, *af, env_id, env_name;
    ngx_str_t                  expect[NGX_ENVGW_NIDENTITY], names[3], *v;
    ngx_uint_t                 k, n, hide, count[NGX_ENVGW_NIDENTITY];
    ngx_list_part_t           *part;
    ngx_table_elt_t           *h, *value[NGX_ENVGW_NIDENTITY];
    ngx_env_gateway_arg_t      arg;
    ngx_env_gateway_args_t     it;
    ngx_env_gateway_record_t  *tok, *acc, *env;

    static ngx_str_t  authorization = ngx_string("authorization");
    static ngx_str_t  cookie_lc = ngx_string("cookie");

    if (fuzz_sent.discards || fuzz_sent.headers || fuzz_sent.outputs
        || fuzz_sent.finalizes || ctx->refusal != NGX_ENVGW_OK
        || ctx->state != NGX_ENVGW_ST_DONE || ctx->checked != glcf)
    {
        abort();
    }

    /*
     * Nothing in flight: a reply arriving after the allow would post the
     * resume event and run the phases again for a request that went on.
     */
    if ((fuzz_npending || ctx->waiter.pending) && !fuzz_skip_pending) {
        abort();
    }

    /* the token: found, in force */

    if (ctx->waiter.slots[NGX_ENVGW_REC_TOKEN].status
        != NGX_ENVGW_FETCH_FOUND)
    {
        abort();
    }

    tok = &ctx->waiter.slots[NGX_ENVGW_REC_TOKEN].rec;
    tf = tok->fields;

    if (tok->nfields != NGX_ENVGW_TOK_NFIELDS
        || (tok->flags & NGX_ENVGW_TOK_REVOKED)
        || (tok->expires_at && tok->expires_at <= (int64_t) ngx_time()))
    {
        abort();
    }

    /* the environment: the token's, or one of an admin token's team */

    env_id = tf[NGX_ENVGW_TOK_ENV_ID];
    env_name = tf[NGX_ENVGW_TOK_ENV_NAME];

    if (ctx->env_req.len && !fuzz_eq(&ctx->env_req, &env_id)) {
        env = &ctx->waiter.slots[NGX_ENVGW_REC_ENV].rec;

        if (!(tok->flags & NGX_ENVGW_TOK_KIND_ADMIN)
            || ctx->waiter.slots[NGX_ENVGW_REC_ENV].status
               != NGX_ENVGW_FETCH_FOUND
            || !fuzz_eq(&env->fields[NGX_ENVGW_ENV_ID], &ctx->env_req)
            || !fuzz_eq(&env->fields[NGX_ENVGW_ENV_TEAM_ID],
                        &tf[NGX_ENVGW_TOK_TEAM_ID]))
        {
            abort();
        }

        env_id = ctx->env_req;
        env_name = env->fields[NGX_ENVGW_ENV_NAME];
    }

    if (env_id.len == 0 || !fuzz_eq(&ctx->environment_id, &env_id)
        || !fuzz_eq(&ctx->environment, &env_name)
        || !fuzz_eq(&ctx->team_id, &tf[NGX_ENVGW_TOK_TEAM_ID])
        || !fuzz_eq(&ctx->token_id, &tf[NGX_ENVGW_TOK_TOKEN_ID]))
    {
        abort();
    }

    /* the account: active, of this environment, the one named */

    ngx_memzero(expect, sizeof(expect));
    expect[0] = env_id;
    expect[1] = env_name;
    expect[2] = tf[NGX_ENVGW_TOK_TEAM_ID];
    expect[3] = tf[NGX_ENVGW_TOK_TOKEN_ID];

    if (ctx->account_id.len) {
        acc = &ctx->waiter.slots[NGX_ENVGW_REC_ACCOUNT].rec;
        af = acc->fields;

        if (ctx->waiter.slots[NGX_ENVGW_REC_ACCOUNT].status
            != NGX_ENVGW_FETCH_FOUND
            || acc->nfields != NGX_ENVGW_ACC_NFIELDS
            || !(acc->flags & NGX_ENVGW_ACC_ACTIVE)
            || !fuzz_eq(&af[NGX_ENVGW_ACC_ID], &ctx->account_id)
            || !fuzz_eq(&af[NGX_ENVGW_ACC_ENV_ID], &env_id)
            || !fuzz_eq(&af[NGX_ENVGW_ACC_INTEGRATION], &ctx->integration)
            || !fuzz_eq(&af[NGX_ENVGW_ACC_TENANT_ID], &ctx->tenant_id)
            || ((tok->flags & NGX_ENVGW_TOK_KIND_ACCOUNT)
                && !fuzz_eq(&tf[NGX_ENVGW_TOK_ACCOUNT_ID], &ctx->account_id))
            || (ctx->account_req.len
                && !fuzz_eq(&ctx->account_req, &ctx->account_id))
            || (ctx->body_account.len
                && !fuzz_eq(&ctx->body_account, &ctx->account_id)))
        {
            abort();
        }

        expect[4] = ctx->account_id;
        expect[5] = af[NGX_ENVGW_ACC_TENANT_ID];

    } else if (glcf->account_required || glcf->route_resource
               || ctx->account_req.len || ctx->body_account.len
               || ctx->tenant_req.len
               || (tok->flags & NGX_ENVGW_TOK_KIND_ACCOUNT))
    {
        abort();
    }

    if (glcf->route_resource) {
        fuzz_check_url(r, ctx, glcf);

    } else if (ctx->upstream_url.len) {
        abort();
    }

    /* the headers going upstream */

    ngx_memzero(count, sizeof(count));
    ngx_memzero(value, sizeof(value));

    names[0] = glcf->token_cookie;
    ngx_str_set(&names[1], "access_token");
    names[2] = glcf->token_arg;

    /* a credential the location names can be hidden (not "any value") */
    hide = glcf->hide_credentials
           && (glcf->token == NULL || glcf->token_header.len
               || glcf->token_arg.len || glcf->token_cookie.len);

    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].hash == 0) {
            continue;
        }

        for (k = 0; k < NGX_ENVGW_NIDENTITY; k++) {
            if (fuzz_name_is(&h[i].key, &fuzz_identity_lc[k])) {
                count[k]++;
                value[k] = &h[i];
            }
        }

        if (!hide) {
            continue;
        }

        /* hide_credentials: no credential header, cookie, or its bytes */

        if (fuzz_name_is(&h[i].key, &authorization)
            || (glcf->token_header.len
                && fuzz_name_is(&h[i].key, &glcf->token_header)))
        {
            abort();
        }

        if (fuzz_name_is(&h[i].key, &cookie_lc)) {
            n = 0;

            for (k = 0; k < 3; k++) {
                fuzz_cookies(&h[i].value, &names[k], NULL, &n);
            }

            if (n) {
                abort();
            }
        }

        for (k = 0; k < fuzz_ncand; k++) {
            if (fuzz_contains(&h[i].value, &fuzz_cand[k])
                && !fuzz_echoed(&fuzz_cand[k], r, ctx, glcf, path, body))
            {
                abort();
            }
        }
    }

    /* identity headers: exactly the checked values, or none at all */

    for (k = 0; k < NGX_ENVGW_NIDENTITY; k++) {
        v = (ngx_str_t *) ((char *) ctx + fuzz_identity_field[k]);

        if (!fuzz_eq(v, &expect[k])) {
            abort();
        }

        if (!glcf->identity_headers || expect[k].len == 0) {
            if (count[k]) {
                abort();
            }

            continue;
        }

        if (count[k] != 1 || !fuzz_eq(&value[k]->value, &expect[k])) {
            abort();
        }
    }

    if (!hide) {
        return;
    }

    if (r->headers_in.authorization) {
        abort();
    }

    /* the query going upstream: no credential argument, no credential */

    ngx_env_gateway_args_init(&it, &r->args);

    while (ngx_env_gateway_args_next(&it, &arg) == NGX_OK) {
        if (ngx_env_gateway_arg_match(&arg, &names[1]) != NGX_ENVGW_ARG_OTHER
            || ngx_env_gateway_arg_match(&arg, &names[2])
               != NGX_ENVGW_ARG_OTHER)
        {
            abort();
        }
    }

    for (k = 0; k < fuzz_ncand; k++) {
        if ((fuzz_contains(&r->args, &fuzz_cand[k])
             || fuzz_contains(&ctx->upstream_url, &fuzz_cand[k]))
            && !fuzz_echoed(&fuzz_cand[k], r, ctx, glcf, path, body))
        {
            abort();
        }
    }
}


/* ------------------------------------------------------------------ */

static void
fuzz_init_access(void)
{
    char  *skip;

    static ngx_uint_t  done;

    if (done) {
        return;
    }

    done = 1;

    fuzz_init();

    fuzz_clog.log_level = NGX_LOG_INFO | NGX_LOG_DEBUG_HTTP;
    fuzz_clog.file = NULL;
    fuzz_clog.connection = 1;
    fuzz_clog.writer = fuzz_log_writer;

    /* process-lifetime allocations (the fixed refusal bodies) log here */
    fuzz_cycle.log = &fuzz_clog;
    ngx_cycle = &fuzz_cycle;

    ngx_env_gateway_module.ctx_index = 0;

    /*
     * no upstream{} block, and a resolver: every upstream host the
     * record's parser lets through is one proxy_pass can reach
     */
    ngx_http_upstream_module.ctx_index = 1;
    ngx_http_core_module.ctx_index = 2;
    fuzz_resolver.connections.nelts = 1;
    fuzz_clcf.resolver = &fuzz_resolver;

    fuzz_verbose = (getenv("ENVGW_FUZZ_VERBOSE") != NULL);

    skip = getenv("ENVGW_FUZZ_SKIP");

    if (skip) {
        fuzz_skip_appended = (strstr(skip, "appended") != NULL);
        fuzz_skip_keys = (strstr(skip, "keys") != NULL);
        fuzz_skip_pending = (strstr(skip, "pending") != NULL);
    }
}


/* what happened, for reading a corpus: ENVGW_FUZZ_VERBOSE=1 */
static void
fuzz_report(ngx_int_t rc, ngx_env_gateway_ctx_t *ctx)
{
    size_t  i;

    if (rc == NGX_OK) {
        fprintf(stderr, "allow environment=%.*s account=%.*s method=%.*s "
                "url=%.*s\n",
                (int) ctx->environment_id.len, ctx->environment_id.data,
                (int) ctx->account_id.len, ctx->account_id.data,
                (int) ctx->method.len, ctx->method.data,
                (int) ctx->upstream_url.len, ctx->upstream_url.data);

    } else {
        fprintf(stderr, "refusal %.*s", (int) fuzz_sent.body.len,
                fuzz_sent.body.data);
    }

    for (i = 0; i < fuzz_lines.len; i++) {
        if (fuzz_lines.data[i]) {
            fputc(fuzz_lines.data[i], stderr);
        }
    }
}


/* the access phase; after NGX_AGAIN the replies resume it */
static ngx_int_t
fuzz_run(ngx_http_request_t *r, ngx_env_gateway_ctx_t *ctx)
{
    ngx_int_t   rc;
    ngx_uint_t  round;

    for (round = 0; /* void */; round++) {
        rc = ngx_env_gateway_access_handler(r);

        if (rc != NGX_AGAIN) {
            return rc;
        }

        /* waiting for nothing would wait forever */
        if (round == FUZZ_ROUNDS || fuzz_npending == 0
            || ctx->waiter.pending != fuzz_npending)
        {
            abort();
        }

        fuzz_replies();
    }
}


static void
fuzz_outcome(ngx_http_request_t *r, ngx_env_gateway_ctx_t *ctx,
    ngx_env_gateway_loc_conf_t *glcf, ngx_int_t rc, ngx_str_t *path,
    ngx_str_t *body)
{
    if (fuzz_verbose) {
        fuzz_report(rc, ctx);
    }

    if (rc == NGX_OK) {
        fuzz_check_allow(r, ctx, glcf, path, body);

        /* checked once for this location: allowed again, nothing sent */
        if (ngx_env_gateway_access_handler(r) != NGX_OK
            || ngx_env_gateway_precontent_handler(r) != NGX_DECLINED
            || fuzz_sent.headers)
        {
            abort();
        }

    } else if (rc == NGX_DONE) {
        fuzz_check_refusal(r, ctx, glcf, path, body);

        /* a refused request stays refused, and nothing more is sent */
        if (ngx_env_gateway_access_handler(r) != NGX_HTTP_FORBIDDEN
            || fuzz_sent.headers != 1)
        {
            abort();
        }

    } else {
        /* NGX_ERROR, or a status: no allocation fails here */
        abort();
    }
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    u_char                        cfg2[5];
    ngx_int_t                     rc;
    ngx_str_t                     path, body, *records;
    ngx_uint_t                    i;
    ngx_pool_t                   *pool;
    fuzz_buf_t                    sent_body;
    fuzz_input_t                  in;
    ngx_http_request_t           *r;
    ngx_env_gateway_ctx_t        *ctx;
    ngx_env_gateway_loc_conf_t   *glcf, *glcf2;
    ngx_env_gateway_main_conf_t  *gmcf;

    fuzz_init_access();

    fuzz_decode(&in, data, size);
    fuzz_in = &in;
    fuzz_steps = FUZZ_STEPS;
    fuzz_npending = 0;
    fuzz_fetches = 0;
    fuzz_nkeys = 0;
    fuzz_nloaded = 0;
    fuzz_ncand = 0;
    fuzz_lines.len = 0;

    sent_body = fuzz_sent.body;
    ngx_memzero(&fuzz_sent, sizeof(fuzz_sent_t));
    fuzz_sent.body = sent_body;
    fuzz_sent.body.len = 0;

    pool = ngx_create_pool(1024, &fuzz_clog);
    if (pool == NULL) {
        abort();
    }

    gmcf = ngx_pcalloc(pool, sizeof(ngx_env_gateway_main_conf_t));
    if (gmcf == NULL) {
        abort();
    }

    ngx_str_set(&gmcf->prefix, ENVGW_DEFAULT_PREFIX);

    glcf = fuzz_conf(&in, pool, in.cfg);
    glcf2 = NULL;

    if (in.cfg[8] & FUZZ_REDIRECT) {
        cfg2[0] = in.cfg[5];
        cfg2[1] = in.cfg[6];
        cfg2[2] = in.cfg[7];
        cfg2[3] = in.cfg[3];
        cfg2[4] = in.cfg[4];
        glcf2 = fuzz_conf(&in, pool, cfg2);
    }

    fuzz_locs[0] = glcf;
    fuzz_locs[1] = glcf2;

    r = fuzz_request(&in, pool, glcf, gmcf);

    /* the records as Redis holds them */
    records = ngx_palloc(pool, sizeof(ngx_str_t) * NGX_ENVGW_REC_LAST);
    if (records == NULL) {
        abort();
    }

    for (i = 0; i < NGX_ENVGW_REC_LAST; i++) {
        records[i] = fuzz_text(&in, pool, &in.rec[i]);
        in.rec[i] = records[i];
    }

    path = r->uri;
    body.len = 0;
    body.data = NULL;

    if (r->request_body) {
        body.len = r->headers_in.content_length_n;
        body.data = r->request_body->bufs->buf->pos;
    }

    /* the credentials, before anything is hidden */
    fuzz_candidates(r, glcf);

    if (glcf2) {
        fuzz_candidates(r, glcf2);
    }

    /* a body is read once the token passed; here it is read already */
    ctx = ngx_env_gateway_create_ctx(r);
    if (ctx == NULL) {
        abort();
    }

    if (r->request_body) {
        ctx->body_reading = 1;
        ctx->body_read = 1;
    }

    rc = fuzz_run(r, ctx);
    fuzz_outcome(r, ctx, glcf, rc, &path, &body);

    if (rc == NGX_OK && glcf2) {
        /*
         * An internal redirect into another location: nginx clears every
         * module's context; the module finds its own again (its pool
         * cleanup) and checks the request for the settings there.
         */
        r->loc_conf[ngx_env_gateway_module.ctx_index] = glcf2;
        r->ctx[ngx_env_gateway_module.ctx_index] = NULL;
        r->internal = 1;
        r->valid_unparsed_uri = 0;

        rc = fuzz_run(r, ctx);

        if (ngx_http_get_module_ctx(r, ngx_env_gateway_module) != ctx) {
            abort();
        }

        fuzz_outcome(r, ctx, glcf2, rc, &path, &body);
    }

    fuzz_check_log(r, ctx, glcf, &path, &body);

    ngx_destroy_pool(pool);

    for (i = 0; i < fuzz_ncand; i++) {
        free(fuzz_cand[i].data);
    }

    fuzz_ncand = 0;
    fuzz_locs[0] = NULL;
    fuzz_locs[1] = NULL;

    return 0;
}
