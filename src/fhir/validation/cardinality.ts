/** Cardinality: how many values each child element of an object has, and at most one type of a choice. */
import type { JsonObject } from '../definitions/json.js';
import type { ElementNode } from './structure.js';
import type { Run, WalkContext } from './walk-context.js';

/** Cardinality of every child of the object's element, and at most one type of a choice. */
export function checkCardinality(
  w: WalkContext,
  obj: JsonObject,
  owner: ElementNode,
  path: string,
  run: Run,
): void {
  for (const c of owner.children) {
    if (c.min === 0 && c.max >= (c.isArray ? Infinity : 1) && !c.choice) continue;
    let count = 0;
    let present = 0;
    for (const n of c.jsonNames!) {
      const v = obj[n] ?? obj['_' + n];
      if (v === undefined || v === null) continue;
      present++;
      count += Array.isArray(v) ? v.length : 1;
    }
    if (c.choice && present > 1)
      run.add(
        'error',
        'structure',
        `Only one of ${c.jsonNames!.filter((n) => obj[n] !== undefined).join(', ')} may be present`,
        path,
        'structure',
      );
    if (count < c.min)
      run.add(
        'error',
        'structure',
        `${c.path}: minimum required = ${c.min}, but only found ${count}`,
        path,
        'structure',
      );
    else if (count > c.max)
      run.add(
        'error',
        'structure',
        `${c.path}: max allowed = ${c.max}, but found ${count}`,
        path,
        'structure',
      );
  }
}
