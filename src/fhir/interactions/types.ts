/**
 * FHIR interactions are plain async functions from a FhirRequest to a FhirResponse.
 * The HTTP layer (src/fhir/http/) only translates HTTP to and from these shapes.
 */
import type { FhirResource } from '../fhir-json.js';
import type { IndexEntry, ResourceStore, StoredVersion, WriteRequest } from '../store/resource-store.js';
import type { AccessPolicy } from './access-policy.js';
import type { ResourceValidator } from '../validation/validator.js';
import type { FhirRegistry } from './fhir-registry.js';
import type { TerminologyPort } from '../terminology-port.js';
import type { FhirXml } from '../fhir-xml.js';

export type Interaction =
  | 'read'
  | 'vread'
  | 'update'
  | 'patch'
  | 'delete'
  | 'history-instance'
  | 'history-type'
  | 'history-system'
  | 'create'
  | 'search-type'
  | 'search-system'
  | 'capabilities'
  | 'batch'
  | 'transaction'
  | 'operation';

export interface FhirRequest {
  interaction: Interaction;
  method: 'GET' | 'HEAD' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';
  resourceType?: string;
  /** A compartment search (`GET Patient/[id]/[type]` or `Patient/[id]/*`): the compartment it is limited to. */
  compartment?: { type: string; id: string };
  id?: string;
  versionId?: string;
  /** Operation name without `$`, for interaction 'operation'. */
  operation?: string;
  /** Query parameters, repeated ones in order. */
  query: Record<string, string[]>;
  /** Raw request body text (already size-checked), if any. */
  body?: string;
  /** Media type of the body without parameters, e.g. application/fhir+json. */
  contentType?: string;
  ifMatch?: string;
  ifNoneMatch?: string;
  ifModifiedSince?: string;
  ifNoneExist?: string;
  /** The `return` preference of the Prefer header. */
  preferReturn?: 'minimal' | 'representation' | 'OperationOutcome';
  /** Absolute base URL of the FHIR endpoint, e.g. http://localhost:8080/fhir (no trailing slash). */
  baseUrl: string;
  /** The body already parsed (lossless), when an earlier step parsed it (POST [base] Bundles, batch entries). */
  resource?: FhirResource;
  /** For a create inside a transaction Bundle: the server id already assigned to it (src/fhir/interactions/transaction.ts). */
  assignedId?: string;
  /** `Prefer: handling=strict|lenient` (search: what cannot be applied is refused unless lenient). */
  preferHandling?: 'strict' | 'lenient';
  /** `Prefer: respond-async` (the Bulk Data kick-off requests need it). */
  preferAsync?: boolean;
}

export interface FhirResponse {
  status: number;
  /** Already-serialised JSON text (stored resources are served as stored), or an object to serialise. */
  body?: string | FhirResource;
  headers?: Record<string, string>;
  /**
   * The exact instant of the version the response is about (Last-Modified has whole seconds only): Bundle entries'
   * `response.lastModified` use it. Not sent over HTTP.
   */
  lastModified?: string;
}

/** What every interaction gets: the ports it works through, scoped to the caller. */
export interface FhirContext {
  store: ResourceStore;
  validator: ResourceValidator;
  /** The caller's access policy: every path that can reveal or change data asks it. */
  access: AccessPolicy;
  /** Request-scoped logger (pino-compatible). */
  log: {
    info(obj: object | string, msg?: string): void;
    warn(obj: object | string, msg?: string): void;
    error(obj: object | string, msg?: string): void;
    debug(obj: object | string, msg?: string): void;
  };
  /** What is registered (interactions call each other through it: conditional create -> search, bundles -> entries). */
  registry?: FhirRegistry;
  /** Search index rows of a version about to be written (src/fhir/search/ provides it). */
  indexEntries?(resource: FhirResource): IndexEntry[];
  /** Patient compartments (`Patient/{id}`) a resource belongs to, for the access policy and the store. */
  patientsOf?(resource: FhirResource): string[];
  /** The integrity path: queues the anchor of each version in its write transaction (src/integrity/anchorer.ts). */
  anchor?: WriteRequest['anchor'];
  /**
   * A SearchParameter version was stored (`resource` absent for a delete): the custom parameters of this process
   * change at once, so the next write indexes them (src/fhir/search/custom-parameters.ts).
   */
  searchParameterWritten?(version: StoredVersion, resource: FhirResource | undefined): void;
  /** Terminology for the token modifiers `:in`, `:not-in`, `:below`, `:above` (absent: they are refused). */
  terminology?: TerminologyPort;
  /** FHIR XML <-> JSON, for XML Patch (absent: XML Patch is 415, as XML is). */
  xml?: FhirXml;
}

export type InteractionHandler = (request: FhirRequest, context: FhirContext) => Promise<FhirResponse>;
