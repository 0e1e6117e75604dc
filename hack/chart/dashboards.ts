// The Grafana dashboards of modelserve, as code: small helpers build the panel JSON so that every dashboard shares
// the same variables (datasource, namespace, model) and layout. `make chart-sync` writes them to
// monitoring/dashboards/*.json (the committed source that Grafana users import) and into the chart.
// Metric names: worker (vllm:*) from worker/src/metrics.ts, operator and gateway (modelserve_*) from their metrics
// files; names not declared yet are listed as pending in monitoring/README.md.

export interface Target {
  expr: string;
  legendFormat: string;
}

interface Panel {
  title: string;
  type: 'timeseries' | 'stat';
  description: string;
  targets: Target[];
  unit: string;
  width: number;
  height: number;
  /** Stat panels: thresholds colour the value (green below the first step). */
  thresholds?: { value: number; color: string }[];
  max?: number;
  stack?: boolean;
}

type PanelSpec = Omit<Panel, 'width' | 'height' | 'type' | 'unit'> & Partial<Pick<Panel, 'unit' | 'width' | 'height'>>;

const ts = (p: PanelSpec): Panel => ({ type: 'timeseries', unit: 'short', width: 12, height: 8, ...p });
const stat = (p: PanelSpec): Panel => ({ type: 'stat', unit: 'short', width: 6, height: 4, ...p });
const q = (expr: string, legendFormat: string): Target => ({ expr, legendFormat });

/** Label matchers of the per-model dashboards: workers label by model_name, the operator by modeldeployment too. */
const SEL = 'namespace=~"$namespace", model_name=~"$model"';
const RATE = '$__rate_interval';

export interface Dashboard {
  uid: string;
  file: string;
  json: Record<string, unknown>;
}

interface Variable {
  name: string;
  label: string;
  query?: string;
  custom?: { value: string; description: string };
}

const namespaceVar: Variable = {
  name: 'namespace',
  label: 'Namespace',
  query: 'label_values(vllm:num_requests_running, namespace)',
};
const modelVar: Variable = {
  name: 'model',
  label: 'Model',
  query: 'label_values(vllm:num_requests_running{namespace=~"$namespace"}, model_name)',
};
/** The SLO parameters; the defaults equal the chart's values.yaml monitoring.slo.* (a test checks it). */
const sloVars: Variable[] = [
  {
    name: 'ttft_le',
    label: 'TTFT threshold (s, a bucket bound)',
    custom: { value: '2.5', description: 'good TTFT: first token within this bucket bound' },
  },
  { name: 'objective', label: 'SLO objective', custom: { value: '0.99', description: 'share of good requests' } },
  {
    name: 'itl_target',
    label: 'ITL p95 target (s)',
    custom: { value: '0.1', description: 'inter-token latency target line' },
  },
];

function templating(vars: Variable[]): Record<string, unknown> {
  const list: Record<string, unknown>[] = [
    {
      name: 'datasource',
      label: 'Data source',
      type: 'datasource',
      query: 'prometheus',
      current: {},
      hide: 0,
      refresh: 1,
    },
  ];
  for (const v of vars) {
    if (v.custom) {
      list.push({
        name: v.name,
        label: v.label,
        description: v.custom.description,
        type: 'custom',
        query: v.custom.value,
        current: { text: v.custom.value, value: v.custom.value },
        options: [{ text: v.custom.value, value: v.custom.value, selected: true }],
        hide: 0,
      });
    } else {
      list.push({
        name: v.name,
        label: v.label,
        type: 'query',
        datasource: { type: 'prometheus', uid: '${datasource}' },
        definition: v.query,
        query: { query: v.query, refId: `${v.name}-query` },
        includeAll: true,
        multi: true,
        allValue: '.*',
        current: { text: 'All', value: '$__all' },
        refresh: 2,
        sort: 1,
        hide: 0,
      });
    }
  }
  return { list };
}

