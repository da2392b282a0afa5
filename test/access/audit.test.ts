/** The audit aggregates: every request counted once, in the aggregate of its caller, path shape and outcome. */
import { describe, expect, it } from 'vitest';
import { AuditRecorder, type RequestAudit } from '../../src/access/audit.js';
import { SqliteResourceStore } from '../../src/fhir/store/sqlite/sqlite-store.js';
import type { AccessRecordInput } from '../../src/ledger/consent.js';
import type { Caller } from '../../src/access/policy.js';

const clinician: Caller = Object.freeze({
  participant: 'ps-clin',
  role: 'clinician',
  organization: 'Organization/b',
  scopes: ['user/*.rs'],
});
const other: Caller = Object.freeze({ participant: 'ps-other', role: 'lab', scopes: ['user/*.rs'] });

function entry(caller: Caller, path: string, status = 200, patient = 'Patient/p1'): RequestAudit {
  return {
    caller,
    interaction: 'read',
    method: 'GET',
    path,
    status,
    touched: new Map([
      [
        patient,
        { allowed: status === 200 ? 1 : 0, refused: status === 200 ? 0 : 1, types: new Set(['Observation']) },
      ],
    ]),
    refused: status !== 200,
  };
}

describe('AuditRecorder', () => {
  it('counts repeated and varied requests into the right AuditEvents and access records', async () => {
    const store = new SqliteResourceStore({ file: ':memory:' });
    await store.init();
    const records: AccessRecordInput[] = [];
    const audit = new AuditRecorder({ store, recordAccess: (r) => records.push(r), flushMs: 60_000 });
    for (let i = 0; i < 5; i++) audit.record(entry(clinician, '/Observation/o1'));
    audit.record(entry(clinician, '/Observation/o2')); // another id, same shape: same aggregate
    audit.record(entry(other, '/Observation/o1')); // another caller
    audit.record(entry(clinician, '/Observation/o1', 404)); // refused
    audit.record(entry(clinician, '/Observation/o1', 200, 'Patient/p2')); // another patient
    audit.record(entry(clinician, '/Observation/o1'));
    await audit.flush();

    const events: { outcomeDesc: string; agent: { who: { identifier?: { value: string } } }[] }[] = [];
    for await (const { version } of store.allVersions()) {
      if (version.resourceType === 'AuditEvent') events.push(JSON.parse(version.json!));
    }
    const summary = events.map((e) => `${e.agent[0]!.who.identifier!.value} ${e.outcomeDesc}`).sort();
    expect(summary).toEqual([
      'ps-clin 1 x GET /Observation -> 200', // the p2 read
      'ps-clin 1 x GET /Observation -> 404',
      'ps-clin 7 x GET /Observation -> 200',
      'ps-other 1 x GET /Observation -> 200',
    ]);
    const counts = records.map((r) => `${r.accessor} ${r.patient} ${r.outcome} ${r.count}`).sort();
    expect(counts).toEqual([
      'ps-clin Patient/p1 allowed 7',
      'ps-clin Patient/p1 refused 1',
      'ps-clin Patient/p2 allowed 1',
      'ps-other Patient/p1 allowed 1',
    ]);
    await audit.close();
    await store.close();
  });
});
