/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * envgw audit
 *
 * Every write of envgw appends, inside its own MULTI/EXEC, one entry to the
 * Redis stream <prefix>audit (store.c): time, actor, command, environments
 * and the changed keys, the stream capped at about --audit-maxlen entries.
 * This command reads it back.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <hiredis/hiredis.h>

#include "envgw.h"

#define AUDIT_BATCH 1000

/*
 * --since T: a duration back from now (30m, 12h, 7d), a date (2025-11-28,
 * midnight UTC), a UTC time (2025-11-28T10:00:00Z) or Unix seconds.
 */
static bool parse_since(const char *s, long long *out)
{
    static const char *formats[] = { "%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%d", NULL };
    long long secs;
    struct tm tm;
    const char *end;
    size_t len = strlen(s);
    int i;

    if (len > 1 && strchr("smhd", s[len - 1]) != NULL
        && parse_duration(s, &secs, false)) {
        *out = (long long) time(NULL) - secs;
        return true;
    }
    if (len > 0 && strspn(s, "0123456789") == len && len <= 12) {
        *out = strtoll(s, NULL, 10);
        return true;
    }
    for (i = 0; formats[i]; i++) {
        memset(&tm, 0, sizeof(tm));
        end = strptime(s, formats[i], &tm);
        if (end != NULL && *end == '\0') {
            *out = (long long) timegm(&tm);
            return true;
        }
    }
    return false;
}

/* One stream entry [id, [field, value, ...]] as a JSON object. */
static json_t *entry_of(redisReply *e)
{
    redisReply *id, *fields;
    json_t *out;
    size_t i;

    if (e->type != REDIS_REPLY_ARRAY || e->elements != 2)
        return NULL;
    id = e->element[0];
    fields = e->element[1];
    if (id->type != REDIS_REPLY_STRING || fields->type != REDIS_REPLY_ARRAY)
        return NULL;
    out = pjson(json_object());
    json_object_set_new(out, "id", json_string(id->str));
    for (i = 0; i + 1 < fields->elements; i += 2) {
        const char *k = fields->element[i]->str;
        const char *v = fields->element[i + 1]->str;
        json_t *j;

        if (k == NULL || v == NULL)
            continue;
        if (strcmp(k, "time") == 0)
            j = json_integer(strtoll(v, NULL, 10));
        else if (strcmp(k, "environments") == 0 || strcmp(k, "keys") == 0)
            j = json_loads(v, 0, NULL);
        else
            j = json_string(v);
        if (j != NULL)
            json_object_set_new(out, k, j);
    }
    return out;
}

static bool touches(json_t *entry, const char *env_id)
{
    json_t *envs = json_object_get(entry, "environments"), *e;
    size_t i;

    json_array_foreach(envs, i, e) {
        if (json_is_string(e) && strcmp(json_string_value(e), env_id) == 0)
            return true;
    }
    return false;
}

static void print_entry(json_t *e)
{
    json_t *keys = json_object_get(e, "keys"), *k;
    json_t *t = json_object_get(e, "time");
    const char *actor = jstr(e, "actor"), *command = jstr(e, "command");
    size_t i;

    printf("%-21s %-16s %s\n", fmt_time(json_integer_value(t)),
           actor ? actor : "?", command ? command : "?");
    json_array_foreach(keys, i, k) {
        printf("%s%s", i == 0 ? "    changed: " : ", ", json_string_value(k));
    }
    if (json_array_size(keys) > 0)
        printf("\n");
}

int cmd_audit(const cmd_t *cmd, const args_t *a)
{
    long long since = 0;
    const char *start = "-";
    bool after = false;
    json_t *out = pjson(json_array());
    size_t i;

    if (a->since && !parse_since(a->since, &since))
        usage_error(cmd, "bad --since '%s' (want 30m, 12h, 7d, 2025-11-28, "
                    "2025-11-28T10:00:00Z or Unix seconds)", a->since);
    if (since > 0)
        start = pfmt("%lld", since * 1000);     /* stream ids are in ms */

    for (;;) {
        redisReply *r = store_audit_range(start, after, AUDIT_BATCH);

        for (i = 0; i < r->elements; i++) {
            json_t *e = entry_of(r->element[i]);

            if (e == NULL)
                die("unexpected entry in the stream %s", audit_key());
            if (a->env == NULL || touches(e, a->env))
                json_array_append(out, e);
            start = jstr(e, "id");
        }
        if (r->elements < AUDIT_BATCH)
            break;
        after = true;
    }

    if (list_printed(out, "no audit entries%s%s%s%s",
                     a->env ? " of " : "", a->env ? a->env : "",
                     a->since ? " since " : "", a->since ? a->since : ""))
        return 0;
    printf("%-21s %-16s %s\n", "TIME", "ACTOR", "COMMAND");
    for (i = 0; i < json_array_size(out); i++)
        print_entry(json_array_get(out, i));
    return 0;
}
