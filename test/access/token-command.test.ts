/**
 * `hie-ledger token` (issue 15): a participant gets an access token with its own key, through the real command
 * process, against a real listening service; the service's token key is never read. Failures are one line on
 * stderr and a non-zero exit, never a stack trace.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { generateKeyPairSync } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cliNodeArgs } from '../support/cli-build.js';
import { createPrivateKey, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { SignJWT } from 'jose';
import { openParticipantDirectory } from '../../src/commands/participant.js';
import type { ParticipantDirectory } from '../../src/access/participants.js';
import { bootApp, type BootedApp } from '../support/app-harness.js';

const run = promisify(execFile);

/** Runs `hie-ledger ARGS` as its own process (tsx, this checkout); never throws: the exit code is returned. */
async function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [...cliNodeArgs(), ...args]);
    return { code: 0, stdout, stderr };
  } catch (err) {
    const failed = err as { code?: number; stdout?: string; stderr?: string };
    return { code: failed.code ?? -1, stdout: failed.stdout ?? '', stderr: failed.stderr ?? '' };
  }
}

describe('hie-ledger token', () => {
  let booted: BootedApp;
  let participants: ParticipantDirectory;
  let url: string;
  let keyFile: string;
  const keysDir = mkdtempSync(join(tmpdir(), 'hie-token-keys-'));

  beforeAll(async () => {
    // No --base-url: the audience is the URL the client used, as announced by the SMART configuration.
    booted = await bootApp({
      logLevel: 'warn',
      auth: 'smart',
      organization: 'Organization/hosp-a',
      tokenSeconds: '1800',
    });
    const address = await booted.app.fastify.listen({ host: '127.0.0.1', port: 0 });
    url = `${address}/fhir`;
    participants = await openParticipantDirectory(booted.dataDir);
    const { enrollment } = await participants.enroll({
      clientId: 'ehr-a',
      role: 'system',
      organization: 'Organization/hosp-a',
    });
    keyFile = join(keysDir, 'ehr-a.pem');
    writeFileSync(keyFile, enrollment.privateKey, { mode: 0o600 });
  }, 60_000);

  afterAll(async () => {
    participants?.close();
    await booted?.stop();
    rmSync(keysDir, { recursive: true, force: true });
  });

  it('prints a token that opens the FHIR API, with the scopes asked for', async () => {
    const result = await cli(['token', '--id', 'ehr-a', '--key', keyFile, '--url', url]);
    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);
    const token = result.stdout.trim();
    expect(token).toMatch(/^[A-Za-z0-9._~+/=-]+$/);
    const read = await fetch(`${url}/Patient`, { headers: { authorization: `Bearer ${token}` } });
    expect(read.status).toBe(200);

    const narrowed = await cli([
      'token',
      '--id',
      'ehr-a',
      '--key',
      keyFile,
      '--url',
      url,
      '--scope',
      'system/*.cruds system/Patient.rs',
      '--json',
    ]);
    expect(narrowed.code).toBe(0);
    const response = JSON.parse(narrowed.stdout) as { scope: string; token_type: string; expires_in: number };
    expect(response.token_type).toBe('Bearer');
    expect(response.expires_in).toBe(1800); // --token-seconds
    // SMART v2's system/*.cruds is narrowed to what a system may have, not refused.
    expect(response.scope.split(' ')).toEqual(['system/*.rs', 'system/*.cud', 'system/Patient.rs']);
  }, 60_000);

  it('a request without a token is told how to get one, and about --auth dev-open', async () => {
    const res = await fetch(`${url}/Patient`);
    expect(res.status).toBe(401);
    const outcome = (await res.json()) as { issue: { diagnostics: string }[] };
    expect(outcome.issue[0]!.diagnostics).toContain('hie-ledger token --id ID --key KEY.pem');
    expect(outcome.issue[0]!.diagnostics).toContain('--auth dev-open');
  });

  it('a key that is not the participant’s is refused in one line, with the service’s reason', async () => {
    const other = generateKeyPairSync('ec', { namedCurve: 'secp384r1' }).privateKey.export({
      type: 'pkcs8',
      format: 'pem',
    });
    const otherFile = join(keysDir, 'other.pem');
    writeFileSync(otherFile, other, { mode: 0o600 });
    const result = await cli(['token', '--id', 'ehr-a', '--key', otherFile, '--url', url]);
    expect(result.code).toBe(1);
    expect(result.stdout).toBe('');
    expect(result.stderr).toMatch(
      /^hie-ledger token: the token request was refused \(invalid_client: .+\)\n$/,
    );
  }, 60_000);

  it('an unknown client, a missing key file and an unreachable service each fail in one line', async () => {
    const unknown = await cli(['token', '--id', 'nobody', '--key', keyFile, '--url', url]);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toMatch(/^hie-ledger token: the token request was refused \(invalid_client/);

    const missing = await cli(['token', '--id', 'ehr-a', '--key', join(keysDir, 'absent.pem'), '--url', url]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toBe(
      `hie-ledger token: cannot read the key ${join(keysDir, 'absent.pem')}: ENOENT\n`,
    );

    // A FHIR base whose SMART configuration does not exist (the service's root, not /fhir).
    const wrongBase = await cli(['token', '--id', 'ehr-a', '--key', keyFile, '--url', `${url}/nothing-here`]);
    expect(wrongBase.code).toBe(1);
    expect(wrongBase.stderr.split('\n').filter(Boolean)).toHaveLength(1);
    expect(wrongBase.stderr).not.toMatch(/\s+at /); // no stack trace
  }, 60_000);

  it('takes localhost and 127.0.0.1 as one service; a wrong audience is told what was expected', async () => {
    const tokenUrl = `${url.replace('/fhir', '')}/auth/token`; // http://127.0.0.1:PORT/auth/token
    const key = createPrivateKey(readFileSync(keyFile, 'utf8'));
    const ask = async (audience: string) => {
      const assertion = await new SignJWT({ jti: randomUUID() })
        .setProtectedHeader({ alg: 'ES384' })
        .setIssuer('ehr-a')
        .setSubject('ehr-a')
        .setAudience(audience)
        .setExpirationTime('1m')
        .sign(key);
      const res = await fetch(tokenUrl, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({
          grant_type: 'client_credentials',
          client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
          client_assertion: assertion,
        }).toString(),
      });
      return {
        status: res.status,
        body: (await res.json()) as { error?: string; error_description?: string },
      };
    };
    expect((await ask(tokenUrl.replace('127.0.0.1', 'localhost'))).status).toBe(200);
    expect((await ask(tokenUrl)).status).toBe(200);
    const wrong = await ask('https://elsewhere.example/auth/token');
    expect(wrong.status).toBe(401);
    expect(wrong.body.error_description).toContain(
      `client_assertion aud must be this service's token URL: ${tokenUrl}`,
    );
  });
});
