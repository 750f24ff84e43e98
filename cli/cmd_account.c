/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * envgw account add|remove|list
 *
 * An account record and its entry in the tenant index
 * (<prefix>tenant:<env>:<tenant> = {"<integration>": "<account id>"}) are
 * always written together, in one transaction, after WATCHing both.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "envgw.h"

int cmd_account_add(const cmd_t *cmd, const args_t *a)
{
    const char *env_id = a->env, *acc_id = a->account;
    const char *integ = a->integration, *tenant = a->tenant;
    char *akey, *tenkey;
    json_t *rec;
    txn_t *t;

    (void) cmd;
    akey = key_of(ENVGW_KEY_ACCOUNT, acc_id);
    tenkey = key2_of(ENVGW_KEY_TENANT, env_id, tenant);
    rec = pjson(json_object());
    json_object_set_new(rec, ENVGW_F_ACCOUNT_ID, json_string(acc_id));
    json_object_set_new(rec, ENVGW_F_ENVIRONMENT_ID, json_string(env_id));
    json_object_set_new(rec, ENVGW_F_INTEGRATION, json_string(integ));
    json_object_set_new(rec, ENVGW_F_TENANT_ID, json_string(tenant));
    json_object_set_new(rec, ENVGW_F_STATUS, json_string(ENVGW_STATUS_ACTIVE));

    for (t = txn_begin(); t != NULL; t = txn_commit(t)) {
        json_t *tenrec, *existing;

        store_watch(key_of(ENVGW_KEY_ENV, env_id));
        store_watch(akey);
        store_watch(tenkey);
        load_env(env_id);
        if (store_get(akey) != NULL)
            die("integrated account '%s' already exists (account ids are "
                "global; see 'envgw account list')", acc_id);
        tenrec = load_json(tenkey);
        if (tenrec != NULL && !json_is_object(tenrec))
            die("malformed record at key %s (not a JSON object); fix or "
                "delete it first", tenkey);
        existing = tenrec ? json_object_get(tenrec, integ) : NULL;
        if (existing != NULL)
            die("tenant '%s' already has a %s account in %s: %s", tenant,
                integ, env_id,
                json_is_string(existing) ? json_string_value(existing)
                                         : "(malformed entry)");
        if (txn_attempt(t) == 0 && load_integration(env_id, integ) == NULL)
            warnx_("integration '%s' is not installed in %s yet (see "
                   "'envgw integration set')", integ, env_id);

        tenrec = tenrec ? json_deep_copy_p(tenrec) : pjson(json_object());
        json_object_set_new(tenrec, integ, json_string(acc_id));

        txn_set_json(t, akey, rec);
        txn_set_json(t, tenkey, tenrec);
        txn_sadd(t, index_key("accounts", env_id), acc_id);
        txn_env(t, env_id);
    }

    if (g_opt.json)
        print_json(rec);
    else
        printf("added account %s (%s, tenant %s) to %s\n", acc_id, integ,
               tenant, env_id);
    return 0;
}

/* The account record of acc_id, WATCHed; dies if it is missing. */
static json_t *load_account(const char *acc_id, const char **env_id)
{
    char *akey = key_of(ENVGW_KEY_ACCOUNT, acc_id);
    json_t *rec;

    store_watch(akey);
    rec = load_json(akey);
    if (rec == NULL)
        die("no integrated account '%s'", acc_id);
    if (!json_is_object(rec))
        die("malformed record at key %s", akey);
    *env_id = jstr_req(rec, ENVGW_F_ENVIRONMENT_ID, akey);
    return rec;
}

/*
 * Queues the removal of an account record (of env_id) with its tenant
 * index entry, its index entry and the revocation of its account tokens
 * (tokens: every token of env_id, WATCHed); how many tokens it revokes.
 */
size_t queue_account_removal(txn_t *t, const char *env_id, const char *acc_id,
                             json_t *rec, ref_t *tokens, size_t ntokens)
{
    const char *integ = jstr(rec, ENVGW_F_INTEGRATION);
    const char *tenant = jstr(rec, ENVGW_F_TENANT_ID);
    json_t *tenrec, *entry;
    char *tenkey;

    txn_del(t, key_of(ENVGW_KEY_ACCOUNT, acc_id));
    txn_srem(t, index_key("accounts", env_id), acc_id);
    txn_env(t, env_id);
    if (integ != NULL && tenant != NULL) {
        /* drop our entry only if the index still points at us */
        tenkey = key2_of(ENVGW_KEY_TENANT, env_id, tenant);
        store_watch(tenkey);
        tenrec = load_json(tenkey);
        entry = json_is_object(tenrec) ? json_object_get(tenrec, integ)
                                       : NULL;
        if (json_is_string(entry)
            && strcmp(json_string_value(entry), acc_id) == 0) {
            tenrec = json_deep_copy_p(tenrec);
            json_object_del(tenrec, integ);
            if (json_object_size(tenrec) == 0)
                txn_del(t, tenkey);
            else
                txn_set_json(t, tenkey, tenrec);
        }
    }
    /* a token of a removed account must not come back with an account
     * added again under the same id */
    return revoke_account_tokens(t, tokens, ntokens, acc_id);
}

