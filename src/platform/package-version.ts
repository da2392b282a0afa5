/**
 * This package's version, from its package.json, found by walking up from this file: the same answer from src/
 * (tsx), dist/src/ (built) or any other build folder inside the checkout.
 */
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

function findPackageVersion(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    try {
      const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as {
        name?: string;
        version?: string;
      };
      if (pkg.name === 'hie-ledger' && typeof pkg.version === 'string') return pkg.version;
    } catch {
      // no package.json here: look further up
    }
    const parent = dirname(dir);
    if (parent === dir) return 'unknown';
    dir = parent;
  }
}

/** hie-ledger's version ('unknown' when no package.json of hie-ledger is above this file). */
export const PACKAGE_VERSION: string = findPackageVersion();
