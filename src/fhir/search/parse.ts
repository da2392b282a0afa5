/**
 * Parses a FHIR search query (name -> values, repeated names in order) into a CompiledQuery that store
 * adapters run (src/fhir/store/sqlite/sqlite-search.ts). Pure: no store access.
 *
 * AND = repeated parameter names; OR = commas inside one value (`\,` is a literal comma).
 * What the server cannot apply (an unknown parameter, an unsupported modifier, a functional `_list`, at system level a
 * parameter not common to every searched type) is refused with 400 (`search-param-unsupported`), since ignoring it
 * would answer with more than was asked; under `Prefer: handling=lenient` it is left out with a warning and the
 * `self` link shows only what was applied (`CompiledQuery.applied`). Hostile input (huge values, thousands of parameters, deep chains) is refused with
 * 400 before any SQL is built; every value reaches SQL as a bound parameter.
 */
import { fhirError } from '../outcome.js';
import {
  pendingCustomParameter,
  searchDefinitions,
  searchParameter,
  type SearchParamDef,
} from './definitions.js';
import {
  canonicalInterval,
  dateRange,
  normaliseString,
  numberRange,
  quantityRowParam,
  DATE_MAX,
  DATE_MIN,
} from './index-entries.js';
import { toCanonical, UCUM_SYSTEM } from './ucum-canonical.js';
import { parseTextQuery } from './full-text.js';
import {
  ModifierUnavailable,
  terminologyModifierFilter,
  TERMINOLOGY_MODIFIERS,
} from './terminology-modifiers.js';
import type { TerminologyPort } from '../terminology-port.js';
import type {
  QuantityUnitRows,
  CompiledQuery,
  Filter,
  IncludeSpec,
  Prefix,
  SearchValue,
  SortKey,
} from '../store/search-query.js';

// The compiled query is the store port's type (search depends on the store port, not the other way round).
export type { CompiledQuery, Filter, IncludeSpec, Prefix, SearchValue, SortKey };

export const LIMITS = {
  /** Longest accepted parameter value (characters). */
  maxValueLength: 2048,
  /** Most parameters (names x repetitions) in one query. */
  maxParameters: 64,
  /** Most OR values in one parameter. */
  maxOrValues: 100,
  /** Deepest chain (`subject:Patient.organization.name` is 2). */
  maxChainDepth: 3,
  maxIncludes: 20,
  defaultCount: 50,
  maxCount: 1000,
  /** Largest `_offset` served (deeper paging must narrow the query). */
  maxOffset: 100_000,
} as const;

export interface ParseOptions {
  /** The type of a type-level search; undefined for a system search. */
  resourceType?: string;
  /** `Prefer: handling=lenient`: leave out what cannot be applied, with a warning, instead of refusing it. */
  lenient?: boolean;
  /** The default (kept for callers that say so): what cannot be applied is refused. */
  strict?: boolean;
  /** A system-level search over a set of types (a compartment's, for `Patient/[id]/*`): `_type` must stay in it. */
  systemTypes?: string[];
  /** Terminology for the token modifiers `:in`, `:not-in`, `:below`, `:above` (absent: they are refused). */
  terminology?: TerminologyPort;
  /**
   * This server's base URL, as the client addressed it: an absolute reference value under it also matches the
   * relative `Type/id`; one under another base matches only that URL (search.html#reference). Absent: any
   * absolute value also matches its `Type/id` tail.
   */
  serverBase?: string;
}

const PREFIXES = new Set<Prefix>(['eq', 'ne', 'gt', 'lt', 'ge', 'le', 'sa', 'eb', 'ap']);
/** Result parameters handled elsewhere (HTTP layer or ignored by design). */
const PASSIVE = new Set([
  '_format',
  '_pretty',
  '_summary',
  '_elements',
  '_count',
  '_offset',
  '_cursor',
  '_sort',
  '_total',
  '_include',
  '_revinclude',
  '_type',
  '_contained',
  '_containedType',
]);

/**
 * The values of `_contained`/`_containedType` that change nothing here: contained resources are never returned as
 * matches (R4 default). Other values are refused (or left out under lenient handling).
 */
const CONTAINED_DEFAULTS: Record<string, string> = { _contained: 'false', _containedType: 'container' };

