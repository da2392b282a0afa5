import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { SqliteResourceStore } from '../../src/fhir/store/sqlite/sqlite-store.js';
import { MIGRATIONS } from '../../src/fhir/store/sqlite/schema.js';
import { NewerStoreSchemaError } from '../../src/fhir/store/schema-version.js';
import { asSchema6, asSchema10, asSchema11, asSchema12 } from './schema6.js';
import { describeResourceStoreContract } from './contract.js';
import { SqliteSearch } from '../../src/fhir/store/sqlite/sqlite-search.js';
import { parseSearch } from '../../src/fhir/search/parse.js';
import { extractIndex } from '../../src/fhir/search/index-entries.js';
import type { FhirResource } from '../../src/fhir/fhir-json.js';
import type {
  AnchorState,
  IndexEntry,
  PendingAnchor,
  StoredVersion,
  VersionKey,
} from '../../src/fhir/store/resource-store.js';

const tempDirs: string[] = [];
function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'hie-store-'));
  tempDirs.push(dir);
  return dir;
}
afterAll(() => {
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
});

async function openStore(file: string): Promise<SqliteResourceStore> {
  const store = new SqliteResourceStore({ file });
  await store.init();
  return store;
}

describeResourceStoreContract('sqlite :memory:', () => openStore(':memory:'));
describeResourceStoreContract('sqlite :memory: without group commit', async () => {
  const store = new SqliteResourceStore({ file: ':memory:', groupCommit: false });
  await store.init();
  return store;
});
describeResourceStoreContract('sqlite file', () => openStore(join(tempDir(), 'resources.sqlite')));

