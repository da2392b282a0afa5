/** The embedded chain's Fabric semantics: MVCC and phantom validation, determinism, durability, hash chain. */
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  ChainIntegrityError,
  EmbeddedChain,
  type ChaincodeProposal,
} from '../../src/ledger/embedded/index.js';
import { LedgerTransactionError, type LedgerEvent } from '../../src/ledger/ledger.js';
import { creatorOf, hex, makeOrg, openChain, tempDir, type TestOrg } from './helpers.js';

let cleanup: () => Promise<void>;
let dir: string;
let org1: TestOrg;
let chain: EmbeddedChain;
const extraChains: EmbeddedChain[] = [];

beforeEach(async () => {
  ({ dir, cleanup } = await tempDir());
  org1 = await makeOrg(dir, 'Org1MSP');
  chain = await openChain(dir, [org1]);
});

afterEach(async () => {
  await chain.close();
  for (const extra of extraChains.splice(0)) await extra.close();
  await cleanup();
});

function proposal(
  transaction: string,
  args: string[],
  extra: Partial<ChaincodeProposal> = {},
): ChaincodeProposal {
  return { transaction, args, creator: creatorOf(org1.service), ...extra };
}

/** One access record (ids, tag and sealed details are the writer's; their shape is what the chaincode checks). */
const accessRecord = (recordId: string) =>
  JSON.stringify([
    { recordId, patientTag: hex(recordId), sealed: Buffer.from(recordId).toString('base64url') },
  ]);

describe('MVCC read conflicts', () => {
  it('invalidates the second of two transactions that read the same key, in the same block', async () => {
    const key = hex('Patient/1/_history/1');
    const first = await chain.endorse(proposal('anchor:AnchorVersion', [key, hex('first')]));
    const second = await chain.endorse(proposal('anchor:AnchorVersion', [key, hex('second')]));
    // Both simulated against the same committed state: the key did not exist for either.
    expect(first.rwset.reads).toEqual([{ key: `\u0000anchor\u0000${key}\u0000`, version: null }]);
    expect(second.rwset.reads).toEqual(first.rwset.reads);
    const [firstStatus, secondStatus] = await Promise.all([chain.commit(first), chain.commit(second)]);
    expect(firstStatus).toEqual({ txId: first.txId, blockNumber: 1, validationCode: 'VALID' });
    expect(secondStatus).toEqual({ txId: second.txId, blockNumber: 1, validationCode: 'MVCC_READ_CONFLICT' });

    const ledger = chain.connect(org1.service);
    expect(JSON.parse(await ledger.evaluate('anchor:ReadAnchor', [key])).leafHash).toBe(hex('first'));
    // The invalid transaction stays in the block with its code; its writes and event are not applied.
    const block = chain.block(1)!;
    expect(block.transactions.map((tx) => [tx.txId, tx.validationCode])).toEqual([
      [first.txId, 'VALID'],
      [second.txId, 'MVCC_READ_CONFLICT'],
    ]);
    expect(chain.transactionStatus(second.txId)?.validationCode).toBe('MVCC_READ_CONFLICT');
    expect(JSON.parse(await ledger.evaluate('anchor:KeyHistory', [key]))).toHaveLength(1);
    const events: LedgerEvent[] = [];
    const stream = chain.events(0);
    const nextEvent = stream[Symbol.asyncIterator]().next();
    await ledger.submit('anchor:AnchorBatch', [hex('root'), '1']);
    events.push((await nextEvent).value as LedgerEvent);
    stream.close();
    expect(events.map((event) => event.transactionId)).toEqual([first.txId]);
  });

  it('invalidates a transaction whose read key changed in an earlier block', async () => {
    const key = hex('Patient/1/_history/2');
    const first = await chain.endorse(proposal('anchor:AnchorVersion', [key, hex('first')]));
    const second = await chain.endorse(proposal('anchor:AnchorVersion', [key, hex('second')]));
    expect((await chain.commit(first)).validationCode).toBe('VALID');
    expect(await chain.commit(second)).toEqual({
      txId: second.txId,
      blockNumber: 2,
      validationCode: 'MVCC_READ_CONFLICT',
    });
    expect(chain.height).toBe(3);
  });

  it('surfaces the conflict from Ledger.submit as a retryable LedgerTransactionError', async () => {
    const ledger = chain.connect(org1.service);
    const key = hex('Patient/1/_history/3');
    const results = await Promise.allSettled([
      ledger.submit('anchor:AnchorVersion', [key, hex('a')]),
      ledger.submit('anchor:AnchorVersion', [key, hex('b')]),
    ]);
    expect(results.map((result) => result.status).sort()).toEqual(['fulfilled', 'rejected']);
    const rejected = results.find((result) => result.status === 'rejected') as PromiseRejectedResult;
    expect(rejected.reason).toBeInstanceOf(LedgerTransactionError);
    expect(rejected.reason).toMatchObject({ code: 'MVCC_READ_CONFLICT', retryable: true });
    expect(rejected.reason.transactionId).toMatch(/^[0-9a-f]{64}$/);
  });
});

