/**
 * A custodian's records with their integrity evidence in one Bundle (src/exchange/record-evidence.ts), checked by
 * the receiver (src/exchange/record-verifier.ts) against a shared embedded chain: real SQLite stores, real
 * anchoring, three organisations on one channel (A the custodian, F a member that forges, B the receiver).
 */
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { StoredVersion } from '../../src/fhir/store/resource-store.js';
import type { EmbeddedChain } from '../../src/ledger/embedded/index.js';
import type { Ledger } from '../../src/ledger/ledger.js';
import { CachedBatchSource } from '../../src/integrity/verification.js';
import {
  EVIDENCE_EXTENSION_URL,
  collectEvidence,
  recordEvidenceBundle,
  type CustodianIdentity,
} from '../../src/exchange/record-evidence.js';
import {
  parseEvidence,
  readWrittenProvenance,
  receivedBundleText,
  scanBundleText,
  verifyEvidenceBundle,
  type VerifiedAnswer,
} from '../../src/exchange/record-verifier.js';
import { makeOrg, openChain, tempDir, type TestOrg } from '../ledger/helpers.js';
import { openStoreMember, type StoreMember } from './store-member.js';
import { FaultyLedger } from '../integrity/helpers.js';
import { registerJsonFunctions } from '../../src/fhir/store/json-codec.js';

const HOSPITAL_A: CustodianIdentity = {
  mspId: 'Org1MSP',
  organization: 'Hospital A',
  fhirBaseUrl: 'https://a.example/fhir',
};

const observation = (id: string, value: string) =>
  `{"resourceType":"Observation","id":"${id}","status":"final","code":{"text":"glucose"},` +
  `"subject":{"reference":"Patient/p1"},"valueQuantity":{"value":${value},"unit":"mmol/L"}}`;

let cleanup: () => Promise<void>;
let chain: EmbeddedChain;
let orgs: TestOrg[];
let hospitalA: StoreMember;
let receiverLedger: Ledger;

beforeEach(async () => {
  let dir: string;
  ({ dir, cleanup } = await tempDir());
  orgs = [await makeOrg(dir, 'Org1MSP'), await makeOrg(dir, 'Org2MSP'), await makeOrg(dir, 'Org3MSP')];
  chain = await openChain(dir, orgs);
  hospitalA = await openStoreMember(path.join(dir, 'a'), chain.connect(orgs[0].service), 'Organization/a');
  receiverLedger = chain.connect(orgs[2].service);
});

afterEach(async () => {
  await hospitalA.close();
  await chain.close();
  await cleanup();
});

/** A's answer for these versions (as read from its store now), verified at B. */
async function fetchAndVerify(versions: StoredVersion[], member = hospitalA): Promise<VerifiedAnswer> {
  const current = await Promise.all(
    versions.map((v) => member.store.vread(v.resourceType, v.id, v.versionId)),
  );
  const text = await recordEvidenceBundle(
    current.map((v) => v!),
    { store: member.store, journal: member.integrity.journal },
    HOSPITAL_A,
  );
  return verifyEvidenceBundle(text, HOSPITAL_A, new CachedBatchSource(receiverLedger));
}

