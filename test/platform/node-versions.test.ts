/**
 * The Node versions the project promises (package.json `engines`, README): 20.9 and later, 22 LTS and 24. What the
 * service ships with (every package of the lockfile's production tree) must declare support for each of them, so
 * `npm ci --omit=dev` on any of them installs without an engine warning and runs what its authors tested.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import semver from 'semver';
import { describe, expect, it } from 'vitest';

const ROOT = join(import.meta.dirname, '..', '..');

interface LockedPackage {
  version?: string;
  dev?: boolean;
  optional?: boolean;
  engines?: { node?: string } | string[];
}

const lock = JSON.parse(readFileSync(join(ROOT, 'package-lock.json'), 'utf8')) as {
  packages: Record<string, LockedPackage>;
};
const manifest = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as {
  engines: { node: string };
};

/** The oldest release of each line we promise, and the newest line. */
const PROMISED = ['20.9.0', '22.0.0', '24.0.0'];

function nodeRange(entry: LockedPackage): string | undefined {
  return Array.isArray(entry.engines) ? undefined : entry.engines?.node;
}

describe('Node versions', () => {
  it("package.json's engines field accepts every promised version", () => {
    for (const version of PROMISED)
      expect(semver.satisfies(version, manifest.engines.node), version).toBe(true);
  });

  it('every production dependency in the lockfile supports every promised version', () => {
    const refusing: string[] = [];
    for (const [path, entry] of Object.entries(lock.packages)) {
      if (path === '' || entry.dev === true) continue;
      const range = nodeRange(entry);
      if (range === undefined) continue;
      for (const version of PROMISED) {
        if (!semver.satisfies(version, range))
          refusing.push(`${path}@${entry.version} (${range}) refuses ${version}`);
      }
    }
    expect(refusing).toEqual([]);
  });
});
