/**
 * Snapshot generation for profiles published only as a differential (FHIR R4 "Snapshot generation", simplified):
 * start from the base definition's snapshot, then apply each differential element in order, matched by element id:
 * existing elements are constrained, new slices are cloned from their sliced element, and paths that go into a
 * data type are expanded from that type's own snapshot first.
 */
import type { ElementDefinition, ElementDefinitionType, StructureDefinition } from 'fhir/r4.js';
import type { DefinitionRegistry } from './definition-registry.js';
import type { JsonObject } from './json.js';

/**
 * An element of the snapshot being built. Snapshot elements always carry an id (R4 snapshots do, and every element
 * made here gets one); any other property is copied through as JSON.
 */
type WorkElement = ElementDefinition & { id: string } & JsonObject;

const MERGE_SKIP = new Set(['id', 'path', 'constraint', 'extension', 'base']);

/** The element id of a differential element (older profiles carry only `path` and `sliceName`). */
function elementId(el: ElementDefinition): string {
  if (typeof el.id === 'string') return el.id;
  return typeof el.sliceName === 'string' ? `${el.path}:${el.sliceName}` : String(el.path);
}

/** Removes slice names from an id to get its path. */
export function idToPath(id: string): string {
  return id
    .split('.')
    .map((s) => (s.includes(':') ? s.slice(0, s.indexOf(':')) : s))
    .join('.');
}

function clone<T>(v: T): T {
  return v === undefined ? v : JSON.parse(JSON.stringify(v));
}

function renamePrefix(el: ElementDefinition, fromId: string, toId: string): WorkElement {
  const out = clone(el) as WorkElement;
  out.id = toId + String(el.id ?? el.path).slice(fromId.length);
  out.path = idToPath(out.id);
  return out;
}

/**
 * `problems`, when given, collects what makes the differential unusable: elements that match nothing in the base,
 * and fixed values that contradict the base's (a profile may only constrain further). `location` is the element path.
 */
export interface SnapshotProblem {
  message: string;
  location?: string;
}

export function generateSnapshot(
  sd: StructureDefinition,
  registry: DefinitionRegistry,
  problems?: SnapshotProblem[],
): { element: ElementDefinition[] } {
  const working = startFromBase(sd, registry);
  for (const diff of sd.differential?.element ?? []) applyDifferential(working, diff, problems);
  return { element: working.elements };
}

/** The snapshot being built: the base's elements (root renamed when the profile renames it), grown in place. */
class WorkingSnapshot {
  constructor(
    readonly elements: WorkElement[],
    private readonly registry: DefinitionRegistry,
    readonly baseUrl: string,
    readonly baseRoot: string,
    readonly root: string,
  ) {}

  indexOf(id: string): number {
    return this.elements.findIndex((e) => (e.id ?? e.path) === id);
  }

  /** Index just past the last descendant (children and slices) of the element at i. */
  endOf(i: number): number {
    const elements = this.elements;
    const id = elements[i].id;
    let j = i + 1;
    while (j < elements.length) {
      const other = elements[j].id;
      if (other.startsWith(id + '.') || other.startsWith(id + ':')) j++;
      else break;
    }
    return j;
  }

  /** Makes sure an element with this id exists, expanding types and cloning slices as needed. */
  ensure(id: string): number {
    const i = this.indexOf(id);
    if (i >= 0) return i;
    const dot = id.lastIndexOf('.');
    const last = id.slice(dot + 1);
    const parentId = id.slice(0, dot);
    if (dot < 0) return -1;
    if (last.includes(':')) return this.addSlice(parentId, last);
    const pi = this.ensure(parentId);
    if (pi < 0) return -1;
    // A choice element named by its type (`valueQuantity`) stands for `value[x]`.
    const viaChoice = this.indexOf(parentId + '.' + this.choiceBaseName(last, parentId));
    if (viaChoice >= 0 && this.choiceBaseName(last, parentId) !== last) return viaChoice;
    return this.expandChildren(pi, id);
  }

  /** A new slice: clone the sliced element with its descendants, insert after the last existing slice. */
  private addSlice(parentId: string, last: string): number {
    const elements = this.elements;
    const slicedId = parentId + '.' + last.slice(0, last.indexOf(':'));
    let si = this.ensure(slicedId);
    if (si < 0) {
      // e.g. `valueQuantity` slice names on a choice element
      si = this.ensure(parentId + '.' + this.choiceBaseName(last.slice(0, last.indexOf(':')), parentId));
      if (si < 0) return -1;
    }
    const slicedRealId = elements[si].id;
    const end = this.endOf(si);
    const copies = [elements[si]];
    for (let k = si + 1; k < end; k++) {
      const e = elements[k];
      if (e.id.startsWith(slicedRealId + '.')) copies.push(e);
    }
    const sliceName = last.slice(last.indexOf(':') + 1);
    const newId = parentId + '.' + last;
    const inserted = copies.map((e) => renamePrefix(e, slicedRealId, newId));
    inserted[0].sliceName = sliceName;
    delete inserted[0].slicing;
    elements.splice(end, 0, ...inserted);
    return end;
  }

