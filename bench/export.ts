/**
 * `npm run bench:export`: Bulk Data `$export` of a store holding Synthea patient records (every resource of
 * ../shared/data/synthea-bundles, references made relative), in-process on the embedded store, as the async job
 * runs it: kick-off, the job to its end (pages read through search with the caller's access, NDJSON appended and
 * fsync'd per page), the manifest. Target: 20,000 resources/s (issue 17).
 *
 * Rows: the raw scan of every stored version (store.allVersions, the baseline: the fastest a full read can be), plain
 * reads of every resource once (store.read, none cached yet: each decodes its body), and the exports (system level,
 * Patient level), resources/s and the ratio to the baseline.
 * Each export's rate is compared with the raw scan measured just before it by the same code.
 * Environment: BENCH_BUNDLES (default 100), BENCH_PAGE (resources per page, default the service's 1000),
 * BENCH_BEFORE (an older checkout, e.g. `git archive` of main into a temp dir with node_modules linked: its code runs
 * the same rows on the same records, alternating with this one; each code writes its own store with its own write
 * path, since an older code refuses, or waits on, a store of a newer schema), BENCH_ROUNDS (default 1).
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { buildApp } from '../src/app/app.js';
import { loadConfig } from '../src/config/config.js';
import { parseFhirJson, type FhirResource } from '../src/fhir/fhir-json.js';
import { extractIndex } from '../src/fhir/search/index-entries.js';
import { patientCompartments } from '../src/fhir/search/definitions.js';
import { ROOT } from './support.js';

const BUNDLES = Number(process.env.BENCH_BUNDLES ?? 100);
const PAGE = process.env.BENCH_PAGE ? Number(process.env.BENCH_PAGE) : undefined;
/** An older checkout (its src/, run by tsx) measured on the same data in the same run: before and after a change. */
const BEFORE = process.env.BENCH_BEFORE;
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 1);

/** Every entry of the first BUNDLES Synthea bundles, `urn:uuid:` references rewritten to `Type/id`. */
function resources(): FhirResource[] {
  const dir = join(ROOT, '..', 'shared', 'data', 'synthea-bundles');
  const out: FhirResource[] = [];
  for (const name of readdirSync(dir)
    .filter((f) => f.endsWith('.json'))
    .sort()
    .slice(0, BUNDLES)) {
    let text = readFileSync(join(dir, name), 'utf8');
    const bundle = JSON.parse(text) as {
      entry: { fullUrl: string; resource: { resourceType: string; id: string } }[];
    };
    const targets = new Map(
      bundle.entry.map((e) => [e.fullUrl, `${e.resource.resourceType}/${e.resource.id}`]),
    );
    text = text.replace(/"(urn:uuid:[0-9a-f-]+)"/g, (whole, url: string) =>
      targets.has(url) ? `"${targets.get(url)}"` : whole,
    );
    for (const entry of parseFhirJson<{ entry: { resource: FhirResource }[] }>(text).entry)
      out.push(entry.resource);
  }
  return out;
}

/** seconds: wall time; cpu: the process's CPU seconds meanwhile (less sensitive to the other work on the machine). */
type Row = { what: string; resources: number; seconds: number; cpu: number };
const cpuSince = (start: NodeJS.CpuUsage) => {
  const used = process.cpuUsage(start);
  return (used.user + used.system) / 1e6;
};
type BuildApp = typeof buildApp;
type LoadConfig = typeof loadConfig;

/** The code measured: this checkout, or (BENCH_BEFORE) an older checkout's, each on a data directory of its own. */
interface Code {
  label: string;
  buildApp: BuildApp;
  loadConfig: LoadConfig;
  extractIndex: typeof extractIndex;
  patientCompartments: typeof patientCompartments;
  dataDir: string;
}

function configOf(code: Code, dataDir: string) {
  return code.loadConfig({ dataDir, auth: 'dev-open', validation: 'schema', logLevel: 'warn', port: 0 }, {});
}

/** The raw scan and the exports, by `code`'s app over the data directory (each row labelled with the code). */
async function measure(code: Code): Promise<Row[]> {
  const app = await code.buildApp(configOf(code, code.dataDir), { bulk: { pageSize: PAGE } });
  const prefix = code.label ? `${code.label}: ` : '';
  const rows: Row[] = [];
  try {
    let started = performance.now();
    let cpu = process.cpuUsage();
    let scanned = 0;
    const current = new Map<string, [string, string]>();
    for await (const { version } of app.store.allVersions())
      if (version.json) {
        scanned++;
        current.set(`${version.resourceType}/${version.id}`, [version.resourceType, version.id]);
      }
    rows.push({
      what: `${prefix}raw scan (allVersions, baseline)`,
      resources: scanned,
      seconds: (performance.now() - started) / 1000,
      cpu: cpuSince(cpu),
    });
    // Plain reads, each resource once: none is in the read cache yet, so each reads and decodes its stored body.
    started = performance.now();
    cpu = process.cpuUsage();
    let read = 0;
    for (const [type, id] of current.values()) if ((await app.store.read(type, id))?.json) read++;
    rows.push({
      what: `${prefix}read (store, each once, not cached)`,
      resources: read,
      seconds: (performance.now() - started) / 1000,
      cpu: cpuSince(cpu),
    });
    for (const [what, url] of [
      ['$export (system)', '/fhir/$export'],
      ['Patient/$export', '/fhir/Patient/$export'],
    ]) {
      started = performance.now();
      cpu = process.cpuUsage();
      const kick = await app.fastify.inject({ url, headers: { prefer: 'respond-async' } });
      if (kick.statusCode !== 202) throw new Error(`${url}: ${kick.statusCode} ${kick.body}`);
      await app.bulk!.exports.settled();
      const status = await app.fastify.inject({
        url: new URL(kick.headers['content-location'] as string).pathname,
      });
      const manifest = JSON.parse(status.body) as { output: { count: number }[] };
      const count = manifest.output.reduce((sum, o) => sum + o.count, 0);
      rows.push({
        what: `${prefix}${what}`,
        resources: count,
        seconds: (performance.now() - started) / 1000,
        cpu: cpuSince(cpu),
      });
    }
  } finally {
    await app.close();
  }
  return rows;
}

