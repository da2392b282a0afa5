/**
 * StructureDefinition snapshots compiled once into element trees the walker follows: children by JSON property
 * name (choice types expanded to `valueQuantity` ...), cardinality, types, fixed/pattern values, bindings,
 * constraints, slicing and slices.
 */
import type { ElementDefinition, ElementDefinitionConstraint, StructureDefinition } from 'fhir/r4.js';
import type { DefinitionRegistry } from '../definitions/definition-registry.js';
import { idToPath } from '../definitions/snapshot.js';
import { systemTypeToPrimitive } from './primitives.js';

export interface TypeRef {
  code: string;
  profiles: string[];
  targetProfiles: string[];
}

export interface Constraint {
  key: string;
  severity: 'error' | 'warning';
  human: string;
  expression: string;
  source?: string;
}

export interface Discriminator {
  type: 'value' | 'pattern' | 'type' | 'profile' | 'exists';
  path: string;
}

export interface ElementNode {
  id: string;
  path: string;
  /** JSON property stem: `value` for `value[x]`. */
  name: string;
  choice: boolean;
  min: number;
  max: number;
  /** Whether the property is a JSON array (the base element repeats). */
  isArray: boolean;
  types: TypeRef[];
  /** Own children from the snapshot (empty: use the type's definition). */
  children: ElementNode[];
  contentReference?: string;
  fixed?: unknown;
  pattern?: unknown;
  binding?: { strength: string; valueSet?: string };
  constraints: Constraint[];
  slicing?: { discriminators: Discriminator[]; rules: string; ordered: boolean };
  slices: ElementNode[];
  sliceName?: string;
  maxLength?: number;
  /** Property name -> node and the type that name selects; built on first use. */
  props?: Map<string, { node: ElementNode; type?: TypeRef }>;
  mustSupport?: boolean;
  isModifier?: boolean;
  /** For `contentReference` elements: the element whose children apply. */
  contentTarget?: ElementNode;
  minValue?: unknown;
  maxValue?: unknown;
  /** JSON property names this element may appear under (choice types expanded). */
  jsonNames?: string[];
  raw: ElementDefinition;
}

export interface CompiledStructure {
  url: string;
  type: string;
  kind: string;
  derivation?: string;
  root: ElementNode;
  byId: Map<string, ElementNode>;
}

function toMax(max: unknown): number {
  if (max === '*' || max === undefined) return Infinity;
  const n = Number(max);
  return Number.isFinite(n) ? n : Infinity;
}

function valueWithPrefix(
  el: ElementDefinition,
  prefix: 'fixed' | 'pattern' | 'minValue' | 'maxValue',
): unknown {
  for (const [k, v] of Object.entries(el))
    if (k.startsWith(prefix) && k.length > prefix.length && /[A-Z]/.test(k[prefix.length])) return v;
  return undefined;
}

/** A constraint the walker can evaluate: it has a key and a FHIRPath expression. */
function isEvaluable(
  c: ElementDefinitionConstraint,
): c is ElementDefinitionConstraint & { expression: string } {
  return typeof c.expression === 'string' && !!c.key;
}

export function compileStructure(sd: StructureDefinition): CompiledStructure | undefined {
  const elements = sd?.snapshot?.element;
  if (!Array.isArray(elements) || elements.length === 0) return undefined;
  const byId = new Map<string, ElementNode>();
  let root: ElementNode | undefined;
  for (const el of elements) {
    if (!el || typeof el.path !== 'string') continue;
    const node = compileElement(el, el.path);
    byId.set(node.id, node);
    if (!root) root = node;
    else attachToParent(node, byId);
  }
  if (!root) return undefined;
  for (const node of byId.values()) {
    if (node.contentReference) {
      const ref = node.contentReference.slice(node.contentReference.indexOf('#') + 1);
      node.contentTarget = byId.get(ref);
    }
  }
  return { url: sd.url, type: sd.type ?? root.path, kind: sd.kind, derivation: sd.derivation, root, byId };
}

