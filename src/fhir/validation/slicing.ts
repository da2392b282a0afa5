/** Slicing: which slice each item of a sliced element matches (by discriminator), slice cardinality, and choice type slices. */
import { arrayField, field } from '../definitions/json.js';
import type { ElementNode, TypeRef } from './structure.js';
import { isPrimitiveType } from './primitives.js';
import { type Frame, Run, upperFirst, type WalkContext } from './walk-context.js';
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
  const slicing = node.slicing!;
  const counts = new Array(node.slices.length).fill(0);
  items.forEach((item, i) => {
    if (item === null || item === undefined) return;
    const idx = node.slices.findIndex((s) => sliceMatches(w, item, s, slicing.discriminators, type, frame));
    if (idx < 0) {
      if (slicing.rules === 'closed')
        run.add(
          'error',
          'structure',
          `This element does not match any known slice defined in the profile (slicing of ${node.path} is closed)`,
          `${path}[${i}]`,
        );
      return;
    }
    counts[idx]++;
    const slice = node.slices[idx];
    const sliceType = slice.types.length === 1 ? slice.types[0] : type;
    if (slice.children.length || (sliceType && sliceType.profiles.length))
      w.walkValue(item, slice, sliceType, `${path}[${i}]`, run, frame);
    else checkSliceLeaf(w, item, slice, sliceType, `${path}[${i}]`, run, frame);
  });
  node.slices.forEach((s, k) => {
    if (counts[k] < s.min)
      run.add(
        'error',
        'structure',
        `Slice '${s.path}:${s.sliceName}': a matching slice is required, but not found (minimum required = ${s.min}, found ${counts[k]})`,
        parentPath,
      );
    else if (counts[k] > s.max)
      run.add(
        'error',
        'structure',
        `Slice '${s.path}:${s.sliceName}': max allowed = ${s.max}, but found ${counts[k]}`,
        parentPath,
      );
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

export function sliceMatches(
  w: WalkContext,
  item: unknown,
  slice: ElementNode,
  discriminators: { type: string; path: string }[],
  type: TypeRef | undefined,
  frame: Frame,
): boolean {
  for (const d of discriminators) {
    const segments = d.path === '$this' ? [] : d.path.split('.').filter((x) => x !== '$this');
    const values = navigate([item], segments);
    const target = sliceElementAt(w, slice, segments, type);
    switch (d.type) {
      case 'value':
      case 'pattern':
        if (!target || !valueDiscriminatorMatches(w, target, values)) return false;
        break;
      case 'exists':
        if (!target || !existsDiscriminatorMatches(target, values)) return false;
        break;
      case 'type':
        if (!typeDiscriminatorMatches(target ?? slice, values, segments, type)) return false;
        break;
      case 'profile':
        if (!profileDiscriminatorMatches(w, target ?? slice, values, frame)) return false;
        break;
      default:
        return false;
    }
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
): boolean {
  const profiles = element.types.flatMap((t) => (t.profiles.length ? t.profiles : t.targetProfiles));
  if (!profiles.length) return false;
  return values.some((v) =>
    profiles.some((p) => {
      const ps = w.structures.get(p);
      if (!ps) return false;
      const probe = new Run();
      probe.errorsOnly = true;
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
