// The chart against a real API server: `helm lint --strict`, then `helm template` with each values file validated by
// kube-apiserver itself (server-side dry run, strict field validation, PodSecurity "restricted" on the namespace),
// plus what the schema must reject and the RBAC equality with config/rbac.
import fs from 'node:fs';
import path from 'node:path';
import yaml from 'js-yaml';
import { startControlPlane, type ControlPlane } from '../support/controlPlane.js';
import { repoRoot } from '../support/paths.js';
import { chartDir, documents, helmBin, render, run, valuesFiles, type K8sObject } from './support.js';

const NAMESPACE = 'modelserve-system';
let cp: ControlPlane;

async function kubectlOk(args: string[], input?: string): Promise<string> {
  const r = await cp.kubectl(args, input === undefined ? {} : { input });
  if (r.code !== 0) throw new Error(`kubectl ${args.join(' ')} failed (${r.code}): ${r.stderr}`);
  return r.stdout + r.stderr;
}

beforeAll(async () => {
  cp = await startControlPlane({ gpuNodes: 0 });
  await kubectlOk(['apply', '--server-side', '-f', path.join(chartDir, 'crds')]);
  await kubectlOk(['apply', '--server-side', '-f', path.join(repoRoot, 'test/chart/fixtures/monitoring-crds.yaml')]);
  await kubectlOk(['wait', '--for=condition=Established', '--timeout=60s', 'crd', '--all']);
  for (const ns of [NAMESPACE, 'monitoring', 'models']) {
    await kubectlOk(['create', 'namespace', ns]);
    // The API server's PodSecurity admission judges every pod template against the "restricted" profile.
    await kubectlOk([
      'label',
      'namespace',
      ns,
      'pod-security.kubernetes.io/enforce=restricted',
      'pod-security.kubernetes.io/warn=restricted',
    ]);
  }
}, 180_000);

afterAll(async () => {
  await cp?.stop();
});

test('helm lint --strict passes with every values file', async () => {
  const files = valuesFiles();
  expect(files.length).toBeGreaterThanOrEqual(4);
  for (const f of files) {
    const r = await run(helmBin(), ['lint', '--strict', chartDir, '-f', f, '--kube-version', '1.35.0']);
    expect({ file: path.basename(f), code: r.code, out: r.code ? r.stdout + r.stderr : '' }).toEqual({
      file: path.basename(f),
      code: 0,
      out: '',
    });
  }
}, 120_000);

test.each(valuesFiles().map((f) => [path.relative(repoRoot, f), f]))(
  '%s renders objects the API server accepts (server-side dry run), restricted pod security',
  async (_name, file) => {
    const text = await render(['-n', NAMESPACE, '--api-versions', 'monitoring.coreos.com/v1', '-f', file]);
    const objs = documents(text);
    expect(objs.length).toBeGreaterThan(8);
    const out = await kubectlOk(['apply', '--dry-run=server', '--validate=strict', '-f', '-'], text);
    expect(out).not.toMatch(/would violate PodSecurity/);
    expect(out.match(/\(server dry run\)/g)?.length).toBe(objs.length);
    // Pod templates: restricted settings spelled out, not just defaults of the image.
    for (const o of objs.filter((x) => ['Deployment', 'StatefulSet'].includes(x.kind))) {
      const pod = (o.spec as { template: { spec: PodSpec } }).template.spec;
      expect(pod.securityContext.runAsNonRoot).toBe(true);
      expect(pod.securityContext.seccompProfile.type).toBe('RuntimeDefault');
      for (const c of pod.containers) {
        expect(c.securityContext).toMatchObject({
          allowPrivilegeEscalation: false,
          readOnlyRootFilesystem: true,
          capabilities: { drop: ['ALL'] },
        });
      }
    }
  },
  60_000,
);

interface PodSpec {
  securityContext: { runAsNonRoot: boolean; seccompProfile: { type: string } };
  containers: { securityContext: Record<string, unknown> }[];
}

test('monitoring objects appear only where monitoring.coreos.com/v1 is served', async () => {
  const kinds = (objs: K8sObject[]) => objs.map((o) => o.kind).filter((k) => /Monitor|PrometheusRule/.test(k));
  const without = documents(await render(['-n', NAMESPACE]));
  expect(kinds(without)).toEqual([]);
  const withApi = documents(await render(['-n', NAMESPACE, '--api-versions', 'monitoring.coreos.com/v1']));
  expect(kinds(withApi).sort()).toEqual(['PodMonitor', 'PrometheusRule', 'ServiceMonitor', 'ServiceMonitor']);
  // Dashboards do not need the API: four ConfigMaps labelled for Grafana's sidecar, each with valid JSON.
  const dashboards = without.filter((o) => o.kind === 'ConfigMap' && o.metadata.labels?.grafana_dashboard === '1');
  expect(dashboards).toHaveLength(4);
  for (const d of dashboards) {
    for (const json of Object.values((d as unknown as { data: Record<string, string> }).data)) {
      expect((JSON.parse(json) as { tags: string[] }).tags).toContain('modelserve');
    }
  }
});

