/**
 * The Fabric adapter's own overhead per transaction (`npm run bench:fabric`).
 *
 * Runs the same chaincode transactions on the same embedded chain twice: directly (EmbeddedLedger), and through
 * the Fabric adapter (real @hyperledger/fabric-gateway client, gRPC over TLS, signing, protobuf envelopes) against
 * the ledger gateway (src/ledger/embedded/gateway). The difference is what the adapter and the wire add per
 * transaction; a real network adds endorsement by other peers, ordering (Raft, BatchTimeout) and validation.
 * With `--fabric-config FILE` it also measures a real network (no baseline there).
 *
 * Options: --count N (transactions per row, default 500), --concurrency C (default 16), --fabric-config FILE.
 */
import { randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';
import type { Ledger } from '../src/ledger/ledger.js';
import { loadFabricConfig, openFabricLedger } from '../src/ledger/fabric/index.js';
import { startFabricHarness } from '../test/fabric/support/harness.js';

const { values: args } = parseArgs({
  options: {
    count: { type: 'string', default: '500' },
    concurrency: { type: 'string', default: '16' },
    'fabric-config': { type: 'string' },
  },
});
const count = Number(args.count);
const concurrency = Number(args.concurrency);
const hex = () => randomBytes(32).toString('hex');

interface Row {
  ledger: string;
  operation: string;
  mode: string;
  perSecond: number;
  meanMs: number;
  p95Ms: number;
}

async function measure(
  ledger: string,
  operation: string,
  parallel: number,
  run: () => Promise<unknown>,
): Promise<Row> {
  for (let i = 0; i < Math.min(20, count); i++) await run(); // warm-up: connections, JIT, statements
  const latencies: number[] = [];
  let next = 0;
  const started = process.hrtime.bigint();
  await Promise.all(
    Array.from({ length: parallel }, async () => {
      while (next < count) {
        next++;
        const t0 = process.hrtime.bigint();
        await run();
        latencies.push(Number(process.hrtime.bigint() - t0) / 1e6);
      }
    }),
  );
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  latencies.sort((a, b) => a - b);
  return {
    ledger,
    operation,
    mode: parallel === 1 ? 'sequential' : `${parallel} in flight`,
    perSecond: latencies.length / seconds,
    meanMs: latencies.reduce((a, b) => a + b, 0) / latencies.length,
    p95Ms: latencies[Math.floor(latencies.length * 0.95)] ?? 0,
  };
}

async function rows(name: string, ledger: Ledger): Promise<Row[]> {
  const anchored: string[] = [];
  const submit = async () => {
    const root = hex();
    await ledger.submit('anchor:AnchorBatch', [root, '1000']);
    anchored.push(root);
  };
  const evaluate = () => ledger.evaluate('anchor:ReadBatch', [anchored[anchored.length - 1] ?? hex()]);
  return [
    await measure(name, 'submit AnchorBatch', 1, submit),
    await measure(name, 'submit AnchorBatch', concurrency, submit),
    await measure(name, 'evaluate ReadBatch', 1, evaluate),
    await measure(name, 'evaluate ReadBatch', concurrency, evaluate),
  ];
}

function print(table: Row[]): void {
  console.log('| ledger | operation | mode | tx/s | mean ms | p95 ms |');
  console.log('| --- | --- | --- | ---: | ---: | ---: |');
  for (const r of table) {
    console.log(
      `| ${r.ledger} | ${r.operation} | ${r.mode} | ${r.perSecond.toFixed(0)} | ${r.meanMs.toFixed(2)} | ${r.p95Ms.toFixed(2)} |`,
    );
  }
}

const harness = await startFabricHarness();
const table: Row[] = [];
try {
  const direct = harness.chain.connect({ mspId: 'Hospital1MSP', ...harness.service });
  table.push(...(await rows('embedded (direct)', direct)));
  table.push(...(await rows('fabric adapter -> test gateway (P-384 identity)', harness.connect())));
  // Fabric CA issues P-256 keys by default: ECDSA signing (3 signatures per submit) is a large part of the cost.
  const p256 = await harness.ca.enroll({
    enrollmentId: 'svc-p256',
    attrs: { 'hie.role': 'service' },
    keyType: 'P-256',
  });
  table.push(
    ...(await rows('fabric adapter -> test gateway (P-256 identity)', harness.connect({ identity: p256 }))),
  );
} finally {
  await harness.close();
}
if (args['fabric-config']) {
  const network = openFabricLedger({ config: loadFabricConfig(args['fabric-config']) });
  try {
    table.push(...(await rows('fabric network', network)));
  } finally {
    await network.close();
  }
}
console.log(
  `${count} transactions per row (Node ${process.version}, load average ${(await import('node:os')).loadavg()[0].toFixed(1)})\n`,
);
print(table);
const pairs = ['submit AnchorBatch', 'evaluate ReadBatch'].map((operation) => {
  const base = table.find(
    (r) => r.ledger === 'embedded (direct)' && r.operation === operation && r.mode === 'sequential',
  )!;
  const over = table.find(
    (r) => r.ledger.includes('P-256') && r.operation === operation && r.mode === 'sequential',
  )!;
  return `${operation}: +${(over.meanMs - base.meanMs).toFixed(2)} ms per transaction (sequential, P-256)`;
});
console.log(`\nAdapter + wire overhead: ${pairs.join('; ')}`);