describe('phantom reads', () => {
  it('invalidates a transaction whose partial-key query would now return another key set', async () => {
    const ledger = chain.connect(org1.service);
    await ledger.submit('consent:RecordAccess', [accessRecord('record-0001')]);
    // A transaction that iterates the access records (a key range).
    const reader = await chain.endorse(proposal('consent:ListAccess', ['', '100']));
    expect(reader.response.status).toBe(200);
    expect(reader.rwset.rangeQueries).toHaveLength(1);
    expect(reader.rwset.rangeQueries[0]!.itrExhausted).toBe(true);
    expect(reader.rwset.rangeQueries[0]!.reads).toHaveLength(1);
    // Another transaction adds a key inside that range and commits first.
    await ledger.submit('consent:RecordAccess', [accessRecord('record-0002')]);
    expect(await chain.commit(reader)).toMatchObject({
      txId: reader.txId,
      validationCode: 'PHANTOM_READ_CONFLICT',
    });
  });

  it('keeps a range reader valid when writes land outside its range', async () => {
    const ledger = chain.connect(org1.service);
    await ledger.submit('consent:RecordAccess', [accessRecord('record-m001')]);
    // The range after record-m000: a record that sorts before it lands outside.
    const reader = await chain.endorse(proposal('consent:ListAccess', ['record-m000', '100']));
    await ledger.submit('consent:RecordAccess', [accessRecord('record-a001')]);
    expect((await chain.commit(reader)).validationCode).toBe('VALID');
  });

  it('sees a phantom written by an earlier transaction of the same block', async () => {
    const ledger = chain.connect(org1.service);
    const reader = await chain.endorse(proposal('consent:ListAccess', ['', '100']));
    const writer = await chain.endorse(proposal('consent:RecordAccess', [accessRecord('record-0003')]));
    const [writerStatus, readerStatus] = await Promise.all([chain.commit(writer), chain.commit(reader)]);
    expect(writerStatus.validationCode).toBe('VALID');
    expect(readerStatus).toMatchObject({
      blockNumber: writerStatus.blockNumber,
      validationCode: 'PHANTOM_READ_CONFLICT',
    });
    expect(
      (JSON.parse(await ledger.evaluate('consent:ListAccess', ['', '100'])) as { records: unknown[] })
        .records,
    ).toHaveLength(1);
  });
});

