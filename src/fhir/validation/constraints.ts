/** Invariants: the FHIRPath constraints of an element and of its type (those not checked natively by the walk). */
import type { JsonObject } from '../definitions/json.js';
import type { ElementNode } from './structure.js';
import { evaluateConstraint, WALKER_NATIVE_KEYS } from './invariants.js';
import type { Frame, Run, WalkContext } from './walk-context.js';

export function checkConstraints(
  w: WalkContext,
  obj: JsonObject,
  node: ElementNode,
  owner: ElementNode,
  typeName: string,
  path: string,
  run: Run,
  frame: Frame,
  isResourceRoot: boolean,
): void {
  const lists = owner === node ? [node.constraints] : [node.constraints, owner.constraints];
  let done: Set<string> | undefined;
  for (const list of lists) {
    for (const c of list) {
      if (WALKER_NATIVE_KEYS.has(c.key)) continue;
      if (lists.length > 1) {
        done ??= new Set();
        if (done.has(c.key)) continue;
        done.add(c.key);
      }
      if (run.invariantDeadline !== Infinity && performance.now() > run.invariantDeadline) {
        if (!run.invariantsSkipped) {
          run.invariantsSkipped = true;
          run.add(
            'warning',
            'too-costly',
            'Invariant checking stopped: the time budget for this resource was used up (the rest of its FHIRPath invariants are not checked)',
            path,
            'invariants',
          );
        }
        return;
      }
      const base = isResourceRoot
        ? undefined
        : /^[A-Z]/.test(typeName) && !typeName.includes('.')
          ? typeName
          : typeName.replace(/\[x\]/g, '');
      const out = evaluateConstraint(c.key, c.expression, base, obj, {
        resource: frame.resource,
        rootResource: frame.rootResource,
      });
      if (!out.ok)
        run.add(c.severity, 'invariant', `Constraint failed: ${c.key}: '${c.human}'`, path, 'invariants');
    }
  }
}
