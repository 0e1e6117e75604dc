// `helm install` into a real control plane, then the operator runs as the chart's ServiceAccount: kwok runs no
// containers, so the operator process runs here with a kubeconfig holding a TokenRequest token of that
// ServiceAccount — every API call it makes goes through the chart's RBAC. It must reconcile a sample ModelDeployment,
// and `kubectl auth can-i` must say yes exactly to what config/rbac grants and no to the rest.
import fs from 'node:fs';
import path from 'node:path';
import yaml from 'js-yaml';
import { startControlPlane, type ControlPlane } from '../support/controlPlane.js';
import { repoRoot } from '../support/paths.js';
import { freePort } from '../support/ports.js';
import { ManagedProcess } from '../support/process.js';
import { waitFor } from '../support/wait.js';
import { chartDir } from './support.js';

const NAMESPACE = 'modelserve-system';
const RELEASE = 'ms';
const OPERATOR_SA = `system:serviceaccount:${NAMESPACE}:${RELEASE}-modelserve-operator`;
let cp: ControlPlane;
let operator: ManagedProcess | undefined;
let redis: ManagedProcess | undefined;

interface Container {
  command: string[];
  env: {
    name: string;
    value?: string;
    valueFrom?: { fieldRef?: { fieldPath: string }; secretKeyRef?: { name: string; key: string } };
  }[];
}

/** Resolves a container's env as the kubelet does (downward API fields given, Secrets read, $(VAR) expanded). */
async function containerEnv(c: Container, fields: Record<string, string>): Promise<Record<string, string>> {
  const env: Record<string, string> = {};
  for (const e of c.env) {
    if (e.value !== undefined) {
      env[e.name] = e.value.replace(/\$\((\w+)\)/g, (whole, name: string) => env[name] ?? whole);
    } else if (e.valueFrom?.fieldRef) {
      const v = fields[e.valueFrom.fieldRef.fieldPath];
      if (v === undefined) throw new Error(`env ${e.name}: no value for field ${e.valueFrom.fieldRef.fieldPath}`);
      env[e.name] = v;
    } else if (e.valueFrom?.secretKeyRef) {
      const { name, key } = e.valueFrom.secretKeyRef;
      const secret = JSON.parse(await kubectlOk(['get', 'secret', name, '-n', NAMESPACE, '-o', 'json'])) as {
        data: Record<string, string>;
      };
      env[e.name] = Buffer.from(secret.data[key] ?? '', 'base64').toString();
    } else {
      throw new Error(`env ${e.name}: unsupported source`);
    }
  }
  return env;
}

async function kubectlOk(args: string[], input?: string): Promise<string> {
  const r = await cp.kubectl(args, input === undefined ? {} : { input });
  if (r.code !== 0) throw new Error(`kubectl ${args.join(' ')} failed (${r.code}): ${r.stderr}`);
  return r.stdout;
}

async function helmOk(args: string[]): Promise<string> {
  const r = await cp.helm(args, { timeoutMs: 120_000 });
  if (r.code !== 0) throw new Error(`helm ${args.join(' ')} failed (${r.code}): ${r.stderr}`);
  return r.stdout;
}

async function redisPassword(): Promise<string> {
  const out = await kubectlOk(['get', 'secret', `${RELEASE}-modelserve-redis`, '-n', NAMESPACE, '-o', 'json']);
  return Buffer.from((JSON.parse(out) as { data: { password: string } }).data.password, 'base64').toString();
}

beforeAll(async () => {
  cp = await startControlPlane({ gpuNodes: 1, gpusPerNode: 8 });
  // The prometheus-operator API (test stand-ins): the chart must find it through the API server's discovery.
  await kubectlOk(['apply', '--server-side', '-f', path.join(repoRoot, 'test/chart/fixtures/monitoring-crds.yaml')]);
  await kubectlOk(['wait', '--for=condition=Established', '--timeout=60s', 'crd', '--all']);
  await helmOk(['install', RELEASE, chartDir, '-n', NAMESPACE, '--create-namespace']);
}, 180_000);

