/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * envgw — admin tool of env_gateway: writes the Redis records the nginx
 * module reads (environments, tokens, integrated accounts, integrations
 * and their methods) and publishes invalidations for every changed key.
 *
 * This file: global options, the command table, argument parsing, help.
 */

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "envgw.h"

envgw_opts_t g_opt;

static const cmd_t commands[] = {
    { "env", "create", cmd_env_create,
      "--team TEAM [--id ENV_ID] NAME",
      "create an environment (prints its environment_id)",
      "NAME is the environment's display name (production, staging, ...).\n"
      "The environment_id is env_<random hex> unless --id chooses it.\n"
      "TEAM is recorded as the environment's team_id.",
      { NEED("team", team, CHECK_TEAM_ID), POS("NAME", name, CHECK_ENV_NAME),
        OPT("id", env, CHECK_ENV_ID) } },
    { "env", "list", cmd_env_list,
      "[--team TEAM]",
      "list environments", NULL,
      { OPT("team", team, CHECK_TEAM_ID) } },
    { "env", "delete", cmd_env_delete,
      "ENV [--force]",
      "delete an environment",
      "An environment that still has integrations, integrated accounts,\n"
      "tenants or unrevoked tokens is refused unless --force is given;\n"
      "then its tokens are revoked (their records stay, marked revoked) and\n"
      "every other record of ENV is deleted, all in one transaction.",
      { POS("ENV", env, CHECK_ENV_ID), FLAG("force", force) } },
    { "env", "set-limit", cmd_env_set_limit,
      "ENV N/WINDOW|none",
      "set or remove an environment's own rate limit",
      "N/WINDOW: N requests a WINDOW (20000/m, 500/10s) for all the\n"
      "environment's requests, which replaces the environment limit of the\n"
      "gateway's locations (the record's rate_limit); none removes it.",
      { POS("ENV", env, CHECK_ENV_ID), POS("LIMIT", rate_limit, CHECK_NONE) } },
    { "token", "create", cmd_token_create,
      "ENV [--kind data|admin|account] [--ttl DURATION] [--account ID] "
      "[--rate-limit N/WINDOW]",
      "mint a token in ENV; the raw token is printed once",
      "--kind     data (default), admin (team-scoped) or account\n"
      "--ttl      lifetime: N[s|m|h|d], e.g. 30d; default: no expiry, or 1h\n"
      "           for account tokens\n"
      "--account  the integrated account of an account token (required for\n"
      "           --kind account; the account must belong to ENV)\n"
      "--rate-limit  the token's own rate limit, N/WINDOW (500/10s, 100/m):\n"
      "           it replaces the gateway's token limit for this token\n"
      "Only the SHA-256 of the token is stored; it cannot be shown again.",
      { POS("ENV", env, CHECK_ENV_ID), OPT("kind", kind, CHECK_NONE),
        OPT("ttl", ttl, CHECK_NONE),
        OPT("account", account, CHECK_ACCOUNT_ID),
        OPT("rate-limit", rate_limit, CHECK_NONE) } },
    { "token", "list", cmd_token_list,
      "ENV [--expiring DURATION]",
      "list the tokens of ENV (never the raw tokens)",
      "Shows created_at, expires_at and last_used_at (the time the gateway\n"
      "last recorded a use of the token, if it records them).\n"
      "--expiring  only active tokens that expire within DURATION, e.g. 7d",
      { POS("ENV", env, CHECK_ENV_ID),
        OPT("expiring", expiring, CHECK_NONE) } },
    { "token", "revoke", cmd_token_revoke,
      "TOKEN_ID",
      "revoke a token at once (the record stays, marked revoked)",
      "Revoking a token that is already revoked says so and exits 0.",
      { POS("TOKEN_ID", token, CHECK_TOKEN_ID) } },
    { "token", "rotate", cmd_token_rotate,
      "TOKEN_ID --grace DURATION [--ttl DURATION]",
      "mint a replacement token; the old one expires after the grace",
      "The new token has the same environment, kind, team and account.\n"
      "--grace  how long the old token keeps working: N[s|m|h|d]; 0 ends it\n"
      "         now (an earlier expiry of the old token is kept)\n"
      "--ttl    lifetime of the new token; default: the old token's\n"
      "         lifetime (1h for account tokens), or no expiry",
      { POS("TOKEN_ID", token, CHECK_TOKEN_ID), OPT("grace", grace, CHECK_NONE),
        OPT("ttl", ttl, CHECK_NONE) } },
    { "token", "set-limit", cmd_token_set_limit,
      "TOKEN_ID N/WINDOW|none",
      "set or remove a token's own rate limit",
      "N/WINDOW: N requests a WINDOW (500/10s, 100/m, 5000/1h), which\n"
      "replaces the token limit of the gateway's locations for this token\n"
      "(the record's rate_limit); none removes it.  Gateways drop their\n"
      "cached copy at once.",
      { POS("TOKEN_ID", token, CHECK_TOKEN_ID),
        POS("LIMIT", rate_limit, CHECK_NONE) } },
    { "account", "add", cmd_account_add,
      "ENV ID --integration I --tenant T",
      "add an integrated account and index it under its tenant",
      "Account ids are global: an id that exists in any environment is\n"
      "refused, as is a second I account for the same tenant in ENV.",
      { POS("ENV", env, CHECK_ENV_ID), POS("ID", account, CHECK_ACCOUNT_ID),
        NEED("integration", integration, CHECK_INTEGRATION),
        NEED("tenant", tenant, CHECK_TENANT) } },
    { "account", "remove", cmd_account_remove,
      "ID",
      "remove an integrated account and its tenant index entry",
      "Its account tokens are revoked in the same transaction.",
      { POS("ID", account, CHECK_ACCOUNT_ID) } },
    { "account", "disable", cmd_account_disable,
      "ID",
      "disable an integrated account (it answers like an unknown one)",
      "Sets the record's status to \"disabled\"; 'envgw account enable'\n"
      "makes it active again.  Its tokens are kept.",
      { POS("ID", account, CHECK_ACCOUNT_ID) } },
    { "account", "enable", cmd_account_enable,
      "ID",
      "make a disabled integrated account active again", NULL,
      { POS("ID", account, CHECK_ACCOUNT_ID) } },
    { "account", "list", cmd_account_list,
      "ENV",
      "list the integrated accounts of ENV", NULL,
      { POS("ENV", env, CHECK_ENV_ID) } },
    { "integration", "set", cmd_integration_set,
      "ENV I [--upstream URL] [--resources FILE] [--auth JSON] "
      "[--oauth JSON]",
      "install or update integration I in ENV",
      "--upstream   http:// or https:// URL (required for a new integration)\n"
      "--resources  JSON file (- for stdin) replacing all resources:\n"
      "             {\"contacts\":{\"list\":{\"method\":\"GET\",\"path\":"
      "\"/crm/v3/objects/contacts\"}}}\n"
      "Without --resources the existing resources are kept.\n"
      "--auth       how the account's credentials go upstream (JSON), or\n"
      "             none: {\"header\":\"Authorization\",\"format\":\"Bearer\n"
      "             {access_token}\"}, {\"query\":\"hapikey\",\"format\":\n"
      "             \"{api_key}\"} or {\"basic\":{\"username\":\"{client_id}\",\n"
      "             \"password\":\"{client_secret}\"}}\n"
      "--oauth      OAuth2 refresh settings (JSON), or none:\n"
      "             {\"token_url\":\"https://...\",\"refresh_before\":\"5m\"}",
      { POS("ENV", env, CHECK_ENV_ID), POS("I", integration, CHECK_INTEGRATION),
        OPT("upstream", upstream, CHECK_NONE),
        OPT("resources", resources, CHECK_NONE),
        OPT("auth", auth, CHECK_NONE), OPT("oauth", oauth, CHECK_NONE) } },
    { "integration", "list", cmd_integration_list,
      "ENV",
      "list the integrations of ENV", NULL,
      { POS("ENV", env, CHECK_ENV_ID) } },
    { "integration", "show", cmd_integration_show,
      "ENV I",
      "print the record of integration I in ENV", NULL,
      { POS("ENV", env, CHECK_ENV_ID),
        POS("I", integration, CHECK_INTEGRATION) } },
    { "integration", "remove", cmd_integration_remove,
      "ENV I",
      "remove integration I from ENV, with all its methods",
      "Accounts of the integration stay; the gateway answers their routes\n"
      "404 method_not_found until the integration is installed again.",
      { POS("ENV", env, CHECK_ENV_ID),
        POS("I", integration, CHECK_INTEGRATION) } },
    { "method", "set", cmd_method_set,
      "ENV I RESOURCE METHOD HTTP_METHOD PATH",
      "add or change a method of integration I in ENV",
      "HTTP_METHOD is one of GET POST PUT PATCH DELETE HEAD OPTIONS.\n"
      "PATH starts with /, may hold {id} and {name} placeholders, and has no\n"
      "whitespace, ?, # or . / .. segments.",
      { POS("ENV", env, CHECK_ENV_ID), POS("I", integration, CHECK_INTEGRATION),
        POS("RESOURCE", resource, CHECK_RESOURCE),
        POS("METHOD", method, CHECK_METHOD),
        POS("HTTP_METHOD", verb, CHECK_NONE),
        POS("PATH", path, CHECK_NONE) } },
    { "method", "remove", cmd_method_remove,
      "ENV I RESOURCE METHOD",
      "remove a method of integration I in ENV", NULL,
      { POS("ENV", env, CHECK_ENV_ID), POS("I", integration, CHECK_INTEGRATION),
        POS("RESOURCE", resource, CHECK_RESOURCE),
        POS("METHOD", method, CHECK_METHOD) } },
    { "diff", NULL, cmd_diff,
      "ENV_A ENV_B [--upstreams]",
      "integrations, resources and methods that differ between two envs",
      "One line per difference:\n"
      "  + ...  only in ENV_A (what 'envgw promote ENV_A ENV_B' would add)\n"
      "  - ...  only in ENV_B\n"
      "  ~ ...  in both, defined differently\n"
      "Upstreams are per environment and compared only with --upstreams.\n"
      "Exit status: 0 equal, 1 different, 2 error.",
      { POS("ENV_A", from, CHECK_ENV_ID), POS("ENV_B", to, CHECK_ENV_ID),
        FLAG("upstreams", upstreams) } },
    { "promote", NULL, cmd_promote,
      "FROM TO [--integration I] [--method [RESOURCE.]METHOD] [--dry-run] "
      "[--upstream URL] [--auth]",
      "copy methods defined in FROM into TO",
      "Adds or overwrites, in TO's integration records, the methods FROM\n"
      "defines (all of them, or those of --integration / --method); TO's own\n"
      "upstream and its other methods are kept.  When TO lacks the\n"
      "integration it is created with --upstream, or FROM's upstream (with a\n"
      "warning).  --dry-run prints the change and writes nothing.\n"
      "--auth also copies the integrations' auth and oauth declarations\n"
      "(never credentials: those belong to each account).",
      { POS("FROM", from, CHECK_ENV_ID), POS("TO", to, CHECK_ENV_ID),
        OPT("integration", integration, CHECK_INTEGRATION),
        OPT("method", method, CHECK_NONE), FLAG("dry-run", dry_run),
        OPT("upstream", upstream, CHECK_NONE), FLAG("auth", with_auth) } },
    { "export", NULL, cmd_export,
      "ENV",
      "print ENV as one JSON document (for 'envgw apply')",
      "The document holds the environment record, its integrations (upstream,\n"
      "resources, methods, auth declarations), integrated accounts and\n"
      "tenants, with keys sorted so that it diffs well in git.  Never tokens\n"
      "or credentials.",
      { POS("ENV", env, CHECK_ENV_ID) } },
    { "apply", NULL, cmd_apply,
      "FILE [--env ENV] [--prune] [--dry-run]",
      "make an environment what an exported document says",
      "Prints the plan (+ create, ~ change, - remove), then writes it in one\n"
      "transaction, publishing every changed key.  FILE is an 'envgw export'\n"
      "document (- for stdin).\n"
      "--env      apply to ENV instead of the document's environment: the\n"
      "           whole-environment promote.  Only integrations are applied\n"
      "           then (accounts and tenants belong to their environment),\n"
      "           and an integration ENV already has keeps its upstream.\n"
      "--prune    also remove what the document does not have (integrations,\n"
      "           methods, fields, accounts with their account tokens,\n"
      "           tenants); without it nothing is removed\n"
      "--dry-run  print the plan and write nothing",
      { POS("FILE", file, CHECK_NONE), OPT("env", env, CHECK_ENV_ID),
        FLAG("prune", prune), FLAG("dry-run", dry_run) } },
    { "credentials", "set", cmd_credentials_set,
      "ACCOUNT (--field NAME=VALUE ... | --from-file F) [--expires-at T] "
      "[--keys FILE]",
      "encrypt and store the upstream credentials of an integrated account",
      "The fields (access_token, refresh_token, api_key, client_id, ...)\n"
      "replace the account's credentials, encrypted with AES-256-GCM under\n"
      "the first key of the keyring and bound to the account and its\n"
      "environment.  --from-file reads a JSON object of strings (- for\n"
      "stdin).  --expires-at: Unix seconds, or a duration from now (1h).\n"
      "The keyring: --keys FILE or ENVGW_SECRET_KEYS (lines \"<kid>\n"
      "<base64 of 32 bytes>\", as env_gateway_secret_keys).  The audit trail\n"
      "records field names, never values.",
      { POS("ACCOUNT", account, CHECK_ACCOUNT_ID), LIST("field"),
        OPT("from-file", from_file, CHECK_NONE),
        OPT("expires-at", expires_at, CHECK_NONE),
        OPT("keys", keys, CHECK_NONE) } },
    { "credentials", "show", cmd_credentials_show,
      "ACCOUNT [--keys FILE]",
      "show the key id, expiry and field names of an account's credentials",
      "Values are never shown.  Without a keyring the field names are not\n"
      "known (they are encrypted too).",
      { POS("ACCOUNT", account, CHECK_ACCOUNT_ID),
        OPT("keys", keys, CHECK_NONE) } },
    { "credentials", "remove", cmd_credentials_remove,
      "ACCOUNT",
      "remove an account's credentials (its routes then answer 503)", NULL,
      { POS("ACCOUNT", account, CHECK_ACCOUNT_ID) } },
    { "credentials", "refresh", cmd_credentials_refresh,
      "[--within DURATION] [--loop DURATION] [--keys FILE]",
      "refresh OAuth2 access tokens that expire soon",
      "For every credentials record expiring within DURATION (default 10m,\n"
      "or the integration's oauth.refresh_before if longer) whose\n"
      "integration declares \"oauth\", POSTs the refresh_token grant\n"
      "(RFC 6749 section 6) to its token_url with the fields client_id,\n"
      "client_secret and refresh_token, and stores the new access_token\n"
      "(and refresh_token, expiry).  An error (400 invalid_grant, 5xx, no\n"
      "answer) leaves the old record and is reported; the exit status is\n"
      "then 1.  --loop repeats every DURATION (a service; see the systemd\n"
      "example in the package).  SIGTERM and SIGINT end it between\n"
      "records: a grant under way is stored first.",
      { OPT("within", within, CHECK_NONE), OPT("loop", loop, CHECK_NONE),
        OPT("keys", keys, CHECK_NONE) } },
    { "keys", "rotate", cmd_keys_rotate,
      "[--keys FILE]",
      "re-encrypt every credentials record with the keyring's first key",
      "Put the new key first in the keyring, reload nginx (it reads all\n"
      "keys), run this, then remove the old key.  Records already under the\n"
      "first key are left as they are.",
      { OPT("keys", keys, CHECK_NONE) } },
    { "audit", NULL, cmd_audit,
      "[--since T] [--env ENV]",
      "show the audit trail of envgw writes",
      "Every envgw write appends to the Redis stream <prefix>audit (time,\n"
      "actor, command, environments, changed keys) in its own transaction.\n"
      "--since  T is a duration back from now (30m, 12h, 7d), a date\n"
      "         (2025-11-28), a UTC time (2025-11-28T10:00:00Z) or Unix\n"
      "         seconds\n"
      "--env    only writes that touched ENV",
      { OPT("since", since, CHECK_NONE), OPT("env", env, CHECK_ENV_ID) } },
};

