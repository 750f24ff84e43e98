# SPDX-License-Identifier: BSD-2-Clause
# `make fuzz`: libFuzzer targets for the module's parsers (fuzz/*.c), each
# run for FUZZ_SECONDS from its seed corpus fuzz/corpus/<target>/; prints
# executions and coverage per target.  `make fuzz-build` only builds them.
#
# The targets link the module's sources, compiled with
# -fsanitize=fuzzer-no-link,address,undefined, against nginx 1.22.1's own
# objects from the ASan build tree (mk/asan.mk, scripts/asan-build.sh), with
# nginx's main() renamed away so libFuzzer's main runs.  New inputs go to
# build/fuzz/work/<target>/ (the repo's corpus is only read); crashes to
# build/fuzz/crashes/<target>/ -- keep each, once understood, under
# fuzz/regressions/<target>/ (see fuzz/regressions/README.md):
# t/fuzz_regressions.t replays them in `make test`.
#
# `make test` builds the targets first when clang is installed and nginx's
# source can be had (ENVGW_FUZZ_IN_TEST=0 turns that off); otherwise
# t/fuzz_regressions.t skips.  That build is the ASan nginx of mk/asan.mk,
# in build/asan/ (several minutes the first time); getting nginx's source
# may add a deb-src entry to apt's sources (scripts/ngx-source.sh).

FUZZ_CC       ?= clang
FUZZ_SECONDS  ?= 60
FUZZ_DIR      := $(BUILD)/fuzz
FUZZ_TARGETS  := token records route resp body access credentials
FUZZ_BINS     := $(addprefix $(FUZZ_DIR)/fuzz_,$(FUZZ_TARGETS))
FUZZ_ASAN_DIR  = $(or $(ASAN_DIR),$(BUILD)/asan)
ASAN_SRC       = $(FUZZ_ASAN_DIR)/nginx-1.22.1

FUZZ_INCS      = $(addprefix -I$(ASAN_SRC)/,src/core src/event src/event/modules \
                   src/os/unix objs src/http src/http/modules src/http/v2) -I$(CURDIR)/src
FUZZ_CFLAGS    = -g -O1 -fno-omit-frame-pointer -fsanitize=address,undefined \
                 -DNGX_DEBUG_PALLOC=1 $(FUZZ_INCS)
FUZZ_LIBS     := -lhiredis -ljansson -lssl -lcrypto -lpcre2-8 -lz -lcrypt -lpthread
FUZZ_MOD_SRCS := ngx_env_gateway_module.c $(wildcard src/*.c)
FUZZ_MOD_OBJS := $(patsubst %.c,$(FUZZ_DIR)/mod/%.o,$(notdir $(FUZZ_MOD_SRCS)))

.PHONY: fuzz fuzz-build fuzz-if-clang

# `make test` (top-level Makefile) also builds the fuzz targets, so that
# t/fuzz_regressions.t replays the corpora and regression inputs.  Without
# clang, or when nginx's source cannot be fetched, it says so and goes on
# (the .t file then skips); a target that fails to compile fails the build.
test-run: fuzz-if-clang

fuzz-if-clang:
	@if [ "$(ENVGW_FUZZ_IN_TEST)" = 0 ]; then exit 0; fi; \
	if ! command -v $(FUZZ_CC) >/dev/null 2>&1; then \
	    echo "fuzz: $(FUZZ_CC) not found: t/fuzz_regressions.t will skip"; exit 0; fi; \
	if ! ./scripts/ngx-source.sh $(FUZZ_ASAN_DIR) >/dev/null; then \
	    echo "fuzz: nginx 1.22.1 source not available: t/fuzz_regressions.t will skip"; exit 0; fi; \
	$(MAKE) --no-print-directory fuzz-build

fuzz-build: asan-build
	@$(MAKE) --no-print-directory $(FUZZ_BINS)

# nginx's objects in one archive: only what the targets need is linked
$(FUZZ_DIR)/libngx.a: $(ASAN_SRC)/objs/nginx
	@mkdir -p $(FUZZ_DIR)
	objcopy --redefine-sym main=ngx_nginx_main $(ASAN_SRC)/objs/src/core/nginx.o \
	    $(FUZZ_DIR)/nginx_nomain.o
	rm -f $@ && ar rcs $@ $(FUZZ_DIR)/nginx_nomain.o $(ASAN_SRC)/objs/ngx_modules.o \
	    $$(find $(ASAN_SRC)/objs/src -name '*.o' ! -name nginx.o)

$(FUZZ_DIR)/mod/%.o: src/%.c $(wildcard src/*.h) $(FUZZ_DIR)/libngx.a
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c $< -o $@

$(FUZZ_DIR)/mod/ngx_env_gateway_module.o: ngx_env_gateway_module.c src/ngx_env_gateway.h $(FUZZ_DIR)/libngx.a
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c $< -o $@

$(FUZZ_DIR)/libenvgw.a: $(FUZZ_MOD_OBJS)
	rm -f $@ && ar rcs $@ $^

$(FUZZ_DIR)/fuzz_%: fuzz/fuzz_%.c fuzz/fuzz_common.h $(FUZZ_DIR)/libenvgw.a $(FUZZ_DIR)/libngx.a $(FUZZ_MOD_SRCS)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer $< -o $@ \
	    -Wl,--start-group $(FUZZ_DIR)/libenvgw.a $(FUZZ_DIR)/libngx.a -Wl,--end-group \
	    $(FUZZ_LIBS)

fuzz: fuzz-build
	@mkdir -p $(FUZZ_DIR)/logs; \
	for t in $(FUZZ_TARGETS); do \
	    mkdir -p $(FUZZ_DIR)/work/$$t $(FUZZ_DIR)/crashes/$$t; \
	    case $$t in resp) o=-max_len=65536;; records) o=-max_len=32768;; body|access) o=-max_len=16384;; *) o=-max_len=8192;; esac; \
	    ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	    $(FUZZ_DIR)/fuzz_$$t -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
	        -rss_limit_mb=2048 -timeout=10 $$o \
	        -artifact_prefix=$(FUZZ_DIR)/crashes/$$t/ \
	        $(FUZZ_DIR)/work/$$t fuzz/corpus/$$t $(wildcard fuzz/regressions/$$t) \
	        > $(FUZZ_DIR)/logs/$$t.log 2>&1; \
	    rc=$$?; \
	    done_line=$$(grep -E '^#[0-9]+[[:space:]]+DONE' $(FUZZ_DIR)/logs/$$t.log | tail -1); \
	    execs=$$(sed -n 's/^stat::number_of_executed_units: *//p' $(FUZZ_DIR)/logs/$$t.log); \
	    printf 'fuzz %-8s rc=%s execs=%s  %s\n' $$t $$rc "$${execs:-?}" "$${done_line:-(no DONE line: see $(FUZZ_DIR)/logs/$$t.log)}"; \
	    [ $$rc = 0 ] || { status=1; grep -A30 -m1 -E 'ERROR: |runtime error' $(FUZZ_DIR)/logs/$$t.log; ls $(FUZZ_DIR)/crashes/$$t; }; \
	done; exit $${status:-0}
