/**
 * The shared Ledger contract suite against both adapters: the embedded ledger directly, and the Fabric adapter
 * (real @hyperledger/fabric-gateway client over gRPC/TLS) through the test Gateway server on the same chain.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EmbeddedChain } from '../../src/ledger/embedded/index.js';
import { EmbeddedCa } from '../../src/ledger/identity/embedded-ca.js';
import { describeLedgerContract } from '../ledger/ledger-contract.js';
import { MSP_ID, startFabricHarness } from './support/harness.js';

describeLedgerContract('embedded', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'hie-embedded-contract-'));
  const ca = await EmbeddedCa.open(join(dir, 'ca'), { mspId: MSP_ID });
  const chain = await EmbeddedChain.open({
    file: join(dir, 'chain.sqlite'),
    msps: [{ mspId: MSP_ID, rootCertificates: [ca.certificate] }],
  });
  const service = await ca.enroll({ enrollmentId: 'svc', attrs: { 'hie.role': 'service' } });
  const clinician = await ca.enroll({ enrollmentId: 'clin', attrs: { 'hie.role': 'clinician' } });
  return {
    mspId: MSP_ID,
    ledger: chain.connect({ mspId: MSP_ID, ...service }),
    nonServiceLedger: chain.connect({ mspId: MSP_ID, ...clinician }),
    async close() {
      await chain.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
});

describeLedgerContract('fabric (gateway test server)', async () => {
  const harness = await startFabricHarness();
  const clinician = await harness.ca.enroll({ enrollmentId: 'clin', attrs: { 'hie.role': 'clinician' } });
  return {
    mspId: MSP_ID,
    ledger: harness.connect(),
    nonServiceLedger: harness.connect({ identity: clinician }),
    close: () => harness.close(),
  };
});