/** Stores every record through `code`'s own app (its write path and schema) in its data directory. */
async function load(code: Code, all: readonly FhirResource[]): Promise<void> {
  const app = await code.buildApp(configOf(code, code.dataDir), {});
  try {
    for (const resource of all)
      await app.store.write({
        resourceType: resource.resourceType,
        id: resource.id as string,
        resource,
        method: 'PUT',
        patients: code.patientCompartments(resource),
        index: code.extractIndex(resource),
      });
  } finally {
    await app.close();
  }
}

async function main(): Promise<void> {
  const newDir = () => mkdtempSync(join(tmpdir(), 'hie-bench-export-'));
  const current: Code = {
    label: BEFORE ? 'now' : '',
    buildApp,
    loadConfig,
    extractIndex,
    patientCompartments,
    dataDir: newDir(),
  };
  const codes = [current];
  if (BEFORE) {
    const module = async <T>(...path: string[]) =>
      (await import(pathToFileURL(join(BEFORE, ...path)).href)) as T;
    const before = await module<{ buildApp: BuildApp }>('src', 'app', 'app.ts');
    const config = await module<{ loadConfig: LoadConfig }>('src', 'config', 'config.ts');
    const index = await module<{ extractIndex: typeof extractIndex }>(
      'src',
      'fhir',
      'search',
      'index-entries.ts',
    );
    const definitions = await module<{ patientCompartments: typeof patientCompartments }>(
      'src',
      'fhir',
      'search',
      'definitions.ts',
    );
    codes.unshift({
      label: 'before',
      buildApp: before.buildApp,
      loadConfig: config.loadConfig,
      extractIndex: index.extractIndex,
      patientCompartments: definitions.patientCompartments,
      dataDir: newDir(),
    });
  }
  try {
    const all = resources();
    for (const code of codes) await load(code, all);

    // Each code in turn, ROUNDS times (before, now, before, now ...): the machine's load drifts alike for both.
    const rows: Row[] = [];
    for (let round = 0; round < ROUNDS; round++)
      for (const code of codes) rows.push(...(await measure(code)));

    console.log(`\n$export of ${all.length} Synthea resources (${BUNDLES} patients), page ${PAGE ?? 1000}`);
    console.log(
      `machine: ${cpus().length} cores, load ${loadavg()
        .map((l) => l.toFixed(2))
        .join(' ')}${BEFORE ? `; before: ${BEFORE}` : ''}\n`,
    );
    console.log('| what | resources | seconds | resources/s | vs baseline | CPU µs a resource |');
    console.log('| ---- | --------: | ------: | ----------: | ----------: | ----------------: |');
    let baseline = 1;
    for (const row of rows) {
      const rate = row.resources / row.seconds;
      if (row.what.endsWith('raw scan (allVersions, baseline)')) baseline = rate;
      console.log(
        `| ${row.what} | ${row.resources} | ${row.seconds.toFixed(2)} | ${Math.round(rate)} | ${(rate / baseline).toFixed(2)} | ${((row.cpu / row.resources) * 1e6).toFixed(1)} |`,
      );
    }
    if (BEFORE) {
      // Same row, both codes: resources over seconds (and CPU seconds) summed across the rounds, now / before.
      const rateOf = (label: string, what: string, time: 'seconds' | 'cpu' = 'seconds') => {
        const mine = rows.filter((r) => r.what === `${label}: ${what}`);
        return mine.reduce((n, r) => n + r.resources, 0) / mine.reduce((t, r) => t + r[time], 0);
      };
      console.log(
        '\n| what | before/s | now/s | now / before | CPU: now / before (resources a CPU second) |',
      );
      console.log('| ---- | -------: | ----: | -----------: | -----------------------------------------: |');
      for (const what of [
        'raw scan (allVersions, baseline)',
        'read (store, each once, not cached)',
        '$export (system)',
        'Patient/$export',
      ]) {
        const before = rateOf('before', what);
        const now = rateOf('now', what);
        const cpuRatio = rateOf('now', what, 'cpu') / rateOf('before', what, 'cpu');
        console.log(
          `| ${what} | ${Math.round(before)} | ${Math.round(now)} | ${(now / before).toFixed(2)} | ${cpuRatio.toFixed(2)} |`,
        );
      }
    }
  } finally {
    for (const { dataDir } of codes)
      if (!process.env.BENCH_KEEP) rmSync(dataDir, { recursive: true, force: true });
      else console.log(`kept ${dataDir}`);
  }
}

// The store works on threads whose handles do not keep the event loop alive (see bench/search.ts): one interval holds
// the loop for the whole run, and a run that ends before its table fails loudly instead of exiting 0 with nothing.
const keepAlive = setInterval(() => undefined, 1000);
let finished = false;
process.on('beforeExit', () => {
  if (!finished) {
    console.error('bench:export ended before its table (pending work was lost): this run measured nothing');
    process.exit(1);
  }
});
await main();
finished = true;
clearInterval(keepAlive);
