/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * envgw token set-limit, env set-limit: a record's own rate limit,
 * "rate_limit": {"requests": N, "window": "10s"}, which replaces the
 * gateway's token (environment) limit for that token (environment).
 */

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "envgw.h"

/* the gateway's bounds (src/ngx_env_gateway.h) */
#define RATE_MAX        1000000000LL
#define WINDOW_MAX_MS   (7LL * 86400 * 1000)

/* "10s", "500ms", "1h", "m": milliseconds, or -1 */
static long long window_ms(const char *s)
{
    long long n = 0, mult;
    const char *p = s;
    int digits = 0;

    while (isdigit((unsigned char) *p)) {
        n = n * 10 + (*p - '0');
        if (n > WINDOW_MAX_MS)
            return -1;
        p++;
        digits++;
    }
    if (digits == 0)
        n = 1;                  /* "m": one minute */
    if (strcmp(p, "ms") == 0)
        mult = 1;
    else if (strcmp(p, "s") == 0)
        mult = 1000;
    else if (strcmp(p, "m") == 0)
        mult = 60 * 1000;
    else if (strcmp(p, "h") == 0)
        mult = 3600 * 1000;
    else if (strcmp(p, "d") == 0)
        mult = 86400 * 1000;
    else
        return -1;
    if (digits == 0 && mult == 1)
        return -1;              /* "ms" alone */
    n *= mult;
    return n > 0 && n <= WINDOW_MAX_MS ? n : -1;
}

json_t *parse_rate_limit(const cmd_t *cmd, const char *s)
{
    const char *slash;
    char *end;
    long long n;
    json_t *rl;

    if (strcmp(s, "none") == 0)
        return NULL;
    slash = strchr(s, '/');
    if (slash == NULL || !isdigit((unsigned char) s[0]))
        goto bad;
    n = strtoll(s, &end, 10);
    if (end != slash || n < 1 || n > RATE_MAX || window_ms(slash + 1) < 0)
        goto bad;
    rl = pjson(json_object());
    json_object_set_new(rl, ENVGW_F_REQUESTS, json_integer(n));
    json_object_set_new(rl, ENVGW_F_WINDOW, json_string(slash + 1));
    return rl;

bad:
    usage_error(cmd, "bad rate limit '%s' (want N/WINDOW: N from 1 to %lld "
                "requests a WINDOW of N[ms|s|m|h|d] up to 7d, e.g. 500/10s; "
                "or none)", s, RATE_MAX);
}

static void print_limit(const char *what, const char *id, json_t *rl)
{
    if (g_opt.json) {
        json_t *out = pjson(json_object());
        json_object_set_new(out, what, json_string(id));
        json_object_set(out, ENVGW_F_RATE_LIMIT, rl ? rl : json_null());
        print_json(out);
    } else if (rl) {
        printf("%s rate limit: %lld/%s\n", id,
               (long long) json_integer_value(json_object_get(rl,
                                                           ENVGW_F_REQUESTS)),
               json_string_value(json_object_get(rl, ENVGW_F_WINDOW)));
    } else {
        printf("%s rate limit: none (the gateway's own)\n", id);
    }
}

/* rec (a pooled copy) with rate_limit set to rl, or without it */
static json_t *with_limit(json_t *rec, json_t *rl)
{
    json_t *out = json_deep_copy_p(rec);

    if (rl)
        json_object_set(out, ENVGW_F_RATE_LIMIT, rl);
    else
        json_object_del(out, ENVGW_F_RATE_LIMIT);
    return out;
}

int cmd_token_set_limit(const cmd_t *cmd, const args_t *a)
{
    json_t *rl = parse_rate_limit(cmd, a->rate_limit);
    txn_t *t;

    for (t = txn_begin(); t != NULL; t = txn_commit(t)) {
        char *idkey = key_of(ENVGW_KEY_TOKEN_ID, a->token);
        json_t *h, *rec;
        char *tkey;

        store_watch(idkey);
        h = load_json(idkey);
        if (h == NULL)
            die("no token with id '%s'", a->token);
        if (!json_is_string(h)
            || strlen(json_string_value(h)) != ENVGW_SHA256_HEX_LEN)
            die("malformed record at key %s (want a JSON string of the "
                "token's SHA-256)", idkey);
        tkey = key_of(ENVGW_KEY_TOKEN, json_string_value(h));
        store_watch(tkey);
        rec = load_json(tkey);
        if (rec == NULL || !json_is_object(rec))
            die("token '%s' has no usable record at %s", a->token, tkey);
        txn_set_json(t, tkey, with_limit(rec, rl));
        txn_env(t, jstr_req(rec, ENVGW_F_ENVIRONMENT_ID, tkey));
    }
    print_limit(ENVGW_F_TOKEN_ID, a->token, rl);
    return 0;
}

int cmd_env_set_limit(const cmd_t *cmd, const args_t *a)
{
    json_t *rl = parse_rate_limit(cmd, a->rate_limit);
    char *key = key_of(ENVGW_KEY_ENV, a->env);
    txn_t *t;

    for (t = txn_begin(); t != NULL; t = txn_commit(t)) {
        json_t *rec;

        store_watch(key);
        rec = load_env(a->env);
        txn_set_json(t, key, with_limit(rec, rl));
        txn_env(t, a->env);
    }
    print_limit(ENVGW_F_ENVIRONMENT_ID, a->env, rl);
    return 0;
}