/** Lays panels out left to right in a 24-column grid, wrapping rows. */
function layout(panels: Panel[]): Record<string, unknown>[] {
  let x = 0;
  let y = 0;
  let rowHeight = 0;
  return panels.map((p, i) => {
    if (x + p.width > 24) {
      x = 0;
      y += rowHeight;
      rowHeight = 0;
    }
    const gridPos = { x, y, w: p.width, h: p.height };
    x += p.width;
    rowHeight = Math.max(rowHeight, p.height);
    const defaults: Record<string, unknown> = { unit: p.unit };
    if (p.max !== undefined) defaults.max = p.max;
    if (p.thresholds) {
      defaults.thresholds = {
        mode: 'absolute',
        steps: [{ color: 'green', value: null }, ...p.thresholds],
      };
    }
    if (p.type === 'timeseries') {
      defaults.custom = {
        drawStyle: 'line',
        lineWidth: 1,
        fillOpacity: p.stack ? 30 : 10,
        showPoints: 'never',
        stacking: { mode: p.stack ? 'normal' : 'none', group: 'A' },
      };
    }
    return {
      id: i + 1,
      title: p.title,
      description: p.description,
      type: p.type,
      datasource: { type: 'prometheus', uid: '${datasource}' },
      gridPos,
      fieldConfig: { defaults, overrides: [] },
      options:
        p.type === 'stat'
          ? { reduceOptions: { calcs: ['lastNotNull'], fields: '', values: false }, colorMode: 'value' }
          : { legend: { displayMode: 'table', placement: 'bottom', calcs: ['lastNotNull', 'max'] } },
      targets: p.targets.map((t, j) => ({
        refId: String.fromCharCode(65 + j),
        datasource: { type: 'prometheus', uid: '${datasource}' },
        expr: t.expr,
        legendFormat: t.legendFormat,
        range: true,
      })),
    };
  });
}

function dashboard(uid: string, title: string, description: string, vars: Variable[], panels: Panel[]): Dashboard {
  return {
    uid,
    file: `${uid}.json`,
    json: {
      uid,
      title,
      description,
      tags: ['modelserve'],
      editable: true,
      graphTooltip: 1,
      schemaVersion: 39,
      version: 1,
      refresh: '30s',
      time: { from: 'now-6h', to: 'now' },
      timezone: 'browser',
      templating: templating(vars),
      annotations: { list: [] },
      links: [
        {
          title: 'modelserve dashboards',
          type: 'dashboards',
          tags: ['modelserve'],
          asDropdown: true,
          includeVars: true,
        },
      ],
      panels: layout(panels),
    },
  };
}

const quantiles = (metric: string, what: string): Target[] =>
  ['0.5', '0.95', '0.99'].map((qt) =>
    q(
      `max by (model_name) (namespace_model_name:${metric}:quantile_rate5m{${SEL}, quantile="${qt}"})`,
      `{{model_name}} p${Number(qt) * 100} ${what}`,
    ),
  );

/** 1 - (bad share over 30 days / error budget): 1 = untouched budget, 0 = spent, negative = overspent. */
const budgetRemaining = (badRatio30d: string): string => `1 - ((${badRatio30d}) / (1 - $objective))`;
const ttftBad = (range: string): string =>
  `1 - (sum by (model_name) (increase(vllm:time_to_first_token_seconds_bucket{${SEL}, le="$ttft_le"}[${range}])) / sum by (model_name) (increase(vllm:time_to_first_token_seconds_count{${SEL}}[${range}])))`;
const errorsBad = (range: string): string =>
  `sum by (model_name) (increase(vllm:request_success_total{${SEL}, finished_reason="error"}[${range}])) / sum by (model_name) (increase(vllm:request_success_total{${SEL}}[${range}]))`;

const OP_SEL = 'namespace=~"$namespace", model_name=~"$model"';