/** Splits on commas not escaped with a backslash; unescapes `\,` `\|` `\$` `\\`. */
export function splitOr(value: string): string[] {
  const out: string[] = [];
  let current = '';
  for (let i = 0; i < value.length; i++) {
    const c = value[i];
    if (c === '\\' && i + 1 < value.length) {
      current +=
        value[i + 1] === ',' || value[i + 1] === '\\' || value[i + 1] === '$'
          ? value[i + 1]
          : c + value[i + 1];
      i++;
    } else if (c === ',') {
      out.push(current);
      current = '';
    } else current += c;
  }
  out.push(current);
  return out;
}

/** Splits `system|code` on the first unescaped `|`. */
function splitPipe(value: string): [string, string] | undefined {
  for (let i = 0; i < value.length; i++) {
    if (value[i] === '\\') i++;
    else if (value[i] === '|')
      return [value.slice(0, i).replace(/\\\|/g, '|'), value.slice(i + 1).replace(/\\\|/g, '|')];
  }
  return undefined;
}

function parsePrefixed(raw: string): { prefix: Prefix; rest: string } {
  const candidate = raw.slice(0, 2) as Prefix;
  if (PREFIXES.has(candidate) && raw.length > 2 && /[0-9-]/.test(raw[2]))
    return { prefix: candidate, rest: raw.slice(2) };
  return { prefix: 'eq', rest: raw };
}

function dateValue(raw: string, name: string): Extract<SearchValue, { kind: 'range' }> {
  const { prefix, rest } = parsePrefixed(raw);
  // `+` in a query is often a decoded space: accept `2020-01-01T00:00:00 01:00`
  const range = dateRange(rest.replace(/ (\d{2}:\d{2})$/, '+$1'));
  if (!range)
    throw fhirError('search-param-invalid', `'${truncate(raw)}' is not a valid date for parameter '${name}'`);
  return { kind: 'range', prefix, low: range.low, high: range.high, value: range.low };
}

function numberValue(
  raw: string,
  name: string,
  type: 'number' | 'quantity',
): Extract<SearchValue, { kind: 'range' }> {
  let numberPart = raw;
  let system: string | undefined;
  let code: string | undefined;
  if (type === 'quantity') {
    const [n, ...unit] = raw.split('|');
    numberPart = n;
    if (unit.length > 2)
      throw fhirError(
        'search-param-invalid',
        `'${truncate(raw)}' is not a valid quantity for '${name}' (number|system|code)`,
      );
    system = unit[0] || undefined;
    code = unit[1] || undefined;
    if (unit.length === 1 && unit[0]) {
      code = unit[0];
      system = undefined;
    }
  }
  const { prefix, rest } = parsePrefixed(numberPart);
  const range = numberRange(rest);
  if (!range)
    throw fhirError(
      'search-param-invalid',
      `'${truncate(raw)}' is not a valid number for parameter '${name}'`,
    );
  const value: Extract<SearchValue, { kind: 'range' }> = {
    kind: 'range',
    prefix,
    low: range.low,
    high: range.high,
    value: range.value,
    system,
    code,
  };
  if (type === 'quantity') value.unitRows = unitRowsOf(value);
  return value;
}

const FLIPPED: Record<Prefix, Prefix> = {
  eq: 'eq',
  ne: 'ne',
  ap: 'ap',
  gt: 'lt',
  lt: 'gt',
  ge: 'le',
  le: 'ge',
  sa: 'eb',
  eb: 'sa',
};

/**
 * The unit rows a quantity search reads (index-entries.ts quantityEntries) and the searched value in their unit:
 * none without a unit (the param's own rows), `||code` rows without a system, the canonical rows for a UCUM code
 * that converts (`100|http://unitsofmeasure.org|mg/dL` reads `g.m-3` rows from 995 to 1005), else `|system|code`.
 */
function unitRowsOf(value: Extract<SearchValue, { kind: 'range' }>): QuantityUnitRows | undefined {
  const { system, code } = value;
  if (code === undefined) return undefined;
  const as = { low: value.low, high: value.high, value: value.value, prefix: value.prefix };
  if (system !== UCUM_SYSTEM) return { suffix: quantityRowParam('', system, code), ...as };
  const range = canonicalInterval({ low: value.low, high: value.high }, code);
  const point = toCanonical(value.value, code);
  if (!range || !point) return { suffix: quantityRowParam('', system, code), ...as };
  // A unit that decreases as its canonical value grows ([pH]) turns the comparison round.
  const decreasing = (toCanonical(2, code)?.value ?? 0) < (toCanonical(1, code)?.value ?? 0);
  return {
    suffix: quantityRowParam('', UCUM_SYSTEM, range.unit),
    low: range.low,
    high: range.high,
    value: point.value,
    prefix: decreasing ? FLIPPED[value.prefix] : value.prefix,
  };
}

