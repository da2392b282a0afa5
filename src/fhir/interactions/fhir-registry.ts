/**
 * What this server actually does: every interaction and operation declares itself here, the router dispatches
 * through it, and GET /metadata (capabilities.ts) is generated from it, so the CapabilityStatement can never
 * claim more (or less) than the code serves.
 *
 * Other areas register themselves in src/app/app.ts, e.g.
 *   registry.registerInteraction('search-type', searchType);
 *   registry.registerOperation({ name: 'validate', levels: ['type', 'instance'], handler: validateOperation });
 */
import type { FhirResource } from '../fhir-json.js';
import type { FhirRequest, Interaction, InteractionHandler } from './types.js';

export type OperationLevel = 'system' | 'type' | 'instance';

export interface OperationRegistration {
  /** Operation name without `$`, e.g. `validate`. */
  name: string;
  /** Canonical URL of its OperationDefinition, e.g. http://hl7.org/fhir/OperationDefinition/Resource-validate. */
  definition?: string;
  /**
   * The OperationDefinition itself, for an operation this server defines (not one of the specification's): it is
   * contained in the CapabilityStatement, which points at it (`#id`), so the definition resolves from /metadata.
   */
  definitionResource?: FhirResource & { id: string };
  levels: OperationLevel[];
  /** Resource types it applies to at type/instance level; all types when absent. */
  resourceTypes?: string[];
  /** Methods it answers; GET and POST when absent (GET only makes sense for operations that change nothing). */
  methods?: ('GET' | 'POST')[];
  documentation?: string;
  handler: InteractionHandler;
}

export interface SearchParamDeclaration {
  name: string;
  type: 'number' | 'date' | 'string' | 'token' | 'reference' | 'composite' | 'quantity' | 'uri' | 'special';
  definition?: string;
  documentation?: string;
}

interface InteractionRegistration {
  handler: InteractionHandler;
  /** Resource types the interaction serves; all supported types when absent. */
  resourceTypes?: Set<string>;
  /** The handler also serves the conditional form on the type (`PUT/DELETE/PATCH [type]?criteria`). */
  conditional: boolean;
}

/** `_include`/`_revinclude` values a type can be searched with (CapabilityStatement searchInclude/searchRevInclude). */
export type IncludeDeclarations = (resourceType: string) => string[];

/**
 * The TerminologyCapabilities (`GET metadata?mode=terminology`) of whoever registers the terminology operations:
 * `serves(name)` says which operations are registered, so the statement names only those.
 */
export type TerminologyCapabilitiesBuilder = (
  baseUrl: string,
  serves: (operation: string) => boolean,
) => TerminologyCapabilitiesContent;

/** The elements of a TerminologyCapabilities that say what is served (codeSystem, expansion, validateCode ...). */
export type TerminologyCapabilitiesContent = Record<string, unknown>;

export class FhirRegistry {
  private readonly interactionHandlers = new Map<Interaction, InteractionRegistration>();
  private readonly operationsByName = new Map<string, OperationRegistration>();
  private readonly searchParamsByType = new Map<string, SearchParamDeclaration[]>();
  private includeDeclarations?: { include: IncludeDeclarations; revinclude: IncludeDeclarations };
  private terminologyStatement?: TerminologyCapabilitiesBuilder;
  /** Bumped by every registration, so what is derived from the registry (the router's method tables) can be cached. */
  version = 0;

  /** Register (or replace) the handler of an interaction. */
  registerInteraction(
    interaction: Interaction,
    handler: InteractionHandler,
    options: {
      resourceTypes?: string[];
      /** update, patch, delete: the handler resolves `[type]?criteria` itself (request without an id). */
      conditional?: boolean;
    } = {},
  ): this {
    this.version++;
    this.interactionHandlers.set(interaction, {
      handler,
      resourceTypes: options.resourceTypes ? new Set(options.resourceTypes) : undefined,
      conditional: options.conditional === true,
    });
    return this;
  }

  /** Whether the interaction is served in its conditional form `[type]?criteria` (it needs search too). */
  hasConditional(interaction: Interaction, resourceType?: string): boolean {
    return (
      this.hasInteraction(interaction, resourceType) &&
      this.interactionHandlers.get(interaction)!.conditional &&
      this.hasInteraction('search-type', resourceType)
    );
  }

  registerOperation(operation: OperationRegistration): this {
    this.version++;
    this.operationsByName.set(operation.name.replace(/^\$/, ''), {
      ...operation,
      name: operation.name.replace(/^\$/, ''),
    });
    return this;
  }

  /** What `metadata?mode=terminology` states (the terminology operations register it with themselves). */
  declareTerminologyCapabilities(build: TerminologyCapabilitiesBuilder): this {
    this.version++;
    this.terminologyStatement = build;
    return this;
  }

  terminologyCapabilities(): TerminologyCapabilitiesBuilder | undefined {
    return this.terminologyStatement;
  }

  /** Search parameters per resource type ('Resource' for those of every type), shown in the CapabilityStatement. */
  declareSearchParams(resourceType: string, params: SearchParamDeclaration[]): this {
    this.version++;
    this.searchParamsByType.set(resourceType, params);
    return this;
  }

  /** What `_include`/`_revinclude` values each type takes (declared with search). */
  declareIncludes(include: IncludeDeclarations, revinclude: IncludeDeclarations): this {
    this.version++;
    this.includeDeclarations = { include, revinclude };
    return this;
  }

  includes(resourceType: string): { include: string[]; revinclude: string[] } {
    const declared = this.includeDeclarations;
    return declared
      ? { include: declared.include(resourceType), revinclude: declared.revinclude(resourceType) }
      : { include: [], revinclude: [] };
  }

  hasInteraction(interaction: Interaction, resourceType?: string): boolean {
    const registration = this.interactionHandlers.get(interaction);
    if (!registration) return false;
    return !resourceType || !registration.resourceTypes || registration.resourceTypes.has(resourceType);
  }

  interactions(): Interaction[] {
    return [...this.interactionHandlers.keys()];
  }

  operations(): OperationRegistration[] {
    return [...this.operationsByName.values()];
  }

  operation(name: string): OperationRegistration | undefined {
    return this.operationsByName.get(name);
  }

  searchParams(resourceType: string): SearchParamDeclaration[] {
    return this.searchParamsByType.get(resourceType) ?? [];
  }

  /** The handler that serves this request, or undefined when nothing registered serves it. */
  handlerFor(
    request: Pick<FhirRequest, 'interaction' | 'resourceType' | 'operation' | 'id' | 'method'>,
  ): InteractionHandler | undefined {
    if (request.interaction === 'operation') {
      const operation = request.operation ? this.operationsByName.get(request.operation) : undefined;
      if (!operation) return undefined;
      const level: OperationLevel = request.id ? 'instance' : request.resourceType ? 'type' : 'system';
      if (!operation.levels.includes(level)) return undefined;
      if (
        request.resourceType &&
        operation.resourceTypes &&
        !operation.resourceTypes.includes(request.resourceType)
      )
        return undefined;
      return operation.handler;
    }
    if (!this.hasInteraction(request.interaction, request.resourceType)) return undefined;
    return this.interactionHandlers.get(request.interaction)?.handler;
  }
}
