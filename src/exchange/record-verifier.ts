/**
 * The receiver's side of a pull: checks every record of a custodian's evidence Bundle (src/exchange/
 * record-evidence.ts) against the ledger, and builds what the receiver answers (docs/exchange.md "Evidence and
 * verification").
 *
 * The Bundle comes from another member: hostile input. It is scanned, not trusted: sizes and counts are capped,
 * every evidence field is checked for its type and shape, and nothing in it throws out of here. Each resource is
 * kept as the exact text the custodian sent (a span of the Bundle text, never re-serialised), and its hash is
 * recomputed from that text (canonical form + salt), proven into the root, and the root looked up on this peer's
 * ledger (once per root per run), where it must have been anchored by the custodian's own MSP.
 *
 * Per record: `verified`, `pending` (not yet anchored by the custodian, or the root not yet on this peer's
 * ledger: kept, marked pending) or `failed` (left out, named in an OperationOutcome issue).
 */
import { canonicalUtf8 } from '../fhir/canonical.js';
import type { OperationOutcomeIssue } from '../fhir/outcome.js';
import { isLeafVersion, leafHashOf } from '../integrity/hashing.js';
import { ProvenNodes, verifyProofFromNodes, type ProofStep } from '../integrity/merkle.js';
import type { OnChainBatch } from '../integrity/anchor-contract-client.js';
import { receivedAnchorVerdict, receivedProofHolds, type BatchSource } from '../integrity/verification.js';
import {
  EVIDENCE_EXTENSION_URL,
  EVIDENCE_LIMITS,
  MSP_IDENTIFIER_SYSTEM,
  PARTICIPANT_TYPE_SYSTEM,
  PROOF_NODES_PARAMETER,
  evidenceProvenanceText,
  proofPartText,
  proofPositions,
  includeEntryText,
  recordEntryText,
  searchsetText,
  versionUrl,
  type CustodianIdentity,
  type RecordEvidence,
} from './record-evidence.js';
import { isJsonObject } from '../fhir/definitions/json.js';

export type RecordStatus = 'verified' | 'pending' | 'failed';

export interface VerifierLimits {
  /** The whole Bundle text, in UTF-16 code units (the HTTP client caps bytes before this). */
  maxBundleChars: number;
  /** Entries of the Bundle (records and their Provenances together). */
  maxEntries: number;
  /** Nesting depth of any JSON value in the Bundle. */
  maxDepth: number;
}

export const DEFAULT_VERIFIER_LIMITS: VerifierLimits = {
  maxBundleChars: 64 * 1024 * 1024,
  maxEntries: 20_000,
  maxDepth: 100,
};

/** The outcome of one record. */
export interface RecordVerdict {
  /** The custodian's absolute URL of the version, as sent (or `entry[i]` when the entry has no usable one). */
  fullUrl: string;
  status: RecordStatus;
  reason?: string;
  anchoredBy?: string;
  anchoredAt?: string;
}

/** What a custodian's answer gives the receiver. */
export interface VerifiedAnswer {
  custodian: CustodianIdentity;
  records: RecordVerdict[];
  /** Entry texts to answer with: each kept record (verified or pending) byte-identical, then its Provenance. */
  entries: string[];
  /** How many records `entries` holds. */
  kept: number;
  /** One issue per failed record, and one for an answer that is not an evidence Bundle at all. */
  issues: OperationOutcomeIssue[];
}

/** A Bundle shape problem: caught inside this module (and the push's, document-delivery.ts) and turned into an issue. */
export class ShapeError extends Error {}

const HEX64 = /^[0-9a-f]{64}$/;
const FHIR_ID = /^[A-Za-z0-9\-.]{1,64}$/;
const RESOURCE_TYPE = /^[A-Z][A-Za-z]{0,63}$/;
const VERSION_ID = /^[1-9][0-9]{0,9}$/;
const TRANSACTION_ID = /^[A-Za-z0-9._:-]{1,128}$/;
const NUMBER = /-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?/y;

/**
 * Finds the spans of JSON values in a text without building them (so a resource's text is kept exactly), and
 * checks the syntax on the way. Depth-capped: hostile nesting cannot exhaust the stack. Throws ShapeError.
 */
export class SpanScanner {
  pos = 0;
  private readonly open: number[] = [];
  constructor(
    readonly text: string,
    private readonly maxDepth: number,
  ) {}

  fail(what: string): never {
    throw new ShapeError(`${what} at character ${this.pos}`);
  }

  ws(): void {
    const t = this.text;
    let c = t.charCodeAt(this.pos);
    while (c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09) c = t.charCodeAt(++this.pos);
  }