afterAll(async () => {
  await operator?.stop();
  await redis?.stop();
  await cp?.stop();
});

test('helm install creates the CRD, the workloads and a generated Redis password that upgrades keep', async () => {
  await kubectlOk([
    'wait',
    '--for=condition=Established',
    '--timeout=60s',
    'crd/modeldeployments.serving.modelserve.dev',
  ]);
  const names = (await kubectlOk(['get', 'deploy,statefulset,svc,sa', '-n', NAMESPACE, '-o', 'name'])).split('\n');
  expect(names).toEqual(
    expect.arrayContaining([
      `deployment.apps/${RELEASE}-modelserve-operator`,
      `deployment.apps/${RELEASE}-modelserve-gateway`,
      `statefulset.apps/${RELEASE}-modelserve-redis`,
      `service/${RELEASE}-modelserve-gateway`,
      `serviceaccount/${RELEASE}-modelserve-operator`,
    ]),
  );
  // Rendered because discovery lists monitoring.coreos.com/v1 (.Capabilities), not because a flag said so.
  const monitoring = await kubectlOk([
    'get',
    'prometheusrules,podmonitors,servicemonitors',
    '-n',
    NAMESPACE,
    '-o',
    'name',
  ]);
  expect(monitoring.trim().split('\n').sort()).toEqual([
    `podmonitor.monitoring.coreos.com/${RELEASE}-modelserve-workers`,
    `prometheusrule.monitoring.coreos.com/${RELEASE}-modelserve`,
    `servicemonitor.monitoring.coreos.com/${RELEASE}-modelserve-gateway`,
    `servicemonitor.monitoring.coreos.com/${RELEASE}-modelserve-operator`,
  ]);
  expect(await kubectlOk(['get', 'pdb', `${RELEASE}-modelserve-gateway`, '-n', NAMESPACE, '-o', 'name'])).toContain(
    'poddisruptionbudget',
  );
  const before = await redisPassword();
  expect(before).toMatch(/^[A-Za-z0-9]{32}$/);
  await helmOk(['upgrade', RELEASE, chartDir, '-n', NAMESPACE, '--reuse-values', '--set', 'gateway.replicas=3']);
  expect(await redisPassword()).toBe(before);
  const notes = await helmOk(['get', 'notes', RELEASE, '-n', NAMESPACE]);
  expect(notes).toContain(`port-forward svc/${RELEASE}-modelserve-gateway`);
  expect(notes).toContain('kubectl label secret my-key serving.modelserve.dev/api-key=true');
  expect(notes).toContain('kubectl apply --server-side -f charts/modelserve/crds/');
}, 120_000);

interface Rule {
  apiGroups: string[];
  resources: string[];
  verbs: string[];
  resourceNames?: string[];
}

/** Rules of the ClusterRoles that config/rbac binds to the operator's ServiceAccount. */
function operatorClusterRules(): Rule[] {
  const objs = fs
    .readdirSync(path.join(repoRoot, 'config/rbac'))
    .flatMap((f) => yaml.loadAll(fs.readFileSync(path.join(repoRoot, 'config/rbac', f), 'utf8')) as RbacObject[])
    .filter((o) => o?.kind);
  const roles = new Set(
    objs
      .filter(
        (o) =>
          o.kind === 'ClusterRoleBinding' &&
          o.subjects?.some((s) => s.kind === 'ServiceAccount' && s.name === 'modelserve-operator'),
      )
      .map((o) => o.roleRef?.name),
  );
  return objs.filter((o) => o.kind === 'ClusterRole' && roles.has(o.metadata.name)).flatMap((o) => o.rules ?? []);
}

interface RbacObject {
  kind: string;
  metadata: { name: string };
  rules?: Rule[];
  roleRef?: { name: string };
  subjects?: { kind: string; name: string }[];
}

const VERBS = ['get', 'list', 'watch', 'create', 'update', 'patch', 'delete', 'deletecollection'];

