/**
 * Push (src/exchange/push-document.ts, push-delivery.ts) without the HTTP hop: hospital A assembles a document
 * from its real SQLite store, anchored on a shared embedded chain, and hospital B's `$network-deliver` handler
 * verifies it against that chain and stores it in its own real store. The network token is the only edge stood
 * in for (the calling member as the token would prove it); test/exchange/push-network.test.ts runs the whole
 * exchange over HTTP.
 */
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { StoredVersion } from '../../src/fhir/store/resource-store.js';
import type { EmbeddedChain } from '../../src/ledger/embedded/index.js';
import type { Ledger } from '../../src/ledger/ledger.js';
import type { AccessPolicy, Caller } from '../../src/fhir/interactions/access-policy.js';
import type { FhirResponse } from '../../src/fhir/interactions/types.js';
import { FhirError } from '../../src/fhir/outcome.js';
import type { LedgerGrant } from '../../src/consent/consent-service.js';
import { collectEvidence, type CustodianIdentity } from '../../src/exchange/record-evidence.js';
import {
  assembleDocument,
  deliverBodyText,
  documentBundleText,
  deliveryAnswer,
  documentIdentifierOf,
  typesNotGranted,
} from '../../src/exchange/push-document.js';
import { networkDeliverHandler, type DeliveringMember } from '../../src/exchange/push-delivery.js';
import { ORIGINAL_TEXT_EXTENSION_URL } from '../../src/exchange/received-copy.js';
import { PatientLinkStore } from '../../src/exchange/patient-links.js';
import { MapMembers } from './helpers.js';
import { parseNetworkHandle } from '../../src/consent/consent-resource.js';
import type { MemberLookup } from '../../src/exchange/members.js';
import { makeOrg, openChain, tempDir, type TestOrg } from '../ledger/helpers.js';
import { openStoreMember, type StoreMember } from './store-member.js';
import { createFhirValidatorSync } from '../../src/fhir/validation/index.js';
import type { ResourceValidator } from '../../src/fhir/validation/validator.js';
import { rejectionOf } from '../support/rejection.js';

const HOSPITAL_A: CustodianIdentity = {
  mspId: 'Org1MSP',
  organization: 'Hospital A',
  fhirBaseUrl: 'https://a.example/fhir',
};
const HOSPITAL_B = { mspId: 'Org2MSP', organization: 'Hospital B', fhirBaseUrl: 'https://b.example/fhir' };
const NPID = 'bnBpZC1vZi10aGUtcGF0aWVudC0xMjM0NTY3ODkwYWI';

/** The policy of a request that carries a member's network token: it opens no read and no write itself. */
class NetworkTokenAccess implements AccessPolicy {
  readonly caller: Caller = { participant: 'network', role: 'service', scopes: [] };
  constructor(readonly member?: DeliveringMember) {}
  authorize(): void {}
  canRead(): boolean {
    return false;
  }
  canWrite(): boolean {
    return false;
  }
}

/** A clinician of A who may read everything but `hidden`. */
class ClinicianAccess implements AccessPolicy {
  readonly caller: Caller = { participant: 'ps-dr-a', role: 'clinician', scopes: [] };
  constructor(private readonly hidden: Set<string> = new Set()) {}
  authorize(): void {}
  canRead(version: StoredVersion): boolean {
    return !this.hidden.has(`${version.resourceType}/${version.id}`);
  }
  canWrite(): boolean {
    return false;
  }
}

const PATIENT =
  '{"resourceType":"Patient","id":"p1","name":[{"family":"Muller","given":["Anna"]}],"birthDate":"1970-01-01"}';
const PRACTITIONER = '{"resourceType":"Practitioner","id":"dr1","name":[{"family":"Who"}]}';
const observation = (id: string, value: string) =>
  `{"resourceType":"Observation","id":"${id}","status":"final","code":{"text":"glucose"},` +
  `"subject":{"reference":"Patient/p1"},"performer":[{"reference":"Practitioner/dr1"},{"reference":"Organization/lab9"}],` +
  `"valueQuantity":{"value":${value},"unit":"mmol/L"}}`;
