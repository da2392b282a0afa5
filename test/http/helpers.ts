/** Starts the real app (SQLite store in a temp data dir, schema validator) for HTTP tests, driven with inject. */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { buildApp, type App, type AppOverrides } from '../../src/app.js';
import { loadConfig } from '../../src/config.js';

export interface TestApp extends App {
  dataDir: string;
  /** Log lines written so far (JSON text). */
  logs: string[];
  stop(): Promise<void>;
}

export async function startTestApp(
  overrides: AppOverrides = {},
  flags: Record<string, unknown> = {},
): Promise<TestApp> {
  const dataDir = mkdtempSync(join(tmpdir(), 'hie-http-'));
  const logs: string[] = [];
  const logStream = new Writable({
    write(chunk, _encoding, done) {
      logs.push(String(chunk));
      done();
    },
  });
  const config = loadConfig(
    { dataDir, port: 0, host: '127.0.0.1', logLevel: 'info', auth: 'dev-open', ...flags },
    {},
  );
  const app = await buildApp(config, { logStream, ...overrides });
  return {
    ...app,
    dataDir,
    logs,
    async stop() {
      await app.close();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

export const FHIR_JSON = { 'content-type': 'application/fhir+json' };

export function json(body: string): any {
  return JSON.parse(body);
}
