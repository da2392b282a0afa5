/** The anchor chaincode, run through the embedded ledger with real X.509 identities. */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { EmbeddedChain } from '../../src/ledger/embedded/index.js';
import { LedgerTransactionError, type Ledger, type LedgerEvent } from '../../src/ledger/ledger.js';
import { EmbeddedCa } from '../../src/ledger/identity/embedded-ca.js';
import { creatorOf, hex, makeOrg, openChain, tempDir, type TestOrg } from './helpers.js';
import { rejectionOf } from '../support/rejection.js';

let cleanup: () => Promise<void>;
let dir: string;
let org1: TestOrg;
let org2: TestOrg;
let chain: EmbeddedChain;
let service: Ledger;

beforeEach(async () => {
  ({ dir, cleanup } = await tempDir());
  org1 = await makeOrg(dir, 'Org1MSP');
  org2 = await makeOrg(dir, 'Org2MSP');
  chain = await openChain(dir, [org1, org2]);
  service = chain.connect(org1.service);
});

afterEach(async () => {
  await chain.close();
  await cleanup();
});

const refusal = (promise: Promise<unknown>) => rejectionOf(promise, LedgerTransactionError);

describe('anchor:AnchorVersion', () => {
  it('anchors a version and reads it back with the creator MSP, tx id and tx timestamp', async () => {
    const key = hex('Patient/1/_history/1');
    const leafHash = hex('salted leaf');
    const submitted = await service.submit('anchor:AnchorVersion', [key, leafHash]);
    const record = JSON.parse(submitted.result);
    expect(record).toEqual({
      docType: 'anchor',
      key,
      leafHash,
      mspId: 'Org1MSP',
      txId: submitted.transactionId,
      timestamp: expect.stringMatching(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/),
    });
    expect(submitted.transactionId).toMatch(/^[0-9a-f]{64}$/);
    expect(submitted.blockNumber).toBe(1);
    // Deterministic JSON: keys sorted, no whitespace.
    expect(submitted.result).toBe(
      `{"docType":"anchor","key":"${key}","leafHash":"${leafHash}","mspId":"Org1MSP","timestamp":"${record.timestamp}","txId":"${submitted.transactionId}"}`,
    );
    expect(await service.evaluate('anchor:ReadAnchor', [key])).toBe(submitted.result);
    expect(await service.height()).toBe(2);
  });

  it('emits exactly one event describing the transaction', async () => {
    const key = hex('k');
    const submitted = await service.submit('anchor:AnchorVersion', [key, hex('v')]);
    const events: LedgerEvent[] = [];
    const stream = service.events(0);
    for await (const event of stream) {
      events.push(event);
      break;
    }
    expect(events).toEqual([
      {
        blockNumber: 1,
        transactionId: submitted.transactionId,
        eventName: 'AnchorVersion',
        payload: submitted.result,
      },
    ]);
  });

  it('refuses to overwrite an existing anchor and keeps the first record', async () => {
    const key = hex('Observation/9/_history/1');
    const first = await service.submit('anchor:AnchorVersion', [key, hex('original')]);
    const error = await refusal(service.submit('anchor:AnchorVersion', [key, hex('tampered')]));
    expect(error.code).toBe('CHAINCODE_ERROR');
    expect(error.message).toContain('already exists');
    expect(error.retryable).toBe(false);
    expect(await service.evaluate('anchor:ReadAnchor', [key])).toBe(first.result);
    expect(await service.height()).toBe(2);
  });

  it('validates its arguments', async () => {
    for (const args of [
      ['abc', hex('v')],
      [hex('k').toUpperCase(), hex('v')],
      [hex('k'), `${hex('v')}00`],
      [hex('k'), ''],
    ]) {
      const error = await refusal(service.submit('anchor:AnchorVersion', args));
      expect(error.code).toBe('CHAINCODE_ERROR');
      expect(error.message).toMatch(/invalid argument (key|leafHash)/);
    }
    const wrongCount = await refusal(service.submit('anchor:AnchorVersion', [hex('k')]));
    expect(wrongCount.message).toContain('Expected 2 parameters, but 1 have been supplied');
    const unknown = await refusal(service.submit('anchor:Erase', [hex('k')]));
    expect(unknown.message).toContain('does not exist');
    expect(await service.height()).toBe(1);
  });

  it('accepts writes only from service identities (hie.role read from the certificate by ctx.clientIdentity)', async () => {
    const clinician = chain.connect(org1.clinician);
    const error = await refusal(clinician.submit('anchor:AnchorVersion', [hex('k'), hex('v')]));
    expect(error.code).toBe('CHAINCODE_ERROR');
    expect(error.message).toContain('access denied');
    expect(error.message).toContain('the caller of Org1MSP has hie.role=clinician');
    const batch = await refusal(clinician.submit('anchor:AnchorBatch', [hex('root'), '10']));
    expect(batch.message).toContain('access denied');

    const noRole = await org1.ca.enroll({ enrollmentId: 'no-role', attrs: {} });
    const anonymous = chain.connect({ mspId: 'Org1MSP', ...noRole });
    expect((await refusal(anonymous.submit('anchor:AnchorVersion', [hex('k'), hex('v')]))).message).toContain(
      'has no role',
    );

    expect(await service.evaluate('anchor:ReadAnchor', [hex('k')])).toBe('null');
    // Reading is open to every member identity.
    await service.submit('anchor:AnchorVersion', [hex('k'), hex('v')]);
    expect(JSON.parse(await clinician.evaluate('anchor:ReadAnchor', [hex('k')])).leafHash).toBe(hex('v'));
  });

  it('records which organisation anchored (several organisations share one chain)', async () => {
    const org2Service = chain.connect(org2.service);
    const submitted = await org2Service.submit('anchor:AnchorVersion', [hex('org2 key'), hex('org2 leaf')]);
    expect(JSON.parse(submitted.result).mspId).toBe('Org2MSP');
    expect(JSON.parse(await service.evaluate('anchor:ReadAnchor', [hex('org2 key')])).mspId).toBe('Org2MSP');
  });

  it('refuses creators the channel does not trust: unknown CA, claimed foreign MSP, revoked certificate', async () => {
    const rogueCa = await EmbeddedCa.open(`${dir}/rogue-ca`, { mspId: 'Org1MSP' });
    const rogue = await rogueCa.enroll({ enrollmentId: 'rogue', attrs: { 'hie.role': 'service' } });
    const forged = await refusal(
      chain.connect({ mspId: 'Org1MSP', ...rogue }).submit('anchor:AnchorVersion', [hex('k'), hex('v')]),
    );
    expect(forged.code).toBe('BAD_CREATOR_SIGNATURE');
    expect(forged.message).toContain("not issued by its organisation's CA");

    const claimed = await refusal(
      chain
        .connect({ ...org1.service, mspId: 'Org2MSP' })
        .submit('anchor:AnchorVersion', [hex('k'), hex('v')]),
    );
    expect(claimed.code).toBe('BAD_CREATOR_SIGNATURE');

    const outsider = await refusal(
      chain
        .connect({ ...org1.service, mspId: 'Org9MSP' })
        .submit('anchor:AnchorVersion', [hex('k'), hex('v')]),
    );
    expect(outsider.message).toContain('not a member of channel hie');

    const revocable = await org1.ca.enroll({ enrollmentId: 'old-service', attrs: { 'hie.role': 'service' } });
    const oldService = chain.connect({ mspId: 'Org1MSP', ...revocable });
    await oldService.submit('anchor:AnchorVersion', [hex('before revocation'), hex('v')]);
    org1.ca.revoke(revocable.serial);
    const revoked = await refusal(
      oldService.submit('anchor:AnchorVersion', [hex('after revocation'), hex('v')]),
    );
    expect(revoked.message).toContain('revoked');
    expect(await service.height()).toBe(2);
  });
});

