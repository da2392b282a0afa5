/**
 * "Not loaded, not checked" on the import path: a required binding to a value set on SNOMED CT, which is not loaded
 * here, cannot be checked; `hie-ledger import` (run as its own process) stores the resources and says, in its
 * summary, which code system was not loaded and for how many resources ($validate and writes report it as an
 * information issue, operations.test.ts and below).
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from '../support/cli-process.js';
import {
  DIABETES_PROFILE,
  DIABETES_VALUE_SET,
  diabetesCondition,
  SNOMED,
} from '../support/diabetes-profile.js';

let dir: string;

beforeAll(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'hie-not-loaded-'));
  const ig = path.join(dir, 'ig');
  mkdirSync(ig);
  writeFileSync(path.join(ig, 'ValueSet-diabetes.json'), JSON.stringify(DIABETES_VALUE_SET));
  writeFileSync(
    path.join(ig, 'StructureDefinition-diabetes-condition.json'),
    JSON.stringify(DIABETES_PROFILE),
  );
  writeFileSync(
    path.join(dir, 'data.ndjson'),
    [
      { resourceType: 'Patient', id: 'p1' },
      diabetesCondition('44054006', 'c1'),
      diabetesCondition('46635009', 'c2'),
      // Not bound by the profile: nothing to say about it.
      { resourceType: 'Condition', id: 'c3', subject: { reference: 'Patient/p1' }, code: { text: 'x' } },
    ]
      .map((r) => JSON.stringify(r))
      .join('\n') + '\n',
  );
  mkdirSync(path.join(dir, 'data'));
});

afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('hie-ledger import: required bindings to code systems not loaded', () => {
  it('stores the resources and counts, per code system, those whose required binding was not checked', async () => {
    const started = runCli([
      'import',
      '--data-dir',
      path.join(dir, 'data'),
      '--ig',
      path.join(dir, 'ig'),
      '--no-progress',
      // Validated on this thread (a worker would add its own start-up); the write's validation is observed
      // whether it reuses the check's verdict (a worker's too) or validates anew (engine.ts timedContext).
      '--workers',
      '0',
      path.join(dir, 'data.ndjson'),
    ]);
    const code = await started.exited;
    expect(started.output()).toContain(
      `Not checked: CodeSystem '${SNOMED}' is not loaded on this server: the required bindings to it of 2 resources were not checked`,
    );
    expect(code, started.output()).toBe(0);
  });
});
