/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * env_gateway: types shared by the module's files.
 *
 * The request path is: access handler (_access.c) -> fetch layer (_fetch.c,
 * coalescing, the shared cache of _cache.c) -> Redis transport (_redis.c).
 * The transport never calls back up: the fetch layer registers on its
 * hooks (ngx_env_gateway_subscriber_hooks) for invalidations.
 * Records arrive as JSON, are parsed once (_records.c) into a flat "blob"
 * (a header and length-prefixed strings) that can be copied into a request
 * pool, or into shared memory, with a single memcpy.
 */

#ifndef NGX_ENV_GATEWAY_H
#define NGX_ENV_GATEWAY_H

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>
#include <ngx_event_connect.h>
#include <ngx_http.h>

#include <hiredis/hiredis.h>

#include "envgw_schema.h"


/* ------------------------------------------------------------------ */
/* configuration                                                       */

typedef struct {
    ngx_str_t                    name;          /* as written, for logs */
    struct sockaddr             *sockaddr;
    socklen_t                    socklen;
    ngx_str_t                    password;
    ngx_int_t                    db;            /* -1: no SELECT */
    ngx_msec_t                   connect_timeout;
    ngx_msec_t                   read_timeout;
    ngx_uint_t                   resolved;      /* 0: ask the Sentinels */

    /* ACL user, TLS (_tls.c) */
    ngx_str_t                    username;      /* AUTH username password */
#if (NGX_SSL)
    ngx_ssl_t                   *ssl;           /* NULL: plain TCP */
#endif
    ngx_str_t                    tls_name;      /* SNI and the name checked;
                                                   empty: the host */
    ngx_flag_t                   tls_verify;
} ngx_env_gateway_server_t;


/* an env_gateway_redis line's TLS and password_file= parameters */
typedef struct {
    ngx_uint_t                   tls;
    ngx_int_t                    verify;        /* -1: unset (on) */
    ngx_str_t                    ca;
    ngx_str_t                    name;
    ngx_str_t                    cert;
    ngx_str_t                    key;
    ngx_str_t                    password_file;
} ngx_env_gateway_tls_conf_t;


typedef struct {
    ngx_array_t                 *servers;       /* ngx_env_gateway_server_t */
    ngx_str_t                    prefix;
    ngx_flag_t                   used;          /* some location has "on" */
    ngx_str_t                    used_file;
    ngx_uint_t                   used_line;

    ngx_shm_zone_t              *cache_zone;    /* NULL: no cache */
    ngx_msec_t                   cache_ttl;
    ngx_msec_t                   cache_negative_ttl;
    ngx_msec_t                   cache_stale;   /* stale_if_error, 0: off */
    ngx_msec_t                   primary_retry; /* back to the first server */
    ngx_str_t                    channel;       /* <prefix>invalidate */
    ngx_str_t                    sentinel_name; /* sentinel=NAME */
    ngx_array_t                 *sentinels;     /* ngx_env_gateway_server_t */
    size_t                       max_record;    /* 0: the default */

    ngx_shm_zone_t              *limit_zone;    /* env_gateway_limit_zone */
    ngx_array_t                 *secret_keys;   /* env_gateway_secret_keys:
                                                   ngx_env_gateway_key_t,
                                                   the first writes */
    /* env_gateway_last_used (_last_used.c) */
    ngx_flag_t                   last_used_set;
    ngx_msec_t                   last_used_interval;    /* 0: off */
    ngx_uint_t                   last_used_entries;
    ngx_msec_t                   last_used_backoff;

    ngx_flag_t                   cluster;       /* env_gateway_redis_cluster:
                                                   servers are its seeds */
    ngx_flag_t                   cluster_replica; /* read_from=replica */
} ngx_env_gateway_main_conf_t;


/* env_gateway_redis max_record=: the largest reply (record) accepted */
#define NGX_ENVGW_MAX_RECORD         (1024 * 1024)
#define NGX_ENVGW_MAX_RECORD_MIN     1024
#define NGX_ENVGW_MAX_RECORD_MAX     (512 * 1024 * 1024)

#define ngx_env_gateway_max_record(gmcf)                                   \
    ((gmcf)->max_record ? (gmcf)->max_record : NGX_ENVGW_MAX_RECORD)


/*
 * Record upstreams a route location has found reachable (_access.c): per
 * worker, remembered by value, the oldest replaced; a reload starts anew
 * with the new configuration's locations.
 */
#define NGX_ENVGW_KNOWN_UPSTREAMS    4

typedef struct {
    ngx_str_t                    url[NGX_ENVGW_KNOWN_UPSTREAMS];
    ngx_uint_t                   next;
} ngx_env_gateway_known_t;


