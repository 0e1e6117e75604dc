# Operator (ModelDeployment API and reconciler) targets. Included by the root Makefile.
OPERATOR_UNIT_TESTS := operator/test/(crd|plan|status|scaleDown|workqueue|k8s|config)\.test\.ts
OPERATOR_INT_TESTS := operator/test/(crdValidation|reconcile|unschedulable|scale|rollout|deletion|leaderFailover|operatorCli|informer|nameConflict)\.int\.test\.ts

##@ Operator
.PHONY: generate
generate: ## Generate operator/src/api/generated.ts (TypeScript types) from the ModelDeployment CRD
	npx tsx hack/generate-types.ts

.PHONY: verify-generate
verify-generate: ## Fail when operator/src/api/generated.ts is out of date with crds/
	npx tsx hack/generate-types.ts --check

.PHONY: test-operator
test-operator: ## Operator unit tests (plan, status, work queue, leader election, CRD checks)
	$(NODE_JEST) --selectProjects unit --testPathPattern '$(OPERATOR_UNIT_TESTS)'

.PHONY: test-operator-integration
test-operator-integration: control-plane ## Operator integration tests on a real control plane (CEL, RBAC, scale, failover, GC)
	$(NODE_JEST) --selectProjects integration --runInBand --testPathPattern '$(OPERATOR_INT_TESTS)'

.PHONY: bench-operator
bench-operator: control-plane ## Apply 500 ModelDeployments to a local control plane: time to all-Ready and operator RSS
	npx tsx operator/test/bench-operator.ts --count $${BENCH_COUNT:-500}

.PHONY: install-crds
install-crds: ## Install the CRD and the operator's RBAC into the cluster of $KUBECONFIG
	kubectl apply --server-side -f crds/
	kubectl create namespace modelserve-system --dry-run=client -o yaml | kubectl apply -f -
	kubectl apply -f config/rbac/

.PHONY: run-operator
run-operator: ## Run the operator against the cluster of $KUBECONFIG (flags: OPERATOR_ARGS)
	node --import tsx operator/src/main.ts $(OPERATOR_ARGS)
