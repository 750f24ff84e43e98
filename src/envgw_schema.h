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

/* token kinds */
#define ENVGW_KIND_DATA             "data"
#define ENVGW_KIND_ADMIN            "admin"
#define ENVGW_KIND_ACCOUNT          "account"

#define ENVGW_STATUS_ACTIVE         "active"

/* raw tokens carry this prefix so secret scanners can find leaked ones */
#define ENVGW_TOKEN_PREFIX          "egw_"

#define ENVGW_SHA256_HEX_LEN        64

#endif /* ENVGW_SCHEMA_H */
