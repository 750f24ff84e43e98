/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * envgw credentials set|show|remove|refresh, keys rotate
 *
 * The upstream credentials of an integrated account are a JSON object of
 * string fields, stored as <prefix>credentials:<account id> =
 *   {"v":1,"kid":K,"nonce":B64,"ciphertext":B64,"expires_at":N|null}
 * AES-256-GCM under the keyring's key K, a random 12-byte nonce, the
 * 16-byte tag after the ciphertext, additional data
 *   be32(len(account id)) account id be32(len(environment id)) env id
 * so that a record copied to another account (or environment) does not
 * decrypt.  The keyring is the gateway's env_gateway_secret_keys file.
 */

#include <ctype.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>

#include <curl/curl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "envgw.h"

#define KEY_LEN     32
#define NONCE_LEN   12
#define TAG_LEN     16
#define KID_MAX     64
#define FIELD_MAX   64

typedef struct {
    char          kid[KID_MAX + 1];
    unsigned char key[KEY_LEN];
} cred_key_t;

static cred_key_t *keyring;
static size_t      nkeys;

static void wipe_keys(void *p)
{
    if (p != NULL && nkeys > 0)
        OPENSSL_cleanse(p, nkeys * sizeof(cred_key_t));
    free(p);
}

/* ---- base64 --------------------------------------------------------------- */

static char *b64_encode(const unsigned char *in, size_t len)
{
    char *out = pool_keep(malloc(4 * ((len + 2) / 3) + 1), free);

    if (out == NULL)
        die("out of memory");
    EVP_EncodeBlock((unsigned char *) out, in, (int) len);
    return out;
}

/* -1 if not base64; the decoded length otherwise (out: 3 * len / 4 + 3) */
static long b64_decode(const char *in, unsigned char *out)
{
    size_t len = strlen(in), pad = 0;
    int n;

    if (len == 0 || len % 4 != 0)
        return -1;
    if (in[len - 1] == '=')
        pad++;
    if (len > 1 && in[len - 2] == '=')
        pad++;
    n = EVP_DecodeBlock(out, (const unsigned char *) in, (int) len);
    if (n < 0 || (size_t) n < pad)
        return -1;
    return n - (long) pad;
}

/* ---- the keyring ----------------------------------------------------------- */

/* the same warnings as the gateway's at nginx -t: a keyring is root's */
static void keyring_mode_check(FILE *f, const char *file)
{
    struct stat st;

    if (fstat(fileno(f), &st) != 0)
        return;
    if (st.st_mode & S_IROTH)
        warnx_("the keyring %s is readable by every user of this host: "
               "chmod o-r it", file);
    if (st.st_mode & S_IWOTH)
        warnx_("the keyring %s is writable by every user of this host: "
               "chmod o-w it", file);
}

static void load_keys(const char *file)
{
    char line[1024];
    unsigned char dec[sizeof(line)];
    FILE *f;
    unsigned lineno = 0;
    size_t cap = 4, i;

    if (file == NULL || file[0] == '\0')
        file = getenv("ENVGW_SECRET_KEYS");
    if (file == NULL || file[0] == '\0')
        die("no keyring: give --keys FILE or set ENVGW_SECRET_KEYS");
    f = fopen(file, "r");
    if (f == NULL)
        die("cannot read keyring %s: %s", file, strerror(errno));
    keyring_mode_check(f, file);
    keyring = pool_keep(calloc(cap, sizeof(cred_key_t)), wipe_keys);
    if (keyring == NULL)
        die("out of memory");

    while (fgets(line, sizeof(line), f) != NULL) {
        char *p = line, *kid, *b64;
        long n;

        lineno++;
        p[strcspn(p, "\r\n")] = '\0';
        while (*p == ' ' || *p == '\t')
            p++;
        if (*p == '\0' || *p == '#')
            continue;
        kid = strtok(p, " \t");
        b64 = strtok(NULL, " \t");
        if (kid == NULL || b64 == NULL || strtok(NULL, " \t") != NULL
            || !valid_id(kid) || strlen(kid) > KID_MAX) {
            fclose(f);
            OPENSSL_cleanse(line, sizeof(line));
            die("keyring %s line %u: expected \"<key id> <base64 of 32 "
                "bytes>\"", file, lineno);
        }
        n = b64_decode(b64, dec);
        if (n != KEY_LEN) {
            fclose(f);
            OPENSSL_cleanse(line, sizeof(line));
            OPENSSL_cleanse(dec, sizeof(dec));
            die("keyring %s line %u: the key is not the base64 of 32 bytes",
                file, lineno);
        }
        for (i = 0; i < nkeys; i++) {
            if (strcmp(keyring[i].kid, kid) == 0) {
                fclose(f);
                die("keyring %s line %u: key id %s is there twice", file,
                    lineno, kid);
            }
        }
        if (nkeys == cap) {
            /* grow without leaving a copy of the keys behind */
            cred_key_t *nk = calloc(cap * 2, sizeof(cred_key_t));

            if (nk == NULL)
                die("out of memory");
            memcpy(nk, keyring, nkeys * sizeof(cred_key_t));
            OPENSSL_cleanse(keyring, nkeys * sizeof(cred_key_t));
            keyring = pool_keep(nk, wipe_keys);
            cap *= 2;
        }
        snprintf(keyring[nkeys].kid, sizeof(keyring[nkeys].kid), "%s", kid);
        memcpy(keyring[nkeys].key, dec, KEY_LEN);
        nkeys++;
        OPENSSL_cleanse(dec, sizeof(dec));
    }
    OPENSSL_cleanse(line, sizeof(line));
    fclose(f);
    if (nkeys == 0)
        die("keyring %s has no keys", file);
}

