/** What the HTTP benchmarks share: free ports, the service as a child process, waiting for it. */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { join, resolve } from 'node:path';
import { signedAssertion, tokenForm } from '../test/support/client-assertion.js';

export const ROOT = resolve(import.meta.dirname ?? new URL('.', import.meta.url).pathname, '..');

/** The built service (what `npm start` runs), unless BENCH_FROM=tsx asks for the sources. */
export function serviceEntry(): { args: string[]; built: boolean } {
  const built = existsSync(join(ROOT, 'dist', 'src', 'cli.js')) && process.env.BENCH_FROM !== 'tsx';
  return { args: built ? ['dist/src/cli.js'] : ['--import', 'tsx', 'src/cli.ts'], built };
}

export async function freePort(): Promise<number> {
  return new Promise((done, fail) => {
    const server = createServer();
    server.once('error', fail);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => done(port));
    });
  });
}

export async function waitFor(url: string, child: ChildProcess, timeoutMs = 120_000): Promise<void> {
  const start = Date.now();
  for (;;) {
    if (child.exitCode !== null) throw new Error(`${url}: the server exited with code ${child.exitCode}`);
    try {
      const res = await fetch(url);
      if (res.ok) return;
    } catch {
      // not listening yet
    }
    if (Date.now() - start > timeoutMs) throw new Error(`${url} did not come up`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

export function startChild(args: string[], env: NodeJS.ProcessEnv = {}, cwd = ROOT): ChildProcess {
  return spawn(process.execPath, args, {
    cwd,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
}

export async function stopChild(child: ChildProcess): Promise<void> {
  // Exited already (with a code, or killed by a signal: then exitCode stays null and no 'exit' would come again).
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  await exited;
}

/**
 * `hie-ledger serve` on a free port with its data in `dataDir` (log level warn), started and waited for.
 * BENCH_CPU_PROF=dir writes a V8 CPU profile of each service run there, to see where the time goes.
 * `root`: another built checkout to run the service from (a baseline measured in the same run).
 */
export async function startService(
  dataDir: string,
  flags: string[] = [],
  env: NodeJS.ProcessEnv = {},
  root = ROOT,
): Promise<{ child: ChildProcess; base: string }> {
  const port = await freePort();
  // Absolute: the service's working directory is `root`, another checkout's for a baseline.
  const profile = process.env.BENCH_CPU_PROF
    ? ['--cpu-prof', `--cpu-prof-dir=${resolve(process.env.BENCH_CPU_PROF)}`]
    : [];
  const child = startChild(
    [
      ...profile,
      ...serviceEntry().args,
      'serve',
      '--port',
      String(port),
      '--data-dir',
      dataDir,
      '--log-level',
      'warn',
      ...flags,
    ],
    env,
    root,
  );
  const base = `http://127.0.0.1:${port}`;
  await waitFor(`${base}/fhir/metadata`, child);
  return { child, base };
}

/** Prints a plain-text table: the first column left-aligned, the others right-aligned, a dashed rule under the header. */
export function printTable(header: string[], lines: string[][]): void {
  const widths = header.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i]!.length)));
  const format = (cells: string[]) =>
    cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
  console.log(format(header));
  console.log(widths.map((w) => '-'.repeat(w)).join('  '));
  for (const line of lines) console.log(format(line));
}

/**
 * An access token from a running service's token endpoint (`${base}/auth/token`) for an enrolled participant: a
 * client assertion signed with its key (the PEM of its key.pem), SMART Backend Services.
 */
export async function tokenFrom(base: string, clientId: string, keyPem: string): Promise<string> {
  const tokenUrl = `${base}/auth/token`;
  const res = await fetch(tokenUrl, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: tokenForm(await signedAssertion(keyPem, clientId, tokenUrl)),
  });
  if (!res.ok) throw new Error(`token ${clientId}: ${res.status} ${await res.text()}`);
  return ((await res.json()) as { access_token: string }).access_token;
}
