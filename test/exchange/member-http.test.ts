/**
 * Calls out to members are hostile-input-safe (docs/exchange.md, "Service-to-service calls"; docs/threat-model.md,
 * SSRF). Real servers on loopback play the hostile member; the client's own limits are set small so each test
 * ends on the client's decision, never on a race.
 */
import { createServer as createHttpServer, type RequestListener, type Server } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import {
  isPublicAddress,
  MemberCallError,
  MemberHttpClient,
  type MemberHttpOptions,
} from '../../src/exchange/member-http.js';
import type { MemberEntry } from '../../src/exchange/members.js';
import { selfSigned } from './helpers.js';

const servers: Server[] = [];
const clients: MemberHttpClient[] = [];

afterEach(async () => {
  for (const client of clients.splice(0)) client.close();
  await Promise.all(
    servers.splice(0).map(
      (server) =>
        new Promise<void>((resolve) => {
          server.closeAllConnections();
          server.close(() => resolve());
        }),
    ),
  );
});

async function listen(server: Server): Promise<number> {
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return (server.address() as AddressInfo).port;
}

async function httpMember(handler: RequestListener): Promise<MemberEntry> {
  const port = await listen(createHttpServer(handler));
  return member(`http://127.0.0.1:${port}/fhir`);
}

function member(fhirBaseUrl: string, tlsCa?: string): MemberEntry {
  const entry: MemberEntry = {
    mspId: 'OrgAMSP',
    organization: 'Hospital A',
    fhirBaseUrl,
    serviceCertificate: '',
    status: 'active',
  };
  if (tlsCa !== undefined) entry.tlsCa = tlsCa;
  return entry;
}

function client(options: Partial<MemberHttpOptions> = {}): MemberHttpClient {
  const made = new MemberHttpClient({
    localNetwork: true,
    maxResponseBytes: 64 * 1024,
    connectionsPerMember: 4,
    memberTimeoutMs: 10_000,
    ...options,
  });
  clients.push(made);
  return made;
}

async function failure(call: Promise<unknown>): Promise<MemberCallError> {
  try {
    await call;
  } catch (err) {
    expect(err).toBeInstanceOf(MemberCallError);
    return err as MemberCallError;
  }
  throw new Error('the call succeeded');
}

describe('calls to members', () => {
  it('returns a member answer (local-network mode, http)', async () => {
    const a = await httpMember((_req, res) => res.end('{"resourceType":"Bundle"}'));
    const response = await client().request(a, { method: 'GET', url: `${a.fhirBaseUrl}/metadata` });
    expect(response.status).toBe(200);
    expect(response.body.toString()).toBe('{"resourceType":"Bundle"}');
  });

  it('does not call a revoked member', async () => {
    let called = false;
    const a = await httpMember((_req, res) => ((called = true), res.end()));
    a.status = 'revoked';
    const err = await failure(client().request(a, { method: 'GET', url: `${a.fhirBaseUrl}/metadata` }));
    expect(err.kind).toBe('revoked');
    expect(called).toBe(false);
  });

  it('never follows a redirect', async () => {
    let followed = false;
    const a = await httpMember((req, res) => {
      if (req.url === '/elsewhere') followed = true;
      res.writeHead(302, { location: '/elsewhere' }).end();
    });
    const err = await failure(client().request(a, { method: 'GET', url: `${a.fhirBaseUrl}/Patient` }));
    expect(err.kind).toBe('redirect');
    expect(followed).toBe(false);
    expect(err.toIssue()).toMatchObject({
      severity: 'error',
      diagnostics: expect.stringContaining('OrgAMSP'),
    });
  });

  it('aborts a body over the cap while it streams', async () => {
    let serverSawClose = false;
    const a = await httpMember((_req, res) => {
      res.on('close', () => (serverSawClose = !res.writableFinished));
      // An endless body: only the client's cap ends it.
      const chunk = Buffer.alloc(16 * 1024, 0x20);
      const pump = () => {
        if (res.destroyed) return;
        if (res.write(chunk)) setImmediate(pump);
        else res.once('drain', pump);
      };
      res.writeHead(200, { 'content-type': 'application/fhir+json' });
      pump();
    });
    const err = await failure(client().request(a, { method: 'GET', url: `${a.fhirBaseUrl}/Patient` }));
    expect(err.kind).toBe('too-large');
    await new Promise<void>((resolve) => {
      const wait = () => (serverSawClose ? resolve() : setTimeout(wait, 5));
      wait();
    });
    expect(serverSawClose).toBe(true);
  });

  it('refuses a declared length over the cap before reading it', async () => {
    const a = await httpMember((_req, res) => {
      res.writeHead(200, { 'content-length': String(1024 * 1024) });
      res.write('{');
    });
    expect((await failure(client().request(a, { method: 'GET', url: `${a.fhirBaseUrl}/x` }))).kind).toBe(
      'too-large',
    );
  });

  it('gives up on a body that stalls, at the per-member timeout', async () => {
    const a = await httpMember((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/fhir+json' });
      res.write('{"resourceType":'); // ...and nothing more
    });
    const err = await failure(
      client({ memberTimeoutMs: 200 }).request(a, { method: 'GET', url: `${a.fhirBaseUrl}/x` }),
    );
    expect(err.kind).toBe('timeout');
  });

  it("stops at the caller's overall deadline", async () => {
    const deadline = new AbortController();
    const a = await httpMember(() => deadline.abort()); // answers nothing
    const err = await failure(
      client().request(a, { method: 'GET', url: `${a.fhirBaseUrl}/x`, signal: deadline.signal }),
    );
    expect(err.kind).toBe('deadline');
  });

  it('opens at most the configured number of connections to one member', async () => {
    const held: (() => void)[] = [];
    let connections = 0;
    const server = createHttpServer((_req, res) => {
      held.push(() => res.end('ok'));
      // Answer once two requests wait: without the cap the other two would have opened connections by then.
      if (held.length === 2) for (const answer of held.splice(0)) answer();
    });
    server.on('connection', () => connections++);
    const port = await listen(server);
    const a = member(`http://127.0.0.1:${port}/fhir`);
    const capped = client({ connectionsPerMember: 2 });
    const calls = [1, 2, 3, 4].map((n) =>
      capped.request(a, { method: 'GET', url: `${a.fhirBaseUrl}/x${n}` }),
    );
    const answers = await Promise.all(calls);
    expect(answers.map((r) => r.body.toString())).toEqual(['ok', 'ok', 'ok', 'ok']);
    expect(connections).toBe(2);
  });

  it('checks the server certificate against the directory entry (TLS CA pinned)', async () => {
    const [serverCertificate, otherCa] = await Promise.all([
      selfSigned('member A', '127.0.0.1'),
      selfSigned('someone else', '127.0.0.1'),
    ]);
    const port = await listen(
      createHttpsServer(
        { key: serverCertificate.privateKeyPem, cert: serverCertificate.certificatePem },
        (_req, res) => res.end('pinned'),
      ),
    );
    const base = `https://127.0.0.1:${port}/fhir`;
    const pinned = member(base, serverCertificate.certificatePem);
    expect((await client().request(pinned, { method: 'GET', url: `${base}/x` })).body.toString()).toBe(
      'pinned',
    );
    const wrong = member(base, otherCa.certificatePem);
    expect((await failure(client().request(wrong, { method: 'GET', url: `${base}/x` }))).kind).toBe('tls');
    // No pin: the system roots, which do not know a self-signed certificate.
    expect((await failure(client().request(member(base), { method: 'GET', url: `${base}/x` }))).kind).toBe(
      'tls',
    );
  });
});

