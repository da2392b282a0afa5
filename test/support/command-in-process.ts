/**
 * A command of `hie-ledger` run in this process, as the CLI would run it (commander, `exitOverride` so a refusal
 * throws instead of exiting): `register` adds the command to a fresh program; what it printed with console.log is
 * returned, one line per call. For a command's output and refusals without a process start (the CLI as a process:
 * test/support/cli-process.ts).
 */
import { Command } from 'commander';
import { vi } from 'vitest';

export async function runCommandInProcess(
  register: (program: Command) => void,
  args: string[],
): Promise<string> {
  const program = new Command().exitOverride();
  register(program);
  const lines: string[] = [];
  const spy = vi.spyOn(console, 'log').mockImplementation((line: string) => void lines.push(line));
  try {
    await program.parseAsync(['node', 'hie-ledger', ...args]);
  } finally {
    spy.mockRestore();
  }
  return lines.join('\n');
}
