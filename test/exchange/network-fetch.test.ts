/**
 * A network fetch end to end over the three-member harness (real apps on loopback, one embedded chain): the
 * patient (home A) grants B's clinician; B's `$network-everything` asks A's locator, then A and C for their
 * records, verifies every one against its own peer, and answers them; revocation, a tampered record, a member
 * down; and saving what was fetched.
 */
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NETWORK_OUTCOME_SYSTEM } from '../../src/exchange/network-everything.js';
import {
  demoPatient,
  networkConsent,
  observation,
  startNetwork,
  type NetworkMember,
  type TestNetwork,
} from './network-harness.js';
import { registerJsonFunctions } from '../../src/fhir/store/json-codec.js';

let network: TestNetwork;
let patientToken: string;
let drB: string;

interface Entry {
  fullUrl?: string;
  search: { mode: string };
  resource: {
    resourceType: string;
    id?: string;
    issue?: { code: string; diagnostics: string; details?: { coding: { system: string; code: string }[] } }[];
    extension?: { url: string; extension: { url: string; valueCode?: string }[] }[];
    target?: { reference: string }[];
  };
}

beforeAll(async () => {
  network = await startNetwork();
  const { a, b, c } = network;
  const put = async (member: NetworkMember, path: string, body: unknown) => {
    const res = await member.request(member.system, 'PUT', path, body);
    expect(res.status, `${member.name} PUT ${path}: ${res.text}`).toBe(201);
  };
  await put(a, '/Patient/pa1', demoPatient('pa1'));
  await put(a, '/Observation/oa1', observation('oa1', 'Patient/pa1'));
  await put(a, '/Condition/ca1', {
    resourceType: 'Condition',
    id: 'ca1',
    subject: { reference: 'Patient/pa1' },
    code: { text: 'asthma' },
  });
  await put(c, '/Patient/pc1', demoPatient('pc1'));
  await put(c, '/Observation/oc1', observation('oc1', 'Patient/pc1', { code: '2339-0' }));
  await put(b, '/Patient/pb1', demoPatient('pb1'));
  patientToken = await a.enrol('pat-a', 'patient', 'Patient/pa1');
  drB = await b.enrol('dr-b', 'clinician', 'Practitioner/dr-b', b.organization);
  await network.link(a, 'pa1', c, 'pc1');
  await network.link(a, 'pa1', b, 'pb1');
  // Everything anchored before the fetches: the records answer `verified`, not `pending`.
  for (const member of [a, c]) await member.app.integrity!.anchorer.drain();
});

afterAll(async () => {
  await network?.stop();
});

async function grant(
  provision: Record<string, unknown> = {},
): Promise<Record<string, unknown> & { id: string }> {
  const res = await network.a.request(
    patientToken,
    'POST',
    '/Consent',
    networkConsent('Patient/pa1', network.b.handleOf('dr-b'), provision),
  );
  expect(res.status, res.text).toBe(201);
  return res.body as Record<string, unknown> & { id: string };
}

async function revoke(consent: Record<string, unknown> & { id: string }): Promise<void> {
  const res = await network.a.request(patientToken, 'PUT', `/Consent/${consent.id}`, {
    ...consent,
    status: 'inactive',
  });
  expect(res.status, res.text).toBe(200);
}

async function fetchAtB(query = ''): Promise<{ text: string; entries: Entry[]; total: number }> {
  const res = await network.b.request(drB, 'GET', `/Patient/pb1/$network-everything${query}`);
  expect(res.status, res.text).toBe(200);
  return { text: res.text, entries: res.body.entry as Entry[], total: res.body.total as number };
}

const records = (entries: Entry[]) => entries.filter((e) => e.search.mode === 'match').map((e) => e.fullUrl!);
const statuses = (entries: Entry[]) =>
  entries
    .filter((e) => e.resource.resourceType === 'Provenance')
    .map((e) => e.resource.extension![0].extension.find((p) => p.url === 'status')!.valueCode);
const outcomeOf = (entries: Entry[]) =>
  entries.find((e) => e.search.mode === 'outcome')?.resource.issue ?? [];