typedef struct {
    ngx_flag_t                   enable;
    ngx_http_complex_value_t    *token;         /* NULL: Authorization */
    ngx_str_t                    token_header;  /* lowcase, if $http_X */
    ngx_str_t                    token_arg;     /* if $arg_X */
    ngx_str_t                    token_cookie;  /* if $cookie_X */
    ngx_http_complex_value_t    *account;
    ngx_str_t                    account_arg;   /* if $arg_X */
    ngx_str_t                    account_header; /* lowcase, if $http_X */
    ngx_flag_t                   account_required;
    ngx_flag_t                   hide_credentials;
    ngx_flag_t                   identity_headers;
    ngx_uint_t                   log_level;

    ngx_http_complex_value_t    *route_resource;    /* env_gateway_route */
    ngx_http_complex_value_t    *route_rest;
    ngx_str_t                    body_field;
    ngx_http_complex_value_t    *tenant;
    ngx_http_complex_value_t    *integration;

    /* where the directives were, for errors found at the end of http{} */
    ngx_str_t                    route_file;
    ngx_uint_t                   route_line;
    ngx_str_t                    enable_file;
    ngx_uint_t                   enable_line;

    ngx_array_t                 *limits;        /* env_gateway_limit */

    ngx_env_gateway_known_t      known;         /* per worker, at runtime */
} ngx_env_gateway_loc_conf_t;


/* ------------------------------------------------------------------ */
/* records                                                             */

typedef enum {
    NGX_ENVGW_REC_TOKEN = 0,
    NGX_ENVGW_REC_ACCOUNT,
    NGX_ENVGW_REC_ENV,
    NGX_ENVGW_REC_TENANT,
    NGX_ENVGW_REC_INTEGRATION,
    NGX_ENVGW_REC_CREDENTIALS,
    NGX_ENVGW_REC_LAST
} ngx_env_gateway_rec_kind_e;

/* token fields */
#define NGX_ENVGW_TOK_TOKEN_ID       0
#define NGX_ENVGW_TOK_TEAM_ID        1
#define NGX_ENVGW_TOK_ENV_ID         2
#define NGX_ENVGW_TOK_ENV_NAME       3
#define NGX_ENVGW_TOK_ACCOUNT_ID     4
#define NGX_ENVGW_TOK_RATE_LIMIT     5      /* ngx_env_gateway_rate_t or "" */
#define NGX_ENVGW_TOK_NFIELDS        6

/* token flags */
#define NGX_ENVGW_TOK_REVOKED        0x01
#define NGX_ENVGW_TOK_KIND_ADMIN     0x02
#define NGX_ENVGW_TOK_KIND_ACCOUNT   0x04

/* account fields */
#define NGX_ENVGW_ACC_ID             0
#define NGX_ENVGW_ACC_ENV_ID         1
#define NGX_ENVGW_ACC_INTEGRATION    2
#define NGX_ENVGW_ACC_TENANT_ID      3
#define NGX_ENVGW_ACC_NFIELDS        4

#define NGX_ENVGW_ACC_ACTIVE         0x01

/* environment fields */
#define NGX_ENVGW_ENV_ID             0
#define NGX_ENVGW_ENV_TEAM_ID        1
#define NGX_ENVGW_ENV_NAME           2
#define NGX_ENVGW_ENV_RATE_LIMIT     3      /* ngx_env_gateway_rate_t or "" */
#define NGX_ENVGW_ENV_NFIELDS        4


/*
 * A record's "rate_limit":{"requests":N,"window":"10s"}, as the bytes of a
 * field (copied out with ngx_memcpy: a field is not aligned).
 */
typedef struct {
    uint32_t                     requests;
    uint32_t                     window;        /* ms */
} ngx_env_gateway_rate_t;

/* bounds of a rate, in a directive or a record */
#define NGX_ENVGW_RATE_MAX           1000000000
#define NGX_ENVGW_WINDOW_MAX         (7 * 86400 * 1000)   /* 7d, in ms */

/* tenant: pairs (integration, account id) */
#define NGX_ENVGW_TEN_INTEGRATION    0
#define NGX_ENVGW_TEN_ACCOUNT_ID     1
#define NGX_ENVGW_TEN_NFIELDS        2      /* fields a pair */

/*
 * integration: the upstream, the upstream credentials' declaration (empty
 * without "auth"), then a method a quad from NGX_ENVGW_INT_FIRST
 */
#define NGX_ENVGW_INT_UPSTREAM       0
#define NGX_ENVGW_INT_AUTH_NAME      1      /* header or argument name */
#define NGX_ENVGW_INT_AUTH_FORMAT    2      /* its format; basic: username */
#define NGX_ENVGW_INT_AUTH_FORMAT2   3      /* basic: the password's */
#define NGX_ENVGW_INT_FIRST          4

/* integration flags: how the credentials go upstream */
#define NGX_ENVGW_INT_AUTH_HEADER    0x01
#define NGX_ENVGW_INT_AUTH_QUERY     0x02
#define NGX_ENVGW_INT_AUTH_BASIC     0x04
#define NGX_ENVGW_INT_AUTH           0x07

/* credentials: AES-256-GCM of a JSON object of fields (_credentials.c) */
#define NGX_ENVGW_CRED_KID           0
#define NGX_ENVGW_CRED_NONCE         1      /* base64 */
#define NGX_ENVGW_CRED_CIPHERTEXT    2      /* base64, the tag at its end */
#define NGX_ENVGW_CRED_NFIELDS       3

/* a method's quad, from its first field */
#define NGX_ENVGW_INT_RESOURCE       0
#define NGX_ENVGW_INT_METHOD         1
#define NGX_ENVGW_INT_VERB           2
#define NGX_ENVGW_INT_PATH           3
#define NGX_ENVGW_INT_NFIELDS        4      /* fields a method */


/*
 * A parsed record: "fields" point into a blob owned by whoever holds the
 * record (a request pool, or the shared cache).  expires_at is 0 when the
 * record never expires.
 */
