/** Erasure: a patient's salts (and, where the store can, content) are erased; the chain is intact and all else verifies. */
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runErase } from '../../src/commands/erase.js';
import { runVerify } from '../../src/commands/verify.js';
import type { StoredVersion } from '../../src/fhir/store/resource-store.js';
import { AnchorContractClient } from '../../src/integrity/anchor-contract-client.js';
import { dataDirConfig, observation, openFixture } from './helpers.js';

function sink() {
  let text = '';
  const stream = new Writable({
    write(chunk, _enc, done) {
      text += String(chunk);
      done();
    },
  });
  return { stream, text: () => text };
}

describe("erasing a patient's data", () => {
  let dir: string;
  const written: StoredVersion[] = [];
  const roots = new Set<string>();

  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'hie-erase-'));
    const f = await openFixture({ batchSize: 4 }, dir);
    written.push(await f.write({ resourceType: 'Patient', id: 'p1' }));
    written.push(await f.write({ resourceType: 'Patient', id: 'p2' }));
    for (let i = 0; i < 6; i++) {
      const patient = i % 2 === 0 ? 'p1' : 'p2';
      written.push(await f.write(observation(`e${i}`, `${i}.0`, `Patient/${patient}`)));
    }
    await f.integrity.anchorer.drain();
    for (const v of written) {
      const state = await f.store.anchorState(v);
      if (state?.status === 'anchored') roots.add(state.anchor.root);
    }
    await f.close();
  });

  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('refuses a data directory that does not exist (exit 2), creating nothing', async () => {
    const missing = path.join(dir, 'no-such-data');
    const out = sink();
    const code = await runErase({
      ...dataDirConfig(missing),
      target: 'Patient/p1',
      yes: true,
      out: out.stream,
      err: out.stream,
    });
    expect(code).toBe(2);
    expect(out.text()).toContain(`hie-ledger erase: no data directory at ${missing}`);
    expect(existsSync(missing)).toBe(false);
  });

  it('lists the patient and its compartment without --yes, and changes nothing', async () => {
    const out = sink();
    expect(
      await runErase({ ...dataDirConfig(dir), target: 'Patient/p1', out: out.stream, err: out.stream }),
    ).toBe(0);
    expect(out.text()).toContain('would erase  Patient/p1');
    expect(out.text()).toContain('would erase  Observation/e0');
    expect(out.text()).not.toContain('Observation/e1');
    expect(out.text()).toContain('Dry run: 4 resources');
  });

  it('erases the salts: the chain stays, erased versions are unlinkable, and everything else verifies', async () => {
    const out = sink();
    const code = await runErase({
      ...dataDirConfig(dir),
      target: 'Patient/p1',
      yes: true,
      out: out.stream,
      err: out.stream,
    });
    expect(out.text()).toContain('Erased the salts of 4 versions of 4 resources');
    expect(out.text()).toContain('Removed the content of 4 versions.');
    expect(out.text()).toContain('OK: every stored version matches the ledger.');
    expect(code).toBe(0);

    const f = await openFixture({ batchSize: 4 }, dir);
    try {
      for (const v of written) {
        const result = await f.integrity.verifier.verifyVersion(
          (await f.store.vread(v.resourceType, v.id, v.versionId)) ?? v,
        );
        const erased = ['Patient/p1', 'Observation/e0', 'Observation/e2', 'Observation/e4'].includes(
          `${v.resourceType}/${v.id}`,
        );
        expect(result.status, result.reference).toBe(erased ? 'erased' : 'anchored');
        expect(result.salt).toBe(erased ? undefined : result.salt);
      }
      // The content is gone: each erased version is a deletion without text; the others are intact.
      const erasedPatient = await f.store.vread('Patient', 'p1', 1);
      expect(erasedPatient).toMatchObject({ deleted: true });
      expect(erasedPatient?.json).toBeUndefined();
      expect((await f.store.read('Observation', 'e0'))?.deleted).toBe(true);
      expect((await f.store.read('Observation', 'e1'))?.json).toContain('"e1"');
      // Every batch is still on the chain, untouched.
      const contract = new AnchorContractClient(f.ledger);
      for (const root of roots) expect(await contract.readBatch(root)).not.toBeNull();
    } finally {
      await f.close();
    }

    const verify = sink();
    expect(
      await runVerify({ ...dataDirConfig(dir), progress: false, out: verify.stream, err: verify.stream }),
    ).toBe(0);
    expect(verify.text()).toMatch(/4 anchored, 0 pending, 4 erased/);
  });
});
