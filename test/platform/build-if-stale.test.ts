/**
 * `npm start` builds only when stale (scripts/build-if-stale.mjs as the `prestart` step): a build newer than every
 * source is not rebuilt; a changed source is. Run through npm itself, in a copy of the project's start wiring (its
 * `prestart` and `start` scripts and the real build-if-stale.mjs) whose `build` is a stand-in that records each
 * run and writes a tiny dist/src/cli.js: the real `tsc` build would cost half a minute a run, and what is tested
 * is the decision and the npm lifecycle around it, not the compiler. Modification times are set explicitly, so
 * nothing depends on the clock's resolution or the machine's speed.
 */
import { execFile } from 'node:child_process';
import {
  copyFileSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const run = promisify(execFile);
const NPM = process.platform === 'win32' ? 'npm.cmd' : 'npm';

/** The stand-in build: appends a line to build.log and writes a dist/src/cli.js that prints its arguments. */
const FAKE_BUILD = `
const fs = require('node:fs');
fs.appendFileSync('build.log', 'built\\n');
fs.mkdirSync('dist/src', { recursive: true });
fs.writeFileSync('dist/src/cli.js', "console.log('cli ' + process.argv.slice(2).join(' '));\\n");
`;

describe('npm start: build-if-stale', () => {
  let project: string;
  const source = () => join(project, 'src', 'cli.ts');
  const stamp = () => join(project, 'dist', '.build-stamp');
  const builds = () => readFileSync(join(project, 'build.log'), 'utf8').split('\n').filter(Boolean).length;

  /** `npm start` in the project, as a user types it; its standard output. */
  async function npmStart(): Promise<string> {
    const { stdout } = await run(NPM, ['start', '--silent'], {
      cwd: project,
      env: { ...process.env, npm_config_update_notifier: 'false', npm_config_fund: 'false' },
    });
    return stdout;
  }

  /** Dates a file `seconds` after (or before) the build stamp. */
  function dateFromStamp(file: string, seconds: number): void {
    const at = new Date(statSync(stamp()).mtimeMs + seconds * 1000);
    utimesSync(file, at, at);
  }

  beforeAll(() => {
    project = mkdtempSync(join(tmpdir(), 'hie-build-if-stale-'));
    const real = JSON.parse(readFileSync(resolve('package.json'), 'utf8')) as {
      scripts: Record<string, string>;
    };
    const scripts = {
      prestart: real.scripts.prestart,
      start: real.scripts.start,
      build: 'node build.cjs',
    };
    writeFileSync(
      join(project, 'package.json'),
      JSON.stringify({ name: 'start-wiring', private: true, scripts }),
    );
    writeFileSync(join(project, 'build.cjs'), FAKE_BUILD);
    writeFileSync(join(project, 'build.log'), '');
    mkdirSync(join(project, 'scripts'));
    copyFileSync(resolve('scripts/build-if-stale.mjs'), join(project, 'scripts', 'build-if-stale.mjs'));
    mkdirSync(join(project, 'src'));
    writeFileSync(source(), 'export {};\n');
  });

  afterAll(() => {
    if (project) rmSync(project, { recursive: true, force: true });
  });

  it("uses the project's own prestart (build-if-stale) and start scripts", () => {
    const { scripts } = JSON.parse(readFileSync(join(project, 'package.json'), 'utf8')) as {
      scripts: Record<string, string>;
    };
    expect(scripts.prestart).toBe('node scripts/build-if-stale.mjs');
    expect(scripts.start).toBe('node dist/src/cli.js serve');
  });

  it('builds when there is no build yet, then starts the built program', async () => {
    const output = await npmStart();
    expect(builds()).toBe(1);
    expect(output).toContain('cli serve');
  });

  it('does not build again when the build is newer than every source', async () => {
    dateFromStamp(source(), -3600);
    const output = await npmStart();
    expect(output).toContain('the build is up to date');
    expect(output).toContain('cli serve');
    expect(builds()).toBe(1);
  });

  it('builds again after a source file changed, and not a third time for the same change', async () => {
    writeFileSync(source(), 'export const changed = true;\n');
    dateFromStamp(source(), 2);
    const output = await npmStart();
    expect(output).not.toContain('the build is up to date');
    expect(output).toContain('cli serve');
    expect(builds()).toBe(2);
    // The new stamp is dated when that build started, after the edit: the next start does not build.
    dateFromStamp(source(), -1);
    expect(await npmStart()).toContain('the build is up to date');
    expect(builds()).toBe(2);
  });
});
