/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * envgw: Redis access.
 *
 * Reads are plain blocking commands.  Every write goes through a txn_t:
 * the commands are queued locally, then sent as one MULTI ... EXEC that
 * also PUBLISHes every changed key on <prefix>invalidate, so a gateway
 * never sees half an update and drops its cached copies at the moment the
 * new values become visible.  Read-modify-write commands WATCH the keys
 * they read first; if one changes before EXEC the caller starts over.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pwd.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "envgw.h"


/* ---- key names ---------------------------------------------------------- */

char *key_of(const char *family, const char *rest)
{
    return pfmt("%s%s%s", g_opt.prefix, family, rest);
}

char *key2_of(const char *family, const char *a, const char *b)
{
    return pfmt("%s%s%s:%s", g_opt.prefix, family, a, b);
}

/* The tool's own listing sets (envs, tokens:<env>, ...); the gateway never
 * reads them. */
char *index_key(const char *name, const char *env)
{
    if (env == NULL)
        return pfmt("%s%s", g_opt.prefix, name);
    return pfmt("%s%s:%s", g_opt.prefix, name, env);
}

char *channel_name(void)
{
    return pfmt("%s%s", g_opt.prefix, ENVGW_CHANNEL_INVALIDATE);
}

/* The audit stream: every write appends one entry (the gateway never reads
 * it). */
char *audit_key(void)
{
    return pfmt("%saudit", g_opt.prefix);
}

/* ---- connection --------------------------------------------------------- */

/* Runs a command; dies on I/O errors and on Redis error replies. */
static redisReply *cmd_argv(int argc, const char **argv)
{
    redisReply *r;

    conn_append(argc, argv);
    r = conn_reply();
    if (r->type == REDIS_REPLY_ERROR)
        die("Redis at %s: %s failed: %s", conn_desc(), argv[0], r->str);
    return r;
}

static redisReply *cmd2(const char *a, const char *b)
{
    const char *argv[2] = { a, b };
    return cmd_argv(b ? 2 : 1, argv);
}

/* The connection (conn.c), then AUTH [user] password, SELECT and a PING. */
void store_connect(void)
{
    static bool connected;

    if (connected)
        return;
    connected = true;
    conn_connect();

    if (g_opt.password != NULL && g_opt.password[0] != '\0') {
        const char *argv[3] = { "AUTH" };
        int argc = 1;
        redisReply *r;

        if (g_opt.user != NULL)
            argv[argc++] = g_opt.user;
        argv[argc++] = g_opt.password;
        conn_append(argc, argv);
        r = conn_reply();
        if (r->type == REDIS_REPLY_ERROR)
            die("Redis at %s: authentication failed: %s", conn_desc(),
                r->str);
    }
    if (g_opt.db != 0)
        cmd2("SELECT", pfmt("%d", g_opt.db));
    cmd2("PING", NULL);    /* NOAUTH and friends surface here, not later */
}

/* ---- reads -------------------------------------------------------------- */

char *store_get(const char *key)
{
    redisReply *r;

    store_connect();
    r = cmd2("GET", key);
    if (r->type == REDIS_REPLY_NIL)
        return NULL;
    if (r->type != REDIS_REPLY_STRING)
        die("unexpected reply to GET %s", key);
    return pstrdup(r->str);
}

char **store_smembers(const char *key, size_t *n)
{
    redisReply *r;
    char **v;
    size_t i;

    store_connect();
    r = cmd2("SMEMBERS", key);
    if (r->type != REDIS_REPLY_ARRAY)
        die("unexpected reply to SMEMBERS %s", key);
    v = pool_keep(calloc(r->elements + 1, sizeof(char *)), free);
    for (i = 0; i < r->elements; i++)
        v[i] = pstrdup(r->element[i]->str ? r->element[i]->str : "");
    *n = r->elements;
    return v;
}

/* Glob-escape so a prefix like "a*b:" matches only itself in SCAN MATCH. */
static char *glob_escape(const char *s)
{
    char *out = pool_keep(malloc(strlen(s) * 2 + 1), free);
    char *o = out;

    for (; *s; s++) {
        if (strchr("*?[]\\", *s))
            *o++ = '\\';
        *o++ = *s;
    }
    *o = '\0';
    return out;
}

