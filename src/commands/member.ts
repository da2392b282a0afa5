/**
 * `hie-ledger member register|list|revoke`: the organisation's entry in the member directory on the ledger
 * (src/exchange/member-directory.ts, docs/exchange.md). `register` writes this organisation's own entry (the ledger
 * identity's MSP; the chaincode refuses any other), with the service certificate given by --service-cert or, by
 * default, one issued by the organisation's CA for a new P-256 key kept in DATA/identity/exchange (key mode 0600).
 */
import { createPrivateKey, createPublicKey, randomBytes, X509Certificate } from 'node:crypto';
import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Command } from 'commander';
import { addConfigOptions, ConfigError, loadSettings, type Config } from '../config/config.js';
import type { MemberDirectory, MemberEntry } from '../exchange/member-directory.js';
import { loadFabricConfig, type FabricConfig } from '../ledger/fabric/config.js';
import { mkdirPrivate, PRIVATE_FILE_MODE } from '../platform/private-files.js';
import { openIdentityProvider } from './participant.js';
import { requireDataDir } from './data-dir.js';

/** The settings of `member list` and `member revoke`; `member register` also reads `ca` (src/config/config.ts). */
export const MEMBER_SETTINGS = ['dataDir', 'mspId', 'ledger', 'fabricConfig'] as const;
export const MEMBER_REGISTER_SETTINGS = [...MEMBER_SETTINGS, 'ca'] as const;
type MemberConfig = Pick<Config, (typeof MEMBER_SETTINGS)[number]>;

/** The attribute value the exchange service certificate carries (hie.role): it opens no ledger or FHIR access. */
export const EXCHANGE_SERVICE_ROLE = 'exchange-service';

interface MemberOptions {
  organizationName?: string;
  fhirBaseUrl?: string;
  serviceCert?: string;
  serviceKey?: string;
  json?: boolean;
  /** The settings' flags, as commander parsed them. */
  [flag: string]: unknown;
}

/** Where the member's service key and certificate are kept: DATA/identity/exchange/{cert.pem,key.pem}. */
export function exchangeIdentityDir(dataDir: string): string {
  return join(dataDir, 'identity', 'exchange');
}

/** The MSP this data directory's ledger identity belongs to (the only entry it may write). */
function memberMspId(config: MemberConfig): string {
  return config.ledger === 'fabric' ? loadFabricConfig(config.fabricConfig!).mspId : config.mspId;
}

async function withDirectory<T>(
  config: MemberConfig,
  work: (directory: MemberDirectory, mspId: string) => Promise<T>,
): Promise<T> {
  requireDataDir(config.dataDir);
  const mspId = memberMspId(config);
  // Loaded when used: the ledger's modules are most of the CLI's start-up time.
  const [{ openConfiguredLedger }, { MemberDirectory }] = await Promise.all([
    import('../app/open-ledger.js'),
    import('../exchange/member-directory.js'),
  ]);
  const ledger = await openConfiguredLedger(config);
  try {
    return await work(new MemberDirectory(ledger), mspId);
  } finally {
    await ledger.close();
  }
}

function writePrivate(path: string, data: string): void {
  writeFileSync(`${path}.tmp`, data, { mode: PRIVATE_FILE_MODE });
  renameSync(`${path}.tmp`, path);
}

function validNow(certificatePem: string): boolean {
  const certificate = new X509Certificate(certificatePem);
  const now = Date.now();
  return now >= Date.parse(certificate.validFrom) && now <= Date.parse(certificate.validTo);
}

/**
 * The service certificate to register: the given file (with --service-key, both are kept in the data directory
 * after checking they match), the one kept in the data directory while it is valid, or a new P-256 key and
 * certificate issued by the organisation's CA (embedded, or Fabric CA with --ca fabric).
 */
async function serviceCertificate(
  options: MemberOptions,
  config: MemberConfig & Pick<Config, 'ca'>,
  mspId: string,
): Promise<{ certificate: string; keyFile?: string }> {
  const dir = exchangeIdentityDir(config.dataDir);
  const certPath = join(dir, 'cert.pem');
  const keyPath = join(dir, 'key.pem');
  if (options.serviceKey !== undefined && options.serviceCert === undefined)
    throw new ConfigError('--service-key needs --service-cert');
  if (options.serviceCert !== undefined) {
    const certificate = readFileSync(options.serviceCert, 'utf8');
    if (options.serviceKey === undefined) return { certificate };
    const key = readFileSync(options.serviceKey, 'utf8');
    const publicOfKey = createPublicKey(createPrivateKey(key)).export({ type: 'spki', format: 'der' });
    const publicOfCert = new X509Certificate(certificate).publicKey.export({ type: 'spki', format: 'der' });
    if (!publicOfKey.equals(publicOfCert))
      throw new ConfigError('--service-key is not the private key of --service-cert');
    mkdirPrivate(dir);
    writePrivate(keyPath, key);
    writePrivate(certPath, certificate);
    return { certificate, keyFile: keyPath };
  }
  if (existsSync(certPath) && existsSync(keyPath)) {
    const certificate = readFileSync(certPath, 'utf8');
    if (validNow(certificate)) return { certificate, keyFile: keyPath };
  }
  const provider = await openIdentityProvider(config.dataDir, mspId, {
    kind: config.ca,
    fabricConfig: config.fabricConfig,
  });
  // A pseudonym, as for the ledger's service identity: the certificate names the MSP, not a host or a person.
  const enrollmentId = `exch-${randomBytes(9).toString('base64url')}`;
  const attrs = { 'hie.role': EXCHANGE_SERVICE_ROLE };
  const { secret } = await provider.register({ enrollmentId, type: 'client', attrs });
  const enrollment = await provider.enroll({ enrollmentId, secret, attrs, keyType: 'P-256' });
  mkdirPrivate(dir);
  writePrivate(keyPath, enrollment.privateKey);
  writePrivate(join(dir, 'enrollment-id'), `${enrollmentId}\n`);
  writePrivate(certPath, enrollment.certificate);
  return { certificate: enrollment.certificate, keyFile: keyPath };
}