static const cred_key_t *find_key(const char *kid)
{
    size_t i;

    for (i = 0; i < nkeys; i++) {
        if (strcmp(keyring[i].kid, kid) == 0)
            return &keyring[i];
    }
    return NULL;
}

/* ---- AES-256-GCM ------------------------------------------------------------ */

static unsigned char *make_aad(const char *acc, const char *env, size_t *len)
{
    size_t la = strlen(acc), le = strlen(env);
    unsigned char *a = pool_keep(malloc(8 + la + le), free), *p = a;

    if (a == NULL)
        die("out of memory");
    *p++ = (unsigned char) (la >> 24); *p++ = (unsigned char) (la >> 16);
    *p++ = (unsigned char) (la >> 8);  *p++ = (unsigned char) la;
    memcpy(p, acc, la);
    p += la;
    *p++ = (unsigned char) (le >> 24); *p++ = (unsigned char) (le >> 16);
    *p++ = (unsigned char) (le >> 8);  *p++ = (unsigned char) le;
    memcpy(p, env, le);
    *len = 8 + la + le;
    return a;
}

/* The record of fields (a JSON object of strings) for acc in env. */
static json_t *seal(json_t *fields, const char *acc, const char *env,
                    long long expires_at)
{
    const cred_key_t *k = &keyring[0];
    unsigned char nonce[NONCE_LEN], *aad, *ct;
    char *plain = json_dumps(fields, JSON_COMPACT | JSON_SORT_KEYS);
    size_t plen, aadlen;
    int len, fin;
    EVP_CIPHER_CTX *c;
    json_t *rec;

    if (plain == NULL)
        die("out of memory");
    plen = strlen(plain);
    ct = malloc(plen + TAG_LEN);
    c = EVP_CIPHER_CTX_new();
    if (ct == NULL || c == NULL)
        die("out of memory");
    random_bytes(nonce, sizeof(nonce));
    aad = make_aad(acc, env, &aadlen);

    if (EVP_EncryptInit_ex(c, EVP_aes_256_gcm(), NULL, NULL, NULL) != 1
        || EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_IVLEN, NONCE_LEN, NULL)
           != 1
        || EVP_EncryptInit_ex(c, NULL, NULL, k->key, nonce) != 1
        || EVP_EncryptUpdate(c, NULL, &len, aad, (int) aadlen) != 1
        || EVP_EncryptUpdate(c, ct, &len, (unsigned char *) plain,
                             (int) plen) != 1
        || EVP_EncryptFinal_ex(c, ct + len, &fin) != 1
        || EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, TAG_LEN,
                               ct + plen) != 1)
        die("encryption failed");
    EVP_CIPHER_CTX_free(c);
    OPENSSL_cleanse(plain, plen);
    free(plain);

    rec = pjson(json_object());
    json_object_set_new(rec, ENVGW_F_VERSION, json_integer(ENVGW_CRED_VERSION));
    json_object_set_new(rec, ENVGW_F_KID, json_string(k->kid));
    json_object_set_new(rec, ENVGW_F_NONCE,
                        json_string(b64_encode(nonce, NONCE_LEN)));
    json_object_set_new(rec, ENVGW_F_CIPHERTEXT,
                        json_string(b64_encode(ct, plen + TAG_LEN)));
    json_object_set_new(rec, ENVGW_F_EXPIRES_AT,
                        expires_at > 0 ? json_integer(expires_at)
                                       : json_null());
    free(ct);
    return rec;
}

