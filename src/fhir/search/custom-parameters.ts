/**
 * Custom search parameters: stored `SearchParameter` resources with status `active` and a FHIRPath expression
 * (http://hl7.org/fhir/R4/searchparameter.html). docs/search.md, "Custom search parameters".
 *
 * - Writing one: admins only (role admin, or the open development mode); an active one must be indexable here:
 *   type string, token, reference, date, number, uri or quantity; base types this server knows; a code of its own
 *   (not a base parameter of any of its bases, not `_`-prefixed, no `:` or `.`); an expression that parses and
 *   calls none of the functions that need the store, a terminology server or the outside world (resolve(),
 *   memberOf(), conformsTo(), ...) or that would log data (trace()). Refusals are 400 naming the function.
 * - Indexing: `CustomSearchParameters` reads the active ones from the store at start, after each SearchParameter
 *   write of this process, and every `refreshMs` (other replicas' writes), and installs them as the process's
 *   overlay (definitions.ts `setCustomSearchParameters`): from then on every write indexes them.
 * - Searching: only once `$reindex` has indexed the data stored before (src/bulk/reindex.ts). The job records that
 *   by a row `_reindexed` = the SearchParameter's version in that SearchParameter's own index rows: any later write
 *   of the SearchParameter replaces its rows, so a changed, retired or deleted definition is never "ready" by an
 *   earlier run. Until then a search on it is refused (400, `search-param-unsupported`, saying why).
 */
import fhirpath from 'fhirpath';
import { toPlainJson, type FhirResource } from '../fhir-json.js';
import { fhirError } from '../outcome.js';
import type { IndexEntry, ResourceStore, StoredVersion } from '../store/resource-store.js';
import type { SearchPosition } from '../store/search-query.js';
import {
  customParameterDefinition,
  isKnownResourceType,
  searchDefinitions,
  setCustomSearchParameters,
  type SearchParamDef,
  type SearchParamType,
} from './definitions.js';
import { parseSearch } from './parse.js';

/** The index row by which `$reindex` marks a SearchParameter version as indexed over all existing data. */
export const REINDEXED_PARAM = '_reindexed';

/** The parameter types the index supports for custom parameters. */
export const CUSTOM_PARAM_TYPES: readonly SearchParamType[] = [
  'string',
  'token',
  'reference',
  'date',
  'number',
  'uri',
  'quantity',
];

/**
 * FHIRPath functions refused in a custom expression: they need the store (resolve), a terminology or validation
 * service (memberOf, subsumes, subsumedBy, conformsTo, validateVS/CS, translate, lookup...), or log what they see
 * (trace: health data in logs).
 */
export const REFUSED_FUNCTIONS: ReadonlySet<string> = new Set([
  'resolve',
  'memberOf',
  'conformsTo',
  'subsumes',
  'subsumedBy',
  'htmlChecks',
  'trace',
  'expand',
  'lookup',
  'validateVS',
  'validateCS',
  'translate',
  'elementDefinition',
  'slice',
  'checkModifiers',
]);

/** Environment variables an expression may read (the others are services: %terminologies, %factory, %server). */
const ALLOWED_VARIABLES = new Set(['resource', 'rootResource', 'context', 'ucum', 'sct', 'loinc']);

const CODE_PATTERN = /^[A-Za-z][A-Za-z0-9_-]{0,63}$/;

/** The fields of an active SearchParameter that define what is indexed. */
export interface CustomParameterDefinition {
  id: string;
  versionId: number;
  url: string;
  code: string;
  base: string[];
  type: SearchParamType;
  expression: string;
  target?: string[];
  description?: string;
}

interface FhirPathNode {
  type?: string;
  text?: string;
  children?: FhirPathNode[];
}

/** Function names and `%variables` an expression uses (walks the fhirpath parse tree). */
function namesIn(node: FhirPathNode, out: { functions: Set<string>; variables: Set<string> }): void {
  if (node.type === 'Functn') {
    const name = node.children?.find((c) => c.type === 'Identifier')?.text;
    if (name) out.functions.add(name);
  } else if (node.type === 'ExternalConstant') {
    const name = (node.children?.[0]?.text ?? node.text ?? '').replace(/^`|`$|^'|'$/g, '');
    out.variables.add(name);
  }
  for (const child of node.children ?? []) namesIn(child, out);
}

function invalid(message: string, expression?: string): never {
  throw fhirError('search-parameter-invalid', message, expression ? { expression } : undefined);
}

/**
 * The definition of an active SearchParameter, checked as this server can index it; 400 naming what it cannot.
 * Undefined when the resource is not active (a draft or retired parameter defines nothing here).
 */
