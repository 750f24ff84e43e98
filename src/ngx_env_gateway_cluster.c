/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * env_gateway: Redis Cluster (env_gateway_redis_cluster).
 *
 * Each worker keeps a slot map (16384 slots, each naming its primary and,
 * with read_from=replica, one of its replicas) read with CLUSTER SLOTS, and
 * one pipelined connection (_redis.c, _pipeline.c) per node address.  A
 * lookup goes to the node of its key's slot (CRC16 of the key, or of its
 * hash tag) the moment it is asked, so the lookups of one request, and of
 * every request of one event-loop pass, leave in one write per node.
 *
 * Redirects are followed without failing the request: -MOVED updates that
 * slot at once, asks for a new map, and sends the command to the named
 * node; -ASK sends ASKING and the command to the named node once.  A
 * command is redirected at most NGX_ENVGW_CLUSTER_REDIRECTS times.  A node
 * whose connection fails asks for a new map too, and its commands go to the
 * node the map names now if that is another one.  Map refreshes are never
 * closer than NGX_ENVGW_CLUSTER_REFRESH apart.  Before the first map, a
 * lookup goes to a seed, which redirects it.
 *
 * One deadline per lookup, across its redirects and re-sends: read_timeout
 * from when it is first handed to a node, plus connect_timeout if that
 * node's connection is not up yet.  A hop (a redirect, a re-send to
 * another node) whose deadline has passed is not sent.  Each hop is a new
 * command on its node's pipeline (_pipeline.c), which gives it a deadline
 * of its own, read_timeout from its write: that one says whether the node
 * answers, and failing it closes the node's connection.  The lookup's
 * deadline is its own timer instead: it answers the request (NULL: 503)
 * and leaves the command on the node, whose reply is dropped when it
 * comes, so a late lookup never closes a connection other lookups use.
 * Logged once: by the node's connection if it fails (as any deadline of
 * a connection to Redis), or, if the node answers after all, or the
 * lookup's deadline stops a redirect, by a line of its own.
 *
 * Fail closed: no node for the slot, its connection down, or redirects
 * exhausted: the caller gets a NULL reply (503), never a guess.
 *
 * Nodes that the map no longer names are closed; a later map or redirect
 * naming them opens them again.  The invalidation subscriber is not here:
 * it uses the seeds as its failover list (a PUBLISH on any node of a
 * cluster reaches the subscribers of every node).
 */

#include "ngx_env_gateway_redis.h"


#define NGX_ENVGW_CLUSTER_SLOTS       16384
#define NGX_ENVGW_CLUSTER_REDIRECTS   5
#define NGX_ENVGW_CLUSTER_REFRESH     100      /* ms between two maps */
#define NGX_ENVGW_CLUSTER_MAXARGS     4
#define NGX_ENVGW_CLUSTER_MAXNODES    1024

/* the lines of lookups answered late: the first, then one every 10 s */
#define NGX_ENVGW_CLUSTER_QUIET       10000    /* ms */


typedef struct {
    ngx_env_gateway_redis_t           *rc;
    ngx_array_t                       *servers;   /* this one address */
    unsigned                           retired:1;
    unsigned                           used:1;    /* in the map being read */
    unsigned                           primary:1; /* of some slot */
} ngx_env_gateway_cluster_node_t;


/* a command on its way to a node, with what it takes to send it again */
typedef struct {
    ngx_env_gateway_redis_handler_pt   handler;
    void                              *data;
    ngx_env_gateway_cluster_node_t    *node;
    ngx_uint_t                         slot;
    ngx_uint_t                         redirects; /* and re-sends */
    ngx_event_t                        timer;     /* the lookup's deadline */
    ngx_msec_t                         start;     /* first handed to a node */
    ngx_msec_t                         deadline;
    unsigned                           answered:1; /* by its deadline: the
                                                      late reply is dropped */
    int                                argc;
    const char                        *argv[NGX_ENVGW_CLUSTER_MAXARGS];
    size_t                             argvlen[NGX_ENVGW_CLUSTER_MAXARGS];
} ngx_env_gateway_cluster_cmd_t;


static ngx_env_gateway_cluster_node_t *ngx_env_gateway_cluster_node(
    ngx_str_t *addr, struct sockaddr *sa, socklen_t socklen);
static ngx_env_gateway_cluster_node_t *ngx_env_gateway_cluster_pick(
    ngx_uint_t slot);
static ngx_int_t ngx_env_gateway_cluster_send(
    ngx_env_gateway_cluster_cmd_t *cc, ngx_env_gateway_cluster_node_t *node,
    ngx_uint_t asking);
static void ngx_env_gateway_cluster_reply(void *data, redisReply *reply);
static void ngx_env_gateway_cluster_deadline_handler(ngx_event_t *ev);
static ngx_uint_t ngx_env_gateway_cluster_expired(
    ngx_env_gateway_cluster_cmd_t *cc);
static void ngx_env_gateway_cluster_late(ngx_env_gateway_cluster_cmd_t *cc);
static ngx_int_t ngx_env_gateway_cluster_redirect(
    ngx_env_gateway_cluster_cmd_t *cc, redisReply *reply);
static ngx_int_t ngx_env_gateway_cluster_index(
    ngx_env_gateway_cluster_node_t *node);
static void ngx_env_gateway_cluster_refresh(void);
static void ngx_env_gateway_cluster_refresh_handler(ngx_event_t *ev);
static void ngx_env_gateway_cluster_slots_reply(void *data,
    redisReply *reply);
static ngx_int_t ngx_env_gateway_cluster_connected(
    ngx_env_gateway_redis_t *rc);
static void ngx_env_gateway_cluster_dropped(ngx_env_gateway_redis_t *rc);


