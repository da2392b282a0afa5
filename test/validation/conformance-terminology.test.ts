/**
 * The conformance run with loaded code systems (`--terminology-data-dir`): a case whose verdict needs a big code
 * system's content (an unknown CVX code) agrees with the reference only when the code system is loaded, as on the
 * service. The case, its inline reference outcome and the CVX excerpt are made here.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runConformance } from '../../conformance/validator.js';
import { loadCodeSystem } from '../../src/terminology/loaders.js';
import {
  openLoadedCodeSystems,
  terminologyFile,
  TerminologyWriter,
  type SqliteCodeSystems,
} from '../../src/terminology/terminology-store.js';
import { CVX_TXT } from '../terminology/excerpts.js';

let dir: string;
let codeSystems: SqliteCodeSystems | undefined;

const immunization = (cvx: string) => ({
  resourceType: 'Immunization',
  status: 'completed',
  vaccineCode: { coding: [{ system: 'http://hl7.org/fhir/sid/cvx', code: cvx }] },
  patient: { reference: 'Patient/1' },
  occurrenceDateTime: '2021-01-01',
});

beforeAll(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'hie-conformance-tx-'));
  const cases = path.join(dir, 'cases');
  mkdirSync(cases);
  writeFileSync(path.join(cases, 'cvx-known.json'), JSON.stringify(immunization('208')));
  writeFileSync(path.join(cases, 'cvx-unknown.json'), JSON.stringify(immunization('209')));
  writeFileSync(
    path.join(cases, 'manifest.json'),
    JSON.stringify({
      'test-cases': [
        { name: 'cvx-known', file: 'cvx-known.json', module: 'tx', java: { errorCount: 0 } },
        {
          name: 'cvx-unknown',
          file: 'cvx-unknown.json',
          module: 'tx',
          java: {
            errorCount: 1,
            output: [{ severity: 'error', expression: ['Immunization.vaccineCode.coding[0].code'] }],
          },
        },
      ],
    }),
  );
  const release = path.join(dir, 'cvx');
  mkdirSync(release);
  writeFileSync(path.join(release, 'cvx.txt'), CVX_TXT);
  const dataDir = path.join(dir, 'data');
  mkdirSync(dataDir);
  const writer = new TerminologyWriter(terminologyFile(dataDir));
  try {
    await loadCodeSystem('cvx', release, writer);
  } finally {
    writer.close();
  }
  codeSystems = openLoadedCodeSystems(dataDir);
});

afterAll(() => {
  codeSystems?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('conformance run with loaded code systems', () => {
  it('accepts an unknown CVX code without CVX content, and agrees with the reference once CVX is loaded', () => {
    const without = runConformance(path.join(dir, 'cases'));
    expect(without.runs.map((r) => [r.case, r.actualValid])).toEqual([
      ['cvx-known', true],
      ['cvx-unknown', true],
    ]);
    const loaded = runConformance(path.join(dir, 'cases'), { codeSystems });
    expect(loaded.runs.map((r) => [r.case, r.actualValid, r.locationAgrees])).toEqual([
      ['cvx-known', true, false],
      ['cvx-unknown', false, true],
    ]);
    expect(loaded.validAgree).toBe(2);
  });
});