/* All keys <prefix><family><rest_prefix>*, returned without the
 * "<prefix><family><rest_prefix>" part. */
char **store_scan(const char *family, const char *rest_prefix, size_t *n)
{
    char *lead = key_of(family, rest_prefix);
    char *match = pfmt("%s*", glob_escape(lead));
    size_t leadlen = strlen(lead), cnt = 0, cap = 16;
    char **v = malloc(cap * sizeof(char *));
    char *cursor = pstrdup("0");

    store_connect();
    if (v == NULL)
        die("out of memory");
    do {
        const char *argv[6] = { "SCAN", cursor, "MATCH", match,
                                "COUNT", "1000" };
        redisReply *r = cmd_argv(6, argv), *keys;
        size_t i;

        if (r->type != REDIS_REPLY_ARRAY || r->elements != 2)
            die("unexpected reply to SCAN");
        cursor = pstrdup(r->element[0]->str);
        keys = r->element[1];
        for (i = 0; i < keys->elements; i++) {
            const char *k = keys->element[i]->str;
            if (k == NULL || strncmp(k, lead, leadlen) != 0)
                continue;
            if (cnt + 1 >= cap) {
                char **nv = realloc(v, cap * 2 * sizeof(char *));
                if (nv == NULL)
                    die("out of memory");
                v = nv;
                cap *= 2;
            }
            v[cnt++] = pstrdup(k + leadlen);
        }
    } while (strcmp(cursor, "0") != 0);
    pool_keep(v, free);
    v[cnt] = NULL;
    *n = cnt;
    return v;
}

/* Keys a command sends at once: WATCH k1 k2 ..., MGET k1 k2 ... */
#define KEYS_PER_COMMAND 512

/* Runs "VERB keys[from..from+cnt)" (at most KEYS_PER_COMMAND keys). */
static redisReply *cmd_keys(const char *verb, char **keys, size_t cnt)
{
    const char *argv[1 + KEYS_PER_COMMAND];

    argv[0] = verb;
    memcpy(argv + 1, keys, cnt * sizeof(char *));
    return cmd_argv((int) cnt + 1, argv);
}

char **store_mget(char **keys, size_t n)
{
    char **v = pool_keep(calloc(n + 1, sizeof(char *)), free);
    size_t done, cnt, i;

    store_connect();
    for (done = 0; done < n; done += cnt) {
        redisReply *r;

        cnt = n - done < KEYS_PER_COMMAND ? n - done : KEYS_PER_COMMAND;
        r = cmd_keys("MGET", keys + done, cnt);
        if (r->type != REDIS_REPLY_ARRAY || r->elements != cnt)
            die("unexpected reply to MGET");
        for (i = 0; i < cnt; i++) {
            if (r->element[i]->type == REDIS_REPLY_STRING)
                v[done + i] = pstrdup(r->element[i]->str);
        }
    }
    return v;
}

void store_watch(const char *key)
{
    store_connect();
    cmd2("WATCH", key);
}

void store_watch_keys(char **keys, size_t n)
{
    size_t done, cnt;

    store_connect();
    for (done = 0; done < n; done += cnt) {
        cnt = n - done < KEYS_PER_COMMAND ? n - done : KEYS_PER_COMMAND;
        cmd_keys("WATCH", keys + done, cnt);
    }
}

redisReply *store_audit_range(const char *start, bool after, size_t count)
{
    const char *argv[6];
    redisReply *r;

    store_connect();
    argv[0] = "XRANGE";
    argv[1] = audit_key();
    argv[2] = after ? pfmt("(%s", start) : start;
    argv[3] = "+";
    argv[4] = "COUNT";
    argv[5] = pfmt("%zu", count);
    r = cmd_argv(6, argv);
    if (r->type != REDIS_REPLY_ARRAY)
        die("unexpected reply to XRANGE %s", argv[1]);
    return r;
}

static void store_unwatch(void)
{
    store_connect();
    cmd2("UNWATCH", NULL);
}

