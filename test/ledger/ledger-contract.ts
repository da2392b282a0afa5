/**
 * The Ledger port's contract: one suite, run against every adapter (the embedded ledger, and the Fabric adapter
 * through the test Gateway server; see test/fabric/ledger-contract.test.ts). It uses the project's chaincode
 * (anchor contract), so it also checks that an adapter carries arguments, results, errors and events faithfully.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LedgerTransactionError, type Ledger, type LedgerEvent } from '../../src/ledger/ledger.js';

export interface LedgerUnderTest {
  /** Bound to a service identity (hie.role=service) of `mspId`. */
  ledger: Ledger;
  /** Bound to an identity of the same organisation without the service role. */
  nonServiceLedger: Ledger;
  mspId: string;
  close(): Promise<void>;
}

const hex = () => randomBytes(32).toString('hex');

async function take(events: AsyncIterable<LedgerEvent>, count: number): Promise<LedgerEvent[]> {
  const taken: LedgerEvent[] = [];
  if (count === 0) return taken;
  for await (const event of events) {
    taken.push(event);
    if (taken.length === count) break;
  }
  return taken;
}

export function describeLedgerContract(name: string, open: () => Promise<LedgerUnderTest>): void {
  describe(`Ledger contract: ${name}`, () => {
    let subject: LedgerUnderTest;
    beforeAll(async () => {
      subject = await open();
    });
    afterAll(async () => {
      await subject?.close();
    });

    it('submits a transaction and returns its id, block and the chaincode result', async () => {
      const key = hex();
      const leafHash = hex();
      const heightBefore = await subject.ledger.height();
      const committed = await subject.ledger.submit('anchor:AnchorVersion', [key, leafHash]);
      expect(committed.transactionId).toMatch(/^[0-9a-f]{64}$/);
      expect(committed.blockNumber).toBeGreaterThanOrEqual(heightBefore);
      const record = JSON.parse(committed.result);
      expect(record).toMatchObject({ docType: 'anchor', key, leafHash, mspId: subject.mspId });
      expect(record.txId).toBe(committed.transactionId);
      expect(await subject.ledger.height()).toBeGreaterThan(committed.blockNumber);
    });

    it('says where a committed transaction is, and nothing for an id the chain does not hold', async () => {
      const committed = await subject.ledger.submit('anchor:AnchorVersion', [hex(), hex()]);
      expect(await subject.ledger.transactionStatus(committed.transactionId)).toEqual({
        blockNumber: committed.blockNumber,
        validationCode: 'VALID',
      });
      expect(await subject.ledger.transactionStatus(hex())).toBeUndefined();
    });

    it('evaluates against committed state without writing', async () => {
      const key = hex();
      expect(await subject.ledger.evaluate('anchor:ReadAnchor', [key])).toBe('null');
      const heightBefore = await subject.ledger.height();
      expect(await subject.ledger.evaluate('anchor:ReadAnchor', [key])).toBe('null');
      expect(await subject.ledger.height()).toBe(heightBefore);
      const leafHash = hex();
      await subject.ledger.submit('anchor:AnchorVersion', [key, leafHash]);
      expect(JSON.parse(await subject.ledger.evaluate('anchor:ReadAnchor', [key]))).toMatchObject({
        key,
        leafHash,
      });
    });

    it('refuses what the chaincode refuses, with a non-retryable LedgerTransactionError and its reason', async () => {
      const key = hex();
      await subject.ledger.submit('anchor:AnchorVersion', [key, hex()]);
      const duplicate = await subject.ledger
        .submit('anchor:AnchorVersion', [key, hex()])
        .catch((error) => error);
      expect(duplicate).toBeInstanceOf(LedgerTransactionError);
      expect(duplicate.code).toBe('CHAINCODE_ERROR');
      expect(duplicate.retryable).toBe(false);
      expect(duplicate.message).toContain('already exists');
      const badArgument = await subject.ledger
        .evaluate('anchor:ReadAnchor', ['not-hex'])
        .catch((error) => error);
      expect(badArgument).toBeInstanceOf(LedgerTransactionError);
      expect(badArgument.code).toBe('CHAINCODE_ERROR');
    });

    it('lets only service identities write', async () => {
      const key = hex();
      const refused = await subject.nonServiceLedger
        .submit('anchor:AnchorVersion', [key, hex()])
        .catch((e) => e);
      expect(refused).toBeInstanceOf(LedgerTransactionError);
      expect(refused.message).toContain('access denied');
      expect(await subject.ledger.evaluate('anchor:ReadAnchor', [key])).toBe('null');
      // Reading is open to any member of the channel.
      expect(await subject.nonServiceLedger.evaluate('anchor:ReadAnchor', [key])).toBe('null');
    });

    it('commits concurrent submissions, each once', async () => {
      const roots = Array.from({ length: 12 }, hex);
      const results = await Promise.all(
        roots.map((root) => subject.ledger.submit('anchor:AnchorBatch', [root, '3'])),
      );
      expect(new Set(results.map((r) => r.transactionId)).size).toBe(roots.length);
      for (const root of roots) {
        expect(JSON.parse(await subject.ledger.evaluate('anchor:ReadBatch', [root]))).toMatchObject({
          root,
          leafCount: 3,
        });
      }
    });

    it('keeps key history', async () => {
      const key = hex();
      const committed = await subject.ledger.submit('anchor:AnchorVersion', [key, hex()]);
      const history = JSON.parse(await subject.ledger.evaluate('anchor:KeyHistory', [key]));
      expect(history).toHaveLength(1);
      expect(history[0]).toMatchObject({ txId: committed.transactionId, isDelete: false });
    });

    it('replays chaincode events from a start block, then delivers live ones, one per transaction', async () => {
      const first = await subject.ledger.submit('anchor:AnchorBatch', [hex(), '1']);
      const second = await subject.ledger.submit('anchor:AnchorVersion', [hex(), hex()]);
      const stream = subject.ledger.events(first.blockNumber);
      try {
        const iterator = stream[Symbol.asyncIterator]();
        const replayed: LedgerEvent[] = [];
        while (!replayed.some((event) => event.transactionId === second.transactionId)) {
          const next = await iterator.next();
          expect(next.done).toBe(false);
          replayed.push(next.value);
        }
        const firstEvent = replayed.find((event) => event.transactionId === first.transactionId)!;
        expect(firstEvent).toMatchObject({ blockNumber: first.blockNumber, eventName: 'AnchorBatch' });
        expect(JSON.parse(firstEvent.payload)).toEqual(JSON.parse(first.result));
        expect(replayed.every((event) => event.blockNumber >= first.blockNumber)).toBe(true);
        const blocks = replayed.map((event) => event.blockNumber);
        expect([...blocks].sort((a, b) => a - b)).toEqual(blocks);

        const live = await subject.ledger.submit('anchor:AnchorVersion', [hex(), hex()]);
        let next = await iterator.next();
        while (!next.done && next.value.transactionId !== live.transactionId) next = await iterator.next();
        expect(next.done).toBe(false);
        expect(next.value).toMatchObject({ transactionId: live.transactionId, eventName: 'AnchorVersion' });
      } finally {
        stream.close();
      }
    });

    it('ends an event stream on close', async () => {
      const stream = subject.ledger.events(await subject.ledger.height());
      const pending = take(stream, 1);
      stream.close();
      expect(await pending).toEqual([]);
    });
  });
}
