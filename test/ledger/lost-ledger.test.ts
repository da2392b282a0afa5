/**
 * A lost or replaced ledger is noticed at start-up: the service refuses to start, naming what the ledger lacks and
 * what to do, instead of starting an empty chain and serving grants from its consent checkpoint (where the
 * patient's revocation would then fail, and the revoked grant come back after a restart).
 */
import { copyFileSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EmbeddedCa } from '../../src/ledger/identity/embedded-ca.js';
import { acquireChain, serviceIdentity } from '../../src/ledger/embedded/index.js';
import { ConsentService } from '../../src/consent/consent-service.js';
import { LedgerMismatchError } from '../../src/ledger/ledger-continuity.js';
import { consentToGrants } from '../../src/consent/consent-resource.js';
import {
  actor,
  grantedObservation,
  privacyConsent,
  startHarness,
  type Harness,
} from '../access/app-harness.js';
import { startFabricHarness, type FabricHarness } from '../fabric/support/harness.js';
import { TestPseudonyms } from './helpers.js';

/** Removes the chain file and its SQLite companions (-wal, -shm), as a lost disk or a careless restore would. */
function loseChain(dataDir: string): void {
  const dir = join(dataDir, 'ledger');
  for (const name of readdirSync(dir)) if (name.startsWith('chain.sqlite')) rmSync(join(dir, name));
}

async function grantedHarness(): Promise<{ h: Harness }> {
  const h = await startHarness();
  const sys = await h.enrol('sys-a', 'system', 'Organization/hosp-a');
  await h.enrol('dr-b', 'clinician', 'Practitioner/dr-b', 'Organization/hosp-b');
  await grantedObservation(h, sys, 5);
  return { h };
}

describe('the embedded chain file lost or replaced between runs', () => {
  // Built once (the first app of a run loads the validator's definitions): a granted service, and another one.
  let h: Harness;
  let other: Harness;
  beforeAll(async () => {
    ({ h } = await grantedHarness());
    ({ h: other } = await grantedHarness());
  });
  afterAll(async () => {
    await h?.stop();
    await other?.stop();
  });

  it('lost: the start is refused, naming the missing transaction and the chain file to restore', async () => {
    // Every write anchored (the anchor journal then names a committed batch too).
    const anchorer = h.app.integrity!.anchorer;
    await anchorer.drain();
    expect(anchorer.status().committedBatches).toBeGreaterThan(0);
    const backup = mkdtempSync(join(tmpdir(), 'hie-chain-backup-'));
    const restart = h.restart({
      whileStopped: () => {
        copyFileSync(join(h.dataDir, 'ledger', 'chain.sqlite'), join(backup, 'chain.sqlite'));
        loseChain(h.dataDir);
      },
    });
    await expect(restart).rejects.toThrow(LedgerMismatchError);
    await expect(restart).rejects.toThrow(/does not hold what the anchor journal .* says was committed/);
    await expect(restart).rejects.toThrow(/Restore DATA\/ledger\/chain\.sqlite from the backup/);

    // The chain file restored: the service starts, the grant still in force.
    await h.restart({
      whileStopped: () => {
        loseChain(h.dataDir);
        copyFileSync(join(backup, 'chain.sqlite'), join(h.dataDir, 'ledger', 'chain.sqlite'));
      },
    });
    expect((await h.request(await h.token('dr-b'), 'GET', '/Observation/o5')).status).toBe(200);
    rmSync(backup, { recursive: true, force: true });
  });

  it("replaced by another data directory's chain: the start is refused", async () => {
    await other.app.close();
    const restart = h.restart({
      whileStopped: () => {
        loseChain(h.dataDir);
        copyFileSync(
          join(other.dataDir, 'ledger', 'chain.sqlite'),
          join(h.dataDir, 'ledger', 'chain.sqlite'),
        );
      },
    });
    await expect(restart).rejects.toThrow(/refusing to start: the embedded ledger .* does not hold/);
  });
});