const COMPOSITION =
  '{"resourceType":"Composition","id":"c1","status":"final","type":{"text":"Discharge summary"},' +
  '"subject":{"reference":"Patient/p1"},"date":"2026-12-01T10:00:00Z","author":[{"reference":"Practitioner/dr1"}],' +
  '"title":"Discharge summary","section":[{"title":"Results","entry":[{"reference":"Observation/o1"},' +
  '{"reference":"https://a.example/fhir/Observation/o2"},{"reference":"Observation/o3"}]}]}';

let cleanup: () => Promise<void>;
let chain: EmbeddedChain;
let orgs: TestOrg[];
let hospitalA: StoreMember;
let hospitalB: StoreMember;
let members: MapMembers;
let links: PatientLinkStore;

beforeEach(async () => {
  let dir: string;
  ({ dir, cleanup } = await tempDir());
  orgs = [await makeOrg(dir, 'Org1MSP'), await makeOrg(dir, 'Org2MSP'), await makeOrg(dir, 'Org3MSP')];
  chain = await openChain(dir, orgs);
  hospitalA = await openStoreMember(path.join(dir, 'a'), chain.connect(orgs[0].service), 'Organization/a');
  hospitalB = await openStoreMember(path.join(dir, 'b'), chain.connect(orgs[1].service), 'Organization/b');
  members = new MapMembers();
  members.add({ ...HOSPITAL_A, serviceCertificate: '', status: 'active' });
  members.add({ ...HOSPITAL_B, serviceCertificate: '', status: 'active' });
  members.add({
    mspId: 'Org3MSP',
    organization: 'Forger',
    fhirBaseUrl: 'https://f.example/fhir',
    serviceCertificate: '',
    status: 'active',
  });
  links = new PatientLinkStore();
  for (const json of [
    PATIENT,
    PRACTITIONER,
    observation('o1', '1.50'),
    observation('o2', '105.00'),
    COMPOSITION,
  ])
    await hospitalA.write(json);
  await hospitalA.integrity.anchorer.drain();
  await hospitalB.write('{"resourceType":"Patient","id":"b-p1","birthDate":"1970-01-01"}');
});

afterEach(async () => {
  links.close();
  await hospitalA.close();
  await hospitalB.close();
  await chain.close();
  await cleanup();
});

/** A's `$network-deliver` body for Composition/c1, as the clinician of A may see it. */
async function deliveryFromA(hidden?: Set<string>): Promise<string> {
  const document = await assembleDocument(hospitalA.context(new ClinicianAccess(hidden)), 'c1', [
    'https://a.internal/fhir',
    HOSPITAL_A.fhirBaseUrl,
  ]);
  const evidence = await collectEvidence(document.versions, {
    store: hospitalA.store,
    journal: hospitalA.integrity.journal,
  });
  const identifier = documentIdentifierOf(`${HOSPITAL_A.fhirBaseUrl}/Composition/c1/_history/1`);
  const text = documentBundleText(
    document.versions,
    evidence,
    HOSPITAL_A,
    identifier,
    '2026-12-07T06:00:00Z',
  );
  return deliverBodyText(NPID, { mspId: 'Org2MSP', pseudonym: 'ps-dr-b-0001' }, text);
}

/** B's `$network-deliver` with a network token of `member` (undefined: no network token). */
function deliverAtB(
  body: string,
  member?: DeliveringMember,
  ledger?: Ledger,
  directory: MemberLookup = members,
  validatorAtB?: ResourceValidator,
): Promise<FhirResponse> {
  const handler = networkDeliverHandler({
    members: directory,
    ledger: ledger ?? chain.connect(orgs[1].service),
    organization: 'Organization/b',
    localPatientsOf: (npid) => Promise.resolve(links.linksTo(npid).map((l) => l.localPatient)),
    participantResource: (pseudonym) => (pseudonym === 'ps-dr-b-0001' ? 'Practitioner/b-dr' : undefined),
    callerOf: (access) => (access instanceof NetworkTokenAccess ? access.member : undefined),
    now: () => Date.parse('2026-12-07T06:00:01Z'),
  });
  return handler(
    {
      interaction: 'operation',
      method: 'POST',
      operation: 'network-deliver',
      query: {},
      body,
      contentType: 'application/fhir+json',
      baseUrl: HOSPITAL_B.fhirBaseUrl,
    },
    hospitalB.context(new NetworkTokenAccess(member), validatorAtB),
  );
}

