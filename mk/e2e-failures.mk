# The failure end-to-end tests of the local system (issue #7): scale-down during two-minute streams, operator leader
# kill -9, Redis restart, invalid manifests. `make test-e2e` runs them with the rest of test/e2e/.
E2E_FAILURE_TESTS := test/e2e/scale-down-streams.e2e.test.ts test/e2e/operator-leader-kill.e2e.test.ts \
	test/e2e/redis-restart.e2e.test.ts test/e2e/invalid-manifest.e2e.test.ts

##@ End-to-end failure tests
.PHONY: test-e2e-failures
test-e2e-failures: ## End-to-end failure tests: scale-down mid-stream, leader kill -9, Redis restart, invalid manifests
	$(NODE_JEST) --selectProjects e2e --maxWorkers=1 -- $(E2E_FAILURE_TESTS)
