/**
 * The ParticipantRegistry contract (src/access/participants.ts): register, enrol, re-enrol, revoke, and what the
 * token service asks, through one view, and what a second view on the same storage (another replica, the CLI in
 * another process) sees of it. Run on both adapters: the data directory's participants.sqlite and the PostgreSQL
 * database (participant-registry.test.ts).
 */
import { createPrivateKey, randomBytes } from 'node:crypto';
import { SignJWT } from 'jose';
import { afterEach, describe, expect, it } from 'vitest';
import type { ParticipantRegistry } from '../../src/access/participants.js';
import { TokenService } from '../../src/access/tokens.js';

const TOKEN_URL = 'http://hie.test/auth/token';

export interface RegistriesUnderTest {
  /** Two views of one fresh, empty storage (as two processes would have) with one CA, and how to drop it. */
  open(): Promise<{ one: ParticipantRegistry; other: ParticipantRegistry; close(): Promise<void> }>;
}

/** Waits for a change made through another view to be seen (its notification); fails after 10 s. */
async function until(condition: () => boolean, what: string): Promise<void> {
  for (let waited = 0; !condition(); waited += 10) {
    if (waited >= 10_000) throw new Error(`not seen within 10 s: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

async function tokenFor(registry: ParticipantRegistry, keyPem: string, clientId: string, alg = 'ES384') {
  const assertion = await new SignJWT({ jti: randomBytes(8).toString('hex') })
    .setProtectedHeader({ alg })
    .setIssuer(clientId)
    .setSubject(clientId)
    .setAudience(TOKEN_URL)
    .setExpirationTime('2m')
    .sign(createPrivateKey(keyPem));
  const tokens = new TokenService({ directory: registry, secret: randomBytes(32) });
  const response = await tokens.exchange(
    {
      grant_type: 'client_credentials',
      client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
      client_assertion: assertion,
    },
    TOKEN_URL,
  );
  return { tokens, response };
}

export function describeParticipantRegistryContract(name: string, subject: RegistriesUnderTest): void {
  describe(`ParticipantRegistry contract: ${name}`, () => {
    let opened: Awaited<ReturnType<RegistriesUnderTest['open']>> | undefined;
    const open = async () => (opened = await subject.open());
    afterEach(async () => {
      await opened?.close();
      opened = undefined;
    });

    it('registers once: get, list and byPseudonym answer; a second registration and bad links are refused', async () => {
      const { one, other } = await open();
      const registered = await one.register({ clientId: 'pat-1', role: 'patient', resource: 'Patient/1' });
      expect(registered).toMatchObject({ clientId: 'pat-1', role: 'patient', status: 'registered' });
      expect(registered.pseudonym).toMatch(/^[A-Za-z0-9][A-Za-z0-9_-]{21}$/);
      expect(await other.get('pat-1')).toEqual(registered);
      expect(await other.byPseudonym(registered.pseudonym)).toEqual(registered);
      expect(await other.get('nobody')).toBeUndefined();
      await expect(
        other.register({ clientId: 'pat-1', role: 'patient', resource: 'Patient/2' }),
      ).rejects.toThrow(/already exists/);
      await expect(
        one.register({ clientId: 'dr-x', role: 'clinician', resource: 'Practitioner/1' }),
      ).rejects.toThrow(/organization/);
      await one.register({ clientId: 'lab-1', role: 'lab', resource: 'Organization/lab' });
      // list() orders by registration time, then client id; both registrations can fall in the same
      // clock tick, so the assertion sorts rather than assume which came first.
      const listed = (await other.list()).map((p) => [p.clientId, p.organization]);
      expect(listed.sort(([a], [b]) => String(a).localeCompare(String(b)))).toEqual([
        ['lab-1', 'Organization/lab'],
        ['pat-1', undefined],
      ]);
      expect(await other.enrolledCertificates()).toEqual([]);
      expect(other.isActive('pat-1')).toBe(false);
    });

    it('enrolled through one view, the client gets a token through the other, which then holds it active', async () => {
      const { one, other } = await open();
      const { participant, enrollment } = await one.enroll({
        clientId: 'ehr-a',
        role: 'system',
        resource: 'Organization/hosp-a',
        keyType: 'P-256',
      });
      expect(participant).toMatchObject({ status: 'enrolled', serial: enrollment.serial });
      expect(one.isActive('ehr-a')).toBe(true);
      expect(await other.enrolledCertificates()).toEqual([enrollment.certificate]);
      const { tokens, response } = await tokenFor(other, enrollment.privateKey, 'ehr-a', 'ES256');
      expect(response.access_token).toBeTruthy();
      expect(other.isActive('ehr-a')).toBe(true);
      expect(tokens.verifyAccessToken(response.access_token)).toMatchObject({
        role: 'system',
        organization: 'Organization/hosp-a',
        participant: participant.pseudonym,
      });
      await expect(
        one.enroll({ clientId: 'ehr-a', role: 'lab', resource: 'Organization/hosp-a' }),
      ).rejects.toThrow(/cannot change/);
    });

    it('re-enrolment: a new certificate, and the previous key gets no token at either view', async () => {
      const { one, other } = await open();
      const first = await one.enroll({ clientId: 'lab-1', role: 'lab', resource: 'Organization/lab' });
      expect(
        (await tokenFor(other, first.enrollment.privateKey, 'lab-1')).response.access_token,
      ).toBeTruthy();
      const second = await other.enroll({ clientId: 'lab-1', role: 'lab' });
      expect(second.enrollment.serial).not.toBe(first.enrollment.serial);
      for (const view of [one, other]) {
        await expect(tokenFor(view, first.enrollment.privateKey, 'lab-1')).rejects.toMatchObject({
          error: 'invalid_client',
        });
        expect(
          (await tokenFor(view, second.enrollment.privateKey, 'lab-1')).response.access_token,
        ).toBeTruthy();
      }
      expect(await one.enrolledCertificates()).toEqual([second.enrollment.certificate]);
    });

    it('revocation through one view: refused there at once, by the other once told; no token, no enrolment', async () => {
      const { one, other } = await open();
      const { enrollment } = await one.enroll({
        clientId: 'dr-b',
        role: 'clinician',
        resource: 'Practitioner/7',
        organization: 'Organization/h',
      });
      const { tokens, response } = await tokenFor(other, enrollment.privateKey, 'dr-b');
      expect(tokens.verifyAccessToken(response.access_token).fhirUser).toBe('Practitioner/7');
      const revoked = await one.revoke('dr-b');
      expect(revoked).toMatchObject({ status: 'revoked' });
      expect(revoked.revokedAt).toBeDefined();
      expect(one.isActive('dr-b')).toBe(false);
      await until(() => !other.isActive('dr-b'), "the other view's revocation");
      expect(() => tokens.verifyAccessToken(response.access_token)).toThrow(/revoked/);
      await expect(tokenFor(other, enrollment.privateKey, 'dr-b')).rejects.toMatchObject({
        error: 'invalid_client',
      });
      expect(await other.enrolledCertificates()).toEqual([]);
      await expect(other.enroll({ clientId: 'dr-b', role: 'clinician' })).rejects.toThrow(/revoked/);
      await expect(other.revoke('nobody')).rejects.toThrow(/unknown participant/);
    });
  });
}