/** One snapshot element as the walker reads it (its children and slices are attached afterwards). */
function compileElement(el: ElementDefinition, elementPath: string): ElementNode {
  const id: string =
    typeof el.id === 'string' ? el.id : el.sliceName ? `${elementPath}:${el.sliceName}` : elementPath;
  const path = idToPath(id);
  const last = path.slice(path.lastIndexOf('.') + 1);
  const choice = last.endsWith('[x]');
  const types = compileTypes(el);
  const baseMax = el.base?.max ?? el.max;
  return {
    id,
    path,
    name: choice ? last.slice(0, -3) : last,
    choice,
    min: typeof el.min === 'number' ? el.min : 0,
    max: toMax(el.max),
    isArray: baseMax !== '1' && baseMax !== '0',
    types,
    children: [],
    contentReference: el.contentReference,
    fixed: valueWithPrefix(el, 'fixed'),
    pattern: valueWithPrefix(el, 'pattern'),
    binding: el.binding?.strength
      ? { strength: el.binding.strength, valueSet: el.binding.valueSet }
      : undefined,
    constraints: (el.constraint ?? []).filter(isEvaluable).map((c) => ({
      key: c.key,
      severity: c.severity === 'error' ? 'error' : 'warning',
      human: c.human ?? '',
      expression: c.expression,
      source: c.source,
    })),
    slicing: el.slicing
      ? {
          discriminators: (el.slicing.discriminator ?? []).map((d) => ({ type: d.type, path: d.path })),
          rules: el.slicing.rules ?? 'open',
          ordered: !!el.slicing.ordered,
        }
      : undefined,
    slices: [],
    sliceName: el.sliceName,
    maxLength: el.maxLength,
    minValue: valueWithPrefix(el, 'minValue'),
    maxValue: valueWithPrefix(el, 'maxValue'),
    mustSupport: el.mustSupport,
    isModifier: el.isModifier,
    raw: el,
  };
}

/** An element's types; a System type (Resource.id's System.String) as the FHIR type its extension names. */
function compileTypes(el: ElementDefinition): TypeRef[] {
  return (el.type ?? []).map((t) => {
    let code: string = t.code;
    const sys = typeof code === 'string' ? systemTypeToPrimitive(code) : undefined;
    if (sys) {
      const ext = (t.extension ?? []).find(
        (e) => e.url === 'http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type',
      );
      code = ext?.valueUrl ?? ext?.valueUri ?? sys;
    }
    return { code, profiles: t.profile ?? [], targetProfiles: t.targetProfile ?? [] };
  });
}

/** A slice goes to its sliced element's slices, any other element to its parent's children. */
function attachToParent(node: ElementNode, byId: Map<string, ElementNode>): void {
  const id = node.id;
  const dot = id.lastIndexOf('.');
  const parentId = id.slice(0, dot);
  const lastSeg = id.slice(dot + 1);
  if (lastSeg.includes(':')) {
    const slicedId =
      parentId + '.' + lastSeg.slice(0, lastSeg.lastIndexOf(lastSeg.includes('/') ? '/' : ':'));
    const sliced = byId.get(slicedId);
    if (sliced) sliced.slices.push(node);
    return;
  }
  const parent = byId.get(parentId);
  if (parent) parent.children.push(node);
}

/** Caches compiled structures by canonical URL for a registry. */
export class StructureCache {
  private readonly cache = new Map<string, CompiledStructure | null>();
  constructor(private readonly registry: DefinitionRegistry) {
    registry.onChange(() => {
      this.cache.clear();
      this.byType.clear();
    });
  }

  get(url: string): CompiledStructure | undefined {
    let c = this.cache.get(url);
    if (c === undefined) {
      const sd = this.registry.structureDefinition(url);
      c = (sd ? compileStructure(sd) : undefined) ?? null;
      // Unknown URLs come from input (meta.profile): remember only a bounded number of them.
      if (c || this.cache.size < 10_000) this.cache.set(url, c);
    }
    return c ?? undefined;
  }

  private readonly byType = new Map<string, CompiledStructure | null>();

  type(code: string): CompiledStructure | undefined {
    let c = this.byType.get(code);
    if (c === undefined) {
      c = this.get(code.includes('/') ? code : `http://hl7.org/fhir/StructureDefinition/${code}`) ?? null;
      if (c || this.byType.size < 10_000) this.byType.set(code, c);
    }
    return c ?? undefined;
  }
}