export function readCustomParameter(
  resource: FhirResource,
  id: string,
  versionId: number,
): CustomParameterDefinition | undefined {
  const plain = toPlainJson(resource) as Record<string, unknown>;
  if (plain.status !== 'active') return undefined;
  const code = plain.code;
  if (typeof code !== 'string' || !CODE_PATTERN.test(code))
    invalid(
      `SearchParameter.code '${String(code)}' cannot be a custom parameter's code here (a letter, then letters, digits, '-' or '_'; at most 64)`,
      'SearchParameter.code',
    );
  const type = plain.type as SearchParamType;
  if (!CUSTOM_PARAM_TYPES.includes(type))
    invalid(
      `SearchParameter.type '${String(plain.type)}' is not indexed for custom parameters (${CUSTOM_PARAM_TYPES.join(', ')})`,
      'SearchParameter.type',
    );
  const base = Array.isArray(plain.base) ? (plain.base as unknown[]) : [];
  if (base.length === 0) invalid('SearchParameter.base names no resource type', 'SearchParameter.base');
  for (const b of base) {
    if (typeof b !== 'string' || !isKnownResourceType(b))
      invalid(
        `SearchParameter.base '${String(b)}' is not a resource type this server indexes (name the types themselves, not Resource or DomainResource)`,
        'SearchParameter.base',
      );
    if (searchDefinitions().byType.get(b)?.has(code))
      invalid(
        `SearchParameter.code '${code}' is already a search parameter of ${b}: a custom parameter needs a code of its own`,
        'SearchParameter.code',
      );
  }
  const expression = plain.expression;
  if (typeof expression !== 'string' || expression.trim() === '')
    invalid('An active SearchParameter needs a FHIRPath expression', 'SearchParameter.expression');
  if (plain.xpathUsage !== undefined && plain.xpathUsage !== 'normal')
    invalid(`SearchParameter.xpathUsage '${String(plain.xpathUsage)}' is not indexed (normal only)`);
  checkExpression(expression);
  const target = Array.isArray(plain.target) ? (plain.target as string[]) : undefined;
  return {
    id,
    versionId,
    url: typeof plain.url === 'string' ? plain.url : '',
    code,
    base: base as string[],
    type,
    expression,
    target,
    description: typeof plain.description === 'string' ? plain.description : undefined,
  };
}

/** Parses the expression and refuses the functions and variables listed above (400 naming the first one). */
function checkExpression(expression: string): void {
  let tree: FhirPathNode;
  try {
    tree = fhirpath.parse(expression) as FhirPathNode;
  } catch (err) {
    invalid(
      `SearchParameter.expression is not valid FHIRPath: ${(err as Error).message.split('\n')[0]}`,
      'SearchParameter.expression',
    );
  }
  const names = { functions: new Set<string>(), variables: new Set<string>() };
  namesIn(tree, names);
  for (const name of names.functions)
    if (REFUSED_FUNCTIONS.has(name))
      invalid(
        `SearchParameter.expression calls ${name}(), which this server does not evaluate while indexing (it needs the store, a terminology service or would log data)`,
        'SearchParameter.expression',
      );
  for (const name of names.variables)
    if (!ALLOWED_VARIABLES.has(name))
      invalid(
        `SearchParameter.expression reads %${name}, which is not available while indexing`,
        'SearchParameter.expression',
      );
}

/** Who may write SearchParameters: admins (and everyone in the open development mode). */
export function mayDefineSearchParameters(role: string): boolean {
  return role === 'admin' || role === 'open';
}

/** The versionId a `$reindex` recorded in a SearchParameter's own index rows, if any. */
export function reindexedVersion(entries: readonly IndexEntry[]): number | undefined {
  const mark = entries.find((e) => e.param === REINDEXED_PARAM);
  return mark?.value !== undefined ? Number(mark.value) : undefined;
}

/** The index row that marks version `versionId` of a SearchParameter as indexed over all existing data. */
export function reindexedMark(versionId: number): IndexEntry {
  return { param: REINDEXED_PARAM, type: 'token', value: String(versionId) };
}

export interface CustomParameterLog {
  warn(obj: object | string, msg?: string): void;
}

/**
 * The custom parameters of one store, kept installed as this process's overlay (see the file comment). One store
 * per process (the data directory lock; PostgreSQL replicas are processes of their own).
 */
export class CustomSearchParameters {
  private current: CustomParameterDefinition[] = [];
  private ready = new Set<string>();
  private timer?: NodeJS.Timeout;
  private refreshing?: Promise<void>;
  private again = false;

  /** The base types of what was installed last. */
  private installedTypes = new Set<string>();

  constructor(
    private readonly store: ResourceStore,
    private readonly log: CustomParameterLog,
    /** Called with the types whose custom parameters may have changed (the CapabilityStatement is declared anew). */
    private readonly onChange: (types: ReadonlySet<string>) => void = () => undefined,
  ) {}

