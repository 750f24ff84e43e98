/*
 * envgw: the JSON records of the schema — loading, checking, listing.
 */

#include <stdlib.h>
#include <string.h>

#include "envgw.h"

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