#define NCOMMANDS (sizeof(commands) / sizeof(commands[0]))

#define STR_(x)           #x
#define STR(x)            STR_(x)
#define AUDIT_MAXLEN_STR  STR(AUDIT_MAXLEN_DEFAULT)

static const char global_help[] =
    "Global options (before or after the command):\n"
    "  --redis ADDR      host:port, [ipv6]:port or unix:/path "
    "(env ENVGW_REDIS;\n"
    "                    default 127.0.0.1:6379)\n"
    "  --password PASS   Redis password (env ENVGW_REDIS_PASSWORD)\n"
    "  --password-file F the Redis password from file F, its trailing newline\n"
    "                    removed (env ENVGW_REDIS_PASSWORD_FILE)\n"
    "  --user USER       Redis ACL user: AUTH USER PASSWORD (env\n"
    "                    ENVGW_REDIS_USER)\n"
    "  --tls             TLS to Redis, the certificate verified (env\n"
    "                    ENVGW_REDIS_TLS=1)\n"
    "  --cacert FILE     the CA certificates to verify with (env\n"
    "                    ENVGW_REDIS_CACERT; default: the system's)\n"
    "  --tls-name NAME   the name the certificate must have, sent as SNI\n"
    "                    (env ENVGW_REDIS_TLS_NAME; default: the host)\n"
    "  --cert FILE --key FILE  a client certificate and its key (env\n"
    "                    ENVGW_REDIS_CERT, ENVGW_REDIS_KEY)\n"
    "  --cluster         --redis is a node of a Redis Cluster: each key at\n"
    "                    its node, writes ordered (env ENVGW_REDIS_CLUSTER=1)\n"
    "  --db N            Redis database number (default 0)\n"
    "  --prefix P        key prefix (env ENVGW_PREFIX; default \""
    ENVGW_DEFAULT_PREFIX "\")\n"
    "  --json            machine-readable output (errors too: one JSON\n"
    "                    object a line on stderr)\n"
    "  --actor NAME      who writes, for the audit trail (default: the OS "
    "user)\n"
    "  --audit-maxlen N  keep about N audit entries (env ENVGW_AUDIT_MAXLEN;\n"
    "                    default " AUDIT_MAXLEN_STR ")\n"
    "  --help            help for the tool or a command\n"
    "  --version         the version of envgw\n";