export function fleetOverview(): Dashboard {
  return dashboard(
    'modelserve-fleet',
    'modelserve / Fleet overview',
    'Every model served by modelserve: load, latency, errors and replicas at a glance.',
    [namespaceVar, modelVar],
    [
      stat({
        title: 'Models',
        description: 'Models with at least one worker replica scraped.',
        targets: [q(`count(count by (namespace, model_name) (vllm:num_requests_running{${SEL}}))`, 'models')],
      }),
      stat({
        title: 'Worker replicas',
        description: 'Worker pods exporting metrics.',
        targets: [q(`count(vllm:num_requests_running{${SEL}})`, 'replicas')],
      }),
      stat({
        title: 'Requests/s',
        description: 'Finished requests per second, all reasons.',
        unit: 'reqps',
        targets: [q(`sum(rate(vllm:request_success_total{${SEL}}[${RATE}]))`, 'requests/s')],
      }),
      stat({
        title: 'Generated tokens/s',
        description: 'Output tokens per second over every replica.',
        targets: [q(`sum(rate(vllm:generation_tokens_total{${SEL}}[${RATE}]))`, 'tokens/s')],
      }),
      ts({
        title: 'Requests/s by model',
        description: 'Finished requests per second.',
        unit: 'reqps',
        stack: true,
        targets: [q(`sum by (model_name) (rate(vllm:request_success_total{${SEL}}[${RATE}]))`, '{{model_name}}')],
      }),
      ts({
        title: 'TTFT p95 by model',
        description: 'Time to first token, 95th percentile over every replica of the model (recording rule).',
        unit: 's',
        targets: [
          q(
            `max by (model_name) (namespace_model_name:vllm_time_to_first_token_seconds:quantile_rate5m{${SEL}, quantile="0.95"})`,
            '{{model_name}}',
          ),
        ],
      }),
      ts({
        title: 'Error ratio by model',
        description: 'Share of finished requests that ended in an engine error.',
        unit: 'percentunit',
        targets: [
          q(`max by (model_name) (namespace_model_name:vllm_request_errors:ratio_rate5m{${SEL}})`, '{{model_name}}'),
        ],
      }),
      ts({
        title: 'Queue depth by model',
        description: 'Requests waiting in the workers (admission queue plus engine queue).',
        stack: true,
        targets: [q(`sum by (model_name) (vllm:num_requests_waiting{${SEL}})`, '{{model_name}}')],
      }),
      ts({
        title: 'Replicas: desired vs ready',
        description: 'Desired (autoscaler) and ready replicas of each ModelDeployment, from the operator.',
        targets: [
          q(
            `sum by (modeldeployment) (modelserve_operator_modeldeployment_replicas{${OP_SEL}, state="desired"})`,
            '{{modeldeployment}} desired',
          ),
          q(
            `sum by (modeldeployment) (modelserve_operator_modeldeployment_replicas{${OP_SEL}, state="ready"})`,
            '{{modeldeployment}} ready',
          ),
        ],
      }),
      ts({
        title: 'KV cache usage by model',
        description: 'Mean share of KV-cache blocks in use over the replicas of each model.',
        unit: 'percentunit',
        max: 1,
        targets: [q(`avg by (model_name) (vllm:kv_cache_usage_perc{${SEL}})`, '{{model_name}}')],
      }),
      ts({
        title: 'Gateway requests/s by status',
        description:
          'Requests answered by the gateways, by HTTP status (429: queue full or rate limit; 503: no worker in time).',
        unit: 'reqps',
        stack: true,
        targets: [
          q(`sum by (status) (rate(modelserve_gateway_requests_total{model=~"$model"}[${RATE}]))`, '{{status}}'),
        ],
      }),
      ts({
        title: 'Gateway: 5xx ratio and time to first byte',
        description: 'As clients see it: share of 5xx answers, and p95 time to the first byte (queue wait included).',
        targets: [
          q(
            'max by (model) (model:modelserve_gateway_request_errors:ratio_rate5m{model=~"$model"})',
            '{{model}} 5xx ratio',
          ),
          q(
            'max by (model) (model:modelserve_gateway_time_to_first_byte_seconds:p95_rate5m{model=~"$model"})',
            '{{model}} TTFB p95 (s)',
          ),
        ],
      }),
      ts({
        title: 'Gateway queue and ready endpoints',
        description: 'Requests waiting in the gateways for a worker, and the ready worker endpoints they route to.',
        targets: [
          q('sum by (model) (modelserve_gateway_queue_length{model=~"$model"})', '{{model}} queued'),
          q('max by (model) (modelserve_gateway_ready_endpoints{model=~"$model"})', '{{model}} ready endpoints'),
        ],
      }),
      ts({
        title: 'Operator reconciles/s',
        description: 'ModelDeployment reconciles by result; errors by failed step.',
        targets: [
          q('sum by (result) (rate(modelserve_operator_reconcile_total[$__rate_interval]))', '{{result}}'),
          q('sum by (step) (rate(modelserve_operator_reconcile_errors_total[$__rate_interval]))', 'error: {{step}}'),
        ],
      }),
      ts({
        title: 'Operator leader and work queue',
        description: 'Which operator process leads (1) and the keys waiting in its work queue.',
        targets: [
          q('max by (pod) (modelserve_operator_leader)', 'leader {{pod}}'),
          q('sum(modelserve_operator_workqueue_depth)', 'work queue'),
        ],
      }),
    ],
  );
}