describe('record evidence from the custodian', () => {
  it('sends every record byte-identical with its evidence, and the receiver verifies them all', async () => {
    const written = [
      await hospitalA.write(observation('o1', '1.50')),
      await hospitalA.write(observation('o2', '1e2')),
      await hospitalA.write(observation('o3', '105.00')),
    ];
    await hospitalA.integrity.anchorer.drain();
    const text = await recordEvidenceBundle(
      written,
      { store: hospitalA.store, journal: hospitalA.integrity.journal },
      HOSPITAL_A,
    );
    const sent = JSON.parse(text) as {
      type: string;
      total: number;
      entry: { fullUrl?: string; search: { mode: string }; resource: Record<string, unknown> }[];
    };
    expect(sent.type).toBe('searchset');
    expect(sent.total).toBe(3);
    // Each record followed by its Provenance, then the batch's proof nodes (sent once, not in each Provenance).
    expect(sent.entry.map((e) => e.search.mode)).toEqual([
      'match',
      'include',
      'match',
      'include',
      'match',
      'include',
      'include',
    ]);
    expect(sent.entry[6].resource.resourceType).toBe('Parameters');
    expect(sent.entry[0].fullUrl).toBe('https://a.example/fhir/Observation/o1/_history/1');
    // The stored text, spliced in as written.
    for (const version of written) expect(text).toContain(`"resource":${version.json!},`);
    expect(written[0].json).toContain('"value":1.50');
    expect(written[1].json).toContain('"value":1e2');
    const provenance = sent.entry[1].resource;
    expect(provenance).toMatchObject({
      resourceType: 'Provenance',
      target: [{ reference: 'https://a.example/fhir/Observation/o1/_history/1' }],
      agent: [{ who: { identifier: { value: 'Org1MSP' }, display: 'Hospital A' } }],
      extension: [{ url: EVIDENCE_EXTENSION_URL }],
    });

    const answer = await verifyEvidenceBundle(text, HOSPITAL_A, new CachedBatchSource(receiverLedger));
    expect(answer.records.map((r) => [r.fullUrl, r.status, r.anchoredBy])).toEqual([
      ['https://a.example/fhir/Observation/o1/_history/1', 'verified', 'Org1MSP'],
      ['https://a.example/fhir/Observation/o2/_history/1', 'verified', 'Org1MSP'],
      ['https://a.example/fhir/Observation/o3/_history/1', 'verified', 'Org1MSP'],
    ]);
    expect(answer.issues).toEqual([]);
    const atB = receivedBundleText([answer]);
    for (const version of written) expect(atB).toContain(`"resource":${version.json!},`);
    const received = JSON.parse(atB) as { total: number; entry: { resource: Record<string, unknown> }[] };
    expect(received.total).toBe(3);
    expect(JSON.stringify(received.entry[1].resource)).toContain('{"url":"status","valueCode":"verified"}');
  });

  it('reads a Provenance in the form custodians write it as a full parse reads it, and any other form by the full parse', async () => {
    const written = [
      await hospitalA.write(observation('o1', '1.50')),
      await hospitalA.write(observation('o2', '2.0')),
    ];
    await hospitalA.integrity.anchorer.drain();
    const text = await recordEvidenceBundle(
      written,
      { store: hospitalA.store, journal: hospitalA.integrity.journal },
      HOSPITAL_A,
    );
    const { entries } = scanBundleText(text, { maxDepth: 100, maxEntries: 100, members: [] });
    const provenances = entries
      .map((e) => e.resourceText!)
      .filter((t) => t.startsWith('{"resourceType":"Provenance"'));
    expect(provenances).toHaveLength(2);
    const fullParse = (t: string) => {
      const provenance = JSON.parse(t) as { target: { reference: string }[] };
      return { target: provenance.target[0].reference, read: parseEvidence(provenance) };
    };
    for (const provenance of provenances) {
      expect(readWrittenProvenance(provenance)).toEqual(fullParse(provenance));
      expect(fullParse(provenance).read).toHaveProperty('evidence.status', 'anchored');
    }
    // Other forms of the same Provenance (whitespace, an escape, members in another order) are not read by the
    // pattern: the full parse reads them, and the records verify all the same.
    const [first] = provenances;
    const variants = [
      JSON.stringify(JSON.parse(first), null, 1),
      first.replace('"valueString":"Organization/a"', '"valueString":"Organization\\/a"'),
      first.replace('{"url":"status","valueCode":"anchored"}', '{"valueCode":"anchored","url":"status"}'),
    ];
    for (const variant of variants) {
      expect(readWrittenProvenance(variant)).toBeUndefined();
      expect(fullParse(variant)).toEqual(fullParse(first));
      const answer = await verifyEvidenceBundle(
        text.replace(first, variant),
        HOSPITAL_A,
        new CachedBatchSource(receiverLedger),
      );
      expect(answer.records.map((r) => r.status)).toEqual(['verified', 'verified']);
    }
    // A written-form Provenance with a value its checks refuse is refused the same way as by the full parse.
    const badSalt = first.replace(/"salt","valueString":"[0-9a-f]{64}"/, '"salt","valueString":"zz"');
    expect(readWrittenProvenance(badSalt)).toEqual(fullParse(badSalt));
    expect(readWrittenProvenance(badSalt)!.read).toEqual({ error: 'the salt is not 64 hex digits' });
  });

  it('reads each batch once per answer, not one $verify round per record', async () => {
    const written: StoredVersion[] = [];
    for (let i = 0; i < 20; i++) written.push(await hospitalA.write(observation(`o${i}`, `${i}.0`)));
    await hospitalA.integrity.anchorer.drain();
    let memberReads = 0;
    const journal = hospitalA.integrity.journal;
    const evidence = await collectEvidence(written, {
      store: hospitalA.store,
      journal: { members: (root) => (memberReads++, journal.members(root)) },
    });
    expect(evidence.every((e) => e.status === 'anchored')).toBe(true);
    expect(memberReads).toBe(1);
    // A later answer from the same journal reuses the batch's tree (a root fixes its members): no read at all.
    const countingJournal = { members: (root: string) => (memberReads++, journal.members(root)) };
    await collectEvidence(written, { store: hospitalA.store, journal: countingJournal });
    const again = await collectEvidence(written, { store: hospitalA.store, journal: countingJournal });
    expect(memberReads).toBe(2);
    expect(again).toEqual(evidence);
    const batches = new CachedBatchSource(receiverLedger);
    const text = await recordEvidenceBundle(written, { store: hospitalA.store, journal }, HOSPITAL_A);
    const answer = await verifyEvidenceBundle(text, HOSPITAL_A, batches);
    expect(answer.kept).toBe(20);
    expect(batches.reads).toBe(1);
  });

  it('sends each batch’s proof nodes once after the records, not in each Provenance; missing or altered nodes fail the records that need them', async () => {
    const written: StoredVersion[] = [];
    for (let i = 0; i < 4; i++) written.push(await hospitalA.write(observation(`n${i}`, `${i}.50`)));
    await hospitalA.integrity.anchorer.drain();
    const text = await recordEvidenceBundle(
      written,
      { store: hospitalA.store, journal: hospitalA.integrity.journal },
      HOSPITAL_A,
    );
    type Part = { url?: string; name?: string; valueString?: string; valuePositiveInt?: number };
    const sent = JSON.parse(text) as {
      entry: {
        resource: { resourceType: string; extension?: { extension: Part[] }[]; parameter?: Part[] };
      }[];
    };
    const provenances = sent.entry.filter((e) => e.resource.resourceType === 'Provenance');
    expect(provenances).toHaveLength(4);
    for (const p of provenances)
      expect(p.resource.extension![0].extension.some((x) => x.url === 'proof')).toBe(false);
    const nodesEntry = sent.entry[sent.entry.length - 1].resource;
    expect(nodesEntry.resourceType).toBe('Parameters');
    const [rootPart, countPart, ...nodeParts] = nodesEntry.parameter!;
    expect(rootPart.name).toBe('integrity-proof-nodes');
    expect(rootPart.valueString).toMatch(/^[0-9a-f]{64}$/);
    expect(countPart).toEqual({ name: 'leafCount', valuePositiveInt: 4 });
    // Four leaves, all sent: the four leaf nodes and the two nodes above them, each once (not 4 x 2 steps).
    expect(nodeParts.map((n) => n.valueString!.split('/').slice(0, 2).join('/')).sort()).toEqual([
      '0/0',
      '0/1',
      '0/2',
      '0/3',
      '1/0',
      '1/1',
    ]);

    const check = (bundle: string) =>
      verifyEvidenceBundle(bundle, HOSPITAL_A, new CachedBatchSource(receiverLedger));
    const answer = await check(text);
    expect(answer.records.map((r) => r.status)).toEqual(['verified', 'verified', 'verified', 'verified']);
    // B's Provenance carries each record's whole proof: a saved copy verifies from it alone.
    const atB = JSON.parse(receivedBundleText([answer])) as typeof sent;
    for (const e of atB.entry.filter((x) => x.resource.resourceType === 'Provenance'))
      expect(e.resource.extension![0].extension.filter((x) => x.url === 'proof')).toHaveLength(2);

    // The upper node of leaves 0 and 1 altered: those two fail, the other two still verify.
    const upper = nodeParts.find((n) => n.valueString!.startsWith('1/1/'))!.valueString!;
    const altered = await check(text.replace(upper, `1/1/${'0'.repeat(64)}`));
    expect(altered.records.map((r) => [r.status, r.reason])).toEqual([
      ['failed', 'the record does not prove into the given root'],
      ['failed', 'the record does not prove into the given root'],
      ['verified', undefined],
      ['verified', undefined],
    ]);
    const nodesAt = text.lastIndexOf(',{"resource":{"resourceType":"Parameters"');
    const nodesText = text.slice(nodesAt, -2);
    for (const [bundle, reason] of [
      [text.slice(0, nodesAt) + ']}', 'the record has no proof: no steps, and no nodes of its batch'],
      [text.slice(0, -2) + nodesText + ']}', 'its batch’s proof nodes are sent twice'],
      [text.replace(upper, '1/9/zz'), 'its batch’s proof nodes are malformed'],
      [text.replace(upper, '0/0' + upper.slice(3)), 'its batch’s proof nodes repeat a node'],
    ]) {
      const failed = await check(bundle);
      expect(failed.records.map((r) => r.reason)).toEqual([reason, reason, reason, reason]);
      expect(failed.kept).toBe(0);
    }
  });

  it('fails a record altered in the custodian’s store behind its service, and names it', async () => {
    const written = [
      await hospitalA.write(observation('o1', '1.50')),
      await hospitalA.write(observation('o2', '2.50')),
    ];
    await hospitalA.integrity.anchorer.drain();
    const db = new Database(path.join(hospitalA.dir, 'resources.sqlite'));
    registerJsonFunctions(db); // stored JSON is deflated (store migration 7): alter its text
    db.prepare(
      `UPDATE resource_version SET json = replace(hie_decode_json(json), '2.50', '9.50') WHERE id = 'o2'`,
    ).run();
    db.close();

    const answer = await fetchAndVerify(written);
    expect(answer.records.map((r) => r.status)).toEqual(['verified', 'failed']);
    expect(answer.records[1].reason).toBe('the record does not prove into the given root');
    expect(answer.kept).toBe(1);
    expect(answer.issues).toHaveLength(1);
    expect(answer.issues[0].diagnostics).toContain('https://a.example/fhir/Observation/o2/_history/1');
    expect(answer.issues[0].diagnostics).toContain('Hospital A (Org1MSP)');
    const atB = receivedBundleText([answer]);
    expect(atB).not.toContain('9.50');
    const received = JSON.parse(atB) as { total: number; entry: { resource: { resourceType: string } }[] };
    expect(received.total).toBe(1);
    expect(received.entry.map((e) => e.resource.resourceType)).toEqual([
      'Observation',
      'Provenance',
      'OperationOutcome',
    ]);
  });

  it('fails a record another member anchored and presents as the custodian’s', async () => {
    // F (Org2MSP) stores and anchors a fabricated record naming A's custodian, then answers as A.
    const forger = await openStoreMember(
      path.join(hospitalA.dir, '..', 'f'),
      chain.connect(orgs[1].service),
      'Organization/a',
    );
    try {
      const forged = await forger.write(observation('o9', '7.00'));
      await forger.integrity.anchorer.drain();
      const answer = await fetchAndVerify([forged], forger);
      expect(answer.records).toEqual([
        {
          fullUrl: 'https://a.example/fhir/Observation/o9/_history/1',
          status: 'failed',
          reason: 'the root was anchored by Org2MSP, not by the custodian Org1MSP',
        },
      ]);
      expect(answer.kept).toBe(0);
      expect(answer.issues[0].diagnostics).toContain('Observation/o9/_history/1');
    } finally {
      await forger.close();
    }
  });

  it('marks a record not yet anchored, or whose root this peer has not seen, as pending and keeps it', async () => {
    const anchored = await hospitalA.write(observation('o1', '1.50'));
    await hospitalA.integrity.anchorer.drain();
    const queued = await hospitalA.write(observation('o2', '2.50'));
    const answer = await fetchAndVerify([anchored, queued]);
    expect(answer.records.map((r) => [r.status, r.reason])).toEqual([
      ['verified', undefined],
      ['pending', 'not yet anchored by the custodian'],
    ]);
    expect(answer.kept).toBe(2);
    expect(receivedBundleText([answer])).toContain(`"resource":${queued.json!},`);

    // A peer that is behind (here: another chain that never received A's batch).
    const { dir, cleanup: cleanupBehind } = await tempDir();
    const behind = await openChain(dir, orgs);
    try {
      const text = await recordEvidenceBundle(
        [anchored],
        { store: hospitalA.store, journal: hospitalA.integrity.journal },
        HOSPITAL_A,
      );
      const late = await verifyEvidenceBundle(
        text,
        HOSPITAL_A,
        new CachedBatchSource(behind.connect(orgs[2].service)),
      );
      expect(late.records.map((r) => [r.status, r.reason])).toEqual([
        ['pending', 'the root is not yet on this peer’s ledger'],
      ]);
    } finally {
      await behind.close();
      await cleanupBehind();
    }
  });
});

