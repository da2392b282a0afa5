/**
 * The official R4 SearchParameter definitions, loaded once, per resource type: code -> definition with a
 * compiled evaluator. Also the Patient compartment (CompartmentDefinition-patient).
 *
 * Source: `hl7.fhir.r4.examples/Bundle-searchParams.json` (the 1,375 spec-defined parameters in one file;
 * parsing it takes ~15 ms, against ~150 ms for the 1,401 single `SearchParameter-*.json` files, which add
 * only examples).
 *
 * Expressions: a parameter's expression is a union over several base types (`Account.subject | CarePlan.subject...`);
 * each type keeps the union parts that start with its own name (or `Resource.`/`DomainResource.`).
 * Nearly every part is a plain path, optionally with `as T` / `.as(T)`, `.where(resolve() is T)` or
 * `.where(field='literal')`. Those are compiled to a direct walk over the JSON (a few µs; the full fhirpath
 * engine costs ~300 µs per Observation for all its parameters). `Patient.deceased.exists() and ...` is hand-written;
 * anything else would go to fhirpath 5 with the R4 model (none of the R4 definitions do today).
 *
 * `resolve()` cannot be evaluated at write time (no store access): the rule is that
 * `X.where(resolve() is T)` keeps only the references of X that point at type T by their literal
 * `T/id` form (relative, absolute, or a contained `#id` whose contained resource is a T).
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import fhirpath from 'fhirpath';
import r4Model from 'fhirpath/fhir-context/r4/index.js';
import { toPlainJson, type FhirResource } from '../fhir-json.js';
import type { SearchParamType } from '../store/search-query.js';

export type { SearchParamType };

export interface SearchParamDef {
  code: string;
  /** The resource type this definition applies to (one per base). */
  resourceType: string;
  type: SearchParamType;
  url: string;
  /** The union parts of the official expression that apply to this type. */
  expression?: string;
  /** Reference targets (for chains and `:Type` modifiers). */
  target: string[];
  /** Evaluates the expression on a resource; undefined when this parameter is not indexed (see `unsupported`). */
  evaluate?: (resource: FhirResource) => unknown[];
  /** Composite parts as defined. */
  component?: { definition: string; expression: string }[];
  /**
   * For the composites indexed (a token, then a token, quantity, date or string): each component's type and its
   * evaluator relative to a node `evaluate` returned.
   */
  composite?: { type: SearchParamType; evaluate: (node: unknown, root: FhirResource) => unknown[] }[];
  /**
   * Set when this parameter's expression is exactly another one's, or the union of others' (Observation `combo-code`
   * = `code` | `component-code`; Patient `phonetic` = `name`): it has no rows of its own, the rows of these codes
   * answer it. Saves ~4 index rows per Observation.
   */
  indexedAs?: string[];
  /** Set on a parameter defined by a stored SearchParameter resource (src/fhir/search/custom-parameters.ts). */
  custom?: CustomParameterState;
}

/** Where a custom parameter (a stored, active SearchParameter) stands. */
export interface CustomParameterState {
  /** The SearchParameter resource's id and the version this definition is from. */
  id: string;
  versionId: number;
  /** Every current resource of its base types is indexed with it ($reindex completed for this version). */
  ready: boolean;
  /** SearchParameter.description, for the CapabilityStatement. */
  description?: string;
}

/**
 * Finds the aliases of one type (see SearchParamDef.indexedAs): a parameter whose union parts are exactly covered by
 * other parameters of the same type (and, for composites, the same component expressions). Ties (same expression)
 * keep the alphabetically first code indexed.
 */