  /**
   * Skips one value; returns its span [start, end). Only the brackets and strings are matched here: the span of a
   * resource is then checked in full by the parser that reads it (canonicalizeText, JSON.parse), and the
   * envelope's own members go through `members`/`elements`.
   */
  value(): [number, number] {
    this.ws();
    const t = this.text;
    const start = this.pos;
    const c = t.charCodeAt(start);
    if (c !== 0x7b && c !== 0x5b) {
      if (c === 0x22) this.skipString();
      else if (t.startsWith('true', start)) this.pos += 4;
      else if (t.startsWith('false', start)) this.pos += 5;
      else if (t.startsWith('null', start)) this.pos += 4;
      else {
        NUMBER.lastIndex = start;
        if (!NUMBER.test(t)) this.fail('not JSON');
        this.pos = NUMBER.lastIndex;
      }
      return [start, this.pos];
    }
    // Brackets still open, as their closing characters; capped so hostile nesting stays cheap. One stack per
    // scanner (reused: a Bundle has thousands of values).
    const open = this.open;
    open.length = 0;
    let i = start;
    for (;;) {
      const d = t.charCodeAt(i);
      if (d === 0x22) {
        this.pos = i;
        this.skipString();
        i = this.pos;
        continue;
      }
      if (d === 0x7b || d === 0x5b) {
        if (open.length >= this.maxDepth) {
          this.pos = i;
          this.fail('JSON nested too deeply');
        }
        open.push(d + 2);
      } else if (d === 0x7d || d === 0x5d) {
        if (open.pop() !== d) {
          this.pos = i;
          this.fail('unbalanced brackets');
        }
        if (open.length === 0) {
          this.pos = i + 1;
          return [start, this.pos];
        }
      } else if (Number.isNaN(d)) {
        this.pos = i;
        this.fail('unterminated value');
      }
      i++;
    }
  }

  /** Skips a string (at its opening quote); returns its span including the quotes. */
  string(): [number, number] {
    const start = this.pos;
    this.skipString();
    return [start, this.pos];
  }

  /** Moves past a string (at its opening quote). */
  private skipString(): void {
    const t = this.text;
    if (t.charCodeAt(this.pos) !== 0x22) this.fail('a string expected');
    let i = this.pos + 1;
    for (;;) {
      const quote = t.indexOf('"', i);
      if (quote < 0) this.fail('unterminated string');
      // The quote ends the string unless an odd number of backslashes escapes it.
      let backslashes = 0;
      while (t.charCodeAt(quote - 1 - backslashes) === 0x5c) backslashes++;
      i = quote + 1;
      if (backslashes % 2 === 0) break;
    }
    this.pos = i;
  }

  /** At `{`: calls `member(name)` with the scanner at each member's value, which it must consume. */
  members(member: (name: string) => void): void {
    if (this.text.charCodeAt(this.pos) !== 0x7b) this.fail('an object expected');
    this.pos++;
    this.ws();
    if (this.text.charCodeAt(this.pos) === 0x7d) {
      this.pos++;
      return;
    }
    const seen = new Set<string>();
    for (;;) {
      this.ws();
      const [s, e] = this.string();
      // Most names have no escape: their text between the quotes is the name.
      let escaped = false;
      for (let i = s + 1; i < e - 1 && !escaped; i++) escaped = this.text.charCodeAt(i) === 0x5c;
      const name = escaped ? (JSON.parse(this.text.slice(s, e)) as string) : this.text.slice(s + 1, e - 1);
      if (seen.has(name)) this.fail(`duplicate member "${name.slice(0, 40)}"`);
      seen.add(name);
      this.ws();
      if (this.text.charCodeAt(this.pos) !== 0x3a) this.fail('":" expected');
      this.pos++;
      member(name);
      this.ws();
      const c = this.text.charCodeAt(this.pos++);
      if (c === 0x7d) return;
      if (c !== 0x2c) this.fail('"," or "}" expected');
    }
  }

  /** At `[`: calls `element()` with the scanner at each element, which it must consume. */
  elements(element: (index: number) => void): void {
    if (this.text.charCodeAt(this.pos) !== 0x5b) this.fail('an array expected');
    this.pos++;
    this.ws();
    if (this.text.charCodeAt(this.pos) === 0x5d) {
      this.pos++;
      return;
    }
    for (let index = 0; ; index++) {
      element(index);
      this.ws();
      const c = this.text.charCodeAt(this.pos++);
      if (c === 0x5d) return;
      if (c !== 0x2c) this.fail('"," or "]" expected');
    }
  }

  /** The value at the scanner, parsed (for the small envelope parts: search, fullUrl, Provenance). */
  parsed(): unknown {
    const [s, e] = this.value();
    return JSON.parse(this.text.slice(s, e)) as unknown;
  }

  end(): void {
    this.ws();
    if (this.pos !== this.text.length) this.fail('text after the Bundle');
  }
}

