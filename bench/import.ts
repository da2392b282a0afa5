/**
 * `npm run bench:import`: a bulk import of Synthea patient records (../shared/data/synthea-bundles) into a fresh
 * embedded store and ledger, two ways:
 * - `cli`: `hie-ledger import FILES...` (docs/import.md): resource by resource, full validation (the check pass on
 *   `--workers` threads: BENCH_IMPORT_WORKERS, default the CLI's: the cores but one), index rows and
 *   anchoring (Merkle batches of BENCH_ANCHOR_BATCH, default 5000), batches of BENCH_BATCH resources per store
 *   transaction (default 2000); the split of time (parse, validate, index, store, anchor) and peak RSS from its
 *   summary;
 * - `cli-main`: the same with `--workers 0` (validation on the import's main thread), the workers' baseline;
 * - `$import`: the same resources as NDJSON (one file per type, `urn:uuid:` references made `Type/id`, as a
 *   Bulk Data export writes them) from the service's import root, by an async `$import` job, polled to its end;
 *   peak RSS of the service;
 * - `api`: the baseline: each record one transaction Bundle (`POST /fhir`, all or nothing), sent by a few concurrent
 *   workers against the service, with full validation and with the JSON schema only; peak RSS of the service.
 *
 * Prints a table: bundles accepted/refused, resources stored per second, peak RSS, and the ratio to the API's full
 * validation row measured in the same run.
 * Environment: BENCH_BUNDLES (default 100: all of them), BENCH_WORKERS (default 2: API clients), BENCH_MODES (default
 * cli,import-op,api-full,api-schema; also cli-main), BENCH_IMPORT_WORKERS, BENCH_FROM=tsx (run the service and the
 * CLI from the sources), BENCH_BASELINE=DIR: also `cli` with the build in DIR (DIR/dist/src/cli.js: a copy of an
 * earlier commit's `dist`, DIR/node_modules linked), run before this build's, as the same-run baseline of the CLI
 * rows ("vs baseline"; with BENCH_REPEAT=N the two alternate N times).
 * The CLI rows also give CPU time, all threads: the run's (its summary) and the process's (/proc, start-up
 * included; "vs baseline" compares these): on a machine shared with other work, the figure the load does not inflate.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { printTable, ROOT, serviceEntry, startService, stopChild } from './support.js';

const BUNDLES = Number(process.env.BENCH_BUNDLES ?? 100);
const WORKERS = Number(process.env.BENCH_WORKERS ?? 2);
const MODES = (process.env.BENCH_MODES ?? 'cli,import-op,api-full,api-schema').split(',');
const ANCHOR_BATCH = process.env.BENCH_ANCHOR_BATCH ?? '5000';
const BATCH = process.env.BENCH_BATCH ?? '2000';
const IMPORT_WORKERS = process.env.BENCH_IMPORT_WORKERS;
const BASELINE = process.env.BENCH_BASELINE;
const REPEAT = Math.max(1, Number(process.env.BENCH_REPEAT ?? 1));

interface Row {
  mode: string;
  accepted: number;
  refused: number;
  resources: number;
  seconds: number;
  /** Peak resident memory of the importing process (MiB). */
  peakMiB: number;
  /** The CLI's split of time, seconds. */
  split?: string;
  /** The CLI's start-up (process, validator, store and ledger opened), seconds. */
  startup?: number;
  /** The CLI's CPU time over the import, all threads, seconds (its summary; a build before it does not say). */
  cpu?: number;
  /** The CLI process's CPU time, all threads, start-up included, seconds (/proc): comparable across builds. */
  processCpu?: number;
}

/** utime + stime of a live process (all its threads), seconds; undefined once it is gone. */
function cpuSeconds(pid: number | undefined): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return undefined;
  }
}

/** VmHWM (peak resident set) of a live process, MiB. */
function peakRssMiB(pid: number | undefined): number {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    return Math.round(Number(/VmHWM:\s+(\d+) kB/.exec(status)?.[1] ?? 0) / 1024);
  } catch {
    return 0;
  }
}

function bundles(): { name: string; file: string; text: string; entries: number }[] {
  const dir = join(ROOT, '..', 'shared', 'data', 'synthea-bundles');
  return readdirSync(dir)
    .filter((f) => f.endsWith('.json'))
    .sort()
    .slice(0, BUNDLES)
    .map((name) => {
      const file = join(dir, name);
      const text = readFileSync(file, 'utf8');
      return { name, file, text, entries: (JSON.parse(text) as { entry: unknown[] }).entry.length };
    });
}

