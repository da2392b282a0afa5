/**
 * Search index rows extracted from a resource at write time (stored with the version, in the same transaction).
 *
 * Meaning of the IndexEntry columns per parameter type:
 * - string:    value = normalised text (lower case, accents and punctuation-free spacing kept, diacritics stripped)
 *              for the default prefix match and :contains; system = the exact text, for :exact.
 *              HumanName and Address index each part (family, given, text, line, city...) as its own row.
 * - token:     system = code system / identifier system / ContactPoint.system (absent when none);
 *              value = the code / identifier value / `true`|`false`. For :text, a CodeableConcept's text and its
 *              codings' displays go in extra rows of param `{code}:text` with type `string` (normalised as above).
 * - reference: reference = `Type/id` of a literal relative reference (or the full URL of an absolute one,
 *              `_history` dropped; `#id` for contained ones); system|value = the Reference.identifier, for :identifier.
 *              Canonical references: reference = the canonical URL (version kept as written after `|`).
 * - date:      low/high = first and last epoch millisecond covered by the value (partial dates and periods are ranges;
 *              an open period end is ±8.64e15); dates without a time zone are read as UTC.
 * - number:    value = the number as written, low/high = its implicit precision range [v - δ, v + δ)
 *              (`100` -> [99.5, 100.5)).
 * - quantity:  (quantityEntries) low/high = the interval the quantity stands for: the value itself (low = high) or,
 *              with a comparator, everything below or above it (`<5` -> [-MAX, 5 minus one ulp]); a Range its bounds.
 *              The row of param `{code}` has system = Quantity.system, value = Quantity.code (or unit when no code),
 *              for `:missing`, `_sort` and a search without unit. Unit rows, one param each so that one range of
 *              search_index_range_high answers a search (quantityRowParam): `{code}||{c}`
 *              for each of code and unit (`5.4||mg`), and `{code}|{system}|{code}` in the unit written or, for a
 *              UCUM code that converts, `{code}|http://unitsofmeasure.org|{canonical unit}` with low/high converted
 *              (ucum-canonical.ts: `1 g/L` and `100 mg/dL` are both 1000 `g.m-3`).
 * - uri:       value = the URI as written.
 * - composite: (token + token/quantity/date/string) see compositeEntries.
 * - token `:of-type`: an Identifier with a typed coding also gives a row of param `{code}:of-type`, system =
 *              `typeSystem|typeCode`, value = the identifier value.
 * - special:   `_text` / `_content`: system = the resource's full-text words (src/fhir/search/full-text.ts), which
 *              the stores index with FTS5 (SQLite) or a GIN tsvector index (PostgreSQL).
 * `_id` and `_lastUpdated` come from the store's own row (id, last_updated), not from index rows.
 * Special parameters and the other composites are not indexed (listed in searchDefinitions().unsupported).
 */
import { isLosslessNumber, type FhirResource } from '../fhir-json.js';
import type { IndexEntry } from '../store/resource-store.js';
import { indexedParametersOf, referenceKey, type SearchParamDef } from './definitions.js';
import { fullTextOf } from './full-text.js';
import { normaliseString } from './normalise.js';
import { toCanonical, UCUM_SYSTEM } from './ucum-canonical.js';

export const DATE_MIN = -8.64e15;
export const DATE_MAX = 8.64e15;

export { normaliseString };

/** Written text of a number (keeps precision of LosslessNumber and of round-tripping JS numbers). */
function numberText(value: unknown): string | undefined {
  if (typeof value === 'number') return Number.isFinite(value) ? String(value) : undefined;
  if (isLosslessNumber(value)) return value.value;
  if (typeof value === 'string' && /^-?\d+(\.\d+)?([eE][+-]?\d+)?$/.test(value)) return value;
  return undefined;
}

/** The implicit range of a written decimal: `100` -> [99.5, 100.5], `1.50` -> [1.495, 1.505]. */
export function numberRange(text: string): { value: number; low: number; high: number } | undefined {
  const m = /^(-?)(\d+)(?:\.(\d+))?(?:[eE]([+-]?\d+))?$/.exec(text.trim());
  if (!m) return undefined;
  const value = Number(text);
  if (!Number.isFinite(value)) return undefined;
  const decimals = (m[3]?.length ?? 0) - Number(m[4] ?? 0);
  // Below the float's own resolution (e.g. 14 decimals on 178.69...) keep a range of at least a few ulps,
  // so that the value is always inside [low, high).
  const delta = Math.max(
    0.5 * Math.pow(10, -decimals),
    Math.abs(value) * Number.EPSILON * 4,
    Number.MIN_VALUE,
  );
  return { value, low: value - delta, high: value + delta };
}