const char *cmd_fullname(const cmd_t *cmd)
{
    return cmd->name ? pfmt("%s %s", cmd->group, cmd->name)
                     : cmd->group;
}

static void print_cmd_help(const cmd_t *cmd)
{
    printf("usage: envgw %s %s\n\n%s.\n", cmd_fullname(cmd), cmd->usage,
           cmd->summary);
    if (cmd->help)
        printf("\n%s\n", cmd->help);
    printf("\n%s", global_help);
}

static void print_tool_help(FILE *f, const char *group)
{
    size_t i;

    fprintf(f, "usage: envgw [global options] COMMAND [arguments]\n\n"
               "Writes the Redis records env_gateway reads, and publishes "
               "each changed key\non <prefix>invalidate.\n\nCommands:\n");
    for (i = 0; i < NCOMMANDS; i++) {
        const cmd_t *c = &commands[i];
        if (group && strcmp(group, c->group) != 0)
            continue;
        fprintf(f, "  envgw %s %s\n      %s\n", cmd_fullname(c), c->usage,
                c->summary);
    }
    fprintf(f, "\n%s\n'envgw COMMAND --help' describes a command.\n"
               "Exit status: 0 ok, 1 failure, 2 bad usage.\n", global_help);
}

void usage_error(const cmd_t *cmd, const char *fmt, ...)
{
    va_list ap;
    char *msg;

    va_start(ap, fmt);
    if (vasprintf(&msg, fmt, ap) < 0)
        msg = NULL;
    va_end(ap);
    pool_keep(msg, free);
    if (cmd)
        report_error(EXIT_USAGE, pfmt("usage: envgw %s %s", cmd_fullname(cmd),
                                      cmd->usage),
                     pfmt("%s: %s", cmd_fullname(cmd), msg));
    else
        report_error(EXIT_USAGE, "try 'envgw --help'", msg);
    exit(EXIT_USAGE);
}

