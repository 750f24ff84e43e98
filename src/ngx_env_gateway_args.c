/*
 * env_gateway: the query arguments iterator.
 */

#include "ngx_env_gateway.h"