/** `hie-ledger import` of every bundle file into a fresh data directory (what an operator runs). */
async function runCli(work: ReturnType<typeof bundles>, workers?: string, baseline?: string): Promise<Row> {
  const dataDir = mkdtempSync(join(tmpdir(), 'hie-bench-import-cli-'));
  try {
    const started = performance.now();
    const child = spawn(
      process.execPath,
      [
        ...(baseline ? [join(baseline, 'dist', 'src', 'cli.js')] : serviceEntry().args),
        'import',
        '--data-dir',
        dataDir,
        '--no-progress',
        '--anchor-batch-size',
        ANCHOR_BATCH,
        '--batch-size',
        BATCH,
        ...(workers === undefined ? [] : ['--workers', workers]),
        ...work.map((b) => b.file),
      ],
      { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] },
    );
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    // The process's CPU time (all threads, start-up included), as /proc last showed it before the exit.
    let processCpu = 0;
    const poll = setInterval(() => (processCpu = cpuSeconds(child.pid) ?? processCpu), 100);
    const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
    clearInterval(poll);
    const seconds = (performance.now() - started) / 1000;
    if (code !== 0 && code !== 1) throw new Error(`hie-ledger import exited with ${code}:\n${output}`);
    const [, stored, unchanged, rejected] = /^total +(\d+) +(\d+) +(\d+)/m.exec(output)!.map(Number);
    const run = /This run: \d+ resources in ([\d.]+) s \((.*)\); peak RSS (\d+) MiB/.exec(output);
    const cpu = /; CPU ([\d.]+) s \(all threads\)/.exec(output);
    const mode =
      workers === '0' ? 'cli (full, --workers 0)' : `cli (full, --workers ${workers ?? 'default'})`;
    return {
      mode: baseline ? `${mode}, baseline` : mode,
      cpu: cpu ? Number(cpu[1]) : undefined,
      processCpu,
      accepted: stored! + unchanged!,
      refused: rejected!,
      resources: stored! + unchanged!,
      // The import itself, as the API rows (whose service is started before the clock): start-up aside.
      seconds: run ? Number(run[1]) : seconds,
      startup: run ? seconds - Number(run[1]) : 0,
      peakMiB: Number(run?.[3] ?? 0),
      split: run ? `total ${run[1]}: ${run[2]}` : '',
    };
  } finally {
    rmSync(dataDir, { recursive: true, force: true });
  }
}

/** The bundles' resources as NDJSON files by type in `dir`, references to other entries made `Type/id`. */
function writeNdjson(work: ReturnType<typeof bundles>, dir: string): string[] {
  const lines = new Map<string, string[]>();
  for (const bundle of work) {
    const parsed = JSON.parse(bundle.text) as {
      entry: { fullUrl: string; resource: { resourceType: string; id: string } }[];
    };
    const targets = new Map(
      parsed.entry.map((e) => [e.fullUrl, `${e.resource.resourceType}/${e.resource.id}`]),
    );
    const text = bundle.text.replace(/"(urn:uuid:[0-9a-f-]+)"/g, (whole, url: string) =>
      targets.has(url) ? `"${targets.get(url)}"` : whole,
    );
    for (const { resource } of (JSON.parse(text) as typeof parsed).entry) {
      const list = lines.get(resource.resourceType) ?? [];
      list.push(JSON.stringify(resource));
      lines.set(resource.resourceType, list);
    }
  }
  // Shared resources (Organization, Practitioner ...) repeat across bundles: each id once, its last form.
  return [...lines].map(([type, list]) => {
    const byId = new Map(list.map((l) => [(JSON.parse(l) as { id: string }).id, l]));
    const file = join(dir, `${type}.ndjson`);
    writeFileSync(file, [...byId.values()].join('\n') + '\n');
    return file;
  });
}

/** `$import` of the NDJSON files from the service's import root, polled to the job's end. */
async function runImportOperation(work: ReturnType<typeof bundles>): Promise<Row> {
  const dataDir = mkdtempSync(join(tmpdir(), 'hie-bench-import-op-'));
  const root = mkdtempSync(join(tmpdir(), 'hie-bench-import-root-'));
  const files = writeNdjson(work, root);
  const { child: service, base: origin } = await startService(dataDir, ['--import-root', root], {
    HIE_AUTH: 'dev-open',
  });
  try {
    const started = performance.now();
    const kick = await fetch(`${origin}/fhir/$import`, {
      method: 'POST',
      headers: {
        prefer: 'respond-async',
        accept: 'application/fhir+json',
        'content-type': 'application/fhir+json',
      },
      body: JSON.stringify({
        resourceType: 'Parameters',
        parameter: [
          { name: 'inputFormat', valueCode: 'application/fhir+ndjson' },
          { name: 'inputSource', valueUri: 'https://synthea.example.org' },
          ...files.map((f) => ({ name: 'input', part: [{ name: 'url', valueUrl: `file://${f}` }] })),
        ],
      }),
    });
    if (kick.status !== 202) throw new Error(`$import: HTTP ${kick.status} ${await kick.text()}`);
    const status = kick.headers.get('content-location')!;
    let manifest: { output?: { count: number }[]; error?: { count?: number }[] } | undefined;
    for (;;) {
      const res = await fetch(status, { headers: { accept: 'application/json' } });
      if (res.status === 200) {
        manifest = (await res.json()) as typeof manifest;
        break;
      }
      await res.arrayBuffer();
      if (res.status !== 202) throw new Error(`$import status: HTTP ${res.status}`);
      await new Promise((r) => setTimeout(r, 250));
    }
    const seconds = (performance.now() - started) / 1000;
    const stored = (manifest?.output ?? []).reduce((sum, o) => sum + o.count, 0);
    const rejected = (manifest?.error ?? []).reduce((sum, o) => sum + (o.count ?? 0), 0);
    return {
      mode: '$import (full)',
      accepted: stored,
      refused: rejected,
      resources: stored,
      seconds,
      peakMiB: peakRssMiB(service.pid),
    };
  } finally {
    await stopChild(service);
    rmSync(dataDir, { recursive: true, force: true });
    rmSync(root, { recursive: true, force: true });
  }
}