function truncate(text: string): string {
  return text.length > 80 ? `${text.slice(0, 80)}...` : text;
}

/**
 * The modifiers the parser applies per parameter type: the one registry that both the parser's check and the
 * CapabilityStatement's searchParam documentation read (`supportedModifiers`). The token modifiers answered from
 * terminology (`:in`, `:not-in`, `:below`, `:above`) are added where the server has terminology.
 */
const MODIFIERS: Record<string, Set<string>> = {
  string: new Set(['exact', 'contains', 'missing']),
  token: new Set(['text', 'not', 'missing', 'of-type']),
  reference: new Set(['identifier', 'missing']),
  date: new Set(['missing']),
  number: new Set(['missing']),
  quantity: new Set(['missing']),
  uri: new Set(['above', 'below', 'missing']),
  composite: new Set(['missing']),
};

/**
 * The modifiers this server applies to a parameter type (for the CapabilityStatement's documentation), with or
 * without terminology (which the token modifiers `:in`, `:not-in`, `:below`, `:above` need).
 */
export function supportedModifiers(type: string, terminology: boolean): string[] {
  const out = [...(MODIFIERS[type] ?? [])];
  if (type === 'token' && terminology) out.push(...TERMINOLOGY_MODIFIERS);
  if (type === 'reference') out.push('[type]');
  return out;
}

/** Whether a parameter type takes the comparison prefixes (`eq ne gt lt ge le sa eb ap`). */
export function takesPrefixes(type: string): boolean {
  return type === 'date' || type === 'number' || type === 'quantity';
}

/** Splits `a$b` on the first `$` not escaped with a backslash. */
function splitDollar(value: string): [string, string] | undefined {
  for (let i = 0; i < value.length; i++) {
    if (value[i] === '\\') i++;
    else if (value[i] === '$') return [value.slice(0, i), value.slice(i + 1)];
  }
  return undefined;
}

class QueryParser {
  readonly warnings: string[] = [];
  constructor(
    private readonly lenient: boolean,
    /** A system search without `_type`: only parameters common to every resource apply. */
    private readonly allTypes: boolean,
    private readonly terminology?: TerminologyPort,
    private readonly serverBase?: string,
  ) {}

  /** What cannot be applied: 400, or under lenient handling a warning (the condition is then left out). */
  ignore(message: string): void {
    if (!this.lenient) throw fhirError('search-param-unsupported', message);
    this.warnings.push(message);
  }

