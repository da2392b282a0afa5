/**
 * The FHIR RESTful URL grammar (http://hl7.org/fhir/R4/http.html) as a pure function: method + path below the
 * base -> which interaction, on what. Used by the HTTP layer and by batch/transaction for their entries' URLs.
 * What a path may do is derived from the registry, so 405's Allow header lists exactly what is served.
 */
import { fhirError } from '../outcome.js';
import { JsonSyntaxError, type FhirResource, parseClientJson } from '../fhir-json.js';
import type { FhirRegistry } from './fhir-registry.js';
import type { FhirRequest, Interaction } from './types.js';

export type HttpMethod = FhirRequest['method'];

export interface RoutedRequest {
  interaction: Interaction;
  resourceType?: string;
  id?: string;
  versionId?: string;
  operation?: string;
  /** `Patient/[id]/[type]` and `Patient/[id]/*`: a search limited to that compartment. */
  compartment?: { type: string; id: string };
}

/** The compartments served by compartment search (the R4 Patient compartment definition is loaded). */
export const COMPARTMENT_TYPES = new Set(['Patient']);

type Shape =
  | 'base'
  | 'metadata'
  | 'history-system'
  | 'search-system'
  | 'operation-system'
  | 'type'
  | 'history-type'
  | 'search-type'
  | 'operation-type'
  | 'instance'
  | 'history-instance'
  | 'vread'
  | 'operation-instance'
  | 'search-compartment';

function shapeOf(segments: string[]):
  | {
      shape: Shape;
      resourceType?: string;
      id?: string;
      versionId?: string;
      operation?: string;
      compartment?: { type: string; id: string };
    }
  | undefined {
  const [a, b, c, d] = segments;
  switch (segments.length) {
    case 0:
      return { shape: 'base' };
    case 1:
      if (a === 'metadata') return { shape: 'metadata' };
      if (a === '_history') return { shape: 'history-system' };
      if (a === '_search') return { shape: 'search-system' };
      if (a.startsWith('$')) return { shape: 'operation-system', operation: a.slice(1) };
      return { shape: 'type', resourceType: a };
    case 2:
      if (b === '_history') return { shape: 'history-type', resourceType: a };
      if (b === '_search') return { shape: 'search-type', resourceType: a };
      if (b.startsWith('$')) return { shape: 'operation-type', resourceType: a, operation: b.slice(1) };
      return { shape: 'instance', resourceType: a, id: b };
    case 3:
      if (c === '_history') return { shape: 'history-instance', resourceType: a, id: b };
      if (c.startsWith('$'))
        return { shape: 'operation-instance', resourceType: a, id: b, operation: c.slice(1) };
      if (COMPARTMENT_TYPES.has(a) && /^[A-Za-z0-9\-.]{1,64}$/.test(b) && (c === '*' || /^[A-Z]/.test(c)))
        return {
          shape: 'search-compartment',
          resourceType: c === '*' ? undefined : c,
          compartment: { type: a, id: b },
        };
      return undefined;
    case 4:
      if (c === '_history') return { shape: 'vread', resourceType: a, id: b, versionId: d };
      return undefined;
    case 5:
      // An instance operation on one version, e.g. Patient/1/_history/2/$verify.
      if (c === '_history' && segments[4].startsWith('$'))
        return {
          shape: 'operation-instance',
          resourceType: a,
          id: b,
          versionId: d,
          operation: segments[4].slice(1),
        };
      return undefined;
    default:
      return undefined;
  }
}

export class FhirRouter {
  /** Method tables per (shape, type, operation), valid while the registry's version is unchanged. */
  private readonly methodTables = new Map<string, Partial<Record<HttpMethod, Interaction>>>();
  private tablesVersion = -1;

  constructor(
    private readonly registry: FhirRegistry,
    private readonly isResourceType: (type: string) => boolean,
  ) {}

  private methodsFor(
    shape: Shape,
    resourceType?: string,
    operation?: string,
  ): Partial<Record<HttpMethod, Interaction>> {
    if (this.tablesVersion !== this.registry.version) {
      this.methodTables.clear();
      this.tablesVersion = this.registry.version;
    }
    const key = `${shape}|${resourceType ?? ''}|${operation ?? ''}`;
    let table = this.methodTables.get(key);
    if (!table) {
      table = this.computeMethods(shape, resourceType, operation);
      if (this.methodTables.size < 10_000) this.methodTables.set(key, table);
    }
    return table;
  }

