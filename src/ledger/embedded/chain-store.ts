/**
 * The embedded chain's durable storage (its own SQLite file): blocks and their transactions (with validation
 * codes), the world state with versions, and the key history. Keys are stored as UTF-8 BLOBs so SQLite orders
 * them bytewise, like Fabric's LevelDB state database.
 */
import { createHash } from 'node:crypto';
import type Database from 'better-sqlite3';
import type { BlockHeader, StoredTransaction, TxTimestamp, ValidationCode, Version } from './types.js';
import { openDurableSqlite } from '../../platform/durable-sqlite.js';

export interface StateEntry {
  value: Buffer;
  version: Version;
}

export interface StateRow extends StateEntry {
  key: string;
}

export interface HistoryRow {
  txId: string;
  timestamp: TxTimestamp;
  isDelete: boolean;
  value: Buffer;
}

export interface StoredEventRow {
  blockNumber: number;
  index: number;
  txId: string;
  envelope: Buffer;
}

/** A state update of one valid transaction, applied at commit. */
export interface AppliedWrite {
  key: string;
  isDelete: boolean;
  value: Buffer;
  version: Version;
  txId: string;
  timestamp: TxTimestamp;
}

export interface BlockToStore {
  header: BlockHeader;
  transactions: StoredTransaction[];
  hasEvent: boolean[];
  writes: AppliedWrite[];
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS blocks (
  number INTEGER PRIMARY KEY,
  previous_hash BLOB NOT NULL,
  data_hash BLOB NOT NULL,
  hash BLOB NOT NULL,
  tx_count INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS transactions (
  block INTEGER NOT NULL,
  idx INTEGER NOT NULL,
  tx_id TEXT NOT NULL,
  validation_code TEXT NOT NULL,
  has_event INTEGER NOT NULL,
  envelope BLOB NOT NULL,
  PRIMARY KEY (block, idx)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS transactions_by_tx_id ON transactions (tx_id);
CREATE TABLE IF NOT EXISTS state (
  key BLOB PRIMARY KEY,
  value BLOB NOT NULL,
  block INTEGER NOT NULL,
  tx INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS history (
  key BLOB NOT NULL,
  block INTEGER NOT NULL,
  tx INTEGER NOT NULL,
  tx_id TEXT NOT NULL,
  ts_seconds INTEGER NOT NULL,
  ts_nanos INTEGER NOT NULL,
  is_delete INTEGER NOT NULL,
  value BLOB NOT NULL,
  PRIMARY KEY (key, block, tx)
) WITHOUT ROWID;
`;

export const ZERO_HASH = Buffer.alloc(32);

/** SHA-256 over each transaction's id, envelope and validation code, length-prefixed, in block order. */
export function computeDataHash(
  transactions: readonly Pick<StoredTransaction, 'txId' | 'envelope' | 'validationCode'>[],
) {
  const hash = createHash('sha256');
  for (const transaction of transactions) {
    for (const part of [
      Buffer.from(transaction.txId, 'utf8'),
      transaction.envelope,
      Buffer.from(transaction.validationCode),
    ]) {
      const length = Buffer.allocUnsafe(4);
      length.writeUInt32BE(part.length);
      hash.update(length);
      hash.update(part);
    }
  }
  return hash.digest();
}

/** The block hash, as Fabric hashes a block header: number, previous hash, data hash. */
export function computeBlockHash(number: number, previousHash: Buffer, dataHash: Buffer): Buffer {
  const numberBytes = Buffer.alloc(8);
  numberBytes.writeBigUInt64BE(BigInt(number));
  return createHash('sha256').update(numberBytes).update(previousHash).update(dataHash).digest();
}

const keyBytes = (key: string): Buffer => Buffer.from(key, 'utf8');

export class ChainStore {
  readonly db: Database.Database;
  private readonly statements;

  constructor(file: string) {
    // WAL + FULL: a committed block survives power loss too. The anchor journal (FULL) and the consent checkpoint
    // name committed transactions, and the start-up check refuses a chain that lacks them (docs/ledger.md), so a
    // block the OS had not yet written must not vanish. One fsync per block; blocks carry whole batches.
    this.db = openDurableSqlite(file);
    // Unlike the other durable files, no wait for another connection's write: one process writes a chain file
    // (docs/ledger.md), and better-sqlite3 would block the service's event loop for the whole wait; a second
    // writer fails at once instead.
    this.db.pragma('busy_timeout = 0');
    this.db.exec(SCHEMA);
    const db = this.db;
    this.statements = {
      getMeta: db.prepare<[string], { value: string }>('SELECT value FROM meta WHERE name = ?'),
      setMeta: db.prepare<[string, string]>(
        'INSERT INTO meta (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value',
      ),
      getState: db.prepare<[Buffer], { value: Buffer; block: number; tx: number }>(
        'SELECT value, block, tx FROM state WHERE key = ?',
      ),
      rangeBounded: db.prepare<
        [Buffer, Buffer, number],
        { key: Buffer; value: Buffer; block: number; tx: number }
      >('SELECT key, value, block, tx FROM state WHERE key >= ? AND key < ? ORDER BY key LIMIT ?'),
      rangeOpen: db.prepare<[Buffer, number], { key: Buffer; value: Buffer; block: number; tx: number }>(
        'SELECT key, value, block, tx FROM state WHERE key >= ? ORDER BY key LIMIT ?',
      ),
      rangeBoundedAfter: db.prepare<
        [Buffer, Buffer, number],
        { key: Buffer; value: Buffer; block: number; tx: number }
      >('SELECT key, value, block, tx FROM state WHERE key > ? AND key < ? ORDER BY key LIMIT ?'),
      rangeOpenAfter: db.prepare<[Buffer, number], { key: Buffer; value: Buffer; block: number; tx: number }>(
        'SELECT key, value, block, tx FROM state WHERE key > ? ORDER BY key LIMIT ?',
      ),
      putState: db.prepare<[Buffer, Buffer, number, number]>(
        'INSERT INTO state (key, value, block, tx) VALUES (?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value, block = excluded.block, tx = excluded.tx',
      ),
      deleteState: db.prepare<[Buffer]>('DELETE FROM state WHERE key = ?'),
      putHistory: db.prepare<[Buffer, number, number, string, number, number, number, Buffer]>(
        'INSERT INTO history (key, block, tx, tx_id, ts_seconds, ts_nanos, is_delete, value) VALUES (?, ?, ?, ?, ?, ?, ?, ?)',
      ),
      history: db.prepare<
        [Buffer],
        { tx_id: string; ts_seconds: number; ts_nanos: number; is_delete: number; value: Buffer }
      >(
        'SELECT tx_id, ts_seconds, ts_nanos, is_delete, value FROM history WHERE key = ? ORDER BY block DESC, tx DESC',
      ),
      putBlock: db.prepare<[number, Buffer, Buffer, Buffer, number]>(
        'INSERT INTO blocks (number, previous_hash, data_hash, hash, tx_count) VALUES (?, ?, ?, ?, ?)',
      ),
      putTransaction: db.prepare<[number, number, string, string, number, Buffer]>(
        'INSERT INTO transactions (block, idx, tx_id, validation_code, has_event, envelope) VALUES (?, ?, ?, ?, ?, ?)',
      ),
      lastBlock: db.prepare<[], { number: number; hash: Buffer }>(
        'SELECT number, hash FROM blocks ORDER BY number DESC LIMIT 1',
      ),
      findTransaction: db.prepare<[string], { block: number; idx: number; validation_code: string }>(
        'SELECT block, idx, validation_code FROM transactions WHERE tx_id = ? ORDER BY block, idx',
      ),
      hasTransaction: db.prepare<[string], { one: number }>(
        'SELECT 1 AS one FROM transactions WHERE tx_id = ? LIMIT 1',
      ),
      events: db.prepare<
        [number, number, number],
        { block: number; idx: number; tx_id: string; envelope: Buffer }
      >(
        "SELECT block, idx, tx_id, envelope FROM transactions WHERE block >= ? AND block < ? AND has_event = 1 AND validation_code = 'VALID' ORDER BY block, idx LIMIT ?",
      ),
      eventsAfter: db.prepare<
        [number, number, number, number, number],
        { block: number; idx: number; tx_id: string; envelope: Buffer }
      >(
        "SELECT block, idx, tx_id, envelope FROM transactions WHERE (block > ? OR (block = ? AND idx > ?)) AND block < ? AND has_event = 1 AND validation_code = 'VALID' ORDER BY block, idx LIMIT ?",
      ),
      block: db.prepare<
        [number],
        { number: number; previous_hash: Buffer; data_hash: Buffer; hash: Buffer; tx_count: number }
      >('SELECT number, previous_hash, data_hash, hash, tx_count FROM blocks WHERE number = ?'),
      blockTransactions: db.prepare<
        [number],
        { idx: number; tx_id: string; validation_code: string; envelope: Buffer }
      >('SELECT idx, tx_id, validation_code, envelope FROM transactions WHERE block = ? ORDER BY idx'),
      chainScan: db.prepare<
        [],
        {
          number: number;
          previous_hash: Buffer;
          data_hash: Buffer;
          hash: Buffer;
          tx_count: number;
          idx: number | null;
          tx_id: string | null;
          validation_code: string | null;
          envelope: Buffer | null;
        }
      >(
        `SELECT b.number, b.previous_hash, b.data_hash, b.hash, b.tx_count, t.idx, t.tx_id, t.validation_code, t.envelope
         FROM blocks b LEFT JOIN transactions t ON t.block = b.number ORDER BY b.number, t.idx`,
      ),
      maxStateBlock: db.prepare<[], { max: number | null }>('SELECT MAX(block) AS max FROM state'),
      validEnvelopes: db.prepare<[], { block: number; idx: number; envelope: Buffer }>(
        "SELECT block, idx, envelope FROM transactions WHERE validation_code = 'VALID' ORDER BY block, idx",
      ),
      allState: db.prepare<[], { key: Buffer; value: Buffer; block: number; tx: number }>(
        'SELECT key, value, block, tx FROM state',
      ),
    };
  }

  getMeta(name: string): string | undefined {
    return this.statements.getMeta.get(name)?.value;
  }

  setMeta(name: string, value: string): void {
    this.statements.setMeta.run(name, value);
  }

  getState(key: string): StateEntry | undefined {
    const row = this.statements.getState.get(keyBytes(key));
    return row ? { value: row.value, version: { blockNum: row.block, txNum: row.tx } } : undefined;
  }

  /**
   * Up to `limit` committed entries with startKey <= key < endKey (endKey '' = unbounded), in byte order;
   * `afterKey` continues a previous page exclusively.
   */
  range(startKey: string, endKey: string, limit: number, afterKey?: string): StateRow[] {
    const s = this.statements;
    const rows =
      afterKey === undefined
        ? endKey === ''
          ? s.rangeOpen.all(keyBytes(startKey), limit)
          : s.rangeBounded.all(keyBytes(startKey), keyBytes(endKey), limit)
        : endKey === ''
          ? s.rangeOpenAfter.all(keyBytes(afterKey), limit)
          : s.rangeBoundedAfter.all(keyBytes(afterKey), keyBytes(endKey), limit);
    return rows.map((row) => ({
      key: row.key.toString('utf8'),
      value: row.value,
      version: { blockNum: row.block, txNum: row.tx },
    }));
  }

  /** Committed modifications of a key, newest first (Fabric 2 order). */
  history(key: string): HistoryRow[] {
    return this.statements.history.all(keyBytes(key)).map((row) => ({
      txId: row.tx_id,
      timestamp: { seconds: row.ts_seconds, nanos: row.ts_nanos },
      isDelete: row.is_delete === 1,
      value: row.value,
    }));
  }

  hasTransaction(txId: string): boolean {
    return this.statements.hasTransaction.get(txId) !== undefined;
  }

  lastBlock(): { number: number; hash: Buffer } | undefined {
    return this.statements.lastBlock.get();
  }

  /** Where a transaction id was committed: its valid occurrence if any, else the first (invalid) one. */
  findTransaction(
    txId: string,
  ): { blockNumber: number; index: number; validationCode: ValidationCode } | undefined {
    const rows = this.statements.findTransaction.all(txId);
    const row = rows.find((candidate) => candidate.validation_code === 'VALID') ?? rows[0];
    return row
      ? { blockNumber: row.block, index: row.idx, validationCode: row.validation_code as ValidationCode }
      : undefined;
  }

  /** Valid transactions carrying a chaincode event, from (fromBlock, afterIndex) exclusive, below toBlock. */
  eventTransactions(
    fromBlock: number,
    toBlock: number,
    limit: number,
    after?: { block: number; index: number },
  ): StoredEventRow[] {
    const rows =
      after === undefined
        ? this.statements.events.all(fromBlock, toBlock, limit)
        : this.statements.eventsAfter.all(after.block, after.block, after.index, toBlock, limit);
    return rows.map((row) => ({
      blockNumber: row.block,
      index: row.idx,
      txId: row.tx_id,
      envelope: row.envelope,
    }));
  }

  block(number: number): { header: BlockHeader; transactions: StoredTransaction[] } | undefined {
    const row = this.statements.block.get(number);
    if (!row) return undefined;
    return {
      header: {
        number: row.number,
        previousHash: row.previous_hash,
        dataHash: row.data_hash,
        hash: row.hash,
      },
      transactions: this.statements.blockTransactions.all(number).map((tx) => ({
        blockNumber: number,
        index: tx.idx,
        txId: tx.tx_id,
        validationCode: tx.validation_code as ValidationCode,
        envelope: tx.envelope,
      })),
    };
  }

  /** Every block joined with its transactions, in order (for the integrity check at open). */
  scanChain() {
    return this.statements.chainScan.iterate();
  }

  /** Envelopes of every valid transaction, in commit order (to replay the world state). */
  validEnvelopes() {
    return this.statements.validEnvelopes.iterate();
  }

  /** Every world-state row, unordered. */
  allState() {
    return this.statements.allState.iterate();
  }

  maxStateBlock(): number | null {
    return this.statements.maxStateBlock.get()?.max ?? null;
  }

  /** Writes one block, its transactions, the state updates and history of its valid transactions atomically. */
  readonly storeBlock = (block: BlockToStore): void => {
    this.db.transaction(() => {
      const s = this.statements;
      const { header } = block;
      s.putBlock.run(
        header.number,
        header.previousHash,
        header.dataHash,
        header.hash,
        block.transactions.length,
      );
      block.transactions.forEach((tx, index) => {
        s.putTransaction.run(
          header.number,
          tx.index,
          tx.txId,
          tx.validationCode,
          block.hasEvent[index] ? 1 : 0,
          tx.envelope,
        );
      });
      for (const write of block.writes) {
        const key = keyBytes(write.key);
        if (write.isDelete) s.deleteState.run(key);
        else s.putState.run(key, write.value, write.version.blockNum, write.version.txNum);
        s.putHistory.run(
          key,
          write.version.blockNum,
          write.version.txNum,
          write.txId,
          write.timestamp.seconds,
          write.timestamp.nanos,
          write.isDelete ? 1 : 0,
          write.isDelete ? Buffer.alloc(0) : write.value,
        );
      }
      s.setMeta.run('height', String(header.number + 1));
      s.setMeta.run('last_hash', header.hash.toString('hex'));
    })();
  };

  close(): void {
    this.db.close();
  }
}
