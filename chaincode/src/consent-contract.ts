/**
 * Patient consent on the ledger: which clinician or organisation may read a patient's records, for which resource
 * classes, purposes and period; plus access (disclosure) records. Every member of the channel reads all of it, so
 * nothing here links two records to one patient (docs/threat-model.md, "What a member reading the ledger learns"):
 *
 * - a grant is keyed by a fresh random `grantId` and names its patient only by `patientTag`, an HMAC keyed with the
 *   patient's network id (npid, a secret of the patient's home service) over the record's id; an access record
 *   likewise, and its details (who, what, when exactly) are sealed with a key derived from the npid;
 * - ids, tags and sealed details are made off the chain by the writer; the chaincode checks their shape only;
 * - the writing organisation is the creator's MSP, recorded here (`homeMsp`, `custodianMsp`), never an argument. A
 *   grant is changed or revoked only by its home MSP (checked here, and on Fabric by key-level endorsement).
 *
 * Deterministic: times come from the proposal, JSON is serialised with sorted keys, and every transaction sets
 * exactly one event.
 */
import { Context, Contract, Info, Param, Returns, Transaction } from 'fabric-contract-api';
import { DEFAULT_PURPOSE, grantAllows, type DenyRule, type Period } from './grant-rules';
import {
  fromBytes,
  requireHex256,
  requireServiceCaller,
  stableStringify,
  toBytes,
  txMeta,
  txTimestampIso,
} from './common';
import { ownedBy } from './key-endorsement';

/** State keys: `grant/<grantId>`, `access/<recordId>` (plain keys, so access records can be paged by range). */
export const GRANT_PREFIX = 'grant/';
export const ACCESS_PREFIX = 'access/';
/** Most access records one RecordAccess transaction may carry, and one ListAccess page. */
export const MAX_ACCESS_RECORDS = 1000;
/** Largest sealed access detail (base64url characters). */
const MAX_SEALED = 4096;

/** A pseudonym or a record id: random, URL-safe, never a name or a resource id (the services make them). */
const PSEUDONYM = /^[A-Za-z0-9_-]{8,128}$/;
const RESOURCE_TYPE = /^[A-Z][A-Za-z]{1,63}$/;
const INSTANT = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$/;
/** An MSP id as Fabric accepts them. */
const MSP_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
/** A purpose of use code (HL7 v3 PurposeOfUse, e.g. TREAT, ETREAT, HPAYMT, HRESCH). */
const PURPOSE = /^[A-Z][A-Z0-9]{1,31}$/;
const SEALED = /^[A-Za-z0-9_-]+$/;

export type { DenyRule, Period } from './grant-rules';

export interface GrantRecord {
  docType: 'grant';
  /** Fresh random id made by the home service (its local index maps it to the patient). */
  grantId: string;
  /** HMAC-SHA256(key = the patient's npid, "grant|" + grantId), hex: only who knows the npid links it. */
  patientTag: string;
  /** Pseudonym of the grantee (a clinician or an organisation) and the MSP of the service it acts through. */
  grantee: string;
  granteeMsp: string;
  /** The creator's MSP (the patient's home service): the only one that may change or revoke the grant. */
  homeMsp: string;
  /** Resource types opened; empty = all. */
  classes: string[];
  period?: Period;
  deny: DenyRule[];
  /** Purposes of use opened (sorted, at least one; TREAT when the grant named none). */
  purpose: string[];
  status: 'active' | 'revoked';
  /** Recorded from a consent given in person (a paper form), by the patient's home organisation. */
  grantedInPerson: boolean;
  grantedTxId: string;
  grantedAt: string;
  revokedTxId?: string;
  revokedAt?: string;
}

export interface AccessRecord {
  docType: 'access';
  /** Fresh random id made by the custodian. */
  recordId: string;
  /** HMAC-SHA256(npid, "access|" + recordId), hex. */
  patientTag: string;
  /** HMAC-SHA256(npid, "access-grant|" + recordId + "|" + grantId), hex, when a grant opened the access. */
  grantTag?: string;
  /** The creator's MSP: the service that disclosed (or refused). */
  custodianMsp: string;
  /** The MSP of the service the accessor acted through (the custodian's own when not given). */
  accessorMsp: string;
  purpose: string;
  /** The details (accessor, interaction, type, outcome, times), AES-256-GCM under a key derived from the npid. */
  sealed: string;
  /** The transaction's timestamp and id. */
  time: string;
  txId: string;
}

export interface CheckResult {
  allowed: boolean;
}

export interface AccessPage {
  records: AccessRecord[];
  /** The recordId to list after for the next page; absent on the last page. */
  next?: string;
}

