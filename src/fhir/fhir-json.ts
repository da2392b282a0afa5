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
  /** Any other element: `unknown` until narrowed (client JSON is untrusted; the validator judges it). */
  [key: string]: unknown;
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
      const j = numberEnd(text, i);
      const literal = text.slice(i, j);
      if (String(Number(literal)) !== literal) return false;
      i = j - 1;
    }
  }
  return true;
}

/** Parse JSON text, keeping numbers exactly as written. Throws JsonSyntaxError for invalid JSON. */
export function parseFhirJson<T = FhirJsonValue>(text: string): T {
  return parseText<T>(text, numbersRoundTrip(text));
}

const LOSSLESS_OPTIONS = {
  parseNumber,
  onDuplicateKey: ({ newValue }: { newValue: unknown }) => newValue,
} as const;

function parseText<T>(text: string, exactNumbers: boolean): T {
  try {
    if (exactNumbers) return JSON.parse(text) as T;
    // Last wins on duplicate names, as in JSON.parse: both paths behave alike (parseClientJson refuses them).
    return losslessParse(text, null, LOSSLESS_OPTIONS) as T;
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    const position = /position (\d+)/.exec(message)?.[1];
    throw new JsonSyntaxError(message, position === undefined ? undefined : Number(position));
  }
}

/**
 * Deepest nesting of objects and arrays accepted from a client. The deepest official R4 example
 * (hl7.fhir.r4.examples, Bundle-v3-valuesets.json) nests 22 levels; recursive Questionnaire items add about three
 * levels each. 100 leaves a wide margin, and keeps every recursive walk after parsing (validator, FHIRPath, patch,
 * canonical hashing) far from the stack limit.
 */
export const MAX_JSON_DEPTH = 100;

/**
 * Parse JSON text a client sent: as parseFhirJson, and also refuses with JsonSyntaxError (with the character
 * position) what JSON.parse lets through but must not be stored: nesting deeper than MAX_JSON_DEPTH (checked
 * before anything recursive runs), a property name repeated in one object (RFC 8259 §4: names SHOULD be unique;
 * JSON.parse keeps the last silently, so `"resourceType":"Patient"` then `"Observation"` would be stored as an
 * Observation), and UTF-16 surrogates that are not a pair (escaped `\ud800` or raw: not a Unicode character,
 * stored as U+FFFD by SQLite). Invalid UTF-8 bytes are refused by the HTTP layer before the text exists.
 *
 * One linear scan of the text (which the number check needed anyway) finds depth, surrogates and the number of
 * object members; a walk of the parsed value counts its members, and only when the counts differ is the duplicate
 * located (an error path).
 */
export function parseClientJson<T = FhirJsonValue>(text: string): T {
  const facts = inspectClientText(text);
  const value = parseText<T>(text, facts.exactNumbers);
  if (countMembers(value) !== facts.members) {
    const duplicate = findDuplicateKey(text);
    if (duplicate)
      throw new JsonSyntaxError(
        `the property '${shorten(duplicate.key)}' appears more than once in one object`,
        duplicate.position,
      );
  }
  return value;
}

function shorten(text: string): string {
  return text.length > 64 ? `${text.slice(0, 64)}...` : text;
}

/** End of the number literal starting at `i`. */
function numberEnd(text: string, i: number): number {
  const len = text.length;
  let j = i + 1;
  for (; j < len; j++) {
    const d = text.charCodeAt(j);
    if (!((d >= 48 && d <= 57) || d === 46 || d === 101 || d === 69 || d === 43 || d === 45)) break;
  }
  return j;
}

/** Depth check, surrogate check, member count and number check in one pass; throws JsonSyntaxError. */
function inspectClientText(text: string): { members: number; exactNumbers: boolean } {
  const len = text.length;
  let depth = 0;
  let members = 0;
  let exactNumbers = true;
  for (let i = 0; i < len; i++) {
    const c = text.charCodeAt(i);
    if (c === 34 /* " */) i = stringEnd(text, i);
    else if (c === 123 /* { */ || c === 91 /* [ */) {
      if (++depth > MAX_JSON_DEPTH)
        throw new JsonSyntaxError(`the JSON is nested more than ${MAX_JSON_DEPTH} levels deep`, i);
    } else if (c === 125 /* } */ || c === 93 /* ] */) depth--;
    else if (c === 58 /* : */) members++;
    else if (c === 45 /* - */ || (c >= 48 && c <= 57)) {
      const j = numberEnd(text, i);
      if (exactNumbers) {
        const literal = text.slice(i, j);
        exactNumbers = String(Number(literal)) === literal;
      }
      i = j - 1;
    }
  }
  return { members, exactNumbers };
}

