/**
 * Participants as an operator enrols them (docs/access.md): `hie-ledger participant ...` run in this process, what
 * it prints returned. Their tokens: test/support/client-assertion.ts.
 */
import { Command } from 'commander';
import { vi } from 'vitest';
import { registerParticipantCommand } from '../../src/commands/participant.js';

/** Runs `hie-ledger ARGS` (the participant command) in this process; what it printed, one line per console.log. */
export async function participantCli(args: string[]): Promise<string> {
  const program = new Command().exitOverride();
  registerParticipantCommand(program);
  const lines: string[] = [];
  const spy = vi.spyOn(console, 'log').mockImplementation((line: string) => void lines.push(line));
  try {
    await program.parseAsync(['node', 'hie-ledger', ...args]);
  } finally {
    spy.mockRestore();
  }
  return lines.join('\n');
}