  /** Expands the parent's type (or content reference) to reach `id`, unless the parent already has children. */
  private expandChildren(pi: number, id: string): number {
    const { elements, registry } = this;
    const parent = elements[pi];
    const parentEnd = this.endOf(pi);
    const hasChildren = elements
      .slice(pi + 1, parentEnd)
      .some((e) => String(e.id).startsWith(parent.id + '.'));
    if (hasChildren) return -1;
    const types: ElementDefinitionType[] = parent.type ?? [];
    let typeSd: StructureDefinition | undefined;
    if (types.length >= 1) {
      const t = types[0];
      typeSd =
        (t.profile?.[0] && registry.structureDefinition(t.profile[0])) || registry.typeDefinition(t.code);
    } else if (parent.contentReference) {
      const refId = String(parent.contentReference).replace(/^#/, '');
      const ri = this.indexOf(refId);
      if (ri >= 0) {
        const refEnd = this.endOf(ri);
        const kids = elements
          .slice(ri + 1, refEnd)
          .filter(
            (e) => String(e.id).startsWith(refId + '.') && !String(e.id).slice(refId.length).includes(':'),
          )
          .map((e) => renamePrefix(e, refId, parent.id));
        elements.splice(pi + 1, 0, ...kids);
        return this.indexOf(id);
      }
    }
    if (!typeSd?.snapshot?.element) return -1;
    const typeRoot: string = typeSd.snapshot.element[0].id ?? typeSd.snapshot.element[0].path;
    const kids = typeSd.snapshot.element.slice(1).map((e) => renamePrefix(e, typeRoot, parent.id));
    elements.splice(pi + 1, 0, ...kids);
    return this.indexOf(id);
  }

  choiceBaseName(name: string, parentId: string): string {
    for (const e of this.elements) {
      const eid = e.id;
      if (!eid.startsWith(parentId + '.') || !eid.endsWith('[x]')) continue;
      const stem = eid.slice(parentId.length + 1, -3);
      const suffix = name.slice(stem.length).toLowerCase();
      // Only a type the choice allows (`valueQuantity`), not any capitalised suffix (`valueBla`).
      if (
        !stem.includes('.') &&
        name.startsWith(stem) &&
        /^[A-Z]/.test(name.slice(stem.length)) &&
        (e.type ?? []).some((t) => String(t.code).toLowerCase() === suffix)
      )
        return stem + '[x]';
    }
    return name;
  }
}

/** Phase 1: a copy of the base definition's snapshot. */
function startFromBase(sd: StructureDefinition, registry: DefinitionRegistry): WorkingSnapshot {
  const baseUrl = sd.baseDefinition;
  if (typeof baseUrl !== 'string') throw new Error('snapshot: no baseDefinition');
  const base = registry.structureDefinition(baseUrl);
  if (!base?.snapshot?.element) throw new Error(`snapshot: base ${baseUrl} unknown`);
  const baseRoot: string = base.snapshot.element[0].path;
  const root: string = sd.type ?? baseRoot;
  // Logical models / specialisations may rename the root; constraints keep it.
  const elements = base.snapshot.element.map((e) =>
    baseRoot === root ? (clone(e) as WorkElement) : renamePrefix(e, baseRoot, root),
  );
  return new WorkingSnapshot(elements, registry, baseUrl, baseRoot, root);
}

/** Phase 2, per differential element in order: find (or make) its element, then constrain it. */
function applyDifferential(
  working: WorkingSnapshot,
  diff: ElementDefinition,
  problems: SnapshotProblem[] | undefined,
): void {
  const { baseRoot, root, baseUrl } = working;
  if (typeof diff.id === 'string' && typeof diff.path === 'string' && idToPath(diff.id) !== diff.path)
    problems?.push({
      message: `The path must be '${idToPath(diff.id)}' not '${diff.path}' (element id '${diff.id}')`,
    });
  let id = elementId(diff);
  if (baseRoot !== root && id.startsWith(baseRoot)) id = root + id.slice(baseRoot.length);
  const i = working.ensure(id);
  if (i < 0) {
    problems?.push({
      message: `The differential element '${id}' matches no element of the base ${baseUrl}`,
    });
    return;
  }
  const target = working.elements[i];
  mergeProperties(target, diff, id, baseUrl, problems);
  narrowChoiceTypes(target, diff);
  if (Array.isArray(diff.constraint)) {
    const keys = new Set((target.constraint ?? []).map((c) => c.key));
    target.constraint = [
      ...(target.constraint ?? []),
      ...clone(diff.constraint).filter((c) => !keys.has(c.key)),
    ];
  }
}

/** The differential's properties replace the base's; a fixed value may not contradict the base's. */
function mergeProperties(
  target: WorkElement,
  diff: ElementDefinition,
  id: string,
  baseUrl: string,
  problems: SnapshotProblem[] | undefined,
): void {
  for (const [k, v] of Object.entries(diff)) {
    if (MERGE_SKIP.has(k)) continue;
    if (
      problems &&
      /^fixed[A-Z]/.test(k) &&
      target[k] !== undefined &&
      JSON.stringify(target[k]) !== JSON.stringify(v)
    ) {
      problems.push({
        message: `Value is '${String(typeof v === 'object' ? JSON.stringify(v) : v)}' but is fixed to '${String(typeof target[k] === 'object' ? JSON.stringify(target[k]) : target[k])}' in the base ${baseUrl}`,
        location: String(diff.path ?? id),
      });
    }
    target[k] = clone(v);
  }
}

/** A type constraint on a choice element named by type (`valueQuantity`) restricts its types. */
function narrowChoiceTypes(target: WorkElement, diff: ElementDefinition): void {
  const diffLast =
    String(diff.path ?? '')
      .split('.')
      .pop() ?? '';
  if (String(target.path).endsWith('[x]') && !diffLast.endsWith('[x]') && !diff.type) {
    const stem = String(target.path).split('.').pop()!.slice(0, -3);
    const typeName = diffLast.slice(stem.length);
    const t = (target.type ?? []).filter((x) => x.code.toLowerCase() === typeName.toLowerCase());
    if (t.length) target.type = t;
  }
}
