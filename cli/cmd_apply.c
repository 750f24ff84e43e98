/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * envgw export, apply
 *
 * An environment as one JSON document, for git and review:
 *
 *   {"envgw_export": 1,
 *    "environment":  {"environment_id": .., "team_id": .., "name": ..},
 *    "integrations": {"<name>": <integration record: upstream, resources,
 *                                auth declarations, ...>},
 *    "accounts":     {"<id>": {"integration": .., "tenant_id": ..,
 *                              "status": ..}},
 *    "tenants":      {"<tenant_id>": {"<integration>": "<account id>"}}}
 *
 * never a token or a credential.  export prints it with sorted keys, so
 * two exports diff line by line; apply makes an environment what it says,
 * like a declarative sync: creates and changes, and removes (records,
 * methods, fields) only with --prune.  The whole plan is written in one
 * WATCH/MULTI/EXEC, every changed key published.
 *
 * apply --env ENV (ENV other than the document's environment) is the
 * whole-environment promote: only the integrations are applied, and an
 * integration ENV already has keeps its own upstream, as 'envgw promote'
 * does.  Accounts and tenants stay with their environment: account ids are
 * global, and the same tenant_id names another account in each
 * environment.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "envgw.h"

#define EXPORT_FORMAT   1
#define F_FORMAT        "envgw_export"
#define S_ENVIRONMENT   "environment"
#define S_INTEGRATIONS  "integrations"
#define S_ACCOUNTS      "accounts"
#define S_TENANTS       "tenants"

/* ---- export ------------------------------------------------------------- */

static json_t *export_doc(const char *env_id)
{
    json_t *doc = pjson(json_object());
    json_t *integs = json_object(), *accs = json_object();
    json_t *tens = json_object();
    char **names;
    ref_t *accounts;
    size_t n, i;

    json_object_set_new(doc, F_FORMAT, json_integer(EXPORT_FORMAT));
    json_object_set(doc, S_ENVIRONMENT, load_env(env_id));
    json_object_set_new(doc, S_INTEGRATIONS, integs);
    json_object_set_new(doc, S_ACCOUNTS, accs);
    json_object_set_new(doc, S_TENANTS, tens);

    names = integration_names(env_id, &n);
    for (i = 0; i < n; i++) {
        json_t *rec = load_integration(env_id, names[i]);
        if (rec != NULL)
            json_object_set(integs, names[i], rec);
    }

    /* an account's id and environment are the document's keys */
    accounts = env_accounts(env_id, &n);
    for (i = 0; i < n; i++) {
        json_t *fields = json_deep_copy(accounts[i].rec);
        json_object_del(fields, ENVGW_F_ACCOUNT_ID);
        json_object_del(fields, ENVGW_F_ENVIRONMENT_ID);
        json_object_set_new(accs, accounts[i].id, fields);
    }

    names = store_scan(ENVGW_KEY_TENANT, pfmt("%s:", env_id), &n);
    for (i = 0; i < n; i++) {
        char *key = key2_of(ENVGW_KEY_TENANT, env_id, names[i]);
        json_t *rec = load_json(key);
        if (rec == NULL)
            continue;
        if (!json_is_object(rec))
            die("malformed record at key %s (not a JSON object); fix or "
                "delete it first", key);
        json_object_set(tens, names[i], rec);
    }
    return doc;
}

int cmd_export(const cmd_t *cmd, const args_t *a)
{
    char *s;

    (void) cmd;
    s = json_dumps(export_doc(a->env), JSON_INDENT(2) | JSON_SORT_KEYS);
    if (s == NULL)
        die("cannot encode the document of %s", a->env);
    puts(s);
    free(s);
    return 0;
}

/* ---- reading and checking a document ------------------------------------ */

static const char *check_integrations(json_t *integs)
{
    const char *name, *why;
    json_t *rec, *res;

    json_object_foreach(integs, name, rec) {
        const char *up = jstr(rec, ENVGW_F_UPSTREAM);

        if (!valid_name(name))
            return pfmt("bad integration name \"%s\"", name);
        if (!json_is_object(rec))
            return pfmt("integration \"%s\" must be an object", name);
        if (up == NULL)
            return pfmt("integration \"%s\" has no string \"upstream\"",
                        name);
        if ((why = check_upstream(up)) != NULL)
            return pfmt("integration \"%s\": upstream \"%s\" %s", name, up,
                        why);
        res = json_object_get(rec, ENVGW_F_RESOURCES);
        if (res == NULL)
            continue;
        normalize_verbs(res);
        if ((why = check_resources(res)) != NULL)
            return pfmt("integration \"%s\": %s", name, why);
    }
    return NULL;
}

/* A field of an account that the document may repeat, but only right. */
static bool field_is(json_t *rec, const char *field, const char *want)
{
    json_t *v = json_object_get(rec, field);

    return v == NULL
           || (json_is_string(v) && strcmp(json_string_value(v), want) == 0);
}

static const char *check_accounts(json_t *accs, const char *env_id,
                                  json_t *tens)
{
    const char *id, *ig, *tn, *st;
    json_t *rec, *entry;

    json_object_foreach(accs, id, rec) {
        if (!valid_id(id))
            return pfmt("bad account id \"%s\"", id);
        if (!json_is_object(rec))
            return pfmt("account \"%s\" must be an object", id);
        ig = jstr(rec, ENVGW_F_INTEGRATION);
        tn = jstr(rec, ENVGW_F_TENANT_ID);
        st = jstr(rec, ENVGW_F_STATUS);
        if (ig == NULL || !valid_name(ig))
            return pfmt("account \"%s\" needs an \"integration\" name", id);
        if (tn == NULL || !valid_tenant(tn))
            return pfmt("account \"%s\" needs a \"tenant_id\"", id);
        if (json_object_get(rec, ENVGW_F_STATUS) && (st == NULL || !*st))
            return pfmt("account \"%s\": \"status\" must be a string", id);
        if (!field_is(rec, ENVGW_F_ACCOUNT_ID, id)
            || !field_is(rec, ENVGW_F_ENVIRONMENT_ID, env_id))
            return pfmt("account \"%s\" names another id or environment",
                        id);
        entry = json_object_get(json_object_get(tens, tn), ig);
        if (!json_is_string(entry) || strcmp(json_string_value(entry), id))
            return pfmt("account \"%s\" is not the %s account of tenant "
                        "\"%s\" in \"tenants\"", id, ig, tn);
    }
    return NULL;
}

static const char *check_tenants(json_t *tens, json_t *accs)
{
    const char *tn, *ig;
    json_t *rec, *acc, *v;

    json_object_foreach(tens, tn, rec) {
        if (!valid_tenant(tn))
            return pfmt("bad tenant id \"%s\"", tn);
        if (!json_is_object(rec))
            return pfmt("tenant \"%s\" must be an object of integration: "
                        "account id", tn);
        json_object_foreach(rec, ig, v) {
            const char *id = json_string_value(v);

            if (!valid_name(ig) || id == NULL || !valid_id(id))
                return pfmt("tenant \"%s\": bad entry \"%s\"", tn, ig);
            acc = json_object_get(accs, id);
            if (acc == NULL || !field_is(acc, ENVGW_F_INTEGRATION, ig)
                || !field_is(acc, ENVGW_F_TENANT_ID, tn))
                return pfmt("tenant \"%s\": %s names account \"%s\", which "
                            "is not a %s account of that tenant in "
                            "\"accounts\"", tn, ig, id, ig);
        }
    }
    return NULL;
}

/* NULL if doc is a document apply can write, else why not. */
static const char *check_doc(json_t *doc)
{
    static const char *sections[] = {
        F_FORMAT, S_ENVIRONMENT, S_INTEGRATIONS, S_ACCOUNTS, S_TENANTS, NULL
    };
    const char *k, *env_id, *team, *why;
    json_t *v, *env;
    int i;

    if (!json_is_object(doc))
        return "not a JSON object (want an 'envgw export' document)";
    json_object_foreach(doc, k, v) {
        for (i = 0; sections[i] && strcmp(sections[i], k) != 0; i++)
            /* void */ ;
        if (sections[i] == NULL)
            return pfmt("unknown section \"%s\"", k);
        if (i > 1 && !json_is_object(v))
            return pfmt("\"%s\" must be an object", k);
    }
    v = json_object_get(doc, F_FORMAT);
    if (!json_is_integer(v) || json_integer_value(v) != EXPORT_FORMAT)
        return "\"" F_FORMAT "\" must be 1 (want an 'envgw export' document)";
    env = json_object_get(doc, S_ENVIRONMENT);
    env_id = jstr(env, ENVGW_F_ENVIRONMENT_ID);
    team = jstr(env, ENVGW_F_TEAM_ID);
    if (!json_is_object(env) || env_id == NULL || !valid_id(env_id))
        return "\"environment\" needs an \"environment_id\"";
    if (team == NULL || !valid_id(team))
        return "\"environment\" needs a \"team_id\"";
    if (json_object_get(env, ENVGW_F_NAME)
        && (jstr(env, ENVGW_F_NAME) == NULL
            || !valid_env_name(jstr(env, ENVGW_F_NAME))))
        return "\"environment\": bad \"name\"";
    if ((why = check_integrations(json_object_get(doc, S_INTEGRATIONS))))
        return why;
    if ((why = check_accounts(json_object_get(doc, S_ACCOUNTS), env_id,
                              json_object_get(doc, S_TENANTS))))
        return why;
    return check_tenants(json_object_get(doc, S_TENANTS),
                         json_object_get(doc, S_ACCOUNTS));
}

static json_t *read_doc(const cmd_t *cmd, const char *file)
{
    json_t *doc = load_json_file(cmd, file, "document");
    const char *why;

    if ((why = check_doc(doc)) != NULL)
        usage_error(cmd, "%s: %s", file, why);
    return doc;
}

/* ---- the plan ----------------------------------------------------------- */

typedef struct {
    json_t     *doc;
    const char *env_id;         /* where it goes */
    bool        retarget;       /* not the document's own environment */
    bool        prune;
    txn_t      *t;
    json_t     *plan;           /* the changes, in order */
} apply_t;

static json_t *obj_or_null(json_t *j)
{
    return json_is_object(j) ? j : NULL;
}

/* The sorted union of the keys of two objects (either may be NULL). */
static char **both_keys(json_t *a, json_t *b, size_t *n)
{
    size_t na, nb;
    char **ka = sorted_keys(a, &na), **kb = sorted_keys(b, &nb);

    return str_union(ka, na, kb, nb, n);
}

/*
 * What key must hold: the document's record want over the current cur.
 * With prune (or nothing current) exactly want; without, fields of cur
 * that want lacks stay, and so do methods of an integration's resources.
 */
static json_t *merged(json_t *cur, json_t *want, bool prune, bool methods)
{
    json_t *fin, *res, *v, *defs, *def;
    const char *k, *r, *m;

    if (prune || cur == NULL)
        return json_deep_copy_p(want);
    fin = json_deep_copy_p(cur);
    json_object_foreach(want, k, v) {
        res = json_object_get(fin, k);
        if (!methods || strcmp(k, ENVGW_F_RESOURCES) != 0
            || !json_is_object(res)) {
            json_object_set_new(fin, k, json_deep_copy(v));
            continue;
        }
        json_object_foreach(v, r, defs) {
            json_t *have = json_object_get(res, r);

            if (!json_is_object(have)) {
                json_object_set_new(res, r, json_deep_copy(defs));
                continue;
            }
            json_object_foreach(defs, m, def) {
                json_object_set_new(have, m, json_deep_copy(def));
            }
        }
    }
    return fin;
}

/* One line of a change: {"op", "field"|"method": name, "old", "new"}. */
static void detail(json_t *details, const char *kind, const char *name,
                   json_t *old, json_t *new)
{
    json_t *d;

    if (old && new && json_equal(old, new))
        return;
    d = json_pack("{s:s, s:s}", "op", old == NULL ? "+" : new == NULL ? "-"
                                                                       : "~",
                  kind, name);
    if (old)
        json_object_set(d, "old", old);
    if (new)
        json_object_set(d, "new", new);
    json_array_append_new(details, d);
}

static json_t *method_def(json_t *res, const char *r, const char *m)
{
    return json_object_get(json_object_get(res, r), m);
}

/* Changes of an integration's resources, method by method. */
static void method_details(json_t *details, json_t *old, json_t *new)
{
    size_t nr, nm, i, j, before = json_array_size(details);
    char **rs = both_keys(obj_or_null(old), obj_or_null(new), &nr);

    for (i = 0; i < nr; i++) {
        char **ms = both_keys(obj_or_null(json_object_get(old, rs[i])),
                              obj_or_null(json_object_get(new, rs[i])), &nm);
        for (j = 0; j < nm; j++)
            detail(details, "method", pfmt("%s.%s", rs[i], ms[j]),
                   method_def(old, rs[i], ms[j]),
                   method_def(new, rs[i], ms[j]));
    }
    /* what methods do not show: an empty resource, a malformed one */
    if (json_array_size(details) == before && old && new
        && !json_equal(old, new))
        detail(details, "field", ENVGW_F_RESOURCES, old, new);
}

static json_t *field_details(json_t *cur, json_t *fin, bool methods)
{
    json_t *details = json_array();
    size_t n, i;
    char **ks = both_keys(cur, fin, &n);

    for (i = 0; i < n; i++) {
        json_t *o = cur ? json_object_get(cur, ks[i]) : NULL;
        json_t *f = fin ? json_object_get(fin, ks[i]) : NULL;

        if (methods && strcmp(ks[i], ENVGW_F_RESOURCES) == 0)
            method_details(details, o, f);
        else
            detail(details, "field", ks[i], o, f);
    }
    return details;
}

/*
 * Plans and queues one record: key holds cur_raw (NULL: missing) and must
 * hold fin (NULL: be removed).  Returns the change, or NULL if there is
 * none.
 */
static json_t *put_record(apply_t *ap, const char *type, const char *id,
                          const char *key, json_t *cur_raw, json_t *fin,
                          bool methods)
{
    json_t *cur = obj_or_null(cur_raw), *c;

    if (fin == NULL && cur_raw == NULL)
        return NULL;
    if (fin != NULL && cur != NULL && json_equal(cur, fin))
        return NULL;
    c = json_pack("{s:s, s:s, s:s, s:s}",
                  "op", fin == NULL ? "-" : cur_raw == NULL ? "+" : "~",
                  "type", type, "id", id, "key", key);
    if (fin == NULL) {
        txn_del(ap->t, key);
    } else {
        json_object_set_new(c, "changes", field_details(cur, fin, methods));
        txn_set_json(ap->t, key, fin);
    }
    json_array_append_new(ap->plan, c);
    txn_env(ap->t, ap->env_id);
    return c;
}

static bool is_op(json_t *change, const char *op)
{
    return change != NULL && strcmp(jstr(change, "op"), op) == 0;
}

static void plan_environment(apply_t *ap)
{
    char *key = key_of(ENVGW_KEY_ENV, ap->env_id);
    json_t *cur, *want = json_object_get(ap->doc, S_ENVIRONMENT);

    store_watch(key);
    if (ap->retarget) {
        load_env(ap->env_id);       /* it must exist; it stays as it is */
        return;
    }
    cur = load_json(key);
    if (is_op(put_record(ap, "environment", ap->env_id, key, cur,
                         merged(obj_or_null(cur), want, ap->prune, false),
                         false), "+"))
        txn_sadd(ap->t, index_key("envs", NULL), ap->env_id);
}

/* An integration ENV has keeps its upstream when the document is another
 * environment's. */
static void keep_upstream(apply_t *ap, const char *name, json_t *cur,
                          json_t *fin)
{
    const char *have = jstr(cur, ENVGW_F_UPSTREAM);
    const char *doc = jstr(fin, ENVGW_F_UPSTREAM);

    if (have == NULL) {
        if (txn_attempt(ap->t) == 0)
            warnx_("%s has no integration '%s': creating it with the "
                   "document's upstream %s", ap->env_id, name, doc);
        return;
    }
    if (strcmp(have, doc) != 0 && txn_attempt(ap->t) == 0)
        note("%s keeps its upstream %s of %s (the document's: %s)",
             ap->env_id, have, name, doc);
    json_object_set_new(fin, ENVGW_F_UPSTREAM, json_string(have));
}

static void plan_integrations(apply_t *ap)
{
    json_t *want = json_object_get(ap->doc, S_INTEGRATIONS);
    char *idx = index_key("integrations", ap->env_id), **have, **names;
    size_t nh, n, i, nd;
    char **doc_names = sorted_keys(want, &nd);

    store_watch(idx);
    have = integration_names(ap->env_id, &nh);
    names = str_union(have, nh, doc_names, nd, &n);

    for (i = 0; i < n; i++) {
        char *key = key2_of(ENVGW_KEY_INTEGRATION, ap->env_id, names[i]);
        json_t *w = json_object_get(want, names[i]), *cur, *fin, *c;

        store_watch(key);
        cur = load_json(key);
        if (w == NULL) {
            if (ap->prune
                && is_op(put_record(ap, "integration", names[i], key, cur,
                                    NULL, true), "-"))
                txn_srem(ap->t, idx, names[i]);
            continue;
        }
        fin = merged(obj_or_null(cur), w, ap->prune, true);
        if (ap->retarget)
            keep_upstream(ap, names[i], obj_or_null(cur), fin);
        c = put_record(ap, "integration", names[i], key, cur, fin, true);
        if (is_op(c, "+"))
            txn_sadd(ap->t, idx, names[i]);
    }
}

static void plan_accounts(apply_t *ap)
{
    json_t *want = json_object_get(ap->doc, S_ACCOUNTS);
    char *idx = index_key("accounts", ap->env_id), **ids;
    ref_t *have, *tokens = NULL;
    size_t nh, n, ntok = 0, i;

    store_watch(idx);
    have = env_accounts(ap->env_id, &nh);
    ids = sorted_keys(want, &n);
    for (i = 0; i < n; i++) {
        char *key = key_of(ENVGW_KEY_ACCOUNT, ids[i]);
        json_t *cur, *w;
        const char *e;

        store_watch(key);
        cur = load_json(key);
        if (cur != NULL && !json_is_object(cur))
            die("malformed record at key %s (not a JSON object); fix or "
                "delete it first", key);
        e = jstr(cur, ENVGW_F_ENVIRONMENT_ID);
        if (cur != NULL && (e == NULL || strcmp(e, ap->env_id) != 0))
            die("integrated account '%s' belongs to environment '%s', not "
                "%s (account ids are global)", ids[i], e ? e : "(none)",
                ap->env_id);
        w = json_deep_copy_p(json_object_get(want, ids[i]));
        json_object_set_new(w, ENVGW_F_ACCOUNT_ID, json_string(ids[i]));
        json_object_set_new(w, ENVGW_F_ENVIRONMENT_ID,
                            json_string(ap->env_id));
        if (is_op(put_record(ap, "account", ids[i], key, cur,
                             merged(cur, w, ap->prune, false), false), "+"))
            txn_sadd(ap->t, idx, ids[i]);
    }
    if (!ap->prune)
        return;
    for (i = 0; i < nh; i++) {
        json_t *c;

        if (json_object_get(want, have[i].id) != NULL)
            continue;
        if (tokens == NULL)
            tokens = env_tokens(ap->env_id, &ntok);
        c = put_record(ap, "account", have[i].id, have[i].key, have[i].rec,
                       NULL, false);
        txn_srem(ap->t, idx, have[i].id);
        json_object_set_new(c, "revoked_tokens",
                            json_integer(revoke_account_tokens(
                                ap->t, tokens, ntok, have[i].id)));
    }
}

static void plan_tenants(apply_t *ap)
{
    json_t *want = json_object_get(ap->doc, S_TENANTS);
    size_t nh, nd, n, i;
    char **have = store_scan(ENVGW_KEY_TENANT, pfmt("%s:", ap->env_id), &nh);
    char **doc_names = sorted_keys(want, &nd);
    char **names = str_union(have, nh, doc_names, nd, &n);

    for (i = 0; i < n; i++) {
        char *key = key2_of(ENVGW_KEY_TENANT, ap->env_id, names[i]);
        json_t *w = json_object_get(want, names[i]), *cur;

        store_watch(key);
        cur = load_json(key);
        if (w == NULL && !ap->prune)
            continue;
        put_record(ap, "tenant", names[i], key, cur,
                   w ? merged(obj_or_null(cur), w, ap->prune, false) : NULL,
                   false);
    }
}

/* ---- printing the plan -------------------------------------------------- */

static const char *show(json_t *v, bool method)
{
    char *s;

    if (method && jstr(v, ENVGW_F_METHOD) && jstr(v, ENVGW_F_PATH))
        return pfmt("%s %s", jstr(v, ENVGW_F_METHOD), jstr(v, ENVGW_F_PATH));
    s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY | JSON_SORT_KEYS);
    if (s == NULL)
        die("out of memory");
    return pool_keep(s, free);
}

