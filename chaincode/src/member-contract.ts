/**
 * The member directory: one entry per member organisation of the exchange, keyed `member/<mspId>`, holding its
 * display name, the FHIR base URL other members call, and the certificate its service signs service-to-service
 * requests with (docs/exchange.md). An entry is written only by its own MSP's service identity (chaincode check on
 * ctx.clientIdentity), and every write sets a key-level endorsement policy naming only the owner's peer, so on
 * Fabric no other organisation's peer, alone or together with others, can endorse a change to it (docs/fabric.md).
 * Entries are never deleted: a revoked entry stays readable, so a verifier sees the revocation.
 *
 * Deterministic: times come from the proposal, JSON is serialised with sorted keys, the certificate is parsed with
 * node:crypto (pure parsing, no clock: its validity is checked against the proposal timestamp), and every
 * transaction sets exactly one event.
 */
import { X509Certificate } from 'crypto';
import { Context, Contract, Info, Param, Returns, Transaction } from 'fabric-contract-api';
import { KeyEndorsementPolicy } from 'fabric-shim';
import { fromBytes, requireServiceCaller, stableStringify, toBytes, txTimestampIso } from './common';

/** Prefix of a directory entry's key: `member/<mspId>`. */
export const MEMBER_KEY_PREFIX = 'member/';
/** Fabric MSP ids: letters, digits, dot, underscore and hyphen. */
const MSP_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
const MAX_ORGANIZATION_LENGTH = 200;
const MAX_URL_LENGTH = 2048;
const MAX_CERTIFICATE_LENGTH = 16_384;
const PEM_CERTIFICATE =
  /^-----BEGIN CERTIFICATE-----\r?\n[A-Za-z0-9+/=\r\n]+-----END CERTIFICATE-----\r?\n?$/;
/** Hosts for which `http:` is accepted (a local network on one machine, docs/exchange.md). */
const LOOPBACK_HOSTS = /^(localhost|127(\.\d{1,3}){3}|\[::1\])$/;

export type MemberStatus = 'active' | 'revoked';

export interface MemberRecord {
  docType: 'member';
  mspId: string;
  /** The organisation's display name (never a person's name). */
  organization: string;
  /** Where other members call this member's FHIR service: https, or http on a loopback host. */
  fhirBaseUrl: string;
  /** PEM X.509 certificate (ECDSA P-256) of the key the member's service signs requests with. */
  serviceCertificate: string;
  status: MemberStatus;
  /** Proposal timestamp of the first registration and of the latest write, ISO 8601. */
  registeredAt: string;
  updatedAt: string;
  /** The transaction of the latest write. */
  txId: string;
}

@Info({
  title: 'MemberContract',
  description: 'The member directory: organisation, FHIR base URL and service certificate per MSP',
})
export class MemberContract extends Contract {
  constructor() {
    super('member');
  }

  /**
   * Registers the calling MSP's entry. Refused when the entry is active (use UpdateMember) or when it was revoked
   * with the same certificate (a revoked certificate does not come back).
   */
  @Transaction()
  @Param('mspId', 'string', "the member's MSP id: must be the caller's own")
  @Param('organization', 'string', "the organisation's display name")
  @Param('fhirBaseUrl', 'string', 'the FHIR base URL other members call (https; http only on loopback)')
  @Param('serviceCertificate', 'string', 'PEM X.509 certificate (ECDSA P-256) of the service signing key')
  @Returns('string')
  public async RegisterMember(
    ctx: Context,
    mspId: string,
    organization: string,
    fhirBaseUrl: string,
    serviceCertificate: string,
  ): Promise<string> {
    const key = requireOwner(ctx, mspId);
    const existing = await readMember(ctx, key);
    if (existing?.status === 'active') {
      throw new Error(`member ${mspId} is already registered; use UpdateMember to change its entry`);
    }
    const certificate = requireServiceCertificate(ctx, serviceCertificate);
    if (existing && sameCertificate(existing.serviceCertificate, certificate)) {
      throw new Error(`the service certificate of member ${mspId} was revoked; register a new one`);
    }
    const now = txTimestampIso(ctx);
    return putMember(ctx, key, 'RegisterMember', {
      docType: 'member',
      mspId,
      organization: requireOrganization(organization),
      fhirBaseUrl: requireFhirBaseUrl(fhirBaseUrl),
      serviceCertificate: certificate,
      status: 'active',
      registeredAt: existing?.registeredAt ?? now,
      updatedAt: now,
      txId: ctx.stub.getTxID(),
    });
  }

