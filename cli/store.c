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
 *
 * With --cluster, each command goes to the node of its key's slot (MOVED
 * and ASK followed), a SCAN goes to every primary, and a write cannot be
 * one MULTI/EXEC (its keys live on several nodes): its commands are sent
 * one by one in an order that a crash at any point leaves no record that
 * grants access (txn_exec_cluster).  WATCH is not available across nodes:
 * on a cluster, run one writer at a time.
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


/* ---- Redis Cluster (--cluster) ------------------------------------------ */

#define CLUSTER_SLOTS      16384
#define CLUSTER_REDIRECTS  5

static const char *slot_node[CLUSTER_SLOTS];   /* "host:port" of primaries */
static const char **primaries;
static size_t       nprimaries;

static void node_connect(const char *addr);

/* CRC16-CCITT (XModem), as the Redis Cluster specification defines it */
static unsigned crc16(const char *p, size_t len)
{
    unsigned crc = 0;
    int i;

    while (len--) {
        crc ^= (unsigned) (unsigned char) *p++ << 8;
        for (i = 0; i < 8; i++)
            crc = (crc & 0x8000) ? ((crc << 1) ^ 0x1021) & 0xffff
                                 : (crc << 1) & 0xffff;
    }
    return crc;
}

static unsigned key_slot(const char *key)
{
    size_t len = strlen(key);
    const char *open = strchr(key, '{'), *close;

    if (open != NULL) {
        close = strchr(open + 1, '}');
        if (close != NULL && close > open + 1)
            return crc16(open + 1, (size_t) (close - open - 1))
                   & (CLUSTER_SLOTS - 1);
    }
    return crc16(key, len) & (CLUSTER_SLOTS - 1);
}

static const char *node_addr(redisReply *n)
{
    if (n->type != REDIS_REPLY_ARRAY || n->elements < 2
        || n->element[0]->type != REDIS_REPLY_STRING
        || n->element[1]->type != REDIS_REPLY_INTEGER)
        die("Redis at %s: CLUSTER SLOTS reply not understood", conn_desc());
    if (strchr(n->element[0]->str, ':') != NULL)
        return pfmt("[%s]:%lld", n->element[0]->str,
                    (long long) n->element[1]->integer);
    return pfmt("%s:%lld", n->element[0]->str,
                (long long) n->element[1]->integer);
}

/* The slot map, asked of the node in use. */
static void cluster_map(void)
{
    const char *argv[2] = { "CLUSTER", "SLOTS" };
    redisReply *r, *range;
    size_t i, j;
    long long s;

    conn_append(2, argv);
    r = conn_reply();
    if (r->type == REDIS_REPLY_ERROR)
        die("Redis at %s: CLUSTER SLOTS failed: %s (is it a cluster? "
            "without --cluster envgw talks to one Redis)", conn_desc(),
            r->str);
    if (r->type != REDIS_REPLY_ARRAY)
        die("Redis at %s: CLUSTER SLOTS reply not understood", conn_desc());

    memset(slot_node, 0, sizeof(slot_node));
    primaries = pool_keep(calloc(r->elements + 1, sizeof(char *)), free);
    nprimaries = 0;
    for (i = 0; i < r->elements; i++) {
        const char *addr;

        range = r->element[i];
        if (range->type != REDIS_REPLY_ARRAY || range->elements < 3
            || range->element[0]->type != REDIS_REPLY_INTEGER
            || range->element[1]->type != REDIS_REPLY_INTEGER
            || range->element[0]->integer < 0
            || range->element[1]->integer >= CLUSTER_SLOTS)
            die("Redis at %s: CLUSTER SLOTS reply not understood",
                conn_desc());
        addr = node_addr(range->element[2]);
        for (s = range->element[0]->integer;
             s <= range->element[1]->integer; s++)
            slot_node[s] = addr;
        for (j = 0; j < nprimaries; j++) {
            if (strcmp(primaries[j], addr) == 0)
                break;
        }
        if (j == nprimaries)
            primaries[nprimaries++] = addr;
    }
}

