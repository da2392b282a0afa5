/**
 * Everything the service creates in its data directory is for its own user only: directories 0700, files 0600
 * (SQLite databases with their -wal/-shm files, the definitions cache, checkpoints, journal, identity, secrets),
 * without relying on the process umask; a data directory left 0755/0644 by an older version is tightened at start.
 */
import { chmodSync, existsSync, lstatSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { App } from '../../src/app/app.js';
import { send } from './helpers.js';

/** Every entry under `dir` (the directory itself included) with its permission bits, e.g. `ledger/ 700`. */
function modesUnder(dir: string): Map<string, string> {
  const modes = new Map<string, string>();
  const walk = (path: string, name: string) => {
    const stat = lstatSync(path);
    modes.set(stat.isDirectory() ? `${name}/` : name, (stat.mode & 0o777).toString(8));
    if (stat.isDirectory())
      for (const entry of readdirSync(path))
        walk(join(path, entry), name === '.' ? entry : `${name}/${entry}`);
  };
  walk(dir, '.');
  return modes;
}

function chmodTree(dir: string, dirMode: number, fileMode: number): void {
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) chmodTree(path, dirMode, fileMode);
    else chmodSync(path, fileMode);
  }
  chmodSync(dir, dirMode);
}

const silent = new Writable({ write: (_chunk, _encoding, done) => done() });

/**
 * The app and config modules as a new service process has them: test files share one module graph (see
 * vitest.config.ts), and what a process loads once (the definitions, the compiled schema) writes its cache into
 * the data directory of the first app only; this file checks the modes of that cache too.
 */
let modules: [typeof import('../../src/app/app.js'), typeof import('../../src/config/config.js')];

async function start(dataDir: string): Promise<App> {
  const [{ buildApp }, { loadConfig }] = modules;
  const config = loadConfig({ dataDir, port: 0, host: '127.0.0.1', logLevel: 'info', auth: 'dev-open' }, {});
  return buildApp(config, { logStream: silent });
}

/** Writes, reads and searches, and lets everything the service keeps on disk reach it. */
async function use(app: App): Promise<void> {
  await send(
    app,
    {
      method: 'POST',
      url: '/fhir/Patient',
      body: JSON.stringify({ resourceType: 'Patient', birthDate: '1970' }),
    },
    201,
  );
  await send(app, { method: 'GET', url: '/fhir/Patient?birthdate=1970' }, 200);
  await app.integrity!.anchorer.drain();
}

describe('data directory modes', () => {
  const root = mkdtempSync(join(tmpdir(), 'hie-modes-'));
  let umask: number;
  beforeAll(async () => {
    // The usual umask, which leaves files 0644 and directories 0755 unless the service asks for less.
    umask = process.umask(0o022);
    vi.resetModules();
    modules = await Promise.all([import('../../src/app/app.js'), import('../../src/config/config.js')]);
  });
  afterAll(() => {
    process.umask(umask);
    rmSync(root, { recursive: true, force: true });
  });

  const expectPrivate = (modes: Map<string, string>) => {
    const open = [...modes].filter(([name, mode]) => mode !== (name.endsWith('/') ? '700' : '600'));
    expect(open).toEqual([]);
  };

  it('creates every directory 0700 and every file 0600, SQLite -wal/-shm included', async () => {
    const dataDir = join(root, 'fresh', 'data');
    const app = await start(dataDir);
    try {
      await use(app);
      const running = modesUnder(dataDir);
      // The store with its WAL files while the service runs, the journal, identity, secrets, caches.
      for (const name of [
        'resources.sqlite',
        'resources.sqlite-wal',
        'resources.sqlite-shm',
        'integrity.sqlite',
      ])
        expect(running.has(name), name).toBe(true);
      expect(running.has('identity/')).toBe(true);
      expect(running.has('cache/')).toBe(true);
      expectPrivate(running);
    } finally {
      await app.close();
    }
    expect(existsSync(join(dataDir, 'checkpoints'))).toBe(true);
    expectPrivate(modesUnder(dataDir));
  });

  it('tightens a data directory an older version left 0755/0644', async () => {
    const dataDir = join(root, 'older');
    const first = await start(dataDir);
    await use(first);
    await first.close();
    chmodTree(dataDir, 0o755, 0o644);
    expect([...modesUnder(dataDir).values()]).toContain('644');

    const app = await start(dataDir);
    try {
      await use(app);
      expectPrivate(modesUnder(dataDir));
    } finally {
      await app.close();
    }
    expectPrivate(modesUnder(dataDir));
  });
});
