/**
 * Participants as an operator enrols them (docs/access.md): `hie-ledger participant ...` run in this process, what
 * it prints returned. Their tokens: test/support/client-assertion.ts.
 */
import { registerParticipantCommand } from '../../src/commands/participant.js';
import { runCommandInProcess } from './command-in-process.js';

/** Runs `hie-ledger ARGS` (the participant command) in this process; what it printed, one line per console.log. */
export function participantCli(args: string[]): Promise<string> {
  return runCommandInProcess(registerParticipantCommand, args);
}
