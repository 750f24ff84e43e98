/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * env_gateway: TLS to Redis, and the ACL parameters of env_gateway_redis.
 *
 * Configuration: "tls [tls_verify=on|off] [tls_ca=FILE] [tls_name=NAME]
 * [tls_cert=FILE tls_key=FILE]", "username=" and "password_file=" on an
 * env_gateway_redis line.  Each TLS line gets its own SSL context, made
 * with nginx's SSL layer as proxy_ssl_* does: the CA file, or the system
 * store without one; a client certificate; the client session cache.  The
 * password file is read when nginx reads its configuration (start and
 * reload): its trailing newline is not part of the password.
 *
 * A connection (_redis.c) to a TLS server does its handshake once the TCP
 * connect completed, with nginx's non-blocking ngx_ssl_handshake(), bounded
 * by what is left of connect_timeout: SNI and the name checked are
 * tls_name, or the host of the address; the chain is verified
 * (SSL_get_verify_result) and the certificate must name the host
 * (ngx_ssl_check_host, or its IP address for an address).  The last
 * session is offered again on the next connection to the same server.
 * Then c->recv and c->send are nginx's SSL ones: the pipeline is the same.
 *
 * nginx's SSL layer logs its failures on the connection's log, at levels
 * meant for client connections (a certificate the server requires is
 * "crit" there).  The connection's log here keeps them instead: the
 * connection is dropped with that reason, one line at the level the
 * transport chooses (ngx_env_gateway_redis_drop), which names the server.
 */

#include "ngx_env_gateway_redis.h"


#define NGX_ENVGW_TLS_VERIFY_DEPTH    9
#define NGX_ENVGW_TLS_POOL_SIZE       1024
#define NGX_ENVGW_PASSWORD_MAX        4096


static ngx_int_t ngx_env_gateway_password_file(ngx_conf_t *cf,
    ngx_str_t *file, ngx_str_t *password);


#define ngx_env_gateway_param_is(value, name)                              \
    ((value)->len >= sizeof(name) - 1                                      \
     && ngx_strncmp((value)->data, name, sizeof(name) - 1) == 0)


/*
 * One parameter of an env_gateway_redis line: NGX_OK when it is one of
 * these, NGX_DECLINED when not, NGX_ERROR when its value is invalid.
 */
