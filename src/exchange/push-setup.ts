/**
 * Wires push (docs/exchange.md "Push") into the exchange's operations (exchange-setup.ts): `$network-send` at the
 * sender, over the member directory, the patient's grants, this member's token client and the calls-out client;
 * `$network-deliver` at the recipient, over the directory, this peer's ledger and the patient links.
 */
import type { FhirRegistry } from '../fhir/interactions/fhir-registry.js';
import { fhirError } from '../fhir/outcome.js';
import type { Exchange, ExchangeDeps } from './exchange-setup.js';
import { memberDeliveryTransport, networkSendOperation, type DeliveryTransport } from './push-document.js';
import { networkDeliverOperation } from './push-delivery.js';

export function registerPushOperations(exchange: Exchange, registry: FhirRegistry, deps: ExchangeDeps): void {
  // The token client exists once `hie-ledger member register` has given this service its key.
  const transport: DeliveryTransport = {
    deliver(recipient, actor, body) {
      const tokens = exchange.tokenClient();
      if (!tokens)
        throw fhirError(
          'member-not-registered',
          'This service has no exchange service key: run `hie-ledger member register`',
        );
      return memberDeliveryTransport(tokens, exchange.settings.networkDeadlineMs).deliver(
        recipient,
        actor,
        body,
      );
    },
  };
  const consent = deps.consent;
  registry.registerOperation(
    networkSendOperation({
      mspId: exchange.mspId,
      members: exchange.members,
      journal: deps.journal,
      grants: consent,
      transport,
      recordAccess: consent && ((record) => consent.recordAccess(record)),
    }),
  );
  registry.registerOperation(
    networkDeliverOperation({
      members: exchange.members,
      ledger: deps.ledger,
      organization: deps.organization,
      localPatientsOf: (npid) => deps.patientLinks.localPatientsOf(npid),
      participantResource: async (pseudonym) => (await deps.participants?.byPseudonym(pseudonym))?.resource,
      callerOf: (access) => {
        const network = access.caller.role === 'network' ? access.caller.network : undefined;
        return network && { member: network.member, actor: network.actor };
      },
    }),
  );
}