const grantKey = (grantId: string) => GRANT_PREFIX + grantId;
const accessKey = (recordId: string) => ACCESS_PREFIX + recordId;

@Info({ title: 'ConsentContract', description: 'Patient consent grants and access records, unlinkable' })
export class ConsentContract extends Contract {
  constructor() {
    super('consent');
  }

  /**
   * Grants (or replaces the terms of) one grant. Argument: JSON `{grantId, patientTag, grantee, granteeMsp?,
   * classes?, period?, deny?, purpose?, inPerson?}` (granteeMsp: the caller's when absent). A new grantId belongs to the caller's MSP; an existing one may be
   * changed only by that MSP.
   */
  @Transaction()
  @Param('grant', 'string', 'grant JSON')
  @Returns('string')
  public async GrantAccess(ctx: Context, grant: string): Promise<string> {
    requireServiceCaller(ctx);
    const input = parseObject('grant', grant);
    refuseCallerFields(input, ['homeMsp', 'status', 'grantedTxId', 'grantedAt', 'revokedAt', 'revokedTxId']);
    const grantId = requirePseudonym('grantId', input.grantId);
    const patientTag = requireHex256('patientTag', input.patientTag);
    const grantee = requirePseudonym('grantee', input.grantee);
    const classes = requireClasses('classes', input.classes);
    const period = input.period === undefined ? undefined : requirePeriod('period', input.period);
    const purpose = requirePurposes('purpose', input.purpose);
    if (input.inPerson !== undefined && typeof input.inPerson !== 'boolean') fail('inPerson');
    const grantedInPerson = input.inPerson === true;
    if (input.deny !== undefined && !Array.isArray(input.deny))
      throw new Error('invalid argument deny: expected an array');
    const deny = ((input.deny as unknown[] | undefined) ?? []).map((rule, index) => {
      if (rule === null || typeof rule !== 'object' || Array.isArray(rule))
        throw new Error(`invalid argument deny[${index}]: expected an object`);
      const r = rule as Record<string, unknown>;
      const out: DenyRule = { classes: requireClasses(`deny[${index}].classes`, r.classes) };
      if (r.period !== undefined) out.period = requirePeriod(`deny[${index}].period`, r.period);
      return out;
    });
    const key = grantKey(grantId);
    const existing = await readGrant(ctx, grantId);
    const meta = txMeta(ctx);
    // A grantee of the home's own service when not named.
    const granteeMsp =
      input.granteeMsp === undefined ? meta.mspId : requireMatch('granteeMsp', input.granteeMsp, MSP_ID);
    if (existing) {
      requireOwner(existing, meta.mspId);
      // The patient is fixed for the life of a grant id: only its terms change.
      if (existing.patientTag !== patientTag || existing.grantee !== grantee)
        throw new Error(`invalid argument: grant ${grantId} exists for another patient or grantee`);
    }
    const record: GrantRecord = {
      docType: 'grant',
      grantId,
      patientTag,
      grantee,
      granteeMsp,
      homeMsp: meta.mspId,
      classes,
      period,
      deny,
      purpose,
      status: 'active',
      grantedInPerson,
      grantedTxId: meta.txId,
      grantedAt: meta.timestamp,
    };
    const json = stableStringify(record);
    await ctx.stub.putState(key, toBytes(json));
    await ownedBy(ctx, key, meta.mspId);
    ctx.stub.setEvent('GrantAccess', toBytes(json));
    return json;
  }

  /** Revokes one grant (only its home MSP may). Revoking a revoked grant is a no-op. */
  @Transaction()
  @Param('grantId', 'string', 'the grant id')
  @Returns('string')
  public async RevokeAccess(ctx: Context, grantId: string): Promise<string> {
    requireServiceCaller(ctx);
    requirePseudonym('grantId', grantId);
    const record = await readGrant(ctx, grantId);
    if (!record) throw new Error(`no grant ${grantId}`);
    const meta = txMeta(ctx);
    requireOwner(record, meta.mspId);
    if (record.status === 'revoked') {
      const json = stableStringify(record);
      ctx.stub.setEvent('RevokeAccess', toBytes(json));
      return json;
    }
    const revoked: GrantRecord = {
      ...record,
      status: 'revoked',
      revokedTxId: meta.txId,
      revokedAt: meta.timestamp,
    };
    const json = stableStringify(revoked);
    await ctx.stub.putState(grantKey(grantId), toBytes(json));
    await ownedBy(ctx, grantKey(grantId), meta.mspId);
    ctx.stub.setEvent('RevokeAccess', toBytes(json));
    return json;
  }