ngx_int_t
ngx_env_gateway_tls_param(ngx_conf_t *cf, ngx_env_gateway_tls_conf_t *tc,
    ngx_env_gateway_server_t *srv, ngx_str_t *value)
{
    ngx_str_t  *to, s;

    if (value->len == 3 && ngx_strncmp(value->data, "tls", 3) == 0) {
        tc->tls = 1;
        return NGX_OK;
    }

    if (ngx_env_gateway_param_is(value, "tls_verify=")) {
        s.data = value->data + sizeof("tls_verify=") - 1;
        s.len = value->len - (sizeof("tls_verify=") - 1);

        if (s.len == 2 && ngx_strncmp(s.data, "on", 2) == 0) {
            tc->verify = 1;
            return NGX_OK;
        }

        if (s.len == 3 && ngx_strncmp(s.data, "off", 3) == 0) {
            tc->verify = 0;
            return NGX_OK;
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"env_gateway_redis\" has an invalid value in "
                           "\"%V\": on or off", value);
        return NGX_ERROR;
    }

    if (ngx_env_gateway_param_is(value, "tls_ca=")) {
        to = &tc->ca;
        s.len = sizeof("tls_ca=") - 1;

    } else if (ngx_env_gateway_param_is(value, "tls_name=")) {
        to = &tc->name;
        s.len = sizeof("tls_name=") - 1;

    } else if (ngx_env_gateway_param_is(value, "tls_cert=")) {
        to = &tc->cert;
        s.len = sizeof("tls_cert=") - 1;

    } else if (ngx_env_gateway_param_is(value, "tls_key=")) {
        to = &tc->key;
        s.len = sizeof("tls_key=") - 1;

    } else if (ngx_env_gateway_param_is(value, "password_file=")) {
        to = &tc->password_file;
        s.len = sizeof("password_file=") - 1;

    } else if (ngx_env_gateway_param_is(value, "username=")) {
        to = &srv->username;
        s.len = sizeof("username=") - 1;

    } else {
        return NGX_DECLINED;
    }

    to->data = value->data + s.len;
    to->len = value->len - s.len;

    if (to->len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"env_gateway_redis\" has an empty value in "
                           "\"%V\"", value);
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* the line's parameters are read: the password file, the SSL context */
char *
ngx_env_gateway_tls_conf(ngx_conf_t *cf, ngx_env_gateway_tls_conf_t *tc,
    ngx_env_gateway_server_t *srv)
{
#if (NGX_SSL)
    ngx_str_t            none;
    ngx_pool_cleanup_t  *cln;
#endif

    if (tc->password_file.len) {
        if (srv->password.len) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"env_gateway_redis\" has both password= "
                               "and password_file=: use one");
            return NGX_CONF_ERROR;
        }

        if (ngx_env_gateway_password_file(cf, &tc->password_file,
                                          &srv->password)
            != NGX_OK)
        {
            return NGX_CONF_ERROR;
        }
    }

    if (srv->username.len && srv->password.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"env_gateway_redis\" has username= without "
                           "password= or password_file=");
        return NGX_CONF_ERROR;
    }

    if (!tc->tls) {
        if (tc->verify != -1 || tc->ca.len || tc->name.len || tc->cert.len
            || tc->key.len)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"env_gateway_redis\" has tls_ parameters "
                               "without \"tls\"");
            return NGX_CONF_ERROR;
        }

        return NGX_CONF_OK;
    }

#if !(NGX_SSL)

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "\"env_gateway_redis\" has \"tls\", but nginx was "
                       "built without SSL (--with-http_ssl_module)");
    return NGX_CONF_ERROR;