/* An unknown option is named up to its '=': a misspelled --password=,
 * --field=... must not put the value on the terminal or in a journal. */
static void __attribute__((noreturn))
unknown_option(const cmd_t *cmd, const char *arg)
{
    const char *eq = strchr(arg, '=');

    if (eq != NULL)
        usage_error(cmd, "unknown option '%.*s' (its value not shown)",
                    (int) (eq - arg + 1), arg);
    usage_error(cmd, "unknown option '%s'", arg);
}

/* An actor is written into the audit trail and shown by 'envgw audit'. */
static bool valid_actor(const char *s)
{
    size_t n = strlen(s);

    if (n == 0 || n > 128)
        return false;
    for (; *s; s++) {
        if ((unsigned char) *s < 0x20 || *s == 0x7f)
            return false;
    }
    return true;
}

static bool parse_maxlen(const char *s, long *out)
{
    char *end;
    long v;

    if (!isdigit((unsigned char) s[0]))
        return false;
    v = strtol(s, &end, 10);
    if (*end != '\0' || v < 1 || v > 1000000000L)
        return false;
    *out = v;
    return true;
}

/* --password and --password-file as given (they beat the environment) */
static const char *password_opt, *password_file_opt;

static const char *nonempty(const cmd_t *cmd, const char *name,
                            const char *val)
{
    if (val[0] == '\0')
        usage_error(cmd, "--%s needs a value", name);
    return val;
}

