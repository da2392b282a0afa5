/**
 * FHIRPath invariants: every constraint expression is compiled once (per base path) with fhirpath and its R4 model.
 * The hottest core invariants are implemented natively, because they run on every resource and as FHIRPath they
 * cost tens to hundreds of microseconds (ele-1, ext-1 live in the walker; dom-2..6, ref-1, per-1, qty-3 here).
 * dom-3 is native because R4's expression throws in fhirpath.js (`as()` on a collection).
 */
import fhirpath from 'fhirpath';
import r4model from 'fhirpath/fhir-context/r4';
import { arrayField, field, type JsonObject } from '../definitions/json.js';

/** The FHIRPath environment of an invariant: %resource and %rootResource. */
export interface InvariantEnv {
  resource: JsonObject;
  rootResource: JsonObject;
  /** %extension, in an extension's context invariants. */
  extension?: JsonObject;
}

export type Evaluator = (node: JsonObject, env: InvariantEnv) => boolean | undefined;

type CompiledExpression = (node: JsonObject, env: InvariantEnv) => unknown[];

const compiled = new Map<string, CompiledExpression | null>();

function compileExpression(base: string | undefined, expression: string): CompiledExpression | null {
  const key = `${base ?? ''}\u0000${expression}`;
  let fn = compiled.get(key);
  if (fn === undefined) {
    try {
      const path = base ? { base, expression } : expression;
      fn = fhirpath.compile(
        path as never,
        r4model as never,
        { traceFn: () => undefined } as never,
      ) as unknown as CompiledExpression;
    } catch {
      fn = null;
    }
    compiled.set(key, fn);
  }
  return fn;
}

/** Native implementations of core invariants, keyed by `key|expression` (profiles that redefine a key keep FHIRPath). */
/**
 * Native evaluators by key, then by exact expression (a profile may reuse a key with another expression).
 * Two lookups of the definitions' own strings, whose hashes V8 keeps: no key string built per evaluation.
 */
const NATIVE = new Map<string, Map<string, Evaluator>>();
function native(key: string, expression: string, fn: Evaluator): void {
  let byExpression = NATIVE.get(key);
  if (!byExpression) NATIVE.set(key, (byExpression = new Map()));
  byExpression.set(expression, fn);
}
function nativeEvaluator(key: string, expression: string): Evaluator | undefined {
  return NATIVE.get(key)?.get(expression);
}

const has = (v: unknown): boolean => v !== undefined && v !== null;

/**
 * `contained` of a resource. A `contained` that is not an array throws (the evaluation is then reported as not
 * decided, `ok` with an error), as reading it as an array always did.
 */
function containedOf(resource: JsonObject | undefined): unknown[] {
  const contained = resource?.contained ?? [];
  if (!Array.isArray(contained)) throw new TypeError('contained is not an array');
  return contained;
}

native(
  'dom-2',
  'contained.contained.empty()',
  (r) => !containedOf(r).some((c) => has(field(c, 'contained'))),
);
native(
  'dom-4',
  'contained.meta.versionId.empty() and contained.meta.lastUpdated.empty()',
  (r) =>
    !containedOf(r).some(
      (c) => has(field(field(c, 'meta'), 'versionId')) || has(field(field(c, 'meta'), 'lastUpdated')),
    ),
);
native(
  'dom-5',
  'contained.meta.security.empty()',
  (r) => !containedOf(r).some((c) => has(field(field(c, 'meta'), 'security'))),
);
native('dom-6', 'text.`div`.exists()', (r) => has(field(r.text, 'div')));

native('qty-3', 'code.empty() or system.exists()', (q) => !has(q.code) || has(q.system));
native('per-1', 'start.hasValue().not() or end.hasValue().not() or (start <= end)', (p) => {
  if (typeof p.start !== 'string' || typeof p.end !== 'string') return true;
  // Different precisions compare as empty in FHIRPath, and an empty invariant fails (as in the reference validator).
  const c = compareDateTimes(p.start, p.end);
  return c === -1 || c === 0;
});
native(
  'ref-1',
  "reference.startsWith('#').not() or (reference.substring(1).trace('url') in %rootResource.contained.id.trace('ids'))",
  (ref, env) => {
    const r = ref.reference;
    if (typeof r !== 'string' || !r.startsWith('#')) return true;
    const id = r.slice(1);
    if (id === '') return true;
    return containedOf(env.rootResource).some((c) => field(c, 'id') === id);
  },
);
const hasChoice = (o: JsonObject, stem: string): boolean => {
  for (const k in o)
    if (
      k.length > stem.length &&
      k.startsWith(stem) &&
      k.charCodeAt(stem.length) < 91 &&
      k.charCodeAt(stem.length) > 64
    )
      return true;
  return false;
};
const nonEmpty = (v: unknown): boolean => (Array.isArray(v) ? v.length > 0 : has(v));

