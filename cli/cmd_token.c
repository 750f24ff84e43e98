/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * envgw token create|list|revoke|rotate
 *
 * A raw token exists only in this process and on stdout, once: Redis gets
 * its SHA-256 (the gateway hashes what a client presents and looks that up).
 */

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "envgw.h"

#define ACCOUNT_TOKEN_DEFAULT_TTL 3600

static const char *check_kind(const char *k)
{
    if (strcmp(k, ENVGW_KIND_DATA) == 0 || strcmp(k, ENVGW_KIND_ADMIN) == 0
        || strcmp(k, ENVGW_KIND_ACCOUNT) == 0)
        return k;
    return NULL;
}

/* The account of an account token must exist, live in ENV and be active. */
static void check_account_for_token(const char *env_id, const char *acc_id)
{
    char *key = key_of(ENVGW_KEY_ACCOUNT, acc_id);
    json_t *acc;
    const char *st;

    store_watch(key);
    acc = load_json(key);
    if (acc == NULL || !json_is_object(acc))
        die("no integrated account '%s'%s", acc_id,
            acc ? " (malformed record)" : "");
    if (strcmp(jstr_req(acc, ENVGW_F_ENVIRONMENT_ID, key), env_id) != 0)
        die("integrated account '%s' does not belong to environment '%s'",
            acc_id, env_id);
    st = jstr(acc, ENVGW_F_STATUS);
    if (st != NULL && strcmp(st, ENVGW_STATUS_ACTIVE) != 0)
        die("integrated account '%s' is %s, not active", acc_id, st);
}

/*
 * Queues the records of a new token on t and returns its pieces.
 * token_id and raw are pooled.
 */
typedef struct {
    const char *raw;
    const char *token_id;
    json_t     *rec;
} minted_t;

static minted_t mint(txn_t *t, const char *env_id, json_t *env,
                     const char *kind, const char *account,
                     long long expires_at, json_t *rate_limit)
{
    minted_t m;
    const char *hash;
    char *tkey;
    int i;

    m.raw = new_raw_token();
    hash = sha256_hex(m.raw);
    tkey = key_of(ENVGW_KEY_TOKEN, hash);
    /* 48 random bits: a collision is unlikely but would orphan a record */
    for (i = 0; ; i++) {
        m.token_id = pfmt("tok_%s", random_hex(6));
        if (store_get(key_of(ENVGW_KEY_TOKEN_ID, m.token_id)) == NULL)
            break;
        if (i == 5)
            die("cannot find a free token id");
    }

    m.rec = pjson(json_object());
    json_object_set_new(m.rec, ENVGW_F_TOKEN_ID, json_string(m.token_id));
    json_object_set(m.rec, ENVGW_F_TEAM_ID,
                    json_object_get(env, ENVGW_F_TEAM_ID));
    json_object_set_new(m.rec, ENVGW_F_ENVIRONMENT_ID, json_string(env_id));
    json_object_set_new(m.rec, ENVGW_F_ENVIRONMENT,
                        json_string(jstr(env, ENVGW_F_NAME)
                                    ? jstr(env, ENVGW_F_NAME) : ""));
    json_object_set_new(m.rec, ENVGW_F_KIND, json_string(kind));
    json_object_set_new(m.rec, ENVGW_F_EXPIRES_AT,
                        expires_at > 0 ? json_integer(expires_at)
                                       : json_null());
    json_object_set_new(m.rec, ENVGW_F_REVOKED, json_false());
    if (account)
        json_object_set_new(m.rec, ENVGW_F_ACCOUNT_ID, json_string(account));
    json_object_set_new(m.rec, "created_at", json_integer(time(NULL)));
    if (rate_limit && !json_is_null(rate_limit))
        json_object_set(m.rec, ENVGW_F_RATE_LIMIT, rate_limit);

    txn_set_json(t, tkey, m.rec);
    txn_set_json(t, key_of(ENVGW_KEY_TOKEN_ID, m.token_id),
                 pjson(json_string(hash)));
    txn_sadd(t, index_key("tokens", env_id), m.token_id);
    return m;
}

