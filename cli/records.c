/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * envgw: the JSON records of the schema — loading, checking, listing.
 */

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "envgw.h"

/* Pooled JSON of s (any value), or NULL if s is NULL or not JSON. */
json_t *parse_json(const char *s)
{
    json_t *j = s ? json_loads(s, JSON_DECODE_ANY, NULL) : NULL;

    return j ? pjson(j) : NULL;
}

json_t *load_json_file(const cmd_t *cmd, const char *file,
                       const char *what)
{
    json_error_t err;
    json_t *j;

    if (strcmp(file, "-") == 0)
        j = json_loadf(stdin, 0, &err);
    else
        j = json_load_file(file, 0, &err);
    if (j == NULL) {
        if (err.line < 0 || err.position == 0)
            usage_error(cmd, "cannot read %s %s: %s", what, file, err.text);
        usage_error(cmd, "%s %s is not valid JSON (line %d): %s", what, file,
                    err.line, err.text);
    }
    return pjson(j);
}

json_t *load_json(const char *key)
{
    const char *s = store_get(key);
    json_error_t err;
    json_t *j;

    if (s == NULL)
        return NULL;
    j = json_loads(s, JSON_DECODE_ANY, &err);
    if (j == NULL)
        die("malformed record at key %s (not JSON: %s); fix or delete it "
            "first", key, err.text);
    return pjson(j);
}

static json_t *load_object(const char *key)
{
    json_t *j = load_json(key);

    if (j != NULL && !json_is_object(j))
        die("malformed record at key %s (not a JSON object); fix or delete "
            "it first", key);
    return j;
}

const char *jstr(json_t *obj, const char *field)
{
    json_t *v = json_object_get(obj, field);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

const char *jstr_req(json_t *obj, const char *field, const char *key)
{
    const char *s = jstr(obj, field);

    if (s == NULL)
        die("malformed record at key %s (no string field \"%s\"); fix or "
            "delete it first", key, field);
    return s;
}

json_t *load_env(const char *env_id)
{
    char *key = key_of(ENVGW_KEY_ENV, env_id);
    json_t *env = load_object(key);

    if (env == NULL)
        die("unknown environment '%s' (no key %s; see 'envgw env list')",
            env_id, key);
    jstr_req(env, ENVGW_F_TEAM_ID, key);
    return env;
}

/* NULL if absent; dies if present but not a usable integration record. */
json_t *load_integration(const char *env_id, const char *name)
{
    char *key = key2_of(ENVGW_KEY_INTEGRATION, env_id, name);
    json_t *rec = load_object(key);
    json_t *res;
    const char *why;

    if (rec == NULL)
        return NULL;
    jstr_req(rec, ENVGW_F_UPSTREAM, key);
    res = json_object_get(rec, ENVGW_F_RESOURCES);
    if (res != NULL && (why = check_resources(res)) != NULL)
        die("malformed record at key %s: %s; fix it with 'envgw "
            "integration set' first", key, why);
    return rec;
}

const char *check_resources(json_t *resources)
{
    const char *rname, *mname;
    json_t *methods, *def;

    if (!json_is_object(resources))
        return "\"resources\" must be a JSON object of "
               "{resource: {method: {\"method\": VERB, \"path\": PATH}}}";
    json_object_foreach(resources, rname, methods) {
        if (!valid_name(rname))
            return pfmt("bad resource name \"%s\" (want [A-Za-z0-9_-], 1-64 "
                        "characters)", rname);
        if (!json_is_object(methods))
            return pfmt("resource \"%s\" must be an object of methods",
                        rname);
        json_object_foreach(methods, mname, def) {
            const char *verb, *path, *why;
            json_t *k;
            const char *kname;

            if (!valid_name(mname))
                return pfmt("bad method name \"%s.%s\" (want [A-Za-z0-9_-], "
                            "1-64 characters)", rname, mname);
            if (!json_is_object(def))
                return pfmt("method \"%s.%s\" must be an object with "
                            "\"method\" and \"path\"", rname, mname);
            verb = jstr(def, ENVGW_F_METHOD);
            path = jstr(def, ENVGW_F_PATH);
            if (verb == NULL)
                return pfmt("method \"%s.%s\" has no string \"method\"",
                            rname, mname);
            if (normalize_http_method(verb) == NULL
                || strcmp(normalize_http_method(verb), verb) != 0)
                return pfmt("method \"%s.%s\": bad HTTP method \"%s\" (want "
                            "GET POST PUT PATCH DELETE HEAD OPTIONS)",
                            rname, mname, verb);
            if (path == NULL)
                return pfmt("method \"%s.%s\" has no string \"path\"",
                            rname, mname);
            if ((why = check_path(path)) != NULL)
                return pfmt("method \"%s.%s\": path \"%s\" %s", rname, mname,
                            path, why);
            json_object_foreach(def, kname, k) {
                if (strcmp(kname, ENVGW_F_METHOD) != 0
                    && strcmp(kname, ENVGW_F_PATH) != 0)
                    return pfmt("method \"%s.%s\": unknown field \"%s\"",
                                rname, mname, kname);
            }
        }
    }
    return NULL;
}

/* Uppercases valid HTTP verbs in place, so "get" in a file is accepted. */
void normalize_verbs(json_t *resources)
{
    const char *r, *m;
    json_t *methods, *def;

    if (!json_is_object(resources))
        return;
    json_object_foreach(resources, r, methods) {
        if (!json_is_object(methods))
            continue;
        json_object_foreach(methods, m, def) {
            const char *v = json_is_object(def)
                            ? jstr(def, ENVGW_F_METHOD) : NULL;
            const char *up = v ? normalize_http_method(v) : NULL;
            if (up && strcmp(up, v) != 0)
                json_object_set_new(def, ENVGW_F_METHOD, json_string(up));
        }
    }
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *) a, *(char *const *) b);
}

