/**
 * Accesses made under a wrong patient link are reported to both patients (issue 14, "Patient identity across
 * members"; docs/exchange.md, "Wrong links"), over the three-member harness: lab C links its Patient to network
 * patient X (home A), discloses it to B's clinician under X's grant, and the link is then corrected (relinked to Y,
 * home B) or unlinked as wrong. X's home and the person's own access log show the report; an ordinary unlink shows
 * none; the ledger's raw records do not tie X's report to the owner's.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LedgerAccessRecord } from '../../src/consent/consent-service.js';
import { openDetails, patientTag } from '../../src/consent/network-ids.js';
import {
  demoPatient,
  networkConsent,
  observation,
  startNetwork,
  type NetworkMember,
  type TestNetwork,
} from './network-harness.js';

const WRONG_LINK_SUBTYPE = 'https://hie-ledger.dev/fhir/CodeSystem/network-operation|wrong-link';

let network: TestNetwork;
/** Patient tokens: X (pa1), pa2 and pa3 at A; Y (pby) at B; pc3 at C. */
const tokens: Record<string, string> = {};

beforeAll(async () => {
  network = await startNetwork();
  const { a, b, c } = network;
  const put = async (member: NetworkMember, path: string, body: unknown) => {
    const res = await member.request(member.system, 'PUT', path, body);
    expect(res.status, `${member.name} PUT ${path}: ${res.text}`).toBe(201);
  };
  // The same demographics everywhere: the wrong link scored as a match (twins, a mix-up at the desk).
  for (const id of ['pa1', 'pa2', 'pa3']) await put(a, `/Patient/${id}`, demoPatient(id));
  await put(b, '/Patient/pby', demoPatient('pby'));
  for (const id of ['pc1', 'pc2', 'pc3']) {
    await put(c, `/Patient/${id}`, demoPatient(id));
    await put(c, `/Observation/o-${id}`, observation(`o-${id}`, `Patient/${id}`));
  }
  for (const id of ['pa1', 'pa2', 'pa3']) tokens[id] = await a.enrol(`pat-${id}`, 'patient', `Patient/${id}`);
  tokens.pby = await b.enrol('pat-pby', 'patient', 'Patient/pby');
  tokens.pc3 = await c.enrol('pat-pc3', 'patient', 'Patient/pc3');
  await b.enrol('dr-b', 'clinician', 'Practitioner/dr-b', b.organization);
});

afterAll(async () => {
  await network?.stop();
});

function parameters(values: Record<string, string | string[]>) {
  return {
    resourceType: 'Parameters',
    parameter: Object.entries(values).flatMap(([name, value]) =>
      (Array.isArray(value) ? value : [value]).map((v) => ({ name, valueString: v })),
    ),
  };
}

/**
 * The home patient `homePatient` at A grants B's dr-b; B's service, for dr-b, locates at A and fetches C's records
 * of the network patient: C discloses its linked Patient's records. Returns how many records C sent.
 */
async function discloseUnderLink(homePatient: string): Promise<number> {
  const { a, b, c } = network;
  const consent = await a.request(
    tokens[homePatient],
    'POST',
    '/Consent',
    networkConsent(`Patient/${homePatient}`, b.handleOf('dr-b')),
  );
  expect(consent.status, consent.text).toBe(201);
  const npid = (await a.app.patientLinks!.npidOf(`Patient/${homePatient}`))!;
  const actor = (grants: string[]) => ({
    subjectId: b.pseudonymOf('dr-b'),
    subjectRole: 'clinician',
    purposes: ['TREAT'],
    consentReferences: grants,
  });
  const located = await a.request(
    await network.networkToken(b, a, actor([])),
    'POST',
    '/$network-locate',
    parameters({ patient: npid }),
  );
  expect(located.status, located.text).toBe(200);
  const grants = (located.body.parameter as { name: string; valueString?: string }[])
    .filter((p) => p.name === 'grant')
    .map((p) => p.valueString!);
  expect(grants).toHaveLength(1);
  const sent = await c.request(
    await network.networkToken(b, c, actor(grants)),
    'POST',
    '/$network-records',
    parameters({ patient: npid }),
  );
  expect(sent.status, sent.text).toBe(200);
  const count = (sent.body.entry as { search: { mode: string } }[]).filter(
    (e) => e.search.mode === 'match',
  ).length;
  expect(count).toBe(2);
  return count;
}

type LogEntry = Record<string, any>;

/** A patient's `$access-log`, each entry's parts as an object (`wrongLink` as an object of its parts). */
async function accessLog(member: NetworkMember, patient: string, token: string): Promise<LogEntry[]> {
  const res = await member.request(token, 'GET', `/Patient/${patient}/$access-log`);
  expect(res.status, res.text).toBe(200);
  const valueOf = (part: Record<string, unknown>): unknown =>
    Array.isArray(part.part)
      ? Object.fromEntries((part.part as Record<string, unknown>[]).map((p) => [p.name, valueOf(p)]))
      : Object.entries(part).find(([key]) => key.startsWith('value'))?.[1];
  return (res.body.parameter ?? []).map((p: Record<string, unknown>) => valueOf(p));
}