describe('range re-execution at commit (read-write sets as the validator sees them)', () => {
  const ANCHORS = '\u0000anchor\u0000';
  const anchorKey = (digit: string): string => `${ANCHORS}${digit.repeat(64)}\u0000`;

  /** A real endorsement whose range-query record is replaced, to exercise the validator's rules directly. */
  let rangeQueryReads = 0; // each endorsement reads a key of its own (a counter: nothing left to chance)
  async function withRangeQuery(query: {
    itrExhausted: boolean;
    reads: { key: string; version: { blockNum: number; txNum: number } }[];
  }) {
    const endorsement = await chain.endorse(
      proposal('anchor:ReadAnchor', [hex(`range-query-${++rangeQueryReads}`)]),
    );
    endorsement.rwset.rangeQueries = [{ startKey: ANCHORS, endKey: `${ANCHORS}\u{10ffff}`, ...query }];
    return endorsement;
  }

  it('re-checks an iteration stopped early only up to the last key read', async () => {
    const ledger = chain.connect(org1.service);
    await ledger.submit('anchor:AnchorVersion', ['3'.repeat(64), hex('v')]); // block 1
    const firstOnly = {
      itrExhausted: false,
      reads: [{ key: anchorKey('3'), version: { blockNum: 1, txNum: 0 } }],
    };

    const unaffected = await withRangeQuery(firstOnly);
    await ledger.submit('anchor:AnchorVersion', ['5'.repeat(64), hex('v')]); // after the last key read
    expect((await chain.commit(unaffected)).validationCode).toBe('VALID');

    const affected = await withRangeQuery(firstOnly);
    await ledger.submit('anchor:AnchorVersion', ['1'.repeat(64), hex('v')]); // before it: a phantom
    expect((await chain.commit(affected)).validationCode).toBe('PHANTOM_READ_CONFLICT');
  });

  it('re-checks an exhausted iteration over the whole range, versions included', async () => {
    const ledger = chain.connect(org1.service);
    await ledger.submit('anchor:AnchorVersion', ['3'.repeat(64), hex('v')]); // block 1
    const whole = {
      itrExhausted: true,
      reads: [{ key: anchorKey('3'), version: { blockNum: 1, txNum: 0 } }],
    };
    expect((await chain.commit(await withRangeQuery(whole))).validationCode).toBe('VALID');

    const stale = await withRangeQuery({
      ...whole,
      reads: [{ key: anchorKey('3'), version: { blockNum: 0, txNum: 0 } }],
    });
    expect((await chain.commit(stale)).validationCode).toBe('PHANTOM_READ_CONFLICT');

    const beforeGrowth = await withRangeQuery(whole);
    await ledger.submit('anchor:AnchorVersion', ['9'.repeat(64), hex('v')]);
    expect((await chain.commit(beforeGrowth)).validationCode).toBe('PHANTOM_READ_CONFLICT');
  });
});

describe('transactions', () => {
  it('computes the tx id like Fabric and refuses a duplicate tx id', async () => {
    const nonce = Buffer.alloc(24, 7);
    const endorsement = await chain.endorse(proposal('anchor:AnchorBatch', [hex('r1'), '1'], { nonce }));
    const again = await chain.endorse(proposal('anchor:AnchorBatch', [hex('r2'), '1'], { nonce }));
    expect(again.txId).toBe(endorsement.txId);
    const [first, duplicate] = await Promise.all([chain.commit(endorsement), chain.commit(again)]);
    expect(first.validationCode).toBe('VALID');
    expect(duplicate.validationCode).toBe('DUPLICATE_TXID');
    await expect(
      chain.endorse(proposal('anchor:AnchorBatch', [hex('r3'), '1'], { nonce })),
    ).rejects.toMatchObject({
      code: 'DUPLICATE_TXID',
    });
    expect(chain.transactionStatus(endorsement.txId)?.validationCode).toBe('VALID');
  });

  it('takes the timestamp from the proposal', async () => {
    const endorsement = await chain.endorse(
      proposal('anchor:AnchorVersion', [hex('k'), hex('v')], {
        timestamp: { seconds: 1_700_000_000, nanos: 123_456_789 },
      }),
    );
    expect(JSON.parse(endorsement.response.payload.toString()).timestamp).toBe('2023-11-14T22:13:20.123Z');
  });

  it('refuses to order a transaction whose endorsement failed', async () => {
    const failed = await chain.endorse(proposal('anchor:AnchorVersion', ['bad', hex('v')]));
    expect(failed.response.status).toBe(500);
    expect(failed.rwset.writes).toEqual([]);
    await expect(chain.commit(failed)).rejects.toMatchObject({ code: 'ENDORSEMENT_FAILURE' });
  });

  it('is deterministic: the same proposals on two chains give the same results, events and block hashes', async () => {
    const other = await EmbeddedChain.open({
      file: path.join(dir, 'ledger', 'other.sqlite'),
      msps: [org1.msp],
    });
    extraChains.push(other);
    const proposals = [
      proposal('anchor:AnchorVersion', [hex('k1'), hex('v1')], {
        nonce: Buffer.alloc(24, 1),
        timestamp: { seconds: 1_800_000_000, nanos: 5 },
      }),
      proposal('anchor:AnchorBatch', [hex('root'), '250'], {
        nonce: Buffer.alloc(24, 2),
        timestamp: { seconds: 1_800_000_001, nanos: 0 },
      }),
    ];
    const run = async (target: EmbeddedChain) => {
      const outcomes = [];
      for (const item of proposals) {
        const endorsement = await target.endorse(item);
        const status = await target.commit(endorsement);
        outcomes.push({
          txId: endorsement.txId,
          payload: endorsement.response.payload.toString(),
          event: endorsement.event,
          status,
        });
      }
      return { outcomes, hashes: [1, 2].map((number) => target.block(number)!.header.hash.toString('hex')) };
    };
    const [a, b] = [await run(chain), await run(other)];
    expect(b).toEqual(a);
    expect(a.outcomes[0]!.event!.name).toBe('AnchorVersion');
  });
});