function markAliases(defs: Map<string, SearchParamDef>): void {
  const kind = (d: SearchParamDef): string =>
    d.composite ? `${d.type}#${(d.component ?? []).map((c) => c.expression).join('$')}` : d.type;
  const indexed = [...defs.values()]
    .filter((d) => d.evaluate && d.expression && !STORE_COLUMN_PARAMS.has(d.code))
    .map((d) => ({ def: d, parts: new Set(splitUnion(d.expression!)) }))
    .sort((a, b) => a.parts.size - b.parts.size || a.def.code.localeCompare(b.def.code));
  for (const [i, a] of indexed.entries()) {
    const members = indexed
      .slice(0, i)
      .filter((b) => kind(b.def) === kind(a.def) && [...b.parts].every((p) => a.parts.has(p)));
    const covered = new Set(members.flatMap((b) => [...b.parts]));
    if (members.length === 0 || covered.size !== a.parts.size) continue;
    // The smallest set of members that covers: drop members covered by the others.
    const needed = members.filter((b) => {
      const rest = new Set(members.filter((m) => m !== b).flatMap((m) => [...m.parts]));
      return [...b.parts].some((p) => !rest.has(p));
    });
    a.def.indexedAs = [...new Set(needed.flatMap((b) => b.def.indexedAs ?? [b.def.code]))];
  }
}

/** Evaluator of a component expression relative to the composite's nodes (path `startPath`); plain paths only. */
function compileComponent(
  expression: string,
  resourceType: string,
  startPath: string,
): ((node: unknown, root: FhirResource) => unknown[]) | undefined {
  const parts = splitUnion(expression).map((p) => compileSimplePart(p, resourceType, startPath));
  if (parts.some((p) => p === undefined)) return undefined;
  return (node, root) => {
    const out: unknown[] = [];
    for (const steps of parts as Step[][]) runSteps(root, steps, out, node);
    return out;
  };
}

const require = createRequire(import.meta.url);
const examplesDir = dirname(require.resolve('hl7.fhir.r4.examples/package.json'));

interface Model {
  choiceTypePaths: Record<string, string[]>;
  path2Type: Record<string, string>;
  type2Parent: Record<string, string>;
}
const model = r4Model as unknown as Model;

// ---- the fast path: compiled walks over the JSON ----

type Step =
  | { kind: 'field'; keys: string[] }
  | { kind: 'index'; index: number }
  | { kind: 'refType'; resourceType: string }
  | { kind: 'eq'; field: string; literal: string };

const capitalise = (s: string): string => s.charAt(0).toUpperCase() + s.slice(1);

/** Splits `a.b.where(x='y').c` on dots outside parentheses and quotes. */
function splitPath(text: string): string[] | undefined {
  const out: string[] = [];
  let depth = 0;
  let quoted = false;
  let start = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === "'") quoted = !quoted;
    else if (quoted) continue;
    else if (c === '(') depth++;
    else if (c === ')') depth--;
    else if (c === '.' && depth === 0) {
      out.push(text.slice(start, i));
      start = i + 1;
    }
  }
  if (depth !== 0 || quoted) return undefined;
  out.push(text.slice(start));
  return out;
}

/**
 * Compiles one union part to steps, or returns undefined when it is not a plain path.
 * `(Observation.value as Quantity)` and `Observation.value.as(Quantity)` both become field step `valueQuantity`.
 */
function compileSimplePart(part: string, resourceType: string, startPath = resourceType): Step[] | undefined {
  let text = part.trim();
  // `(X as T).rest` and `(X as T)` -> `X.as(T).rest`
  const paren = /^\(([^()]*)\)(.*)$/.exec(text);
  if (paren) text = paren[1] + paren[2];
  text = text.replace(/ as ([A-Za-z]\w*)/g, '.as($1)');
  const segments = splitPath(text);
  if (!segments || segments.length < 1) return undefined;
  // A bare path (`name | alias` of InsurancePlan) starts at the resource.
  if (/^[a-z]/.test(segments[0])) segments.unshift(resourceType);
  const [root, ...rest] = segments;
  if (root !== resourceType && root !== 'Resource' && root !== 'DomainResource') return undefined;
  const steps: Step[] = [];
  let path = startPath;
  for (let i = 0; i < rest.length; i++) {
    const segment = rest[i];
    let m: RegExpExecArray | null;
    if (/^[a-z]\w*$/.test(segment)) {
      const nextPath = `${path}.${segment}`;
      const choices = model.choiceTypePaths[nextPath];
      const asType = /^as\(([A-Za-z]\w*)\)$/.exec(rest[i + 1] ?? '');
      if (choices && asType) {
        steps.push({ kind: 'field', keys: [segment + capitalise(asType[1])] });
        path = capitalise(asType[1]);
        i++;
      } else if (choices) {
        steps.push({ kind: 'field', keys: choices.map((t) => segment + t) });
        path = '?';
      } else {
        steps.push({ kind: 'field', keys: [segment] });
        const type = model.path2Type[nextPath];
        path = type && type !== 'BackboneElement' && type !== 'Element' ? type : nextPath;
      }
    } else if ((m = /^([a-z]\w*)\[(\d+)\]$/.exec(segment)) && !model.choiceTypePaths[`${path}.${m[1]}`]) {
      // `Bundle.entry[0].resource`
      steps.push({ kind: 'field', keys: [m[1]] }, { kind: 'index', index: Number(m[2]) });
      const type = model.path2Type[`${path}.${m[1]}`];
      path = type && type !== 'BackboneElement' && type !== 'Element' ? type : `${path}.${m[1]}`;
    } else if ((m = /^as\(([A-Za-z]\w*)\)$/.exec(segment))) {
      return undefined; // `as` on a non-choice element: leave it to fhirpath
    } else if ((m = /^where\(resolve\(\) is ([A-Z]\w*)\)$/.exec(segment))) {
      steps.push({ kind: 'refType', resourceType: m[1] });
    } else if ((m = /^where\(([a-z]\w*)\s*=\s*'([^']*)'\)$/.exec(segment))) {
      steps.push({ kind: 'eq', field: m[1], literal: m[2] });
    } else {
      return undefined;
    }
  }
  return steps;
}

