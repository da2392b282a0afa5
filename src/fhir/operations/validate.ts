/**
 * $validate (http://hl7.org/fhir/R4/resource-operation-validate.html):
 *
 *   POST [base]/[type]/$validate        body: the resource, or Parameters with `resource`, `mode`, `profile`
 *   POST [base]/[type]/[id]/$validate   the same, checked against the stored instance for mode update/delete
 *   GET  [base]/[type]/[id]/$validate   validates the stored instance (`profile` as a query parameter)
 *
 * Answers 200 with an OperationOutcome whatever the verdict (its issues say whether the resource is valid); 400 only
 * when the request itself is unusable (no resource, unparseable JSON, unknown mode), 404 for an unknown instance.
 * Nothing is stored.
 */
import { fhirError, type OperationOutcomeIssue } from '../outcome.js';
import { parseClientJson, parseFhirJson, toPlainJson } from '../fhir-json.js';
import { assertId, assertResourceType } from '../interactions/common.js';
import type { OperationRegistration, TerminologyCapabilitiesBuilder } from '../interactions/fhir-registry.js';
import type { FhirContext, FhirRequest, InteractionHandler } from '../interactions/types.js';
import type { ValidationOptions, ValidationSettings } from '../validation/validator.js';
import { field, stringField } from '../definitions/json.js';
import {
  readOperationInput,
  terminologyCapabilities,
  terminologyOperations,
  type OperationInput,
  type TerminologySource,
} from './terminology.js';

type Mode = NonNullable<ValidationOptions['mode']>;
const MODES = new Set<string>(['create', 'update', 'delete', 'profile'] satisfies Mode[]);

function isMode(value: string): value is Mode {
  return MODES.has(value);
}

export interface ValidateOperationOptions {
  /** Whether a profile URL is known (unknown requested profiles are an error); all accepted when absent. */
  knowsProfile?(url: string): boolean;
}

export function validateHandler(options: ValidateOperationOptions = {}): InteractionHandler {
  return async (request, context) => {
    const resourceType = assertResourceType(context, request.resourceType);
    context.access.authorize('read', resourceType);
    const input = readOperationInput(request);
    const modeParam = input.strings.get('mode')?.[0];
    if (modeParam !== undefined && !isMode(modeParam))
      throw fhirError(
        'parameter-invalid',
        `Unknown $validate mode '${modeParam}' (create, update, delete or profile)`,
        { expression: 'mode' },
      );
    const mode = modeParam;
    const profiles = input.strings.get('profile') ?? [];
    const settings = settingsParameters(input);
    const issues: OperationOutcomeIssue[] = [];

    const stored = await storedResource(request, context, resourceType, mode);
    if (mode === 'delete') {
      if (request.id === undefined)
        throw fhirError(
          'parameter-invalid',
          '$validate with mode=delete needs an instance ([type]/[id]/$validate)',
        );
      issues.push({
        severity: 'information',
        code: 'informational',
        diagnostics: `${resourceType}/${request.id} can be deleted`,
      });
      return { status: 200, body: { resourceType: 'OperationOutcome', issue: issues } };
    }

    const resource = resourceToValidate(request, input, resourceType, stored);
    issues.push(...requestIssues(request, resource, resourceType, mode, profiles, options));
    // Cross-resource rules of conformance resources are errors here, warnings on writes (ValidationOptions); the
    // rule families at their true severities, whatever the write levels are (docs/validation.md, "Rule families").
    const result = context.validator.validate(resource, {
      mode,
      profiles,
      crossResourceSeverity: 'error',
      settings,
      levels: 'reported',
    });
    issues.push(...result.issues);
    if (!issues.some((i) => i.severity === 'error' || i.severity === 'fatal')) {
      issues.push({ severity: 'information', code: 'informational', diagnostics: 'All OK: no errors found' });
    }
    return { status: 200, body: { resourceType: 'OperationOutcome', issue: issues } };
  };
}

/** The boolean `$validate` parameters of this service and the setting each chooses. */
const BOOLEAN_SETTINGS = {
  'security-checks': 'securityChecks',
  'allow-example-urls': 'allowExampleUrls',
} as const;

/**
 * The settings this call chooses (the reference validator's per-run options), beyond the operation's own `resource`,
 * `mode` and `profile`: `security-checks`, `allow-example-urls` (true|false), `unknown-extension-severity`
 * (error|warning|information), `html-in-markdown` (ignore|warning|error), `extension-domain` (repeating: URL
 * prefixes of accepted unknown extensions). Absent ones keep the service's (docs/validation.md). A bad value is 400.
 */
function settingsParameters(input: OperationInput): Partial<ValidationSettings> {
  const settings: Partial<ValidationSettings> = {};
  for (const [name, key] of Object.entries(BOOLEAN_SETTINGS)) {
    const value = input.strings.get(name)?.[0];
    if (value === undefined) continue;
    if (value !== 'true' && value !== 'false')
      throw fhirError('parameter-invalid', `$validate parameter '${name}' is true or false`, {
        expression: name,
      });
    settings[key] = value === 'true';
  }
  const unknownExtension = codeParameter(input, 'unknown-extension-severity', [
    'error',
    'warning',
    'information',
  ] as const);
  if (unknownExtension) settings.unknownExtensionSeverity = unknownExtension;
  const htmlInMarkdown = codeParameter(input, 'html-in-markdown', ['ignore', 'warning', 'error'] as const);
  if (htmlInMarkdown) settings.htmlInMarkdown = htmlInMarkdown;
  const domains = input.strings.get('extension-domain');
  if (domains) settings.allowedExtensionDomains = domains.filter((d) => d !== '');
  return settings;
}

