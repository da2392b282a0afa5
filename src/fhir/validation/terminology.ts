/**
 * Terminology on the loaded content: ValueSet expansion (from the expansions package or computed from `compose`
 * over loaded CodeSystems), code membership, and CodeSystem lookups. Content that cannot be expanded here
 * (SNOMED CT, LOINC, filters on external systems) answers "unknown" rather than failing.
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

export class Terminology {
  private readonly expansions = new Map<string, Expansion | null>();
  private readonly codeIndexes = new Map<string, Map<string, CodeSystemConcept> | null>();
  private expanding = new Set<string>();

  constructor(private readonly registry: DefinitionRegistry) {
    registry.onChange(() => {
      this.expansions.clear();
      this.codeIndexes.clear();
    });
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
    return !!this.registry.codeSystem(system);
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
      if (Array.isArray(inc.concept)) {
        concepts = inc.concept
          .filter((c) => typeof c?.code === 'string')
          .map((c) => ({
            system,
            code: c.code,
            display: c.display ?? idx?.get(c.code)?.display,
          }));
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
    // Incomplete: if the system itself is fully known and the VS draws on it only through our expansion, still unknown.
    return 'unknown';
  }

  /** Does the code exist in the code system? 'unknown' for systems not loaded or not complete here. */
  codeInSystem(
    system: string,
    code: string,
    version?: string,
  ): { result: Membership; display?: string; concept?: CodeSystemConcept } {
    const idx = this.codeSystemIndex(system);
    if (!idx) return { result: 'unknown' };
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
}
