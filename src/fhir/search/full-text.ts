/**
 * Full-text search (`_text` on the narrative, `_content` on the whole resource; R4 search.html "Text Search
 * Parameters"): the words a resource is indexed under, and the query syntax this server accepts.
 *
 * Both stores index the same words in the same order: each resource's text becomes one index entry of type
 * `special` (param `_text` or `_content`, `system` = its words separated by single spaces), which SQLite keeps as an
 * FTS5 document (not an index row: schema migration 12, sqlite/text-documents.ts) and PostgreSQL as a search_index
 * row with a GIN index over `to_tsvector('simple', ...)`. So that neither engine's own tokenizer
 * can split or merge words differently, every word is encoded here into lower-case ASCII letters only
 * (`encodeWord`): both engines then see exactly these words, and a query matches the same resources on both.
 *
 * Words: the text is normalised as string search is (lower case, diacritics stripped), then split on anything that
 * is not a letter or a digit. A row keeps at most MAX_WORDS words and MAX_ROW_LETTERS letters; words longer than
 * MAX_WORD_LENGTH encoded letters are left out (identically on both stores).
 *
 * Query syntax (a subset of the OData `$search` expressions the R4 page points to):
 * - a word (`metastases`): resources containing it;
 * - a phrase in double quotes (`"bone marrow"`): the words next to each other, in order; a word that normalises to
 *   several words (`o'brien`) is such a phrase too;
 * - `AND` (or just a space) and `OR` (any case), `AND` binding tighter; parentheses group: `(bone OR liver) and metastases`.
 * Anything else (`NOT`, `-word`, `word*`, `NEAR`, unbalanced quotes or parentheses, an empty query) is refused
 * with 400 rather than guessed at.
 */
import { fhirError } from '../outcome.js';
import { isLosslessNumber, type FhirResource } from '../fhir-json.js';
import { normaliseString } from './normalise.js';
import type { TextQuery } from '../store/search-query.js';

export type { TextQuery };

export const MAX_WORDS = 16_000;
/** Longest word kept, in encoded letters (a non-ASCII character takes 8: a word of 25 Cyrillic letters fits). */
export const MAX_WORD_LENGTH = 200;
/** Most letters in one row: keeps PostgreSQL's tsvector under its 1 MB limit (lexemes + 6 bytes per word). */
export const MAX_ROW_LETTERS = 800_000;

/** `_text` and `_content`: the full-text parameters (index rows carry these as their param). */
export const FULL_TEXT_PARAMS = ['_text', '_content'] as const;
export type FullTextParam = (typeof FULL_TEXT_PARAMS)[number];

const LETTERS = 'abcdefghijklmnop';
const PLAIN_WORD = /^[a-pr-z]+$/;
const ASCII_WORD = /^[a-z0-9]+$/;
// eslint-disable-next-line no-control-regex
const NON_ASCII = /[^\x00-\x7f]/;

/**
 * One normalised word as lower-case ASCII letters: `a`-`z` but `q` as themselves, `q` as `qq`, a digit as `q` and
 * a letter `a`-`j`, any other character as `qx` and its code point in six hex digits written `a`-`p`.
 */
export function encodeWord(word: string): string {
  // Fast paths (most words): letters without `q` as they are; ASCII letters and digits by one replace.
  if (PLAIN_WORD.test(word)) return word;
  if (ASCII_WORD.test(word))
    return word.replace(/[q0-9]/g, (c) => (c === 'q' ? 'qq' : `q${LETTERS[c.charCodeAt(0) - 0x30]}`));
  let out = '';
  for (const char of word) {
    const code = char.codePointAt(0)!;
    if (code >= 0x61 && code <= 0x7a) out += char === 'q' ? 'qq' : char;
    else if (code >= 0x30 && code <= 0x39) out += `q${LETTERS[code - 0x30]}`;
    else
      out += `qx${code
        .toString(16)
        .padStart(6, '0')
        .replace(/[0-9a-f]/g, (h) => LETTERS[parseInt(h, 16)]!)}`;
  }
  return out;
}

/** What encodeWord writes for `q` and the digits (ASCII code minus 0x30; the rest of the table unused). */
const ENCODED_ASCII: string[] = [];
for (let d = 0; d < 10; d++) ENCODED_ASCII[d] = `q${LETTERS[d]}`;
ENCODED_ASCII[0x71 - 0x30] = 'qq';

