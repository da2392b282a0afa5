/**
 * Once per vitest run, before any worker starts: compile src/ for the tests that start the CLI as a process (see
 * cli-build.ts). Each run has its own folder (removed at teardown), so runs side by side never read a half-written
 * build of another.
 */
import { mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { build } from 'esbuild';
import { CLI_BUILD_ENV } from './cli-build.js';

function typeScriptSources(dir: string, out: string[] = []): string[] {
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) typeScriptSources(path, out);
    else if (entry.name.endsWith('.ts') && !entry.name.endsWith('.d.ts')) out.push(path);
  }
  return out;
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
  return () => rmSync(dir, { recursive: true, force: true });
}
