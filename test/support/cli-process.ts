/**
 * `hie-ledger` as a child process, as an operator runs it (started as cliNodeArgs() says), and the two waits the
 * multi-process tests need: for a line of its output, and for a condition to hold.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { cliNodeArgs } from './cli-build.js';

export interface CliProcess {
  child: ChildProcess;
  /** Everything it wrote so far, stdout and stderr interleaved. */
  output: () => string;
  exited: Promise<number | null>;
}

/** Runs `hie-ledger ARGS` (this checkout). */
export function runCli(args: string[]): CliProcess {
  return spawnCli(cliNodeArgs(), args);
}

export interface SpawnOptions {
  /** Its working directory (default: this process's). */
  cwd?: string;
  /** Keep at most this many characters of its output (a long-running service); the rest is read and dropped. */
  maxOutput?: number;
}

/**
 * Runs `node NODEARGS ARGS`: the CLI started another way than the suite's (bench/replicas.ts runs the built service,
 * bench/support.ts serviceEntry()).
 */
export function spawnCli(
  nodeArgs: readonly string[],
  args: string[],
  options: SpawnOptions = {},
): CliProcess {
  const child = spawn(process.execPath, [...nodeArgs, ...args], {
    cwd: options.cwd,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const limit = options.maxOutput ?? Infinity;
  let output = '';
  const keep = (chunk: Buffer) => {
    if (output.length < limit) output += chunk.toString();
  };
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return { child, output: () => output, exited };
}

/**
 * Resolves with the first match of `pattern` in the process's output; rejects if it exits first, or, given
 * `timeoutMs` (a script; a test has its own timeout), if that long passes without one.
 */
export function waitForOutput(
  started: CliProcess,
  pattern: RegExp,
  timeoutMs?: number,
): Promise<RegExpExecArray> {
  return new Promise((resolve, reject) => {
    let timer: NodeJS.Timeout | undefined;
    const check = () => {
      const match = pattern.exec(started.output());
      if (match) {
        started.child.stdout!.off('data', check);
        clearTimeout(timer);
        resolve(match);
      }
    };
    started.child.stdout!.on('data', check);
    if (timeoutMs !== undefined)
      timer = setTimeout(() => {
        started.child.stdout!.off('data', check);
        reject(new Error(`no ${pattern} within ${timeoutMs} ms:\n${started.output()}`));
      }, timeoutMs);
    check();
    void started.exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`the process exited (${code}) before ${pattern}:\n${started.output()}`));
    });
  });
}

/** Polls until `check` holds (bounded by the test's timeout, not asserting on time). */
export async function until(check: () => Promise<boolean>, what: string, timeoutMs = 40_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check().catch(() => false))) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