typedef struct {
    ngx_uint_t                   flags;
    int64_t                      expires_at;
    ngx_uint_t                   nfields;
    ngx_str_t                   *fields;
} ngx_env_gateway_record_t;


/* the serialised form: this header, then nfields uint32 lengths, then data */
typedef struct {
    uint32_t                     nfields;
    uint32_t                     flags;
    int64_t                      expires_at;
} ngx_env_gateway_blob_t;


typedef enum {
    NGX_ENVGW_FETCH_NONE = 0,    /* not asked */
    NGX_ENVGW_FETCH_PENDING,
    NGX_ENVGW_FETCH_FOUND,
    NGX_ENVGW_FETCH_NOT_FOUND,
    NGX_ENVGW_FETCH_UNAVAILABLE,
    NGX_ENVGW_FETCH_MALFORMED
} ngx_env_gateway_fetch_status_e;


/* ------------------------------------------------------------------ */
/* requests waiting for records                                        */

typedef struct ngx_env_gateway_waiter_s  ngx_env_gateway_waiter_t;

typedef enum {
    NGX_ENVGW_CACHE_NONE = 0,
    NGX_ENVGW_CACHE_HIT,
    NGX_ENVGW_CACHE_MISS,
    NGX_ENVGW_CACHE_STALE
} ngx_env_gateway_cache_status_e;


typedef struct {
    ngx_queue_t                  link;      /* in an in-flight fetch */
    ngx_env_gateway_waiter_t    *waiter;
    ngx_uint_t                   status;    /* ngx_env_gateway_fetch_status_e */
    ngx_uint_t                   cache;     /* ngx_env_gateway_cache_status_e */
    ngx_env_gateway_record_t     rec;
    unsigned                     linked:1;
    unsigned                     stale:1;   /* rec holds a stale copy */
} ngx_env_gateway_slot_t;


/* a waiter has a slot for each record kind, indexed by the kind */
#define NGX_ENVGW_NSLOTS             NGX_ENVGW_REC_LAST


/*
 * Lives in the request pool.  A pool cleanup unlinks its slots from the
 * in-flight fetches and removes a posted resume event, so nothing outside
 * the request refers to it once the request is gone (client abort, HTTP/2
 * reset, worker shutdown).
 */
struct ngx_env_gateway_waiter_s {
    ngx_http_request_t          *request;
    ngx_event_t                  resume;
    ngx_uint_t                   pending;
    ngx_env_gateway_slot_t       slots[NGX_ENVGW_NSLOTS];
};


/* ------------------------------------------------------------------ */
/* refusals                                                            */

typedef enum {
    NGX_ENVGW_OK = 0,
    NGX_ENVGW_MISSING_TOKEN,
    NGX_ENVGW_INVALID_TOKEN,
    NGX_ENVGW_ACCOUNT_NOT_FOUND,
    NGX_ENVGW_MISSING_ACCOUNT,
    NGX_ENVGW_ENV_MISMATCH,
    NGX_ENVGW_METHOD_NOT_FOUND,
    NGX_ENVGW_METHOD_NOT_ALLOWED,
    NGX_ENVGW_UNAVAILABLE,
    NGX_ENVGW_INVALID_REQUEST,
    NGX_ENVGW_MISCONFIGURED,
    NGX_ENVGW_RATE_LIMITED,
    NGX_ENVGW_CREDENTIALS_UNAVAILABLE,
    NGX_ENVGW_NREFUSALS
} ngx_env_gateway_refusal_e;


/* ------------------------------------------------------------------ */
/* metrics (shared counters)                                           */

#define NGX_ENVGW_RTT_BUCKETS        10
#define NGX_ENVGW_LOOKUP_BUCKETS     13

/* env_gateway_requests_total's environment label: so many names, then
   "other"; a longer name is "other" too */
#define NGX_ENVGW_ENV_LABELS         16
#define NGX_ENVGW_ENV_LABEL_LEN      64

/* rate limit keys (_limit.c), in this order */
#define NGX_ENVGW_LIMIT_TOKEN        0
#define NGX_ENVGW_LIMIT_ACCOUNT      1
#define NGX_ENVGW_LIMIT_TENANT       2
#define NGX_ENVGW_LIMIT_ENVIRONMENT  3
#define NGX_ENVGW_LIMIT_TEAM         4
#define NGX_ENVGW_LIMIT_NKINDS       5

/*
 * env_gateway_credentials_total's results (_credentials.c), in this
 * order: what became of an account's credentials on a route location
 * whose integration declares auth
 */
#define NGX_ENVGW_CRED_INJECTED      0
#define NGX_ENVGW_CRED_MISSING       1
#define NGX_ENVGW_CRED_EXPIRED       2
#define NGX_ENVGW_CRED_UNKNOWN_KEY   3
#define NGX_ENVGW_CRED_UNDECRYPTABLE 4
#define NGX_ENVGW_CRED_MALFORMED     5
#define NGX_ENVGW_CRED_UNUSABLE      6
#define NGX_ENVGW_CRED_NRESULTS      7

/* when limits are checked: after the token (and environment), the account */
#define NGX_ENVGW_LIMIT_STAGE_TOKEN    1
#define NGX_ENVGW_LIMIT_STAGE_ACCOUNT  2


