/**
 * The terminology port (docs/terminology.md): what the validator, the terminology operations and search ask about
 * codes. Two parts:
 *
 * - `LoadedCodeSystems`: the big code systems an operator loads from their owners' files (`hie-ledger terminology
 *   load`: LOINC, SNOMED CT, RxNorm, ICD-10-CM, CVX), kept in a store, not in memory. Synchronous (the validator
 *   is): src/terminology/ implements it over SQLite.
 * - `TerminologyPort`: code lookup, subsumption and ValueSet membership/expansion over the loaded R4 content plus
 *   those code systems (src/fhir/validation/terminology.ts implements it); search uses it for the token modifiers
 *   `:in`, `:not-in`, `:below` and `:above`.
 */

/** A code system loaded from its owner's distribution files. */
export interface LoadedSystemInfo {
  /** The FHIR URL of the system (e.g. `http://loinc.org`). */
  url: string;
  /** Its name (e.g. `LOINC`). */
  name: string;
  /** The release loaded, when the files say (e.g. SNOMED CT's effective time). */
  version?: string;
  /** How many concepts were loaded. */
  count: number;
  /** Whether it has an is-a hierarchy (subsumption answers only then). */
  hierarchical: boolean;
}

export interface LoadedDesignation {
  value: string;
  use?: string;
  language?: string;
}

/** One concept of a loaded code system. */
export interface LoadedConcept {
  code: string;
  display?: string;
  /** False for a retired/inactive concept (still a known code). */
  active: boolean;
  /** Other names (synonyms, short names): a Coding.display equal to one of them is not wrong. */
  designations: LoadedDesignation[];
  /** Properties as the owner's files give them (LOINC's COMPONENT, CLASS, STATUS ...). */
  properties: { code: string; value: string }[];
  /** Direct is-a parents. */
  parents: string[];
}

/** The loaded code systems, by system URL (store-backed; every call is a bounded query). */
export interface LoadedCodeSystems {
  /** The loaded system of this URL, if any (cheap: kept in memory). */
  system(url: string): LoadedSystemInfo | undefined;
  systems(): LoadedSystemInfo[];
  concept(system: string, code: string): LoadedConcept | undefined;
  /** Whether `code` is `ancestor` or one of its descendants (is-a, transitively). */
  subsumes(system: string, ancestor: string, code: string): boolean;
  /** The descendants of `code` (not itself), at most `limit` + 1 of them (more than `limit`: too many). */
  descendants(system: string, code: string, limit: number): string[];
  /** The ancestors of `code` (not itself), at most `limit` + 1 of them. */
  ancestors(system: string, code: string, limit: number): string[];
  /**
   * Reads ahead what looking up the codes of a FHIR JSON text will ask, without blocking this thread: a store
   * whose lookups block on a miss (PostgreSQL) has it, and the service calls it before a request's handler runs.
   */
  prefetch?(document: string): Promise<void>;
  /** The value of a property of a concept, for `=` filters on it. */
  property(system: string, code: string, property: string): string[];
  /**
   * A page of concepts of a system, in code order, optionally only those whose code or display contains `text`
   * (case-insensitive); `total` counts them all.
   */
  page(
    system: string,
    options: { text?: string; offset: number; count: number },
  ): { total: number; concepts: { code: string; display?: string }[] };
}

/** A code of a code system. */
export interface SystemCode {
  system: string;
  code: string;
}

/** Codes for a search modifier, or why there are none to give. */
export type CodeListResult =
  | { kind: 'codes'; codes: SystemCode[] }
  /** The value set or code system is not known here, or cannot be expanded on the loaded content. */
  | { kind: 'unknown'; message: string }
  /** More codes than `limit`. */
  | { kind: 'too-many'; limit: number };

/** What search asks of terminology (token `:in`, `:not-in`, `:below`, `:above`). */
export interface TerminologyPort {
  /** The codes of a value set (its complete expansion), at most `limit`. */
  valueSetCodes(valueSetUrl: string, limit: number): CodeListResult;
  /** `code` and the codes it subsumes (`:below`) or that subsume it (`:above`), at most `limit`. */
  subsumptionCodes(system: string, code: string, direction: 'below' | 'above', limit: number): CodeListResult;
}
