/**
 * Helpers shared by the hie-ledger contracts (anchor, consent). Everything here is deterministic: the same
 * proposal gives the same bytes on every endorsing peer (no wall clock, no randomness, sorted JSON keys).
 */
import { Context } from 'fabric-contract-api';

/** The certificate attribute (Fabric CA format) that marks an organisation's service identity. */
export const ROLE_ATTRIBUTE = 'hie.role';
export const SERVICE_ROLE = 'service';

/** JSON with object keys sorted at every level and no whitespace; `undefined` members are dropped like JSON.stringify. */
export function stableStringify(value: unknown): string {
  if (value === null || typeof value !== 'object') {
    if (typeof value === 'number' && !Number.isFinite(value)) {
      throw new Error('stableStringify: non-finite number');
    }
    const text = JSON.stringify(value);
    if (text === undefined) throw new Error(`stableStringify: unsupported value of type ${typeof value}`);
    return text;
  }
  if (Array.isArray(value)) {
    return `[${value.map((item) => (item === undefined ? 'null' : stableStringify(item))).join(',')}]`;
  }
  const record = value as Record<string, unknown>;
  const members: string[] = [];
  for (const name of Object.keys(record).sort()) {
    const member = record[name];
    if (member === undefined) continue;
    members.push(`${JSON.stringify(name)}:${stableStringify(member)}`);
  }
  return `{${members.join(',')}}`;
}

/** Who submitted the transaction, as recorded on the ledger. */
export interface TxMeta {
  mspId: string;
  txId: string;
  /** The proposal's timestamp (set by the client, identical on every endorser), ISO 8601 UTC with milliseconds. */
  timestamp: string;
}

/** Refuses the transaction unless the creator's certificate carries hie.role=service. */
export function requireServiceCaller(ctx: Context): void {
  if (!ctx.clientIdentity.assertAttributeValue(ROLE_ATTRIBUTE, SERVICE_ROLE)) {
    const role = ctx.clientIdentity.getAttributeValue(ROLE_ATTRIBUTE);
    throw new Error(
      `access denied: this transaction requires a service identity (${ROLE_ATTRIBUTE}=${SERVICE_ROLE}); ` +
        `the caller of ${ctx.clientIdentity.getMSPID()} has ${role === null ? 'no role' : `${ROLE_ATTRIBUTE}=${role}`}`,
    );
  }
}

export function txMeta(ctx: Context): TxMeta {
  return {
    mspId: ctx.clientIdentity.getMSPID(),
    txId: ctx.stub.getTxID(),
    timestamp: txTimestampIso(ctx),
  };
}

/** The proposal timestamp as ISO 8601 (seconds is a Long on a real peer; accept a number too). */
export function txTimestampIso(ctx: Context): string {
  const { seconds, nanos } = ctx.stub.getTxTimestamp();
  const wholeSeconds = typeof seconds === 'number' ? seconds : Number(seconds.toString());
  return new Date(wholeSeconds * 1000 + Math.floor(nanos / 1_000_000)).toISOString();
}

const HEX_SHA256 = /^[0-9a-f]{64}$/;

/** Checks a lowercase hex SHA-256/HMAC-SHA-256 value (64 characters). */
export function requireHex256(name: string, value: unknown): string {
  if (typeof value !== 'string' || !HEX_SHA256.test(value)) {
    throw new Error(
      `invalid argument ${name}: expected 64 lowercase hex characters (SHA-256), got ${describe(value)}`,
    );
  }
  return value;
}

/** Checks a decimal integer string without sign or leading zeros, within [min, max]. */
export function requireCount(name: string, value: unknown, min: number, max: number): number {
  if (typeof value !== 'string' || !/^(0|[1-9][0-9]{0,15})$/.test(value)) {
    throw new Error(`invalid argument ${name}: expected a decimal integer, got ${describe(value)}`);
  }
  const count = Number(value);
  if (count < min || count > max) {
    throw new Error(`invalid argument ${name}: ${count} is outside [${min}, ${max}]`);
  }
  return count;
}

function describe(value: unknown): string {
  if (typeof value !== 'string') return typeof value;
  return value.length > 80
    ? `${JSON.stringify(value.slice(0, 80))}... (${value.length} characters)`
    : JSON.stringify(value);
}

export function toBytes(text: string): Buffer {
  return Buffer.from(text, 'utf8');
}

export function fromBytes(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8');
}
