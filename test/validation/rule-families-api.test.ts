/**
 * `--validation-level` through the API: a family at `warn` lets a write through with its errors as warnings in the
 * OperationOutcome returned; other families still refuse; `$validate` reports the true severities.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bootApp, send, FHIR_JSON, type BootedApp } from '../support/app-harness.js';
import { familyOfIssue } from '../../src/fhir/validation/rule-families.js';
import type { OperationOutcomeIssue } from '../../src/fhir/outcome.js';

let booted: BootedApp;

beforeAll(async () => {
  booted = await bootApp(
    { logLevel: 'warn', auth: 'dev-open', validationLevel: 'bindings=warn' },
    {},
    'hie-families-',
  );
});

afterAll(async () => {
  await booted?.stop();
});

/** Observation.status is bound (required) to observation-status: `done` is not in it. */
const badStatus = { resourceType: 'Observation', status: 'done', code: { text: 'pulse' } };

const issuesOf = (body: string) => (JSON.parse(body) as { issue: OperationOutcomeIssue[] }).issue;

describe('--validation-level bindings=warn', () => {
  it('accepts a write whose only errors are of the bindings family, with them as warnings', async () => {
    const res = await send(
      booted.app,
      {
        method: 'POST',
        url: '/fhir/Observation',
        headers: { ...FHIR_JSON, prefer: 'return=OperationOutcome' },
        body: badStatus,
      },
      201,
    );
    const status = issuesOf(res.body).filter((i) => i.expression?.[0] === 'Observation.status');
    expect(status.map((i) => [i.severity, familyOfIssue(i)])).toEqual([['warning', 'bindings']]);
    expect(status[0].diagnostics).toContain("rule family 'bindings' is at warn");
  });

  it('still refuses the errors of the other families', async () => {
    const res = await send(
      booted.app,
      { method: 'POST', url: '/fhir/Observation', body: { ...badStatus, nickname: 'x' } },
      400,
    );
    const errors = issuesOf(res.body).filter((i) => i.severity === 'error');
    expect(errors.map((i) => familyOfIssue(i))).toEqual(['structure']);
  });

  it('$validate reports the true severities', async () => {
    const res = await send(
      booted.app,
      { method: 'POST', url: '/fhir/Observation/$validate', body: badStatus },
      200,
    );
    const status = issuesOf(res.body).filter((i) => i.expression?.[0] === 'Observation.status');
    expect(status.map((i) => [i.severity, familyOfIssue(i)])).toEqual([['error', 'bindings']]);
  });
});
