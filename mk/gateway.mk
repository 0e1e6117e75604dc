# The gateway: OpenAI-compatible front door (operator/src/gateway). Docs: docs/gateway.md.
GATEWAY_BENCH_CONCURRENCY ?= 200
GATEWAY_BENCH_ROUNDS ?= 2

##@ Gateway
.PHONY: gateway
gateway: ## Run the gateway locally (ARGS="--static-models tiny=http://127.0.0.1:8000 --auth=false")
	npx tsx operator/src/gateway/main.ts $(ARGS)

.PHONY: test-gateway
test-gateway: ## Gateway unit tests, then its integration tests (real control plane, Redis and worker processes)
	$(NODE_JEST) --selectProjects unit -- operator/test/gateway-
	$(NODE_JEST) --selectProjects integration --maxWorkers=1 -- operator/test/gateway-

.PHONY: bench-gateway
bench-gateway: native ## Gateway's added TTFT at 200 concurrent streams vs calling the worker directly (same run)
	npx tsx operator/test/gateway-bench.ts --concurrency $(GATEWAY_BENCH_CONCURRENCY) --rounds $(GATEWAY_BENCH_ROUNDS)
