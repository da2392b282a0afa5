/** Fixtures for the ledger tests: temporary directories, organisations with a real embedded CA, proposals. */
import { createHash } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import {
  EmbeddedChain,
  type MspDefinition,
  type SerializedIdentity,
  type SigningIdentity,
} from '../../src/ledger/embedded/index.js';
import { EmbeddedCa } from '../../src/ledger/identity/embedded-ca.js';

export interface TestOrg {
  mspId: string;
  ca: EmbeddedCa;
  service: SigningIdentity;
  clinician: SigningIdentity;
  msp: MspDefinition;
}

export async function tempDir(): Promise<{ dir: string; cleanup(): Promise<void> }> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'hie-ledger-test-'));
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

/** An organisation with its CA, a service identity (hie.role=service) and a clinician (hie.role=clinician). */
export async function makeOrg(dir: string, mspId: string): Promise<TestOrg> {
  const ca = await EmbeddedCa.open(path.join(dir, `ca-${mspId}`), { mspId });
  const enrol = async (role: string): Promise<SigningIdentity> => {
    const enrollment = await ca.enroll({
      enrollmentId: `${role}-${mspId.toLowerCase()}`,
      attrs: { 'hie.role': role },
    });
    return { mspId, certificate: enrollment.certificate, privateKey: enrollment.privateKey };
  };
  return {
    mspId,
    ca,
    service: await enrol('service'),
    clinician: await enrol('clinician'),
    msp: { mspId, rootCertificates: [ca.certificate], isRevoked: (pem) => ca.isRevoked(pem) },
  };
}

export async function openChain(dir: string, orgs: TestOrg[], name = 'chain.sqlite'): Promise<EmbeddedChain> {
  return EmbeddedChain.open({ file: path.join(dir, 'ledger', name), msps: orgs.map((org) => org.msp) });
}

export function creatorOf(identity: SigningIdentity): SerializedIdentity {
  return { mspid: identity.mspId, idBytes: Buffer.from(identity.certificate, 'utf8') };
}

/** A 64-hex value derived from a label (stands in for an HMAC key or a leaf hash). */
export function hex(label: string): string {
  return createHash('sha256').update(label).digest('hex');
}

/**
 * Pseudonyms as the participant directory keeps them: stable, both ways, counted (never random, so two never
 * collide), and shaped as the chaincode requires (`pseudonym-N`).
 */
export class TestPseudonyms {
  private readonly byReference = new Map<string, string>();
  private readonly byPseudonym = new Map<string, string>();
  pseudonymOf(reference: string): string {
    let p = this.byReference.get(reference);
    if (!p) {
      p = `pseudonym-${this.byReference.size + 1}`;
      this.byReference.set(reference, p);
      this.byPseudonym.set(p, reference);
    }
    return p;
  }
  existingPseudonymOf(reference: string): string | undefined {
    return this.byReference.get(reference);
  }
  referenceOf(pseudonym: string): string | undefined {
    return this.byPseudonym.get(pseudonym);
  }
}
