/**
 * `npm run bench:import`: a bulk import as a hospital's import job runs it: Synthea patient records, each one FHIR
 * transaction Bundle (`POST /fhir`, every entry validated, indexed and anchored, all or nothing), sent by a few
 * concurrent workers against the service on its embedded store and ledger.
 *
 * Prints, per validation mode: bundles accepted/refused, resources stored per second, and bundle latency.
 * Environment: BENCH_BUNDLES (default 40, of the 100 in ../shared/data/synthea-bundles), BENCH_WORKERS (default 2),
 * BENCH_FROM=tsx (run the service from the sources).
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { ROOT, serviceEntry, startService, stopChild } from './support.js';

const BUNDLES = Number(process.env.BENCH_BUNDLES ?? 40);
const WORKERS = Number(process.env.BENCH_WORKERS ?? 2);

interface Row {
  mode: string;
  accepted: number;
  refused: number;
  resources: number;
  seconds: number;
  p50: number;
  max: number;
}

function bundles(): { name: string; text: string; entries: number }[] {
  const dir = join(ROOT, '..', 'shared', 'data', 'synthea-bundles');
  return readdirSync(dir)
    .filter((f) => f.endsWith('.json'))
    .sort()
    .slice(0, BUNDLES)
    .map((name) => {
      const text = readFileSync(join(dir, name), 'utf8');
      return { name, text, entries: (JSON.parse(text) as { entry: unknown[] }).entry.length };
    });
}

async function run(mode: 'full' | 'schema', work: ReturnType<typeof bundles>): Promise<Row> {
  const dataDir = mkdtempSync(join(tmpdir(), 'hie-bench-import-'));
  const { child: service, base: root } = await startService(dataDir, ['--validation', mode], {
    HIE_AUTH: 'dev-open',
  });
  try {
    const base = `${root}/fhir`;
    const latencies: number[] = [];
    let accepted = 0;
    let refused = 0;
    let resources = 0;
    let next = 0;
    const started = performance.now();
    const worker = async () => {
      while (next < work.length) {
        const bundle = work[next++]!;
        const sent = performance.now();
        const res = await fetch(base, {
          method: 'POST',
          headers: { 'content-type': 'application/fhir+json', prefer: 'return=minimal' },
          body: bundle.text,
        });
        await res.arrayBuffer();
        latencies.push(performance.now() - sent);
        if (res.status === 200) {
          accepted++;
          resources += bundle.entries;
        } else if (res.status >= 400 && res.status < 500) refused++;
        else throw new Error(`${bundle.name}: HTTP ${res.status}`);
      }
    };
    await Promise.all(Array.from({ length: WORKERS }, worker));
    const seconds = (performance.now() - started) / 1000;
    latencies.sort((a, b) => a - b);
    return {
      mode,
      accepted,
      refused,
      resources,
      seconds,
      p50: latencies[Math.floor(latencies.length / 2)] ?? 0,
      max: latencies[latencies.length - 1] ?? 0,
    };
  } finally {
    await stopChild(service);
    rmSync(dataDir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const work = bundles();
  const entries = work.reduce((sum, b) => sum + b.entries, 0);
  console.log(
    `bench:import  ${cpus().length} cores, load average ${loadavg()
      .map((l) => l.toFixed(2))
      .join(' ')}; ${work.length} Synthea transaction bundles (${entries} resources), ${WORKERS} workers; ` +
      `service: ${serviceEntry().built ? 'dist (built)' : 'sources via tsx'}`,
  );
  const rows = [await run('full', work), await run('schema', work)];
  const header = ['validation', 'accepted', 'refused (4xx)', 'resources/s', 'bundle p50 ms', 'bundle max ms'];
  const lines = rows.map((r) => [
    r.mode,
    String(r.accepted),
    String(r.refused),
    (r.resources / r.seconds).toFixed(0),
    r.p50.toFixed(0),
    r.max.toFixed(0),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i]!.length)));
  const format = (cells: string[]) =>
    cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
  console.log('');
  console.log(format(header));
  console.log(widths.map((w) => '-'.repeat(w)).join('  '));
  for (const line of lines) console.log(format(line));
  console.log(
    '\nresources/s counts the resources of accepted bundles over the whole run (refused ones included).',
  );
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
