#!/usr/bin/env node
/** The `hie-ledger` command (its subcommands: src/commands/program.ts). */
import { ConfigError, stackTracesWanted } from './config/config.js';
import { createProgram } from './commands/program.js';
import { NewerStoreSchemaError } from './fhir/store/schema-version.js';

export async function main(argv: string[] = process.argv): Promise<void> {
  try {
    await createProgram().parseAsync(argv);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`hie-ledger: invalid configuration: ${err.message}\n`);
      process.exit(2);
    }
    if (err instanceof NewerStoreSchemaError) {
      // As a data directory that cannot be used (missing, another's): exit 2, one line.
      process.stderr.write(`hie-ledger: ${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
}

main().catch((err: unknown) => {
  // One line for the user; the stack only when asked for (HIE_DEBUG=1), for a bug report.
  const message = err instanceof Error ? err.message : String(err);
  const stack = stackTracesWanted() && err instanceof Error && err.stack ? `\n${err.stack}` : '';
  process.stderr.write(`hie-ledger: ${message.split('\n')[0]}${stack}\n`);
  process.exit(1);
});
