# SPDX-License-Identifier: BSD-2-Clause
# `make test-matrix [NGINX_TARBALLS=DIR]`: for each nginx-<version>.tar.gz
# in DIR, build that nginx (Debian's set of modules, --with-compat) and the
# module (in a bare `--with-compat` tree, as docs/install.md builds it for
# nginx.org's packages), then run the suite against them
# (scripts/matrix.sh).  Results: one line per version, also in
# build/matrix/summary.txt.
#
#   NGINX_TARBALLS  the folder of tarballs (default: ../shared/nginx-src
#                   beside the checkout when it exists, else
#                   build/nginx-tarballs; a missing or empty folder: a
#                   message, and success)
#   MATRIX_TESTS    test files (default: every t/*.t that starts nginx)
#   MATRIX_PICK     all (default) or newest
#   MATRIX_SANITIZE 1: nginx and the module built with ASan + UBSan (clang)
#
# Debian 12 packages only nginx 1.22: newer lines come as tarballs from
# nginx.org (nginx-<version>.tar.gz, ./configure) or `git archive` of the
# nginx repository's release tags (auto/configure); both layouts work.

NGINX_TARBALLS ?= $(firstword $(wildcard $(CURDIR)/../shared/nginx-src) \
                             $(BUILD)/nginx-tarballs)
MATRIX_DIR     ?= $(BUILD)/matrix

.PHONY: test-matrix

test-matrix: cli backends-deps
	scripts/matrix.sh $(NGINX_TARBALLS) $(MATRIX_DIR)
