# SPDX-License-Identifier: BSD-2-Clause
# env_gateway: top-level build.  `make` builds the nginx module and the
# envgw admin tool; `make test` installs what the tests need and runs every
# test; `make demo` starts a demo.  See README.md ("Tests") for what `make
# test` installs on the machine.

SHELL := /bin/bash

NGINX_SRC   ?= /usr/share/nginx/src
BUILD       ?= $(CURDIR)/build
NGX_BUILD   := $(BUILD)/nginx
MODULE      := $(NGX_BUILD)/objs/ngx_env_gateway_module.so
ENVGW       := $(CURDIR)/cli/envgw

MODULE_SRCS := config ngx_env_gateway_module.c $(wildcard src/*.c src/*.h)

DEB_PKGS := nginx nginx-dev libhiredis-dev libjansson-dev libssl-dev \
            libcurl4-openssl-dev \
            redis-server redis-tools openssl gcc make perl libredis-perl \
            libjson-pp-perl wrk curl php-cli golang-go nodejs npm python3

.PHONY: all module cli test test-run demo demo-stop deps check-deps clean \
        install bench backends-deps

# is Debian package $$p installed, or provided by an installed package
# (nodejs from another repository provides npm and conflicts with Debian's)
PKG_INSTALLED = { dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null \
                      | grep -q 'ok installed' \
                  || dpkg-query -W -f='$${Status}|$${Provides},\n' 2>/dev/null \
                      | grep 'ok installed|' \
                      | grep -Eq "[|, ]$$p( \([^)]*\))?,"; }

all: module cli

check-deps:
	@missing=""; for p in $(DEB_PKGS); do \
	    $(PKG_INSTALLED) || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	    echo "env_gateway: missing Debian packages:$$missing" >&2; \
	    echo "  run 'make deps' (as root) or: apt-get install$$missing" >&2; \
	    exit 1; \
	fi

deps:
	@missing=""; for p in $(DEB_PKGS); do \
	    $(PKG_INSTALLED) || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	    echo "installing:$$missing"; \
	    SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	    $$SUDO apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq \
	        --no-install-recommends $$missing; \
	fi
	@$(MAKE) --no-print-directory backends-deps

# Express 4 for the Node echo backend of t/differential.t, from the npm
# registry as locked in t/backends/node/package-lock.json.  Without npm, or
# when the registry cannot be reached, say so: the test skips that backend.
NODE_BACKEND := t/backends/node
NODE_STAMP   := $(NODE_BACKEND)/node_modules/.envgw-installed

backends-deps: $(NODE_STAMP)

$(NODE_STAMP): $(NODE_BACKEND)/package.json $(NODE_BACKEND)/package-lock.json
	@if ! command -v npm >/dev/null 2>&1; then \
	    echo "env_gateway: npm not found: t/differential.t will skip the Node backend" >&2; \
	elif (cd $(NODE_BACKEND) && npm ci --no-audit --no-fund --loglevel=error \
	          --cache $(BUILD)/npm-cache); then \
	    touch $@; \
	else \
	    echo "env_gateway: npm ci failed in $(NODE_BACKEND): t/differential.t will skip the Node backend" >&2; \
	fi

$(MODULE): config $(MODULE_SRCS) scripts/build-module.sh
	NGINX_SRC=$(NGINX_SRC) BUILD=$(BUILD) scripts/build-module.sh

module: $(MODULE)

cli:
	$(MAKE) -C cli

# `make test` works alone on a fresh Debian 12: the Debian packages first
# (make deps: apt-get, as root or through sudo, only what is missing), then
# the build and the suite in a second make, so nothing is built before its
# build dependencies are there.  TESTS picks files or folders (default t/).
TESTS ?= t/

test: deps
	@$(MAKE) --no-print-directory test-run

test-run: all backends-deps
	ENVGW_MODULE=$(MODULE) ENVGW_BIN=$(ENVGW) prove -r $(TESTS)

demo: deps all
	./demo/demo.sh start $(MODULE)

demo-stop:
	./demo/demo.sh stop

# Outside package management: prefer `make deb` and apt (README, "Install").
install: all
	install -D -m 0644 $(MODULE) $(DESTDIR)/usr/lib/nginx/modules/ngx_env_gateway_module.so
	$(MAKE) -C cli install DESTDIR=$(DESTDIR)
	install -D -m 0644 cli/envgw.1 $(DESTDIR)/usr/share/man/man1/envgw.1

clean:
	rm -rf $(BUILD)
	$(MAKE) -C cli clean

# further targets (asan, fuzz, bench, deb, test-deb, test-matrix,
# cluster-demo) live in mk/*.mk
-include $(wildcard mk/*.mk)