/* Sorts in place and drops duplicates. */
char **sort_unique(char **v, size_t *n)
{
    size_t i, o = 0;

    if (*n == 0)
        return v;
    qsort(v, *n, sizeof(char *), cmp_str);
    for (i = 0; i < *n; i++) {
        if (o == 0 || strcmp(v[o - 1], v[i]) != 0)
            v[o++] = v[i];
    }
    *n = o;
    v[o] = NULL;
    return v;
}

char **str_union(char **a, size_t na, char **b, size_t nb, size_t *n)
{
    char **all = pool_keep(calloc(na + nb + 1, sizeof(char *)), free);

    memcpy(all, a, na * sizeof(char *));
    memcpy(all + na, b, nb * sizeof(char *));
    *n = na + nb;
    return sort_unique(all, n);
}

char **sorted_keys(json_t *obj, size_t *n)
{
    size_t cnt = json_is_object(obj) ? json_object_size(obj) : 0, i = 0;
    char **v = pool_keep(calloc(cnt + 1, sizeof(char *)), free);
    const char *k;
    json_t *val;

    if (cnt > 0) {
        json_object_foreach(obj, k, val) {
            (void) val;
            v[i++] = pstrdup(k);
        }
    }
    *n = i;
    return sort_unique(v, n);
}

/* Integrations of an environment: the tool's index plus a SCAN of the
 * records themselves, so hand-written records are not missed.  Index
 * entries whose record is gone are dropped. */
char **integration_names(const char *env_id, size_t *n)
{
    size_t ni, ns, i, cnt = 0;
    char **idx = store_smembers(index_key("integrations", env_id), &ni);
    char **scan = store_scan(ENVGW_KEY_INTEGRATION, pfmt("%s:", env_id), &ns);
    char **all = pool_keep(calloc(ni + ns + 1, sizeof(char *)), free);

    for (i = 0; i < ns; i++)
        all[cnt++] = scan[i];
    for (i = 0; i < ni; i++) {
        if (store_get(key2_of(ENVGW_KEY_INTEGRATION, env_id, idx[i])))
            all[cnt++] = idx[i];
    }
    *n = cnt;
    sort_unique(all, n);
    return all;
}

json_t *json_deep_copy_p(json_t *j)
{
    return pjson(json_deep_copy(j));
}