export function modelSlo(): Dashboard {
  return dashboard(
    'modelserve-model-slo',
    'modelserve / Model SLO',
    'Per model: TTFT and ITL percentiles against their targets, error budgets, throughput, queue and replicas.',
    [namespaceVar, modelVar, ...sloVars],
    [
      stat({
        title: 'TTFT error budget remaining (30 d)',
        description: 'Share of the TTFT error budget left over 30 days: 1 untouched, 0 spent, below 0 overspent.',
        unit: 'percentunit',
        thresholds: [{ value: 0.25, color: 'green' }],
        targets: [q(budgetRemaining(ttftBad('30d')), '{{model_name}}')],
      }),
      stat({
        title: 'Error budget remaining (30 d)',
        description: 'Share of the request-error budget left over 30 days.',
        unit: 'percentunit',
        targets: [q(budgetRemaining(errorsBad('30d')), '{{model_name}}')],
      }),
      stat({
        title: 'Gateway error budget remaining (30 d)',
        description: 'Share of the budget of 5xx answers (as clients see them at the gateway) left over 30 days.',
        unit: 'percentunit',
        targets: [
          q(
            budgetRemaining(
              'sum by (model) (increase(modelserve_gateway_requests_total{model=~"$model", status=~"5.."}[30d])) / sum by (model) (increase(modelserve_gateway_requests_total{model=~"$model"}[30d]))',
            ),
            '{{model}}',
          ),
        ],
      }),
      stat({
        title: 'Gateway 5xx burn rate (1 h)',
        description: 'How fast clients spend the 5xx budget: 1 = exactly on budget, 14.4 pages.',
        thresholds: [
          { value: 6, color: 'orange' },
          { value: 14.4, color: 'red' },
        ],
        targets: [
          q('max by (model) (model:slo_gateway_errors:ratio_rate1h{model=~"$model"}) / (1 - $objective)', '{{model}}'),
        ],
      }),
      stat({
        title: 'TTFT burn rate (1 h)',
        description: 'How fast the TTFT budget burns: 1 = exactly on budget, 14.4 pages.',
        thresholds: [
          { value: 6, color: 'orange' },
          { value: 14.4, color: 'red' },
        ],
        targets: [q(`(${ttftBad('1h')}) / (1 - $objective)`, '{{model_name}}')],
      }),
      stat({
        title: 'Error burn rate (1 h)',
        description: 'How fast the error budget burns: 1 = exactly on budget, 14.4 pages.',
        thresholds: [
          { value: 6, color: 'orange' },
          { value: 14.4, color: 'red' },
        ],
        targets: [q(`(${errorsBad('1h')}) / (1 - $objective)`, '{{model_name}}')],
      }),
      ts({
        title: 'Time to first token',
        description: 'p50/p95/p99 over every replica of the model, against the SLO threshold.',
        unit: 's',
        targets: [...quantiles('vllm_time_to_first_token_seconds', 'TTFT'), q('vector($ttft_le)', 'SLO threshold')],
      }),
      ts({
        title: 'Inter-token latency',
        description: 'p50/p95/p99 over every replica of the model, against the ITL target.',
        unit: 's',
        targets: [...quantiles('vllm_inter_token_latency_seconds', 'ITL'), q('vector($itl_target)', 'p95 target')],
      }),
      ts({
        title: 'Tokens/s',
        description: 'Prompt (prefill) and generated tokens per second.',
        targets: [
          q(`sum by (model_name) (namespace_model_name:vllm_prompt_tokens:rate5m{${SEL}})`, '{{model_name}} prompt'),
          q(
            `sum by (model_name) (namespace_model_name:vllm_generation_tokens:rate5m{${SEL}})`,
            '{{model_name}} generated',
          ),
        ],
      }),
      ts({
        title: 'Queue depth and running requests',
        description: 'Requests waiting (worker queues) and in the engine batches, over every replica.',
        targets: [
          q(`sum by (model_name) (vllm:num_requests_waiting{${SEL}})`, '{{model_name}} waiting'),
          q(`sum by (model_name) (vllm:num_requests_running{${SEL}})`, '{{model_name}} running'),
        ],
      }),
      ts({
        title: 'Replicas: desired vs ready',
        description: 'Desired replicas (autoscaler decision), ready and Pending ones, from the operator.',
        targets: [
          q(`sum by (state) (modelserve_operator_modeldeployment_replicas{${OP_SEL}})`, '{{state}}'),
          q(`count(vllm:num_requests_running{${SEL}})`, 'workers scraped'),
        ],
      }),
      ts({
        title: 'Error ratio',
        description: 'Share of finished requests that ended in an engine error, against the budget.',
        unit: 'percentunit',
        targets: [
          q(`max by (model_name) (namespace_model_name:vllm_request_errors:ratio_rate5m{${SEL}})`, '{{model_name}}'),
          q('vector(1 - $objective)', 'error budget'),
        ],
      }),
      ts({
        title: 'Request queue time',
        description: 'Time requests wait before the engine schedules them, p95.',
        unit: 's',
        targets: [
          q(
            `histogram_quantile(0.95, sum by (model_name, le) (rate(vllm:request_queue_time_seconds_bucket{${SEL}}[${RATE}])))`,
            '{{model_name}} p95',
          ),
        ],
      }),
      ts({
        title: 'End-to-end latency',
        description: 'Whole-request latency, p50 and p95.',
        unit: 's',
        targets: ['0.5', '0.95'].map((qt) =>
          q(
            `histogram_quantile(${qt}, sum by (model_name, le) (rate(vllm:e2e_request_latency_seconds_bucket{${SEL}}[${RATE}])))`,
            `{{model_name}} p${Number(qt) * 100}`,
          ),
        ),
      }),
    ],
  );
}

