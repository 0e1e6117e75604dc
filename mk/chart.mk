# The Helm chart (charts/modelserve), its monitoring sources (monitoring/) and their checks. See docs/operations.md.
CHART_DIR := charts/modelserve
# helm comes with the cached control-plane binaries; evaluated only by the targets that use it.
CHART_HELM = $(shell hack/build-control-plane.sh | tail -n 1)/helm

##@ Helm chart and monitoring
.PHONY: chart-sync
chart-sync: ## Copy crds/, config/rbac/, monitoring/ rules and generated dashboards into the chart
	npx tsx hack/chart/sync.ts

.PHONY: chart-check
chart-check: ## Fail when the chart's copies differ from their sources (CRD, RBAC, rules, dashboards)
	npx tsx hack/chart/sync.ts --check

.PHONY: chart-lint
chart-lint: ## helm lint --strict with every values file under test and in examples/helm
	@for f in test/chart/values/*.yaml examples/helm/*.yaml; do \
	  echo "helm lint --strict -f $$f"; "$(CHART_HELM)" lint --strict --quiet $(CHART_DIR) -f "$$f" --kube-version 1.35.0; done

.PHONY: chart-template
chart-template: ## Render the chart with its defaults (and the monitoring API) to stdout
	@"$(CHART_HELM)" template modelserve $(CHART_DIR) -n modelserve-system --kube-version 1.35.0 \
	  --api-versions monitoring.coreos.com/v1

.PHONY: chart-test-rules
chart-test-rules: ## promtool check rules and promtool test rules on monitoring/
	promtool check rules monitoring/rules/*.yaml
	promtool test rules monitoring/tests/*.test.yaml

.PHONY: chart-test
chart-test: ## Every chart test: copies, metric names, promtool, server-side dry runs, helm install + RBAC
	$(NODE_JEST) test/chart/

.PHONY: chart-package
chart-package: chart-check ## Package the chart into dist/ (after checking its copies are current)
	mkdir -p dist && "$(CHART_HELM)" package $(CHART_DIR) -d dist
