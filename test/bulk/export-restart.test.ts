/**
 * An $export job survives a restart (docs/bulk.md, "Jobs survive a restart"): a job paused between pages by a test
 * hook, the app closed and built again over the same data directory, resumes from its last durable page and
 * completes; bytes written after that page (a crash between the file's write and the progress's save) are cut, so
 * every resource is exported exactly once. Its status is there across the restart.
 */
import { appendFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bootApp, FHIR_JSON, send, type BootedApp } from '../support/app-harness.js';
import type { ExportState } from '../../src/bulk/export-job.js';

const ASYNC = { prefer: 'respond-async', accept: 'application/fhir+json' };
let booted: BootedApp;

beforeAll(async () => {
  booted = await bootApp({ logLevel: 'warn', auth: 'dev-open' }, {}, 'hie-bulk-');
});
afterAll(async () => {
  await booted?.stop();
});

describe('an export job across a restart', () => {
  it('resumes after its last durable page and completes with every resource once', async () => {
    const ids: string[] = [];
    for (let n = 0; n < 7; n++) {
      const res = await send(
        booted.app,
        {
          method: 'POST',
          url: '/fhir/Patient',
          headers: FHIR_JSON,
          body: { resourceType: 'Patient', birthDate: `19${50 + n}` },
        },
        201,
      );
      ids.push(JSON.parse(res.body).id);
    }
    // A job that stops after its first page (two resources), until the service closes.
    let paused!: (state: ExportState) => void;
    const pausedAt = new Promise<ExportState>((resolve) => (paused = resolve));
    booted.app = await booted.restart({
      bulk: {
        pageSize: 2,
        saveEvery: 1,
        hooks: { afterPage: (_job, state) => (paused({ ...state }), new Promise<void>(() => undefined)) },
      },
    });
    const kick = await send(booted.app, { url: '/fhir/$export?_type=Patient', headers: ASYNC }, 202);
    const status = new URL(kick.headers['content-location'] as string).pathname;
    const state = await pausedAt;
    expect(state.exported).toBe(2);
    const progress = await send(booted.app, { url: status }, 202);
    expect(progress.headers['x-progress']).toContain('2 resources exported');
    expect(progress.headers['retry-after']).toBe('2');

    // Closed mid-job; meanwhile a half-written page lands in its file (its progress never saved).
    const jobId = status.split('/').pop()!;
    await booted.restart({ bulk: { pageSize: 2, saveEvery: 1 } }, () => {
      const dir = join(booted.dataDir, 'bulk', 'export', jobId);
      expect(readdirSync(dir)).toContain('Patient.ndjson');
      appendFileSync(join(dir, 'Patient.ndjson'), '{"resourceType":"Patient","id":"half-writ');
    });
    await booted.app.bulk!.exports.settled();
    const manifest = JSON.parse((await send(booted.app, { url: status }, 200)).body);
    expect(manifest.output).toHaveLength(1);
    expect(manifest.output[0].count).toBe(7);
    const file = await send(booted.app, { url: new URL(manifest.output[0].url).pathname }, 200);
    const exported = file.body
      .split('\n')
      .filter((l) => l !== '')
      .map((l) => JSON.parse(l).id);
    expect(exported.sort()).toEqual([...ids].sort());
  });
});
