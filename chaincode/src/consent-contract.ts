/**
 * Patient consent on the ledger: which organisation, clinician or lab may read a patient's records held by the
 * patient's home service, for which resource classes and for how long; plus access records (who read what, when).
 *
 * Only pseudonyms reach the ledger (patients, grantees, consents and actors are random ids the services map to
 * FHIR resources off the chain). Only the patient's home service identity (the MSP that registered the patient,
 * with hie.role=service) may grant or revoke. One key per (patient, grantee, consent), so two Consents never
 * overwrite each other. Deterministic: times come from the proposal, JSON is serialised with sorted keys, and
 * every transaction sets exactly one event.
 */
import { Context, Contract, Info, Param, Returns, Transaction } from 'fabric-contract-api';
import { grantAllows, type DenyRule, type Period } from './grant-rules';
import {
  fromBytes,
  requireServiceCaller,
  stableStringify,
  toBytes,
  txMeta,
  txTimestampIso,
  type TxMeta,
} from './common';

export const PATIENT_OBJECT = 'patient';
export const GRANT_OBJECT = 'grant';
export const ACCESS_OBJECT = 'access';
/** Most access records one RecordAccess transaction may carry. */
export const MAX_ACCESS_RECORDS = 1000;

/** A pseudonym: random id, URL-safe, never a name or a resource id (the services enforce the randomness). */
const PSEUDONYM = /^[A-Za-z0-9_-]{8,128}$/;
const RESOURCE_TYPE = /^[A-Z][A-Za-z]{1,63}$/;
const INSTANT = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$/;
const INTERACTION = /^[a-z][a-z0-9$-]{0,39}$/;

export interface PatientRecord extends TxMeta {
  docType: 'patient';
  patient: string;
  /** The MSP of the service that registered the patient: the only one that may grant or revoke for them. */
  homeMsp: string;
}

export type { DenyRule, Period } from './grant-rules';

export interface GrantRecord {
  docType: 'grant';
  patient: string;
  grantee: string;
  consent: string;
  /** Resource types opened; empty = all. */
  classes: string[];
  period?: Period;
  deny: DenyRule[];
  status: 'active' | 'revoked';
  /** Pseudonym of the participant who gave the grant (the patient, an admin, or the system recording it in person). */
  grantedBy: string;
  grantedInPerson: boolean;
  grantedTxId: string;
  grantedAt: string;
  mspId: string;
  revokedBy?: string;
  revokedInPerson?: boolean;
  revokedTxId?: string;
  revokedAt?: string;
}

export interface AccessRecord {
  docType: 'access';
  patient: string;
  /** Pseudonym of the participant who accessed (or tried to). */
  accessor: string;
  interaction: string;
  resourceType?: string;
  outcome: 'allowed' | 'refused';
  /** When the service decided (its clock), ISO 8601: the last decision of an aggregate. */
  at: string;
  /** An aggregate of identical decisions: the first one's time, and how many (1 when single). */
  from?: string;
  count: number;
  /** Which service recorded it, and in which transaction. */
  mspId: string;
  txId: string;
}

export interface CheckResult {
  allowed: boolean;
  /** The consents whose grant allows the access. */
  consents: string[];
}

@Info({ title: 'ConsentContract', description: 'Patient consent grants and access records, by pseudonym' })
export class ConsentContract extends Contract {
  constructor() {
    super('consent');
  }

  /** Registers a patient pseudonym; the calling service's MSP becomes the patient's home. Idempotent for the home MSP. */
  @Transaction()
  @Param('patient', 'string', 'patient pseudonym')
  @Returns('string')
  public async RegisterPatient(ctx: Context, patient: string): Promise<string> {
    requireServiceCaller(ctx);
    requirePseudonym('patient', patient);
    const key = ctx.stub.createCompositeKey(PATIENT_OBJECT, [patient]);
    const existing = await ctx.stub.getState(key);
    if (existing.length > 0) {
      const record = JSON.parse(fromBytes(existing)) as PatientRecord;
      if (record.homeMsp !== ctx.clientIdentity.getMSPID()) {
        throw new Error(`patient ${patient} is already registered by another organisation`);
      }
      ctx.stub.setEvent('RegisterPatient', existing);
      return fromBytes(existing);
    }
    const meta = txMeta(ctx);
    const record: PatientRecord = { docType: 'patient', patient, homeMsp: meta.mspId, ...meta };
    const json = stableStringify(record);
    await ctx.stub.putState(key, toBytes(json));
    ctx.stub.setEvent('RegisterPatient', toBytes(json));
    return json;
  }