/** The usual `search` texts, read without a parse. */
const SEARCH_MODES = new Map<string, { mode: string }>(
  ['match', 'include', 'outcome'].map((mode) => [`{"mode":"${mode}"}`, { mode }]),
);

/** One entry of the Bundle, as scanned. */
/** One entry of a Bundle read without trusting it. */
export interface ScannedEntry {
  fullUrl?: unknown;
  mode?: unknown;
  /** The resource's exact text. */
  resourceText?: string;
}

/** A Bundle read without trusting it: the top-level members asked for (parsed) and its entries. */
export interface ScannedBundle {
  members: Map<string, unknown>;
  entries: ScannedEntry[];
}

/**
 * Reads a Bundle's text once, keeping each entry's fullUrl, search mode and the exact text of its resource (a
 * span of `text`, never re-serialised), and the top-level `members` asked for, parsed. The one reader of Bundles
 * other members send: a custodian's answer, a `$network-save` body, a pushed document. Throws ShapeError (or
 * SyntaxError) past `maxDepth` or `maxEntries`, or when the text is not JSON.
 */
export function scanBundleText(
  text: string,
  limits: { maxDepth: number; maxEntries: number; members: readonly string[] },
): ScannedBundle {
  const scanner = new SpanScanner(text, limits.maxDepth);
  scanner.ws();
  const members = new Map<string, unknown>();
  const entries: ScannedEntry[] = [];
  scanner.members((name) => {
    if (name === 'entry') {
      scanner.elements((index) => {
        if (index >= limits.maxEntries) scanner.fail(`more than ${limits.maxEntries} entries`);
        const entry: ScannedEntry = {};
        scanner.ws();
        scanner.members((member) => {
          if (member === 'fullUrl') entry.fullUrl = scanner.parsed();
          else if (member === 'resource') {
            const [s, e] = scanner.value();
            entry.resourceText = text.slice(s, e);
          } else if (member === 'search') {
            const [s, e] = scanner.value();
            const search = SEARCH_MODES.get(text.slice(s, e)) ?? JSON.parse(text.slice(s, e));
            entry.mode = isJsonObject(search) ? search.mode : undefined;
          } else scanner.value();
        });
        entries.push(entry);
      });
    } else if (limits.members.includes(name)) members.set(name, scanner.parsed());
    else scanner.value();
  });
  scanner.end();
  return { members, entries };
}

function scanBundle(text: string, limits: VerifierLimits): ScannedEntry[] {
  if (text.length > limits.maxBundleChars)
    throw new ShapeError(`larger than ${limits.maxBundleChars} characters`);
  const { members, entries } = scanBundleText(text, {
    maxDepth: limits.maxDepth,
    maxEntries: limits.maxEntries,
    members: ['resourceType', 'type'],
  });
  if (members.get('resourceType') !== 'Bundle' || members.get('type') !== 'searchset')
    throw new ShapeError('not a searchset Bundle');
  return entries;
}

const isIndex = (value: unknown, min: number): value is number =>
  typeof value === 'number' &&
  Number.isSafeInteger(value) &&
  value >= min &&
  value <= EVIDENCE_LIMITS.maxLeafCount;

/**
 * The evidence a Provenance carries, checked field by field, or the reason it is unusable. Only the
 * `integrity-evidence` extension and the custodian agent are read; everything else in it is ignored.
 */
export function parseEvidence(
  provenance: unknown,
): { evidence: RecordEvidence; mspId?: string } | { error: string } {
  if (!isJsonObject(provenance) || provenance.resourceType !== 'Provenance')
    return { error: 'not a Provenance' };
  const extensions = Array.isArray(provenance.extension) ? provenance.extension : [];
  const found = extensions.filter((e) => isJsonObject(e) && e.url === EVIDENCE_EXTENSION_URL);
  if (found.length !== 1)
    return { error: 'the Provenance does not carry exactly one integrity-evidence extension' };
  const parts = (found[0] as Record<string, unknown>).extension;
  if (!Array.isArray(parts) || parts.length > EVIDENCE_LIMITS.maxProofSteps + 20)
    return { error: 'the integrity-evidence extension has no parts, or too many' };
  const single = new Map<string, unknown>();
  const proof: ProofStep[] = [];
  for (const part of parts) {
    if (!isJsonObject(part) || typeof part.url !== 'string')
      return { error: 'an evidence part is not an extension' };
    // The value[x] types the evidence uses; each part's value is then checked for its type.
    const value =
      part.valueString ??
      part.valueCode ??
      part.valueUnsignedInt ??
      part.valuePositiveInt ??
      part.valueDateTime;
    if (part.url === 'proof') {
      if (typeof value !== 'string') return { error: 'a proof step is not a string' };
      const colon = value.indexOf(':');
      const side = value.slice(0, colon);
      const hash = value.slice(colon + 1);
      if ((side !== 'left' && side !== 'right') || !HEX64.test(hash))
        return { error: 'a proof step is not left:<hex> or right:<hex>' };
      proof.push({ side, hash });
    } else {
      if (single.has(part.url)) return { error: `the evidence repeats ${part.url.slice(0, 40)}` };
      single.set(part.url, value);
    }
  }
  if (proof.length > EVIDENCE_LIMITS.maxProofSteps) return { error: 'the proof has too many steps' };
  return checkedEvidence(single, proof, custodianMspOf(provenance));
}