/**
 * Appends the encoded words of lower-case ASCII text to `out` (encodeWord's rule in one pass over the characters:
 * most of a resource's words are codes, ids and UUIDs, for which a split and a replace per word were the cost).
 */
function asciiWords(lower: string, out: string[]): void {
  const length = lower.length;
  let i = 0;
  while (i < length) {
    let c = lower.charCodeAt(i);
    // skip what is not a letter or a digit
    while (i < length && !((c >= 0x61 && c <= 0x7a) || (c >= 0x30 && c <= 0x39))) c = lower.charCodeAt(++i);
    if (i >= length) return;
    const start = i;
    let plain = true;
    while (i < length && ((c >= 0x61 && c <= 0x7a) || (c >= 0x30 && c <= 0x39))) {
      if (c === 0x71 || c <= 0x39) plain = false;
      c = lower.charCodeAt(++i);
    }
    let word: string;
    if (plain) word = lower.slice(start, i);
    else {
      word = '';
      for (let k = start; k < i; k++) {
        const code = lower.charCodeAt(k);
        word += code === 0x71 || code <= 0x39 ? ENCODED_ASCII[code - 0x30]! : lower[k]!;
      }
    }
    if (word.length <= MAX_WORD_LENGTH) out.push(word);
  }
}

/** The encoded words of a text, in order. */
export function textWords(text: string): string[] {
  const out: string[] = [];
  // ASCII text (most): normalising is lower-casing, letters and digits are [a-z0-9] (the same words, faster).
  if (!NON_ASCII.test(text)) {
    asciiWords(text.toLowerCase(), out);
    return out;
  }
  for (const word of normaliseString(text).split(/[^\p{L}\p{N}]+/u)) {
    if (word === '') continue;
    const encoded = encodeWord(word);
    if (encoded.length <= MAX_WORD_LENGTH) out.push(encoded);
  }
  return out;
}

const ENTITIES: Record<string, string> = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'", nbsp: ' ' };

/** The text of an XHTML narrative: tags dropped (as word breaks), character references decoded. */
export function narrativeText(div: string): string {
  return div.replace(/<[^>]*>/g, ' ').replace(/&(#x[0-9a-f]+|#\d+|[a-z]+);/gi, (whole, ref: string) => {
    if (ref[0] !== '#') return ENTITIES[ref.toLowerCase()] ?? ' ';
    const code = ref[1] === 'x' || ref[1] === 'X' ? parseInt(ref.slice(2), 16) : Number(ref.slice(1));
    return code > 0 && code <= 0x10ffff ? String.fromCodePoint(code) : ' ';
  });
}

/** Every text value of a resource, in document order (element names are not content; the narrative is its text). */
function contentTexts(value: unknown, out: string[], key?: string): void {
  if (typeof value === 'string') out.push(key === 'div' ? narrativeText(value) : value);
  else if (typeof value === 'number') out.push(String(value));
  else if (value === null || typeof value !== 'object') return;
  else if (isLosslessNumber(value)) out.push(value.value);
  else if (Array.isArray(value)) for (const item of value) contentTexts(item, out, key);
  else {
    const members = value as Record<string, unknown>;
    // for-in: Object.entries' order (own string keys; JSON objects have no inherited enumerable ones), no arrays made
    for (const k in members) contentTexts(members[k], out, k);
  }
}

/** The words of one field, as the row text (at most MAX_WORDS words), or undefined when none. */
function rowText(texts: string[]): string | undefined {
  let row = '';
  let words = 0;
  let letters = 0;
  for (const text of texts) {
    for (const word of textWords(text)) {
      if (words >= MAX_WORDS || letters + word.length > MAX_ROW_LETTERS) break;
      row = words === 0 ? word : `${row} ${word}`;
      words++;
      letters += word.length;
    }
  }
  return words > 0 ? row : undefined;
}

