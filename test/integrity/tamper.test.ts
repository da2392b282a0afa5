/**
 * Tamper test: a stored version changed or deleted directly in the SQLite file, behind the service's back, is
 * named (and only it) by $verify's verifier and by `hie-ledger verify`; so is every altered custodian, patient
 * compartment and search index row, and a version forged together with every local copy of its hash.
 */
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runVerify } from '../../src/commands/verify.js';
import type { StoredVersion } from '../../src/fhir/store/resource-store.js';
import { decodeJson, encodeJson } from '../../src/fhir/store/json-codec.js';
import { asSchema6 } from '../store/schema6.js';
import { pendingAnchorOf } from '../../src/integrity/anchorer.js';
import { canonicalizeText } from '../../src/fhir/canonical.js';
import { canonicalOfVersion, leafHashOf, leafHashOfCanonical } from '../../src/integrity/hashing.js';
import { dataDirConfig, observation, openFixture } from './helpers.js';
import { registerJsonFunctions } from '../../src/fhir/store/json-codec.js';

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
  const code = await runVerify({
    ...dataDirConfig(dataDir),
    progress: false,
    out: out.stream,
    err: err.stream,
  });
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
    // The text is kept deflated (json-codec.ts): the forger decodes, edits and encodes it again.
    const stored = db.prepare(`SELECT json FROM resource_version WHERE ${where}`).pluck().get() as Buffer;
    db.prepare(`UPDATE resource_version SET json = ? WHERE ${where}`).run(
      encodeJson(decodeJson(stored).replace('3.25', '3.26')),
    );
    const json = decodeJson(
      db.prepare(`SELECT json FROM resource_version WHERE ${where}`).pluck().get() as Buffer,
    );
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

/** The `ROW` lines of a verify run: the named row, without the reason. */
const rowsFlagged = (output: string) =>
  output
    .split('\n')
    .filter((line) => line.startsWith('ROW  '))
    .map((line) => line.slice(5).split('  (')[0]);

describe('tampering with the rows that decide access and search', () => {
  let dir: string;

  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'hie-tamper-rows-'));
    const f = await openFixture({ batchSize: 4 }, dir);
    await f.write({ resourceType: 'Patient', id: 'pa' });
    await f.write({ resourceType: 'Patient', id: 'pb' });
    for (let i = 1; i <= 4; i++) await f.write(observation(`o${i}`, `${i}.5`, 'Patient/pa'));
    await f.integrity.anchorer.drain();
    await f.write(observation('o5', '5.5', 'Patient/pa')); // stays pending
    await f.write(observation('o6', '6.5', 'Patient/pa'));
    await f.write(observation('o6', '6.75', 'Patient/pa')); // two versions
    await f.close();
  });

  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('passes untouched, with the compartments and index rows the write path stored', async () => {
    const result = await verifyCli(dir);
    expect(result.out).toContain('OK: every stored version matches the ledger.');
    expect(result.code).toBe(0);
  });

  it('names each altered custodian, compartment and search index row, and the version or resource', async () => {
    const db = new Database(path.join(dir, 'resources.sqlite'));
    const version = (id: string) => `resource_type = 'Observation' AND id = '${id}' AND version_id = 1`;
    // Another organisation made custodian of an anchored version, and of a pending one.
    db.prepare(`UPDATE resource_version SET custodian = 'Organization/org2' WHERE ${version('o1')}`).run();
    db.prepare(`UPDATE resource_version SET custodian = 'Organization/org2' WHERE ${version('o5')}`).run();
    // Another patient's compartment added: that patient (and their grantees) could read it.
    db.prepare(
      `UPDATE resource_version SET patients = '["Patient/pa","Patient/pb"]' WHERE ${version('o2')}`,
    ).run();
    // A search index row pointed at another patient, and one removed.
    const moved = db
      .prepare(
        `UPDATE search_index SET reference = 'Patient/pb' WHERE seq = (SELECT seq FROM resource_current WHERE resource_type = 'Observation' AND id = 'o3') AND param_key IN (SELECT id FROM search_param_key WHERE param = 'subject')`,
      )
      .run().changes;
    const removed = db
      .prepare(
        `DELETE FROM search_index WHERE seq = (SELECT seq FROM resource_current WHERE resource_type = 'Observation' AND id = 'o4') AND param_key IN (SELECT id FROM search_param_key WHERE param = 'status')`,
      )
      .run().changes;
    const ords = db
      .prepare(
        `SELECT ord FROM search_index WHERE seq = (SELECT seq FROM resource_current WHERE resource_type = 'Observation' AND id = 'o3') AND param_key IN (SELECT id FROM search_param_key WHERE param = 'subject')`,
      )
      .all() as { ord: number }[];
    // The current pointer turned back to an older version: reads would serve it.
    const turnedBack = db
      .prepare(
        `UPDATE resource_current SET version_id = 1, seq = (SELECT seq FROM resource_version WHERE ${version('o6')}) ` +
          `WHERE resource_type = 'Observation' AND id = 'o6'`,
      )
      .run().changes;
    db.close();
    expect([moved, removed, turnedBack]).toEqual([1, 1, 1]);

    const f = await openFixture({ batchSize: 4 }, dir);
    const o4 = await f.store.read('Observation', 'o4');
    const { extractIndex } = await import('../../src/fhir/search/index-entries.js');
    const statusOrd = extractIndex(JSON.parse(o4!.json!)).findIndex((e) => e.param === 'status');
    // $verify names the custodian change too: the leaf (format 2) commits to the custodian.
    const o1 = await f.integrity.verifier.verifyVersion((await f.store.read('Observation', 'o1'))!);
    expect(o1).toMatchObject({ status: 'mismatch', verified: false, leafVersion: 2 });
    await f.close();

    const result = await verifyCli(dir);
    expect(result.code).toBe(1);
    expect(flagged(result.out)).toEqual([]);
    expect(rowsFlagged(result.out).sort()).toEqual(
      [
        'Observation/o1/_history/1 custodian',
        'Observation/o5/_history/1 custodian',
        'Observation/o2/_history/1 patients',
        `Observation/o3/_history/1 search_index#${ords[0]!.ord} (subject)`,
        `Observation/o4/_history/1 search_index#${statusOrd} (status)`,
        'Observation/o6 resource_current',
      ].sort(),
    );
    expect(result.out).toContain(
      'ROW  Observation/o1/_history/1 custodian  (its custodian differs from the one anchored (Organization/org1)',
    );
    // No patient id is written into the reasons: only the row is named.
    expect(result.out).not.toMatch(/patients {2}\(.*Patient\/pb/);
  });
});

