/**
 * The alarm before enrolment certificates expire, through the real HTTP /readyz and /metrics: the service identity
 * and a participant certificate issued by the project's embedded CA with near ends of validity. Degraded (still 200)
 * within --cert-expiry-warn-days, failing (503) once the service identity has expired, a participant's expiry only a
 * warning; a log line names the role and the date, nothing else.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { EmbeddedCa } from '../../src/ledger/identity/embedded-ca.js';
import { DEFAULT_MSP_ID } from '../../src/config/config.js';
import { ParticipantDirectory } from '../../src/access/participants.js';
import { EmbeddedIdentityProvider } from '../../src/ledger/identity/identity-provider.js';
import { bootApp, type BootedApp } from '../support/app-harness.js';

const temporary: string[] = [];
const apps: BootedApp[] = [];
afterEach(async () => {
  for (const app of apps.splice(0)) await app.stop();
});
afterAll(() => {
  for (const dir of temporary) rmSync(dir, { recursive: true, force: true });
});

/** A data directory whose service identity the embedded CA issued for `validityDays` days. */
async function dataDirWithServiceIdentity(validityDays: number): Promise<string> {
  const dataDir = mkdtempSync(join(tmpdir(), 'hie-cert-expiry-'));
  temporary.push(dataDir);
  const ca = await EmbeddedCa.open(join(dataDir, 'identity', 'ca'), { mspId: DEFAULT_MSP_ID });
  const enrollmentId = 'svc-expiry-test';
  const enrollment = await ca.enroll({
    enrollmentId,
    attrs: { 'hie.role': 'service', 'hie.id': enrollmentId },
    validityDays,
  });
  const dir = join(dataDir, 'identity', 'service');
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  writeFileSync(join(dir, 'key.pem'), enrollment.privateKey, { mode: 0o600 });
  writeFileSync(join(dir, 'cert.pem'), enrollment.certificate, { mode: 0o600 });
  writeFileSync(join(dir, 'enrollment-id'), `${enrollmentId}\n`, { mode: 0o600 });
  return dataDir;
}

async function serve(
  dataDir: string,
  flags: Record<string, unknown> = {},
): Promise<{ app: BootedApp; base: string }> {
  const app = await bootApp({ logLevel: 'info', auth: 'dev-open', dataDir, ...flags });
  apps.push(app);
  const address = await app.app.fastify.listen({ port: 0, host: '127.0.0.1' });
  return { app, base: address };
}

async function readyz(
  base: string,
): Promise<{ status: number; body: { status: string; checks: Record<string, string> } }> {
  const response = await fetch(`${base}/readyz`);
  return {
    status: response.status,
    body: (await response.json()) as { status: string; checks: Record<string, string> },
  };
}

function expirySeconds(metrics: string, role: string): number {
  const line = metrics
    .split('\n')
    .find((l) => l.startsWith(`hie_certificate_expiry_seconds{certificate="${role}"}`));
  expect(line, role).toBeDefined();
  return Number(line!.split(' ').pop());
}

describe('certificate expiry alarm', () => {
  it('is ok far from the end, degraded within the warning window, with a gauge and a log line', async () => {
    const dataDir = await dataDirWithServiceIdentity(10);
    const { app, base } = await serve(dataDir);
    const degraded = await readyz(base);
    expect(degraded.status).toBe(200);
    expect(degraded.body.status).toBe('degraded');
    expect(degraded.body.checks.certificates).toBe('degraded');
    expect(degraded.body.checks.ledger).toBe('ok');

    const metrics = await (await fetch(`${base}/metrics`)).text();
    const left = expirySeconds(metrics, 'service-identity');
    expect(left).toBeGreaterThan(9 * 86_400);
    expect(left).toBeLessThanOrEqual(10 * 86_400);
    expect(expirySeconds(metrics, 'ca')).toBeGreaterThan(9 * 365 * 86_400);

    const warning = app.logs.find((line) => line.includes('the service-identity certificate expires at'));
    expect(warning).toBeDefined();
    expect(warning).not.toContain('svc-expiry-test');
    await app.app.close();

    // The same certificate with a window shorter than what is left: ok.
    const calm = await serve(dataDir, { certExpiryWarnDays: '5' });
    const ok = await readyz(calm.base);
    expect(ok.status).toBe(200);
    expect(ok.body.status).toBe('ready');
    expect(ok.body.checks.certificates).toBe('ok');
  });

  it("fails once the service identity has expired; a participant's expiry only warns", async () => {
    const expired = await serve(await dataDirWithServiceIdentity(0));
    const failing = await readyz(expired.base);
    expect(failing.status).toBe(503);
    expect(failing.body.checks.certificates).toBe('failing');
    expect(
      expired.app.logs.some((line) => line.includes('the service-identity certificate expired at')),
    ).toBe(true);

    const dataDir = await dataDirWithServiceIdentity(365);
    const identity = await EmbeddedIdentityProvider.open(join(dataDir, 'identity', 'ca'), {
      mspId: DEFAULT_MSP_ID,
    });
    const participants = ParticipantDirectory.open(dataDir, identity);
    const participant = await participants.register({ clientId: 'expiring-admin', role: 'admin' });
    const enrollment = await identity.embeddedCa.enroll({
      enrollmentId: participant.pseudonym,
      attrs: { 'hie.role': 'admin', 'hie.id': participant.pseudonym },
      validityDays: 0,
    });
    participants.close();
    // The directory stores what the CA issued (as `participant enroll` does), here an already expired certificate.
    const { default: Database } = await import('better-sqlite3');
    const db = new Database(join(dataDir, 'identity', 'participants.sqlite'));
    db.prepare(
      `UPDATE participants SET status = 'enrolled', serial = ?, certificate = ? WHERE client_id = ?`,
    ).run(enrollment.serial, enrollment.certificate, participant.clientId);
    db.close();

    const { base } = await serve(dataDir);
    const warned = await readyz(base);
    expect(warned.status).toBe(200);
    expect(warned.body.checks.certificates).toBe('degraded');
    const metrics = await (await fetch(`${base}/metrics`)).text();
    expect(expirySeconds(metrics, 'participants')).toBeLessThan(0);
  });
});
