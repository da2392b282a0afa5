/**
 * The CLI's data directory rules (issue 15; docs/configuration.md "Data directory"), through the real `hie-ledger`
 * process: the commands that write a data directory (participant register/enroll/revoke, erase) refuse while its
 * service runs, naming the service's pid; verify and participant list only read and run beside it; every command
 * but serve and ledger connect refuses a data directory that does not exist, instead of creating one; one default
 * (./data) for every command.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MIGRATIONS } from '../../src/fhir/store/sqlite/schema.js';
import { cliNodeArgs } from '../support/cli-build.js';

interface Ran {
  code: number | null;
  stdout: string;
  stderr: string;
}

function start(args: string[], cwd = process.cwd()): { child: ChildProcess; done: Promise<Ran> } {
  const env: NodeJS.ProcessEnv = { ...process.env, HIE_DEBUG: '' };
  delete env.HIE_DATA_DIR;
  const child = spawn(process.execPath, [...cliNodeArgs(), ...args], {
    cwd,
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const done = new Promise<Ran>((resolveRun) =>
    child.once('exit', (code) => resolveRun({ code, stdout, stderr })),
  );
  return { child, done };
}

const run = (args: string[], cwd?: string) => start(args, cwd).done;

/** A valid clinician for participant register and enroll. */
const CLINICIAN = [
  '--role',
  'clinician',
  '--id',
  'dr-x',
  '--resource',
  'Practitioner/dr-x',
  '--organization',
  'Organization/o1',
];

/** One line on stderr, no stack trace. */
function expectOneLine(ran: Ran): void {
  expect(ran.stderr.trimEnd().split('\n'), ran.stderr).toHaveLength(1);
  expect(ran.stderr).not.toMatch(/^\s+at /m);
}

const temporary: string[] = [];
afterAll(() => {
  for (const dir of temporary) rmSync(dir, { recursive: true, force: true });
});

function tempRoot(): string {
  const root = mkdtempSync(join(tmpdir(), 'hie-data-dir-cli-'));
  temporary.push(root);
  return root;
}

