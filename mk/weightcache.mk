# Node-local weight cache (spec.prewarm.nodeCache): controller, stager, node-agent support. See docs/weight-cache.md.
WEIGHT_CACHE_UNIT_TESTS := operator/test/weightcache\.test\.ts
WEIGHT_CACHE_INT_TESTS := operator/test/weightcache(-stager)?\.int\.test\.ts

##@ Weight cache
.PHONY: test-weight-cache
test-weight-cache: ## Weight-cache unit tests (keys, eviction choice, Hub listing, desired Jobs/labels, pod template)
	$(NODE_JEST) --selectProjects unit --testPathPattern '$(WEIGHT_CACHE_UNIT_TESTS)'

.PHONY: test-weight-cache-integration
test-weight-cache-integration: control-plane ## Stager vs a real HTTP server (Hub API); operator + node agent staging on 2 nodes
	$(NODE_JEST) --selectProjects integration --runInBand --testPathPattern '$(WEIGHT_CACHE_INT_TESTS)'

.PHONY: run-stager
run-stager: ## Run the weight-cache stager by hand (STAGER_ARGS="--source hf://org/repo --revision … --root DIR --entry E --key K")
	node --import tsx operator/src/weightcache/stager.ts $(STAGER_ARGS)

.PHONY: bench-weight-cache
bench-weight-cache: ## Stager throughput vs a plain download and SHA-256 on this machine, and a resumed run (BENCH_MIB, default 512)
	npx tsx operator/test/bench-stager.ts --mib $${BENCH_MIB:-512}