#else

    if ((tc->cert.len == 0) != (tc->key.len == 0)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"env_gateway_redis\" needs tls_cert= and "
                           "tls_key= together");
        return NGX_CONF_ERROR;
    }

    srv->ssl = ngx_pcalloc(cf->pool, sizeof(ngx_ssl_t));
    if (srv->ssl == NULL) {
        return NGX_CONF_ERROR;
    }

    srv->ssl->log = cf->log;

    if (ngx_ssl_create(srv->ssl, NGX_SSL_TLSv1_2|NGX_SSL_TLSv1_3, NULL)
        != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        ngx_ssl_cleanup_ctx(srv->ssl);
        return NGX_CONF_ERROR;
    }

    cln->handler = ngx_ssl_cleanup_ctx;
    cln->data = srv->ssl;

    if (tc->cert.len
        && ngx_ssl_certificate(cf, srv->ssl, &tc->cert, &tc->key, NULL)
           != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    srv->tls_verify = (tc->verify != 0);
    srv->tls_name = tc->name;

    if (srv->tls_verify) {
        ngx_str_null(&none);

        if (ngx_ssl_trusted_certificate(cf, srv->ssl,
                                        tc->ca.len ? &tc->ca : &none,
                                        NGX_ENVGW_TLS_VERIFY_DEPTH)
            != NGX_OK)
        {
            return NGX_CONF_ERROR;
        }

        if (tc->ca.len == 0
            && SSL_CTX_set_default_verify_paths(srv->ssl->ctx) != 1)
        {
            ngx_ssl_error(NGX_LOG_EMERG, cf->log, 0,
                          "SSL_CTX_set_default_verify_paths() failed");
            return NGX_CONF_ERROR;
        }

    } else {
        /* a test setup's switch: nginx -t says what it gives away */
        ngx_conf_log_error(NGX_LOG_WARN, cf, 0,
                           "\"env_gateway_redis\" has tls_verify=off: the "
                           "Redis server is not authenticated, anyone on "
                           "the path can read the lookups and answer them");

        if (tc->ca.len) {
            ngx_conf_log_error(NGX_LOG_WARN, cf, 0,
                               "\"env_gateway_redis\": tls_ca= is not used "
                               "with tls_verify=off");
        }
    }

    if (ngx_ssl_client_session_cache(cf, srv->ssl, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;

#endif
}


/* the password, from a file read now; never logged */
static ngx_int_t
ngx_env_gateway_password_file(ngx_conf_t *cf, ngx_str_t *file,
    ngx_str_t *password)
{
    u_char           *buf;
    size_t            len;
    ssize_t           n;
    ngx_fd_t          fd;
    ngx_int_t         rv;
    ngx_file_info_t   fi;

    if (ngx_conf_full_name(cf->cycle, file, 1) != NGX_OK) {
        return NGX_ERROR;
    }

    fd = ngx_open_file(file->data, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);
    if (fd == NGX_INVALID_FILE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "\"env_gateway_redis\" cannot open "
                           "password_file \"%V\"", file);
        return NGX_ERROR;
    }

    rv = NGX_ERROR;

    if (ngx_fd_info(fd, &fi) == NGX_FILE_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           ngx_fd_info_n " \"%V\" failed", file);
        goto done;
    }

    if (!ngx_is_file(&fi)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"env_gateway_redis\" password_file \"%V\" "
                           "is not a file", file);
        goto done;
    }

    if (ngx_file_size(&fi) > NGX_ENVGW_PASSWORD_MAX) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"env_gateway_redis\" password_file \"%V\" "
                           "is larger than %d bytes", file,
                           NGX_ENVGW_PASSWORD_MAX);
        goto done;
    }

    if (fi.st_mode & S_IROTH) {
        ngx_conf_log_error(NGX_LOG_WARN, cf, 0,
                           "\"env_gateway_redis\" password_file \"%V\" "
                           "is readable by every user of the machine "
                           "(chmod o-r)", file);
    }

    len = (size_t) ngx_file_size(&fi);

    buf = ngx_pnalloc(cf->pool, len + 1);
    if (buf == NULL) {
        goto done;
    }

    n = ngx_read_fd(fd, buf, len);

    if (n == -1) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           ngx_read_fd_n " \"%V\" failed", file);
        goto done;
    }

    len = n;

    /* the line's end is not part of the password */
    while (len && (buf[len - 1] == LF || buf[len - 1] == CR)) {
        len--;
    }

    if (len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"env_gateway_redis\" password_file \"%V\" "
                           "is empty", file);
        goto done;
    }

    password->data = buf;
    password->len = len;
    rv = NGX_OK;

done:

    if (ngx_close_file(fd) == NGX_FILE_ERROR) {
        ngx_conf_log_error(NGX_LOG_ALERT, cf, ngx_errno,
                           ngx_close_file_n " \"%V\" failed", file);
    }

    return rv;
}


#if (NGX_SSL)

static void ngx_env_gateway_tls_handshake_done(ngx_connection_t *c);
static void ngx_env_gateway_tls_save_session(ngx_connection_t *c);
static ngx_int_t ngx_env_gateway_tls_name(ngx_env_gateway_redis_t *rc,
    ngx_str_t *name, ngx_uint_t *ip);
static ngx_int_t ngx_env_gateway_tls_verify(ngx_env_gateway_redis_t *rc);


/*
 * The log of a TLS connection: what nginx's SSL layer reports at info
 * level or above (an error of the handshake, of SSL_read or SSL_write) is
 * kept as the connection's failure, to be told by the transport with the
 * server and role; debug, notice and warn lines go to the error log.
 */
