/**
 * `hie-ledger import` (src/commands/import.ts over src/bulk/import/engine.ts) into a real data directory: the
 * SQLite store, the embedded ledger, the full validator. What the issue asks of it: every file of the shared NDJSON
 * and Synthea material imports, counts by type equal the files' counts minus the rejected ones, every reference
 * resolves to a stored resource; a bad resource is rejected alone with its file and line; a re-import stores no new
 * version; a run killed (SIGKILL) at known points and run again ends with the store a clean import makes, and
 * `hie-ledger verify` passes.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { gunzipSync, gzipSync } from 'node:zlib';
import { afterAll, describe, expect, it } from 'vitest';
import Database from 'better-sqlite3';
import { cliNodeArgs } from '../support/cli-build.js';
import { runImport } from '../../src/commands/import.js';
import { runVerify } from '../../src/commands/verify.js';
import { SqliteResourceStore } from '../../src/fhir/store/sqlite/sqlite-store.js';
import { loadSettings } from '../../src/config/config.js';
import { IMPORT_SETTINGS } from '../../src/commands/import.js';
import { indexedPut } from '../search/helpers.js';
import { EYE_COLOUR_EXTENSION, eyeColourParameter } from '../support/eye-colour-parameter.js';

const SHARED = path.resolve('..', 'shared', 'data');
const NDJSON = path.join(SHARED, 'bulk-ndjson-10-patients');
const SYNTHEA = path.join(SHARED, 'synthea-bundles');

const temporary: string[] = [];
afterAll(() => {
  for (const dir of temporary) rmSync(dir, { recursive: true, force: true });
});

function tempDir(): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'hie-import-'));
  temporary.push(dir);
  return dir;
}

function sink(): { stream: Writable; text: () => string } {
  let text = '';
  return {
    stream: new Writable({
      write(chunk: Buffer, _enc, done) {
        text += chunk.toString();
        done();
      },
    }),
    text: () => text,
  };
}

/** runImport in this process (the settings from their defaults, as the CLI would). */
async function importInto(dataDir: string, paths: string[], extra: Record<string, unknown> = {}) {
  const out = sink();
  const err = sink();
  const code = await runImport({
    ...loadSettings(IMPORT_SETTINGS, { dataDir, organization: 'Organization/importer' }, {}),
    paths,
    progress: false,
    // Validation on the main thread unless a test asks for workers (each worker builds its own validator).
    workers: 0,
    out: out.stream,
    err: err.stream,
    ...extra,
  });
  return { code, out: out.text(), err: err.text() };
}

interface StoreView {
  /** `Type/id` -> [versionId, stored text without meta.lastUpdated] of the current version. */
  current: Map<string, [number, string]>;
  versions: number;
  countsByType: Record<string, number>;
  /** References (`Type/id`) of the stored resources that name no stored resource. */
  dangling: string[];
}

/** What the store holds, read back through the store itself. */
async function readStore(dataDir: string): Promise<StoreView> {
  const store = new SqliteResourceStore({ file: path.join(dataDir, 'resources.sqlite') });
  await store.init();
  try {
    const current = new Map<string, [number, string]>();
    let versions = 0;
    for await (const { version } of store.allVersions()) {
      versions++;
      const text = (version.json ?? '').replace(/"lastUpdated":"[^"]*"/, '');
      const key = `${version.resourceType}/${version.id}`;
      const known = current.get(key);
      if (!known || known[0] < version.versionId) current.set(key, [version.versionId, text]);
    }
    const countsByType: Record<string, number> = {};
    const dangling: string[] = [];
    for (const [key, [, text]] of current) {
      const type = key.split('/')[0]!;
      countsByType[type] = (countsByType[type] ?? 0) + 1;
      for (const [, reference] of text.matchAll(/"reference":"([A-Z][A-Za-z]+\/[A-Za-z0-9\-.]{1,64})"/g))
        if (!current.has(reference!)) dangling.push(`${key} -> ${reference}`);
    }
    return { current, versions, countsByType, dangling };
  } finally {
    await store.close();
  }
}

/**
 * Every NDJSON file of the 10-patient export, cut to the records of its first two patients (and every
 * Organization, Practitioner, PractitionerRole and Location: what they reference) so the test stays short; the
 * benchmark imports them whole. One file is gzipped (`.ndjson.gz`).
 */
