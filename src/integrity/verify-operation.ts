/**
 * $verify: prove a stored version against its ledger anchor (docs/integrity.md).
 *
 *   GET [base]/[type]/[id]/$verify                  the current version (a deletion is verified as its tombstone)
 *   GET [base]/[type]/[id]/_history/[vid]/$verify   that version
 *
 * Answers 200 with a Parameters resource whatever the outcome (`status` says it): anchored | pending | mismatch |
 * erased | unanchored | unverifiable, `verified` true only for a version proven against a root on the ledger.
 * The proof is given as repeated `proof` parameters, bottom up, each with parts `side` (code left|right: where
 * the sibling goes) and `hash` (hex); the same list as a JSON string in `proofJson`. With `salt`, `hash`,
 * `leafIndex`, `leafCount` and `root`, anyone holding the record can check it against the ledger without secrets.
 * Reading a version's proof is reading the version: the caller's access policy decides (404 when not visible).
 */
import type { IntegrityVerifier, VersionVerification } from './verification.js';
import { FhirError, fhirError } from '../fhir/outcome.js';
import { assertId, assertResourceType, visibleOr404 } from '../fhir/interactions/common.js';
import type { OperationRegistration } from '../fhir/interactions/fhir-registry.js';
import type { FhirResource } from '../fhir/fhir-json.js';
import type { InteractionHandler } from '../fhir/interactions/types.js';

type Parameter = { name: string; [value: string]: unknown };

/** The Parameters resource of a verification. */
export function verificationParameters(result: VersionVerification): FhirResource {
  const parameter: Parameter[] = [
    { name: 'reference', valueString: result.reference },
    { name: 'status', valueCode: result.status },
    { name: 'verified', valueBoolean: result.verified },
  ];
  const add = (name: string, key: string, value: unknown) => {
    if (value !== undefined) parameter.push({ name, [key]: value });
  };
  add('reason', 'valueString', result.reason);
  add('hash', 'valueString', result.hash);
  add('leafVersion', 'valueInteger', result.leafVersion);
  add('custodian', 'valueString', result.custodian);
  add('expectedHash', 'valueString', result.expectedHash);
  add('salt', 'valueString', result.salt);
  add('ledgerKey', 'valueString', result.ledgerKey);
  add('root', 'valueString', result.root);
  add('transactionId', 'valueString', result.transactionId);
  add('blockNumber', 'valueInteger', result.blockNumber);
  add('leafIndex', 'valueInteger', result.leafIndex);
  add('leafCount', 'valueInteger', result.leafCount);
  add('anchoredBy', 'valueString', result.anchoredBy);
  add('anchoredAt', 'valueInstant', result.anchoredAt);
  if (result.proof) {
    for (const step of result.proof) {
      parameter.push({
        name: 'proof',
        part: [
          { name: 'side', valueCode: step.side },
          { name: 'hash', valueString: step.hash },
        ],
      });
    }
    parameter.push({ name: 'proofJson', valueString: JSON.stringify(result.proof) });
  }
  return { resourceType: 'Parameters', parameter };
}

export function verifyHandler(verifier: IntegrityVerifier): InteractionHandler {
  return async (request, context) => {
    const resourceType = assertResourceType(context, request.resourceType);
    context.access.authorize('read', resourceType);
    const id = assertId(request.id);
    let version;
    if (request.versionId !== undefined) {
      if (!/^[1-9]\d{0,15}$/.test(request.versionId)) {
        throw fhirError('resource-not-found', `${resourceType}/${id} has no version '${request.versionId}'`);
      }
      const what = `${resourceType}/${id}/_history/${request.versionId}`;
      version = visibleOr404(
        context,
        await context.store.vread(resourceType, id, Number(request.versionId)),
        what,
      );
    } else {
      version = visibleOr404(context, await context.store.read(resourceType, id), `${resourceType}/${id}`);
    }
    let result: VersionVerification;
    try {
      result = await verifier.verifyVersion(version);
    } catch (err) {
      if (err instanceof FhirError) throw err;
      context.log.warn(
        { err: err instanceof Error ? err.message : String(err) },
        '$verify could not reach the ledger',
      );
      throw fhirError('ledger-unavailable', 'The ledger cannot be read right now; try $verify again later', {
        cause: err,
      });
    }
    return { status: 200, body: verificationParameters(result) };
  };
}

export function verifyOperation(verifier: IntegrityVerifier): OperationRegistration {
  return {
    name: 'verify',
    levels: ['instance'],
    // It changes nothing: GET and POST (a Parameters body, as fhir-kit-client's operation() sends), as the spec says.
    methods: ['GET', 'POST'],
    documentation:
      'Proves a stored version (current, or /_history/[vid]/$verify) against its salted hash anchored on the ledger: ' +
      'status, verified, hash, salt, ledgerKey, root, transactionId, blockNumber and the Merkle proof (docs/integrity.md).',
    handler: verifyHandler(verifier),
  };
}
