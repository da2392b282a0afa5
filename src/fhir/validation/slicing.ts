/** Slicing: which slice each item of a sliced element matches (by discriminator), slice cardinality, and choice type slices. */
import { arrayField, field } from '../definitions/json.js';
import type { ElementNode, TypeRef } from './structure.js';
import { isPrimitiveType } from './primitives.js';
import { type Frame, probeRun, type Run, upperFirst, type WalkContext } from './walk-context.js';
import { checkFixedAndPattern, deepEqual, patternMatches } from './fixed-values.js';
import { checkBinding } from './bindings.js';

export function checkSlices(
  w: WalkContext,
  items: unknown[],
  node: ElementNode,
  type: TypeRef | undefined,
  path: string,
  parentPath: string,
  run: Run,
  frame: Frame,
): void {
  const indexed: number[] = [];
  items.forEach((item, i) => {
    if (item !== null && item !== undefined) indexed.push(i);
  });
  checkSliceGroup(w, items, indexed, node, type, path, parentPath, run, frame);
}

/**
 * The items (by index) of one sliced element: each is matched to a slice by the discriminators, then checked
 * against it; slice cardinalities, `ordered` (matched items in the order of the slices) and the `rules` (closed:
 * every item in a slice; openAtEnd: items in no slice only after the sliced ones) apply (profiling.html#slicing).
 * A slice that is sliced again (re-slicing, `a/b`) slices the items it matched by its own slicing.
 */
function checkSliceGroup(
  w: WalkContext,
  items: unknown[],
  indexes: number[],
  node: ElementNode,
  type: TypeRef | undefined,
  path: string,
  parentPath: string,
  run: Run,
  frame: Frame,
): void {
  const slicing = node.slicing!;
  const matchedBySlice: number[][] = node.slices.map(() => []);
  let lastSlice = -1;
  let unmatchedSeen = false;
  for (const i of indexes) {
    const item = items[i];
    const idx = node.slices.findIndex((s) =>
      sliceMatches(w, item, s, slicing.discriminators, type, frame, run),
    );
    if (idx < 0) {
      if (slicing.rules === 'closed')
        run.add(
          'error',
          'structure',
          `This element does not match any known slice defined in the profile (slicing of ${node.path} is closed)`,
          `${path}[${i}]`,
          'slicing',
        );
      unmatchedSeen = true;
      continue;
    }
    const slice = node.slices[idx];
    if (slicing.ordered && idx < lastSlice)
      run.add(
        'error',
        'structure',
        `The slicing of ${node.path} is ordered: this element (slice '${slice.sliceName}') is out of order (found after slice '${node.slices[lastSlice].sliceName}')`,
        `${path}[${i}]`,
        'slicing',
      );
    else if (slicing.rules === 'openAtEnd' && unmatchedSeen)
      run.add(
        'error',
        'structure',
        `The slicing of ${node.path} is openAtEnd: this element (slice '${slice.sliceName}') follows an element that matches no slice`,
        `${path}[${i}]`,
        'slicing',
      );
    lastSlice = Math.max(lastSlice, idx);
    matchedBySlice[idx].push(i);
    const sliceType = slice.types.length === 1 ? slice.types[0] : type;
    if (slice.children.length || (sliceType && sliceType.profiles.length))
      w.walkValue(item, slice, sliceType, `${path}[${i}]`, run, frame);
    else checkSliceLeaf(w, item, slice, sliceType, `${path}[${i}]`, run, frame);
  }
  node.slices.forEach((s, k) => {
    const count = matchedBySlice[k].length;
    if (count < s.min)
      run.add(
        'error',
        'structure',
        `Slice '${s.path}:${s.sliceName}': a matching slice is required, but not found (minimum required = ${s.min}, found ${count})`,
        parentPath,
        'slicing',
      );
    else if (count > s.max)
      run.add(
        'error',
        'structure',
        `Slice '${s.path}:${s.sliceName}': max allowed = ${s.max}, but found ${count}`,
        parentPath,
        'slicing',
      );
    if (s.slicing && s.slices.length)
      checkSliceGroup(w, items, matchedBySlice[k], s, type, path, parentPath, run, frame);
  });
}

/** A slice without children: only its own fixed/pattern/binding apply (the base walk did the rest). */
export function checkSliceLeaf(
  w: WalkContext,
  item: unknown,
  slice: ElementNode,
  type: TypeRef | undefined,
  path: string,
  run: Run,
  frame: Frame,
): void {
  const probe: ElementNode = {
    ...slice,
    children: [],
    slices: [],
    constraints: slice.constraints.filter(
      (c) => !c.source || !c.source.startsWith('http://hl7.org/fhir/StructureDefinition/'),
    ),
  };
  if (type && isPrimitiveType(type.code)) w.walkValue(item, probe, type, path, run, frame);
  else {
    checkFixedAndPattern(probe, item, path, run);
    if (probe.binding && type?.code === 'CodeableConcept')
      checkBinding(w, probe, arrayField(item, 'coding'), undefined, path, run);
    if (probe.binding && type?.code === 'Coding') checkBinding(w, probe, [item], undefined, path, run);
  }
}

