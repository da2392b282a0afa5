/**
 * Service-to-service authentication over real sockets (docs/exchange.md, "Service-to-service calls"): member B
 * asks custodian A's `POST /auth/token` for a network token with a client assertion carrying the UDAP B2B
 * extension; A checks it against its member directory and issues a token that opens only network operations.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes, randomUUID, type KeyObject } from 'node:crypto';
import Fastify, { type FastifyInstance } from 'fastify';
import { SignJWT } from 'jose';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { registerAuth } from '../../src/access/auth-routes.js';
import { CLIENT_ASSERTION_TYPE, TokenService } from '../../src/access/tokens.js';
import { OpenAccess } from '../../src/fhir/interactions/access-policy.js';
import { MemberHttpClient } from '../../src/exchange/member-http.js';
import { tokenUrlOf, type MemberEntry } from '../../src/exchange/members.js';
import {
  clientAssertion,
  NetworkTokenClient,
  NetworkTokenRefused,
  type NetworkActor,
} from '../../src/exchange/network-token-client.js';
import { NETWORK_SCOPE, NetworkTokenService, replayFileIn } from '../../src/exchange/network-tokens.js';
import { MapDirectory } from '../access/helpers.js';
import { MapMembers, selfSigned } from './helpers.js';

const START = Date.UTC(2026, 0, 1, 12);
let clock = START;
const now = () => clock;

const members = new MapMembers();
const secret = randomBytes(32);
let dataDir: string;
let app: FastifyInstance;
let custodian: MemberEntry;
let network: NetworkTokenService;
let participantTokens: TokenService;
let tokenRequests = 0;
let http: MemberHttpClient;
let bKey: KeyObject;
let cKey: KeyObject;
const B = 'OrgBMSP';
const C = 'OrgCMSP';

const clinician: NetworkActor = {
  subjectId: 'ps-clinician-b',
  subjectRole: 'clinician',
  purposes: ['TREAT'],
  consentReferences: ['grant-1'],
};

function openNetwork(allowedPurposes?: string[]): NetworkTokenService {
  return new NetworkTokenService({
    members,
    secret,
    allowedPurposes,
    replayFile: replayFileIn(dataDir),
    now,
  });
}

async function postToken(
  assertion: string,
  scope?: string,
): Promise<{ status: number; body: Record<string, unknown> }> {
  const form = new URLSearchParams({
    grant_type: 'client_credentials',
    client_assertion_type: CLIENT_ASSERTION_TYPE,
    client_assertion: assertion,
  });
  if (scope !== undefined) form.set('scope', scope);
  const response = await fetch(tokenUrlOf(custodian), { method: 'POST', body: form });
  return { status: response.status, body: (await response.json()) as Record<string, unknown> };
}

/** An assertion signed by `key` with these claims (for the ones clientAssertion never makes). */
async function handMade(
  key: KeyObject,
  claims: {
    iss: string;
    b2b: Record<string, unknown>;
    jti?: string;
    /** Seconds after `clock` of iat (default 0) and of exp (default 60). */
    iatSeconds?: number;
    expSeconds?: number;
  },
): Promise<string> {
  const now = Math.floor(clock / 1000);
  return new SignJWT({ extensions: { 'hl7-b2b': claims.b2b } })
    .setProtectedHeader({ alg: 'ES256' })
    .setIssuer(claims.iss)
    .setSubject(claims.iss)
    .setAudience(tokenUrlOf(custodian))
    .setJti(claims.jti ?? randomUUID())
    .setIssuedAt(now + (claims.iatSeconds ?? 0))
    .setExpirationTime(now + (claims.expSeconds ?? 60))
    .sign(key);
}

beforeAll(async () => {
  dataDir = mkdtempSync(join(tmpdir(), 'hie-s2s-'));
  const [b, c] = await Promise.all([selfSigned('OrgBMSP service'), selfSigned('OrgCMSP service')]);
  bKey = b.privateKey;
  cKey = c.privateKey;
  members.add({
    mspId: B,
    organization: 'Hospital B',
    fhirBaseUrl: 'https://b.example/fhir',
    serviceCertificate: b.certificatePem,
    status: 'active',
  });
  members.add({
    mspId: C,
    organization: 'Lab C',
    fhirBaseUrl: 'https://c.example/fhir',
    serviceCertificate: c.certificatePem,
    status: 'active',
  });

  network = openNetwork();
  participantTokens = new TokenService({ directory: new MapDirectory(), secret, now });
  app = Fastify();
  app.addHook('onRequest', (request, _reply, done) => {
    if (request.url === '/auth/token') tokenRequests++;
    done();
  });
  registerAuth(app, {
    tokens: participantTokens,
    policyFor: (caller) => new OpenAccess(caller),
    network: {
      accepts: (assertion) => network.accepts(assertion),
      exchange: (request, url) => network.exchange(request, url),
    },
  });
  app.get('/fhir/Patient', async () => ({ resourceType: 'Bundle' }));
  await app.listen({ host: '127.0.0.1', port: 0 });
  const address = app.server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  custodian = members.add({
    mspId: 'OrgAMSP',
    organization: 'Hospital A',
    fhirBaseUrl: `http://127.0.0.1:${port}/fhir`,
    serviceCertificate: '',
    status: 'active',
  });
  http = new MemberHttpClient({
    localNetwork: true,
    maxResponseBytes: 1 << 20,
    connectionsPerMember: 2,
    memberTimeoutMs: 10_000,
  });
});