enum {
    NGX_ENVGW_M_REQUESTS = 0,   /* + refusal code; 0 is "allowed" */
    NGX_ENVGW_M_CACHE_HIT = NGX_ENVGW_NREFUSALS,
    NGX_ENVGW_M_CACHE_NEG_HIT,
    NGX_ENVGW_M_CACHE_MISS,
    NGX_ENVGW_M_CACHE_STALE,
    NGX_ENVGW_M_CACHE_EVICTIONS,
    NGX_ENVGW_M_CACHE_FLUSHES,
    NGX_ENVGW_M_INVALIDATIONS,
    NGX_ENVGW_M_REDIS_COMMANDS,
    NGX_ENVGW_M_REDIS_ERRORS,
    NGX_ENVGW_M_REDIS_TIMEOUTS,
    NGX_ENVGW_M_REDIS_CONNECTS,
    NGX_ENVGW_M_RTT_SUM_US,
    NGX_ENVGW_M_RTT_BUCKET,     /* NGX_ENVGW_RTT_BUCKETS + 1 (+Inf) */
    NGX_ENVGW_M_LIMITED = NGX_ENVGW_M_RTT_BUCKET + NGX_ENVGW_RTT_BUCKETS + 1,
                                /* + NGX_ENVGW_LIMIT_* key kind */
    NGX_ENVGW_M_LIMIT_EVICTIONS = NGX_ENVGW_M_LIMITED + NGX_ENVGW_LIMIT_NKINDS,
    NGX_ENVGW_M_LIMIT_SYNCS,
    NGX_ENVGW_M_LIMIT_SYNC_FAILURES,
    NGX_ENVGW_M_LOOKUP_SUM_US,
    NGX_ENVGW_M_LOOKUP_BUCKET,  /* NGX_ENVGW_LOOKUP_BUCKETS + 1 (+Inf) */
    NGX_ENVGW_M_LAST_USED_WRITES = NGX_ENVGW_M_LOOKUP_BUCKET
                                   + NGX_ENVGW_LOOKUP_BUCKETS + 1,
    NGX_ENVGW_M_LAST_USED_DROPPED,
    NGX_ENVGW_M_LAST_USED_ERRORS,
    NGX_ENVGW_M_CREDENTIALS,    /* + NGX_ENVGW_CRED_* result */
    NGX_ENVGW_M_LAST = NGX_ENVGW_M_CREDENTIALS + NGX_ENVGW_CRED_NRESULTS
};



/* ------------------------------------------------------------------ */
/* per-request context                                                 */

/* ngx_env_gateway_ctx_t.state */
#define NGX_ENVGW_ST_NEW             0
#define NGX_ENVGW_ST_WAIT            1      /* records or the body asked */
#define NGX_ENVGW_ST_DONE            2

/* identity headers set upstream, in this order (_boundary.c) */
#define NGX_ENVGW_ID_ENVIRONMENT_ID  0
#define NGX_ENVGW_NIDENTITY          6

typedef struct {
    ngx_uint_t                   state;         /* NGX_ENVGW_ST_* */
    ngx_env_gateway_waiter_t     waiter;

    u_char                       token_hash[ENVGW_SHA256_HEX_LEN];
    ngx_str_t                    account_req;   /* as named by the request */
    ngx_str_t                    env_req;       /* environment named */

    /* results, exposed as variables */
    ngx_str_t                    environment_id;
    ngx_str_t                    environment;
    ngx_str_t                    team_id;
    ngx_str_t                    token_id;
    ngx_str_t                    account_id;
    ngx_str_t                    integration;
    ngx_str_t                    tenant_id;

    ngx_str_t                    tenant_req;
    ngx_str_t                    integration_req;
    ngx_str_t                    body_account;
    ngx_str_t                    resource;
    ngx_str_t                    rest;
    ngx_str_t                    method;
    ngx_str_t                    upstream_url;

    ngx_table_elt_t             *credential;    /* the credential header */
    ngx_str_t                    target;        /* unparsed URI as sent */
    ngx_str_t                    token;         /* in the request's own
                                                   buffers, until allowed */
    ngx_array_t                 *hide;          /* client headers to hide */
    ngx_table_elt_t             *cookie;        /* Cookie with the token */
    ngx_array_t                 *cookies;       /* with credential cookies */
    ngx_table_elt_t             *identity[NGX_ENVGW_NIDENTITY];
    ngx_str_t                    upstream_method;
    void                        *checked;       /* loc conf it passed in */

    ngx_uint_t                   refusal;       /* last refusal, for logs */
    ngx_str_t                    detail;        /* message override */

    unsigned                     account_bad:1; /* syntactically unusable */
    unsigned                     env_bad:1;     /* the same, environment */
    unsigned                     have_token:1;  /* token_hash is set */
    unsigned                     redirected:1;  /* found again after one */
    unsigned                     own_headers:1; /* a subrequest's copy */
    unsigned                     body_reading:1;
    unsigned                     body_read:1;
    unsigned                     body_failed:1; /* nginx gave up on it */
    unsigned                     body_encoded:1; /* Content-Encoding */
    unsigned                     body_parsed:1;

    void                        *limit;         /* _limit.c's, or NULL */
    struct ngx_env_gateway_cred_s  *cred;       /* upstream credentials */
    ngx_str_t                    allow;         /* a 405's Allow value */
} ngx_env_gateway_ctx_t;