async function canI(
  verb: string,
  resource: string,
  group: string,
  namespace?: string,
  name?: string,
): Promise<boolean> {
  const [base, subresource] = resource.split('/') as [string, string | undefined];
  const target = `${base}${group ? `.${group}` : ''}${name ? `/${name}` : ''}`;
  const args = ['auth', 'can-i', verb, target, `--as=${OPERATOR_SA}`];
  if (subresource) args.push(`--subresource=${subresource}`);
  args.push(...(namespace ? ['-n', namespace] : ['--all-namespaces']));
  const r = await cp.kubectl(args);
  if (r.stdout.trim() !== 'yes' && r.stdout.trim() !== 'no') throw new Error(`kubectl ${args.join(' ')}: ${r.stderr}`);
  return r.stdout.trim() === 'yes';
}

test('auth can-i: the operator ServiceAccount may do exactly what config/rbac grants cluster-wide', async () => {
  const rules = operatorClusterRules();
  expect(rules.length).toBeGreaterThan(3);
  const checks: { what: string; expected: boolean; got: Promise<boolean> }[] = [];
  for (const rule of rules) {
    for (const group of rule.apiGroups) {
      for (const resource of rule.resources) {
        const granted = new Set(
          rules
            .filter((r) => r.apiGroups.includes(group) && r.resources.includes(resource) && !r.resourceNames)
            .flatMap((r) => r.verbs),
        );
        for (const verb of VERBS) {
          checks.push({
            what: `${verb} ${resource}.${group}`,
            expected: granted.has(verb),
            got: canI(verb, resource, group),
          });
        }
      }
    }
  }
  const results = await Promise.all(
    checks.map(async (c) => ({ what: c.what, expected: c.expected, got: await c.got })),
  );
  expect(results.filter((r) => r.expected !== r.got)).toEqual([]);
  expect(results.filter((r) => r.got).length).toBeGreaterThan(5);
}, 120_000);

test('auth can-i: never Secrets, pod exec, RBAC escalation, nor leases outside its own', async () => {
  const denied: [string, string, string, string?, string?][] = [
    ['get', 'secrets', ''],
    ['list', 'secrets', ''],
    ['create', 'pods/exec', '', 'default'],
    ['delete', 'pods', ''],
    ['delete', 'modeldeployments', 'serving.modelserve.dev'],
    ['create', 'clusterrolebindings', 'rbac.authorization.k8s.io'],
    ['escalate', 'clusterroles', 'rbac.authorization.k8s.io'],
    ['update', 'customresourcedefinitions', 'apiextensions.k8s.io'],
    ['update', 'leases', 'coordination.k8s.io', NAMESPACE, 'someone-else'],
    ['create', 'leases', 'coordination.k8s.io', 'default'],
  ];
  for (const [verb, resource, group, ns, name] of denied) {
    expect({ verb, resource, ns, name, allowed: await canI(verb, resource, group, ns, name) }).toEqual({
      verb,
      resource,
      ns,
      name,
      allowed: false,
    });
  }
  // Its own leader Lease, in its own namespace.
  expect(await canI('update', 'leases', 'coordination.k8s.io', NAMESPACE, 'modelserve-operator')).toBe(true);
  expect(await canI('create', 'leases', 'coordination.k8s.io', NAMESPACE)).toBe(true);
}, 60_000);

