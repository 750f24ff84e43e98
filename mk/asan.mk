# SPDX-License-Identifier: BSD-2-Clause
# `make test-asan`: the whole test suite on nginx 1.22.1 built from Debian's
# source package with AddressSanitizer + UBSan and NGX_DEBUG_PALLOC, the
# module built in the same tree (scripts/asan-build.sh).
#
# ASAN_OPTIONS: detect_leaks=0 because nginx's master and workers exit without
# freeing the cycle pool, the modules' conf and hiredis/OpenSSL state -- that
# is by design (the process is going away), so LeakSanitizer would report
# every run; abort_on_error=1 turns any report into a crash the harness sees
# ("exited on signal 6" in error.log).  Reports go to stderr, which nginx
# redirects to error.log once the configuration is read (the harness fails
# on "AddressSanitizer" and "runtime error:" there); log_path is not used so
# each report lands in the log of the test that caused it.  Anything written
# before that redirect (config parsing) goes to DIR/nginx.out.
#
# ENVGW_ASAN_LINK=static builds the module into the binary instead and sets
# ENVGW_STATIC=1 (the harness must then skip `load_module`).

ASAN_DIR     ?= $(BUILD)/asan
ASAN_NGX     := $(ASAN_DIR)/nginx-1.22.1/objs
ASAN_LINK    ?= $(or $(ENVGW_ASAN_LINK),dynamic)
ASAN_TESTS   ?= t/
UBSAN_HALT   ?= 1
ASAN_ENV     := ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:disable_coredump=1:detect_stack_use_after_return=1:strict_string_checks=1 \
                UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=$(UBSAN_HALT) \
                ENVGW_NGINX=$(ASAN_NGX)/nginx \
                $(if $(filter static,$(ASAN_LINK)),ENVGW_STATIC=1,ENVGW_MODULE=$(ASAN_NGX)/ngx_env_gateway_module.so)

.PHONY: asan-build test-asan

asan-build:
	ENVGW_ASAN_LINK=$(ASAN_LINK) ./scripts/asan-build.sh $(ASAN_DIR) >/dev/null

test-asan: asan-build cli
	$(ASAN_ENV) ENVGW_BIN=$(ENVGW) prove -r $(ASAN_TESTS)
