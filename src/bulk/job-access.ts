/**
 * What a bulk job needs of access control, handed in by src/app (bulk imports no access code): a job runs after its
 * kick-off request has ended, and again after a restart, so the caller is kept (as data) and a policy is made for
 * it whenever the job works.
 */
import type { AccessPolicy, Caller } from '../fhir/interactions/access-policy.js';

/** The kick-off's caller as a job keeps it (JSON). */
export interface JobCaller {
  caller: Caller;
  /** The recorded reason for access (X-Access-Reason) of the kick-off, if any. */
  reason?: string;
}

export interface JobAccess {
  /** What to keep of the kick-off request's caller. */
  snapshot(policy: AccessPolicy): JobCaller;
  /** A policy deciding as that caller, now (grants as they are now). */
  policyFor(saved: JobCaller): AccessPolicy;
  /**
   * Records what a job disclosed through `policy` (the access audit: AuditEvents per patient and custodian, the
   * ledger's access records), as the interaction `$export` on `path`.
   */
  recordDisclosure?(saved: JobCaller, policy: AccessPolicy, path: string): void;
}