/* no ngx_strncmp() on the NULL data of an empty string (C's rule) */
#define ngx_env_gateway_str_ne(a, b)                                       \
    ((a)->len != (b)->len                                                  \
     || ((a)->len && ngx_strncmp((a)->data, (b)->data, (a)->len) != 0))

/* query argument names match as nginx's $arg_NAME does: any case */
#define ngx_env_gateway_arg_ne(a, b)                                       \
    ((a)->len != (b)->len                                                  \
     || ngx_strncasecmp((a)->data, (b)->data, (a)->len) != 0)


extern ngx_module_t  ngx_env_gateway_module;


/* _redis.c: the worker's Redis transport (_redis.h has its insides) */
typedef void (*ngx_env_gateway_redis_handler_pt)(void *data,
    redisReply *reply);

/* a handler's reply when Redis' was a string above max_record */
extern redisReply  ngx_env_gateway_redis_oversize;

ngx_int_t ngx_env_gateway_redis_init_worker(ngx_cycle_t *cycle,
    ngx_env_gateway_main_conf_t *gmcf);
void ngx_env_gateway_redis_exit_worker(void);
ngx_int_t ngx_env_gateway_redis_command(int argc, const char **argv,
    const size_t *argvlen, ngx_env_gateway_redis_handler_pt handler,
    void *data);

/* _tls.c: the TLS and ACL parameters of env_gateway_redis */
ngx_int_t ngx_env_gateway_tls_param(ngx_conf_t *cf,
    ngx_env_gateway_tls_conf_t *tc, ngx_env_gateway_server_t *srv,
    ngx_str_t *value);
char *ngx_env_gateway_tls_conf(ngx_conf_t *cf,
    ngx_env_gateway_tls_conf_t *tc, ngx_env_gateway_server_t *srv);

/* _subscriber.c: what the invalidation channel tells who registered */
typedef struct {
    void                       (*changed)(ngx_str_t *key);  /* "*": all */
    void                       (*subscribed)(ngx_uint_t again);
    void                       (*unsubscribed)(void);
    ngx_int_t                  (*successor)(void);  /* shutting down */
} ngx_env_gateway_subscriber_hooks_t;

void ngx_env_gateway_subscriber_hooks(
    ngx_env_gateway_subscriber_hooks_t *hooks);

/* _fetch.c */
ngx_int_t ngx_env_gateway_fetch(ngx_http_request_t *r,
    ngx_env_gateway_slot_t *slot, ngx_uint_t kind, ngx_str_t *family,
    ngx_str_t *id, ngx_str_t *id2);
void ngx_env_gateway_waiter_detach(ngx_env_gateway_waiter_t *w);
void ngx_env_gateway_fetch_init(ngx_env_gateway_main_conf_t *gmcf);

/* _cache.c */
ngx_int_t ngx_env_gateway_cache_create(ngx_conf_t *cf,
    ngx_env_gateway_main_conf_t *gmcf, ngx_str_t *name, size_t size);
ngx_int_t ngx_env_gateway_cache_get(ngx_shm_zone_t *zone, ngx_str_t *key,
    ngx_pool_t *pool, ngx_env_gateway_record_t *rec, ngx_uint_t *negative);
ngx_uint_t ngx_env_gateway_cache_put(ngx_shm_zone_t *zone, ngx_str_t *key,
    u_char *blob, size_t blob_len, ngx_msec_t ttl, ngx_msec_t stale,
    ngx_atomic_uint_t epoch);
void ngx_env_gateway_cache_delete(ngx_shm_zone_t *zone, ngx_str_t *key);
void ngx_env_gateway_cache_flush(ngx_shm_zone_t *zone);
ngx_atomic_uint_t ngx_env_gateway_cache_epoch(ngx_shm_zone_t *zone);
ngx_uint_t ngx_env_gateway_cache_subscribers(ngx_shm_zone_t *zone,
    ngx_uint_t add);
ngx_int_t ngx_env_gateway_cache_successor(ngx_shm_zone_t *zone);
void ngx_env_gateway_cache_generation(ngx_shm_zone_t *zone);
void ngx_env_gateway_cache_stats(ngx_shm_zone_t *zone, ngx_uint_t *entries,
    size_t *bytes);

/* _metrics.c */
/* counters are only ever written here and read by the handler */
#define ngx_env_gateway_metric_inc(i)  ngx_env_gateway_metric_add(i, 1)

ngx_int_t ngx_env_gateway_metrics_create(ngx_conf_t *cf);
void ngx_env_gateway_metric_add(ngx_uint_t i, ngx_uint_t n);
void ngx_env_gateway_metric_rtt(ngx_uint_t usec);
void ngx_env_gateway_metric_lookup(ngx_uint_t usec);
uint64_t ngx_env_gateway_metric_usec(void);
void ngx_env_gateway_metric_request(ngx_str_t *environment,
    ngx_uint_t result);
ngx_int_t ngx_env_gateway_metrics_handler(ngx_http_request_t *r);

/* _health.c: is this worker's lookup connection up */
ngx_uint_t ngx_env_gateway_lookups_up(void);

