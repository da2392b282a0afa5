/**
 * The revocation outbox of the consent service: pending revocations kept in DATA/consent-revocations.json are in
 * force from the first decision after a start, are sent to the ledger, and end once the ledger holds them; one the
 * ledger refuses does not hold up the others; a damaged file refuses the start.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EmbeddedCa } from '../../src/ledger/identity/embedded-ca.js';
import { acquireChain, serviceIdentity } from '../../src/ledger/embedded/index.js';
import type { Ledger } from '../../src/ledger/ledger.js';
import { ConsentService, type LedgerGrant } from '../../src/consent/consent-service.js';
import type { PendingRevocation } from '../../src/consent/revocation-outbox.js';
import { consentToGrants } from '../../src/consent/consent-resource.js';
import { actor, privacyConsent } from '../access/app-harness.js';
import { TestPseudonyms } from '../ledger/helpers.js';
import { NetworkIds } from '../../src/consent/network-ids.js';

describe('the revocation outbox', () => {
  let dir: string;
  let ledger: Ledger;
  let release: () => Promise<void>;
  const pseudonyms = new TestPseudonyms();
  // The home's network ids and grant index, kept across the service's restarts (its data directory).
  const networkIds = new NetworkIds();
  const revocationsFile = () => join(dir, 'consent-revocations.json');
  const open = () =>
    ConsentService.open({
      ledger,
      pseudonyms,
      networkIds,
      checkpointFile: join(dir, 'checkpoints', 'consent.json'),
      revocationsFile: revocationsFile(),
      revocationRetryMs: { first: 20, max: 100 },
    });
  /** Read from the ledger (not a cache) by the grant ids of the home's index. */
  const grantsOnLedger = async (patient: string) => {
    const out: LedgerGrant[] = [];
    for (const grantId of networkIds.grantIdsOf(patient))
      out.push(JSON.parse(await ledger.evaluate('consent:ReadGrant', [grantId])) as LedgerGrant);
    return out;
  };

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'hie-outbox-'));
    const ca = await EmbeddedCa.open(join(dir, 'ca'), { mspId: 'Org1MSP' });
    ({ release } = await acquireChain({
      file: join(dir, 'chain.sqlite'),
      msps: [{ mspId: 'Org1MSP', rootCertificates: [ca.certificate], isRevoked: (pem) => ca.isRevoked(pem) }],
    }).then(async ({ chain, release }) => {
      ledger = chain.connect(await serviceIdentity(ca, join(dir, 'svc')));
      return { release };
    }));
  });
  afterAll(async () => {
    networkIds.close();
    await release?.();
    rmSync(dir, { recursive: true, force: true });
  });

  it('a kept revocation is in force at start, reaches the ledger, and a refused one does not hold it up', async () => {
    const service = await open();
    const consent = privacyConsent('Patient/p1', { type: 'permit', actor: [actor('Practitioner/d')] });
    await service
      .prepareConsent('Consent/c1', consentToGrants(consent), {
        pseudonym: 'actor-pseudonym',
        inPerson: true,
      })
      .commit();
    expect(service.allows('Patient/p1', ['Practitioner/d'], 'Observation')).toBe(true);
    expect((await grantsOnLedger('Patient/p1')).map((g) => g.status)).toEqual(['active']);
    await service.close();

    // What a run that lost the ledger mid-way leaves behind: a revocation that cannot be sent (no such grant),
    // queued before one the ledger will take.
    const entry = (patient: string, grantBlock: number): PendingRevocation => ({
      patient,
      grantee: pseudonyms.pseudonymOf('Practitioner/d'),
      consent: pseudonyms.pseudonymOf('Consent/c1'),
      actor: 'actor-pseudonym',
      inPerson: true,
      grantBlock,
    });
    writeFileSync(
      revocationsFile(),
      JSON.stringify({
        version: 1,
        revocations: [entry('never-registered', -1), entry(pseudonyms.pseudonymOf('Patient/p1'), 0)],
      }),
    );
    const restarted = await open();
    // Refused from the first decision, before the ledger has it.
    expect(restarted.allows('Patient/p1', ['Practitioner/d'], 'Observation')).toBe(false);
    for (let i = 0; i < 400 && (await grantsOnLedger('Patient/p1'))[0].status === 'active'; i++)
      await new Promise((resolve) => setTimeout(resolve, 10));
    expect((await grantsOnLedger('Patient/p1')).map((g) => g.status)).toEqual(['revoked']);
    const kept = () =>
      (JSON.parse(readFileSync(revocationsFile(), 'utf8')) as { revocations: PendingRevocation[] })
        .revocations;
    for (let i = 0; i < 400 && kept().length > 1; i++)
      await new Promise((resolve) => setTimeout(resolve, 10));
    // The refused one stays (and refused), the sent one is done.
    expect(kept().map((r) => r.patient)).toEqual(['never-registered']);
    expect(restarted.allows('Patient/p1', ['Practitioner/d'], 'Observation')).toBe(false);
    await restarted.close();
  });

  it('a damaged revocations file refuses the start', async () => {
    writeFileSync(revocationsFile(), '{"version":1,"revocations":[');
    await expect(open()).rejects.toThrow(/consent-revocations\.json is not valid JSON: restore it/);
  });
});