/** Evidence read from a Provenance: its single-valued parts by name, its proof steps, its custodian's MSP. */
export type EvidenceRead = ReturnType<typeof parseEvidence>;

/** The second half of parseEvidence: the parts' values checked for their types and shapes. */
function checkedEvidence(
  single: ReadonlyMap<string, unknown>,
  proof: ProofStep[],
  mspId: string | undefined,
): { evidence: RecordEvidence; mspId?: string } | { error: string } {
  const status = single.get('status');
  if (status === 'pending')
    return { evidence: { status: 'pending', reason: 'not yet anchored by the custodian' }, mspId };
  if (status !== 'anchored') return { error: 'the evidence status is neither anchored nor pending' };
  const salt = single.get('salt');
  const leafVersion = single.get('leafVersion');
  const custodian = single.get('custodian');
  const root = single.get('root');
  const leafIndex = single.get('leafIndex');
  const leafCount = single.get('leafCount');
  const transactionId = single.get('transactionId');
  const blockNumber = single.get('blockNumber');
  if (typeof salt !== 'string' || !HEX64.test(salt)) return { error: 'the salt is not 64 hex digits' };
  if (!isLeafVersion(leafVersion)) return { error: 'the leaf version is not 1 or 2' };
  if (custodian !== undefined && (typeof custodian !== 'string' || custodian.length > 256))
    return { error: 'the custodian reference is not a string' };
  if (typeof root !== 'string' || !HEX64.test(root)) return { error: 'the root is not 64 hex digits' };
  if (!isIndex(leafIndex, 0) || !isIndex(leafCount, 1) || leafIndex >= leafCount)
    return { error: 'the leaf index and count are not a position in a batch' };
  if (typeof transactionId !== 'string' || !TRANSACTION_ID.test(transactionId))
    return { error: 'the transaction id is missing or malformed' };
  if (!isIndex(blockNumber, 0)) return { error: 'the block number is not a non-negative integer' };
  const evidence: RecordEvidence = {
    status: 'anchored',
    salt,
    leafVersion,
    root,
    leafIndex,
    leafCount,
    proof,
    transactionId,
    blockNumber,
  };
  if (typeof custodian === 'string') evidence.custodian = custodian;
  return { evidence, mspId };
}

/** Regular-expression source matching `text` literally. */
const literally = (text: string) => text.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
/** A JSON string without escapes or control characters: it parses to exactly the characters between its quotes. */
const PLAIN_STRING = '"([^"\\\\\\u0000-\\u001f]*)"';
/** A JSON integer: it parses to the number it spells. */
const PLAIN_INT = '(0|[1-9][0-9]{0,15})';
const partPattern = (url: string, type: string, value: string) =>
  literally(`{"url":"${url}","${type}":`) + value + '\\}';

/**
 * A custodian's Provenance exactly as record-evidence.ts writes it into an answer (evidenceProvenanceText: an
 * anchored record, no proof steps, no whitespace), every string in it without escapes. A text this pattern matches
 * parses to exactly its captures, so it is read from them without building the objects (a receiver reads one per
 * record); any other text (another member's writer, an escape, a pending record) is parsed in full.
 */
const WRITTEN_PROVENANCE = new RegExp(
  '^' +
    literally(`{"resourceType":"Provenance","extension":[{"url":"${EVIDENCE_EXTENSION_URL}","extension":[`) +
    partPattern('status', 'valueCode', '"anchored"') +
    ',' +
    partPattern('salt', 'valueString', PLAIN_STRING) +
    ',' +
    partPattern('leafVersion', 'valuePositiveInt', PLAIN_INT) +
    `(?:,${partPattern('custodian', 'valueString', PLAIN_STRING)})?` +
    ',' +
    partPattern('root', 'valueString', PLAIN_STRING) +
    ',' +
    partPattern('leafIndex', 'valueUnsignedInt', PLAIN_INT) +
    ',' +
    partPattern('leafCount', 'valuePositiveInt', PLAIN_INT) +
    ',' +
    partPattern('transactionId', 'valueString', PLAIN_STRING) +
    ',' +
    partPattern('blockNumber', 'valueUnsignedInt', PLAIN_INT) +
    literally(']}],"target":[{"reference":') +
    PLAIN_STRING +
    literally('}],"recorded":') +
    PLAIN_STRING +
    literally(
      `,"agent":[{"type":{"coding":[{"system":"${PARTICIPANT_TYPE_SYSTEM}","code":"custodian","display":"Custodian"}]},` +
        `"who":{"identifier":{"system":"${MSP_IDENTIFIER_SYSTEM}","value":`,
    ) +
    PLAIN_STRING +
    literally('},"display":') +
    PLAIN_STRING +
    literally('}}]}') +
    '$',
);

