/**
 * The access policy of an authenticated caller: scopes and role rules (authorize), visibility (canRead: custodian
 * rule, patient compartments, consent grants from the ledger cache), writes (canWrite), and the audit of every
 * decision. One instance per request (src/access/auth-routes.ts builds it), so every path that reaches the
 * store through a FhirContext goes through it.
 *
 * Rules (docs/access.md):
 * - Resources outside every patient compartment (Practitioner, Organization, conformance...) are readable by
 *   every authenticated participant and written by systems and admins.
 * - Patient-compartment resources: the custodian organisation (its system, clinicians, labs) reads and writes
 *   what it holds; a patient reads their whole compartment; others read only under a live grant of every patient
 *   the resource belongs to. Admins read clinical data only with a recorded reason (X-Access-Reason header).
 * - Whatever a caller may not see is absent (404), for writes too.
 */
import type { AccessPolicy, Caller, CursorSeal } from '../fhir/interactions/access-policy.js';
import type { ReadScope } from '../fhir/store/search-query.js';
import { CallerCursorSeal, processCursorKey } from '../fhir/interactions/cursor-seal.js';
import { LAB_WRITABLE_TYPES, ScopeSet, type Permission } from './scopes.js';
import type { StoredVersion } from '../fhir/store/resource-store.js';
import { FhirError, fhirError } from '../fhir/outcome.js';
import { touch, type AuditRecorder, type Touched } from './access-audit.js';

/** The one answer for a write to an id the caller may not see or that does not exist (docs/access.md). */
export function notKnown(resourceType: string, id: string | undefined): FhirError {
  return fhirError('resource-not-found', `${resourceType}/${id ?? ''} is not known`);
}

/** The consent decisions the policy needs (src/consent/consent-service.ts ConsentService implements it). */
export interface ConsentDecisions {
  allows(patient: string, grantees: readonly string[], resourceType: string): boolean;
  /**
   * Every patient (`Patient/x`) for whom `allows(patient, grantees, resourceType)` holds now, or undefined when
   * this source cannot list them (then searches are not narrowed in the query; canRead still decides).
   */
  patientsAllowing?(grantees: readonly string[], resourceType: string): readonly string[] | undefined;
}

export interface AccessControlOptions {
  /** Resource types of the patient compartment (CompartmentDefinition/patient, plus Patient). */
  compartmentTypes: ReadonlySet<string>;
  /** Grants; absent when no ledger is configured (then nothing is granted: custodian and patient rules only). */
  consent?: ConsentDecisions;
  audit?: AuditRecorder;
  /**
   * The organisation this service keeps records for (config `--organization`): its systems, and admins, choose
   * the ids of new resources (update-as-create). Unset: only admins do.
   */
  organization?: string;
  /** Key that seals paging cursors to their caller (cursor-seal.ts cursorKeyOf); absent: a key of this process. */
  cursorKey?: Buffer;
}

const PERMISSION: Record<string, Permission | undefined> = {
  read: 'r',
  vread: 'r',
  'history-instance': 'r',
  'history-type': 'r',
  'history-system': 'r',
  'search-type': 's',
  'search-system': 's',
  create: 'c',
  update: 'u',
  patch: 'u',
  delete: 'd',
};
const NO_PATIENTS: readonly string[] = Object.freeze([]);
const SYSTEM_LEVEL = new Set(['history-system', 'search-system']);
const LAB_WRITABLE = new Set<string>(LAB_WRITABLE_TYPES);

/** Compiled scopes and grantee references per caller object (the token service hands out one frozen Caller per token). */
const compiledCallers = new WeakMap<Caller, { scopes: ScopeSet; grantees: readonly string[] }>();

function compileCaller(caller: Caller): { scopes: ScopeSet; grantees: readonly string[] } {
  // Who a grant can name for this caller: the practitioner (or lab) and their organisation.
  const grantees: string[] = [];
  if (caller.role === 'clinician' || caller.role === 'lab' || caller.role === 'system') {
    if (caller.fhirUser && caller.fhirUser !== caller.organization) grantees.push(caller.fhirUser);
    if (caller.organization) grantees.push(caller.organization);
  }
  return { scopes: new ScopeSet(caller.scopes), grantees: Object.freeze(grantees) };
}

/**
 * Counts a decision on a record for the audit: in its patient's AuditEvent when it has one patient; a record of
 * several patients none of them may read alone (the patient rule), so an event they read would tell them it exists:
 * it is counted under no patient (its custodian's event only).
 */
function touchRecord(
  touched: Touched,
  patients: readonly string[],
  custodian: string | undefined,
  allowed: boolean,
  resourceType: string | undefined,
): void {
  touch(touched, patients.length === 1 ? patients[0] : '', custodian, allowed, resourceType);
}

