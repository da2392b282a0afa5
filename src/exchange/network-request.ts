/**
 * What every network operation of the responding side does first (docs/exchange.md, "Pull: the responding side"):
 * the caller must be another member's service with a network token (role `network`); the consent cache must follow
 * the ledger closely enough that a revocation's block counts (`--network-max-lag-seconds`); the parameters come
 * from a Parameters body only (the network patient id is a secret of the services: never in a URL, which reaches
 * access logs).
 */
import type { ConsentService } from '../consent/consent-service.js';
import type { NetworkCaller } from '../fhir/interactions/access-policy.js';
import type { FhirContext, FhirRequest } from '../fhir/interactions/types.js';
import { readOperationInput } from '../fhir/operations/terminology.js';
import { fhirError } from '../fhir/outcome.js';

/** A network patient id as the home makes them (32 random bytes, base64url), with room for other encodings. */
const NPID = /^[A-Za-z0-9_-]{16,128}$/;
/** Query parameters that change only the answer's format, not what is asked. */
const FORMAT_PARAMETERS = new Set(['_format', '_pretty']);

/** The network caller of the request; anything but a network token is refused (its policy authorises the name). */
export function networkCallerOf(context: FhirContext, operation: string): NetworkCaller {
  context.access.authorize(operation);
  const caller = context.access.caller;
  if (caller.role !== 'network' || caller.network === undefined)
    throw fhirError(
      'access-denied',
      `$${operation} is called by another member's service, with a network token from /auth/token`,
    );
  return caller.network;
}

/**
 * Refuses (503 `ledger-behind`, Retry-After) while the consent event stream is more than `maxLagSeconds` behind
 * the ledger or stopped; 503 `ledger-unavailable` while the ledger cannot be read or disagrees with this service.
 */
export async function refuseWhileBehind(
  consent: Pick<ConsentService, 'secondsBehind' | 'ledgerMismatch'>,
  maxLagSeconds: number,
): Promise<void> {
  let behind: number;
  try {
    behind = await consent.secondsBehind();
  } catch {
    throw fhirError('ledger-unavailable', 'The ledger cannot be read now; retry later', {
      headers: { 'retry-after': '5' },
    });
  }
  if (consent.ledgerMismatch !== undefined)
    throw fhirError('ledger-unavailable', 'This service does not agree with the ledger now; retry later', {
      headers: { 'retry-after': '30' },
    });
  if (behind > maxLagSeconds)
    throw fhirError(
      'ledger-behind',
      behind === Infinity
        ? "This member's consent event stream stopped: no network request is served until it follows the ledger again"
        : `This member's consent cache is ${Math.floor(behind)} s behind the ledger (at most ${maxLagSeconds} s): retry shortly`,
      { headers: { 'retry-after': '5' } },
    );
}

/** The operation's parameters (name -> values as text), from a Parameters body only; unknown names refused. */
export function networkParameters(
  request: FhirRequest,
  accepted: ReadonlySet<string>,
): Map<string, string[]> {
  for (const name of Object.keys(request.query))
    if (!FORMAT_PARAMETERS.has(name))
      throw fhirError(
        'parameter-invalid',
        `$${request.operation} takes its parameters in a Parameters body, never in the URL (${name})`,
        { expression: name },
      );
  if (request.body === undefined || request.body.trim() === '')
    throw fhirError('parameter-missing', `$${request.operation} needs a Parameters body`);
  const input = readOperationInput(request);
  if (input.values.has('__resource'))
    throw fhirError('body-not-resource', 'The body must be a Parameters resource');
  for (const name of [...input.strings.keys(), ...input.values.keys()])
    if (!accepted.has(name))
      throw fhirError(
        'parameter-invalid',
        `$${request.operation} does not take the parameter ${name} (it takes ${[...accepted].join(', ')})`,
        { expression: name },
      );
  for (const name of input.values.keys())
    throw fhirError('parameter-invalid', `${name} must be a primitive value (valueString...)`, {
      expression: name,
    });
  return input.strings;
}

/** The one value of a parameter (several: 400), or undefined. */
export function single(parameters: Map<string, string[]>, name: string): string | undefined {
  const values = parameters.get(name);
  if (values === undefined) return undefined;
  if (values.length > 1)
    throw fhirError('parameter-invalid', `${name} is given more than once`, { expression: name });
  return values[0];
}

/** The `patient` parameter: a network patient id (required, well-formed). */
export function npidParameter(parameters: Map<string, string[]>, operation: string): string {
  const npid = single(parameters, 'patient');
  if (npid === undefined || npid === '')
    throw fhirError(
      'parameter-missing',
      `$${operation} needs the parameter patient (the network patient id)`,
      {
        expression: 'patient',
      },
    );
  if (!NPID.test(npid))
    throw fhirError('parameter-invalid', 'patient must be a network patient id (base64url)', {
      expression: 'patient',
    });
  return npid;
}