/** The target and evidence of a Provenance in the written form (WRITTEN_PROVENANCE), or undefined. */
export function readWrittenProvenance(text: string): { target: string; read: EvidenceRead } | undefined {
  const m = WRITTEN_PROVENANCE.exec(text);
  if (!m) return undefined;
  const single = new Map<string, unknown>([
    ['status', 'anchored'],
    ['salt', m[1]],
    ['leafVersion', Number(m[2])],
    ['root', m[4]],
    ['leafIndex', Number(m[5])],
    ['leafCount', Number(m[6])],
    ['transactionId', m[7]],
    ['blockNumber', Number(m[8])],
  ]);
  if (m[3] !== undefined) single.set('custodian', m[3]);
  return { target: m[9], read: checkedEvidence(single, [], m[11]) };
}

/** The MSP id of the Provenance's custodian agent. */
function custodianMspOf(provenance: Record<string, unknown>): string | undefined {
  const agents = Array.isArray(provenance.agent) ? provenance.agent : [];
  for (const agent of agents) {
    if (!isJsonObject(agent) || !isJsonObject(agent.who) || !isJsonObject(agent.who.identifier)) continue;
    const { system, value } = agent.who.identifier;
    if (system === MSP_IDENTIFIER_SYSTEM && typeof value === 'string') return value;
  }
  return undefined;
}

/** A batch's proof nodes as a custodian's answer sends them once (record-evidence.ts), or why they are unusable. */
type BatchNodes =
  | {
      /** Hex by position; then, for the nodes a record used, their bytes and their proof parts as written out. */
      nodes: Map<number, string>;
      bytes: Map<number, Buffer>;
      parts: Map<number, string>;
    }
  | { error: string };

const NODE = /^([0-9]{1,2})\/([0-9]{1,10})\/([0-9a-f]{64})$/;

/** The proof-nodes entry of one batch: its key (`root|leafCount`) and nodes, checked; undefined if it is none. */
function parseProofNodes(
  resource: Record<string, unknown>,
  maxNodes: number,
): { key: string; batch: BatchNodes } | undefined {
  const parameters = Array.isArray(resource.parameter) ? (resource.parameter as unknown[]) : [];
  const first = parameters[0];
  const second = parameters[1];
  if (!isJsonObject(first) || first.name !== PROOF_NODES_PARAMETER || !isJsonObject(second)) return undefined;
  const root = first.valueString;
  const leafCount = second.valuePositiveInt;
  if (typeof root !== 'string' || !HEX64.test(root) || second.name !== 'leafCount' || !isIndex(leafCount, 1))
    return undefined;
  const key = `${root}|${leafCount}`;
  const bad = (error: string) => ({ key, batch: { error } });
  if (parameters.length - 2 > maxNodes) return bad('its batch’s proof nodes are too many');
  const nodes = new Map<number, string>();
  for (let i = 2; i < parameters.length; i++) {
    const node = parameters[i];
    const match =
      isJsonObject(node) && node.name === 'node' && typeof node.valueString === 'string'
        ? NODE.exec(node.valueString)
        : null;
    if (!match) return bad('its batch’s proof nodes are malformed');
    const level = Number(match[1]);
    const index = Number(match[2]);
    if (level >= EVIDENCE_LIMITS.maxProofSteps || index >= leafCount)
      return bad('its batch’s proof nodes are malformed');
    const position = level * 2 ** 31 + index;
    if (nodes.has(position)) return bad('its batch’s proof nodes repeat a node');
    nodes.set(position, match[3]);
  }
  return { key, batch: { nodes, bytes: new Map(), parts: new Map() } };
}

/**
 * The proof of a record whose Provenance carries no proof steps, from its batch's nodes in the same answer: the
 * nodes by position (each node's bytes and proof part made once per answer, the records of a batch share most of
 * them) and the proof's parts as written out; an error when the batch has none, or not all the record needs.
 */