describe('a network fetch at B', () => {
  it("returns exactly what A and C hold under the grant, each verified, byte-identical, at the custodian's URL", async () => {
    const { a, c } = network;
    const consent = await grant();
    try {
      const { text, entries, total } = await fetchAtB();
      expect(records(entries).sort()).toEqual(
        [
          `${a.baseUrl}/Patient/pa1/_history/1`,
          `${a.baseUrl}/Observation/oa1/_history/1`,
          `${a.baseUrl}/Condition/ca1/_history/1`,
          `${c.baseUrl}/Patient/pc1/_history/1`,
          `${c.baseUrl}/Observation/oc1/_history/1`,
        ].sort(),
      );
      expect(total).toBe(5);
      expect(statuses(entries)).toEqual(['verified', 'verified', 'verified', 'verified', 'verified']);
      expect(outcomeOf(entries)).toEqual([]);
      const stored = await a.app.store.read('Observation', 'oa1');
      expect(text).toContain(`"resource":${stored!.json!},`);

      // The defined subset narrows at every custodian.
      const narrowed = await fetchAtB('?_type=Observation&code=http://loinc.org|2339-0');
      expect(records(narrowed.entries)).toEqual([`${c.baseUrl}/Observation/oc1/_history/1`]);
    } finally {
      await revoke(consent);
    }
  });

  it('with a grant of one class, returns only that class', async () => {
    const { a, c } = network;
    const consent = await grant({
      class: [{ system: 'http://hl7.org/fhir/resource-types', code: 'Condition' }],
    });
    try {
      const { entries } = await fetchAtB();
      expect(records(entries)).toEqual([`${a.baseUrl}/Condition/ca1/_history/1`]);
      expect(entries.map((e) => e.fullUrl ?? '').some((u) => u.startsWith(c.baseUrl))).toBe(false);
    } finally {
      await revoke(consent);
    }
  });

  it('after the revocation, nothing: the home lists no grant', async () => {
    const consent = await grant();
    expect((await fetchAtB()).total).toBe(5);
    await revoke(consent);
    const after = await fetchAtB();
    expect(after.total).toBe(0);
    expect(records(after.entries)).toEqual([]);
    expect(outcomeOf(after.entries)[0].details!.coding).toEqual([
      { system: NETWORK_OUTCOME_SYSTEM, code: 'network-no-grant' },
    ]);
    // Nothing at B tells that C holds anything for the patient.
    expect(after.text).not.toContain(network.c.mspId);
    expect(after.text).not.toContain(network.c.baseUrl);
  });

  it('for another purpose of use than the grant and the members allow, nothing', async () => {
    const consent = await grant();
    try {
      const { entries, total, text } = await fetchAtB('?purpose=HRESCH');
      expect(total).toBe(0);
      expect(records(entries)).toEqual([]);
      expect(text).not.toContain(network.c.baseUrl);
    } finally {
      await revoke(consent);
    }
  });

  it('leaves out a record altered in A’s store behind its service’s back, naming it; saves what verified', async () => {
    const { a } = network;
    const consent = await grant();
    try {
      const db = new Database(join(a.booted.dataDir, 'resources.sqlite'));
      registerJsonFunctions(db); // stored JSON is deflated (store migration 7): alter its text
      try {
        db.prepare(
          `UPDATE resource_version SET json = replace(hie_decode_json(json), '"asthma"', '"healthy"') WHERE id = 'ca1'`,
        ).run();
      } finally {
        db.close();
      }
      const { text, entries, total } = await fetchAtB();
      expect(records(entries)).not.toContain(`${a.baseUrl}/Condition/ca1/_history/1`);
      expect(total).toBe(4);
      expect(text).not.toContain('healthy');
      const issues = outcomeOf(entries);
      expect(issues).toHaveLength(1);
      expect(issues[0].diagnostics).toContain(`${a.baseUrl}/Condition/ca1/_history/1`);
      expect(issues[0].diagnostics).toContain(a.mspId);

      // The fetched answer saved as it came: A's and C's records as B's copies (the Patients skipped).
      const saved = await network.b.request(drB, 'POST', '/Patient/pb1/$network-save', text);
      expect(saved.status, saved.text).toBe(200);
      const names = (saved.body.parameter as { name: string }[]).map((p) => p.name);
      expect(names.filter((n) => n === 'saved')).toHaveLength(2);
      expect(names.filter((n) => n === 'skipped')).toHaveLength(2);
    } finally {
      await revoke(consent);
    }
  });

  it('a saved copy stays B’s record after the patient revokes the grant', async () => {
    const consent = await grant();
    const { text } = await fetchAtB('?_type=Observation');
    const saved = await network.b.request(drB, 'POST', '/Patient/pb1/$network-save', text);
    expect(saved.status, saved.text).toBe(200);
    const copies = (
      saved.body.parameter as {
        name: string;
        part?: { name: string; valueReference?: { reference: string } }[];
      }[]
    )
      .filter((p) => p.name === 'saved')
      .map((p) => p.part!.find((q) => q.name === 'copy')!.valueReference!.reference);
    expect(copies).toHaveLength(2);
    await revoke(consent);
    expect((await fetchAtB('?_type=Observation')).total).toBe(0);
    for (const copy of copies) expect((await network.b.request(drB, 'GET', `/${copy}`)).status).toBe(200);
  });

  it('answers within its deadline with A’s records and an outcome naming C when C is down', async () => {
    const { a, c } = network;
    const consent = await grant();
    try {
      await c.app.fastify.close();
      const { entries } = await fetchAtB();
      expect(records(entries).every((u) => u.startsWith(a.baseUrl))).toBe(true);
      expect(records(entries).length).toBeGreaterThan(0);
      const issues = outcomeOf(entries);
      expect(issues.some((i) => i.diagnostics.startsWith(`member ${c.mspId}:`))).toBe(true);
    } finally {
      await revoke(consent);
    }
  });
});
