/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * envgw — the env_gateway admin tool: shared declarations.
 *
 * Layout:
 *   envgw.c        main, global options, argument parsing, help, dispatch
 *   util.c         memory pool, errors, output, validation, random, hashing
 *   store.c        Redis connection, reads, WATCH/MULTI/EXEC transactions
 *   records.c      JSON records of the schema (load, check, build)
 *   cmd_env.c      env create|list|delete
 *   cmd_token.c    token create|list|revoke|rotate
 *   cmd_account.c  account add|remove|list|disable|enable
 *   cmd_integration.c  integration set|list|show|remove, method set|remove
 *   cmd_diff.c     diff, promote
 *   cmd_apply.c    export, apply
 *   cmd_audit.c    audit
 *   cmd_credentials.c  credentials set|show|remove|refresh, keys rotate
 */

#ifndef ENVGW_H
#define ENVGW_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#include "envgw_schema.h"

/* exit codes: 0 ok, 1 failure (missing record, Redis down...), 2 usage */
#define EXIT_FAIL   1
#define EXIT_USAGE  2

/* ---- global options ---------------------------------------------------- */

typedef struct {
    const char *redis;      /* host:port, [v6]:port or unix:/path */
    const char *password;
    int         db;
    const char *prefix;
    bool        json;
    int         fail_code;  /* exit code for failures (diff uses 2) */
    const char *actor;      /* --actor, else the OS user */
    long        audit_maxlen;   /* cap of the audit stream (XADD MAXLEN ~) */
    const char *command;    /* this command line, as the audit records it */
    const char *user;       /* Redis ACL user (AUTH user password) */
    bool        tls;        /* TLS to Redis (conn.c) */
    bool        cluster;    /* --cluster: --redis is a seed node (store.c) */
    const char *cacert;     /* CA file; NULL: the system store */
    const char *tls_name;   /* the name checked; NULL: the host */
    const char *cert;       /* client certificate and key */
    const char *key;
} envgw_opts_t;

#define AUDIT_MAXLEN_DEFAULT  10000

/* <prefix>last_used:<token_id>: Unix seconds (a decimal string) of the
 * token's last use, written by the gateway, read by 'envgw token list';
 * the gateway's cache never reads it. */
/* the status of a disabled account: anything but "active" is not found */
#define ENVGW_STATUS_DISABLED "disabled"

#ifndef ENVGW_KEY_LAST_USED
#define ENVGW_KEY_LAST_USED   "last_used:"
#endif

#ifndef ENVGW_VERSION
#define ENVGW_VERSION "unknown"
#endif

extern envgw_opts_t g_opt;

/* ---- memory pool: everything allocated here is freed at exit ----------- */
/*
 * A short-lived CLI with many early exits: pooling keeps ownership simple.
 * Rule for pooled json_t: never hand them to a *_set_new() (which steals
 * the reference); use json_object_set() / json_array_append().
 */
