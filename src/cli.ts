#!/usr/bin/env node
/**
 * The `hie-ledger` command. Each subcommand registers itself with one line in COMMANDS
 * (a `register...Command(program)` function exported from src/commands/*.ts).
 */
import { Command, Option } from 'commander';
import { CONFIG_OPTIONS, ConfigError, loadConfig } from './config.js';
import { serve } from './server.js';
import { registerVerifyCommand } from './commands/verify.js';
import { registerEraseCommand } from './commands/erase.js';
import { registerParticipantCommand } from './commands/participant.js';

function registerServeCommand(program: Command): void {
  const command = program.command('serve').description('run the FHIR R4 service (http://HOST:PORT/fhir)');
  for (const option of CONFIG_OPTIONS) {
    command.addOption(
      new Option(
        option.flag,
        `${option.description} [env ${option.env}${option.default ? `, default ${option.default}` : ''}]`,
      ),
    );
  }
  command.action(async (flags: Record<string, unknown>) => {
    await serve(loadConfig(flags));
  });
}

const COMMANDS: ((program: Command) => unknown)[] = [
  registerServeCommand,
  registerVerifyCommand,
  registerEraseCommand,
  registerParticipantCommand,
];

export async function main(argv: string[] = process.argv): Promise<void> {
  const program = new Command('hie-ledger').description(
    'FHIR R4 health information exchange with integrity anchors and consent on Hyperledger Fabric',
  );
  program.showHelpAfterError();
  for (const register of COMMANDS) register(program);
  try {
    await program.parseAsync(argv);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`hie-ledger: invalid configuration: ${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`hie-ledger: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
