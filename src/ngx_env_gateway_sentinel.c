/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * env_gateway: the master's address from the Sentinels.
 *
 * With "env_gateway_redis sentinel=NAME ...", the one server's address is
 * asked of the Sentinels (SENTINEL get-master-addr-by-name) before each
 * connect that follows a failure, by the connections attached here (the
 * lookups and the invalidation subscriber), and a second Sentinel
 * connection, a subscriber, listens to +switch-master so a failover moves
 * every attached connection at once.
 */

#include "ngx_env_gateway_redis.h"


/* the connections whose address the Sentinels give */
#define NGX_ENVGW_SENTINEL_CLIENTS    2


static void ngx_env_gateway_sentinel_resolve(ngx_env_gateway_redis_t *rc);
static void ngx_env_gateway_sentinel_reply(void *data, redisReply *reply);
static void ngx_env_gateway_sentinel_switch(ngx_env_gateway_redis_t *rc,
    ngx_str_t *payload);


static ngx_env_gateway_redis_t  *ngx_env_gateway_sentinel;   /* queries */
static ngx_env_gateway_redis_t  *ngx_env_gateway_sentinel_sub;
static ngx_uint_t                ngx_env_gateway_sentinel_asking;
static ngx_env_gateway_redis_t  *ngx_env_gateway_sentinel_clients[
                                     NGX_ENVGW_SENTINEL_CLIENTS];
static ngx_uint_t                ngx_env_gateway_sentinel_nclients;


ngx_int_t
ngx_env_gateway_sentinel_init(ngx_cycle_t *cycle,
    ngx_env_gateway_main_conf_t *gmcf)
{
    ngx_env_gateway_redis_t  *sq, *sw;

    static ngx_str_t  switch_master = ngx_string("+switch-master");

    ngx_env_gateway_sentinel_nclients = 0;
    ngx_env_gateway_sentinel_asking = 0;

    sq = ngx_env_gateway_redis_create(cycle, gmcf, gmcf->sentinels,
                                      " (sentinel)");
    sw = ngx_env_gateway_subscriber_create(cycle, gmcf, gmcf->sentinels,
                                           &switch_master,
                                           " (sentinel events)");
    if (sq == NULL || sw == NULL) {
        return NGX_ERROR;
    }

    sw->on_message = ngx_env_gateway_sentinel_switch;

    ngx_env_gateway_sentinel = sq;
    ngx_env_gateway_sentinel_sub = sw;

    ngx_env_gateway_redis_connect(sq);
    ngx_env_gateway_redis_connect(sw);

    return NGX_OK;
}


/* rc's address is asked of the Sentinels, and moved by +switch-master */
void
ngx_env_gateway_sentinel_attach(ngx_env_gateway_redis_t *rc)
{
    if (ngx_env_gateway_sentinel_nclients == NGX_ENVGW_SENTINEL_CLIENTS) {
        return;
    }

    rc->resolve = ngx_env_gateway_sentinel_resolve;
    ngx_env_gateway_sentinel_clients[ngx_env_gateway_sentinel_nclients++] = rc;
}


void
ngx_env_gateway_sentinel_exit(void)
{
    ngx_env_gateway_redis_t  *sq, *sw;

    sq = ngx_env_gateway_sentinel;
    sw = ngx_env_gateway_sentinel_sub;

    ngx_env_gateway_sentinel = NULL;
    ngx_env_gateway_sentinel_sub = NULL;
    ngx_env_gateway_sentinel_nclients = 0;

    ngx_env_gateway_redis_close(sq);
    ngx_env_gateway_redis_close(sw);
}


static void
ngx_env_gateway_sentinel_resolve(ngx_env_gateway_redis_t *rc)
{
    ngx_int_t                 rv;
    const char               *argv[3];
    size_t                    argvlen[3];
    ngx_env_gateway_redis_t  *sq;

    sq = ngx_env_gateway_sentinel;
    rc->resolving = 1;

    if (ngx_env_gateway_sentinel_asking) {
        return;
    }

    if (sq == NULL || sq->state == NGX_ENVGW_REDIS_DISCONNECTED) {
        rc->resolving = 0;
        ngx_env_gateway_redis_fail(rc, NGX_ENVGW_FT_NO_MASTER,
                                   "no Sentinel reachable");
        return;
    }

    argv[0] = "SENTINEL";
    argvlen[0] = 8;
    argv[1] = "get-master-addr-by-name";
    argvlen[1] = 23;
    argv[2] = (const char *) rc->gmcf->sentinel_name.data;
    argvlen[2] = rc->gmcf->sentinel_name.len;

    rv = ngx_env_gateway_redis_send(sq, 3, argv, argvlen,
                                    ngx_env_gateway_sentinel_reply, NULL, 0);
    if (rv != NGX_OK) {
        rc->resolving = 0;
        ngx_env_gateway_redis_fail(rc, NGX_ENVGW_FT_INTERNAL,
                                   "out of memory");
        return;
    }

    ngx_log_debug1(NGX_LOG_DEBUG_EVENT, sq->log, 0,
                   "env_gateway: asking the Sentinels for master \"%V\"",
                   &rc->gmcf->sentinel_name);

    ngx_env_gateway_sentinel_asking = 1;
}