static void
ngx_env_gateway_tls_log_writer(ngx_log_t *log, ngx_uint_t level, u_char *buf,
    size_t len)
{
    ngx_str_t                 msg;
    ngx_log_t                *orig;
    ngx_env_gateway_redis_t  *rc;

    rc = log->data;
    orig = rc->log;

    if (level == NGX_LOG_WARN || level == NGX_LOG_NOTICE
        || level == NGX_LOG_DEBUG)
    {
        if (level != NGX_LOG_DEBUG && orig->log_level < level) {
            return;
        }

        if (orig->writer) {
            orig->writer(orig, level, buf, len);

        } else {
            (void) ngx_write_fd(orig->file->fd, buf, len);
        }

        return;
    }

    ngx_env_gateway_log_message(buf, len, &msg);

    len = ngx_min(msg.len, NGX_ENVGW_TLS_ERROR_LEN - 1);
    *ngx_cpymem(rc->tls_error, msg.data, len) = '\0';
}


/* the TCP connection is up: TLS handshake, then the Redis handshake */
void
ngx_env_gateway_tls_handshake(ngx_env_gateway_redis_t *rc)
{
    ngx_int_t                  rv;
    ngx_str_t                  name;
    ngx_uint_t                 ip;
    ngx_log_t                 *log;
    ngx_connection_t          *c;
    ngx_env_gateway_server_t  *srv;

    c = rc->c;
    srv = rc->servers->elts;
    srv = &srv[rc->current];

    rc->tls_error[0] = '\0';

    if (rc->tls_log == NULL) {
        rc->tls_log = ngx_palloc(ngx_cycle->pool, sizeof(ngx_log_t));
        if (rc->tls_log == NULL) {
            ngx_env_gateway_redis_fail(rc, NGX_ENVGW_FT_INTERNAL,
                                       "out of memory");
            return;
        }
    }

    log = rc->tls_log;
    *log = *rc->log;
    log->handler = NULL;
    log->data = rc;
    log->writer = ngx_env_gateway_tls_log_writer;
    log->next = NULL;
    log->connection = 0;

    /* the SSL layer's failures are mostly "info" lines: keep them all */
    if (log->log_level < NGX_LOG_INFO) {
        log->log_level = NGX_LOG_INFO;
    }

    c->pool = ngx_create_pool(NGX_ENVGW_TLS_POOL_SIZE, rc->log);
    if (c->pool == NULL) {
        ngx_env_gateway_redis_fail(rc, NGX_ENVGW_FT_INTERNAL,
                                   "out of memory");
        return;
    }

    c->log = log;
    c->read->log = log;
    c->write->log = log;

    if (ngx_ssl_create_connection(srv->ssl, c, NGX_SSL_CLIENT) != NGX_OK) {
        ngx_env_gateway_redis_fail(rc, NGX_ENVGW_FT_INTERNAL,
                                   "ngx_ssl_create_connection() failed");
        return;
    }

    if (ngx_env_gateway_tls_name(rc, &name, &ip) != NGX_OK) {
        ngx_env_gateway_redis_fail(rc, NGX_ENVGW_FT_INTERNAL,
                                   "out of memory");
        return;
    }

    /* as per RFC 6066, no IP address as a server name */
    if (name.len && !ip
        && SSL_set_tlsext_host_name(c->ssl->connection, (char *) name.data)
           == 0)
    {
        ngx_env_gateway_redis_fail(rc, NGX_ENVGW_FT_INTERNAL,
                                   "SSL_set_tlsext_host_name() failed");
        return;
    }

    c->ssl->save_session = ngx_env_gateway_tls_save_session;

    if (rc->ssl_session && rc->ssl_session_server == rc->current
        && ngx_ssl_set_session(c, rc->ssl_session) != NGX_OK)
    {
        ngx_env_gateway_redis_fail(rc, NGX_ENVGW_FT_INTERNAL,
                                   "ngx_ssl_set_session() failed");
        return;
    }

    ngx_log_debug3(NGX_LOG_DEBUG_EVENT, rc->log, 0,
                   "env_gateway: redis%s: TLS handshake, name \"%V\", "
                   "%s session", rc->role, &name,
                   rc->ssl_session ? "offering a" : "no");

    rv = ngx_ssl_handshake(c);

    if (rv == NGX_AGAIN) {
        /* the connect's timer, if still running, bounds the handshake */
        if (!c->write->timer_set) {
            ngx_add_timer(c->write, srv->connect_timeout);
        }

        c->ssl->handler = ngx_env_gateway_tls_handshake_done;
        return;
    }

    ngx_env_gateway_tls_handshake_done(c);
}