const DATE_RE =
  /^(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?(Z|[+-]\d{2}:\d{2})?)?)?)?$/;

/**
 * The epoch-ms range [low, high] (both inclusive) a FHIR date/dateTime/instant covers at its precision.
 * Returns undefined for text that is not a FHIR date.
 */
export function dateRange(text: string): { low: number; high: number } | undefined {
  const m = DATE_RE.exec(text.trim());
  if (!m) return undefined;
  const [, y, mo, d, h, mi, s, frac, tz] = m;
  const year = Number(y);
  const offsetMs =
    tz && tz !== 'Z'
      ? (tz[0] === '-' ? -1 : 1) * (Number(tz.slice(1, 3)) * 60 + Number(tz.slice(4, 6))) * 60000
      : 0;
  const utc = (Y: number, M: number, D: number, H = 0, Mi = 0, S = 0, Ms = 0): number => {
    const t = Date.UTC(Y, M, D, H, Mi, S, Ms);
    // Date.UTC maps years 0..99 to 1900+; fix them.
    if (Y < 100) {
      const date = new Date(t);
      date.setUTCFullYear(Y);
      return date.getTime();
    }
    return t;
  };
  let low: number;
  let next: number;
  if (mo === undefined) {
    low = utc(year, 0, 1);
    next = utc(year + 1, 0, 1);
  } else if (d === undefined) {
    low = utc(year, Number(mo) - 1, 1);
    next = utc(year, Number(mo), 1);
  } else if (h === undefined) {
    low = utc(year, Number(mo) - 1, Number(d));
    next = low + 86400000;
  } else if (s === undefined) {
    low = utc(year, Number(mo) - 1, Number(d), Number(h), Number(mi)) - offsetMs;
    next = low + 60000;
  } else if (frac === undefined) {
    low = utc(year, Number(mo) - 1, Number(d), Number(h), Number(mi), Number(s)) - offsetMs;
    next = low + 1000;
  } else {
    const ms = Number(frac.padEnd(3, '0').slice(0, 3));
    low = utc(year, Number(mo) - 1, Number(d), Number(h), Number(mi), Number(s), ms) - offsetMs;
    next = low + 1;
  }
  if (!Number.isFinite(low)) return undefined;
  return { low, high: next - 1 };
}

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj =>
  v !== null && typeof v === 'object' && !Array.isArray(v) && !isLosslessNumber(v);
const str = (v: unknown): string | undefined => (typeof v === 'string' && v.length > 0 ? v : undefined);

function pushString(out: IndexEntry[], param: string, text: unknown): void {
  if (typeof text !== 'string' || text.length === 0) return;
  out.push({ param, type: 'string', value: normaliseString(text), system: text });
}

function stringEntries(out: IndexEntry[], param: string, value: unknown): void {
  if (typeof value === 'string') return pushString(out, param, value);
  if (!isObj(value)) return;
  // HumanName, Address and the like: every textual part.
  for (const key of [
    'text',
    'family',
    'given',
    'prefix',
    'suffix',
    'line',
    'city',
    'district',
    'state',
    'postalCode',
    'country',
  ]) {
    const part = value[key];
    if (Array.isArray(part)) for (const p of part) pushString(out, param, p);
    else pushString(out, param, part);
  }
}

function tokenEntries(out: IndexEntry[], param: string, value: unknown): void {
  if (typeof value === 'string') {
    out.push({ param, type: 'token', value });
    return;
  }
  if (typeof value === 'boolean') {
    out.push({ param, type: 'token', value: String(value) });
    return;
  }
  if (!isObj(value)) return;
  const textParam = `${param}:text`;
  if (Array.isArray(value.coding) || 'text' in value) {
    // CodeableConcept
    for (const coding of (value.coding as unknown[]) ?? []) tokenEntries(out, param, coding);
    pushString(out, textParam, value.text);
    return;
  }
  if ('code' in value || 'display' in value) {
    // Coding (also Quantity-like codes)
    if (str(value.code) || str(value.system))
      out.push({ param, type: 'token', system: str(value.system), value: str(value.code) });
    pushString(out, textParam, value.display);
    return;
  }
  if ('value' in value) {
    // Identifier, ContactPoint
    const v = value.value;
    if (typeof v === 'string' || typeof v === 'boolean')
      out.push({ param, type: 'token', system: str(value.system), value: String(v) });
    if (isObj(value.type)) {
      pushString(out, textParam, (value.type as Obj).text);
      // Identifier.type codings, for `:of-type=system|code|value`
      const codings = (value.type as Obj).coding;
      if (typeof v === 'string' && Array.isArray(codings))
        for (const coding of codings)
          if (isObj(coding) && str(coding.code))
            out.push({
              param: `${param}:of-type`,
              type: 'token',
              system: `${str(coding.system) ?? ''}|${coding.code as string}`,
              value: v,
            });
    }
  }
}