/* ---- the records of one environment ------------------------------------- */

/*
 * WATCHes keys[0..n), then reads them; keeps the JSON objects whose
 * "environment_id" is env_id, as refs with id_field as their id.  Keys
 * that are gone, malformed or of another environment are left out: they
 * grant nothing in env_id.
 */
static ref_t *refs_of_env(char **keys, size_t n, const char *env_id,
                          const char *id_field, size_t *out_n)
{
    ref_t *refs = pool_keep(calloc(n + 1, sizeof(ref_t)), free);
    char **vals;
    size_t i, cnt = 0;

    store_watch_keys(keys, n);
    vals = store_mget(keys, n);
    for (i = 0; i < n; i++) {
        json_t *rec = parse_json(vals[i]);
        const char *e = json_is_object(rec)
                        ? jstr(rec, ENVGW_F_ENVIRONMENT_ID) : NULL;
        const char *id = e ? jstr(rec, id_field) : NULL;

        if (e == NULL || strcmp(e, env_id) != 0 || id == NULL)
            continue;
        refs[cnt].id = id;
        refs[cnt].key = keys[i];
        refs[cnt].rec = rec;
        cnt++;
    }
    *out_n = cnt;
    return refs;
}

/* "<prefix><family>" + each of rest[0..n), in place */
static char **keys_of(const char *family, char **rest, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++)
        rest[i] = key_of(family, rest[i]);
    return rest;
}

ref_t *env_tokens(const char *env_id, size_t *n)
{
    size_t ni, ns, i, cnt = 0;
    char **ids = store_smembers(index_key("tokens", env_id), &ni);
    char **scan = store_scan(ENVGW_KEY_TOKEN, "", &ns);
    char **hashes;

    /* the index holds token ids: token_id:<id> holds "<sha256hex>" */
    hashes = store_mget(keys_of(ENVGW_KEY_TOKEN_ID, ids, ni), ni);
    for (i = 0; i < ni; i++) {
        json_t *h = parse_json(hashes[i]);

        if (json_is_string(h))
            ids[cnt++] = key_of(ENVGW_KEY_TOKEN, json_string_value(h));
    }
    keys_of(ENVGW_KEY_TOKEN, scan, ns);
    ids = str_union(ids, cnt, scan, ns, &cnt);
    return refs_of_env(ids, cnt, env_id, ENVGW_F_TOKEN_ID, n);
}

ref_t *env_accounts(const char *env_id, size_t *n)
{
    size_t ni, ns;
    char **ids = store_smembers(index_key("accounts", env_id), &ni);
    char **scan = store_scan(ENVGW_KEY_ACCOUNT, "", &ns);

    keys_of(ENVGW_KEY_ACCOUNT, ids, ni);
    keys_of(ENVGW_KEY_ACCOUNT, scan, ns);
    ids = str_union(ids, ni, scan, ns, &ni);
    return refs_of_env(ids, ni, env_id, ENVGW_F_ACCOUNT_ID, n);
}

bool revoke_token(txn_t *t, const ref_t *tok)
{
    json_t *rec;

    if (json_is_true(json_object_get(tok->rec, ENVGW_F_REVOKED)))
        return false;
    rec = json_deep_copy_p(tok->rec);
    json_object_set_new(rec, ENVGW_F_REVOKED, json_true());
    json_object_set_new(rec, "revoked_at", json_integer(time(NULL)));
    txn_set_json(t, tok->key, rec);
    return true;
}

size_t revoke_account_tokens(txn_t *t, ref_t *tokens, size_t n,
                             const char *acc_id)
{
    size_t i, cnt = 0;

    for (i = 0; i < n; i++) {
        const char *kind = jstr(tokens[i].rec, ENVGW_F_KIND);
        const char *acc = jstr(tokens[i].rec, ENVGW_F_ACCOUNT_ID);

        if (kind && strcmp(kind, ENVGW_KIND_ACCOUNT) == 0 && acc
            && strcmp(acc, acc_id) == 0 && revoke_token(t, &tokens[i]))
            cnt++;
    }
    return cnt;
}
