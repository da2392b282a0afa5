/**
 * The contracts of the PseudonymResolver and NetworkIdIndex ports (src/consent/consent-service.ts,
 * src/consent/network-ids.ts): what one view makes, another view on the same storage (another replica) finds, and
 * two views making one value at once agree. Run on both adapters (network-ids-adapters.test.ts): the data directory's SQLite
 * files and the PostgreSQL database.
 */
import { afterEach, describe, expect, it } from 'vitest';
import type { PseudonymResolver } from '../../src/consent/consent-service.js';
import type { GrantLink, NetworkIdIndex } from '../../src/consent/network-ids.js';

type Closable = { close(): void | Promise<void> };

export interface SharedIdsUnderTest {
  /** Two views of one fresh, empty storage (as two replicas have), and how to drop it. */
  open(): Promise<{
    pseudonyms: [PseudonymResolver, PseudonymResolver];
    ids: [NetworkIdIndex, NetworkIdIndex];
    close(): Promise<void>;
  }>;
}

/** Waits for a value made through another view to be seen there (its notification); fails after 10 s. */
async function seen<T>(read: () => T | undefined, what: string): Promise<T> {
  for (let waited = 0; ; waited += 10) {
    const value = read();
    if (value !== undefined) return value;
    if (waited >= 10_000) throw new Error(`not seen within 10 s: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

const pseudonymsOf = async (resolver: PseudonymResolver, references: string[]) => {
  await resolver.prepare?.(references);
  return references.map((reference) => resolver.pseudonymOf(reference));
};

export function describeSharedIdsContract(name: string, subject: SharedIdsUnderTest): void {
  describe(`PseudonymResolver and NetworkIdIndex contracts: ${name}`, () => {
    let opened: { close(): Promise<void> } | undefined;
    const open = async () => {
      const views = await subject.open();
      opened = views;
      return views;
    };
    afterEach(async () => {
      await opened?.close();
      opened = undefined;
    });

    it('pseudonyms: random, stable, found by the other view both ways; made at once by both, one value', async () => {
      const { pseudonyms } = await open();
      const [one, other] = pseudonyms;
      const [patient, grantee] = await pseudonymsOf(one, ['Patient/1', 'Practitioner/2']);
      expect(patient).toMatch(/^[A-Za-z0-9][A-Za-z0-9_-]{21}$/);
      expect(grantee).not.toBe(patient);
      expect(await pseudonymsOf(one, ['Patient/1'])).toEqual([patient]);
      expect(await seen(() => other.existingPseudonymOf('Patient/1'), 'Patient/1')).toBe(patient);
      expect(await seen(() => other.referenceOf?.(grantee!), 'the reference of a pseudonym')).toBe(
        'Practitioner/2',
      );
      expect(other.existingPseudonymOf('Patient/never')).toBeUndefined();
      const both = await Promise.all([
        pseudonymsOf(one, ['Consent/c1', 'Patient/3']),
        pseudonymsOf(other, ['Patient/3', 'Consent/c1']),
      ]);
      expect(both[0]).toEqual([...both[1]].reverse());
    });

    it('npids: made once, found by the other view both ways; made at once by both, one value', async () => {
      const { ids } = await open();
      const [one, other] = ids;
      const npid = await one.npidOf('Patient/1');
      expect(Buffer.from(npid, 'base64url')).toHaveLength(32);
      expect(await one.npidOf('Patient/1')).toBe(npid);
      expect(await seen(() => other.existingNpidOf('Patient/1'), 'the npid')).toBe(npid);
      expect(await seen(() => other.referenceOfNpid(npid), 'the npid reference')).toBe('Patient/1');
      expect(other.existingNpidOf('Patient/never')).toBeUndefined();
      const [a, b] = await Promise.all([one.npidOf('Patient/2'), other.npidOf('Patient/2')]);
      expect(a).toBe(b);
    });

    it('grant index: one id per (patient, grantee, consent), the other view reads its link; one home MSP', async () => {
      const { ids } = await open();
      const [one, other] = ids;
      const link: GrantLink = { patientReference: 'Patient/1', patient: 'pp', grantee: 'gg', consent: 'cc' };
      const grantId = await one.grantIdOf(link);
      expect(await one.grantIdOf({ ...link })).toBe(grantId);
      const second = await one.grantIdOf({ ...link, consent: 'c2' });
      expect(second).not.toBe(grantId);
      expect(one.linkOf(grantId)).toEqual(link);
      // Another replica's grant: found once caught up (a shared index), at once otherwise.
      if (other.catchUp) expect(await other.catchUp(grantId)).toBe(true);
      expect(other.linkOf(grantId)).toEqual(link);
      expect(await seen(() => other.existingGrantIdOf('pp', 'gg', 'cc'), 'the grant id')).toBe(grantId);
      await seen(() => (other.grantIdsOf('Patient/1').length === 2 ? true : undefined), 'both grant ids');
      expect(other.grantIdsOf('Patient/1')).toEqual([grantId, second].sort());
      if (other.catchUp) expect(await other.catchUp('not-a-grant')).toBe(false);
      expect(other.linkOf('not-a-grant')).toBeUndefined();
      const [a, b] = await Promise.all([
        one.grantIdOf({ ...link, grantee: 'g3' }),
        other.grantIdOf({ ...link, grantee: 'g3' }),
      ]);
      expect(a).toBe(b);

      expect(one.homeMsp()).toBeUndefined();
      await one.noteHomeMsp('Org1MSP');
      await other.noteHomeMsp('Org2MSP'); // the first noted stays
      expect(one.homeMsp()).toBe('Org1MSP');
      expect(other.homeMsp()).toBe('Org1MSP');
    });
  });
}

export type { Closable };
