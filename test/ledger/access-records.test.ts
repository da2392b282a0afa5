/**
 * Access records (who read a patient's data) are the patient's audit trail on the ledger: a ledger that is away
 * delays them, never loses them.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EmbeddedCa } from '../../src/ledger/identity/embedded-ca.js';
import { acquireChain, serviceIdentity } from '../../src/ledger/embedded/index.js';
import { ConsentService } from '../../src/consent/consent-service.js';
import { FaultyLedger } from '../integrity/helpers.js';
import { TestPseudonyms } from './helpers.js';

describe('access records while the ledger is away', () => {
  let dir: string;
  let ledger: FaultyLedger;
  let service: ConsentService;
  let release: () => Promise<void>;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'hie-access-records-'));
    const ca = await EmbeddedCa.open(join(dir, 'ca'), { mspId: 'Org1MSP' });
    const acquired = await acquireChain({
      file: join(dir, 'chain.sqlite'),
      msps: [{ mspId: 'Org1MSP', rootCertificates: [ca.certificate], isRevoked: (pem) => ca.isRevoked(pem) }],
    });
    release = acquired.release;
    ledger = new FaultyLedger(acquired.chain.connect(await serviceIdentity(ca, join(dir, 'svc'))));
    service = await ConsentService.open({
      ledger,
      pseudonyms: new TestPseudonyms(),
      checkpointFile: join(dir, 'checkpoints', 'consent.json'),
    });
  });
  afterAll(async () => {
    await service?.close();
    await release?.();
    rmSync(dir, { recursive: true, force: true });
  });

  it('keeps them while the ledger is down and writes them, in order, once it is back', async () => {
    const at = '2026-12-07T10:00:00.000Z';
    ledger.down = true;
    for (const accessor of ['accessor-0001', 'accessor-0002', 'accessor-0003'])
      service.recordAccess({
        patient: 'Patient/p1',
        accessor,
        interaction: 'read',
        resourceType: 'Observation',
        outcome: 'allowed',
        at,
      });
    await service.flushAccess();
    expect(service.accessBacklog).toBe(3);
    service.recordAccess({
      patient: 'Patient/p1',
      accessor: 'accessor-0004',
      interaction: 'read',
      outcome: 'allowed',
      at,
    });
    await service.flushAccess();
    expect(service.accessBacklog).toBe(4);

    ledger.down = false;
    await service.flushAccess();
    expect(service.accessBacklog).toBe(0);
    const records = await service.listAccess('Patient/p1');
    expect(records.map((r) => r.accessor)).toEqual([
      'accessor-0001',
      'accessor-0002',
      'accessor-0003',
      'accessor-0004',
    ]);
  });
});
