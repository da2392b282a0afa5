import { openParticipantDirectory } from '../../src/commands/participant.js';
import { createServer, type AddressInfo } from 'node:net';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { cliNodeArgs } from '../support/cli-build.js';
import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import {
  CONFIG_OPTIONS,
  ConfigError,
  DEFAULT_MSP_ID,
  loadConfig,
  loadSettings,
  settingOf,
} from '../../src/config/config.js';
import { createProgram } from '../../src/commands/program.js';

/** Every command that runs (no subcommands of its own), with its path: ['participant', 'enroll']. */
function leafCommands(command: Command, path: string[] = []): { path: string[]; command: Command }[] {
  if (command.commands.length === 0) return [{ path, command }];
  return command.commands.flatMap((sub) => leafCommands(sub, [...path, sub.name()]));
}

/** The rows of a Markdown table whose first cell starts with `start`, as cells. */
function tableRows(doc: string, start: string): string[][] {
  return doc
    .split('\n')
    .filter((line) => line.startsWith(`| ${start}`))
    .map((line) =>
      line
        .split(/(?<!\\)\|/)
        .slice(1, -1)
        .map((cell) => cell.trim()),
    );
}

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) =>
    entry.isDirectory()
      ? sourceFiles(join(dir, entry.name))
      : entry.name.endsWith('.ts')
        ? [join(dir, entry.name)]
        : [],
  );
}

