/**
 * The search a store adapter runs (`ResourceStore.search`): the compiled query that src/fhir/search/parse.ts
 * produces, and what the caller may see. Port-level types: the search module depends on them, the store port
 * and its adapters never depend on the search module's code (docs/architecture.md, "Direction").
 */
import type { IndexEntry, StoredVersion } from '../store/resource-store.js';

/** The kinds of search parameter (R4 SearchParameter.type that are indexed). */
export type SearchParamType = IndexEntry['type'];

export type Prefix = 'eq' | 'ne' | 'gt' | 'lt' | 'ge' | 'le' | 'sa' | 'eb' | 'ap';

export type SearchValue =
  | { kind: 'string'; text: string; exact: string }
  | { kind: 'token'; system?: string; code?: string; text?: string }
  | { kind: 'reference'; references?: string[]; identifier?: { system?: string; value: string } }
  | {
      kind: 'range';
      prefix: Prefix;
      low: number;
      high: number;
      value: number;
      system?: string;
      code?: string;
      /** Quantity parameters with a unit: the unit rows that answer it (index-entries.ts quantityEntries). */
      unitRows?: QuantityUnitRows;
    }
  | { kind: 'uri'; uri: string }
  | { kind: 'missing'; missing: boolean }
  /** `token$second` of a composite: second is a token, range (quantity/date) or string value. */
  | {
      kind: 'composite';
      first: Extract<SearchValue, { kind: 'token' }>;
      second: SearchValue;
      secondType: SearchParamType;
    };

/**
 * The unit rows of a quantity search: index params `{code}{suffix}`, the searched value and its precision range
 * [low, high) in their unit (UCUM: canonical), and the prefix to apply there (turned round for a decreasing unit).
 */
export interface QuantityUnitRows {
  suffix: string;
  low: number;
  high: number;
  value: number;
  prefix: Prefix;
}

/** One AND-ed condition on the resources of a type. */
export type Filter =
  | {
      kind: 'param';
      param: string;
      type: SearchParamType;
      modifier?: string;
      /** OR-ed values. */
      values: SearchValue[];
      /** `:not` (tokens) / `ne`-style negation: the resource must have no matching row. */
      negate?: boolean;
    }
  | { kind: 'id'; ids: string[]; negate?: boolean }
  | { kind: 'lastUpdated'; values: Extract<SearchValue, { kind: 'range' }>[] }
  /** `param:Type.rest=value`: a reference in `param` to a resource of one of `targetTypes` that matches `inner`. */
  | { kind: 'chain'; param: string; targetTypes: string[]; inner: Filter }
  /** `_has:Type:param:rest=value`: some `Type` resource whose `param` references this one matches `inner`. */
  | { kind: 'has'; sourceType: string; param: string; inner: Filter }
  /** `_text` / `_content`: the resource's full-text words (src/fhir/search/full-text.ts) match `query`. */
  | { kind: 'text'; param: '_text' | '_content'; query: TextQuery }
  /**
   * Membership of a compartment (search.html#compartments) as an index condition: a reference to `reference`
   * (`Patient/x`) in one of the type's compartment parameters (`params`, per type: the R4 CompartmentDefinition),
   * or, for the compartment's own type, that resource itself (`own`). It narrows the candidates from the reference
   * index; the version's stored compartments still decide (the search interaction's `canRead`).
   */
  | {
      kind: 'compartment';
      reference: string;
      params: Readonly<Record<string, readonly string[]>>;
      own?: { type: string; id: string };
    };

/**
 * A parsed full-text query: an OR of ANDs of phrases. A phrase is one or more words (already normalised and
 * encoded as lower-case letters, src/fhir/search/full-text.ts) that must appear next to each other, in order.
 */
export type TextQuery =
  { op: 'phrase'; words: string[] } | { op: 'and'; parts: TextQuery[] } | { op: 'or'; parts: TextQuery[] };

export interface SortKey {
  param: string;
  type: SearchParamType | '_id' | '_lastUpdated';
  descending: boolean;
}