describe('while the service runs on a data directory', () => {
  let root: string;
  let dataDir: string;
  let service: ReturnType<typeof start>;
  let servicePid: number;

  beforeAll(async () => {
    root = tempRoot();
    dataDir = join(root, 'data');
    service = start(['serve', '--port', '0', '--data-dir', dataDir]);
    let output = '';
    service.child.stdout!.on('data', (chunk: Buffer) => (output += chunk.toString()));
    // Ready when it printed its URL (polling its output: no fixed sleep).
    await new Promise<void>((ready, fail) => {
      const timer = setInterval(() => {
        if (!/"fhirBase":"/.test(output)) return;
        clearInterval(timer);
        ready();
      }, 50);
      void service.done.then((ran) => {
        clearInterval(timer);
        fail(new Error(`serve exited early: ${ran.stderr}${output}`));
      });
    });
    servicePid = service.child.pid!;
  }, 180_000);

  afterAll(async () => {
    if (service?.child.exitCode === null) {
      service.child.kill('SIGTERM');
      await service.done;
    }
  }, 60_000);

  /** Each command is refused with one line naming the service's pid (exit 1). */
  async function expectBusy(commands: string[][]): Promise<void> {
    const answers = await Promise.all(commands.map((args) => run([...args, '--data-dir', dataDir])));
    answers.forEach((ran, i) => {
      const name = commands[i]!.slice(0, 2).join(' ');
      expect(ran.code, `${name}: ${ran.stderr}`).toBe(1);
      expect(ran.stderr, name).toMatch(
        new RegExp(`^hie-ledger: the data directory .* is in use by serve \\(pid ${servicePid} on `),
      );
      expectOneLine(ran);
    });
    // The service still owns it.
    expect(JSON.parse(readFileSync(join(dataDir, 'lock.owner.json'), 'utf8'))).toMatchObject({
      pid: servicePid,
      command: 'serve',
    });
  }

  it('participant register and enroll are refused with one line naming its pid (exit 1), writing nothing', async () => {
    const out = join(root, 'dr-x');
    await expectBusy([
      ['participant', 'register', ...CLINICIAN],
      ['participant', 'enroll', ...CLINICIAN, '--out', out],
    ]);
    expect(existsSync(out)).toBe(false);
  });

  it('participant revoke and erase are refused the same way', async () => {
    await expectBusy([
      ['participant', 'revoke', '--id', 'dr-x'],
      ['erase', 'Patient/p1', '--yes'],
    ]);
  });

  it('verify and participant list only read: they run beside it', async () => {
    const [verified, listed] = await Promise.all([
      run(['verify', '--data-dir', dataDir, '--no-progress']),
      run(['participant', 'list', '--data-dir', dataDir, '--json']),
    ]);
    expect(verified.stderr).not.toMatch(/in use/);
    expect(verified.code, verified.stderr).toBe(0);
    expect(verified.stdout).toMatch(/^OK: every stored version matches the ledger\.$/m);
    expect(listed.code, listed.stderr).toBe(0);
    expect(JSON.parse(listed.stdout)).toEqual([]);
  });

  it('once the service stopped, participant enroll runs and holds the lock as itself', async () => {
    service.child.kill('SIGTERM');
    expect((await service.done).code).toBe(0);
    const out = join(root, 'patient-y');
    const enrolled = await run([
      'participant',
      'enroll',
      '--data-dir',
      dataDir,
      '--role',
      'patient',
      '--id',
      'patient-y',
      '--resource',
      'Patient/p-y',
      '--out',
      out,
    ]);
    expect(enrolled.code, enrolled.stderr).toBe(0);
    expect(existsSync(join(out, 'key.pem'))).toBe(true);
    expect(JSON.parse(readFileSync(join(dataDir, 'lock.owner.json'), 'utf8'))).toMatchObject({
      command: 'participant enroll',
    });
  });
});

describe('a data directory that does not exist', () => {
  const root = tempRoot();
  const missing = join(root, 'typo');

  /** Each command refuses it (exit 2, one line) and creates nothing. */
  async function expectRefused(commands: string[][]): Promise<void> {
    const answers = await Promise.all(commands.map((args) => run([...args, '--data-dir', missing])));
    answers.forEach((ran, i) => {
      const name = commands[i]!.slice(0, 2).join(' ');
      expect(ran.code, `${name}: ${ran.stderr}`).toBe(2);
      expect(ran.stderr, name).toContain(`no data directory at ${missing}`);
      expectOneLine(ran);
    });
    expect(existsSync(missing)).toBe(false);
    expect(existsSync(join(root, 'out'))).toBe(false);
  }

  it('is refused by participant register and enroll, not created (no CA of its own)', async () => {
    await expectRefused([
      ['participant', 'register', ...CLINICIAN],
      ['participant', 'enroll', ...CLINICIAN, '--out', join(root, 'out')],
    ]);
  });

  it('is refused by participant revoke and list', async () => {
    await expectRefused([
      ['participant', 'revoke', '--id', 'dr-x'],
      ['participant', 'list'],
    ]);
  });

  it('is refused by member list and revoke', async () => {
    await expectRefused([
      ['member', 'list'],
      ['member', 'revoke'],
    ]);
  });

  it('is refused by member register', async () => {
    await expectRefused([
      [
        'member',
        'register',
        '--organization-name',
        'Hospital X',
        '--fhir-base-url',
        'https://x.example/fhir',
      ],
    ]);
  });

  it('is refused by verify and erase', async () => {
    await expectRefused([
      ['verify', '--no-progress'],
      ['erase', 'Patient/p1'],
    ]);
  });
});

describe('the default data directory', () => {
  const cwd = tempRoot();
  const defaultDir = join(cwd, 'data');

  /** Run in `cwd` without --data-dir or HIE_DATA_DIR, each command looks for ./data. */
  async function expectDefault(commands: string[][]): Promise<void> {
    const answers = await Promise.all(commands.map((args) => run(args, cwd)));
    answers.forEach((ran, i) => {
      expect(ran.code, ran.stderr).toBe(2);
      expect(ran.stderr, commands[i]!.join(' ')).toContain(`no data directory at ${defaultDir}`);
    });
  }

  it('is ./data of the working directory for participant and member commands', async () => {
    await expectDefault([
      ['participant', 'list'],
      ['member', 'list'],
    ]);
  });

  it('is ./data of the working directory for verify and erase too', async () => {
    await expectDefault([
      ['verify', '--no-progress'],
      ['erase', 'Patient/p1'],
    ]);
  });

  it('is used once it exists', async () => {
    mkdirSync(defaultDir);
    const listed = await run(['participant', 'list', '--json'], cwd);
    expect(listed.code, listed.stderr).toBe(0);
    expect(JSON.parse(listed.stdout)).toEqual([]);
    expect(existsSync(join(defaultDir, 'identity'))).toBe(true);
  });
});

describe('a data directory whose store a newer hie-ledger wrote', () => {
  it('is refused by serve and verify with one line naming both schema versions (exit 2), not served', async () => {
    const dataDir = join(tempRoot(), 'data');
    mkdirSync(dataDir);
    const known = MIGRATIONS[MIGRATIONS.length - 1]!.version;
    const db = new Database(join(dataDir, 'resources.sqlite'));
    db.exec(
      'CREATE TABLE schema_version (version INTEGER PRIMARY KEY, description TEXT NOT NULL, applied_at TEXT NOT NULL)',
    );
    db.prepare("INSERT INTO schema_version VALUES (?, 'a newer release', '2999-01-01')").run(known + 1);
    db.close();
    const answers = await Promise.all([
      run(['serve', '--port', '0', '--data-dir', dataDir]),
      run(['verify', '--no-progress', '--data-dir', dataDir]),
    ]);
    for (const ran of answers) {
      expect(ran.code, ran.stderr).toBe(2);
      expect(ran.stderr).toContain(
        `this store was written by a newer hie-ledger: schema ${known + 1}, this build knows up to ${known}`,
      );
      expectOneLine(ran);
    }
  });
});