const FROM_A: DeliveringMember = { member: 'Org1MSP', actor: 'ps-dr-a' };

function linkPatient(): void {
  links.link({
    localPatient: 'Patient/b-p1',
    npid: NPID,
    homeMsp: 'Org1MSP',
    linkedAt: '2026-12-01T00:00:00Z',
  });
}

/** Everything B's store holds now, as (type, resource). */
async function storedAtB(): Promise<{ type: string; resource: Record<string, unknown> }[]> {
  const out: { type: string; resource: Record<string, unknown> }[] = [];
  for await (const { version } of hospitalB.store.allVersions())
    if (version.json) out.push({ type: version.resourceType, resource: JSON.parse(version.json) });
  return out;
}

const refusal = (promise: Promise<unknown>) => rejectionOf(promise, FhirError);

describe('the document A sends', () => {
  it('holds the Composition first, its subject, and what it references that the sender may see', async () => {
    const document = await assembleDocument(hospitalA.context(new ClinicianAccess()), 'c1', [
      HOSPITAL_A.fhirBaseUrl,
    ]);
    expect(document.patient).toBe('Patient/p1');
    // Observation/o3 does not exist and Organization/lab9 is not referenced by the Composition: left out.
    expect(document.versions.map((v) => `${v.resourceType}/${v.id}`)).toEqual([
      'Composition/c1',
      'Patient/p1',
      'Practitioner/dr1',
      'Observation/o1',
      'Observation/o2',
    ]);
    const hidden = await assembleDocument(
      hospitalA.context(new ClinicianAccess(new Set(['Observation/o2']))),
      'c1',
      [HOSPITAL_A.fhirBaseUrl],
    );
    expect(hidden.versions.map((v) => v.id)).toEqual(['c1', 'p1', 'dr1', 'o1']);
  });

  it('is the stored texts spliced in, with an identifier fixed by the Composition version', async () => {
    const body = await deliveryFromA();
    expect(body).toContain('"value":1.50');
    expect(body).toContain('"value":105.00');
    const document = (
      JSON.parse(body) as { parameter: { name: string; resource?: Record<string, unknown> }[] }
    ).parameter[2].resource!;
    expect(document).toMatchObject({ resourceType: 'Bundle', type: 'document' });
    expect(document.identifier).toEqual({
      system: 'urn:ietf:rfc:3986',
      value: documentIdentifierOf('https://a.example/fhir/Composition/c1/_history/1'),
    });
    expect(documentIdentifierOf('https://a.example/fhir/Composition/c1/_history/1')).toMatch(
      /^urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/,
    );
    expect(documentIdentifierOf('https://a.example/fhir/Composition/c1/_history/2')).not.toBe(
      documentIdentifierOf('https://a.example/fhir/Composition/c1/_history/1'),
    );
  });

  it('is refused for a Composition whose subject is not a Patient the sender may see', async () => {
    const err = await refusal(
      assembleDocument(hospitalA.context(new ClinicianAccess(new Set(['Patient/p1']))), 'c1', [
        HOSPITAL_A.fhirBaseUrl,
      ]),
    );
    expect(err.code).toBe('network-send-invalid');
    const hiddenComposition = await refusal(
      assembleDocument(hospitalA.context(new ClinicianAccess(new Set(['Composition/c1']))), 'c1', [
        HOSPITAL_A.fhirBaseUrl,
      ]),
    );
    expect(hiddenComposition.code).toBe('resource-not-found');
  });

  it('goes only where a live grant for the recipient opens every record type', () => {
    const grant = (over: Partial<LedgerGrant>): LedgerGrant => ({
      docType: 'grant',
      grantId: 'g1',
      patientTag: 'x',
      grantee: 'ps-dr-b-0001',
      granteeMsp: 'Org2MSP',
      homeMsp: 'Org1MSP',
      classes: [],
      deny: [],
      purpose: ['TREAT'],
      status: 'active',
      grantedInPerson: false,
      grantedTxId: 't',
      grantedAt: '2026-01-01T00:00:00Z',
      ...over,
    });
    const recipient = parseNetworkHandle('Org2MSP|ps-dr-b-0001')!;
    const types = ['Composition', 'Patient', 'Observation'];
    const at = Date.parse('2026-12-07T06:00:00Z');
    expect(typesNotGranted([grant({})], recipient, types, at)).toEqual({ refused: [], grantIds: ['g1'] });
    // Another MSP, another grantee, revoked, expired, a class missing, a deny, another purpose.
    expect(typesNotGranted([grant({ granteeMsp: 'Org3MSP' })], recipient, types, at).refused).toEqual(types);
    expect(typesNotGranted([grant({ grantee: 'ps-other' })], recipient, types, at).refused).toEqual(types);
    expect(typesNotGranted([grant({ status: 'revoked' })], recipient, types, at).refused).toEqual(types);
    expect(
      typesNotGranted([grant({ period: { end: '2026-12-01T00:00:00Z' } })], recipient, types, at).refused,
    ).toEqual(types);
    expect(
      typesNotGranted([grant({ classes: ['Composition', 'Patient'] })], recipient, types, at).refused,
    ).toEqual(['Observation']);
    expect(
      typesNotGranted([grant({ deny: [{ classes: ['Observation'] }] })], recipient, types, at).refused,
    ).toEqual(['Observation']);
    expect(typesNotGranted([grant({ purpose: ['HRESCH'] })], recipient, types, at).refused).toEqual(types);
    expect(parseNetworkHandle('Org2MSP')).toBeUndefined();
    expect(parseNetworkHandle('Org 2|x')).toBeUndefined();
  });
});