/* CRC16-CCITT (XModem) of the Redis Cluster specification, table driven */
static const uint16_t  ngx_env_gateway_crc16_table[256] = {
    0x0000, 0x1021, 0x2042, 0x3063, 0x4084, 0x50a5, 0x60c6, 0x70e7,
    0x8108, 0x9129, 0xa14a, 0xb16b, 0xc18c, 0xd1ad, 0xe1ce, 0xf1ef,
    0x1231, 0x0210, 0x3273, 0x2252, 0x52b5, 0x4294, 0x72f7, 0x62d6,
    0x9339, 0x8318, 0xb37b, 0xa35a, 0xd3bd, 0xc39c, 0xf3ff, 0xe3de,
    0x2462, 0x3443, 0x0420, 0x1401, 0x64e6, 0x74c7, 0x44a4, 0x5485,
    0xa56a, 0xb54b, 0x8528, 0x9509, 0xe5ee, 0xf5cf, 0xc5ac, 0xd58d,
    0x3653, 0x2672, 0x1611, 0x0630, 0x76d7, 0x66f6, 0x5695, 0x46b4,
    0xb75b, 0xa77a, 0x9719, 0x8738, 0xf7df, 0xe7fe, 0xd79d, 0xc7bc,
    0x48c4, 0x58e5, 0x6886, 0x78a7, 0x0840, 0x1861, 0x2802, 0x3823,
    0xc9cc, 0xd9ed, 0xe98e, 0xf9af, 0x8948, 0x9969, 0xa90a, 0xb92b,
    0x5af5, 0x4ad4, 0x7ab7, 0x6a96, 0x1a71, 0x0a50, 0x3a33, 0x2a12,
    0xdbfd, 0xcbdc, 0xfbbf, 0xeb9e, 0x9b79, 0x8b58, 0xbb3b, 0xab1a,
    0x6ca6, 0x7c87, 0x4ce4, 0x5cc5, 0x2c22, 0x3c03, 0x0c60, 0x1c41,
    0xedae, 0xfd8f, 0xcdec, 0xddcd, 0xad2a, 0xbd0b, 0x8d68, 0x9d49,
    0x7e97, 0x6eb6, 0x5ed5, 0x4ef4, 0x3e13, 0x2e32, 0x1e51, 0x0e70,
    0xff9f, 0xefbe, 0xdfdd, 0xcffc, 0xbf1b, 0xaf3a, 0x9f59, 0x8f78,
    0x9188, 0x81a9, 0xb1ca, 0xa1eb, 0xd10c, 0xc12d, 0xf14e, 0xe16f,
    0x1080, 0x00a1, 0x30c2, 0x20e3, 0x5004, 0x4025, 0x7046, 0x6067,
    0x83b9, 0x9398, 0xa3fb, 0xb3da, 0xc33d, 0xd31c, 0xe37f, 0xf35e,
    0x02b1, 0x1290, 0x22f3, 0x32d2, 0x4235, 0x5214, 0x6277, 0x7256,
    0xb5ea, 0xa5cb, 0x95a8, 0x8589, 0xf56e, 0xe54f, 0xd52c, 0xc50d,
    0x34e2, 0x24c3, 0x14a0, 0x0481, 0x7466, 0x6447, 0x5424, 0x4405,
    0xa7db, 0xb7fa, 0x8799, 0x97b8, 0xe75f, 0xf77e, 0xc71d, 0xd73c,
    0x26d3, 0x36f2, 0x0691, 0x16b0, 0x6657, 0x7676, 0x4615, 0x5634,
    0xd94c, 0xc96d, 0xf90e, 0xe92f, 0x99c8, 0x89e9, 0xb98a, 0xa9ab,
    0x5844, 0x4865, 0x7806, 0x6827, 0x18c0, 0x08e1, 0x3882, 0x28a3,
    0xcb7d, 0xdb5c, 0xeb3f, 0xfb1e, 0x8bf9, 0x9bd8, 0xabbb, 0xbb9a,
    0x4a75, 0x5a54, 0x6a37, 0x7a16, 0x0af1, 0x1ad0, 0x2ab3, 0x3a92,
    0xfd2e, 0xed0f, 0xdd6c, 0xcd4d, 0xbdaa, 0xad8b, 0x9de8, 0x8dc9,
    0x7c26, 0x6c07, 0x5c64, 0x4c45, 0x3ca2, 0x2c83, 0x1ce0, 0x0cc1,
    0xef1f, 0xff3e, 0xcf5d, 0xdf7c, 0xaf9b, 0xbfba, 0x8fd9, 0x9ff8,
    0x6e17, 0x7e36, 0x4e55, 0x5e74, 0x2e93, 0x3eb2, 0x0ed1, 0x1ef0,
};


static ngx_cycle_t                     *ngx_env_gateway_cluster_cycle;
static ngx_env_gateway_main_conf_t     *ngx_env_gateway_cluster_gmcf;
static ngx_array_t                     *ngx_env_gateway_cluster_nodes;
static ngx_uint_t                       ngx_env_gateway_cluster_replica;
static ngx_uint_t                       ngx_env_gateway_cluster_mapped;
static ngx_uint_t                       ngx_env_gateway_cluster_closing;
static ngx_uint_t                       ngx_env_gateway_cluster_next;
static ngx_msec_t                       ngx_env_gateway_cluster_last;
static ngx_event_t                      ngx_env_gateway_cluster_timer;
static ngx_log_t                        ngx_env_gateway_cluster_log;
static ngx_msec_t                       ngx_env_gateway_cluster_late_at;
static ngx_uint_t                       ngx_env_gateway_cluster_late_skipped;
static ngx_uint_t                       ngx_env_gateway_cluster_late_any;

