/**
 * The home's network ids and grant index (DATA/identity/network-ids.sqlite): kept across restarts, and the tags and
 * sealed details made with them open only with the same npid and record.
 */
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  grantTag,
  NetworkIds,
  newRecordId,
  openDetails,
  patientTag,
  sealDetails,
} from '../../src/consent/network-ids.js';

describe('network ids', () => {
  const dir = mkdtempSync(join(tmpdir(), 'hie-network-ids-'));
  const file = join(dir, 'identity', 'network-ids.sqlite');
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('keeps npids, the grant index and the home MSP across a reopen, in a private file', () => {
    const link = {
      patientReference: 'Patient/p1',
      patient: 'pseudo-p1',
      grantee: 'pseudo-d',
      consent: 'pseudo-c1',
    };
    const first = new NetworkIds(file);
    const npid = first.npidOf('Patient/p1');
    expect(Buffer.from(npid, 'base64url')).toHaveLength(32);
    expect(first.npidOf('Patient/p2')).not.toBe(npid);
    const grantId = first.grantIdOf(link);
    expect(first.grantIdOf(link)).toBe(grantId); // one id per (patient, grantee, consent)
    expect(first.grantIdOf({ ...link, consent: 'pseudo-c2' })).not.toBe(grantId);
    expect(first.homeMsp()).toBeUndefined();
    first.noteHomeMsp('HomeMSP');
    first.noteHomeMsp('OtherMSP'); // the first one noted stays
    first.close();

    const reopened = new NetworkIds(file);
    expect(reopened.existingNpidOf('Patient/p1')).toBe(npid);
    expect(reopened.existingNpidOf('Patient/p3')).toBeUndefined();
    expect(reopened.linkOf(grantId)).toEqual(link);
    expect(reopened.linkOf(newRecordId())).toBeUndefined();
    expect(reopened.grantIdsOf('Patient/p1')).toHaveLength(2);
    expect(reopened.existingGrantIdOf('pseudo-p1', 'pseudo-d', 'pseudo-c1')).toBe(grantId);
    expect(reopened.homeMsp()).toBe('HomeMSP');
    reopened.close();
    expect(statSync(file).mode & 0o777).toBe(0o600);
  });

  it('tags are per record and kind; sealed details open only with the npid and record they were made for', () => {
    const ids = new NetworkIds();
    const npid = ids.npidOf('Patient/p1');
    const other = ids.npidOf('Patient/p2');
    ids.close();
    const [a, b] = [newRecordId(), newRecordId()];
    expect(patientTag(npid, 'access', a)).toMatch(/^[0-9a-f]{64}$/);
    expect(patientTag(npid, 'access', a)).toBe(patientTag(npid, 'access', a));
    expect(patientTag(npid, 'access', a)).not.toBe(patientTag(npid, 'access', b));
    expect(patientTag(npid, 'access', a)).not.toBe(patientTag(npid, 'grant', a));
    expect(patientTag(npid, 'access', a)).not.toBe(patientTag(other, 'access', a));
    expect(grantTag(npid, a, 'grant-1')).not.toBe(grantTag(npid, b, 'grant-1'));

    const details = { accessor: 'pseudo-d', interaction: 'read', count: 1 };
    const sealed = sealDetails(npid, a, details);
    expect(sealDetails(npid, a, details)).not.toBe(sealed); // a fresh nonce each time
    expect(openDetails(npid, a, sealed)).toEqual(details);
    expect(openDetails(other, a, sealed)).toBeUndefined();
    expect(openDetails(npid, b, sealed)).toBeUndefined(); // moved to another record
    const tampered = Buffer.from(sealed, 'base64url');
    tampered[20] ^= 1; // one bit of the ciphertext
    expect(openDetails(npid, a, tampered.toString('base64url'))).toBeUndefined();
    expect(openDetails(npid, a, 'short')).toBeUndefined();
  });
});