function referenceEntries(out: IndexEntry[], param: string, value: unknown): void {
  if (typeof value === 'string') {
    // canonical / uri used as a reference target
    out.push({ param, type: 'reference', reference: value });
    return;
  }
  if (!isObj(value)) return;
  const reference = str(value.reference);
  if (reference) {
    const absolute = /^[a-z][a-z0-9+.-]*:/i.test(reference);
    const key = reference.startsWith('#')
      ? reference
      : absolute
        ? reference.split('/_history/')[0]
        : referenceKey(reference);
    if (key) out.push({ param, type: 'reference', reference: key });
  }
  const identifier = value.identifier;
  if (isObj(identifier) && str(identifier.value)) {
    out.push({ param, type: 'reference', system: str(identifier.system), value: identifier.value as string });
  }
}

function dateEntries(out: IndexEntry[], param: string, value: unknown): void {
  if (typeof value === 'string') {
    const range = dateRange(value);
    if (range) out.push({ param, type: 'date', low: range.low, high: range.high });
    return;
  }
  if (!isObj(value)) return;
  if ('start' in value || 'end' in value) {
    // Period
    const start = typeof value.start === 'string' ? dateRange(value.start) : undefined;
    const end = typeof value.end === 'string' ? dateRange(value.end) : undefined;
    if (start || end)
      out.push({ param, type: 'date', low: start?.low ?? DATE_MIN, high: end?.high ?? DATE_MAX });
    return;
  }
  if (Array.isArray(value.event)) {
    // Timing
    for (const event of value.event) dateEntries(out, param, event);
    const bounds = isObj(value.repeat) ? (value.repeat as Obj).boundsPeriod : undefined;
    if (bounds) dateEntries(out, param, bounds);
  }
}

function numberEntries(out: IndexEntry[], param: string, type: 'number' | 'quantity', value: unknown): void {
  if (isObj(value)) {
    if ('low' in value || 'high' in value) {
      // Range: its bounds as one row
      const low = isObj(value.low) ? numberText(value.low.value) : undefined;
      const high = isObj(value.high) ? numberText(value.high.value) : undefined;
      const lowRange = low ? numberRange(low) : undefined;
      const highRange = high ? numberRange(high) : undefined;
      if (lowRange || highRange) {
        const unit = (isObj(value.low) ? value.low : value.high) as Obj;
        out.push({
          param,
          type,
          system: str(unit?.system),
          value: str(unit?.code) ?? str(unit?.unit),
          low: lowRange?.value ?? -Number.MAX_VALUE,
          high: highRange?.value ?? Number.MAX_VALUE,
        });
      }
      return;
    }
    if ('origin' in value && isObj(value.origin)) return numberEntries(out, param, type, value.origin); // SampledData
    const text = numberText(value.value);
    const range = text ? numberRange(text) : undefined;
    if (!range) return;
    const code = str(value.code);
    const unit = str(value.unit);
    out.push({
      param,
      type,
      system: str(value.system),
      value: code ?? unit,
      low: range.low,
      high: range.high,
    });
    if (code && unit && unit !== code)
      out.push({ param, type, value: unit, low: range.low, high: range.high });
    return;
  }
  const text = numberText(value);
  const range = text ? numberRange(text) : undefined;
  if (range) out.push({ param, type, value: text, low: range.low, high: range.high });
}

/** The index param of a quantity's unit rows: `code||unit` (no system) or `code|system|unit` (see quantityEntries). */
export function quantityRowParam(param: string, system: string | undefined, unit: string): string {
  return `${param}|${system ?? ''}|${unit}`;
}

// The doubles next to x: a comparator's open end (`<5` holds no 5).
const scratch = new DataView(new ArrayBuffer(8));
function nextDouble(x: number, up: boolean): number {
  if (x === 0) return up ? Number.MIN_VALUE : -Number.MIN_VALUE;
  scratch.setFloat64(0, x);
  const bits = scratch.getBigInt64(0);
  scratch.setBigInt64(0, bits + (x > 0 === up ? 1n : -1n));
  return scratch.getFloat64(0);
}

