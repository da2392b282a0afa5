/**
 * The embedded ledger, the default: the project's chaincode run in-process by EmbeddedChain, with the
 * organisation's service identity enrolled at first start by its embedded CA.
 *
 * Data directory layout (shared with src/access and src/commands):
 *   ledger/chain.sqlite      blocks, world state, key history (one chain per data directory)
 *   identity/ca/             the organisation's embedded CA (key mode 0600)
 *   identity/service/        the service identity: cert.pem, key.pem (mode 0600), enrollment-id
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import * as x509 from '@peculiar/x509';
import { EmbeddedCa } from '../identity/embedded-ca.js';
import type { Ledger } from '../ledger.js';
import { EmbeddedChain, type EmbeddedChainOptions } from './chain.js';
import { EmbeddedLedger, type SigningIdentity } from './embedded-ledger.js';

export { EmbeddedChain, ChainIntegrityError, DEFAULT_CHANNEL } from './chain.js';
export type { EmbeddedChainOptions, MspDefinition } from './chain.js';
export { EmbeddedLedger } from './embedded-ledger.js';
export type { SigningIdentity } from './embedded-ledger.js';
export type * from './types.js';

export interface OpenEmbeddedLedgerOptions {
  dataDir: string;
  mspId: string;
  channelId?: string;
  maxBlockTransactions?: number;
}

/** The chains open in this process, by file: organisations sharing a data directory share one chain. */
const openChains = new Map<string, { chain: Promise<EmbeddedChain>; users: number }>();

/** Opens the chain in `file`, or joins the one this process already has open. */
export async function acquireChain(
  options: EmbeddedChainOptions,
): Promise<{ chain: EmbeddedChain; release(): Promise<void> }> {
  const file = resolve(options.file);
  let entry = openChains.get(file);
  if (!entry) {
    entry = { chain: EmbeddedChain.open({ ...options, file }), users: 0 };
    openChains.set(file, entry);
    entry.chain.catch(() => openChains.delete(file));
  }
  entry.users += 1;
  const opened = entry;
  let chain: EmbeddedChain;
  try {
    chain = await opened.chain;
  } catch (error) {
    opened.users -= 1;
    throw error;
  }
  for (const definition of options.msps ?? []) chain.addMsp(definition);
  let released = false;
  return {
    chain,
    release: async () => {
      if (released) return;
      released = true;
      opened.users -= 1;
      if (opened.users === 0) {
        openChains.delete(file);
        await chain.close();
      }
    },
  };
}

/**
 * Opens the data directory's embedded ledger as `mspId`: its CA and service identity (enrolled at first
 * start with hie.role=service and a random pseudonym), and the chain, which then accepts only creators
 * issued by that CA. Throws ChainIntegrityError when the chain file does not verify.
 */
export async function openEmbeddedLedger(options: OpenEmbeddedLedgerOptions): Promise<Ledger> {
  const identityDir = join(options.dataDir, 'identity');
  mkdirSync(identityDir, { recursive: true, mode: 0o700 });
  const ca = await EmbeddedCa.open(join(identityDir, 'ca'), { mspId: options.mspId });
  const caOrganisation = new x509.X509Certificate(ca.certificate).subjectName.getField('O')[0];
  if (caOrganisation !== options.mspId) {
    throw new Error(
      `the CA in ${join(identityDir, 'ca')} belongs to ${caOrganisation}, not ${options.mspId}`,
    );
  }
  const identity = await serviceIdentity(ca, join(identityDir, 'service'));
  const { chain, release } = await acquireChain({
    file: join(options.dataDir, 'ledger', 'chain.sqlite'),
    channelId: options.channelId,
    maxBlockTransactions: options.maxBlockTransactions,
    msps: [
      { mspId: options.mspId, rootCertificates: [ca.certificate], isRevoked: (pem) => ca.isRevoked(pem) },
    ],
  });
  return new EmbeddedLedger(chain, identity, release);
}

/** The organisation's service identity, enrolled once and kept in `dir` (key mode 0600). */
export async function serviceIdentity(ca: EmbeddedCa, dir: string): Promise<SigningIdentity> {
  const certPath = join(dir, 'cert.pem');
  const keyPath = join(dir, 'key.pem');
  try {
    return {
      mspId: ca.mspId,
      certificate: readFileSync(certPath, 'utf8'),
      privateKey: readFileSync(keyPath, 'utf8'),
    };
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  // A pseudonym: the ledger sees no organisation or host names beyond the MSP id.
  const enrollmentId = `svc-${randomBytes(9).toString('base64url')}`;
  const enrollment = await ca.enroll({
    enrollmentId,
    attrs: { 'hie.role': 'service', 'hie.id': enrollmentId },
  });
  writeAtomically(keyPath, enrollment.privateKey);
  writeAtomically(join(dir, 'enrollment-id'), `${enrollmentId}\n`);
  writeAtomically(certPath, enrollment.certificate);
  return { mspId: ca.mspId, certificate: enrollment.certificate, privateKey: enrollment.privateKey };
}

function writeAtomically(path: string, data: string): void {
  writeFileSync(`${path}.tmp`, data, { mode: 0o600 });
  renameSync(`${path}.tmp`, path);
}
