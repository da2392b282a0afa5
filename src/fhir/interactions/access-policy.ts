/**
 * The one access check every data path goes through (read, vread, history, search and what it includes,
 * batch/transaction entries, operations, export). Interactions never decide visibility themselves: they ask
 * the caller's AccessPolicy. A resource the caller may not see is treated as absent (404, left out of results).
 */
import type { StoredVersion } from '../store/resource-store.js';
import type { ReadScope } from '../store/search-query.js';

export interface Caller {
  /** Pseudonymous participant id (never a name), or 'anonymous' / 'system' for internal work. */
  participant: string;
  role: 'patient' | 'clinician' | 'lab' | 'system' | 'admin' | 'service' | 'open' | 'network';
  /** The organisation the caller acts for, e.g. `Organization/abc`: the custodian of what it writes. */
  organization?: string;
  /** The FHIR resource the participant is linked to (`Patient/1`, `Practitioner/2`...). */
  fhirUser?: string;
  scopes: string[];
  /** Role `network`: another member's service, through a network token (src/exchange/network-tokens.ts). */
  network?: NetworkCaller;
}

/**
 * Who calls through a network token: the calling member and its acting participant. The custodian's network
 * operations decide with this and the grants on the ledger, never with a local role.
 */
export interface NetworkCaller {
  /** The calling member's MSP id. */
  member: string;
  /** The acting participant's pseudonym (`hl7-b2b.subject_id`). */
  actor: string;
  /** The role the calling member says its actor has (`hl7-b2b.subject_role`); informative only. */
  actorRole: string;
  /** PurposeOfUse codes, each allowed by this service. */
  purposes: readonly string[];
  /** Grant ids the calling member relies on (`hl7-b2b.consent_reference`). */
  consentReferences: readonly string[];
  /** Expiry of the token, epoch ms. */
  expiresAt: number;
}

export interface AccessPolicy {
  readonly caller: Caller;
  /** Throws FhirError (401/403) when the caller may not perform this interaction on this type at all (scopes, role). */
  authorize(interaction: string, resourceType?: string): void;
  /** May the caller see this stored version? (Consent, custodian rule, compartments.) */
  canRead(version: StoredVersion): boolean;
  /**
   * The same decision as canRead, not recorded in the audit: for counting what the caller may see (history totals)
   * without counting every version counted as "shown". Absent: everything is visible (OpenAccess).
   */
  sees?(version: StoredVersion): boolean;
  /**
   * What canRead admits of one resource type, as data a store can put inside its query, so that rows the caller
   * may not see are never visited (src/fhir/store/sqlite/sqlite-search.ts). It must admit at least every version
   * canRead admits (the store still calls canRead on each row it returns, so a wider scope costs time, never
   * access); test/access/read-scope.test.ts checks it admits exactly canRead's set. Absent: no restriction.
   */
  readScope?(resourceType: string): ReadScope;
  /** Seals a paging cursor to this caller (history `_cursor`): opaque, and useless to any other caller. */
  readonly cursors?: CursorSeal;
  /**
   * May the caller write this resource (create/update/patch/delete)? `existing` is the current version, if any;
   * `id` the target's id. Throws the 404 of an unknown id for a target the caller may not see or (update) create.
   */
  canWrite(
    resourceType: string,
    existing: StoredVersion | undefined,
    patients: string[],
    id?: string,
  ): boolean;
  /** Records the decision (AuditEvent + ledger access record), off the request's critical path. */
  audit?(event: {
    interaction: string;
    resourceType?: string;
    id?: string;
    allowed: boolean;
    patients?: readonly string[];
    /** The custodian of the record decided on (StoredVersion.custodian), if any: the audit is per custodian. */
    custodian?: string;
  }): void;
}

/** Seals and opens paging cursors for one caller (src/fhir/interactions/cursor-seal.ts). */
export interface CursorSeal {
  seal(cursor: string): string;
  /** The cursor, or undefined when it was not sealed by this service for this caller (or was altered). */
  open(sealed: string): string | undefined;
}

/** Everyone may do everything: used until authentication is configured, and for internal jobs. */
export class OpenAccess implements AccessPolicy {
  constructor(readonly caller: Caller = { participant: 'anonymous', role: 'open', scopes: ['system/*.*'] }) {}
  authorize(): void {}
  canRead(): boolean {
    return true;
  }
  canWrite(): boolean {
    return true;
  }
}
