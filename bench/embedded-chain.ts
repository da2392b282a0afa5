/**
 * The embedded chain's own cost per transaction (docs/ledger.md): endorsement alone, evaluate, sequential
 * submits (one block each) and concurrent submits (sharing blocks). Run: npx tsx bench/embedded-chain.ts [N]
 */
import { createHash } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { EmbeddedChain, openEmbeddedLedger } from '../src/ledger/embedded/index.js';
import { EmbeddedCa } from '../src/ledger/identity/embedded-ca.js';

const count = Number(process.argv[2] ?? 2000);
const hex = (label: string): string => createHash('sha256').update(label).digest('hex');
const rows: { case: string; transactions: number; 'ms/tx': string; 'tx/s': number }[] = [];

async function measure(name: string, transactions: number, run: () => Promise<void>): Promise<void> {
  const started = performance.now();
  await run();
  const elapsed = performance.now() - started;
  rows.push({
    case: name,
    transactions,
    'ms/tx': (elapsed / transactions).toFixed(3),
    'tx/s': Math.round((transactions * 1000) / elapsed),
  });
}

const dir = await mkdtemp(path.join(os.tmpdir(), 'hie-bench-chain-'));
try {
  const ca = await EmbeddedCa.open(path.join(dir, 'ca'), { mspId: 'Org1MSP' });
  const service = await ca.enroll({ enrollmentId: 'svc-bench', attrs: { 'hie.role': 'service' } });
  const chain = await EmbeddedChain.open({
    file: path.join(dir, 'chain.sqlite'),
    msps: [{ mspId: 'Org1MSP', rootCertificates: [ca.certificate], isRevoked: (pem) => ca.isRevoked(pem) }],
  });
  const creator = { mspid: 'Org1MSP', idBytes: Buffer.from(service.certificate) };
  const ledger = chain.connect({ mspId: 'Org1MSP', ...service });
  // Warm-up (JIT, lazily loaded modules), not measured.
  for (let i = 0; i < 1000; i++)
    await chain.endorse({ transaction: 'anchor:AnchorBatch', args: [hex(`w${i}`), '100'], creator });
  for (let i = 0; i < 200; i++) await ledger.submit('anchor:AnchorBatch', [hex(`w${i}`), '100']);

  await measure('endorse only (AnchorBatch simulation)', count, async () => {
    for (let i = 0; i < count; i++)
      await chain.endorse({ transaction: 'anchor:AnchorBatch', args: [hex(`e${i}`), '100'], creator });
  });
  await measure('evaluate ReadBatch', count, async () => {
    for (let i = 0; i < count; i++) await ledger.evaluate('anchor:ReadBatch', [hex(`e${i}`)]);
  });
  await measure('submit AnchorBatch, sequential (1 tx/block)', count, async () => {
    for (let i = 0; i < count; i++) await ledger.submit('anchor:AnchorBatch', [hex(`s${i}`), '100']);
  });
  await measure('submit AnchorBatch, 100 concurrent (shared blocks)', count, async () => {
    for (let start = 0; start < count; start += 100) {
      await Promise.all(
        Array.from({ length: Math.min(100, count - start) }, (_, j) =>
          ledger.submit('anchor:AnchorBatch', [hex(`c${start + j}`), '100']),
        ),
      );
    }
  });
  const height = chain.height;
  await chain.close();
  await measure(`reopen + verify hash chain (${height} blocks)`, 1, async () => {
    const reopened = await EmbeddedChain.open({ file: path.join(dir, 'chain.sqlite') });
    await reopened.close();
  });
  const viaDataDir = await openEmbeddedLedger({ dataDir: path.join(dir, 'data'), mspId: 'Org1MSP' });
  await viaDataDir.close();
  console.table(rows);
} finally {
  await rm(dir, { recursive: true, force: true });
}