/* A keyed command at its slot's node; MOVED and ASK followed. */
static redisReply *cluster_cmd(int argc, const char **argv)
{
    unsigned slot = key_slot(argv[1]);
    const char *addr = slot_node[slot];
    bool asking = false;
    redisReply *r;
    int n;

    for (n = 0; n <= CLUSTER_REDIRECTS; n++) {
        if (addr == NULL)
            die("Redis cluster: no node serves slot %u (of key %s); "
                "nothing more written", slot, argv[1]);
        node_connect(addr);
        if (asking) {
            conn_append(1, (const char *[]) { "ASKING" });
            r = conn_reply();
            if (r->type == REDIS_REPLY_ERROR)
                die("Redis at %s: ASKING failed: %s", conn_desc(), r->str);
        }
        conn_append(argc, argv);
        r = conn_reply();
        if (r->type != REDIS_REPLY_ERROR)
            return r;
        if (strncmp(r->str, "MOVED ", 6) == 0
            || strncmp(r->str, "ASK ", 4) == 0) {
            const char *sp = strchr(r->str + 4, ' ');

            if (sp == NULL)
                return r;
            asking = r->str[0] == 'A';
            addr = pstrdup(sp + 1);
            if (!asking) {
                cluster_map();
                slot_node[slot] = addr;
            }
            continue;
        }
        return r;
    }
    die("Redis cluster: key %s redirected more than %d times",
        argv[1], CLUSTER_REDIRECTS);
}

/* ---- connection --------------------------------------------------------- */

/* Runs a command; dies on I/O errors and on Redis error replies. */
static redisReply *cluster_cmd(int argc, const char **argv);

static redisReply *cmd_argv(int argc, const char **argv)
{
    redisReply *r;

    if (g_opt.cluster && argc >= 2) {
        r = cluster_cmd(argc, argv);
    } else {
        conn_append(argc, argv);
        r = conn_reply();
    }
    if (r->type == REDIS_REPLY_ERROR)
        die("Redis at %s: %s failed: %s", conn_desc(), argv[0], r->str);
    return r;
}

/* A command on the connection in use, whatever its key's slot. */
static redisReply *raw_argv(int argc, const char **argv)
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

/* AUTH [user] password on the connection in use */
static void conn_auth(void)
{
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
}

/* a cluster node's connection becomes the one in use, AUTHed if new */
static void node_connect(const char *addr)
{
    if (conn_use(addr))
        conn_auth();
}

/* The connection (conn.c), then AUTH [user] password, SELECT and a PING;
 * with --cluster, the slot map. */
