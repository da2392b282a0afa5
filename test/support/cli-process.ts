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
  const child = spawn(process.execPath, [...cliNodeArgs(), ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return { child, output: () => output, exited };
}

/** Resolves with the first match of `pattern` in the process's output; rejects if it exits first. */
export function waitForOutput(started: CliProcess, pattern: RegExp): Promise<RegExpExecArray> {
  return new Promise((resolve, reject) => {
    const check = () => {
      const match = pattern.exec(started.output());
      if (match) {
        started.child.stdout!.off('data', check);
        resolve(match);
      }
    };
    started.child.stdout!.on('data', check);
    check();
    void started.exited.then((code) =>
      reject(new Error(`the process exited (${code}) before ${pattern}:\n${started.output()}`)),
    );
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