export interface IncludeSpec {
  /** The type that holds the reference. */
  sourceType: string;
  /** Reference parameter code, or '*' for all reference parameters. */
  param: string;
  targetType?: string;
  iterate: boolean;
}

export interface CompiledQuery {
  /** The types searched: one for a type search; those of `_type` (or all) for a system search. */
  resourceTypes: string[];
  filters: Filter[];
  sort: SortKey[];
  count: number;
  offset: number;
  /** As asked; undefined: the interaction gives a total only when it costs nothing. */
  total?: 'none' | 'estimate' | 'accurate';
  summaryCount: boolean;
  elements?: string[];
  include: IncludeSpec[];
  revinclude: IncludeSpec[];
  /** Parameters ignored (lenient handling), for the Bundle's OperationOutcome. */
  warnings: string[];
  /** The parameters that were applied, for the self link. */
  applied: [string, string][];
  /**
   * This server's base URL as the client addressed it (ParseOptions.serverBase): chains, `_has` and includes also
   * follow references stored as absolute URLs under it (search.html#reference: the same resource as `Type/id`).
   */
  serverBase?: string;
}

/**
 * What a caller may see of one resource type (AccessPolicy.readScope), as data a store puts inside its query.
 * A version of the type is visible when any clause admits it:
 * - `unrestricted`: every version;
 * - `withoutPatients`: versions outside every patient compartment (no patients);
 * - `custodian`: versions whose custodian is this organisation;
 * - `patients`: versions with at least one patient, all of them in this list.
 */
export interface ReadScope {
  unrestricted: boolean;
  withoutPatients: boolean;
  custodian?: string;
  patients: readonly string[];
}

/** The index params of a search parameter of a type, or undefined when it is indexed under its own code. */
export type IndexedAs = (resourceType: string, code: string) => readonly string[] | undefined;

export interface StoreSearchRequest {
  query: CompiledQuery;
  /**
   * The caller's visibility predicate (AccessPolicy.canRead). Adapters apply it to every candidate before it
   * counts, is paged or returned, and to every resource a chain or `_has` matches through. It is called with the
   * version's metadata (type, id, version, custodian, patients); `json` may be absent, so a policy must not need it.
   */
  canRead: (version: StoredVersion) => boolean;
  /**
   * The caller's read scope per type (AccessPolicy.readScope): adapters that can put it inside their query do, so
   * rows the caller may not see are not visited. It only narrows: `canRead` still decides every row.
   */
  scope?: (resourceType: string) => ReadScope;
  /**
   * The index rows that answer search parameter `code` of a type, when not `code` itself: aliases such as
   * Observation `combo-code`, indexed under its parts (SearchParamDef.indexedAs; the search interaction passes
   * src/fhir/search/definitions.ts's `indexedAs`). Absent: every parameter is indexed under its own code.
   */
  indexedAs?: IndexedAs;
  /** Count every visible match (Bundle.total); otherwise an adapter may stop once the page is full. */
  wantTotal?: boolean;
  /** A later page: the matches strictly after this position (`query.offset` is then not used). */
  after?: SearchPosition;
}

/**
 * A position in a search's order, where the next page starts (the content of a search page cursor). Matches are
 * ordered by the sort keys, then by their version's `seq` as it was when the first page was made (`high`, the
 * store's newest seq then): writes after the first page move no resource in the default or `_lastUpdated` order,
 * and resources created since are not matched, so no resource is served twice and none is skipped.
 */
export interface SearchPosition {
  /** The store's newest version seq when the first page was made. */
  high: number;
  /** The last served match's sort key values, in the query's sort order. */
  keys: (string | number | null)[];
  /** The last served match's seq (of its newest version at `high`). */
  seq: number;
}

export interface StoreSearchResult {
  /** One page of visible current versions, in the query's sort order (at most query.count). */
  versions: StoredVersion[];
  /** Visible matches in all, when wantTotal. */
  total?: number;
  /** More visible matches exist after this page. */
  hasMore?: boolean;
  /** Where the next page starts (the page's last match), when more follow. */
  next?: SearchPosition;
  /** Each returned version's position (a page may be cut shorter by its caller: the next starts after its last). */
  positions?: SearchPosition[];
}
