/**
 * The members admitted to a served embedded ledger (`--ledger-members FILE`): a JSON array of
 * `{ "mspId": "HospitalBMSP", "caCertificate": "-----BEGIN CERTIFICATE-----..." }`, one entry per member
 * organisation, its CA certificate being the one that issues its identities (`hie-ledger ledger connect`
 * prints a member's entry and can add it to the file).
 */
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { X509Certificate } from 'node:crypto';
import type { MemberMsp } from './member-msps.js';

/** One entry of the file. */
export interface LedgerMemberEntry {
  mspId: string;
  caCertificate: string;
}

const MSP_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

export class LedgerMembersError extends Error {
  constructor(file: string, problem: string) {
    super(`invalid ledger members file ${file}: ${problem}`);
    this.name = 'LedgerMembersError';
  }
}

/** Checks one entry: an MSP id and a PEM CA certificate. */
export function parseMemberEntry(raw: unknown, at: string, file: string): LedgerMemberEntry {
  const fail = (problem: string): never => {
    throw new LedgerMembersError(file, `${at}: ${problem}`);
  };
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) return fail('must be an object');
  const entry = raw as Record<string, unknown>;
  for (const key of Object.keys(entry))
    if (key !== 'mspId' && key !== 'caCertificate') fail(`unknown field "${key}"`);
  const { mspId, caCertificate } = entry;
  if (typeof mspId !== 'string' || !MSP_ID.test(mspId))
    fail('mspId must be an MSP id (letters, digits, . _ -)');
  if (typeof caCertificate !== 'string') return fail('caCertificate must be a PEM certificate');
  let certificate: X509Certificate;
  try {
    certificate = new X509Certificate(caCertificate);
  } catch {
    return fail('caCertificate is not a PEM X.509 certificate');
  }
  if (!certificate.ca) fail('caCertificate is not a CA certificate');
  return { mspId: mspId as string, caCertificate };
}

/** Reads the members file; the same MSP id twice is refused. */
export function loadLedgerMembers(file: string): MemberMsp[] {
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(file, 'utf8'));
  } catch (error) {
    throw new LedgerMembersError(file, (error as Error).message);
  }
  if (!Array.isArray(raw))
    throw new LedgerMembersError(file, 'must be a JSON array of { mspId, caCertificate }');
  const members = new Map<string, MemberMsp>();
  raw.forEach((item, index) => {
    const entry = parseMemberEntry(item, `entry ${index}`, file);
    if (members.has(entry.mspId)) throw new LedgerMembersError(file, `${entry.mspId} is listed twice`);
    members.set(entry.mspId, { mspId: entry.mspId, caCertificates: [entry.caCertificate] });
  });
  return [...members.values()];
}

/** Adds `entry` to the file (created when absent), replacing an entry of the same MSP id. */
export function addLedgerMember(file: string, entry: LedgerMemberEntry): void {
  let entries: LedgerMemberEntry[] = [];
  try {
    entries = loadLedgerMembers(file).map((member) => ({
      mspId: member.mspId,
      caCertificate: member.caCertificates[0]!,
    }));
  } catch (error) {
    if (!(error instanceof LedgerMembersError) || !/ENOENT/.test(error.message)) throw error;
  }
  const next = [...entries.filter((existing) => existing.mspId !== entry.mspId), entry];
  writeFileSync(`${file}.tmp`, `${JSON.stringify(next, null, 2)}\n`);
  renameSync(`${file}.tmp`, file);
}
