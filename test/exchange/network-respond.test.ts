/**
 * The responding side of a network fetch, over real HTTP between three members (test/exchange/network-harness.ts):
 * the patient's home A answers `$network-locate`, A and the custodian C answer `$network-records`, under the
 * patient's grants on the ledger, to B's service acting for its clinician. Every refusal that concerns the patient
 * (no grant, revoked, expired, other purpose, another member's actor, unknown patient) is the identical empty
 * answer; deny provisions and local denials leave exactly the allowed records.
 */
import { createPrivateKey, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { NetworkIds } from '../../src/consent/network-ids.js';
import { clientAssertion } from '../../src/exchange/network-token-client.js';
import { serviceKeyFileIn } from '../../src/exchange/patient-links-setup.js';
import { tokenUrlOf } from '../../src/exchange/members.js';
import { verifyEvidenceBundle } from '../../src/exchange/record-verifier.js';
import { CachedBatchSource } from '../../src/integrity/verification.js';
import { expectErrorCode } from '../support/error-codes.js';
import {
  demoPatient,
  networkConsent,
  observation,
  startNetwork,
  type NetworkMember,
  type TestNetwork,
} from './network-harness.js';

const V3_CONFIDENTIALITY = 'http://terminology.hl7.org/CodeSystem/v3-Confidentiality';
const EMPTY_SEARCHSET = '{"resourceType":"Bundle","type":"searchset","total":0,"entry":[]}';
const EMPTY_PARAMETERS = '{"resourceType":"Parameters"}';

let network: TestNetwork;
let npid: string;
/** The patient's token at A (its home). */
let patientToken: string;

beforeAll(async () => {
  network = await startNetwork({ networkPurposes: 'TREAT,HRESCH' });
  const { a, b, c } = network;
  const put = async (member: NetworkMember, path: string, body: unknown) => {
    const res = await member.request(member.system, 'PUT', path, body);
    expect(res.status, `${member.name} PUT ${path}: ${res.text}`).toBe(201);
  };
  await put(a, '/Patient/pa1', demoPatient('pa1'));
  await put(a, '/Observation/oa1', observation('oa1', 'Patient/pa1'));
  // A local denial: restricted (v3 Confidentiality R) is never sent.
  await put(
    a,
    '/Observation/oa2',
    observation('oa2', 'Patient/pa1', { labels: [`${V3_CONFIDENTIALITY}|R`] }),
  );
  await put(a, '/Condition/ca1', {
    resourceType: 'Condition',
    id: 'ca1',
    subject: { reference: 'Patient/pa1' },
    code: { text: 'asthma' },
  });
  await put(c, '/Patient/pc1', demoPatient('pc1'));
  await put(c, '/Observation/oc1', observation('oc1', 'Patient/pc1', { date: '2025-06-01T08:00:00Z' }));
  await put(c, '/Observation/oc2', observation('oc2', 'Patient/pc1', { date: '2019-06-01T08:00:00Z' }));
  await put(c, '/Observation/oc3', observation('oc3', 'Patient/pc1', { code: '2339-0' }));
  await put(b, '/Patient/pb1', demoPatient('pb1'));
  patientToken = await a.enrol('pat-a', 'patient', 'Patient/pa1');
  await b.enrol('dr-b', 'clinician', 'Practitioner/dr-b', b.organization);
  await b.enrol('dr-b2', 'clinician', 'Practitioner/dr-b2', b.organization);
  await c.enrol('lab-c', 'lab', undefined, c.organization);
  await network.link(a, 'pa1', c, 'pc1');
  await network.link(a, 'pa1', b, 'pb1');
  npid = (await a.app.patientLinks!.npidOf('Patient/pa1'))!;
});

afterAll(async () => {
  await network?.stop();
});

type StoredConsent = { id: string } & Record<string, unknown>;
/** Consents written by a test and not yet revoked: revoked after it, so no test sees another's grants. */
const live = new Map<string, StoredConsent>();

afterEach(async () => {
  for (const consent of [...live.values()]) await revoke(consent);
});

/** The patient writes a Consent at A naming `handle`; returns its id. */
async function grant(handle: string, provision: Record<string, unknown> = {}, purposes: string[] = []) {
  const res = await network.a.request(
    patientToken,
    'POST',
    '/Consent',
    networkConsent('Patient/pa1', handle, provision, purposes),
  );
  expect(res.status, res.text).toBe(201);
  const consent = res.body as StoredConsent;
  live.set(consent.id, consent);
  return consent;
}

async function revoke(consent: StoredConsent) {
  live.delete(consent.id);
  const res = await network.a.request(patientToken, 'PUT', `/Consent/${consent.id}`, {
    ...consent,
    status: 'inactive',
  });
  expect(res.status, res.text).toBe(200);
}

interface Call {
  /** The calling member (B by default) and its participant. */
  from?: NetworkMember;
  clientId?: string;
  purposes?: string[];
  grants?: string[];
  /** The actor's pseudonym, when not the participant's own. */
  subjectId?: string;
}

async function tokenFor(to: NetworkMember, call: Call): Promise<string> {
  const from = call.from ?? network.b;
  return network.networkToken(from, to, {
    subjectId: call.subjectId ?? network.b.pseudonymOf(call.clientId ?? 'dr-b'),
    subjectRole: 'clinician',
    purposes: call.purposes ?? ['TREAT'],
    consentReferences: call.grants ?? [],
  });
}

function parameters(values: Record<string, string | string[] | number>) {
  return {
    resourceType: 'Parameters',
    parameter: Object.entries(values).flatMap(([name, value]) =>
      (Array.isArray(value) ? value : [value]).map((v) =>
        typeof v === 'number' ? { name, valueInteger: v } : { name, valueString: v },
      ),
    ),
  };
}

async function locate(call: Call = {}, patient = npid) {
  const token = await tokenFor(network.a, call);
  return network.a.request(token, 'POST', '/$network-locate', parameters({ patient }));
}

async function records(
  at: NetworkMember,
  call: Call,
  extra: Record<string, string | string[] | number> = {},
  patient = npid,
) {
  const token = await tokenFor(at, call);
  return at.request(token, 'POST', '/$network-records', parameters({ patient, ...extra }));
}

/** `Type/id` of the records (search.mode match) of an answer. */
function recordKeys(text: string): string[] {
  const bundle = JSON.parse(text) as {
    entry: { resource: { resourceType: string; id: string }; search: { mode: string } }[];
  };
  return bundle.entry
    .filter((e) => e.search.mode === 'match')
    .map((e) => `${e.resource.resourceType}/${e.resource.id}`)
    .sort();
}

function grantsOf(body: { parameter?: { name: string; valueString?: string }[] }): string[] {
  return (body.parameter ?? []).filter((p) => p.name === 'grant').map((p) => p.valueString!);
}

describe('$network-locate and $network-records under a grant', () => {
  it('a live grant: locate names it and the custodians; A and C send what they hold, verifiable at B', async () => {
    const { a, b, c } = network;
    const consent = await grant(b.handleOf('dr-b'));
    const located = await locate();
    expect(located.status, located.text).toBe(200);
    const grants = grantsOf(located.body);
    expect(grants).toHaveLength(1);
    const custodians = (
      located.body.parameter as {
        name: string;
        part?: { name: string; valueString?: string; valueUrl?: string }[];
      }[]
    )
      .filter((p) => p.name === 'custodian')
      .map((p) => Object.fromEntries(p.part!.map((part) => [part.name, part.valueString ?? part.valueUrl])));
    expect(custodians).toEqual(
      expect.arrayContaining([
        { member: a.mspId, endpoint: a.baseUrl },
        { member: c.mspId, endpoint: c.baseUrl },
      ]),
    );

    const atA = await records(a, { grants });
    expect(atA.status, atA.text).toBe(200);
    // oa2 is labelled restricted: a local denial, whatever the grant.
    expect(recordKeys(atA.text)).toEqual(['Condition/ca1', 'Observation/oa1', 'Patient/pa1']);
    const atC = await records(c, { grants });
    expect(recordKeys(atC.text)).toEqual([
      'Observation/oc1',
      'Observation/oc2',
      'Observation/oc3',
      'Patient/pc1',
    ]);

    // B checks C's answer against its own peer: every record C's, none failed.
    const verified = await verifyEvidenceBundle(
      atC.text,
      await c.entry(),
      new CachedBatchSource(b.app.ledger!),
    );
    expect(verified.issues).toEqual([]);
    expect(verified.records).toHaveLength(4);
    for (const record of verified.records) expect(['verified', 'pending']).toContain(record.status);
    await revoke(consent);
  });

  it('the filters: _type, _since, date, code narrow what is sent; _count below the matches is refused', async () => {
    const { b, c } = network;
    const consent = await grant(b.handleOf('dr-b'));
    const grants = grantsOf((await locate()).body);
    expect(recordKeys((await records(c, { grants }, { _type: 'Observation' })).text)).toEqual([
      'Observation/oc1',
      'Observation/oc2',
      'Observation/oc3',
    ]);
    expect(recordKeys((await records(c, { grants }, { date: 'ge2025-01-01' })).text)).toEqual([
      'Observation/oc1',
      'Observation/oc3',
    ]);
    expect(recordKeys((await records(c, { grants }, { code: 'http://loinc.org|2339-0' })).text)).toEqual([
      'Observation/oc3',
    ]);
    expect(recordKeys((await records(c, { grants }, { _since: '2999-01-01T00:00:00Z' })).text)).toEqual([]);
    const tooMany = await records(c, { grants }, { _count: 2 });
    expect(tooMany.status).toBe(400);
    expectErrorCode(tooMany.text, 'network-too-many');
    const unknown = await records(c, { grants }, { subject: 'Patient/pc1' });
    expect(unknown.status).toBe(400);
    expectErrorCode(unknown.text, 'parameter-invalid');
    await revoke(consent);
  });

  it('deny provisions and classes: exactly the allowed types', async () => {
    const { a, b, c } = network;
    const consent = await grant(b.handleOf('dr-b'), {
      provision: [
        { type: 'deny', class: [{ system: 'http://hl7.org/fhir/resource-types', code: 'Observation' }] },
      ],
    });
    const grants = grantsOf((await locate()).body);
    expect(grants).toHaveLength(1);
    expect(recordKeys((await records(a, { grants })).text)).toEqual(['Condition/ca1', 'Patient/pa1']);
    expect(recordKeys((await records(c, { grants })).text)).toEqual(['Patient/pc1']);
    await revoke(consent);
    const onlyObservations = await grant(b.handleOf('dr-b'), {
      class: [{ system: 'http://hl7.org/fhir/resource-types', code: 'Observation' }],
    });
    const observationGrants = grantsOf((await locate()).body);
    expect(recordKeys((await records(a, { grants: observationGrants })).text)).toEqual(['Observation/oa1']);
    await revoke(onlyObservations);
  });
});

describe('nothing without a live grant: the identical empty answer', () => {
  it('no grant, another clinician, an unknown patient, another purpose, another member’s actor', async () => {
    const { a, b, c } = network;
    // No grant at all (the earlier ones are revoked).
    expect((await locate()).text).toBe(EMPTY_PARAMETERS);
    const consent = await grant(b.handleOf('dr-b'));
    const grants = grantsOf((await locate()).body);
    expect(grants).toHaveLength(1);
    const unknownNpid = Buffer.from(randomUUID()).toString('base64url');
    const answers = [
      // another clinician of B, relying on dr-b's grant
      await locate({ clientId: 'dr-b2' }),
      await locate({}, unknownNpid),
      // a purpose the grant does not open
      await locate({ purposes: ['HRESCH'] }),
      // C's service claiming B's clinician as its actor
      await locate({ from: c, subjectId: b.pseudonymOf('dr-b') }),
    ];
    for (const answer of answers) {
      expect(answer.status).toBe(200);
      expect(answer.text).toBe(EMPTY_PARAMETERS);
    }
    for (const custodian of [a, c]) {
      for (const answer of [
        await records(custodian, { clientId: 'dr-b2', grants }),
        await records(custodian, { grants }, {}, unknownNpid),
        await records(custodian, { purposes: ['HRESCH'], grants }),
        await records(custodian, { from: c, subjectId: b.pseudonymOf('dr-b'), grants }),
        await records(custodian, { grants: [] }),
        await records(custodian, { grants: ['not-a-grant-of-anyone'] }),
      ]) {
        expect(answer.status, answer.text).toBe(200);
        expect(answer.text).toBe(EMPTY_SEARCHSET);
        expect(answer.headers.get('content-type')).toBe('application/fhir+json; charset=utf-8');
      }
    }
    await revoke(consent);
  });

  it('revoked: refused from the next request; expired: refused', async () => {
    const { a, b, c } = network;
    const consent = await grant(b.handleOf('dr-b'));
    const grants = grantsOf((await locate()).body);
    expect(recordKeys((await records(c, { grants })).text)).not.toEqual([]);
    await revoke(consent);
    expect((await locate()).text).toBe(EMPTY_PARAMETERS);
    expect((await records(a, { grants })).text).toBe(EMPTY_SEARCHSET);
    expect((await records(c, { grants })).text).toBe(EMPTY_SEARCHSET);

    const expired = await grant(b.handleOf('dr-b'), { period: { start: '2020-01-01', end: '2020-12-31' } });
    expect((await locate()).text).toBe(EMPTY_PARAMETERS);
    // Its grant id, as the home knows it: refused at the custodians too.
    // Every grant id the home ever made for the patient (the revoked ones and the expired one): nothing opens.
    const everyId = grantIdsOf();
    expect(everyId.length).toBeGreaterThan(1);
    expect((await records(a, { grants: everyId })).text).toBe(EMPTY_SEARCHSET);
    expect((await records(c, { grants: everyId })).text).toBe(EMPTY_SEARCHSET);
    await revoke(expired);
  });
});

/** Every grant id of pa1, from the home's grant index (what a caller who kept old grant ids could present). */
function grantIdsOf(): string[] {
  const ids = new NetworkIds(join(network.a.booted.dataDir, 'identity', 'network-ids.sqlite'));
  try {
    return ids.grantIdsOf('Patient/pa1');
  } finally {
    ids.close();
  }
}

/** Polls (bounded by the test's timeout, asserting nothing about time) until `check` returns a value. */
async function eventually<T>(check: () => Promise<T | undefined>): Promise<T> {
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

describe('disclosures', () => {
  it('C records an AuditEvent and a ledger access record; the home’s access log lists C’s and A’s', async () => {
    const { a, b, c } = network;
    const disclosuresAtC = async () => {
      const res = await c.request(
        c.system,
        'GET',
        `/AuditEvent?subtype=${encodeURIComponent('https://hie-ledger.dev/fhir/CodeSystem/network-operation|network-records')}&_count=1000`,
      );
      expect(res.status, res.text).toBe(200);
      return (res.body.entry ?? []).map((e: { resource: Record<string, any> }) => e.resource);
    };
    const before = new Set((await disclosuresAtC()).map((event: { id: string }) => event.id));
    await grant(b.handleOf('dr-b'));
    const grants = grantsOf((await locate()).body);
    expect(recordKeys((await records(c, { grants }, { _type: 'Observation' })).text)).toHaveLength(3);

    // At C: the AuditEvent of this disclosure, about C's Patient, naming B and its actor, purpose and grant.
    const events = (await disclosuresAtC()).filter((event: { id: string }) => !before.has(event.id));
    expect(events).toHaveLength(1);
    expect(events[0].entity[0].description).toBe('Observation: 3 sent');
    expect(events[0].agent.map((agent: any) => agent.who.identifier.value)).toEqual([
      b.mspId,
      b.handleOf('dr-b'),
    ]);
    expect(events[0].purposeOfEvent[0].coding[0].code).toBe('TREAT');
    expect(
      events[0].entity.map((entity: any) => entity.what.reference ?? entity.what.identifier.value),
    ).toEqual(['Patient/pc1', grants[0]]);

    // At A, the patient's network-wide access log: C's disclosure and A's locate, by B's actor.
    const log = await eventually(async () => {
      const res = await a.request(patientToken, 'GET', '/Patient/pa1/$access-log');
      expect(res.status, res.text).toBe(200);
      const entries = (res.body.parameter ?? []).map(
        (p: { part: { name: string; [k: string]: unknown }[] }) =>
          Object.fromEntries(p.part.map((part) => [part.name, Object.values(part)[1]])),
      );
      // Both records are flushed to the ledger in their own time: wait for both, not the first to land. Earlier
      // tests of this network left records of A's disclosures: C's is the one awaited.
      const has = (interaction: string, custodian: string) =>
        entries.some(
          (e: Record<string, unknown>) => e.interaction === interaction && e.custodian === custodian,
        );
      return has('network-records', c.mspId) && has('network-locate', a.mspId) ? entries : undefined;
    });
    const actor = b.pseudonymOf('dr-b');
    expect(log).toEqual(
      expect.arrayContaining([
        expect.objectContaining({
          interaction: 'network-records',
          accessor: actor,
          resourceType: 'Observation',
          custodian: c.mspId,
          accessorMember: b.mspId,
          purpose: 'TREAT',
        }),
        expect.objectContaining({
          interaction: 'network-locate',
          accessor: actor,
          custodian: a.mspId,
          accessorMember: b.mspId,
        }),
      ]),
    );
  });
});

describe('network tokens and assertions', () => {
  it('a replayed client assertion is refused at the token endpoint', async () => {
    const { a, b } = network;
    const key = createPrivateKey(readFileSync(serviceKeyFileIn(b.booted.dataDir), 'utf8'));
    const assertion = await clientAssertion(
      { mspId: b.mspId, privateKey: key },
      tokenUrlOf(await a.entry()),
      {
        subjectId: b.pseudonymOf('dr-b'),
        subjectRole: 'clinician',
        purposes: ['TREAT'],
        consentReferences: [],
      },
    );
    const post = () =>
      fetch(tokenUrlOf({ fhirBaseUrl: a.baseUrl }), {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({
          grant_type: 'client_credentials',
          client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
          client_assertion: assertion,
        }).toString(),
      });
    expect((await post()).status).toBe(200);
    const replayed = await post();
    expect(replayed.status).toBe(401);
    expect(await replayed.json()).toMatchObject({ error: 'invalid_client' });
  });

  it('a participant token on a network operation is refused; parameters in the URL are refused', async () => {
    const { a, b } = network;
    const local = await a.request(a.system, 'POST', '/$network-records', parameters({ patient: npid }));
    expect(local.status).toBe(403);
    const token = await tokenFor(a, {});
    const inUrl = await a.request(
      token,
      'POST',
      `/$network-locate?patient=${npid}`,
      parameters({ patient: npid }),
    );
    expect(inUrl.status).toBe(400);
    expectErrorCode(inUrl.text, 'parameter-invalid');
    // B's own participant token at B: not a network caller.
    const atB = await b.request(b.system, 'POST', '/$network-locate', parameters({ patient: npid }));
    expect(atB.status).toBe(403);
  });
});
