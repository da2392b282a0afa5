/**
 * `hie-ledger ledger connect`: a member's connection to another process's served embedded ledger
 * (`serve --serve-ledger PORT`, docs/ledger.md "Serving the embedded ledger to other members"). Writes the
 * member's `--fabric-config` file and prints the members-file entry the serving ledger must admit (or adds it
 * to that file with --members-file).
 */
import type { Command } from 'commander';
import { addConfigOptions, loadSettings } from '../config/config.js';
import { addLedgerMember } from '../ledger/embedded/gateway/members-file.js';

const CONNECT_SETTINGS = ['dataDir', 'mspId'] as const;

interface ConnectOptions {
  gateway?: string;
  gatewayTlsCa?: string;
  out?: string;
  membersFile?: string;
  [flag: string]: unknown;
}

export function registerLedgerCommand(program: Command): Command {
  const ledger = program.command('ledger').description("the ledger's local-network commands");
  addConfigOptions(
    ledger
      .command('connect')
      .description(
        "write this member's connection to a served embedded ledger (--fabric-config for --ledger fabric) and print its members-file entry",
      )
      .requiredOption('--gateway <host:port>', 'the served ledger: 127.0.0.1:PORT (its --serve-ledger)')
      .requiredOption(
        '--gateway-tls-ca <file>',
        "the served ledger's TLS CA certificate (its DATA_DIR/ledger/gateway/tls-ca.pem)",
      )
      .option('--out <file>', 'the connection file (default DATA_DIR/ledger/fabric-connection.json)')
      .option(
        '--members-file <file>',
        "also add this member's entry to the serving ledger's --ledger-members file",
      ),
    CONNECT_SETTINGS,
  ).action(async (options: ConnectOptions) => {
    const settings = loadSettings(CONNECT_SETTINGS, options);
    // Loaded when used: the gateway and X.509 code is a large part of the CLI's start-up.
    const { writeMemberConnection } = await import('../ledger/embedded/gateway/member-connection.js');
    const connection = await writeMemberConnection({
      dataDir: settings.dataDir,
      mspId: settings.mspId,
      gateway: options.gateway!,
      gatewayTlsCa: options.gatewayTlsCa!,
      out: options.out,
    });
    if (options.membersFile) addLedgerMember(options.membersFile, connection.member);
    console.log(JSON.stringify({ fabricConfig: connection.configPath, member: connection.member }, null, 2));
  });
  return ledger;
}