  /** The active definitions as last read (the reindex job's work list). */
  get definitions(): readonly CustomParameterDefinition[] {
    return this.current;
  }

  /** Whether version `versionId` of SearchParameter `id` is indexed over all existing data. */
  isReady(definition: CustomParameterDefinition): boolean {
    return this.ready.has(`${definition.id}/${definition.versionId}`);
  }

  /** Reads the store at start, then every `refreshMs` (0: only after this process's own writes). */
  async start(refreshMs: number): Promise<void> {
    await this.refresh();
    if (refreshMs > 0) {
      this.timer = setInterval(() => {
        this.refresh().catch((err: unknown) =>
          this.log.warn({ err: (err as Error).message }, 'custom search parameters not refreshed'),
        );
      }, refreshMs);
      this.timer.unref();
    }
  }

  close(): void {
    if (this.timer) clearInterval(this.timer);
    setCustomSearchParameters([]);
  }

  /** Reads the active SearchParameters and their reindex marks, and installs them. Calls in flight coalesce. */
  refresh(): Promise<void> {
    if (this.refreshing) {
      this.again = true;
      return this.refreshing;
    }
    this.refreshing = (async () => {
      try {
        do {
          this.again = false;
          await this.load();
        } while (this.again);
      } finally {
        this.refreshing = undefined;
      }
    })();
    return this.refreshing;
  }

  /**
   * A SearchParameter version this process just stored (`resource` absent: deleted): installed at once, so the
   * next write indexes it. Not ready: the new version has no `$reindex` mark. Synchronous (no store read: it may
   * run inside the write's transaction); the periodic refresh corrects a write whose transaction rolled back.
   */
  written(version: StoredVersion, resource: FhirResource | undefined): void {
    let definition: CustomParameterDefinition | undefined;
    try {
      definition = resource && readCustomParameter(resource, version.id, version.versionId);
    } catch {
      definition = undefined; // the write path refused it already; a rule changed since: not indexed
    }
    const others = this.current.filter((d) => d.id !== version.id);
    this.current = definition ? [...others, definition] : others;
    this.install();
  }

  private install(): void {
    setCustomSearchParameters(
      this.current.flatMap((d) => toDefs(d, this.ready.has(`${d.id}/${d.versionId}`))),
    );
    const types = new Set(this.current.flatMap((d) => d.base));
    const changed = new Set([...types, ...this.installedTypes]);
    this.installedTypes = types;
    if (changed.size > 0) this.onChange(changed);
  }

  private async load(): Promise<void> {
    const definitions: CustomParameterDefinition[] = [];
    const ready = new Set<string>();
    for (const version of await activeSearchParameters(this.store)) {
      let definition: CustomParameterDefinition | undefined;
      try {
        definition = readCustomParameter(
          JSON.parse(version.json!) as FhirResource,
          version.id,
          version.versionId,
        );
      } catch {
        // Stored before these rules (or by another path): not indexed. Its id only, never its content.
        this.log.warn({ searchParameter: version.id }, 'stored SearchParameter cannot be indexed: ignored');
        continue;
      }
      if (!definition) continue;
      if (
        definitions.some((d) => d.code === definition.code && d.base.some((b) => definition.base.includes(b)))
      ) {
        this.log.warn({ searchParameter: version.id }, 'custom search parameter code used twice: ignored');
        continue;
      }
      definitions.push(definition);
      const entries = this.store.indexEntries
        ? await this.store.indexEntries('SearchParameter', version.id)
        : [];
      if (reindexedVersion(entries) === version.versionId) ready.add(`${version.id}/${version.versionId}`);
    }
    this.current = definitions;
    this.ready = ready;
    this.install();
  }
}

/** One SearchParamDef per base type. */
function toDefs(definition: CustomParameterDefinition, ready: boolean): SearchParamDef[] {
  const state = {
    id: definition.id,
    versionId: definition.versionId,
    ready,
    description: definition.description,
  };
  return definition.base.flatMap((base) => {
    const def = customParameterDefinition(definition, base, state);
    return def ? [def] : [];
  });
}

/** Every current, active SearchParameter in the store (by the index of its `status`). */
export async function activeSearchParameters(store: ResourceStore): Promise<StoredVersion[]> {
  if (!store.search) return [];
  const query = parseSearch(
    { status: ['active'], _sort: ['_id'], _count: ['500'] },
    { resourceType: 'SearchParameter' },
  );
  const out: StoredVersion[] = [];
  let after: SearchPosition | undefined;
  for (;;) {
    const page = await store.search({ query, canRead: () => true, after });
    for (const version of page.versions) if (!version.deleted && version.json) out.push(version);
    if (!page.hasMore || !page.next) return out;
    after = page.next;
  }
}
