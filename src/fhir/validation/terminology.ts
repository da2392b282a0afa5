/**
 * Terminology on the loaded content: ValueSet expansion (from the expansions package or computed from `compose`
 * over loaded CodeSystems), code membership, and CodeSystem lookups. Content that cannot be expanded here
 * (SNOMED CT, LOINC, filters on external systems) answers "unknown" rather than failing, unless the big code
 * system is loaded into the terminology store (`useLoadedCodeSystems`, `hie-ledger terminology load`): then its
 * codes are looked up there, and a value set drawing on it is decided code by code (`compose` evaluated for the
 * one code) rather than by expanding it. This class is the TerminologyPort (src/fhir/terminology-port.ts).
 */
import type {
  CodeSystemConcept as FhirCodeSystemConcept,
  CodeSystemConceptDesignation,
  CodeSystemConceptProperty,
  ValueSet,
  ValueSetCompose,
  ValueSetComposeInclude,
  ValueSetComposeIncludeFilter,
  ValueSetExpansionContains,
} from 'fhir/r4.js';
import type { DefinitionRegistry } from '../definitions/definition-registry.js';
import type {
  CodeListResult,
  LoadedCodeSystems,
  LoadedConcept,
  TerminologyPort,
} from '../terminology-port.js';

/** Most concepts of a loaded code system one expansion takes (a larger one is not expanded: decided per code). */
export const MAX_LOADED_EXPANSION = 10_000;
/** Longest regex filter value evaluated (a ValueSet may be stored through the API). */
const MAX_FILTER_REGEX = 500;

export interface ExpandedConcept {
  system: string;
  code: string;
  display?: string;
  version?: string;
}

export interface Expansion {
  /** `system|code` keys. */
  keys: Set<string>;
  /** Codes alone (for `code` elements, which carry no system). */
  codes: Set<string>;
  concepts: ExpandedConcept[];
  /** False when part of the value set could not be expanded (an unknown system, an unsupported filter). */
  complete: boolean;
  /** Systems the value set draws on. */
  systems: Set<string>;
}

export type Membership = 'yes' | 'no' | 'unknown';

export interface CodeSystemConcept {
  code: string;
  display?: string;
  definition?: string;
  designation?: CodeSystemConceptDesignation[];
  property?: CodeSystemConceptProperty[];
  parent?: string;
}

export class Terminology implements TerminologyPort {
  private readonly expansions = new Map<string, Expansion | null>();
  private readonly codeIndexes = new Map<string, Map<string, CodeSystemConcept> | null>();
  private expanding = new Set<string>();
  private deciding = new Set<string>();
  /** The big code systems loaded into the terminology store, if any. */
  private loaded?: LoadedCodeSystems;

  constructor(private readonly registry: DefinitionRegistry) {
    registry.onChange(() => {
      this.expansions.clear();
      this.codeIndexes.clear();
    });
  }

  /** Looks codes of the loaded big code systems up in the terminology store (src/terminology/). */
  useLoadedCodeSystems(loaded: LoadedCodeSystems | undefined): void {
    this.loaded = loaded;
    this.expansions.clear();
  }

  /** The loaded code systems (for the terminology operations and TerminologyCapabilities). */
  loadedCodeSystems(): LoadedCodeSystems | undefined {
    return this.loaded;
  }

  /** The loaded big code system of this URL, when it has no complete CodeSystem resource here. */
  private loadedSystem(system: string): LoadedCodeSystems | undefined {
    return this.loaded?.system(system) && !this.codeSystemIndex(system) ? this.loaded : undefined;
  }

  /** Concepts of a CodeSystem by code (hierarchy flattened, `parent` noted); undefined when unknown or not complete. */
  codeSystemIndex(system: string): Map<string, CodeSystemConcept> | undefined {
    let idx = this.codeIndexes.get(system);
    if (idx === undefined) {
      const cs = this.registry.codeSystem(system);
      if (!cs || !Array.isArray(cs.concept) || (cs.content && cs.content !== 'complete')) idx = null;
      else {
        idx = new Map();
        const add = (concepts: FhirCodeSystemConcept[], parent: string | undefined, depth: number): void => {
          if (depth > 50) return;
          for (const c of concepts) {
            if (!c || typeof c.code !== 'string') continue;
            idx!.set(c.code, {
              code: c.code,
              display: c.display,
              definition: c.definition,
              designation: c.designation,
              property: c.property,
              parent,
            });
            if (Array.isArray(c.concept)) add(c.concept, c.code, depth + 1);
          }
        };
        add(cs.concept, undefined, 0);
      }
      this.codeIndexes.set(system, idx);
    }
    return idx ?? undefined;
  }

