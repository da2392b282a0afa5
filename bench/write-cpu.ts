/**
 * `npx tsx bench/write-cpu.ts`: CPU a store write spends outside SQLite (issue 17), per part, this checkout's build
 * against BENCH_BASELINE (a built checkout: dist/), in one run: planWrite (the version and its stored text:
 * serialiseVersion, stringifyFhirJson), the anchor hook (pendingAnchorOf: canonical form, salted leaf hash, ledger
 * key), encodeJson (the deflated body), and the three together. On the Synthea resources of the first BENCH_BUNDLES
 * records (default 20), as the import writes them (PUT with their ids). CPU: process.cpuUsage per resource; the
 * builds alternate part by part, BENCH_ROUNDS (default 5) rounds, median. Needs `npm run build` first.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { printTable, ROOT } from './support.js';

const BUNDLES = Number(process.env.BENCH_BUNDLES ?? 20);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);
const BASELINE = process.env.BENCH_BASELINE;

interface Version {
  resourceType: string;
  id: string;
  versionId: number;
  lastUpdated: string;
  deleted: boolean;
  json?: string;
  custodian?: string;
}
interface Build {
  name: string;
  planWrite(
    request: object,
    current: undefined,
    lastInstant: string | null,
  ): { kind: string; version?: Version };
  anchor(version: Version): unknown;
  encodeJson(json: string): unknown;
}

async function load(name: string, root: string): Promise<Build> {
  const dist = (path: string) => pathToFileURL(join(root, 'dist', 'src', path)).href;
  const support = (await import(dist('fhir/store/store-support.js'))) as Pick<Build, 'planWrite'>;
  const codec = (await import(dist('fhir/store/json-codec.js'))) as Pick<Build, 'encodeJson'>;
  const anchorer = (await import(dist('integrity/anchorer.js'))) as {
    pendingAnchorOf(keyring: unknown, version: Version): unknown;
  };
  const hashing = (await import(dist('integrity/hashing.js'))) as {
    LedgerKeyring: new (key: Buffer) => unknown;
  };
  const keyring = new hashing.LedgerKeyring(Buffer.alloc(32, 7));
  return {
    name,
    planWrite: support.planWrite,
    encodeJson: codec.encodeJson,
    anchor: (version) => anchorer.pendingAnchorOf(keyring, version),
  };
}

function resources(): { resourceType: string; id: string }[] {
  const dir = join(ROOT, '..', 'shared', 'data', 'synthea-bundles');
  const out: { resourceType: string; id: string }[] = [];
  for (const file of readdirSync(dir)
    .filter((f) => f.endsWith('.json'))
    .sort()
    .slice(0, BUNDLES)) {
    const bundle = JSON.parse(readFileSync(join(dir, file), 'utf8')) as {
      entry: { resource: { resourceType: string; id: string } }[];
    };
    for (const { resource } of bundle.entry) out.push(resource);
  }
  return out;
}

const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;

const builds = [await load('this', ROOT), ...(BASELINE ? [await load('baseline', BASELINE)] : [])];
const input = resources();
const requests = input.map((resource) => ({
  resourceType: resource.resourceType,
  id: resource.id,
  resource,
  method: 'PUT',
  custodian: 'Organization/custodian',
}));
const INSTANT = '2026-12-07T23:00:00.000Z';
/** The versions each build plans (its own stored text), for the parts after planWrite. */
const versions = builds.map((build) =>
  requests.map((request) => build.planWrite(request, undefined, INSTANT).version!),
);
const parts: { name: string; run: (build: Build, versions: Version[]) => void }[] = [
  {
    name: 'planWrite',
    run: (build) => {
      for (const request of requests) build.planWrite(request, undefined, INSTANT);
    },
  },
  {
    name: 'anchor hook (pendingAnchorOf)',
    run: (build, planned) => {
      for (const version of planned) build.anchor(version);
    },
  },
  {
    name: 'encodeJson',
    run: (build, planned) => {
      for (const version of planned) build.encodeJson(version.json!);
    },
  },
  {
    name: 'all three',
    run: (build) => {
      for (const request of requests) {
        const version = build.planWrite(request, undefined, INSTANT).version!;
        build.anchor(version);
        build.encodeJson(version.json!);
      }
    },
  },
];
const figures = new Map<string, number[]>();
for (let round = 0; round < ROUNDS + 1; round++)
  for (const part of parts)
    builds.forEach((build, b) => {
      const start = process.cpuUsage();
      part.run(build, versions[b]!);
      const used = process.cpuUsage(start);
      // Round 0 warms up (compiled code, zlib contexts).
      if (round === 0) return;
      const key = `${part.name}\u0000${build.name}`;
      (figures.get(key) ?? figures.set(key, []).get(key)!).push((used.user + used.system) / input.length);
    });
console.log(
  `bench:write-cpu: ${input.length} Synthea resources of ${BUNDLES} records; median of ${ROUNDS} rounds, builds ` +
    `alternating; load average ${loadavg()
      .map((l) => l.toFixed(2))
      .join(' ')}`,
);
printTable(
  ['µs CPU a write', ...builds.map((b) => b.name), ...(BASELINE ? ['this / baseline'] : [])],
  parts.map((part) => {
    const cells = builds.map((build) => median(figures.get(`${part.name}\u0000${build.name}`)!));
    return [
      part.name,
      ...cells.map((c) => c.toFixed(1)),
      ...(BASELINE ? [(cells[0]! / cells[1]!).toFixed(2)] : []),
    ];
  }),
);
