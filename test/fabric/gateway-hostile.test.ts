/**
 * The ledger gateway (src/ledger/embedded/gateway) faces hostile input from the network: malformed protobufs,
 * signatures by another key, oversized messages. Each is refused with a clean gRPC status, nothing is applied,
 * and the server keeps serving.
 */
import { createHash, generateKeyPairSync } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { connect, signers } from '@hyperledger/fabric-gateway';
import { common, gateway, peer } from '@hyperledger/fabric-protos';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  CHANNEL,
  CHAINCODE,
  HOST_ALIAS,
  MSP_ID,
  startFabricHarness,
  type FabricHarness,
} from './support/harness.js';
import { DEFAULT_MAX_MESSAGE_BYTES } from '../../src/ledger/embedded/gateway/gateway-server.js';

let harness: FabricHarness;
let client: grpc.Client;

beforeAll(async () => {
  harness = await startFabricHarness();
  client = new grpc.Client(
    harness.server.address,
    grpc.credentials.createSsl(readFileSync(join(harness.dir, 'tls-ca.pem'))),
    { 'grpc.ssl_target_name_override': HOST_ALIAS, 'grpc.max_send_message_length': -1 },
  );
});
afterAll(async () => {
  client?.close();
  await harness?.close();
});

/** Calls Gateway/Endorse with raw request bytes; resolves with the gRPC status code. */
function endorseRaw(bytes: Uint8Array): Promise<{ code: grpc.status; details: string }> {
  return new Promise((resolve) => {
    client.makeUnaryRequest(
      '/gateway.Gateway/Endorse',
      (request: Uint8Array) => Buffer.from(request),
      (response: Buffer) => response,
      bytes,
      (error) => resolve({ code: error?.code ?? grpc.status.OK, details: error?.details ?? '' }),
    );
  });
}

/** An EndorseRequest around `proposalBytes`. */
function endorseRequest(proposalBytes: Uint8Array): Uint8Array {
  const signed = new peer.SignedProposal();
  signed.setProposalBytes(proposalBytes);
  signed.setSignature(Buffer.from([0x30, 0x00]));
  const request = new gateway.EndorseRequest();
  request.setTransactionId('0'.repeat(64));
  request.setChannelId(CHANNEL);
  request.setProposedTransaction(signed);
  return request.serializeBinary();
}

/** A message field (tag 0x12 or 0x1a) declaring a 4 GiB length in six bytes. */
const HUGE_FIELD = (tag: number) => Buffer.from([tag, 0xff, 0xff, 0xff, 0xff, 0x0f]);

/** A proposal whose channel header holds a timestamp (a message field) declaring 4 GiB. */
function proposalWithHugeTimestamp(): Uint8Array {
  const header = new common.Header();
  header.setChannelHeader(HUGE_FIELD(0x1a));
  const proposal = new peer.Proposal();
  proposal.setHeader(header.serializeBinary());
  return proposal.serializeBinary();
}

let anchors = 0;
async function stillServes(): Promise<void> {
  const ledger = harness.connect();
  const key = createHash('sha256').update(`still serving ${anchors++}`).digest('hex');
  const result = await ledger.submit('anchor:AnchorVersion', [key, 'ab'.repeat(32)]);
  expect(result.transactionId).toMatch(/^[0-9a-f]{64}$/);
}

describe('hostile input', () => {
  it('refuses malformed protobufs with INVALID_ARGUMENT at once, however deep (google-protobuf would spin)', async () => {
    // Bytes google-protobuf refuses itself.
    const truncated = await endorseRaw(
      endorseRequest(Buffer.from([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x01])),
    );
    expect(truncated).toEqual({ code: grpc.status.INVALID_ARGUMENT, details: 'malformed proposal' });
    // A nested message declaring 4 GiB: google-protobuf reads on past the buffer for minutes.
    const deep = await endorseRaw(endorseRequest(proposalWithHugeTimestamp()));
    expect(deep).toEqual({ code: grpc.status.INVALID_ARGUMENT, details: 'malformed channel header' });
    // The same in the request itself, refused before it is parsed.
    const request = await endorseRaw(HUGE_FIELD(0x1a));
    expect(request.code).not.toBe(grpc.status.OK);
    expect(request.details).toMatch(/deserializ|malformed/i);
    await stillServes();
  });

  it('refuses a message over the size limit with RESOURCE_EXHAUSTED', async () => {
    const signed = new peer.SignedProposal();
    signed.setProposalBytes(Buffer.alloc(DEFAULT_MAX_MESSAGE_BYTES + 1024, 1));
    const request = new gateway.EndorseRequest();
    request.setProposedTransaction(signed);
    const refused = await endorseRaw(request.serializeBinary());
    expect(refused.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
    await stillServes();
  });

  it('refuses a proposal signed by a key other than its certificate with PERMISSION_DENIED; nothing is applied', async () => {
    const otherKey = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
    const forged = connect({
      client: new grpc.Client(
        harness.server.address,
        grpc.credentials.createSsl(readFileSync(join(harness.dir, 'tls-ca.pem'))),
        { 'grpc.ssl_target_name_override': HOST_ALIAS },
      ),
      identity: { mspId: MSP_ID, credentials: Buffer.from(harness.service.certificate) },
      signer: signers.newPrivateKeySigner(otherKey),
    });
    const height = await harness.chain.height;
    try {
      const contract = forged.getNetwork(CHANNEL).getContract(CHAINCODE);
      const refused = await contract
        .submitTransaction('anchor:AnchorVersion', 'forged-key', 'cd'.repeat(32))
        .catch((error: { code?: number; message: string }) => error);
      expect(refused).toMatchObject({ code: grpc.status.PERMISSION_DENIED });
      expect((refused as Error).message).toMatch(/bad signature on the proposal/);
    } finally {
      forged.close();
    }
    expect(harness.chain.height).toBe(height);
    await stillServes();
  });
});
