/**
 * The app in development mode (no tokens) for HTTP tests: the shared harness (test/support/app-harness.ts) with
 * the SQLite store in a temp data dir and the schema validator, driven with inject.
 */
import type { App, AppOverrides } from '../../src/app/app.js';
import { bootApp } from '../support/app-harness.js';

export { FHIR_JSON, send } from '../support/app-harness.js';

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
  const booted = await bootApp({ logLevel: 'info', auth: 'dev-open', ...flags }, overrides, 'hie-http-');
  return { ...booted.app, dataDir: booted.dataDir, logs: booted.logs, stop: booted.stop };
}

export function json(body: string): any {
  return JSON.parse(body);
}
