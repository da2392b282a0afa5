/** The audit aggregates: every request counted once, in the aggregate of its caller, path shape and outcome. */
import { describe, expect, it } from 'vitest';
import { AuditRecorder, type RequestAudit, type TouchCounts } from '../../src/access/access-audit.js';
import { SqliteResourceStore } from '../../src/fhir/store/sqlite/sqlite-store.js';
import type { AccessRecordInput } from '../../src/consent/consent-service.js';
import type { Caller } from '../../src/fhir/interactions/access-policy.js';
import type { StoredVersion } from '../../src/fhir/store/resource-store.js';

const clinician: Caller = Object.freeze({
  participant: 'ps-clin',
  role: 'clinician',
  organization: 'Organization/b',
  scopes: ['user/*.rs'],
});
const other: Caller = Object.freeze({ participant: 'ps-other', role: 'lab', scopes: ['user/*.rs'] });

/** A request's decisions on `allowed` shown and `refused` withheld Observations of one patient and custodian. */
const counts = (allowed: number, refused: number): TouchCounts => ({
  allowed,
  refused,
  types: new Set(['Observation']),
  shown: new Set(allowed > 0 ? ['Observation'] : []),
});

function entry(
  caller: Caller,
  path: string,
  status = 200,
  patient = 'Patient/p1',
  custodian = 'Organization/a',
): RequestAudit {
  return {
    caller,
    interaction: 'read',
    method: 'GET',
    path,
    status,
    touched: new Map([[patient, new Map([[custodian, status === 200 ? counts(1, 0) : counts(0, 1)]])]]),
    refused: status !== 200,
  };
}

interface StoredEvent {
  version: StoredVersion;
  event: {
    outcomeDesc: string;
    period: { start: string; end: string };
    agent: { who: { identifier?: { value: string }; reference?: string } }[];
    entity?: { what: { reference: string }; description: string }[];
  };
}

