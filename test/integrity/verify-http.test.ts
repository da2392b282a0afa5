/** $verify over HTTP on the real app: anchored writes prove, precision survives, tampering shows, ledger down stays pending. */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openEmbeddedLedger } from '../../src/ledger/embedded/index.js';
import { verifyProof, type ProofStep } from '../../src/integrity/merkle.js';
import { verifyReceivedRecord } from '../../src/integrity/verification.js';
import { send, FHIR_JSON, json, startTestApp, type TestApp } from '../http/helpers.js';
import { FaultyLedger, MSP_ID, eventually } from './helpers.js';
import { startHarness } from '../access/app-harness.js';
import { registerJsonFunctions } from '../../src/fhir/store/json-codec.js';

type Parameters = { resourceType: string; parameter: { name: string; [k: string]: unknown }[] };
const param = (p: Parameters, name: string) => {
  const found = p.parameter.find((x) => x.name === name);
  if (!found) return undefined;
  const key = Object.keys(found).find((k) => k.startsWith('value'));
  return key ? found[key] : found;
};

const OBSERVATION =
  '{"resourceType":"Observation","status":"final","code":{"text":"glucose"},' +
  '"valueQuantity":{"value":1.50,"unit":"mmol/L"},"component":[{"code":{"text":"b"},"valueQuantity":{"value":105.00,"unit":"mg"}}]}';

