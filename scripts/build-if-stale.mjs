/**
 * `npm start`'s build step: runs `npm run build` only when a source is newer than the last build, so a second
 * start does not spend half a minute compiling what has not changed. "Newer" is by modification time of every
 * file under src/, bench/, conformance/, chaincode/src/ and the build's configuration files, against the build's
 * stamp (dist/.build-stamp, dated when its build started, so an edit made during a build triggers the next one).
 */
import { execSync } from 'node:child_process';
import { readdirSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import process from 'node:process';

const STAMP = 'dist/.build-stamp';
const SOURCES = ['src', 'bench', 'conformance', 'chaincode/src'];
const FILES = [
  'package.json',
  'package-lock.json',
  'tsconfig.json',
  'tsconfig.build.json',
  'chaincode/tsconfig.json',
  'chaincode/package.json',
];

function mtime(path) {
  try {
    return statSync(path).mtimeMs;
  } catch {
    return undefined;
  }
}

/** The newest modification time under `dir` (0 when it does not exist). */
function newest(dir) {
  let latest = 0;
  let entries;
  try {
    entries = readdirSync(dir, { withFileTypes: true });
  } catch {
    return 0;
  }
  for (const entry of entries) {
    const path = join(dir, entry.name);
    const time = entry.isDirectory() ? newest(path) : (mtime(path) ?? 0);
    if (time > latest) latest = time;
  }
  return latest;
}

// No built program, or no stamp (a build made by `npm run build` directly): build.
const built = mtime('dist/src/cli.js') === undefined ? 0 : (mtime(STAMP) ?? 0);
const sources = Math.max(...SOURCES.map(newest), ...FILES.map((file) => mtime(file) ?? 0));
if (built === 0 || sources > built) {
  const started = new Date();
  execSync('npm run build', { stdio: 'inherit' });
  writeFileSync(STAMP, `${started.toISOString()}\n`);
  utimesSync(STAMP, started, started);
} else {
  process.stdout.write('hie-ledger: the build is up to date (dist/); skipping tsc\n');
}
