/**
 * How the SQLite store keeps a version's JSON (docs/store.md "Resource JSON", schema migration 7): deflated (raw
 * deflate, RFC 1951, with a preset dictionary of FHIR resource shapes) as a BLOB whose first byte names the format;
 * the text itself (TEXT) when deflating would not make it smaller. Reading gives back the exact text stored: the
 * UTF-8 bytes are deflated, so inflating them yields the same string, byte for byte.
 *
 * Cost (docs/store.md): ~28 µs of CPU per write and ~4 µs per read of a 1.5 KB resource, against 1.5 KB →
 * ~0.4 KB on disk.
 */
import {
  constants,
  createDeflateRaw,
  createInflateRaw,
  deflateRawSync,
  inflateRawSync,
  type DeflateRaw,
  type InflateRaw,
} from 'node:zlib';
import { JSON_DICTIONARY_1 } from './json-dictionary.js';

/** Format byte 1: raw deflate with the preset dictionary JSON_DICTIONARY_1 (any level: inflating is the same). */
const DEFLATE_DICTIONARY_1 = 1;
const DICTIONARY_1 = Buffer.from(JSON_DICTIONARY_1.join(''), 'utf8');

/**
 * What new bodies are deflated with (docs/store.md "Resource JSON", bench/json-codec.ts). Level 1 and the last
 * 4 KiB of the dictionary (the most frequent shapes are last): zlib hashes the whole preset dictionary into its
 * match tables before every body, which cost more than deflating the body itself. The bodies are still format 1:
 * a back-reference into the dictionary's last 4 KiB points at the same bytes when the inflater has loaded all of
 * it (raw deflate has no dictionary id), so reading is unchanged. With the reused context (ReusedDeflater), against
 * deflateRawSync at level 6 with the whole dictionary (bodies written before): ~28 µs instead of ~52 µs of CPU per
 * 1.5 KB Synthea resource, ~390 B instead of ~340 B.
 */
const DEFLATE_LEVEL = 1;
const DEFLATE_DICTIONARY = DICTIONARY_1.subarray(DICTIONARY_1.length - 4 * 1024);
const DEFLATE_OPTIONS = { level: DEFLATE_LEVEL, dictionary: DEFLATE_DICTIONARY };
/** The largest body (UTF-8 bytes) the reused deflate context takes: Synthea resources are 1.5 KB on average. */
const REUSE_MAX_BYTES = 24 * 1024;
/** Zeros a body's wipe deflates past its length: more than zlib reads ahead of its input (258 bytes). */
const WIPE_MARGIN = 512;
const WIPE = Buffer.alloc(REUSE_MAX_BYTES + WIPE_MARGIN);

/** The stored form of a resource's JSON text: a BLOB (format byte, deflated bytes) or the text when that is smaller. */
export function encodeJson(json: string): string | Buffer {
  const stored = deflater.encode(json);
  if (stored !== undefined) return stored;
  const text = Buffer.from(json, 'utf8');
  const deflated = deflateRawSync(text, DEFLATE_OPTIONS);
  if (deflated.length + 1 >= text.length) return json;
  const body = Buffer.allocUnsafe(deflated.length + 1);
  body[0] = DEFLATE_DICTIONARY_1;
  deflated.copy(body, 1);
  return body;
}

/**
 * One zlib context kept for the process, driven through the stream's native handle (`_handle.writeSync`, the call
 * `deflateRawSync`/`inflateRawSync` make themselves, with `_writeState` holding what it left of input and output):
 * Node has no public synchronous way to reuse a context. The subclass names its stream and how its first use is
 * checked against the synchronous API (`probe`); a Node whose internals differ, or that fails the probe, leaves
 * `usable` false and every body takes the synchronous API, whose answer is the reference.
 */
abstract class ReusedZlibContext<S extends DeflateRaw | InflateRaw> {
  protected stream: S | undefined;
  protected handle: NativeZlib | undefined;
  protected state: Uint32Array | undefined;
  /** false once the handle's shape or the probe failed: every body then takes the synchronous API. */
  protected usable: boolean | undefined;

  protected abstract createStream(): S;
  /** First use: whether this context gives the synchronous API's answer (`usable` is true meanwhile). */
  protected abstract probe(): boolean;

  protected open(): boolean {
    const stream = this.createStream();
    // An error (a corrupt body, say) makes the stream emit 'error'; the synchronous API answers that body instead.
    stream.on('error', () => undefined);
    const internals = stream as unknown as { _handle?: unknown; _writeState?: unknown };
    const handle = internals._handle as NativeZlib | undefined;
    const state = internals._writeState;
    if (
      !handle ||
      typeof handle.writeSync !== 'function' ||
      typeof handle.reset !== 'function' ||
      !(state instanceof Uint32Array) ||
      state.length < 2
    ) {
      this.usable = false;
      stream.destroy();
      return false;
    }
    this.stream = stream;
    this.handle = handle;
    this.state = state;
    if (this.usable === undefined) {
      this.usable = true;
      if (!this.probe()) {
        this.usable = false;
        this.close();
        return false;
      }
    }
    return true;
  }

