/**
 * Push end to end (docs/exchange.md "Push"): three members over real HTTP (test/exchange/network-harness.ts). A
 * clinician at hospital A sends a discharge summary to a clinician of hospital B under the patient's grant; B
 * verifies every record against A's anchors and files copies with their Provenance. A record altered in A's store
 * behind its service: nothing stored at B. The same document twice: stored once. A patient not linked at B: the
 * review inbox. Callers that are not a member: refused.
 */
import Database from 'better-sqlite3';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { OpenAccess } from '../../src/fhir/interactions/access-policy.js';
import { collectEvidence } from '../../src/exchange/record-evidence.js';
import {
  assembleDocument,
  deliverBodyText,
  documentBundleText,
  documentIdentifierOf,
} from '../../src/exchange/push-document.js';
import { patientCompartments } from '../../src/fhir/search/definitions.js';
import { expectErrorCode } from '../support/error-codes.js';
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
let drA: string;

const composition = (id: string, patient: string, entries: string[]) => ({
  resourceType: 'Composition',
  id,
  status: 'final',
  type: { coding: [{ system: 'http://loinc.org', code: '18842-5' }], text: 'Discharge summary' },
  subject: { reference: patient },
  date: '2026-12-01T10:00:00Z',
  author: [{ reference: 'Practitioner/dr-a' }],
  title: 'Discharge summary',
  section: [{ title: 'Results', entry: entries.map((reference) => ({ reference })) }],
});

async function put(member: NetworkMember, resource: Record<string, unknown>): Promise<void> {
  const res = await member.request(
    member.system,
    'PUT',
    `/${resource.resourceType as string}/${resource.id as string}`,
    resource,
  );
  expect(res.status, res.text).toBeLessThan(300);
}

/** A's `$network-send` of a Composition by dr-a, to dr-b at B. */
function send(compositionId: string, recipient = network.b.handleOf('dr-b')) {
  return network.a.request(drA, 'POST', `/Composition/${compositionId}/$network-send`, {
    resourceType: 'Parameters',
    parameter: [{ name: 'recipient', valueString: recipient }],
  });
}

/** Every version B's store holds, by type. */
async function atB(): Promise<Map<string, Record<string, unknown>[]>> {
  const out = new Map<string, Record<string, unknown>[]>();
  for await (const { version } of network.b.app.store.allVersions()) {
    if (!version.json || version.resourceType === 'AuditEvent') continue;
    const list = out.get(version.resourceType) ?? [];
    list.push(JSON.parse(version.json) as Record<string, unknown>);
    out.set(version.resourceType, list);
  }
  return out;
}

const counts = async () =>
  Object.fromEntries([...(await atB()).entries()].map(([type, list]) => [type, list.length]));

beforeAll(async () => {
  network = await startNetwork();
  const { a, b } = network;
  drA = await a.enrol('dr-a', 'clinician', 'Practitioner/dr-a', a.organization);
  await b.enrol('dr-b', 'clinician', 'Practitioner/dr-b', b.organization);
  await put(a, { resourceType: 'Practitioner', id: 'dr-a', name: [{ family: 'Ahlberg' }] });
  // pa1: linked at B; pa2: never linked at B. Both granted to dr-b at B, for treatment.
  for (const patient of ['pa1', 'pa2']) {
    await put(a, demoPatient(patient));
    await put(a, {
      ...observation(`${patient}-o1`, `Patient/${patient}`),
      valueQuantity: { value: 1.5, unit: 'mmol/L' },
    });
    await put(a, observation(`${patient}-o2`, `Patient/${patient}`));
  }
  // A decimal as written: its text must reach B byte-identical.
  await a.request(
    a.system,
    'PUT',
    '/Observation/pa1-o3',
    JSON.stringify(observation('pa1-o3', 'Patient/pa1')).replace(
      /}$/,
      ',"valueQuantity":{"value":1.50,"unit":"mmol/L"}}',
    ),
  );
  await put(a, composition('c1', 'Patient/pa1', ['Observation/pa1-o1', 'Observation/pa1-o3']));
  await put(a, composition('c-tampered', 'Patient/pa1', ['Observation/pa1-o2']));
  await put(a, composition('c-unlinked', 'Patient/pa2', ['Observation/pa2-o1']));
  await put(b, demoPatient('pb1'));
  await network.link(a, 'pa1', b, 'pb1');
  for (const patient of ['pa1', 'pa2']) {
    const granted = await a.request(
      a.system,
      'POST',
      '/Consent',
      networkConsent(`Patient/${patient}`, b.handleOf('dr-b')),
    );
    expect(granted.status, granted.text).toBe(201);
  }
  await a.app.integrity!.anchorer.drain();
});

