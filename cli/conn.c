/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * envgw: the connection to Redis, plain TCP, a unix socket or TLS.
 *
 * The socket is envgw's own (a blocking socket with send and receive
 * timeouts); TLS is OpenSSL's (verified against --cacert or the system
 * store, the certificate must name --tls-name or the host, a client
 * certificate with --cert/--key); hiredis only formats commands
 * (redisFormatCommandArgv) and reads replies (redisReader), as in the
 * gateway.  Commands are appended to an output buffer and sent when a
 * reply is asked for, so a transaction goes in one write.
 */

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <unistd.h>

#include <hiredis/hiredis.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "envgw.h"

#define CONNECT_TIMEOUT_MS  3000
#define IO_TIMEOUT_S        10

/* With --cluster, one connection per node (conn_use); else only the first. */
#define CONN_MAX            64

typedef struct {
    int          fd;
    SSL_CTX     *ctx;
    SSL         *ssl;
    redisReader *reader;
    char        *out;
    size_t       out_len, out_cap;
    const char  *desc;          /* host:port, or the unix: address */
    const char  *addr;          /* as asked for */
} conn_t;

static conn_t       conns[CONN_MAX];
static int          nconns;
static bool         pooled;

/* the connection in use */
static conn_t      *cur = &conns[0];

const char *conn_desc(void)
{
    return cur->desc ? cur->desc : g_opt.redis;
}

static void conn_free(void *unused)
{
    conn_t *keep = cur;
    int i;

    (void) unused;
    for (i = 0; i < nconns; i++) {
        cur = &conns[i];
        if (cur->ssl != NULL) {
            SSL_shutdown(cur->ssl);
            SSL_free(cur->ssl);
            cur->ssl = NULL;
        }
        if (cur->ctx != NULL) {
            SSL_CTX_free(cur->ctx);
            cur->ctx = NULL;
        }
        if (cur->fd != -1) {
            close(cur->fd);
            cur->fd = -1;
        }
        if (cur->reader != NULL) {
            redisReaderFree(cur->reader);
            cur->reader = NULL;
        }
        free(cur->out);
        cur->out = NULL;
        cur->out_len = cur->out_cap = 0;
    }
    cur = keep;
    nconns = 0;
}

/* OpenSSL's error queue as one line ("" when empty) */
static const char *ssl_errors(void)
{
    char buf[256];
    const char *s = "";
    unsigned long e;

    while ((e = ERR_get_error()) != 0) {
        ERR_error_string_n(e, buf, sizeof(buf));
        s = s[0] ? pfmt("%s; %s", s, buf) : pstrdup(buf);
    }
    return s;
}

/* Why an SSL call or the socket failed, as one line. */
static const char *pick_error(void)
{
    const char *e = ssl_errors();

    if (e[0])
        return e;
    if (errno == EAGAIN || errno == EWOULDBLOCK)
        return "timed out";
    return errno ? strerror(errno) : "connection closed";
}

/* a non-blocking connect() bounded by CONNECT_TIMEOUT_MS */
static int connect_timeout(int s, const struct sockaddr *sa, socklen_t len)
{
    struct pollfd p;
    int flags = fcntl(s, F_GETFL), err = 0, n;
    socklen_t elen = sizeof(err);

    if (flags == -1 || fcntl(s, F_SETFL, flags | O_NONBLOCK) == -1)
        return -1;
    if (connect(s, sa, len) == -1) {
        if (errno != EINPROGRESS)
            return -1;
        p.fd = s;
        p.events = POLLOUT;
        do {
            n = poll(&p, 1, CONNECT_TIMEOUT_MS);
        } while (n == -1 && errno == EINTR);
        if (n == 0) {
            errno = ETIMEDOUT;
            return -1;
        }
        if (n == -1 || getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &elen) == -1)
            return -1;
        if (err != 0) {
            errno = err;
            return -1;
        }
    }
    return fcntl(s, F_SETFL, flags);
}

static int open_tcp(const char *host, long port)
{
    struct addrinfo hints, *res, *ai;
    char service[16];
    int s = -1, rv, err = 0;

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    snprintf(service, sizeof(service), "%ld", port);
    rv = getaddrinfo(host, service, &hints, &res);
    if (rv != 0)
        die("cannot connect to Redis at %s: %s", cur->desc, gai_strerror(rv));
    for (ai = res; ai != NULL; ai = ai->ai_next) {
        s = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC,
                   ai->ai_protocol);
        if (s == -1) {
            err = errno;
            continue;
        }
        if (connect_timeout(s, ai->ai_addr, ai->ai_addrlen) == 0)
            break;
        err = errno;
        close(s);
        s = -1;
    }
    freeaddrinfo(res);
    if (s == -1)
        die("cannot connect to Redis at %s: %s", cur->desc, strerror(err));
    rv = 1;
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &rv, sizeof(rv));
    return s;
}