  /** The grant record, or `null`. */
  @Transaction(false)
  @Param('grantId', 'string', 'the grant id')
  @Returns('string')
  public async ReadGrant(ctx: Context, grantId: string): Promise<string> {
    requirePseudonym('grantId', grantId);
    const record = await readGrant(ctx, grantId);
    return record ? stableStringify(record) : 'null';
  }

  /**
   * Does grant `grantId` let `grantee` read `resourceType` at `at` (the proposal time when empty) for `purpose`
   * (TREAT when empty)? The caller matches the grant to its patient with the npid; this checks the terms.
   */
  @Transaction(false)
  @Param('grantId', 'string', 'the grant id')
  @Param('grantee', 'string', 'grantee pseudonym')
  @Param('resourceType', 'string', 'FHIR resource type')
  @Param('at', 'string', 'ISO 8601 instant, or empty for now')
  @Param('purpose', 'string', 'purpose of use, or empty for TREAT')
  @Returns('string')
  public async CheckGrant(
    ctx: Context,
    grantId: string,
    grantee: string,
    resourceType: string,
    at: string,
    purpose: string,
  ): Promise<string> {
    requirePseudonym('grantId', grantId);
    requirePseudonym('grantee', grantee);
    if (!RESOURCE_TYPE.test(resourceType)) throw new Error('invalid argument resourceType');
    const instant = at === '' ? txTimestampIso(ctx) : requireInstant('at', at);
    const use = purpose === '' ? DEFAULT_PURPOSE : requireMatch('purpose', purpose, PURPOSE);
    const record = await readGrant(ctx, grantId);
    const allowed =
      record !== undefined &&
      record.grantee === grantee &&
      grantAllows(record, resourceType, Date.parse(instant), use);
    const result: CheckResult = { allowed };
    return stableStringify(result);
  }

  /**
   * Records a batch of access decisions made by the calling service (the custodian). Argument: JSON array of
   * `{recordId, patientTag, grantTag?, accessorMsp?, purpose?, sealed}` (at most MAX_ACCESS_RECORDS).
   */
  @Transaction()
  @Param('records', 'string', 'JSON array of access records')
  @Returns('string')
  public async RecordAccess(ctx: Context, records: string): Promise<string> {
    requireServiceCaller(ctx);
    let parsed: unknown;
    try {
      parsed = JSON.parse(records);
    } catch {
      throw new Error('invalid argument records: not JSON');
    }
    if (!Array.isArray(parsed) || parsed.length === 0 || parsed.length > MAX_ACCESS_RECORDS) {
      throw new Error(`invalid argument records: expected an array of 1 to ${MAX_ACCESS_RECORDS} records`);
    }
    const meta = txMeta(ctx);
    const seen = new Set<string>();
    for (let index = 0; index < parsed.length; index++) {
      const item = parsed[index] as Record<string, unknown>;
      if (item === null || typeof item !== 'object' || Array.isArray(item))
        throw new Error(`invalid argument records[${index}]`);
      refuseCallerFields(item, ['custodianMsp', 'time', 'txId']);
      const recordId = requirePseudonym(`records[${index}].recordId`, item.recordId);
      if (seen.has(recordId)) throw new Error(`invalid argument records[${index}].recordId: repeated`);
      seen.add(recordId);
      const key = accessKey(recordId);
      // A record id is used once: an access record is never overwritten.
      if ((await ctx.stub.getState(key)).length > 0)
        throw new Error(`invalid argument records[${index}].recordId: already recorded`);
      const sealed = requireMatch(`records[${index}].sealed`, item.sealed, SEALED);
      if (sealed.length > MAX_SEALED) fail(`records[${index}].sealed`);
      const record: AccessRecord = {
        docType: 'access',
        recordId,
        patientTag: requireHex256(`records[${index}].patientTag`, item.patientTag),
        custodianMsp: meta.mspId,
        accessorMsp:
          item.accessorMsp === undefined
            ? meta.mspId
            : requireMatch(`records[${index}].accessorMsp`, item.accessorMsp, MSP_ID),
        purpose:
          item.purpose === undefined
            ? DEFAULT_PURPOSE
            : requireMatch(`records[${index}].purpose`, item.purpose, PURPOSE),
        sealed,
        time: meta.timestamp,
        txId: meta.txId,
      };
      if (item.grantTag !== undefined)
        record.grantTag = requireHex256(`records[${index}].grantTag`, item.grantTag);
      await ctx.stub.putState(key, toBytes(stableStringify(record)));
    }
    const summary = stableStringify({ count: parsed.length, custodianMsp: meta.mspId, txId: meta.txId });
    ctx.stub.setEvent('RecordAccess', toBytes(summary));
    return summary;
  }

