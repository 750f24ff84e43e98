/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * RESP reply handling, as src/ngx_env_gateway_pipeline.c does it: bytes from
 * the socket are given to hiredis's redisReader, made as the module makes
 * it (ngx_env_gateway_redis_reader: an aggregate's count bounded by
 * max_record), in chunks (redisReaderFeed), replies taken with redisReaderGetReply until it has
 * none, each reply classified by the module's own
 * ngx_env_gateway_redis_is_message() (pub/sub "message" push) and, if so,
 * handed to ngx_env_gateway_redis_message(), which extracts the payload,
 * then freed with freeReplyObject().  A protocol error ends the stream
 * (the module drops the connection).
 *
 * pipeline.c is #included so its static functions are the ones fuzzed, not
 * copies.
 *
 * Input: 2 bytes seeding the chunk sizes (1..16384, the module reads at
 * most 16 KB at a time), then the byte stream.
 */

#include "fuzz_common.h"
#include "../src/ngx_env_gateway_pipeline.c"


static ngx_uint_t  fuzz_messages;


static void
fuzz_on_message(ngx_env_gateway_redis_t *rc, ngx_str_t *payload)
{
    size_t                  i;
    static volatile u_char  sum;

    for (i = 0; i < payload->len; i++) {
        sum += payload->data[i];
    }

    fuzz_messages++;
}


/* a reply tree is well formed: what the handlers rely on */
static void
fuzz_walk(redisReply *r, ngx_uint_t depth)
{
    size_t                  i;
    static volatile u_char  sum;

    switch (r->type) {
    case REDIS_REPLY_STRING:
    case REDIS_REPLY_STATUS:
    case REDIS_REPLY_ERROR:
        for (i = 0; i < r->len; i++) {
            sum += r->str[i];
        }
        if (r->str[r->len] != '\0') {
            abort();
        }
        break;
    case REDIS_REPLY_ARRAY:
        for (i = 0; i < r->elements; i++) {
            if (r->element[i] == NULL) {
                abort();
            }
            fuzz_walk(r->element[i], depth + 1);
        }
        break;
    default:
        break;
    }
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t                   pos, chunk;
    uint32_t                 seed;
    redisReply              *reply;
    redisReader             *reader;
    ngx_env_gateway_redis_t  rc;

    fuzz_init();

    if (size < 2) {
        return 0;
    }

    seed = data[0] | (data[1] << 8);
    data += 2;
    size -= 2;

    ngx_memzero(&rc, sizeof(ngx_env_gateway_redis_t));
    rc.on_message = fuzz_on_message;
    rc.subscriber = 1;
    rc.subscribed = 1;
    rc.log = fuzz_log;
    rc.max_record = NGX_ENVGW_MAX_RECORD;

    /* the module's reader: aggregates bounded by max_record */
    reader = ngx_env_gateway_redis_reader(&rc);
    if (reader == NULL) {
        abort();
    }

    for (pos = 0; pos < size; pos += chunk) {
        /* xorshift: chunk sizes from tiny to a full 16 KB read */
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        seed |= 1;

        switch (seed & 3) {
        case 0:
            chunk = 1 + (seed >> 2) % 4;
            break;
        case 1:
            chunk = 1 + (seed >> 2) % 64;
            break;
        case 2:
            chunk = 1 + (seed >> 2) % 16384;
            break;
        default:
            chunk = 16384;
        }

        if (chunk > size - pos) {
            chunk = size - pos;
        }

        if (redisReaderFeed(reader, (const char *) data + pos, chunk)
            != REDIS_OK)
        {
            break;
        }

        for ( ;; ) {
            reply = NULL;

            if (redisReaderGetReply(reader, (void **) &reply) != REDIS_OK) {
                goto done;   /* protocol error: the connection is dropped */
            }

            if (reply == NULL) {
                break;
            }

            fuzz_walk(reply, 0);

            if (rc.subscriber && rc.subscribed
                && ngx_env_gateway_redis_is_message(reply))
            {
                ngx_env_gateway_redis_message(&rc, reply);
            }

            freeReplyObject(reply);
        }
    }

done:

    redisReaderFree(reader);

    return 0;
}