static void print_minted(const minted_t *m, json_t *extra)
{
    json_t *rec = m->rec;
    json_t *exp = json_object_get(rec, ENVGW_F_EXPIRES_AT);
    const char *acc = jstr(rec, ENVGW_F_ACCOUNT_ID);

    if (g_opt.json) {
        json_t *out = pjson(json_deep_copy(rec));
        json_object_set_new(out, "token", json_string(m->raw));
        if (extra)
            json_object_update(out, extra);
        print_json(out);
        return;
    }
    printf("token: %s\n", m->raw);
    printf("token_id: %s\n", m->token_id);
    printf("environment: %s (%s)\n", jstr(rec, ENVGW_F_ENVIRONMENT_ID),
           jstr(rec, ENVGW_F_ENVIRONMENT));
    printf("kind: %s\n", jstr(rec, ENVGW_F_KIND));
    if (acc)
        printf("integrated_account_id: %s\n", acc);
    printf("expires: %s\n", json_is_integer(exp)
           ? fmt_time(json_integer_value(exp)) : "never");
    note("store the token now: it is not stored and cannot be shown again");
}

int cmd_token_create(const cmd_t *cmd, const args_t *a)
{
    const char *env_id = a->env, *account = a->account;
    const char *kind = a->kind ? a->kind : ENVGW_KIND_DATA;
    long long ttl = 0;
    minted_t m;
    txn_t *t;
    json_t *rl = a->rate_limit ? parse_rate_limit(cmd, a->rate_limit) : NULL;

    if (check_kind(kind) == NULL)
        usage_error(cmd, "bad --kind '%s' (want data, admin or account)",
                    kind);
    if (a->ttl && !parse_duration(a->ttl, &ttl, false))
        usage_error(cmd, "bad --ttl '%s' (want N[s|m|h|d], e.g. 30d)",
                    a->ttl);
    if (strcmp(kind, ENVGW_KIND_ACCOUNT) == 0) {
        if (account == NULL)
            usage_error(cmd, "--kind account needs --account ID");
        if (a->ttl == NULL)
            ttl = ACCOUNT_TOKEN_DEFAULT_TTL;
    } else if (account != NULL) {
        usage_error(cmd, "--account is only for --kind account");
    }

    for (t = txn_begin(); t != NULL; t = txn_commit(t)) {
        json_t *env;

        store_watch(key_of(ENVGW_KEY_ENV, env_id));
        env = load_env(env_id);
        if (account)
            check_account_for_token(env_id, account);
        m = mint(t, env_id, env, kind, account,
                 ttl > 0 ? (long long) time(NULL) + ttl : 0, rl);
        txn_env(t, env_id);
    }
    print_minted(&m, NULL);
    return 0;
}

/* Resolves TOKEN_ID to its record (WATCHing both keys); dies if missing. */
static json_t *load_token(const char *token_id, char **tkey_out)
{
    char *idkey = key_of(ENVGW_KEY_TOKEN_ID, token_id);
    json_t *h, *rec;
    char *tkey;

    store_watch(idkey);
    h = load_json(idkey);
    if (h == NULL)
        die("no token with id '%s'", token_id);
    if (!json_is_string(h)
        || strlen(json_string_value(h)) != ENVGW_SHA256_HEX_LEN)
        die("malformed record at key %s (want a JSON string of the token's "
            "SHA-256)", idkey);
    tkey = key_of(ENVGW_KEY_TOKEN, json_string_value(h));
    store_watch(tkey);
    rec = load_json(tkey);
    if (rec == NULL)
        die("token '%s' is indexed but its record %s is gone", token_id,
            tkey);
    if (!json_is_object(rec))
        die("malformed record at key %s", tkey);
    jstr_req(rec, ENVGW_F_ENVIRONMENT_ID, tkey);
    *tkey_out = tkey;
    return rec;
}

static long long rec_expires(json_t *rec)
{
    json_t *e = json_object_get(rec, ENVGW_F_EXPIRES_AT);
    return json_is_integer(e) ? json_integer_value(e) : 0;
}

static const char *token_state(json_t *rec, long long now)
{
    long long exp = rec_expires(rec);

    if (json_is_true(json_object_get(rec, ENVGW_F_REVOKED)))
        return "revoked";
    if (exp > 0 && exp <= now)
        return "expired";
    return "active";
}

/* Unix seconds in a decimal string (the gateway's last_used:<token_id>),
 * or -1. */
static long long unix_seconds(const char *s)
{
    char *end;
    long long v;

    if (s == NULL || !isdigit((unsigned char) s[0]))
        return -1;
    v = strtoll(s, &end, 10);
    return *end == '\0' && v > 0 ? v : -1;
}

