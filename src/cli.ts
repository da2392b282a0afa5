#!/usr/bin/env node
/** The `hie-ledger` command (its subcommands: src/commands/program.ts). */
import { ConfigError } from './config/config.js';
import { createProgram } from './commands/program.js';

export async function main(argv: string[] = process.argv): Promise<void> {
  try {
    await createProgram().parseAsync(argv);
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