export function autoscaler(): Dashboard {
  return dashboard(
    'modelserve-autoscaler',
    'modelserve / Autoscaler and cold starts',
    'What the autoscaler decided and why, whether scaling is blocked, and how long new replicas take to serve.',
    [namespaceVar, modelVar],
    [
      ts({
        title: 'Scaling decisions by reason',
        description: 'Autoscaler decisions per minute, by direction and reason (queue, slo, panic, schedule, idle).',
        stack: true,
        targets: [
          q(
            `sum by (modeldeployment, direction, reason) (increase(modelserve_autoscaler_decisions_total{${OP_SEL}}[5m]))`,
            '{{modeldeployment}} {{direction}} ({{reason}})',
          ),
        ],
      }),
      ts({
        title: 'Replicas: desired, ready, Pending',
        description: 'The autoscaler’s target against what is serving and what waits for a node.',
        targets: [
          q(
            `sum by (modeldeployment, state) (modelserve_operator_modeldeployment_replicas{${OP_SEL}})`,
            '{{modeldeployment}} {{state}}',
          ),
        ],
      }),
      ts({
        title: 'ScalingLimited',
        description: '1 while the autoscaler wants more replicas than maxReplicas, maxGPUs or Pending pods allow.',
        targets: [
          q(
            `max by (modeldeployment) (modelserve_operator_modeldeployment_condition{${OP_SEL}, condition="ScalingLimited", status="true"})`,
            '{{modeldeployment}}',
          ),
        ],
      }),
      ts({
        title: 'Queue depth per ready replica',
        description: 'The autoscaler’s main signal: waiting requests over ready replicas.',
        targets: [
          q(
            `sum by (model_name) (vllm:num_requests_waiting{${SEL}}) / clamp_min(count by (model_name) (vllm:num_requests_running{${SEL}}), 1)`,
            '{{model_name}}',
          ),
        ],
      }),
      ts({
        title: 'Replica start-up duration',
        description: 'Time from pod creation to Ready (scheduling, weights, engine load), p50 and p95.',
        unit: 's',
        targets: ['0.5', '0.95'].map((qt) =>
          q(
            `histogram_quantile(${qt}, sum by (modeldeployment, le) (rate(modelserve_operator_replica_startup_duration_seconds_bucket{${OP_SEL}}[1h])))`,
            `{{modeldeployment}} p${Number(qt) * 100}`,
          ),
        ),
      }),
      ts({
        title: 'Replica starts',
        description: 'New replicas that became Ready, per hour.',
        targets: [
          q(
            `sum by (modeldeployment) (increase(modelserve_operator_replica_startup_duration_seconds_count{${OP_SEL}}[1h]))`,
            '{{modeldeployment}}',
          ),
        ],
      }),
    ],
  );
}