/* node index + 1 of each slot (0: none), the map in use and the next one */
static uint16_t  ngx_env_gateway_cluster_primary[NGX_ENVGW_CLUSTER_SLOTS];
static uint16_t  ngx_env_gateway_cluster_replicas[NGX_ENVGW_CLUSTER_SLOTS];
static uint16_t  ngx_env_gateway_cluster_new_primary[NGX_ENVGW_CLUSTER_SLOTS];
static uint16_t  ngx_env_gateway_cluster_new_replica[NGX_ENVGW_CLUSTER_SLOTS];


uint16_t
ngx_env_gateway_cluster_crc16(u_char *p, size_t len)
{
    uint16_t  crc;

    crc = 0;

    while (len--) {
        crc = (uint16_t) (crc << 8)
              ^ ngx_env_gateway_crc16_table[((crc >> 8) ^ *p++) & 0xff];
    }

    return crc;
}


/* the key's slot: of its hash tag ("{...}", not empty) if it has one */
ngx_uint_t
ngx_env_gateway_cluster_keyslot(u_char *key, size_t len)
{
    u_char  *open, *close, *last;

    last = key + len;

    open = ngx_strlchr(key, last, '{');

    if (open) {
        close = ngx_strlchr(open + 1, last, '}');

        if (close && close > open + 1) {
            key = open + 1;
            len = close - key;
        }
    }

    return ngx_env_gateway_cluster_crc16(key, len)
           & (NGX_ENVGW_CLUSTER_SLOTS - 1);
}


ngx_int_t
ngx_env_gateway_cluster_init(ngx_cycle_t *cycle,
    ngx_env_gateway_main_conf_t *gmcf)
{
    ngx_uint_t                 i;
    ngx_env_gateway_server_t  *seed;

    ngx_env_gateway_cluster_cycle = cycle;
    ngx_env_gateway_cluster_gmcf = gmcf;
    ngx_env_gateway_cluster_replica = gmcf->cluster_replica;
    ngx_env_gateway_cluster_mapped = 0;
    ngx_env_gateway_cluster_closing = 0;
    ngx_env_gateway_cluster_last = 0;

    ngx_memzero(ngx_env_gateway_cluster_primary,
                sizeof(ngx_env_gateway_cluster_primary));
    ngx_memzero(ngx_env_gateway_cluster_replicas,
                sizeof(ngx_env_gateway_cluster_replicas));

    ngx_env_gateway_cluster_log = *cycle->log;
    ngx_memzero(&ngx_env_gateway_cluster_timer, sizeof(ngx_event_t));
    ngx_env_gateway_cluster_timer.handler =
                                      ngx_env_gateway_cluster_refresh_handler;
    ngx_env_gateway_cluster_timer.log = &ngx_env_gateway_cluster_log;
    ngx_env_gateway_cluster_timer.data = &ngx_env_gateway_cluster_log;
    ngx_env_gateway_cluster_timer.cancelable = 1;

    ngx_env_gateway_cluster_nodes = ngx_array_create(cycle->pool, 8,
                                sizeof(ngx_env_gateway_cluster_node_t *));
    if (ngx_env_gateway_cluster_nodes == NULL) {
        return NGX_ERROR;
    }

    seed = gmcf->servers->elts;

    for (i = 0; i < gmcf->servers->nelts; i++) {
        if (ngx_env_gateway_cluster_node(&seed[i].name, seed[i].sockaddr,
                                         seed[i].socklen)
            == NULL)
        {
            return NGX_ERROR;
        }
    }

    ngx_env_gateway_cluster_refresh();

    return NGX_OK;
}


void
ngx_env_gateway_cluster_exit(void)
{
    ngx_uint_t                        i;
    ngx_env_gateway_cluster_node_t  **node;

    if (ngx_env_gateway_cluster_nodes == NULL) {
        return;
    }

    ngx_env_gateway_cluster_closing = 1;

    if (ngx_env_gateway_cluster_timer.timer_set) {
        ngx_del_timer(&ngx_env_gateway_cluster_timer);
    }

    node = ngx_env_gateway_cluster_nodes->elts;

    for (i = 0; i < ngx_env_gateway_cluster_nodes->nelts; i++) {
        ngx_env_gateway_redis_close(node[i]->rc);
    }

    ngx_env_gateway_cluster_nodes = NULL;
}