function referencesType(root: FhirResource, value: unknown, resourceType: string): boolean {
  if (value === null || typeof value !== 'object') return false;
  const reference = (value as { reference?: unknown }).reference;
  if (typeof reference !== 'string') return false;
  if (reference.startsWith('#')) {
    const contained = (root.contained as FhirResource[] | undefined)?.find(
      (c) => c?.id === reference.slice(1),
    );
    return contained?.resourceType === resourceType;
  }
  const typed = reference.split('/_history/')[0].split('/');
  return typed.length >= 2 && typed[typed.length - 2] === resourceType;
}

function runSteps(root: FhirResource, steps: Step[], out: unknown[], start: unknown = root): void {
  let nodes: unknown[] = [start];
  for (const step of steps) {
    if (step.kind === 'index') {
      nodes = step.index < nodes.length ? [nodes[step.index]] : [];
      if (nodes.length === 0) return;
      continue;
    }
    const next: unknown[] = [];
    for (const node of nodes) {
      if (node === null || typeof node !== 'object') continue;
      if (step.kind === 'field') {
        for (const key of step.keys) {
          const value = (node as Record<string, unknown>)[key];
          if (value === undefined || value === null) continue;
          if (Array.isArray(value)) {
            for (const item of value) if (item !== null && item !== undefined) next.push(item);
          } else next.push(value);
        }
      } else if (step.kind === 'refType') {
        if (referencesType(root, node, step.resourceType)) next.push(node);
      } else if ((node as Record<string, unknown>)[step.field] === step.literal) {
        next.push(node);
      }
    }
    nodes = next;
    if (nodes.length === 0) return;
  }
  for (const node of nodes) out.push(node);
}

/** Hand-written equivalents of the non-path expressions worth the speed (Patient is in every bulk load). */
const HAND_WRITTEN: Record<string, (r: FhirResource) => unknown[]> = {
  // `deceased.exists() and deceased != false`: deceasedBoolean true, or any deceasedDateTime
  'Patient.deceased.exists() and Patient.deceased != false': (r) => [
    r.deceasedBoolean === true || typeof r.deceasedDateTime === 'string',
  ],
};

/** Builds the evaluator of an expression for one type; undefined if neither path can evaluate it. */
function compileExpression(
  expression: string,
  resourceType: string,
): ((r: FhirResource) => unknown[]) | undefined {
  const handWritten = HAND_WRITTEN[expression];
  if (handWritten) return handWritten;
  const parts = splitUnion(expression);
  const compiled = parts.map((p) => compileSimplePart(p, resourceType));
  if (compiled.every((c) => c !== undefined)) {
    const all = compiled as Step[][];
    return (resource) => {
      const out: unknown[] = [];
      for (const steps of all) runSteps(resource, steps, out);
      return out;
    };
  }
  // fhirpath 5 with the R4 model; `resolve()` rewritten per the rule above.
  const rewritten = expression.replace(
    /\.where\(resolve\(\) is ([A-Z]\w*)\)/g,
    ".where(reference.matches('(^|/)$1/[^/]+(/_history/.*)?$'))",
  );
  try {
    const fn = fhirpath.compile(rewritten, r4Model as never);
    return (resource) => {
      try {
        return fn(toPlainJson(resource) as never) as unknown[];
      } catch {
        return [];
      }
    };
  } catch {
    return undefined;
  }
}