  /**
   * One `name=value` condition for resources of `types` (all must define the parameter the same way),
   * or undefined when ignored. `depth` counts chain links.
   */
  filter(types: string[], name: string, rawValue: string, depth: number): Filter | undefined {
    if (depth > LIMITS.maxChainDepth)
      throw fhirError(
        'search-limit-exceeded',
        `Chains deeper than ${LIMITS.maxChainDepth} are not supported: '${truncate(name)}'`,
      );
    if (name === '_has' || name.startsWith('_has:')) return this.hasFilter(types, name, rawValue, depth);
    const dot = name.indexOf('.');
    const head = dot >= 0 ? name.slice(0, dot) : name;
    const [code, modifier, ...extra] = head.split(':');
    if (extra.length > 0)
      throw fhirError('search-param-invalid', `Parameter '${truncate(name)}' has more than one modifier`);
    if (code === '_id') return this.idFilter(name, modifier, rawValue, dot);
    if (code === '_lastUpdated') {
      if (modifier || dot >= 0)
        return (
          this.ignore(`Parameter '${truncate(name)}': _lastUpdated takes no modifier or chain`),
          undefined
        );
      const values = this.orValues(rawValue).map((v) => dateValue(v, code));
      return { kind: 'lastUpdated', values };
    }
    if (code === '_text' || code === '_content' || code === '_list') {
      if (modifier || dot >= 0)
        return (this.ignore(`Parameter '${truncate(name)}' takes no modifier or chain`), undefined);
      return code === '_list' ? this.listFilter(rawValue) : this.textFilter(code, rawValue);
    }
    const defs = types.map((t) => searchParameter(t, code));
    const pending = types.find((t) => pendingCustomParameter(t, code));
    if (pending) {
      // A custom parameter before $reindex completed: it would miss what was stored before it (never partial).
      this.ignore(
        `Search parameter '${truncate(code)}' of ${pending} is not searchable yet: existing data is not indexed with it (run $reindex and wait for it to complete)`,
      );
      return undefined;
    }
    if (defs.some((d) => d === undefined)) {
      this.ignore(
        this.allTypes && types.length > 1 && defs.some((d) => d !== undefined)
          ? `Search parameter '${truncate(code)}' is not common to all resources: a system search takes only those (name the types with _type)`
          : `Unknown search parameter '${truncate(code)}' for ${types.length === 1 ? types[0] : types.length > 5 ? 'all resources' : `types ${types.join(', ')}`}`,
      );
      return undefined;
    }
    const def = defs[0] as SearchParamDef;
    if (!def.evaluate) {
      this.ignore(`Search parameter '${code}' (${def.type}) is not supported by this server`);
      return undefined;
    }
    if (defs.some((d) => d!.type !== def.type)) {
      this.ignore(`Search parameter '${code}' differs between types ${types.join(', ')}`);
      return undefined;
    }
    if (dot >= 0)
      return this.chainFilter(
        types,
        def,
        defs as SearchParamDef[],
        modifier,
        name.slice(dot + 1),
        rawValue,
        depth,
      );

    if (modifier === 'missing') {
      if (rawValue !== 'true' && rawValue !== 'false')
        throw fhirError(
          'search-param-invalid',
          `':missing' takes true or false, not '${truncate(rawValue)}'`,
        );
      return {
        kind: 'param',
        param: code,
        type: def.type,
        modifier,
        values: [{ kind: 'missing', missing: rawValue === 'true' }],
      };
    }
    // `reference:Type=id` is a type restriction, not a modifier.
    let referenceType: string | undefined;
    if (modifier && def.type === 'reference' && modifier !== 'identifier' && modifier !== 'missing') {
      if (!searchDefinitions().byType.has(modifier))
        throw fhirError(
          'search-param-invalid',
          `'${modifier}' is not a resource type (in '${truncate(name)}')`,
        );
      referenceType = modifier;
    } else if (modifier && def.type === 'token' && TERMINOLOGY_MODIFIERS.has(modifier)) {
      try {
        return terminologyModifierFilter(this.terminology, code, modifier, this.orValues(rawValue));
      } catch (e) {
        if (!(e instanceof ModifierUnavailable)) throw e;
        this.ignore(e.message);
        return undefined;
      }
    } else if (modifier && !MODIFIERS[def.type]?.has(modifier)) {
      this.ignore(
        `Parameter '${truncate(name)}': modifier ':${truncate(modifier)}' is not supported for ${def.type} parameter '${code}'`,
      );
      return undefined;
    }
    const values = this.orValues(rawValue).map((v) => this.value(def, modifier, referenceType, v));
    const filter: Filter = { kind: 'param', param: code, type: def.type, values };
    if (modifier && !referenceType) filter.modifier = modifier;
    if (modifier === 'not') filter.negate = true;
    // `ne` on dates/numbers: none of the resource's values may equal it (all values must be ne).
    return filter;
  }

  /** `_text` / `_content`: a full-text query (syntax: src/fhir/search/full-text.ts); commas OR whole queries. */
  private textFilter(code: '_text' | '_content', rawValue: string): Filter {
    const queries = this.orValues(rawValue).map((v) => parseTextQuery(code, v));
    return {
      kind: 'text',
      param: code,
      query: queries.length === 1 ? queries[0]! : { op: 'or', parts: queries },
    };
  }

  /**
   * `_list=id`: the resources the List references as an entry item, when the caller may read the List (a hidden
   * List matches nothing, like an absent one). It is `_has:List:item:_id=id`. Functional lists (`$current-...`)
   * are not served.
   */
  private listFilter(rawValue: string): Filter | undefined {
    const ids = this.orValues(rawValue);
    if (ids.some((id) => id.startsWith('$'))) {
      this.ignore(
        `_list: functional lists ('${truncate(rawValue)}') are not supported; name a List by its id`,
      );
      return undefined;
    }
    for (const id of ids)
      if (!/^[A-Za-z0-9\-.]{1,64}$/.test(id))
        throw fhirError('search-param-invalid', `_list: '${truncate(id)}' is not a valid List id`);
    return { kind: 'has', sourceType: 'List', param: 'item', inner: { kind: 'id', ids } };
  }