/* An environment variable, NULL when unset or empty. */
static const char *env_of(const char *name)
{
    const char *v = getenv(name);

    return v != NULL && v[0] != '\0' ? v : NULL;
}

/* The password from a file: its trailing newline is not part of it. */
static const char *read_password_file(const char *path)
{
    char buf[4097];
    size_t n;
    FILE *f = fopen(path, "r");

    if (f == NULL)
        die("cannot read the password file %s: %s", path, strerror(errno));
    n = fread(buf, 1, sizeof(buf) - 1, f);
    if (ferror(f) || !feof(f)) {
        const char *why = ferror(f) ? strerror(errno)
                                    : "larger than 4096 bytes";
        fclose(f);
        die("cannot read the password file %s: %s", path, why);
    }
    fclose(f);
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        n--;
    if (n == 0)
        die("the password file %s is empty", path);
    if (memchr(buf, '\0', n) != NULL)
        die("the password file %s holds a NUL byte", path);
    buf[n] = '\0';
    return pstrdup(buf);
}

/*
 * The Redis connection's options, once every option is read: TLS and its
 * files, the ACL user, the password from --password, --password-file or
 * their environment variables (an option beats the environment; both
 * forms at one level is an error).
 */
static void redis_options(void)
{
    const char *env_pw = env_of("ENVGW_REDIS_PASSWORD");
    const char *env_pwfile = env_of("ENVGW_REDIS_PASSWORD_FILE");
    const char *v;

    if (password_opt && password_file_opt)
        usage_error(NULL, "--password and --password-file: use one");
    if (password_opt)
        g_opt.password = password_opt;
    else if (password_file_opt)
        g_opt.password = read_password_file(password_file_opt);
    else if (env_pw && env_pwfile)
        usage_error(NULL, "ENVGW_REDIS_PASSWORD and "
                    "ENVGW_REDIS_PASSWORD_FILE: use one");
    else if (env_pwfile)
        g_opt.password = read_password_file(env_pwfile);
    else
        g_opt.password = env_pw;

    v = env_of("ENVGW_REDIS_CLUSTER");
    if (v != NULL && !g_opt.cluster) {
        if (strcmp(v, "1") == 0 || strcmp(v, "yes") == 0
            || strcmp(v, "on") == 0 || strcmp(v, "true") == 0)
            g_opt.cluster = true;
        else if (strcmp(v, "0") != 0 && strcmp(v, "no") != 0
                 && strcmp(v, "off") != 0 && strcmp(v, "false") != 0)
            usage_error(NULL, "ENVGW_REDIS_CLUSTER wants 1 or 0, not '%s'",
                        v);
    }
    if (g_opt.cluster && strncmp(g_opt.redis, "unix:", 5) == 0)
        usage_error(NULL, "--cluster: --redis names a cluster node, "
                    "host:port");

    v = env_of("ENVGW_REDIS_TLS");
    if (v != NULL && !g_opt.tls) {
        if (strcmp(v, "1") == 0 || strcmp(v, "yes") == 0
            || strcmp(v, "on") == 0 || strcmp(v, "true") == 0)
            g_opt.tls = true;
        else if (strcmp(v, "0") != 0 && strcmp(v, "no") != 0
                 && strcmp(v, "off") != 0 && strcmp(v, "false") != 0)
            usage_error(NULL, "ENVGW_REDIS_TLS wants 1 or 0, not '%s'", v);
    }
    if (g_opt.user == NULL)
        g_opt.user = env_of("ENVGW_REDIS_USER");
    if (g_opt.cacert == NULL)
        g_opt.cacert = env_of("ENVGW_REDIS_CACERT");
    if (g_opt.tls_name == NULL)
        g_opt.tls_name = env_of("ENVGW_REDIS_TLS_NAME");
    if (g_opt.cert == NULL)
        g_opt.cert = env_of("ENVGW_REDIS_CERT");
    if (g_opt.key == NULL)
        g_opt.key = env_of("ENVGW_REDIS_KEY");

    if (!g_opt.tls && (g_opt.cacert || g_opt.tls_name || g_opt.cert
                       || g_opt.key))
        usage_error(NULL, "--cacert, --tls-name, --cert and --key need "
                    "--tls");
    if ((g_opt.cert == NULL) != (g_opt.key == NULL))
        usage_error(NULL, "--cert and --key go together");
    if (g_opt.user && (g_opt.password == NULL || g_opt.password[0] == '\0'))
        usage_error(NULL, "--user needs --password or --password-file");
}

