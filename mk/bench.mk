# SPDX-License-Identifier: BSD-2-Clause
# Benchmarks: `make bench` (plain vs gateway table),
# `make bench-callgrind` (instructions per warm request in the handler),
# `make bench-memory` (worker RSS over 1M requests, cache entries per MB),
# `make bench-profile` (perf record -g on the gateway worker, warm run),
# `make bench-callgrind-tls` (instructions per request added by TLS to Redis),
# `make bench-callgrind-cluster` (... added by env_gateway_redis_cluster).
.PHONY: bench bench-callgrind bench-memory

bench: all
	bench/run.sh $(MODULE)

bench-callgrind: all
	bench/callgrind.sh $(MODULE)

bench-memory: all
	bench/memory.sh $(MODULE)

.PHONY: bench-profile
bench-profile: all
	bench/profile.sh $(MODULE)

.PHONY: bench-callgrind-tls
bench-callgrind-tls: all
	bench/callgrind_tls.sh $(MODULE)

.PHONY: bench-callgrind-cluster
bench-callgrind-cluster: all
	bench/callgrind_cluster.sh $(MODULE)