/* _last_used.c: token last-use times, written in batches */
char *ngx_env_gateway_last_used_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
void ngx_env_gateway_last_used_conf(ngx_env_gateway_main_conf_t *gmcf);
ngx_int_t ngx_env_gateway_last_used_init(ngx_cycle_t *cycle,
    ngx_env_gateway_main_conf_t *gmcf);
void ngx_env_gateway_last_used(ngx_str_t *id);

/* _status.c */
ngx_int_t ngx_env_gateway_status_handler(ngx_http_request_t *r);
ngx_int_t ngx_env_gateway_get_only(ngx_http_request_t *r);

/* _records.c */
ngx_int_t ngx_env_gateway_record_parse(ngx_uint_t kind, u_char *json,
    size_t len, ngx_log_t *log, ngx_str_t *key, u_char **blob,
    size_t *blob_len);
ngx_int_t ngx_env_gateway_record_load(ngx_pool_t *pool, u_char *blob,
    size_t blob_len, ngx_env_gateway_record_t *rec);

/* _parsed.c: records parsed before by this worker (no shared cache) */
ngx_int_t ngx_env_gateway_parsed_record(ngx_uint_t kind, u_char *json,
    size_t len, ngx_log_t *log, ngx_str_t *key, u_char **blob,
    size_t *blob_len, ngx_uint_t *kept);

/* _token.c */
ngx_int_t ngx_env_gateway_bearer(ngx_str_t *header, ngx_str_t *token);
ngx_int_t ngx_env_gateway_token_syntax(ngx_str_t *token);
void ngx_env_gateway_sha256_hex(ngx_str_t *in, u_char *out);
ngx_int_t ngx_env_gateway_redact(ngx_pool_t *pool, ngx_str_t *in,
    ngx_str_t *arg, ngx_str_t *out);
ngx_int_t ngx_env_gateway_redact_line(ngx_http_request_t *r,
    ngx_env_gateway_loc_conf_t *glcf);
ngx_int_t ngx_env_gateway_redact_uri(ngx_http_request_t *r);
ngx_int_t ngx_env_gateway_strip_arg(ngx_http_request_t *r, ngx_str_t *name);

/* _args.c: the query, argument by argument */
typedef struct {
    u_char                      *pos;
    u_char                      *last;
} ngx_env_gateway_args_t;

typedef struct {
    ngx_str_t                    raw;       /* name[=value], as sent */
    ngx_str_t                    name;      /* raw bytes before '=' */
    ngx_str_t                    value;     /* raw bytes after '=' */
    unsigned                     has_value:1;
} ngx_env_gateway_arg_t;

#define NGX_ENVGW_ARG_OTHER          0
#define NGX_ENVGW_ARG_EXACT          1
#define NGX_ENVGW_ARG_ALIAS          2

void ngx_env_gateway_args_init(ngx_env_gateway_args_t *it, ngx_str_t *args);
ngx_int_t ngx_env_gateway_args_next(ngx_env_gateway_args_t *it,
    ngx_env_gateway_arg_t *arg);
ngx_uint_t ngx_env_gateway_arg_match(ngx_env_gateway_arg_t *arg,
    ngx_str_t *name);
ngx_uint_t ngx_env_gateway_arg_escaped(ngx_str_t *s);

/* _boundary.c: reading the request once, and what goes upstream */
typedef struct {
    ngx_uint_t                   count;
    ngx_table_elt_t             *first;
} ngx_env_gateway_hdr_t;

typedef struct {
    ngx_env_gateway_hdr_t        authorization;
    ngx_env_gateway_hdr_t        token;         /* env_gateway_token $http_ */
    ngx_env_gateway_hdr_t        account;       /* env_gateway_account $http_ */
    ngx_env_gateway_hdr_t        environment;   /* X-Environment-Id */
    ngx_env_gateway_hdr_t        cookie;        /* env_gateway_token $cookie_ */
    ngx_str_t                    cookie_value;
    ngx_uint_t                   other_cookies; /* named like a credential */
    ngx_uint_t                   method_override; /* X-HTTP-Method-Override */
} ngx_env_gateway_headers_t;

typedef struct {
    ngx_str_t                    value;         /* raw, of the first */
    ngx_uint_t                   count;         /* EXACT occurrences */
    ngx_uint_t                   escaped;       /* '%' or '+' in the value */
} ngx_env_gateway_qarg_t;

ngx_int_t ngx_env_gateway_path_check(ngx_http_request_t *r);
ngx_uint_t ngx_env_gateway_dot_segment(u_char *p, u_char *last);
ngx_int_t ngx_env_gateway_read_headers(ngx_http_request_t *r,
    ngx_env_gateway_ctx_t *ctx, ngx_env_gateway_loc_conf_t *glcf,
    ngx_env_gateway_headers_t *hdrs);
ngx_int_t ngx_env_gateway_read_args(ngx_str_t *args, ngx_str_t *names,
    ngx_env_gateway_qarg_t *found, ngx_uint_t n, ngx_str_t **bad);
ngx_int_t ngx_env_gateway_identity(ngx_http_request_t *r,
    ngx_env_gateway_ctx_t *ctx, ngx_env_gateway_loc_conf_t *glcf);

#define NGX_ENVGW_TOKEN_SEARCH_MIN   16
#define NGX_ENVGW_COPY_IN_URI        1
#define NGX_ENVGW_COPY_IN_HEADERS    2