/** Top-level ` | ` split (the R4 expressions never put `|` inside parentheses, but check anyway). */
function splitUnion(expression: string): string[] {
  const parts: string[] = [];
  let depth = 0;
  let start = 0;
  for (let i = 0; i < expression.length; i++) {
    const c = expression[i];
    if (c === '(') depth++;
    else if (c === ')') depth--;
    else if (c === '|' && depth === 0) {
      parts.push(expression.slice(start, i).trim());
      start = i + 1;
    }
  }
  parts.push(expression.slice(start).trim());
  return parts.filter((p) => p.length > 0);
}

// ---- loading ----

interface RawSearchParameter {
  url: string;
  code: string;
  base: string[];
  type: SearchParamType;
  expression?: string;
  target?: string[];
  component?: { definition: string; expression: string }[];
}

export interface SearchDefinitions {
  /** Parameters per resource type (resource-level ones like `_tag` included in every type). */
  byType: Map<string, Map<string, SearchParamDef>>;
  /** All resource types. */
  resourceTypes: string[];
  /** `Type.code` of parameters that are defined but not indexed (composite, special, no expression...). */
  unsupported: string[];
  /** Patient compartment: resource type -> parameter codes that link a resource to its patient(s). */
  patientCompartment: Map<string, string[]>;
}

function isResourceType(type: string): boolean {
  let t: string | undefined = type;
  for (let guard = 0; t && guard < 10; guard++) {
    const parent: string | undefined = model.type2Parent[t];
    if (parent === 'DomainResource' || parent === 'Resource') return t !== 'DomainResource';
    t = parent;
  }
  return false;
}

/** Parameters the store answers from its own columns rather than index rows. */
export const STORE_COLUMN_PARAMS = new Set(['_id', '_lastUpdated']);

