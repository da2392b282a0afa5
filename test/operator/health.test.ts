/**
 * GET /healthz (alive) and GET /readyz (store, ledger, validator, consent feed near the ledger's tip): without
 * authentication, no data in the answers (check names and ok/failing only), 503 when a check fails. The anchor
 * backlog is not readiness (it is a metric).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { openEmbeddedLedger } from '../../src/ledger/embedded/index.js';
import { MemoryResourceStore } from '../../src/fhir/store/memory/memory-store.js';
import type { StoreIntegrityStatus } from '../../src/fhir/store/resource-store.js';
import { LedgerTransactionError, type EventStream, type SubmitResult } from '../../src/ledger/ledger.js';
import { FaultyLedger, MSP_ID } from '../integrity/helpers.js';
import { send, startTestApp, json, type TestApp } from '../http/helpers.js';

/**
 * The Fabric-peer edge: a real embedded ledger whose orderer refuses submissions, or whose event service delivers
 * nothing (a stuck peer), as a network can; everything else is the real chain.
 */
class PeerFaults extends FaultyLedger {
  submissionsRefused = false;
  eventsStalled = false;

  override async submit(transaction: string, args: string[]): Promise<SubmitResult> {
    if (this.submissionsRefused)
      throw new LedgerTransactionError('orderer unavailable (injected)', 'UNAVAILABLE', undefined, true);
    return super.submit(transaction, args);
  }

  override events(startBlock?: number): EventStream {
    if (!this.eventsStalled) return super.events(startBlock);
    let close: () => void = () => {};
    const closed = new Promise<IteratorResult<never>>(
      (resolve) => (close = () => resolve({ done: true, value: undefined })),
    );
    return { close, [Symbol.asyncIterator]: () => ({ next: () => closed }) };
  }
}

const temporary: string[] = [];
const apps: TestApp[] = [];
afterEach(async () => {
  for (const app of apps.splice(0)) await app.stop();
});
afterAll(() => {
  for (const dir of temporary) rmSync(dir, { recursive: true, force: true });
});

async function peer(): Promise<PeerFaults> {
  const dataDir = mkdtempSync(join(tmpdir(), 'hie-health-ledger-'));
  temporary.push(dataDir);
  return new PeerFaults(await openEmbeddedLedger({ dataDir, mspId: MSP_ID }));
}

async function start(ledger?: PeerFaults, flags: Record<string, unknown> = {}): Promise<TestApp> {
  const app = await startTestApp(ledger ? { ledger } : {}, flags);
  apps.push(app);
  return app;
}

const READY = {
  status: 'ready',
  checks: {
    certificates: 'ok',
    store: 'ok',
    'store-integrity': 'ok',
    ledger: 'ok',
    validator: 'ok',
    consent: 'ok',
  },
};

describe('GET /healthz and /readyz', () => {
  it('answer without authentication, naming the checks and nothing else', async () => {
    const app = await start(undefined, { auth: 'smart' });
    expect((await app.fastify.inject({ method: 'GET', url: '/fhir/Patient' })).statusCode).toBe(401);

    const alive = await send(app, { method: 'GET', url: '/healthz' }, 200);
    expect(alive.headers['content-type']).toMatch(/^application\/json/);
    expect(json(alive.body)).toEqual({ status: 'alive' });

    const ready = await send(app, { method: 'GET', url: '/readyz' }, 200);
    expect(json(ready.body)).toEqual(READY);
    expect(ready.headers['cache-control']).toBe('no-store');
  });

  it('is 503 while the ledger cannot be reached, and ready again when it returns', async () => {
    const ledger = await peer();
    const app = await start(ledger);
    expect((await app.fastify.inject({ method: 'GET', url: '/readyz' })).statusCode).toBe(200);

    ledger.down = true;
    const down = await send(app, { method: 'GET', url: '/readyz' }, 503);
    expect(json(down.body)).toEqual({
      status: 'not ready',
      checks: {
        certificates: 'ok',
        store: 'ok',
        'store-integrity': 'ok',
        ledger: 'failing',
        validator: 'ok',
        consent: 'failing',
      },
    });
    // Liveness is not readiness: the process still serves.
    expect((await app.fastify.inject({ method: 'GET', url: '/healthz' })).statusCode).toBe(200);
    expect(app.logs.join('\n')).toContain('readiness check failing');

    ledger.down = false;
    expect(json((await app.fastify.inject({ method: 'GET', url: '/readyz' })).body)).toEqual(READY);
  });

  it('is 503 when the consent cache is further behind the ledger than --ready-consent-lag', async () => {
    const ledger = await peer();
    ledger.eventsStalled = true;
    const app = await start(ledger, { readyConsentLag: '0' });
    // A write is anchored: a new block the stalled consent feed never sees.
    await send(
      app,
      {
        method: 'POST',
        url: '/fhir/Patient',
        body: JSON.stringify({ resourceType: 'Patient', active: true }),
      },
      201,
    );
    expect(await app.integrity!.anchorer.drain()).toBe(1);
    const behind = await send(app, { method: 'GET', url: '/readyz' }, 503);
    expect(json(behind.body).checks).toEqual({
      certificates: 'ok',
      store: 'ok',
      'store-integrity': 'ok',
      ledger: 'ok',
      validator: 'ok',
      consent: 'failing',
    });
  });

  it('stays ready while anchors pile up (the backlog is a metric, not readiness)', async () => {
    const ledger = await peer();
    const app = await start(ledger);
    ledger.submissionsRefused = true;
    await send(
      app,
      {
        method: 'POST',
        url: '/fhir/Patient',
        body: JSON.stringify({ resourceType: 'Patient', active: true }),
      },
      201,
    );
    await expect(app.integrity!.anchorer.drain()).rejects.toThrow(/unavailable/);
    expect(await app.integrity!.anchorer.pendingCount()).toBe(1);
    expect(json((await app.fastify.inject({ method: 'GET', url: '/readyz' })).body)).toEqual(READY);
  });

  it("reads any store's start-up integrity check through the port: 503 while it runs and once it failed", async () => {
    /** A store adapter other than SQLite whose start-up check is still running, then failed. */
    class CheckedStore extends MemoryResourceStore {
      status: StoreIntegrityStatus = 'checking';
      integrityStatus(): StoreIntegrityStatus {
        return this.status;
      }
    }
    const store = new CheckedStore();
    const checked = await startTestApp({ store }, {});
    apps.push(checked);
    const running = await send(checked, { method: 'GET', url: '/readyz' }, 503);
    expect(json(running.body).checks['store-integrity']).toBe('failing');
    store.status = { failed: 'corrupt in table resource_version' };
    const failed = await send(checked, { method: 'GET', url: '/readyz' }, 503);
    expect(json(failed.body).checks['store-integrity']).toBe('failing');
    store.status = 'ok';
    expect(json((await checked.fastify.inject({ method: 'GET', url: '/readyz' })).body)).toEqual(READY);
  });

  it('is 503 when the store is closed', async () => {
    const app = await start();
    await app.store.close();
    const res = await send(app, { method: 'GET', url: '/readyz' }, 503);
    expect(json(res.body).checks.store).toBe('failing');
  });
});