/**
 * With --ledger fabric: did the data directory's embedded CA issue the ledger identity of the connection file? Then
 * that CA is the MSP's CA (a member of a served embedded ledger, whose `hie-ledger ledger connect` enrolled the
 * identity from it) and may issue the service certificate too. A CA that is not there is not created.
 */
async function embeddedCaIssuedLedgerIdentity(config: MemberConfig): Promise<boolean> {
  const caDir = join(config.dataDir, 'identity', 'ca');
  if (!existsSync(join(caDir, 'ca-cert.pem')) || !existsSync(join(caDir, 'ca-key.pem'))) return false;
  let fabric: FabricConfig;
  let identityCertificate: string;
  try {
    fabric = loadFabricConfig(config.fabricConfig!);
    identityCertificate = readFileSync(fabric.identity.certPath, 'utf8');
  } catch {
    return false; // an unreadable connection file is reported by the step that needs it
  }
  const { EmbeddedCa } = await import('../ledger/identity/embedded-ca.js');
  const ca = await EmbeddedCa.open(caDir, { mspId: fabric.mspId });
  return ca.verify(identityCertificate);
}

function describe(entry: MemberEntry): Record<string, string> {
  return {
    mspId: entry.mspId,
    organization: entry.organization,
    fhirBaseUrl: entry.fhirBaseUrl,
    status: entry.status,
    serviceCertificateSha256: certificateFingerprint(entry.serviceCertificate),
    registeredAt: entry.registeredAt,
    updatedAt: entry.updatedAt,
  };
}

function certificateFingerprint(pem: string): string {
  try {
    return new X509Certificate(pem).fingerprint256;
  } catch {
    return 'unreadable';
  }
}

export function registerMemberCommand(program: Command): Command {
  const member = program
    .command('member')
    .description("the member directory on the ledger: this organisation's entry, and every member's");

  addConfigOptions(member.command('register'), MEMBER_REGISTER_SETTINGS)
    .description(
      "register (or update) this organisation's directory entry: name, FHIR base URL, service certificate",
    )
    .requiredOption('--organization-name <name>', "the organisation's display name (never a person's)")
    .requiredOption(
      '--fhir-base-url <url>',
      'where other members call this FHIR service (https; http on loopback)',
    )
    .option(
      '--service-cert <file>',
      'PEM certificate (ECDSA P-256, from this MSP CA) of the service signing key (default: issue one)',
    )
    .option(
      '--service-key <file>',
      'with --service-cert: its private key, kept in DATA/identity/exchange (0600)',
    )
    .action(async (options: MemberOptions) => {
      const config = loadSettings(MEMBER_REGISTER_SETTINGS, options);
      requireDataDir(config.dataDir);
      if (
        config.ledger === 'fabric' &&
        config.ca !== 'fabric' &&
        options.serviceCert === undefined &&
        !(await embeddedCaIssuedLedgerIdentity(config))
      ) {
        // The embedded CA of a data directory is not the Fabric MSP's CA: the chaincode would refuse its certificate.
        throw new ConfigError(
          'with --ledger fabric the service certificate comes from the MSP CA: add --ca fabric, or give --service-cert',
        );
      }
      const written = await withDirectory(config, async (directory, mspId) => {
        const { certificate, keyFile } = await serviceCertificate(options, config, mspId);
        const result = await directory.register({
          mspId,
          organization: options.organizationName!,
          fhirBaseUrl: options.fhirBaseUrl!,
          serviceCertificate: certificate,
        });
        return { ...result, keyFile };
      });
      const out: Record<string, unknown> = {
        ...describe(written.entry),
        action: written.updated ? 'updated' : 'registered',
        transactionId: written.transactionId,
        blockNumber: written.blockNumber,
      };
      if (written.keyFile) out.serviceKey = written.keyFile;
      console.log(JSON.stringify(out, null, 2));
    });

  addConfigOptions(member.command('revoke'), MEMBER_SETTINGS)
    .description(
      "revoke this organisation's directory entry: other members stop trusting its service certificate",
    )
    .action(async (options: MemberOptions) => {
      const config = loadSettings(MEMBER_SETTINGS, options);
      const revoked = await withDirectory(config, (directory, mspId) => directory.revoke(mspId));
      console.log(
        JSON.stringify({ ...describe(revoked.entry), transactionId: revoked.transactionId }, null, 2),
      );
    });

  addConfigOptions(member.command('list'), MEMBER_SETTINGS)
    .description('list the member directory (active and revoked entries)')
    .option('--json', 'print the entries as JSON (with their certificates)')
    .action(async (options: MemberOptions) => {
      const config = loadSettings(MEMBER_SETTINGS, options);
      const entries = await withDirectory(config, (directory) => directory.list());
      if (options.json) {
        console.log(JSON.stringify(entries, null, 2));
        return;
      }
      const header = ['MSP ID', 'ORGANIZATION', 'STATUS', 'FHIR BASE URL', 'UPDATED'];
      const rows = entries.map((e) => [e.mspId, e.organization, e.status, e.fhirBaseUrl, e.updatedAt]);
      const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
      for (const row of [header, ...rows]) {
        console.log(
          row
            .map((cell, i) => cell.padEnd(widths[i]!))
            .join('  ')
            .trimEnd(),
        );
      }
    });

  return member;
}