describe('$verify over HTTP', () => {
  let app: TestApp;

  beforeAll(async () => {
    app = await startTestApp({}, { anchorBatchSize: '5', anchorIntervalMs: '20', auditCron: 'off' });
  });
  afterAll(async () => {
    await app?.stop();
  });

  async function verify(url: string): Promise<Parameters> {
    const res = await app.fastify.inject({ method: 'GET', url: `/fhir/${url}` });
    expect(res.statusCode, res.body).toBe(200);
    return json(res.body) as Parameters;
  }

  it('proves a created resource against the ledger, keeping 1.50 and 105.00', async () => {
    const created = await app.fastify.inject({
      method: 'POST',
      url: '/fhir/Observation',
      headers: FHIR_JSON,
      payload: OBSERVATION,
    });
    expect(created.statusCode, created.body).toBe(201);
    const id = json(created.body).id as string;
    const read = await app.fastify.inject({ method: 'GET', url: `/fhir/Observation/${id}` });
    expect(read.body).toContain('"value":1.50');
    expect(read.body).toContain('"value":105.00');

    await eventually(
      async () => param(await verify(`Observation/${id}/$verify`), 'status') === 'anchored',
      'the write is anchored',
    );
    const result = await verify(`Observation/${id}/$verify`);
    expect(result.resourceType).toBe('Parameters');
    expect(param(result, 'verified')).toBe(true);
    expect(param(result, 'reference')).toBe(`Observation/${id}/_history/1`);
    for (const name of ['hash', 'salt', 'ledgerKey', 'root', 'transactionId']) {
      expect(param(result, name), name).toMatch(/^[0-9a-f]+$/);
    }
    expect(typeof param(result, 'blockNumber')).toBe('number');
    // The proof checks independently, from what the answer carries.
    const proof = JSON.parse(param(result, 'proofJson') as string) as ProofStep[];
    const partsProof = result.parameter
      .filter((p) => p.name === 'proof')
      .map((p) => {
        const parts = p.part as { name: string; valueCode?: string; valueString?: string }[];
        return { side: parts[0].valueCode, hash: parts[1].valueString };
      });
    expect(partsProof).toEqual(proof);
    const position = {
      leafIndex: param(result, 'leafIndex') as number,
      leafCount: param(result, 'leafCount') as number,
    };
    expect(
      verifyProof(param(result, 'hash') as string, proof, param(result, 'root') as string, position),
    ).toBe(true);

    // Another member receiving the record with this evidence verifies it against the ledger, without secrets.
    const evidence = {
      salt: param(result, 'salt') as string,
      leafVersion: param(result, 'leafVersion') as 1 | 2,
      custodian: param(result, 'custodian') as string | undefined,
      root: param(result, 'root') as string,
      proof,
      ...position,
    };
    const received = JSON.parse(read.body) as { meta: { versionId: string; lastUpdated: string } };
    const version = {
      resourceType: 'Observation',
      id,
      versionId: Number(received.meta.versionId),
      lastUpdated: received.meta.lastUpdated,
      deleted: false,
      json: read.body,
    };
    expect(await verifyReceivedRecord(version, evidence, app.ledger!)).toMatchObject({
      verified: true,
      anchoredBy: 'Org1MSP',
    });
    const forged = { ...version, json: read.body.replace('"value":1.50', '"value":1.5') };
    expect((await verifyReceivedRecord(forged, evidence, app.ledger!)).verified).toBe(false);

    // It changes nothing, so POST (a Parameters body, as fhir-kit-client's operation() sends) answers the same.
    const posted = await app.fastify.inject({
      method: 'POST',
      url: `/fhir/Observation/${id}/$verify`,
      headers: FHIR_JSON,
      payload: '{"resourceType":"Parameters"}',
    });
    expect(posted.statusCode, posted.body).toBe(200);
    expect(json(posted.body)).toEqual(result);
  });

  it('verifies each version, names a tampered one as mismatch, and answers 404 for unknown ones', async () => {
    const created = await app.fastify.inject({
      method: 'POST',
      url: '/fhir/Observation',
      headers: FHIR_JSON,
      payload: OBSERVATION,
    });
    const id = json(created.body).id as string;
    const updated = await app.fastify.inject({
      method: 'PUT',
      url: `/fhir/Observation/${id}`,
      headers: FHIR_JSON,
      payload: OBSERVATION.replace('"final"', '"amended"').replace(
        '{"resourceType":"Observation",',
        `{"resourceType":"Observation","id":"${id}",`,
      ),
    });
    expect(updated.statusCode, updated.body).toBe(200);
    for (const vid of [1, 2]) {
      await eventually(
        async () => param(await verify(`Observation/${id}/_history/${vid}/$verify`), 'verified') === true,
        `version ${vid} verifies`,
      );
    }

    const db = new Database(path.join(app.dataDir, 'resources.sqlite'));
    registerJsonFunctions(db); // stored JSON is deflated (store migration 7): alter its text
    db.prepare(
      `UPDATE resource_version SET json = replace(hie_decode_json(json), '105.00', '106.00') WHERE id = ? AND version_id = 1`,
    ).run(id);
    db.close();
    const v1 = await verify(`Observation/${id}/_history/1/$verify`);
    expect(param(v1, 'status')).toBe('mismatch');
    expect(param(v1, 'verified')).toBe(false);
    expect(param(v1, 'hash')).not.toBe(param(v1, 'expectedHash'));
    expect(param(await verify(`Observation/${id}/_history/2/$verify`), 'status')).toBe('anchored');
    expect(param(await verify(`Observation/${id}/$verify`), 'reference')).toBe(
      `Observation/${id}/_history/2`,
    );

    expect(
      (await app.fastify.inject({ method: 'GET', url: `/fhir/Observation/${id}/_history/9/$verify` }))
        .statusCode,
    ).toBe(404);
    expect(
      (await app.fastify.inject({ method: 'GET', url: '/fhir/Observation/nope/$verify' })).statusCode,
    ).toBe(404);
    expect(
      (await app.fastify.inject({ method: 'GET', url: `/fhir/Observation/${id}/_history/x/$verify` }))
        .statusCode,
    ).toBe(404);
  });

  it('is listed in the CapabilityStatement', async () => {
    const res = await app.fastify.inject({ method: 'GET', url: '/fhir/metadata' });
    expect(res.body).toContain('"verify"');
  });
});

