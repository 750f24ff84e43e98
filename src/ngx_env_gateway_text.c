/*
 * env_gateway: bounded text output (escaping for log lines and messages).
 */

#include "ngx_env_gateway.h"