async function storedEvents(store: SqliteResourceStore): Promise<StoredEvent[]> {
  const events: StoredEvent[] = [];
  for await (const { version } of store.allVersions()) {
    if (version.resourceType === 'AuditEvent') events.push({ version, event: JSON.parse(version.json!) });
  }
  return events;
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

    const events = (await storedEvents(store)).map((e) => e.event);
    const summary = events.map((e) => `${e.agent[0]!.who.identifier!.value} ${e.outcomeDesc}`).sort();
    expect(summary).toEqual([
      'ps-clin 1 x GET /Observation -> 200', // the p2 read
      'ps-clin 1 x GET /Observation -> 404',
      'ps-clin 7 x GET /Observation -> 200',
      'ps-other 1 x GET /Observation -> 200',
    ]);
    // The refused read is in the AuditEvents only: the ledger, which every member reads, records disclosures.
    const ledger = records.map((r) => `${r.accessor} ${r.patient} ${r.outcome} ${r.count}`).sort();
    expect(ledger).toEqual([
      'ps-clin Patient/p1 allowed 7',
      'ps-clin Patient/p2 allowed 1',
      'ps-other Patient/p1 allowed 1',
    ]);
    await audit.close();
    await store.close();
  });

  it('writes one AuditEvent per patient and custodian, each naming one patient, stored with that custodian', async () => {
    const store = new SqliteResourceStore({ file: ':memory:' });
    await store.init();
    const audit = new AuditRecorder({ store, flushMs: 60_000 });
    // One search that touched p1's records of two custodians and p2's record of one.
    audit.record({
      caller: clinician,
      interaction: 'search-type',
      method: 'GET',
      path: '/Observation',
      status: 200,
      touched: new Map([
        [
          'Patient/p1',
          new Map([
            ['Organization/a', counts(2, 0)],
            ['Organization/b', counts(0, 1)],
          ]),
        ],
        ['Patient/p2', new Map([['Organization/a', counts(0, 3)]])],
      ]),
      refused: false,
    });
    await audit.flush();
    const events = await storedEvents(store);
    const shape = events
      .map(
        ({ version, event }) =>
          `${version.patients?.join(',')} ${version.custodian} ${event.entity!.map((e) => e.what.reference).join(',')} ${event.entity![0]!.description}`,
      )
      .sort();
    expect(shape).toEqual([
      'Patient/p1 Organization/a Patient/p1 Observation: 2 shown, 0 withheld',
      'Patient/p1 Organization/b Patient/p1 Observation: 0 shown, 1 withheld',
      'Patient/p2 Organization/a Patient/p2 Observation: 0 shown, 3 withheld',
    ]);
    await audit.close();
    await store.close();
  });

  it("what a caller did with other custodians' records changes nothing in the events of a custodian's records", async () => {
    // The same requests of a clinician of b, but the second one touched a record of a (hidden from it), or nothing
    // (an absent id): b's events must be the same either way.
    const eventsOfB = async (secondTouchesHidden: boolean): Promise<string[]> => {
      const store = new SqliteResourceStore({ file: ':memory:' });
      await store.init();
      const audit = new AuditRecorder({ store, flushMs: 60_000 });
      audit.record({
        ...entry(clinician, '/Observation/own', 404, 'Patient/p1', 'Organization/b'),
        at: 1000,
      });
      const second = entry(clinician, '/Observation/x', 404, 'Patient/p1', 'Organization/a');
      if (!secondTouchesHidden) second.touched = new Map();
      audit.record({ ...second, at: 2000 });
      await audit.flush();
      const shown = (await storedEvents(store))
        .filter(({ version }) => version.custodian === 'Organization/b')
        .map(({ event }) => `${event.outcomeDesc} ${event.period.start} ${event.period.end}`);
      await audit.close();
      await store.close();
      return shown;
    };
    const withHidden = await eventsOfB(true);
    expect(withHidden).toEqual([
      '1 x GET /Observation -> 404 1970-01-01T00:00:01.000Z 1970-01-01T00:00:01.000Z',
    ]);
    expect(await eventsOfB(false)).toEqual(withHidden);
  });

  it('a patient caller is named by reference only in the events about themselves', async () => {
    const store = new SqliteResourceStore({ file: ':memory:' });
    await store.init();
    const audit = new AuditRecorder({ store, flushMs: 60_000 });
    const patient: Caller = Object.freeze({
      participant: 'ps-pat1',
      role: 'patient',
      fhirUser: 'Patient/p1',
      scopes: ['patient/*.rs'],
    });
    const touched = new Map([
      ['Patient/p1', new Map([['Organization/a', counts(1, 0)]])],
      ['Patient/p2', new Map([['Organization/a', counts(0, 1)]])],
    ]);
    audit.record({
      caller: patient,
      interaction: 'search-type',
      method: 'GET',
      path: '/Observation',
      status: 200,
      touched,
      refused: false,
    });
    await audit.flush();
    const events = await storedEvents(store);
    const about = (p: string) => events.find(({ version }) => version.patients?.[0] === p)!.event;
    expect(about('Patient/p1').agent[0]!.who.reference).toBe('Patient/p1');
    expect(JSON.stringify(about('Patient/p2'))).not.toContain('Patient/p1');
    expect(about('Patient/p2').agent[0]!.who.identifier!.value).toBe('ps-pat1');
    await audit.close();
    await store.close();
  });

  it('the ledger records of a patient are the same whether a request also touched records hidden from the caller', async () => {
    const ledgerOf = async (touchesHidden: boolean): Promise<AccessRecordInput[]> => {
      const store = new SqliteResourceStore({ file: ':memory:' });
      await store.init();
      const records: AccessRecordInput[] = [];
      const audit = new AuditRecorder({ store, recordAccess: (r) => records.push(r), flushMs: 60_000 });
      // A search showing hosp-b's Observation of p1 and, with touchesHidden, withholding hosp-a's Condition of p1;
      // then a read of a hidden record of p1 (or of an absent id).
      const shownAndWithheld = new Map([['Organization/b', counts(1, 0)]]);
      if (touchesHidden)
        shownAndWithheld.set('Organization/a', { ...counts(0, 1), types: new Set(['Condition']) });
      audit.record({
        caller: clinician,
        interaction: 'search-type',
        method: 'GET',
        path: '/Observation',
        status: 200,
        touched: new Map([['Patient/p1', shownAndWithheld]]),
        refused: false,
        at: 1000,
      });
      const hiddenRead = entry(clinician, '/Observation/x', 404, 'Patient/p1', 'Organization/a');
      if (!touchesHidden) hiddenRead.touched = new Map();
      audit.record({ ...hiddenRead, at: 2000 });
      await audit.flush();
      await audit.close();
      await store.close();
      return records;
    };
    const withHidden = await ledgerOf(true);
    expect(
      withHidden.map((r) => `${r.patient} ${r.resourceType} ${r.outcome} ${r.count} ${r.from} ${r.at}`),
    ).toEqual(['Patient/p1 Observation allowed 1 1970-01-01T00:00:01.000Z 1970-01-01T00:00:01.000Z']);
    expect(await ledgerOf(false)).toEqual(withHidden);
  });
});
