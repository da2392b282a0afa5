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

/**
 * The canonical form of a JSON text as its UTF-8 bytes: exactly `Buffer.from(canonicalizeText(text), 'utf8')`,
 * written straight into a buffer (no string built per value or member; a receiver hashes one per record). The
 * common text (member names plain ASCII, no duplicate, no lone surrogate) is read byte by byte; any other text
 * goes through canonicalizeText, which also gives its errors (JsonSyntaxError). `bytes` is a view of a scratch
 * buffer, valid until the next call: hash it at once. `members`: for each top-level member named in `wanted`, a
 * JSON text of its value (its source text, or its canonical text: both parse to the same value).
 */
export function canonicalUtf8(
  text: string,
  wanted: readonly string[] = [],
): { bytes: Buffer; members: Map<string, string> } {
  const members = new Map<string, string>();
  const read = byteCanonicalizer.run(text, wanted, members);
  if (read) return { bytes: read, members };
  // The uncommon text: the string pass decides (and throws for what is not JSON).
  members.clear();
  const { canonical, members: all } = canonicalizeResourceText(text);
  for (const name of wanted) {
    const value = all.get(name);
    if (value !== undefined) members.set(name, value);
  }
  return { bytes: Buffer.from(canonical, 'utf8'), members };
}

/** Thrown inside ByteCanonicalizer for a text it leaves to the string pass. */
class NotCommon extends Error {}
const NOT_COMMON = new NotCommon();
/** U+FFFD in UTF-8: what a lone surrogate becomes when a string is written as UTF-8 (or a real U+FFFD). */
const REPLACEMENT_UTF8 = Buffer.from([0xef, 0xbf, 0xbd]);

/**
 * The byte pass of canonicalUtf8. One scratch buffer in three parts: the text's UTF-8 at [0, size), the canonical
 * form written from `outBase`, and a spare part from `spareBase` through which an object's members move into name
 * order (all moves are copyWithin on the one buffer: no view or call per move). Strings without escapes are copied
 * as they are, escaped ones decoded and written as JSON.stringify does, numbers verbatim. Member names are
 * compared as bytes, which is their UTF-16 order only because they are required to be ASCII here.
 */
class ByteCanonicalizer {
  private buf = Buffer.allocUnsafe(3 * 16 * 1024);
  private outBase = 16 * 1024;
  private spareBase = 2 * 16 * 1024;
  private end = 0;
  private pos = 0;
  private at = 0;
  /** Per member of the objects being read, innermost last, `top` of them: name span in the text, member span out. */
  private top = 0;
  private readonly nameStart: number[] = [];
  private readonly nameEnd: number[] = [];
  private readonly memberStart: number[] = [];
  private readonly memberEnd: number[] = [];
  private readonly order: number[] = [];

  run(text: string, wanted: readonly string[], members: Map<string, string>): Buffer | undefined {
    // UTF-8 is at most 3 bytes per UTF-16 code unit; the canonical form is never longer than the text.
    const room = 3 * text.length + 8;
    if (this.outBase < room) {
      this.buf = Buffer.allocUnsafe(3 * room);
      this.outBase = room;
      this.spareBase = 2 * room;
    }
    const b = this.buf;
    const size = b.write(text, 0, this.outBase, 'utf8');
    // Non-ASCII text: a lone surrogate would have become U+FFFD; the string pass escapes it as JSON.stringify does.
    if (size !== text.length && b.subarray(0, size).indexOf(REPLACEMENT_UTF8) >= 0) return undefined;
    // A stop byte after the text: every scan ends there (a control character is never inside a JSON token).
    b[size] = 0;
    this.end = size;
    this.pos = 0;
    this.at = this.outBase;
    this.top = 0;
    try {
      this.ws();
      if (b[this.pos] === 0x7b) this.object(wanted.length > 0 ? { wanted, members } : undefined);
      else this.value();
      this.ws();
      if (this.pos !== this.end) return undefined;
    } catch (err) {
      if (err === NOT_COMMON) return undefined;
      throw err;
    }
    return b.subarray(this.outBase, this.at);
  }

  private ws(): void {
    const b = this.buf;
    let c = b[this.pos];
    while (c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09) c = b[++this.pos];
  }