  private orValues(rawValue: string): string[] {
    const values = splitOr(rawValue);
    if (values.length > LIMITS.maxOrValues)
      throw fhirError('search-limit-exceeded', `More than ${LIMITS.maxOrValues} OR values in one parameter`);
    return values;
  }

  private idFilter(
    name: string,
    modifier: string | undefined,
    rawValue: string,
    dot: number,
  ): Filter | undefined {
    if (dot >= 0 || (modifier && modifier !== 'not')) {
      this.ignore(`Parameter '${truncate(name)}' is not supported`);
      return undefined;
    }
    const ids = this.orValues(rawValue);
    for (const id of ids)
      if (!/^[A-Za-z0-9\-.]{1,64}$/.test(id))
        throw fhirError('search-param-invalid', `'${truncate(id)}' is not a valid resource id`);
    return { kind: 'id', ids, negate: modifier === 'not' || undefined };
  }

  private value(
    def: SearchParamDef,
    modifier: string | undefined,
    referenceType: string | undefined,
    raw: string,
  ): SearchValue {
    if (raw === '') throw fhirError('search-param-invalid', `Empty value for parameter '${def.code}'`);
    switch (def.type) {
      case 'string':
        return { kind: 'string', text: normaliseString(raw), exact: raw };
      case 'token': {
        if (modifier === 'text') return { kind: 'token', text: normaliseString(raw) };
        if (modifier === 'of-type') {
          // Identifier.type: `typeSystem|typeCode|value`, all three parts given (the index row's system is `typeSystem|typeCode`)
          const [typeSystem, rest] = splitPipe(raw) ?? [];
          const [typeCode, value] = (rest !== undefined && splitPipe(rest)) || [];
          if (typeSystem === undefined || !typeCode || !value)
            throw fhirError(
              'search-param-invalid',
              `':of-type' takes system|code|value with a code and a value, not '${truncate(raw)}'`,
            );
          return { kind: 'token', system: `${typeSystem}|${typeCode}`, code: value };
        }
        const pipe = splitPipe(raw);
        if (!pipe) return { kind: 'token', code: raw };
        // `|code`: no system; `system|`: any code of the system
        return { kind: 'token', system: pipe[0], code: pipe[1] === '' ? undefined : pipe[1] };
      }
      case 'reference': {
        if (modifier === 'identifier') {
          const pipe = splitPipe(raw);
          return {
            kind: 'reference',
            identifier: pipe ? { system: pipe[0] || undefined, value: pipe[1] } : { value: raw },
          };
        }
        return { kind: 'reference', references: this.referenceTargets(def, referenceType, raw) };
      }
      case 'date':
        return dateValue(raw, def.code);
      case 'number':
      case 'quantity':
        return numberValue(raw, def.code, def.type);
      case 'uri':
        return { kind: 'uri', uri: raw };
      case 'composite': {
        const parts = splitDollar(raw);
        const components = def.composite;
        if (!parts || !components || parts[0] === '' || parts[1] === '')
          throw fhirError(
            'search-param-invalid',
            `'${truncate(raw)}' is not a composite value for '${def.code}' (first$second)`,
          );
        const firstDef = { ...def, type: 'token' as const };
        const first = this.value(firstDef, undefined, undefined, parts[0]) as Extract<
          SearchValue,
          { kind: 'token' }
        >;
        const second = this.value({ ...def, type: components[1].type }, undefined, undefined, parts[1]);
        return { kind: 'composite', first, second, secondType: components[1].type };
      }
      default:
        throw fhirError('search-param-invalid', `Parameter '${def.code}' cannot be searched`);
    }
  }

