/**
 * The canonical form of a stored resource version: what the integrity hash is computed over.
 *
 * RFC 8785 (JSON Canonicalization Scheme) for structure: object members sorted by their names' UTF-16 code
 * units, no whitespace, strings escaped exactly as ECMAScript JSON.stringify does (which is what JCS specifies).
 * One deliberate departure: numbers are NOT normalised to their shortest ECMAScript form. A number is written
 * exactly as the stored text has it (`1.50` stays `1.50`, `105.00` stays `105.00`), because in FHIR the
 * written precision of a decimal is part of the data. Numbers that JavaScript prints back identically are
 * plain numbers after parseFhirJson; the others are LosslessNumbers carrying their written text.
 */
import { JsonSyntaxError, isLosslessNumber } from './fhir-json.js';

/**
 * Canonical text of a stored version's JSON text (as stored by the ResourceStore).
 * Equal to `canonicalize(parseFhirJson(text))`, computed in one pass over the text without building objects
 * (this runs inside every write transaction). Throws JsonSyntaxError for text that is not JSON, or that has
 * a duplicate member name (ambiguous: parsers disagree on which one counts).
 */
export function canonicalizeText(storedJson: string): string {
  const scanner = new CanonicalScanner(storedJson);
  const out = scanner.value();
  scanner.end();
  return out;
}

/**
 * canonicalizeText of a resource's text, with the canonical text of each of its top-level members by name (for a
 * receiver that needs resourceType, id and meta: read from what the canonical form computes anyway, instead of a
 * second parse of the whole text). `members` is empty when the text is not an object.
 */
export function canonicalizeResourceText(storedJson: string): {
  canonical: string;
  members: Map<string, string>;
} {
  const scanner = new CanonicalScanner(storedJson);
  const members = new Map<string, string>();
  scanner.topMembers = members;
  const canonical = scanner.value();
  scanner.end();
  return { canonical, members };
}

/** Canonical text of a parsed FHIR JSON value (plain numbers and LosslessNumbers). */
export function canonicalize(value: unknown): string {
  const out: string[] = [];
  write(value, out);
  return out.join('');
}

function write(value: unknown, out: string[]): void {
  if (value === null) {
    out.push('null');
    return;
  }
  switch (typeof value) {
    case 'string':
      out.push(JSON.stringify(value));
      return;
    case 'boolean':
      out.push(value ? 'true' : 'false');
      return;
    case 'number':
      if (!Number.isFinite(value)) throw new TypeError(`Cannot canonicalise the non-finite number ${value}`);
      // ECMAScript's Number-to-String, which is also RFC 8785's number form (and -0 becomes 0).
      out.push(JSON.stringify(value));
      return;
    case 'object':
      break;
    default:
      throw new TypeError(`Cannot canonicalise a value of type ${typeof value}`);
  }
  if (isLosslessNumber(value)) {
    // The written text, verbatim: FHIR decimal precision is significant.
    out.push((value as { value: string }).value);
    return;
  }
  if (Array.isArray(value)) {
    out.push('[');
    for (let i = 0; i < value.length; i++) {
      if (i > 0) out.push(',');
      const item = value[i];
      // As JSON.stringify does: an absent array element is null.
      write(item === undefined ? null : item, out);
    }
    out.push(']');
    return;
  }
  const record = value as Record<string, unknown>;
  // Default sort compares UTF-16 code units, which is exactly RFC 8785's member order.
  const keys = Object.keys(record).sort();
  out.push('{');
  let first = true;
  for (const key of keys) {
    const member = record[key];
    if (member === undefined) continue;
    if (!first) out.push(',');
    first = false;
    out.push(JSON.stringify(key), ':');
    write(member, out);
  }
  out.push('}');
}

const NUMBER = /^-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?$/;

/** A JSON reader that writes the canonical form as it goes (numbers verbatim, members sorted). */
class CanonicalScanner {
  private pos = 0;
  /** When set, the first object read (the top level) puts each member's canonical value text here. */
  topMembers: Map<string, string> | undefined;
  /** The decoded value of the last member name read. */
  private decoded = '';
  /** Names and canonical member texts of the objects being read, innermost last (see object()). */
  private readonly keys: string[] = [];
  private readonly texts: string[] = [];

  constructor(private readonly text: string) {}

  private fail(message: string): never {
    throw new JsonSyntaxError(`${message} at position ${this.pos}`, this.pos);
  }

  private skipWhitespace(): void {
    const text = this.text;
    let c = text.charCodeAt(this.pos);
    while (c === 32 || c === 10 || c === 13 || c === 9) c = text.charCodeAt(++this.pos);
  }

  end(): void {
    this.skipWhitespace();
    if (this.pos !== this.text.length) this.fail('Unexpected text after the JSON value');
  }