  private value(): void {
    const c = this.buf[this.pos];
    if (c === 0x22) this.string();
    else if (c === 0x7b) this.object(undefined);
    else if (c === 0x5b) this.array();
    else if (c === 0x74) this.literal(0x74, 0x72, 0x75, 0x65, -1);
    else if (c === 0x66) this.literal(0x66, 0x61, 0x6c, 0x73, 0x65);
    else if (c === 0x6e) this.literal(0x6e, 0x75, 0x6c, 0x6c, -1);
    else if (c === 0x2d || (c >= 0x30 && c <= 0x39)) this.number();
    else throw NOT_COMMON;
  }

  private literal(c0: number, c1: number, c2: number, c3: number, c4: number): void {
    const b = this.buf;
    const p = this.pos;
    if (b[p] !== c0 || b[p + 1] !== c1 || b[p + 2] !== c2 || b[p + 3] !== c3) throw NOT_COMMON;
    const n = c4 < 0 ? 4 : 5;
    if (n === 5 && b[p + 4] !== c4) throw NOT_COMMON;
    this.copy(p, p + n);
    this.pos += n;
  }

  /** As canonicalizeText: the characters a number may have, then the JSON number grammar over them. */
  private number(): void {
    const b = this.buf;
    const start = this.pos;
    let p = start;
    let c = b[p];
    while (c === 0x2d || c === 0x2b || c === 0x2e || c === 0x65 || c === 0x45 || (c >= 0x30 && c <= 0x39))
      c = b[++p];
    const stop = p;
    p = start;
    if (b[p] === 0x2d) p++;
    if (b[p] === 0x30) p++;
    else if (b[p] >= 0x31 && b[p] <= 0x39) while (p < stop && b[p] >= 0x30 && b[p] <= 0x39) p++;
    else throw NOT_COMMON;
    if (p < stop && b[p] === 0x2e) {
      p++;
      if (!(p < stop && b[p] >= 0x30 && b[p] <= 0x39)) throw NOT_COMMON;
      while (p < stop && b[p] >= 0x30 && b[p] <= 0x39) p++;
    }
    if (p < stop && (b[p] === 0x65 || b[p] === 0x45)) {
      p++;
      if (p < stop && (b[p] === 0x2b || b[p] === 0x2d)) p++;
      if (!(p < stop && b[p] >= 0x30 && b[p] <= 0x39)) throw NOT_COMMON;
      while (p < stop && b[p] >= 0x30 && b[p] <= 0x39) p++;
    }
    if (p !== stop) throw NOT_COMMON;
    this.copy(start, stop);
    this.pos = stop;
  }

  /** Bytes [from, to) of the buffer to the output: short runs byte by byte, long ones in one move. */
  private copy(from: number, to: number): void {
    const b = this.buf;
    let at = this.at;
    if (to - from > 24) {
      b.copyWithin(at, from, to);
      at += to - from;
    } else for (let i = from; i < to; i++) b[at++] = b[i];
    this.at = at;
  }

  /** A string value: as written without escapes; with escapes decoded and written as JSON.stringify does. */
  private string(): void {
    const b = this.buf;
    const start = this.pos;
    let i = start + 1;
    let escaped = false;
    for (;;) {
      const c = b[i];
      if (c === 0x22) break;
      if (c === 0x5c) {
        escaped = true;
        i += 2;
        continue;
      }
      if (c < 0x20 || i >= this.end) throw NOT_COMMON;
      i++;
    }
    this.pos = i + 1;
    if (!escaped) {
      this.copy(start, this.pos);
      return;
    }
    let decoded: unknown;
    try {
      decoded = JSON.parse(b.toString('utf8', start, this.pos));
    } catch {
      throw NOT_COMMON;
    }
    const canonical = JSON.stringify(decoded);
    // Never longer than its escaped source in UTF-8; checked anyway (the spare part must stay whole).
    if (Buffer.byteLength(canonical, 'utf8') > this.spareBase - this.at) throw NOT_COMMON;
    this.at += b.write(canonical, this.at, 'utf8');
  }

  private array(): void {
    const b = this.buf;
    this.pos++;
    b[this.at++] = 0x5b;
    this.ws();
    if (b[this.pos] === 0x5d) {
      this.pos++;
      b[this.at++] = 0x5d;
      return;
    }
    for (;;) {
      this.ws();
      this.value();
      this.ws();
      const c = b[this.pos++];
      if (c === 0x5d) break;
      if (c !== 0x2c) throw NOT_COMMON;
      b[this.at++] = 0x2c;
    }
    b[this.at++] = 0x5d;
  }