static const char *time_or(json_t *row, const char *field, const char *none)
{
    json_t *v = json_object_get(row, field);

    return json_is_integer(v) ? fmt_time(json_integer_value(v)) : none;
}

int cmd_token_list(const cmd_t *cmd, const args_t *a)
{
    static const char *fields[] = {
        ENVGW_F_TOKEN_ID, ENVGW_F_KIND, ENVGW_F_ENVIRONMENT_ID,
        ENVGW_F_ENVIRONMENT, ENVGW_F_TEAM_ID, ENVGW_F_ACCOUNT_ID,
        ENVGW_F_EXPIRES_AT, ENVGW_F_REVOKED, "created_at", NULL
    };
    const char *env_id = a->env;
    char **ids, **used;
    size_t n, i;
    int f;
    long long now = time(NULL), within = 0;
    json_t *out;

    if (a->expiring && !parse_duration(a->expiring, &within, false))
        usage_error(cmd, "bad --expiring '%s' (want N[s|m|h|d], e.g. 7d)",
                    a->expiring);
    load_env(env_id);

    ids = store_smembers(index_key("tokens", env_id), &n);
    sort_unique(ids, &n);
    /* the gateway's record of the last use: <prefix>last_used:<token_id> */
    used = pool_keep(calloc(n + 1, sizeof(char *)), free);
    for (i = 0; i < n; i++)
        used[i] = key_of(ENVGW_KEY_LAST_USED, ids[i]);
    used = store_mget(used, n);

    out = pjson(json_array());
    for (i = 0; i < n; i++) {
        char *idkey = key_of(ENVGW_KEY_TOKEN_ID, ids[i]);
        json_t *h = load_json(idkey), *rec, *row;
        long long exp, last;

        if (h == NULL || !json_is_string(h))
            continue;
        rec = load_json(key_of(ENVGW_KEY_TOKEN, json_string_value(h)));
        if (rec == NULL || !json_is_object(rec))
            continue;
        exp = rec_expires(rec);
        if (a->expiring && (strcmp(token_state(rec, now), "active") != 0
                            || exp <= 0 || exp > now + within))
            continue;
        /* copy known fields only: never the hash, never anything else */
        row = pjson(json_object());
        for (f = 0; fields[f]; f++) {
            json_t *v = json_object_get(rec, fields[f]);
            json_object_set(row, fields[f], v ? v : json_null());
        }
        last = unix_seconds(used[i]);
        if (used[i] != NULL && last < 0)
            warnx_("key %s holds '%s', not Unix seconds: ignored",
                   key_of(ENVGW_KEY_LAST_USED, ids[i]), used[i]);
        json_object_set_new(row, "last_used_at",
                            last > 0 ? json_integer(last) : json_null());
        json_object_set_new(row, "state", json_string(token_state(rec, now)));
        json_array_append(out, row);
    }

    if (list_printed(out, "no tokens%s in environment %s",
                     a->expiring ? " expiring so soon" : "", env_id))
        return 0;
    printf("%-18s %-8s %-8s %-16s %-21s %-21s %-21s %s\n", "TOKEN_ID", "KIND",
           "STATE", "ENVIRONMENT", "EXPIRES", "LAST_USED", "CREATED",
           "ACCOUNT");
    for (i = 0; i < json_array_size(out); i++) {
        json_t *row = json_array_get(out, i);
        const char *acc = jstr(row, ENVGW_F_ACCOUNT_ID);
        const char *envname = jstr(row, ENVGW_F_ENVIRONMENT);
        printf("%-18s %-8s %-8s %-16s %-21s %-21s %-21s %s\n",
               jstr(row, ENVGW_F_TOKEN_ID) ? jstr(row, ENVGW_F_TOKEN_ID)
                                           : "?",
               jstr(row, ENVGW_F_KIND) ? jstr(row, ENVGW_F_KIND) : "?",
               jstr(row, "state"), envname ? envname : env_id,
               fmt_time(rec_expires(row)), time_or(row, "last_used_at", "-"),
               time_or(row, "created_at", "-"), acc ? acc : "-");
    }
    return 0;
}