static int open_unix(const char *path)
{
    struct sockaddr_un sa;
    int s;

    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    if (strlen(path) >= sizeof(sa.sun_path))
        die("bad --redis address '%s' (path too long)", g_opt.redis);
    strcpy(sa.sun_path, path);
    s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s == -1 || connect_timeout(s, (struct sockaddr *) &sa,
                                   sizeof(sa)) == -1)
        die("cannot connect to Redis at %s: %s", cur->desc, strerror(errno));
    return s;
}

static bool is_ip(const char *s)
{
    unsigned char buf[sizeof(struct in6_addr)];

    return inet_pton(AF_INET, s, buf) == 1 || inet_pton(AF_INET6, s, buf) == 1;
}

/* TLS over the socket: verified unless told otherwise, by name or address */
static void start_tls(const char *host)
{
    const char *name = g_opt.tls_name ? g_opt.tls_name : host;
    long v;

    cur->ctx = SSL_CTX_new(TLS_client_method());
    if (cur->ctx == NULL)
        die("TLS: %s", ssl_errors());
    SSL_CTX_set_min_proto_version(cur->ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(cur->ctx, SSL_VERIFY_PEER, NULL);
    if (g_opt.cacert) {
        if (SSL_CTX_load_verify_locations(cur->ctx, g_opt.cacert, NULL) != 1)
            die("TLS: cannot load --cacert %s: %s", g_opt.cacert,
                ssl_errors());
    } else if (SSL_CTX_set_default_verify_paths(cur->ctx) != 1) {
        die("TLS: cannot load the system's CA certificates: %s",
            ssl_errors());
    }
    if (g_opt.cert) {
        if (SSL_CTX_use_certificate_chain_file(cur->ctx, g_opt.cert) != 1)
            die("TLS: cannot load --cert %s: %s", g_opt.cert, ssl_errors());
        if (SSL_CTX_use_PrivateKey_file(cur->ctx, g_opt.key, SSL_FILETYPE_PEM)
            != 1 || SSL_CTX_check_private_key(cur->ctx) != 1)
            die("TLS: cannot load --key %s: %s", g_opt.key, ssl_errors());
    }

    cur->ssl = SSL_new(cur->ctx);
    if (cur->ssl == NULL || SSL_set_fd(cur->ssl, cur->fd) != 1)
        die("TLS: %s", ssl_errors());
    if (name != NULL && name[0] != '\0') {
        if (is_ip(name)) {
            if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(cur->ssl), name)
                != 1)
                die("TLS: bad address '%s'", name);
        } else {
            /* RFC 6066: a name, never an address, as the server name */
            if (SSL_set_tlsext_host_name(cur->ssl, name) != 1
                || SSL_set1_host(cur->ssl, name) != 1)
                die("TLS: bad name '%s'", name);
        }
    }

    if (SSL_connect(cur->ssl) != 1) {
        v = SSL_get_verify_result(cur->ssl);
        if (v != X509_V_OK)
            die("TLS to Redis at %s: certificate verify failed: %s%s",
                cur->desc,
                X509_verify_cert_error_string(v),
                v == X509_V_ERR_HOSTNAME_MISMATCH
                    || v == X509_V_ERR_IP_ADDRESS_MISMATCH
                    ? pfmt(" (want \"%s\")", name) : "");
        die("TLS handshake with Redis at %s failed: %s", cur->desc,
            pick_error());
    }
}

static void conn_open(const char *a)
{
    const char *host = NULL;
    struct timeval tv = { IO_TIMEOUT_S, 0 };

    if (strncmp(a, "unix:", 5) == 0) {
        cur->desc = a;
        cur->fd = open_unix(a + 5);
    } else {
        const char *colon;
        char *end;
        long port = 6379;
        char *h;

        if (a[0] == '[') {                      /* [::1]:6379 */
            const char *close = strchr(a, ']');
            if (close == NULL)
                die("bad --redis address '%s'", a);
            h = pfmt("%.*s", (int) (close - a - 1), a + 1);
            colon = close[1] == ':' ? close + 1 : NULL;
        } else {
            colon = strrchr(a, ':');
            h = colon ? pfmt("%.*s", (int) (colon - a), a) : pstrdup(a);
        }
        if (colon != NULL) {
            port = strtol(colon + 1, &end, 10);
            if (*end != '\0' || colon[1] == '\0' || port < 1 || port > 65535)
                die("bad --redis address '%s' (want host:port)", a);
        }
        if (h[0] == '\0')
            die("bad --redis address '%s' (want host:port)", a);
        cur->desc = pfmt("%s:%ld", h, port);
        host = h;
        cur->fd = open_tcp(h, port);
    }
    setsockopt(cur->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(cur->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));

    if (g_opt.tls)
        start_tls(host);

    cur->reader = redisReaderCreate();
    if (cur->reader == NULL)
        die("out of memory");
}