function proofFromNodes(
  evidence: Extract<RecordEvidence, { status: 'anchored' }>,
  batches: ReadonlyMap<string, BatchNodes>,
): { siblings: ReadonlyMap<number, Buffer>; partsText: string } | { error: string } {
  const positions = proofPositions(evidence.leafIndex, evidence.leafCount);
  if (positions.length === 0) return { siblings: NO_SIBLINGS, partsText: '' };
  const batch = batches.get(`${evidence.root}|${evidence.leafCount}`);
  if (batch === undefined) return { error: 'the record has no proof: no steps, and no nodes of its batch' };
  if ('error' in batch) return batch;
  let partsText = '';
  for (const position of positions) {
    let part = batch.parts.get(position);
    if (part === undefined) {
      const hash = batch.nodes.get(position);
      if (hash === undefined) return { error: 'its batch’s proof nodes lack one of its proof' };
      // An even sibling is the left one.
      part = proofPartText(position % 2 === 0 ? 'left' : 'right', hash);
      batch.parts.set(position, part);
      batch.bytes.set(position, Buffer.from(hash, 'hex'));
    }
    partsText += part;
  }
  return { siblings: batch.bytes, partsText };
}

const NO_SIBLINGS: ReadonlyMap<number, Buffer> = new Map();

/** The single target reference of a Provenance, if it has exactly one. */
function targetOf(provenance: unknown): string | undefined {
  if (!isJsonObject(provenance) || !Array.isArray(provenance.target) || provenance.target.length !== 1)
    return undefined;
  const target: unknown = provenance.target[0];
  return isJsonObject(target) && typeof target.reference === 'string' ? target.reference : undefined;
}

/** The top-level members of a resource the verifier reads. */
const VERSION_MEMBERS = ['resourceType', 'id', 'meta'] as const;

/** A string member's value from a JSON text of it, or undefined. */
function stringMember(valueText: string | undefined): string | undefined {
  if (valueText === undefined || valueText.charCodeAt(0) !== 0x22) return undefined;
  // Without a backslash, a JSON string's value is between its quotes.
  return valueText.includes('\\') ? (JSON.parse(valueText) as string) : valueText.slice(1, -1);
}

/**
 * The canonical form of a resource text as UTF-8 bytes (what its leaf hash is computed over: a view of a scratch
 * buffer, to be hashed before the next record), with its type, id, version and lastUpdated read from the same pass
 * (checked against the FHIR id and version shapes): one parse per record.
 */
function versionOf(resourceText: string):
  | {
      canonical: Buffer;
      resourceType: string;
      id: string;
      versionId: number;
      lastUpdated: string;
    }
  | { error: string } {
  let read;
  try {
    read = canonicalUtf8(resourceText, VERSION_MEMBERS);
  } catch {
    return { error: 'the resource is not JSON' };
  }
  const { bytes: canonical, members } = read;
  if (canonical[0] !== 0x7b) return { error: 'the resource is not an object' };
  const resourceType = stringMember(members.get('resourceType'));
  const id = stringMember(members.get('id'));
  if (resourceType === undefined || !RESOURCE_TYPE.test(resourceType))
    return { error: 'the resource has no resourceType' };
  if (id === undefined || !FHIR_ID.test(id)) return { error: 'the resource has no valid id' };
  const metaText = members.get('meta');
  // meta is small (versionId, lastUpdated, maybe profiles and labels): parsed on its own.
  const meta: unknown = metaText === undefined ? undefined : JSON.parse(metaText);
  if (!isJsonObject(meta) || typeof meta.versionId !== 'string' || !VERSION_ID.test(meta.versionId))
    return { error: 'the resource has no meta.versionId' };
  if (typeof meta.lastUpdated !== 'string' || meta.lastUpdated.length > 40)
    return { error: 'the resource has no meta.lastUpdated' };
  return {
    canonical,
    resourceType,
    id,
    versionId: Number(meta.versionId),
    lastUpdated: meta.lastUpdated,
  };
}

function failedIssue(custodian: CustodianIdentity, record: string, reason: string): OperationOutcomeIssue {
  return {
    severity: 'error',
    code: 'processing',
    diagnostics: `${record} from ${custodian.organization} (${custodian.mspId}) failed verification and was left out: ${reason}`,
  };
}

/**
 * Verifies every record of a custodian's evidence Bundle. `custodian` is who the receiver called (from the member
 * directory, never from the Bundle): every fullUrl must be at its base URL, every Provenance must name its MSP,
 * and every root must have been anchored by that MSP. `batches`: a CachedBatchSource shared by the run. Never
 * throws for anything in `bundleText`; a ledger that cannot be read leaves the records pending.
 */
