/**
 * Integrity anchors: the salted hash of one stored resource version, or the Merkle root of a batch of them.
 * No health data and no resource ids reach the ledger: a version's key is an HMAC the custodian computes with its
 * own secret, and the values are salted hashes (docs/integrity.md). Records are write-once.
 *
 * Every record names its creator: `mspId` is the MSP of the submitting identity (ctx.clientIdentity, never an
 * argument), so a member receiving a record checks that its batch was anchored by the custodian's own MSP.
 */
import { Context, Contract, Info, Param, Returns, Transaction } from 'fabric-contract-api';
import {
  fromBytes,
  requireCount,
  requireHex256,
  requireServiceCaller,
  stableStringify,
  toBytes,
  txMeta,
  type TxMeta,
} from './common';

/** Composite-key object types (partial-key queries by type stay possible). */
export const ANCHOR_OBJECT = 'anchor';
export const BATCH_OBJECT = 'batch';
/** Largest batch a single AnchorBatch transaction may declare. */
export const MAX_BATCH_LEAVES = 1_000_000;
/** Hex digits per leaf tag (the first 64 bits of each salted leaf hash; docs/integrity.md). */
export const LEAF_TAG_HEX = 16;
/** Largest batch AnchorBatchTagged accepts: its tag list stays under 1 MiB of transaction argument. */
export const MAX_TAGGED_BATCH_LEAVES = 65_536;

export interface AnchorRecord extends TxMeta {
  docType: 'anchor';
  key: string;
  leafHash: string;
}

export interface BatchRecord extends TxMeta {
  docType: 'batch';
  root: string;
  leafCount: number;
  /**
   * AnchorBatchTagged only: the first 16 hex digits of each leaf hash, concatenated in leaf order. Lets the
   * custodian name the one altered leaf of a batch; salted hashes, no data.
   */
  leafTags?: string;
}

export interface KeyModificationRecord {
  txId: string;
  timestamp: string;
  isDelete: boolean;
  value: AnchorRecord | null;
}

@Info({
  title: 'AnchorContract',
  description: 'Write-once integrity anchors of resource versions and Merkle batches',
})
export class AnchorContract extends Contract {
  constructor() {
    super('anchor');
  }

  /** Anchors one resource version: key = HMAC of Type/id/_history/vid, leafHash = SHA-256(salt || canonical JSON). */
  @Transaction()
  @Param('key', 'string', 'HMAC-SHA-256 of the version reference, 64 lowercase hex')
  @Param('leafHash', 'string', 'salted SHA-256 of the canonical version, 64 lowercase hex')
  @Returns('string')
  public async AnchorVersion(ctx: Context, key: string, leafHash: string): Promise<string> {
    requireServiceCaller(ctx);
    requireHex256('key', key);
    requireHex256('leafHash', leafHash);
    const stateKey = ctx.stub.createCompositeKey(ANCHOR_OBJECT, [key]);
    if ((await ctx.stub.getState(stateKey)).length > 0) {
      throw new Error(`anchor ${key} already exists; anchors are write-once`);
    }
    const record: AnchorRecord = { docType: 'anchor', key, leafHash, ...txMeta(ctx) };
    const json = stableStringify(record);
    await ctx.stub.putState(stateKey, toBytes(json));
    ctx.stub.setEvent('AnchorVersion', toBytes(json));
    return json;
  }

  /** Anchors a batch by its Merkle root (leaf and node rule in docs/integrity.md) and its number of leaves. */
  @Transaction()
  @Param('root', 'string', 'Merkle root, 64 lowercase hex')
  @Param('leafCount', 'string', 'number of leaves, decimal')
  @Returns('string')
  public async AnchorBatch(ctx: Context, root: string, leafCount: string): Promise<string> {
    requireServiceCaller(ctx);
    requireHex256('root', root);
    const count = requireCount('leafCount', leafCount, 1, MAX_BATCH_LEAVES);
    return putBatch(ctx, { docType: 'batch', root, leafCount: count, ...txMeta(ctx) });
  }

