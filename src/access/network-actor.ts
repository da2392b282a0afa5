/**
 * `GET [base]/$network-actor` (docs/exchange.md, "Grants naming a member's participant"): who the caller is on the
 * exchange. A clinician tells a patient this handle; the patient's home names it in a Consent
 * (`provision.actor[].reference.identifier`, system NETWORK_PARTICIPANT_SYSTEM) to grant that clinician access
 * through this member. Answers Parameters { member: this service's MSP id, actor: the caller's pseudonym here,
 * handle: `<member>|<actor>` }.
 *
 * Open to every authenticated participant of this service; refused to anonymous and development (dev-open) callers,
 * who have no pseudonym, and to other members' services (a network token names a participant of another member).
 */
import type { Caller } from '../fhir/interactions/access-policy.js';
import type { OperationRegistration } from '../fhir/interactions/fhir-registry.js';
import type { FhirResource } from '../fhir/fhir-json.js';
import { fhirError } from '../fhir/outcome.js';
import { networkHandle, parseNetworkHandle } from '../consent/consent-resource.js';

/** The roles of this service's own participants (each enrolled with a pseudonym). */
const PARTICIPANT_ROLES: ReadonlySet<Caller['role']> = new Set([
  'patient',
  'clinician',
  'lab',
  'system',
  'admin',
]);

/** The `$network-actor` operation of a member whose MSP id on the ledger is `mspId`. */
export function networkActorOperation(mspId: string): OperationRegistration {
  return {
    name: 'network-actor',
    levels: ['system'],
    // It changes nothing: GET and POST both, as for every operation that affects no state (operations.html).
    methods: ['GET', 'POST'],
    documentation:
      "Who the caller is on the exchange: member (this service's MSP id), actor (the caller's pseudonym here) and handle \"<member>|<actor>\", the name a patient's Consent gives this participant (identifier system https://hie-ledger.dev/fhir/NamingSystem/network-participant).",
    handler: (_request, context) => {
      const policy = context.access;
      // Unauthenticated: 401 as for any operation (the public-only policy refuses everything but capabilities).
      policy.authorize('operation');
      const caller = policy.caller;
      const participant = { mspId, pseudonym: caller.participant };
      // Only a participant enrolled here has a pseudonym a grant can name (never 'anonymous' nor dev-open's caller).
      if (!PARTICIPANT_ROLES.has(caller.role) || !parseNetworkHandle(networkHandle(participant)))
        throw fhirError(
          'access-denied',
          "$network-actor names an authenticated participant of this service: sign in with the participant's own token",
        );
      const body = {
        resourceType: 'Parameters',
        parameter: [
          { name: 'member', valueString: mspId },
          { name: 'actor', valueString: caller.participant },
          { name: 'handle', valueString: networkHandle(participant) },
        ],
      } as unknown as FhirResource;
      return Promise.resolve({ status: 200, headers: { 'cache-control': 'no-store' }, body });
    },
  };
}
