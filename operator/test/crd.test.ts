import { readFileSync } from 'node:fs';
import yaml from 'js-yaml';
import { crdPath, generatedPath, generatedSource, type SchemaNode } from '../../hack/generate-types.js';
import { crdSchema } from './fixtures.js';

interface Version {
  subresources: { scale: Record<string, string>; status: object };
  additionalPrinterColumns: { name: string; jsonPath: string }[];
}
const crd = yaml.load(readFileSync(crdPath, 'utf8')) as {
  spec: { names: { shortNames: string[]; plural: string }; scope: string; versions: Version[] };
};

function undocumented(node: SchemaNode, path: string, out: string[]): string[] {
  for (const [key, child] of Object.entries(node.properties ?? {})) {
    const p = `${path}.${key}`;
    if (p === '.metadata') continue; // the API server owns ObjectMeta's documentation
    if (!child.description) out.push(p);
    undocumented(child, p, out);
    if (child.items) {
      if (!child.items.description) out.push(`${p}[]`);
      undocumented(child.items, `${p}[]`, out);
    }
    if (child.additionalProperties && typeof child.additionalProperties === 'object') {
      if (!child.additionalProperties.description) out.push(`${p}{}`);
    }
  }
  return out;
}

describe('ModelDeployment CRD', () => {
  it('documents every field, so kubectl explain teaches the whole API', () => {
    expect(undocumented(crdSchema, '', [])).toEqual([]);
  });

  it('names the resource and exposes the status and scale subresources', () => {
    expect(crd.spec.names.shortNames).toEqual(['mdep']);
    expect(crd.spec.names.plural).toBe('modeldeployments');
    expect(crd.spec.scope).toBe('Namespaced');
    const v = crd.spec.versions[0]!;
    expect(v.subresources.scale).toEqual({
      specReplicasPath: '.spec.replicas',
      statusReplicasPath: '.status.replicas',
      labelSelectorPath: '.status.selector',
    });
    expect(v.additionalPrinterColumns.map((c) => c.name.toUpperCase())).toEqual([
      'READY',
      'DESIRED',
      'STANDBY',
      'QUEUE',
      'TTFT-P95',
      'SLO',
      'AGE',
    ]);
    // Standby is for `-o wide` only: the default table stays as narrow as before.
    expect(v.additionalPrinterColumns.find((c) => c.name === 'Standby')).toEqual(
      expect.objectContaining({ jsonPath: '.status.readyStandbyReplicas', priority: 1 }),
    );
  });

  it('has an up-to-date generated TypeScript file (run `make generate` after editing the CRD)', async () => {
    expect(readFileSync(generatedPath, 'utf8')).toBe(await generatedSource());
  });
});
