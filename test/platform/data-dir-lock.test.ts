/**
 * One owner per data directory (issue 15): a second lock is refused with the owner's pid, a released lock can be
 * taken again, and a process killed with SIGKILL leaves no stale lock (the operating system releases it).
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { DataDirBusyError, lockDataDir } from '../../src/platform/data-dir-lock.js';
import { buildApp } from '../../src/app/app.js';
import { loadConfig } from '../../src/config/config.js';

const dirs: string[] = [];
afterAll(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});
function dataDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'hie-lock-'));
  dirs.push(dir);
  return dir;
}

describe('the data directory lock', () => {
  it('refuses a second owner, naming the first; released, it can be taken again', () => {
    const dir = dataDir();
    const first = lockDataDir(dir, 'serve');
    let refused: unknown;
    try {
      lockDataDir(dir, 'participant enroll');
    } catch (err) {
      refused = err;
    }
    expect(refused).toBeInstanceOf(DataDirBusyError);
    expect((refused as DataDirBusyError).owner).toMatchObject({ pid: process.pid, command: 'serve' });
    expect((refused as Error).message).toContain(`in use by serve (pid ${process.pid}`);
    first.release();
    first.release(); // idempotent
    const second = lockDataDir(dir, 'participant enroll');
    second.release();
  });

  it('a process killed with SIGKILL leaves no stale lock', async () => {
    const dir = dataDir();
    const script = `
      import { lockDataDir } from './src/platform/data-dir-lock.ts';
      lockDataDir(${JSON.stringify(dir)}, 'serve');
      process.stdout.write('locked\\n');
      setInterval(() => {}, 1000);
    `;
    const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    await new Promise<void>((done, fail) => {
      child.stdout!.on('data', (chunk: Buffer) => {
        if (chunk.toString().includes('locked')) done();
      });
      child.once('exit', (code) => fail(new Error(`exited ${code} before locking`)));
    });
    expect(() => lockDataDir(dir, 'serve')).toThrow(`in use by serve (pid ${child.pid}`);
    const exited = new Promise((done) => child.once('exit', done));
    child.kill('SIGKILL');
    await exited;
    lockDataDir(dir, 'serve').release();
  });

  it('a second service on the same data directory is refused before it opens anything; the first keeps serving', async () => {
    const dir = dataDir();
    const config = loadConfig({ dataDir: dir, auth: 'dev-open', logLevel: 'silent', auditCron: 'off' }, {});
    const first = await buildApp(config);
    try {
      await expect(buildApp(config)).rejects.toThrow(`in use by serve (pid ${process.pid}`);
      const res = await first.fastify.inject({ method: 'GET', url: '/fhir/Patient' });
      expect(res.statusCode).toBe(200);
    } finally {
      await first.close();
    }
    // Closed, it can be opened again.
    const again = await buildApp(config);
    await again.close();
  });
});