  /** The stored forms a reference search value can match. */
  private referenceTargets(def: SearchParamDef, referenceType: string | undefined, raw: string): string[] {
    const noHistory = raw.split('/_history/')[0];
    if (/^[a-z][a-z0-9+.-]*:/i.test(noHistory)) {
      // absolute: the URL as stored, and `Type/id` (our own base is stripped at write time only for relative refs)
      // unless the URL is under another server's base: Patient/5 there is not Patient/5 here.
      const tail = /([A-Z][A-Za-z]+)\/([A-Za-z0-9\-.]{1,64})$/.exec(noHistory);
      const elsewhere =
        this.serverBase !== undefined && tail !== null && noHistory !== `${this.serverBase}/${tail[0]}`;
      return tail && !elsewhere ? [noHistory, `${tail[1]}/${tail[2]}`] : [noHistory];
    }
    const typed = /^([A-Z][A-Za-z]+)\/([A-Za-z0-9\-.]{1,64})$/.exec(noHistory);
    if (typed) {
      if (referenceType && typed[1] !== referenceType)
        throw fhirError('search-param-invalid', `'${truncate(raw)}' is not a ${referenceType} reference`);
      return this.withOwnBase([noHistory]);
    }
    if (!/^[A-Za-z0-9\-.]{1,64}$/.test(noHistory))
      throw fhirError(
        'search-param-invalid',
        `'${truncate(raw)}' is not a valid reference for '${def.code}'`,
      );
    const targets = referenceType
      ? [referenceType]
      : def.target.length > 0
        ? def.target
        : searchDefinitions().resourceTypes;
    return this.withOwnBase(targets.map((t) => `${t}/${noHistory}`));
  }

  /**
   * Relative `Type/id` forms and, when this server's base is known, the same under it: a reference stored as an
   * absolute URL under this server's base is kept as written, and "a relative reference resolving to the same
   * value as a specified absolute URL, or vice versa, qualifies as a match" (search.html#reference).
   */
  private withOwnBase(relative: string[]): string[] {
    const base = this.serverBase;
    return base === undefined ? relative : [...relative, ...relative.map((r) => `${base}/${r}`)];
  }

  private chainFilter(
    types: string[],
    def: SearchParamDef,
    defs: SearchParamDef[],
    modifier: string | undefined,
    rest: string,
    rawValue: string,
    depth: number,
  ): Filter | undefined {
    if (def.type !== 'reference')
      throw fhirError('search-param-invalid', `Chained parameter '${def.code}' is not a reference`);
    let targetTypes = [...new Set(defs.flatMap((d) => d.target))];
    if (modifier) {
      if (!targetTypes.includes(modifier))
        throw fhirError('search-param-invalid', `'${modifier}' is not a target of '${def.code}'`);
      targetTypes = [modifier];
    }
    // Keep the targets that define the next parameter; without any, the chain is unknown.
    const nextCode = rest.split(/[.:]/)[0];
    const viable =
      nextCode === '_id' || nextCode === '_lastUpdated' || nextCode === '_has'
        ? targetTypes
        : targetTypes.filter((t) => searchParameter(t, nextCode));
    if (viable.length === 0) {
      this.ignore(
        `Chain '${def.code}.${truncate(rest)}': no target of '${def.code}' has a parameter '${truncate(nextCode)}'`,
      );
      return undefined;
    }
    // Each viable target may define the next parameter differently: parse per target and OR them by type.
    const inner = this.filter(viable.length > 1 ? [viable[0]] : viable, rest, rawValue, depth + 1);
    if (!inner) return undefined;
    if (viable.length > 1) {
      // Only targets where the inner parameter has the same type keep it.
      const innerType = inner.kind === 'param' ? inner.type : undefined;
      const compatible = viable.filter((t) => {
        if (!innerType) return true;
        return searchParameter(t, nextCode)?.type === innerType;
      });
      return { kind: 'chain', param: def.code, targetTypes: compatible, inner };
    }
    return { kind: 'chain', param: def.code, targetTypes: viable, inner };
  }

  private hasFilter(types: string[], name: string, rawValue: string, depth: number): Filter | undefined {
    // _has:Observation:patient:code=x   or   _has:Observation:patient:_has:AuditEvent:entity:agent=y
    const m = /^_has:([A-Z][A-Za-z]+):([a-z][A-Za-z0-9-]*):(.+)$/.exec(name);
    if (!m)
      throw fhirError(
        'search-param-invalid',
        `Malformed _has parameter '${truncate(name)}' (expected _has:Type:reference:parameter)`,
      );
    const [, sourceType, param, rest] = m;
    if (!searchDefinitions().byType.has(sourceType))
      throw fhirError('search-param-invalid', `'${sourceType}' is not a resource type (in _has)`);
    const ref = searchParameter(sourceType, param);
    if (!ref || ref.type !== 'reference') {
      this.ignore(`_has: '${param}' is not a reference parameter of ${sourceType}`);
      return undefined;
    }
    if (ref.target.length > 0 && !types.some((t) => ref.target.includes(t))) {
      this.ignore(`_has: ${sourceType}.${param} never references ${types.join(', ')}`);
      return undefined;
    }
    const inner = this.filter([sourceType], rest, rawValue, depth + 1);
    return inner ? { kind: 'has', sourceType, param, inner } : undefined;
  }
}

