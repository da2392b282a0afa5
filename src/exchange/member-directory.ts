/**
 * The member directory over the Ledger port (chaincode/src/member-contract.ts): who the members of the exchange
 * are, where their FHIR services answer, and which certificate their service requests are signed with.
 *
 * A member (docs/exchange.md) is an MSP on the channel (the ledger accepts transactions only from the channel's
 * MSPs, and only an MSP's own service identity writes its entry) with an active directory entry whose service
 * certificate is valid: `member(mspId)` answers exactly that; `read` and `list` give entries whatever their status.
 */
import { X509Certificate } from 'node:crypto';
import type { Ledger, SubmitResult } from '../ledger/ledger.js';

export type MemberStatus = 'active' | 'revoked';

/** A directory entry, as the member contract stores it (key `member/<mspId>`). */
export interface MemberEntry {
  docType: 'member';
  mspId: string;
  /** The organisation's display name. */
  organization: string;
  /** https (http only on a loopback host), no trailing slash. */
  fhirBaseUrl: string;
  /** PEM X.509 certificate, ECDSA P-256, issued by the member's MSP CA. */
  serviceCertificate: string;
  status: MemberStatus;
  registeredAt: string;
  updatedAt: string;
  /** The transaction of the entry's latest write. */
  txId: string;
}

export interface MemberRegistration {
  mspId: string;
  organization: string;
  fhirBaseUrl: string;
  serviceCertificate: string;
}

export interface MemberWrite extends SubmitResult {
  entry: MemberEntry;
  /** True when an active entry was updated rather than registered. */
  updated: boolean;
}

export class MemberDirectory {
  constructor(private readonly ledger: Ledger) {}

  /** The entry of `mspId` (active or revoked), or undefined when it never registered. */
  async read(mspId: string): Promise<MemberEntry | undefined> {
    const entry = JSON.parse(await this.ledger.evaluate('member:ReadMember', [mspId])) as MemberEntry | null;
    return entry ?? undefined;
  }

  /** Every entry, active and revoked, ordered by MSP id. */
  async list(): Promise<MemberEntry[]> {
    return JSON.parse(await this.ledger.evaluate('member:ListMembers', [])) as MemberEntry[];
  }

  /**
   * The entry of `mspId` when it is a member at `at`: an active entry whose service certificate is within its
   * validity period. Undefined otherwise (unknown, revoked, or certificate expired or unreadable).
   */
  async member(mspId: string, at: Date = new Date()): Promise<MemberEntry | undefined> {
    const entry = await this.read(mspId);
    return entry && isMemberAt(entry, at) ? entry : undefined;
  }

  /**
   * Registers the ledger identity's own MSP, or updates its entry when it is already active. The chaincode refuses
   * an entry of another MSP, a bad URL or certificate (LedgerTransactionError with its reason).
   */
  async register(registration: MemberRegistration): Promise<MemberWrite> {
    const existing = await this.read(registration.mspId);
    const updated = existing?.status === 'active';
    const result = await this.ledger.submit(updated ? 'member:UpdateMember' : 'member:RegisterMember', [
      registration.mspId,
      registration.organization,
      registration.fhirBaseUrl,
      registration.serviceCertificate,
    ]);
    return { ...result, entry: JSON.parse(result.result) as MemberEntry, updated };
  }

  /** Revokes the ledger identity's own MSP's entry (it stays readable with status `revoked`). */
  async revoke(mspId: string): Promise<SubmitResult & { entry: MemberEntry }> {
    const result = await this.ledger.submit('member:RevokeMember', [mspId]);
    return { ...result, entry: JSON.parse(result.result) as MemberEntry };
  }
}

/** An active entry whose service certificate is valid at `at`. */
export function isMemberAt(entry: MemberEntry, at: Date): boolean {
  if (entry.status !== 'active') return false;
  try {
    const certificate = new X509Certificate(entry.serviceCertificate);
    const time = at.getTime();
    return time >= Date.parse(certificate.validFrom) && time <= Date.parse(certificate.validTo);
  } catch {
    return false;
  }
}