/* the first connection: to --redis (with --cluster, a seed node) */
void conn_connect(void)
{
    if (nconns > 0)
        return;
    if (!pooled) {
        pooled = true;
        pool_keep(&conns, conn_free);
    }
    cur = &conns[nconns++];
    memset(cur, 0, sizeof(*cur));
    cur->fd = -1;
    cur->addr = g_opt.redis;
    conn_open(g_opt.redis);
}

/*
 * The connection to "host:port" (a cluster node) becomes the one in use,
 * opened if new, with the same TLS settings: true when it was opened now
 * (its AUTH is the caller's).  NULL: back to the first connection.
 */
bool conn_use(const char *addr)
{
    int i;

    conn_connect();
    if (addr == NULL) {
        cur = &conns[0];
        return false;
    }
    for (i = 0; i < nconns; i++) {
        if (strcmp(conns[i].addr, addr) == 0) {
            cur = &conns[i];
            return false;
        }
    }
    if (nconns == CONN_MAX)
        die("Redis cluster: more than %d nodes", CONN_MAX);
    cur = &conns[nconns++];
    memset(cur, 0, sizeof(*cur));
    cur->fd = -1;
    cur->addr = pstrdup(addr);
    conn_open(cur->addr);
    return true;
}

void conn_append(int argc, const char **argv)
{
    char *cmd;
    int len = redisFormatCommandArgv(&cmd, argc, argv, NULL);

    if (len < 0)
        die("out of memory");
    if (cur->out_len + (size_t) len > cur->out_cap) {
        size_t cap = cur->out_cap ? cur->out_cap : 4096;
        char *n;

        while (cap < cur->out_len + (size_t) len)
            cap *= 2;
        n = realloc(cur->out, cap);
        if (n == NULL)
            die("out of memory");
        cur->out = n;
        cur->out_cap = cap;
    }
    memcpy(cur->out + cur->out_len, cmd, len);
    cur->out_len += len;
    free(cmd);
}

/*
 * Why the TLS session failed: a server that refuses the client (TLS 1.3: no
 * client certificate) says so in an alert after the handshake, and a write
 * may fail before that alert is read.
 */
static const char *tls_failure(void)
{
    const char *e = ssl_errors();
    char b;

    if (e[0] || cur->ssl == NULL)
        return e[0] ? e : pick_error();
    ERR_clear_error();
    if (SSL_read(cur->ssl, &b, 1) <= 0) {
        e = ssl_errors();
        if (e[0])
            return e;
    }
    return pick_error();
}

static void conn_flush(void)
{
    size_t done = 0;
    ssize_t n;

    while (done < cur->out_len) {
        errno = 0;
        if (cur->ssl != NULL) {
            int w = SSL_write(cur->ssl, cur->out + done,
                              (int) (cur->out_len - done));
            n = w > 0 ? w : -1;
        } else {
            n = send(cur->fd, cur->out + done, cur->out_len - done,
                     MSG_NOSIGNAL);
        }
        if (n < 0 && errno == EINTR && cur->ssl == NULL)
            continue;
        if (n <= 0)
            die("Redis at %s: cannot send: %s", cur->desc, tls_failure());
        done += n;
    }
    cur->out_len = 0;
}

/* The next reply (kept until the pool drains); dies on a lost connection. */
redisReply *conn_reply(void)
{
    static int replied;     /* a plain connection a TLS port drops at once */
    void *r = NULL;
    char buf[16384];
    ssize_t n;

    conn_flush();
    for (;;) {
        if (redisReaderGetReply(cur->reader, &r) != REDIS_OK)
            die("Redis at %s: protocol error: %s", cur->desc,
                cur->reader->errstr);
        if (r != NULL) {
            replied = 1;
            return pool_keep(r, (void (*)(void *)) freeReplyObject);
        }
        errno = 0;
        if (cur->ssl != NULL) {
            int m = SSL_read(cur->ssl, buf, sizeof(buf));
            n = m > 0 ? m : -1;
        } else {
            n = recv(cur->fd, buf, sizeof(buf), 0);
        }
        if (n < 0 && errno == EINTR && cur->ssl == NULL)
            continue;
        if (n <= 0)
            die("Redis at %s: %s%s", cur->desc,
                n == 0 ? "connection lost" : pick_error(),
                cur->ssl == NULL && !replied
                ? " before any reply (a TLS port? then --tls)" : "");
        if (redisReaderFeed(cur->reader, buf, (size_t) n) != REDIS_OK)
            die("out of memory");
    }
}
