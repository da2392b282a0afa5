/**
 * The in-process network harness itself, and network tokens on /fhir (docs/exchange.md, "Network tokens on
 * /fhir"): three members over real HTTP; a network token B gets from A through B's own token client opens only the
 * network operations at A, never a FHIR read, whatever role B claims for its actor.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MemberDirectory } from '../../src/exchange/member-directory.js';
import { expectErrorCode } from '../support/error-codes.js';
import { demoPatient, startNetwork, type TestNetwork } from './network-harness.js';

let network: TestNetwork;

beforeAll(async () => {
  network = await startNetwork();
  const { a, b, c } = network;
  await a.request(a.system, 'PUT', '/Patient/pa1', demoPatient('pa1'));
  await c.request(c.system, 'PUT', '/Patient/pc1', demoPatient('pc1'));
  await b.enrol('dr-b', 'clinician', 'Practitioner/dr-b', b.organization);
});

afterAll(async () => {
  await network?.stop();
});

describe('the network harness', () => {
  it('registers three members at their loopback URLs, and links a patient at a custodian', async () => {
    const { a, b, c } = network;
    for (const member of network.members) {
      const entry = await a.app.exchange!.members.member(member.mspId);
      expect(entry).toMatchObject({ mspId: member.mspId, fhirBaseUrl: member.baseUrl, status: 'active' });
    }
    expect(new Set(network.members.map((m) => m.baseUrl)).size).toBe(3);
    await network.link(a, 'pa1', c, 'pc1');
    const npid = await a.app.patientLinks!.npidOf('Patient/pa1');
    expect(npid).toBeDefined();
    expect(await c.app.patientLinks!.npidOf('Patient/pc1')).toBe(npid);
    expect(await c.app.patientLinks!.homeOf('Patient/pc1')).toBe(a.mspId);
    expect(b.handleOf('dr-b')).toBe(`${b.mspId}|${b.pseudonymOf('dr-b')}`);
  });
});

describe('a network token on /fhir', () => {
  const actor = (b: TestNetwork['b']) => ({
    subjectId: b.pseudonymOf('dr-b'),
    subjectRole: 'admin',
    purposes: ['TREAT'],
    consentReferences: [],
  });

  it('opens no FHIR interaction: a read, a search, a write, another operation are refused (403)', async () => {
    const { a, b } = network;
    const token = await network.networkToken(b, a, actor(b));
    expect(token.startsWith('hnt1.')).toBe(true);
    for (const [method, path, body] of [
      ['GET', '/Patient/pa1'],
      ['GET', '/Patient'],
      ['GET', '/Patient/pa1/$everything'],
      ['PUT', '/Patient/pa1', demoPatient('pa1', 'Other')],
      ['POST', '/Patient/pa1/$network-link-token', { resourceType: 'Parameters' }],
      ['GET', '/AuditEvent'],
    ] as [string, string, unknown?][]) {
      const res = await a.request(token, method, path, body);
      expect(res.status, `${method} ${path}: ${res.text}`).toBe(403);
      expectErrorCode(res.text, 'network-token-scope');
    }
    // The capability statement stays public.
    expect((await a.request(token, 'GET', '/metadata')).status).toBe(200);
  });

  it('an altered network token, or one of another member, is refused as invalid (401)', async () => {
    const { a, b, c } = network;
    const token = await network.networkToken(b, a, actor(b));
    const altered = `${token.slice(0, -2)}${token.endsWith('AA') ? 'BB' : 'AA'}`;
    expect((await a.request(altered, 'GET', '/Patient/pa1')).status).toBe(401);
    // C's token is MACed with C's key: A does not accept it.
    const atC = await network.networkToken(b, c, actor(b));
    expect((await a.request(atC, 'GET', '/Patient/pa1')).status).toBe(401);
  });

  it('a token of a member revoked since is refused at once (401), also on a network operation', async () => {
    const { a, b, c } = network;
    const token = await network.networkToken(c, a, {
      subjectId: b.pseudonymOf('dr-b'),
      subjectRole: 'clinician',
      purposes: ['TREAT'],
      consentReferences: [],
    });
    const locate = () =>
      a.request(token, 'POST', '/$network-locate', {
        resourceType: 'Parameters',
        parameter: [{ name: 'patient', valueString: 'AAAAAAAAAAAAAAAAAAAAAAAA' }],
      });
    expect((await locate()).status).toBe(200);
    // Last in this file: C leaves the network.
    await new MemberDirectory(network.chain.connect(c.org.service)).revoke(c.mspId);
    const refused = await locate();
    expect(refused.status).toBe(401);
    expectErrorCode(refused.text, 'token-invalid');
  });
});