export function engineInternals(): Dashboard {
  const perPod = (expr: string): Target => q(expr, '{{pod}}');
  return dashboard(
    'modelserve-engine',
    'modelserve / Engine internals',
    'Inside the workers: KV-cache use, preemptions, prefix-cache hits, batch sizes and phase times, per replica.',
    [namespaceVar, modelVar],
    [
      ts({
        title: 'KV cache usage',
        description: 'Share of KV-cache blocks in use, per replica. Near 1, the scheduler preempts.',
        unit: 'percentunit',
        max: 1,
        targets: [perPod(`max by (pod) (vllm:kv_cache_usage_perc{${SEL}})`)],
      }),
      ts({
        title: 'Preemptions/s',
        description: 'Sequences preempted (KV blocks reclaimed, recomputed later), per replica.',
        targets: [perPod(`sum by (pod) (rate(vllm:num_preemptions_total{${SEL}}[${RATE}]))`)],
      }),
      ts({
        title: 'Prefix-cache hit rate',
        description: 'Share of queried prompt tokens found in the prefix cache, per replica.',
        unit: 'percentunit',
        max: 1,
        targets: [
          perPod(
            `sum by (pod) (rate(vllm:prefix_cache_hits_total{${SEL}}[${RATE}])) / sum by (pod) (rate(vllm:prefix_cache_queries_total{${SEL}}[${RATE}]))`,
          ),
        ],
      }),
      ts({
        title: 'Batch size (running sequences)',
        description: 'Sequences in the engine batch and waiting for it, per replica.',
        targets: [
          q(`sum by (pod) (vllm:num_requests_running{${SEL}})`, '{{pod}} running'),
          q(`sum by (pod) (vllm:num_requests_waiting{${SEL}})`, '{{pod}} waiting'),
        ],
      }),
      ts({
        title: 'Prefill and decode time per request',
        description: 'p95 time a request spends in prefill and in decode.',
        unit: 's',
        targets: [
          q(
            `histogram_quantile(0.95, sum by (model_name, le) (rate(vllm:request_prefill_time_seconds_bucket{${SEL}}[${RATE}])))`,
            '{{model_name}} prefill p95',
          ),
          q(
            `histogram_quantile(0.95, sum by (model_name, le) (rate(vllm:request_decode_time_seconds_bucket{${SEL}}[${RATE}])))`,
            '{{model_name}} decode p95',
          ),
        ],
      }),
      ts({
        title: 'Generated tokens/s per replica',
        description: 'Decode throughput of each replica.',
        targets: [perPod(`sum by (pod) (rate(vllm:generation_tokens_total{${SEL}}[${RATE}]))`)],
      }),
      ts({
        title: 'Finished requests by reason',
        description: 'stop, length, abort (client went away) and error, per second.',
        stack: true,
        targets: [
          q(`sum by (finished_reason) (rate(vllm:request_success_total{${SEL}}[${RATE}]))`, '{{finished_reason}}'),
        ],
      }),
      ts({
        title: 'Inter-token latency p99 per replica',
        description: 'Tail of the time between two tokens of a stream, per replica.',
        unit: 's',
        targets: [
          perPod(
            `histogram_quantile(0.99, sum by (pod, le) (rate(vllm:inter_token_latency_seconds_bucket{${SEL}}[${RATE}])))`,
          ),
        ],
      }),
      ts({
        title: 'Prompt tokens waiting and prefilled/s',
        description:
          "Prompt tokens of the requests in each replica's waiting queue, and prompt tokens prefilled per second: the autoscaler's token view (queued tokens over the prefill rate) reads both.",
        targets: [
          q(`sum by (pod) (modelserve:num_prompt_tokens_waiting{${SEL}})`, '{{pod}} waiting'),
          q(`sum by (pod) (rate(vllm:prompt_tokens_total{${SEL}}[${RATE}]))`, '{{pod}} prefilled/s'),
        ],
      }),
    ],
  );
}

export function allDashboards(): Dashboard[] {
  return [fleetOverview(), modelSlo(), autoscaler(), engineInternals()];
}

/** Every PromQL expression of a dashboard (panels and query variables), with where it comes from. */
export function dashboardExpressions(json: Record<string, unknown>): { where: string; expr: string }[] {
  const out: { where: string; expr: string }[] = [];
  for (const p of (json.panels ?? []) as { title: string; targets?: { refId: string; expr: string }[] }[]) {
    for (const t of p.targets ?? []) out.push({ where: `panel "${p.title}" ${t.refId}`, expr: t.expr });
  }
  const vars = ((json.templating as { list?: unknown[] } | undefined)?.list ?? []) as {
    name: string;
    type: string;
    definition?: string;
  }[];
  for (const v of vars) {
    const m = v.type === 'query' && v.definition ? /^label_values\((.*),\s*\w+\)$/.exec(v.definition) : null;
    if (m) out.push({ where: `variable ${v.name}`, expr: m[1] as string });
  }
  return out;
}