/* The fields of a record, or NULL and *why. */
static json_t *unseal(json_t *rec, const char *acc, const char *env,
                      const char **why)
{
    const char *kid = jstr(rec, ENVGW_F_KID);
    const char *n64 = jstr(rec, ENVGW_F_NONCE);
    const char *c64 = jstr(rec, ENVGW_F_CIPHERTEXT);
    const cred_key_t *k;
    unsigned char *nonce, *ct, *plain, *aad;
    long nlen, clen;
    size_t aadlen;
    int len, fin, ok;
    EVP_CIPHER_CTX *c;
    json_t *fields;
    json_error_t err;

    if (kid == NULL || n64 == NULL || c64 == NULL
        || json_integer_value(json_object_get(rec, ENVGW_F_VERSION))
           != ENVGW_CRED_VERSION) {
        *why = "not a credentials record";
        return NULL;
    }
    if ((k = find_key(kid)) == NULL) {
        *why = "its key id is not in the keyring";
        return NULL;
    }
    nonce = pool_keep(malloc(strlen(n64) + 3), free);
    ct = pool_keep(malloc(strlen(c64) + 3), free);
    plain = malloc(strlen(c64) + 3);
    if (nonce == NULL || ct == NULL || plain == NULL)
        die("out of memory");
    nlen = b64_decode(n64, nonce);
    clen = b64_decode(c64, ct);
    if (nlen != NONCE_LEN || clen <= TAG_LEN) {
        free(plain);
        *why = "a bad nonce or ciphertext";
        return NULL;
    }
    clen -= TAG_LEN;
    aad = make_aad(acc, env, &aadlen);
    c = EVP_CIPHER_CTX_new();
    if (c == NULL)
        die("out of memory");
    ok = EVP_DecryptInit_ex(c, EVP_aes_256_gcm(), NULL, NULL, NULL) == 1
         && EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_IVLEN, NONCE_LEN, NULL)
            == 1
         && EVP_DecryptInit_ex(c, NULL, NULL, k->key, nonce) == 1
         && EVP_DecryptUpdate(c, NULL, &len, aad, (int) aadlen) == 1
         && EVP_DecryptUpdate(c, plain, &len, ct, (int) clen) == 1
         && EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, TAG_LEN, ct + clen)
            == 1
         && EVP_DecryptFinal_ex(c, plain + len, &fin) == 1;
    EVP_CIPHER_CTX_free(c);
    if (!ok) {
        OPENSSL_cleanse(plain, (size_t) clen);
        free(plain);
        *why = "it does not decrypt (another key, account or environment)";
        return NULL;
    }
    fields = json_loadb((const char *) plain, (size_t) clen, 0, &err);
    OPENSSL_cleanse(plain, (size_t) clen);
    free(plain);
    if (!json_is_object(fields)) {
        json_decref(fields);
        *why = "the decrypted fields are not a JSON object";
        return NULL;
    }
    return pjson(fields);
}

/* ---- helpers ----------------------------------------------------------------- */

static bool valid_field(const char *s)
{
    size_t n = strlen(s), i;

    if (n == 0 || n > FIELD_MAX)
        return false;
    for (i = 0; i < n; i++) {
        if (!isalnum((unsigned char) s[i]) && s[i] != '_')
            return false;
    }
    return true;
}

/* the environment of an account (the additional data needs it) */
static const char *account_env(const char *acc, json_t **rec_out)
{
    json_t *rec = load_json(key_of(ENVGW_KEY_ACCOUNT, acc));

    if (rec == NULL)
        die("no integrated account '%s'", acc);
    if (rec_out != NULL)
        *rec_out = rec;
    return jstr_req(rec, ENVGW_F_ENVIRONMENT_ID,
                    key_of(ENVGW_KEY_ACCOUNT, acc));
}

