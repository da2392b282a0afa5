/**
 * `hie-ledger validate --dry-run` as an operator runs it (its own process): over the stored current versions, what
 * a stricter rule-family setting would refuse, per family and type; beside the running service (no data-dir lock)
 * and on a stopped data directory; on PostgreSQL too. Exit 0 nothing would be refused, 1 something would, 2 bad
 * configuration.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bootApp, send, type BootedApp } from '../support/app-harness.js';
import { runCli } from '../support/cli-process.js';
import { POSTGRES_URL, postgresSkipReason } from '../support/postgres.js';

/** Observation.status bound (required) to observation-status: `done` is not in it (accepted at bindings=warn). */
const badStatus = { resourceType: 'Observation', status: 'done', code: { text: 'pulse' } };
const patient = { resourceType: 'Patient', name: [{ family: 'Chalmers' }] };

interface Run {
  code: number | null;
  output: string;
}

async function cli(args: string[]): Promise<Run> {
  const started = runCli(args);
  const code = await started.exited;
  return { code, output: started.output() };
}

/** The JSON summary printed on stdout (the one JSON object of the output). */
function summaryOf(output: string): {
  validated: number;
  wouldRefuse: number;
  byFamily: Record<string, number>;
  byType: Record<string, { validated: number; wouldRefuse: number }>;
  issuesWritten: number;
} {
  return JSON.parse(output.slice(output.indexOf('{'), output.lastIndexOf('}') + 1));
}

/** Stores a valid Patient, one Observation refused by default (bindings) and an updated and a deleted resource. */
async function storeSamples(booted: BootedApp): Promise<string> {
  await send(booted.app, { method: 'PUT', url: '/fhir/Patient/p1', body: { ...patient, id: 'p1' } }, 201);
  const created = await send(booted.app, { method: 'POST', url: '/fhir/Observation', body: badStatus }, 201);
  const id = /Observation\/([^/]+)\//.exec(String(created.headers.location))![1];
  // An earlier version that would be refused, and a deleted resource: only current versions count.
  await send(
    booted.app,
    { method: 'PUT', url: '/fhir/Observation/o2', body: { ...badStatus, id: 'o2' } },
    201,
  );
  await send(
    booted.app,
    { method: 'PUT', url: '/fhir/Observation/o2', body: { ...badStatus, id: 'o2', status: 'final' } },
    200,
  );
  await send(
    booted.app,
    { method: 'PUT', url: '/fhir/Observation/o3', body: { ...badStatus, id: 'o3' } },
    201,
  );
  await send(booted.app, { method: 'DELETE', url: '/fhir/Observation/o3' }, 200);
  return id;
}

describe('hie-ledger validate --dry-run (SQLite data directory)', () => {
  let booted: BootedApp;
  let refusedId: string;
  let dir: string;

  beforeAll(async () => {
    // The service accepts binding errors as warnings: the stored data has what a stricter setting refuses.
    booted = await bootApp({ logLevel: 'warn', auth: 'dev-open', validationLevel: 'bindings=warn' });
    refusedId = await storeSamples(booted);
    dir = mkdtempSync(path.join(tmpdir(), 'hie-dry-run-'));
  });

  afterAll(async () => {
    await booted?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('beside the running service: counts what every family at error would refuse (exit 1), ids and locations only on stdout', async () => {
    const issues = path.join(dir, 'issues.ndjson');
    const run = await cli(['validate', '--dry-run', '--data-dir', booted.dataDir, '--issues', issues]);
    expect(run.code, run.output).toBe(1);
    const summary = summaryOf(run.output);
    expect(summary.validated).toBe(3);
    expect(summary.wouldRefuse).toBe(1);
    expect(summary.byFamily.bindings).toBe(1);
    expect(summary.byFamily.slicing).toBe(0);
    expect(summary.byType).toEqual({
      Patient: { validated: 1, wouldRefuse: 0 },
      Observation: { validated: 2, wouldRefuse: 1 },
    });
    // No value of a resource on stdout (the refused status 'done', the name Chalmers), no diagnostics.
    expect(run.output).not.toMatch(/'done'|Chalmers|diagnostics/);
    const lines = readFileSync(issues, 'utf8')
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as Record<string, unknown>);
    expect(lines).toEqual([
      expect.objectContaining({
        resourceType: 'Observation',
        id: refusedId,
        versionId: 1,
        family: 'bindings',
        severity: 'error',
        code: 'code-invalid',
        expression: 'Observation.status',
      }),
    ]);
    expect(statSync(issues).mode & 0o777).toBe(0o600);
  });

  it('at the levels given: nothing refused is exit 0; a bad family is exit 2', async () => {
    const lenient = await cli([
      'validate',
      '--dry-run',
      '--data-dir',
      booted.dataDir,
      '--family-levels',
      'bindings=warn',
      '--issues',
      path.join(dir, 'lenient.ndjson'),
    ]);
    expect(lenient.code, lenient.output).toBe(0);
    expect(summaryOf(lenient.output).wouldRefuse).toBe(0);
    const bad = await cli([
      'validate',
      '--dry-run',
      '--data-dir',
      booted.dataDir,
      '--family-levels',
      'binding=warn',
    ]);
    expect(bad.code, bad.output).toBe(2);
    expect(bad.output).toContain("'binding' is not a rule family");
    const noDryRun = await cli(['validate', '--data-dir', booted.dataDir]);
    expect(noDryRun.code, noDryRun.output).toBe(2);
  });

  it('on the stopped data directory, which it leaves as it was', async () => {
    await booted.app.close();
    const before = statSync(path.join(booted.dataDir, 'resources.sqlite')).mtimeMs;
    const run = await cli([
      'validate',
      '--dry-run',
      '--data-dir',
      booted.dataDir,
      '--issues',
      path.join(dir, 'stopped.ndjson'),
    ]);
    expect(run.code, run.output).toBe(1);
    expect(summaryOf(run.output).wouldRefuse).toBe(1);
    expect(statSync(path.join(booted.dataDir, 'resources.sqlite')).mtimeMs).toBe(before);
    await booted.restart();
  });
});

const skip = postgresSkipReason('validate --dry-run on PostgreSQL');
const schema = `hie_dryrun_${randomBytes(6).toString('hex')}`;
const databaseUrl = POSTGRES_URL
  ? `${POSTGRES_URL}${POSTGRES_URL.includes('?') ? '&' : '?'}schema=${schema}`
  : '';

describe.skipIf(skip !== undefined)('hie-ledger validate --dry-run --store postgres', () => {
  let booted: BootedApp;

  beforeAll(async () => {
    booted = await bootApp({
      logLevel: 'warn',
      auth: 'dev-open',
      validationLevel: 'bindings=warn',
      store: 'postgres',
      databaseUrl,
    });
    await storeSamples(booted);
  });

  afterAll(async () => {
    await booted?.stop();
    if (!POSTGRES_URL) return;
    const pool = new pg.Pool({ connectionString: POSTGRES_URL, max: 1 });
    await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
    await pool.end();
  });

  it('reads the database as a replica does and counts the same', async () => {
    const run = await cli([
      'validate',
      '--dry-run',
      '--store',
      'postgres',
      '--database-url',
      databaseUrl,
      '--data-dir',
      booted.dataDir,
      '--issues',
      path.join(booted.dataDir, 'pg.ndjson'),
    ]);
    expect(run.code, run.output).toBe(1);
    const summary = summaryOf(run.output);
    expect(summary.validated).toBe(3);
    expect(summary.byFamily.bindings).toBe(1);
  });
});
