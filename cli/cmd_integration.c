/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * envgw integration set|list|show, method set|remove
 *
 * An integration record holds the upstream and every resource/method of
 * one integration in one environment; method changes are read-modify-write
 * of that record under WATCH, so two concurrent edits cannot lose one.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "envgw.h"

static size_t count_methods(json_t *resources)
{
    const char *r;
    json_t *m;
    size_t n = 0;

    if (!json_is_object(resources))
        return 0;
    json_object_foreach(resources, r, m) {
        n += json_is_object(m) ? json_object_size(m) : 0;
    }
    return n;
}

/*
 * Reads a resources file: either the resources object itself or a whole
 * integration record {"upstream": ..., "resources": {...}}.
 */
static json_t *read_resources(const cmd_t *cmd, const char *file,
                              const char **upstream_out)
{
    json_t *j = load_json_file(cmd, file, "resources file"), *res = j;
    const char *why;

    if (json_is_object(j) && json_is_object(json_object_get(j,
                                                ENVGW_F_RESOURCES))) {
        const char *k;
        json_t *v;
        bool record = true;

        json_object_foreach(j, k, v) {
            if (strcmp(k, ENVGW_F_RESOURCES) != 0
                && strcmp(k, ENVGW_F_UPSTREAM) != 0)
                record = false;
        }
        if (record) {
            res = json_object_get(j, ENVGW_F_RESOURCES);
            *upstream_out = jstr(j, ENVGW_F_UPSTREAM);
        }
    }
    normalize_verbs(res);
    if ((why = check_resources(res)) != NULL)
        usage_error(cmd, "resources file %s: %s", file, why);
    return res;
}

int cmd_integration_set(const cmd_t *cmd, const args_t *a)
{
    const char *env_id = a->env, *name = a->integration;
    const char *upstream = a->upstream, *why, *file_upstream = NULL;
    json_t *resources = NULL, *rec = NULL, *auth = NULL, *oauth = NULL;
    char *key;
    bool created = false;
    txn_t *t;

    if (a->resources)
        resources = read_resources(cmd, a->resources, &file_upstream);
    if (upstream == NULL)
        upstream = file_upstream;
    if (upstream && (why = check_upstream(upstream)) != NULL)
        usage_error(cmd, "bad upstream '%s': %s", upstream, why);
    if (a->auth && strcmp(a->auth, "none") != 0) {
        auth = parse_json(a->auth);
        if (auth == NULL || (why = check_auth(auth)) != NULL)
            usage_error(cmd, "bad --auth: %s", auth ? why : "not JSON");
    }
    if (a->oauth && strcmp(a->oauth, "none") != 0) {
        oauth = parse_json(a->oauth);
        if (oauth == NULL || (why = check_oauth(oauth)) != NULL)
            usage_error(cmd, "bad --oauth: %s", oauth ? why : "not JSON");
    }
    if (upstream == NULL && resources == NULL && a->auth == NULL
        && a->oauth == NULL)
        usage_error(cmd, "nothing to set: give --upstream, --resources, "
                    "--auth and/or --oauth");

    key = key2_of(ENVGW_KEY_INTEGRATION, env_id, name);
    for (t = txn_begin(); t != NULL; t = txn_commit(t)) {
        json_t *old;

        store_watch(key_of(ENVGW_KEY_ENV, env_id));
        store_watch(key);
        load_env(env_id);
        /* an unreadable old record is replaced only when both parts are
         * given; otherwise we would silently drop half of it */
        if (upstream == NULL || resources == NULL)
            old = load_integration(env_id, name);
        else
            old = load_json(key);
        if (old == NULL && upstream == NULL)
            usage_error(cmd, "integration '%s' is new in %s: --upstream is "
                        "required", name, env_id);
        created = old == NULL;
        /* keep unknown fields of an existing record */
        rec = json_is_object(old) ? json_deep_copy_p(old)
                                  : pjson(json_object());
        if (upstream)
            json_object_set_new(rec, ENVGW_F_UPSTREAM, json_string(upstream));
        if (resources)
            json_object_set(rec, ENVGW_F_RESOURCES, resources);
        else if (json_object_get(rec, ENVGW_F_RESOURCES) == NULL)
            json_object_set_new(rec, ENVGW_F_RESOURCES, json_object());
        if (auth)
            json_object_set(rec, ENVGW_F_AUTH, auth);
        else if (a->auth)
            json_object_del(rec, ENVGW_F_AUTH);
        if (oauth)
            json_object_set(rec, ENVGW_F_OAUTH, oauth);
        else if (a->oauth)
            json_object_del(rec, ENVGW_F_OAUTH);

        txn_set_json(t, key, rec);
        txn_sadd(t, index_key("integrations", env_id), name);
        txn_env(t, env_id);
    }

    if (g_opt.json) {
        print_json(rec);
    } else {
        printf("%s integration %s in %s: upstream %s, %zu methods\n",
               created ? "installed" : "updated", name, env_id,
               jstr(rec, ENVGW_F_UPSTREAM),
               count_methods(json_object_get(rec, ENVGW_F_RESOURCES)));
    }
    return 0;
}

