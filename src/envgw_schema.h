/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * env_gateway: the Redis schema, shared by the nginx module and the envgw
 * admin tool so that the two never disagree about key names or fields.
 * Plain C, no nginx or hiredis types.
 */

#ifndef ENVGW_SCHEMA_H
#define ENVGW_SCHEMA_H

#define ENVGW_DEFAULT_PREFIX        "envgw:"

/* key families: <prefix><family><rest> */
#define ENVGW_KEY_TOKEN             "token:"        /* <sha256hex> */
#define ENVGW_KEY_TOKEN_ID          "token_id:"     /* <token_id> */
#define ENVGW_KEY_ENV               "env:"          /* <environment_id> */
#define ENVGW_KEY_ACCOUNT           "account:"      /* <account id> */
#define ENVGW_KEY_TENANT            "tenant:"       /* <env_id>:<tenant_id> */
#define ENVGW_KEY_INTEGRATION       "integration:"  /* <env_id>:<integration> */
#define ENVGW_KEY_CREDENTIALS       "credentials:"  /* <account id> */
#define ENVGW_KEY_LAST_USED         "last_used:"    /* <token_id>: Unix s */

/* pub/sub channel: <prefix>invalidate, message = the full changed key */
#define ENVGW_CHANNEL_INVALIDATE    "invalidate"

/* record fields */
#define ENVGW_F_TOKEN_ID            "token_id"
#define ENVGW_F_TEAM_ID             "team_id"
#define ENVGW_F_ENVIRONMENT_ID      "environment_id"
#define ENVGW_F_ENVIRONMENT         "environment"
#define ENVGW_F_KIND                "kind"
#define ENVGW_F_EXPIRES_AT          "expires_at"
#define ENVGW_F_REVOKED             "revoked"
#define ENVGW_F_ACCOUNT_ID          "integrated_account_id"
#define ENVGW_F_NAME                "name"
#define ENVGW_F_INTEGRATION         "integration"
#define ENVGW_F_TENANT_ID           "tenant_id"
#define ENVGW_F_STATUS              "status"
#define ENVGW_F_UPSTREAM            "upstream"
#define ENVGW_F_RESOURCES           "resources"
#define ENVGW_F_METHOD              "method"
#define ENVGW_F_PATH                "path"
#define ENVGW_F_RATE_LIMIT          "rate_limit"    /* token, environment */
#define ENVGW_F_REQUESTS            "requests"
#define ENVGW_F_WINDOW              "window"        /* "10s", "1m", "500ms" */

/* <prefix>ratelimit:<key>:<id>:<window ms>:<window start ms> (sync=redis) */
#define ENVGW_KEY_RATELIMIT         "ratelimit:"

/* an integration's upstream credentials: how they are sent, and refreshed */
#define ENVGW_F_AUTH                "auth"
#define ENVGW_F_AUTH_HEADER         "header"
#define ENVGW_F_AUTH_QUERY          "query"
#define ENVGW_F_AUTH_BASIC          "basic"
#define ENVGW_F_FORMAT              "format"
#define ENVGW_F_USERNAME            "username"
#define ENVGW_F_PASSWORD            "password"
#define ENVGW_F_OAUTH               "oauth"
#define ENVGW_F_TOKEN_URL           "token_url"
#define ENVGW_F_REFRESH_BEFORE      "refresh_before"

/*
 * credentials record: AES-256-GCM, a 12-byte nonce, the 16-byte tag after
 * the ciphertext, additional data = be32(len(account id)) account id
 * be32(len(environment id)) environment id
 */
#define ENVGW_F_VERSION             "v"
#define ENVGW_F_KID                 "kid"
#define ENVGW_F_NONCE               "nonce"
#define ENVGW_F_CIPHERTEXT          "ciphertext"
#define ENVGW_CRED_VERSION          1

/* token kinds */
#define ENVGW_KIND_DATA             "data"
#define ENVGW_KIND_ADMIN            "admin"
#define ENVGW_KIND_ACCOUNT          "account"

#define ENVGW_STATUS_ACTIVE         "active"

/* raw tokens carry this prefix so secret scanners can find leaked ones */
#define ENVGW_TOKEN_PREFIX          "egw_"

#define ENVGW_SHA256_HEX_LEN        64

#endif /* ENVGW_SCHEMA_H */