describe('the consent checkpoint against the ledger', () => {
  let dir: string;
  let ca: EmbeddedCa;
  const pseudonyms = new TestPseudonyms();
  const checkpointFile = () => join(dir, 'checkpoints', 'consent.json');
  const openChain = async (file: string) => {
    const { chain, release } = await acquireChain({
      file,
      msps: [{ mspId: 'Org1MSP', rootCertificates: [ca.certificate], isRevoked: (pem) => ca.isRevoked(pem) }],
    });
    return { ledger: chain.connect(await serviceIdentity(ca, join(dir, 'svc'))), release };
  };

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'hie-continuity-'));
    ca = await EmbeddedCa.open(join(dir, 'ca'), { mspId: 'Org1MSP' });
    const { ledger, release } = await openChain(join(dir, 'chain-a.sqlite'));
    const service = await ConsentService.open({ ledger, pseudonyms, checkpointFile: checkpointFile() });
    const consent = privacyConsent('Patient/p1', { type: 'permit', actor: [actor('Practitioner/d')] });
    await service
      .prepareConsent('Consent/c1', consentToGrants(consent), {
        pseudonym: 'actor-pseudonym',
        inPerson: true,
      })
      .commit();
    expect(service.allows('Patient/p1', ['Practitioner/d'], 'Observation')).toBe(true);
    await service.close(); // saves the checkpoint
    await release();
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('opens on the chain it was written from', async () => {
    const { ledger, release } = await openChain(join(dir, 'chain-a.sqlite'));
    const service = await ConsentService.open({ ledger, pseudonyms, checkpointFile: checkpointFile() });
    expect(service.allows('Patient/p1', ['Practitioner/d'], 'Observation')).toBe(true);
    await service.close();
    await release();
  });

  it('refuses an empty chain in its place, never serving the checkpoint', async () => {
    const { ledger, release } = await openChain(join(dir, 'chain-empty.sqlite'));
    await expect(
      ConsentService.open({ ledger, pseudonyms, checkpointFile: checkpointFile() }),
    ).rejects.toThrow(/does not hold what the consent checkpoint .*consent\.json says was committed/);
    await release();
  });

  it('refuses a different chain with blocks of its own', async () => {
    const { ledger, release } = await openChain(join(dir, 'chain-b.sqlite'));
    for (let i = 0; i < 5; i++)
      await ledger.submit('consent:RecordAccess', [
        JSON.stringify([{ recordId: `other-record-${i}`, patientTag: 'a'.repeat(64), sealed: 'c2VhbGVk' }]),
      ]);
    await expect(
      ConsentService.open({ ledger, pseudonyms, checkpointFile: checkpointFile() }),
    ).rejects.toThrow(LedgerMismatchError);
    await release();
  });
});

describe('the consent checkpoint against a Fabric channel that was away at start', () => {
  let fabric: FabricHarness;
  let dir: string;
  const pseudonyms = new TestPseudonyms();

  beforeAll(async () => {
    fabric = await startFabricHarness();
    dir = mkdtempSync(join(tmpdir(), 'hie-continuity-fabric-'));
  });
  afterAll(async () => {
    await fabric?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('serves from the checkpoint while the peer is away, and refuses every decision once the channel proves different', async () => {
    // A checkpoint written against another chain (an embedded one), as after pointing the service at a new network.
    const ca = await EmbeddedCa.open(join(dir, 'ca'), { mspId: 'Org1MSP' });
    const { chain, release } = await acquireChain({
      file: join(dir, 'chain-a.sqlite'),
      msps: [{ mspId: 'Org1MSP', rootCertificates: [ca.certificate], isRevoked: (pem) => ca.isRevoked(pem) }],
    });
    const checkpointFile = join(dir, 'consent.json');
    const first = await ConsentService.open({
      ledger: chain.connect(await serviceIdentity(ca, join(dir, 'svc'))),
      pseudonyms,
      checkpointFile,
    });
    const consent = privacyConsent('Patient/p1', { type: 'permit', actor: [actor('Practitioner/d')] });
    await first
      .prepareConsent('Consent/c1', consentToGrants(consent), {
        pseudonym: 'actor-pseudonym',
        inPerson: true,
      })
      .commit();
    await first.close();
    await release();

    fabric.server.stop();
    const service = await ConsentService.open({
      ledger: fabric.connect({ retry: { attempts: 2, initialDelayMs: 20, maxDelayMs: 50 } }),
      pseudonyms,
      checkpointFile,
      revocationRetryMs: { first: 50, max: 100 },
    });
    // Not checked yet: the checkpoint serves, as when the ledger goes away later.
    expect(service.allows('Patient/p1', ['Practitioner/d'], 'Observation')).toBe(true);
    expect(service.ledgerMismatch).toBeUndefined();
    await fabric.server.start();
    for (let i = 0; i < 400 && !service.ledgerMismatch; i++) await new Promise((r) => setTimeout(r, 25));
    expect(service.ledgerMismatch).toMatch(/does not hold what the consent checkpoint .* says was committed/);
    expect(service.allows('Patient/p1', ['Practitioner/d'], 'Observation')).toBe(false);
    await service.close();
  });
});