  /** Replaces the organisation name, base URL and service certificate of the calling MSP's active entry. */
  @Transaction()
  @Param('mspId', 'string', "the member's MSP id: must be the caller's own")
  @Param('organization', 'string', "the organisation's display name")
  @Param('fhirBaseUrl', 'string', 'the FHIR base URL other members call (https; http only on loopback)')
  @Param('serviceCertificate', 'string', 'PEM X.509 certificate (ECDSA P-256) of the service signing key')
  @Returns('string')
  public async UpdateMember(
    ctx: Context,
    mspId: string,
    organization: string,
    fhirBaseUrl: string,
    serviceCertificate: string,
  ): Promise<string> {
    const key = requireOwner(ctx, mspId);
    const existing = await readMember(ctx, key);
    if (!existing) throw new Error(`member ${mspId} is not registered`);
    if (existing.status !== 'active') throw new Error(`member ${mspId} is revoked; register it again`);
    return putMember(ctx, key, 'UpdateMember', {
      ...existing,
      organization: requireOrganization(organization),
      fhirBaseUrl: requireFhirBaseUrl(fhirBaseUrl),
      serviceCertificate: requireServiceCertificate(ctx, serviceCertificate),
      updatedAt: txTimestampIso(ctx),
      txId: ctx.stub.getTxID(),
    });
  }

  /** Revokes the calling MSP's entry: it stays readable with status `revoked`; other members stop trusting it. */
  @Transaction()
  @Param('mspId', 'string', "the member's MSP id: must be the caller's own")
  @Returns('string')
  public async RevokeMember(ctx: Context, mspId: string): Promise<string> {
    const key = requireOwner(ctx, mspId);
    const existing = await readMember(ctx, key);
    if (!existing) throw new Error(`member ${mspId} is not registered`);
    if (existing.status === 'revoked') throw new Error(`member ${mspId} is already revoked`);
    return putMember(ctx, key, 'RevokeMember', {
      ...existing,
      status: 'revoked',
      updatedAt: txTimestampIso(ctx),
      txId: ctx.stub.getTxID(),
    });
  }

  /** The entry as JSON, or `null` when the MSP never registered. */
  @Transaction(false)
  @Param('mspId', 'string', "the member's MSP id")
  @Returns('string')
  public async ReadMember(ctx: Context, mspId: string): Promise<string> {
    const bytes = await ctx.stub.getState(memberKey(requireMspId(mspId)));
    return bytes.length === 0 ? 'null' : fromBytes(bytes);
  }

  /** Every entry (active and revoked), ordered by key, as a JSON array. */
  @Transaction(false)
  @Returns('string')
  public async ListMembers(ctx: Context): Promise<string> {
    const members: MemberRecord[] = [];
    // '0' is the character after '/': the range holds exactly the keys starting with `member/`.
    const iterator = await ctx.stub.getStateByRange(MEMBER_KEY_PREFIX, 'member0');
    try {
      for (let next = await iterator.next(); !next.done; next = await iterator.next()) {
        members.push(JSON.parse(fromBytes(next.value.value)) as MemberRecord);
      }
    } finally {
      await iterator.close();
    }
    return stableStringify(members);
  }
}

function memberKey(mspId: string): string {
  return `${MEMBER_KEY_PREFIX}${mspId}`;
}

/** The entry's key, after checking that the caller is the service identity of the MSP the entry belongs to. */
function requireOwner(ctx: Context, mspId: string): string {
  requireServiceCaller(ctx);
  requireMspId(mspId);
  const caller = ctx.clientIdentity.getMSPID();
  if (caller !== mspId) {
    throw new Error(
      `access denied: only ${mspId} may write its directory entry (the caller is of ${caller})`,
    );
  }
  return memberKey(mspId);
}

async function readMember(ctx: Context, key: string): Promise<MemberRecord | undefined> {
  const bytes = await ctx.stub.getState(key);
  return bytes.length === 0 ? undefined : (JSON.parse(fromBytes(bytes)) as MemberRecord);
}

/** Writes the entry with a key-level endorsement policy requiring the owner's peer, and one event. */
async function putMember(ctx: Context, key: string, event: string, record: MemberRecord): Promise<string> {
  const json = stableStringify(record);
  await ctx.stub.putState(key, toBytes(json));
  const policy = new KeyEndorsementPolicy();
  policy.addOrgs('PEER', record.mspId);
  await ctx.stub.setStateValidationParameter(key, policy.getPolicy());
  ctx.stub.setEvent(event, toBytes(json));
  return json;
}