static void
ngx_env_gateway_tls_handshake_done(ngx_connection_t *c)
{
    ngx_env_gateway_redis_t  *rc;

    rc = c->data;

    if (c->ssl->handshaked) {

        if (ngx_env_gateway_tls_verify(rc) != NGX_OK) {
            ngx_env_gateway_redis_drop(rc, NGX_ENVGW_FT_TLS, 0,
                                       (char *) rc->tls_error);
            return;
        }

        if (c->write->timer_set) {
            ngx_del_timer(c->write);
        }

        rc->tls_error[0] = '\0';
        c->read->handler = ngx_env_gateway_redis_read_handler;
        c->write->handler = ngx_env_gateway_redis_write_handler;

        ngx_log_debug1(NGX_LOG_DEBUG_EVENT, rc->log, 0,
                       "env_gateway: redis%s: TLS handshake done", rc->role);

        ngx_env_gateway_redis_connected(rc);
        return;
    }

    if (c->write->timedout || c->read->timedout) {
        ngx_env_gateway_redis_fail(rc, NGX_ENVGW_FT_TIMEOUT,
                                   "TLS handshake timed out");
        return;
    }

    ngx_env_gateway_redis_drop(rc, NGX_ENVGW_FT_TLS, 0,
                               rc->tls_error[0] ? (char *) rc->tls_error
                                                : "TLS handshake failed");
}


/* a session Redis gave (TLS 1.3: after the handshake) is kept to resume */
static void
ngx_env_gateway_tls_save_session(ngx_connection_t *c)
{
    ngx_ssl_session_t        *session;
    ngx_env_gateway_redis_t  *rc;

    rc = c->data;

    session = ngx_ssl_get_session(c);
    if (session == NULL) {
        return;
    }

    if (rc->ssl_session) {
        ngx_ssl_free_session(rc->ssl_session);
    }

    rc->ssl_session = session;
    rc->ssl_session_server = rc->current;

    ngx_log_debug1(NGX_LOG_DEBUG_EVENT, rc->log, 0,
                   "env_gateway: redis%s: TLS session kept", rc->role);
}


/*
 * The name sent (SNI) and checked: tls_name=, or the host of the address
 * ("unix:" has none: only the chain is checked).  NUL-terminated, in the
 * connection's pool; ip: it is an IP address.
 */
static ngx_int_t
ngx_env_gateway_tls_name(ngx_env_gateway_redis_t *rc, ngx_str_t *name,
    ngx_uint_t *ip)
{
    u_char                    *p, *last;
    ngx_str_t                  n;
    ngx_env_gateway_server_t  *srv;

    srv = rc->servers->elts;
    srv = &srv[rc->current];

    *ip = 0;

    if (srv->tls_name.len) {
        n = srv->tls_name;

    } else if (srv->name.len >= 5
               && ngx_strncmp(srv->name.data, "unix:", 5) == 0)
    {
        ngx_str_null(name);
        return NGX_OK;

    } else {
        n = srv->name;
        last = n.data + n.len;

        if (n.len && n.data[0] == '[') {
            /* [IPv6]:port */
            p = ngx_strlchr(n.data, last, ']');
            if (p) {
                n.data++;
                n.len = p - n.data;
            }

        } else {
            p = ngx_strlchr(n.data, last, ':');
            if (p) {
                n.len = p - n.data;
            }
        }
    }

    /* a host name has no ':', an IPv6 address does */
    *ip = (ngx_inet_addr(n.data, n.len) != INADDR_NONE
           || ngx_strlchr(n.data, n.data + n.len, ':') != NULL);

    name->data = ngx_pnalloc(rc->c->pool, n.len + 1);
    if (name->data == NULL) {
        return NGX_ERROR;
    }

    name->len = n.len;
    *ngx_cpymem(name->data, n.data, n.len) = '\0';

    return NGX_OK;
}