describe('events', () => {
  it('replays stored events from a block, then delivers live ones in commit order', async () => {
    const ledger = chain.connect(org1.service);
    const first = await ledger.submit('anchor:AnchorVersion', [hex('k1'), hex('v1')]);
    const second = await ledger.submit('anchor:AnchorBatch', [hex('root'), '2']);
    const stream = ledger.events(2);
    const received: LedgerEvent[] = [];
    const reading = (async () => {
      for await (const event of stream) {
        received.push(event);
        if (received.length === 2) break;
      }
    })();
    const third = await ledger.submit('anchor:AnchorVersion', [hex('k3'), hex('v3')]);
    await reading;
    expect(received.map((event) => [event.blockNumber, event.transactionId, event.eventName])).toEqual([
      [2, second.transactionId, 'AnchorBatch'],
      [3, third.transactionId, 'AnchorVersion'],
    ]);
    expect(first.blockNumber).toBe(1);
  });

  it('ends open streams when the chain closes', async () => {
    const other = await EmbeddedChain.open({ file: path.join(dir, 'ledger', 'closing.sqlite') });
    const stream = other.events();
    const iteration = stream[Symbol.asyncIterator]().next();
    await other.close();
    expect(await iteration).toEqual({ value: undefined, done: true });
  });
});