  private object(top: { wanted: readonly string[]; members: Map<string, string> } | undefined): void {
    const b = this.buf;
    this.pos++;
    b[this.at++] = 0x7b;
    this.ws();
    if (b[this.pos] === 0x7d) {
      this.pos++;
      b[this.at++] = 0x7d;
      return;
    }
    const { nameStart, nameEnd, memberStart, memberEnd } = this;
    const base = this.top;
    const regionStart = this.at;
    let sorted = true;
    for (;;) {
      this.ws();
      if (b[this.pos] !== 0x22) throw NOT_COMMON;
      // The name: plain ASCII without escapes (anything else goes to the string pass).
      const ns = this.pos + 1;
      let i = ns;
      let c = b[i];
      while (c !== 0x22) {
        if (c < 0x20 || c === 0x5c || c >= 0x7f) throw NOT_COMMON;
        c = b[++i];
      }
      const ne = i;
      this.pos = i + 1;
      if (this.top > base) {
        const order = compareBytes(b, nameStart[this.top - 1], nameEnd[this.top - 1], ns, ne);
        if (order === 0) throw NOT_COMMON; // a duplicate name: the string pass names it
        if (order > 0) sorted = false;
      }
      this.ws();
      if (b[this.pos] !== 0x3a) throw NOT_COMMON;
      this.pos++;
      this.ws();
      const ms = this.at;
      this.copy(ns - 1, ne + 1);
      b[this.at++] = 0x3a;
      const vs = this.pos;
      this.value();
      if (top) {
        const name = wantedAt(b, ns, ne, top.wanted);
        if (name !== undefined) top.members.set(name, b.toString('utf8', vs, this.pos));
      }
      // Written after value(): the members of nested objects used the entries above and gave them back.
      const k = this.top++;
      nameStart[k] = ns;
      nameEnd[k] = ne;
      memberStart[k] = ms;
      memberEnd[k] = this.at;
      this.ws();
      const d = b[this.pos++];
      if (d === 0x7d) break;
      if (d !== 0x2c) throw NOT_COMMON;
      b[this.at++] = 0x2c;
    }
    const count = this.top - base;
    if (!sorted) {
      // Member indexes in name order (insertion sort: objects are small); a duplicate found here goes to the
      // string pass too.
      const order = this.order;
      for (let k = 0; k < count; k++) {
        const m = base + k;
        let j = k;
        while (j > 0) {
          const cmp = compareBytes(
            b,
            nameStart[order[j - 1]],
            nameEnd[order[j - 1]],
            nameStart[m],
            nameEnd[m],
          );
          if (cmp === 0) throw NOT_COMMON;
          if (cmp < 0) break;
          order[j] = order[j - 1];
          j--;
        }
        order[j] = m;
      }
      // The members move through the spare part, written back in order with commas between.
      const spare = this.spareBase - regionStart;
      b.copyWithin(this.spareBase, regionStart, this.at);
      let at = regionStart;
      for (let k = 0; k < count; k++) {
        const m = order[k];
        if (k > 0) b[at++] = 0x2c;
        b.copyWithin(at, memberStart[m] + spare, memberEnd[m] + spare);
        at += memberEnd[m] - memberStart[m];
      }
      this.at = at;
    }
    b[this.at++] = 0x7d;
    this.top = base;
  }
}

/** The name of `wanted` that `b[start, end)` spells (ASCII), without building a string per member. */
function wantedAt(b: Uint8Array, start: number, end: number, wanted: readonly string[]): string | undefined {
  search: for (const name of wanted) {
    if (name.length !== end - start) continue;
    for (let i = 0; i < name.length; i++) if (name.charCodeAt(i) !== b[start + i]) continue search;
    return name;
  }
  return undefined;
}

/** Byte order of `b[s1, e1)` and `b[s2, e2)` (ASCII: the UTF-16 code unit order of the names). */
function compareBytes(b: Uint8Array, s1: number, e1: number, s2: number, e2: number): number {
  const n1 = e1 - s1;
  const n2 = e2 - s2;
  const n = n1 < n2 ? n1 : n2;
  for (let i = 0; i < n; i++) {
    const d = b[s1 + i] - b[s2 + i];
    if (d !== 0) return d;
  }
  return n1 - n2;
}

const byteCanonicalizer = new ByteCanonicalizer();