  /** Whether a system is known here (a CodeSystem resource is loaded, even if not complete). */
  knowsSystem(system: string): boolean {
    return !!this.registry.codeSystem(system) || !!this.loaded?.system(system);
  }

  /** Whether the codes of a system are known here (a complete CodeSystem, or a loaded big code system). */
  hasCodes(system: string): boolean {
    return !!this.codeSystemIndex(system) || !!this.loaded?.system(system);
  }

  /** Whether a url names a loaded ValueSet and no loaded CodeSystem (a value set used where a code system belongs). */
  isValueSetOnly(url: string): boolean {
    return !!this.registry.valueSet(url) && !this.registry.codeSystem(url);
  }

  expand(valueSetUrl: string): Expansion | undefined {
    const url = valueSetUrl;
    let exp = this.expansions.get(url);
    if (exp !== undefined) return exp ?? undefined;
    if (this.expanding.has(url)) return undefined;
    this.expanding.add(url);
    try {
      const vs = this.registry.valueSet(url);
      exp = vs ? this.expandValueSet(vs) : null;
    } finally {
      this.expanding.delete(url);
    }
    this.expansions.set(url, exp);
    return exp ?? undefined;
  }

  private expandValueSet(vs: ValueSet): Expansion {
    const out: Expansion = {
      keys: new Set(),
      codes: new Set(),
      concepts: [],
      complete: true,
      systems: new Set(),
    };
    const add = (c: ExpandedConcept): void => {
      const key = `${c.system}|${c.code}`;
      if (out.keys.has(key)) return;
      out.keys.add(key);
      out.codes.add(c.code);
      out.concepts.push(c);
      out.systems.add(c.system);
    };
    // Prefer a computed expansion from compose over loaded complete CodeSystems; fall back to the stored expansion.
    const composed = vs.compose ? this.compose(vs.compose) : undefined;
    if (composed && composed.complete) {
      for (const c of composed.concepts) add(c);
      return out;
    }
    if (Array.isArray(vs.expansion?.contains)) {
      const walk = (items: ValueSetExpansionContains[], depth: number): void => {
        if (depth > 50) return;
        for (const c of items) {
          if (c?.code && c.system && !c.abstract)
            add({ system: c.system, code: c.code, display: c.display, version: c.version });
          if (Array.isArray(c?.contains)) walk(c.contains, depth + 1);
        }
      };
      walk(vs.expansion.contains, 0);
      if (
        vs.expansion.total !== undefined &&
        typeof vs.expansion.total === 'number' &&
        vs.expansion.total > out.concepts.length
      )
        out.complete = false;
      return out;
    }
    if (composed) {
      for (const c of composed.concepts) add(c);
      for (const s of composed.systems) out.systems.add(s);
      out.complete = false;
    } else out.complete = false;
    return out;
  }

  /** The concepts one include (or exclude) selects; undefined when they cannot be known here. */
  private includeSet(inc: ValueSetComposeInclude, systems: Set<string>): ExpandedConcept[] | undefined {
    let concepts: ExpandedConcept[] | undefined;
    const system = inc.system;
    if (typeof system === 'string') {
      systems.add(system);
      const idx = this.codeSystemIndex(system);
      const loaded = idx ? undefined : this.loadedSystem(system);
      if (Array.isArray(inc.concept)) {
        concepts = inc.concept
          .filter((c) => typeof c?.code === 'string')
          .map((c) => ({
            system,
            code: c.code,
            display: c.display ?? idx?.get(c.code)?.display ?? loaded?.concept(system, c.code)?.display,
          }));
      } else if (loaded) {
        concepts = this.loadedIncludeSet(loaded, system, inc.filter ?? []);
        if (!concepts) return undefined;
      } else if (!idx) return undefined;
      else if (Array.isArray(inc.filter) && inc.filter.length) {
        concepts = [];
        for (const c of idx.values()) {
          if (inc.filter.every((f) => this.filterMatches(idx, c, f)))
            concepts.push({ system, code: c.code, display: c.display });
        }
        if (!inc.filter.every((f) => ['is-a', 'descendent-of', 'is-not-a', '='].includes(f.op)))
          return undefined;
      } else {
        concepts = [...idx.values()].map((c) => ({ system, code: c.code, display: c.display }));
      }
    }
    if (Array.isArray(inc.valueSet)) {
      for (const u of inc.valueSet) {
        const e = this.expand(u);
        if (!e || !e.complete) return undefined;
        const keys = e.keys;
        concepts = concepts ? concepts.filter((c) => keys.has(`${c.system}|${c.code}`)) : e.concepts;
      }
    }
    return concepts;
  }