  /** Interaction per method for a URL shape, from what is registered. */
  private computeMethods(
    shape: Shape,
    resourceType?: string,
    operation?: string,
  ): Partial<Record<HttpMethod, Interaction>> {
    const has = (interaction: Interaction) => this.registry.hasInteraction(interaction, resourceType);
    const out: Partial<Record<HttpMethod, Interaction>> = {};
    const get = (interaction: Interaction) => {
      if (has(interaction)) out.GET = out.HEAD = interaction;
    };
    switch (shape) {
      case 'base':
        get('search-system');
        if (has('batch') || has('transaction')) out.POST = has('transaction') ? 'transaction' : 'batch';
        break;
      case 'metadata':
        get('capabilities');
        break;
      case 'history-system':
      case 'history-type':
      case 'history-instance':
        get(shape);
        break;
      case 'vread':
        get('vread');
        break;
      case 'search-system':
        if (has('search-system')) out.POST = 'search-system';
        break;
      case 'search-type':
        if (has('search-type')) out.POST = 'search-type';
        break;
      case 'search-compartment':
        get(resourceType ? 'search-type' : 'search-system');
        break;
      case 'type':
        get('search-type');
        if (has('create')) out.POST = 'create';
        // Conditional update, patch and delete (`[type]?criteria`): routed without an id.
        if (this.registry.hasConditional('update', resourceType)) out.PUT = 'update';
        if (this.registry.hasConditional('patch', resourceType)) out.PATCH = 'patch';
        if (this.registry.hasConditional('delete', resourceType)) out.DELETE = 'delete';
        break;
      case 'instance':
        get('read');
        if (has('update')) out.PUT = 'update';
        if (has('patch')) out.PATCH = 'patch';
        if (has('delete')) out.DELETE = 'delete';
        break;
      case 'operation-system':
      case 'operation-type':
      case 'operation-instance': {
        const registration = operation ? this.registry.operation(operation) : undefined;
        const level =
          shape === 'operation-system' ? 'system' : shape === 'operation-type' ? 'type' : 'instance';
        if (
          registration &&
          registration.levels.includes(level) &&
          (!resourceType || !registration.resourceTypes || registration.resourceTypes.includes(resourceType))
        ) {
          for (const method of registration.methods ?? ['GET', 'POST']) out[method] = 'operation';
          if (out.GET) out.HEAD = 'operation';
        }
        break;
      }
    }
    return out;
  }

  /**
   * Route `method` on `path` (below the FHIR base, e.g. `Patient/1/_history/2`, no query string).
   * Throws 404 for unknown paths, types and operations, 405 (with Allow) for a method the path does not serve.
   */
  route(method: HttpMethod, path: string): RoutedRequest {
    let segments: string[];
    try {
      segments = path.split('/').filter((s) => s !== '');
      if (path.includes('%')) segments = segments.map((s) => decodeURIComponent(s));
    } catch {
      throw fhirError('request-invalid', `The URL path is not valid percent-encoding: ${path}`);
    }
    const found = shapeOf(segments);
    if (!found) throw fhirError('endpoint-not-found', `No FHIR endpoint at /${segments.join('/')}`);
    if (found.resourceType !== undefined && !this.isResourceType(found.resourceType)) {
      throw fhirError(
        'resource-type-unsupported',
        `Resource type '${found.resourceType}' is not supported by this server (FHIR R4 resource types only)`,
      );
    }
    const methods = this.methodsFor(found.shape, found.resourceType, found.operation);
    const allowed = Object.keys(methods) as HttpMethod[];
    if (allowed.length === 0) {
      if (found.operation !== undefined)
        throw fhirError('operation-unsupported', `Operation '$${found.operation}' is not supported here`);
      throw fhirError('endpoint-not-found', `No FHIR endpoint at /${segments.join('/')}`);
    }
    const interaction = methods[method];
    if (!interaction) {
      throw fhirError(
        'method-not-allowed',
        `${method} is not allowed on /${segments.join('/')}; allowed: ${allowed.join(', ')}`,
        { headers: { Allow: allowed.join(', ') } },
      );
    }
    return {
      interaction,
      resourceType: found.resourceType,
      id: found.id,
      versionId: found.versionId,
      operation: found.operation,
      compartment: found.compartment,
    };
  }
}

/**
 * POST [base] is a batch or a transaction depending on Bundle.type: parse the body once here and hand the
 * parsed Bundle on (FhirRequest.resource) so the bundle handlers do not parse it again.
 */
export function classifyBundlePost(request: FhirRequest, registry: FhirRegistry): FhirRequest {
  if (!request.body)
    throw fhirError('body-missing', 'POST to the base needs a Bundle of type batch or transaction');
  const bundle = parseRequestJson<FhirResource>(request.body);
  if (bundle === null || typeof bundle !== 'object' || bundle.resourceType !== 'Bundle')
    throw fhirError('body-not-resource', 'POST to the base needs a Bundle', { expression: 'Bundle' });
  const interaction: Interaction | undefined =
    bundle.type === 'batch' ? 'batch' : bundle.type === 'transaction' ? 'transaction' : undefined;
  if (!interaction)
    throw fhirError(
      'bundle-invalid',
      `Bundle.type must be batch or transaction, not '${String(bundle.type)}'`,
      { expression: 'Bundle.type' },
    );
  if (!registry.hasInteraction(interaction)) {
    throw fhirError('method-not-allowed', `This server does not process ${interaction} Bundles`, {
      expression: 'Bundle.type',
    });
  }
  return { ...request, interaction, resource: bundle };
}

/** The 400 for text that is not JSON, saying where. */
/** A request body as client JSON (lossless numbers), or the 400 FhirError naming where it is malformed. */
export function parseRequestJson<T = unknown>(text: string): T {
  try {
    return parseClientJson<T>(text);
  } catch (err) {
    if (err instanceof JsonSyntaxError) throw jsonSyntaxError(err);
    throw err;
  }
}

export function jsonSyntaxError(err: JsonSyntaxError) {
  const where = err.position === undefined ? '' : ` at character ${err.position}`;
  return fhirError('body-not-json', `The body is not valid JSON${where}: ${err.message}`);
}