function codeParameter<T extends string>(
  input: OperationInput,
  name: string,
  allowed: readonly T[],
): T | undefined {
  const value = input.strings.get(name)?.[0];
  if (value === undefined) return undefined;
  const known = allowed.find((a) => a === value);
  if (!known)
    throw fhirError('parameter-invalid', `$validate parameter '${name}' is one of ${allowed.join(', ')}`, {
      expression: name,
    });
  return known;
}

/**
 * The instance named in the URL (parsed, not narrowed: the validator judges it), when there is one and the caller
 * may read it (none: 404 where it is needed).
 */
async function storedResource(
  request: FhirRequest,
  context: FhirContext,
  resourceType: string,
  mode: ValidationOptions['mode'],
): Promise<unknown> {
  let stored: unknown;
  if (request.id !== undefined) {
    const id = assertId(request.id);
    const version = await context.store.read(resourceType, id);
    if (version && !version.deleted && version.json && context.access.canRead(version))
      stored = toPlainJson(parseFhirJson(version.json));
    else if (mode === 'delete' || request.method === 'GET' || request.method === 'HEAD')
      throw fhirError('resource-not-found', `${resourceType}/${id} is not known`);
  }
  return stored;
}

/**
 * The resource to validate (untrusted: the validator judges it): the `resource` parameter, a bare body, or the stored
 * instance (GET).
 */
function resourceToValidate(
  request: FhirRequest,
  input: OperationInput,
  resourceType: string,
  stored: unknown,
): unknown {
  let resource: unknown = input.values.get('resource')?.[0] ?? input.values.get('__resource')?.[0];
  // Parameters/$validate with a bare Parameters body: the body is the resource to validate.
  if (!resource && resourceType === 'Parameters' && request.body)
    resource = toPlainJson(parseClientJson(request.body));
  if (!resource && (request.method === 'GET' || request.method === 'HEAD' || !request.body))
    resource = stored;
  if (!resource)
    throw fhirError(
      'parameter-missing',
      '$validate needs a resource: the body, or a Parameters body with a `resource` parameter',
    );
  return resource;
}

/** What the request itself gets wrong: the URL's type or id, unknown profiles. */
function requestIssues(
  request: FhirRequest,
  resource: unknown,
  resourceType: string,
  mode: ValidationOptions['mode'],
  profiles: string[],
  options: ValidateOperationOptions,
): OperationOutcomeIssue[] {
  const issues: OperationOutcomeIssue[] = [];
  const givenType = field(resource, 'resourceType');
  if (givenType !== resourceType)
    issues.push({
      severity: 'error',
      code: 'invalid',
      diagnostics: `The resource is a ${String(givenType)} but the URL names ${resourceType}`,
      expression: ['resourceType'],
    });
  const id = stringField(resource, 'id');
  if (mode === 'update') {
    if (id === undefined)
      issues.push({
        severity: 'error',
        code: 'required',
        diagnostics: 'A resource to update must have an id',
        expression: [`${resourceType}.id`],
      });
    else if (request.id !== undefined && id !== request.id)
      issues.push({
        severity: 'error',
        code: 'invalid',
        diagnostics: `The resource id '${id}' does not match the URL id '${request.id}'`,
        expression: [`${resourceType}.id`],
      });
  }
  for (const p of profiles) {
    if (options.knowsProfile && !options.knowsProfile(p))
      issues.push({
        severity: 'error',
        code: 'not-supported',
        diagnostics: `Profile '${p}' is not known to this server`,
        expression: [resourceType],
      });
  }
  return issues;
}

export function validateOperation(options: ValidateOperationOptions = {}): OperationRegistration {
  return {
    name: 'validate',
    definition: 'http://hl7.org/fhir/OperationDefinition/Resource-validate',
    levels: ['type', 'instance'],
    methods: ['GET', 'POST'],
    documentation:
      'Validates a resource (structure, invariants, bindings, claimed and requested profiles); mode create | update | delete | profile.',
    handler: validateHandler(options),
  };
}

/**
 * Registers $validate, and with a full validator (one that has definitions) the terminology operations, e.g. in
 * src/app/app.ts: `registerValidationOperations(registry, validator)`.
 */
export function registerValidationOperations(
  registry: {
    registerOperation(op: OperationRegistration): unknown;
    declareTerminologyCapabilities?(build: TerminologyCapabilitiesBuilder): unknown;
  },
  validator: object,
): void {
  const full = validator as Partial<TerminologySource> & {
    registry?: { structureDefinition(url: string): unknown };
  };
  registry.registerOperation(
    validateOperation(
      full.registry ? { knowsProfile: (url) => !!full.registry!.structureDefinition(url) } : {},
    ),
  );
  if (full.registry && full.walker) {
    for (const op of terminologyOperations(full as TerminologySource)) registry.registerOperation(op);
    registry.declareTerminologyCapabilities?.(terminologyCapabilities(full as TerminologySource));
  }
}