ngx_int_t ngx_env_gateway_token_elsewhere(ngx_http_request_t *r,
    ngx_env_gateway_ctx_t *ctx, ngx_str_t *token, ngx_uint_t in_query,
    ngx_uint_t in_headers);
ngx_int_t ngx_env_gateway_token_in(ngx_pool_t *pool, ngx_str_t *in,
    ngx_str_t *token);

/* _body.c */
ngx_uint_t ngx_env_gateway_body_wanted(ngx_http_request_t *r,
    ngx_env_gateway_loc_conf_t *glcf);
ngx_int_t ngx_env_gateway_body_read(ngx_http_request_t *r,
    ngx_env_gateway_ctx_t *ctx);
ngx_int_t ngx_env_gateway_body_parse(ngx_http_request_t *r,
    ngx_env_gateway_ctx_t *ctx, ngx_env_gateway_loc_conf_t *glcf,
    const char **why);
ngx_int_t ngx_env_gateway_body_account(ngx_http_request_t *r,
    ngx_env_gateway_ctx_t *ctx, ngx_env_gateway_loc_conf_t *glcf);

/* _text.c: bounded output, measured then written by the same code */
typedef struct {
    u_char                      *start;     /* NULL while measuring */
    u_char                      *pos;
    u_char                      *end;
    size_t                       len;       /* measured */
    ngx_uint_t                   failed;    /* a write did not fit */
} ngx_env_gateway_text_t;

#define NGX_ENVGW_ESCAPE_LOG         0      /* \xNN: controls, quotes, 8bit */
#define NGX_ENVGW_ESCAPE_PATH        1      /* %XX: all but unreserved */

#define ngx_env_gateway_text_literal(t, s)                                 \
    ngx_env_gateway_text_bytes(t, (u_char *) s, sizeof(s) - 1)

struct json_t;

void ngx_env_gateway_text_init(ngx_env_gateway_text_t *t);
ngx_int_t ngx_env_gateway_text_next(ngx_env_gateway_text_t *t,
    ngx_pool_t *pool);
void ngx_env_gateway_text_string(ngx_env_gateway_text_t *t, ngx_str_t *s);
void ngx_env_gateway_text_bytes(ngx_env_gateway_text_t *t, u_char *p,
    size_t len);
void ngx_env_gateway_text_str(ngx_env_gateway_text_t *t, ngx_str_t *s);
void ngx_env_gateway_text_escape(ngx_env_gateway_text_t *t, u_char *p,
    size_t len, ngx_uint_t type);
void ngx_env_gateway_text_uint(ngx_env_gateway_text_t *t, uint64_t n,
    size_t width);
void ngx_env_gateway_text_json(ngx_env_gateway_text_t *t,
    struct json_t *json, size_t flags);
ngx_int_t ngx_env_gateway_text_format(ngx_pool_t *pool, ngx_str_t *out,
    const char *fmt, va_list args);
ngx_int_t ngx_env_gateway_text_escaped(ngx_pool_t *pool, ngx_str_t *in,
    ngx_uint_t type, ngx_str_t *out);

/* _metrics.c: a label value, escaped as the Prometheus text format wants */
void ngx_env_gateway_metrics_label(ngx_env_gateway_text_t *t, u_char *p,
    size_t len);

/* _route.c */
ngx_uint_t ngx_env_gateway_route_name(ngx_str_t *rest, ngx_str_t *verb,
    ngx_str_t *name);
ngx_uint_t ngx_env_gateway_route_select(ngx_env_gateway_record_t *rec,
    ngx_str_t *resource, ngx_str_t *rest, ngx_str_t *verb,
    ngx_str_t **quad, ngx_str_t *method_name);
ngx_int_t ngx_env_gateway_path_value_ok(ngx_str_t *v);
ngx_int_t ngx_env_gateway_route_url(ngx_pool_t *pool, ngx_str_t *upstream,
    ngx_str_t *tmpl, ngx_str_t *rest, ngx_str_t *args, ngx_str_t *consumed,
    ngx_uint_t nconsumed, ngx_str_t *url, ngx_str_t *bad, const char **why);
ngx_uint_t ngx_env_gateway_method_flag(ngx_str_t *verb);
ngx_uint_t ngx_env_gateway_http_token(ngx_str_t *s);

/* _refusal.c */
ngx_int_t ngx_env_gateway_refuse(ngx_http_request_t *r,
    ngx_env_gateway_ctx_t *ctx, ngx_uint_t refusal);
ngx_int_t ngx_env_gateway_refuse_detail(ngx_http_request_t *r,
    ngx_env_gateway_ctx_t *ctx, ngx_uint_t refusal, const char *fmt, ...);
ngx_int_t ngx_env_gateway_refuse_msg(ngx_http_request_t *r,
    ngx_env_gateway_ctx_t *ctx, ngx_uint_t refusal, const char *why);
ngx_int_t ngx_env_gateway_refuse_invalid(ngx_http_request_t *r,
    ngx_env_gateway_ctx_t *ctx, const char *why);
const char *ngx_env_gateway_refusal_code(ngx_uint_t refusal);

/* _request.c: what the request says, read at the start of a check */
#define NGX_ENVGW_CONSUMED_MAX       4

ngx_int_t ngx_env_gateway_request_read(ngx_http_request_t *r,
    ngx_env_gateway_ctx_t *ctx, ngx_env_gateway_loc_conf_t *glcf);