describe('configuration', () => {
  it('has defaults', () => {
    const config = loadConfig({}, {});
    expect(config).toMatchObject({
      port: 8080,
      host: '127.0.0.1',
      dataDir: resolve('./data'),
      logLevel: 'info',
      bodyLimit: 16 * 1024 * 1024,
    });
  });

  it('takes flags over environment over defaults', () => {
    const env = {
      HIE_PORT: '9000',
      HIE_HOST: '0.0.0.0',
      HIE_DATA_DIR: '/tmp/x',
      HIE_LOG_LEVEL: 'warn',
      HIE_BODY_LIMIT: '1KiB',
      HIE_BASE_URL: 'https://hie.example.org/fhir/',
    };
    const fromEnv = loadConfig({}, env);
    expect(fromEnv).toMatchObject({
      port: 9000,
      host: '0.0.0.0',
      dataDir: '/tmp/x',
      logLevel: 'warn',
      bodyLimit: 1024,
      baseUrl: 'https://hie.example.org/fhir',
    });
    const fromFlags = loadConfig({ port: '9100', dataDir: '/tmp/y', bodyLimit: '2048' }, env);
    expect(fromFlags.port).toBe(9100);
    expect(fromFlags.dataDir).toBe('/tmp/y');
    expect(fromFlags.bodyLimit).toBe(2048);
    expect(fromFlags.host).toBe('0.0.0.0');
  });

  it('is documented: docs/configuration.md names every flag and variable', () => {
    const doc = readFileSync('docs/configuration.md', 'utf8');
    for (const option of CONFIG_OPTIONS) {
      expect(doc, option.flag).toContain(`\`${option.flag.replace('|', '\\|')}\``);
      expect(doc, option.env).toContain(`\`${option.env}\``);
    }
  });

  it('has the MSP id, the CA and the schema cache directory in the one table', () => {
    expect(loadConfig({}, {})).toMatchObject({ mspId: DEFAULT_MSP_ID, ca: 'embedded' });
    expect(loadConfig({}, {}).cacheDir).toBeUndefined();
    expect(DEFAULT_MSP_ID).toBe('Org1MSP');
    const fromEnv = loadConfig(
      {},
      { HIE_MSP_ID: 'Org2MSP', HIE_CA: 'fabric', HIE_FABRIC_CONFIG: 'net/f.json', HIE_CACHE_DIR: 'cache' },
    );
    expect(fromEnv).toMatchObject({
      mspId: 'Org2MSP',
      ca: 'fabric',
      fabricConfig: resolve('net/f.json'),
      cacheDir: resolve('cache'),
    });
    expect(loadConfig({ mspId: 'Org3MSP' }, { HIE_MSP_ID: 'Org2MSP' }).mspId).toBe('Org3MSP');
    expect(() => loadConfig({}, { HIE_CA: 'vault' })).toThrow(
      /HIE_CA: 'vault' is not one of embedded, fabric/,
    );
    expect(() => loadConfig({ ca: 'fabric' }, {})).toThrow(/--ca fabric needs --fabric-config/);
    expect(() => loadConfig({ mspId: ' ' }, {})).toThrow(/--msp-id/);
  });

  it("loads only a command's settings: another command's bad variable does not matter", () => {
    const env = { HIE_CA: 'vault', HIE_PORT: 'eighty', HIE_DATA_DIR: '/tmp/d' };
    expect(loadSettings(['dataDir', 'mspId'], {}, env)).toEqual({ dataDir: '/tmp/d', mspId: DEFAULT_MSP_ID });
    expect(() => loadSettings(['ca'], {}, env)).toThrow(/HIE_CA/);
  });

  it('reads the environment in src/config/config.ts only', () => {
    // CORE_CHAINCODE_LOGGING_LEVEL is fabric-shim's own variable (docs/configuration.md): the library reads it.
    const allowed = new Set([
      join('src', 'config/config.ts'),
      join('src', 'ledger', 'embedded', 'chaincode-runtime.ts'),
    ]);
    const readers = sourceFiles('src').filter(
      (file) => !allowed.has(file) && /process\.env\b/.test(readFileSync(file, 'utf8')),
    );
    expect(readers).toEqual([]);
    const runtime = readFileSync(join('src', 'ledger', 'embedded', 'chaincode-runtime.ts'), 'utf8');
    expect(
      runtime.match(/process\.env\.[A-Z_]+/g)?.every((read) => read.endsWith('CORE_CHAINCODE_LOGGING_LEVEL')),
    ).toBe(true);
  });

  it('gives every command its settings from the one table: same flag, variable in the help', () => {
    const settings = new Map(CONFIG_OPTIONS.map((option) => [option.flag.split(' ')[0], option]));
    // The participant commands' --organization is the participant's organisation, not the service's setting.
    const ownOptions = new Set(['participant register --organization', 'participant enroll --organization']);
    for (const { path, command } of leafCommands(createProgram())) {
      for (const option of command.options) {
        const setting = settings.get(option.long ?? '');
        if (!setting || ownOptions.has(`${path.join(' ')} ${option.long}`)) continue;
        expect(settingOf(option), `${path.join(' ')} ${option.long}`).toBe(setting);
        expect(option.flags, `${path.join(' ')} ${option.long}`).toBe(setting.flag);
        expect(option.description, `${path.join(' ')} ${option.long}`).toContain(`env ${setting.env}`);
        expect(option.defaultValue, `${path.join(' ')} ${option.long}: defaults come from the table`).toBe(
          undefined,
        );
      }
    }
  });

  it('documents every option of every command once: the settings table and the commands table', () => {
    const doc = readFileSync('docs/configuration.md', 'utf8');
    const settingRows = tableRows(doc, '`--');
    const commandRows = tableRows(doc, '`hie-ledger ');
    for (const option of CONFIG_OPTIONS) {
      const rows = settingRows.filter((row) => row[0] === `\`${option.flag.replace('|', '\\|')}\``);
      expect(rows, option.flag).toHaveLength(1);
      expect(rows[0][1], option.flag).toBe(`\`${option.env}\``);
    }
    const readers = new Map<string, Set<string>>();
    for (const { path, command } of leafCommands(createProgram())) {
      const row = commandRows.find((cells) => cells[0].startsWith(`\`hie-ledger ${path.join(' ')}`));
      expect(row, path.join(' ')).toBeDefined();
      for (const option of command.options) {
        const long = option.long!;
        if (settingOf(option)) {
          readers.set(long, (readers.get(long) ?? new Set()).add(path[0]));
        } else {
          expect(row![1], `${path.join(' ')} ${long}`).toMatch(new RegExp(`\`${long}\``));
        }
      }
    }
    for (const row of settingRows) {
      const long = row[0].replace(/^`/, '').split(' ')[0];
      const documented = row[row.length - 1].split(',').map((name) => name.trim());
      expect(documented.sort(), `read by of ${long}`).toEqual([...(readers.get(long) ?? [])].sort());
    }
  });

  it('refuses invalid values, naming the source', () => {
    expect(() => loadConfig({ port: '99999' }, {})).toThrow(ConfigError);
    expect(() => loadConfig({}, { HIE_PORT: 'eighty' })).toThrow(/HIE_PORT/);
    expect(() => loadConfig({ logLevel: 'loud' }, {})).toThrow(/--log-level/);
    expect(() => loadConfig({ bodyLimit: '12 parsecs' }, {})).toThrow(/size/);
    expect(() => loadConfig({ bodyLimit: '0' }, {})).toThrow(ConfigError);
    expect(loadConfig({}, { HIE_READ_CACHE: '0' }).readCache).toBe(0);
    expect(loadConfig({}, { HIE_ORGANIZATION: 'Organization/hosp-a' }).organization).toBe(
      'Organization/hosp-a',
    );
    expect(loadConfig({}, {}).organization).toBeUndefined();
    expect(() => loadConfig({ organization: 'hosp-a' }, {})).toThrow(/--organization/);
    expect(loadConfig({ readCache: '8MiB' }, {}).readCache).toBe(8 * 1024 * 1024);
    expect(() => loadConfig({ readCache: 'lots' }, {})).toThrow(/--read-cache/);
    expect(loadConfig({}, {}).groupCommit).toBe(true);
    expect(loadConfig({}, { HIE_GROUP_COMMIT: 'off' }).groupCommit).toBe(false);
    expect(() => loadConfig({ groupCommit: 'sometimes' }, {})).toThrow(/--group-commit/);
    expect(() => loadConfig({ baseUrl: 'ftp://x' }, {})).toThrow(ConfigError);
  });
});

const temporary: string[] = [];
afterAll(() => {
  for (const dir of temporary) rmSync(dir, { recursive: true, force: true });
});

function cli(args: string[], env: NodeJS.ProcessEnv = {}) {
  return spawn(process.execPath, [...cliNodeArgs(), ...args], {
    cwd: process.cwd(),
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}

describe('hie-ledger verify and erase', () => {
  async function run(args: string[], env: NodeJS.ProcessEnv = {}) {
    const child = cli(args, env);
    let stderr = '';
    child.stderr.on('data', (chunk) => (stderr += chunk));
    const code = await new Promise((done) => child.on('exit', done));
    return { code, stderr };
  }

  it('take the data directory from HIE_DATA_DIR and check their settings like serve (exit 2)', async () => {
    const root = mkdtempSync(join(tmpdir(), 'hie-cli-'));
    temporary.push(root);
    const missing = join(root, 'absent');
    const verify = await run(['verify', '--no-progress'], { HIE_DATA_DIR: missing });
    expect(verify).toMatchObject({ code: 2 });
    expect(verify.stderr).toContain(`hie-ledger verify: no data directory at ${missing}`);
    const erase = await run(['erase', 'Patient/p1', '--ledger', 'fabric'], { HIE_DATA_DIR: missing });
    expect(erase).toMatchObject({ code: 2 });
    expect(erase.stderr).toMatch(/invalid configuration: --ledger fabric needs --fabric-config/);
    expect(existsSync(missing)).toBe(false);
  });
});

describe('hie-ledger serve', () => {
  it('exits with code 2 and a clear message on invalid configuration', async () => {
    const child = cli(['serve', '--port', 'not-a-port']);
    let stderr = '';
    child.stderr.on('data', (chunk) => (stderr += chunk));
    const code = await new Promise((done) => child.on('exit', done));
    expect(code).toBe(2);
    expect(stderr).toMatch(/invalid configuration: --port: 'not-a-port' is not a port number/);
  });

  it('serves /fhir/metadata, creates its data directory on demand, and exits 0 on SIGTERM', async () => {
    const root = mkdtempSync(join(tmpdir(), 'hie-cli-'));
    temporary.push(root);
    const dataDir = join(root, 'nested', 'data');
    const child = cli(['serve', '--port', '0', '--data-dir', dataDir], { HIE_LOG_LEVEL: 'info' });
    let stdout = '';
    child.stdout.on('data', (chunk) => (stdout += chunk));
    const exited = new Promise<number | null>((done) => child.on('exit', done));
    const base = await new Promise<string>((done, fail) => {
      const timer = setInterval(() => {
        const match = /"fhirBase":"([^"]+)"/.exec(stdout);
        if (match) {
          clearInterval(timer);
          done(match[1]);
        }
      }, 50);
      child.on('exit', () => {
        clearInterval(timer);
        fail(new Error(`exited early: ${stdout}`));
      });
    });
    const res = await fetch(`${base}/metadata`);
    expect(res.status).toBe(200);
    expect(((await res.json()) as { fhirVersion: string }).fhirVersion).toBe('4.0.1');
    expect(existsSync(join(dataDir, 'resources.sqlite'))).toBe(true);
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
    expect(stdout).toContain('shutting down');
  });
});

describe('CLI errors: one clear line, exit 2 for bad configuration, never a stack trace (issue 15)', () => {
  // One process per test: each starts tsx (seconds on a loaded machine), so no test waits for several.
  async function run(args: string[]) {
    const child = cli(args, { HIE_DEBUG: '' });
    let stderr = '';
    child.stderr.on('data', (chunk) => (stderr += chunk));
    const code = await new Promise((done) => child.on('exit', done));
    return { code, stderr };
  }
  const oneLine = (stderr: string) => {
    expect(stderr.trimEnd().split('\n'), stderr).toHaveLength(1);
    expect(stderr).not.toMatch(/^\s+at /m);
  };
  const root = mkdtempSync(join(tmpdir(), 'hie-cli-errors-'));
  temporary.push(root);
  const dataDir = join(root, 'data');
  mkdirSync(dataDir); // the participant commands create no data directory
  const out = join(root, 'out');

  it('a wrong role exits 2 in one line', async () => {
    const role = await run([
      'participant',
      'enroll',
      '--data-dir',
      dataDir,
      '--role',
      'nurse',
      '--id',
      'x',
      '--out',
      out,
    ]);
    expect(role.code).toBe(2);
    expect(role.stderr).toContain(
      'invalid configuration: --role must be one of patient, clinician, lab, system, admin',
    );
    oneLine(role.stderr);
  });

  it('a wrong key type exits 2 in one line', async () => {
    const keyType = await run([
      'participant',
      'enroll',
      '--data-dir',
      dataDir,
      '--role',
      'clinician',
      '--id',
      'x',
      '--out',
      out,
      '--key-type',
      'RSA',
    ]);
    expect(keyType.code).toBe(2);
    expect(keyType.stderr).toContain('--key-type must be P-384 or P-256');
    oneLine(keyType.stderr);
  });

  it('an unknown participant exits 1 in one line', async () => {
    const unknown = await run(['participant', 'revoke', '--data-dir', dataDir, '--id', 'nobody']);
    expect(unknown).toEqual({ code: 1, stderr: 'hie-ledger: unknown participant nobody\n' });
  });

  it('re-enrolling with another organisation is refused in one line, not silently kept', async () => {
    // Registered in process (the directory the command opens), then enrolled through the command.
    const participants = await openParticipantDirectory(dataDir);
    await participants.register({
      clientId: 'dr-a',
      role: 'clinician',
      resource: 'Practitioner/dr-a',
      organization: 'Organization/hosp-a',
    });
    participants.close();
    const moved = await run([
      'participant',
      'enroll',
      '--data-dir',
      dataDir,
      '--role',
      'clinician',
      '--id',
      'dr-a',
      '--resource',
      'Practitioner/dr-a',
      '--organization',
      'Organization/hosp-b',
      '--out',
      out,
    ]);
    expect(moved.code).toBe(1);
    expect(moved.stderr).toContain('role, resource and organization cannot change');
    oneLine(moved.stderr);
  });

  it('dev-open on a non-loopback host exits 2 before anything is created', async () => {
    const open = await run([
      'serve',
      '--auth',
      'dev-open',
      '--host',
      '0.0.0.0',
      '--data-dir',
      join(root, 'a'),
    ]);
    expect(open.code).toBe(2);
    expect(open.stderr).toContain('--auth dev-open (no authentication) only runs on a loopback address');
    oneLine(open.stderr);
    expect(existsSync(join(root, 'a'))).toBe(false);
  });

  it('a port in use exits 2 naming it', async () => {
    const blocker = createServer();
    await new Promise<void>((done) => blocker.listen(0, '127.0.0.1', done));
    const port = (blocker.address() as AddressInfo).port;
    try {
      const busy = await run(['serve', '--port', String(port), '--data-dir', join(root, 'b')]);
      expect(busy.code).toBe(2);
      expect(busy.stderr).toContain(`--port ${port}: 127.0.0.1:${port} is already in use by another process`);
      oneLine(
        busy.stderr
          .split('\n')
          .filter((line) => line.startsWith('hie-ledger'))
          .join('\n'),
      );
    } finally {
      blocker.close();
    }
  });
});

describe('--help and --version', () => {
  it('prints the package version, and marks required options in the help', () => {
    const program = createProgram();
    expect(program.version()).toBe(
      (JSON.parse(readFileSync('package.json', 'utf8')) as { version: string }).version,
    );
    const token = program.commands.find((command) => command.name() === 'token')!;
    // Commander wraps the help to the terminal's width: compare with whitespace collapsed.
    const help = token.helpInformation().replace(/\s+/g, ' ');
    expect(help).toContain(
      "--id <clientId> the participant's client id (participant enroll --id) (required)",
    );
    expect(help).toContain(
      "--key <file> the participant's private key (key.pem written by participant enroll) (required)",
    );
    expect(help).toMatch(
      /--scope <scopes> scopes to ask for, space-separated \(default: the role's scopes\) --json/,
    );
  });
});
