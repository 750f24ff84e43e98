/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * env_gateway: the keyring of upstream credentials, env_gateway_secret_keys
 * FILE: the AES-256 keys records are encrypted with, by key id, kept in the
 * cycle's pool and wiped when the cycle goes.
 */

#include "ngx_env_gateway_credentials.h"


#define NGX_ENVGW_KEYS_FILE_MAX      (64 * 1024)
#define NGX_ENVGW_KID_MAX            64


static void ngx_env_gateway_keys_cleanup(void *data);


/* ------------------------------------------------------------------ */
/* the keyring                                                         */

/*
 * env_gateway_secret_keys FILE: lines "<kid> <base64 of 32 bytes>", blank
 * lines and "#" comments allowed; the first key writes (envgw), all read.
 * Read at every configuration load; the keys stay in the cycle's pool,
 * wiped when the cycle goes.
 */
char *
ngx_env_gateway_secret_keys(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_env_gateway_main_conf_t *gmcf = conf;

    u_char                 *buf, *p, *last, *eol, *sp, *next;
    char                   *rv;
    size_t                  size;
    ssize_t                 n;
    ngx_fd_t                fd;
    ngx_str_t              *value, name, kid, b64, dec;
    ngx_uint_t              line, i;
    ngx_file_info_t         fi;
    ngx_pool_cleanup_t     *cln;
    ngx_env_gateway_key_t  *key, *keys;

    if (gmcf->secret_keys) {
        return "is duplicate";
    }

    value = cf->args->elts;
    name = value[1];

    if (ngx_conf_full_name(cf->cycle, &name, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    gmcf->secret_keys = ngx_array_create(cf->pool, 2,
                                         sizeof(ngx_env_gateway_key_t));
    if (gmcf->secret_keys == NULL) {
        return NGX_CONF_ERROR;
    }

    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        return NGX_CONF_ERROR;
    }

    cln->handler = ngx_env_gateway_keys_cleanup;
    cln->data = gmcf->secret_keys;

    fd = ngx_open_file(name.data, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);

    if (fd == NGX_INVALID_FILE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           ngx_open_file_n " \"%V\" failed", &name);
        return NGX_CONF_ERROR;
    }

    buf = NULL;
    size = 0;
    rv = NGX_CONF_ERROR;

    if (ngx_fd_info(fd, &fi) == NGX_FILE_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           ngx_fd_info_n " \"%V\" failed", &name);
        goto done;
    }

    if (ngx_file_size(&fi) > NGX_ENVGW_KEYS_FILE_MAX) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" is larger than %d bytes: not a keyring",
                           &name, NGX_ENVGW_KEYS_FILE_MAX);
        goto done;
    }

    if (fi.st_mode & S_IROTH) {
        ngx_conf_log_error(NGX_LOG_WARN, cf, 0,
                           "the keyring \"%V\" is readable by every user "
                           "of this host: chmod o-r it", &name);
    }

    if (fi.st_mode & S_IWOTH) {
        /* anyone could put a key of theirs first: envgw encrypts with it */
        ngx_conf_log_error(NGX_LOG_WARN, cf, 0,
                           "the keyring \"%V\" is writable by every user "
                           "of this host: chmod o-w it", &name);
    }

    size = (size_t) ngx_file_size(&fi);

    buf = ngx_pnalloc(cf->temp_pool, size + 1);
    if (buf == NULL) {
        goto done;
    }

    n = ngx_read_fd(fd, buf, size);

    if (n == NGX_ERROR || (size_t) n != size) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           ngx_read_fd_n " \"%V\" failed", &name);
        goto done;
    }

    p = buf;
    last = buf + size;

    for (line = 1; p < last; line++, p = next) {
        eol = ngx_strlchr(p, last, '\n');
        if (eol == NULL) {
            eol = last;
        }

        next = (eol < last) ? eol + 1 : last;

        while (p < eol && (*p == ' ' || *p == '\t')) {
            p++;
        }

        while (eol > p && (eol[-1] == ' ' || eol[-1] == '\t'
                           || eol[-1] == '\r'))
        {
            eol--;
        }

        if (p == eol || *p == '#') {
            continue;
        }

        sp = p;
        while (sp < eol && *sp != ' ' && *sp != '\t') {
            sp++;
        }

        kid.data = p;
        kid.len = sp - p;

        while (sp < eol && (*sp == ' ' || *sp == '\t')) {
            sp++;
        }

        b64.data = sp;
        b64.len = eol - sp;

        if (kid.len == 0 || ngx_env_gateway_id_syntax(&kid) != NGX_OK
            || kid.len > NGX_ENVGW_KID_MAX || b64.len == 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"%V\" line %ui: expected \"<key id> "
                               "<base64 of 32 bytes>\"", &name, line);
            goto done;
        }

        keys = gmcf->secret_keys->elts;

        for (i = 0; i < gmcf->secret_keys->nelts; i++) {
            if (!ngx_env_gateway_str_ne(&keys[i].kid, &kid)) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "\"%V\" line %ui: key id \"%V\" is "
                                   "there twice", &name, line, &kid);
                goto done;
            }
        }

        dec.data = ngx_pnalloc(cf->temp_pool,
                               ngx_base64_decoded_length(b64.len));
        if (dec.data == NULL) {
            goto done;
        }

        if (ngx_decode_base64(&dec, &b64) != NGX_OK) {
            OPENSSL_cleanse(dec.data, ngx_base64_decoded_length(b64.len));
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"%V\" line %ui: expected \"<key id> "
                               "<base64 of 32 bytes>\"", &name, line);
            goto done;
        }

        if (dec.len != NGX_ENVGW_KEY_LEN) {
            OPENSSL_cleanse(dec.data, dec.len);
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"%V\" line %ui: the key is not the base64 "
                               "of 32 bytes", &name, line);
            goto done;
        }

        key = ngx_array_push(gmcf->secret_keys);
        if (key == NULL) {
            OPENSSL_cleanse(dec.data, dec.len);
            goto done;
        }

        key->kid.data = ngx_pstrdup(cf->pool, &kid);
        key->kid.len = kid.len;
        ngx_memcpy(key->key, dec.data, NGX_ENVGW_KEY_LEN);
        OPENSSL_cleanse(dec.data, dec.len);

        if (key->kid.data == NULL) {
            goto done;
        }
    }

    if (gmcf->secret_keys->nelts == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "\"%V\" has no keys",
                           &name);
        goto done;
    }

    rv = NGX_CONF_OK;

done:

    if (buf) {
        OPENSSL_cleanse(buf, size);
    }

    if (ngx_close_file(fd) == NGX_FILE_ERROR) {
        ngx_conf_log_error(NGX_LOG_ALERT, cf, ngx_errno,
                           ngx_close_file_n " \"%V\" failed", &name);
    }

    return rv;
}


static void
ngx_env_gateway_keys_cleanup(void *data)
{
    ngx_array_t  *keys = data;

    if (keys->nelts) {
        OPENSSL_cleanse(keys->elts, keys->nelts * keys->size);
    }
}

