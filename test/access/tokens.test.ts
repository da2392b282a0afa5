import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHmac, randomBytes } from 'node:crypto';
import Fastify, { type FastifyInstance } from 'fastify';
import { SignJWT } from 'jose';
import { MAX_CLOCK_SKEW_SECONDS, TokenService } from '../../src/access/tokens.js';
import { addressKey, RateLimiter } from '../../src/access/rate-limit.js';
import { OpenAccess } from '../../src/fhir/interactions/access-policy.js';
import { registerAuth } from '../../src/access/auth-routes.js';
import { setupAccess } from '../../src/access/setup.js';
import { DEFAULT_MSP_ID, loadConfig } from '../../src/config/config.js';
import type { ResourceStore } from '../../src/fhir/store/resource-store.js';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { assertion, makeClient, MapDirectory, tokenForm } from './helpers.js';
import { expectErrorCode } from '../support/error-codes.js';

const BASE = 'http://hie.test';
const TOKEN_URL = `${BASE}/auth/token`;

describe('SMART Backend Services token endpoint and FHIR authentication', () => {
  const directory = new MapDirectory();
  const system = directory.add(makeClient('ehr-system', 'system', { organization: 'Organization/hosp' }));
  const clinician = directory.add(
    makeClient(
      'dr-who',
      'clinician',
      { resource: 'Practitioner/7', organization: 'Organization/hosp' },
      'P-256',
    ),
  );
  const patient = directory.add(makeClient('pat-1', 'patient', { resource: 'Patient/p1' }));
  const lab = directory.add(makeClient('lab-1', 'lab', { resource: 'Organization/lab' }));
  const stranger = makeClient('stranger', 'system');
  let now = Date.now();
  const secret = randomBytes(32);
  const tokens = new TokenService({ directory, secret, now: () => now });
  let app: FastifyInstance;
  const logLines: string[] = [];

  beforeAll(async () => {
    app = Fastify({
      logger: { level: 'info', stream: { write: (line: string) => void logLines.push(line) } },
    });
    registerAuth(app, { tokens, policyFor: (caller) => new OpenAccess(caller), publicBaseUrl: BASE });
    app.get('/fhir/Patient/:id', async (request) => ({
      caller: request.hieCaller,
      hasPolicy: request.hieAccess !== undefined,
    }));
    app.get('/fhir/metadata', async () => ({ resourceType: 'CapabilityStatement' }));
    await app.ready();
  });
  afterAll(async () => {
    await app.close();
  });

  async function requestToken(body: string) {
    return app.inject({
      method: 'POST',
      url: '/auth/token',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      payload: body,
    });
  }

  it('issues a short-lived token with role scopes to a system client', async () => {
    const res = await requestToken(tokenForm(await assertion(system, TOKEN_URL)));
    expect(res.statusCode).toBe(200);
    expect(res.headers['cache-control']).toBe('no-store');
    const body = res.json();
    expect(body.token_type).toBe('Bearer');
    expect(body.expires_in).toBeLessThanOrEqual(300);
    expect(body.scope.split(' ')).toEqual(['system/*.rs', 'system/*.cud']);
    const fhir = await app.inject({
      method: 'GET',
      url: '/fhir/Patient/1',
      headers: { authorization: `Bearer ${body.access_token}` },
    });
    expect(fhir.statusCode).toBe(200);
    expect(fhir.json().caller).toMatchObject({
      participant: 'ps-ehr-system',
      role: 'system',
      organization: 'Organization/hosp',
    });
    expect(fhir.json().hasPolicy).toBe(true);
  });

  it('gives clinicians user scopes with fhirUser (ES256 key) and patients patient scopes with patient context', async () => {
    const c = (await requestToken(tokenForm(await assertion(clinician, TOKEN_URL)))).json();
    expect(c.scope).toBe('user/*.rs user/*.cud');
    expect(c.fhirUser).toBe('Practitioner/7');
    const p = (await requestToken(tokenForm(await assertion(patient, TOKEN_URL)))).json();
    expect(p.scope).toBe('patient/*.rs patient/Consent.cud');
    expect(p.patient).toBe('p1');
    const l = (await requestToken(tokenForm(await assertion(lab, TOKEN_URL)))).json();
    expect(l.scope).toContain('user/Observation.cud');
    expect(l.scope).not.toContain('user/*.cud');
  });

  it('grants only the requested scopes the role allows', async () => {
    const res = await requestToken(
      tokenForm(await assertion(patient, TOKEN_URL), { scope: 'patient/Observation.rs system/*.cruds' }),
    );
    expect(res.json().scope).toBe('patient/Observation.rs');
    const none = await requestToken(
      tokenForm(await assertion(patient, TOKEN_URL), { scope: 'system/*.cruds' }),
    );
    expect(none.statusCode).toBe(400);
    expect(none.json().error).toBe('invalid_scope');
  });

  const attacks: [string, () => Promise<string>][] = [
    ['a bad signature (another key)', async () => assertion(system, TOKEN_URL, { key: stranger.privateKey })],
    [
      'alg none',
      async () => {
        const enc = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url');
        const t = Math.floor(Date.now() / 1000);
        return `${enc({ alg: 'none', typ: 'JWT' })}.${enc({ iss: system.clientId, sub: system.clientId, aud: TOKEN_URL, exp: t + 60, jti: 'x1' })}.`;
      },
    ],
    [
      'HS256 keyed with the public key',
      async () => {
        const pem = system.publicKey.export({ type: 'spki', format: 'pem' });
        return new SignJWT({ jti: 'hs-1' })
          .setProtectedHeader({ alg: 'HS256' })
          .setIssuer(system.clientId)
          .setSubject(system.clientId)
          .setAudience(TOKEN_URL)
          .setExpirationTime('2m')
          .sign(new TextEncoder().encode(pem as string));
      },
    ],
    ['the wrong aud', async () => assertion(system, TOKEN_URL, { aud: 'http://elsewhere/auth/token' })],
    ['an expired assertion', async () => assertion(system, TOKEN_URL, { expSeconds: -60 })],
    ['exp more than five minutes ahead', async () => assertion(system, TOKEN_URL, { expSeconds: 3600 })],
    ['iss different from sub', async () => assertion(system, TOKEN_URL, { sub: 'someone-else' })],
    [
      'ES256 with a P-384 key',
      async () => assertion(system, TOKEN_URL, { alg: 'ES256' }).catch(() => 'x.y.z'),
    ],
    ['an unknown client', async () => assertion(stranger, TOKEN_URL)],
    ['iat an hour in the future', async () => assertion(system, TOKEN_URL, { iatSeconds: 3600 })],
    ['iat a year in the future', async () => assertion(system, TOKEN_URL, { iatSeconds: 365 * 86400 })],
    [
      'iat beyond the allowed clock skew',
      async () => assertion(system, TOKEN_URL, { iatSeconds: MAX_CLOCK_SKEW_SECONDS + 5 }),
    ],
    ['nbf an hour in the future', async () => assertion(system, TOKEN_URL, { nbfSeconds: 3600 })],
    ['garbage', async () => 'not-a-jwt'],
  ];
  for (const [name, make] of attacks) {
    it(`refuses ${name} with invalid_client and no token`, async () => {
      const res = await requestToken(tokenForm(await make()));
      expect(res.statusCode).toBe(401);
      expect(res.json()).toMatchObject({ error: 'invalid_client' });
      expect(res.body).not.toContain('access_token');
    });
  }

  it('names a future iat as the reason, and accepts a client clock a little ahead', async () => {
    const future = await requestToken(tokenForm(await assertion(system, TOKEN_URL, { iatSeconds: 3600 })));
    expect(future.json().error_description).toMatch(/iat is in the future/);
    const skewed = await requestToken(
      tokenForm(await assertion(system, TOKEN_URL, { iatSeconds: MAX_CLOCK_SKEW_SECONDS - 10 })),
    );
    expect(skewed.statusCode).toBe(200);
  });

  it('answers a validly signed access token with missing or mistyped claims with 401, never 500', async () => {
    const sign = (claims: unknown) => {
      const payload = Buffer.from(JSON.stringify(claims)).toString('base64url');
      return `hat1.${payload}.${createHmac('sha256', secret).update(payload).digest('base64url')}`;
    };
    const exp = Math.floor(now / 1000) + 60;
    const valid = { sub: 'ehr-system', pid: 'ps-ehr-system', role: 'system', scp: 'system/*.rs', exp };
    // The same MAC check as the service's own tokens: a well-formed one passes.
    const accepted = await app.inject({
      method: 'GET',
      url: '/fhir/Patient/1',
      headers: { authorization: `Bearer ${sign(valid)}` },
    });
    expect(accepted.statusCode).toBe(200);
    const { scp: _scp, ...noScope } = valid;
    for (const claims of [
      noScope,
      { ...valid, scp: 42 },
      { ...valid, scp: ['system/*.rs'] },
      { ...valid, scp: null },
      { ...valid, sub: 7 },
      { ...valid, role: 'superuser' },
      { ...valid, exp: 'tomorrow' },
      { ...valid, org: { reference: 'Organization/x' } },
      null,
      [],
      'system/*.rs',
    ]) {
      const res = await app.inject({
        method: 'GET',
        url: '/fhir/Patient/1',
        headers: { authorization: `Bearer ${sign(claims)}` },
      });
      expect(res.statusCode, JSON.stringify(claims)).toBe(401);
      expect(res.headers['www-authenticate']).toContain('invalid_token');
      expectErrorCode(res, 'token-invalid');
    }
  });

  it('refuses a reused jti', async () => {
    const a = await assertion(system, TOKEN_URL, { jti: 'once-only' });
    expect((await requestToken(tokenForm(a))).statusCode).toBe(200);
    const again = await requestToken(tokenForm(a));
    expect(again.statusCode).toBe(401);
    expect(again.json().error).toBe('invalid_client');
  });

  it('answers malformed requests with invalid_request / unsupported_grant_type', async () => {
    const a = await assertion(system, TOKEN_URL);
    expect((await requestToken(tokenForm(a, { grant_type: 'password' }))).json().error).toBe(
      'unsupported_grant_type',
    );
    expect((await requestToken('grant_type=client_credentials')).json().error).toBe('invalid_request');
    expect((await requestToken(`${tokenForm(a)}&client_assertion=${a}`)).json().error).toBe(
      'invalid_request',
    );
    const json = await app.inject({
      method: 'POST',
      url: '/auth/token',
      headers: { 'content-type': 'application/json' },
      payload: '{}',
    });
    expect(json.statusCode).toBe(400);
    expect(json.json().error).toBe('invalid_request');
  });

  it('refuses a revoked client at once, even with an unexpired token', async () => {
    const revocable = directory.add(makeClient('revocable', 'system'));
    const token = (await requestToken(tokenForm(await assertion(revocable, TOKEN_URL)))).json().access_token;
    const ok = await app.inject({
      method: 'GET',
      url: '/fhir/Patient/1',
      headers: { authorization: `Bearer ${token}` },
    });
    expect(ok.statusCode).toBe(200);
    directory.revoked.add('revocable');
    const refused = await app.inject({
      method: 'GET',
      url: '/fhir/Patient/1',
      headers: { authorization: `Bearer ${token}` },
    });
    expect(refused.statusCode).toBe(401);
    const again = await requestToken(tokenForm(await assertion(revocable, TOKEN_URL)));
    expect(again.json().error).toBe('invalid_client');
  });

  it('answers FHIR requests with no, forged or expired tokens with 401, WWW-Authenticate and an OperationOutcome', async () => {
    const none = await app.inject({ method: 'GET', url: '/fhir/Patient/1' });
    expect(none.statusCode).toBe(401);
    expect(none.headers['www-authenticate']).toMatch(/^Bearer/);
    expect(none.json()).toMatchObject({ resourceType: 'OperationOutcome', issue: [{ code: 'login' }] });
    expectErrorCode(none, 'authentication-required');

    const good = (await requestToken(tokenForm(await assertion(system, TOKEN_URL)))).json()
      .access_token as string;
    const [prefix, payload, mac] = good.split('.');
    const claims = JSON.parse(Buffer.from(payload, 'base64url').toString());
    const forgedPayload = Buffer.from(JSON.stringify({ ...claims, role: 'admin' })).toString('base64url');
    for (const forged of [
      `${prefix}.${forgedPayload}.${mac}`,
      `${good.slice(0, -2)}AA`,
      'hat1.abc',
      'eyJhbGciOiJub25lIn0.e30.',
    ]) {
      const res = await app.inject({
        method: 'GET',
        url: '/fhir/Patient/1',
        headers: { authorization: `Bearer ${forged}` },
      });
      expect(res.statusCode).toBe(401);
      expect(res.headers['www-authenticate']).toContain('invalid_token');
      expectErrorCode(res, 'token-invalid');
    }
    const basic = await app.inject({
      method: 'GET',
      url: '/fhir/Patient/1',
      headers: { authorization: 'Basic Zm9vOmJhcg==' },
    });
    expectErrorCode(basic, 'token-invalid');

    now += 301_000;
    const expired = await app.inject({
      method: 'GET',
      url: '/fhir/Patient/1',
      headers: { authorization: `Bearer ${good}` },
    });
    now = Date.now();
    expectErrorCode(expired, 'token-expired');
  });

  it('keeps /fhir/metadata and the SMART configuration public', async () => {
    expect((await app.inject({ method: 'GET', url: '/fhir/metadata' })).statusCode).toBe(200);
    for (const url of ['/.well-known/smart-configuration', '/fhir/.well-known/smart-configuration']) {
      const res = await app.inject({ method: 'GET', url });
      expect(res.statusCode).toBe(200);
      expect(res.json()).toMatchObject({
        token_endpoint: TOKEN_URL,
        grant_types_supported: ['client_credentials'],
        token_endpoint_auth_methods_supported: ['private_key_jwt'],
        token_endpoint_auth_signing_alg_values_supported: ['ES384', 'ES256'],
      });
    }
  });

  it('never writes tokens or assertions to the log', async () => {
    const a = await assertion(system, TOKEN_URL);
    const token = (await requestToken(tokenForm(a))).json().access_token as string;
    await app.inject({
      method: 'GET',
      url: '/fhir/Patient/1',
      headers: { authorization: `Bearer ${token}` },
    });
    await app.inject({
      method: 'GET',
      url: '/fhir/Patient/1',
      headers: { authorization: `Bearer ${token}x` },
    });
    const log = logLines.join('\n');
    expect(log.length).toBeGreaterThan(0);
    expect(log).not.toContain(token.split('.')[1]);
    expect(log).not.toContain(a.split('.')[1]);
  });
});