static long long record_expiry(json_t *rec)
{
    json_t *v = json_object_get(rec, ENVGW_F_EXPIRES_AT);

    if (json_is_integer(v))
        return json_integer_value(v);
    if (json_is_real(v))
        return (long long) json_real_value(v);
    return 0;
}

static const char *field_names(json_t *fields)
{
    size_t n, i;
    char **names = sorted_keys(fields, &n);
    const char *s = "";

    for (i = 0; i < n; i++)
        s = pfmt("%s%s%s", s, i ? ", " : "", names[i]);
    return s;
}

/* ---- auth declarations (checked as the gateway does) ----------------------- */

static bool format_ok(json_t *v)
{
    const char *s = json_string_value(v), *p, *close;
    size_t n = 0;

    if (s == NULL || s[0] == '\0')
        return false;
    for (p = s; *p; p++) {
        if (*p == '{') {
            close = strchr(p, '}');
            if (close == NULL || close == p + 1 || close - p - 1 > FIELD_MAX)
                return false;
            if (!valid_field(pfmt("%.*s", (int) (close - p - 1), p + 1)))
                return false;
            n++;
            p = close;
            continue;
        }
        if (*p == '}' || (unsigned char) *p < 0x20 || *p == 0x7f)
            return false;
    }
    return n > 0;
}

static bool header_name_ok(const char *s)
{
    static const char *reserved[] = {
        "host", "content-length", "transfer-encoding", "connection",
        "keep-alive", "te", "upgrade", "expect", "cookie",
        "x-environment-id", "x-environment", "x-team-id", "x-token-id",
        "x-integrated-account-id", "x-tenant-id", NULL
    };
    const char **r;
    size_t n = strlen(s), i;

    if (n == 0 || n > 128)
        return false;
    for (i = 0; i < n; i++) {
        if (!isalnum((unsigned char) s[i]) && !strchr("!#$%&'*+-.^_`|~", s[i]))
            return false;
    }
    for (r = reserved; *r; r++) {
        if (strcasecmp(*r, s) == 0)
            return false;
    }
    return true;
}

static bool query_name_ok(const char *s)
{
    size_t n = strlen(s), i;

    if (n == 0 || n > 128)
        return false;
    for (i = 0; i < n; i++) {
        if (!isalnum((unsigned char) s[i]) && !strchr("-_.~", s[i]))
            return false;
    }
    return true;
}

const char *check_auth(json_t *auth)
{
    json_t *h, *q, *b;

    if (!json_is_object(auth))
        return "auth must be a JSON object";
    h = json_object_get(auth, ENVGW_F_AUTH_HEADER);
    q = json_object_get(auth, ENVGW_F_AUTH_QUERY);
    b = json_object_get(auth, ENVGW_F_AUTH_BASIC);
    if ((h != NULL) + (q != NULL) + (b != NULL) != 1)
        return "auth names exactly one of header, query, basic";
    if (b != NULL) {
        if (json_object_size(auth) != 1 || !json_is_object(b)
            || json_object_size(b) != 2
            || !format_ok(json_object_get(b, ENVGW_F_USERNAME))
            || !format_ok(json_object_get(b, ENVGW_F_PASSWORD)))
            return "basic wants {\"username\":FORMAT,\"password\":FORMAT}, "
                   "each with {field} placeholders";
        return NULL;
    }
    if (json_object_size(auth) != 2
        || !format_ok(json_object_get(auth, ENVGW_F_FORMAT)))
        return "auth wants a \"format\" with {field} placeholders and no "
               "control characters";
    if (h != NULL && (!json_is_string(h)
                      || !header_name_ok(json_string_value(h))))
        return "the header is not a header name the gateway may set";
    if (q != NULL && (!json_is_string(q)
                      || !query_name_ok(json_string_value(q))))
        return "the query argument name wants [A-Za-z0-9_.~-]";
    return NULL;
}