int cmd_integration_list(const cmd_t *cmd, const args_t *a)
{
    const char *env_id = a->env;
    char **names;
    size_t n, i;
    json_t *out;

    (void) cmd;
    load_env(env_id);
    names = integration_names(env_id, &n);

    out = pjson(json_array());
    for (i = 0; i < n; i++) {
        json_t *rec = load_json(key2_of(ENVGW_KEY_INTEGRATION, env_id,
                                        names[i]));
        json_t *row = pjson(json_object());
        json_object_set_new(row, ENVGW_F_INTEGRATION, json_string(names[i]));
        if (json_is_object(rec)) {
            json_t *up = json_object_get(rec, ENVGW_F_UPSTREAM);
            json_t *res = json_object_get(rec, ENVGW_F_RESOURCES);
            json_object_set(row, ENVGW_F_UPSTREAM, up ? up : json_null());
            json_object_set(row, ENVGW_F_RESOURCES,
                            res ? res : json_object());
        }
        json_array_append(out, row);
    }

    if (list_printed(out, "no integrations in environment %s", env_id))
        return 0;
    printf("%-20s %-8s %s\n", "INTEGRATION", "METHODS", "UPSTREAM");
    for (i = 0; i < n; i++) {
        json_t *row = json_array_get(out, i);
        const char *up = jstr(row, ENVGW_F_UPSTREAM);
        printf("%-20s %-8zu %s\n", names[i],
               count_methods(json_object_get(row, ENVGW_F_RESOURCES)),
               up ? up : "(malformed record)");
    }
    return 0;
}

int cmd_integration_show(const cmd_t *cmd, const args_t *a)
{
    const char *env_id = a->env, *name = a->integration;
    json_t *rec;

    (void) cmd;
    load_env(env_id);
    rec = load_json(key2_of(ENVGW_KEY_INTEGRATION, env_id, name));
    if (rec == NULL)
        die("integration '%s' is not installed in %s", name, env_id);
    print_json(rec);
    return 0;
}

int cmd_integration_remove(const cmd_t *cmd, const args_t *a)
{
    const char *env_id = a->env, *name = a->integration;
    char *key = key2_of(ENVGW_KEY_INTEGRATION, env_id, name);
    size_t nacc, i, users = 0;
    ref_t *accounts;
    txn_t *t;

    (void) cmd;
    for (t = txn_begin(); t != NULL; t = txn_commit(t)) {
        store_watch(key_of(ENVGW_KEY_ENV, env_id));
        store_watch(key);
        load_env(env_id);
        /* a malformed record may go: no load_integration() */
        if (store_get(key) == NULL)
            die("integration '%s' is not installed in %s", name, env_id);
        txn_del(t, key);
        txn_srem(t, index_key("integrations", env_id), name);
        txn_env(t, env_id);
    }

    accounts = env_accounts(env_id, &nacc);
    for (i = 0; i < nacc; i++) {
        const char *ig = jstr(accounts[i].rec, ENVGW_F_INTEGRATION);
        users += ig && strcmp(ig, name) == 0;
    }
    if (users > 0)
        warnx_("%zu integrated account%s of %s still name %s: their routes "
               "answer 404 method_not_found", users, users == 1 ? "" : "s",
               env_id, name);

    if (g_opt.json)
        print_json(pjson(json_pack("{s:s, s:s, s:b}",
                                   ENVGW_F_ENVIRONMENT_ID, env_id,
                                   ENVGW_F_INTEGRATION, name,
                                   "removed", 1)));
    else
        printf("removed integration %s from %s\n", name, env_id);
    return 0;
}

