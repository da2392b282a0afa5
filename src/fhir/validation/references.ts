/** References: local (`#id`) references resolve, and a reference's type is one its element allows. */
import { field, type JsonObject } from '../definitions/json.js';
import type { ElementNode, TypeRef } from './structure.js';
import type { Frame, Run, WalkContext } from './walk-context.js';

const RESOURCE_REF = /^([A-Z][A-Za-z]+)\/([A-Za-z0-9\-.]{1,64})(\/_history\/([A-Za-z0-9\-.]{1,64}))?$/;

export function checkReference(
  w: WalkContext,
  ref: JsonObject,
  node: ElementNode,
  type: TypeRef,
  path: string,
  run: Run,
  frame: Frame,
): void {
  const r = ref.reference;
  if (typeof r !== 'string') return;
  if (r.startsWith('#')) {
    const id = r.slice(1);
    // Not narrowed: a `contained` that is not an array throws here (reported as an exception), as it always has.
    const contained = (frame.rootResource.contained ?? []) as unknown[];
    if (id && !contained.some((c) => field(c, 'id') === id))
      run.add(
        'error',
        'structure',
        `Unable to resolve resource with reference '${r.slice(0, 100)}'`,
        path,
        'structure',
      );
    return;
  }
  const m =
    RESOURCE_REF.exec(r) ??
    /^https?:\/\/.*\/([A-Z][A-Za-z]+)\/([A-Za-z0-9\-.]{1,64})(\/_history\/([A-Za-z0-9\-.]{1,64}))?$/.exec(r);
  if (m) {
    const refType = m[1];
    if (!w.isResourceType(refType)) {
      if (!/^https?:/.test(r))
        run.add(
          'error',
          'structure',
          `Unknown resource type '${refType}' in the reference '${r.slice(0, 100)}'`,
          path,
          'structure',
        );
      return;
    }
    const targets = type.targetProfiles;
    if (targets.length && !targets.some((t) => t.endsWith('/Resource'))) {
      const allowed = targets.map((t) => w.structures.get(t)?.type ?? t.slice(t.lastIndexOf('/') + 1));
      if (!allowed.includes(refType))
        run.add(
          'error',
          'structure',
          `The type '${refType}' implied by the reference URL ${r.slice(0, 100)} is not a valid Target for this element (must be one of [${allowed.join(', ')}])`,
          path,
          'structure',
        );
    }
    if (typeof ref.type === 'string' && ref.type !== refType && w.isResourceType(ref.type))
      run.add(
        'error',
        'structure',
        `The reference type '${ref.type}' does not match the type in the reference URL '${refType}'`,
        path,
        'structure',
      );
    return;
  }
  if (/^(urn:uuid:|urn:oid:|https?:\/\/|[a-z][a-z0-9+.-]*:)/i.test(r)) return;
  if (/\s/.test(r) || r === '')
    run.add(
      'error',
      'invalid',
      `The reference '${r.slice(0, 100)}' is not a valid reference`,
      path,
      'structure',
    );
}
