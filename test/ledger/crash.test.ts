/** Durability: SIGKILL the process while it commits blocks; every acknowledged transaction is on the chain after. */
import { spawn } from 'node:child_process';
import path from 'node:path';
import { afterEach, beforeEach, expect, it } from 'vitest';
import { EmbeddedChain } from '../../src/ledger/embedded/index.js';
import { tempDir } from './helpers.js';

let dir: string;
let cleanup: () => Promise<void>;

beforeEach(async () => {
  ({ dir, cleanup } = await tempDir());
});

afterEach(async () => {
  await cleanup();
});

function runUntilKilled(dataDir: string, acknowledgedTarget: number): Promise<string[]> {
  return new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', path.join('test', 'ledger', 'fixtures', 'submit-forever.ts'), dataDir],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let output = '';
    let errors = '';
    child.stdout.on('data', (chunk: Buffer) => {
      output += chunk.toString();
      if (output.split('\n').length > acknowledgedTarget) child.kill('SIGKILL');
    });
    child.stderr.on('data', (chunk: Buffer) => (errors += chunk.toString()));
    child.on('exit', (code, signal) => {
      if (signal !== 'SIGKILL') reject(new Error(`child exited with ${code}: ${errors}`));
      // Only complete lines were acknowledged.
      else resolve(output.split('\n').slice(0, -1));
    });
  });
}

it('keeps every acknowledged transaction and a valid hash chain after SIGKILL', async () => {
  const acknowledged = await runUntilKilled(dir, 200);
  expect(acknowledged.length).toBeGreaterThanOrEqual(200);
  const chain = await EmbeddedChain.open({ file: path.join(dir, 'ledger', 'chain.sqlite') });
  try {
    for (const txId of acknowledged) expect(chain.transactionStatus(txId)?.validationCode).toBe('VALID');
    expect(chain.height).toBeGreaterThan(1);
  } finally {
    await chain.close();
  }
});