function loneSurrogate(text: string, at: number): JsonSyntaxError {
  const shown =
    text.charCodeAt(at) === 92 ? text.slice(at, at + 6) : `\\u${text.charCodeAt(at).toString(16)}`;
  return new JsonSyntaxError(
    `a string holds the UTF-16 surrogate ${shown} without its pair (not a Unicode character)`,
    at,
  );
}

/**
 * Index of the closing quote of the string opening at `start` (or the text's length). Throws when a UTF-16
 * surrogate, escaped or raw, is not part of a high-low pair.
 */
function stringEnd(text: string, start: number): number {
  const len = text.length;
  let pendingHigh = -1; // where an unpaired high surrogate started
  for (let i = start + 1; i < len; i++) {
    let unit = text.charCodeAt(i);
    const at = i;
    if (unit === 34 /* " */) {
      if (pendingHigh >= 0) throw loneSurrogate(text, pendingHigh);
      return i;
    }
    if (unit === 92 /* \ */) {
      if (text.charCodeAt(i + 1) === 117 /* u */) {
        unit = parseInt(text.slice(i + 2, i + 6), 16);
        i += 5;
      } else {
        unit = 0; // any other escape is one ordinary character
        i++;
      }
    }
    if (unit >= 0xd800 && unit <= 0xdfff) {
      if (unit <= 0xdbff) {
        if (pendingHigh >= 0) throw loneSurrogate(text, pendingHigh);
        pendingHigh = at;
      } else if (pendingHigh >= 0) pendingHigh = -1;
      else throw loneSurrogate(text, at);
    } else if (pendingHigh >= 0) throw loneSurrogate(text, pendingHigh);
  }
  return len;
}

/** Own properties of every object in a parsed value (its depth is bounded by MAX_JSON_DEPTH). */
function countMembers(value: unknown): number {
  if (value === null || typeof value !== 'object' || isLosslessNumber(value)) return 0;
  let n = 0;
  if (Array.isArray(value)) {
    for (const item of value) n += countMembers(item);
    return n;
  }
  for (const key in value) n += 1 + countMembers((value as Record<string, unknown>)[key]);
  return n;
}

/** The first property name repeated within one object of valid JSON text, and where it repeats. */
function findDuplicateKey(text: string): { key: string; position: number } | undefined {
  const names: (Set<string> | undefined)[] = [];
  const len = text.length;
  for (let i = 0; i < len; i++) {
    const c = text.charCodeAt(i);
    if (c === 123) names.push(new Set());
    else if (c === 91) names.push(undefined);
    else if (c === 125 || c === 93) names.pop();
    else if (c === 34) {
      const end = stringEnd(text, i);
      let next = end + 1;
      while (next < len && /\s/.test(text[next])) next++;
      const inObject = names[names.length - 1];
      if (text[next] === ':' && inObject) {
        const key = JSON.parse(text.slice(i, end + 1)) as string;
        if (inObject.has(key)) return { key, position: i };
        inObject.add(key);
      }
      i = end;
    }
  }
  return undefined;
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
  for (const key in value) {
    const copy = cloneFhirJson((value as Record<string, unknown>)[key]);
    // An own `__proto__` member (JSON.parse makes one) stays a member, not the copy's prototype.
    if (key === '__proto__')
      Object.defineProperty(out, key, { value: copy, enumerable: true, writable: true, configurable: true });
    else out[key] = copy;
  }
  return out as T;
}

/**
 * Offset of the first byte that does not begin a well-formed UTF-8 sequence (RFC 3629: no overlong forms, no
 * surrogates, nothing above U+10FFFF), or -1 when all are. For error messages: the check itself is `isUtf8` from
 * node:buffer.
 */
export function firstInvalidUtf8(bytes: Uint8Array): number {
  const len = bytes.length;
  let i = 0;
  while (i < len) {
    const b = bytes[i];
    if (b < 0x80) {
      i++;
      continue;
    }
    let need: number;
    let min: number;
    let max = 0xbf;
    if (b >= 0xc2 && b <= 0xdf) {
      need = 1;
      min = 0x80;
    } else if (b >= 0xe0 && b <= 0xef) {
      need = 2;
      min = b === 0xe0 ? 0xa0 : 0x80;
      if (b === 0xed) max = 0x9f; // surrogates
    } else if (b >= 0xf0 && b <= 0xf4) {
      need = 3;
      min = b === 0xf0 ? 0x90 : 0x80;
      if (b === 0xf4) max = 0x8f; // above U+10FFFF
    } else return i;
    const second = bytes[i + 1];
    if (second === undefined || second < min || second > max) return i;
    for (let k = 2; k <= need; k++) {
      const next = bytes[i + k];
      if (next === undefined || next < 0x80 || next > 0xbf) return i;
    }
    i += need + 1;
  }
  return -1;
}