/* Loads the integration record to edit (WATCHed); dies if it is missing. */
static json_t *load_for_edit(const char *env_id, const char *name, char **key)
{
    json_t *rec;

    *key = key2_of(ENVGW_KEY_INTEGRATION, env_id, name);
    store_watch(key_of(ENVGW_KEY_ENV, env_id));
    store_watch(*key);
    load_env(env_id);
    rec = load_integration(env_id, name);
    if (rec == NULL)
        die("integration '%s' is not installed in %s (see 'envgw "
            "integration set')", name, env_id);
    return json_deep_copy_p(rec);
}

/* The object at obj[name], created empty if it is missing. */
static json_t *child_object(json_t *obj, const char *name)
{
    json_t *c = json_object_get(obj, name);

    if (c == NULL) {
        c = json_object();
        json_object_set_new(obj, name, c);
    }
    return c;
}

int cmd_method_set(const cmd_t *cmd, const args_t *a)
{
    const char *verb, *why;
    char *key;
    bool unchanged = false;
    txn_t *t;

    verb = normalize_http_method(a->verb);
    if (verb == NULL)
        usage_error(cmd, "bad HTTP method '%s' (want GET POST PUT PATCH "
                    "DELETE HEAD OPTIONS)", a->verb);
    if ((why = check_path(a->path)) != NULL)
        usage_error(cmd, "bad path '%s': %s", a->path, why);

    for (t = txn_begin(); t != NULL; t = txn_commit(t)) {
        json_t *rec = load_for_edit(a->env, a->integration, &key);
        json_t *methods, *old;

        methods = child_object(child_object(rec, ENVGW_F_RESOURCES),
                               a->resource);
        old = json_object_get(methods, a->method);
        unchanged = old && jstr(old, ENVGW_F_METHOD) && jstr(old, ENVGW_F_PATH)
                    && strcmp(jstr(old, ENVGW_F_METHOD), verb) == 0
                    && strcmp(jstr(old, ENVGW_F_PATH), a->path) == 0;
        if (unchanged)
            continue;
        json_object_set_new(methods, a->method,
                            json_pack("{s:s, s:s}", ENVGW_F_METHOD, verb,
                                      ENVGW_F_PATH, a->path));
        txn_set_json(t, key, rec);
        txn_env(t, a->env);
    }

    if (g_opt.json) {
        json_t *out = pjson(json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:b}",
                                      ENVGW_F_ENVIRONMENT_ID, a->env,
                                      ENVGW_F_INTEGRATION, a->integration,
                                      "resource", a->resource,
                                      "name", a->method,
                                      ENVGW_F_METHOD, verb,
                                      ENVGW_F_PATH, a->path,
                                      "changed", !unchanged));
        print_json(out);
    } else {
        printf("%s %s %s.%s %s %s in %s\n", unchanged ? "unchanged" : "set",
               a->integration, a->resource, a->method, verb, a->path, a->env);
    }
    return 0;
}

int cmd_method_remove(const cmd_t *cmd, const args_t *a)
{
    char *key;
    txn_t *t;

    (void) cmd;
    for (t = txn_begin(); t != NULL; t = txn_commit(t)) {
        json_t *rec = load_for_edit(a->env, a->integration, &key);
        json_t *res = json_object_get(rec, ENVGW_F_RESOURCES);
        json_t *methods = res ? json_object_get(res, a->resource) : NULL;

        if (methods == NULL || json_object_get(methods, a->method) == NULL)
            die("no method %s.%s in integration '%s' of %s", a->resource,
                a->method, a->integration, a->env);
        json_object_del(methods, a->method);
        if (json_object_size(methods) == 0)
            json_object_del(res, a->resource);
        txn_set_json(t, key, rec);
        txn_env(t, a->env);
    }

    if (g_opt.json) {
        json_t *out = pjson(json_pack("{s:s, s:s, s:s, s:s, s:b}",
                                      ENVGW_F_ENVIRONMENT_ID, a->env,
                                      ENVGW_F_INTEGRATION, a->integration,
                                      "resource", a->resource,
                                      "name", a->method, "removed", 1));
        print_json(out);
    } else {
        printf("removed %s %s.%s from %s\n", a->integration, a->resource,
               a->method, a->env);
    }
    return 0;
}