/** The full-text words of a resource: `_text` (its narrative) and `_content` (all of it), as row texts. */
export function fullTextOf(resource: FhirResource): { param: FullTextParam; text: string }[] {
  const out: { param: FullTextParam; text: string }[] = [];
  const narrative = (resource.text as { div?: unknown } | undefined)?.div;
  const text = typeof narrative === 'string' ? rowText([narrativeText(narrative)]) : undefined;
  if (text) out.push({ param: '_text', text });
  // `meta` is not content: the store sets its versionId and lastUpdated after the rows are made, and its tags,
  // profiles and security labels have parameters of their own. Nor are `resourceType` and `id` (searched by type
  // and `_id`): the store writes them first in the stored text whatever their place in the request, and a row must
  // be the same made from the request as recomputed from the stored text (the integrity audit compares them).
  const {
    meta: _meta,
    id: _id,
    resourceType: _resourceType,
    ...contentMembers
  } = resource as FhirResource & { meta?: unknown; id?: unknown };
  const texts: string[] = [];
  contentTexts(contentMembers, texts);
  const content = rowText(texts);
  if (content) out.push({ param: '_content', text: content });
  return out;
}

// --- query parsing -----------------------------------------------------------------------------------------------

type Lexeme = { kind: 'word' | 'phrase'; text: string } | { kind: 'and' | 'or' | 'open' | 'close' };

function refuse(name: string, why: string): never {
  throw fhirError(
    'search-param-invalid',
    `${name}: ${why} (accepted: words, "phrases", AND, OR and parentheses)`,
  );
}

function lex(name: string, query: string): Lexeme[] {
  const out: Lexeme[] = [];
  let i = 0;
  while (i < query.length) {
    const c = query[i]!;
    if (/\s/.test(c)) i++;
    else if (c === '(' || c === ')') {
      out.push({ kind: c === '(' ? 'open' : 'close' });
      i++;
    } else if (c === '"') {
      const end = query.indexOf('"', i + 1);
      if (end < 0) refuse(name, 'a phrase has no closing quote');
      out.push({ kind: 'phrase', text: query.slice(i + 1, end) });
      i = end + 1;
    } else {
      let j = i;
      while (j < query.length && !/[\s()"]/.test(query[j]!)) j++;
      const word = query.slice(i, j);
      i = j;
      const upper = word.toUpperCase();
      if (upper === 'AND' || upper === 'OR') out.push({ kind: upper === 'AND' ? 'and' : 'or' });
      else if (upper === 'NOT' || upper === 'NEAR' || word.startsWith('-') || word.endsWith('*'))
        refuse(name, `'${word.slice(0, 40)}' is not supported`);
      else out.push({ kind: 'word', text: word });
    }
  }
  return out;
}

/** Parses a `_text`/`_content` value; 400 for what this server does not support. */
export function parseTextQuery(name: string, query: string): TextQuery {
  const lexemes = lex(name, query);
  let at = 0;
  const peek = (): Lexeme | undefined => lexemes[at];
  const orExpr = (depth: number): TextQuery => {
    const parts = [andExpr(depth)];
    while (peek()?.kind === 'or') {
      at++;
      parts.push(andExpr(depth));
    }
    return parts.length === 1 ? parts[0]! : { op: 'or', parts };
  };
  const andExpr = (depth: number): TextQuery => {
    const parts = [primary(depth)];
    for (;;) {
      const next = peek();
      if (next?.kind === 'and') {
        at++;
        parts.push(primary(depth));
      } else if (next && (next.kind === 'word' || next.kind === 'phrase' || next.kind === 'open'))
        parts.push(primary(depth));
      else break;
    }
    return parts.length === 1 ? parts[0]! : { op: 'and', parts };
  };
  const primary = (depth: number): TextQuery => {
    const next = peek();
    if (!next) refuse(name, 'an operand is missing');
    at++;
    if (next.kind === 'open') {
      if (depth >= 10) refuse(name, 'parentheses nest too deep');
      const inner = orExpr(depth + 1);
      if (peek()?.kind !== 'close') refuse(name, 'a parenthesis is not closed');
      at++;
      return inner;
    }
    if (next.kind === 'word' || next.kind === 'phrase') {
      const words = textWords(next.text);
      if (words.length === 0) refuse(name, `'${next.text.slice(0, 40)}' has no word to search for`);
      return { op: 'phrase', words };
    }
    return refuse(name, `'${next.kind.toUpperCase()}' is out of place`);
  };
  if (lexemes.length === 0) refuse(name, 'the query is empty');
  const parsed = orExpr(0);
  if (at < lexemes.length) refuse(name, 'unbalanced parentheses');
  return parsed;
}
