/**
 * Bulk jobs shared by replicas on one PostgreSQL database (docs/replicas.md, "Bulk jobs at every replica"): the job
 * records in the database (migration 15), the files in one bulk folder both replicas mount (--bulk-dir).
 *
 * - Two app instances: a job made at one is polled, its files fetched and it is cancelled at the other; whichever
 *   replica runs it, only one does; an expired job is deleted once when both sweep at the same moment.
 * - Two replica processes: the replica running an `$import` (its source stalled mid-body) is SIGKILLed; the other
 *   takes the job over once the lease (--bulk-lease 2) ran out, fetches the source again and completes it.
 *
 * Needs HIE_TEST_POSTGRES_URL (skipped with its reason otherwise).
 */
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ExportState } from '../../src/bulk/export-job.js';
import { POSTGRES_URL, postgresSkipReason } from '../support/postgres.js';
import { bootApp, FHIR_JSON, send, type BootedApp } from '../support/app-harness.js';
import { runCli, until, waitForOutput, type CliProcess } from '../support/cli-process.js';

const skip = postgresSkipReason('bulk jobs shared by PostgreSQL replicas');
const ASYNC = { prefer: 'respond-async', accept: 'application/fhir+json' };
const schemas: string[] = [];
function databaseUrlOf(): string {
  const schema = `hie_bulk_${randomBytes(6).toString('hex')}`;
  schemas.push(schema);
  return `${POSTGRES_URL}${POSTGRES_URL!.includes('?') ? '&' : '?'}schema=${schema}`;
}
const roots: string[] = [];
function folder(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  roots.push(dir);
  return dir;
}

