/**
 * The suite's compiled CLI. Tests that run `hie-ledger` as its own process (as an operator does) used to start it
 * through tsx, which transforms every imported module on each start: about twice the CPU of the same start from
 * JavaScript (measured: 2.2 s against 1.0 s of user time for one `participant list`), paid by over a hundred
 * processes a run. The global setup (test/support/global-setup.ts) compiles src/ once per run with esbuild
 * (transpile only, module by module, as tsc would lay it out; type checking stays with `npm run lint`) into a
 * folder of its own, and tells the workers where through HIE_TEST_CLI_BUILD.
 *
 * Outside a vitest run (a test file imported by a script, or the variable unset), the CLI runs through tsx.
 */
import { createRequire } from 'node:module';
import { join, resolve } from 'node:path';

/** Environment variable naming the folder that holds the compiled `src/` of this run. */
export const CLI_BUILD_ENV = 'HIE_TEST_CLI_BUILD';

/**
 * The suite's cache directory (named by the global setup as the service's `HIE_CACHE_DIR`, so CLI processes use it
 * too): the compact core definitions are read from one file there instead of from 3,600 package files, and written
 * once instead of into every test's fresh data directory (about 2 s of CPU less for each test file that builds a
 * validator). Undefined outside a vitest run.
 */
export const SUITE_CACHE_ENV = 'HIE_CACHE_DIR';
export function suiteCacheDir(): string | undefined {
  return process.env[SUITE_CACHE_ENV] || undefined;
}

/** tsx's loader by path, for processes that run in another working directory. */
const TSX = createRequire(import.meta.url).resolve('tsx');

/**
 * Node arguments that start the CLI (`[...cliNodeArgs(), 'serve', ...]` to `spawn(process.execPath, ...)`): the
 * compiled entry when this run has one, else `src/cli.ts` through tsx. Absolute paths: any working directory.
 */
export function cliNodeArgs(): string[] {
  const build = process.env[CLI_BUILD_ENV];
  if (build) return [join(build, 'src', 'cli.js')];
  return ['--import', TSX, resolve('src/cli.ts')];
}
