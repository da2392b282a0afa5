/**
 * Patient/[id]/$everything over real HTTP on Synthea patients (prints a table): latency of the first page
 * (default _count), of one large page, of a `_type` narrowed page, and of walking every page; next to a plain
 * `Observation?patient=` search for scale. Open access (dev-open): the access policy's cost is in bench/access.ts.
 * Run: npx tsx bench/everything.ts [bundles=10]
 */
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { buildApp } from '../src/app/app.js';
import { loadConfig } from '../src/config/config.js';

const dir = join(process.cwd(), '../shared/data/synthea-bundles');
const bundles = Number(process.argv[2] ?? 10);
const files = readdirSync(dir)
  .filter((f) => f.endsWith('.json'))
  .sort()
  .slice(0, bundles);

const dataDir = mkdtempSync(join(tmpdir(), 'hie-bench-everything-'));
const config = loadConfig({ dataDir, port: 0, host: '127.0.0.1', logLevel: 'warn', auth: 'dev-open' }, {});
// buildApp awaits work that holds no event-loop handle: keep the loop alive meanwhile.
const keepAlive = setInterval(() => undefined, 1000);
const app = await buildApp(config, {
  logStream: new Writable({ write: (_c, _e, done) => done() }),
}).finally(() => clearInterval(keepAlive));

interface Bundle {
  total?: number;
  entry?: unknown[];
  link?: { relation: string; url: string }[];
}

try {
  const address = await app.fastify.listen({ port: 0, host: '127.0.0.1' });
  const base = `${address}/fhir`;
  const patients: string[] = [];
  let entries = 0;
  for (const file of files) {
    const res = await fetch(base, {
      method: 'POST',
      headers: { 'content-type': 'application/fhir+json' },
      body: readFileSync(join(dir, file), 'utf8'),
    });
    const out = (await res.json()) as { entry: { response: { location: string } }[] };
    if (res.status !== 200) throw new Error(`${file}: ${res.status} ${JSON.stringify(out).slice(0, 300)}`);
    entries += out.entry.length;
    const patient = out.entry.map((e) => e.response.location).find((l) => l.startsWith('Patient/'));
    if (patient) patients.push(patient.split('/_history/')[0]);
  }
  console.log(`loaded ${files.length} bundles, ${entries} entries, ${patients.length} patients\n`);

  const get = async (url: string): Promise<Bundle> => {
    const res = await fetch(url.startsWith('http') ? url : `${base}/${url}`);
    const bundle = (await res.json()) as Bundle;
    if (res.status !== 200) throw new Error(`${url}: ${res.status} ${JSON.stringify(bundle).slice(0, 300)}`);
    return bundle;
  };
  const cases: [string, (patient: string) => Promise<number>][] = [
    [
      'Observation?patient (search, _count=50)',
      async (p) => (await get(`Observation?patient=${p}`)).entry?.length ?? 0,
    ],
    ['$everything (first page, _count=50)', async (p) => (await get(`${p}/$everything`)).entry?.length ?? 0],
    ['$everything?_count=1000', async (p) => (await get(`${p}/$everything?_count=1000`)).entry?.length ?? 0],
    [
      '$everything?_type=Condition,MedicationRequest',
      async (p) => (await get(`${p}/$everything?_type=Condition,MedicationRequest`)).entry?.length ?? 0,
    ],
    [
      '$everything, every page of 200',
      async (p) => {
        let n = 0;
        let next: string | undefined = `${p}/$everything?_count=200`;
        while (next) {
          const page = await get(next);
          n += page.entry?.length ?? 0;
          next = page.link?.find((l) => l.relation === 'next')?.url;
        }
        return n;
      },
    ],
  ];
  const totals = await Promise.all(
    patients.map(async (p) => (await get(`${p}/$everything?_count=0`)).total ?? 0),
  );
  console.log(
    `compartment size per patient: min ${Math.min(...totals)}, median ${totals.sort((a, b) => a - b)[Math.floor(totals.length / 2)]}, max ${Math.max(...totals)}\n`,
  );
  console.log('| request | runs | mean ms | p95 ms | mean entries |\n|---|---:|---:|---:|---:|');
  for (const [name, run] of cases) {
    const times: number[] = [];
    let entryCount = 0;
    for (const patient of patients) {
      const start = performance.now();
      entryCount += await run(patient);
      times.push(performance.now() - start);
    }
    times.sort((a, b) => a - b);
    const mean = times.reduce((a, b) => a + b, 0) / times.length;
    console.log(
      `| ${name} | ${times.length} | ${mean.toFixed(1)} | ${times[Math.floor(times.length * 0.95)].toFixed(1)} | ${Math.round(entryCount / patients.length)} |`,
    );
  }
} finally {
  await app.close();
  rmSync(dataDir, { recursive: true, force: true });
}