/* the node of an address, opened if new or retired; NULL: out of memory */
static ngx_env_gateway_cluster_node_t *
ngx_env_gateway_cluster_node(ngx_str_t *addr, struct sockaddr *sa,
    socklen_t socklen)
{
    u_char                           *role;
    size_t                            len;
    ngx_uint_t                        i;
    ngx_pool_t                       *pool;
    ngx_env_gateway_server_t         *srv, *tpl;
    ngx_env_gateway_cluster_node_t  **np, *node;

    np = ngx_env_gateway_cluster_nodes->elts;

    for (i = 0; i < ngx_env_gateway_cluster_nodes->nelts; i++) {
        srv = np[i]->servers->elts;

        if (ngx_cmp_sockaddr(srv->sockaddr, srv->socklen, sa, socklen, 1)
            != NGX_OK)
        {
            continue;
        }

        node = np[i];

        if (node->retired) {
            node->retired = 0;

            ngx_log_debug1(NGX_LOG_DEBUG_EVENT, node->rc->log, 0,
                           "env_gateway: redis%s: named again, reopened",
                           node->rc->role);

            ngx_env_gateway_redis_connect(node->rc);
        }

        return node;
    }

    if (ngx_env_gateway_cluster_nodes->nelts >= NGX_ENVGW_CLUSTER_MAXNODES) {
        ngx_log_error(NGX_LOG_ERR, &ngx_env_gateway_cluster_log, 0,
                      "env_gateway: redis cluster: more than %d nodes, "
                      "\"%V\" not used", NGX_ENVGW_CLUSTER_MAXNODES, addr);
        return NULL;
    }

    pool = ngx_env_gateway_cluster_cycle->pool;

    node = ngx_pcalloc(pool, sizeof(ngx_env_gateway_cluster_node_t));
    if (node == NULL) {
        return NULL;
    }

    node->servers = ngx_array_create(pool, 1,
                                     sizeof(ngx_env_gateway_server_t));
    if (node->servers == NULL) {
        return NULL;
    }

    srv = ngx_array_push(node->servers);
    if (srv == NULL) {
        return NULL;
    }

    /* every node is reached as the first seed is: TLS, AUTH, timeouts */
    tpl = ngx_env_gateway_cluster_gmcf->servers->elts;
    *srv = *tpl;

    srv->name.data = ngx_pnalloc(pool, addr->len);
    if (srv->name.data == NULL) {
        return NULL;
    }

    srv->name.len = addr->len;
    ngx_memcpy(srv->name.data, addr->data, addr->len);

    srv->sockaddr = ngx_palloc(pool, socklen);
    if (srv->sockaddr == NULL) {
        return NULL;
    }

    ngx_memcpy(srv->sockaddr, sa, socklen);
    srv->socklen = socklen;
    srv->resolved = 1;
    srv->db = -1;

    len = sizeof(" (cluster node )") + addr->len;

    role = ngx_pnalloc(pool, len);
    if (role == NULL) {
        return NULL;
    }

    *ngx_snprintf(role, len - 1, " (cluster node %V)", addr) = '\0';

    node->rc = ngx_env_gateway_redis_create(ngx_env_gateway_cluster_cycle,
                                            ngx_env_gateway_cluster_gmcf,
                                            node->servers,
                                            (const char *) role);
    if (node->rc == NULL) {
        return NULL;
    }

    node->rc->connected = ngx_env_gateway_cluster_connected;
    node->rc->dropped = ngx_env_gateway_cluster_dropped;

    np = ngx_array_push(ngx_env_gateway_cluster_nodes);
    if (np == NULL) {
        return NULL;
    }

    *np = node;

    ngx_log_debug1(NGX_LOG_DEBUG_EVENT, node->rc->log, 0,
                   "env_gateway: redis%s: new node", node->rc->role);

    ngx_env_gateway_redis_connect(node->rc);

    return node;
}


/* "ip:port" as Redis names a node, or NULL */
static ngx_env_gateway_cluster_node_t *
ngx_env_gateway_cluster_node_text(u_char *p, size_t len)
{
    ngx_str_t                        addr;
    ngx_addr_t                       a;
    ngx_pool_t                      *pool;
    ngx_env_gateway_cluster_node_t  *node;

    addr.data = p;
    addr.len = len;

    /* the address parsed is copied by a new node: a pool of the moment */
    pool = ngx_create_pool(NGX_MIN_POOL_SIZE, &ngx_env_gateway_cluster_log);
    if (pool == NULL) {
        return NULL;
    }

    if (len == 0
        || ngx_parse_addr_port(pool, &a, p, len) != NGX_OK
        || ngx_inet_get_port(a.sockaddr) == 0)
    {
        ngx_log_error(NGX_LOG_ERR, &ngx_env_gateway_cluster_log, 0,
                      "env_gateway: redis cluster named an invalid node "
                      "address \"%*s\"", ngx_min(len, 64), p);
        ngx_destroy_pool(pool);
        return NULL;
    }

    node = ngx_env_gateway_cluster_node(&addr, a.sockaddr, a.socklen);

    ngx_destroy_pool(pool);

    return node;
}


/*
 * Lookups can be served (env_gateway_status, env_gateway_redis_up): a map,
 * and every primary it names connected.  NGX_DECLINED: not a cluster.
 */
ngx_int_t
ngx_env_gateway_cluster_ready(void)
{
    ngx_uint_t                        i;
    ngx_env_gateway_cluster_node_t  **np;

    if (ngx_env_gateway_cluster_nodes == NULL) {
        return NGX_DECLINED;
    }

    if (!ngx_env_gateway_cluster_mapped) {
        return 0;
    }

    np = ngx_env_gateway_cluster_nodes->elts;

    for (i = 0; i < ngx_env_gateway_cluster_nodes->nelts; i++) {
        if (np[i]->primary && !np[i]->retired
            && np[i]->rc->state != NGX_ENVGW_REDIS_READY)
        {
            return 0;
        }
    }

    return 1;
}


static ngx_uint_t
ngx_env_gateway_cluster_usable(ngx_env_gateway_cluster_node_t *node)
{
    return node && !node->retired
           && node->rc->state != NGX_ENVGW_REDIS_DISCONNECTED;
}


/* where a slot's commands go: NULL when no node can take them now */
static ngx_env_gateway_cluster_node_t *
ngx_env_gateway_cluster_pick(ngx_uint_t slot)
{
    ngx_uint_t                        i, n, k;
    ngx_env_gateway_cluster_node_t  **np;

    np = ngx_env_gateway_cluster_nodes->elts;
    n = ngx_env_gateway_cluster_nodes->nelts;

    if (ngx_env_gateway_cluster_mapped) {
        k = ngx_env_gateway_cluster_replicas[slot];

        if (ngx_env_gateway_cluster_replica && k
            && ngx_env_gateway_cluster_usable(np[k - 1]))
        {
            return np[k - 1];
        }

        k = ngx_env_gateway_cluster_primary[slot];

        return k ? np[k - 1] : NULL;
    }

    /* no map yet: any node that can answer, which redirects if need be */
    for (i = 0; i < n; i++) {
        k = (ngx_env_gateway_cluster_next + i) % n;

        if (ngx_env_gateway_cluster_usable(np[k])) {
            return np[k];
        }
    }

    return NULL;
}