/* ---- transactions ------------------------------------------------------- */

typedef struct {
    const char *argv[3];
    int         argc;
} txn_cmd_t;

struct txn_s {
    txn_cmd_t   *cmds;
    size_t       n, cap;
    const char **changed;       /* distinct changed keys, in order */
    size_t       nchanged;
    json_t      *envs;          /* environments touched, for the audit */
    unsigned     attempt;
};

static void txn_free(void *p)
{
    txn_t *t = p;
    free(t->cmds);
    free(t->changed);
    free(t);
}

txn_t *txn_begin(void)
{
    txn_t *t = pool_keep(calloc(1, sizeof(*t)), txn_free);

    t->envs = pjson(json_array());
    return t;
}

void txn_env(txn_t *t, const char *env_id)
{
    size_t i;

    for (i = 0; i < json_array_size(t->envs); i++) {
        if (strcmp(json_string_value(json_array_get(t->envs, i)), env_id)
            == 0)
            return;
    }
    json_array_append_new(t->envs, json_string(env_id));
}

unsigned txn_attempt(const txn_t *t)
{
    return t->attempt;
}

void txn_discard(txn_t *t)
{
    t->n = 0;
    t->nchanged = 0;
    json_array_clear(t->envs);
}

static void txn_add(txn_t *t, const char *a0, const char *key, const char *a2)
{
    size_t i;

    if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 8;
        txn_cmd_t *nc = realloc(t->cmds, cap * sizeof(*nc));
        const char **nk = realloc(t->changed, cap * sizeof(*nk));
        if (nc == NULL || nk == NULL)
            die("out of memory");
        t->cmds = nc;
        t->changed = nk;
        t->cap = cap;
    }
    t->cmds[t->n].argv[0] = a0;
    t->cmds[t->n].argv[1] = pstrdup(key);
    t->cmds[t->n].argv[2] = a2 ? pstrdup(a2) : NULL;
    t->cmds[t->n].argc = a2 ? 3 : 2;
    t->n++;

    for (i = 0; i < t->nchanged; i++) {
        if (strcmp(t->changed[i], key) == 0)
            return;
    }
    t->changed[t->nchanged++] = t->cmds[t->n - 1].argv[1];
}

void txn_set(txn_t *t, const char *key, const char *value)
{
    txn_add(t, "SET", key, value);
}

void txn_set_json(txn_t *t, const char *key, json_t *value)
{
    char *s = json_dumps(value, JSON_COMPACT | JSON_ENCODE_ANY);

    if (s == NULL)
        die("cannot encode JSON for %s", key);
    txn_add(t, "SET", key, s);
    free(s);
}

void txn_del(txn_t *t, const char *key)
{
    txn_add(t, "DEL", key, NULL);
}

void txn_sadd(txn_t *t, const char *key, const char *member)
{
    txn_add(t, "SADD", key, member);
}

void txn_srem(txn_t *t, const char *key, const char *member)
{
    txn_add(t, "SREM", key, member);
}

/* Reads one queued reply; dies on a lost connection. */
static redisReply *read_reply(void)
{
    return conn_reply();
}

/* EXEC does not roll back a command that fails at run time (say SADD on a
 * key that a human turned into a string): refuse before writing. */
static void check_type(const char *key, const char *want)
{
    redisReply *tr = cmd2("TYPE", key);

    if (tr->type == REDIS_REPLY_STATUS && strcmp(tr->str, want) != 0
        && strcmp(tr->str, "none") != 0)
        die("key %s is a %s, not a %s; fix or delete it first (nothing "
            "written)", key, tr->str, want);
}

/* Who writes: --actor, else the OS user's name (or uid). */
static const char *actor(void)
{
    struct passwd *pw;

    if (g_opt.actor)
        return g_opt.actor;
    pw = getpwuid(getuid());
    return pw && pw->pw_name ? pstrdup(pw->pw_name)
                             : pfmt("uid %ld", (long) getuid());
}

/* XADD <prefix>audit MAXLEN ~ N * time T actor A command C environments
 * [..] keys [..], queued inside the transaction of the write itself. */
