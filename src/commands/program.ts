/**
 * The `hie-ledger` program: each subcommand registers itself with one line in COMMANDS (a
 * `register...Command(program)` function). Every setting a subcommand reads comes from the one option table
 * (src/config/config.ts: flag, variable, default), handed to it typed; docs/configuration.md lists them per command.
 */
import { Command } from 'commander';
import { PACKAGE_VERSION } from '../platform/package-version.js';
import { addConfigOptions, loadSettings, SERVE_SETTINGS } from '../config/config.js';
import { registerVerifyCommand } from './verify.js';
import { registerEraseCommand } from './erase.js';
import { registerParticipantCommand } from './participant.js';
import { registerMemberCommand } from './member.js';
import { registerLedgerCommand } from './ledger.js';
import { registerTokenCommand } from './token.js';
import { registerMigrateCommand } from './migrate.js';
import { registerImportCommand } from './import.js';
import { registerTerminologyCommand } from './terminology.js';
import { registerValidateCommand } from './validate.js';

function registerServeCommand(program: Command): void {
  const command = program.command('serve').description('run the FHIR R4 service (http://HOST:PORT/fhir)');
  addConfigOptions(command, SERVE_SETTINGS).action(async (flags: Record<string, unknown>) => {
    const settings = loadSettings(SERVE_SETTINGS, flags);
    // Loaded when used: the service's modules are most of the CLI's start-up time, which the other commands skip.
    const { serve } = await import('../app/server.js');
    await serve(settings);
  });
}

const COMMANDS: ((program: Command) => unknown)[] = [
  registerServeCommand,
  registerVerifyCommand,
  registerEraseCommand,
  registerParticipantCommand,
  registerMemberCommand,
  registerLedgerCommand,
  registerTokenCommand,
  registerMigrateCommand,
  registerImportCommand,
  registerTerminologyCommand,
  registerValidateCommand,
];

export function createProgram(): Command {
  const program = new Command('hie-ledger').description(
    'FHIR R4 health information exchange with integrity anchors and consent on Hyperledger Fabric',
  );
  program.version(PACKAGE_VERSION, '-V, --version', "print hie-ledger's version");
  program.showHelpAfterError();
  for (const register of COMMANDS) register(program);
  markRequiredOptions(program);
  return program;
}

/** `--help` says which options a command cannot do without (commander lists them like the others). */
function markRequiredOptions(command: Command): void {
  for (const option of command.options) {
    if (option.mandatory && !option.description.endsWith('(required)'))
      option.description = `${option.description} (required)`;
  }
  for (const sub of command.commands) markRequiredOptions(sub);
}
