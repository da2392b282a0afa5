/**
 * `hie-ledger import PATH... --url BASE` (src/commands/import-remote.ts over src/bulk/import/engine.ts) against a
 * running service (`hie-ledger serve`, SMART Backend Services auth), both as their own processes: a system
 * participant enrolled with `participant enroll`, the import getting its token with `--id --key` as
 * `hie-ledger token` does. Counts by type equal the files'; urn:uuid and relative references resolve to stored
 * resources; a bad resource is rejected alone with its file and line; a second run stores no new version; a bad
 * token is one clear line and exit 2.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli, waitForOutput, type CliProcess } from '../support/cli-process.js';
import { requestToken } from '../../src/commands/token.js';

const SYNTHEA_FILE = path.resolve(
  '..',
  'shared',
  'data',
  'synthea-bundles',
  'Clemente_Kreiger_1484a42d-0eaf-4654-9cbf-6b050a5cd73b.json',
);

async function exitOf(args: string[]): Promise<{ code: number | null; output: string }> {
  const started = runCli(args);
  const code = await started.exited;
  return { code, output: started.output() };
}

describe('hie-ledger import --url (a running service)', () => {
  let root: string;
  let service: CliProcess;
  let base: string;
  let key: string;
  let token: string;

  beforeAll(async () => {
    root = mkdtempSync(path.join(tmpdir(), 'hie-import-remote-'));
    const dataDir = path.join(root, 'data');
    const serve = [
      'serve',
      '--data-dir',
      dataDir,
      '--port',
      '0',
      '--audit-cron',
      'off',
      '--anchor-interval-ms',
      '30',
      '--organization',
      'Organization/hosp-a',
    ];
    // The service creates its data directory; participants are enrolled while it is stopped (docs/access.md).
    const creating = runCli(serve);
    await waitForOutput(creating, /"fhirBase":"([^"]+)"/);
    creating.child.kill('SIGTERM');
    await creating.exited;
    const enrolled = await exitOf([
      'participant',
      'enroll',
      '--data-dir',
      dataDir,
      '--role',
      'system',
      '--id',
      'importer',
      '--resource',
      'Organization/hosp-a',
      '--out',
      path.join(root, 'importer'),
    ]);
    expect(enrolled.code, enrolled.output).toBe(0);
    key = path.join(root, 'importer', 'key.pem');
    service = runCli(serve);
    base = (await waitForOutput(service, /"fhirBase":"([^"]+)"/))[1]!;
    // The test's own reads use a token got as `hie-ledger token` gets it (in this process: one start less).
    token = String((await requestToken({ id: 'importer', key, url: base })).access_token);
  }, 60_000);

  afterAll(async () => {
    if (service && service.child.exitCode === null) {
      service.child.kill('SIGKILL');
      await service.exited;
    }
    if (root) rmSync(root, { recursive: true, force: true });
  });

  async function read(reference: string): Promise<{ status: number; body: Record<string, unknown> }> {
    const response = await fetch(`${base}/${reference}`, { headers: { authorization: `Bearer ${token}` } });
    return { status: response.status, body: (await response.json()) as Record<string, unknown> };
  }

  it('imports a Synthea Bundle and NDJSON resource by resource: counts by type, references resolved, the bad line rejected alone; a second run stores nothing new', async () => {
    const bundle = JSON.parse(readFileSync(SYNTHEA_FILE, 'utf8')) as {
      entry: { fullUrl: string; resource: { resourceType: string; id?: string } }[];
    };
    // NDJSON, any mix of types: a Patient and Observations naming it by a relative reference; line 3 is bad.
    const ndjson = path.join(root, 'mixed.ndjson');
    const observation = (id: string, status: string) =>
      JSON.stringify({
        resourceType: 'Observation',
        id,
        status,
        code: { text: 'note' },
        subject: { reference: 'Patient/p-ndjson' },
      });
    const lines = [
      JSON.stringify({ resourceType: 'Patient', id: 'p-ndjson', gender: 'female' }),
      observation('obs-1', 'final'),
      observation('obs-bad', 'not-a-status'),
      observation('obs-3', 'final'),
    ];
    writeFileSync(ndjson, lines.join('\n') + '\n');
    const journal = path.join(root, 'journal.sqlite');
    const errors = path.join(root, 'errors.ndjson');
    const common = ['--url', base, '--id', 'importer', '--key', key, '--no-progress'];
    const command = ['import', SYNTHEA_FILE, ndjson, ...common, '--journal', journal, '--errors', errors];
    const first = await exitOf(command);
    expect(first.code, first.output + readFileSync(errors, 'utf8').slice(0, 1500)).toBe(1);
    expect(first.output, readFileSync(errors, 'utf8').slice(0, 1500)).toMatch(/^total +\d+ +0 +1$/m);

    const expected: Record<string, number> = { Patient: 1, Observation: 2 };
    for (const e of bundle.entry)
      expected[e.resource.resourceType] = (expected[e.resource.resourceType] ?? 0) + 1;
    for (const [type, count] of Object.entries(expected)) {
      const rejected = type === 'Observation' ? 1 : 0;
      expect(first.output).toMatch(new RegExp(`^${type} +${count} +0 +${rejected}$`, 'm'));
    }
    const rejections = readFileSync(errors, 'utf8').trim().split('\n');
    expect(rejections).toHaveLength(1);
    expect(rejections[0]).toContain(`${ndjson}:3: `);

    // Stored through the API, the bad line's neighbours too; urn:uuid references rewritten to the assigned ids.
    expect((await read('Observation/obs-1')).status).toBe(200);
    expect((await read('Observation/obs-3')).status).toBe(200);
    expect((await read('Observation/obs-bad')).status).toBe(404);
    const search = await fetch(`${base}/Encounter?_count=1`, {
      headers: { authorization: `Bearer ${token}` },
    });
    const found = (await search.json()) as { entry: { resource: { subject: { reference: string } } }[] };
    const subject = found.entry[0]!.resource.subject.reference;
    expect(subject).toMatch(/^Patient\/[A-Za-z0-9\-.]+$/);
    expect((await read(subject)).status).toBe(200);

    // The same command again resumes its journal: everything done, nothing processed.
    const resumed = await exitOf(command);
    expect(resumed.output).toMatch(/^This run: 0 resources/m);
    // A new journal over the NDJSON (ids of its own): every resource found unchanged, no new version.
    // Its token is refused (401) at first: renewed with a new assertion (--id --key), and the run goes on.
    const again = await exitOf([
      'import',
      ndjson,
      ...common,
      '--token',
      'hat1.expired.token',
      '--journal',
      path.join(root, 'again.sqlite'),
    ]);
    // "Unchanged" is the service's outcome code `write-unchanged` on each entry (docs/errors.md), not its prose.
    expect(again.code, again.output).toBe(1);
    expect(again.output).toMatch(/^type +stored +unchanged +rejected$/m);
    expect(again.output).toMatch(/^Patient +0 +1 +0$/m);
    expect(again.output).toMatch(/^Observation +0 +2 +1$/m);
    expect(again.output).toMatch(/^total +0 +3 +1$/m);
    for (const reference of ['Patient/p-ndjson', 'Observation/obs-1', 'Observation/obs-3'])
      expect(((await read(reference)).body.meta as { versionId: string }).versionId).toBe('1');
  }, 60_000);

  it('a bad token: one clear line, exit 2', async () => {
    const result = await exitOf([
      'import',
      SYNTHEA_FILE,
      '--url',
      base,
      '--token',
      'hat1.forged.token',
      '--no-progress',
      '--journal',
      path.join(root, 'bad.sqlite'),
    ]);
    expect(result.code).toBe(2);
    expect(result.output.trim().split('\n')).toHaveLength(1);
    expect(result.output).toMatch(/^hie-ledger import: the service refused the token \(401/);
  }, 30_000);

  it('no token to a service that asks for one: one clear line, exit 2', async () => {
    const result = await exitOf([
      'import',
      SYNTHEA_FILE,
      '--url',
      base,
      '--no-progress',
      '--journal',
      path.join(root, 'none.sqlite'),
    ]);
    expect(result.code).toBe(2);
    expect(result.output.trim().split('\n')).toHaveLength(1);
    expect(result.output).toMatch(/^hie-ledger import: the service asks for a token: pass --token/);
  }, 30_000);
});

describe('hie-ledger import --url (a dev-open service)', () => {
  let root: string;
  let service: CliProcess;
  let base: string;

  beforeAll(async () => {
    root = mkdtempSync(path.join(tmpdir(), 'hie-import-dev-open-'));
    service = runCli([
      'serve',
      '--data-dir',
      path.join(root, 'data'),
      '--port',
      '0',
      '--auth',
      'dev-open',
      '--audit-cron',
      'off',
    ]);
    base = (await waitForOutput(service, /"fhirBase":"([^"]+)"/))[1]!;
  }, 60_000);

  afterAll(async () => {
    if (service && service.child.exitCode === null) {
      service.child.kill('SIGKILL');
      await service.exited;
    }
    if (root) rmSync(root, { recursive: true, force: true });
  });

  it('imports without a token: the service asks for none', async () => {
    const ndjson = path.join(root, 'patient.ndjson');
    writeFileSync(ndjson, JSON.stringify({ resourceType: 'Patient', id: 'p-open', gender: 'male' }) + '\n');
    const result = await exitOf([
      'import',
      ndjson,
      '--url',
      base,
      '--no-progress',
      '--journal',
      path.join(root, 'journal.sqlite'),
    ]);
    expect(result.code, result.output).toBe(0);
    expect(result.output).toMatch(/^Patient +1 +0 +0$/m);
    const stored = await fetch(`${base}/Patient/p-open`);
    expect(stored.status).toBe(200);
    expect(((await stored.json()) as { gender?: string }).gender).toBe('male');
  }, 60_000);
});