describe('development mode', () => {
  it('refuses to start on a non-loopback interface, and is off by default', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'hie-devopen-'));
    try {
      await expect(
        setupAccess({
          dataDir,
          mode: 'dev-open',
          host: '0.0.0.0',
          mspId: DEFAULT_MSP_ID,
          fhirPrefix: '/fhir',
          store: {} as ResourceStore,
          log: console,
        }),
      ).rejects.toThrow(/loopback/);
      expect(loadConfig({}, {}).auth).toBe('smart');
    } finally {
      rmSync(dataDir, { recursive: true, force: true });
    }
  });

  it('opens access to loopback callers only', async () => {
    const app = Fastify();
    const tokens = new TokenService({ directory: new MapDirectory(), secret: randomBytes(32) });
    registerAuth(app, {
      tokens,
      policyFor: () => {
        throw new Error('unused');
      },
      devOpenLoopback: true,
    });
    app.get('/fhir/Patient/:id', async (request) => ({ role: request.hieCaller?.role }));
    const local = await app.inject({ method: 'GET', url: '/fhir/Patient/1', remoteAddress: '127.0.0.1' });
    expect(local.json()).toEqual({ role: 'open' });
    const remote = await app.inject({ method: 'GET', url: '/fhir/Patient/1', remoteAddress: '10.1.2.3' });
    expect(remote.statusCode).toBe(401);
    await app.close();
  });
});