  /**
   * Grants (or replaces) access for one grantee under one consent. Argument: JSON
   * `{patient, grantee, consent, classes?, period?, deny?, actor, inPerson}`.
   */
  @Transaction()
  @Param('grant', 'string', 'grant JSON')
  @Returns('string')
  public async GrantAccess(ctx: Context, grant: string): Promise<string> {
    requireServiceCaller(ctx);
    const input = parseObject('grant', grant);
    const patient = requirePseudonym('patient', input.patient);
    const grantee = requirePseudonym('grantee', input.grantee);
    const consent = requirePseudonym('consent', input.consent);
    const actor = requirePseudonym('actor', input.actor);
    const inPerson = requireBoolean('inPerson', input.inPerson);
    const classes = requireClasses('classes', input.classes);
    const period = input.period === undefined ? undefined : requirePeriod('period', input.period);
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
    await requireHome(ctx, patient);

    const meta = txMeta(ctx);
    const record: GrantRecord = {
      docType: 'grant',
      patient,
      grantee,
      consent,
      classes,
      period,
      deny,
      status: 'active',
      grantedBy: actor,
      grantedInPerson: inPerson,
      grantedTxId: meta.txId,
      grantedAt: meta.timestamp,
      mspId: meta.mspId,
    };
    const json = stableStringify(record);
    await ctx.stub.putState(
      ctx.stub.createCompositeKey(GRANT_OBJECT, [patient, grantee, consent]),
      toBytes(json),
    );
    ctx.stub.setEvent('GrantAccess', toBytes(json));
    return json;
  }

  /** Revokes one grant. Argument: JSON `{patient, grantee, consent, actor, inPerson}`. Revoking a revoked grant is a no-op. */
  @Transaction()
  @Param('revocation', 'string', 'revocation JSON')
  @Returns('string')
  public async RevokeAccess(ctx: Context, revocation: string): Promise<string> {
    requireServiceCaller(ctx);
    const input = parseObject('revocation', revocation);
    const patient = requirePseudonym('patient', input.patient);
    const grantee = requirePseudonym('grantee', input.grantee);
    const consent = requirePseudonym('consent', input.consent);
    const actor = requirePseudonym('actor', input.actor);
    const inPerson = requireBoolean('inPerson', input.inPerson);
    await requireHome(ctx, patient);
    const key = ctx.stub.createCompositeKey(GRANT_OBJECT, [patient, grantee, consent]);
    const bytes = await ctx.stub.getState(key);
    if (bytes.length === 0)
      throw new Error(`no grant of patient ${patient} to ${grantee} under consent ${consent}`);
    const record = JSON.parse(fromBytes(bytes)) as GrantRecord;
    if (record.status === 'revoked') {
      ctx.stub.setEvent('RevokeAccess', bytes);
      return fromBytes(bytes);
    }
    const meta = txMeta(ctx);
    const revoked: GrantRecord = {
      ...record,
      status: 'revoked',
      revokedBy: actor,
      revokedInPerson: inPerson,
      revokedTxId: meta.txId,
      revokedAt: meta.timestamp,
    };
    const json = stableStringify(revoked);
    await ctx.stub.putState(key, toBytes(json));
    ctx.stub.setEvent('RevokeAccess', toBytes(json));
    return json;
  }

  /** May `grantee` read `resourceType` of `patient` at instant `at` (the proposal time when empty)? */
  @Transaction(false)
  @Param('patient', 'string', 'patient pseudonym')
  @Param('grantee', 'string', 'grantee pseudonym')
  @Param('resourceType', 'string', 'FHIR resource type')
  @Param('at', 'string', 'ISO 8601 instant, or empty for now')
  @Returns('string')
  public async CheckAccess(
    ctx: Context,
    patient: string,
    grantee: string,
    resourceType: string,
    at: string,
  ): Promise<string> {
    requirePseudonym('patient', patient);
    requirePseudonym('grantee', grantee);
    if (!RESOURCE_TYPE.test(resourceType)) throw new Error('invalid argument resourceType');
    const instant = at === '' ? txTimestampIso(ctx) : requireInstant('at', at);
    const consents: string[] = [];
    for (const grant of await grantsOf(ctx, [patient, grantee])) {
      if (grantAllows(grant, resourceType, Date.parse(instant))) consents.push(grant.consent);
    }
    const result: CheckResult = { allowed: consents.length > 0, consents };
    return stableStringify(result);
  }

