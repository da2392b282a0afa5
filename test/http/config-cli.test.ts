import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { CONFIG_OPTIONS, ConfigError, loadConfig } from '../../src/config.js';

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
    expect(() => loadConfig({ baseUrl: 'ftp://x' }, {})).toThrow(ConfigError);
  });
});

const temporary: string[] = [];
afterAll(() => {
  for (const dir of temporary) rmSync(dir, { recursive: true, force: true });
});

function cli(args: string[], env: NodeJS.ProcessEnv = {}) {
  return spawn(process.execPath, ['--import', 'tsx', 'src/cli.ts', ...args], {
    cwd: process.cwd(),
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}

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
