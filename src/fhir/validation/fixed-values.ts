/** Fixed values, patterns and min/max bounds of elements, and the JSON comparisons they use. */
import { isJsonObject } from '../definitions/json.js';
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
    );
  if (node.pattern !== undefined && !patternMatches(node.pattern, value))
    run.add(
      'error',
      'value',
      `Value does not match the required pattern ${JSON.stringify(node.pattern).slice(0, 200)}`,
      path,
    );
}

/** minValue[x]/maxValue[x] of an element (numbers, dates and Quantities with the same unit). */
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
      if ((limit.code ?? limit.unit) !== (value.code ?? value.unit) && limit.code !== undefined) continue;
      cmp = value.value - limit.value;
      shown = String(limit.value);
    } else continue;
    const actual = isJsonObject(value) ? value.value : value;
    if (bound === 'minValue' && cmp < 0)
      run.add(
        'error',
        'invalid',
        `The value in the instance ({${actual}}) is less than the specified minimum value ({${shown}})`,
        path,
      );
    if (bound === 'maxValue' && cmp > 0)
      run.add(
        'error',
        'invalid',
        `The value in the instance ({${actual}}) is greater than the specified maximum value ({${shown}})`,
        path,
      );
  }
}

export function durationMs(value: number, unit: string): number | undefined {
  const perUnit: Record<string, number> = {
    a: 365.25 * 864e5,
    mo: 30.4375 * 864e5,
    wk: 7 * 864e5,
    d: 864e5,
    h: 36e5,
    min: 6e4,
    s: 1e3,
    ms: 1,
  };
  const u =
    perUnit[unit] ??
    perUnit[
      { year: 'a', years: 'a', month: 'mo', months: 'mo', week: 'wk', weeks: 'wk', day: 'd', days: 'd' }[
        unit
      ] ?? ''
    ];
  return u === undefined ? undefined : value * u;
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
