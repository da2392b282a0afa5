/**
 * Runs FHIR TestScripts against a FHIR server and prints a pass/fail table (conformance/testscript/runner.ts).
 *
 *   npm run conformance:testscript -- [--base URL] [--header 'Name: value']... [--report-dir DIR] PATH...
 *
 * PATH: TestScript JSON files or folders of them (default conformance/testscripts). Without --base, this service is
 * started in-process for the run (development mode, a temporary data directory, a loopback port) and stopped after.
 * --report-dir writes one TestReport per script (`<script name>.TestReport.json`). Exit code 1 when any fails.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadTestScript, runTestScript, summaryTable, type ScriptRun } from './testscript/runner.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));

interface Arguments {
  base?: string;
  headers: Record<string, string>;
  reportDir?: string;
  paths: string[];
}

function parseArguments(argv: string[]): Arguments {
  const args: Arguments = { headers: {}, paths: [] };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--base') args.base = argv[++i]?.replace(/\/$/, '');
    else if (arg === '--report-dir') args.reportDir = argv[++i];
    else if (arg === '--header') {
      const header = argv[++i] ?? '';
      const colon = header.indexOf(':');
      if (colon < 1) throw new Error(`--header '${header}': expected 'Name: value'`);
      args.headers[header.slice(0, colon).trim().toLowerCase()] = header.slice(colon + 1).trim();
    } else if (arg.startsWith('--')) throw new Error(`unknown option ${arg}`);
    else args.paths.push(arg);
  }
  if (args.paths.length === 0) args.paths.push(path.join(HERE, 'testscripts'));
  return args;
}

/** The TestScript files a path names: the file, or the .json files of a folder (not its subfolders: fixtures). */
export function scriptFiles(target: string): string[] {
  if (!fs.statSync(target).isDirectory()) return [target];
  return fs
    .readdirSync(target)
    .filter((name) => name.endsWith('.json'))
    .sort()
    .map((name) => path.join(target, name));
}

/** This service in-process on a loopback port, for a run without --base. */
async function startService(): Promise<{ base: string; stop: () => Promise<void> }> {
  const { buildApp } = await import('../src/app/app.js');
  const { loadConfig } = await import('../src/config/config.js');
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'hie-testscript-'));
  const config = loadConfig({ dataDir, port: 0, host: '127.0.0.1', auth: 'dev-open', logLevel: 'warn' }, {});
  const app = await buildApp(config);
  const address = await app.fastify.listen({ host: '127.0.0.1', port: 0 });
  return {
    base: `${address}/fhir`,
    stop: async () => {
      await app.close();
      fs.rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

export async function main(argv: string[]): Promise<number> {
  const args = parseArguments(argv);
  const files = args.paths.flatMap(scriptFiles);
  const service = args.base ? undefined : await startService();
  const base = args.base ?? service!.base;
  const runs: ScriptRun[] = [];
  try {
    for (const file of files)
      runs.push(await runTestScript(loadTestScript(file), { baseUrl: base, headers: args.headers }));
  } finally {
    await service?.stop();
  }
  if (args.reportDir) {
    fs.mkdirSync(args.reportDir, { recursive: true });
    for (const run of runs)
      fs.writeFileSync(
        path.join(args.reportDir, `${run.name}.TestReport.json`),
        JSON.stringify(run.report, null, 2),
      );
  }
  console.log(`TestScripts against ${base}\n`);
  console.log(summaryTable(runs));
  const failed = runs.filter((r) => !r.passed).length;
  console.log(`\n${runs.length - failed}/${runs.length} scripts passed`);
  return failed === 0 ? 0 : 1;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1]))
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (err: unknown) => {
      console.error(err instanceof Error ? err.message : err);
      process.exit(2);
    },
  );