/*
 * One global option at argv[*i]: 1 if consumed (advances *i past a value),
 * 0 if it is not a global option.
 */
static int global_option(const cmd_t *cmd, int argc, char **argv, int *i)
{
    static const char *with_arg[] = { "redis", "password", "db", "prefix",
                                      "actor", "audit-maxlen", "user",
                                      "password-file", "cacert", "tls-name",
                                      "cert", "key", NULL };
    const char *a = argv[*i], *name, *eq, *val = NULL;
    char *n;
    int k;

    if (strncmp(a, "--", 2) != 0)
        return 0;
    name = a + 2;
    eq = strchr(name, '=');
    n = eq ? pfmt("%.*s", (int) (eq - name), name) : pstrdup(name);
    if (strcmp(n, "json") == 0) {
        if (eq)
            usage_error(cmd, "--json takes no value");
        g_opt.json = true;
        return 1;
    }
    if (strcmp(n, "tls") == 0) {
        if (eq)
            usage_error(cmd, "--tls takes no value");
        g_opt.tls = true;
        return 1;
    }
    if (strcmp(n, "cluster") == 0) {
        if (eq)
            usage_error(cmd, "--cluster takes no value");
        g_opt.cluster = true;
        return 1;
    }
    for (k = 0; with_arg[k]; k++) {
        if (strcmp(n, with_arg[k]) == 0)
            break;
    }
    if (with_arg[k] == NULL)
        return 0;
    if (eq)
        val = eq + 1;
    else if (*i + 1 < argc)
        val = argv[++*i];
    else
        usage_error(cmd, "--%s needs a value", n);

    if (strcmp(n, "redis") == 0) {
        if (val[0] == '\0')
            usage_error(cmd, "--redis needs host:port");
        g_opt.redis = val;
    } else if (strcmp(n, "password") == 0) {
        password_opt = val;
    } else if (strcmp(n, "password-file") == 0) {
        password_file_opt = nonempty(cmd, n, val);
    } else if (strcmp(n, "user") == 0) {
        g_opt.user = nonempty(cmd, n, val);
    } else if (strcmp(n, "cacert") == 0) {
        g_opt.cacert = nonempty(cmd, n, val);
    } else if (strcmp(n, "tls-name") == 0) {
        g_opt.tls_name = nonempty(cmd, n, val);
    } else if (strcmp(n, "cert") == 0) {
        g_opt.cert = nonempty(cmd, n, val);
    } else if (strcmp(n, "key") == 0) {
        g_opt.key = nonempty(cmd, n, val);
    } else if (strcmp(n, "prefix") == 0) {
        g_opt.prefix = val;
    } else if (strcmp(n, "actor") == 0) {
        if (!valid_actor(val))
            usage_error(cmd, "bad --actor '%s' (want 1-128 printable "
                        "characters)", val);
        g_opt.actor = val;
    } else if (strcmp(n, "audit-maxlen") == 0) {
        if (!parse_maxlen(val, &g_opt.audit_maxlen))
            usage_error(cmd, "--audit-maxlen wants a number of entries from 1 "
                        "to 1000000000, not '%s'", val);
    } else {
        char *end;
        long db = strtol(val, &end, 10);
        if (val[0] == '\0' || *end != '\0' || db < 0 || db > 1000000)
            usage_error(cmd, "--db wants a database number, not '%s'", val);
        g_opt.db = (int) db;
    }
    return 1;
}

/* What each CHECK_ value must look like, for parse_args(). */
#define ID_RULE     "(want [A-Za-z0-9_.-], 1-128 characters)"
#define NAME_RULE   "(want [A-Za-z0-9_-], 1-64 characters)"

static const struct {
    const char *what;
    bool      (*ok)(const char *s);
    const char *rule;
} checks[] = {
    [CHECK_ENV_ID]      = { "environment id", valid_id, ID_RULE },
    [CHECK_TEAM_ID]     = { "team id", valid_id, ID_RULE },
    [CHECK_ACCOUNT_ID]  = { "account id", valid_id, ID_RULE },
    [CHECK_TOKEN_ID]    = { "token id", valid_id, ID_RULE },
    [CHECK_ENV_NAME]    = { "environment name", valid_env_name,
                            "(want [A-Za-z0-9_.-], 1-64 characters)" },
    [CHECK_INTEGRATION] = { "integration name", valid_name, NAME_RULE },
    [CHECK_RESOURCE]    = { "resource name", valid_name, NAME_RULE },
    [CHECK_METHOD]      = { "method name", valid_name, NAME_RULE },
    [CHECK_TENANT]      = { "tenant id", valid_tenant,
                            "(no spaces, /, ?, #, % or ..; 1-256 characters)" },
};