async function runApi(mode: 'full' | 'schema', work: ReturnType<typeof bundles>): Promise<Row> {
  const dataDir = mkdtempSync(join(tmpdir(), 'hie-bench-import-'));
  const { child: service, base: root } = await startService(dataDir, ['--validation', mode], {
    HIE_AUTH: 'dev-open',
  });
  try {
    const base = `${root}/fhir`;
    let accepted = 0;
    let refused = 0;
    let resources = 0;
    let next = 0;
    const started = performance.now();
    const worker = async () => {
      while (next < work.length) {
        const bundle = work[next++]!;
        const res = await fetch(base, {
          method: 'POST',
          headers: { 'content-type': 'application/fhir+json', prefer: 'return=minimal' },
          body: bundle.text,
        });
        await res.arrayBuffer();
        if (res.status === 200) {
          accepted++;
          resources += bundle.entries;
        } else if (res.status >= 400 && res.status < 500) refused++;
        else throw new Error(`${bundle.name}: HTTP ${res.status}`);
      }
    };
    await Promise.all(Array.from({ length: WORKERS }, worker));
    const seconds = (performance.now() - started) / 1000;
    return {
      mode: `api bundles (${mode})`,
      accepted,
      refused,
      resources,
      seconds,
      peakMiB: peakRssMiB(service.pid),
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
      .join(
        ' ',
      )}; ${work.length} Synthea transaction bundles (${entries} resources), ${WORKERS} API workers; ` +
      `CLI batches ${BATCH}, anchor batches ${ANCHOR_BATCH}; ${serviceEntry().built ? 'dist (built)' : 'sources via tsx'}`,
  );
  const rows: Row[] = [];
  for (const mode of MODES) {
    if (mode === 'cli')
      for (let i = 0; i < REPEAT; i++) {
        if (BASELINE) rows.push(await runCli(work, IMPORT_WORKERS, BASELINE));
        rows.push(await runCli(work, IMPORT_WORKERS));
      }
    else if (mode === 'cli-main') rows.push(await runCli(work, '0'));
    else if (mode === 'import-op') rows.push(await runImportOperation(work));
    else if (mode === 'api-full') rows.push(await runApi('full', work));
    else if (mode === 'api-schema') rows.push(await runApi('schema', work));
    else throw new Error(`BENCH_MODES: unknown mode ${mode}`);
  }
  const baseline = rows.find((r) => r.mode === 'api bundles (full)');
  const rate = (r: Row) => r.resources / r.seconds;
  const header = [
    'mode',
    'accepted',
    'refused',
    'resources/s',
    'vs api full',
    'vs baseline',
    'peak RSS MiB',
    'CPU s (run)',
    'CPU s (process)',
  ];
  // Each CLI row against the baseline build's row just before it (same load, minutes apart).
  const before = (i: number) =>
    rows
      .slice(0, i)
      .reverse()
      .find((b) => b.mode === `${rows[i]!.mode}, baseline`);
  const lines = rows.map((r, i) => {
    const old = before(i);
    return [
      r.mode,
      String(r.accepted),
      String(r.refused),
      rate(r).toFixed(0),
      baseline ? `${(rate(r) / rate(baseline)).toFixed(2)}x` : '-',
      old
        ? `${(rate(r) / rate(old)).toFixed(2)}x` +
          (r.processCpu && old.processCpu ? ` (CPU ${(old.processCpu / r.processCpu).toFixed(2)}x)` : '')
        : '-',
      String(r.peakMiB),
      r.cpu === undefined ? '-' : r.cpu.toFixed(1),
      r.processCpu === undefined ? '-' : r.processCpu.toFixed(1),
    ];
  });
  console.log('');
  printTable(header, lines);
  for (const r of rows)
    if (r.split)
      console.log(`\n${r.mode}: seconds ${r.split}; start-up before it ${(r.startup ?? 0).toFixed(1)} s`);
  console.log(
    '\naccepted/refused: resources for the CLI (each alone), bundles for the API (all or nothing). resources/s counts ' +
      "stored resources over the import (the final anchoring included; the CLI's process start-up and the service's " +
      'start-up left out).',
  );
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