/** Polls (bounded by the test's timeout, asserting nothing about time) until `check` returns a value. */
async function eventually<T>(check: () => Promise<T | undefined>): Promise<T> {
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** Waits until the access log has an entry of `interaction`; returns the log. */
function logWith(member: NetworkMember, patient: string, interaction: string): Promise<LogEntry[]> {
  return eventually(async () => {
    const log = await accessLog(member, patient, tokens[patient]);
    return log.some((entry) => entry.interaction === interaction) ? log : undefined;
  });
}

async function wrongLinkEventsAtC(): Promise<Record<string, any>[]> {
  const { c } = network;
  const res = await c.request(
    c.system,
    'GET',
    `/AuditEvent?subtype=${encodeURIComponent(WRONG_LINK_SUBTYPE)}&_count=100`,
  );
  expect(res.status, res.text).toBe(200);
  return (res.body.entry ?? []).map((e: { resource: Record<string, any> }) => e.resource);
}

async function ledgerAccessRecords(): Promise<LedgerAccessRecord[]> {
  const page = JSON.parse(await network.c.app.ledger!.evaluate('consent:ListAccess', ['', '1000'])) as {
    records: LedgerAccessRecord[];
  };
  return page.records;
}

/** The ledger records tagged with `npid`, their details opened. */
async function recordsOf(npid: string) {
  return (await ledgerAccessRecords())
    .filter((record) => record.patientTag === patientTag(npid, 'access', record.recordId))
    .map((record) => ({
      record,
      details: openDetails(npid, record.recordId, record.sealed) as Record<string, any>,
    }));
}

describe('a disclosure under a wrong link, then a correction', () => {
  let x: string;
  let y: string;

  it('X’s home and Y’s home both show the report; C keeps an AuditEvent naming its Patient', async () => {
    const { a, b, c } = network;
    await network.link(a, 'pa1', c, 'pc1');
    x = (await a.app.patientLinks!.npidOf('Patient/pa1'))!;
    const records = await discloseUnderLink('pa1');
    const disclosedAt = (await logWith(a, 'pa1', 'network-records')).find(
      (entry) => entry.interaction === 'network-records',
    )!;

    // The correction: C's Patient is Y, whose home is B.
    await network.link(b, 'pby', c, 'pc1');
    y = (await b.app.patientLinks!.npidOf('Patient/pby'))!;
    expect(await c.app.patientLinks!.npidOf('Patient/pc1')).toBe(y);

    const actor = b.pseudonymOf('dr-b');
    // X's home: what X's grantee was sent under X's id was not X's.
    const xLog = await logWith(a, 'pa1', 'wrong-link');
    const xReport = xLog.filter((entry) => entry.interaction === 'wrong-link');
    expect(xReport).toHaveLength(1);
    expect(xReport[0]).toMatchObject({
      accessor: actor,
      custodian: c.mspId,
      accessorMember: b.mspId,
      purpose: 'TREAT',
      count: 1,
      at: disclosedAt.at,
      wrongLink: { side: 'not-this-patient', records },
    });
    expect(xReport[0].wrongLink.linkedAt <= disclosedAt.at).toBe(true);
    expect(xReport[0].wrongLink.endedAt >= disclosedAt.at).toBe(true);

    // Y's home: Y's records went to another patient's grantee (which member, purpose, when, how many).
    const yLog = await logWith(b, 'pby', 'wrong-link');
    const yReport = yLog.filter((entry) => entry.interaction === 'wrong-link');
    expect(yReport).toHaveLength(1);
    expect(yReport[0]).toMatchObject({
      accessor: actor,
      custodian: c.mspId,
      accessorMember: b.mspId,
      purpose: 'TREAT',
      count: 1,
      at: disclosedAt.at,
      wrongLink: {
        side: 'this-patients-records',
        records,
        linkedAt: xReport[0].wrongLink.linkedAt,
        endedAt: xReport[0].wrongLink.endedAt,
      },
    });

    // At C: one AuditEvent in pc1's compartment, naming B, the purpose, the period, and the disclosure's event.
    const events = (await wrongLinkEventsAtC()).filter(
      (event) => event.entity[0].what.reference === 'Patient/pc1',
    );
    expect(events).toHaveLength(1);
    const [event] = events;
    expect(event.period).toEqual({ start: xReport[0].wrongLink.linkedAt, end: xReport[0].wrongLink.endedAt });
    expect(event.purposeOfEvent[0].coding[0].code).toBe('TREAT');
    expect(event.agent.map((agent: any) => agent.who.identifier?.value ?? agent.who.reference)).toEqual(
      expect.arrayContaining([b.mspId, b.handleOf('dr-b')]),
    );
    const disclosureRef = event.entity[1].what.reference as string;
    expect(disclosureRef).toMatch(/^AuditEvent\//);
    const disclosure = await c.request(c.system, 'GET', `/${disclosureRef}`);
    expect(disclosure.status, disclosure.text).toBe(200);
    expect(disclosure.body.subtype[0].code).toBe('network-records');
    // C's administrators' view is C's system's; nobody at A or B sees C's AuditEvent (it is C's record).
  });

  it('the ledger read raw: X’s report and Y’s share no tag, id, seal, grant tag nor transaction', async () => {
    const xRecords = (await recordsOf(x)).filter((r) => r.details.interaction === 'wrong-link');
    const yRecords = (await recordsOf(y)).filter((r) => r.details.interaction === 'wrong-link');
    expect(xRecords).toHaveLength(1);
    expect(yRecords).toHaveLength(1);
    const xRecord = xRecords[0].record as unknown as Record<string, unknown>;
    const yRecord = yRecords[0].record as unknown as Record<string, unknown>;
    // Each opens only with its own npid.
    expect(yRecord.patientTag).not.toBe(patientTag(x, 'access', String(yRecord.recordId)));
    expect(xRecord.patientTag).not.toBe(patientTag(y, 'access', String(xRecord.recordId)));
    expect(openDetails(x, String(yRecord.recordId), String(yRecord.sealed))).toBeUndefined();
    // No grant tag; nothing but the public fields (the members, the purpose, the kind) in common.
    expect(xRecord.grantTag).toBeUndefined();
    expect(yRecord.grantTag).toBeUndefined();
    const PUBLIC = new Set(['docType', 'custodianMsp', 'accessorMsp', 'purpose']);
    for (const [key, value] of Object.entries(xRecord)) {
      if (PUBLIC.has(key)) continue;
      expect(Object.values(yRecord), key).not.toContain(value);
    }
    expect(xRecord.txId).not.toBe(yRecord.txId);
    // Nor does Y's report carry anything of X's own records (the disclosure's record under X's tag).
    const xDisclosure = (await recordsOf(x)).find((r) => r.details.interaction === 'network-records')!;
    for (const [key, value] of Object.entries(xDisclosure.record)) {
      if (PUBLIC.has(key) || key === 'time') continue;
      expect(Object.values(yRecord), key).not.toContain(value);
    }
  });
});

describe('unlinking', () => {
  it('an ordinary unlink (the patient leaving) reports nothing', async () => {
    const { a, c } = network;
    await network.link(a, 'pa2', c, 'pc2');
    await discloseUnderLink('pa2');
    await logWith(a, 'pa2', 'network-records');
    const unlinked = await c.request(c.system, 'POST', '/Patient/pc2/$network-unlink', {
      resourceType: 'Parameters',
    });
    expect(unlinked.status, unlinked.text).toBe(200);
    expect(unlinked.body.parameter.some((p: { name: string }) => p.name === 'wrong')).toBe(false);
    // A report is made before the unlink answers (its ledger records sent): none here.
    expect((await accessLog(a, 'pa2', tokens.pa2)).map((entry) => entry.interaction)).not.toContain(
      'wrong-link',
    );
    expect(
      (await wrongLinkEventsAtC()).filter((event) => event.entity[0].what.reference === 'Patient/pc2'),
    ).toEqual([]);
  });

  it('an unlink as wrong: X’s home and the Patient’s own access log at C show the report', async () => {
    const { a, b, c } = network;
    await network.link(a, 'pa3', c, 'pc3');
    const records = await discloseUnderLink('pa3');
    const unlinked = await c.request(c.system, 'POST', '/Patient/pc3/$network-unlink', {
      resourceType: 'Parameters',
      parameter: [{ name: 'wrong', valueBoolean: true }],
    });
    expect(unlinked.status, unlinked.text).toBe(200);
    expect(unlinked.body.parameter).toContainEqual({ name: 'wrong', valueBoolean: true });
    const xReport = (await logWith(a, 'pa3', 'wrong-link')).filter((e) => e.interaction === 'wrong-link');
    expect(xReport).toEqual([
      expect.objectContaining({
        accessorMember: b.mspId,
        wrongLink: expect.objectContaining({ side: 'not-this-patient', records }),
      }),
    ]);
    // The person of pc3 has no other network id: C's own log of pc3 shows it.
    const ownReport = (await logWith(c, 'pc3', 'wrong-link')).filter((e) => e.interaction === 'wrong-link');
    expect(ownReport).toEqual([
      expect.objectContaining({
        custodian: c.mspId,
        accessorMember: b.mspId,
        purpose: 'TREAT',
        wrongLink: expect.objectContaining({ side: 'this-patients-records', records }),
      }),
    ]);
    // The patient of pc3 reads the AuditEvent at C.
    const events = await c.request(
      tokens.pc3,
      'GET',
      `/AuditEvent?subtype=${encodeURIComponent(WRONG_LINK_SUBTYPE)}`,
    );
    expect(events.status, events.text).toBe(200);
    expect(events.body.entry.map((e: any) => e.resource.entity[0].what.reference)).toEqual(['Patient/pc3']);
  });

  it('a bad wrong flag is a 400, and the link stays', async () => {
    const { c } = network;
    const res = await c.request(c.system, 'POST', '/Patient/pc1/$network-unlink', {
      resourceType: 'Parameters',
      parameter: [{ name: 'wrong', valueString: 'yes' }],
    });
    expect(res.status, res.text).toBe(400);
    expect(await c.app.patientLinks!.npidOf('Patient/pc1')).toBeDefined();
  });
});