afterAll(async () => {
  http.close();
  await app.close();
  rmSync(dataDir, { recursive: true, force: true });
});

beforeEach(() => {
  members.entries.get(B)!.status = 'active';
  network = openNetwork();
});

describe('service-to-service tokens', () => {
  it('round trip: the token names the member, actor, purposes and grants, and opens no FHIR API rule', async () => {
    const client = new NetworkTokenClient({ identity: { mspId: B, privateKey: bKey }, http, now });
    const token = await client.token(custodian, clinician);
    const caller = await network.verify(token);
    expect(caller).toMatchObject({
      member: B,
      actor: 'ps-clinician-b',
      actorRole: 'clinician',
      purposes: ['TREAT'],
      consentReferences: ['grant-1'],
    });
    // Not a participant token, whatever it says: the FHIR API refuses it.
    expect(() => participantTokens.verifyAccessToken(token)).toThrow(/malformed access token/);
    expect(() => participantTokens.verifyAccessToken(token.replace(/^hnt1\./, 'hat1.'))).toThrow(/signature/);
    const fhir = await fetch(`${custodian.fhirBaseUrl}/Patient`, {
      headers: { authorization: `Bearer ${token}` },
    });
    expect(fhir.status).toBe(401);
  });

  it('gives a member claiming an admin actor and system scopes nothing but the network scope', async () => {
    const admin = { ...clinician, subjectRole: 'admin' };
    const refused = await postToken(
      await clientAssertion({ mspId: B, privateKey: bKey }, tokenUrlOf(custodian), admin, clock),
      'system/*.*',
    );
    expect(refused).toMatchObject({ status: 400, body: { error: 'invalid_scope' } });
    const granted = await postToken(
      await clientAssertion({ mspId: B, privateKey: bKey }, tokenUrlOf(custodian), admin, clock),
    );
    expect(granted.status).toBe(200);
    expect(granted.body.scope).toBe(NETWORK_SCOPE);
    expect(() => participantTokens.verifyAccessToken(granted.body.access_token as string)).toThrow();
  });

  it('refuses a replayed assertion, also after a restart', async () => {
    const assertion = await clientAssertion(
      { mspId: B, privateKey: bKey },
      tokenUrlOf(custodian),
      clinician,
      clock,
    );
    expect((await postToken(assertion)).status).toBe(200);
    const replayed = await postToken(assertion);
    expect(replayed).toMatchObject({ status: 401, body: { error: 'invalid_client' } });
    expect(replayed.body.error_description).toMatch(/jti was already used/);
    network = openNetwork(); // a restart: the used assertions come back from the data directory
    expect((await postToken(assertion)).body.error_description).toMatch(/jti was already used/);
  });

  it('refuses an actor of another MSP than the calling member', async () => {
    const assertion = await handMade(bKey, {
      iss: `member:${B}`,
      b2b: {
        version: '1',
        subject_id: 'ps-c-user',
        subject_role: 'lab',
        organization_id: C,
        purpose_of_use: ['TREAT'],
        consent_reference: [],
      },
    });
    const refused = await postToken(assertion);
    expect(refused).toMatchObject({ status: 400, body: { error: 'invalid_grant' } });
    expect(refused.body.error_description).toMatch(/organization_id\) is not the calling member/);
  });

  it("refuses a member posing as another (signed with its own key, naming the other's id)", async () => {
    const assertion = await handMade(cKey, {
      iss: `member:${B}`,
      b2b: {
        version: '1',
        subject_id: 'x',
        subject_role: 'clinician',
        organization_id: B,
        purpose_of_use: ['TREAT'],
      },
    });
    expect(await postToken(assertion)).toMatchObject({ status: 401, body: { error: 'invalid_client' } });
  });

  it("holds a member's assertion to the participants' time rules: exp at most five minutes, iat at most 60 s ahead", async () => {
    const b2b = {
      version: '1',
      subject_id: 'ps-b-user',
      subject_role: 'clinician',
      organization_id: B,
      purpose_of_use: ['TREAT'],
    };
    const longLived = await postToken(await handMade(bKey, { iss: `member:${B}`, b2b, expSeconds: 3600 }));
    expect(longLived).toMatchObject({ status: 401, body: { error: 'invalid_client' } });
    expect(longLived.body.error_description).toMatch(/exp is more than five minutes ahead/);
    const early = await postToken(
      await handMade(bKey, { iss: `member:${B}`, b2b, iatSeconds: 120, expSeconds: 180 }),
    );
    expect(early).toMatchObject({ status: 401, body: { error: 'invalid_client' } });
    expect(early.body.error_description).toMatch(/iat is in the future/);
    const skewed = await postToken(
      await handMade(bKey, { iss: `member:${B}`, b2b, iatSeconds: 30, expSeconds: 90 }),
    );
    expect(skewed.status).toBe(200);
  });

  it('refuses an unknown and a revoked member alike', async () => {
    const unknown = await clientAssertion(
      { mspId: 'OrgZMSP', privateKey: bKey },
      tokenUrlOf(custodian),
      clinician,
      clock,
    );
    const unknownAnswer = await postToken(unknown);
    expect(unknownAnswer).toMatchObject({ status: 401, body: { error: 'invalid_client' } });

    const client = new NetworkTokenClient({ identity: { mspId: B, privateKey: bKey }, http, now });
    const token = await client.token(custodian, { ...clinician, subjectId: 'ps-before-revocation' });
    members.entries.get(B)!.status = 'revoked';
    const revoked = await postToken(
      await clientAssertion({ mspId: B, privateKey: bKey }, tokenUrlOf(custodian), clinician, clock),
    );
    expect(revoked).toEqual(unknownAnswer);
    // A token issued before the revocation stops working at once.
    await expect(network.verify(token)).rejects.toThrow(/revoked/);
  });

  it('refuses a purpose of use this custodian does not allow (default: treatment only)', async () => {
    const payment = { ...clinician, purposes: ['HPAYMT'] };
    const refused = await postToken(
      await clientAssertion({ mspId: B, privateKey: bKey }, tokenUrlOf(custodian), payment, clock),
    );
    expect(refused).toMatchObject({ status: 400, body: { error: 'invalid_grant' } });
    expect(refused.body.error_description).toMatch(/purpose of use not allowed here: HPAYMT/);
    const mixed = { ...clinician, purposes: ['TREAT', 'HPAYMT'] };
    expect(
      (
        await postToken(
          await clientAssertion({ mspId: B, privateKey: bKey }, tokenUrlOf(custodian), mixed, clock),
        )
      ).status,
    ).toBe(400);

    network = openNetwork(['TREAT', 'HPAYMT']);
    const allowed = await postToken(
      await clientAssertion({ mspId: B, privateKey: bKey }, tokenUrlOf(custodian), payment, clock),
    );
    expect(allowed.status).toBe(200);
    expect((await network.verify(allowed.body.access_token as string)).purposes).toEqual(['HPAYMT']);
  });

  it('answers 503, not a refusal, while the member directory is unavailable', async () => {
    network = new NetworkTokenService({
      members: { member: () => Promise.reject(new Error('the ledger is away')) },
      secret,
      now,
    });
    const assertion = await clientAssertion(
      { mspId: B, privateKey: bKey },
      tokenUrlOf(custodian),
      clinician,
      clock,
    );
    expect(await postToken(assertion)).toMatchObject({
      status: 503,
      body: { error: 'temporarily_unavailable' },
    });
  });

  it('refuses an assertion for another audience', async () => {
    const elsewhere = await clientAssertion(
      { mspId: B, privateKey: bKey },
      'https://other.example/auth/token',
      clinician,
      clock,
    );
    const refused = await postToken(elsewhere);
    expect(refused).toMatchObject({ status: 401, body: { error: 'invalid_client' } });
    expect(refused.body.error_description).toMatch(/aud/);
  });

  it('caches a token per custodian and actor until shortly before it expires (injected clock)', async () => {
    clock = START;
    const client = new NetworkTokenClient({
      identity: { mspId: B, privateKey: bKey },
      http,
      now,
      refreshMarginSeconds: 30,
    });
    const actor = { ...clinician, subjectId: 'ps-cache' };
    const before = tokenRequests;
    const first = await client.token(custodian, actor);
    expect(tokenRequests - before).toBe(1);
    // Concurrent and later calls within the token's life reuse it.
    const again = await Promise.all([client.token(custodian, actor), client.token(custodian, actor)]);
    clock = START + (network.tokenSeconds - 31) * 1000;
    expect(await client.token(custodian, actor)).toBe(first);
    expect(again).toEqual([first, first]);
    expect(tokenRequests - before).toBe(1);
    // Another actor, or other grants, need their own token.
    await client.token(custodian, { ...actor, subjectId: 'ps-other' });
    await client.token(custodian, { ...actor, consentReferences: ['grant-2'] });
    expect(tokenRequests - before).toBe(3);
    // Within the margin before expiry: a new one.
    clock = START + (network.tokenSeconds - 29) * 1000;
    const renewed = await client.token(custodian, actor);
    expect(renewed).not.toBe(first);
    expect(tokenRequests - before).toBe(4);
    await expect(network.verify(renewed)).resolves.toMatchObject({ actor: 'ps-cache' });
    clock = START;
  });

  it('reports a refused token request with its OAuth error code', async () => {
    const client = new NetworkTokenClient({ identity: { mspId: B, privateKey: bKey }, http, now });
    const refused = client.token(custodian, { ...clinician, purposes: ['HMARKT'] });
    await expect(refused).rejects.toBeInstanceOf(NetworkTokenRefused);
    await expect(refused).rejects.toMatchObject({ member: 'OrgAMSP', status: 400, error: 'invalid_grant' });
  });
});