describe('outside local-network mode', () => {
  const strict = () => client({ localNetwork: false });

  it('refuses http', async () => {
    const a = member('http://hospital-a.example/fhir');
    expect((await failure(strict().request(a, { method: 'GET', url: `${a.fhirBaseUrl}/x` }))).kind).toBe(
      'scheme',
    );
  });

  it("refuses a URL off the member's origin", async () => {
    const a = member('https://hospital-a.example/fhir');
    const err = await failure(
      strict().request(a, { method: 'GET', url: 'https://169.254.169.254/latest/meta-data' }),
    );
    expect(err.kind).toBe('origin');
  });

  it.each([
    'https://127.0.0.1:8443/fhir',
    'https://[::1]:8443/fhir',
    'https://[::ffff:127.0.0.1]/fhir',
    'https://169.254.169.254/fhir',
    'https://10.1.2.3/fhir',
    'https://192.168.1.10/fhir',
    'https://[fd00::1]/fhir',
  ])('refuses the address literal of %s without connecting', async (base) => {
    const a = member(base);
    expect((await failure(strict().request(a, { method: 'GET', url: `${base}/x` }))).kind).toBe('address');
  });

  it('checks the addresses a name resolves to when connecting (a name pointing at a private address)', async () => {
    // A listener on loopback that must never be reached.
    let reached = false;
    const port = await listen(createHttpServer((_req, res) => ((reached = true), res.end())));
    const resolved: string[] = [];
    const rebinding = client({
      localNetwork: false,
      // The member's DNS answers with a loopback address (as a rebinding attack would, after a public one).
      resolve: (hostname) => {
        resolved.push(hostname);
        return Promise.resolve([{ address: '127.0.0.1', family: 4 }]);
      },
    });
    const a = member(`https://hospital-a.example:${port}/fhir`);
    const err = await failure(rebinding.request(a, { method: 'GET', url: `${a.fhirBaseUrl}/x` }));
    expect(err.kind).toBe('address');
    expect(resolved).toEqual(['hospital-a.example']);
    expect(reached).toBe(false);
  });

  it('refuses a name whose addresses mix public and private ones', async () => {
    const mixed = client({
      localNetwork: false,
      resolve: () =>
        Promise.resolve([
          { address: '93.184.216.34', family: 4 },
          { address: '10.0.0.7', family: 4 },
        ]),
    });
    const a = member('https://hospital-a.example/fhir');
    expect((await failure(mixed.request(a, { method: 'GET', url: `${a.fhirBaseUrl}/x` }))).kind).toBe(
      'address',
    );
  });
});

describe('isPublicAddress', () => {
  it.each(['93.184.216.34', '8.8.8.8', '2001:4860:4860::8888'])('%s is public', (address) => {
    expect(isPublicAddress(address)).toBe(true);
  });
  it.each([
    '127.0.0.1',
    '10.0.0.1',
    '172.16.5.4',
    '192.168.0.1',
    '169.254.169.254',
    '100.64.0.1',
    '0.0.0.0',
    '224.0.0.1',
    '255.255.255.255',
    '192.0.2.1',
    '::1',
    '::',
    'fe80::1',
    'fd12:3456::1',
    'ff02::1',
    '::ffff:10.0.0.1',
    '::ffff:7f00:1',
    'not an address',
  ])('%s is not', (address) => {
    expect(isPublicAddress(address)).toBe(false);
  });
});