test('the operator, running with a token of the chart ServiceAccount, reconciles a ModelDeployment', async () => {
  // TokenRequest API: a short-lived token bound to the ServiceAccount the chart created.
  const token = (
    await kubectlOk(['create', 'token', `${RELEASE}-modelserve-operator`, '-n', NAMESPACE, '--duration=1h'])
  ).trim();
  const admin = yaml.load(fs.readFileSync(cp.kubeconfigPath, 'utf8')) as {
    clusters: { cluster: Record<string, string> }[];
  };
  const kubeconfig = path.join(cp.dir, 'operator-sa.kubeconfig');
  fs.writeFileSync(
    kubeconfig,
    yaml.dump({
      apiVersion: 'v1',
      kind: 'Config',
      clusters: [{ name: 'test', cluster: admin.clusters[0]?.cluster }],
      users: [{ name: 'operator', user: { token } }],
      contexts: [{ name: 'operator', context: { cluster: 'test', user: 'operator' } }],
      'current-context': 'operator',
    }),
    { mode: 0o600 },
  );
  // The environment of the chart's operator container, as the kubelet would give it: literal values, the downward
  // API, the Redis password from the chart's Secret and $(VAR) expansion. Only the addresses change: Redis is a
  // local redis-server with that password, and the HTTP port a free one.
  const container = (
    JSON.parse(await kubectlOk(['get', 'deploy', `${RELEASE}-modelserve-operator`, '-n', NAMESPACE, '-o', 'json'])) as {
      spec: { template: { spec: { containers: Container[] } } };
    }
  ).spec.template.spec.containers[0] as Container;
  expect(container.command).toEqual(['node', 'operator/dist/main.js']); // built from operator/src/main.ts
  const password = await redisPassword();
  const redisPort = await freePort();
  redis = new ManagedProcess(
    'redis-with-chart-password',
    'redis-server',
    ['--port', String(redisPort), '--bind', '127.0.0.1', '--requirepass', password, '--save', '', '--appendonly', 'no'],
    { dir: cp.dir },
  ).start();
  const env = await containerEnv(container, { 'metadata.name': 'chart-test', 'metadata.namespace': NAMESPACE });
  expect(env.MODELSERVE_REDIS_URL).toBe(`redis://:${password}@${RELEASE}-modelserve-redis.${NAMESPACE}.svc:6379`);
  env.MODELSERVE_REDIS_URL = `redis://:${password}@127.0.0.1:${redisPort}`;
  env.MODELSERVE_HTTP_PORT = String(await freePort());
  operator = new ManagedProcess(
    'operator-as-chart-sa',
    process.execPath,
    ['--import', 'tsx', path.join(repoRoot, 'operator/src/main.ts'), '--http-host', '127.0.0.1'],
    { dir: cp.dir, cwd: repoRoot, env: { ...process.env, ...env, KUBECONFIG: kubeconfig } },
  ).start();

  await kubectlOk(['apply', '-f', path.join(repoRoot, 'examples/gpt-oss-20b.yaml')]);
  const deployment = await waitFor(
    async () => {
      operator?.assertRunning();
      const r = await cp.kubectl(['get', 'deployment', 'gpt-oss-20b', '-n', 'default', '-o', 'json']);
      return r.code === 0 ? (JSON.parse(r.stdout) as { metadata: { ownerReferences: { kind: string }[] } }) : undefined;
    },
    { timeoutMs: 90_000, description: `operator to create the Deployment of gpt-oss-20b (log: ${operator.logFile})` },
  );
  expect(deployment.metadata.ownerReferences[0]?.kind).toBe('ModelDeployment');
  // Status written through modeldeployments/status, the leader Lease held under the identity given.
  await waitFor(
    async () => {
      const md = JSON.parse(await kubectlOk(['get', 'mdep', 'gpt-oss-20b', '-n', 'default', '-o', 'json'])) as {
        metadata: { generation: number };
        status?: { observedGeneration?: number };
      };
      return md.status?.observedGeneration === md.metadata.generation;
    },
    { timeoutMs: 60_000, description: 'status.observedGeneration of gpt-oss-20b' },
  );
  const lease = JSON.parse(await kubectlOk(['get', 'lease', 'modelserve-operator', '-n', NAMESPACE, '-o', 'json'])) as {
    spec: { holderIdentity: string };
  };
  expect(lease.spec.holderIdentity).toBe('chart-test'); // POD_NAME from the downward API, as in the pod
  // Nothing it tried was refused.
  expect(fs.readFileSync(operator.logFile, 'utf8')).not.toMatch(/forbidden/i);
}, 180_000);