describe.skipIf(skip !== undefined)('bulk jobs shared by PostgreSQL replicas', () => {
  afterAll(async () => {
    for (const dir of roots) rmSync(dir, { recursive: true, force: true });
    if (!POSTGRES_URL) return;
    const pool = new pg.Pool({ connectionString: POSTGRES_URL, max: 1 });
    for (const schema of schemas) await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
    await pool.end();
  });

  describe('two app instances on one database and one bulk folder', () => {
    const replicas: BootedApp[] = [];
    let bulkDir: string;
    /** While closed, the replica running an export waits after each saved page (whichever replica that is). */
    let gate: Promise<void> = Promise.resolve();
    let openGate = (): void => undefined;
    const pausedAt: { replica: number; state: ExportState }[] = [];

    beforeAll(async () => {
      bulkDir = folder('hie-bulk-shared-');
      const flags = {
        auth: 'dev-open',
        logLevel: 'warn',
        validation: 'schema',
        store: 'postgres',
        databaseUrl: databaseUrlOf(),
        anchoring: 'off',
        bulkDir,
      };
      for (const replica of [0, 1])
        replicas.push(
          await bootApp(
            flags,
            {
              bulk: {
                pageSize: 2,
                saveEvery: 1,
                hooks: {
                  afterPage: (_job, state) => {
                    pausedAt.push({ replica, state: { ...state } });
                    return gate;
                  },
                },
              },
            },
            'hie-bulk-replica-',
          ),
        );
      for (let n = 0; n < 5; n++)
        await send(
          replicas[0]!.app,
          {
            method: 'POST',
            url: '/fhir/Patient',
            headers: FHIR_JSON,
            body: { resourceType: 'Patient', birthDate: `19${60 + n}` },
          },
          201,
        );
    });
    afterAll(async () => {
      openGate();
      for (const replica of replicas) await replica.stop();
    });

    const statusAt = (replica: BootedApp, path: string) => send(replica.app, { url: path });

    it('a job is polled and cancelled at the replica that does not run it; the runner stops', async () => {
      gate = new Promise<void>((resolve) => (openGate = resolve));
      const [a, b] = replicas as [BootedApp, BootedApp];
      const kick = await send(a.app, { url: '/fhir/$export?_type=Patient', headers: ASYNC }, 202);
      const status = new URL(kick.headers['content-location'] as string).pathname;
      const job = status.split('/').pop()!;
      await until(async () => pausedAt.length > 0, 'the job paused after its first page');
      const runner = pausedAt[0]!.replica;
      const other = replicas[1 - runner]!;
      for (const replica of [a, b]) {
        const progress = await statusAt(replica, status);
        expect(progress.statusCode, progress.body).toBe(202);
        expect(progress.headers['x-progress']).toContain('2 resources exported');
      }
      expect(existsSync(join(bulkDir, 'export', job))).toBe(true);

      await send(other.app, { method: 'DELETE', url: status }, 202);
      expect((await statusAt(a, status)).statusCode).toBe(404);
      expect((await statusAt(b, status)).statusCode).toBe(404);
      expect(existsSync(join(bulkDir, 'export', job))).toBe(false);
      openGate();
      await replicas[runner]!.app.bulk!.exports.settled();
      // Only one replica ever ran it, and it saved nothing after the cancel.
      expect(new Set(pausedAt.map((p) => p.replica))).toEqual(new Set([runner]));
      expect(pausedAt).toHaveLength(1);
      expect((await statusAt(a, status)).statusCode).toBe(404);
    });

    it("a job's status and files answer at either replica; an expired job is deleted once", async () => {
      const [a, b] = replicas as [BootedApp, BootedApp];
      pausedAt.length = 0;
      const kick = await send(b.app, { url: '/fhir/$export?_type=Patient', headers: ASYNC }, 202);
      const status = new URL(kick.headers['content-location'] as string).pathname;
      await until(async () => (await statusAt(a, status)).statusCode === 200, 'the job completed');
      const manifests = await Promise.all(
        [a, b].map(async (r) => JSON.parse((await statusAt(r, status)).body)),
      );
      expect(manifests[0]).toEqual(manifests[1]);
      expect(manifests[0].output).toEqual([expect.objectContaining({ type: 'Patient', count: 5 })]);
      const fileUrl = new URL(manifests[0].output[0].url).pathname;
      const files = await Promise.all(
        [a, b].map(async (r) => (await send(r.app, { url: fileUrl }, 200)).body),
      );
      expect(files[0]).toBe(files[1]);
      expect(files[0]!.trim().split('\n')).toHaveLength(5);
      // Three pages of two, each saved: by one replica only.
      expect(new Set(pausedAt.map((p) => p.replica)).size).toBe(1);

      const later = Date.now() + 3_600_000 + 1;
      const swept = await Promise.all([a, b].map((r) => r.app.bulk!.exports.sweep(later)));
      expect(swept[0]! + swept[1]!).toBe(1);
      expect((await statusAt(a, status)).statusCode).toBe(404);
      expect(existsSync(join(bulkDir, 'export', status.split('/').pop()!))).toBe(false);
    });
  });

  describe('two app instances on one database, each with its own bulk folder', () => {
    const replicas: BootedApp[] = [];
    const bulkDirs: string[] = [];
    let importRoot: string;
    let databaseUrl: string;

    beforeAll(async () => {
      databaseUrl = databaseUrlOf();
      importRoot = folder('hie-bulk-import-root-');
      for (const replica of [0, 1]) {
        bulkDirs.push(folder(`hie-bulk-own-${replica}-`));
        replicas.push(
          await bootApp(
            {
              auth: 'dev-open',
              logLevel: 'warn',
              validation: 'schema',
              store: 'postgres',
              databaseUrl,
              anchoring: 'off',
              bulkDir: bulkDirs[replica],
              importRoot,
            },
            { bulk: { saveEvery: 1 } },
            'hie-bulk-replica-',
          ),
        );
      }
    });
    afterAll(async () => {
      for (const replica of replicas) await replica.stop();
    });

    const statusAt = (replica: BootedApp, path: string) => send(replica.app, { url: path });

    it("an import's progress is reported alike by the replica that does not run it", async () => {
      const [a, b] = replicas as [BootedApp, BootedApp];
      const source = join(importRoot, 'patients.ndjson');
      writeFileSync(
        source,
        ['p1', 'p2', 'p3'].map((id) => JSON.stringify({ resourceType: 'Patient', id })).join('\n') + '\n',
      );
      // Every write waits for the write clock: the import scans its source, then waits at its first write.
      const pool = new pg.Pool({ connectionString: databaseUrl.replace(/[?&]schema=.*$/, ''), max: 1 });
      const holder = await pool.connect();
      let status = '';
      try {
        await holder.query('BEGIN');
        await holder.query(`LOCK TABLE "${schemas[schemas.length - 1]}".write_clock IN EXCLUSIVE MODE`);
        const kick = await send(
          a.app,
          {
            method: 'POST',
            url: '/fhir/$import',
            headers: { ...ASYNC, 'content-type': 'application/fhir+json' },
            body: {
              resourceType: 'Parameters',
              parameter: [
                { name: 'inputFormat', valueCode: 'application/fhir+ndjson' },
                { name: 'input', part: [{ name: 'url', valueUrl: `file://${source}` }] },
              ],
            },
          },
          202,
        );
        status = new URL(kick.headers['content-location'] as string).pathname;
        // Only A has the job's folder, so A runs it; B knows its progress from the job's record only.
        await until(
          async () => (await statusAt(b, status)).headers['x-progress'] === 'scan: 3 resources',
          'the other replica reports the scan of the three resources',
        );
        const atRunner = await statusAt(a, status);
        expect(atRunner.statusCode).toBe(202);
        expect(atRunner.headers['x-progress']).toBe('scan: 3 resources');
      } finally {
        await holder.query('ROLLBACK').catch(() => undefined);
        holder.release();
        await pool.end();
      }
      await until(async () => (await statusAt(b, status)).statusCode === 200, 'the import completed');
      const manifest = JSON.parse((await statusAt(b, status)).body);
      expect(manifest.output).toEqual([expect.objectContaining({ type: 'Patient', count: 3 })]);
    });

    it("a job cancelled at a replica without its folder has its files deleted by the folder's replica", async () => {
      const [a, b] = replicas as [BootedApp, BootedApp];
      const kick = await send(a.app, { url: '/fhir/$export?_type=Patient', headers: ASYNC }, 202);
      const status = new URL(kick.headers['content-location'] as string).pathname;
      const job = status.split('/').pop()!;
      await until(async () => (await statusAt(b, status)).statusCode === 200, 'the export completed');
      const files = join(bulkDirs[0]!, 'export', job);
      expect(existsSync(files)).toBe(true);

      await send(b.app, { method: 'DELETE', url: status }, 202);
      expect((await statusAt(a, status)).statusCode).toBe(404);
      expect((await statusAt(b, status)).statusCode).toBe(404);
      // B's sweep does not touch another folder's job; A's deletes its record and its files.
      expect(await b.app.bulk!.exports.sweep()).toBe(0);
      expect(existsSync(files)).toBe(true);
      expect(await a.app.bulk!.exports.sweep()).toBe(1);
      expect(existsSync(files)).toBe(false);
      expect(await a.app.bulk!.exports.sweep()).toBe(0);
    });
  });

  describe('two replica processes, the one running a job killed', () => {
    const processes: CliProcess[] = [];
    let source: Server;
    let requests = 0;
    const PATIENTS = ['k1', 'k2', 'k3'].map((id) => JSON.stringify({ resourceType: 'Patient', id }));

    afterAll(async () => {
      for (const started of processes)
        if (started.child.exitCode === null && started.child.signalCode === null) {
          started.child.kill('SIGKILL');
          await started.exited;
        }
      source?.closeAllConnections();
      source?.close();
    });

    it('the other replica takes the job over once the lease ran out, and completes it', async () => {
      // The source: its first answer stops after one line (the replica fetching it is killed meanwhile).
      source = createServer((_request, response) => {
        requests++;
        response.writeHead(200, { 'content-type': 'application/fhir+ndjson' });
        if (requests === 1) response.write(`${PATIENTS[0]}\n`);
        else response.end(`${PATIENTS.join('\n')}\n`);
      });
      await new Promise<void>((resolve) => source.listen(0, '127.0.0.1', resolve));
      const origin = `http://127.0.0.1:${(source.address() as { port: number }).port}`;
      const databaseUrl = databaseUrlOf();
      const bulkDir = folder('hie-bulk-shared-');
      const replicaArgs = (dataDir: string) => [
        ...['serve', '--port', '0', '--auth', 'dev-open', '--audit-cron', 'off', '--validation', 'schema'],
        ...[
          '--data-dir',
          dataDir,
          '--store',
          'postgres',
          '--database-url',
          databaseUrl,
          '--anchoring',
          'off',
        ],
        ...['--bulk-dir', bulkDir, '--bulk-lease', '2', '--import-allow', origin],
      ];
      for (const name of ['replica-1', 'replica-2'])
        processes.push(runCli(replicaArgs(join(folder('hie-bulk-proc-'), name))));
      const bases = await Promise.all(
        processes.map(async (replica) => (await waitForOutput(replica, /"fhirBase":"([^"]+)"/))[1]!),
      );

      const kick = await fetch(`${bases[0]}/$import`, {
        method: 'POST',
        headers: { ...ASYNC, 'content-type': 'application/fhir+json' },
        body: JSON.stringify({
          resourceType: 'Parameters',
          parameter: [
            { name: 'inputFormat', valueCode: 'application/fhir+ndjson' },
            { name: 'input', part: [{ name: 'url', valueUrl: `${origin}/patients.ndjson` }] },
          ],
        }),
      });
      expect(kick.status, await kick.clone().text()).toBe(202);
      const statusPath = new URL(kick.headers.get('content-location')!).pathname.replace(/^\/fhir/, '');
      const job = statusPath.split('/').pop()!;
      await until(async () => requests === 1, 'a replica fetching the source');

      const pool = new pg.Pool({ connectionString: databaseUrl.replace(/[?&]schema=.*$/, ''), max: 1 });
      const schema = schemas[schemas.length - 1]!;
      const lease = async () =>
        (
          await pool.query<{ holder: string | null; lease_token: string; status: string }>(
            `SELECT holder, lease_token, status FROM "${schema}".bulk_job WHERE id = $1`,
            [job],
          )
        ).rows[0]!;
      try {
        const taken = await lease();
        expect(taken).toMatchObject({ status: 'running', lease_token: '1' });
        const holderPid = Number(taken.holder!.split(':')[1]);
        const killed = processes.findIndex((p) => p.child.pid === holderPid);
        expect(killed).toBeGreaterThanOrEqual(0);
        processes[killed]!.child.kill('SIGKILL');
        await processes[killed]!.exited;
        const survivor = bases[1 - killed]!;

        await until(
          async () => (await fetch(`${survivor}${statusPath}`)).status === 200,
          'the survivor completed the job',
          240_000,
        );
        const manifest = (await (await fetch(`${survivor}${statusPath}`)).json()) as {
          output: { type: string; count: number }[];
          error: unknown[];
        };
        expect(manifest.output).toEqual([expect.objectContaining({ type: 'Patient', count: 3 })]);
        expect(manifest.error).toEqual([]);
        expect(requests).toBe(2);
        const after = await lease();
        expect(after).toMatchObject({ status: 'completed', holder: null, lease_token: '2' });
        for (const id of ['k1', 'k2', 'k3'])
          expect((await fetch(`${survivor}/Patient/${id}`)).status).toBe(200);
      } finally {
        await pool.end();
      }
      // Two processes started from the compiled CLI and a lease to run out: its own limit, as the store's
      // two-replica test has (16 s at load 15).
    }, 300_000);
  });
});