int cmd_account_remove(const cmd_t *cmd, const args_t *a)
{
    const char *acc_id = a->account, *env_id = NULL;
    size_t revoked = 0;
    txn_t *t;

    (void) cmd;
    for (t = txn_begin(); t != NULL; t = txn_commit(t)) {
        json_t *rec = load_account(acc_id, &env_id);
        size_t ntok;
        ref_t *tokens = env_tokens(env_id, &ntok);

        revoked = queue_account_removal(t, env_id, acc_id, rec, tokens, ntok);
    }

    if (g_opt.json) {
        json_t *out = pjson(json_object());
        json_object_set_new(out, ENVGW_F_ACCOUNT_ID, json_string(acc_id));
        json_object_set_new(out, ENVGW_F_ENVIRONMENT_ID, json_string(env_id));
        json_object_set_new(out, "removed", json_true());
        json_object_set_new(out, "revoked_tokens", json_integer(revoked));
        print_json(out);
    } else {
        printf("removed account %s from %s", acc_id, env_id);
        if (revoked > 0)
            printf(" (revoked %zu account token%s)", revoked,
                   revoked == 1 ? "" : "s");
        printf("\n");
    }
    return 0;
}

/* account disable|enable: the record's status, "disabled" or "active" */
static int set_status(const char *acc_id, const char *status)
{
    const char *env_id = NULL, *old = NULL;
    txn_t *t;

    for (t = txn_begin(); t != NULL; t = txn_commit(t)) {
        json_t *rec = load_account(acc_id, &env_id);

        old = jstr(rec, ENVGW_F_STATUS);
        if (old ? strcmp(old, status) == 0
                : strcmp(status, ENVGW_STATUS_ACTIVE) == 0)
            continue;
        rec = json_deep_copy_p(rec);
        json_object_set_new(rec, ENVGW_F_STATUS, json_string(status));
        txn_set_json(t, key_of(ENVGW_KEY_ACCOUNT, acc_id), rec);
        txn_env(t, env_id);
    }
    old = old ? old : ENVGW_STATUS_ACTIVE;

    if (g_opt.json) {
        print_json(pjson(json_pack("{s:s, s:s, s:s, s:b}",
                                   ENVGW_F_ACCOUNT_ID, acc_id,
                                   ENVGW_F_ENVIRONMENT_ID, env_id,
                                   ENVGW_F_STATUS, status,
                                   "changed", strcmp(old, status) != 0)));
    } else if (strcmp(old, status) == 0) {
        printf("account %s in %s is already %s\n", acc_id, env_id, status);
    } else {
        printf("account %s in %s is now %s (was %s)\n", acc_id, env_id,
               status, old);
    }
    return 0;
}

int cmd_account_disable(const cmd_t *cmd, const args_t *a)
{
    (void) cmd;
    return set_status(a->account, ENVGW_STATUS_DISABLED);
}

int cmd_account_enable(const cmd_t *cmd, const args_t *a)
{
    (void) cmd;
    return set_status(a->account, ENVGW_STATUS_ACTIVE);
}

int cmd_account_list(const cmd_t *cmd, const args_t *a)
{
    const char *env_id = a->env;
    char **ids;
    size_t n, i;
    json_t *out;

    (void) cmd;
    load_env(env_id);

    ids = store_smembers(index_key("accounts", env_id), &n);
    sort_unique(ids, &n);
    out = pjson(json_array());
    for (i = 0; i < n; i++) {
        json_t *rec = load_json(key_of(ENVGW_KEY_ACCOUNT, ids[i]));
        const char *e = json_is_object(rec)
                        ? jstr(rec, ENVGW_F_ENVIRONMENT_ID) : NULL;
        if (e == NULL || strcmp(e, env_id) != 0)
            continue;               /* stale index entry */
        json_array_append(out, rec);
    }

    if (list_printed(out, "no integrated accounts in environment %s",
                     env_id))
        return 0;
    printf("%-28s %-16s %-24s %s\n", "INTEGRATED_ACCOUNT_ID", "INTEGRATION",
           "TENANT_ID", "STATUS");
    for (i = 0; i < json_array_size(out); i++) {
        json_t *rec = json_array_get(out, i);
        const char *ig = jstr(rec, ENVGW_F_INTEGRATION);
        const char *tn = jstr(rec, ENVGW_F_TENANT_ID);
        const char *st = jstr(rec, ENVGW_F_STATUS);
        printf("%-28s %-16s %-24s %s\n", jstr(rec, ENVGW_F_ACCOUNT_ID)
               ? jstr(rec, ENVGW_F_ACCOUNT_ID) : "?", ig ? ig : "?",
               tn ? tn : "?", st ? st : "?");
    }
    return 0;
}
