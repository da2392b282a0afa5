/**
 * Once per vitest run, before any worker starts: compile src/ for the tests that start the CLI as a process (see
 * cli-build.ts), and name the suite's cache directory (suiteCacheDir()). Each run has its own folder (removed at teardown), so runs side by side never read a half-written
 * build of another.
 */
import { mkdirSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { build } from 'esbuild';
import { CLI_BUILD_ENV, SUITE_CACHE_ENV } from './cli-build.js';

function typeScriptSources(dir: string, out: string[] = []): string[] {
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) typeScriptSources(path, out);
    else if (entry.name.endsWith('.ts') && !entry.name.endsWith('.d.ts')) out.push(path);
  }
  return out;
}

/**
 * The service's default cache directory (where the compiled schema validator is kept across runs), unless
 * HIE_CACHE_DIR names another. Filled by the first test that needs a cached artefact (writers rename into place:
 * safe side by side). A definitions cache older than the code that writes it is dropped, so a changed compaction
 * is never tested against a stale file.
 */
function suiteCache(): string {
  const dir = resolve(process.env[SUITE_CACHE_ENV] || 'node_modules/.cache/hie-ledger');
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const writer = statSync(resolve('src/fhir/definitions/definition-registry.ts')).mtimeMs;
  for (const name of readdirSync(dir))
    if (name.startsWith('r4-definitions-') && statSync(join(dir, name)).mtimeMs < writer)
      rmSync(join(dir, name), { force: true });
  return dir;
}

export default async function setup(): Promise<() => void> {
  // Inside the checkout (node_modules and package.json are found by walking up, as from dist/src).
  const root = resolve('.test-build');
  mkdirSync(root, { recursive: true });
  const dir = mkdtempSync(join(root, 'run-'));
  await build({
    entryPoints: typeScriptSources(resolve('src')),
    outdir: join(dir, 'src'),
    outbase: resolve('src'),
    format: 'esm',
    platform: 'node',
    target: 'node20',
    logLevel: 'warning',
  });
  process.env[CLI_BUILD_ENV] = dir;
  process.env[SUITE_CACHE_ENV] = suiteCache();
  return () => rmSync(dir, { recursive: true, force: true });
}
