/**
 * `hie-ledger participant register|enroll|revoke|list`: the admin's commands for participants (src/access/participants.ts).
 * Certificates come from the organisation's embedded CA (DIR/identity/ca); the private key is written with mode 0600.
 * With `--store postgres --database-url URL` the participants are the database's (every replica's), and the
 * commands run beside the replicas.
 */
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { Command } from 'commander';
import type { IdentityProvider } from '../ledger/identity/identity-provider.js';
import { ParticipantDirectory, type Participant, type ParticipantRegistry } from '../access/participants.js';
import { PostgresParticipants } from '../access/postgres-participants.js';
import { PostgresResourceStore } from '../fhir/store/postgres/postgres-store.js';
import { postgresOptions } from '../app/open-store.js';
import { PARTICIPANT_ROLES, type ParticipantRole } from '../access/scopes.js';
import { loadFabricConfig } from '../ledger/fabric/config.js';
import {
  addConfigOptions,
  ConfigError,
  DEFAULT_MSP_ID,
  loadSettings,
  type Config,
} from '../config/config.js';
import { requireDataDir, withDataDirLock } from './data-dir.js';

/** The settings of every participant command (src/config/config.ts). */
export const PARTICIPANT_SETTINGS = [
  'dataDir',
  'mspId',
  'ca',
  'fabricConfig',
  'store',
  'databaseUrl',
] as const;
export type ParticipantConfig = Pick<Config, 'dataDir' | 'mspId' | 'ca' | 'fabricConfig'> &
  Partial<Pick<Config, 'store' | 'databaseUrl'>>;

/**
 * The participants of a data directory with its embedded CA (`DIR/identity/ca`), or with the organisation's
 * Fabric CA (`--ca fabric --fabric-config FILE`: the file's `ca` section, docs/fabric.md).
 */
export async function openParticipantDirectory(
  dataDir: string,
  mspId: string = DEFAULT_MSP_ID,
  ca: { kind?: Config['ca']; fabricConfig?: string } = {},
): Promise<ParticipantDirectory> {
  return ParticipantDirectory.open(dataDir, await openIdentityProvider(dataDir, mspId, ca));
}

/** The organisation's CA: embedded (`DIR/identity/ca`) or Fabric CA (`--ca fabric`, the `ca` section). */
export async function openIdentityProvider(
  dataDir: string,
  mspId: string,
  ca: { kind?: Config['ca']; fabricConfig?: string },
): Promise<IdentityProvider> {
  if (ca.kind === 'fabric') {
    if (!ca.fabricConfig)
      throw new ConfigError('--ca fabric needs --fabric-config FILE (with a "ca" section)');
    const config = loadFabricConfig(ca.fabricConfig);
    if (!config.ca)
      throw new ConfigError(
        `${ca.fabricConfig} has no "ca" section (url, caName, tlsRootCertPath, registrar)`,
      );
    // Loaded only when asked for: fabric-ca-client parses process.argv (yargs) when it loads, which would
    // answer every `hie-ledger ... --help` with its own text.
    const { FabricCaIdentityProvider } = await import('../ledger/identity/fabric-ca.js');
    return FabricCaIdentityProvider.fromConfig(config.ca);
  }
  if (ca.kind !== undefined && ca.kind !== 'embedded')
    throw new ConfigError(`--ca must be embedded or fabric, not ${ca.kind}`);
  // Loaded when used (the X.509 code is a large part of the CLI's start-up): `--help` and other commands skip it.
  const { EmbeddedIdentityProvider } = await import('../ledger/identity/identity-provider.js');
  return EmbeddedIdentityProvider.open(join(dataDir, 'identity', 'ca'), { mspId });
}

/** A participant command's own flags; its settings (data directory, CA) are read by loadSettings. */
interface ParticipantOptions {
  role?: string;
  id?: string;
  resource?: string;
  organization?: string;
  out?: string;
  keyType?: string;
  json?: boolean;
  /** The settings' flags (--data-dir, --msp-id, --ca, --fabric-config), as commander parsed them. */
  [flag: string]: unknown;
}

function requireRole(role: string | undefined): ParticipantRole {
  if (!role || !PARTICIPANT_ROLES.includes(role as ParticipantRole))
    throw new ConfigError(`--role must be one of ${PARTICIPANT_ROLES.join(', ')}`);
  return role as ParticipantRole;
}

function requireId(id: string | undefined): string {
  if (!id) throw new ConfigError('--id CLIENT_ID is required');
  return id;
}

function describe(p: Participant): Record<string, string> {
  const out: Record<string, string> = {
    clientId: p.clientId,
    pseudonym: p.pseudonym,
    role: p.role,
    status: p.status,
  };
  if (p.resource) out.resource = p.resource;
  if (p.organization) out.organization = p.organization;
  if (p.serial) out.serial = p.serial;
  return out;
}

/**
 * Runs `work` on the participants: those of an existing data directory, where `writer` (the subcommand:
 * `participant enroll` ...) also holds the data directory's lock, so it is refused while the service runs
 * (docs/configuration.md); or, with `--store postgres`, the database's (its schema migrated first), beside the
 * running replicas. The CA is the data directory's (or `--ca fabric`) either way.
 */
