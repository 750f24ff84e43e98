/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * env_gateway: the Redis transport, between its own files.
 *
 *   _redis.c       one connection: connect, handshake, failover over the
 *                  server list, return to the first server; the worker's
 *                  lookup connection (ngx_env_gateway_redis_command).
 *   _pipeline.c    what goes over it: queued commands, the outbound
 *                  buffer, deadlines, replies matched and size-checked.
 *   _subscriber.c  a connection that SUBSCRIBEs to a channel and PINGs it;
 *                  the invalidation channel, told to the hooks the cache
 *                  side registered (ngx_env_gateway_subscriber_hooks).
 *   _sentinel.c    the master's address asked of the Sentinels, and
 *                  +switch-master heard from them.
 *
 * A connection knows nothing of the layers built on it: they set its
 * callbacks (connected, dropped, resolve, on_message).  Nothing in the
 * transport calls up into fetch or cache.
 */

#ifndef NGX_ENV_GATEWAY_REDIS_H
#define NGX_ENV_GATEWAY_REDIS_H

#include "ngx_env_gateway.h"

#include <hiredis/hiredis.h>


#define NGX_ENVGW_REDIS_DISCONNECTED  0
#define NGX_ENVGW_REDIS_CONNECTING    1
#define NGX_ENVGW_REDIS_READY         2


/* why a connection was dropped: what is logged, counted and retried */
typedef enum {
    NGX_ENVGW_FT_CONNECT = 0,    /* connect() failed */
    NGX_ENVGW_FT_TIMEOUT,        /* the connect, or a command's deadline */
    NGX_ENVGW_FT_CLOSED,         /* closed by Redis */
    NGX_ENVGW_FT_RESET,          /* recv() or send() failed */
    NGX_ENVGW_FT_PROTOCOL,       /* a reply that cannot be read or used */
    NGX_ENVGW_FT_OVERSIZE,       /* a GET's value above max_record */
    NGX_ENVGW_FT_REFUSED,        /* Redis refused AUTH, SELECT, SUBSCRIBE */
    NGX_ENVGW_FT_NO_MASTER,      /* the Sentinels name none, or are down */
    NGX_ENVGW_FT_MOVED,          /* the Sentinels switched the master */
    NGX_ENVGW_FT_INTERNAL,       /* out of memory, an event call failed */
    NGX_ENVGW_FT_SHUTDOWN,       /* the worker exits */
    NGX_ENVGW_FT_TLS             /* TLS handshake or verification failed */
} ngx_env_gateway_redis_ft_e;


/* the longest TLS failure kept to be logged */
#define NGX_ENVGW_TLS_ERROR_LEN       512


typedef struct ngx_env_gateway_redis_s  ngx_env_gateway_redis_t;


/* the last failure's words kept for the summary lines (_health.c) */
#define NGX_ENVGW_HEALTH_ERRLEN       256

/* a connection's reachability, as logged and as env_gateway_status says */
typedef struct {
    ngx_log_t                          quiet;     /* nginx's own connect()
                                                     lines, taken aside */
    ngx_event_t                        confirm;   /* connected while down:
                                                     still up a while? */
    time_t                             since;     /* of the state now */
    ngx_msec_t                         window;    /* of the next summary */
    ngx_msec_t                         down_at;
    ngx_uint_t                         attempts;  /* failed in the window */
    ngx_uint_t                         total;     /* failed in the outage */
    ngx_uint_t                         confirm_gen; /* rc->generation */
    size_t                             last_len;
    u_char                             last[NGX_ENVGW_HEALTH_ERRLEN];
    unsigned                           outage:1;  /* logged as unreachable */
    unsigned                           failing:1; /* the last attempt failed */
    unsigned                           captured:1; /* last: nginx's line */
} ngx_env_gateway_health_t;


/* a command awaiting its reply */
typedef struct {
    ngx_queue_t                        queue;
    ngx_env_gateway_redis_handler_pt   handler;
    void                              *data;
    char                              *raw;       /* as formatted, to re-send;
                                                     NULL: never re-sent */
    size_t                             raw_len;
    uint64_t                           sent;      /* usec, for the RTT;
                                                     0: not written on c */
    ngx_msec_t                         deadline;  /* 0: never written */
    unsigned                           retried:1;
} ngx_env_gateway_cmd_t;


typedef void (*ngx_env_gateway_redis_event_pt)(ngx_env_gateway_redis_t *rc);
typedef ngx_int_t (*ngx_env_gateway_redis_ready_pt)(
    ngx_env_gateway_redis_t *rc);
typedef void (*ngx_env_gateway_redis_message_pt)(ngx_env_gateway_redis_t *rc,
    ngx_str_t *payload);


