/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * env_gateway: upstream credentials, between their own files (_keys.c,
 * _credentials.c, _credentials_inject.c).
 */

#ifndef NGX_ENV_GATEWAY_CREDENTIALS_H
#define NGX_ENV_GATEWAY_CREDENTIALS_H

#include "ngx_env_gateway.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>


/* _credentials.c: a request-pool buffer wiped when the request ends */
ngx_int_t ngx_env_gateway_wipe_later(ngx_pool_t *pool, ngx_str_t *s);

#endif /* NGX_ENV_GATEWAY_CREDENTIALS_H */