  /**
   * One whole pass (Z_FINISH) of `input[0, size)` into `output` from `offset`, then a reset: the output bytes left,
   * or undefined (context closed) on failure.
   */
  protected finish(input: Uint8Array, size: number, output: Buffer, offset: number): number | undefined {
    try {
      this.handle!.writeSync(constants.Z_FINISH, input, 0, size, output, offset, output.length - offset);
    } catch {
      this.close();
      return undefined;
    }
    // state: [output bytes left, input bytes left]. An error destroys the stream; no output room left means the
    // pass may not have finished.
    const state = this.state!;
    if (this.stream!.destroyed || state[1] !== 0 || state[0] === 0) {
      this.close();
      return undefined;
    }
    this.handle!.reset();
    return state[0];
  }

  protected close(): void {
    this.stream?.destroy();
    this.stream = undefined;
    this.handle = undefined;
    this.state = undefined;
  }

  /** Whether bodies take the reused context (false on a Node whose zlib internals differ). For tests. */
  reused(): boolean {
    if (this.usable === undefined) this.open();
    return this.usable === true;
  }
}

/**
 * Deflates bodies with one zlib context kept for the process (reset between bodies, ReusedZlibContext),
 * as ReusedInflater inflates them: deflateRawSync builds a stream, a native context (~300 KB of
 * match tables) and an output chunk per call. The text is written as UTF-8 into one scratch buffer and deflated
 * into another after the format byte; the answer is a copy of its own.
 *
 * The bytes stay a function of the text alone (`hie_encode_json` is declared deterministic), equal to a fresh
 * context's (deflateRawSync's): Node 20's zlib (Chromium's) hashes four bytes at a time and compares matches in
 * words, so near a body's end it reads window bytes past it, zeros in a fresh context (its window is zeroed when
 * made) and the previous bodies' bytes in a reused one, and a body could deflate to other (valid) bytes depending
 * on what was written before (issue 17, tried in session 8). So after each body the context deflates as many zero
 * bytes and a margin, which overwrites that part of the window with zeros again, and is reset once more. Bodies up
 * to REUSE_MAX_BYTES only: the window (64 KiB) then never slides, so nothing but the wiped part is ever written.
 * Checked when first used (a known text must deflate to deflateRawSync's bytes); a larger text, an error or other
 * Node internals go through deflateRawSync (encodeJson), whose answer is the reference.
 */
class ReusedDeflater extends ReusedZlibContext<DeflateRaw> {
  /** UTF-8 of one text: 3 bytes per UTF-16 code unit at most. */
  private readonly text = Buffer.allocUnsafe(3 * REUSE_MAX_BYTES);
  /** Format byte and deflated bytes of one text: room for deflate's worst case (stored blocks) and more. */
  private readonly out = Buffer.allocUnsafe(REUSE_MAX_BYTES + 1024);
  /** Where the wiping deflate writes (a few hundred bytes of matches of zeros). */
  private readonly wipeOut = Buffer.allocUnsafe(4 * 1024);

  /** encodeJson's answer, or undefined when deflateRawSync must give it. */
  encode(json: string): string | Buffer | undefined {
    if (this.usable === false || json.length > REUSE_MAX_BYTES) return undefined;
    if (!this.handle && !this.open()) return undefined;
    const size = this.text.write(json, 0, 'utf8');
    if (size > REUSE_MAX_BYTES) return undefined;
    const length = this.deflate(this.text, size);
    if (length === undefined) return undefined;
    if (length + 1 >= size) return json;
    const stored = Buffer.allocUnsafe(length + 1);
    this.out.copy(stored, 0, 0, length + 1);
    return stored;
  }

  /** Deflates `input[0, size)` to `out` after the format byte; the deflated length, or undefined on failure. */
  private deflate(input: Buffer, size: number): number | undefined {
    const out = this.out;
    out[0] = DEFLATE_DICTIONARY_1;
    const left = this.finish(input, size, out, 1);
    if (left === undefined) return undefined;
    // The window's part this body used back to zeros (see above), then the context as a fresh one.
    if (this.finish(WIPE, size + WIPE_MARGIN, this.wipeOut, 0) === undefined) return undefined;
    return out.length - 1 - left;
  }

  protected createStream(): DeflateRaw {
    return createDeflateRaw(DEFLATE_OPTIONS);
  }

  /** Twice the same text (the second after a reset) must give deflateRawSync's bytes. */
  protected probe(): boolean {
    const probe = Buffer.from(PROBE_TEXT, 'utf8');
    const expected = deflateRawSync(probe, DEFLATE_OPTIONS);
    for (let round = 0; round < 2; round++) {
      const length = this.deflate(probe, probe.length);
      if (length === undefined || !this.out.subarray(1, 1 + length).equals(expected)) return false;
    }
    return true;
  }
}