static void append_audit(txn_t *t)
{
    json_t *keys = pjson(json_array());
    const char *argv[16];
    char *envs, *changed;
    size_t i;

    for (i = 0; i < t->nchanged; i++)
        json_array_append_new(keys, json_string(t->changed[i]));
    envs = json_dumps(t->envs, JSON_COMPACT);
    changed = json_dumps(keys, JSON_COMPACT);
    if (envs == NULL || changed == NULL)
        die("out of memory");
    pool_keep(envs, free);
    pool_keep(changed, free);

    argv[0] = "XADD";
    argv[1] = audit_key();
    argv[2] = "MAXLEN";
    argv[3] = "~";
    argv[4] = pfmt("%ld", g_opt.audit_maxlen);
    argv[5] = "*";
    argv[6] = "time";
    argv[7] = pfmt("%lld", (long long) time(NULL));
    argv[8] = "actor";
    argv[9] = actor();
    argv[10] = "command";
    argv[11] = g_opt.command ? g_opt.command : "envgw";
    argv[12] = "environments";
    argv[13] = envs;
    argv[14] = "keys";
    argv[15] = changed;
    conn_append(16, argv);
}

/* 0 on success, -1 if a WATCHed key changed before EXEC. */
static int txn_exec(txn_t *t)
{
    const char *chan = channel_name();
    redisReply *r;
    size_t i;

    for (i = 0; i < t->n; i++) {
        const char *op = t->cmds[i].argv[0];
        if (strcmp(op, "SADD") == 0 || strcmp(op, "SREM") == 0)
            check_type(t->cmds[i].argv[1], "set");
    }
    check_type(audit_key(), "stream");

    /* Pipeline MULTI, the writes, the audit entry, the PUBLISHes and EXEC
     * in one round trip; then read every reply in order. */
    conn_append(1, (const char *[]) { "MULTI" });
    for (i = 0; i < t->n; i++)
        conn_append(t->cmds[i].argc, t->cmds[i].argv);
    append_audit(t);
    for (i = 0; i < t->nchanged; i++) {
        const char *argv[3] = { "PUBLISH", chan, t->changed[i] };
        conn_append(3, argv);
    }
    conn_append(1, (const char *[]) { "EXEC" });

    for (i = 0; i < 2 + t->n + t->nchanged; i++) {
        r = read_reply();
        if (r->type == REDIS_REPLY_ERROR)
            /* a command refused while queueing: EXEC will abort all */
            die("Redis at %s refused the update (nothing written): %s",
                conn_desc(), r->str);
    }
    r = read_reply();
    if (r->type == REDIS_REPLY_NIL)
        return -1;
    if (r->type == REDIS_REPLY_ERROR)
        die("Redis at %s refused the update (nothing written): %s",
            conn_desc(), r->str);
    if (r->type != REDIS_REPLY_ARRAY)
        die("unexpected reply to EXEC");
    for (i = 0; i < r->elements; i++) {
        redisReply *e = r->element[i];
        if (e->type == REDIS_REPLY_ERROR)
            die("Redis at %s: part of the update failed: %s (key %s)",
                conn_desc(), e->str,
                i < t->n ? t->cmds[i].argv[1]
                         : i == t->n ? audit_key() : chan);
    }
    return 0;
}

txn_t *txn_commit(txn_t *t)
{
    unsigned char rnd;
    struct timespec ts;
    txn_t *next;

    store_connect();
    if (t->n == 0) {
        store_unwatch();
        return NULL;
    }
    if (txn_exec(t) == 0)
        return NULL;
    if (t->attempt == TXN_RETRIES)
        die("records keep changing; nothing written");

    /* a WATCHed key changed: back off a random, growing while so that
     * concurrent writers do not collide again in lockstep */
    random_bytes(&rnd, 1);
    ts.tv_sec = 0;
    ts.tv_nsec = (long) (1 + rnd % (5 * (t->attempt + 1))) * 1000000L;
    nanosleep(&ts, NULL);

    next = txn_begin();
    next->attempt = t->attempt + 1;
    return next;
}