static const char **field_of(args_t *a, const arg_t *spec)
{
    return (const char **) (void *) ((char *) a + spec->field);
}

/* The option of cmd's table that argument "--NAME[=VALUE]" names, or NULL. */
static const arg_t *find_option(const cmd_t *cmd, const char *arg)
{
    const arg_t *s;
    size_t len;

    for (s = cmd->args; s < cmd->args + ARGS_MAX && s->kind; s++) {
        len = strlen(s->name);
        if (s->kind != ARG_POS && strncmp(arg + 2, s->name, len) == 0
            && (arg[2 + len] == '\0' || arg[2 + len] == '='))
            return s;
    }
    return NULL;
}

/* A value as a shell would need it: quoted when it holds anything but
 * plain characters. */
static const char *shell_word(const char *v)
{
    const char *p;
    char *q, *o;

    if (v[0] != '\0' && strspn(v, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmn"
                                   "opqrstuvwxyz0123456789_-.:/@%+=,")
                         == strlen(v))
        return v;
    /* 'it'\''s': a quote becomes four characters */
    q = pool_keep(malloc(strlen(v) * 4 + 3), free);
    o = q;
    *o++ = '\'';
    for (p = v; *p; p++) {
        if (*p == '\'') {
            memcpy(o, "'\\''", 4);
            o += 4;
        } else {
            *o++ = *p;
        }
    }
    *o++ = '\'';
    *o = '\0';
    return q;
}

/* The command as the audit trail records it: the command words, its
 * positionals, then the options given, in the order of its table; never
 * a global option (such as --password). */
static const char *command_line(const cmd_t *cmd, args_t *a)
{
    const char *line = cmd_fullname(cmd);
    const arg_t *s;
    int pass;

    for (pass = 0; pass < 2; pass++) {
        for (s = cmd->args; s < cmd->args + ARGS_MAX && s->kind; s++) {
            const char *v = *field_of(a, s);

            if (s->kind == ARG_LIST) {
                size_t k;

                /* names only: the values may be secrets */
                for (k = 0; pass == 1 && k < a->nlist; k++)
                    line = pfmt("%s --%s %s", line, s->name,
                                shell_word(pfmt("%.*s",
                                    (int) strcspn(a->list[k], "="),
                                    a->list[k])));
                continue;
            }
            if (v == NULL || (s->kind == ARG_POS) != (pass == 0))
                continue;
            if (s->kind == ARG_POS)
                line = pfmt("%s %s", line, shell_word(v));
            else if (s->kind == ARG_FLAG)
                line = pfmt("%s --%s", line, s->name);
            else
                line = pfmt("%s --%s %s", line, s->name, shell_word(v));
        }
    }
    return line;
}

/*
 * Fills a from argv (after the command words) as cmd's table says, then
 * checks every value the table gives a CHECK_ for.  Global options are
 * accepted anywhere; --help prints the command's help and exits 0.
 */
static void parse_args(const cmd_t *cmd, int argc, char **argv, args_t *a)
{
    const arg_t *s, *positional[ARGS_MAX];
    const char **f;
    char *extra = NULL;
    size_t npos = 0, n = 0;
    bool only_pos = false;
    int i;

    for (s = cmd->args; s < cmd->args + ARGS_MAX && s->kind; s++) {
        if (s->kind == ARG_POS)
            positional[npos++] = s;
    }

    for (i = 0; i < argc; i++) {
        const char *arg = argv[i], *eq;

        if (only_pos || arg[0] != '-' || strcmp(arg, "-") == 0) {
            if (n < npos)
                *field_of(a, positional[n]) = arg;
            else if (extra == NULL)
                extra = argv[i];
            n++;
            continue;
        }
        if (strcmp(arg, "--") == 0) {
            only_pos = true;
            continue;
        }
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            print_cmd_help(cmd);
            pool_drain();
            exit(0);
        }
        if (global_option(cmd, argc, argv, &i))
            continue;
        s = strncmp(arg, "--", 2) == 0 ? find_option(cmd, arg) : NULL;
        if (s == NULL)
            unknown_option(cmd, arg);
        eq = arg[2 + strlen(s->name)] == '=' ? arg + 3 + strlen(s->name)
                                              : NULL;
        if (s->kind == ARG_LIST) {
            if (a->list == NULL)
                a->list = pool_keep(calloc((size_t) argc + 1,
                                           sizeof(char *)), free);
            if (a->list == NULL)
                die("out of memory");
            if (eq == NULL && i + 1 >= argc)
                usage_error(cmd, "--%s needs a value", s->name);
            a->list[a->nlist++] = eq ? eq : argv[++i];
            continue;
        }
        f = field_of(a, s);
        if (*f != NULL)
            usage_error(cmd, "--%s given twice", s->name);
        if (s->kind == ARG_FLAG) {
            if (eq)
                usage_error(cmd, "--%s takes no value", s->name);
            *f = "1";
        } else if (eq) {
            *f = eq;
        } else if (i + 1 < argc) {
            *f = argv[++i];
        } else {
            usage_error(cmd, "--%s needs a value", s->name);
        }
    }
    if (n < npos)
        usage_error(cmd, "missing arguments");
    if (extra != NULL)
        usage_error(cmd, "unexpected argument '%s'", extra);

    g_opt.command = command_line(cmd, a);

    for (s = cmd->args; s < cmd->args + ARGS_MAX && s->kind; s++) {
        const char *v = *field_of(a, s);

        if (s->kind == ARG_LIST)
            continue;
        if (v == NULL && s->kind == ARG_NEEDED)
            usage_error(cmd, "--%s is required", s->name);
        if (v != NULL && s->check != CHECK_NONE && !checks[s->check].ok(v))
            usage_error(cmd, "bad %s '%s' %s", checks[s->check].what, v,
                        checks[s->check].rule);
    }
}