const char *check_oauth(json_t *oauth)
{
    const char *url = jstr(oauth, ENVGW_F_TOKEN_URL);
    const char *before = jstr(oauth, ENVGW_F_REFRESH_BEFORE);
    long long secs;

    if (!json_is_object(oauth) || url == NULL)
        return "oauth wants {\"token_url\":URL[,\"refresh_before\":D]}";
    if (strncmp(url, "https://", 8) != 0 && strncmp(url, "http://", 7) != 0)
        return "token_url must be an http:// or https:// URL";
    if (json_object_get(oauth, ENVGW_F_REFRESH_BEFORE) != NULL
        && (before == NULL || !parse_duration(before, &secs, false)))
        return "refresh_before must be a duration such as 5m";
    return NULL;
}

/* ---- commands ------------------------------------------------------------ */

static long long parse_when(const cmd_t *cmd, const char *s)
{
    long long secs;
    char *end;

    errno = 0;
    secs = strtoll(s, &end, 10);
    if (*s != '\0' && *end == '\0' && errno == 0 && secs > 0)
        return secs;
    if (parse_duration(s, &secs, false))
        return (long long) time(NULL) + secs;
    usage_error(cmd, "bad --expires-at '%s' (want Unix seconds or a "
                "duration such as 1h)", s);
}

int cmd_credentials_set(const cmd_t *cmd, const args_t *a)
{
    const char *acc = a->account, *env;
    json_t *fields, *rec = NULL;
    long long expires_at = 0;
    char *key;
    size_t i;
    txn_t *t;

    if ((a->nlist > 0) == (a->from_file != NULL))
        usage_error(cmd, "give --field NAME=VALUE (repeated) or --from-file");
    if (a->expires_at)
        expires_at = parse_when(cmd, a->expires_at);

    fields = pjson(json_object());
    if (a->from_file) {
        json_t *f = load_json_file(cmd, a->from_file, "credentials file"), *v;
        const char *name;

        if (!json_is_object(f) || json_object_size(f) == 0)
            usage_error(cmd, "credentials file %s: want a JSON object of "
                        "strings", a->from_file);
        json_object_foreach(f, name, v) {
            if (!valid_field(name) || !json_is_string(v))
                usage_error(cmd, "credentials file %s: field '%s' wants a "
                            "name of [A-Za-z0-9_] and a string", a->from_file,
                            name);
            json_object_set(fields, name, v);
        }
    }
    for (i = 0; i < a->nlist; i++) {
        const char *eq = strchr(a->list[i], '=');
        char *name = eq ? pfmt("%.*s", (int) (eq - a->list[i]), a->list[i])
                        : NULL;

        if (name == NULL || !valid_field(name))
            usage_error(cmd, "--field wants NAME=VALUE with a NAME of "
                        "[A-Za-z0-9_]");
        if (json_object_get(fields, name) != NULL)
            usage_error(cmd, "--field %s given twice", name);
        json_object_set_new(fields, name, json_string(eq + 1));
        if (json_object_get(fields, name) == NULL)
            usage_error(cmd, "--field %s: the value is not UTF-8", name);
    }

    load_keys(a->keys);
    key = key_of(ENVGW_KEY_CREDENTIALS, acc);
    for (t = txn_begin(); t != NULL; t = txn_commit(t)) {
        store_watch(key_of(ENVGW_KEY_ACCOUNT, acc));
        store_watch(key);
        env = account_env(acc, NULL);
        rec = seal(fields, acc, env, expires_at);
        txn_set_json(t, key, rec);
        txn_env(t, env);
    }

    if (g_opt.json) {
        json_t *out = pjson(json_object());
        json_object_set_new(out, "integrated_account_id", json_string(acc));
        json_object_set(out, ENVGW_F_KID, json_object_get(rec, ENVGW_F_KID));
        json_object_set(out, ENVGW_F_EXPIRES_AT,
                        json_object_get(rec, ENVGW_F_EXPIRES_AT));
        json_object_set_new(out, "fields", json_string(field_names(fields)));
        print_json(out);
    } else {
        printf("stored credentials of %s (fields %s; key %s; expires %s)\n",
               acc, field_names(fields), jstr(rec, ENVGW_F_KID),
               fmt_time(expires_at));
    }
    return 0;
}