static void print_plan(json_t *plan)
{
    size_t i, j;

    for (i = 0; i < json_array_size(plan); i++) {
        json_t *c = json_array_get(plan, i);
        json_t *details = json_object_get(c, "changes");
        json_t *rev = json_object_get(c, "revoked_tokens");

        printf("%s %s %s", jstr(c, "op"), jstr(c, "type"), jstr(c, "id"));
        if (json_integer_value(rev) > 0)
            printf(" (and revoke %" JSON_INTEGER_FORMAT " account token%s)",
                   json_integer_value(rev),
                   json_integer_value(rev) == 1 ? "" : "s");
        printf("\n");
        for (j = 0; j < json_array_size(details); j++) {
            json_t *d = json_array_get(details, j);
            const char *op = jstr(d, "op");
            bool m = jstr(d, "method") != NULL;
            const char *name = m ? jstr(d, "method") : jstr(d, "field");
            json_t *o = json_object_get(d, "old");
            json_t *n = json_object_get(d, "new");

            if (strcmp(op, "~") == 0)
                printf("    ~ %s: %s -> %s\n", name, show(o, m), show(n, m));
            else
                printf("    %s %s: %s\n", op, name, show(n ? n : o, m));
        }
    }
}

static size_t count_op(json_t *plan, const char *op)
{
    size_t i, n = 0;

    for (i = 0; i < json_array_size(plan); i++)
        n += is_op(json_array_get(plan, i), op);
    return n;
}

