# SPDX-License-Identifier: BSD-2-Clause
# Edge-cluster demo and sizing: see docs/deployment.md.
#   make cluster-demo        primary + 2 replicas, 3 gateways, a load balancer
#                            (+ 3 Sentinels and g4 when the module has them)
#   make cluster-demo REDIS=cluster
#                            the same gateways on a Redis Cluster of 3
#                            primaries and 3 replicas
#   make cluster-demo-stop   stop exactly what cluster-demo started
#   make cluster-sizing      measure cache-zone and Redis memory per token
# Ports: CLUSTER_P, CLUSTER_R1, CLUSTER_R2, CLUSTER_LB, CLUSTER_G1..G4, ...
# (see cluster/cluster.sh).

.PHONY: cluster-demo cluster-demo-stop cluster-demo-status cluster-sizing

cluster-demo: check-deps all
	ENVGW=$(ENVGW) REDIS=$(or $(REDIS),primary) ./cluster/cluster.sh start $(MODULE)

cluster-demo-stop:
	./cluster/cluster.sh stop

cluster-demo-status:
	./cluster/cluster.sh status

cluster-sizing: all
	ENVGW_MODULE=$(MODULE) ENVGW_BIN=$(ENVGW) perl cluster/sizing.pl