describe('anchor:AnchorBatch', () => {
  it('anchors a Merkle root with its leaf count and reads it back', async () => {
    const root = hex('merkle root');
    const submitted = await service.submit('anchor:AnchorBatch', [root, '1000']);
    expect(JSON.parse(submitted.result)).toMatchObject({
      docType: 'batch',
      root,
      leafCount: 1000,
      mspId: 'Org1MSP',
      txId: submitted.transactionId,
    });
    expect(await service.evaluate('anchor:ReadBatch', [root])).toBe(submitted.result);
    expect(await service.evaluate('anchor:ReadBatch', [hex('other root')])).toBe('null');
    // A batch root and a version key live in different composite-key spaces.
    expect(await service.evaluate('anchor:ReadAnchor', [root])).toBe('null');
  });

  it('refuses a duplicate root and malformed leaf counts', async () => {
    await service.submit('anchor:AnchorBatch', [hex('root'), '2']);
    expect((await refusal(service.submit('anchor:AnchorBatch', [hex('root'), '2']))).message).toContain(
      'already exists',
    );
    for (const leafCount of ['0', '01', '-1', '1.5', 'ten', '', '1000001']) {
      const error = await refusal(
        service.submit('anchor:AnchorBatch', [hex(`root ${leafCount}`), leafCount]),
      );
      expect(error.message).toContain('invalid argument leafCount');
    }
  });
});

