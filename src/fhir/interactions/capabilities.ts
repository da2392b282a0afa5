/**
 * capabilities: GET [base]/metadata (http://hl7.org/fhir/R4/http.html#capabilities). The CapabilityStatement is
 * generated from the registry (interactions, operations, search parameters) and the validator's resource types,
 * so it states exactly what this server serves. Built once per base URL and cached: registration happens at
 * start-up. `mode=terminology` answers the TerminologyCapabilities of the registered terminology operations;
 * `mode=full` (the default) and `mode=normative` (CapabilityStatement is normative in R4: the same statement) the
 * CapabilityStatement; any other mode is 400.
 */
import type { FhirResource } from '../fhir-json.js';
import type { FhirRegistry, OperationRegistration } from './fhir-registry.js';
import type { Interaction, InteractionHandler } from './types.js';
import { COMPARTMENT_TYPES } from './router.js';
// The media types the HTTP layer negotiates.
import { PATCH_FORMATS, SUPPORTED_FORMATS } from '../media-types.js';
import { fhirError } from '../outcome.js';
import { PACKAGE_VERSION } from '../../platform/package-version.js';

const SOFTWARE_VERSION = PACKAGE_VERSION;

const TYPE_INTERACTIONS: Interaction[] = [
  'read',
  'vread',
  'update',
  'patch',
  'delete',
  'history-instance',
  'history-type',
  'create',
  'search-type',
];
const SYSTEM_INTERACTIONS: Interaction[] = ['transaction', 'batch', 'search-system', 'history-system'];

export interface CapabilitiesOptions {
  registry: FhirRegistry;
  resourceTypes: string[];
  /** Server start, used as CapabilityStatement.date. */
  started?: Date;
  /** How clients get a token (SMART Backend Services), from the FHIR base URL; absent when access is open. */
  tokenUrl?: (fhirBaseUrl: string) => string;
  /** Conditional delete of several matches is served (admins, --delete-multiple): `conditionalDelete` multiple. */
  deleteMultiple?: boolean;
}

/** rest.security as SMART App Launch 1.0/2.0 describe it, so EHR clients find the token endpoint from /metadata. */
function securityEntry(tokenUrl: string) {
  return {
    extension: [
      {
        url: 'http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris',
        extension: [{ url: 'token', valueUri: tokenUrl }],
      },
    ],
    service: [
      {
        coding: [
          { system: 'http://terminology.hl7.org/CodeSystem/restful-security-service', code: 'SMART-on-FHIR' },
        ],
      },
    ],
    description:
      'SMART Backend Services: client_credentials with a private_key_jwt assertion signed by the enrolled key (ES384 or ES256); see .well-known/smart-configuration',
  };
}

/**
 * Where the canonical of an operation of this service's own lives when its registration names none (HL7's
 * namespace is only for HL7's operations, which register their definition).
 */
export const OWN_OPERATION_DEFINITION_BASE = 'https://hie-ledger.dev/fhir/OperationDefinition/';

function operationEntry(operation: OperationRegistration) {
  return {
    name: operation.name,
    definition: operation.definitionResource
      ? `#${operation.definitionResource.id}`
      : (operation.definition ?? `${OWN_OPERATION_DEFINITION_BASE}${operation.name}`),
    ...(operation.documentation ? { documentation: operation.documentation } : {}),
  };
}

