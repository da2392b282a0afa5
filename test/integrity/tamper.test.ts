/**
 * Tamper test: a stored version changed or deleted directly in the SQLite file, behind the service's back, is
 * named (and only it) by $verify's verifier and by `hie-ledger verify`.
 */
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runVerify } from '../../src/commands/verify.js';
import type { StoredVersion } from '../../src/fhir/store/resource-store.js';
import { observation, openFixture } from './helpers.js';

function capture(): { stream: Writable; text: () => string } {
  let text = '';
  const stream = new Writable({
    write(chunk, _enc, done) {
      text += String(chunk);
      done();
    },
  });
  return { stream, text: () => text };
}

async function verifyCli(dataDir: string) {
  const out = capture();
  const err = capture();
  const code = await runVerify({ dataDir, progress: false, out: out.stream, err: err.stream });
  return { code, out: out.text(), err: err.text() };
}

const flagged = (output: string) =>
  output
    .split('\n')
    .filter((line) => /^(ALTERED|MISSING|UNANCHORED|BATCH|UNVERIFIABLE) /.test(line))
    .map((line) => line.split(/\s+/).slice(0, 2).join(' '));

describe('tampering with the store file', () => {
  let dir: string;
  let versions: StoredVersion[];

  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'hie-tamper-'));
    const f = await openFixture({ batchSize: 5 }, dir);
    versions = [];
    for (let i = 0; i < 12; i++) versions.push(await f.write(observation(`t${i}`, `${i}.25`)));
    versions.push(await f.write(observation('t7', '7.50'))); // t7 has two versions
    versions.push(await f.remove('Observation', 't9'));
    await f.integrity.anchorer.drain();
    // Two more writes stay pending (not yet on the ledger): not an alteration.
    versions.push(await f.write(observation('p1', '1')));
    versions.push(await f.write(observation('p2', '2')));
    await f.close();
  });

  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('passes before anything is touched', async () => {
    const result = await verifyCli(dir);
    expect(result.out).toContain('OK: every stored version matches the ledger.');
    expect(result.out).toMatch(
      /Checked 16 stored versions and 3 anchored batches: 14 anchored, 2 pending, 0 erased/,
    );
    expect(result.code).toBe(0);
    // The report is recorded.
    expect((await readdir(path.join(dir, 'audits'))).length).toBe(1);
  });

  it('names exactly the altered version, in $verify and in hie-ledger verify', async () => {
    const db = new Database(path.join(dir, 'resources.sqlite'));
    // Alter the digits of the JSON number itself: 3.25 -> 3.26.
    const where = `resource_type = 'Observation' AND id = 't3' AND version_id = 1`;
    db.prepare(`UPDATE resource_version SET json = replace(json, '3.25', '3.26') WHERE ${where}`).run();
    const json = db.prepare(`SELECT json FROM resource_version WHERE ${where}`).pluck().get() as string;
    db.close();
    expect(json).toContain('"value":3.26');

    const f = await openFixture({ batchSize: 5 }, dir);
    try {
      const statuses = new Map<string, string>();
      for (const v of versions) {
        const stored = await f.store.vread(v.resourceType, v.id, v.versionId);
        const result = await f.integrity.verifier.verifyVersion(stored!);
        statuses.set(result.reference, result.status);
        if (result.reference === 'Observation/t3/_history/1') {
          expect(result).toMatchObject({ status: 'mismatch', verified: false });
          expect(result.hash).not.toBe(result.expectedHash);
        }
      }
      const mismatches = [...statuses].filter(([, s]) => s === 'mismatch').map(([r]) => r);
      expect(mismatches).toEqual(['Observation/t3/_history/1']);
      expect(statuses.get('Observation/p1/_history/1')).toBe('pending');
      expect(statuses.get('Observation/t9/_history/2')).toBe('anchored');
    } finally {
      await f.close();
    }

    const result = await verifyCli(dir);
    expect(result.code).toBe(1);
    expect(flagged(result.out)).toEqual(['ALTERED Observation/t3/_history/1']);
  });

  it('names a version whose row was deleted as missing', async () => {
    const db = new Database(path.join(dir, 'resources.sqlite'));
    // As someone bypassing the service would: no foreign keys, and without the store's keep-versions trigger.
    db.pragma('foreign_keys = OFF');
    db.exec('DROP TRIGGER IF EXISTS resource_version_keep');
    const deleted = db
      .prepare(
        `DELETE FROM resource_version WHERE resource_type = 'Observation' AND id = 't7' AND version_id = 1`,
      )
      .run().changes;
    db.close();
    expect(deleted).toBe(1);

    const result = await verifyCli(dir);
    expect(result.code).toBe(1);
    expect(flagged(result.out).sort()).toEqual([
      'ALTERED Observation/t3/_history/1',
      'MISSING Observation/t7/_history/1',
    ]);
    expect(result.out).toMatch(
      /MISSING {2}Observation\/t7\/_history\/1 {2}\(anchored in batch [0-9a-f]{64}; no longer in the store\)/,
    );
  });
});