  /**
   * One page of every access record, in recordId order, after `after` (from the first when empty), at most
   * `limit` (1 to MAX_ACCESS_RECORDS). Records name no patient: a reader keeps those whose tag its npid matches.
   */
  @Transaction(false)
  @Param('after', 'string', 'the last recordId of the previous page, or empty')
  @Param('limit', 'string', 'page size')
  @Returns('string')
  public async ListAccess(ctx: Context, after: string, limit: string): Promise<string> {
    if (after !== '') requirePseudonym('after', after);
    if (!/^[1-9][0-9]{0,3}$/.test(limit) || Number(limit) > MAX_ACCESS_RECORDS) fail('limit');
    const size = Number(limit);
    // '0' follows '/': the range holds exactly the keys under ACCESS_PREFIX. '\u0000' puts `after` itself before it.
    const start = after === '' ? ACCESS_PREFIX : `${accessKey(after)}\u0000`;
    const iterator = await ctx.stub.getStateByRange(start, `${ACCESS_PREFIX.slice(0, -1)}0`);
    const page: AccessPage = { records: [] };
    try {
      for (let next = await iterator.next(); !next.done; next = await iterator.next()) {
        if (page.records.length === size) {
          page.next = page.records[size - 1]!.recordId;
          break;
        }
        page.records.push(JSON.parse(fromBytes(next.value.value)) as AccessRecord);
      }
    } finally {
      await iterator.close();
    }
    return stableStringify(page);
  }
}

async function readGrant(ctx: Context, grantId: string): Promise<GrantRecord | undefined> {
  const bytes = await ctx.stub.getState(grantKey(grantId));
  return bytes.length === 0 ? undefined : (JSON.parse(fromBytes(bytes)) as GrantRecord);
}

function requireOwner(record: GrantRecord, caller: string): void {
  if (record.homeMsp !== caller)
    throw new Error(
      `access denied: grant ${record.grantId} belongs to its home service's organisation; only it may change or revoke it (caller ${caller})`,
    );
}

/** What the chaincode records itself (the writer's MSP, status, times) is never taken from an argument. */
function refuseCallerFields(input: Record<string, unknown>, names: string[]): void {
  for (const name of names)
    if (input[name] !== undefined)
      throw new Error(`invalid argument ${name}: recorded by the chaincode, not given by the caller`);
}

function requirePurposes(name: string, value: unknown): string[] {
  if (value === undefined) return [DEFAULT_PURPOSE];
  if (!Array.isArray(value) || value.length === 0 || value.length > 16) fail(name);
  const purposes = value.map((item, index) => requireMatch(`${name}[${index}]`, item, PURPOSE));
  return [...new Set(purposes)].sort();
}

function fail(name: string): never {
  throw new Error(`invalid argument ${name}`);
}

function parseObject(name: string, text: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new Error(`invalid argument ${name}: not JSON`);
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value))
    throw new Error(`invalid argument ${name}: expected a JSON object`);
  return value as Record<string, unknown>;
}

function requireMatch(name: string, value: unknown, pattern: RegExp): string {
  if (typeof value !== 'string' || !pattern.test(value)) fail(name);
  return value;
}

function requirePseudonym(name: string, value: unknown): string {
  if (typeof value !== 'string' || !PSEUDONYM.test(value)) {
    throw new Error(`invalid argument ${name}: expected a pseudonym of 8 to 128 characters [A-Za-z0-9_-]`);
  }
  return value;
}

function requireInstant(name: string, value: unknown): string {
  if (typeof value !== 'string' || !INSTANT.test(value) || Number.isNaN(Date.parse(value))) {
    throw new Error(`invalid argument ${name}: expected an ISO 8601 instant with time zone`);
  }
  return value;
}

function requireClasses(name: string, value: unknown): string[] {
  if (value === undefined) return [];
  if (!Array.isArray(value)) fail(name);
  const classes = value.map((item, index) => requireMatch(`${name}[${index}]`, item, RESOURCE_TYPE));
  return [...new Set(classes)].sort();
}

function requirePeriod(name: string, value: unknown): Period {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) fail(name);
  const v = value as Record<string, unknown>;
  const period: Period = {};
  if (v.start !== undefined) period.start = requireInstant(`${name}.start`, v.start);
  if (v.end !== undefined) period.end = requireInstant(`${name}.end`, v.end);
  if (
    period.start !== undefined &&
    period.end !== undefined &&
    Date.parse(period.end) < Date.parse(period.start)
  ) {
    throw new Error(`invalid argument ${name}: end before start`);
  }
  return period;
}
