# The autoscaler: its policy/loop tests and the trace-replay simulator (hack/sim). See docs/autoscaler.md.
SIM_TRACE ?= ../shared/traces/azure-llm-2023-code.csv
SIM_SPEEDS ?= 1,2,5
SIM_COLD_STARTS ?= 30,5

##@ Autoscaler
.PHONY: sim
sim: ## Replay the Azure code trace (1x/2x/5x; 30 s, 5 s starts, standby): bursts no policy serves, ours vs 5 baselines; plots in .tmp/sim/
	npx tsx hack/sim/main.ts --trace $(SIM_TRACE) --speeds $(SIM_SPEEDS) --cold-starts $(SIM_COLD_STARTS) --out .tmp/sim

.PHONY: test-autoscaler
test-autoscaler: ## Autoscaler unit and property tests (policy, signals, status records)
	$(NODE_JEST) --selectProjects unit -- operator/test/autoscaler-

.PHONY: test-autoscaler-int
test-autoscaler-int: ## Autoscaler loop against a real API server and redis-server (scale, drain, wake, restart, Redis kill)
	$(NODE_JEST) --selectProjects integration -- operator/test/autoscaler-