export async function verifyEvidenceBundle(
  bundleText: string,
  custodian: CustodianIdentity,
  batches: BatchSource,
  limits: VerifierLimits = DEFAULT_VERIFIER_LIMITS,
): Promise<VerifiedAnswer> {
  const answer: VerifiedAnswer = { custodian, records: [], entries: [], kept: 0, issues: [] };
  let entries: ScannedEntry[];
  try {
    entries = scanBundle(bundleText, limits);
  } catch (err) {
    if (!(err instanceof ShapeError) && !(err instanceof SyntaxError)) throw err;
    answer.issues.push({
      severity: 'error',
      code: 'structure',
      diagnostics: `The answer of ${custodian.organization} (${custodian.mspId}) is not an evidence Bundle (${err.message}); none of its records were used`,
    });
    return answer;
  }

  // Evidence Provenances by the record they target; a target named twice has no usable evidence. Batches' proof
  // nodes by root and leaf count; a batch sent twice has none.
  const provenances = new Map<string, EvidenceRead>();
  const ambiguous = new Set<string>();
  const batchNodes = new Map<string, BatchNodes>();
  for (const entry of entries) {
    if (entry.mode !== 'include' || entry.resourceText === undefined) continue;
    const written = readWrittenProvenance(entry.resourceText);
    if (written) {
      if (provenances.has(written.target)) ambiguous.add(written.target);
      provenances.set(written.target, written.read);
      continue;
    }
    let resource: unknown;
    try {
      resource = JSON.parse(entry.resourceText);
    } catch {
      continue;
    }
    if (isJsonObject(resource) && resource.resourceType === 'Parameters') {
      const found = parseProofNodes(resource, 2 * limits.maxEntries * EVIDENCE_LIMITS.maxProofSteps);
      if (found)
        batchNodes.set(
          found.key,
          batchNodes.has(found.key) ? { error: 'its batch’s proof nodes are sent twice' } : found.batch,
        );
      continue;
    }
    if (!isJsonObject(resource) || resource.resourceType !== 'Provenance') continue;
    const target = targetOf(resource);
    if (target === undefined) continue;
    if (provenances.has(target)) ambiguous.add(target);
    provenances.set(target, parseEvidence(resource));
  }

  const run: VerifierRun = {
    custodian,
    provenances,
    ambiguous,
    seen: new Set(),
    batchNodes,
    proven: batches.proven ?? new ProvenNodes(),
    roots: new Map(),
  };
  for (let i = 0; i < entries.length; i++) {
    const entry = entries[i];
    if (entry.mode !== 'match') continue;
    const named =
      typeof entry.fullUrl === 'string' && entry.fullUrl.length <= 2048 ? entry.fullUrl : `entry[${i}]`;
    // Everything but the root's ledger read is synchronous; a root is read once per answer (then known).
    const checked = checkEntry(entry, named, run);
    const verdict = 'record' in checked ? checked : await anchorVerdict(checked, run, batches);
    answer.records.push(verdict.record);
    if (verdict.record.status === 'failed') {
      answer.issues.push(failedIssue(custodian, named, verdict.record.reason ?? 'failed'));
      continue;
    }
    answer.entries.push(recordEntryText(named, entry.resourceText!));
    answer.entries.push(includeEntryText(verdict.provenance!));
    answer.kept++;
  }
  return answer;
}

/** What the checks of one answer share. */
interface VerifierRun {
  custodian: CustodianIdentity;
  /** Evidence Provenances by the record they target; a target named twice is ambiguous. */
  provenances: Map<string, EvidenceRead>;
  ambiguous: Set<string>;
  /** fullUrls of the records checked so far. */
  seen: Set<string>;
  batchNodes: ReadonlyMap<string, BatchNodes>;
  proven: ProvenNodes;
  /** Roots read in this answer (null: not on this peer's ledger); a read that failed is not kept. */
  roots: Map<string, OnChainBatch | null>;
}

type EntryVerdict = { record: RecordVerdict; provenance?: string };

/** A record whose text proves into its root: what is left is the root on the ledger. */
interface ProvenRecord {
  fullUrl: string;
  lastUpdated: string;
  evidence: Extract<RecordEvidence, { status: 'anchored' }>;
  /** Its proof's parts as written out, when the proof came from its batch's nodes (evidence.proof is empty). */
  proofText?: string;
}

/**
 * The checks of one record that need no ledger: its text and URL, its Provenance, its leaf hash and proof. A
 * verdict when they decide (failed, pending), or the proven record.
 */
