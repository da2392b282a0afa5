/**
 * Disk full, made deterministic with SQLite's `PRAGMA max_page_count` (the database may not grow past its current
 * size): writes answer 503 with Retry-After and an OperationOutcome, the condition is logged once (not per
 * request, no stack), the AuditEvents of reads served meanwhile are kept and stored once there is space again,
 * and requests are refused rather than served unaudited when too many wait.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { AuditRecorder, touch, type RequestAudit, type Touched } from '../../src/access/access-audit.js';
import type { Caller } from '../../src/fhir/interactions/access-policy.js';
import { SqliteResourceStore } from '../../src/fhir/store/sqlite/sqlite-store.js';
import { startHarness, type Harness } from '../access/app-harness.js';
import { newResourceId } from '../../src/fhir/interactions/ids.js';
import { eventually } from '../integrity/helpers.js';

/**
 * The database may not grow, and its pages are filled: tiny AuditEvents (no index rows, ids increasing) are
 * written until one fails with SQLITE_FULL. A later AuditEvent goes to the same rightmost leaves of every b-tree
 * that one needed (its keys come after it, nothing lies between), with cells at least as large: it fails too.
 */
async function fill(store: SqliteResourceStore): Promise<void> {
  const pages = store.db.pragma('page_count', { simple: true }) as number;
  store.db.pragma(`max_page_count = ${pages}`);
  for (let i = 0; i < 100_000; i++) {
    const id = newResourceId();
    const failed = await store
      .write({ resourceType: 'AuditEvent', id, method: 'POST', resource: { resourceType: 'AuditEvent' } })
      .then(
        () => undefined,
        (err: unknown) => err,
      );
    if (failed) {
      expect((failed as { code?: string }).code).toBe('SQLITE_FULL');
      return;
    }
  }
  throw new Error('the store never filled');
}

function makeRoom(store: SqliteResourceStore): void {
  store.db.pragma('max_page_count = 1073741823');
}

/** An Observation too large to fit in the pages the file has (needs new overflow pages). */
const bigObservation = (i: number) => ({
  resourceType: 'Observation',
  status: 'final',
  code: { text: 'disk full test' },
  note: [{ text: `${i} `.repeat(60_000) }],
});

const auditEventsWith = (store: SqliteResourceStore, text: string) =>
  store.db
    .prepare(
      `SELECT count(*) FROM resource_version WHERE resource_type = 'AuditEvent' AND hie_decode_json(json) LIKE ?`,
    )
    .pluck()
    .get(`%${text}%`) as number;

describe('disk full over HTTP', () => {
  let h: Harness | undefined;
  afterEach(async () => {
    await h?.stop();
    h = undefined;
  });

  it('answers writes 503 with Retry-After, logs once, and keeps the AuditEvents of reads served meanwhile', async () => {
    h = await startHarness();
    const sys = await h.enrol('sys-a', 'system', 'Organization/hosp-a');
    const patient = await h.request(sys, 'PUT', '/Patient/p1', { resourceType: 'Patient', id: 'p1' });
    expect(patient.status, patient.text).toBe(201);
    const store = h.app.store as SqliteResourceStore;
    await h.app.integrity!.anchorer.drain();

    await fill(store);
    for (let i = 0; i < 3; i++) {
      const refused = await h.request(sys, 'POST', '/Observation', bigObservation(i));
      expect(refused.status, refused.text).toBe(503);
      expect(refused.headers['retry-after']).toBe('30');
      expect(refused.body).toMatchObject({
        resourceType: 'OperationOutcome',
        issue: [{ severity: 'error', code: 'transient' }],
      });
      expect(refused.text).not.toContain('SQLITE');
    }
    // The same write inside a batch: that entry is 503 too, not an unexpected error.
    const batch = await h.request(sys, 'POST', '/', {
      resourceType: 'Bundle',
      type: 'batch',
      entry: [{ resource: bigObservation(5), request: { method: 'POST', url: 'Observation' } }],
    });
    expect(batch.status, batch.text).toBe(200);
    expect(batch.body.entry[0].response.status).toMatch(/^503\b/);
    // Reads are served meanwhile (GET /Patient is read only now); their AuditEvents cannot be stored yet.
    for (let i = 0; i < 2; i++) expect((await h.request(sys, 'GET', '/Patient/p1')).status).toBe(200);
    await eventually(
      () => h!.logs.some((l) => l.includes('audit events not stored: kept in memory and retried')),
      'the audit flush met the full disk',
    );
    expect(auditEventsWith(store, 'GET /Patient')).toBe(0);

    const logs = h.logs.join('');
    // Once per condition, not per request; no stack.
    expect(logs.match(/the storage is full/g)).toHaveLength(1);
    expect(logs).not.toContain('unhandled error');
    expect(logs.match(/audit events not stored/g)).toHaveLength(1);

    makeRoom(store);
    const stored = await h.request(sys, 'POST', '/Observation', bigObservation(9));
    expect(stored.status, stored.text).toBe(201);
    // The reads' AuditEvents were kept and are stored once there is room.
    await eventually(() => auditEventsWith(store, 'GET /Patient') > 0, 'the kept AuditEvents are stored');
  });
});

