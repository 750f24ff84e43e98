/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * envgw diff, promote
 *
 * "Works in development, 404s in production": diff lists what one
 * environment's integrations define that the other's lack or define
 * differently; promote copies those definitions across.  Both work on the
 * same list of changes, a JSON array of objects:
 *   {"op":"+","type":"integration","integration":I,"only_in":ENV}
 *   {"op":"+"|"-","type":"method","integration":I,"resource":R,
 *    "method":M,"only_in":ENV,"definition":{"method":V,"path":P}}
 *   {"op":"~","type":"method",...,"left":{...},"right":{...}}
 *   {"op":"+"|"-","type":"resource",...}       (a resource with no methods)
 *   {"op":"~","type":"upstream","integration":I,"left":U,"right":U}
 *   {"op":"~","type":"auth"|"oauth","integration":I,"left":A,"right":A}
 *      (an integration's credential declarations; null where absent)
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "envgw.h"

static json_t *res_of(json_t *rec)
{
    json_t *r = rec ? json_object_get(rec, ENVGW_F_RESOURCES) : NULL;
    return json_is_object(r) ? r : NULL;
}

static json_t *method_def(json_t *rec, const char *r, const char *m)
{
    json_t *res = res_of(rec);
    json_t *methods = res ? json_object_get(res, r) : NULL;
    return methods ? json_object_get(methods, m) : NULL;
}

static bool same_def(json_t *a, json_t *b)
{
    const char *ma = jstr(a, ENVGW_F_METHOD), *mb = jstr(b, ENVGW_F_METHOD);
    const char *pa = jstr(a, ENVGW_F_PATH), *pb = jstr(b, ENVGW_F_PATH);
    return ma && mb && pa && pb && strcmp(ma, mb) == 0
           && strcmp(pa, pb) == 0;
}

static json_t *change(const char *op, const char *type, const char *integ)
{
    json_t *c = json_object();
    json_object_set_new(c, "op", json_string(op));
    json_object_set_new(c, "type", json_string(type));
    json_object_set_new(c, ENVGW_F_INTEGRATION, json_string(integ));
    return c;
}

static json_t *method_change(const char *op, const char *integ,
                             const char *r, const char *m)
{
    json_t *c = change(op, "method", integ);
    json_object_set_new(c, "resource", json_string(r));
    json_object_set_new(c, "method", json_string(m));
    return c;
}

/* Methods and resources of one integration present in a (rec_a) but not
 * in b, with op and env naming that side; "~" entries when both_ways. */
static void diff_methods(json_t *out, const char *integ, json_t *rec_a,
                         json_t *rec_b, const char *op, const char *env_a,
                         bool both_ways)
{
    size_t nr, nm, i, j;
    char **rs = sorted_keys(res_of(rec_a), &nr);

    for (i = 0; i < nr; i++) {
        json_t *ma = json_object_get(res_of(rec_a), rs[i]);
        json_t *resb = res_of(rec_b);
        char **ms = sorted_keys(ma, &nm);

        if (nm == 0 && (resb == NULL || !json_object_get(resb, rs[i]))) {
            json_t *c = change(op, "resource", integ);
            json_object_set_new(c, "resource", json_string(rs[i]));
            json_object_set_new(c, "only_in", json_string(env_a));
            json_array_append_new(out, c);
            continue;
        }
        for (j = 0; j < nm; j++) {
            json_t *da = method_def(rec_a, rs[i], ms[j]);
            json_t *db = method_def(rec_b, rs[i], ms[j]);
            json_t *c;

            if (db == NULL) {
                c = method_change(op, integ, rs[i], ms[j]);
                json_object_set_new(c, "only_in", json_string(env_a));
                json_object_set(c, "definition", da);
            } else if (both_ways && !same_def(da, db)) {
                c = method_change("~", integ, rs[i], ms[j]);
                json_object_set(c, "left", da);
                json_object_set(c, "right", db);
            } else {
                continue;
            }
            json_array_append_new(out, c);
        }
    }
}

/* "auth" and "oauth" of an integration in both environments */
static void diff_auth(json_t *out, const char *integ, json_t *ra, json_t *rb)
{
    static const char *fields[] = { ENVGW_F_AUTH, ENVGW_F_OAUTH };
    size_t i;

    for (i = 0; i < 2; i++) {
        json_t *va = json_object_get(ra, fields[i]);
        json_t *vb = json_object_get(rb, fields[i]);
        json_t *c;

        if (va == NULL && vb == NULL)
            continue;
        if (va && vb && json_equal(va, vb))
            continue;
        c = change("~", fields[i], integ);
        json_object_set_new(c, "left", va ? json_deep_copy(va)
                                          : json_null());
        json_object_set_new(c, "right", vb ? json_deep_copy(vb)
                                           : json_null());
        json_array_append_new(out, c);
    }
}

static void print_change(json_t *c, const char *prefix)
{
    const char *op = jstr(c, "op"), *type = jstr(c, "type");
    const char *integ = jstr(c, ENVGW_F_INTEGRATION);
    const char *r = jstr(c, "resource"), *m = jstr(c, "method");
    const char *only = jstr(c, "only_in");

    if (strcmp(type, "integration") == 0) {
        printf("%s%s integration %s (only in %s)\n", prefix, op, integ, only);
    } else if (strcmp(type, "resource") == 0) {
        printf("%s%s %s resource %s (only in %s)\n", prefix, op, integ, r,
               only);
    } else if (strcmp(type, "auth") == 0 || strcmp(type, "oauth") == 0) {
        char *l = json_dumps(json_object_get(c, "left"),
                             JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
        char *rt = json_dumps(json_object_get(c, "right"),
                              JSON_COMPACT | JSON_SORT_KEYS
                              | JSON_ENCODE_ANY);
        printf("%s~ %s %s: %s vs %s\n", prefix, integ, type,
               l ? l : "?", rt ? rt : "?");
        free(l);
        free(rt);
    } else if (strcmp(type, "upstream") == 0) {
        printf("%s~ %s upstream: %s vs %s\n", prefix, integ,
               jstr(c, "left"), jstr(c, "right"));
    } else if (strcmp(op, "~") == 0) {
        json_t *a = json_object_get(c, "left"), *b = json_object_get(c,
                                                                    "right");
        printf("%s~ %s %s.%s: %s %s vs %s %s\n", prefix, integ, r, m,
               jstr(a, ENVGW_F_METHOD), jstr(a, ENVGW_F_PATH),
               jstr(b, ENVGW_F_METHOD), jstr(b, ENVGW_F_PATH));
    } else {
        json_t *d = json_object_get(c, "definition");
        printf("%s%s %s %s.%s %s %s (only in %s)\n", prefix, op, integ, r, m,
               jstr(d, ENVGW_F_METHOD), jstr(d, ENVGW_F_PATH), only);
    }
}

int cmd_diff(const cmd_t *cmd, const args_t *args)
{
    const char *a = args->from, *b = args->to;
    char **na, **nb, **all;
    size_t ca, cb, n, i;
    json_t *out;

    (void) cmd;
    g_opt.fail_code = EXIT_USAGE;       /* 1 means "different" here */
    load_env(a);
    load_env(b);

    na = integration_names(a, &ca);
    nb = integration_names(b, &cb);
    all = str_union(na, ca, nb, cb, &n);

    out = pjson(json_array());
    for (i = 0; i < n; i++) {
        json_t *ra = load_integration(a, all[i]);
        json_t *rb = load_integration(b, all[i]);

        if (ra && !rb) {
            json_t *c = change("+", "integration", all[i]);
            json_object_set_new(c, "only_in", json_string(a));
            json_array_append_new(out, c);
        } else if (rb && !ra) {
            json_t *c = change("-", "integration", all[i]);
            json_object_set_new(c, "only_in", json_string(b));
            json_array_append_new(out, c);
        } else if (ra && rb && args->upstreams
                   && strcmp(jstr(ra, ENVGW_F_UPSTREAM),
                             jstr(rb, ENVGW_F_UPSTREAM)) != 0) {
            json_t *c = change("~", "upstream", all[i]);
            json_object_set(c, "left", json_object_get(ra, ENVGW_F_UPSTREAM));
            json_object_set(c, "right",
                            json_object_get(rb, ENVGW_F_UPSTREAM));
            json_array_append_new(out, c);
        }
        if (ra && rb)
            diff_auth(out, all[i], ra, rb);
        diff_methods(out, all[i], ra, rb, "+", a, true);
        diff_methods(out, all[i], rb, ra, "-", b, false);
    }

    if (g_opt.json) {
        print_json(out);
    } else {
        for (i = 0; i < json_array_size(out); i++)
            print_change(json_array_get(out, i), "");
        if (json_array_size(out) == 0)
            note("%s and %s define the same integrations and methods", a, b);
    }
    return json_array_size(out) == 0 ? 0 : 1;
}

/* --method RESOURCE.METHOD or METHOD */
static bool method_matches(const char *spec, const char *r, const char *m)
{
    const char *dot = strchr(spec, '.');

    if (dot == NULL)
        return strcmp(spec, m) == 0;
    return strlen(r) == (size_t) (dot - spec)
           && strncmp(spec, r, (size_t) (dot - spec)) == 0
           && strcmp(dot + 1, m) == 0;
}

int cmd_promote(const cmd_t *cmd, const args_t *a)
{
    const char *from = a->from, *to = a->to, *only_integ = a->integration;
    const char *mspec = a->method, *upstream = a->upstream, *why;
    bool dry = a->dry_run != NULL;
    json_t *changes = NULL;
    txn_t *t;

    if (strcmp(from, to) == 0)
        usage_error(cmd, "FROM and TO are the same environment");
    if (mspec) {
        const char *dot = strchr(mspec, '.');
        bool ok = dot ? valid_name(pfmt("%.*s", (int) (dot - mspec), mspec))
                        && valid_name(dot + 1)
                      : valid_name(mspec);
        if (!ok)
            usage_error(cmd, "bad --method '%s' (want RESOURCE.METHOD or "
                        "METHOD)", mspec);
    }
    if (upstream && (why = check_upstream(upstream)) != NULL)
        usage_error(cmd, "bad upstream '%s': %s", upstream, why);

    for (t = txn_begin(); t != NULL; t = txn_commit(t)) {
        char **names;
        size_t n, i;
        size_t matched = 0;

        store_watch(key_of(ENVGW_KEY_ENV, to));
        load_env(from);
        load_env(to);
        if (only_integ) {
            names = pool_keep(calloc(2, sizeof(char *)), free);
            names[0] = pstrdup(only_integ);
            n = 1;
            if (load_integration(from, only_integ) == NULL)
                die("integration '%s' is not installed in %s", only_integ,
                    from);
        } else {
            names = integration_names(from, &n);
        }

        changes = pjson(json_array());
        for (i = 0; i < n; i++) {
            char *tkey = key2_of(ENVGW_KEY_INTEGRATION, to, names[i]);
            json_t *rf, *rt, *nt, *res;
            size_t nr, r, before = json_array_size(changes);
            char **rs;

            store_watch(key2_of(ENVGW_KEY_INTEGRATION, from, names[i]));
            store_watch(tkey);
            rf = load_integration(from, names[i]);
            rt = load_integration(to, names[i]);
            if (rf == NULL)
                continue;
            nt = rt ? json_deep_copy_p(rt) : pjson(json_object());
            if (json_object_get(nt, ENVGW_F_RESOURCES) == NULL)
                json_object_set_new(nt, ENVGW_F_RESOURCES, json_object());
            res = json_object_get(nt, ENVGW_F_RESOURCES);

            rs = sorted_keys(res_of(rf), &nr);
            for (r = 0; r < nr; r++) {
                json_t *mf = json_object_get(res_of(rf), rs[r]);
                size_t nm, m;
                char **ms = sorted_keys(mf, &nm);

                for (m = 0; m < nm; m++) {
                    json_t *df = json_object_get(mf, ms[m]);
                    json_t *dt = method_def(nt, rs[r], ms[m]), *c, *mt;

                    if (mspec && !method_matches(mspec, rs[r], ms[m]))
                        continue;
                    matched++;
                    if (dt && same_def(df, dt))
                        continue;
                    if (dt) {
                        c = method_change("~", names[i], rs[r], ms[m]);
                        json_object_set(c, "left", df);
                        json_object_set(c, "right", dt);
                    } else {
                        c = method_change("+", names[i], rs[r], ms[m]);
                        json_object_set_new(c, "only_in", json_string(from));
                        json_object_set(c, "definition", df);
                    }
                    json_array_append_new(changes, c);
                    mt = json_object_get(res, rs[r]);
                    if (!json_is_object(mt)) {
                        json_object_set_new(res, rs[r], json_object());
                        mt = json_object_get(res, rs[r]);
                    }
                    json_object_set_new(mt, ms[m], json_deep_copy(df));
                }
            }

            if (a->with_auth) {
                static const char *af[] = { ENVGW_F_AUTH, ENVGW_F_OAUTH };
                size_t k;

                for (k = 0; k < 2; k++) {
                    json_t *vf = json_object_get(rf, af[k]);
                    json_t *vt = json_object_get(nt, af[k]);
                    json_t *c;

                    if ((vf == NULL && vt == NULL)
                        || (vf && vt && json_equal(vf, vt)))
                        continue;
                    c = change("~", af[k], names[i]);
                    json_object_set_new(c, "left", vf ? json_deep_copy(vf)
                                                      : json_null());
                    json_object_set_new(c, "right", vt ? json_deep_copy(vt)
                                                       : json_null());
                    json_array_append_new(changes, c);
                    if (vf)
                        json_object_set_new(nt, af[k], json_deep_copy(vf));
                    else
                        json_object_del(nt, af[k]);
                }
            }

            /* a missing target record is created only if it gets methods,
             * or when the whole integration is promoted by name */
            if (rt == NULL && (json_array_size(changes) > before
                               || (only_integ && !mspec))) {
                json_t *c = change("+", "integration", names[i]);
                const char *up = upstream ? upstream
                                          : jstr(rf, ENVGW_F_UPSTREAM);
                json_object_set_new(c, "only_in", json_string(from));
                json_object_set_new(c, ENVGW_F_UPSTREAM, json_string(up));
                json_array_insert_new(changes, before, c);
                json_object_set_new(nt, ENVGW_F_UPSTREAM, json_string(up));
                if (!upstream && txn_attempt(t) == 0)
                    warnx_("%s has no integration '%s': creating it with "
                           "%s's upstream %s (give --upstream to choose)",
                           to, names[i], from, up);
            } else if (rt != NULL && upstream && txn_attempt(t) == 0) {
                warnx_("%s already has integration '%s': keeping its "
                       "upstream, --upstream ignored", to, names[i]);
            }
            if (json_array_size(changes) > before) {
                txn_set_json(t, tkey, nt);
                txn_sadd(t, index_key("integrations", to), names[i]);
                txn_env(t, to);
            }
        }
        if (mspec && matched == 0)
            die("no method '%s' in %s%s%s", mspec, from,
                only_integ ? " integration " : "",
                only_integ ? only_integ : "");

        if (dry)
            txn_discard(t);
    }

    if (g_opt.json) {
        json_t *out = pjson(json_object());
        json_object_set_new(out, "from", json_string(from));
        json_object_set_new(out, "to", json_string(to));
        json_object_set_new(out, "dry_run", json_boolean(dry));
        json_object_set(out, "changes", changes);
        print_json(out);
        return 0;
    }
    if (json_array_size(changes) == 0) {
        note("nothing to promote: %s already has %s", to,
             mspec ? "that method" : "everything selected in FROM");
        return 0;
    }
    for (size_t i = 0; i < json_array_size(changes); i++)
        print_change(json_array_get(changes, i), dry ? "would apply: " : "");
    if (dry)
        note("dry run: nothing written");
    else
        printf("promoted %zu change%s from %s to %s\n",
               json_array_size(changes),
               json_array_size(changes) == 1 ? "" : "s", from, to);
    return 0;
}