function parseSort(types: string[], raw: string[], parser: QueryParser): SortKey[] {
  const keys: SortKey[] = [];
  for (const item of raw.flatMap((r) => r.split(','))) {
    const descending = item.startsWith('-');
    const code = descending ? item.slice(1) : item;
    if (code === '_id' || code === '_lastUpdated') {
      keys.push({ param: code, type: code, descending });
      continue;
    }
    const def = types.length === 1 ? searchParameter(types[0], code) : undefined;
    if (!def?.evaluate || def.type === 'composite' || def.type === 'special') {
      parser.ignore(`_sort: cannot sort by '${truncate(code)}'`);
      continue;
    }
    keys.push({ param: code, type: def.type, descending });
  }
  return keys;
}

function parseInclude(
  raw: string,
  reverse: boolean,
  iterate: boolean,
  types: string[],
  parser: QueryParser,
): IncludeSpec | undefined {
  if (raw === '*') {
    if (!reverse) return { sourceType: '*', param: '*', iterate };
    parser.ignore('_revinclude=* is not supported');
    return undefined;
  }
  const [sourceType, param, targetType, ...extra] = raw.split(':');
  if (extra.length > 0 || !sourceType || !param)
    throw fhirError(
      'search-param-invalid',
      `Malformed ${reverse ? '_revinclude' : '_include'} '${truncate(raw)}' (Type:param[:target])`,
    );
  if (!searchDefinitions().byType.has(sourceType))
    throw fhirError('search-param-invalid', `'${truncate(sourceType)}' is not a resource type`);
  if (!reverse && !iterate && !types.includes(sourceType)) {
    parser.ignore(`_include '${truncate(raw)}' does not start from the searched type`);
    return undefined;
  }
  if (reverse && param === '*') {
    parser.ignore(`_revinclude '${truncate(raw)}': '*' is not supported in _revinclude`);
    return undefined;
  }
  if (param !== '*') {
    const def = searchParameter(sourceType, param);
    if (!def || def.type !== 'reference') {
      parser.ignore(
        `${reverse ? '_revinclude' : '_include'} '${truncate(raw)}': '${truncate(param)}' is not a reference parameter of ${sourceType}`,
      );
      return undefined;
    }
  }
  if (targetType && !searchDefinitions().byType.has(targetType))
    throw fhirError('search-param-invalid', `'${truncate(targetType)}' is not a resource type`);
  return { sourceType, param, targetType: targetType || undefined, iterate };
}

function singleInt(values: string[], name: string, min: number, max: number): number | undefined {
  if (values.length === 0) return undefined;
  const raw = values[values.length - 1];
  if (!/^\d{1,9}$/.test(raw))
    throw fhirError('search-param-invalid', `${name} must be a non-negative integer, not '${truncate(raw)}'`);
  return Math.min(Math.max(Number(raw), min), max);
}