afterAll(async () => {
  await network?.stop();
});

describe('push', () => {
  it('stores a good document at B with a Provenance per copy, and the same document twice only once', async () => {
    const before = await counts();
    const sent = await send('c1');
    expect(sent.status, sent.text).toBe(200);
    expect(sent.body.parameter[0]).toEqual({ name: 'result', valueCode: 'stored' });
    const stored = await atB();
    const [copy] = stored.get('Composition')!;
    expect(copy.subject).toEqual({ reference: 'Patient/pb1' });
    const entries = (copy.section as { entry: { reference: string }[] }[])[0].entry.map((e) => e.reference);
    expect(entries).toHaveLength(2);
    const observations = stored.get('Observation')!;
    expect(entries.sort()).toEqual(observations.map((o) => `Observation/${o.id as string}`).sort());
    for (const o of observations) expect(o.subject).toEqual({ reference: 'Patient/pb1' });
    // Composition, Practitioner and two Observations copied; A's Patient is not (B has its own).
    expect(await counts()).toEqual({
      ...before,
      Composition: 1,
      Practitioner: 1,
      Observation: 2,
      Provenance: 4,
    });
    const original = (await network.a.app.store.read('Observation', 'pa1-o3'))!.json!;
    expect(original).toContain('"value":1.50');
    const texts = stored
      .get('Provenance')!
      .map((p) =>
        (p.extension as { url: string; valueBase64Binary?: string }[]).find((e) => e.valueBase64Binary),
      )
      .map((e) => Buffer.from(e!.valueBase64Binary!, 'base64').toString('utf8'));
    expect(texts).toContain(original);
    // B's copies are in B's patient's compartment: B's clinician finds them with the Patient's own $everything.
    const copied = await network.b.app.store.read('Observation', observations[0].id as string);
    expect(copied?.patients).toEqual(['Patient/pb1']);

    // B's clinician reads the filed copy (B's record: custodian B), the Patient's $everything holds it.
    const drB = await network.b.token('dr-b');
    const read = await network.b.request(drB, 'GET', `/Composition/${copy.id as string}`);
    expect(read.status, read.text).toBe(200);
    const everything = await network.b.request(drB, 'GET', '/Patient/pb1/$everything');
    expect(everything.status, everything.text).toBe(200);
    expect(everything.text).toContain(`"id":"${observations[0].id as string}"`);

    // The disclosure is in the patient's network-wide access log (a ledger access record, flushed in the background).
    const patient = await network.a.enrol('pat-pa1', 'patient', 'Patient/pa1');
    await vi.waitFor(
      async () => {
        const log = await network.a.request(patient, 'GET', '/Patient/pa1/$access-log');
        const sends = (
          log.body.parameter as { part: { name: string; valueCode?: string; valueString?: string }[] }[]
        )
          .map((p) =>
            Object.fromEntries(p.part.map((part) => [part.name, part.valueCode ?? part.valueString])),
          )
          .filter((p) => p.interaction === 'network-send');
        expect(sends).toEqual([
          expect.objectContaining({ accessor: network.b.pseudonymOf('dr-b'), outcome: 'allowed' }),
        ]);
      },
      { timeout: 20_000, interval: 100 },
    );

    // Sent again: the same answer, nothing new at B.
    const again = await send('c1');
    expect(again.status, again.text).toBe(200);
    expect(again.body).toEqual(sent.body);
    expect(await counts()).toEqual({
      ...before,
      Composition: 1,
      Practitioner: 1,
      Observation: 2,
      Provenance: 4,
    });
  });

  it('stores nothing at B when one record was altered in A’s store behind its service', async () => {
    const before = await counts();
    const db = new Database(join(network.a.booted.dataDir, 'resources.sqlite'));
    registerJsonFunctions(db); // stored JSON is deflated (store migration 7): alter its text
    db.prepare(
      `UPDATE resource_version SET json = replace(hie_decode_json(json), '8867-4', '8310-5') WHERE id = 'pa1-o2'`,
    ).run();
    db.close();
    const sent = await send('c-tampered');
    expect(sent.status, sent.text).toBe(502);
    expectErrorCode(sent.text, 'network-send-failed');
    expect(sent.text).toContain('network-deliver-unverified');
    expect(await counts()).toEqual(before);
  });

  it('puts a document of a patient not linked at B in the review inbox, creating no Patient', async () => {
    const before = await counts();
    const sent = await send('c-unlinked');
    expect(sent.status, sent.text).toBe(200);
    expect(sent.body.parameter[0]).toEqual({ name: 'result', valueCode: 'review' });
    const after = await counts();
    expect(after).toEqual({ ...before, Task: (before.Task ?? 0) + 1 });
    const task = (await atB()).get('Task')!.at(-1)!;
    expect(task).toMatchObject({
      status: 'requested',
      requester: { identifier: { value: network.a.mspId } },
      owner: { reference: 'Practitioner/dr-b' },
    });
    // B's clinicians see the inbox.
    const inbox = await network.b.request(await network.b.token('dr-b'), 'GET', '/Task?status=requested');
    expect(inbox.status, inbox.text).toBe(200);
    expect(inbox.body.entry.map((e: { resource: { id: string } }) => e.resource.id)).toContain(task.id);
    expect((await send('c-unlinked')).body).toEqual(sent.body);
    expect(await counts()).toEqual(after);
  });

  it('asks to retry while a record of the document is not yet anchored, and sends it once it is', async () => {
    const { a } = network;
    const before = await counts();
    await a.app.integrity!.anchorer.stop();
    try {
      await put(a, observation('pa1-o4', 'Patient/pa1'));
      await put(a, composition('c-fresh', 'Patient/pa1', ['Observation/pa1-o4']));
      const early = await send('c-fresh');
      expect(early.status, early.text).toBe(409);
      expectErrorCode(early.text, 'network-send-not-anchored');
      expect(early.headers.get('retry-after')).toBe('5');
      expect(await counts()).toEqual(before);
    } finally {
      a.app.integrity!.anchorer.start();
    }
    await a.app.integrity!.anchorer.drain();
    const sent = await send('c-fresh');
    expect(sent.status, sent.text).toBe(200);
  });

  it('sends nothing without a live grant for the recipient', async () => {
    const before = await counts();
    const { b } = network;
    await b.enrol('dr-b2', 'clinician', 'Practitioner/dr-b2', b.organization);
    const sent = await send('c1', b.handleOf('dr-b2'));
    expect(sent.status, sent.text).toBe(403);
    expectErrorCode(sent.text, 'network-send-refused');
    const malformed = await send('c1', 'no-handle');
    expect(malformed.status).toBe(400);
    // A participant of A itself is no recipient of a push.
    await network.a.enrol('dr-a2', 'clinician', 'Practitioner/dr-a2', network.a.organization);
    const toSelf = await send('c1', network.a.handleOf('dr-a2'));
    expect(toSelf.status, toSelf.text).toBe(403);
    expectErrorCode(toSelf.text, 'network-send-refused');
    expect(toSelf.text).toContain('a participant of this service');
    expect(await counts()).toEqual(before);
  });

  it('refuses a delivery from anyone but a member’s service, and A’s document relayed by another member', async () => {
    const { a, b, c } = network;
    const before = await counts();
    // A document as A would send it (A's store, A's evidence, A's directory URL).
    const document = await assembleDocument(
      {
        store: a.app.store,
        validator: a.app.validator,
        access: new OpenAccess(),
        log: { info() {}, warn() {}, error() {}, debug() {} },
        patientsOf: patientCompartments,
      },
      'c1',
      [a.baseUrl],
    );
    const evidence = await collectEvidence(document.versions, {
      store: a.app.store,
      journal: a.app.integrity!.journal,
    });
    const entry = await a.entry();
    const body = deliverBodyText(
      (await a.app.patientLinks!.npidOf('Patient/pa1'))!,
      { mspId: b.mspId, pseudonym: b.pseudonymOf('dr-b') },
      documentBundleText(
        document.versions,
        evidence,
        entry,
        documentIdentifierOf(`${a.baseUrl}/Composition/c1/_history/99`),
        '2026-12-07T06:00:00Z',
      ),
    );
    // No token; a participant of B; C's service relaying A's document (A's anchors are not C's).
    expect((await b.request(undefined, 'POST', '/$network-deliver', body)).status).toBe(401);
    const local = await b.request(await b.token('dr-b'), 'POST', '/$network-deliver', body);
    expect(local.status, local.text).toBe(403);
    const actor = {
      subjectId: c.pseudonymOf('sys'),
      subjectRole: 'system',
      purposes: ['TREAT'],
      consentReferences: [],
    };
    const relayed = await b.request(
      await network.networkToken(c, b, actor),
      'POST',
      '/$network-deliver',
      body,
    );
    expect(relayed.status, relayed.text).toBe(422);
    expectErrorCode(relayed.text, 'network-deliver-unverified');
    expect(await counts()).toEqual(before);
    // A itself, with a network token at B: verified and (a new identifier) stored.
    const fromA = await b.request(
      await network.networkToken(a, b, { ...actor, subjectId: a.pseudonymOf('dr-a') }),
      'POST',
      '/$network-deliver',
      body,
    );
    expect(fromA.status, fromA.text).toBe(200);
  });
});