describe('durability and the hash chain', () => {
  it('reopens with the same height, state, history and events', async () => {
    const ledger = chain.connect(org1.service);
    const anchored = await ledger.submit('anchor:AnchorVersion', [hex('k'), hex('v')]);
    await ledger.submit('anchor:AnchorBatch', [hex('root'), '7']);
    const history = await ledger.evaluate('anchor:KeyHistory', [hex('k')]);
    await chain.close();

    chain = await openChain(dir, [org1]);
    const reopened = chain.connect(org1.service);
    expect(await reopened.height()).toBe(3);
    expect(await reopened.evaluate('anchor:ReadAnchor', [hex('k')])).toBe(anchored.result);
    expect(await reopened.evaluate('anchor:KeyHistory', [hex('k')])).toBe(history);
    const events: string[] = [];
    for await (const event of reopened.events(0)) {
      events.push(event.eventName);
      if (events.length === 2) break;
    }
    expect(events).toEqual(['AnchorVersion', 'AnchorBatch']);
    const next = await reopened.submit('anchor:AnchorVersion', [hex('k2'), hex('v2')]);
    expect(next.blockNumber).toBe(3);
    expect(chain.block(3)!.header.previousHash).toEqual(chain.block(2)!.header.hash);
  });

  async function chainWithBlocks(): Promise<string> {
    const ledger = chain.connect(org1.service);
    for (let index = 0; index < 4; index++)
      await ledger.submit('anchor:AnchorVersion', [hex(`k${index}`), hex(`v${index}`)]);
    await chain.close();
    return path.join(dir, 'ledger', 'chain.sqlite');
  }

  async function openFails(file: string): Promise<ChainIntegrityError> {
    const error = await EmbeddedChain.open({ file }).then(
      (opened) => {
        extraChains.push(opened);
        return undefined;
      },
      (caught: unknown) => caught,
    );
    expect(error).toBeInstanceOf(ChainIntegrityError);
    return error as ChainIntegrityError;
  }

  function tamper(file: string, sql: string): void {
    const db = new Database(file);
    db.exec(sql);
    db.close();
  }

  it('reports an altered transaction with its block number', async () => {
    const file = await chainWithBlocks();
    tamper(
      file,
      "UPDATE transactions SET envelope = CAST(replace(CAST(envelope AS TEXT), 'Org1MSP', 'Org2MSP') AS BLOB) WHERE block = 2",
    );
    const error = await openFails(file);
    expect(error.blockNumber).toBe(2);
    expect(error.message).toContain('block 2');
    expect(error.message).toContain('data hash');
    chain = await openChain(dir, [org1], 'fresh.sqlite');
  });

  it('reports an altered validation code, a rewritten header and a removed block', async () => {
    const file = await chainWithBlocks();
    tamper(file, "UPDATE transactions SET validation_code = 'MVCC_READ_CONFLICT' WHERE block = 3");
    expect((await openFails(file)).blockNumber).toBe(3);
    tamper(file, "UPDATE transactions SET validation_code = 'VALID' WHERE block = 3");
    await EmbeddedChain.open({ file }).then((opened) => opened.close());

    tamper(file, 'UPDATE blocks SET previous_hash = zeroblob(32) WHERE number = 4');
    expect((await openFails(file)).blockNumber).toBe(4);
    tamper(
      file,
      'UPDATE blocks SET previous_hash = (SELECT hash FROM blocks WHERE number = 3) WHERE number = 4',
    );

    tamper(file, 'DELETE FROM transactions WHERE block = 2; DELETE FROM blocks WHERE number = 2');
    const missing = await openFails(file);
    expect(missing.blockNumber).toBe(2);
    expect(missing.message).toContain('block 2 is missing');
    chain = await openChain(dir, [org1], 'fresh.sqlite');
  });

  it('reports a world-state row edited behind the chain (a forged anchor), removed or added', async () => {
    const file = await chainWithBlocks();
    const anchor = (label: string): Buffer => Buffer.from(`\u0000anchor\u0000${hex(label)}\u0000`, 'utf8');
    const db = new Database(file);
    const original = db.prepare('SELECT value FROM state WHERE key = ?').get(anchor('k1')) as {
      value: Buffer;
    };
    const forged = Buffer.from(original.value.toString().replace(hex('v1'), hex('forged')));
    db.prepare('UPDATE state SET value = ? WHERE key = ?').run(forged, anchor('k1'));
    db.close();
    const edited = await openFails(file);
    expect(edited.blockNumber).toBe(2);
    expect(edited.message).toContain('holds a value its last transaction did not write');

    const restore = new Database(file);
    restore.prepare('UPDATE state SET value = ? WHERE key = ?').run(original.value, anchor('k1'));
    restore.close();
    await EmbeddedChain.open({ file }).then((opened) => opened.close());

    tamper(file, `DELETE FROM state WHERE key = X'${anchor('k2').toString('hex')}'`);
    expect((await openFails(file)).message).toContain('is missing from the world state');
    tamper(
      file,
      `INSERT INTO state (key, value, block, tx) VALUES (X'${anchor('k2').toString('hex')}', X'00', 3, 0)`,
    );
    expect((await openFails(file)).message).toContain('holds a value its last transaction did not write');
    tamper(file, `DELETE FROM state WHERE key = X'${anchor('k2').toString('hex')}'`);
    tamper(
      file,
      `INSERT INTO state (key, value, block, tx) VALUES (X'${anchor('extra').toString('hex')}', X'00', 1, 0)`,
    );
    expect((await openFails(file)).message).toContain('was not written by any valid transaction');
    chain = await openChain(dir, [org1], 'fresh.sqlite');
  });

  it('fails the transactions of a block it cannot store as retryable, storing nothing of it', async () => {
    const ledger = chain.connect(org1.service);
    await ledger.submit('anchor:AnchorVersion', [hex('k'), hex('v')]);
    // Another writer took block 2 behind this chain's back.
    tamper(
      path.join(dir, 'ledger', 'chain.sqlite'),
      'INSERT INTO blocks (number, previous_hash, data_hash, hash, tx_count) VALUES (2, zeroblob(32), zeroblob(32), zeroblob(32), 0)',
    );
    const error = await ledger
      .submit('anchor:AnchorVersion', [hex('k2'), hex('v2')])
      .catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(LedgerTransactionError);
    expect(error).toMatchObject({ code: 'UNAVAILABLE', retryable: true });
    expect((error as Error).message).toContain('block 2 could not be stored');
    expect(chain.height).toBe(2);
    expect(await ledger.evaluate('anchor:ReadAnchor', [hex('k2')])).toBe('null');
    tamper(path.join(dir, 'ledger', 'chain.sqlite'), 'DELETE FROM blocks WHERE number = 2');
    expect((await ledger.submit('anchor:AnchorVersion', [hex('k2'), hex('v2')])).blockNumber).toBe(2);
  });

  it('reports a truncated chain (last block removed)', async () => {
    const file = await chainWithBlocks();
    tamper(file, 'DELETE FROM transactions WHERE block = 4; DELETE FROM blocks WHERE number = 4');
    const error = await openFails(file);
    expect(error.message).toContain('records height 5 but holds 4 blocks');
    chain = await openChain(dir, [org1], 'fresh.sqlite');
  });
});