describe('SqliteResourceStore', () => {
  it('keeps its data in the file across close and reopen, and migrates once', async () => {
    const file = join(tempDir(), 'resources.sqlite');
    const first = await openStore(file);
    await first.init();
    const v1 = await first.write({
      resourceType: 'Patient',
      id: 'a',
      method: 'PUT',
      resource: { resourceType: 'Patient' },
    });
    const v2 = await first.write({
      resourceType: 'Patient',
      id: 'a',
      method: 'PUT',
      resource: { resourceType: 'Patient', active: true },
      index: [{ param: 'active', type: 'token', value: 'true' }],
    });
    await first.close();

    const second = await openStore(file);
    expect(await second.vread('Patient', 'a', 1)).toEqual(v1);
    expect(await second.read('Patient', 'a')).toEqual(v2);
    expect(await second.indexEntries('Patient', 'a')).toEqual([
      { param: 'active', type: 'token', value: 'true' },
    ]);
    expect(second.db.prepare('SELECT version FROM schema_version').pluck().all()).toEqual(
      MIGRATIONS.map((m) => m.version),
    );
    // The clock continues after the stored instants, even if the wall clock were behind them.
    const v3 = await second.write({
      resourceType: 'Patient',
      id: 'a',
      method: 'PUT',
      resource: { resourceType: 'Patient' },
    });
    expect(v3.versionId).toBe(3);
    expect(v3.lastUpdated > v2.lastUpdated).toBe(true);
    await second.close();
  });

  it('a store made before index rows were keyed by seq (migration 6) keeps every row and its full text when it migrates', async () => {
    const file = join(tempDir(), 'resources.sqlite');
    const store = await openStore(file);
    await store.init();
    const observation = {
      resourceType: 'Observation',
      status: 'final',
      code: { coding: [{ system: 'http://loinc.org', code: '8302-2' }], text: 'Body height' },
      subject: { reference: 'Patient/p1' },
    };
    const index = extractIndex(observation as FhirResource);
    for (const id of ['o1', 'o2'])
      await store.write({ resourceType: 'Observation', id, method: 'PUT', resource: observation, index });
    await store.write({ resourceType: 'Observation', id: 'o2', method: 'PUT', resource: observation, index }); // version 2
    const before = [
      await store.indexEntries('Observation', 'o1'),
      await store.indexEntries('Observation', 'o2'),
    ];
    expect(before[0]!.length).toBeGreaterThan(3);
    // As a store of schema version 5 would be: rows keyed by (type, id, ord), FTS5 documents numbered by a table.
    asSchema6(store.db);
    store.db.exec(
      'CREATE TABLE old_index (resource_type TEXT NOT NULL, id TEXT NOT NULL, ord INTEGER NOT NULL, param TEXT NOT NULL, ' +
        'type TEXT NOT NULL, system TEXT, value TEXT, low REAL, high REAL, reference TEXT, ' +
        'PRIMARY KEY (resource_type, id, ord)) WITHOUT ROWID; ' +
        'INSERT INTO old_index SELECT c.resource_type, c.id, si.ord, si.param, si.type, si.system, si.value, si.low, ' +
        'si.high, si.reference FROM search_index si JOIN resource_current c ON c.seq = si.seq; ' +
        'DROP TABLE search_index; ALTER TABLE old_index RENAME TO search_index; DROP TABLE search_text; ' +
        'CREATE TABLE search_text_doc (docid INTEGER PRIMARY KEY, resource_type TEXT NOT NULL, id TEXT NOT NULL, ' +
        'field TEXT NOT NULL, UNIQUE (resource_type, id, field)); ' +
        "CREATE VIRTUAL TABLE search_text USING fts5(body, content = '', contentless_delete = 1, tokenize = 'ascii'); " +
        'DELETE FROM schema_version WHERE version >= 6;',
    );
    // whose full-text rows kept their words
    for (const e of index.filter((e) => e.type === 'special'))
      store.db.prepare('UPDATE search_index SET system = ? WHERE param = ?').run(e.system!, e.param);
    await store.close();
    const reopened = await openStore(file);
    await reopened.init();
    expect([
      await reopened.indexEntries('Observation', 'o1'),
      await reopened.indexEntries('Observation', 'o2'),
    ]).toEqual(before);
    // each row under its resource's current version, and the full text indexed again under 2 seq + field
    const seqs = reopened.db
      .prepare('SELECT DISTINCT si.seq FROM search_index si ORDER BY si.seq')
      .pluck()
      .all();
    // the words are in the full-text index only
    expect(
      reopened.db
        .prepare("SELECT count(*) FROM search_index WHERE type = 'special' AND system IS NOT NULL")
        .pluck()
        .get(),
    ).toBe(0);
    expect(seqs).toEqual(
      reopened.db
        .prepare("SELECT seq FROM resource_current WHERE resource_type = 'Observation' ORDER BY seq")
        .pluck()
        .all(),
    );
    const search = (params: Record<string, string[]>) =>
      new SqliteSearch(reopened.db)
        .search({ query: parseSearch(params, { resourceType: 'Observation' }), canRead: () => true })
        .versions.map((v) => v.id)
        .sort();
    expect(search({ _content: ['height'] })).toEqual(['o1', 'o2']);
    expect(search({ code: ['http://loinc.org|8302-2'] })).toEqual(['o1', 'o2']);
    // writes after the upgrade replace the version's rows (the previous seq's rows are gone)
    await reopened.write({ resourceType: 'Observation', id: 'o1', method: 'DELETE' });
    expect(search({ _content: ['height'] })).toEqual(['o2']);
    await reopened.close();
  });

  it('a store made before migration 7 (JSON as text, hashes as hex text) reads back every version and anchor the same when it migrates', async () => {
    const file = join(tempDir(), 'resources.sqlite');
    const store = await openStore(file);
    const sha256 = (...parts: string[]) => {
      const hash = createHash('sha256');
      for (const part of parts) hash.update(part);
      return hash.digest('hex');
    };
    // A salted hash of the exact stored text, as the integrity path makes it; one version's values are not
    // lowercase hex (kept as text).
    const anchor = (version: StoredVersion): PendingAnchor => {
      const odd = version.id === 'odd';
      const salt = odd ? 'ABCDEF' : sha256('salt', version.id, String(version.versionId));
      return {
        resourceType: version.resourceType,
        id: version.id,
        versionId: version.versionId,
        salt,
        leafHash: sha256(salt, version.json ?? ''),
        ledgerKey: odd
          ? `key:${version.id}`
          : sha256(version.resourceType, version.id, String(version.versionId)),
        leafVersion: 2,
      };
    };
    const patient = (name: string, weight: string) =>
      JSON.parse(
        `{"resourceType":"Patient","name":[{"text":"${name}"}],"extension":[{"url":"http://example.org/weight","valueDecimal":${weight}}]}`,
      ) as FhirResource;
    const keys: VersionKey[] = [];
    const put = async (id: string, resource: FhirResource) =>
      keys.push(await store.write({ resourceType: 'Patient', id, method: 'PUT', resource, anchor }));
    await put('a', patient('Zoë Ærø 日本 🙂', '1.50'));
    await put('a', patient('Zoë Ærø', '105.00'));
    await put('b', patient('B '.repeat(400), '1e2'));
    await put('odd', patient('Odd', '0.10'));
    keys.push(await store.write({ resourceType: 'Patient', id: 'b', method: 'DELETE', anchor }));
    await store.markAnchored(keys.slice(0, 2), {
      transactionId: sha256('tx1'),
      blockNumber: 7,
      batchId: sha256('batch1'),
      root: sha256('root1'),
      leafCount: 2,
      leafIndexes: [0, 1],
    });
    await store.markAnchored([keys[3]!], {
      transactionId: 'tx-2',
      blockNumber: 8,
      batchId: 'batch-2',
      root: sha256('root2'),
      leafCount: 1,
      leafIndexes: [0],
    });
    await store.eraseSalts('Patient', 'a');
    const snapshot = async (s: SqliteResourceStore) => {
      const all: unknown[] = [];
      for await (const entry of s.allVersions()) all.push(entry);
      return {
        all,
        vread: await s.vreadMany(keys),
        states: await s.anchorStates(keys),
        pending: await s.pendingAnchors(10),
      };
    };
    const before = await snapshot(store);
    expect(before.states.map((state) => state?.status)).toEqual([
      'erased',
      'erased',
      'pending',
      'anchored',
      'pending',
    ]);
    // As a store of schema version 6 would be.
    asSchema6(store.db);
    const storedTexts = store.db.prepare('SELECT json FROM resource_version ORDER BY seq').pluck().all();
    expect(storedTexts).toEqual(before.vread.map((v) => v?.json ?? null));
    await store.close();

    const reopened = await openStore(file);
    expect(await snapshot(reopened)).toEqual(before);
    // Stored in the new forms: JSON deflated, hashes as 32 bytes (the non-hex values as they were).
    expect(
      reopened.db.prepare('SELECT typeof(json) FROM resource_version ORDER BY seq').pluck().all(),
    ).toEqual(['blob', 'blob', 'blob', 'blob', 'null']);
    expect(
      reopened.db
        .prepare('SELECT typeof(leaf_hash), length(leaf_hash), typeof(ledger_key) FROM anchor ORDER BY seq')
        .raw()
        .all(),
    ).toEqual([
      ['blob', 32, 'blob'],
      ['blob', 32, 'blob'],
      ['blob', 32, 'blob'],
      ['blob', 32, 'text'],
      ['blob', 32, 'blob'],
    ]);
    // Every anchored leaf still verifies against the text read back.
    for (const { version, anchor: state } of (await snapshot(reopened)).all as {
      version: StoredVersion;
      anchor?: AnchorState;
    }[]) {
      if (state && state.status !== 'erased')
        expect(state.leafHash).toBe(sha256(state.salt, version.json ?? ''));
    }
    // The batch's columns are kept once.
    expect(reopened.db.prepare('SELECT count(*) FROM anchor_batch').pluck().get()).toBe(2);
    await reopened.close();
  });

  it('a store made before migration 11 (index rows naming type and parameter as text) keeps every row and answers every search the same when it migrates', async () => {
    const file = join(tempDir(), 'resources.sqlite');
    const store = await openStore(file);
    const observation = (code: string, value: number, date: string, patient: string) =>
      ({
        resourceType: 'Observation',
        status: 'final',
        code: { coding: [{ system: 'http://loinc.org', code, display: `Body height ${code}` }] },
        subject: { reference: `Patient/${patient}` },
        effectiveDateTime: date,
        valueQuantity: { value, unit: 'cm', system: 'http://unitsofmeasure.org', code: 'cm' },
      }) as FhirResource;
    const put = (resourceType: string, id: string, resource: FhirResource) =>
      store.write({ resourceType, id, method: 'PUT', resource, index: extractIndex(resource) });
    await put('Patient', 'p1', {
      resourceType: 'Patient',
      name: [{ family: 'Ærø' }],
      birthDate: '1970-01-01',
    });
    await put('Observation', 'o1', observation('8302-2', 170, '2020-01-01', 'p1'));
    await put('Observation', 'o2', observation('8302-2', 182, '2021-06-01', 'p1'));
    await put('Observation', 'o3', observation('29463-7', 70, '2021-06-02', 'p2'));
    const ids = ['Patient/p1', 'Observation/o1', 'Observation/o2', 'Observation/o3'];
    const entries = async (s: SqliteResourceStore) =>
      Promise.all(ids.map((key) => s.indexEntries(key.split('/')[0]!, key.split('/')[1]!)));
    const searches: [string, Record<string, string[]>][] = [
      ['Observation', { code: ['http://loinc.org|8302-2'] }],
      ['Observation', { subject: ['Patient/p1'] }],
      ['Observation', { date: ['ge2021-01-01'] }],
      ['Observation', { 'value-quantity': ['gt175|http://unitsofmeasure.org|cm'] }],
      ['Observation', { _content: ['height'] }],
      ['Observation', { date: ['ge2021-01-01'], _sort: ['-date'] }],
      ['Patient', { family: ['ærø'] }],
      ['Patient', { birthdate: ['1970'] }],
    ];
    const answers = (s: SqliteResourceStore) =>
      searches.map(([resourceType, params]) =>
        new SqliteSearch(s.db)
          .search({ query: parseSearch(params, { resourceType }), canRead: () => true })
          .versions.map((v) => v.id),
      );
    const before = { entries: await entries(store), answers: answers(store) };
    expect(before.answers).toEqual([
      ['o1', 'o2'],
      ['o1', 'o2'],
      ['o2', 'o3'],
      ['o2'],
      ['o1', 'o2', 'o3'],
      ['o3', 'o2'],
      ['p1'],
      ['p1'],
    ]);
    // As a store of schema version 10 would be.
    asSchema10(store.db);
    expect(
      store.db.prepare('SELECT count(*) FROM search_index WHERE resource_type = ?').pluck().get('Patient'),
    ).toBe(before.entries[0]!.length);
    await store.close();

    const reopened = await openStore(file);
    expect(await entries(reopened)).toEqual(before.entries);
    expect(answers(reopened)).toEqual(before.answers);
    // One key per (type, parameter) pair, and the rows carry it instead of the two texts.
    const pairs = reopened.db
      .prepare('SELECT resource_type, param FROM search_param_key ORDER BY resource_type, param')
      .raw()
      .all() as [string, string][];
    const expectedPairs = [
      ...new Set(
        before.entries.flatMap((rows, i) => rows!.map((row) => `${ids[i]!.split('/')[0]}\u0000${row.param}`)),
      ),
    ]
      .sort()
      .map((pair) => pair.split('\u0000'));
    expect(pairs).toEqual(expectedPairs);
    const columns = (reopened.db.prepare('PRAGMA table_info(search_index)').all() as { name: string }[]).map(
      (c) => c.name,
    );
    expect(columns).toContain('param_key');
    expect(columns).not.toContain('resource_type');
    expect(columns).not.toContain('param');
    // Writes after the upgrade use the same keys; the full text is still kept in step by the triggers.
    await reopened.write({
      resourceType: 'Observation',
      id: 'o1',
      method: 'PUT',
      resource: observation('29463-7', 171, '2020-01-01', 'p1'),
      index: extractIndex(observation('29463-7', 171, '2020-01-01', 'p1')),
    });
    await reopened.write({ resourceType: 'Observation', id: 'o2', method: 'DELETE' });
    expect(reopened.db.prepare('SELECT count(*) FROM search_param_key').pluck().get()).toBe(pairs.length);
    const search = (params: Record<string, string[]>) =>
      new SqliteSearch(reopened.db)
        .search({ query: parseSearch(params, { resourceType: 'Observation' }), canRead: () => true })
        .versions.map((v) => v.id);
    expect(search({ code: ['http://loinc.org|29463-7'] })).toEqual(['o3', 'o1']);
    expect(search({ _content: ['height'] })).toEqual(['o3', 'o1']);
    await reopened.close();
  });

  it('a store written at migration 11 (full-text documents kept by triggers on their index rows) answers the same _text and _content searches when it migrates', async () => {
    const file = join(tempDir(), 'resources.sqlite');
    const store = await openStore(file);
    const observation = (words: string, narrative?: string) =>
      ({
        resourceType: 'Observation',
        status: 'final',
        code: { coding: [{ system: 'http://loinc.org', code: '8302-2' }], text: words },
        ...(narrative
          ? {
              text: {
                status: 'generated',
                div: `<div xmlns="http://www.w3.org/1999/xhtml">${narrative}</div>`,
              },
            }
          : {}),
      }) as FhirResource;
    const resources: [string, FhirResource][] = [
      ['o1', observation('Body height', 'Bone marrow biopsy')],
      ['o2', observation('Body height standing')],
      ['o3', observation('Liver metastases', 'Ærø liver')],
    ];
    for (const [id, resource] of resources)
      await store.write({
        resourceType: 'Observation',
        id,
        method: 'PUT',
        resource,
        index: extractIndex(resource),
      });
    const entries = (s: SqliteResourceStore) =>
      Promise.all(resources.map(([id]) => s.indexEntries('Observation', id)));
    const before = await entries(store);
    // As migration 11 left a store: a full-text row per document and the triggers; each document written again
    // through them (the row inserted with its words: the trigger indexes them and empties the row).
    asSchema11(store.db);
    for (const [id, resource] of resources) {
      const seq = store.db
        .prepare("SELECT seq FROM resource_current WHERE resource_type = 'Observation' AND id = ?")
        .pluck()
        .get(id) as number;
      store.db.prepare("DELETE FROM search_index WHERE seq = ? AND type = 'special'").run(seq);
      let ord = store.db
        .prepare('SELECT count(*) FROM search_index WHERE seq = ?')
        .pluck()
        .get(seq) as number;
      for (const e of extractIndex(resource).filter((e) => e.type === 'special'))
        store.db
          .prepare(
            'INSERT INTO search_index (seq, ord, param_key, type, system) VALUES (?, ?, ' +
              "(SELECT id FROM search_param_key WHERE resource_type = 'Observation' AND param = ?), 'special', ?)",
          )
          .run(seq, ord++, e.param, e.system!);
    }
    const specialRows = () =>
      store.db.prepare("SELECT count(*) FROM search_index WHERE type = 'special'").pluck().get();
    expect(specialRows()).toBe(5);
    const searches: Record<string, string[]>[] = [
      { _content: ['height'] },
      { _content: ['"body height standing"'] },
      { _content: ['marrow OR metastases'] },
      { _text: ['marrow'] },
      { _text: ['ærø'] },
      { _text: ['height'] },
    ];
    const answers = (s: SqliteResourceStore) =>
      searches.map((params) =>
        new SqliteSearch(s.db)
          .search({ query: parseSearch(params, { resourceType: 'Observation' }), canRead: () => true })
          .versions.map((v) => v.id)
          .sort(),
      );
    const expected = [['o1', 'o2'], ['o2'], ['o1', 'o3'], ['o1'], ['o3'], []];
    expect(answers(store)).toEqual(expected);
    await store.close();

    const reopened = await openStore(file);
    expect(answers(reopened)).toEqual(expected);
    expect(await entries(reopened)).toEqual(before);
    // The documents are the store's own: no full-text rows, no triggers.
    expect(
      reopened.db.prepare("SELECT count(*) FROM search_index WHERE type = 'special'").pluck().get(),
    ).toBe(0);
    expect(
      reopened.db
        .prepare("SELECT count(*) FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'search_index'")
        .pluck()
        .get(),
    ).toBe(0);
    // Writes after the upgrade replace and delete the documents written by the triggers.
    const o1 = observation('Body weight');
    await reopened.write({
      resourceType: 'Observation',
      id: 'o1',
      method: 'PUT',
      resource: o1,
      index: extractIndex(o1),
    });
    await reopened.write({ resourceType: 'Observation', id: 'o3', method: 'DELETE' });
    expect(answers(reopened)).toEqual([['o2'], ['o2'], [], [], [], []]);
    await reopened.close();
  });

  it('a store made before migration 13 (six indexes on search_index) has three range indexes and answers every search the same', async () => {
    const file = join(tempDir(), 'resources.sqlite');
    const store = await openStore(file);
    const put = (resource: FhirResource) =>
      store.write({
        resourceType: resource.resourceType,
        id: resource.id!,
        method: 'PUT',
        resource,
        index: extractIndex(resource),
      });
    for (const [id, value, date] of [
      ['o1', 170, '2020-01-01'],
      ['o2', 182, '2021-06-01T10:00:00Z'],
      ['o3', 70, '2021-06-02'],
    ] as const)
      await put({
        resourceType: 'Observation',
        id,
        status: 'final',
        code: { coding: [{ system: 'http://loinc.org', code: '8302-2' }] },
        effectiveDateTime: date,
        valueQuantity: { value, unit: 'cm', system: 'http://unitsofmeasure.org', code: 'cm' },
      } as FhirResource);
    await put({
      resourceType: 'RiskAssessment',
      id: 'r1',
      status: 'final',
      subject: { reference: 'Patient/p1' },
      prediction: [{ probabilityDecimal: 0.4 }],
    } as FhirResource);
    const searches: [string, Record<string, string[]>][] = [
      ['Observation', { date: ['ge2021-01-01'] }],
      ['Observation', { date: ['lt2021-06-02'] }],
      ['Observation', { date: ['2021-06'] }],
      ['Observation', { date: ['ge2021-06-01', 'lt2021-06-02'] }],
      ['Observation', { 'value-quantity': ['gt175|http://unitsofmeasure.org|cm'] }],
      ['Observation', { 'value-quantity': ['lt1|http://unitsofmeasure.org|m'] }],
      ['Observation', { 'code-value-quantity': ['http://loinc.org|8302-2$gt100'] }],
      ['Observation', { 'date:missing': ['false'], _sort: ['-date'] }],
      ['RiskAssessment', { probability: ['gt0.3'] }],
    ];
    const answers = (s: SqliteResourceStore) =>
      searches.map(([resourceType, params]) =>
        new SqliteSearch(s.db)
          .search({ query: parseSearch(params, { resourceType }), canRead: () => true })
          .versions.map((v) => v.id),
      );
    const before = answers(store);
    expect(before).toEqual([
      ['o2', 'o3'],
      ['o1', 'o2'],
      ['o2', 'o3'],
      ['o2'],
      ['o2'],
      ['o3'],
      ['o1', 'o2'],
      ['o3', 'o2', 'o1'],
      ['r1'],
    ]);
    const indexes = (s: SqliteResourceStore) =>
      s.db
        .prepare(
          "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'search_index' AND sql IS NOT NULL ORDER BY name",
        )
        .pluck()
        .all();
    asSchema12(store.db);
    expect(indexes(store)).toHaveLength(6);
    await store.close();

    const reopened = await openStore(file);
    expect(indexes(reopened)).toEqual([
      'search_index_range_high',
      'search_index_range_low',
      'search_index_range_seq',
      'search_index_reference',
      'search_index_value',
    ]);
    expect(answers(reopened)).toEqual(before);
    // Writes after the upgrade go to the new indexes.
    await reopened.write({ resourceType: 'Observation', id: 'o1', method: 'DELETE' });
    expect(answers(reopened)[0]).toEqual(['o2', 'o3']);
    expect(answers(reopened)[1]).toEqual(['o2']);
    await reopened.close();
  });

  it('gives a (type, parameter) pair first indexed in a rolled-back transaction no key that another pair later takes', async () => {
    const store = await openStore(':memory:');
    const patient: FhirResource = { resourceType: 'Patient' };
    const only = (param: string): IndexEntry[] => [{ param, type: 'token', value: param }];
    // The pair's key is assigned inside the transaction, which then rolls back: the key's row goes with it.
    await expect(
      store.transaction(async (view) => {
        await view.write({
          resourceType: 'Patient',
          id: 'p',
          method: 'PUT',
          resource: patient,
          index: only('first'),
        });
        throw new Error('changed my mind');
      }),
    ).rejects.toThrow('changed my mind');
    // A batch of group commit first tried whole and, one write failing, stored again write by write.
    const batch = await Promise.allSettled([
      store.write({
        resourceType: 'Patient',
        id: 'q',
        method: 'PUT',
        resource: patient,
        index: only('second'),
      }),
      store.write({ resourceType: 'Patient', id: 'q', method: 'PUT', resource: patient, ifMatch: 7 }),
    ]);
    expect(batch.map((outcome) => outcome.status)).toEqual(['fulfilled', 'rejected']);
    await store.write({
      resourceType: 'Observation',
      id: 'o',
      method: 'PUT',
      resource: { resourceType: 'Observation' },
      index: only('third'),
    });
    await store.write({
      resourceType: 'Patient',
      id: 'p',
      method: 'PUT',
      resource: patient,
      index: only('first'),
    });
    expect((await store.indexEntries('Patient', 'p')).map((e) => e.param)).toEqual(['first']);
    expect((await store.indexEntries('Patient', 'q')).map((e) => e.param)).toEqual(['second']);
    expect((await store.indexEntries('Observation', 'o')).map((e) => e.param)).toEqual(['third']);
    expect(
      store.db.prepare('SELECT resource_type, param FROM search_param_key ORDER BY id').raw().all(),
    ).toEqual([
      ['Patient', 'second'],
      ['Observation', 'third'],
      ['Patient', 'first'],
    ]);
    await store.close();
  });

  it('keeps access keys of current versions, and a store made before them gets them when it migrates', async () => {
    const file = join(tempDir(), 'resources.sqlite');
    const store = await openStore(file);
    await store.init();
    const observation = (subject: string) => ({
      resourceType: 'Observation',
      subject: { reference: subject },
    });
    const put = (id: string, subject: string, custodian?: string) =>
      store.write({
        resourceType: 'Observation',
        id,
        method: 'PUT',
        resource: observation(subject),
        custodian,
        patients: [subject],
      });
    await put('o1', 'Patient/p1', 'Organization/a');
    await put('o2', 'Patient/p1', 'Organization/a');
    await put('o2', 'Patient/p2'); // moved to p2, no custodian any more
    await put('o3', 'Patient/p3', 'Organization/b');
    await store.write({ resourceType: 'Observation', id: 'o3', method: 'DELETE', patients: ['Patient/p3'] });
    const keys = (db: typeof store.db) =>
      db.prepare("SELECT id || ' ' || key FROM access_key ORDER BY id, key").pluck().all();
    const expected = ['o1 Patient/p1', 'o1 custodian|Organization/a', 'o2 Patient/p2'];
    expect(keys(store.db)).toEqual(expected);
    // As a store from before migration 3 would be.
    asSchema6(store.db);
    store.db.exec(
      'DROP TABLE access_key; DELETE FROM schema_version WHERE version = 3;' +
        // Migrations 4 (full text), 5 (quantities by unit) and 6 (index rows by seq) came later still.
        'DROP TABLE search_text; DROP TABLE index_rebuild; DROP INDEX resource_current_type_seq; ' +
        'DROP TABLE search_index; CREATE TABLE search_index (resource_type TEXT NOT NULL, id TEXT NOT NULL, ' +
        'ord INTEGER NOT NULL, param TEXT NOT NULL, type TEXT NOT NULL, system TEXT, value TEXT, low REAL, high REAL, ' +
        'reference TEXT, PRIMARY KEY (resource_type, id, ord)) WITHOUT ROWID; ' +
        'DELETE FROM schema_version WHERE version >= 4;',
    );
    await store.close();
    const reopened = await openStore(file);
    await reopened.init();
    expect(keys(reopened.db)).toEqual(expected);
    // A write replaces the keys of the version before (each removed by its key: no index by id since migration 7);
    // content erasure removes them all.
    await reopened.write({
      resourceType: 'Observation',
      id: 'o2',
      method: 'PUT',
      resource: observation('Patient/p4'),
      custodian: 'Organization/c',
      patients: ['Patient/p4', 'Patient/p5'],
    });
    expect(keys(reopened.db)).toEqual([
      'o1 Patient/p1',
      'o1 custodian|Organization/a',
      'o2 Patient/p4',
      'o2 Patient/p5',
      'o2 custodian|Organization/c',
    ]);
    await reopened.eraseContent('Observation', 'o2');
    expect(keys(reopened.db)).toEqual(['o1 Patient/p1', 'o1 custodian|Organization/a']);
    await reopened.close();
  });

  it('marks a batch of more keys than one statement takes, each with its leaf index, or none of them when one has no anchor', async () => {
    const store = await openStore(':memory:');
    try {
      const anchorOf = (v: StoredVersion): PendingAnchor => ({
        resourceType: v.resourceType,
        id: v.id,
        versionId: v.versionId,
        salt: 'ab'.repeat(32),
        leafHash: createHash('sha256').update(v.id).digest('hex'),
        ledgerKey: createHash('sha256').update(`key ${v.id}`).digest('hex'),
        leafVersion: 1,
      });
      const keys: VersionKey[] = [];
      for (let i = 0; i < 1205; i++) {
        const resource = { resourceType: 'Basic', code: { text: `b${i}` } } as FhirResource;
        const { resourceType, id, versionId } = await store.write({
          resourceType: 'Basic',
          id: `b${i}`,
          method: 'PUT',
          resource,
          anchor: anchorOf,
        });
        keys.push({ resourceType, id, versionId });
      }
      const plain = await store.write({
        resourceType: 'Basic',
        id: 'plain',
        method: 'PUT',
        resource: { resourceType: 'Basic', code: { text: 'plain' } } as FhirResource,
      });
      const batch = { transactionId: 'tx', blockNumber: 3, batchId: 'r', root: 'r', leafCount: 1206 };
      // The key without an anchor last: every earlier statement of the call succeeded, and all is undone.
      await expect(
        store.markAnchored([...keys, plain], { ...batch, leafIndexes: [...keys.keys(), 1205] }),
      ).rejects.toThrow('no anchor queued for Basic/plain/_history/1');
      expect(await store.pendingAnchors(2000)).toHaveLength(1205);

      // Leaf positions in reverse order of the keys; one key repeated keeps its last leaf index.
      const reversed = [...keys].reverse();
      await store.markAnchored([keys[0]!, ...reversed], {
        ...batch,
        leafCount: 1205,
        leafIndexes: [9999, ...reversed.keys()],
      });
      expect(await store.pendingAnchors(10)).toEqual([]);
      const states = await store.anchorStates(keys);
      expect(states.map((s) => (s?.status === 'anchored' ? s.anchor.leafIndex : s?.status))).toEqual(
        keys.map((_, i) => 1204 - i),
      );
      expect(store.db.prepare('SELECT count(*) FROM anchor_outbox').pluck().get()).toBe(0);
    } finally {
      await store.close();
    }
  });

  it('continues its clock after the last stored instant when the wall clock is behind', async () => {
    const store = await openStore(':memory:');
    const future = '2999-01-01T00:00:00.000Z';
    // Simulate versions written by a clock far ahead (or a wall clock that went back since).
    await store.write({
      resourceType: 'Patient',
      id: 'a',
      method: 'PUT',
      resource: { resourceType: 'Patient' },
    });
    store.db.prepare('UPDATE resource_version SET last_updated = ?').run(future);
    const next = await store.write({
      resourceType: 'Patient',
      id: 'b',
      method: 'PUT',
      resource: { resourceType: 'Patient' },
    });
    expect(next.lastUpdated).toBe('2999-01-01T00:00:00.001Z');
    await store.close();
  });

  it('runs in WAL mode with foreign keys, a busy timeout and synchronous NORMAL (FULL on request)', async () => {
    const dir = tempDir();
    const store = await openStore(join(dir, 'a.sqlite'));
    expect(store.db.pragma('journal_mode', { simple: true })).toBe('wal');
    expect(store.db.pragma('foreign_keys', { simple: true })).toBe(1);
    expect(store.db.pragma('busy_timeout', { simple: true })).toBe(5000);
    expect(store.db.pragma('synchronous', { simple: true })).toBe(1); // NORMAL
    await store.close();
    const full = new SqliteResourceStore({ file: join(dir, 'b.sqlite'), synchronous: 'FULL' });
    await full.init();
    expect(full.db.pragma('synchronous', { simple: true })).toBe(2); // FULL
    await full.close();
  });

  it('refuses a database whose schema is newer than the software, saying so, written or read only, and closes it', async () => {
    const file = join(tempDir(), 'resources.sqlite');
    const store = await openStore(file);
    const known = MIGRATIONS[MIGRATIONS.length - 1]!.version;
    store.db.prepare("INSERT INTO schema_version VALUES (?, 'from the future', '2999-01-01')").run(known + 1);
    await store.close();
    const newer = `this store was written by a newer hie-ledger: schema ${known + 1}, this build knows up to ${known}`;
    for (const readOnly of [false, true]) {
      const refused = new SqliteResourceStore({ file, readOnly });
      const err = await refused.init().catch((e: unknown) => e);
      expect(err, `readOnly ${readOnly}`).toBeInstanceOf(NewerStoreSchemaError);
      expect((err as Error).message).toContain(newer);
      expect(refused.db.open).toBe(false);
    }
  });

  it('rejects calls after close', async () => {
    const store = await openStore(':memory:');
    await store.close();
    await expect(store.read('Patient', 'a')).rejects.toThrow(/closed/);
  });

  it('keeps every acknowledged version, and no half version, when the writing process is killed', async () => {
    const file = join(tempDir(), 'resources.sqlite');
    const child = spawn(process.execPath, ['--import', 'tsx', 'test/store/fixtures/crash-writer.ts', file], {
      cwd: process.cwd(),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const acknowledged = new Map<string, string>();
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const exited = new Promise<NodeJS.Signals | null>((resolve) =>
      child.on('exit', (_code, signal) => resolve(signal)),
    );
    await new Promise<void>((resolve, reject) => {
      let buffered = '';
      child.stdout.on('data', (chunk: Buffer) => {
        buffered += chunk.toString();
        const lines = buffered.split('\n');
        buffered = lines.pop()!;
        for (const line of lines) {
          const m = /^ack (\S+) ([0-9a-f]{64})$/.exec(line);
          if (m) acknowledged.set(m[1]!, m[2]!);
        }
        // Kill it mid-stream, while it keeps writing.
        if (acknowledged.size >= 400 && !child.killed) {
          child.kill('SIGKILL');
          resolve();
        }
      });
      child.on('exit', () => reject(new Error(`writer exited early: ${stderr}`)));
    });
    expect(await exited).toBe('SIGKILL');

    const store = await openStore(file);
    expect(store.db.pragma('integrity_check', { simple: true })).toBe('ok');
    expect(store.db.pragma('foreign_key_check')).toEqual([]);
    // Every acknowledged version is there, with exactly the acknowledged text.
    for (const [path, digest] of acknowledged) {
      const [type, id, vid] = path.split('/');
      const version = await store.vread(type!, id!, Number(vid));
      expect(version, path).toBeDefined();
      expect(createHash('sha256').update(version!.json!).digest('hex')).toBe(digest);
    }
    // No half version: versions 1..current without gaps; each has its anchor; current ones have their index rows;
    // both resources of each pair transaction or neither.
    const current = store.db.prepare('SELECT resource_type, id, version_id FROM resource_current').all() as {
      resource_type: string;
      id: string;
      version_id: number;
    }[];
    let versions = 0;
    for (const c of current) {
      const history = await store.history({ resourceType: c.resource_type, id: c.id, count: 1000 });
      expect(history.versions.map((v) => v.versionId)).toEqual(
        Array.from({ length: c.version_id }, (_, i) => c.version_id - i),
      );
      for (const v of history.versions) {
        expect(JSON.parse(v.json!).meta.versionId).toBe(String(v.versionId));
        expect((await store.anchorState(v))?.status).toBe('pending');
      }
      expect(await store.indexEntries(c.resource_type, c.id)).toHaveLength(2);
      versions += c.version_id;
    }
    expect(versions).toBeGreaterThanOrEqual(acknowledged.size);
    const pairs = (prefix: string) =>
      new Set(current.filter((c) => c.id.startsWith(prefix)).map((c) => c.id.slice(prefix.length)));
    expect(pairs('pa-')).toEqual(pairs('pb-'));
    expect(pairs('pa-').size).toBeGreaterThan(0);
    await store.close();
  });
});

describe('SqliteResourceStore group commit', () => {
  it('commits writes issued together as one batch, each write atomic on its own', async () => {
    const store = await openStore(join(tempDir(), 'resources.sqlite'));
    await store.write({
      resourceType: 'Patient',
      id: 'x',
      method: 'PUT',
      resource: { resourceType: 'Patient' },
    });
    const patient = (id: string) => ({
      resourceType: 'Patient',
      id,
      method: 'PUT' as const,
      resource: { resourceType: 'Patient' },
    });
    const results = await Promise.allSettled([
      store.write(patient('a')),
      store.write({ ...patient('x'), ifMatch: 7 }),
      store.write({
        ...patient('b'),
        index: [{ param: 'active', type: 'token', value: 'true' }],
        anchor: () => {
          throw new Error('no anchor');
        },
      }),
      store.write({ ...patient('x'), ifMatch: 1 }),
      store.write(patient('c')),
    ]);
    expect(results.map((r) => r.status)).toEqual([
      'fulfilled',
      'rejected',
      'rejected',
      'fulfilled',
      'fulfilled',
    ]);
    expect(((results[1] as PromiseRejectedResult).reason as { status?: number }).status).toBe(412);
    expect(await store.read('Patient', 'b')).toBeUndefined();
    expect(await store.indexEntries('Patient', 'b')).toEqual([]);
    expect((await store.read('Patient', 'x'))?.versionId).toBe(2);
    expect((await store.read('Patient', 'c'))?.versionId).toBe(1);
    // Instants still strictly increase inside the batch.
    const [a, , , x2, c] = results.map((r) => (r.status === 'fulfilled' ? r.value.lastUpdated : ''));
    expect(a! < x2! && x2! < c!).toBe(true);
    await store.close();
  });

  it('stores every write of a batch without failures with its index rows and anchor, once', async () => {
    const store = await openStore(join(tempDir(), 'resources.sqlite'));
    const ids = ['a', 'b', 'c', 'd'];
    const versions = await Promise.all(
      ids.map((id) =>
        store.write({
          resourceType: 'Patient',
          id,
          method: 'PUT',
          resource: { resourceType: 'Patient', active: true },
          index: [{ param: 'active', type: 'token', value: 'true' }],
          anchor: (v) => ({
            resourceType: v.resourceType,
            id: v.id,
            versionId: v.versionId,
            salt: 's',
            leafHash: `h-${v.id}`,
            ledgerKey: `k-${v.id}`,
          }),
        }),
      ),
    );
    expect(versions.map((v) => v.versionId)).toEqual([1, 1, 1, 1]);
    for (const id of ids) {
      expect(await store.indexEntries('Patient', id)).toEqual([
        { param: 'active', type: 'token', value: 'true' },
      ]);
      expect(await store.anchorState({ resourceType: 'Patient', id, versionId: 1 })).toMatchObject({
        status: 'pending',
        leafHash: `h-${id}`,
      });
    }
    expect(await store.pendingAnchors(100)).toHaveLength(4);
    await store.close();
  });

  it('waits for an open transaction before committing a batch', async () => {
    const store = await openStore(':memory:');
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const tx = store.transaction(async (view) => {
      await view.write({
        resourceType: 'Patient',
        id: 'a',
        method: 'PUT',
        resource: { resourceType: 'Patient' },
      });
      await gate;
    });
    await new Promise((r) => setTimeout(r, 5));
    const outside = store.write({
      resourceType: 'Patient',
      id: 'a',
      method: 'PUT',
      resource: { resourceType: 'Patient' },
    });
    await new Promise((r) => setTimeout(r, 5));
    release();
    await tx;
    expect((await outside).versionId).toBe(2);
    await store.close();
  });
});

describe('SqliteResourceStore schema guards', () => {
  it('refuses to delete a version row, so seq stays dense (history totals rely on it)', async () => {
    const store = await openStore(':memory:');
    await store.write({
      resourceType: 'Patient',
      id: 'a',
      method: 'PUT',
      resource: { resourceType: 'Patient' },
    });
    expect(() => store.db.prepare('DELETE FROM resource_version').run()).toThrow(/never deleted/);
    expect((await store.history({ count: 10 })).total).toBe(1);
    await store.close();
  });

  it('counts system history exactly after rolled-back writes', async () => {
    const store = await openStore(':memory:');
    for (let i = 0; i < 3; i++) {
      await store.write({
        resourceType: 'Patient',
        id: `p${i}`,
        method: 'PUT',
        resource: { resourceType: 'Patient' },
      });
      await store
        .transaction(async (tx) => {
          await tx.write({
            resourceType: 'Patient',
            id: `gone${i}`,
            method: 'PUT',
            resource: { resourceType: 'Patient' },
          });
          throw new Error('roll back');
        })
        .catch(() => undefined);
    }
    const page = await store.history({ count: 2 });
    expect(page.total).toBe(3);
    expect(store.db.prepare('SELECT seq FROM resource_version ORDER BY seq').pluck().all()).toEqual([
      1, 2, 3,
    ]);
    await store.close();
  });
});