describe('rate limits on POST /auth/token', () => {
  const directory = new MapDirectory();
  const system = directory.add(makeClient('rl-system', 'system', { organization: 'Organization/hosp' }));
  const other = directory.add(makeClient('rl-other', 'system', { organization: 'Organization/hosp' }));
  const stranger = makeClient('rl-stranger', 'system');
  const PER_MINUTE = 3;
  let clock = Date.now();
  const tokens = new TokenService({ directory, secret: randomBytes(32), now: () => clock });
  let app: FastifyInstance;

  beforeAll(async () => {
    app = Fastify();
    registerAuth(app, {
      tokens,
      policyFor: (caller) => new OpenAccess(caller),
      publicBaseUrl: BASE,
      tokenRateLimit: { perMinute: PER_MINUTE, now: () => clock },
    });
    await app.ready();
  });
  afterAll(async () => {
    await app.close();
  });

  const post = (remoteAddress: string, payload: string) =>
    app.inject({
      method: 'POST',
      url: '/auth/token',
      remoteAddress,
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      payload,
    });

  function expectLimited(res: Awaited<ReturnType<typeof post>>, who: string, retryAfter: number): void {
    expect(res.statusCode).toBe(429);
    expect(res.headers['retry-after']).toBe(String(retryAfter));
    expect(res.headers['cache-control']).toBe('no-store');
    expect(res.json()).toEqual({
      error: 'temporarily_unavailable',
      error_description: `too many token requests from ${who}; retry after ${retryAfter} s`,
    });
  }

  it('allows a burst per address, then answers 429 with Retry-After until the bucket refills', async () => {
    for (let i = 0; i < PER_MINUTE; i++)
      expect((await post('10.0.0.1', 'grant_type=client_credentials')).statusCode).toBe(400);
    expectLimited(await post('10.0.0.1', 'grant_type=client_credentials'), 'this address', 20);
    // Even a well-formed request: the address is refused before its body is read.
    expectLimited(await post('10.0.0.1', tokenForm(await assertion(system, TOKEN_URL))), 'this address', 20);
    // Another address is not affected.
    expect((await post('10.0.0.2', 'grant_type=client_credentials')).statusCode).toBe(400);
    // One request regained every 60/PER_MINUTE = 20 s.
    clock += 10_000;
    expectLimited(await post('10.0.0.1', 'grant_type=client_credentials'), 'this address', 10);
    clock += 10_000;
    expect((await post('10.0.0.1', 'grant_type=client_credentials')).statusCode).toBe(400);
    expectLimited(await post('10.0.0.1', 'grant_type=client_credentials'), 'this address', 20);
  });

  it('counts an IPv6 /64 as one address', async () => {
    for (const address of ['2001:db8:1:2::1', '2001:db8:1:2::2', '2001:db8:1:2:aaaa:bbbb:cccc:dddd'])
      expect((await post(address, 'grant_type=client_credentials')).statusCode).toBe(400);
    expectLimited(await post('2001:0db8:0001:0002::9', 'grant_type=client_credentials'), 'this address', 20);
    expect((await post('2001:db8:1:3::1', 'grant_type=client_credentials')).statusCode).toBe(400);
  });

  it('limits each client once its assertion verified, so forgeries naming it use up nothing', async () => {
    // Forged assertions naming the client (signed with another key), each from a fresh address.
    for (let i = 0; i < 2 * PER_MINUTE; i++) {
      const forged = await post(
        `10.1.0.${i}`,
        tokenForm(await assertion(system, TOKEN_URL, { key: stranger.privateKey })),
      );
      expect(forged.statusCode).toBe(401);
    }
    for (let i = 0; i < PER_MINUTE; i++)
      expect((await post(`10.2.0.${i}`, tokenForm(await assertion(system, TOKEN_URL)))).statusCode).toBe(200);
    const limited = await post('10.2.0.99', tokenForm(await assertion(system, TOKEN_URL)));
    expectLimited(limited, 'this client', 20);
    expect(limited.body).not.toContain('access_token');
    expect((await post('10.2.0.98', tokenForm(await assertion(other, TOKEN_URL)))).statusCode).toBe(200);
    clock += 20_000;
    expect((await post('10.2.0.97', tokenForm(await assertion(system, TOKEN_URL)))).statusCode).toBe(200);
  });

  it('remembers a bounded number of keys (the oldest forgotten first, full buckets before them)', () => {
    let t = 0;
    const limiter = new RateLimiter({ perMinute: 1, maxKeys: 2, now: () => t });
    expect(limiter.take('a')).toBe(0);
    expect(limiter.take('b')).toBe(0);
    expect(limiter.take('b')).toBe(60);
    expect(limiter.take('c')).toBe(0); // 'a' forgotten: no bucket was full again
    expect(limiter.take('b')).toBe(60);
    t = 60_000; // every bucket full again: dropped before anything else
    expect(limiter.take('d')).toBe(0);
    expect(limiter.take('d')).toBe(60);
    expect(addressKey('::ffff:10.0.0.1')).toBe('10.0.0.1');
    expect(addressKey('2001:DB8::1')).toBe('2001:db8:0:0::/64');
    expect(addressKey('::1')).toBe('0:0:0:0::/64');
    expect(addressKey('fe80::1%eth0')).toBe('fe80:0:0:0::/64');
  });

  it('is configured by --token-rate-limit / HIE_TOKEN_RATE_LIMIT (default 60 a minute, 0 off)', () => {
    expect(loadConfig({}, {}).tokenRateLimit).toBe(60);
    expect(loadConfig({ tokenRateLimit: '0' }, {}).tokenRateLimit).toBe(0);
    expect(loadConfig({}, { HIE_TOKEN_RATE_LIMIT: '5' }).tokenRateLimit).toBe(5);
    expect(() => loadConfig({ tokenRateLimit: 'many' }, {})).toThrow(/--token-rate-limit/);
  });

  it('token lifetime: --token-seconds / HIE_TOKEN_SECONDS, default five minutes, capped at an hour', () => {
    expect(loadConfig({}, {}).tokenSeconds).toBe(300);
    expect(loadConfig({ tokenSeconds: '3600' }, {}).tokenSeconds).toBe(3600);
    expect(loadConfig({}, { HIE_TOKEN_SECONDS: '900' }).tokenSeconds).toBe(900);
    expect(() => loadConfig({ tokenSeconds: '3601' }, {})).toThrow(/--token-seconds.*60 to 3600/);
    expect(() => loadConfig({ tokenSeconds: '30' }, {})).toThrow(/--token-seconds/);
  });
});