int cmd_credentials_show(const cmd_t *cmd, const args_t *a)
{
    const char *acc = a->account, *why = NULL, *names = NULL;
    json_t *rec, *fields;

    (void) cmd;
    rec = load_json(key_of(ENVGW_KEY_CREDENTIALS, acc));
    if (rec == NULL)
        die("integrated account '%s' has no credentials", acc);
    if (a->keys || getenv("ENVGW_SECRET_KEYS")) {
        load_keys(a->keys);
        fields = unseal(rec, acc, account_env(acc, NULL), &why);
        if (fields != NULL)
            names = field_names(fields);
    }
    if (g_opt.json) {
        json_t *out = pjson(json_object());
        json_object_set_new(out, "integrated_account_id", json_string(acc));
        json_object_set(out, ENVGW_F_KID, json_object_get(rec, ENVGW_F_KID));
        json_object_set(out, ENVGW_F_EXPIRES_AT,
                        json_object_get(rec, ENVGW_F_EXPIRES_AT));
        if (names)
            json_object_set_new(out, "fields", json_string(names));
        if (why)
            json_object_set_new(out, "error", json_string(why));
        print_json(out);
    } else {
        printf("%s: key %s, expires %s", acc, jstr(rec, ENVGW_F_KID),
               fmt_time(record_expiry(rec)));
        if (names)
            printf(", fields %s", names);
        printf("\n");
        if (why)
            warnx_("cannot read the fields of %s: %s", acc, why);
    }
    return why ? EXIT_FAIL : 0;
}

int cmd_credentials_remove(const cmd_t *cmd, const args_t *a)
{
    char *key = key_of(ENVGW_KEY_CREDENTIALS, a->account);
    json_t *acc;
    txn_t *t;

    (void) cmd;
    for (t = txn_begin(); t != NULL; t = txn_commit(t)) {
        store_watch(key);
        if (store_get(key) == NULL)
            die("integrated account '%s' has no credentials", a->account);
        txn_del(t, key);
        acc = load_json(key_of(ENVGW_KEY_ACCOUNT, a->account));
        if (acc && jstr(acc, ENVGW_F_ENVIRONMENT_ID))
            txn_env(t, jstr(acc, ENVGW_F_ENVIRONMENT_ID));
    }
    printf("removed the credentials of %s\n", a->account);
    return 0;
}

int cmd_keys_rotate(const cmd_t *cmd, const args_t *a)
{
    size_t n, i, rotated = 0, kept = 0, failed = 0;
    char **accs;

    (void) cmd;
    load_keys(a->keys);
    accs = store_scan(ENVGW_KEY_CREDENTIALS, "", &n);

    for (i = 0; i < n; i++) {
        const char *acc = accs[i], *why = NULL;
        char *key = key_of(ENVGW_KEY_CREDENTIALS, acc);
        bool done = false, gone = false;
        txn_t *t;

        for (t = txn_begin(); t != NULL; t = txn_commit(t)) {
            json_t *rec, *fields, *acc_rec;
            const char *env;

            store_watch(key);
            store_watch(key_of(ENVGW_KEY_ACCOUNT, acc));
            rec = load_json(key);
            acc_rec = load_json(key_of(ENVGW_KEY_ACCOUNT, acc));
            done = false;
            if (rec == NULL) {
                gone = true;
                txn_discard(t);
                break;
            }
            if (jstr(rec, ENVGW_F_KID)
                && strcmp(jstr(rec, ENVGW_F_KID), keyring[0].kid) == 0) {
                done = true;
                txn_discard(t);
                break;
            }
            env = acc_rec ? jstr(acc_rec, ENVGW_F_ENVIRONMENT_ID) : NULL;
            if (env == NULL) {
                why = "its account is gone";
                txn_discard(t);
                break;
            }
            fields = unseal(rec, acc, env, &why);
            if (fields == NULL) {
                txn_discard(t);
                break;
            }
            txn_set_json(t, key, seal(fields, acc, env,
                                          record_expiry(rec)));
            txn_env(t, env);
        }
        if (why) {
            failed++;
            warnx_("cannot re-encrypt the credentials of %s: %s", acc, why);
        } else if (done) {
            kept++;
        } else if (!gone) {
            rotated++;
        }
    }
    printf("re-encrypted %zu credentials record%s with key %s (%zu already "
           "were, %zu failed)\n", rotated, rotated == 1 ? "" : "s",
           keyring[0].kid, kept, failed);
    return failed ? EXIT_FAIL : 0;
}