void store_connect(void)
{
    static bool connected;

    if (connected)
        return;
    connected = true;
    conn_connect();
    conn_auth();

    if (g_opt.cluster) {
        if (g_opt.db != 0)
            die("--db: a Redis Cluster has database 0 only");
        cluster_map();
        return;
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
    size_t leadlen = strlen(lead), cnt = 0, cap = 16, node;
    char **v = malloc(cap * sizeof(char *));

    store_connect();
    if (v == NULL)
        die("out of memory");
    /* with --cluster, every primary holds some of the keys */
    for (node = 0; node < (g_opt.cluster ? nprimaries : 1); node++) {
        char *cursor = pstrdup("0");

        if (g_opt.cluster)
            node_connect(primaries[node]);
        do {
            const char *argv[6] = { "SCAN", cursor, "MATCH", match,
                                    "COUNT", "1000" };
            redisReply *r = raw_argv(6, argv), *keys;
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
    }
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
    if (g_opt.cluster) {
        /* the keys live on several nodes: one GET each */
        for (i = 0; i < n; i++) {
            redisReply *r = cmd2("GET", keys[i]);
            if (r->type == REDIS_REPLY_STRING)
                v[i] = pstrdup(r->str);
        }
        return v;
    }
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

/* With --cluster, no WATCH: a write's keys are on several nodes. */
void store_watch(const char *key)
{
    store_connect();
    if (g_opt.cluster)
        return;
    cmd2("WATCH", key);
}

void store_watch_keys(char **keys, size_t n)
{
    size_t done, cnt;

    store_connect();
    if (g_opt.cluster)
        return;
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
    if (g_opt.cluster)
        return;
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
static void audit_entry(txn_t *t, const char *argv[16])
{
    json_t *keys = pjson(json_array());
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
}

/* the gateway reads these keys: a SET of one may grant access */
static bool gateway_key(const char *key)
{
    static const char *families[] = { ENVGW_KEY_TOKEN, ENVGW_KEY_ENV,
        ENVGW_KEY_ACCOUNT, ENVGW_KEY_TENANT, ENVGW_KEY_INTEGRATION,
        ENVGW_KEY_CREDENTIALS, NULL };
    size_t plen = strlen(g_opt.prefix), i;

    if (strncmp(key, g_opt.prefix, plen) != 0)
        return false;
    for (i = 0; families[i]; i++) {
        if (strncmp(key + plen, families[i], strlen(families[i])) == 0)
            return true;
    }
    return false;
}

/*
 * A write on a cluster: its keys live on several nodes, so it cannot be one
 * MULTI/EXEC.  Its commands go one at a time in this order, so that a crash
 * between any two leaves nothing that grants access that the finished
 * write would not (docs/redis-schema.md):
 *   1. SADD to the tool's indexes            (a grant is always listed)
 *   2. SET of new keys the gateway never reads (token_id:<id> -> hash)
 *   3. DEL of records the gateway reads       (revocations, removals)
 *   4. SET of records that exist              (updates: revoked, expiry)
 *   5. SET of new records the gateway reads   (grants, last)
 *   6. DEL of keys the gateway never reads
 *   7. SREM from the indexes                  (after what they listed)
 * then the audit entry, then a PUBLISH of every changed key (any node of a
 * cluster carries it to every subscriber).
 */
/*
 * A command of a cluster write that Redis refused (an ACL, a full node, a
 * node gone read-only): the write stops there.  What it already changed
 * is published, so that gateways drop their copies of it at once (a
 * removal that took effect is not served from a cache), and the message
 * says how to finish the write.
 */
static void cluster_write(txn_t *t, int argc, const char **argv,
                          const bool *done)
{
    const char *chan = channel_name();
    redisReply *r;
    size_t i, n = 0;

    r = cluster_cmd(argc, argv);
    if (r->type != REDIS_REPLY_ERROR)
        return;
    for (i = 0; i < t->n; i++) {
        const char *pub[3] = { "PUBLISH", chan, t->cmds[i].argv[1] };
        if (!done[i])
            continue;
        n++;
        (void) cluster_cmd(3, pub);
    }
    /* keys only: no value (a credential, a token's record) is printed */
    for (i = 0; i < t->n; i++)
        if (!done[i])
            fprintf(stderr, "envgw: not done: %s %s\n", t->cmds[i].argv[0],
                    t->cmds[i].argv[1]);
    die("Redis at %s: %s %s failed: %s; the write stopped after %zu of its "
        "%zu commands (the others are listed above), ordered so that what "
        "they wrote grants no access the whole write would not: fix the "
        "cause and run the command again, or, if it no longer applies (what "
        "it removes is gone), do what is listed",
        conn_desc(), argv[0], argv[1], r->str, n, t->n);
}

static void txn_exec_cluster(txn_t *t)
{
    const char *chan = channel_name(), *audit[16];
    bool *exists = pool_keep(calloc(t->n + 1, sizeof(bool)), free);
    bool *done = pool_keep(calloc(t->n + 1, sizeof(bool)), free);
    int pass;
    size_t i;

    for (i = 0; i < t->n; i++) {
        const char *op = t->cmds[i].argv[0];
        if (strcmp(op, "SADD") == 0 || strcmp(op, "SREM") == 0)
            check_type(t->cmds[i].argv[1], "set");
        if (strcmp(op, "SET") == 0) {
            redisReply *r = cmd2("EXISTS", t->cmds[i].argv[1]);
            exists[i] = r->type == REDIS_REPLY_INTEGER && r->integer > 0;
        }
    }
    check_type(audit_key(), "stream");

    for (pass = 1; pass <= 7; pass++) {
        for (i = 0; i < t->n; i++) {
            const char *op = t->cmds[i].argv[0], *key = t->cmds[i].argv[1];
            bool gw = gateway_key(key), set = strcmp(op, "SET") == 0,
                 del = strcmp(op, "DEL") == 0;
            int at = strcmp(op, "SADD") == 0 ? 1
                   : set && !exists[i] && !gw ? 2
                   : del && gw ? 3
                   : set && exists[i] ? 4
                   : set ? 5
                   : del ? 6
                   : 7;

            if (at == pass) {
                cluster_write(t, t->cmds[i].argc, t->cmds[i].argv, done);
                done[i] = true;
            }
        }
    }
    audit_entry(t, audit);
    cmd_argv(16, audit);
    for (i = 0; i < t->nchanged; i++) {
        const char *argv[3] = { "PUBLISH", chan, t->changed[i] };
        cmd_argv(3, argv);
    }
}

/* 0 on success, -1 if a WATCHed key changed before EXEC. */
static int txn_exec(txn_t *t)
{
    const char *chan = channel_name(), *audit[16];
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
    audit_entry(t, audit);
    conn_append(16, audit);
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
    if (g_opt.cluster) {
        txn_exec_cluster(t);
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
