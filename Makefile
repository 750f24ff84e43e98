# env_gateway — top-level build.  `make` builds the nginx module and the

SHELL := /bin/bash
# envgw admin tool; `make test` runs every test; `make demo` starts a demo.

NGINX_SRC   ?= /usr/share/nginx/src
BUILD       ?= $(CURDIR)/build
NGX_BUILD   := $(BUILD)/nginx
MODULE      := $(NGX_BUILD)/objs/ngx_env_gateway_module.so
ENVGW       := $(CURDIR)/cli/envgw

MODULE_SRCS := config ngx_env_gateway_module.c $(wildcard src/*.c src/*.h)

DEB_PKGS := nginx nginx-dev libhiredis-dev libjansson-dev libssl-dev \
            redis-server redis-tools gcc make perl libredis-perl \
            libjson-pp-perl wrk curl

.PHONY: all module cli test demo demo-stop deps check-deps clean install bench

all: module cli

check-deps:
	@missing=""; for p in $(DEB_PKGS); do \
	    dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' \
	        || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	    echo "env_gateway: missing Debian packages:$$missing" >&2; \
	    echo "  run 'make deps' (as root) or: apt-get install$$missing" >&2; \
	    exit 1; \
	fi

deps:
	@missing=""; for p in $(DEB_PKGS); do \
	    dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' \
	        || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	    echo "installing:$$missing"; \
	    SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	    $$SUDO apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq \
	        --no-install-recommends $$missing; \
	fi

$(MODULE): config $(MODULE_SRCS) scripts/build-module.sh
	NGINX_SRC=$(NGINX_SRC) BUILD=$(BUILD) scripts/build-module.sh

module: $(MODULE)

cli:
	$(MAKE) -C cli

test: all
	ENVGW_MODULE=$(MODULE) ENVGW_BIN=$(ENVGW) prove -r t/

demo: deps all
	./demo/demo.sh start $(MODULE)

demo-stop:
	./demo/demo.sh stop

install: all
	install -D -m 0644 $(MODULE) $(DESTDIR)/usr/lib/nginx/modules/ngx_env_gateway_module.so
	$(MAKE) -C cli install DESTDIR=$(DESTDIR)

clean:
	rm -rf $(BUILD)
	$(MAKE) -C cli clean

# further targets (asan, fuzz, bench, deb, cluster-demo) live in mk/*.mk
-include $(wildcard mk/*.mk)
