/**
 * The access policy of another member's service calling with a network token (docs/exchange.md, "Network tokens
 * on /fhir"): it opens only the network operations, and no stored version through the local rules. Whatever role
 * the member claims for its actor, it never reaches custodian, system or admin rules: the network operations decide
 * with the grants on the ledger themselves (src/exchange/).
 */
import type { AccessPolicy, Caller, NetworkCaller } from '../fhir/interactions/access-policy.js';
import { fhirError } from '../fhir/outcome.js';

/** The operations a network token opens (their names, without `$`). */
export const NETWORK_OPERATIONS: ReadonlySet<string> = new Set([
  'network-locate',
  'network-records',
  'network-deliver',
]);

/** The refusal of anything else a network token is used for. */
export function networkScopeRefusal(): Error {
  return fhirError(
    'network-token-scope',
    'A network token opens only $network-locate, $network-records and $network-deliver',
  );
}

/** The Caller of a network token: role `network`, the member's actor as `<msp>|<pseudonym>`, no scopes. */
export function networkCallerOf(network: NetworkCaller): Caller {
  return { participant: `${network.member}|${network.actor}`, role: 'network', scopes: [], network };
}

export class NetworkAccessPolicy implements AccessPolicy {
  readonly caller: Caller;

  constructor(network: NetworkCaller) {
    this.caller = networkCallerOf(network);
  }

  /** Only a network operation, authorised by its own name (`authorize('network-records')`). */
  authorize(interaction: string): void {
    if (!NETWORK_OPERATIONS.has(interaction)) throw networkScopeRefusal();
  }

  canRead(): boolean {
    return false;
  }

  sees(): boolean {
    return false;
  }

  canWrite(): boolean {
    return false;
  }
}