// The R4 vital-signs profiles (every Observation with a vital-sign LOINC code goes through vs-2).
native(
  'vs-2',
  '(component.empty() and hasMember.empty()) implies (dataAbsentReason.exists() or value.exists())',
  (o) => nonEmpty(o.component) || nonEmpty(o.hasMember) || has(o.dataAbsentReason) || hasChoice(o, 'value'),
);
native(
  'vs-3',
  'value.exists() or dataAbsentReason.exists()',
  (c) => has(c.dataAbsentReason) || hasChoice(c, 'value'),
);
native(
  'obs-6',
  'dataAbsentReason.empty() or value.empty()',
  (o) => !has(o.dataAbsentReason) || !hasChoice(o, 'value'),
);
native(
  'obs-7',
  'value.empty() or component.code.where(coding.intersect(%resource.code.coding).exists()).empty()',
  (o) => {
    if (!hasChoice(o, 'value') || !Array.isArray(o.component)) return true;
    const own = arrayField(o.code, 'coding');
    return !o.component.some((c) =>
      arrayField(field(c, 'code'), 'coding').some((x) => own.some((y) => deepEqualJson(x, y))),
    );
  },
);
native('prr-1', 'orderDetail.empty() or code.exists()', (r) => !has(r.orderDetail) || has(r.code));
native('att-1', 'data.empty() or contentType.exists()', (a) => !has(a.data) || has(a.contentType));
native('cpt-2', 'value.empty() or system.exists()', (c) => !has(c.value) || has(c.system));
native('tim-1', 'duration.empty() or durationUnit.exists()', (r) => !has(r.duration) || has(r.durationUnit));
native('tim-2', 'period.empty() or periodUnit.exists()', (r) => !has(r.period) || has(r.periodUnit));
native(
  'tim-4',
  'duration.exists() implies duration >= 0',
  (r) => typeof r.duration !== 'number' || r.duration >= 0,
);
native('tim-5', 'period.exists() implies period >= 0', (r) => typeof r.period !== 'number' || r.period >= 0);
native('tim-6', 'periodMax.empty() or period.exists()', (r) => !has(r.periodMax) || has(r.period));
native('tim-7', 'durationMax.empty() or duration.exists()', (r) => !has(r.durationMax) || has(r.duration));
native('tim-8', 'countMax.empty() or count.exists()', (r) => !has(r.countMax) || has(r.count));
native(
  'tim-9',
  "offset.empty() or (when.exists() and ((when in ('C' | 'CM' | 'CD' | 'CV')).not()))",
  (r) =>
    !has(r.offset) ||
    (Array.isArray(r.when) &&
      r.when.length > 0 &&
      !r.when.some((w: unknown) => typeof w === 'string' && ['C', 'CM', 'CD', 'CV'].includes(w))),
);
native('tim-10', 'timeOfDay.empty() or when.empty()', (r) => !has(r.timeOfDay) || !has(r.when));

function deepEqualJson(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (!a || !b || typeof a !== 'object' || typeof b !== 'object') return false;
  const ka = Object.keys(a);
  if (ka.length !== Object.keys(b).length) return false;
  return ka.every((k) => deepEqualJson(field(a, k), field(b, k)));
}

/**
 * Compares two FHIR dates/dateTimes: -1, 0, 1, or undefined when their precisions make the answer unknown
 * (FHIRPath semantics: comparing 2012 with 2012-01 is empty).
 */
