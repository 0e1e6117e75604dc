# modelserve: the single entry point. `make help` lists every target. Areas add their targets in mk/*.mk.
SHELL := /usr/bin/env bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

export MODELSERVE_CACHE ?= $(HOME)/.cache/modelserve
NODE_JEST := node --experimental-vm-modules node_modules/jest/bin/jest.js
NATIVE_BUILD := worker/native/build

##@ Getting started
.PHONY: help
help: ## List every target with a one-line description
	@awk 'BEGIN {FS = ":.*## "} /^##@/ {printf "\n%s\n", substr($$0, 5)} /^[a-zA-Z0-9_.-]+:.*## / {printf "  %-22s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: demo
demo: deps control-plane native ## Run the whole system locally: apply a model, serve it, burst, scale (Ctrl-C stops)
	npx tsx hack/demo.ts

.PHONY: test
test: deps control-plane native lint typecheck test-unit test-native cuda-compile test-integration test-e2e ## Install what is needed, then run every test suite (CUDA sources compiled, not run)

##@ Set-up (idempotent; slow parts cached in $(MODELSERVE_CACHE))
.PHONY: deps
deps: ## Install system packages (redis-server, openssl) and npm dependencies
	hack/ensure-deps.sh

.PHONY: control-plane
control-plane: ## Build kube-apiserver, kcm, scheduler, kubectl, etcd, kwok, helm from Go modules (cached by version)
	hack/build-control-plane.sh >/dev/null

##@ Build
.PHONY: native
native: ## Build the C++ engine, its tests and the N-API addon (CMake, Release)
	cmake -S worker/native -B $(NATIVE_BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
	cmake --build $(NATIVE_BUILD) -j 2

.PHONY: typecheck
typecheck: ## Type-check all TypeScript (strict)
	npx tsc -p tsconfig.json --noEmit

.PHONY: lint
lint: ## ESLint and Prettier checks
	npx eslint .
	npx prettier --check .

.PHONY: fmt
fmt: ## Format TypeScript with Prettier
	npx prettier --write .

##@ Tests
.PHONY: test-unit
test-unit: ## Jest unit tests (pure logic, no processes)
	$(NODE_JEST) --selectProjects unit

.PHONY: test-native
test-native: native ## GoogleTest suite of the engine through ctest
	ctest --test-dir $(NATIVE_BUILD) --output-on-failure -j 2

.PHONY: test-integration
test-integration: ## Jest integration tests on a real control plane and Redis (one per suite, two suites side by side)
	$(NODE_JEST) --selectProjects integration --maxWorkers=2

.PHONY: test-e2e
test-e2e: ## End-to-end tests: operator, gateway and worker processes on the local cluster (node agent)
	$(NODE_JEST) --selectProjects e2e --maxWorkers=1

.PHONY: clean
clean: ## Remove build outputs (not the cache of control-plane binaries)
	rm -rf $(NATIVE_BUILD) dist .tmp

-include mk/*.mk