void   *pool_keep(void *p, void (*fn)(void *));
char   *pstrdup(const char *s);
char   *pfmt(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
json_t *pjson(json_t *j);
void    pool_drain(void);

/* ---- errors and output -------------------------------------------------- */

void die(const char *fmt, ...)
    __attribute__((format(printf, 1, 2), noreturn));
void warnx_(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* The error line of die() and usage_error(): "envgw: ..." on stderr, or
 * with --json one JSON object {"error": ..., "exit": N [, "usage": ...]}. */
void report_error(int exit_code, const char *usage, char *msg);
void print_json(json_t *j);
bool list_printed(json_t *rows, const char *none_fmt, ...)
    __attribute__((format(printf, 2, 3)));
const char *fmt_time(long long t);     /* "2026-01-01T00:00:00Z" or "never" */

/* ---- command table and argument parsing -------------------------------- */

/*
 * The arguments of every command, by name.  parse_args() fills the fields
 * a command's table names: a positional or an option's value, "1" for a
 * flag that was given, NULL for what was not.  One field serves the same
 * meaning in every command (ENV and --env are both "env").
 */
typedef struct {
    const char *env;            /* ENV, --env, env create --id */
    const char *from;           /* promote FROM, diff ENV_A */
    const char *to;             /* promote TO, diff ENV_B */
    const char *team;
    const char *name;           /* env create NAME */
    const char *kind;
    const char *ttl;
    const char *grace;
    const char *account;        /* ID of an integrated account, --account */
    const char *token;          /* TOKEN_ID */
    const char *integration;    /* I, --integration */
    const char *tenant;
    const char *upstream;
    const char *resources;      /* --resources FILE */
    const char *resource;       /* RESOURCE */
    const char *method;         /* METHOD, promote --method */
    const char *verb;           /* HTTP_METHOD */
    const char *path;           /* PATH */
    const char *upstreams;      /* diff --upstreams */
    const char *dry_run;
    const char *force;          /* env delete --force */
    const char *prune;          /* apply --prune */
    const char *file;           /* apply FILE */
    const char *expiring;       /* token list --expiring DURATION */
    const char *since;          /* audit --since T */
    const char *rate_limit;     /* --rate-limit, set-limit LIMIT */
    const char *auth;           /* integration set --auth JSON|none */
    const char *oauth;          /* integration set --oauth JSON|none */
    const char *with_auth;      /* promote --auth */
    const char *keys;           /* --keys FILE (the keyring) */
    const char *from_file;      /* credentials set --from-file F */
    const char *expires_at;     /* credentials set --expires-at T */
    const char *within;         /* credentials refresh --within D */
    const char *loop;           /* credentials refresh --loop D */
    const char **list;          /* the values of a repeated option */
    size_t      nlist;
} args_t;

typedef enum {
    ARG_END = 0,
    ARG_POS,                    /* a positional (always required) */
    ARG_VALUE,                  /* --name VALUE */
    ARG_NEEDED,                 /* --name VALUE that must be given */
    ARG_FLAG,                   /* --name */
    ARG_LIST                    /* --name NAME=VALUE, repeated; the audit
                                   records the NAMEs only */
} arg_kind_t;

/* What a value must look like; parse_args() refuses anything else. */
typedef enum {
    CHECK_NONE = 0,
    CHECK_ENV_ID,
    CHECK_TEAM_ID,
    CHECK_ACCOUNT_ID,
    CHECK_TOKEN_ID,
    CHECK_ENV_NAME,
    CHECK_INTEGRATION,
    CHECK_RESOURCE,
    CHECK_METHOD,
    CHECK_TENANT
} arg_check_t;

typedef struct {
    arg_kind_t   kind;
    const char  *name;          /* "kind" for --kind, "ENV" for a positional */
    size_t       field;         /* offsetof(args_t, ...) */
    arg_check_t  check;
} arg_t;

#define POS(n, f, c)    { ARG_POS, n, offsetof(args_t, f), c }
#define OPT(n, f, c)    { ARG_VALUE, n, offsetof(args_t, f), c }
#define NEED(n, f, c)   { ARG_NEEDED, n, offsetof(args_t, f), c }
#define FLAG(n, f)      { ARG_FLAG, n, offsetof(args_t, f), CHECK_NONE }
#define LIST(n)         { ARG_LIST, n, offsetof(args_t, list), CHECK_NONE }

#define ARGS_MAX 8

typedef struct cmd_s cmd_t;
typedef int (*cmd_fn)(const cmd_t *cmd, const args_t *a);

struct cmd_s {
    const char *group;      /* "token" (or the command itself: "diff") */
    const char *name;       /* "create", or NULL for single-word commands */
    cmd_fn      run;
    const char *usage;      /* argument synopsis after "envgw group name" */
    const char *summary;    /* one line */
    const char *help;       /* details, may be NULL */
    arg_t       args[ARGS_MAX];     /* ends at the first ARG_END */
};

void usage_error(const cmd_t *cmd, const char *fmt, ...)
    __attribute__((format(printf, 2, 3), noreturn));
const char *cmd_fullname(const cmd_t *cmd);

/* ---- validation (util.c) ------------------------------------------------ */

bool valid_id(const char *s);           /* env, team, account, token ids */
bool valid_name(const char *s);         /* integration, resource, method */
bool valid_tenant(const char *s);
bool valid_env_name(const char *s);
const char *check_upstream(const char *url);    /* NULL if fine, else why */
const char *check_path(const char *path);       /* NULL if fine, else why */
const char *normalize_http_method(const char *m); /* uppercased, or NULL */
bool parse_duration(const char *s, long long *secs, bool allow_zero);

/* ---- random and hashing (util.c) ---------------------------------------- */

void  random_bytes(unsigned char *buf, size_t n);
char *random_hex(size_t nbytes);                /* pooled, 2*nbytes chars */
char *new_raw_token(void);                      /* pooled "egw_..." */
char *sha256_hex(const char *s);                /* pooled lowercase hex */

/* ---- Redis (store.c) ---------------------------------------------------- */

char  *key_of(const char *family, const char *rest);   /* pooled */
char  *key2_of(const char *family, const char *a, const char *b);
char  *index_key(const char *name, const char *env);   /* tool's own sets */
char  *channel_name(void);

/* conn.c: the connection to Redis (plain, unix socket or TLS) */
struct redisReply;
void        conn_connect(void);
void        conn_append(int argc, const char **argv);
struct redisReply *conn_reply(void);            /* dies on a lost link */
bool        conn_use(const char *addr);         /* a cluster node's */
const char *conn_desc(void);

void   store_connect(void);
char  *store_get(const char *key);                      /* NULL if missing */
char **store_smembers(const char *key, size_t *n);
char **store_scan(const char *family, const char *rest_prefix, size_t *n);
/* GET of n keys in few round trips: values[i] is NULL where key i is
 * missing (or not a string). */
char **store_mget(char **keys, size_t n);
void   store_watch(const char *key);
void   store_watch_keys(char **keys, size_t n);
/* The stream reply of XRANGE <prefix>audit from (exclusive when
 * after is true) id START, at most count entries; pooled. */
struct redisReply;
struct redisReply *store_audit_range(const char *start, bool after,
                                     size_t count);
char  *audit_key(void);

typedef struct txn_s txn_t;

/*
 * Every write is one MULTI ... EXEC that also PUBLISHes each changed key.
 * A command reads under WATCH and queues its writes in the body of
 *
 *     for (t = txn_begin(); t != NULL; t = txn_commit(t)) {
 *         store_watch(key); ... read ...; txn_set_json(t, key, rec);
 *     }
 *
 * txn_commit() sends the queued writes and ends the loop (NULL), or, when
 * a WATCHed key changed meanwhile, backs off a random while and returns a
 * fresh txn_t so the body reads and decides again; after TXN_RETRIES such
 * conflicts it dies, having written nothing.  A body that queues nothing,
 * or calls txn_discard(), writes nothing and ends the loop.
 */
txn_t   *txn_begin(void);
txn_t   *txn_commit(txn_t *t);
void     txn_discard(txn_t *t);
unsigned txn_attempt(const txn_t *t);   /* 0 the first time round */
void     txn_set(txn_t *t, const char *key, const char *value);
void     txn_set_json(txn_t *t, const char *key, json_t *value);
void     txn_del(txn_t *t, const char *key);
void     txn_sadd(txn_t *t, const char *key, const char *member);
void     txn_srem(txn_t *t, const char *key, const char *member);
/* Names an environment the write touches, for the audit trail. */
void     txn_env(txn_t *t, const char *env_id);

#define TXN_RETRIES 8

/* ---- records (records.c) ------------------------------------------------ */

json_t     *parse_json(const char *s);         /* pooled; NULL if not JSON */
json_t     *load_json(const char *key);        /* pooled; NULL if missing */
json_t     *load_env(const char *env_id);      /* dies if unknown */
const char *jstr(json_t *obj, const char *field);       /* NULL if absent */
const char *jstr_req(json_t *obj, const char *field, const char *key);
json_t     *load_integration(const char *env_id, const char *name);
/* Checks a resources object; NULL if fine, else a pooled message naming
 * the bad entry. */
const char *check_resources(json_t *resources);
/* Uppercases valid HTTP verbs of a resources object in place ("get"). */
void        normalize_verbs(json_t *resources);
char      **sorted_keys(json_t *obj, size_t *n);        /* pooled */
char      **integration_names(const char *env_id, size_t *n);
json_t     *json_deep_copy_p(json_t *j);        /* pooled deep copy */
char      **sort_unique(char **v, size_t *n);
/* a[0..na) and b[0..nb), sorted, without duplicates; pooled */
char      **str_union(char **a, size_t na, char **b, size_t nb, size_t *n);
/* The JSON of a file (- for stdin), pooled; a usage error if it cannot
 * be read or is not JSON ("cannot read <what> FILE: ..."). */
json_t     *load_json_file(const cmd_t *cmd, const char *file,
                           const char *what);

/* A record found by what it belongs to: its id, key and parsed value. */
typedef struct {
    const char *id;
    const char *key;
    json_t     *rec;
} ref_t;

/* Every token (account) record of env_id, from the tool's index and a
 * SCAN of the records themselves, WATCHed before they are read. */
ref_t      *env_tokens(const char *env_id, size_t *n);
ref_t      *env_accounts(const char *env_id, size_t *n);
/* Queues "revoked": true on a token record not revoked yet; false if it
 * already was. */
bool        revoke_token(txn_t *t, const ref_t *tok);
/* Queues revoking the unrevoked account tokens of acc_id; how many. */
size_t      revoke_account_tokens(txn_t *t, ref_t *tokens, size_t n,
                                  const char *acc_id);

/* ---- shared by commands ------------------------------------------------- */

/* cmd_account.c: queues removing an account of env_id, its tenant entry
 * and its account tokens (of tokens[0..ntokens)); how many it revokes */
size_t queue_account_removal(txn_t *t, const char *env_id, const char *acc_id,
                             json_t *rec, ref_t *tokens, size_t ntokens);

/* ---- commands ----------------------------------------------------------- */

int cmd_env_create(const cmd_t *, const args_t *);
int cmd_env_list(const cmd_t *, const args_t *);
int cmd_token_create(const cmd_t *, const args_t *);
int cmd_token_list(const cmd_t *, const args_t *);
int cmd_token_revoke(const cmd_t *, const args_t *);
int cmd_token_rotate(const cmd_t *, const args_t *);
int cmd_account_add(const cmd_t *, const args_t *);
int cmd_account_remove(const cmd_t *, const args_t *);
int cmd_account_list(const cmd_t *, const args_t *);
int cmd_integration_set(const cmd_t *, const args_t *);
int cmd_integration_list(const cmd_t *, const args_t *);
int cmd_integration_show(const cmd_t *, const args_t *);
int cmd_method_set(const cmd_t *, const args_t *);
int cmd_method_remove(const cmd_t *, const args_t *);
int cmd_diff(const cmd_t *, const args_t *);
int cmd_promote(const cmd_t *, const args_t *);
int cmd_env_delete(const cmd_t *, const args_t *);
int cmd_integration_remove(const cmd_t *, const args_t *);
int cmd_account_disable(const cmd_t *, const args_t *);
int cmd_account_enable(const cmd_t *, const args_t *);
int cmd_export(const cmd_t *, const args_t *);
int cmd_apply(const cmd_t *, const args_t *);
int cmd_audit(const cmd_t *, const args_t *);
int cmd_token_set_limit(const cmd_t *, const args_t *);
int cmd_env_set_limit(const cmd_t *, const args_t *);

/* cmd_limit.c: "500/10s" as a record's rate_limit object (pooled), NULL
 * for "none"; a usage error for anything else */
json_t *parse_rate_limit(const cmd_t *cmd, const char *s);
int cmd_credentials_set(const cmd_t *, const args_t *);
int cmd_credentials_show(const cmd_t *, const args_t *);
int cmd_credentials_remove(const cmd_t *, const args_t *);
int cmd_credentials_refresh(const cmd_t *, const args_t *);
int cmd_keys_rotate(const cmd_t *, const args_t *);

/* cmd_credentials.c: an integration's "auth" and "oauth" declarations;
 * NULL if fine, else why */
const char *check_auth(json_t *auth);
const char *check_oauth(json_t *oauth);

#endif /* ENVGW_H */