function twoPatientExport(dir: string): string[] {
  const files = readdirSync(NDJSON).filter((f) => /\.\d+\.ndjson$/.test(f));
  const patientLines = readFileSync(path.join(NDJSON, 'Patient.000.ndjson'), 'utf8').trim().split('\n');
  const ids = patientLines.slice(0, 2).map((l) => (JSON.parse(l) as { id: string }).id);
  return files.map((name) => {
    const lines = readFileSync(path.join(NDJSON, name), 'utf8').trim().split('\n');
    const shared = /^(Organization|Practitioner|PractitionerRole|Location)\./.test(name);
    const kept = shared ? lines : lines.filter((l) => ids.some((id) => l.includes(id)));
    const text = kept.join('\n') + '\n';
    if (name.startsWith('Condition')) {
      const file = path.join(dir, `${name}.gz`);
      writeFileSync(file, gzipSync(text));
      return file;
    }
    const file = path.join(dir, name);
    writeFileSync(file, text);
    return file;
  });
}

function linesOf(file: string): number {
  const bytes = readFileSync(file);
  const text = file.endsWith('.gz') ? gunzipSync(bytes).toString('utf8') : bytes.toString('utf8');
  return text.split('\n').filter((l) => l.trim() !== '').length;
}

describe('hie-ledger import', () => {
  it('imports every NDJSON file of the 10-patient export (two patients of it; one file gzipped): counts by type equal the files, every reference resolves, verify passes; again: nothing new', async () => {
    const dataDir = tempDir();
    const files = twoPatientExport(tempDir());
    const first = await importInto(dataDir, files);
    expect(first.err).toBe('');
    expect(first.code, first.out).toBe(0);
    const view = await readStore(dataDir);
    const expected: Record<string, number> = {};
    for (const file of files) {
      const lines = linesOf(file);
      if (lines > 0) expected[path.basename(file).split('.')[0]!] = lines;
    }
    expect(view.countsByType).toEqual(expected);
    expect(view.dangling).toEqual([]);
    expect(view.versions).toBe(view.current.size);

    const again = await importInto(dataDir, files, { journal: path.join(dataDir, 'second.sqlite') });
    expect(again.code, again.out).toBe(0);
    const total = files.reduce((sum, f) => sum + linesOf(f), 0);
    expect(again.out).toMatch(new RegExp(`total +0 +${total} +0`));
    expect((await readStore(dataDir)).versions).toBe(view.versions);

    const verified = sink();
    expect(
      await runVerify({
        dataDir,
        ...loadSettings(['mspId', 'ledger', 'fabricConfig'], {}, {}),
        out: verified.stream,
        record: false,
        progress: false,
      }),
    ).toBe(0);
  }, 240_000);

  it('imports Synthea transaction Bundles resource by resource: urn:uuid references resolve to assigned ids', async () => {
    const dataDir = tempDir();
    const names = readdirSync(SYNTHEA)
      .filter((f) => f.endsWith('.json'))
      .sort()
      .slice(0, 2);
    const files = names.map((n) => path.join(SYNTHEA, n));
    const result = await importInto(dataDir, files);
    expect(result.code, result.out).toBe(0);
    const view = await readStore(dataDir);
    const entries = new Map<string, string>();
    for (const file of files) {
      const bundle = JSON.parse(readFileSync(file, 'utf8')) as {
        entry: { fullUrl: string; resource: { resourceType: string } }[];
      };
      for (const e of bundle.entry) entries.set(e.fullUrl, e.resource.resourceType);
    }
    const expected: Record<string, number> = {};
    for (const type of entries.values()) expected[type] = (expected[type] ?? 0) + 1;
    expect(view.countsByType).toEqual(expected);
    expect(view.dangling).toEqual([]);
    expect([...view.current.values()].some(([, text]) => text.includes('urn:uuid:'))).toBe(false);
    // The journal keeps no free pages (the spent verdicts' pages are given back when it closes).
    const journals = readdirSync(path.join(dataDir, 'imports')).filter((f) => f.endsWith('.sqlite'));
    expect(journals).toHaveLength(1);
    const journal = new Database(path.join(dataDir, 'imports', journals[0]!), { readonly: true });
    try {
      expect(journal.pragma('freelist_count', { simple: true })).toBe(0);
    } finally {
      journal.close();
    }
  }, 240_000);

  it('rejects a bad resource alone, naming its file and line; a resource naming a rejected one names it; neighbours are stored', async () => {
    const dataDir = tempDir();
    const file = path.join(dataDir, 'mixed.ndjson');
    const observation = (id: string, reference: string) => ({
      resourceType: 'Observation',
      id,
      status: 'final',
      code: { text: 'x' },
      subject: { reference },
    });
    const lines = [
      observation('o0', 'Patient/late'), // names a resource rejected further on
      { resourceType: 'Patient', id: 'bad', gender: 'not-a-gender' },
      { resourceType: 'Patient', id: 'good', gender: 'female' },
      observation('o1', 'Patient/good'),
      observation('o2', 'Patient/bad'),
      observation('o3', 'Patient/nowhere'),
      observation('o4', 'urn:uuid:9f1c0a52-0000-4000-8000-000000000000'),
      observation('o5', 'https://elsewhere.example/fhir/Patient/1'),
      { resourceType: 'Patient', id: 'late', birthDate: 'yesterday' },
    ];
    writeFileSync(file, lines.map((l) => JSON.stringify(l)).join('\n') + '\n{"resourceType": oops}\n');
    const errors = path.join(dataDir, 'errors.ndjson');
    const result = await importInto(dataDir, [file], { errors });
    expect(result.code).toBe(1);
    const view = await readStore(dataDir);
    expect([...view.current.keys()].sort()).toEqual(['Observation/o1', 'Observation/o5', 'Patient/good']);
    const rejected = readFileSync(errors, 'utf8')
      .trim()
      .split('\n')
      .map(
        (l) =>
          JSON.parse(l) as {
            resourceType: string;
            issue: { diagnostics: string; details?: { coding?: { code: string }[] } }[];
          },
      );
    expect(rejected.map((o) => o.resourceType)).toEqual(Array(7).fill('OperationOutcome'));
    const first = rejected.map((o) => ({
      at: /:(\d+): /.exec(o.issue[0]!.diagnostics)![1],
      code: o.issue[0]!.details?.coding?.[0]?.code,
    }));
    expect(first).toEqual([
      { at: '1', code: 'import-reference-rejected' },
      { at: '2', code: 'resource-invalid' },
      { at: '5', code: 'import-reference-rejected' },
      { at: '6', code: 'import-reference-unresolved' },
      { at: '7', code: 'import-reference-unresolved' },
      { at: '9', code: 'resource-invalid' },
      { at: '10', code: 'body-not-json' },
    ]);
    expect(rejected[1]!.issue[0]!.diagnostics.startsWith(`${file}:2: `)).toBe(true);
    expect(rejected[0]!.issue[0]!.diagnostics).toContain(`Patient/late, which was rejected (${file}:9)`);
    expect(rejected[2]!.issue[0]!.diagnostics).toContain(`Patient/bad, which was rejected (${file}:2)`);
    expect(result.out).toMatch(/Patient +1 +0 +2/);
  }, 240_000);

  it.each([0, 1])(
    'validates each resource once, as written (after reference rewriting): a target invalid only once its urn:uuid reference is rewritten rejects a resource written before it (--workers %i)',
    async (workers) => {
      const dataDir = tempDir();
      const file = path.join(dataDir, 'collection.json');
      const uuid = (n: number) => `urn:uuid:7c1d2e3f-0000-4000-8000-00000000000${n}`;
      const observation = (subject: string) => ({
        resourceType: 'Observation',
        status: 'final',
        code: { text: 'x' },
        subject: { reference: subject },
      });
      writeFileSync(
        file,
        JSON.stringify({
          resourceType: 'Bundle',
          type: 'collection',
          entry: [
            // Written before the Patient it names, which is rejected once its reference is rewritten.
            { fullUrl: uuid(1), resource: observation(uuid(2)) },
            // Valid as sent (a urn:uuid reference has no type); rewritten, Patient.generalPractitioner names an
            // Observation, which that element does not allow (http://hl7.org/fhir/R4/patient.html).
            {
              fullUrl: uuid(2),
              resource: { resourceType: 'Patient', generalPractitioner: [{ reference: uuid(3) }] },
            },
            { fullUrl: uuid(3), resource: observation('https://elsewhere.example/fhir/Patient/1') },
          ],
        }),
      );
      const errors = path.join(dataDir, 'errors.ndjson');
      const result = await importInto(dataDir, [file], { errors, workers });
      expect(result.code).toBe(1);
      const view = await readStore(dataDir);
      expect(view.countsByType).toEqual({ Observation: 1 });
      expect(view.dangling).toEqual([]);
      const rejected = readFileSync(errors, 'utf8')
        .trim()
        .split('\n')
        .map(
          (l) =>
            (JSON.parse(l) as { issue: { diagnostics: string; details?: { coding?: { code: string }[] } }[] })
              .issue[0]!,
        );
      expect(rejected.map((i) => i.details?.coding?.[0]?.code)).toEqual([
        'import-reference-rejected',
        'resource-invalid',
      ]);
      expect(rejected[0]!.diagnostics).toContain(`which was rejected (${file} Bundle.entry[1])`);
      expect(rejected[1]!.diagnostics).toContain('is not a valid Target for this element');
      // The two resources that reached the update interaction (the Patient refused by it) were validated once, in
      // the check.
      expect(result.out).toContain('Validated once: 2 of this run');
      expect(result.out).toContain(
        workers === 0 ? 'the check validated on the main thread' : 'the check validated on 1 worker thread',
      );
    },
    240_000,
  );

  it('the index rows a validation worker extracted are the ones this thread extracts (a number written 1.50 included: that resource is extracted here)', async () => {
    const source = tempDir();
    const files = twoPatientExport(source);
    const patient = (
      JSON.parse(
        readFileSync(
          files.find((f) => /Patient\./.test(f))!,
          'utf8',
        ).split('\n')[0]!,
      ) as {
        id: string;
      }
    ).id;
    // 1.50 is not what JSON.parse and String() give back (1.5): the line is parsed losslessly, and its index rows
    // (value-quantity [1.495, 1.505)) differ from those of the plain JSON the worker was given.
    const precise = path.join(source, 'precise.ndjson');
    writeFileSync(
      precise,
      JSON.stringify({
        resourceType: 'Observation',
        id: 'precise',
        status: 'final',
        code: { coding: [{ system: 'http://loinc.org', code: '2339-0' }] },
        subject: { reference: `Patient/${patient}` },
        valueQuantity: { value: 0, unit: 'g/L', system: 'http://unitsofmeasure.org', code: 'g/L' },
      }).replace('"value":0', '"value":1.50') + '\n',
    );
    const all = [...files, precise];
    const onWorker = tempDir();
    const onMain = tempDir();
    const [worked, mained] = await Promise.all([
      importInto(onWorker, all, { workers: 1 }),
      importInto(onMain, all, { workers: 0 }),
    ]);
    expect(worked.code, worked.out).toBe(0);
    expect(mained.code, mained.out).toBe(0);
    const total = all.reduce((sum, f) => sum + linesOf(f), 0);
    // Every write but the 1.50 one took the worker's rows; the main-thread run extracts them all itself.
    expect(worked.out).toContain(`${total - 1} took their index entries from the workers' extraction`);
    expect(mained.out).toContain("0 took their index entries from the workers' extraction");
    const rows = async (dataDir: string) => {
      const store = new SqliteResourceStore({ file: path.join(dataDir, 'resources.sqlite') });
      await store.init();
      try {
        const out = new Map<string, unknown>();
        for await (const { version } of store.allVersions())
          out.set(
            `${version.resourceType}/${version.id}`,
            await store.indexEntries(version.resourceType, version.id),
          );
        return out;
      } finally {
        await store.close();
      }
    };
    const [workerRows, mainRows] = await Promise.all([rows(onWorker), rows(onMain)]);
    expect(workerRows.size).toBe(total);
    expect(workerRows).toEqual(mainRows);
    expect(JSON.stringify(workerRows.get('Observation/precise'))).toContain('1.495');
  }, 240_000);

  it("the workers index with the data directory's custom search parameters", async () => {
    const dataDir = tempDir();
    const source = tempDir();
    const colour = EYE_COLOUR_EXTENSION;
    const first = path.join(source, 'first.ndjson');
    writeFileSync(first, JSON.stringify({ resourceType: 'Patient', id: 'first' }) + '\n');
    expect((await importInto(dataDir, [first])).code).toBe(0);
    // An active custom parameter in the store (an administrator's write; the import's caller may not define one).
    const store = new SqliteResourceStore({ file: path.join(dataDir, 'resources.sqlite') });
    await store.init();
    try {
      await store.write(indexedPut(eyeColourParameter()));
    } finally {
      await store.close();
    }
    const patients = path.join(source, 'patients.ndjson');
    writeFileSync(
      patients,
      JSON.stringify({
        resourceType: 'Patient',
        id: 'brown',
        extension: [{ url: colour, valueCode: 'brown' }],
      }) + '\n',
    );
    const result = await importInto(dataDir, [patients], { workers: 1 });
    expect(result.code, result.out).toBe(0);
    expect(result.out).toContain("1 took their index entries from the workers' extraction");
    const reopened = new SqliteResourceStore({ file: path.join(dataDir, 'resources.sqlite') });
    await reopened.init();
    try {
      const rows = await reopened.indexEntries('Patient', 'brown');
      expect(rows.filter((r) => r.param === 'eye-colour').map((r) => r.value)).toEqual(['brown']);
    } finally {
      await reopened.close();
    }
  }, 240_000);

  it('a resource naming a target of a later file that is invalid once rewritten is rejected naming it, never stored dangling', async () => {
    const dataDir = tempDir();
    const uuid = (n: number) => `urn:uuid:5e2a9c41-0000-4000-8000-00000000000${n}`;
    const observation = (subject: string) => ({
      resourceType: 'Observation',
      status: 'final',
      code: { text: 'x' },
      subject: { reference: subject },
    });
    const collection = (name: string, entry: object[]) => {
      const file = path.join(dataDir, name);
      writeFileSync(file, JSON.stringify({ resourceType: 'Bundle', type: 'collection', entry }));
      return file;
    };
    // The first file is written before the second: the Patient of the second file, which it names, is refused once
    // its reference is rewritten (an Observation as Patient.generalPractitioner, http://hl7.org/fhir/R4/patient.html).
    // Every file is checked before any is written, so the first file's write knows it.
    const first = collection('1-observation.json', [{ fullUrl: uuid(1), resource: observation(uuid(2)) }]);
    const second = collection('2-patient.json', [
      {
        fullUrl: uuid(2),
        resource: { resourceType: 'Patient', generalPractitioner: [{ reference: uuid(3) }] },
      },
      { fullUrl: uuid(3), resource: observation('https://elsewhere.example/fhir/Patient/1') },
    ]);
    const errors = path.join(dataDir, 'errors.ndjson');
    const result = await importInto(dataDir, [first, second], { errors, workers: 1 });
    expect(result.code).toBe(1);
    const view = await readStore(dataDir);
    expect(view.countsByType).toEqual({ Observation: 1 });
    expect(view.dangling).toEqual([]);
    const rejected = readFileSync(errors, 'utf8')
      .trim()
      .split('\n')
      .map((l) => (JSON.parse(l) as { issue: { diagnostics: string }[] }).issue[0]!.diagnostics);
    expect(rejected).toHaveLength(2);
    expect(rejected[0]).toContain(`which was rejected (${second} Bundle.entry[0])`);
    expect(rejected[1]).toContain('is not a valid Target for this element');
  }, 240_000);

  it('--atomic-bundles: one rejected entry rolls back its transaction Bundle, the other entries name it', async () => {
    const dataDir = tempDir();
    const file = path.join(dataDir, 'bundle.json');
    const entry = (uuid: string, resource: object) => ({
      fullUrl: `urn:uuid:${uuid}`,
      resource,
      request: { method: 'POST', url: (resource as { resourceType: string }).resourceType },
    });
    const patient = '5b0f8c1e-0000-4000-8000-000000000001';
    writeFileSync(
      file,
      JSON.stringify({
        resourceType: 'Bundle',
        type: 'transaction',
        entry: [
          entry(patient, { resourceType: 'Patient', gender: 'female' }),
          entry('5b0f8c1e-0000-4000-8000-000000000002', {
            resourceType: 'Observation',
            status: 'not-a-status',
            code: { text: 'x' },
            subject: { reference: `urn:uuid:${patient}` },
          }),
        ],
      }),
    );
    const errors = path.join(dataDir, 'errors.ndjson');
    const atomic = await importInto(dataDir, [file], { errors, atomicBundles: true });
    expect(atomic.code).toBe(1);
    expect((await readStore(dataDir)).versions).toBe(0);
    const codes = readFileSync(errors, 'utf8')
      .trim()
      .split('\n')
      .map(
        (l) =>
          (JSON.parse(l) as { issue: { details?: { coding?: { code: string }[] } }[] }).issue[0]!.details
            ?.coding?.[0]?.code,
      );
    expect(codes).toEqual(['import-bundle-rolled-back', 'resource-invalid']);

    // Without it (the default), the Patient is stored alone.
    const independent = await importInto(dataDir, [file], {
      journal: path.join(dataDir, 'independent.sqlite'),
    });
    expect(independent.code).toBe(1);
    expect((await readStore(dataDir)).countsByType).toEqual({ Patient: 1 });
  }, 240_000);
});