test.each([
  [['--set', 'operator.replicas=two'], /'\/operator\/replicas': got string, want integer/],
  [['--set', 'operator.replica=2'], /'\/operator': additional properties 'replica' not allowed/],
  [
    ['--set', 'monitoring.slo.ttftThresholdSeconds=2'],
    /'\/monitoring\/slo\/ttftThresholdSeconds': value must be one of/,
  ],
  [['--set', 'monitoring.slo.objective=1.5'], /'\/monitoring\/slo\/objective'/],
  [['--set', 'redis.url=redis://user:pw@host:6379'], /'\/redis\/url': .* does not match pattern/],
  [['--set', 'gateway.service.type=Ingress'], /'\/gateway\/service\/type': value must be one of/],
  [['--set', 'redis.enabled=false'], /set redis\.enabled=true .* or redis\.url/],
  [['--set', 'operator.replicas=2', '--set', 'operator.leaderElect=false'], /operator\.leaderElect must be true/],
])('the chart refuses %j with a message naming the field', async (args, message) => {
  const r = await run(helmBin(), ['template', 'ms', chartDir, '--kube-version', '1.35.0', ...(args as string[])]);
  expect(r.code).not.toBe(0);
  expect(r.stderr).toMatch(message as RegExp);
});

test('the rendered RBAC rules are exactly those of config/rbac, bound to the chart ServiceAccounts', async () => {
  const objs = documents(await render(['-n', NAMESPACE]));
  const repo = fs
    .readdirSync(path.join(repoRoot, 'config/rbac'))
    .flatMap((f) => yaml.loadAll(fs.readFileSync(path.join(repoRoot, 'config/rbac', f), 'utf8')) as K8sObject[])
    .filter((o) => o && ['ClusterRole', 'Role', 'ClusterRoleBinding', 'RoleBinding'].includes(o.kind));
  expect(repo.length).toBeGreaterThanOrEqual(4);
  const mapped = (name: string) => name.replace(/^modelserve-/, 'ms-modelserve-');
  const serviceAccounts = objs.filter((o) => o.kind === 'ServiceAccount').map((o) => o.metadata.name);
  for (const r of repo) {
    const ours = objs.find((o) => o.kind === r.kind && o.metadata.name === mapped(r.metadata.name));
    expect(ours).toBeDefined();
    if (r.kind.endsWith('Binding')) {
      const subjects = (ours as unknown as { subjects: { kind: string; name: string; namespace?: string }[] }).subjects;
      for (const s of subjects.filter((x) => x.kind === 'ServiceAccount')) {
        expect(serviceAccounts).toContain(s.name);
        expect(s.namespace).toBe(NAMESPACE);
      }
    } else {
      expect((ours as unknown as { rules: unknown }).rules).toEqual((r as unknown as { rules: unknown }).rules);
    }
  }
});

test('the dry-run checks above can fail: PodSecurity warns on an unrestricted pod, strict validation on a typo', async () => {
  const loose = {
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: { name: 'loose', namespace: NAMESPACE },
    spec: {
      selector: { matchLabels: { app: 'loose' } },
      template: {
        metadata: { labels: { app: 'loose' } },
        spec: { containers: [{ name: 'c', image: 'example.invalid/c:1' }] },
      },
    },
  };
  const out = await kubectlOk(['apply', '--dry-run=server', '--validate=strict', '-f', '-'], yaml.dump(loose));
  expect(out).toMatch(/would violate PodSecurity "restricted:latest"/);
  const typo = {
    apiVersion: 'monitoring.coreos.com/v1',
    kind: 'PrometheusRule',
    metadata: { name: 'typo', namespace: NAMESPACE },
    spec: { groups: [{ name: 'g', rules: [{ record: 'r', expression: 'up' }] }] },
  };
  const r = await cp.kubectl(['apply', '--dry-run=server', '--validate=strict', '-f', '-'], { input: yaml.dump(typo) });
  expect(r.code).not.toBe(0);
  expect(r.stderr).toMatch(/unknown field "spec.groups\[0\].rules\[0\].expression"/);
});