/** The interval a Quantity stands for, in its own unit: its value, or with a comparator what lies beyond it. */
function quantityInterval(quantity: Obj): { low: number; high: number } | undefined {
  const text = numberText(quantity.value);
  if (text === undefined) return undefined;
  const value = Number(text);
  if (!Number.isFinite(value)) return undefined;
  switch (quantity.comparator) {
    case '<':
      return { low: -Number.MAX_VALUE, high: nextDouble(value, false) };
    case '<=':
      return { low: -Number.MAX_VALUE, high: value };
    case '>':
      return { low: nextDouble(value, true), high: Number.MAX_VALUE };
    case '>=':
      return { low: value, high: Number.MAX_VALUE };
    default:
      // no comparator, or `ad` (enough to reach the amount): the value as written
      return { low: value, high: value };
  }
}

/**
 * Rows of a top-level quantity parameter (meaning in the header). Composites keep numberEntries' rows
 * (compositeEntries).
 */
function quantityEntries(out: IndexEntry[], param: string, value: unknown): void {
  if (!isObj(value)) return;
  if ('origin' in value && isObj(value.origin)) return quantityEntries(out, param, value.origin); // SampledData
  let interval: { low: number; high: number } | undefined;
  let unitOf: Obj;
  if ('low' in value || 'high' in value) {
    // Range: from its low bound to its high bound (an absent bound is open), in the unit of the low (or high) one
    const low = isObj(value.low) ? quantityInterval({ value: value.low.value }) : undefined;
    const high = isObj(value.high) ? quantityInterval({ value: value.high.value }) : undefined;
    if (!low && !high) return;
    interval = { low: low?.low ?? -Number.MAX_VALUE, high: high?.high ?? Number.MAX_VALUE };
    unitOf = (isObj(value.low) ? value.low : value.high) as Obj;
  } else {
    interval = quantityInterval(value);
    if (!interval) return;
    unitOf = value;
  }
  const system = str(unitOf.system);
  const code = str(unitOf.code);
  const unit = str(unitOf.unit);
  const { low, high } = interval;
  out.push({ param, type: 'quantity', system, value: code ?? unit, low, high });
  for (const written of new Set([code, unit]))
    if (written)
      out.push({ param: quantityRowParam(param, undefined, written), type: 'quantity', low, high });
  if (system === undefined || code === undefined) return;
  const canonical = system === UCUM_SYSTEM ? canonicalInterval(interval, code) : undefined;
  if (canonical)
    out.push({ param: quantityRowParam(param, UCUM_SYSTEM, canonical.unit), type: 'quantity', ...canonical });
  else out.push({ param: quantityRowParam(param, system, code), type: 'quantity', low, high });
}

/** An interval in UCUM unit `code` in the canonical unit (open ends stay open; a decreasing unit such as [pH] turns it round). */
export function canonicalInterval(
  interval: { low: number; high: number },
  code: string,
): { low: number; high: number; unit: string } | undefined {
  const open = (x: number) => Math.abs(x) === Number.MAX_VALUE;
  const low = open(interval.low) ? undefined : toCanonical(interval.low, code);
  const high = open(interval.high) ? undefined : toCanonical(interval.high, code);
  const unit = (low ?? high)?.unit;
  if (unit === undefined || (!open(interval.low) && !low) || (!open(interval.high) && !high))
    return undefined;
  const decreasing = (toCanonical(2, code)?.value ?? 0) < (toCanonical(1, code)?.value ?? 0);
  const a = low?.value ?? (decreasing ? Number.MAX_VALUE : -Number.MAX_VALUE);
  const b = high?.value ?? (decreasing ? -Number.MAX_VALUE : Number.MAX_VALUE);
  return a <= b ? { low: a, high: b, unit } : { low: b, high: a, unit };
}

function uriEntries(out: IndexEntry[], param: string, value: unknown): void {
  if (typeof value === 'string' && value.length > 0) out.push({ param, type: 'uri', value });
}

/** `system|code` of token rows (the :text rows left out): the form composite rows store. */
function tokenKeys(values: unknown[]): string[] {
  const rows: IndexEntry[] = [];
  for (const value of values) tokenEntries(rows, '', value);
  return rows.filter((r) => r.type === 'token').map((r) => `${r.system ?? ''}|${r.value ?? ''}`);
}

/**
 * Composite rows (a token, then a second part), one per combination found on the same node:
 * system = the first token as `system|code`; second token: value = `system|code`; quantity: value = `unitSystem|unitCode`
 * and low/high; date: low/high; string: value = normalised text.
 */