describe('a version rewritten with every local copy of its hash', () => {
  it('is named by the leaf tag on the ledger, not only as its batch', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'hie-tamper-forge-'));
    try {
      const f = await openFixture({ batchSize: 4 }, dir);
      for (let i = 0; i < 4; i++) await f.write(observation(`f${i}`, `${i}.25`));
      await f.integrity.anchorer.drain();
      await f.close();

      // The forger rewrites the text, recomputes its leaf hash with the stored salt, and writes that hash into the
      // store's anchor row and into the batch journal: every local copy agrees with the forged text.
      const db = new Database(path.join(dir, 'resources.sqlite'));
      const where = `resource_type = 'Observation' AND id = 'f2' AND version_id = 1`;
      const stored = db.prepare(`SELECT json FROM resource_version WHERE ${where}`).pluck().get() as Buffer;
      db.prepare(`UPDATE resource_version SET json = ? WHERE ${where}`).run(
        encodeJson(decodeJson(stored).replace('2.25', '9.25')),
      );
      const row = db
        .prepare(
          `SELECT v.json, v.custodian, lower(hex(a.salt)) AS salt FROM resource_version v JOIN anchor a ON a.seq = v.seq WHERE v.${where.replaceAll(' AND ', ' AND v.')}`,
        )
        .get() as { json: Buffer; custodian: string; salt: string };
      const forged = leafHashOf(row.salt, canonicalizeText(decodeJson(row.json)), 2, row.custodian);
      // The store's anchor row (hashes as 32 bytes, keyed by the version's seq: schema migration 7).
      db.prepare(
        `UPDATE anchor SET leaf_hash = ? WHERE seq = (SELECT seq FROM resource_version WHERE ${where})`,
      ).run(Buffer.from(forged, 'hex'));
      db.close();
      const journal = new Database(path.join(dir, 'integrity.sqlite'));
      expect(
        journal.prepare(`UPDATE integrity_batch_members SET leaf_hash = ? WHERE ${where}`).run(forged)
          .changes,
      ).toBe(1);
      journal.close();

      const result = await verifyCli(dir);
      expect(result.code).toBe(1);
      expect(flagged(result.out).filter((l) => !l.startsWith('BATCH'))).toEqual([
        'ALTERED Observation/f2/_history/1',
      ]);
      expect(result.out).toContain(
        'ALTERED  Observation/f2/_history/1  (no longer matches its leaf tag on the ledger)',
      );
      // The journal is named as altered too, at that leaf.
      expect(result.out).toMatch(
        /BATCH {2}Observation\/f2\/_history\/1 {2}\(the journal’s hash of this leaf differs/,
      );
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('anchors written before leaf format 2', () => {
  it('still verify (format 1, untagged batches, old journal), beside new format-2 anchors', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'hie-tamper-v1-'));
    try {
      // A data directory as the previous release left it: format-1 leaves, batches without tags, no leaf_version
      // column in the journal nor in the store (schema 1).
      let f = await openFixture({ batchSize: 3, leafTags: false }, dir);
      const v1Anchor = (version: StoredVersion & { json?: string }) => {
        const anchor = pendingAnchorOf(f.integrity.keyring, version);
        return {
          ...anchor,
          leafHash: leafHashOfCanonical(anchor.salt, canonicalOfVersion(version)),
          leafVersion: undefined,
        };
      };
      for (let i = 0; i < 5; i++) {
        const resource = observation(`old${i}`, `${i}.50`);
        await f.store.write({
          resourceType: 'Observation',
          id: resource.id!,
          resource,
          method: 'PUT',
          patients: [],
          index: (await import('../../src/fhir/search/index-entries.js')).extractIndex(resource),
          custodian: 'Organization/org1',
          anchor: v1Anchor,
        });
      }
      await f.integrity.anchorer.drain();
      await f.close();
      const store = new Database(path.join(dir, 'resources.sqlite'));
      asSchema6(store); // migration 7 (JSON deflated, anchors' hashes as bytes) came later too
      store.exec(
        `ALTER TABLE anchor DROP COLUMN leaf_version; DELETE FROM schema_version WHERE version = 2;` +
          // Migration 3 (access keys) came later; the previous release had neither.
          `DROP TABLE access_key; DELETE FROM schema_version WHERE version = 3;` +
          // Nor migrations 4 (full text), 5 (quantities by unit) and 6 (index rows keyed by seq).
          `CREATE TABLE old_index (resource_type TEXT NOT NULL, id TEXT NOT NULL, ord INTEGER NOT NULL, ` +
          `param TEXT NOT NULL, type TEXT NOT NULL, system TEXT, value TEXT, low REAL, high REAL, reference TEXT, ` +
          `PRIMARY KEY (resource_type, id, ord)) WITHOUT ROWID; ` +
          `INSERT INTO old_index SELECT c.resource_type, c.id, si.ord, si.param, si.type, si.system, si.value, ` +
          `si.low, si.high, si.reference FROM search_index si JOIN resource_current c ON c.seq = si.seq; ` +
          `DROP TABLE search_index; ALTER TABLE old_index RENAME TO search_index; DROP TABLE search_text; ` +
          `DROP TABLE index_rebuild; DROP INDEX resource_current_type_seq; DELETE FROM schema_version WHERE version >= 4;`,
      );
      store.close();
      const journal = new Database(path.join(dir, 'integrity.sqlite'));
      journal.exec(`ALTER TABLE integrity_batch_members DROP COLUMN leaf_version`);
      journal.close();

      // The new release opens it, writes format-2 anchors in tagged batches, and everything verifies.
      f = await openFixture({ batchSize: 3 }, dir);
      // As the service does on opening it (app.ts): the index rebuild migration 5 asked for gives the old versions
      // the full-text documents that release did not have (the audit compares them).
      const { extractIndex } = await import('../../src/fhir/search/index-entries.js');
      const { parseFhirJson } = await import('../../src/fhir/fhir-json.js');
      expect(await f.store.rebuildIndex!((json) => extractIndex(parseFhirJson(json)))).toBe(5);
      for (let i = 0; i < 2; i++) await f.write(observation(`new${i}`, `${i}.75`));
      await f.integrity.anchorer.drain();
      const old = await f.integrity.verifier.verifyVersion((await f.store.read('Observation', 'old1'))!);
      expect(old).toMatchObject({ status: 'anchored', verified: true, leafVersion: 1 });
      expect(old.custodian).toBeUndefined();
      const fresh = await f.integrity.verifier.verifyVersion((await f.store.read('Observation', 'new1'))!);
      expect(fresh).toMatchObject({ status: 'anchored', verified: true, leafVersion: 2 });
      await f.close();

      const passed = await verifyCli(dir);
      expect(passed.out).toContain('OK: every stored version matches the ledger.');
      expect(passed.out).toContain('5 versions are anchored in leaf format 1');
      expect(passed.code).toBe(0);

      // A format-1 version altered in the text is still named.
      const db = new Database(path.join(dir, 'resources.sqlite'));
      registerJsonFunctions(db); // stored JSON is deflated (store migration 7): alter its text
      db.prepare(
        `UPDATE resource_version SET json = replace(hie_decode_json(json), '3.50', '3.51') WHERE resource_type = 'Observation' AND id = 'old3'`,
      ).run();
      db.close();
      const failed = await verifyCli(dir);
      expect(flagged(failed.out)).toEqual(['ALTERED Observation/old3/_history/1']);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('rows of custom search parameters', () => {
  it('are left out of the audit: they depend on when $reindex ran, not on the text alone', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'hie-tamper-custom-'));
    try {
      const f = await openFixture({ batchSize: 2 }, dir);
      const pc = await f.write({ resourceType: 'Patient', id: 'pc' });
      await f.write({ resourceType: 'Patient', id: 'pd' });
      await f.integrity.anchorer.drain();
      // As $reindex leaves them (src/bulk/reindex.ts): the base rows, plus those of a custom parameter.
      const rows = await f.store.indexEntries!('Patient', 'pc');
      const custom = { param: 'eye-colour', type: 'token' as const, value: 'blue' };
      expect(await f.store.replaceIndex!(pc, [...rows, custom])).toBe(true);
      await f.close();
      const result = await verifyCli(dir);
      expect(rowsFlagged(result.out)).toEqual([]);
      expect(result.out).toContain('OK: every stored version matches the ledger.');
      expect(result.code).toBe(0);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