static const cmd_t *find_cmd(const char *group, const char *name)
{
    size_t i;

    for (i = 0; i < NCOMMANDS; i++) {
        const cmd_t *c = &commands[i];
        if (strcmp(c->group, group) != 0)
            continue;
        if (c->name == NULL || (name && strcmp(c->name, name) == 0))
            return c;
    }
    return NULL;
}

static void print_version(void)
{
    if (g_opt.json)
        print_json(pjson(json_pack("{s:s, s:s}", "name", "envgw",
                                   "version", ENVGW_VERSION)));
    else
        printf("envgw %s\n", ENVGW_VERSION);
}

static bool known_group(const char *group)
{
    size_t i;

    for (i = 0; i < NCOMMANDS; i++) {
        if (strcmp(commands[i].group, group) == 0)
            return true;
    }
    return false;
}

static void cleanup(void)
{
    pool_drain();
}

int main(int argc, char **argv)
{
    const cmd_t *cmd;
    const char *group, *name, *env;
    args_t a;
    int i = 1, k, rc;

    memset(&a, 0, sizeof(a));
    atexit(cleanup);

    /* --json anywhere makes even the errors of parsing JSON */
    for (k = 1; k < argc && strcmp(argv[k], "--") != 0; k++) {
        if (strcmp(argv[k], "--json") == 0)
            g_opt.json = true;
    }

    g_opt.audit_maxlen = AUDIT_MAXLEN_DEFAULT;
    env = getenv("ENVGW_AUDIT_MAXLEN");
    if (env != NULL && env[0] != '\0'
        && !parse_maxlen(env, &g_opt.audit_maxlen))
        usage_error(NULL, "ENVGW_AUDIT_MAXLEN wants a number of entries from "
                    "1 to 1000000000, not '%s'", env);
    g_opt.redis = getenv("ENVGW_REDIS");
    if (g_opt.redis == NULL || g_opt.redis[0] == '\0')
        g_opt.redis = "127.0.0.1:6379";
    g_opt.prefix = getenv("ENVGW_PREFIX");
    if (g_opt.prefix == NULL)
        g_opt.prefix = ENVGW_DEFAULT_PREFIX;

    /* global options before the command */
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            print_tool_help(stdout, NULL);
            return 0;
        }
        if (strcmp(argv[i], "--version") == 0) {
            print_version();
            return 0;
        }
        if (!global_option(NULL, argc, argv, &i))
            unknown_option(NULL, argv[i]);
    }
    if (i >= argc) {
        if (g_opt.json)
            usage_error(NULL, "no command given");
        print_tool_help(stderr, NULL);
        return EXIT_USAGE;
    }

    group = argv[i++];
    if (strcmp(group, "help") == 0) {
        /* envgw help [GROUP [NAME]] */
        if (i < argc) {
            cmd = find_cmd(argv[i], i + 1 < argc ? argv[i + 1] : NULL);
            if (cmd && (cmd->name == NULL || i + 1 < argc)) {
                print_cmd_help(cmd);
                return 0;
            }
            if (!known_group(argv[i]))
                usage_error(NULL, "unknown command '%s'", argv[i]);
            print_tool_help(stdout, argv[i]);
            return 0;
        }
        print_tool_help(stdout, NULL);
        return 0;
    }
    if (!known_group(group))
        usage_error(NULL, "unknown command '%s'", group);

    name = i < argc ? argv[i] : NULL;
    cmd = find_cmd(group, name);
    if (cmd == NULL) {
        /* "envgw token" alone (or with options) describes its commands */
        if (name == NULL || name[0] == '-' || strcmp(name, "help") == 0) {
            print_tool_help(stdout, group);
            return 0;
        }
        usage_error(NULL, "unknown command '%s %s'", group, name);
    }
    if (cmd->name != NULL)
        i++;

    parse_args(cmd, argc - i, argv + i, &a);
    redis_options();
    rc = cmd->run(cmd, &a);
    fflush(stdout);
    if (ferror(stdout)) {
        fputs("envgw: error writing output\n", stderr);
        return EXIT_FAIL;
    }
    return rc;
}
