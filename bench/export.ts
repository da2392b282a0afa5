/**
 * `npm run bench:export`: Bulk Data `$export` of a store holding Synthea patient records (every resource of
 * ../shared/data/synthea-bundles, references made relative), in-process on the embedded store, as the async job
 * runs it: kick-off, the job to its end (pages read through search with the caller's access, NDJSON appended and
 * fsync'd per page), the manifest. Target: 20,000 resources/s (issue 17).
 *
 * Rows: the raw scan of every stored version (store.allVersions, the baseline: the fastest a full read can be) and
 * the exports (system level, Patient level), resources/s and the ratio to the baseline.
 * Environment: BENCH_BUNDLES (default 100), BENCH_PAGE (resources per page, default the service's 1000).
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildApp } from '../src/app/app.js';
import { loadConfig } from '../src/config/config.js';
import { parseFhirJson, type FhirResource } from '../src/fhir/fhir-json.js';
import { extractIndex } from '../src/fhir/search/index-entries.js';
import { patientCompartments } from '../src/fhir/search/definitions.js';
import { ROOT } from './support.js';

const BUNDLES = Number(process.env.BENCH_BUNDLES ?? 100);
const PAGE = process.env.BENCH_PAGE ? Number(process.env.BENCH_PAGE) : undefined;

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

async function main(): Promise<void> {
  const dataDir = mkdtempSync(join(tmpdir(), 'hie-bench-export-'));
  const config = loadConfig(
    { dataDir, auth: 'dev-open', validation: 'schema', logLevel: 'warn', port: 0 },
    {},
  );
  const app = await buildApp(config, { bulk: { pageSize: PAGE } });
  try {
    const all = resources();
    for (const resource of all)
      await app.store.write({
        resourceType: resource.resourceType,
        id: resource.id as string,
        resource,
        method: 'PUT',
        patients: patientCompartments(resource),
        index: extractIndex(resource),
      });

    const rows: { what: string; resources: number; seconds: number }[] = [];
    let started = performance.now();
    let scanned = 0;
    for await (const { version } of app.store.allVersions()) if (version.json) scanned++;
    rows.push({
      what: 'raw scan (allVersions, baseline)',
      resources: scanned,
      seconds: (performance.now() - started) / 1000,
    });

    for (const [what, url] of [
      ['$export (system)', '/fhir/$export'],
      ['Patient/$export', '/fhir/Patient/$export'],
    ]) {
      started = performance.now();
      const kick = await app.fastify.inject({ url, headers: { prefer: 'respond-async' } });
      if (kick.statusCode !== 202) throw new Error(`${url}: ${kick.statusCode} ${kick.body}`);
      await app.bulk!.exports.settled();
      const status = await app.fastify.inject({
        url: new URL(kick.headers['content-location'] as string).pathname,
      });
      const manifest = JSON.parse(status.body) as { output: { count: number }[] };
      const count = manifest.output.reduce((sum, o) => sum + o.count, 0);
      rows.push({ what, resources: count, seconds: (performance.now() - started) / 1000 });
    }

    const baseline = rows[0].resources / rows[0].seconds;
    console.log(`\n$export of ${all.length} Synthea resources (${BUNDLES} patients), page ${PAGE ?? 1000}`);
    console.log(
      `machine: ${cpus().length} cores, load ${loadavg()
        .map((l) => l.toFixed(2))
        .join(' ')}\n`,
    );
    console.log('| what | resources | seconds | resources/s | vs baseline |');
    console.log('| ---- | --------: | ------: | ----------: | ----------: |');
    for (const row of rows) {
      const rate = row.resources / row.seconds;
      console.log(
        `| ${row.what} | ${row.resources} | ${row.seconds.toFixed(2)} | ${Math.round(rate)} | ${(rate / baseline).toFixed(2)} |`,
      );
    }
  } finally {
    await app.close();
    if (!process.env.BENCH_KEEP) rmSync(dataDir, { recursive: true, force: true });
    else console.log(`kept ${dataDir}`);
  }
}

await main();
