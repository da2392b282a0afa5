/**
 * The rule a consent grant applies, one function shared by the chaincode (CheckGrant) and the service's consent
 * cache, so the two never disagree. Plain functions with no Fabric dependency: the service imports this file alone
 * (`hie-ledger-chaincode/dist/grant-rules.js`) without loading the contract runtime.
 */

export interface Period {
  start?: string;
  end?: string;
}

/** A nested deny provision: refuses these classes (all when empty) during this period (always when absent). */
export interface DenyRule {
  classes: string[];
  period?: Period;
}

/** What the rule reads of a grant: the ledger's GrantRecord has these fields (and more). */
export interface GrantTerms {
  status: 'active' | 'revoked';
  classes: string[];
  period?: Period;
  deny: DenyRule[];
  /** Purposes of use the grant opens (HL7 v3 PurposeOfUse codes); absent: treatment only (records before purposes). */
  purpose?: string[];
}

/** The purpose of use a grant opens when it names none, and the one this service's own users act under. */
export const DEFAULT_PURPOSE = 'TREAT';

/**
 * THE grant rule (the only one): does this grant allow reading `resourceType` at `atMs` for `purpose` (treatment
 * when not given)? Only an active grant allows; its purposes, classes and period permit, its deny rules (one level
 * deep) narrow, and deny wins.
 */
export function grantAllows(
  grant: GrantTerms,
  resourceType: string,
  atMs: number,
  purpose: string = DEFAULT_PURPOSE,
): boolean {
  if (grant.status !== 'active') return false;
  if (!(grant.purpose ?? [DEFAULT_PURPOSE]).includes(purpose)) return false;
  if (!inPeriod(grant.period, atMs)) return false;
  if (grant.classes.length > 0 && !grant.classes.includes(resourceType)) return false;
  for (const rule of grant.deny) {
    if ((rule.classes.length === 0 || rule.classes.includes(resourceType)) && inPeriod(rule.period, atMs))
      return false;
  }
  return true;
}

/** Periods' bounds in epoch ms, parsed once per period object (the service's cache asks on every read). */
const parsedPeriods = new WeakMap<Period, { start: number; end: number }>();

/** Start inclusive, end exclusive: access stops at the instant the period ends. */
function inPeriod(period: Period | undefined, atMs: number): boolean {
  if (!period) return true;
  let bounds = parsedPeriods.get(period);
  if (!bounds) {
    bounds = {
      start: period.start === undefined ? -Infinity : Date.parse(period.start),
      end: period.end === undefined ? Infinity : Date.parse(period.end),
    };
    parsedPeriods.set(period, bounds);
  }
  // NaN (an unparseable bound) compares false both ways, as Date.parse did here before: the bound is ignored.
  if (atMs < bounds.start) return false;
  if (atMs >= bounds.end) return false;
  return true;
}