async function withDirectory<T>(
  options: ParticipantOptions,
  writer: string | undefined,
  work: (directory: ParticipantRegistry) => Promise<T>,
): Promise<T> {
  const config: ParticipantConfig = loadSettings(PARTICIPANT_SETTINGS, options);
  requireDataDir(config.dataDir);
  const ca = { kind: config.ca, fabricConfig: config.fabricConfig };
  if (config.store === 'postgres') {
    const identity = await openIdentityProvider(config.dataDir, config.mspId, ca);
    const store = new PostgresResourceStore({ ...postgresOptions(config.databaseUrl!), maxConnections: 1 });
    try {
      await store.migrate();
      const directory = await PostgresParticipants.open({
        pool: store.pool,
        schema: store.schema,
        identity,
        listen: false,
      });
      return await work(directory);
    } finally {
      await store.close();
    }
  }
  const run = async () => {
    const directory = await openParticipantDirectory(config.dataDir, config.mspId, ca);
    try {
      return await work(directory);
    } finally {
      directory.close();
    }
  };
  return writer ? withDataDirLock(config.dataDir, writer, run) : run();
}

function common(command: Command): Command {
  return addConfigOptions(command, PARTICIPANT_SETTINGS);
}

export function registerParticipantCommand(program: Command): Command {
  const participant = program
    .command('participant')
    .description('manage participants (patients, clinicians, labs, EHR systems, admins)');

  common(participant.command('register'))
    .description('register a participant (a pseudonym is assigned; enrol to get a certificate)')
    .requiredOption('--role <role>', PARTICIPANT_ROLES.join('|'))
    .requiredOption('--id <clientId>', "the participant's client id (used as iss/sub of its assertions)")
    .option('--resource <reference>', 'linked resource: Patient/ID, Practitioner/ID or Organization/ID')
    .option('--organization <reference>', 'the organisation it acts for: Organization/ID')
    .action(async (options: ParticipantOptions) => {
      const clientId = requireId(options.id);
      const role = requireRole(options.role);
      const registered = await withDirectory(options, 'participant register', (d) =>
        d.register({ clientId, role, resource: options.resource, organization: options.organization }),
      );
      console.log(JSON.stringify(describe(registered), null, 2));
    });

  common(participant.command('enroll'))
    .description(
      'enrol a participant (registering it if needed) and write OUT/cert.pem and OUT/key.pem (0600)',
    )
    .requiredOption('--role <role>', PARTICIPANT_ROLES.join('|'))
    .requiredOption('--id <clientId>', "the participant's client id (used as iss/sub of its assertions)")
    .option('--resource <reference>', 'linked resource: Patient/ID, Practitioner/ID or Organization/ID')
    .option('--organization <reference>', 'the organisation it acts for: Organization/ID')
    .requiredOption('--out <dir>', 'where to write cert.pem and key.pem')
    .option('--key-type <curve>', 'P-384 (default, ES384) or P-256 (ES256)', 'P-384')
    .action(async (options: ParticipantOptions) => {
      if (options.keyType !== 'P-384' && options.keyType !== 'P-256')
        throw new ConfigError('--key-type must be P-384 or P-256');
      const keyType = options.keyType;
      const clientId = requireId(options.id);
      const role = requireRole(options.role);
      const { participant: enrolled, enrollment } = await withDirectory(options, 'participant enroll', (d) =>
        d.enroll({
          clientId,
          role,
          resource: options.resource,
          organization: options.organization,
          keyType,
        }),
      );
      const out = resolve(options.out!);
      mkdirSync(out, { recursive: true, mode: 0o700 });
      writeFileSync(join(out, 'cert.pem'), enrollment.certificate, { mode: 0o644 });
      const keyPath = join(out, 'key.pem');
      writeFileSync(keyPath, enrollment.privateKey, { mode: 0o600 });
      chmodSync(keyPath, 0o600); // an existing file keeps its mode on write
      console.log(
        JSON.stringify(
          { ...describe(enrolled), certificate: join(out, 'cert.pem'), privateKey: keyPath },
          null,
          2,
        ),
      );
    });

  common(participant.command('revoke'))
    .description('revoke a participant: refused by the service at once, certificates revoked at the CA')
    .requiredOption('--id <clientId>', "the participant's client id")
    .action(async (options: ParticipantOptions) => {
      const clientId = requireId(options.id);
      const revoked = await withDirectory(options, 'participant revoke', (d) => d.revoke(clientId));
      console.log(JSON.stringify(describe(revoked), null, 2));
    });

  common(participant.command('list'))
    .description('list participants')
    .option('--json', 'print JSON')
    .action(async (options: ParticipantOptions) => {
      const all = await withDirectory(options, undefined, async (d) => d.list()); // reads only: beside the service
      if (options.json) console.log(JSON.stringify(all.map(describe), null, 2));
      else {
        const rows = all.map((p) => [
          p.clientId,
          p.role,
          p.status,
          p.resource ?? '',
          p.organization ?? '',
          p.pseudonym,
        ]);
        const header = ['CLIENT ID', 'ROLE', 'STATUS', 'RESOURCE', 'ORGANIZATION', 'PSEUDONYM'];
        const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
        for (const row of [header, ...rows])
          console.log(
            row
              .map((cell, i) => cell.padEnd(widths[i]))
              .join('  ')
              .trimEnd(),
          );
      }
    });

  return participant;
}
