/**
 * The ledger gateway's Deliver service (DeliverFiltered): the real fabric-gateway client reads filtered blocks
 * (transaction ids, validation codes, event names) from a start block, live; a seek request signed by another
 * key is refused.
 */
import { createHash, createPrivateKey, generateKeyPairSync } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { connect, signers, type Gateway, type Signer } from '@hyperledger/fabric-gateway';
import { peer } from '@hyperledger/fabric-protos';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CHANNEL, HOST_ALIAS, MSP_ID, startFabricHarness, type FabricHarness } from './support/harness.js';

let harness: FabricHarness;
beforeAll(async () => {
  harness = await startFabricHarness();
});
afterAll(async () => harness?.close());

function gatewayAs(signer: Signer): Gateway {
  return connect({
    client: new grpc.Client(
      harness.server.address,
      grpc.credentials.createSsl(readFileSync(join(harness.dir, 'tls-ca.pem'))),
      { 'grpc.ssl_target_name_override': HOST_ALIAS },
    ),
    identity: { mspId: MSP_ID, credentials: Buffer.from(harness.service.certificate) },
    signer,
  });
}

const key = (n: number) => createHash('sha256').update(`deliver ${n}`).digest('hex');

describe('DeliverFiltered', () => {
  it('streams filtered blocks from a start block: transaction ids, validation codes, event names', async () => {
    const ledger = harness.connect();
    const start = await ledger.height();
    const committed = await ledger.submit('anchor:AnchorBatch', [key(1), '1']);
    const gateway = gatewayAs(signers.newPrivateKeySigner(createPrivateKey(harness.service.privateKey)));
    const blocks = await gateway.getNetwork(CHANNEL).getFilteredBlockEvents({ startBlock: BigInt(start) });
    try {
      const seen: peer.FilteredTransaction[] = [];
      let later: { transactionId: string } | undefined;
      for await (const block of blocks) {
        expect(block.getChannelId()).toBe(CHANNEL);
        seen.push(...block.getFilteredTransactionsList());
        // A block committed after the stream started arrives live.
        if (!later) later = await ledger.submit('anchor:AnchorBatch', [key(2), '1']);
        if (seen.some((tx) => tx.getTxid() === later!.transactionId)) break;
      }
      const first = seen.find((tx) => tx.getTxid() === committed.transactionId);
      expect(first?.getTxValidationCode()).toBe(peer.TxValidationCode.VALID);
      const events = first?.getTransactionActions()?.getChaincodeActionsList() ?? [];
      expect(events.map((action) => action.getChaincodeEvent()?.getEventName())).toHaveLength(1);
      expect(events[0]?.getChaincodeEvent()?.getPayload_asU8()).toHaveLength(0);
    } finally {
      blocks.close();
      gateway.close();
    }
  });

  it('refuses a seek request signed by another key (FORBIDDEN status)', async () => {
    const gateway = gatewayAs(
      signers.newPrivateKeySigner(generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey),
    );
    const blocks = await gateway.getNetwork(CHANNEL).getFilteredBlockEvents({ startBlock: 0n });
    try {
      const iterator = blocks[Symbol.asyncIterator]();
      await expect(iterator.next()).rejects.toThrow(/Unexpected status response: 403/);
    } finally {
      blocks.close();
      gateway.close();
    }
  });
});