describe('the recipient’s answer, as the sender gives it to its caller', () => {
  const recipient = { mspId: 'Org2MSP', pseudonym: 'ps-dr-b-0001' };
  const identifier = 'urn:uuid:00000000-0000-8000-8000-000000000000';
  const answer = (status: number, body: unknown, retryAfter?: string) =>
    deliveryAnswer(
      { kind: 'answered', status, body: typeof body === 'string' ? body : JSON.stringify(body), retryAfter },
      recipient,
      identifier,
    );
  const thrown = (run: () => unknown): FhirError => {
    try {
      run();
    } catch (err) {
      if (err instanceof FhirError) return err;
      throw err;
    }
    throw new Error('no refusal');
  };

  it('passes on the result, and names the recipient’s refusal by its code, never its words', () => {
    const ok = answer(200, {
      resourceType: 'Parameters',
      parameter: [{ name: 'result', valueCode: 'review' }],
    });
    expect(ok.status).toBe(200);
    expect(ok.body).toMatchObject({
      parameter: [
        { name: 'result', valueCode: 'review' },
        { name: 'identifier', valueIdentifier: { value: identifier } },
        { name: 'recipient', valueString: 'Org2MSP|ps-dr-b-0001' },
      ],
    });
    const refused = thrown(() =>
      answer(422, {
        resourceType: 'OperationOutcome',
        issue: [
          {
            severity: 'error',
            code: 'processing',
            diagnostics: '<script>anything B says</script>',
            details: { coding: [{ system: 'x', code: 'network-deliver-unverified' }] },
          },
        ],
      }),
    );
    expect(refused.code).toBe('network-send-failed');
    expect(refused.status).toBe(502);
    expect(refused.message).toContain('network-deliver-unverified');
    expect(refused.message).not.toContain('script');
    const retry = thrown(() => answer(503, '', '30'));
    expect(retry.code).toBe('network-send-retry');
    expect(retry.headers['Retry-After']).toBe('30');
    expect(thrown(() => answer(503, '', 'soon')).headers['Retry-After']).toBe('5');
    expect(thrown(() => answer(200, 'not json')).code).toBe('network-send-failed');
    const down = thrown(() =>
      deliveryAnswer(
        {
          kind: 'unreachable',
          issue: { severity: 'error', code: 'timeout', diagnostics: 'member Org2MSP: timeout' },
        },
        recipient,
        identifier,
      ),
    );
    expect(down.code).toBe('network-send-failed');
  });
});