export function compareDateTimes(a: string, b: string): -1 | 0 | 1 | undefined {
  const full = /T\d\d:\d\d/;
  if (full.test(a) && full.test(b)) {
    const ta = Date.parse(a);
    const tb = Date.parse(b);
    if (Number.isNaN(ta) || Number.isNaN(tb)) return undefined;
    return ta < tb ? -1 : ta > tb ? 1 : 0;
  }
  const da = a.slice(0, 10);
  const db = b.slice(0, 10);
  if (full.test(a) !== full.test(b) || da.length !== db.length) {
    // Different precisions: decidable only if the common prefix differs.
    const n = Math.min(da.length, db.length);
    const pa = da.slice(0, n);
    const pb = db.slice(0, n);
    if (pa === pb) return undefined;
    return pa < pb ? -1 : 1;
  }
  return da < db ? -1 : da > db ? 1 : 0;
}

/** dom-3: every contained resource is referenced from elsewhere in the resource, or refers to its container. */
export function containedReferenced(resource: JsonObject): string[] {
  const contained = arrayField(resource, 'contained');
  if (contained.length === 0) return [];
  const refs = new Set<string>();
  const collect = (v: unknown, depth: number): void => {
    if (depth > 60) return;
    if (typeof v === 'string') {
      if (v.startsWith('#')) refs.add(v);
    } else if (Array.isArray(v)) for (const x of v) collect(x, depth + 1);
    else if (v && typeof v === 'object') for (const k in v) collect(field(v, k), depth + 1);
  };
  collect(resource, 0);
  const unmatched: string[] = [];
  for (const c of contained) {
    const id = field(c, 'id');
    if (typeof id !== 'string') continue;
    if (refs.has('#' + id)) continue;
    let refersToContainer = false;
    const scan = (v: unknown, depth: number): void => {
      if (refersToContainer || depth > 60) return;
      if (Array.isArray(v)) for (const x of v) scan(x, depth + 1);
      else if (v && typeof v === 'object') {
        if (field(v, 'reference') === '#') refersToContainer = true;
        for (const k in v) scan(field(v, k), depth + 1);
      }
    };
    scan(c, 0);
    if (!refersToContainer) unmatched.push(id);
  }
  return unmatched;
}

/** Keys evaluated by the walker itself, never through FHIRPath. */
export const WALKER_NATIVE_KEYS = new Set(['ele-1', 'ext-1', 'dom-3', 'txt-1', 'txt-2']);

export interface InvariantOutcome {
  ok: boolean;
  /** Set when the expression could not be compiled or evaluated. */
  error?: string;
}

/**
 * Evaluates one constraint on a node. `base` is the FHIRPath type/path of the node for the model
 * (e.g. `HumanName`, `Observation.component`), or undefined for a resource root.
 */
export function evaluateConstraint(
  key: string,
  expression: string,
  base: string | undefined,
  node: JsonObject,
  env: InvariantEnv,
): InvariantOutcome {
  const nat = nativeEvaluator(key, expression);
  if (nat) {
    try {
      return { ok: nat(node, env) !== false };
    } catch (e) {
      return { ok: true, error: String(e) };
    }
  }
  return evaluateWithFhirPath(expression, base, node, env);
}

/** Whether an invariant has a native evaluator (keyed by key and exact expression). */
export function hasNativeEvaluator(key: string, expression: string): boolean {
  return nativeEvaluator(key, expression) !== undefined;
}

/** The FHIRPath evaluation of a constraint, bypassing native evaluators (tests compare the two). */
export function evaluateWithFhirPath(
  expression: string,
  base: string | undefined,
  node: JsonObject,
  env: InvariantEnv,
): InvariantOutcome {
  const fn = compileExpression(base, expression);
  if (!fn) return { ok: true, error: 'expression does not compile' };
  try {
    const out = fn(node, env);
    if (!Array.isArray(out) || out.length === 0) return { ok: true };
    if (out.length === 1 && typeof out[0] === 'boolean') return { ok: out[0] };
    return { ok: true };
  } catch (e) {
    return { ok: true, error: e instanceof Error ? e.message : String(e) };
  }
}

/** The values an expression selects from a resource (undefined when it cannot be compiled or evaluated). */
export function evaluateExpression(
  expression: string,
  resource: JsonObject,
  env: InvariantEnv,
): unknown[] | undefined {
  const fn = compileExpression(undefined, expression);
  if (!fn) return undefined;
  try {
    const out = fn(resource, env);
    return Array.isArray(out) ? out : undefined;
  } catch {
    return undefined;
  }
}
