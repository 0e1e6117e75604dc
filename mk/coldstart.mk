# Cold start: standby replicas and the cold-start benchmark on the local cluster. Included by the root Makefile.

##@ Cold start
.PHONY: bench-coldstart
bench-coldstart: control-plane ## Time from a /scale write to Ready, routable and first token: download, node cache, standby, cold (local cluster)
	npx tsx hack/bench/coldstart.ts --runs $${COLDSTART_RUNS:-3} --paths $${COLDSTART_PATHS:-download,nodecache,nodecache-warm,standby,standby-warm,cold,cold-warm} --out $${COLDSTART_OUT:-.tmp/coldstart.json}

.PHONY: test-standby
test-standby: control-plane ## Standby replicas: plan/roles unit tests and promotion + gateway-discovery integration test
	$(NODE_JEST) --selectProjects unit -- operator/test/standby.test.ts
	$(NODE_JEST) --selectProjects integration -- operator/test/standby.int.test.ts

.PHONY: test-e2e-standby
test-e2e-standby: ## End-to-end: scale-up with held requests promotes the standby (no cold start) and refills the pool
	$(NODE_JEST) --selectProjects e2e -- test/e2e/standby-scale-up.e2e.test.ts
