/**
 * FHIR JSON that keeps every number exactly as written.
 *
 * In FHIR, decimal precision is significant (`1.50` is not `1.5`), but JavaScript numbers forget it.
 * parseFhirJson keeps a number as a plain `number` when JavaScript prints it back identically, and as a
 * lossless-json `LosslessNumber` (its written text) otherwise. stringifyFhirJson writes both back verbatim.
 * Most resources have no such number, so both functions take the native JSON fast path for them.
 */
import {
  LosslessNumber,
  isLosslessNumber,
  parse as losslessParse,
  stringify as losslessStringify,
} from 'lossless-json';

export { LosslessNumber, isLosslessNumber };

export type FhirJsonValue =
  | string
  | number
  | boolean
  | null
  | LosslessNumber
  | FhirJsonValue[]
  | { [key: string]: FhirJsonValue | undefined };

export interface FhirResource {
  resourceType: string;
  id?: string;
  meta?: { versionId?: string; lastUpdated?: string; profile?: string[]; [key: string]: unknown };
  [key: string]: any;
}

/** Thrown for text that is not JSON; `position` is the character offset of the problem. */
export class JsonSyntaxError extends Error {
  constructor(
    message: string,
    readonly position?: number,
  ) {
    super(message);
    this.name = 'JsonSyntaxError';
  }
}

function parseNumber(text: string): number | LosslessNumber {
  const n = Number(text);
  return String(n) === text ? n : new LosslessNumber(text);
}

/**
 * True when every number literal in the JSON text reads back from a JS number unchanged,
 * so native JSON.parse loses nothing. Scans the text once, skipping strings.
 */
function numbersRoundTrip(text: string): boolean {
  const len = text.length;
  for (let i = 0; i < len; i++) {
    const c = text.charCodeAt(i);
    if (c === 34 /* " */) {
      for (i++; i < len; i++) {
        const d = text.charCodeAt(i);
        if (d === 92 /* \ */) i++;
        else if (d === 34) break;
      }
    } else if (c === 45 /* - */ || (c >= 48 && c <= 57)) {
      let j = i + 1;
      for (; j < len; j++) {
        const d = text.charCodeAt(j);
        if (!((d >= 48 && d <= 57) || d === 46 || d === 101 || d === 69 || d === 43 || d === 45)) break;
      }
      const literal = text.slice(i, j);
      if (String(Number(literal)) !== literal) return false;
      i = j - 1;
    }
  }
  return true;
}

/** Parse JSON text, keeping numbers exactly as written. Throws JsonSyntaxError for invalid JSON. */
export function parseFhirJson<T = FhirJsonValue>(text: string): T {
  try {
    if (numbersRoundTrip(text)) return JSON.parse(text) as T;
    return losslessParse(text, null, parseNumber) as T;
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    const position = /position (\d+)/.exec(message)?.[1];
    throw new JsonSyntaxError(message, position === undefined ? undefined : Number(position));
  }
}

function containsLosslessNumber(value: unknown): boolean {
  if (value === null || typeof value !== 'object') return false;
  if (isLosslessNumber(value)) return true;
  if (Array.isArray(value)) {
    for (const item of value) if (containsLosslessNumber(item)) return true;
    return false;
  }
  for (const key in value) if (containsLosslessNumber((value as Record<string, unknown>)[key])) return true;
  return false;
}

/** Serialise, writing LosslessNumbers verbatim. `indent` > 0 pretty-prints. */
export function stringifyFhirJson(value: unknown, indent = 0): string {
  if (!containsLosslessNumber(value)) return JSON.stringify(value, null, indent || undefined);
  return losslessStringify(value as never, undefined, indent || undefined) as string;
}

/**
 * A plain-JS copy in which every LosslessNumber is a number (validators, FHIRPath).
 * Returns the value itself when there is nothing to convert.
 */
export function toPlainJson<T>(value: T): T {
  if (!containsLosslessNumber(value)) return value;
  return JSON.parse(losslessStringify(value as never) as string) as T;
}

/** Deep copy that keeps LosslessNumbers (they are immutable, so shared). */
export function cloneFhirJson<T>(value: T): T {
  if (value === null || typeof value !== 'object' || isLosslessNumber(value)) return value;
  if (Array.isArray(value)) return value.map(cloneFhirJson) as T;
  const out: Record<string, unknown> = {};
  for (const key in value) out[key] = cloneFhirJson((value as Record<string, unknown>)[key]);
  return out as T;
}