ngx_uint_t ngx_env_gateway_request_consumed(ngx_env_gateway_loc_conf_t *glcf,
    ngx_str_t *names);
ngx_int_t ngx_env_gateway_id_syntax(ngx_str_t *id);

/* _access.c */
ngx_int_t ngx_env_gateway_access_handler(ngx_http_request_t *r);
ngx_int_t ngx_env_gateway_precontent_handler(ngx_http_request_t *r);

/* _limit.c: rate limits */
/* module file: a directive's error as nginx prints it ("<directive>"
 * directive <text>, with file and line), formatted into the config pool */
char *ngx_env_gateway_conf_error(ngx_conf_t *cf, const char *fmt, ...);

char *ngx_env_gateway_limit_zone_directive(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
char *ngx_env_gateway_limit_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_env_gateway_limit_merge(ngx_conf_t *cf,
    ngx_env_gateway_loc_conf_t *prev, ngx_env_gateway_loc_conf_t *conf);
ngx_int_t ngx_env_gateway_limit_init(ngx_conf_t *cf);
ngx_int_t ngx_env_gateway_limit_init_worker(ngx_cycle_t *cycle,
    ngx_env_gateway_main_conf_t *gmcf);
ngx_uint_t ngx_env_gateway_limit_wants_env(ngx_env_gateway_ctx_t *ctx,
    ngx_env_gateway_loc_conf_t *glcf);
ngx_int_t ngx_env_gateway_limit_check(ngx_http_request_t *r,
    ngx_env_gateway_ctx_t *ctx, ngx_env_gateway_loc_conf_t *glcf,
    ngx_uint_t stage, ngx_env_gateway_record_t *tok,
    ngx_env_gateway_record_t *env);
ngx_int_t ngx_env_gateway_rate_parse(ngx_str_t *window, int64_t requests,
    ngx_env_gateway_rate_t *rate);
void ngx_env_gateway_limit_metrics(ngx_env_gateway_text_t *t,
    ngx_atomic_uint_t *c);
/* _keys.c: the keyring; _credentials*.c: the account's upstream credentials */
#define NGX_ENVGW_KEY_LEN            32     /* AES-256 */
#define NGX_ENVGW_NONCE_LEN          12
#define NGX_ENVGW_TAG_LEN            16

typedef struct {
    ngx_str_t                    kid;
    u_char                       key[NGX_ENVGW_KEY_LEN];
} ngx_env_gateway_key_t;

typedef struct {
    ngx_str_t                    name;
    ngx_str_t                    value;
} ngx_env_gateway_cred_field_t;

typedef struct ngx_env_gateway_cred_s {
    ngx_str_t                    name;      /* the header's */
    ngx_str_t                    value;     /* header value, or "" */
    ngx_str_t                    url;       /* upstream URL with the
                                               argument, or "" */
    ngx_table_elt_t             *header;    /* ours, in headers_in */
    unsigned                     url_given:1;
} ngx_env_gateway_cred_t;

char *ngx_env_gateway_secret_keys(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
ngx_int_t ngx_env_gateway_credentials(ngx_http_request_t *r,
    ngx_env_gateway_ctx_t *ctx, ngx_env_gateway_record_t *integration);
ngx_int_t ngx_env_gateway_credentials_inject(ngx_http_request_t *r,
    ngx_env_gateway_ctx_t *ctx);
void ngx_env_gateway_credentials_clear(ngx_env_gateway_ctx_t *ctx);
ngx_int_t ngx_env_gateway_credentials_leave(ngx_http_request_t *r);
ngx_int_t ngx_env_gateway_credentials_init(ngx_conf_t *cf);
void ngx_env_gateway_credentials_absent(ngx_env_gateway_slot_t *slot);
void ngx_env_gateway_credentials_metrics(ngx_env_gateway_text_t *t,
    ngx_atomic_uint_t *c);
ngx_int_t ngx_env_gateway_upstream_url_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
ngx_int_t ngx_env_gateway_cred_parse(u_char *p, size_t len,
    ngx_array_t *fields);
ngx_int_t ngx_env_gateway_cred_format(ngx_pool_t *pool, ngx_str_t *tmpl,
    ngx_array_t *fields, ngx_uint_t header, ngx_str_t *out,
    ngx_str_t *missing);
ngx_int_t ngx_env_gateway_cred_build(ngx_pool_t *pool,
    ngx_env_gateway_record_t *integration, ngx_array_t *fields,
    ngx_str_t *url, ngx_env_gateway_cred_t *cred, const char **why);
ngx_int_t ngx_env_gateway_auth_format_ok(const char *s, size_t len);
ngx_int_t ngx_env_gateway_auth_name_ok(const char *s, size_t len,
    ngx_uint_t header);

/* _boundary.c: a request header no upstream module sends */
void ngx_env_gateway_hide(ngx_http_request_t *r, ngx_table_elt_t *h);

/* _ctx.c */
ngx_env_gateway_ctx_t *ngx_env_gateway_get_ctx(ngx_http_request_t *r);
ngx_env_gateway_ctx_t *ngx_env_gateway_create_ctx(ngx_http_request_t *r);
void ngx_env_gateway_ctx_reset(ngx_env_gateway_ctx_t *ctx);

#endif /* NGX_ENV_GATEWAY_H */