describe('anchor:AnchorBatchTagged', () => {
  it('keeps the tag of every leaf with the root, and refuses tags that do not fit the leaf count', async () => {
    const root = hex('tagged root');
    const tags = hex('leaf 0').slice(0, 16) + hex('leaf 1').slice(0, 16) + hex('leaf 2').slice(0, 16);
    const submitted = await service.submit('anchor:AnchorBatchTagged', [root, '3', tags]);
    expect(JSON.parse(submitted.result)).toMatchObject({
      docType: 'batch',
      root,
      leafCount: 3,
      leafTags: tags,
    });
    expect(await service.evaluate('anchor:ReadBatch', [root])).toBe(submitted.result);
    expect((await refusal(service.submit('anchor:AnchorBatchTagged', [root, '3', tags]))).message).toContain(
      'already exists',
    );
    // Write-once across both forms: the same root cannot be anchored again untagged.
    expect((await refusal(service.submit('anchor:AnchorBatch', [root, '3']))).message).toContain(
      'already exists',
    );
    for (const bad of [tags.slice(0, 32), tags + '0', tags.toUpperCase(), `${tags.slice(0, 47)}g`, '']) {
      const error = await refusal(service.submit('anchor:AnchorBatchTagged', [hex(`r ${bad}`), '3', bad]));
      expect(error.message).toContain('invalid argument leafTags');
    }
    expect(
      (await refusal(service.submit('anchor:AnchorBatchTagged', [hex('big'), '65537', '']))).message,
    ).toContain('invalid argument leafCount');
  });
});

describe('anchor:KeyHistory', () => {
  it('returns the committed modifications of an anchor key from getHistoryForKey', async () => {
    const key = hex('Patient/2/_history/3');
    expect(await service.evaluate('anchor:KeyHistory', [key])).toBe('[]');
    const submitted = await service.submit('anchor:AnchorVersion', [key, hex('leaf')]);
    const history = JSON.parse(await service.evaluate('anchor:KeyHistory', [key]));
    expect(history).toEqual([
      {
        txId: submitted.transactionId,
        timestamp: JSON.parse(submitted.result).timestamp,
        isDelete: false,
        value: JSON.parse(submitted.result),
      },
    ]);
  });
});

describe('evaluate', () => {
  it('does not write: an evaluated AnchorVersion leaves no trace', async () => {
    const result = JSON.parse(await service.evaluate('anchor:AnchorVersion', [hex('k'), hex('v')]));
    expect(result.key).toBe(hex('k'));
    expect(await service.evaluate('anchor:ReadAnchor', [hex('k')])).toBe('null');
    expect(await service.height()).toBe(1);
  });

  it('uses the creator from the proposal, not only a connected identity', async () => {
    const endorsement = await chain.endorse({
      transaction: 'anchor:AnchorVersion',
      args: [hex('k'), hex('v')],
      creator: creatorOf(org2.service),
    });
    expect(endorsement.response.status).toBe(200);
    expect(JSON.parse(endorsement.response.payload.toString()).mspId).toBe('Org2MSP');
  });
});