struct ngx_env_gateway_redis_s {
    ngx_env_gateway_main_conf_t       *gmcf;
    ngx_array_t                       *servers;   /* failover list */
    const char                        *role;      /* for log lines */
    ngx_uint_t                         current;   /* server index */
    ngx_uint_t                         failures;  /* in a row, this round */
    ngx_uint_t                         state;
    ngx_peer_connection_t              peer;
    ngx_connection_t                  *c;
    ngx_uint_t                         generation; /* of c: a handler may
                                                      replace it */
    redisReader                       *reader;
    size_t                             max_record;
    off_t                              fed;       /* bytes read on c */
    off_t                              mark;      /* where the reply being
                                                     read starts */
    int                                refused;   /* elements announced */
    ngx_msec_t                         resend_deadline; /* the earliest of
                                                      the commands re-sent */

    u_char                            *out;       /* outbound buffer */
    size_t                             out_pos;
    size_t                             out_len;
    size_t                             out_size;

    ngx_queue_t                        cmds;      /* awaiting replies */
    ngx_queue_t                        free;      /* spare command structs */
    ngx_uint_t                         ncmds;

    ngx_event_t                        flush;
    ngx_event_t                        reconnect;
    ngx_event_t                        primary;   /* return to server 0 */
    ngx_peer_connection_t              probe;     /* is server 0 back? */
    ngx_msec_t                         backoff;
    ngx_log_t                         *log;

    /* set by the layers built on the connection */
    ngx_env_gateway_redis_ready_pt     connected; /* handshake queued */
    ngx_env_gateway_redis_event_pt     dropped;
    ngx_env_gateway_redis_event_pt     resolve;   /* no address: ask */
    ngx_env_gateway_redis_message_pt   on_message; /* a pub/sub message */

    /* a subscription (_subscriber.c) */
    ngx_str_t                          channel;
    ngx_env_gateway_redis_event_pt     on_subscribed;
    ngx_env_gateway_redis_event_pt     on_unsubscribed;
    ngx_event_t                        ping;      /* subscriber health */

    unsigned                           subscriber:1;
    unsigned                           subscribed:1;
    unsigned                           ever_subscribed:1;
    unsigned                           resolving:1; /* asking Sentinels */
    unsigned                           healthy:1; /* c gave a good reply */
    unsigned                           sent:1;    /* c has sent bytes */

    /* TLS (_tls.c) */
#if (NGX_SSL)
    ngx_ssl_session_t                 *ssl_session; /* to resume */
    ngx_uint_t                         ssl_session_server;
#endif
    ngx_log_t                         *tls_log;   /* c->log: SSL errors kept */
    u_char                             tls_error[NGX_ENVGW_TLS_ERROR_LEN];
    ngx_env_gateway_health_t           health;    /* _health.c */
};


/* _redis.c */
ngx_env_gateway_redis_t *ngx_env_gateway_redis_create(ngx_cycle_t *cycle,
    ngx_env_gateway_main_conf_t *gmcf, ngx_array_t *servers,
    const char *role);
void ngx_env_gateway_redis_event(ngx_env_gateway_redis_t *rc,
    ngx_event_t *ev, ngx_event_handler_pt handler);
void ngx_env_gateway_redis_connect(ngx_env_gateway_redis_t *rc);
void ngx_env_gateway_redis_drop(ngx_env_gateway_redis_t *rc,
    ngx_uint_t ft, ngx_err_t err, const char *why);
void ngx_env_gateway_redis_close(ngx_env_gateway_redis_t *rc);
void ngx_env_gateway_redis_nudge(void);
void ngx_env_gateway_redis_ignore(void *data, redisReply *reply);
void ngx_env_gateway_redis_write_handler(ngx_event_t *wev);
void ngx_env_gateway_redis_connected(ngx_env_gateway_redis_t *rc);
void ngx_env_gateway_redis_close_connection(ngx_env_gateway_redis_t *rc);

#define ngx_env_gateway_redis_fail(rc, ft, why)                            \
    ngx_env_gateway_redis_drop(rc, ft, 0, why)

/* _pipeline.c */
ngx_int_t ngx_env_gateway_redis_send(ngx_env_gateway_redis_t *rc, int argc,
    const char **argv, const size_t *argvlen,
    ngx_env_gateway_redis_handler_pt handler, void *data, ngx_uint_t retry);
ngx_env_gateway_cmd_t *ngx_env_gateway_redis_cmd_alloc(
    ngx_env_gateway_redis_t *rc);
void ngx_env_gateway_redis_cmd_free(ngx_env_gateway_redis_t *rc,
    ngx_env_gateway_cmd_t *cmd);