describe('a hostile evidence Bundle', () => {
  let text: string;
  let written: StoredVersion;

  beforeEach(async () => {
    written = await hospitalA.write(observation('o1', '1.50'));
    await hospitalA.integrity.anchorer.drain();
    text = await recordEvidenceBundle(
      [written],
      { store: hospitalA.store, journal: hospitalA.integrity.journal },
      HOSPITAL_A,
    );
  });

  const verify = (bundle: string) =>
    verifyEvidenceBundle(bundle, HOSPITAL_A, new CachedBatchSource(receiverLedger), {
      maxBundleChars: 1_000_000,
      maxEntries: 100,
      maxDepth: 50,
    });

  /** The Bundle with the one Provenance's evidence parts edited. */
  function withEvidence(edit: (parts: Record<string, unknown>[]) => unknown): string {
    const bundle = JSON.parse(text) as { entry: { resource: { extension: { extension: unknown }[] } }[] };
    const extension = bundle.entry[1].resource.extension[0];
    extension.extension = edit(extension.extension as Record<string, unknown>[]);
    // The record's own text is spliced back as sent (JSON.parse would turn 1.50 into 1.5).
    return JSON.stringify(bundle).replace('"value":1.5,', '"value":1.50,');
  }

  it('refuses text that is not an evidence Bundle, with an issue naming the custodian', async () => {
    for (const bad of [
      '',
      'not json',
      '[]',
      '{"resourceType":"Patient"}',
      '{"resourceType":"Bundle","type":"searchset","entry":{}}',
      text + 'x',
      '{"resourceType":"Bundle","resourceType":"Bundle","type":"searchset"}',
      '{"resourceType":"Bundle","type":"searchset","entry":[{"resource":' +
        '['.repeat(5000) +
        ']'.repeat(5000) +
        '}]}',
      '{"resourceType":"Bundle","type":"searchset","entry":[' + Array(101).fill('{}').join(',') + ']}',
      'x'.repeat(1_000_001),
    ]) {
      const answer = await verify(bad);
      expect(answer.records).toEqual([]);
      expect(answer.kept).toBe(0);
      expect(answer.issues).toHaveLength(1);
      expect(answer.issues[0]).toMatchObject({ severity: 'error', code: 'structure' });
      expect(answer.issues[0].diagnostics).toContain('Hospital A (Org1MSP)');
    }
  });

  it('fails a record without usable evidence, naming it, and never throws', async () => {
    const cases: [string, string][] = [
      [
        text.slice(0, text.indexOf(',{"resource":{"resourceType":"Provenance"')) + ']}',
        'no evidence Provenance targets the record',
      ],
      [withEvidence(() => 'proof'), 'the integrity-evidence extension has no parts, or too many'],
      [
        withEvidence((parts) =>
          parts.map((p) => (p.url === 'leafIndex' ? { url: 'leafIndex', valueString: '0' } : p)),
        ),
        'the leaf index and count are not a position in a batch',
      ],
      [
        withEvidence((parts) => parts.map((p) => (p.url === 'salt' ? { url: 'salt', valueString: 42 } : p))),
        'the salt is not 64 hex digits',
      ],
      [
        withEvidence((parts) => [
          ...parts,
          ...Array.from({ length: 200 }, () => ({ url: 'proof', valueString: `left:${'0'.repeat(64)}` })),
        ]),
        'the integrity-evidence extension has no parts, or too many',
      ],
      [
        withEvidence((parts) => [
          ...parts.filter((p) => p.url !== 'proof'),
          ...Array.from({ length: 65 }, () => ({ url: 'proof', valueString: `left:${'0'.repeat(64)}` })),
        ]),
        'the proof has too many steps',
      ],
      [
        withEvidence((parts) =>
          parts.map((p) => (p.url === 'status' ? { url: 'status', valueCode: 'verified' } : p)),
        ),
        'the evidence status is neither anchored nor pending',
      ],
      [
        text.replace('"value":"Org1MSP"', '"value":"Org2MSP"'),
        'the Provenance names custodian Org2MSP, not Org1MSP',
      ],
      [
        text.replace('https://a.example/fhir/Observation', 'https://evil.example/fhir/Observation'),
        'the fullUrl is not https://a.example/fhir/Observation/o1/_history/1',
      ],
    ];
    for (const [bundle, reason] of cases) {
      const answer = await verify(bundle);
      expect(answer.records.map((r) => [r.status, r.reason])).toEqual([['failed', reason]]);
      expect(answer.kept).toBe(0);
      expect(answer.issues).toHaveLength(1);
      expect(answer.issues[0].diagnostics).toContain('Observation/o1/_history/1');
    }
  });

  it('fails a record sent twice, and every record when its Provenance is sent twice', async () => {
    const recordEntry = text.slice(
      text.indexOf('"entry":[') + 9,
      text.indexOf(',{"resource":{"resourceType":"Provenance"'),
    );
    const provenanceEntry = text.slice(text.indexOf(',{"resource":{"resourceType":"Provenance"') + 1, -2);
    const twice = await verify(text.replace('"entry":[', `"entry":[${recordEntry},`));
    expect(twice.records.map((r) => [r.status, r.reason])).toEqual([
      ['verified', undefined],
      ['failed', 'the record is sent twice'],
    ]);
    expect(twice.kept).toBe(1);
    const ambiguous = await verify(text.replace(/\]\}$/, `,${provenanceEntry}]}`));
    expect(ambiguous.records.map((r) => [r.status, r.reason])).toEqual([
      ['failed', 'more than one Provenance targets the record'],
    ]);
  });

  it('leaves records pending, not failed, while this peer’s ledger cannot be read', async () => {
    const unreachable = new FaultyLedger(receiverLedger);
    unreachable.down = true;
    const answer = await verifyEvidenceBundle(text, HOSPITAL_A, new CachedBatchSource(unreachable));
    expect(answer.records.map((r) => [r.status, r.reason])).toEqual([
      ['pending', 'this peer’s ledger could not be read'],
    ]);
    expect(answer.kept).toBe(1);
    expect(answer.issues).toEqual([]);
  });
});