function load(): SearchDefinitions {
  const bundle = JSON.parse(readFileSync(join(examplesDir, 'Bundle-searchParams.json'), 'utf8')) as {
    entry: { resource: RawSearchParameter }[];
  };
  const resourceTypes = Object.keys(model.type2Parent).filter(isResourceType).sort();
  const byType = new Map<string, Map<string, SearchParamDef>>(resourceTypes.map((t) => [t, new Map()]));
  const unsupported: string[] = [];
  const typeByUrl = new Map(bundle.entry.map(({ resource }) => [resource.url, resource.type]));
  const compositeOf = (
    raw: RawSearchParameter,
    resourceType: string,
    expression: string,
  ): SearchParamDef['composite'] => {
    const components = raw.component ?? [];
    const types = components.map((c) => typeByUrl.get(c.definition));
    if (
      components.length !== 2 ||
      types[0] !== 'token' ||
      !['token', 'quantity', 'date', 'string'].includes(types[1] ?? '')
    )
      return undefined;
    // The nodes' path: `Observation.component` for `Observation.component`, the type for `Observation`. For unions
    // (`Observation | Observation.component` of combo-*), the first part's: the R4 ones share their components' shape.
    const parts = splitUnion(expression);
    if (!parts.every((p) => /^[A-Z][A-Za-z]+(\.[a-z]\w*)*$/.test(p))) return undefined;
    const startPath = parts[0];
    const compiled = components.map((c) => compileComponent(c.expression, resourceType, startPath));
    if (compiled.some((c) => c === undefined)) return undefined;
    return compiled.map((evaluate, i) => ({ type: types[i] as SearchParamType, evaluate: evaluate! }));
  };
  const add = (raw: RawSearchParameter, resourceType: string, expression: string | undefined): void => {
    const def: SearchParamDef = {
      code: raw.code,
      resourceType,
      type: raw.type,
      url: raw.url,
      expression,
      target: raw.target ?? [],
      component: raw.component,
    };
    if (raw.type === 'composite' && expression) {
      const composite = compositeOf(raw, resourceType, expression);
      if (composite) {
        def.composite = composite;
        def.evaluate = compileExpressionLazily(expression, resourceType);
      }
    }
    const indexable =
      raw.type !== 'composite' && raw.type !== 'special' && expression && !STORE_COLUMN_PARAMS.has(raw.code);
    if (indexable) def.evaluate = compileExpressionLazily(expression, resourceType);
    else if (!def.composite && !STORE_COLUMN_PARAMS.has(raw.code))
      unsupported.push(`${resourceType}.${raw.code}`);
    byType.get(resourceType)?.set(raw.code, def);
  };
  for (const { resource: raw } of bundle.entry) {
    for (const base of raw.base) {
      if (base === 'Resource' || base === 'DomainResource') {
        for (const type of resourceTypes) {
          if (base === 'DomainResource' && (type === 'Bundle' || type === 'Binary' || type === 'Parameters'))
            continue;
          add(raw, type, raw.expression?.replace(/^(Resource|DomainResource)\./, `${type}.`));
        }
        continue;
      }
      let expression = raw.expression;
      if (expression && raw.base.length > 1) {
        const own = splitUnion(expression).filter((p) => p.replace(/^\(/, '').startsWith(`${base}.`));
        expression = own.length > 0 ? own.join(' | ') : expression;
      }
      add(raw, base, expression);
    }
  }
  const compartment = JSON.parse(
    readFileSync(join(examplesDir, 'CompartmentDefinition-patient.json'), 'utf8'),
  ) as {
    resource: { code: string; param?: string[] }[];
  };
  const patientCompartment = new Map<string, string[]>();
  for (const r of compartment.resource) if (r.param?.length) patientCompartment.set(r.code, r.param);
  for (const defs of byType.values()) markAliases(defs);
  return { byType, resourceTypes, unsupported: unsupported.sort(), patientCompartment };
}

/** Expressions compile on first use: most types are never written, and compiling all costs ~40 ms. */
function compileExpressionLazily(expression: string, resourceType: string): (r: FhirResource) => unknown[] {
  let fn: ((r: FhirResource) => unknown[]) | undefined | null = null;
  return (resource) => {
    if (fn === null) fn = compileExpression(expression, resourceType);
    return fn ? fn(resource) : [];
  };
}

let loaded: SearchDefinitions | undefined;

/** The definitions, loaded on first call (~20 ms) and kept. */
export function searchDefinitions(): SearchDefinitions {
  loaded ??= load();
  return loaded;
}

// ---- custom parameters: stored SearchParameter resources (src/fhir/search/custom-parameters.ts) ----

/** Per type with custom parameters: every parameter indexed at write time (base + active custom, ready or not). */
let indexedByType = new Map<string, Map<string, SearchParamDef>>();
/** Per type with custom parameters: what a search may use (base + ready custom). */
let searchableByType = new Map<string, Map<string, SearchParamDef>>();

/**
 * Replaces the custom parameters of this process (the registry of the store it serves calls it at start and on
 * every change). A parameter not yet `ready` is indexed on writes but not searchable: until `$reindex` completes, a
 * search on it would miss what was stored before.
 */
export function setCustomSearchParameters(defs: readonly SearchParamDef[]): void {
  const base = searchDefinitions().byType;
  const indexed = new Map<string, Map<string, SearchParamDef>>();
  const searchable = new Map<string, Map<string, SearchParamDef>>();
  for (const def of defs) {
    const own = base.get(def.resourceType);
    if (!own || own.has(def.code)) continue; // never shadows a base parameter
    let all = indexed.get(def.resourceType);
    if (!all) indexed.set(def.resourceType, (all = new Map(own)));
    all.set(def.code, def);
    let usable = searchable.get(def.resourceType);
    if (!usable) searchable.set(def.resourceType, (usable = new Map(own)));
    if (def.custom?.ready !== false) usable.set(def.code, def);
  }
  indexedByType = indexed;
  searchableByType = searchable;
}

/** The parameters indexed at write time (base and custom, a custom one also while it waits for `$reindex`). */
export function indexedParametersOf(resourceType: string): Map<string, SearchParamDef> | undefined {
  return indexedByType.get(resourceType) ?? searchDefinitions().byType.get(resourceType);
}

/** A custom parameter of a type that is indexed on writes but waits for `$reindex`, for the refusal's words. */
export function pendingCustomParameter(resourceType: string, code: string): SearchParamDef | undefined {
  const def = indexedByType.get(resourceType)?.get(code);
  return def?.custom && !def.custom.ready ? def : undefined;
}

/**
 * The definition of one custom parameter for one of its base types (`raw.expression` may be a union over several
 * bases: the type keeps its own parts, as for the official ones). Undefined when the expression cannot be compiled.
 */
export function customParameterDefinition(
  raw: { url: string; code: string; type: SearchParamType; expression: string; target?: string[] },
  resourceType: string,
  state: CustomParameterState,
): SearchParamDef | undefined {
  const own = splitUnion(raw.expression).filter((p) => p.replace(/^\(/, '').startsWith(`${resourceType}.`));
  const expression = own.length > 0 ? own.join(' | ') : raw.expression;
  const evaluate = compileExpression(expression, resourceType);
  if (!evaluate) return undefined;
  return {
    code: raw.code,
    resourceType,
    type: raw.type,
    url: raw.url,
    expression,
    target: raw.target ?? [],
    evaluate,
    custom: state,
  };
}

/**
 * Whether an index row belongs to a base parameter of the type (`code` or `code:text`...), not to a custom one or
 * to the `$reindex` mark: the audit compares only those with what a version's text gives (custom rows depend on
 * when the parameter was added and reindexed, not on the text alone).
 */
export function isBaseIndexRow(resourceType: string, param: string): boolean {
  const colon = param.indexOf(':');
  return (
    searchDefinitions()
      .byType.get(resourceType)
      ?.has(colon < 0 ? param : param.slice(0, colon)) === true
  );
}

/** The parameters a search may use: base ones and custom ones that are ready. */
export function searchParametersOf(resourceType: string): Map<string, SearchParamDef> | undefined {
  return searchableByType.get(resourceType) ?? searchDefinitions().byType.get(resourceType);
}

export function searchParameter(resourceType: string, code: string): SearchParamDef | undefined {
  return (searchableByType.get(resourceType) ?? searchDefinitions().byType.get(resourceType))?.get(code);
}

/** The index params of a parameter indexed under others' codes (StoreSearchRequest.indexedAs). */
export function indexedAs(resourceType: string, code: string): readonly string[] | undefined {
  return searchParameter(resourceType, code)?.indexedAs;
}

export function isKnownResourceType(type: string): boolean {
  return searchDefinitions().byType.has(type);
}

/** Normalises a literal reference to `Type/id` (drops base URL and `_history`); undefined if it is not one. */
export function referenceKey(reference: string): string | undefined {
  const noHistory = reference.split('/_history/')[0];
  const m = /(?:^|\/)([A-Z][A-Za-z]+)\/([A-Za-z0-9\-.]{1,64})$/.exec(noHistory);
  return m ? `${m[1]}/${m[2]}` : undefined;
}

/**
 * The `Patient/{id}` compartments a resource belongs to (a Patient: itself, plus the patients its
 * compartment parameters name, e.g. `link`). Contained and absolute references to other servers are not followed.
 */
export function patientCompartments(resource: FhirResource): string[] {
  const defs = searchDefinitions();
  const out = new Set<string>();
  if (resource.resourceType === 'Patient' && resource.id) out.add(`Patient/${resource.id}`);
  const params = defs.patientCompartment.get(resource.resourceType);
  if (params) {
    const byCode = defs.byType.get(resource.resourceType);
    for (const code of params) {
      const def = byCode?.get(code);
      if (!def?.evaluate) continue;
      for (const value of def.evaluate(resource)) {
        const reference = (value as { reference?: unknown } | null)?.reference;
        if (typeof reference !== 'string' || /^[a-z]+:\/\//i.test(reference)) continue;
        const key = referenceKey(reference);
        if (key?.startsWith('Patient/')) out.add(key);
      }
    }
  }
  return [...out];
}