/**
 * Inflates format-1 bodies with one zlib context kept for the process instead of one per call.
 *
 * Node's synchronous API (`inflateRawSync`) builds a stream object, a native zlib context and a 16 KiB output chunk
 * for every call, then sets the 16 KiB dictionary: most of the ~10-15 µs a body costs (a 1.5 KB resource inflates in
 * ~2 µs), and $export and every read of a body pay it. Here one inflate context is created once and `reset()` between
 * bodies (Node's reset sets the dictionary again), with one output buffer: ~4.4 µs a body (docs/store.md), through
 * the native handle (ReusedZlibContext). It is checked when first used (a known body must inflate to its text) and
 * whatever does not fit (a body larger than the buffer, an error, a Node whose internals differ) goes through
 * `inflateRawSync`, whose answer or error is the reference.
 */
class ReusedInflater extends ReusedZlibContext<InflateRaw> {
  /** Output of one body; a larger body takes inflateRawSync. */
  private readonly out = Buffer.allocUnsafe(256 * 1024);

  /** The inflated bytes of a format-1 body (`deflated` without the format byte), as a view of the shared buffer
   *  (valid until the next call) or undefined when inflateRawSync must answer. */
  private inflateShared(deflated: Uint8Array): { buffer: Buffer; length: number } | undefined {
    if (this.usable === false) return undefined;
    if (!this.handle && !this.open()) return undefined;
    // An error or a body that did not fit: the reference path decides.
    const left = this.finish(deflated, deflated.length, this.out, 0);
    return left === undefined ? undefined : { buffer: this.out, length: this.out.length - left };
  }

  protected createStream(): InflateRaw {
    return createInflateRaw({ dictionary: DICTIONARY_1 });
  }

  /** A known body must come back as its text. */
  protected probe(): boolean {
    const probe = deflateRawSync(Buffer.from(PROBE_TEXT, 'utf8'), { dictionary: DICTIONARY_1 });
    const inflated = this.inflateShared(probe);
    return inflated !== undefined && inflated.buffer.toString('utf8', 0, inflated.length) === PROBE_TEXT;
  }

  text(deflated: Uint8Array): string {
    const inflated = this.inflateShared(deflated);
    if (inflated) return inflated.buffer.toString('utf8', 0, inflated.length);
    return inflateRawSync(deflated, { dictionary: DICTIONARY_1 }).toString('utf8');
  }

  bytes(deflated: Uint8Array): Buffer {
    const inflated = this.inflateShared(deflated);
    if (!inflated) return inflateRawSync(deflated, { dictionary: DICTIONARY_1 });
    // A copy of its own (small ones from Node's shared pool): the shared buffer is reused by the next body.
    const copy = Buffer.allocUnsafe(inflated.length);
    inflated.buffer.copy(copy, 0, 0, inflated.length);
    return copy;
  }
}

/** The part of Node's native zlib handle the inflater and deflater drive (lib/zlib.js processChunkSync makes the
 *  same calls). */
interface NativeZlib {
  writeSync(
    flush: number,
    input: Uint8Array,
    inputOffset: number,
    inputLength: number,
    output: Uint8Array,
    outputOffset: number,
    outputLength: number,
  ): void;
  reset(): void;
}

const PROBE_TEXT = '{"resourceType":"Patient","id":"probe","meta":{"versionId":"1"},"active":true}';

/** One per process: better-sqlite3 reads and writes run on the main thread, one at a time. */
const inflater = new ReusedInflater();
const deflater = new ReusedDeflater();

/** Whether this Node deflates through the reused context (see ReusedDeflater). */
export function deflaterReused(): boolean {
  return deflater.reused();
}

/** Whether this Node inflates through the reused context (see ReusedInflater). */
export function inflaterReused(): boolean {
  return inflater.reused();
}

/** The JSON text of a stored value (encodeJson's output, or text stored before migration 7). */
export function decodeJson(stored: string | Uint8Array): string {
  if (typeof stored === 'string') return stored;
  if (stored[0] !== DEFLATE_DICTIONARY_1) {
    throw new Error(`Stored resource JSON in an unknown format (${stored[0]})`);
  }
  return inflater.text(stored.subarray(1));
}

/** decodeJson's text as UTF-8 bytes, without a string in between (the export copies these bytes to its files). */
export function decodeJsonBytes(stored: string | Uint8Array): Buffer {
  if (typeof stored === 'string') return Buffer.from(stored, 'utf8');
  if (stored[0] !== DEFLATE_DICTIONARY_1) {
    throw new Error(`Stored resource JSON in an unknown format (${stored[0]})`);
  }
  return inflater.bytes(stored.subarray(1));
}

/** The SQL side of a connection to a store file (better-sqlite3's `db.function`). */
interface SqlFunctions {
  function(name: string, options: { deterministic: boolean }, fn: (value: unknown) => unknown): unknown;
}

/**
 * Registers `hie_encode_json` (migration 7 deflates the stored JSON with it) and `hie_decode_json` (the text back,
 * for SQL run by hand on a store file: `SELECT hie_decode_json(json) FROM resource_version ...`) on a connection.
 */
export function registerJsonFunctions(db: SqlFunctions): void {
  db.function('hie_encode_json', { deterministic: true }, (json) =>
    typeof json === 'string' ? encodeJson(json) : json,
  );
  db.function('hie_decode_json', { deterministic: true }, (json) =>
    typeof json === 'string' || json instanceof Uint8Array ? decodeJson(json) : json,
  );
}