/** Type slices on a choice element (`value[x]:valueQuantity`) constrain the value of that type. */
export function checkChoiceSlices(
  w: WalkContext,
  value: unknown,
  node: ElementNode,
  type: TypeRef | undefined,
  path: string,
  run: Run,
  frame: Frame,
): void {
  if (!type) return;
  for (const s of node.slices) {
    if (
      s.sliceName === node.name + upperFirst(type.code) ||
      (s.types.length === 1 && s.types[0].code === type.code)
    ) {
      if (s.children.length || s.types[0]?.profiles.length)
        w.walkValue(value, s, s.types[0] ?? type, path, run, frame);
      else checkSliceLeaf(w, value, s, type, path, run, frame);
    }
  }
}

/**
 * Whether an item belongs to a slice: every discriminator the slice constrains matches the item's value(s). A slice
 * may leave some discriminators unconstrained (no fixed value, pattern or required binding at that path, nor
 * exists/min-max): those do not restrict it, but a slice constraining none of them matches nothing.
 */
export function sliceMatches(
  w: WalkContext,
  item: unknown,
  slice: ElementNode,
  discriminators: { type: string; path: string }[],
  type: TypeRef | undefined,
  frame: Frame,
  run: Run,
): boolean {
  let constrained = false;
  for (const d of discriminators) {
    const segments = d.path === '$this' ? [] : d.path.split('.').filter((x) => x !== '$this');
    const values = navigate([item], segments);
    const target = sliceElementAt(w, slice, segments, type);
    switch (d.type) {
      case 'value':
      case 'pattern': {
        if (!target) return false;
        if (isValueConstrained(target)) {
          if (!valueDiscriminatorMatches(w, target, values)) return false;
        } else if (hasFixedParts(target)) {
          if (!values.some((v) => fixedPartsMatch(target, v, 0))) return false;
        } else break;
        constrained = true;
        break;
      }
      case 'exists':
        if (!target) return false;
        if (target.min === 0 && target.max !== 0) break;
        if (!existsDiscriminatorMatches(target, values)) return false;
        constrained = true;
        break;
      case 'type':
        if (!typeDiscriminatorMatches(target ?? slice, values, segments, type)) return false;
        constrained = true;
        break;
      case 'profile':
        if (!profileDiscriminatorMatches(w, target ?? slice, values, frame, run)) return false;
        constrained = true;
        break;
      default:
        return false;
    }
  }
  return constrained;
}

/** A fixed value, a pattern or a required binding: what a value/pattern discriminator compares with. */
function isValueConstrained(target: ElementNode): boolean {
  return (
    target.fixed !== undefined ||
    target.pattern !== undefined ||
    (!!target.binding?.valueSet && target.binding.strength === 'required')
  );
}

/** Whether an element's own children fix part of its value (`code.coding.system` under a `code` discriminator). */
function hasFixedParts(target: ElementNode, depth = 0): boolean {
  if (depth > 6) return false;
  return target.children.some(
    (c) => c.fixed !== undefined || c.pattern !== undefined || hasFixedParts(c, depth + 1),
  );
}

/** A value conforms to the fixed values and patterns of an element's own children (recursively). */
function fixedPartsMatch(target: ElementNode, value: unknown, depth: number): boolean {
  if (depth > 6 || !value || typeof value !== 'object') return false;
  for (const c of target.children) {
    const constrained = c.fixed !== undefined || c.pattern !== undefined;
    if (!constrained && !hasFixedParts(c, depth + 1)) continue;
    const values = navigate([value], [c.name]);
    const ok = values.some((v) =>
      c.fixed !== undefined
        ? deepEqual(c.fixed, v)
        : c.pattern !== undefined
          ? patternMatches(c.pattern, v)
          : fixedPartsMatch(c, v, depth + 1),
    );
    if (!ok) return false;
  }
  return true;
}

/** `value`/`pattern`: the slice's fixed value, pattern, or required binding. */
export function valueDiscriminatorMatches(w: WalkContext, target: ElementNode, values: unknown[]): boolean {
  if (target.fixed !== undefined) return values.some((v) => deepEqual(target.fixed, v));
  if (target.pattern !== undefined) return values.some((v) => patternMatches(target.pattern, v));
  if (target.binding?.valueSet && target.binding.strength === 'required') {
    return values.some((v) => {
      const coding = field(v, 'coding');
      const codings: unknown[] = typeof v === 'string' ? [{ code: v }] : Array.isArray(coding) ? coding : [v];
      return codings.some((c) => {
        const code = field(c, 'code');
        const system = field(c, 'system');
        // A system that is not a string is looked up as its text, as a template string makes it.
        return (
          typeof code === 'string' &&
          w.terminology.member(
            target.binding!.valueSet!.split('|')[0],
            system === undefined ? undefined : String(system),
            code,
          ) === 'yes'
        );
      });
    });
  }
  return false;
}