  value(): string {
    this.skipWhitespace();
    const c = this.text.charCodeAt(this.pos);
    switch (c) {
      case 123 /* { */:
        return this.object();
      case 91 /* [ */:
        return this.array();
      case 34 /* " */:
        return this.string(false);
      case 116 /* t */:
        return this.literal('true');
      case 102 /* f */:
        return this.literal('false');
      case 110 /* n */:
        return this.literal('null');
      default:
        if (c === 45 || (c >= 48 && c <= 57)) return this.number();
        return this.fail(Number.isNaN(c) ? 'Unexpected end of JSON' : 'Unexpected character');
    }
  }

  private literal(word: string): string {
    if (!this.text.startsWith(word, this.pos)) this.fail('Unexpected character');
    this.pos += word.length;
    return word;
  }

  private number(): string {
    const text = this.text;
    const start = this.pos;
    let c = text.charCodeAt(this.pos);
    while (c === 45 || c === 43 || c === 46 || c === 101 || c === 69 || (c >= 48 && c <= 57))
      c = text.charCodeAt(++this.pos);
    const literal = text.slice(start, this.pos);
    if (!NUMBER.test(literal)) this.fail(`Invalid number ${literal}`);
    return literal; // verbatim: FHIR decimal precision
  }

  /** A string token's canonical (JSON.stringify) text; its decoded value goes to `this.decoded` when `decode`. */
  private string(decode: boolean): string {
    const text = this.text;
    const start = this.pos; // the opening quote
    let plain = true;
    let i = start + 1;
    for (;;) {
      const c = text.charCodeAt(i);
      if (c === 34) break;
      if (Number.isNaN(c)) {
        this.pos = i;
        this.fail('Unterminated string');
      }
      if (c === 92 /* \ */) {
        plain = false;
        i += 2;
        continue;
      }
      // Control characters are invalid (JSON.parse reports them); surrogates may be lone: escape per JSON.stringify.
      if (c < 32 || (c >= 0xd800 && c <= 0xdfff)) plain = false;
      i++;
    }
    this.pos = i + 1;
    if (plain) {
      if (decode) this.decoded = text.slice(start + 1, i);
      return text.slice(start, this.pos);
    }
    let value: string;
    try {
      value = JSON.parse(text.slice(start, this.pos)) as string;
    } catch (err) {
      this.pos = start;
      return this.fail(err instanceof Error ? err.message : 'Invalid string');
    }
    if (decode) this.decoded = value;
    return JSON.stringify(value);
  }

  private array(): string {
    this.topMembers = undefined; // the top level is not an object: nothing to report
    this.pos++;
    this.skipWhitespace();
    if (this.text.charCodeAt(this.pos) === 93 /* ] */) {
      this.pos++;
      return '[]';
    }
    let out = '[';
    for (;;) {
      out += this.value();
      this.skipWhitespace();
      const c = this.text.charCodeAt(this.pos++);
      if (c === 93) return out + ']';
      if (c !== 44 /* , */) {
        this.pos--;
        this.fail("Expected ',' or ']'");
      }
      out += ',';
    }
  }

  private object(): string {
    this.pos++;
    this.skipWhitespace();
    if (this.text.charCodeAt(this.pos) === 125 /* } */) {
      this.pos++;
      return '{}';
    }
    const top = this.topMembers;
    this.topMembers = undefined;
    // This object's members, in order as they come (insertion sort: objects are small), names and texts side by
    // side on the scanner's stacks from `base` (nested objects use the stacks above, then give them back).
    const keys = this.keys;
    const texts = this.texts;
    const base = keys.length;
    let duplicate = false;
    for (;;) {
      this.skipWhitespace();
      if (this.text.charCodeAt(this.pos) !== 34) this.fail('Expected a member name');
      const nameText = this.string(true);
      const key = this.decoded;
      this.skipWhitespace();
      if (this.text.charCodeAt(this.pos) !== 58 /* : */) this.fail("Expected ':'");
      this.pos++;
      const value = this.value();
      // A duplicate name fails at the end of the object: which of the two is kept here does not matter.
      if (top) top.set(key, value);
      // UTF-16 code unit order (JS string comparison), as RFC 8785 requires.
      let at = keys.length;
      keys.push(key);
      texts.push('');
      while (at > base && keys[at - 1] > key) {
        keys[at] = keys[at - 1];
        texts[at] = texts[at - 1];
        at--;
      }
      if (at > base && keys[at - 1] === key) duplicate = true;
      keys[at] = key;
      texts[at] = nameText + ':' + value;
      this.skipWhitespace();
      const c = this.text.charCodeAt(this.pos++);
      if (c === 125) break;
      if (c !== 44) {
        this.pos--;
        this.fail("Expected ',' or '}'");
      }
    }
    if (duplicate) {
      // The first repeated name in sorted order.
      for (let i = base + 1; i < keys.length; i++)
        if (keys[i] === keys[i - 1]) this.fail(`Duplicate member name ${JSON.stringify(keys[i])}`);
    }
    let out = '{' + texts[base];
    for (let i = base + 1; i < texts.length; i++) out += ',' + texts[i];
    keys.length = base;
    texts.length = base;
    return out + '}';
  }
}