/* "ip", "port" -> the one server's address (per worker) */
static ngx_int_t
ngx_env_gateway_sentinel_set(ngx_env_gateway_main_conf_t *gmcf,
    ngx_str_t *ip, ngx_str_t *port)
{
    u_char                    *p;
    ngx_int_t                  n;
    ngx_addr_t                 addr;
    ngx_pool_t                *pool;
    ngx_env_gateway_server_t  *srv;

    n = ngx_atoi(port->data, port->len);
    if (n < 1 || n > 65535) {
        return NGX_ERROR;
    }

    pool = ngx_cycle->pool;

    if (ngx_parse_addr(pool, &addr, ip->data, ip->len) != NGX_OK) {
        return NGX_ERROR;
    }

    ngx_inet_set_port(addr.sockaddr, (in_port_t) n);

    srv = gmcf->servers->elts;

    if (srv->sockaddr && srv->socklen == addr.socklen
        && ngx_cmp_sockaddr(srv->sockaddr, srv->socklen, addr.sockaddr,
                            addr.socklen, 1) == NGX_OK)
    {
        srv->resolved = 1;
        return NGX_OK;
    }

    p = ngx_pnalloc(pool, NGX_SOCKADDR_STRLEN);
    if (p == NULL) {
        return NGX_ERROR;
    }

    srv->name.len = ngx_sock_ntop(addr.sockaddr, addr.socklen, p,
                                  NGX_SOCKADDR_STRLEN, 1);
    srv->name.data = p;
    srv->sockaddr = addr.sockaddr;
    srv->socklen = addr.socklen;
    srv->resolved = 1;

    ngx_log_error(NGX_LOG_NOTICE, ngx_cycle->log, 0,
                  "env_gateway: Sentinels name %V as master \"%V\"",
                  &srv->name, &gmcf->sentinel_name);

    return NGX_DECLINED;
}


static void
ngx_env_gateway_sentinel_reply(void *data, redisReply *reply)
{
    ngx_int_t                  rv;
    ngx_str_t                  ip, port;
    ngx_uint_t                 i, n;
    ngx_env_gateway_redis_t  **waiting;

    ngx_env_gateway_sentinel_asking = 0;

    waiting = ngx_env_gateway_sentinel_clients;
    n = ngx_env_gateway_sentinel_nclients;

    rv = NGX_ERROR;

    if (reply && reply->type == REDIS_REPLY_ARRAY && reply->elements == 2
        && reply->element[0]->type == REDIS_REPLY_STRING
        && reply->element[1]->type == REDIS_REPLY_STRING
        && n)
    {
        ip.data = (u_char *) reply->element[0]->str;
        ip.len = reply->element[0]->len;
        port.data = (u_char *) reply->element[1]->str;
        port.len = reply->element[1]->len;

        rv = ngx_env_gateway_sentinel_set(waiting[0]->gmcf, &ip, &port);
    }

    ngx_log_debug1(NGX_LOG_DEBUG_EVENT, ngx_cycle->log, 0,
                   "env_gateway: the Sentinels answered: %s",
                   rv == NGX_ERROR ? "no master" : "a master");

    for (i = 0; i < n; i++) {
        if (!waiting[i]->resolving) {
            continue;
        }

        waiting[i]->resolving = 0;

        if (rv == NGX_ERROR) {
            ngx_env_gateway_redis_fail(waiting[i], NGX_ENVGW_FT_NO_MASTER,
                                       "the Sentinels name no master");
            continue;
        }

        ngx_env_gateway_redis_connect(waiting[i]);
    }
}


/* "+switch-master": <name> <old-ip> <old-port> <new-ip> <new-port> */
static void
ngx_env_gateway_sentinel_switch(ngx_env_gateway_redis_t *rc,
    ngx_str_t *payload)
{
    u_char                   *p, *last, *sp;
    ngx_str_t                 f[5];
    ngx_uint_t                i;
    ngx_env_gateway_redis_t  *cl;

    p = payload->data;
    last = p + payload->len;

    for (i = 0; i < 5; i++) {
        sp = ngx_strlchr(p, last, ' ');
        f[i].data = p;
        f[i].len = (sp ? sp : last) - p;
        p = sp ? sp + 1 : last;
    }

    if (f[4].len == 0 || ngx_env_gateway_str_ne(&f[0],
                                                &rc->gmcf->sentinel_name))
    {
        return;
    }

    if (ngx_env_gateway_sentinel_set(rc->gmcf, &f[3], &f[4]) != NGX_DECLINED)
    {
        return;
    }

    /* move the attached connections to the new master */
    for (i = 0; i < ngx_env_gateway_sentinel_nclients; i++) {
        cl = ngx_env_gateway_sentinel_clients[i];

        if (cl->state != NGX_ENVGW_REDIS_DISCONNECTED && !cl->resolving) {
            ngx_env_gateway_redis_fail(cl, NGX_ENVGW_FT_MOVED,
                                       "master switched");
        }
    }
}