  /**
   * Anchors a batch by its Merkle root, its number of leaves and the tag of every leaf (the first 16 hex digits of
   * its salted leaf hash, in leaf order): with the tags an audit names which leaf of a failing batch was altered.
   */
  @Transaction()
  @Param('root', 'string', 'Merkle root, 64 lowercase hex')
  @Param('leafCount', 'string', 'number of leaves, decimal')
  @Param('leafTags', 'string', 'leafCount x 16 lowercase hex digits: the leading 64 bits of each leaf hash')
  @Returns('string')
  public async AnchorBatchTagged(
    ctx: Context,
    root: string,
    leafCount: string,
    leafTags: string,
  ): Promise<string> {
    requireServiceCaller(ctx);
    requireHex256('root', root);
    const count = requireCount('leafCount', leafCount, 1, MAX_TAGGED_BATCH_LEAVES);
    if (
      typeof leafTags !== 'string' ||
      leafTags.length !== count * LEAF_TAG_HEX ||
      !/^[0-9a-f]*$/.test(leafTags)
    ) {
      throw new Error(
        `invalid argument leafTags: expected ${count * LEAF_TAG_HEX} lowercase hex digits (${LEAF_TAG_HEX} per leaf)`,
      );
    }
    return putBatch(ctx, { docType: 'batch', root, leafCount: count, leafTags, ...txMeta(ctx) });
  }

  /** The anchor record as JSON, or `null` when the key was never anchored. */
  @Transaction(false)
  @Param('key', 'string', 'HMAC-SHA-256 of the version reference, 64 lowercase hex')
  @Returns('string')
  public async ReadAnchor(ctx: Context, key: string): Promise<string> {
    requireHex256('key', key);
    return readRecord(ctx, ctx.stub.createCompositeKey(ANCHOR_OBJECT, [key]));
  }

  /** The batch record as JSON, or `null` when the root was never anchored. */
  @Transaction(false)
  @Param('root', 'string', 'Merkle root, 64 lowercase hex')
  @Returns('string')
  public async ReadBatch(ctx: Context, root: string): Promise<string> {
    requireHex256('root', root);
    return readRecord(ctx, ctx.stub.createCompositeKey(BATCH_OBJECT, [root]));
  }

  /** Every committed modification of an anchor key (getHistoryForKey: newest first, as in Fabric 2), as a JSON array. */
  @Transaction(false)
  @Param('key', 'string', 'HMAC-SHA-256 of the version reference, 64 lowercase hex')
  @Returns('string')
  public async KeyHistory(ctx: Context, key: string): Promise<string> {
    requireHex256('key', key);
    const modifications: KeyModificationRecord[] = [];
    const iterator = await ctx.stub.getHistoryForKey(ctx.stub.createCompositeKey(ANCHOR_OBJECT, [key]));
    try {
      for (let next = await iterator.next(); !next.done; next = await iterator.next()) {
        const modification = next.value;
        const seconds = modification.timestamp.seconds;
        const wholeSeconds = typeof seconds === 'number' ? seconds : Number(seconds.toString());
        modifications.push({
          txId: modification.txId,
          timestamp: new Date(
            wholeSeconds * 1000 + Math.floor(modification.timestamp.nanos / 1_000_000),
          ).toISOString(),
          isDelete: modification.isDelete,
          value:
            modification.isDelete || modification.value.length === 0
              ? null
              : JSON.parse(fromBytes(modification.value)),
        });
      }
    } finally {
      await iterator.close();
    }
    return stableStringify(modifications);
  }
}

async function readRecord(ctx: Context, stateKey: string): Promise<string> {
  const bytes = await ctx.stub.getState(stateKey);
  return bytes.length === 0 ? 'null' : fromBytes(bytes);
}

/**
 * Stores a batch record once (write-once by root) and emits the `AnchorBatch` event, which carries the batch
 * without its tags (listeners need the root; the tags stay in the state). Returns the stored record as JSON.
 */
async function putBatch(ctx: Context, record: BatchRecord): Promise<string> {
  const stateKey = ctx.stub.createCompositeKey(BATCH_OBJECT, [record.root]);
  if ((await ctx.stub.getState(stateKey)).length > 0) {
    throw new Error(`batch ${record.root} already exists; anchors are write-once`);
  }
  const json = stableStringify(record);
  await ctx.stub.putState(stateKey, toBytes(json));
  const { leafTags: _tags, ...event } = record;
  ctx.stub.setEvent('AnchorBatch', toBytes(stableStringify(event)));
  return json;
}