export function buildCapabilityStatement(options: CapabilitiesOptions, baseUrl: string): FhirResource {
  const { registry } = options;
  const operations = registry.operations();
  const resources = [...options.resourceTypes].sort().map((type) => {
    const interactions = TYPE_INTERACTIONS.filter((code) => registry.hasInteraction(code, type));
    const typeOperations = operations.filter(
      (op) =>
        (op.levels.includes('type') || op.levels.includes('instance')) &&
        (!op.resourceTypes || op.resourceTypes.includes(type)),
    );
    const searchParams = [...registry.searchParams('Resource'), ...registry.searchParams(type)];
    const canSearch = registry.hasInteraction('search-type', type);
    const includes = canSearch ? registry.includes(type) : { include: [], revinclude: [] };
    return {
      type,
      profile: `http://hl7.org/fhir/StructureDefinition/${type}`,
      interaction: interactions.map((code) => ({ code })),
      // If-Match on update is served wherever update is; vread wherever versions are kept.
      versioning: registry.hasInteraction('update', type)
        ? 'versioned-update'
        : registry.hasInteraction('vread', type)
          ? 'versioned'
          : 'no-version',
      readHistory: registry.hasInteraction('vread', type),
      updateCreate: registry.hasInteraction('update', type),
      conditionalCreate: canSearch && registry.hasInteraction('create', type),
      conditionalRead: registry.hasInteraction('read', type) ? 'full-support' : 'not-supported',
      conditionalUpdate: registry.hasConditional('update', type),
      conditionalDelete: registry.hasConditional('delete', type)
        ? options.deleteMultiple
          ? 'multiple'
          : 'single'
        : 'not-supported',
      ...(includes.include.length > 0 ? { searchInclude: includes.include } : {}),
      ...(includes.revinclude.length > 0 ? { searchRevInclude: includes.revinclude } : {}),
      ...(canSearch && searchParams.length > 0 ? { searchParam: searchParams } : {}),
      ...(typeOperations.length > 0 ? { operation: typeOperations.map(operationEntry) } : {}),
    };
  });
  // This server's own OperationDefinitions, contained so that their `#id` references resolve here.
  const contained = operations.flatMap((op) => (op.definitionResource ? [op.definitionResource] : []));
  return {
    resourceType: 'CapabilityStatement',
    ...(contained.length > 0 ? { contained } : {}),
    status: 'active',
    date: (options.started ?? new Date()).toISOString(),
    publisher: 'hie-ledger',
    kind: 'instance',
    software: { name: 'hie-ledger', version: SOFTWARE_VERSION },
    implementation: { description: 'hie-ledger FHIR R4 server', url: baseUrl },
    fhirVersion: '4.0.1',
    format: SUPPORTED_FORMATS,
    patchFormat: PATCH_FORMATS,
    rest: [
      {
        mode: 'server',
        ...(options.tokenUrl ? { security: securityEntry(options.tokenUrl(baseUrl)) } : {}),
        resource: resources,
        // Compartment search (`Patient/[id]/[type]`) is routed wherever type search is registered.
        ...(registry.hasInteraction('search-type')
          ? {
              compartment: [...COMPARTMENT_TYPES].map(
                (type) => `http://hl7.org/fhir/CompartmentDefinition/${type.toLowerCase()}`,
              ),
            }
          : {}),
        interaction: SYSTEM_INTERACTIONS.filter((code) => registry.hasInteraction(code)).map((code) => ({
          code,
        })),
        ...(registry.searchParams('Resource').length > 0 && registry.hasInteraction('search-system')
          ? { searchParam: registry.searchParams('Resource') }
          : {}),
        // Every operation served, at whatever level (the resources name theirs too).
        ...(operations.length > 0 ? { operation: operations.map(operationEntry) } : {}),
      },
    ],
  };
}

const MODES = new Set(['full', 'normative', 'terminology']);

/**
 * The TerminologyCapabilities of this server: what its registered terminology operations serve, or (none
 * registered) a statement with nothing in it, which is what the server then serves.
 */
export function buildTerminologyCapabilities(options: CapabilitiesOptions, baseUrl: string): FhirResource {
  const { registry } = options;
  const stated = registry.terminologyCapabilities()?.(
    baseUrl,
    (name) => registry.operation(name) !== undefined,
  );
  return {
    resourceType: 'TerminologyCapabilities',
    status: 'active',
    date: (options.started ?? new Date()).toISOString(),
    publisher: 'hie-ledger',
    kind: 'instance',
    software: { name: 'hie-ledger', version: SOFTWARE_VERSION },
    implementation: { description: 'hie-ledger FHIR R4 server', url: baseUrl },
    ...stated,
  };
}

export function capabilitiesHandler(options: CapabilitiesOptions): InteractionHandler {
  const byBase = new Map<string, string>();
  let builtFor = options.registry.version;
  return async (request) => {
    const mode = request.query.mode?.[0] ?? 'full';
    if (!MODES.has(mode))
      throw fhirError(
        'parameter-invalid',
        `mode=${mode}: metadata takes mode full, normative or terminology`,
        {
          expression: 'mode',
        },
      );
    // A registration after start-up (an operation plugged in later) invalidates what was built.
    if (builtFor !== options.registry.version) {
      byBase.clear();
      builtFor = options.registry.version;
    }
    const key = `${mode === 'terminology' ? 'terminology' : 'full'} ${request.baseUrl}`;
    let text = byBase.get(key);
    if (text === undefined) {
      const built =
        mode === 'terminology'
          ? buildTerminologyCapabilities(options, request.baseUrl)
          : buildCapabilityStatement(options, request.baseUrl);
      text = JSON.stringify(built);
      if (byBase.size < 32) byBase.set(key, text);
    }
    return { status: 200, body: text };
  };
}