/* the chain, then the name; the failure in rc->tls_error */
static ngx_int_t
ngx_env_gateway_tls_verify(ngx_env_gateway_redis_t *rc)
{
    long                       v;
    X509                      *cert;
    ngx_int_t                  rv;
    ngx_str_t                  name;
    ngx_uint_t                 ip;
    ngx_connection_t          *c;
    ngx_env_gateway_server_t  *srv;

    c = rc->c;
    srv = rc->servers->elts;
    srv = &srv[rc->current];

    if (!srv->tls_verify) {
        return NGX_OK;
    }

    v = SSL_get_verify_result(c->ssl->connection);

    if (v != X509_V_OK) {
        *ngx_snprintf(rc->tls_error, NGX_ENVGW_TLS_ERROR_LEN - 1,
                      "TLS certificate verify error: (%l:%s)", v,
                      X509_verify_cert_error_string(v)) = '\0';
        return NGX_ERROR;
    }

    if (ngx_env_gateway_tls_name(rc, &name, &ip) != NGX_OK) {
        *ngx_cpymem(rc->tls_error, "out of memory",
                    sizeof("out of memory") - 1) = '\0';
        return NGX_ERROR;
    }

    if (name.len == 0) {
        return NGX_OK;
    }

    if (ip) {
        rv = NGX_ERROR;
        cert = SSL_get_peer_certificate(c->ssl->connection);

        if (cert) {
            if (X509_check_ip_asc(cert, (char *) name.data, 0) == 1) {
                rv = NGX_OK;
            }

            X509_free(cert);
        }

    } else {
        rv = ngx_ssl_check_host(c, &name);
    }

    if (rv != NGX_OK) {
        *ngx_snprintf(rc->tls_error, NGX_ENVGW_TLS_ERROR_LEN - 1,
                      "TLS certificate does not match \"%V\"", &name) = '\0';
        return NGX_ERROR;
    }

    ngx_log_debug1(NGX_LOG_DEBUG_EVENT, rc->log, 0,
                   "env_gateway: redis%s: TLS certificate verified",
                   rc->role);

    return NGX_OK;
}


/* before the socket is closed: no wait for Redis' close_notify */
void
ngx_env_gateway_tls_close(ngx_env_gateway_redis_t *rc)
{
    ngx_connection_t  *c;

    c = rc->c;

    if (c->ssl == NULL) {
        return;
    }

    c->ssl->no_wait_shutdown = 1;

    if (c->read->error || c->read->eof || c->write->error) {
        c->ssl->no_send_shutdown = 1;
    }

    (void) ngx_ssl_shutdown(c);
}


void
ngx_env_gateway_tls_free(ngx_env_gateway_redis_t *rc)
{
    if (rc->ssl_session) {
        ngx_ssl_free_session(rc->ssl_session);
        rc->ssl_session = NULL;
    }
}


/*
 * What a failed recv() or send() is logged with: the SSL layer's reason.
 * On a connection that never answered it is a TLS failure (a client
 * certificate Redis requires is refused after a TLS 1.3 handshake).
 */
const char *
ngx_env_gateway_tls_why(ngx_env_gateway_redis_t *rc, const char *why,
    ngx_err_t *err, ngx_uint_t *ft)
{
    if (rc->c == NULL || rc->c->ssl == NULL || rc->tls_error[0] == '\0') {
        return why;
    }

    *err = 0;

    if (!rc->healthy) {
        *ft = NGX_ENVGW_FT_TLS;
    }

    return (const char *) rc->tls_error;
}

#endif