function compositeEntries(
  def: SearchParamDef,
  resource: FhirResource,
  nodes: unknown[],
  out: IndexEntry[],
): void {
  const [first, second] = def.composite!;
  for (const node of nodes) {
    const keys = tokenKeys(first.evaluate(node, resource));
    if (keys.length === 0) continue;
    const values = second.evaluate(node, resource);
    const seconds: IndexEntry[] = [];
    if (second.type === 'token')
      for (const key of tokenKeys(values)) seconds.push({ param: def.code, type: 'composite', value: key });
    else if (second.type === 'quantity') {
      const rows: IndexEntry[] = [];
      for (const value of values) numberEntries(rows, def.code, 'quantity', value);
      for (const r of rows)
        seconds.push({
          param: def.code,
          type: 'composite',
          value: `${r.system ?? ''}|${r.value ?? ''}`,
          low: r.low,
          high: r.high,
        });
    } else if (second.type === 'date') {
      const rows: IndexEntry[] = [];
      for (const value of values) dateEntries(rows, def.code, value);
      for (const r of rows) seconds.push({ param: def.code, type: 'composite', low: r.low, high: r.high });
    } else if (second.type === 'string') {
      for (const value of values)
        if (typeof value === 'string' && value)
          seconds.push({ param: def.code, type: 'composite', value: normaliseString(value) });
    }
    for (const key of keys) for (const row of seconds) out.push({ ...row, system: key });
  }
}

function entriesOf(def: SearchParamDef, values: unknown[], out: IndexEntry[]): void {
  const param = def.code;
  for (const value of values) {
    switch (def.type) {
      case 'string':
        stringEntries(out, param, value);
        break;
      case 'token':
        tokenEntries(out, param, value);
        break;
      case 'reference':
        referenceEntries(out, param, value);
        break;
      case 'date':
        dateEntries(out, param, value);
        break;
      case 'number':
        numberEntries(out, param, def.type, value);
        break;
      case 'quantity':
        quantityEntries(out, param, value);
        break;
      case 'uri':
        uriEntries(out, param, value);
        break;
      default:
        break;
    }
  }
}

/** All index rows of a resource (its type's parameters, custom ones included), duplicates removed. */
export function extractIndex(resource: FhirResource): IndexEntry[] {
  const params = indexedParametersOf(resource.resourceType);
  if (!params) return [];
  const out: IndexEntry[] = [];
  for (const def of params.values()) {
    if (!def.evaluate || def.indexedAs) continue;
    const values = def.evaluate(resource);
    if (values.length === 0) continue;
    if (def.composite) compositeEntries(def, resource, values, out);
    else entriesOf(def, values, out);
  }
  for (const { param, text } of fullTextOf(resource)) out.push({ param, type: 'special', system: text });
  return withoutDuplicates(out);
}

/** Same row for dedup: absent text fields as empty ones, bounds by value (as they once were in a text key). */
function sameRow(a: IndexEntry, b: IndexEntry): boolean {
  return (
    (a.system ?? '') === (b.system ?? '') &&
    (a.value ?? '') === (b.value ?? '') &&
    (a.reference ?? '') === (b.reference ?? '') &&
    sameBound(a.low, b.low) &&
    sameBound(a.high, b.high)
  );
}
const sameBound = (a: number | undefined, b: number | undefined): boolean =>
  a === b || (Number.isNaN(a) && Number.isNaN(b));

const rowKey = (e: IndexEntry): string =>
  `${e.system ?? ''}\u0000${e.value ?? ''}\u0000${e.reference ?? ''}\u0000${e.low ?? ''}\u0000${e.high ?? ''}`;

/** Rows of one param compared pairwise up to this many; beyond, by a text key each (a Group's thousand members). */
const PAIRWISE_ROWS = 32;

/**
 * The rows with a repeated one left out (the first kept, in order). Rows are compared within their param (a few
 * each) instead of by a text key of every row: the numbers' texts were much of extraction's cost.
 */
function withoutDuplicates(rows: IndexEntry[]): IndexEntry[] {
  if (rows.length < 2) return rows;
  const byParam = new Map<string, IndexEntry[] | Set<string>>();
  const kept: IndexEntry[] = [];
  for (const row of rows) {
    const same = byParam.get(row.param);
    if (same === undefined) byParam.set(row.param, [row]);
    else if (Array.isArray(same)) {
      if (same.some((other) => sameRow(other, row))) continue;
      if (same.length < PAIRWISE_ROWS) same.push(row);
      else byParam.set(row.param, new Set([...same, row].map(rowKey)));
    } else {
      const key = rowKey(row);
      if (same.has(key)) continue;
      same.add(key);
    }
    kept.push(row);
  }
  return kept;
}