  /** Every grant (active and revoked) of a patient, in key order (grantee, consent). */
  @Transaction(false)
  @Param('patient', 'string', 'patient pseudonym')
  @Returns('string')
  public async ListGrants(ctx: Context, patient: string): Promise<string> {
    requirePseudonym('patient', patient);
    return stableStringify(await grantsOf(ctx, [patient]));
  }

  /** The patient record (home MSP), or `null`. */
  @Transaction(false)
  @Param('patient', 'string', 'patient pseudonym')
  @Returns('string')
  public async ReadPatient(ctx: Context, patient: string): Promise<string> {
    requirePseudonym('patient', patient);
    const bytes = await ctx.stub.getState(ctx.stub.createCompositeKey(PATIENT_OBJECT, [patient]));
    return bytes.length === 0 ? 'null' : fromBytes(bytes);
  }

  /**
   * Records a batch of access decisions made by the calling service. Argument: JSON array of
   * `{patient, accessor, interaction, resourceType?, outcome, at}` (at most MAX_ACCESS_RECORDS).
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
    for (let index = 0; index < parsed.length; index++) {
      const item = parsed[index] as Record<string, unknown>;
      if (item === null || typeof item !== 'object' || Array.isArray(item))
        throw new Error(`invalid argument records[${index}]`);
      const record: AccessRecord = {
        docType: 'access',
        patient: requirePseudonym(`records[${index}].patient`, item.patient),
        accessor: requirePseudonym(`records[${index}].accessor`, item.accessor),
        interaction: requireMatch(`records[${index}].interaction`, item.interaction, INTERACTION),
        outcome:
          item.outcome === 'allowed' || item.outcome === 'refused'
            ? item.outcome
            : fail(`records[${index}].outcome`),
        at: requireInstant(`records[${index}].at`, item.at),
        count: item.count === undefined ? 1 : requireCount(`records[${index}].count`, item.count),
        mspId: meta.mspId,
        txId: meta.txId,
      };
      if (item.from !== undefined) record.from = requireInstant(`records[${index}].from`, item.from);
      if (item.resourceType !== undefined)
        record.resourceType = requireMatch(
          `records[${index}].resourceType`,
          item.resourceType,
          RESOURCE_TYPE,
        );
      const key = ctx.stub.createCompositeKey(ACCESS_OBJECT, [
        record.patient,
        meta.txId,
        String(index).padStart(4, '0'),
      ]);
      await ctx.stub.putState(key, toBytes(stableStringify(record)));
    }
    const summary = stableStringify({ count: parsed.length, mspId: meta.mspId, txId: meta.txId });
    ctx.stub.setEvent('RecordAccess', toBytes(summary));
    return summary;
  }

  /** The access records of a patient, in key order (transaction, position). */
  @Transaction(false)
  @Param('patient', 'string', 'patient pseudonym')
  @Returns('string')
  public async ListAccess(ctx: Context, patient: string): Promise<string> {
    requirePseudonym('patient', patient);
    const out: AccessRecord[] = [];
    const iterator = await ctx.stub.getStateByPartialCompositeKey(ACCESS_OBJECT, [patient]);
    try {
      for (let next = await iterator.next(); !next.done; next = await iterator.next()) {
        out.push(JSON.parse(fromBytes(next.value.value)) as AccessRecord);
      }
    } finally {
      await iterator.close();
    }
    return stableStringify(out);
  }
}

async function grantsOf(ctx: Context, partialKey: string[]): Promise<GrantRecord[]> {
  const out: GrantRecord[] = [];
  const iterator = await ctx.stub.getStateByPartialCompositeKey(GRANT_OBJECT, partialKey);
  try {
    for (let next = await iterator.next(); !next.done; next = await iterator.next()) {
      out.push(JSON.parse(fromBytes(next.value.value)) as GrantRecord);
    }
  } finally {
    await iterator.close();
  }
  return out;
}

async function requireHome(ctx: Context, patient: string): Promise<PatientRecord> {
  const bytes = await ctx.stub.getState(ctx.stub.createCompositeKey(PATIENT_OBJECT, [patient]));
  if (bytes.length === 0) throw new Error(`patient ${patient} is not registered`);
  const record = JSON.parse(fromBytes(bytes)) as PatientRecord;
  const caller = ctx.clientIdentity.getMSPID();
  if (record.homeMsp !== caller) {
    throw new Error(
      `access denied: only the home service of patient ${patient} may grant or revoke (caller ${caller})`,
    );
  }
  return record;
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

function requireCount(name: string, value: unknown): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1 || value > 1_000_000_000) fail(name);
  return value;
}

function requireBoolean(name: string, value: unknown): boolean {
  if (typeof value !== 'boolean') fail(name);
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