/* ---- refresh (RFC 6749 section 6) -------------------------------------- */

typedef struct {
    char   *data;
    size_t  len;
} body_t;

static size_t body_write(char *p, size_t size, size_t n, void *data)
{
    body_t *b = data;
    size_t add = size * n;
    char *nd;

    if (b->len + add > 1024 * 1024)
        return 0;
    nd = realloc(b->data, b->len + add + 1);
    if (nd == NULL)
        return 0;
    b->data = nd;
    memcpy(b->data + b->len, p, add);
    b->len += add;
    b->data[b->len] = '\0';
    return add;
}

static char *form_add(CURL *c, char *form, const char *name, const char *v)
{
    char *e = curl_easy_escape(c, v, 0), *out;

    if (e == NULL)
        die("out of memory");
    if (asprintf(&out, "%s%s%s=%s", form ? form : "", form ? "&" : "", name,
                 e) < 0)
        die("out of memory");
    if (form) {
        OPENSSL_cleanse(form, strlen(form));
        free(form);
    }
    OPENSSL_cleanse(e, strlen(e));
    curl_free(e);
    return out;
}

/*
 * POST the refresh_token grant; the new fields, or NULL with *why (never
 * holding a credential).
 */
static json_t *refresh_grant(const char *url, json_t *fields,
                             long long *expires_at, const char **why)
{
    const char *rt = jstr(fields, "refresh_token");
    const char *id = jstr(fields, "client_id");
    const char *secret = jstr(fields, "client_secret");
    body_t body = { NULL, 0 };
    char *form = NULL, errbuf[CURL_ERROR_SIZE] = "";
    long status = 0;
    CURL *c;
    CURLcode rc;
    json_t *resp, *out, *v;
    const char *name;

    if (rt == NULL) {
        *why = "no refresh_token field";
        return NULL;
    }
    c = curl_easy_init();
    if (c == NULL)
        die("cannot initialise libcurl");
    form = form_add(c, form, "grant_type", "refresh_token");
    form = form_add(c, form, "refresh_token", rt);
    if (id)
        form = form_add(c, form, "client_id", id);
    if (secret)
        form = form_add(c, form, "client_secret", secret);

    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, form);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, body_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &body);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 30L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_USERAGENT, "envgw/" ENVGW_VERSION);
    rc = curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(c);
    OPENSSL_cleanse(form, strlen(form));
    free(form);

    resp = body.data ? json_loads(body.data, 0, NULL) : NULL;
    if (body.data) {
        OPENSSL_cleanse(body.data, body.len);
        free(body.data);
    }
    if (resp)
        pjson(resp);

    if (rc != CURLE_OK) {
        *why = pfmt("no answer from the token endpoint (%s)",
                    errbuf[0] ? errbuf : curl_easy_strerror(rc));
        return NULL;
    }
    if (status != 200 || !json_is_string(json_object_get(resp,
                                                         "access_token"))) {
        const char *e = jstr(resp, "error");

        /* the error code is RFC 6749's vocabulary; never a token */
        *why = pfmt("the token endpoint answered %ld%s%s", status,
                    e && valid_field(e) ? " " : "",
                    e && valid_field(e) ? e : "");
        return NULL;
    }

    v = json_object_get(resp, "expires_in");
    *expires_at = json_is_integer(v) && json_integer_value(v) > 0
                  ? (long long) time(NULL) + json_integer_value(v) : 0;

    out = json_deep_copy_p(fields);
    json_object_foreach(resp, name, v) {
        if ((strcmp(name, "access_token") == 0
             || strcmp(name, "refresh_token") == 0) && json_is_string(v))
            json_object_set(out, name, v);
    }
    return out;
}

/*
 * SIGTERM and SIGINT are held while refreshing: a token endpoint may
 * rotate the refresh token with its answer, so a record is never left
 * between the grant and its write.  They are taken between records and
 * while --loop waits.
 */
static sigset_t refresh_signals;

static bool refresh_stopped(void)
{
    sigset_t pending;

    return sigpending(&pending) == 0
           && (sigismember(&pending, SIGTERM) == 1
               || sigismember(&pending, SIGINT) == 1);
}