int cmd_token_revoke(const cmd_t *cmd, const args_t *a)
{
    ref_t tok;
    bool already = false;
    txn_t *t;

    (void) cmd;
    tok.id = a->token;
    for (t = txn_begin(); t != NULL; t = txn_commit(t)) {
        char *tkey;

        tok.rec = load_token(a->token, &tkey);
        tok.key = tkey;
        already = !revoke_token(t, &tok);
        txn_env(t, jstr(tok.rec, ENVGW_F_ENVIRONMENT_ID));
    }
    if (g_opt.json) {
        json_t *out = pjson(json_object());
        json_object_set_new(out, ENVGW_F_TOKEN_ID, json_string(a->token));
        json_object_set_new(out, ENVGW_F_REVOKED, json_true());
        json_object_set_new(out, "already_revoked", json_boolean(already));
        print_json(out);
    } else if (already) {
        printf("token %s was already revoked\n", a->token);
    } else {
        printf("revoked %s\n", a->token);
    }
    return 0;
}

int cmd_token_rotate(const cmd_t *cmd, const args_t *a)
{
    const char *token_id = a->token;
    long long grace = 0, ttl = 0, now, old_exp, new_old_exp = 0;
    char *tkey;
    minted_t m;
    json_t *extra;
    txn_t *t;

    if (a->grace == NULL)
        usage_error(cmd, "--grace is required (e.g. --grace 1h; --grace 0 "
                    "ends the old token now)");
    if (!parse_duration(a->grace, &grace, true))
        usage_error(cmd, "bad --grace '%s' (want N[s|m|h|d], e.g. 1h)",
                    a->grace);
    if (a->ttl && !parse_duration(a->ttl, &ttl, false))
        usage_error(cmd, "bad --ttl '%s' (want N[s|m|h|d], e.g. 30d)",
                    a->ttl);

    for (t = txn_begin(); t != NULL; t = txn_commit(t)) {
        json_t *old, *env, *created;
        const char *env_id, *kind, *account;
        long long new_ttl = ttl;

        old = load_token(token_id, &tkey);
        now = time(NULL);
        if (strcmp(token_state(old, now), "active") != 0)
            die("token '%s' is %s; create a new one with 'envgw token "
                "create'", token_id, token_state(old, now));
        env_id = jstr(old, ENVGW_F_ENVIRONMENT_ID);
        kind = jstr(old, ENVGW_F_KIND);
        if (kind == NULL || check_kind(kind) == NULL)
            die("malformed record at key %s (bad \"kind\")", tkey);
        account = jstr(old, ENVGW_F_ACCOUNT_ID);
        store_watch(key_of(ENVGW_KEY_ENV, env_id));
        env = load_env(env_id);
        if (strcmp(kind, ENVGW_KIND_ACCOUNT) == 0) {
            if (account == NULL)
                die("malformed record at key %s (account token without %s)",
                    tkey, ENVGW_F_ACCOUNT_ID);
            check_account_for_token(env_id, account);
        } else {
            account = NULL;
        }

        /* default lifetime: as long as the old token's, if known */
        old_exp = rec_expires(old);
        created = json_object_get(old, "created_at");
        if (a->ttl == NULL) {
            if (old_exp > 0 && json_is_integer(created)
                && old_exp > json_integer_value(created))
                new_ttl = old_exp - json_integer_value(created);
            else if (account)
                new_ttl = ACCOUNT_TOKEN_DEFAULT_TTL;
            /* else: the old lifetime is unknown (no created_at), so the
             * new token gets none; --ttl sets one */
        }

        /* the replacement keeps the token's own rate limit */
        m = mint(t, env_id, env, kind, account,
                 new_ttl > 0 ? now + new_ttl : 0,
                 json_object_get(old, ENVGW_F_RATE_LIMIT));

        new_old_exp = now + grace;
        if (old_exp > 0 && old_exp < new_old_exp)
            new_old_exp = old_exp;
        old = json_deep_copy_p(old);
        json_object_set_new(old, ENVGW_F_EXPIRES_AT,
                            json_integer(new_old_exp));
        json_object_set_new(old, "rotated_to", json_string(m.token_id));
        txn_set_json(t, tkey, old);
        txn_env(t, env_id);
    }

    extra = pjson(json_object());
    json_object_set_new(extra, "replaces", json_string(token_id));
    json_object_set_new(extra, "old_expires_at", json_integer(new_old_exp));
    print_minted(&m, extra);
    if (!g_opt.json)
        printf("old token %s expires: %s\n", token_id,
               fmt_time(new_old_exp));
    return 0;
}
