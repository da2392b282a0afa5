/** Fixed values, patterns and min/max bounds of elements, and the JSON comparisons they use. */
import { isJsonObject, type JsonObject } from '../definitions/json.js';
import { convertUcum, UCUM_SYSTEM } from './ucum.js';
import type { ElementNode } from './structure.js';
import type { Run } from './walk-context.js';

/** fixed[x] (exactly this value) and pattern[x] (at least these parts) of a complex element. */
export function checkFixedAndPattern(node: ElementNode, value: unknown, path: string, run: Run): void {
  if (node.fixed !== undefined && !deepEqual(node.fixed, value))
    run.add(
      'error',
      'value',
      `Value does not match the fixed value ${JSON.stringify(node.fixed).slice(0, 200)}`,
      path,
      'structure',
    );
  if (node.pattern !== undefined && !patternMatches(node.pattern, value))
    run.add(
      'error',
      'value',
      `Value does not match the required pattern ${JSON.stringify(node.pattern).slice(0, 200)}`,
      path,
      'structure',
    );
}

/** minValue[x]/maxValue[x] of an element (numbers, dates, date durations and Quantities, UCUM units converted). */
export function checkMinMax(node: ElementNode, value: unknown, path: string, run: Run): void {
  for (const bound of ['minValue', 'maxValue'] as const) {
    const limit = node[bound];
    if (limit === undefined) continue;
    let cmp: number | undefined;
    let shown: string;
    if (typeof value === 'number' && typeof limit === 'number') {
      cmp = value - limit;
      shown = String(limit);
    } else if (
      typeof value === 'string' &&
      isJsonObject(limit) &&
      typeof limit.value === 'number' &&
      /^\d{4}/.test(value)
    ) {
      // minValueDuration/maxValueDuration on a date: relative to now (min: not further in the past, max: not further ahead).
      const ms = durationMs(limit.value, String(limit.code ?? limit.unit ?? ''));
      const t = Date.parse(
        value.length === 4 ? `${value}-01-01` : value.length === 7 ? `${value}-01` : value,
      );
      if (ms === undefined || Number.isNaN(t)) continue;
      const boundary = bound === 'minValue' ? Date.now() - ms : Date.now() + ms;
      cmp = t - boundary;
      shown = `${limit.value} ${limit.code ?? limit.unit}`;
    } else if (typeof value === 'string' && typeof limit === 'string') {
      cmp = value < limit ? -1 : value > limit ? 1 : 0;
      shown = limit;
    } else if (
      isJsonObject(value) &&
      isJsonObject(limit) &&
      typeof value.value === 'number' &&
      typeof limit.value === 'number'
    ) {
      const compared = quantityInLimitUnits(value, limit);
      if (compared === 'incomparable') {
        run.add(
          'warning',
          'invalid',
          `The unit '${String(value.code ?? value.unit ?? '')}' cannot be compared with the unit '${String(limit.code)}' of the ${bound}, so the bound is not checked`,
          path,
          'structure',
        );
        continue;
      }
      if (compared === undefined) continue;
      cmp = compared - limit.value;
      shown = `${limit.value}${typeof limit.code === 'string' ? ` ${limit.code}` : ''}`;
    } else continue;
    const actual = isJsonObject(value) ? value.value : value;
    if (bound === 'minValue' && cmp < 0)
      run.add(
        'error',
        'invalid',
        `The value in the instance ({${actual}}) is less than the specified minimum value ({${shown}})`,
        path,
        'structure',
      );
    if (bound === 'maxValue' && cmp > 0)
      run.add(
        'error',
        'invalid',
        `The value in the instance ({${actual}}) is greater than the specified maximum value ({${shown}})`,
        path,
        'structure',
      );
  }
}

/**
 * A Duration in milliseconds: its code is a UCUM unit of time (R4 datatypes.html#Duration, drt-1), converted by
 * UCUM (a = 365.25 d, mo = 30.4375 d, as UCUM defines them).
 */
export function durationMs(value: number, unit: string): number | undefined {
  return convertUcum(value, unit, 'ms');
}

/**
 * A Quantity's value in the units of a Quantity bound. R4 elementdefinition-definitions.html#ElementDefinition.minValue_x_:
 * "A minimum value for a Quantity is interpreted as a canonical minimum - e.g. you cannot provide 100mg if the
 * minimum value is 10g", so UCUM units are converted (mg vs g, [lb_av] vs kg). Same code (or a bound with no code):
 * compared as they are. Undefined: no comparison possible and nothing to say (other code systems, no code on the
 * value); 'incomparable': both UCUM, but not of the same kind (g vs mL).
 */
function quantityInLimitUnits(value: JsonObject, limit: JsonObject): number | undefined | 'incomparable' {
  const v = value.value as number;
  if (limit.code === undefined) return v;
  if (limit.code === value.code && (limit.system ?? value.system) === value.system) return v;
  const ucumBoth =
    (limit.system === undefined || limit.system === UCUM_SYSTEM) &&
    value.system === UCUM_SYSTEM &&
    typeof value.code === 'string' &&
    typeof limit.code === 'string';
  if (!ucumBoth) return undefined;
  return convertUcum(v, value.code as string, limit.code as string) ?? 'incomparable';
}

export function deepEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== typeof b || a === null || b === null || typeof a !== 'object') return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  if (Array.isArray(a)) {
    const bb = b as unknown[];
    return a.length === bb.length && a.every((x, i) => deepEqual(x, bb[i]));
  }
  const ka = Object.keys(a);
  const kb = Object.keys(b as object);
  return (
    ka.length === kb.length &&
    ka.every((k) => deepEqual((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k]))
  );
}

/** FHIR pattern matching: every property of the pattern appears in the value (arrays: each pattern item matches some item). */
export function patternMatches(pattern: unknown, value: unknown): boolean {
  if (pattern === value) return true;
  if (pattern === null || typeof pattern !== 'object') return pattern === value;
  if (value === null || typeof value !== 'object') return false;
  if (Array.isArray(pattern)) {
    const arr = Array.isArray(value) ? value : [value];
    return pattern.every((p) => arr.some((v) => patternMatches(p, v)));
  }
  if (Array.isArray(value)) return value.some((v) => patternMatches(pattern, v));
  for (const k in pattern)
    if (!patternMatches((pattern as Record<string, unknown>)[k], (value as Record<string, unknown>)[k]))
      return false;
  return true;
}