  /**
   * The concepts of a loaded code system an include selects: the whole system or the descendants a hierarchy
   * filter names, then the other filters code by code; undefined when more than MAX_LOADED_EXPANSION or a filter
   * cannot be evaluated here.
   */
  private loadedIncludeSet(
    loaded: LoadedCodeSystems,
    system: string,
    filters: ValueSetComposeIncludeFilter[],
  ): ExpandedConcept[] | undefined {
    const hierarchy = filters.find(
      (f) =>
        (f.property === 'concept' || f.property === 'code') && (f.op === 'is-a' || f.op === 'descendent-of'),
    );
    let codes: string[];
    if (hierarchy) {
      const below = loaded.descendants(system, hierarchy.value, MAX_LOADED_EXPANSION);
      if (below.length >= MAX_LOADED_EXPANSION) return undefined;
      codes = hierarchy.op === 'is-a' ? [hierarchy.value, ...below] : below;
    } else {
      if ((loaded.system(system)?.count ?? Infinity) > MAX_LOADED_EXPANSION) return undefined;
      codes = loaded.page(system, { offset: 0, count: MAX_LOADED_EXPANSION }).concepts.map((c) => c.code);
    }
    const out: ExpandedConcept[] = [];
    for (const code of codes) {
      const concept = loaded.concept(system, code);
      if (!concept) continue;
      const verdict = this.loadedFilters(loaded, system, concept, filters);
      if (verdict === 'unknown') return undefined;
      if (verdict === 'yes') out.push({ system, code, display: concept.display });
    }
    return out;
  }

  /** Whether a concept of a loaded code system passes every filter of an include ('unknown': one is not supported). */
  private loadedFilters(
    loaded: LoadedCodeSystems,
    system: string,
    concept: LoadedConcept,
    filters: ValueSetComposeIncludeFilter[],
  ): Membership {
    for (const f of filters) {
      const verdict = this.loadedFilter(loaded, system, concept, f);
      if (verdict !== 'yes') return verdict;
    }
    return 'yes';
  }

  private loadedFilter(
    loaded: LoadedCodeSystems,
    system: string,
    concept: LoadedConcept,
    f: ValueSetComposeIncludeFilter,
  ): Membership {
    const yes = (b: boolean): Membership => (b ? 'yes' : 'no');
    const code = concept.code;
    if (typeof f?.value !== 'string' || typeof f.op !== 'string') return 'unknown';
    if (f.property === 'concept' || f.property === 'code') {
      switch (f.op) {
        case 'is-a':
          return yes(loaded.subsumes(system, f.value, code));
        case 'descendent-of':
          return yes(code !== f.value && loaded.subsumes(system, f.value, code));
        case 'is-not-a':
          return yes(!loaded.subsumes(system, f.value, code));
        case '=':
          return yes(code === f.value);
        case 'in':
          return yes(f.value.split(',').includes(code));
        case 'not-in':
          return yes(!f.value.split(',').includes(code));
        case 'regex':
          return regexMatches(f.value, [code]);
        default:
          return 'unknown';
      }
    }
    const values =
      f.property === 'display'
        ? concept.display !== undefined
          ? [concept.display]
          : []
        : loaded.property(system, code, f.property);
    switch (f.op) {
      case '=':
        return yes(values.includes(f.value));
      case 'in':
        return yes(values.some((v) => f.value.split(',').includes(v)));
      case 'not-in':
        return yes(!values.some((v) => f.value.split(',').includes(v)));
      case 'exists':
        return yes(values.length > 0 === (f.value === 'true'));
      case 'regex':
        return regexMatches(f.value, values);
      default:
        return 'unknown';
    }
  }

