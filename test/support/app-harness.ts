/**
 * The one app test harness: the real app (buildApp: SQLite store in a temporary data dir, embedded ledger, the
 * validator) with its log captured, driven with fastify's inject. test/http/helpers.ts (development mode, no
 * tokens) and test/access/app-harness.ts (SMART auth with enrolled participants) are its two profiles.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import type { InjectOptions, LightMyRequestResponse } from 'fastify';
import { expect } from 'vitest';
import { buildApp, type App, type AppOverrides } from '../../src/app/app.js';
import { loadConfig, type Config } from '../../src/config/config.js';
import { suiteCacheDir } from './cli-build.js';

export const FHIR_JSON = { 'content-type': 'application/fhir+json' };

export interface BootedApp {
  app: App;
  config: Config;
  dataDir: string;
  /** Log lines written so far (JSON text), across restarts. */
  logs: string[];
  /** Closes the app and builds it again over the same data directory, with these overrides. */
  restart(overrides?: AppOverrides, whileStopped?: () => void | Promise<void>): Promise<App>;
  /** Closes the app and removes its data directory. */
  stop(): Promise<void>;
}

/** Builds the app over a fresh temporary data dir; `flags` are the configuration flags (commander's names). */
export async function bootApp(
  flags: Record<string, unknown>,
  overrides: AppOverrides = {},
  dataDirPrefix = 'hie-app-',
): Promise<BootedApp> {
  const dataDir = mkdtempSync(join(tmpdir(), dataDirPrefix));
  const logs: string[] = [];
  const logStream = new Writable({
    write(chunk, _encoding, done) {
      logs.push(String(chunk));
      done();
    },
  });
  const config = loadConfig({ dataDir, port: 0, host: '127.0.0.1', cacheDir: suiteCacheDir(), ...flags }, {});
  const booted: BootedApp = {
    app: await buildApp(config, { logStream, ...overrides }),
    config,
    dataDir,
    logs,
    async restart(restartOverrides = {}, whileStopped) {
      await booted.app.close();
      await whileStopped?.();
      booted.app = await buildApp(config, { logStream, ...restartOverrides });
      return booted.app;
    },
    async stop() {
      await booted.app.close();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
  return booted;
}

export interface SendOptions extends Omit<InjectOptions, 'body' | 'payload'> {
  /** A resource (sent as JSON) or a text sent as is; sent as application/fhir+json unless `headers` say else. */
  body?: unknown;
}

/**
 * Injects one request and checks the answer's status (the answer's body is in the failure message), the block
 * the HTTP tests otherwise repeat. Returns the answer as inject gives it (statusCode, headers, body text).
 */
export async function send(
  target: App | { fastify: App['fastify'] },
  request: SendOptions,
  status?: number,
): Promise<LightMyRequestResponse> {
  const { body, headers, ...rest } = request;
  const options: InjectOptions = { ...rest };
  if (body !== undefined) {
    options.payload = typeof body === 'string' ? body : JSON.stringify(body);
    options.headers = { ...FHIR_JSON, ...headers };
  } else if (headers !== undefined) {
    options.headers = headers;
  }
  const res = await target.fastify.inject(options);
  if (status !== undefined)
    expect(res.statusCode, `${rest.method ?? 'GET'} ${rest.url}: ${res.body}`).toBe(status);
  return res;
}

/** An answer with its body parsed (undefined when empty or not JSON), for tests that compare callers' views. */
export interface ParsedResponse {
  status: number;
  /** Whatever the server answered: tests read into it freely. */
  body: any;
  headers: Record<string, unknown>;
  text: string;
}

export function parsed(res: LightMyRequestResponse): ParsedResponse {
  let body: unknown;
  try {
    body = res.body ? JSON.parse(res.body) : undefined;
  } catch {
    body = undefined;
  }
  return { status: res.statusCode, body, headers: res.headers, text: res.body };
}