/** The CLI as a child process (see cliNodeArgs), as an operator runs it; resolves with its exit code (null: killed). */
function cli(
  args: string[],
): Promise<{ code: number | null; signal: NodeJS.Signals | null; output: string }> {
  const child = spawn(process.execPath, [...cliNodeArgs(), ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout.on('data', (c: Buffer) => (output += c.toString()));
  child.stderr.on('data', (c: Buffer) => (output += c.toString()));
  return new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal, output })));
}

describe('hie-ledger import, killed and resumed', () => {
  it('after a SIGKILL between the store commit and the journal, and one after a journal update, ends with the store of a clean import; verify passes', async () => {
    // 24 resources in batches of 5: the kill points fall in the Patient file, and the AllergyIntolerances name
    // Patients stored by the killed runs. Small, and the two killed runs side by side: each is a process start-up.
    const files = ['Patient', 'AllergyIntolerance'].map((t) => path.join(NDJSON, `${t}.000.ndjson`));
    const clean = tempDir();
    const afterStore = tempDir();
    const afterJournal = tempDir();
    const args = (dataDir: string) => [
      'import',
      '--data-dir',
      dataDir,
      '--batch-size',
      '5',
      '--no-progress',
      // The check's verdicts are this run's only (never resumed): a validation worker would add its start-up to
      // each of the processes, nothing to what is tested here.
      '--workers',
      '0',
      ...files,
    ];
    const [killedAfterStore, killedAfterJournal, cleanRun] = await Promise.all([
      // Killed after its second batch was committed to the store, before the journal recorded it: resumed, that
      // batch is written again and stores nothing (unchanged).
      cli([...args(afterStore), '--kill-after-batches', '2', '--kill-point', 'store']),
      // Killed after the journal recorded its second batch (a crash between batches).
      cli([...args(afterJournal), '--kill-after-batches', '2', '--kill-point', 'journal']),
      // The clean import meanwhile, in this process.
      importInto(clean, files, { organization: undefined }),
    ]);
    expect(killedAfterStore.signal, killedAfterStore.output).toBe('SIGKILL');
    expect(killedAfterJournal.signal, killedAfterJournal.output).toBe('SIGKILL');
    expect(cleanRun.code, cleanRun.out).toBe(0);
    const expected = await readStore(clean);
    for (const dataDir of [afterStore, afterJournal]) {
      const finished = await importInto(dataDir, files, { batchSize: 5, organization: undefined });
      expect(finished.code, finished.out).toBe(0);
      // The summary counts each resource once over both runs.
      const [, stored, unchanged, rejected] = /total +(\d+) +(\d+) +(\d+)/.exec(finished.out)!.map(Number);
      expect([stored! + unchanged!, rejected]).toEqual([13 + 11, 0]);
      expect(unchanged).toBe(dataDir === afterStore ? 5 : 0);
      const view = await readStore(dataDir);
      expect(view.versions).toBe(view.current.size); // nothing stored twice
      expect(view.current).toEqual(expected.current);
      const verified = sink();
      expect(
        await runVerify({
          dataDir,
          ...loadSettings(['mspId', 'ledger', 'fabricConfig'], {}, {}),
          out: verified.stream,
          record: false,
          progress: false,
        }),
        verified.text(),
      ).toBe(0);
    }
  }, 240_000);
});