/** Parses a search query. Throws 400 FhirError for malformed or hostile input. */
export function parseSearch(query: Record<string, string[]>, options: ParseOptions = {}): CompiledQuery {
  const serverBase = options.serverBase?.replace(/\/+$/, '');
  const parser = new QueryParser(
    options.lenient === true && options.strict !== true,
    !options.resourceType && !query._type,
    options.terminology,
    serverBase,
  );
  const defs = searchDefinitions();
  const names = Object.keys(query);
  let parameterCount = 0;
  for (const name of names) {
    if (name.length > 256)
      throw fhirError('search-limit-exceeded', 'A search parameter name is longer than 256 characters');
    for (const value of query[name]) {
      parameterCount++;
      if (value.length > LIMITS.maxValueLength)
        throw fhirError(
          'search-limit-exceeded',
          `A value of parameter '${truncate(name)}' is longer than ${LIMITS.maxValueLength} characters`,
        );
      let commas = 0;
      for (let i = value.indexOf(','); i >= 0; i = value.indexOf(',', i + 1)) commas++;
      if (commas >= LIMITS.maxOrValues)
        throw fhirError(
          'search-limit-exceeded',
          `More than ${LIMITS.maxOrValues} OR values in parameter '${truncate(name)}'`,
        );
    }
  }
  if (parameterCount > LIMITS.maxParameters)
    throw fhirError(
      'search-limit-exceeded',
      `Too many search parameters (${parameterCount}; at most ${LIMITS.maxParameters})`,
    );

  let resourceTypes: string[];
  if (options.resourceType) resourceTypes = [options.resourceType];
  else {
    const listed = (query._type ?? []).flatMap((v) => v.split(',')).filter((t) => t !== '');
    for (const t of listed)
      if (!defs.byType.has(t))
        throw fhirError('search-param-invalid', `'${truncate(t)}' in _type is not a resource type`);
      else if (options.systemTypes && !options.systemTypes.includes(t))
        throw fhirError(
          'search-param-invalid',
          `'${truncate(t)}' in _type is not a type of this compartment`,
        );
    resourceTypes = listed.length > 0 ? [...new Set(listed)] : (options.systemTypes ?? defs.resourceTypes);
  }

  const filters: Filter[] = [];
  const applied: [string, string][] = [];
  // _type is part of what a system search asks: the paging links keep it (the next page holds the same types).
  if (!options.resourceType) for (const v of query._type ?? []) applied.push(['_type', v]);
  for (const [name, harmless] of Object.entries(CONTAINED_DEFAULTS))
    for (const value of query[name] ?? [])
      if (value !== harmless) parser.ignore(`${name}=${truncate(value)} is not supported (only ${harmless})`);
  for (const name of names) {
    if (
      PASSIVE.has(name) ||
      name.startsWith('_include') ||
      name.startsWith('_revinclude') ||
      name.startsWith('_sort')
    )
      continue;
    for (const value of query[name]) {
      const filter = parser.filter(resourceTypes, name, value, 0);
      if (filter) {
        filters.push(filter);
        applied.push([name, value]);
      }
    }
  }

  const count = singleInt(query._count ?? [], '_count', 0, LIMITS.maxCount) ?? LIMITS.defaultCount;
  const offset = singleInt(query._offset ?? [], '_offset', 0, LIMITS.maxOffset) ?? 0;
  const totalRaw = query._total?.[query._total.length - 1];
  if (totalRaw !== undefined && !['none', 'estimate', 'accurate'].includes(totalRaw))
    throw fhirError('search-param-invalid', `_total must be none, estimate or accurate`);
  const summary = query._summary?.[query._summary.length - 1];
  const summaryCount = summary === 'count';
  const sort = parseSort(resourceTypes, query._sort ?? [], parser);
  const elements = query._elements
    ?.flatMap((v) => v.split(','))
    .map((e) => e.trim())
    .filter((e) => e !== '');

  const include: IncludeSpec[] = [];
  const revinclude: IncludeSpec[] = [];
  for (const name of names) {
    const m = /^_(rev)?include(:iterate|:recurse)?$/.exec(name);
    if (!m) {
      if (name.startsWith('_include') || name.startsWith('_revinclude'))
        parser.ignore(`Unknown parameter '${truncate(name)}'`);
      continue;
    }
    for (const value of query[name]) {
      const spec = parseInclude(value, m[1] === 'rev', m[2] !== undefined, resourceTypes, parser);
      if (spec) (m[1] ? revinclude : include).push(spec);
    }
  }
  if (include.length + revinclude.length > LIMITS.maxIncludes)
    throw fhirError('search-limit-exceeded', `Too many _include/_revinclude (at most ${LIMITS.maxIncludes})`);

  for (const [name, values] of Object.entries(query)) {
    if (
      ['_count', '_offset', '_total', '_summary', '_sort', '_elements'].includes(name) ||
      name.startsWith('_include') ||
      name.startsWith('_revinclude')
    )
      for (const v of values) applied.push([name, v]);
  }

  return {
    resourceTypes,
    filters,
    sort,
    count,
    offset,
    total: totalRaw as CompiledQuery['total'],
    summaryCount,
    elements,
    include,
    revinclude,
    warnings: parser.warnings,
    applied,
    ...(serverBase !== undefined ? { serverBase } : {}),
  };
}

export { DATE_MAX, DATE_MIN };
