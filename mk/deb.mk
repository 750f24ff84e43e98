# SPDX-License-Identifier: BSD-2-Clause
# Debian packages: `make deb` builds, in a copy of the tree under
# build/deb/src, the binary packages
#   build/deb/libnginx-mod-http-env-gateway_<version>_<arch>.deb
#   build/deb/envgw_<version>_<arch>.deb
# with dpkg-buildpackage and debian/ (dh + nginx-dev's nginx_mod buildsystem
# and dh_nginx).  Missing build dependencies are installed with apt-get
# (as root, else through sudo).  `make deb-clean` removes build/deb.
.PHONY: deb deb-deps deb-clean

DEB_DIR       := $(BUILD)/deb
DEB_BUILD_DEPS := debhelper dpkg-dev fakeroot nginx-dev libhiredis-dev \
                  libjansson-dev libssl-dev

deb-deps:
	@missing=""; for p in $(DEB_BUILD_DEPS); do \
	    dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' \
	        || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	    echo "deb: installing build dependencies:$$missing"; \
	    SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	    $$SUDO apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq \
	        --no-install-recommends $$missing; \
	fi

# The copy holds the files git knows (tracked, plus untracked ones that are
# not ignored), or everything but build/ outside a git checkout; the build
# never writes into the source tree.  flock: one `make deb` at a time.
deb: deb-deps
	@mkdir -p $(DEB_DIR)
	@set -euo pipefail; exec 9>$(DEB_DIR)/.lock; flock 9; \
	rm -rf $(DEB_DIR)/src $(DEB_DIR)/*.deb $(DEB_DIR)/*.ddeb \
	       $(DEB_DIR)/*.buildinfo $(DEB_DIR)/*.changes; \
	mkdir -p $(DEB_DIR)/src; \
	if git -C $(CURDIR) rev-parse --is-inside-work-tree >/dev/null 2>&1; then \
	    git -C $(CURDIR) ls-files -z --cached --others --exclude-standard \
	        | (cd $(CURDIR) && xargs -0 sh -c 'for f; do [ -e "$$f" ] && printf "%s\0" "$$f"; done' sh) \
	        | tar -C $(CURDIR) --null -T - -cf - | tar -C $(DEB_DIR)/src -xf -; \
	else \
	    tar -C $(CURDIR) --exclude=./build --exclude='*.o' -cf - . \
	        | tar -C $(DEB_DIR)/src -xf -; \
	fi; \
	rm -f $(DEB_DIR)/src/cli/envgw; \
	cd $(DEB_DIR)/src && dpkg-buildpackage -b -us -uc \
	    > $(DEB_DIR)/build.log 2>&1 \
	    || { tail -40 $(DEB_DIR)/build.log >&2; \
	         echo "deb: failed, full log in $(DEB_DIR)/build.log" >&2; exit 1; }; \
	ls -1 $(DEB_DIR)/*.deb

deb-clean:
	rm -rf $(DEB_DIR)

# `make test-deb` (as root; CI runs it): builds the packages, then
# t/deb_package.t installs them on this machine with dpkg, checks what they
# ship and that the installed module answers, and removes and purges them
# (it leaves alone packages it did not install).  `make test` never installs
# the project's own packages.
.PHONY: test-deb

test-deb: deps
	@$(MAKE) --no-print-directory deb cli
	ENVGW_TEST_DEB=1 ENVGW_BIN=$(ENVGW) prove -v t/deb_package.t