describe('the storage condition in the log', () => {
  it('is logged once when it starts and once when a write succeeds again', async () => {
    const { startTestApp } = await import('../http/helpers.js');
    const app = await startTestApp({}, { validation: 'schema', auditCron: 'off' });
    try {
      const store = app.store as SqliteResourceStore;
      const post = (i: number) =>
        app.fastify.inject({
          method: 'POST',
          url: '/fhir/Observation',
          headers: { 'content-type': 'application/fhir+json' },
          payload: JSON.stringify(bigObservation(i)),
        });
      await fill(store);
      for (let i = 0; i < 3; i++) expect((await post(i)).statusCode).toBe(503);
      makeRoom(store);
      expect((await post(7)).statusCode).toBe(201);
      expect((await post(8)).statusCode).toBe(201);
      const lines = app.logs.filter((l) => l.includes('the storage'));
      expect(lines).toHaveLength(2);
      expect(JSON.parse(lines[0]!)).toMatchObject({ level: 50, fault: 'full', code: 'SQLITE_FULL' });
      expect(JSON.parse(lines[1]!)).toMatchObject({
        level: 30,
        msg: 'requests: the storage writes again',
        refusedMeanwhile: 3,
      });
      expect(app.logs.join('')).not.toContain('"stack"');
    } finally {
      await app.stop();
    }
  });
});

/** One shown Patient record of hospital A. */
function touchedOnce(): Touched {
  const touched: Touched = new Map();
  touch(touched, 'Patient/p1', 'Organization/hosp-a', true, 'Patient');
  return touched;
}

describe('the audit recorder when the store refuses', () => {
  const caller: Caller = { participant: 'pseudo-1', role: 'clinician', scopes: [] };
  const read = (path: string): RequestAudit => ({
    caller,
    interaction: 'read',
    method: 'GET',
    path,
    status: 200,
    touched: touchedOnce(),
    refused: false,
  });

  it('never drops an AuditEvent: keeps them, refuses more beyond its bound, stores them when it can', async () => {
    const store = new SqliteResourceStore({ file: ':memory:' });
    await store.init();
    const lines: string[] = [];
    const recorder = new AuditRecorder({
      store,
      flushMs: 60_000,
      retryMs: 60_000, // retried here by explicit flushes, not by the clock
      maxKept: 3,
      log: { error: (_o, msg) => lines.push(`error ${msg}`), info: (_o, msg) => lines.push(`info ${msg}`) },
    });
    try {
      await store.write({
        resourceType: 'Patient',
        id: 'p1',
        method: 'PUT',
        resource: { resourceType: 'Patient' },
      });
      await fill(store);
      recorder.record(read('/Patient/a'));
      recorder.record(read('/Observation'));
      await recorder.flush();
      await recorder.flush(); // a second failure: still logged once
      expect(recorder.backlog).toBe(2);
      expect(recorder.canKeep()).toBe(true);
      recorder.record(read('/Condition'));
      expect(recorder.canKeep()).toBe(false); // three waiting: requests are refused now
      expect(lines).toEqual(['error audit events not stored: kept in memory and retried']);

      makeRoom(store);
      await recorder.flush();
      expect(recorder.backlog).toBe(0);
      expect(recorder.canKeep()).toBe(true);
      expect(lines).toEqual([
        'error audit events not stored: kept in memory and retried',
        'info audit events stored again',
      ]);
      for (const path of ['GET /Patient ', 'GET /Observation ', 'GET /Condition ']) {
        expect(auditEventsWith(store, path), path).toBe(1);
      }
    } finally {
      await recorder.close();
      await store.close();
    }
  });
});