export interface RequestFacts {
  /** A recorded reason for access (X-Access-Reason), required for admins' clinical reads and Consent writes. */
  reason?: string;
}

export class AccessControl {
  constructor(readonly options: AccessControlOptions) {}

  policyFor(caller: Caller, facts: RequestFacts = {}): CallerAccessPolicy {
    return new CallerAccessPolicy(caller, this.options, facts);
  }
}

export class CallerAccessPolicy implements AccessPolicy {
  private readonly scopes: ScopeSet;
  private readonly grantees: readonly string[];
  /** The last interaction authorised: tells update-as-create from create in canWrite. */
  interaction?: string;
  /** What this request touched (per patient and custodian), for one audit record per request. */
  readonly touched: Touched = new Map();
  readonly refusals: { interaction: string; resourceType?: string; id?: string }[] = [];

  constructor(
    readonly caller: Caller,
    private readonly options: AccessControlOptions,
    readonly facts: RequestFacts = {},
  ) {
    let compiled = compiledCallers.get(caller);
    if (!compiled) compiledCallers.set(caller, (compiled = compileCaller(caller)));
    this.scopes = compiled.scopes;
    this.grantees = compiled.grantees;
  }

  private get isAdminWithReason(): boolean {
    return this.caller.role === 'admin' && (this.facts.reason ?? '').trim() !== '';
  }

  authorize(interaction: string, resourceType?: string): void {
    this.interaction = interaction;
    const permission = PERMISSION[interaction];
    if (permission === undefined) return; // batch, transaction, capabilities, operations: their parts are checked
    const allowed =
      resourceType && !SYSTEM_LEVEL.has(interaction)
        ? this.scopes.allows(resourceType, permission)
        : this.scopes.allowsAny(permission);
    if (!allowed) {
      this.refusals.push({ interaction, resourceType });
      throw fhirError(
        'scope-insufficient',
        `The granted scopes (${this.caller.scopes.join(' ')}) do not allow ${interaction}${resourceType ? ` on ${resourceType}` : ''}`,
      );
    }
    if (
      this.caller.role === 'admin' &&
      (permission === 'r' || permission === 's') &&
      resourceType &&
      this.options.compartmentTypes.has(resourceType) &&
      !this.isAdminWithReason
    ) {
      this.refusals.push({ interaction, resourceType });
      throw fhirError(
        'access-reason-required',
        'Admins read clinical data only with a recorded reason (send X-Access-Reason)',
      );
    }
  }

  canRead(version: StoredVersion): boolean {
    const allowed = this.decide(version);
    const patients = version.patients;
    if (patients && patients.length > 0)
      touchRecord(this.touched, patients, version.custodian, allowed, version.resourceType);
    return allowed;
  }

  sees(version: StoredVersion): boolean {
    return this.decide(version);
  }

  private sealer?: CursorSeal;

  get cursors(): CursorSeal {
    return (this.sealer ??= new CallerCursorSeal(this.options.cursorKey ?? processCursorKey(), this.caller));
  }

  /**
   * decide() as data for a store's query (AccessPolicy.readScope). Keep the two in step: each clause here is a
   * branch of decide. A per-type rule added to decide (AuditEvents readable only by their patient and custodian,
   * say) must narrow this scope the same way, or the scope is merely wider than canRead: correct answers (the
   * store checks canRead on every row), hidden rows visited again. test/access/read-scope.test.ts compares both.
   */
  readScope(resourceType: string): ReadScope {
    const caller = this.caller;
    const withoutPatients = !this.options.compartmentTypes.has(resourceType);
    if (caller.role === 'open') return { unrestricted: true, withoutPatients: true, patients: NO_PATIENTS };
    if (caller.role === 'admin') {
      if (!this.isAdminWithReason) return { unrestricted: false, withoutPatients, patients: NO_PATIENTS };
      if (caller.organization === undefined)
        return { unrestricted: true, withoutPatients: true, patients: NO_PATIENTS };
      return { unrestricted: false, withoutPatients, custodian: caller.organization, patients: NO_PATIENTS };
    }
    if (caller.role === 'patient') {
      const patients = caller.fhirUser !== undefined ? [caller.fhirUser] : NO_PATIENTS;
      return { unrestricted: false, withoutPatients, patients };
    }
    let patients = NO_PATIENTS;
    const consent = this.options.consent;
    // As in decide: no grant opens an AuditEvent (its custodian's only, for these roles).
    if (consent && this.grantees.length > 0 && resourceType !== 'AuditEvent') {
      const allowing = consent.patientsAllowing?.(this.grantees, resourceType);
      // A consent source that cannot list its patients: no narrowing in the query.
      if (allowing === undefined) return { unrestricted: true, withoutPatients: true, patients: NO_PATIENTS };
      patients = allowing;
    }
    const scope: ReadScope = { unrestricted: false, withoutPatients, patients };
    if (caller.organization !== undefined) scope.custodian = caller.organization;
    return scope;
  }