ngx_int_t
ngx_env_gateway_cluster_command(int argc, const char **argv,
    const size_t *argvlen, ngx_env_gateway_redis_handler_pt handler,
    void *data)
{
    u_char                          *p;
    size_t                           len;
    ngx_int_t                        rc;
    ngx_msec_t                       timeout;
    ngx_uint_t                       i, slot;
    ngx_env_gateway_server_t        *srv;
    ngx_env_gateway_cluster_cmd_t   *cc;
    ngx_env_gateway_cluster_node_t  *node;

    if (ngx_env_gateway_cluster_nodes == NULL) {
        return NGX_DECLINED;
    }

    if (argc < 2 || argc > NGX_ENVGW_CLUSTER_MAXARGS) {
        return NGX_ERROR;
    }

    slot = ngx_env_gateway_cluster_keyslot((u_char *) argv[1], argvlen[1]);

    node = ngx_env_gateway_cluster_pick(slot);

    if (!ngx_env_gateway_cluster_usable(node)) {
        ngx_log_debug1(NGX_LOG_DEBUG_EVENT, &ngx_env_gateway_cluster_log, 0,
                       "env_gateway: redis cluster: no node can take slot "
                       "%ui now", slot);

        ngx_env_gateway_cluster_refresh();
        return NGX_DECLINED;
    }

    /* the arguments are kept with the command, to send it elsewhere */
    len = sizeof(ngx_env_gateway_cluster_cmd_t);
    for (i = 0; i < (ngx_uint_t) argc; i++) {
        len += argvlen[i];
    }

    cc = ngx_alloc(len, &ngx_env_gateway_cluster_log);
    if (cc == NULL) {
        return NGX_ERROR;
    }

    cc->handler = handler;
    cc->data = data;
    cc->node = NULL;
    cc->slot = slot;
    cc->redirects = 0;
    cc->answered = 0;
    cc->argc = argc;

    /*
     * The lookup's one deadline, as the pipeline would stamp its first
     * write: read_timeout from now (the write is posted for this very
     * event-loop pass), after the connect if the node is not up yet.
     */
    srv = node->rc->servers->elts;
    timeout = srv->read_timeout;

    if (node->rc->state != NGX_ENVGW_REDIS_READY) {
        timeout += srv->connect_timeout;
    }

    cc->start = ngx_current_msec;
    cc->deadline = cc->start + timeout;

    ngx_memzero(&cc->timer, sizeof(ngx_event_t));
    cc->timer.handler = ngx_env_gateway_cluster_deadline_handler;
    cc->timer.data = cc;
    cc->timer.log = &ngx_env_gateway_cluster_log;

    p = (u_char *) (cc + 1);

    for (i = 0; i < (ngx_uint_t) argc; i++) {
        cc->argv[i] = (const char *) p;
        cc->argvlen[i] = argvlen[i];
        p = ngx_cpymem(p, argv[i], argvlen[i]);
    }

    rc = ngx_env_gateway_cluster_send(cc, node, 0);

    if (rc != NGX_OK) {
        ngx_free(cc);
        return rc;
    }

    /* not cancelable: a graceful shutdown waits for it, as for the reply */
    ngx_add_timer(&cc->timer, timeout);

    return NGX_OK;
}