describe('a delivery at B', () => {
  it('verifies every record, then stores copies with references rewritten and a Provenance each', async () => {
    linkPatient();
    const answer = await deliverAtB(await deliveryFromA(), FROM_A);
    expect(answer.status).toBe(200);
    expect((answer.body as unknown as { parameter: unknown[] }).parameter[0]).toEqual({
      name: 'result',
      valueCode: 'stored',
    });

    const stored = await storedAtB();
    const of = (type: string) => stored.filter((s) => s.type === type).map((s) => s.resource);
    // A's Patient is not copied: B has its own, which the copies now name.
    expect(of('Patient').map((p) => p.id)).toEqual(['b-p1']);
    const [composition] = of('Composition');
    const [practitioner] = of('Practitioner');
    const observations = of('Observation');
    expect(observations).toHaveLength(2);
    expect(composition.subject).toEqual({ reference: 'Patient/b-p1' });
    expect(composition.author).toEqual([{ reference: `Practitioner/${practitioner.id as string}` }]);
    const sectionEntries = (composition.section as { entry: { reference: string }[] }[])[0].entry;
    expect(sectionEntries.map((e) => e.reference)).toEqual([
      `Observation/${observations[0].id as string}`,
      `Observation/${observations[1].id as string}`,
      // Not in the document: kept as A's absolute URL, never a relative one that would name B's own.
      'https://a.example/fhir/Observation/o3',
    ]);
    for (const obs of observations) {
      expect(obs.subject).toEqual({ reference: 'Patient/b-p1' });
      expect(obs.performer).toEqual([
        { reference: `Practitioner/${practitioner.id as string}` },
        { reference: 'https://a.example/fhir/Organization/lab9' },
      ]);
      expect(obs.id).not.toMatch(/^o[12]$/);
    }
    // Decimals as A wrote them.
    const texts: string[] = [];
    for await (const { version } of hospitalB.store.allVersions())
      if (version.resourceType === 'Observation') texts.push(version.json!);
    expect(texts.join()).toContain('"value":1.50');
    expect(texts.join()).toContain('"value":105.00');

    // One Provenance per copy: A's URL, the original text byte-identical, the checked evidence.
    const provenances = of('Provenance');
    expect(provenances).toHaveLength(4);
    const aTexts = new Map<string, string>();
    for (const id of ['c1', 'dr1', 'o1', 'o2']) {
      const type = id === 'c1' ? 'Composition' : id === 'dr1' ? 'Practitioner' : 'Observation';
      aTexts.set(
        `https://a.example/fhir/${type}/${id}/_history/1`,
        (await hospitalA.store.read(type, id))!.json!,
      );
    }
    for (const provenance of provenances) {
      const entity = provenance.entity as { what: { reference?: string } }[];
      const source = entity[0].what.reference!;
      const extensions = provenance.extension as {
        url: string;
        valueBase64Binary?: string;
        extension?: unknown[];
      }[];
      const original = extensions.find((e) => e.url === ORIGINAL_TEXT_EXTENSION_URL)!.valueBase64Binary!;
      expect(Buffer.from(original, 'base64').toString('utf8')).toBe(aTexts.get(source));
      expect(JSON.stringify(extensions)).toContain('{"url":"status","valueCode":"verified"}');
      expect(JSON.stringify(extensions)).toContain('{"url":"anchoredBy","valueString":"Org1MSP"}');
      expect(provenance.agent).toMatchObject([{ who: { identifier: { value: 'Org1MSP' } } }, {}]);
    }
    expect(new Set(provenances.map((p) => (p.target as { reference: string }[])[0].reference))).toEqual(
      new Set([
        `Composition/${composition.id as string}`,
        `Practitioner/${practitioner.id as string}`,
        ...observations.map((o) => `Observation/${o.id as string}`),
      ]),
    );
    // B's copies are B's records: in the patient's compartment here, custodian B, anchored by B.
    const copy = await hospitalB.store.read('Observation', observations[0].id as string);
    expect(copy?.patients).toEqual(['Patient/b-p1']);
    expect(copy?.custodian).toBe('Organization/b');
    expect((await hospitalB.store.anchorState(copy!))?.status).toBe('pending');
  });

  it('holds verified records to the network’s pinned rule-family levels, not B’s stricter ones (issue 18)', async () => {
    linkPatient();
    // Observation.status `done` is not in its required value set: a bindings error, which the network pins at warn.
    await hospitalA.write(observation('o3', '2.0').replace('"status":"final"', '"status":"done"'));
    await hospitalA.integrity.anchorer.drain();
    const body = await deliveryFromA();
    // The default levels (the network pins them too): refused.
    expect((await refusal(deliverAtB(body, FROM_A))).status).toBe(400);
    const pinnedLenient = createFhirValidatorSync({
      familyLevels: { bindings: 'error' },
      networkFamilyLevels: { bindings: 'warn' },
    });
    const answer = await deliverAtB(body, FROM_A, undefined, members, pinnedLenient);
    expect(answer.status).toBe(200);
    const statuses = (await storedAtB())
      .filter((s) => s.type === 'Observation')
      .map((s) => s.resource.status);
    expect(statuses.sort()).toEqual(['done', 'final', 'final']);
  });

  it('stores nothing when one record was altered after A anchored it', async () => {
    linkPatient();
    const body = (await deliveryFromA()).replace('"value":105.00', '"value":205.00');
    const err = await refusal(deliverAtB(body, FROM_A));
    expect(err.code).toBe('network-deliver-unverified');
    expect(err.message).toContain('https://a.example/fhir/Observation/o2/_history/1');
    expect((await storedAtB()).map((s) => s.type)).toEqual(['Patient']);
  });

  it('stores nothing when a record has no evidence, or A’s document is presented by another member', async () => {
    linkPatient();
    const body = await deliveryFromA();
    // Drop the last evidence Provenance (Observation/o2's).
    const parsed = JSON.parse(body) as { parameter: { resource?: { entry: unknown[] } }[] };
    const entries = parsed.parameter[2].resource!.entry;
    const withoutEvidence = body.replace(`,${JSON.stringify(entries[entries.length - 1])}`, '');
    expect(withoutEvidence.length).toBeLessThan(body.length);
    expect((await refusal(deliverAtB(withoutEvidence, FROM_A))).code).toBe('network-deliver-unverified');
    // Org3MSP relays A's document: A's anchors are not Org3's, its URLs not Org3's.
    const relayed = await refusal(deliverAtB(body, { member: 'Org3MSP', actor: 'ps-x' }));
    expect(relayed.code).toBe('network-deliver-unverified');
    expect((await storedAtB()).map((s) => s.type)).toEqual(['Patient']);
  });

  it('answers the same and stores nothing new when the same document comes twice', async () => {
    linkPatient();
    const body = await deliveryFromA();
    const first = await deliverAtB(body, FROM_A);
    const count = (await storedAtB()).length;
    expect(count).toBe(9); // B's Patient, 4 copies, 4 Provenances
    const second = await deliverAtB(body, FROM_A);
    expect(second).toEqual(first);
    // Even a different body under the same identifier: the first delivery stands.
    const third = await deliverAtB(body.replace('"value":1.50', '"value":1.5'), FROM_A);
    expect(third).toEqual(first);
    expect((await storedAtB()).length).toBe(count);
  });

  it('stores a document once when two deliveries of it race', async () => {
    linkPatient();
    const body = await deliveryFromA();
    const [one, two] = await Promise.all([deliverAtB(body, FROM_A), deliverAtB(body, FROM_A)]);
    expect(one).toEqual(two);
    expect((await storedAtB()).length).toBe(9);
  });

  it('files a document whose patient is linked to no local Patient in the review inbox, creating no Patient', async () => {
    const answer = await deliverAtB(await deliveryFromA(), FROM_A);
    expect((answer.body as unknown as { parameter: unknown[] }).parameter[0]).toEqual({
      name: 'result',
      valueCode: 'review',
    });
    const stored = await storedAtB();
    expect(stored.map((s) => s.type).sort()).toEqual(['Patient', 'Task']);
    const task = stored.find((s) => s.type === 'Task')!.resource;
    expect(task).toMatchObject({
      status: 'requested',
      intent: 'proposal',
      owner: { reference: 'Practitioner/b-dr' },
      requester: { identifier: { value: 'Org1MSP' } },
    });
    const attachment = (task.input as { valueAttachment: { data: string; contentType: string } }[])[0]
      .valueAttachment;
    expect(attachment.contentType).toBe('application/fhir+json');
    const held = Buffer.from(attachment.data, 'base64').toString('utf8');
    expect(held).toContain('"value":1.50');
    expect(JSON.parse(held)).toMatchObject({ resourceType: 'Bundle', type: 'document' });
    // Sent again: the same answer, still one Task.
    expect(await deliverAtB(await deliveryFromA(), FROM_A)).toEqual(answer);
    expect((await storedAtB()).filter((s) => s.type === 'Task')).toHaveLength(1);
  });

  it('refuses a caller without a member’s network token, and a revoked member', async () => {
    linkPatient();
    const body = await deliveryFromA();
    expect((await refusal(deliverAtB(body))).code).toBe('access-denied');
    members.add({ ...HOSPITAL_A, serviceCertificate: '', status: 'revoked' });
    expect((await refusal(deliverAtB(body, FROM_A))).code).toBe('access-denied');
    expect((await storedAtB()).map((s) => s.type)).toEqual(['Patient']);
  });

  it('answers 503, storing nothing, while the member directory cannot be read', async () => {
    linkPatient();
    const unreachable: MemberLookup = { member: () => Promise.reject(new Error('ledger unreachable')) };
    const err = await refusal(deliverAtB(await deliveryFromA(), FROM_A, undefined, unreachable));
    expect(err.code).toBe('ledger-unavailable');
    expect(err.status).toBe(503);
    expect((await storedAtB()).map((s) => s.type)).toEqual(['Patient']);
  });

  it('asks to retry, storing nothing, while its ledger has not seen A’s anchors', async () => {
    linkPatient();
    const { dir, cleanup: cleanOther } = await tempDir();
    const otherChain = await openChain(dir, orgs);
    try {
      const err = await refusal(
        deliverAtB(await deliveryFromA(), FROM_A, otherChain.connect(orgs[1].service)),
      );
      expect(err.code).toBe('network-deliver-pending');
      expect(err.headers['Retry-After']).toBe('5');
      expect((await storedAtB()).map((s) => s.type)).toEqual(['Patient']);
    } finally {
      await otherChain.close();
      await cleanOther();
    }
  });

  it('refuses malformed deliveries with 400, storing nothing', async () => {
    linkPatient();
    const body = await deliveryFromA();
    const cases = [
      '',
      'not json',
      '{"resourceType":"Bundle"}',
      body.replace(`"valueString":"${NPID}"`, '"valueString":"short"'),
      body.replace('"type":"document"', '"type":"collection"'),
      body.replace('"identifier":{"system":"urn:ietf:rfc:3986",', '"identifier":{'),
      // A Consent in a document would become a grant at B.
      body.replace('{"resourceType":"Practitioner"', '{"resourceType":"Consent"'),
    ];
    for (const text of cases)
      expect((await refusal(deliverAtB(text, FROM_A))).code).toBe('network-deliver-invalid');
    expect((await storedAtB()).map((s) => s.type)).toEqual(['Patient']);
  });
});