/** `profile`: some value conforms (no errors) to one of the slice's profiles. */
export function profileDiscriminatorMatches(
  w: WalkContext,
  element: ElementNode,
  values: unknown[],
  frame: Frame,
  run: Run,
): boolean {
  const profiles = element.types.flatMap((t) => (t.profiles.length ? t.profiles : t.targetProfiles));
  if (!profiles.length) return false;
  return values.some((v) =>
    profiles.some((p) => {
      const ps = w.structures.get(p);
      if (!ps) return false;
      // Judged with the settings of the run it serves (an unknown extension may be an error in one, not another).
      const probe = probeRun(run);
      if (ps.kind === 'resource') w.walkResource(v, 'probe', undefined, probe, [p]);
      else w.walkObject(v, ps.root, ps.root, ps.type, 'probe', probe, frame);
      return probe.errorCount === 0;
    }),
  );
}

/** The element of a slice at a discriminator path (following own children, then the type's definition). */
export function sliceElementAt(
  w: WalkContext,
  slice: ElementNode,
  segments: string[],
  type: TypeRef | undefined,
): ElementNode | undefined {
  return elementAt(w, slice, slice.types.length === 1 ? slice.types[0] : type, segments, 0);
}

/**
 * Follows a discriminator path from an element. Where the path crosses a sliced element (e.g. `code.coding` with
 * a slice fixing the LOINC code), the slices are tried first: the fixed value usually lives in one of them.
 */
export function elementAt(
  w: WalkContext,
  start: ElementNode,
  startType: TypeRef | undefined,
  segments: string[],
  depth: number,
): ElementNode | undefined {
  let node: ElementNode | undefined = start;
  let t = startType;
  for (let k = 0; k < segments.length; k++) {
    const seg = segments[k];
    if (!node || depth > 8) return undefined;
    if (seg === 'resolve()') return undefined;
    const ext = /^extension\('(.*)'\)$/.exec(seg);
    const owner = w.childOwner(node, t);
    if (!owner) return undefined;
    if (ext) {
      const extEl = owner.children.find((c) => c.name === 'extension');
      const s = extEl?.slices.find((x) => x.types.some((tt) => tt.profiles.includes(ext[1])));
      if (!s) return undefined;
      node = s;
      t = s.types[0];
      continue;
    }
    const name = seg.replace(/\.?ofType\(.*\)$/, '');
    const child = owner.children.find((c) => c.name === name || c.name + '[x]' === name);
    if (child && child.slices.length && k < segments.length - 1) {
      for (const s of child.slices) {
        const found = elementAt(
          w,
          s,
          s.types.length === 1 ? s.types[0] : child.types[0],
          segments.slice(k + 1),
          depth + 1,
        );
        if (found && (found.fixed !== undefined || found.pattern !== undefined)) return found;
      }
    }
    node = child;
    t = child?.types.length === 1 ? child.types[0] : undefined;
  }
  return node;
}

/** `exists`: present when the slice requires it, absent when it forbids it. */
export function existsDiscriminatorMatches(target: ElementNode, values: unknown[]): boolean {
  const exists = values.length > 0;
  if (target.min >= 1 && !exists) return false;
  if (target.max === 0 && exists) return false;
  return true;
}

/** `type`: a value's resource type (or, at `$this`, the element's own type) is one the slice allows. */
export function typeDiscriminatorMatches(
  element: ElementNode,
  values: unknown[],
  segments: string[],
  type: TypeRef | undefined,
): boolean {
  const want = element.types.map((t) => t.code);
  if (!want.length) return false;
  const actual = values.map((v) => {
    const resourceType = field(v, 'resourceType');
    return typeof resourceType === 'string' ? resourceType : undefined;
  });
  if (actual.some((a) => a && want.includes(a))) return true;
  return segments.length === 0 && type !== undefined && want.includes(type.code);
}

/** Values at a simple discriminator path (`code.coding`, `url`, `extension('x').value`, `ofType(T)`). */
export function navigate(values: unknown[], segments: string[]): unknown[] {
  let cur = values;
  for (const seg of segments) {
    const next: unknown[] = [];
    const ext = /^extension\('(.*)'\)$/.exec(seg);
    for (const v of cur) {
      if (!v || typeof v !== 'object') continue;
      if (ext) {
        for (const e of arrayField(v, 'extension')) if (field(e, 'url') === ext[1]) next.push(e);
        continue;
      }
      if (seg === 'resolve()') continue;
      const ofType = /^(\w+)?\.?ofType\((\w+)\)$/.exec(seg);
      if (ofType) {
        const key = (ofType[1] ?? '') + upperFirst(ofType[2]);
        if (field(v, key) !== undefined) next.push(field(v, key));
        continue;
      }
      let x = field(v, seg);
      if (x === undefined) {
        // choice element: value -> valueX
        for (const k in v) if (k.startsWith(seg) && /^[A-Z]/.test(k.slice(seg.length))) x = field(v, k);
      }
      if (Array.isArray(x)) next.push(...x.filter((y) => y !== null && y !== undefined));
      else if (x !== undefined && x !== null) next.push(x);
    }
    cur = next;
  }
  return cur;
}