describe('ledger down, over HTTP', () => {
  let app: TestApp;
  let ledger: FaultyLedger;
  let ledgerDir: string | undefined;

  afterAll(async () => {
    await app?.stop();
    await ledger?.close();
    if (ledgerDir) await rm(ledgerDir, { recursive: true, force: true });
  });

  it('accepts writes while the ledger refuses, reports them pending, then anchors them', async () => {
    ledgerDir = await mkdtemp(path.join(os.tmpdir(), 'hie-ledger-down-'));
    ledger = new FaultyLedger(await openEmbeddedLedger({ dataDir: ledgerDir, mspId: MSP_ID }));
    app = await startTestApp({ ledger }, { anchorBatchSize: '3', anchorIntervalMs: '20', auditCron: 'off' });
    ledger.down = true;
    const ids: string[] = [];
    for (let i = 0; i < 4; i++) {
      const res = await send(app, { method: 'POST', url: '/fhir/Observation', body: OBSERVATION }, 201);
      ids.push(json(res.body).id as string);
    }
    await eventually(
      () => app.integrity!.anchorer.status().consecutiveFailures >= 2,
      'the worker has retried',
    );
    // $verify needs the ledger only for anchored versions: pending ones answer from the store.
    const pending = await app.fastify.inject({ method: 'GET', url: `/fhir/Observation/${ids[0]}/$verify` });
    expect(param(json(pending.body) as Parameters, 'status')).toBe('pending');

    ledger.down = false;
    for (const id of ids) {
      await eventually(async () => {
        const res = await app.fastify.inject({ method: 'GET', url: `/fhir/Observation/${id}/$verify` });
        return param(json(res.body) as Parameters, 'verified') === true;
      }, `Observation/${id} verifies`);
    }
  });
});

describe('the audit over what the HTTP write path stores, with authentication on', () => {
  it('finds no altered custodian, compartment or index row where nothing was tampered with', async () => {
    const h = await startHarness();
    try {
      const sys = await h.enrol('sys-a', 'system', 'Organization/hosp-a');
      const patient = await h.request(sys, 'PUT', '/Patient/p1', {
        resourceType: 'Patient',
        id: 'p1',
        birthDate: '1970-01',
      });
      expect(patient.status, patient.text).toBe(201);
      const ids: string[] = [];
      for (let i = 0; i < 3; i++) {
        const res = await h.request(sys, 'POST', '/Observation', {
          resourceType: 'Observation',
          status: 'final',
          code: { text: 'glucose' },
          subject: { reference: 'Patient/p1' },
          valueQuantity: { value: i + 0.5, unit: 'mmol/L' },
        });
        expect(res.status, res.text).toBe(201);
        ids.push(res.body.id as string);
      }
      const patched = await h.request(
        sys,
        'PATCH',
        `/Observation/${ids[0]}`,
        [{ op: 'replace', path: '/status', value: 'amended' }],
        { 'content-type': 'application/json-patch+json' },
      );
      expect(patched.status, patched.text).toBe(200);
      expect((await h.request(sys, 'DELETE', `/Observation/${ids[1]}`)).status).toBe(200);
      // Reads and a search: their AuditEvents are stored in the patient's compartment.
      for (const url of [`Observation/${ids[2]}`, 'Observation?subject=Patient/p1', 'Patient/p1']) {
        expect((await h.request(sys, 'GET', `/${url}`)).status).toBe(200);
      }
      const store = h.app.store;
      await eventually(
        async () => (await store.history({ resourceType: 'AuditEvent', count: 0 })).total > 0,
        'the reads are audited',
      );
      await h.app.integrity!.anchorer.drain();
      const report = await h.app.integrity!.audit();
      expect(report.problems).toEqual([]);
      expect(report.rows).toEqual([]);
      expect(report.leafFormat1).toBe(0);
      // The custodian is anchored: the current Observation's leaf names it.
      const verified = await h.app.integrity!.verifier.verifyVersion(
        (await store.read('Observation', ids[2]!))!,
      );
      expect(verified).toMatchObject({ verified: true, leafVersion: 2, custodian: 'Organization/hosp-a' });
    } finally {
      await h.stop();
    }
  });
});