function checkEntry(entry: ScannedEntry, fullUrl: string, run: VerifierRun): EntryVerdict | ProvenRecord {
  const fail = (reason: string) => ({ record: { fullUrl, status: 'failed' as const, reason } });
  const { custodian } = run;
  if (entry.resourceText === undefined) return fail('the entry has no resource');
  const version = versionOf(entry.resourceText);
  if ('error' in version) return fail(version.error);
  const expectedUrl = versionUrl(custodian.fhirBaseUrl, version.resourceType, version.id, version.versionId);
  if (fullUrl !== expectedUrl) return fail(`the fullUrl is not ${expectedUrl}`);
  if (run.seen.has(fullUrl)) return fail('the record is sent twice');
  run.seen.add(fullUrl);
  if (run.ambiguous.has(fullUrl)) return fail('more than one Provenance targets the record');
  const parsed = run.provenances.get(fullUrl);
  if (parsed === undefined) return fail('no evidence Provenance targets the record');
  if ('error' in parsed) return fail(parsed.error);
  if (parsed.mspId !== custodian.mspId)
    return fail(
      `the Provenance names custodian ${String(parsed.mspId).slice(0, 64)}, not ${custodian.mspId}`,
    );
  const { evidence } = parsed;
  if (evidence.status === 'pending') {
    const reason = 'not yet anchored by the custodian';
    return {
      record: { fullUrl, status: 'pending', reason },
      provenance: evidenceProvenanceText({ fullUrl, lastUpdated: version.lastUpdated }, custodian, evidence, {
        status: 'pending',
        reason,
      }),
    };
  }
  // A custodian's answer sends each batch's proof nodes once (record-evidence.ts); push and save send steps.
  const fromNodes = evidence.proof.length === 0 ? proofFromNodes(evidence, run.batchNodes) : undefined;
  if (fromNodes && 'error' in fromNodes) return fail(fromNodes.error);
  let hash: string;
  try {
    hash = leafHashOf(evidence.salt, version.canonical, evidence.leafVersion, evidence.custodian);
  } catch (err) {
    return fail(`the leaf hash cannot be computed: ${err instanceof Error ? err.message : String(err)}`);
  }
  const holds = fromNodes
    ? // The same walk as receivedProofHolds over the batch's nodes (their hex, the root and position checked).
      verifyProofFromNodes(
        hash,
        evidence.root,
        evidence.leafIndex,
        evidence.leafCount,
        fromNodes.siblings,
        run.proven,
      )
    : receivedProofHolds(hash, evidence, run.proven);
  if (!holds) return fail('the record does not prove into the given root');
  return { fullUrl, lastUpdated: version.lastUpdated, evidence, proofText: fromNodes?.partsText };
}

/** The rest of a proven record's check: its root on this peer's ledger, read once per answer. */
async function anchorVerdict(
  proven: ProvenRecord,
  run: VerifierRun,
  batches: BatchSource,
): Promise<EntryVerdict> {
  const { fullUrl, lastUpdated, evidence, proofText } = proven;
  let onChain = run.roots.get(evidence.root);
  if (onChain === undefined) {
    try {
      onChain = await batches.readBatch(evidence.root);
    } catch {
      // The ledger could not be read: nothing proven, nothing disproven (the next record asks again).
      return pendingVerdict(proven, run, 'this peer’s ledger could not be read');
    }
    run.roots.set(evidence.root, onChain);
  }
  const result = receivedAnchorVerdict(onChain, evidence, { custodianMsp: run.custodian.mspId });
  if (result.status === 'failed')
    return { record: { fullUrl, status: 'failed', reason: result.reason ?? 'failed' } };
  if (result.status === 'pending')
    return pendingVerdict(proven, run, 'the root is not yet on this peer’s ledger');
  const record: RecordVerdict = { fullUrl, status: 'verified' };
  if (result.anchoredBy !== undefined) record.anchoredBy = result.anchoredBy;
  if (result.anchoredAt !== undefined) record.anchoredAt = result.anchoredAt;
  return {
    record,
    provenance: evidenceProvenanceText(
      { fullUrl, lastUpdated },
      run.custodian,
      evidence,
      { status: 'verified', anchoredBy: result.anchoredBy, anchoredAt: result.anchoredAt },
      proofText ?? true,
    ),
  };
}

/** A proven record whose root this peer cannot confirm yet: kept, marked pending. */
function pendingVerdict(proven: ProvenRecord, run: VerifierRun, reason: string): EntryVerdict {
  const { fullUrl, lastUpdated, evidence, proofText } = proven;
  return {
    record: { fullUrl, status: 'pending', reason },
    provenance: evidenceProvenanceText(
      { fullUrl, lastUpdated },
      run.custodian,
      evidence,
      { status: 'pending', reason },
      proofText ?? true,
    ),
  };
}

/**
 * The receiver's searchset Bundle from one or more custodians' verified answers: kept records with their
 * Provenance, then one OperationOutcome entry (search.mode = outcome) with every issue (failed records, unusable
 * answers, and `extraIssues` such as custodians that did not answer), when there is any.
 */
export function receivedBundleText(
  answers: readonly VerifiedAnswer[],
  extraIssues: readonly OperationOutcomeIssue[] = [],
): string {
  const entries: string[] = [];
  const issues: OperationOutcomeIssue[] = [];
  let total = 0;
  for (const answer of answers) {
    for (const entry of answer.entries) entries.push(entry);
    for (const issue of answer.issues) issues.push(issue);
    total += answer.kept;
  }
  for (const issue of extraIssues) issues.push(issue);
  if (issues.length > 0) {
    entries.push(
      `{"resource":${JSON.stringify({ resourceType: 'OperationOutcome', issue: issues })},"search":{"mode":"outcome"}}`,
    );
  }
  return searchsetText(total, entries);
}