ngx_int_t ngx_env_gateway_redis_append(ngx_env_gateway_redis_t *rc, int argc,
    const char **argv, const size_t *argvlen, char **raw, size_t *raw_len);
ngx_int_t ngx_env_gateway_redis_copy(ngx_env_gateway_redis_t *rc, char *raw,
    size_t len);
redisReader *ngx_env_gateway_redis_reader(ngx_env_gateway_redis_t *rc);
ngx_env_gateway_cmd_t *ngx_env_gateway_redis_requeue(
    ngx_env_gateway_redis_t *rc, ngx_uint_t keep, ngx_uint_t resend,
    ngx_uint_t head_fails, ngx_queue_t *failed, ngx_uint_t *nfailed,
    ngx_uint_t *nretried);
void ngx_env_gateway_redis_flush(ngx_env_gateway_redis_t *rc);
void ngx_env_gateway_redis_flush_handler(ngx_event_t *ev);
void ngx_env_gateway_redis_read_handler(ngx_event_t *rev);

/* _tls.c */
#if (NGX_SSL)
void ngx_env_gateway_tls_handshake(ngx_env_gateway_redis_t *rc);
void ngx_env_gateway_tls_close(ngx_env_gateway_redis_t *rc);
void ngx_env_gateway_tls_free(ngx_env_gateway_redis_t *rc);
const char *ngx_env_gateway_tls_why(ngx_env_gateway_redis_t *rc,
    const char *why, ngx_err_t *err, ngx_uint_t *ft);
#else
#define ngx_env_gateway_tls_why(rc, why, err, ft)  (why)
#endif

/* _subscriber.c */
ngx_env_gateway_redis_t *ngx_env_gateway_subscriber_create(
    ngx_cycle_t *cycle, ngx_env_gateway_main_conf_t *gmcf,
    ngx_array_t *servers, ngx_str_t *channel, const char *role);
ngx_int_t ngx_env_gateway_subscriber_init(ngx_cycle_t *cycle,
    ngx_env_gateway_main_conf_t *gmcf);
void ngx_env_gateway_subscriber_exit(void);

/* _health.c: state changes logged once, failed attempts summarised */
ngx_int_t ngx_env_gateway_health_init(ngx_env_gateway_redis_t *rc);
void ngx_env_gateway_health_connected(ngx_env_gateway_redis_t *rc);
void ngx_env_gateway_log_message(u_char *buf, size_t len, ngx_str_t *msg);
ngx_uint_t ngx_env_gateway_health_failed(ngx_env_gateway_redis_t *rc,
    ngx_uint_t was_ready, ngx_err_t err, const char *why);
const char *ngx_env_gateway_health_state(ngx_env_gateway_redis_t *rc);
ngx_uint_t ngx_env_gateway_health_answering(ngx_env_gateway_redis_t *rc);
void ngx_env_gateway_health_probe(void);
void ngx_env_gateway_health_hello(ngx_env_gateway_redis_t *rc);
ngx_env_gateway_redis_t *ngx_env_gateway_health_conn(ngx_uint_t i);
void ngx_env_gateway_health_exit(void);

#define ngx_env_gateway_health_log(rc)  (&(rc)->health.quiet)

/* the worker's lookup connection, not a subscriber or the Sentinels' */
#define NGX_ENVGW_ROLE_LOOKUPS        " (lookups)"
#define ngx_env_gateway_health_lookups(rc)                                 \
    (ngx_strcmp((rc)->role, NGX_ENVGW_ROLE_LOOKUPS) == 0)

/* _sentinel.c */
ngx_int_t ngx_env_gateway_sentinel_init(ngx_cycle_t *cycle,
    ngx_env_gateway_main_conf_t *gmcf);
void ngx_env_gateway_sentinel_attach(ngx_env_gateway_redis_t *rc);
void ngx_env_gateway_sentinel_exit(void);

/* _cluster.c */
ngx_int_t ngx_env_gateway_cluster_init(ngx_cycle_t *cycle,
    ngx_env_gateway_main_conf_t *gmcf);
void ngx_env_gateway_cluster_exit(void);
ngx_int_t ngx_env_gateway_cluster_command(int argc, const char **argv,
    const size_t *argvlen, ngx_env_gateway_redis_handler_pt handler,
    void *data);
uint16_t ngx_env_gateway_cluster_crc16(u_char *p, size_t len);
ngx_uint_t ngx_env_gateway_cluster_keyslot(u_char *key, size_t len);
ngx_int_t ngx_env_gateway_cluster_ready(void);

#endif /* NGX_ENV_GATEWAY_REDIS_H */
