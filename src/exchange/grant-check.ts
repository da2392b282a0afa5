/**
 * The grant checks of the network operations (docs/exchange.md, "Pull: the responding side"): what a network caller
 * (a member's service acting for one of its participants) may be told or sent about a network patient.
 *
 * - At the home (`$network-locate`): the grants of the home's patient naming exactly (caller's actor, caller's MSP),
 *   from the consent cache (a withdrawal counts at once, before the ledger has it), live now for one of the caller's
 *   purposes and at least one resource type.
 * - At a custodian, the home too (`$network-records`): each grant id the caller relies on, read from this member's
 *   peer (`consent:ReadGrant`, committed state: a revocation counts from the block that reached this member), valid
 *   only when its patient tag is the npid's, it names exactly the caller's actor and MSP, its home is the patient's
 *   home, and it allows the type now for one of the caller's purposes. Types allowed = the union over valid grants.
 *
 * A grant never opens anything for a caller it does not name; a caller learns nothing from which check failed (the
 * operations answer every failure as "nothing").
 */
import { grantAllows } from '../consent/consent-resource.js';
import type { LedgerGrant } from '../consent/consent-service.js';
import { patientTag } from '../consent/network-ids.js';
import type { NetworkCaller } from '../fhir/interactions/access-policy.js';
import type { Ledger } from '../ledger/ledger.js';

/** Does the grant name exactly this caller (its actor's pseudonym at its own service, and its MSP)? */
export function namesCaller(grant: LedgerGrant, caller: NetworkCaller): boolean {
  return grant.grantee === caller.actor && grant.granteeMsp === caller.member;
}

/** Does the grant allow reading `resourceType` now for one of the caller's purposes? */
export function allowsFor(
  grant: LedgerGrant,
  resourceType: string,
  caller: NetworkCaller,
  atMs: number,
): boolean {
  for (const purpose of caller.purposes) if (grantAllows(grant, resourceType, atMs, purpose)) return true;
  return false;
}

/** Is the grant live now for the caller: naming it, and allowing at least one of `types` for one of its purposes? */
export function liveFor(
  grant: LedgerGrant,
  caller: NetworkCaller,
  types: Iterable<string>,
  atMs: number,
): boolean {
  if (!namesCaller(grant, caller) || grant.status !== 'active') return false;
  for (const type of types) if (allowsFor(grant, type, caller, atMs)) return true;
  return false;
}

/** What the grants the caller relies on open for one network patient. */
export interface GrantedTypes {
  /** Resource types allowed now (the union over the valid grants). */
  types: Set<string>;
  /** The grants that opened at least one type (for the disclosure's audit). */
  grantIds: string[];
}

/**
 * The types the caller's grants (`caller.consentReferences`) open now for the network patient `npid`, whose home
 * is `homeMsp`, among `types`. Each grant is read from this member's peer. `withdrawn` names grant ids this service
 * has revoked and the ledger not yet confirmed (at the home): never valid.
 */
export async function grantedTypes(
  ledger: Pick<Ledger, 'evaluate'>,
  npid: string,
  homeMsp: string,
  caller: NetworkCaller,
  types: Iterable<string>,
  atMs: number,
  withdrawn: ReadonlySet<string> = new Set(),
): Promise<GrantedTypes> {
  const allowed = new Set<string>();
  const grantIds: string[] = [];
  const candidates = [...types];
  for (const grantId of new Set(caller.consentReferences)) {
    if (withdrawn.has(grantId)) continue;
    const grant = JSON.parse(await ledger.evaluate('consent:ReadGrant', [grantId])) as LedgerGrant | null;
    if (!grant || grant.grantId !== grantId) continue;
    if (grant.patientTag !== patientTag(npid, 'grant', grantId)) continue;
    if (!namesCaller(grant, caller) || grant.homeMsp !== homeMsp) continue;
    let opened = false;
    for (const type of candidates) {
      if (allowsFor(grant, type, caller, atMs)) {
        allowed.add(type);
        opened = true;
      }
    }
    if (opened) grantIds.push(grantId);
  }
  return { types: allowed, grantIds };
}
