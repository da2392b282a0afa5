import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomBytes, X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { certificateAttributes } from '../../src/ledger/identity/embedded-ca.js';
import { openParticipantDirectory } from '../../src/commands/participant.js';
import { TokenService } from '../../src/access/tokens.js';
import type { ParticipantDirectory } from '../../src/access/participants.js';
import { clientCredentials, signedAssertion } from '../support/client-assertion.js';
import { participantCli } from '../support/participants.js';

const TOKEN_URL = 'http://hie.test/auth/token';

const assertionFrom = (keyPem: string, clientId: string, alg = 'ES384') =>
  signedAssertion(keyPem, clientId, TOKEN_URL, alg);

describe('participants', () => {
  let dataDir: string;
  let directory: ParticipantDirectory;

  beforeAll(async () => {
    dataDir = mkdtempSync(join(tmpdir(), 'hie-participants-'));
  });
  afterAll(() => {
    directory?.close();
    rmSync(dataDir, { recursive: true, force: true });
  });

  it('enrols through the CLI: cert.pem with hie.role and a pseudonymous hie.id, key.pem mode 0600', async () => {
    const out = join(dataDir, 'out-ehr');
    const printed = JSON.parse(
      await participantCli([
        'participant',
        'enroll',
        '--data-dir',
        dataDir,
        '--role',
        'system',
        '--id',
        'ehr-a',
        '--resource',
        'Organization/hosp-a',
        '--out',
        out,
      ]),
    );
    expect(printed).toMatchObject({
      clientId: 'ehr-a',
      role: 'system',
      status: 'enrolled',
      organization: 'Organization/hosp-a',
    });
    const cert = readFileSync(join(out, 'cert.pem'), 'utf8');
    expect(statSync(join(out, 'key.pem')).mode & 0o777).toBe(0o600);
    const attrs = certificateAttributes(cert);
    expect(attrs['hie.role']).toBe('system');
    expect(attrs['hie.id']).toBe(printed.pseudonym);
    expect(attrs['hie.id']).not.toContain('ehr-a');
    const x509 = new X509Certificate(cert);
    expect(x509.subject).toContain(`CN=${printed.pseudonym}`);
    expect(x509.subject).not.toContain('hosp-a');
    expect(x509.publicKey.asymmetricKeyDetails?.namedCurve).toBe('secp384r1');
  });

  it('validates role links', async () => {
    await expect(
      participantCli(['participant', 'register', '--data-dir', dataDir, '--role', 'patient', '--id', 'p-x']),
    ).rejects.toThrow(/Patient/);
    await expect(
      participantCli([
        'participant',
        'register',
        '--data-dir',
        dataDir,
        '--role',
        'clinician',
        '--id',
        'c-x',
        '--resource',
        'Practitioner/1',
      ]),
    ).rejects.toThrow(/organization/);
    await expect(
      participantCli(['participant', 'register', '--data-dir', dataDir, '--role', 'root', '--id', 'r-x']),
    ).rejects.toThrow(/role/);
  });

  it('register then enroll (P-256), list, and the token service accepts assertions signed with the enrolled key', async () => {
    await participantCli([
      'participant',
      'register',
      '--data-dir',
      dataDir,
      '--role',
      'clinician',
      '--id',
      'dr-b',
      '--resource',
      'Practitioner/7',
      '--organization',
      'Organization/hosp-a',
    ]);
    const out = join(dataDir, 'out-dr');
    await participantCli([
      'participant',
      'enroll',
      '--data-dir',
      dataDir,
      '--role',
      'clinician',
      '--id',
      'dr-b',
      '--out',
      out,
      '--key-type',
      'P-256',
    ]);
    const listed = JSON.parse(await participantCli(['participant', 'list', '--data-dir', dataDir, '--json']));
    expect(listed.map((p: { clientId: string }) => p.clientId).sort()).toEqual(['dr-b', 'ehr-a']);
    const table = await participantCli(['participant', 'list', '--data-dir', dataDir]);
    expect(table).toContain('dr-b');

    directory = await openParticipantDirectory(dataDir);
    const tokens = new TokenService({ directory, secret: randomBytes(32) });
    const drKey = readFileSync(join(out, 'key.pem'), 'utf8');
    const response = await tokens.exchange(
      clientCredentials(await assertionFrom(drKey, 'dr-b', 'ES256')),
      TOKEN_URL,
    );
    expect(response.fhirUser).toBe('Practitioner/7');
    const caller = tokens.verifyAccessToken(response.access_token);
    expect(caller).toMatchObject({
      role: 'clinician',
      organization: 'Organization/hosp-a',
      fhirUser: 'Practitioner/7',
    });

    const ehrKey = readFileSync(join(dataDir, 'out-ehr', 'key.pem'), 'utf8');
    const ehrToken = (
      await tokens.exchange(clientCredentials(await assertionFrom(ehrKey, 'ehr-a')), TOKEN_URL)
    ).access_token;
    expect(tokens.verifyAccessToken(ehrToken).role).toBe('system');

    // Revocation by the CLI (another connection, as another process would be) is seen by the running service at once.
    await participantCli(['participant', 'revoke', '--data-dir', dataDir, '--id', 'ehr-a']);
    await new Promise((resolve) => setTimeout(resolve, 50)); // the file-change notification: one event-loop turn
    expect(() => tokens.verifyAccessToken(ehrToken)).toThrow(/revoked/);
    await expect(
      tokens.exchange(clientCredentials(await assertionFrom(ehrKey, 'ehr-a')), TOKEN_URL),
    ).rejects.toMatchObject({ error: 'invalid_client' });
    // The CA revoked its certificate too.
    const identity = (await import('../../src/ledger/identity/identity-provider.js'))
      .EmbeddedIdentityProvider;
    const provider = await identity.open(join(dataDir, 'identity', 'ca'), { mspId: 'Org1MSP' });
    expect(provider.embeddedCa.isRevoked(readFileSync(join(dataDir, 'out-ehr', 'cert.pem'), 'utf8'))).toBe(
      true,
    );
    await expect(
      participantCli([
        'participant',
        'enroll',
        '--data-dir',
        dataDir,
        '--role',
        'system',
        '--id',
        'ehr-a',
        '--out',
        join(dataDir, 'again'),
      ]),
    ).rejects.toThrow(/revoked/);
  });

  it('re-enrolment issues a new certificate and the old key stops working', async () => {
    const d = directory;
    const first = await d.enroll({ clientId: 'lab-1', role: 'lab', resource: 'Organization/lab' });
    const second = await d.enroll({ clientId: 'lab-1', role: 'lab' });
    expect(second.enrollment.serial).not.toBe(first.enrollment.serial);
    const tokens = new TokenService({ directory: d, secret: randomBytes(32) });
    const request = async (key: string) =>
      tokens.exchange(clientCredentials(await assertionFrom(key, 'lab-1')), TOKEN_URL);
    await expect(request(first.enrollment.privateKey)).rejects.toMatchObject({ error: 'invalid_client' });
    expect((await request(second.enrollment.privateKey)).access_token).toBeTruthy();
  });

  it('keeps stable random pseudonyms for FHIR references', async () => {
    const a = directory.pseudonymOf('Patient/123');
    expect(a).toMatch(/^[A-Za-z0-9_-]{22}$/);
    // Random, not derived from the reference: another directory names the same reference differently (two
    // independent 128-bit values; a substring check on random text would fail by chance).
    const otherDir = mkdtempSync(join(tmpdir(), 'hie-participants-other-'));
    try {
      const other = await openParticipantDirectory(otherDir);
      expect(other.pseudonymOf('Patient/123')).not.toBe(a);
      other.close();
    } finally {
      rmSync(otherDir, { recursive: true, force: true });
    }
    expect(directory.pseudonymOf('Patient/123')).toBe(a);
    expect(directory.referenceOf(a)).toBe('Patient/123');
    expect(directory.existingPseudonymOf('Patient/999')).toBeUndefined();
  });
});
