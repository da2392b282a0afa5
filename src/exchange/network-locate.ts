/**
 * `POST [base]/$network-locate` at a patient's home (docs/exchange.md, "Pull: the responding side"): another
 * member's service, acting for one of its participants, asks which grants it holds for a network patient and
 * which members hold the patient's records.
 *
 * In: Parameters { patient: valueString npid }. Out: Parameters with a `grant` (valueString grant id) per grant of
 * the home's patient naming exactly (caller's actor, caller's MSP) and live now for one of the caller's purposes,
 * and a `custodian` (parts `member`, `endpoint`) per active member that may hold records: the home itself and every
 * custodian the home issued a link token for (the locator may over-list, never under-list linked custodians).
 * Without such a grant (unknown npid, no grant, expired, revoked, other purpose, another member's actor) the answer
 * is the same Parameters with no parameter: hidden is absent. A locate that answers is recorded as an access record
 * on the ledger (interaction `network-locate`), in the patient's network-wide access log.
 */
import type { ConsentService } from '../consent/consent-service.js';
import type { NetworkIds } from '../consent/network-ids.js';
import type { FhirResource } from '../fhir/fhir-json.js';
import type { OperationRegistration } from '../fhir/interactions/fhir-registry.js';
import type { FhirResponse, InteractionHandler } from '../fhir/interactions/types.js';
import { searchDefinitions } from '../fhir/search/definitions.js';
import { liveFor } from './grant-check.js';
import type { MemberDirectory } from './member-directory.js';
import { networkCallerOf, networkParameters, npidParameter, refuseWhileBehind } from './network-request.js';
import type { PatientLinks } from './patient-links.js';

export interface NetworkLocateOptions {
  /** This member's MSP id. */
  mspId: string;
  members: Pick<MemberDirectory, 'member'>;
  consent?: ConsentService;
  /** The home's network patient ids (npid -> its Patient). */
  networkIds?: Pick<NetworkIds, 'referenceOfNpid'>;
  patientLinks: Pick<PatientLinks, 'custodiansOf'>;
  maxLagSeconds: number;
  now?: () => number;
}

const ACCEPTED = new Set(['patient']);

/** The answer when nothing may be told: the same for an unknown patient and for a patient without a grant. */
const NOTHING: FhirResponse = {
  status: 200,
  headers: { 'cache-control': 'no-store' },
  body: '{"resourceType":"Parameters"}',
};

/** The resource types a grant can open: the Patient and its compartment's. */
function compartmentTypes(): string[] {
  return ['Patient', ...searchDefinitions().patientCompartment.keys()];
}

export function networkLocateHandler(options: NetworkLocateOptions): InteractionHandler {
  const now = options.now ?? Date.now;
  const types = compartmentTypes();
  return async (request, context) => {
    const caller = networkCallerOf(context, 'network-locate');
    const npid = npidParameter(networkParameters(request, ACCEPTED), 'network-locate');
    const { consent } = options;
    if (!consent) return NOTHING;
    await refuseWhileBehind(consent, options.maxLagSeconds);
    const patient = options.networkIds?.referenceOfNpid(npid);
    if (patient === undefined) return NOTHING;
    const at = now();
    const grants = consent
      .networkGrantsOf(patient, caller.actor, caller.member)
      .filter((grant) => liveFor(grant, caller, types, at))
      .map((grant) => grant.grantId)
      .sort();
    if (grants.length === 0) return NOTHING;

    const parameter: Record<string, unknown>[] = grants.map((grantId) => ({
      name: 'grant',
      valueString: grantId,
    }));
    const custodians = [options.mspId, ...(await options.patientLinks.custodiansOf(npid))];
    for (const mspId of new Set(custodians)) {
      const entry = await options.members.member(mspId);
      if (!entry) continue;
      parameter.push({
        name: 'custodian',
        part: [
          { name: 'member', valueString: entry.mspId },
          { name: 'endpoint', valueUrl: entry.fhirBaseUrl },
        ],
      });
    }
    consent.recordAccess({
      patient,
      accessor: caller.actor,
      interaction: 'network-locate',
      outcome: 'allowed',
      at: new Date(at).toISOString(),
      grantId: grants[0],
      accessorMsp: caller.member,
      purpose: caller.purposes[0],
    });
    return {
      status: 200,
      headers: { 'cache-control': 'no-store' },
      body: { resourceType: 'Parameters', parameter } as unknown as FhirResource,
    };
  };
}

export function networkLocateOperation(options: NetworkLocateOptions): OperationRegistration {
  return {
    name: 'network-locate',
    levels: ['system'],
    methods: ['POST'],
    documentation:
      "At a patient's home, for another member's service (network token): the caller's live grants for a network patient and the members that may hold its records; nothing without a grant.",
    handler: networkLocateHandler(options),
  };
}
