/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * envgw env create|list
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "envgw.h"

int cmd_env_create(const cmd_t *cmd, const args_t *a)
{
    const char *env_id;
    json_t *rec;
    char *key;
    txn_t *t;

    (void) cmd;
    env_id = a->env ? a->env : pfmt("env_%s", random_hex(8));
    key = key_of(ENVGW_KEY_ENV, env_id);
    rec = pjson(json_object());
    json_object_set_new(rec, ENVGW_F_ENVIRONMENT_ID, json_string(env_id));
    json_object_set_new(rec, ENVGW_F_TEAM_ID, json_string(a->team));
    json_object_set_new(rec, ENVGW_F_NAME, json_string(a->name));

    for (t = txn_begin(); t != NULL; t = txn_commit(t)) {
        store_watch(key);
        if (store_get(key) != NULL)
            die("environment '%s' already exists", env_id);
        txn_set_json(t, key, rec);
        txn_sadd(t, index_key("envs", NULL), env_id);
        txn_env(t, env_id);
    }

    if (g_opt.json)
        print_json(rec);
    else
        printf("%s\n", env_id);
    return 0;
}

int cmd_env_list(const cmd_t *cmd, const args_t *a)
{
    const char *team = a->team;
    char **idx, **scan, **all;
    size_t ni, ns, n, i;
    json_t *out;

    (void) cmd;

    /* the index, plus records written by hand */
    idx = store_smembers(index_key("envs", NULL), &ni);
    scan = store_scan(ENVGW_KEY_ENV, "", &ns);
    all = str_union(idx, ni, scan, ns, &n);

    out = pjson(json_array());
    for (i = 0; i < n; i++) {
        char *key = key_of(ENVGW_KEY_ENV, all[i]);
        json_t *rec = load_json(key);
        const char *t;

        if (rec == NULL || !json_is_object(rec))
            continue;                   /* a stale index entry */
        t = jstr(rec, ENVGW_F_TEAM_ID);
        if (team && (t == NULL || strcmp(t, team) != 0))
            continue;
        json_array_append(out, rec);
    }

    if (list_printed(out, "no environments%s%s", team ? " in team " : "",
                     team ? team : ""))
        return 0;
    printf("%-24s %-20s %s\n", "ENVIRONMENT_ID", "TEAM_ID", "NAME");
    for (i = 0; i < json_array_size(out); i++) {
        json_t *rec = json_array_get(out, i);
        const char *id = jstr(rec, ENVGW_F_ENVIRONMENT_ID);
        const char *t = jstr(rec, ENVGW_F_TEAM_ID);
        const char *nm = jstr(rec, ENVGW_F_NAME);
        printf("%-24s %-20s %s\n", id ? id : "?", t ? t : "?",
               nm ? nm : "?");
    }
    return 0;
}

/* "2 integrations" */
static const char *count(size_t n, const char *what)
{
    return pfmt("%zu %s%s", n, what, n == 1 ? "" : "s");
}

int cmd_env_delete(const cmd_t *cmd, const args_t *a)
{
    const char *env_id = a->env;
    char *key = key_of(ENVGW_KEY_ENV, env_id);
    size_t ni = 0, na = 0, nt = 0, ntok = 0, live = 0, revoked = 0, i;
    txn_t *t;

    (void) cmd;
    for (t = txn_begin(); t != NULL; t = txn_commit(t)) {
        char **integs, **tenants;
        ref_t *accounts, *tokens;

        store_watch(key);
        if (store_get(key) == NULL)
            die("unknown environment '%s' (no key %s; see 'envgw env list')",
                env_id, key);
        integs = integration_names(env_id, &ni);
        tenants = store_scan(ENVGW_KEY_TENANT, pfmt("%s:", env_id), &nt);
        accounts = env_accounts(env_id, &na);
        tokens = env_tokens(env_id, &ntok);
        for (i = 0, live = 0; i < ntok; i++)
            live += !json_is_true(json_object_get(tokens[i].rec,
                                                  ENVGW_F_REVOKED));
        for (i = 0; i < ni; i++)
            integs[i] = key2_of(ENVGW_KEY_INTEGRATION, env_id, integs[i]);
        for (i = 0; i < nt; i++)
            tenants[i] = key2_of(ENVGW_KEY_TENANT, env_id, tenants[i]);
        store_watch_keys(integs, ni);
        store_watch_keys(tenants, nt);

        if (a->force == NULL && ni + na + nt + live > 0)
            die("environment '%s' is not empty (%s, %s, %s, %s); "
                "--force deletes it with all of them, revoking its tokens",
                env_id, count(ni, "integration"),
                count(na, "integrated account"), count(nt, "tenant"),
                count(live, "unrevoked token"));

        /* tokens first: whatever happens next, none of them works */
        for (i = 0, revoked = 0; i < ntok; i++)
            revoked += revoke_token(t, &tokens[i]);
        for (i = 0; i < ni; i++)
            txn_del(t, integs[i]);
        for (i = 0; i < na; i++)
            txn_del(t, accounts[i].key);
        for (i = 0; i < nt; i++)
            txn_del(t, tenants[i]);
        txn_del(t, index_key("integrations", env_id));
        txn_del(t, index_key("accounts", env_id));
        txn_del(t, index_key("tokens", env_id));
        txn_srem(t, index_key("envs", NULL), env_id);
        txn_del(t, key);
        txn_env(t, env_id);
    }

    if (g_opt.json) {
        print_json(pjson(json_pack("{s:s, s:b, s:I, s:I, s:I, s:I}",
                                   ENVGW_F_ENVIRONMENT_ID, env_id,
                                   "deleted", 1,
                                   "revoked_tokens", (json_int_t) revoked,
                                   "integrations", (json_int_t) ni,
                                   "accounts", (json_int_t) na,
                                   "tenants", (json_int_t) nt)));
    } else {
        printf("deleted environment %s", env_id);
        if (ni + na + nt + revoked > 0)
            printf(": revoked %s; removed %s, %s, %s",
                   count(revoked, "token"), count(ni, "integration"),
                   count(na, "integrated account"), count(nt, "tenant"));
        printf("\n");
    }
    return 0;
}
