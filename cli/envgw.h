/*
 * envgw — the env_gateway admin tool: shared declarations.
 *
 * Layout:
 *   envgw.c        main, global options, argument parsing, help, dispatch
 *   util.c         memory pool, errors, output, validation, random, hashing
 *   store.c        Redis connection, reads, WATCH/MULTI/EXEC transactions
 *   records.c      JSON records of the schema (load, check, build)
 *   cmd_env.c      env create|list
 *   cmd_token.c    token create|list|revoke|rotate
 *   cmd_account.c  account add|remove|list
 *   cmd_integration.c  integration set|list|show, method set|remove
 *   cmd_diff.c     diff, promote
 */

#ifndef ENVGW_H
#define ENVGW_H

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
} envgw_opts_t;

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
void print_json(json_t *j);
const char *fmt_time(long long t);     /* "2026-01-01T00:00:00Z" or "never" */

/* ---- command table and argument parsing -------------------------------- */

typedef struct cmd_s cmd_t;
typedef int (*cmd_fn)(const cmd_t *cmd, int argc, char **argv);

struct cmd_s {
    const char *group;      /* "token" (or the command itself: "diff") */
    const char *name;       /* "create", or NULL for single-word commands */
    cmd_fn      run;
    const char *usage;      /* argument synopsis after "envgw group name" */
    const char *summary;    /* one line */
    const char *help;       /* details, may be NULL */
};

typedef struct {
    const char *name;       /* "kind" for --kind */
    bool        has_arg;
    const char *val;        /* value, or "1" for a flag that was given */
} opt_t;

/* Parses argv (after the command words) into opts and positionals.
 * Global options are accepted anywhere; --help prints help and exits 0.
 * Checks that the positional count is within [min_pos, max_pos]. */
void parse_args(const cmd_t *cmd, int argc, char **argv, opt_t *opts,
                char ***pos, int *npos, int min_pos, int max_pos);
/* A command whose only argument is an id (environment, account, token):
 * parsed and checked; "what" names it in the usage error. */
const char *one_id_arg(const cmd_t *cmd, int argc, char **argv,
                       const char *what);
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

void   store_connect(void);
char  *store_get(const char *key);                      /* NULL if missing */
char **store_smembers(const char *key, size_t *n);
char **store_scan(const char *family, const char *rest_prefix, size_t *n);
void   store_watch(const char *key);
void   store_unwatch(void);

typedef struct txn_s txn_t;
txn_t *txn_new(void);
void   txn_set(txn_t *t, const char *key, const char *value);
void   txn_set_json(txn_t *t, const char *key, json_t *value);
void   txn_del(txn_t *t, const char *key);
void   txn_sadd(txn_t *t, const char *key, const char *member);
void   txn_srem(txn_t *t, const char *key, const char *member);
/* 0 on success, -1 if a WATCHed key changed (caller retries) */
int    txn_exec(txn_t *t);
size_t txn_published(txn_t *t);

#define TXN_RETRIES 8

/* ---- records (records.c) ------------------------------------------------ */

json_t     *load_json(const char *key);        /* pooled; NULL if missing */
json_t     *load_env(const char *env_id);      /* dies if unknown */
const char *jstr(json_t *obj, const char *field);       /* NULL if absent */
const char *jstr_req(json_t *obj, const char *field, const char *key);
json_t     *load_integration(const char *env_id, const char *name);
/* Checks a resources object; NULL if fine, else a pooled message naming
 * the bad entry. */
const char *check_resources(json_t *resources);
char      **sorted_keys(json_t *obj, size_t *n);        /* pooled */
char      **integration_names(const char *env_id, size_t *n);
json_t     *json_deep_copy_p(json_t *j);        /* pooled deep copy */
char      **sort_unique(char **v, size_t *n);

/* ---- commands ----------------------------------------------------------- */

int cmd_env_create(const cmd_t *, int, char **);
int cmd_env_list(const cmd_t *, int, char **);
int cmd_token_create(const cmd_t *, int, char **);
int cmd_token_list(const cmd_t *, int, char **);
int cmd_token_revoke(const cmd_t *, int, char **);
int cmd_token_rotate(const cmd_t *, int, char **);
int cmd_account_add(const cmd_t *, int, char **);
int cmd_account_remove(const cmd_t *, int, char **);
int cmd_account_list(const cmd_t *, int, char **);
int cmd_integration_set(const cmd_t *, int, char **);
int cmd_integration_list(const cmd_t *, int, char **);
int cmd_integration_show(const cmd_t *, int, char **);
int cmd_method_set(const cmd_t *, int, char **);
int cmd_method_remove(const cmd_t *, int, char **);
int cmd_diff(const cmd_t *, int, char **);
int cmd_promote(const cmd_t *, int, char **);

#endif /* ENVGW_H */
