/**
 * Native evaluators of hot invariants (src/fhir/validation/invariants.ts) agree with fhirpath's evaluation of the
 * same expression: on every Observation among the official R4 examples and the Synthea bundles, and on
 * hand-made edge cases.
 */
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  evaluateConstraint,
  evaluateWithFhirPath,
  hasNativeEvaluator,
} from '../../src/fhir/validation/invariants.js';

type Json = Record<string, any>;

const VS_2 =
  '(component.empty() and hasMember.empty()) implies (dataAbsentReason.exists() or value.exists())';
const VS_3 = 'value.exists() or dataAbsentReason.exists()';
const OBS_6 = 'dataAbsentReason.empty() or value.empty()';

function observations(): Json[] {
  const out: Json[] = [];
  const examples = join(process.cwd(), 'node_modules', 'hl7.fhir.r4.examples');
  for (const f of readdirSync(examples).filter((n) => n.startsWith('Observation-'))) {
    out.push(JSON.parse(readFileSync(join(examples, f), 'utf8')));
  }
  const synthea = join(process.cwd(), '..', 'shared', 'data', 'synthea-bundles');
  for (const f of readdirSync(synthea)
    .filter((n) => n.endsWith('.json'))
    .sort()
    .slice(0, 5)) {
    const bundle = JSON.parse(readFileSync(join(synthea, f), 'utf8'));
    for (const e of bundle.entry ?? []) if (e.resource?.resourceType === 'Observation') out.push(e.resource);
  }
  return out;
}

const edgeCases: Json[] = [
  { resourceType: 'Observation', status: 'final', code: {} },
  { resourceType: 'Observation', status: 'final', code: {}, valueQuantity: { value: 1 } },
  { resourceType: 'Observation', status: 'final', code: {}, valueString: 'x' },
  { resourceType: 'Observation', status: 'final', code: {}, dataAbsentReason: { text: 'x' } },
  { resourceType: 'Observation', status: 'final', code: {}, component: [{ code: {} }] },
  { resourceType: 'Observation', status: 'final', code: {}, hasMember: [{ reference: 'Observation/1' }] },
  { resourceType: 'Observation', status: 'final', code: {}, valueset: 'not a choice of value' },
];

describe('native invariants agree with FHIRPath', () => {
  const all = [...observations(), ...edgeCases];

  it.each([
    ['vs-2', VS_2],
    ['obs-6', OBS_6],
  ])('%s on %# Observations', (key, expression) => {
    expect(hasNativeEvaluator(key, expression)).toBe(true);
    expect(all.length).toBeGreaterThan(100);
    for (const o of all) {
      const env = { resource: o, rootResource: o };
      const native = evaluateConstraint(key, expression, undefined, o, env);
      const fhirpath = evaluateWithFhirPath(expression, undefined, o, env);
      expect({ id: o.id, ok: native.ok }).toEqual({ id: o.id, ok: fhirpath.ok });
    }
  });

  it('vs-3 on every component', () => {
    expect(hasNativeEvaluator('vs-3', VS_3)).toBe(true);
    const components = [
      ...all.flatMap((o) => (o.component ?? []) as Json[]),
      { code: {} },
      { code: {}, valueQuantity: { value: 1 } },
      { code: {}, dataAbsentReason: { text: 'x' } },
    ];
    expect(components.length).toBeGreaterThan(20);
    for (const c of components) {
      const env = { resource: {}, rootResource: {} };
      expect(evaluateConstraint('vs-3', VS_3, 'Observation.component', c, env).ok).toBe(
        evaluateWithFhirPath(VS_3, 'Observation.component', c, env).ok,
      );
    }
  });
});