  private decide(version: StoredVersion): boolean {
    const caller = this.caller;
    if (caller.role === 'open') return true;
    const patients = version.patients ?? [];
    const inCompartment = patients.length > 0 || this.options.compartmentTypes.has(version.resourceType);
    if (!inCompartment) return true;
    if (caller.role === 'admin') {
      if (!this.isAdminWithReason) return false;
      return caller.organization === undefined || version.custodian === caller.organization;
    }
    if (caller.role === 'patient') {
      return (
        patients.length > 0 && caller.fhirUser !== undefined && patients.every((p) => p === caller.fhirUser)
      );
    }
    if (caller.organization !== undefined && version.custodian === caller.organization) return true;
    // An AuditEvent is its patient's and its custodian's (the disclosure it records): no grant opens it.
    if (version.resourceType === 'AuditEvent') return false;
    if (patients.length === 0) return false;
    const consent = this.options.consent;
    if (!consent || this.grantees.length === 0) return false;
    // Every patient the resource belongs to must have opened it (fail closed for shared resources).
    for (const patient of patients)
      if (!consent.allows(patient, this.grantees, version.resourceType)) return false;
    return true;
  }

  canWrite(
    resourceType: string,
    existing: StoredVersion | undefined,
    patients: string[],
    id: string | undefined = existing?.id,
  ): boolean {
    const caller = this.caller;
    if (caller.role === 'open') return true;
    const present = existing !== undefined && !existing.deleted;
    // Writes to what the caller may not see answer exactly as for an id never used (same status and text). For a
    // caller who chooses ids, that is the role rules' refusal when it may not create such a resource at all.
    if (existing && !this.decide(existing)) {
      if (
        this.interaction === 'update' &&
        this.choosesIds &&
        !this.canWrite(resourceType, undefined, patients, id)
      )
        return false;
      throw notKnown(resourceType, id);
    }
    // Choosing the id of a new resource (update-as-create) is for this service's own organisation: anyone else
    // could squat ids, and would learn from 201-versus-404 which ids are taken.
    if (!present && this.interaction === 'update' && !(existing ? this.revives : this.choosesIds))
      throw notKnown(resourceType, id);
    const inCompartment = patients.length > 0 || this.options.compartmentTypes.has(resourceType);
    if (!inCompartment) return caller.role === 'system' || caller.role === 'admin';

    if (resourceType === 'Consent') return this.canWriteConsent(patients);
    const ownRecord = !existing || existing.custodian === caller.organization;
    switch (caller.role) {
      case 'system':
        return ownRecord;
      case 'clinician':
        return resourceType !== 'Patient' && ownRecord;
      case 'lab':
        return LAB_WRITABLE.has(resourceType) && ownRecord;
      default:
        return false;
    }
  }

  /** Systems of this service's organisation, and admins (of it, or of none), choose the ids of new resources. */
  private get choosesIds(): boolean {
    const caller = this.caller;
    const home = this.options.organization;
    if (caller.role === 'system') return home !== undefined && caller.organization === home;
    if (caller.role === 'admin') return caller.organization === undefined || caller.organization === home;
    return false;
  }

  /** Reviving a deletion the caller can see (its id is known to it): systems and admins, as the role rules allow. */
  private get revives(): boolean {
    return this.caller.role === 'system' || this.caller.role === 'admin';
  }

  /** The patient; an admin with a recorded reason; a system of the home organisation recording a consent given in person. */
  private canWriteConsent(patients: string[]): boolean {
    const caller = this.caller;
    if (patients.length !== 1) return false;
    if (caller.role === 'patient') return caller.fhirUser === patients[0];
    if (caller.role === 'admin') return this.isAdminWithReason;
    // The chaincode refuses grants from any service but the patient's home.
    return caller.role === 'system';
  }

  /** Interactions report what they decided (search totals, write refusals); kept for the request's audit record. */
  audit(event: {
    interaction: string;
    resourceType?: string;
    id?: string;
    allowed: boolean;
    patients?: readonly string[];
    custodian?: string;
  }): void {
    if (!event.allowed)
      this.refusals.push({ interaction: event.interaction, resourceType: event.resourceType, id: event.id });
    if (event.patients && event.patients.length > 0)
      touchRecord(this.touched, event.patients, event.custodian, event.allowed, event.resourceType);
  }

  /** Was a Consent written by this caller given in person (a system recording it at the desk)? */
  get consentInPerson(): boolean {
    return this.caller.role === 'system';
  }
}