  /**
   * Is system|code in the value set, decided for this one code from `compose` (for value sets drawing on a loaded
   * big code system, which are not expanded). 'unknown' when some part cannot be decided here.
   */
  private decideByCompose(valueSetUrl: string, system: string, code: string): Membership {
    const vs = this.registry.valueSet(valueSetUrl);
    if (!vs?.compose || this.deciding.has(valueSetUrl)) return 'unknown';
    this.deciding.add(valueSetUrl);
    try {
      let included: Membership = 'no';
      for (const inc of vs.compose.include ?? []) {
        const m = this.includeHas(inc, system, code);
        if (m === 'yes') {
          included = 'yes';
          break;
        }
        if (m === 'unknown') included = 'unknown';
      }
      if (included !== 'yes') return included;
      for (const exc of vs.compose.exclude ?? []) {
        const m = this.includeHas(exc, system, code);
        if (m !== 'no') return m === 'yes' ? 'no' : 'unknown';
      }
      return 'yes';
    } finally {
      this.deciding.delete(valueSetUrl);
    }
  }

  /** Does one include (or exclude) select system|code? */
  private includeHas(inc: ValueSetComposeInclude, system: string, code: string): Membership {
    let verdict: Membership = 'yes';
    if (typeof inc.system === 'string') {
      if (inc.system !== system) return 'no';
      if (Array.isArray(inc.concept)) {
        if (!inc.concept.some((c) => c?.code === code)) return 'no';
      } else {
        const loaded = this.loadedSystem(system);
        if (!loaded) {
          const expanded = this.includeSet({ ...inc, valueSet: undefined }, new Set());
          if (!expanded) return 'unknown';
          if (!expanded.some((c) => c.code === code)) return 'no';
        } else {
          const concept = loaded.concept(system, code);
          if (!concept) return 'no';
          verdict = this.loadedFilters(loaded, system, concept, inc.filter ?? []);
          if (verdict === 'no') return 'no';
        }
      }
    }
    for (const url of inc.valueSet ?? []) {
      const m = this.member(url, system, code);
      if (m === 'no') return 'no';
      if (m === 'unknown') verdict = 'unknown';
    }
    return verdict;
  }

  private compose(compose: ValueSetCompose): Expansion {
    const result: Expansion = {
      keys: new Set(),
      codes: new Set(),
      concepts: [],
      complete: true,
      systems: new Set(),
    };
    const excluded = new Set<string>();
    for (const exc of compose.exclude ?? []) {
      const cs = this.includeSet(exc, result.systems);
      if (!cs) continue;
      for (const c of cs) excluded.add(`${c.system}|${c.code}`);
    }
    for (const inc of compose.include ?? []) {
      const cs = this.includeSet(inc, result.systems);
      if (!cs) {
        result.complete = false;
        continue;
      }
      for (const c of cs) {
        const key = `${c.system}|${c.code}`;
        if (excluded.has(key) || result.keys.has(key)) continue;
        result.keys.add(key);
        result.codes.add(c.code);
        result.concepts.push(c);
      }
    }
    return result;
  }

  private filterMatches(
    idx: Map<string, CodeSystemConcept>,
    c: CodeSystemConcept,
    f: ValueSetComposeIncludeFilter,
  ): boolean {
    const isDescendant = (code: string, ancestor: string): boolean => {
      let cur = idx.get(code)?.parent;
      for (let i = 0; cur && i < 50; i++) {
        if (cur === ancestor) return true;
        cur = idx.get(cur)?.parent;
      }
      return false;
    };
    if (f.property === 'concept' || f.property === 'code') {
      if (f.op === 'is-a') return c.code === f.value || isDescendant(c.code, f.value);
      if (f.op === 'descendent-of') return isDescendant(c.code, f.value);
      if (f.op === 'is-not-a') return !(c.code === f.value || isDescendant(c.code, f.value));
      if (f.op === '=') return c.code === f.value;
    }
    if (f.op === '=') {
      const p = (c.property ?? []).find((x) => x.code === f.property);
      if (!p) return false;
      const v = p.valueCode ?? p.valueString ?? p.valueBoolean ?? p.valueCoding?.code;
      return String(v) === String(f.value);
    }
    return false;
  }

  /** Is system|code in the value set? 'unknown' when it cannot be decided on the loaded content. */
  member(valueSetUrl: string, system: string | undefined, code: string): Membership {
    const exp = this.expand(valueSetUrl);
    if (!exp) return 'unknown';
    if (system === undefined) {
      if (exp.codes.has(code)) return 'yes';
      return exp.complete ? 'no' : 'unknown';
    }
    if (exp.keys.has(`${system}|${code}`)) return 'yes';
    if (exp.complete) return 'no';
    // Incomplete: a value set drawing on a loaded big code system is decided for this code from its compose.
    if (this.loadedSystem(system)) return this.decideByCompose(valueSetUrl, system, code);
    return 'unknown';
  }