/* --loop's wait: true when a signal to stop came instead */
static bool refresh_wait(long long secs)
{
    struct timespec ts = { (time_t) secs, 0 };
    int sig;

    for (;;) {
        sig = sigtimedwait(&refresh_signals, NULL, &ts);
        if (sig == SIGTERM || sig == SIGINT)
            return true;
        if (sig < 0 && errno == EINTR)
            continue;           /* the rest of the wait is not kept: */
        return false;           /* another signal only shortens it */
    }
}

/* one pass over every credentials record; how many failed */
static size_t refresh_round(long long within)
{
    size_t n, i, failed = 0, refreshed = 0;
    char **accs = store_scan(ENVGW_KEY_CREDENTIALS, "", &n);
    long long now = (long long) time(NULL);

    for (i = 0; i < n && !refresh_stopped(); i++) {
        const char *acc = accs[i], *why = NULL, *env, *integ, *url;
        char *key = key_of(ENVGW_KEY_CREDENTIALS, acc);
        const char *before;
        char *seen;
        json_t *rec, *acc_rec, *ir, *oauth, *fields, *nf;
        long long exp, ahead = within, secs, new_exp = 0;
        txn_t *t;

        seen = store_get(key);
        rec = seen ? parse_json(seen) : NULL;
        if (rec == NULL)
            continue;
        exp = record_expiry(rec);
        acc_rec = load_json(key_of(ENVGW_KEY_ACCOUNT, acc));
        env = acc_rec ? jstr(acc_rec, ENVGW_F_ENVIRONMENT_ID) : NULL;
        integ = acc_rec ? jstr(acc_rec, ENVGW_F_INTEGRATION) : NULL;
        ir = env && integ ? load_integration(env, integ) : NULL;
        oauth = ir ? json_object_get(ir, ENVGW_F_OAUTH) : NULL;
        url = jstr(oauth, ENVGW_F_TOKEN_URL);
        if (url == NULL || exp == 0)
            continue;
        before = jstr(oauth, ENVGW_F_REFRESH_BEFORE);
        if (before && parse_duration(before, &secs, false) && secs > ahead)
            ahead = secs;
        if (exp > now + ahead)
            continue;

        fields = unseal(rec, acc, env, &why);
        nf = fields ? refresh_grant(url, fields, &new_exp, &why) : NULL;
        if (nf == NULL) {
            failed++;
            fprintf(stderr, "envgw: refresh of the credentials of %s failed: "
                    "%s; the stored credentials are kept\n", acc, why);
            continue;
        }

        for (t = txn_begin(); t != NULL; t = txn_commit(t)) {
            char *cur;

            store_watch(key);
            cur = store_get(key);
            if (cur == NULL || strcmp(cur, seen) != 0) {
                why = "changed while refreshing";
                txn_discard(t);
                break;
            }
            txn_set_json(t, key, seal(nf, acc, env, new_exp));
            txn_env(t, env);
        }
        if (why) {
            fprintf(stderr, "envgw: the credentials of %s %s: not "
                    "overwritten\n", acc, why);
            continue;
        }
        refreshed++;
        printf("refreshed the credentials of %s (expires %s)\n", acc,
               fmt_time(new_exp));
    }
    if (refreshed == 0 && failed == 0)
        note("no credentials to refresh");
    fflush(stdout);
    return failed;
}

int cmd_credentials_refresh(const cmd_t *cmd, const args_t *a)
{
    long long within = 600, every = 0;
    size_t failed;

    if (a->within && !parse_duration(a->within, &within, true))
        usage_error(cmd, "bad --within '%s'", a->within);
    if (a->loop && !parse_duration(a->loop, &every, false))
        usage_error(cmd, "bad --loop '%s'", a->loop);
    load_keys(a->keys);
    curl_global_init(CURL_GLOBAL_DEFAULT);

    sigemptyset(&refresh_signals);
    sigaddset(&refresh_signals, SIGTERM);
    sigaddset(&refresh_signals, SIGINT);
    sigprocmask(SIG_BLOCK, &refresh_signals, NULL);

    for (;;) {
        failed = refresh_round(within);
        if (refresh_stopped() || every == 0 || refresh_wait(every))
            break;
    }
    if (refresh_stopped() || every)
        note("refresh stopped by a signal");
    curl_global_cleanup();
    return failed ? EXIT_FAIL : 0;
}