/* ---- apply -------------------------------------------------------------- */

int cmd_apply(const cmd_t *cmd, const args_t *a)
{
    apply_t ap;
    const char *doc_env;
    bool dry = a->dry_run != NULL;
    size_t nacc, nten;

    memset(&ap, 0, sizeof(ap));
    ap.doc = read_doc(cmd, a->file);
    doc_env = jstr(json_object_get(ap.doc, S_ENVIRONMENT),
                   ENVGW_F_ENVIRONMENT_ID);
    ap.env_id = a->env ? a->env : doc_env;
    ap.retarget = strcmp(ap.env_id, doc_env) != 0;
    ap.prune = a->prune != NULL;
    nacc = json_object_size(json_object_get(ap.doc, S_ACCOUNTS));
    nten = json_object_size(json_object_get(ap.doc, S_TENANTS));
    if (ap.retarget && nacc + nten > 0)
        note("the document's accounts and tenants stay in %s: applying its "
             "integrations to %s", doc_env, ap.env_id);

    for (ap.t = txn_begin(); ap.t != NULL; ap.t = txn_commit(ap.t)) {
        ap.plan = pjson(json_array());
        plan_environment(&ap);
        plan_integrations(&ap);
        if (!ap.retarget) {
            plan_accounts(&ap);
            plan_tenants(&ap);
        }
        if (dry)
            txn_discard(ap.t);
    }

    if (g_opt.json) {
        json_t *out = pjson(json_object());
        json_object_set_new(out, ENVGW_F_ENVIRONMENT_ID,
                            json_string(ap.env_id));
        json_object_set_new(out, "document", json_string(doc_env));
        json_object_set_new(out, "dry_run", json_boolean(dry));
        json_object_set_new(out, "applied",
                            json_boolean(!dry
                                         && json_array_size(ap.plan) > 0));
        json_object_set(out, "changes", ap.plan);
        print_json(out);
        return 0;
    }
    if (json_array_size(ap.plan) == 0) {
        note("%s already matches %s: nothing to do", ap.env_id, a->file);
        return 0;
    }
    print_plan(ap.plan);
    printf("%s %zu to create, %zu to change, %zu to remove in %s\n",
           dry ? "plan:" : "applied:", count_op(ap.plan, "+"),
           count_op(ap.plan, "~"), count_op(ap.plan, "-"), ap.env_id);
    if (dry)
        note("dry run: nothing written");
    return 0;
}