  /** Does the code exist in the code system? 'unknown' for systems not loaded or not complete here. */
  codeInSystem(
    system: string,
    code: string,
    version?: string,
  ): { result: Membership; display?: string; concept?: CodeSystemConcept } {
    const idx = this.codeSystemIndex(system);
    if (!idx) return this.codeInLoadedSystem(system, code, version);
    // Another version of the code system than the one loaded: its codes are not known here (CodeSystem.version).
    const loadedVersion = this.registry.codeSystem(system)?.version;
    if (version !== undefined && loadedVersion !== undefined && version !== loadedVersion)
      return { result: 'unknown' };
    let c = idx.get(code);
    // CodeSystem.caseSensitive false: codes that differ only in case are the same code.
    if (!c && this.registry.codeSystem(system)?.caseSensitive === false) {
      const folded = code.toLowerCase();
      for (const [k, v] of idx)
        if (k.toLowerCase() === folded) {
          c = v;
          break;
        }
    }
    return c ? { result: 'yes', display: c.display, concept: c } : { result: 'no' };
  }

  /** codeInSystem for a loaded big code system ('unknown' when not loaded, or another version than the one loaded). */
  private codeInLoadedSystem(
    system: string,
    code: string,
    version: string | undefined,
  ): { result: Membership; display?: string; concept?: CodeSystemConcept } {
    const info = this.loaded?.system(system);
    if (!info) return { result: 'unknown' };
    if (version !== undefined && info.version !== undefined && version !== info.version)
      return { result: 'unknown' };
    const concept = this.loaded!.concept(system, code);
    if (!concept) return { result: 'no' };
    return { result: 'yes', display: concept.display, concept: asCodeSystemConcept(concept) };
  }

  // ---------------------------------------------------------------- TerminologyPort (search modifiers)

  valueSetCodes(valueSetUrl: string, limit: number): CodeListResult {
    if (!this.registry.valueSet(valueSetUrl))
      return { kind: 'unknown', message: `ValueSet '${valueSetUrl}' is not known to this server` };
    const expansion = this.expand(valueSetUrl);
    if (!expansion || !expansion.complete)
      return {
        kind: 'unknown',
        message: `ValueSet '${valueSetUrl}' cannot be expanded here (it draws on code systems not loaded on this server, or is too large)`,
      };
    if (expansion.concepts.length > limit) return { kind: 'too-many', limit };
    return { kind: 'codes', codes: expansion.concepts.map((c) => ({ system: c.system, code: c.code })) };
  }

  subsumptionCodes(
    system: string,
    code: string,
    direction: 'below' | 'above',
    limit: number,
  ): CodeListResult {
    const idx = this.codeSystemIndex(system);
    let related: string[];
    if (idx) {
      related = [];
      if (direction === 'above') {
        let parent = idx.get(code)?.parent;
        for (let i = 0; parent !== undefined && i < 50; i++, parent = idx.get(parent)?.parent)
          related.push(parent);
      } else {
        for (const c of idx.values()) {
          let parent = c.parent;
          for (let i = 0; parent !== undefined && i < 50; i++, parent = idx.get(parent)?.parent)
            if (parent === code) {
              related.push(c.code);
              break;
            }
        }
      }
    } else if (this.loaded?.system(system)) {
      related =
        direction === 'below'
          ? this.loaded.descendants(system, code, limit)
          : this.loaded.ancestors(system, code, limit);
    } else
      return {
        kind: 'unknown',
        message: `CodeSystem '${system}' is not loaded on this server, so its hierarchy is not known`,
      };
    if (related.length + 1 > limit) return { kind: 'too-many', limit };
    return { kind: 'codes', codes: [code, ...related].map((c) => ({ system, code: c })) };
  }
}

/** A loaded concept as the validator's concept (designations for display checks). */
function asCodeSystemConcept(concept: LoadedConcept): CodeSystemConcept {
  return {
    code: concept.code,
    display: concept.display,
    designation: concept.designations.map((d) => ({
      value: d.value,
      ...(d.language ? { language: d.language } : {}),
    })),
    parent: concept.parents[0],
  };
}

/** Whether any value matches a filter's regex (the whole value, as FHIR's regex filter means); 'unknown' if unusable. */
function regexMatches(pattern: string, values: string[]): Membership {
  if (pattern.length > MAX_FILTER_REGEX) return 'unknown';
  let re: RegExp;
  try {
    re = new RegExp(`^(?:${pattern})$`, 'u');
  } catch {
    return 'unknown';
  }
  return values.some((v) => re.test(v)) ? 'yes' : 'no';
}