static ngx_int_t
ngx_env_gateway_cluster_send(ngx_env_gateway_cluster_cmd_t *cc,
    ngx_env_gateway_cluster_node_t *node, ngx_uint_t asking)
{
    const char  *argv[1];
    size_t       argvlen[1];

    if (!ngx_env_gateway_cluster_usable(node)) {
        return NGX_DECLINED;
    }

    if (asking) {
        /* the next command on this connection is the one asked for */
        argv[0] = "ASKING";
        argvlen[0] = 6;

        if (ngx_env_gateway_redis_send(node->rc, 1, argv, argvlen,
                                       ngx_env_gateway_redis_ignore, NULL, 0)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    ngx_log_debug3(NGX_LOG_DEBUG_EVENT, node->rc->log, 0,
                   "env_gateway: redis%s: slot %ui%s", node->rc->role,
                   cc->slot, asking ? ", after ASKING" : "");

    cc->node = node;

    /* a lookup is safe to send again on this node's next connection */
    return ngx_env_gateway_redis_send(node->rc, cc->argc, cc->argv,
                                      cc->argvlen,
                                      ngx_env_gateway_cluster_reply, cc, 1);
}


static void
ngx_env_gateway_cluster_done(ngx_env_gateway_cluster_cmd_t *cc,
    redisReply *reply)
{
    if (cc->timer.timer_set) {
        ngx_del_timer(&cc->timer);
    }

    cc->handler(cc->data, reply);
    ngx_free(cc);
}


static void
ngx_env_gateway_cluster_reply(void *data, redisReply *reply)
{
    ngx_env_gateway_cluster_cmd_t  *cc = data;

    ngx_env_gateway_cluster_node_t  *node;

    if (cc->answered) {
        /* its deadline answered the request: nothing more is done for it */
        ngx_log_debug2(NGX_LOG_DEBUG_EVENT, &ngx_env_gateway_cluster_log, 0,
                       "env_gateway: redis cluster: slot %ui: %s after the "
                       "lookup's deadline, dropped", cc->slot,
                       reply ? "a reply" : "a failure");

        if (reply) {
            ngx_env_gateway_cluster_late(cc);

            /* what a redirect says of the map is not lost */
            if (reply->type == REDIS_REPLY_ERROR && reply->len > 4
                && (ngx_strncmp(reply->str, "MOVED ", 6) == 0
                    || ngx_strncmp(reply->str, "CLUSTERDOWN", 11) == 0
                    || ngx_strncmp(reply->str, "TRYAGAIN", 8) == 0))
            {
                ngx_env_gateway_cluster_refresh();
            }
        }

        ngx_free(cc);
        return;
    }

    if (reply == NULL) {
        /* the node failed (or closed): the map may name another by now */
        if (!ngx_env_gateway_cluster_closing) {
            ngx_env_gateway_cluster_refresh();

            if (ngx_env_gateway_cluster_nodes) {
                node = ngx_env_gateway_cluster_pick(cc->slot);

                /*
                 * Past the deadline it is not sent again; the node's
                 * failure was logged, and answers for the lookup.
                 */
                if (node && node != cc->node
                    && !ngx_env_gateway_cluster_expired(cc)
                    && cc->redirects++ < NGX_ENVGW_CLUSTER_REDIRECTS
                    && ngx_env_gateway_cluster_send(cc, node, 0) == NGX_OK)
                {
                    return;
                }
            }
        }

        ngx_env_gateway_cluster_done(cc, NULL);
        return;
    }

    if (reply->type == REDIS_REPLY_ERROR && reply->len > 4) {

        if (ngx_strncmp(reply->str, "MOVED ", 6) == 0
            || ngx_strncmp(reply->str, "ASK ", 4) == 0)
        {
            if (ngx_env_gateway_cluster_redirect(cc, reply) != NGX_OK) {
                ngx_env_gateway_cluster_done(cc, NULL);
            }

            return;
        }

        if (ngx_strncmp(reply->str, "CLUSTERDOWN", 11) == 0
            || ngx_strncmp(reply->str, "TRYAGAIN", 8) == 0)
        {
            ngx_env_gateway_cluster_refresh();
        }
    }

    ngx_env_gateway_cluster_done(cc, reply);
}


/* "-MOVED 3999 127.0.0.1:6381", "-ASK 3999 127.0.0.1:6381" */
static ngx_int_t
ngx_env_gateway_cluster_redirect(ngx_env_gateway_cluster_cmd_t *cc,
    redisReply *reply)
{
    u_char                          *p, *last, *addr;
    ngx_int_t                        slot;
    ngx_uint_t                       ask;
    ngx_env_gateway_cluster_node_t  *node;

    ask = (reply->str[0] == 'A');
    p = (u_char *) reply->str + (ask ? 4 : 6);
    last = (u_char *) reply->str + reply->len;

    addr = ngx_strlchr(p, last, ' ');

    slot = addr ? ngx_atoi(p, addr - p) : NGX_ERROR;

    if (slot == NGX_ERROR || slot >= NGX_ENVGW_CLUSTER_SLOTS) {
        ngx_log_error(NGX_LOG_ERR, &ngx_env_gateway_cluster_log, 0,
                      "env_gateway: redis cluster: unreadable redirect "
                      "\"%*s\"", ngx_min(reply->len, 128), reply->str);
        return NGX_ERROR;
    }

    if (cc->redirects++ >= NGX_ENVGW_CLUSTER_REDIRECTS) {
        ngx_log_error(NGX_LOG_ERR, &ngx_env_gateway_cluster_log, 0,
                      "env_gateway: redis cluster: slot %i redirected "
                      "%d times, given up", slot,
                      NGX_ENVGW_CLUSTER_REDIRECTS);
        return NGX_ERROR;
    }

    addr++;

    node = ngx_env_gateway_cluster_node_text(addr, last - addr);
    if (node == NULL) {
        return NGX_ERROR;
    }

    ngx_log_debug3(NGX_LOG_DEBUG_EVENT, node->rc->log, 0,
                   "env_gateway: redis%s: %s for slot %i",
                   node->rc->role, ask ? "ASK" : "MOVED", slot);

    if (!ask) {
        /*
         * This slot at once, the others with the next map; its replica
         * (read_from=replica) is not asked until that map names one.
         */
        ngx_env_gateway_cluster_primary[cc->slot] =
                             (uint16_t) ngx_env_gateway_cluster_index(node);
        ngx_env_gateway_cluster_replicas[cc->slot] = 0;
        node->primary = 1;
        ngx_env_gateway_cluster_refresh();
    }

    /* the redirect is followed within the lookup's deadline, or not at all */
    if (ngx_env_gateway_cluster_expired(cc)) {
        ngx_env_gateway_cluster_late(cc);
        return NGX_ERROR;
    }

    return ngx_env_gateway_cluster_send(cc, node, ask);
}


/* the lookup's deadline has passed: no hop is sent any more */
static ngx_uint_t
ngx_env_gateway_cluster_expired(ngx_env_gateway_cluster_cmd_t *cc)
{
    if ((ngx_msec_int_t) (cc->deadline - ngx_current_msec) > 0) {
        return 0;
    }

    ngx_log_debug3(NGX_LOG_DEBUG_EVENT, &ngx_env_gateway_cluster_log, 0,
                   "env_gateway: redis cluster: slot %ui past its deadline "
                   "after %ui redirect(s) and re-send(s), %M ms",
                   cc->slot, cc->redirects, ngx_current_msec - cc->start);

    return 1;
}


/*
 * A lookup refused by its deadline while its node answers (late): that
 * node's connection is fine and logs nothing, so this line tells.  One
 * that a node's failure refused was logged by that node's connection.
 */
static void
ngx_env_gateway_cluster_late(ngx_env_gateway_cluster_cmd_t *cc)
{
    if (ngx_env_gateway_cluster_late_any
        && ngx_current_msec - ngx_env_gateway_cluster_late_at
           < NGX_ENVGW_CLUSTER_QUIET)
    {
        ngx_env_gateway_cluster_late_skipped++;
        return;
    }

    ngx_log_error(NGX_LOG_ERR, &ngx_env_gateway_cluster_log, 0,
                  "env_gateway: redis%s: slot %ui answered %M ms after the "
                  "lookup's deadline (%M ms from its first send, %ui "
                  "redirect(s) and re-send(s)), refused 503 (%ui more since "
                  "the last such line, written at most every %M s)",
                  cc->node->rc->role, cc->slot,
                  ngx_current_msec - cc->deadline, cc->deadline - cc->start,
                  cc->redirects, ngx_env_gateway_cluster_late_skipped,
                  (ngx_msec_t) NGX_ENVGW_CLUSTER_QUIET / 1000);

    ngx_env_gateway_cluster_late_any = 1;
    ngx_env_gateway_cluster_late_at = ngx_current_msec;
    ngx_env_gateway_cluster_late_skipped = 0;
}


/*
 * The lookup's deadline: the request is answered (503) at once.  The
 * command stays on its node, whose pipeline keeps its own deadline for it;
 * the reply, or the failure, is dropped when it comes (cc->answered).
 */
static void
ngx_env_gateway_cluster_deadline_handler(ngx_event_t *ev)
{
    ngx_env_gateway_cluster_cmd_t  *cc = ev->data;

    ngx_log_debug3(NGX_LOG_DEBUG_EVENT, cc->node->rc->log, 0,
                   "env_gateway: redis%s: slot %ui: the lookup's deadline, "
                   "after %ui redirect(s) and re-send(s)", cc->node->rc->role,
                   cc->slot, cc->redirects);

    cc->answered = 1;
    cc->handler(cc->data, NULL);
}


/* a new map is asked for soon, never sooner than the interval allows */
static void
ngx_env_gateway_cluster_refresh(void)
{
    ngx_msec_t  delay, since;

    if (ngx_env_gateway_cluster_closing
        || ngx_env_gateway_cluster_timer.timer_set
        || ngx_exiting || ngx_quit || ngx_terminate)
    {
        return;
    }

    since = ngx_current_msec - ngx_env_gateway_cluster_last;
    delay = (ngx_env_gateway_cluster_last == 0
             || since >= NGX_ENVGW_CLUSTER_REFRESH)
            ? 1 : NGX_ENVGW_CLUSTER_REFRESH - since;

    ngx_add_timer(&ngx_env_gateway_cluster_timer, delay);
}


/* CLUSTER SLOTS, asked of the next node that can answer */
static void
ngx_env_gateway_cluster_refresh_handler(ngx_event_t *ev)
{
    ngx_uint_t                        i, n, k;
    const char                       *argv[2];
    size_t                            argvlen[2];
    ngx_env_gateway_cluster_node_t  **np;

    if (ngx_env_gateway_cluster_closing
        || ngx_exiting || ngx_quit || ngx_terminate)
    {
        return;
    }

    ngx_env_gateway_cluster_last = ngx_current_msec;

    np = ngx_env_gateway_cluster_nodes->elts;
    n = ngx_env_gateway_cluster_nodes->nelts;

    /* the nodes in turn: one that lost its slots answers with the others */
    for (i = 0; i < n; i++) {
        k = (ngx_env_gateway_cluster_next + i) % n;

        if (np[k]->retired
            || np[k]->rc->state != NGX_ENVGW_REDIS_READY)
        {
            continue;
        }

        ngx_env_gateway_cluster_next = (k + 1) % n;

        argv[0] = "CLUSTER";
        argvlen[0] = 7;
        argv[1] = "SLOTS";
        argvlen[1] = 5;

        ngx_log_debug1(NGX_LOG_DEBUG_EVENT, np[k]->rc->log, 0,
                       "env_gateway: redis%s: CLUSTER SLOTS", np[k]->rc->role);

        if (ngx_env_gateway_redis_send(np[k]->rc, 2, argv, argvlen,
                                       ngx_env_gateway_cluster_slots_reply,
                                       np[k], 0)
            == NGX_OK)
        {
            return;
        }
    }

    /* no node answers yet: the retired ones are tried again too */
    for (i = 0; i < n; i++) {
        if (np[i]->retired) {
            np[i]->retired = 0;
            ngx_env_gateway_redis_connect(np[i]->rc);
        }
    }

    ngx_add_timer(&ngx_env_gateway_cluster_timer, NGX_ENVGW_CLUSTER_REFRESH);
}


/* one node of a CLUSTER SLOTS range: [ip, port, id, ...] */
static ngx_env_gateway_cluster_node_t *
ngx_env_gateway_cluster_slots_node(redisReply *r)
{
    u_char   *p, *last;
    size_t    len;
    u_char    text[NGX_SOCKADDR_STRLEN + sizeof("[]:65535")];

    if (r->type != REDIS_REPLY_ARRAY || r->elements < 2
        || r->element[0]->type != REDIS_REPLY_STRING
        || r->element[1]->type != REDIS_REPLY_INTEGER
        || r->element[1]->integer <= 0 || r->element[1]->integer > 65535)
    {
        return NULL;
    }

    p = (u_char *) r->element[0]->str;
    len = r->element[0]->len;

    if (len == 0 || len > NGX_SOCKADDR_STRLEN) {
        return NULL;
    }

    last = text + sizeof(text);

    if (ngx_strlchr(p, p + len, ':')) {
        last = ngx_slprintf(text, last, "[%*s]:%i", len, p,
                            (ngx_int_t) r->element[1]->integer);

    } else {
        last = ngx_slprintf(text, last, "%*s:%i", len, p,
                            (ngx_int_t) r->element[1]->integer);
    }

    return ngx_env_gateway_cluster_node_text(text, last - text);
}


static ngx_int_t
ngx_env_gateway_cluster_index(ngx_env_gateway_cluster_node_t *node)
{
    ngx_uint_t                        i;
    ngx_env_gateway_cluster_node_t  **np;

    np = ngx_env_gateway_cluster_nodes->elts;

    for (i = 0; i < ngx_env_gateway_cluster_nodes->nelts; i++) {
        if (np[i] == node) {
            node->used = 1;
            return i + 1;
        }
    }

    return 0;
}


/*
 * [[start, end, [ip, port, id], [replica ip, port, id] ...] ...]: a new map.
 * A reply that cannot be read whole leaves the old map; the next is asked
 * after the interval.
 */
static void
ngx_env_gateway_cluster_slots_reply(void *data, redisReply *reply)
{
    ngx_env_gateway_cluster_node_t  *asked = data;

    ngx_int_t                         start, end, s, k;
    ngx_uint_t                        i, j, covered, nodes;
    redisReply                       *range;
    ngx_env_gateway_cluster_node_t  **np, *node;

    if (ngx_env_gateway_cluster_closing
        || ngx_env_gateway_cluster_nodes == NULL)
    {
        return;
    }

    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY) {
        if (reply) {
            ngx_log_error(NGX_LOG_ERR, asked->rc->log, 0,
                          "env_gateway: redis%s refused CLUSTER SLOTS: %*s",
                          asked->rc->role,
                          ngx_min(reply->len, 128), reply->str ? reply->str
                                                               : "");
        }

        ngx_env_gateway_cluster_refresh();
        return;
    }

    ngx_memzero(ngx_env_gateway_cluster_new_primary,
                sizeof(ngx_env_gateway_cluster_new_primary));
    ngx_memzero(ngx_env_gateway_cluster_new_replica,
                sizeof(ngx_env_gateway_cluster_new_replica));

    np = ngx_env_gateway_cluster_nodes->elts;

    for (i = 0; i < ngx_env_gateway_cluster_nodes->nelts; i++) {
        np[i]->used = 0;
        np[i]->primary = 0;
    }

    asked->used = 1;
    covered = 0;

    for (i = 0; i < reply->elements; i++) {
        range = reply->element[i];

        if (range->type != REDIS_REPLY_ARRAY || range->elements < 3
            || range->element[0]->type != REDIS_REPLY_INTEGER
            || range->element[1]->type != REDIS_REPLY_INTEGER)
        {
            goto invalid;
        }

        start = range->element[0]->integer;
        end = range->element[1]->integer;

        if (start < 0 || end < start || end >= NGX_ENVGW_CLUSTER_SLOTS) {
            goto invalid;
        }

        node = ngx_env_gateway_cluster_slots_node(range->element[2]);
        if (node == NULL) {
            goto invalid;
        }

        k = ngx_env_gateway_cluster_index(node);
        node->primary = 1;

        for (s = start; s <= end; s++) {
            ngx_env_gateway_cluster_new_primary[s] = (uint16_t) k;
        }

        covered += end - start + 1;

        /* replicas are opened only to be read from */
        if (!ngx_env_gateway_cluster_replica || range->elements == 3) {
            continue;
        }

        /* one replica per range: the ranges share the replicas out */
        j = 3 + i % (range->elements - 3);

        node = ngx_env_gateway_cluster_slots_node(range->element[j]);
        if (node == NULL) {
            goto invalid;
        }

        k = ngx_env_gateway_cluster_index(node);

        for (s = start; s <= end; s++) {
            ngx_env_gateway_cluster_new_replica[s] = (uint16_t) k;
        }
    }

    ngx_memcpy(ngx_env_gateway_cluster_primary,
               ngx_env_gateway_cluster_new_primary,
               sizeof(ngx_env_gateway_cluster_primary));
    ngx_memcpy(ngx_env_gateway_cluster_replicas,
               ngx_env_gateway_cluster_new_replica,
               sizeof(ngx_env_gateway_cluster_replicas));

    if (!ngx_env_gateway_cluster_mapped) {
        ngx_log_error(NGX_LOG_INFO, asked->rc->log, 0,
                      "env_gateway: redis cluster map from %V: %ui "
                      "range(s), %ui of %d slots served",
                      &((ngx_env_gateway_server_t *)
                        asked->servers->elts)->name,
                      (ngx_uint_t) reply->elements, covered,
                      NGX_ENVGW_CLUSTER_SLOTS);
    }

    ngx_env_gateway_cluster_mapped = 1;

    /* nodes the map no longer names are closed (never the one answering) */
    np = ngx_env_gateway_cluster_nodes->elts;
    nodes = 0;

    for (i = 0; i < ngx_env_gateway_cluster_nodes->nelts; i++) {
        if (np[i]->used || np[i]->retired) {
            nodes += np[i]->used;
            continue;
        }

        ngx_log_error(NGX_LOG_INFO, np[i]->rc->log, 0,
                      "env_gateway: redis%s is not in the cluster map, "
                      "closed", np[i]->rc->role);

        np[i]->retired = 1;
        ngx_env_gateway_redis_close(np[i]->rc);
    }

    ngx_log_debug3(NGX_LOG_DEBUG_EVENT, asked->rc->log, 0,
                   "env_gateway: redis cluster map: %ui ranges, %ui slots, "
                   "%ui nodes", (ngx_uint_t) reply->elements, covered, nodes);

    if (covered < NGX_ENVGW_CLUSTER_SLOTS) {
        /* a failover in progress: look again after the interval */
        ngx_env_gateway_cluster_refresh();
    }

    return;

invalid:

    ngx_log_error(NGX_LOG_ERR, asked->rc->log, 0,
                  "env_gateway: redis%s: CLUSTER SLOTS reply not understood, "
                  "map kept", asked->rc->role);

    ngx_env_gateway_cluster_refresh();
}


/* after the handshake: READONLY, so that a replica answers reads */
static ngx_int_t
ngx_env_gateway_cluster_connected(ngx_env_gateway_redis_t *rc)
{
    const char  *argv[1];
    size_t       argvlen[1];

    if (!ngx_env_gateway_cluster_replica) {
        return NGX_OK;
    }

    argv[0] = "READONLY";
    argvlen[0] = 8;

    return ngx_env_gateway_redis_send(rc, 1, argv, argvlen,
                                      ngx_env_gateway_redis_ignore, NULL, 0);
}


/* a node lost: the map may have changed (a failover, a removed node) */
static void
ngx_env_gateway_cluster_dropped(ngx_env_gateway_redis_t *rc)
{
    if (ngx_env_gateway_cluster_closing) {
        return;
    }

    ngx_env_gateway_cluster_refresh();
}