function requireMspId(mspId: unknown): string {
  if (typeof mspId !== 'string' || !MSP_ID.test(mspId)) {
    throw new Error('invalid argument mspId: expected 1-64 letters, digits, ".", "_" or "-"');
  }
  return mspId;
}

function requireOrganization(organization: unknown): string {
  if (
    typeof organization !== 'string' ||
    organization.trim().length === 0 ||
    organization.length > MAX_ORGANIZATION_LENGTH ||
    organization !== organization.trim() ||
    // eslint-disable-next-line no-control-regex
    /[\u0000-\u001f\u007f]/.test(organization)
  ) {
    throw new Error(
      `invalid argument organization: expected a display name of 1-${MAX_ORGANIZATION_LENGTH} characters, ` +
        'without control characters or surrounding spaces',
    );
  }
  return organization;
}

/** An absolute https URL (http only for a loopback host), without credentials, query or fragment. */
function requireFhirBaseUrl(text: unknown): string {
  if (typeof text !== 'string' || text.length === 0 || text.length > MAX_URL_LENGTH) {
    throw new Error(
      `invalid argument fhirBaseUrl: expected an absolute URL of at most ${MAX_URL_LENGTH} characters`,
    );
  }
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new Error(`invalid argument fhirBaseUrl: ${JSON.stringify(text)} is not an absolute URL`);
  }
  const problem =
    url.protocol !== 'https:' && url.protocol !== 'http:'
      ? 'the scheme must be https'
      : url.protocol === 'http:' && !LOOPBACK_HOSTS.test(url.hostname)
        ? 'http is allowed only for a loopback host (localhost, 127.0.0.0/8, [::1]); use https'
        : url.username !== '' || url.password !== ''
          ? 'it must not carry credentials'
          : url.search !== '' || url.hash !== '' || text.includes('?') || text.includes('#')
            ? 'it must not carry a query or a fragment'
            : text.endsWith('/')
              ? 'it must not end with "/"'
              : text !== url.href && text !== url.href.replace(/\/$/, '')
                ? `it is not in normal form (${url.href.replace(/\/$/, '')})`
                : undefined;
  if (problem) throw new Error(`invalid argument fhirBaseUrl: ${problem}`);
  return text;
}

/**
 * One PEM X.509 certificate with an ECDSA P-256 key, not a CA, valid at the proposal's time and issued by the same
 * CA (issuer name) as the calling service identity's certificate: the member's own MSP CA. The signature is not
 * checked here (the chaincode does not hold the MSP's root certificates); members check it against the channel's
 * MSP configuration when they trust the certificate.
 */
function requireServiceCertificate(ctx: Context, pem: unknown): string {
  if (typeof pem !== 'string' || pem.length > MAX_CERTIFICATE_LENGTH || !PEM_CERTIFICATE.test(pem)) {
    throw new Error('invalid argument serviceCertificate: expected one PEM-encoded X.509 certificate');
  }
  let certificate: X509Certificate;
  try {
    certificate = new X509Certificate(pem);
  } catch {
    throw new Error('invalid argument serviceCertificate: it does not parse as an X.509 certificate');
  }
  const key = certificate.publicKey;
  if (key.asymmetricKeyType !== 'ec' || key.asymmetricKeyDetails?.namedCurve !== 'prime256v1') {
    throw new Error('invalid argument serviceCertificate: expected an ECDSA P-256 public key');
  }
  if (certificate.ca) throw new Error('invalid argument serviceCertificate: it is a CA certificate');
  const at = Date.parse(txTimestampIso(ctx));
  if (at < Date.parse(certificate.validFrom) || at > Date.parse(certificate.validTo)) {
    throw new Error('invalid argument serviceCertificate: it is not valid at the time of the transaction');
  }
  const creator = new X509Certificate(fromBytes(ctx.clientIdentity.getIDBytes()));
  if (certificate.issuer !== creator.issuer) {
    throw new Error(
      `invalid argument serviceCertificate: it was not issued by the CA of ${ctx.clientIdentity.getMSPID()} ` +
        "(its issuer differs from the calling service identity's)",
    );
  }
  return pem;
}

function sameCertificate(a: string, b: string): boolean {
  try {
    return new X509Certificate(a).fingerprint256 === new X509Certificate(b).fingerprint256;
  } catch {
    return a === b;
  }
}
