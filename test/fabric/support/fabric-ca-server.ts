/**
 * A Fabric CA for tests: an HTTPS server speaking the Fabric CA REST API (/api/v1: cainfo, enroll, reenroll,
 * register, identities, revoke, gencrl, certificates) with a test CA (@peculiar/x509) that signs the CSRs, so the
 * real fabric-ca-client runs against it.
 *
 * Like fabric-ca-server: enrol authenticates with Basic id:secret; every other call with Fabric CA's token
 * (`base64(cert).base64(signature)`, the signature over `METHOD.base64(path).base64(body).base64(cert)` with the
 * caller's key, in low-S form as Fabric's BCCSP demands), by a certificate this CA issued and did not revoke; the
 * caller's registry attributes authorise it (hf.Registrar.Roles, hf.Registrar.Attributes, hf.Revoker, hf.GenCRL). Certificates carry the subject CN=id,
 * OU=type and, in extension 1.2.3.4.5.6.7.8.1, the requested attributes or else the `ecert` ones.
 * Not emulated: affiliations (all identities at the root), Idemix, intermediate CAs, databases.
 */
import { createPublicKey, randomBytes, verify, webcrypto, X509Certificate } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import * as x509 from '@peculiar/x509';
import { FABRIC_ATTRIBUTES_OID } from '../../../src/ledger/identity/embedded-ca.js';
import { ecKeyTypeOf, isLowS } from '../../../src/ledger/identity/ec-keys.js';
import { createTestTls, type TestTls } from './tls.js';

const crypto = webcrypto as unknown as Parameters<typeof x509.X509CertificateGenerator.create>[1];

interface Attribute {
  name: string;
  value: string;
  ecert?: boolean;
}

interface RegistryEntry {
  id: string;
  secret: string;
  type: string;
  affiliation: string;
  attrs: Attribute[];
  maxEnrollments: number;
  enrollments: number;
  /** -1 once the identity is revoked (it can no longer enrol). */
  state: number;
}

interface IssuedCertificate {
  id: string;
  serial: string;
  pem: string;
  revokedAt?: Date;
  reason?: string;
}

class CaError extends Error {
  constructor(
    readonly status: number,
    readonly code: number,
    message: string,
  ) {
    super(message);
  }
}

export interface FabricCaTestServerOptions {
  caName: string;
  mspId: string;
  bootstrap?: { id: string; secret: string };
}

export class FabricCaTestServer {
  readonly registry = new Map<string, RegistryEntry>();
  readonly certificates = new Map<string, IssuedCertificate>();
  /** Requests by API path (tests assert what reached the CA). */
  readonly requests: string[] = [];
  /** Tokens refused because their signature was in high-S form. */
  refusedHighS = 0;
  caCertificate = '';
  tls!: TestTls;
  private caKeys!: webcrypto.CryptoKeyPair;
  private caCert!: x509.X509Certificate;
  private server?: Server;
  private port = 0;

  constructor(private readonly options: FabricCaTestServerOptions) {
    const bootstrap = options.bootstrap ?? { id: 'admin', secret: 'adminpw' };
    this.registry.set(bootstrap.id, {
      id: bootstrap.id,
      secret: bootstrap.secret,
      type: 'client',
      affiliation: '',
      attrs: [
        { name: 'hf.Registrar.Roles', value: '*' },
        { name: 'hf.Registrar.Attributes', value: '*' },
        { name: 'hf.Revoker', value: 'true' },
        { name: 'hf.GenCRL', value: 'true' },
      ],
      maxEnrollments: -1,
      enrollments: 0,
      state: 0,
    });
  }

  get url(): string {
    return `https://localhost:${this.port}`;
  }

  async start(): Promise<void> {
    this.caKeys = (await webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, [
      'sign',
      'verify',
    ])) as webcrypto.CryptoKeyPair;
    this.caCert = await x509.X509CertificateGenerator.createSelfSigned(
      {
        serialNumber: randomSerial(),
        name: [{ CN: [`${this.options.caName}`] }, { O: [this.options.mspId] }],
        notBefore: new Date(Date.now() - 60_000),
        notAfter: new Date(Date.now() + 365 * 86_400_000),
        keys: this.caKeys as unknown as Parameters<
          typeof x509.X509CertificateGenerator.createSelfSigned
        >[0]['keys'],
        signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
        extensions: [
          new x509.BasicConstraintsExtension(true, 1, true),
          new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
          await x509.SubjectKeyIdentifierExtension.create(this.caKeys.publicKey as never, false, crypto),
        ],
      },
      crypto,
    );
    this.caCertificate = this.caCert.toString('pem');
    this.tls = await createTestTls('localhost');
    const server = createServer({ key: this.tls.serverKey, cert: this.tls.serverCertificate }, (req, res) => {
      void this.handle(req, res);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    this.port = (server.address() as AddressInfo).port;
    this.server = server;
  }

  async close(): Promise<void> {
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
    this.server?.closeAllConnections();
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const rawBody = Buffer.concat(chunks).toString('utf8');
    const url = new URL(req.url ?? '/', 'https://localhost');
    const route = `${req.method} ${url.pathname.replace(/^\/api\/v1\//, '')}`;
    this.requests.push(route);
    try {
      const body = rawBody ? (JSON.parse(rawBody) as Record<string, unknown>) : {};
      if (typeof body.caname === 'string' && body.caname !== '' && body.caname !== this.options.caName) {
        throw new CaError(404, 19, `CA '${body.caname}' does not exist`);
      }
      let result: unknown;
      if (route === 'POST enroll') result = await this.enroll(req, body);
      else {
        const caller = this.authenticate(req, rawBody);
        if (route === 'POST cainfo') result = this.caInfo();
        else if (route === 'POST reenroll') result = await this.reenroll(caller, body);
        else if (route === 'POST register') result = this.register(caller, body);
        else if (route === 'POST revoke') result = await this.revoke(caller, body);
        else if (route === 'POST gencrl')
          result = { CRL: Buffer.from(await this.crl(caller)).toString('base64') };
        else if (route === 'GET identities') result = this.listIdentities(caller);
        else if (req.method === 'PUT' && url.pathname.startsWith('/api/v1/identities/')) {
          result = this.modifyIdentity(
            caller,
            decodeURIComponent(url.pathname.slice('/api/v1/identities/'.length)),
            body,
          );
        } else if (route === 'GET certificates') result = this.listCertificates(caller, url.searchParams);
        else throw new CaError(404, 0, `no such API: ${route}`);
      }
      res.writeHead(201, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ success: true, result, errors: [], messages: [] }));
    } catch (error) {
      const caError = error instanceof CaError ? error : new CaError(500, 0, (error as Error).message);
      res.writeHead(caError.status, { 'content-type': 'application/json' });
      res.end(
        JSON.stringify({
          success: false,
          result: null,
          errors: [{ code: caError.code, message: caError.message }],
          messages: [],
        }),
      );
    }
  }

  // ---- authentication and authorisation ----

  private authenticate(req: IncomingMessage, rawBody: string): RegistryEntry {
    const token = req.headers.authorization ?? '';
    const [certB64, signatureB64] = token.split('.');
    if (!certB64 || !signatureB64) throw new CaError(401, 20, 'Authorization failure: no token');
    const certPem = Buffer.from(certB64, 'base64').toString('utf8');
    let certificate: X509Certificate;
    try {
      certificate = new X509Certificate(certPem);
    } catch {
      throw new CaError(401, 20, 'Authorization failure: bad certificate in token');
    }
    if (!certificate.verify(createPublicKey(this.caCertificate))) {
      throw new CaError(401, 20, 'Authorization failure: certificate not issued by this CA');
    }
    const issued = this.certificates.get(certificate.serialNumber.toLowerCase());
    if (!issued || issued.revokedAt)
      throw new CaError(401, 20, 'Authorization failure: certificate revoked or unknown');
    const body = rawBody ? Buffer.from(rawBody).toString('base64') : '';
    const signed = `${req.method}.${Buffer.from(req.url ?? '').toString('base64')}.${body}.${certB64}`;
    const signature = Buffer.from(signatureB64, 'base64');
    // Fabric CA's BCCSP checks the form before the signature (bccsp/sw/ecdsa.go verifyECDSA).
    if (!isLowS(signature, ecKeyTypeOf(certificate.publicKey))) {
      this.refusedHighS++;
      throw new CaError(401, 20, 'Authorization failure: Invalid S. Must be smaller than half the order');
    }
    if (!verify('sha256', Buffer.from(signed), certificate.publicKey, signature)) {
      throw new CaError(401, 20, 'Authorization failure: bad token signature');
    }
    const caller = this.registry.get(issued.id);
    if (!caller || caller.state === -1) throw new CaError(401, 20, 'Authorization failure: identity revoked');
    return caller;
  }

  private attr(entry: RegistryEntry, name: string): string | undefined {
    return entry.attrs.find((a) => a.name === name)?.value;
  }

  private requireRegistrar(caller: RegistryEntry, type: string): void {
    const roles = this.attr(caller, 'hf.Registrar.Roles');
    if (!roles || !(roles === '*' || roles.split(',').includes(type))) {
      throw new CaError(
        403,
        71,
        `Authorization failure: ${caller.id} may not act on identities of type ${type}`,
      );
    }
  }

  private mayGrant(caller: RegistryEntry, name: string): boolean {
    const allowed = (this.attr(caller, 'hf.Registrar.Attributes') ?? '').split(',').map((a) => a.trim());
    return allowed.some(
      (pattern) =>
        pattern === '*' ||
        pattern === name ||
        (pattern.endsWith('*') && name.startsWith(pattern.slice(0, -1))),
    );
  }

  // ---- API ----

  private caInfo() {
    return {
      CAName: this.options.caName,
      CAChain: Buffer.from(this.caCertificate).toString('base64'),
      IssuerPublicKey: '',
      IssuerRevocationPublicKey: '',
      Version: '1.5.15-test',
    };
  }

  private async enroll(req: IncomingMessage, body: Record<string, unknown>) {
    const basic = /^Basic (.+)$/.exec(req.headers.authorization ?? '');
    if (!basic) throw new CaError(401, 20, 'Authorization failure: enroll needs Basic id:secret');
    const decoded = Buffer.from(basic[1], 'base64').toString('utf8');
    const separator = decoded.indexOf(':');
    const id = decoded.slice(0, separator);
    const entry = this.registry.get(id);
    if (!entry || entry.secret !== decoded.slice(separator + 1))
      throw new CaError(401, 20, 'Authentication failure');
    if (entry.state === -1) throw new CaError(401, 20, `Identity ${id} is revoked`);
    if (entry.maxEnrollments > 0 && entry.enrollments >= entry.maxEnrollments) {
      throw new CaError(401, 20, `The identity ${id} has already enrolled ${entry.enrollments} times`);
    }
    const certificate = await this.issue(entry, body);
    entry.enrollments++;
    return { Cert: Buffer.from(certificate).toString('base64'), ServerInfo: this.caInfo() };
  }

  private async reenroll(caller: RegistryEntry, body: Record<string, unknown>) {
    const certificate = await this.issue(caller, body);
    return { Cert: Buffer.from(certificate).toString('base64'), ServerInfo: this.caInfo() };
  }

  private register(caller: RegistryEntry, body: Record<string, unknown>) {
    const id = String(body.id ?? '');
    if (!id) throw new CaError(400, 0, 'id is required');
    if (this.registry.has(id)) throw new CaError(409, 74, `Identity '${id}' is already registered`);
    const type = String(body.type ?? 'client');
    this.requireRegistrar(caller, type);
    const attrs = (body.attrs as Attribute[] | undefined) ?? [];
    for (const attr of attrs) {
      if (!this.mayGrant(caller, attr.name)) {
        throw new CaError(
          403,
          71,
          `Authorization failure: ${caller.id} may not register attribute ${attr.name}`,
        );
      }
    }
    const secret =
      typeof body.secret === 'string' && body.secret ? body.secret : randomBytes(12).toString('hex');
    const requested = Number(body.max_enrollments ?? 0);
    this.registry.set(id, {
      id,
      secret,
      type,
      affiliation: String(body.affiliation ?? ''),
      attrs: attrs.map((a) => ({ name: a.name, value: a.value, ecert: a.ecert === true })),
      maxEnrollments: requested === 0 ? -1 : requested,
      enrollments: 0,
      state: 0,
    });
    return { secret };
  }

  private modifyIdentity(caller: RegistryEntry, id: string, body: Record<string, unknown>) {
    const entry = this.registry.get(id);
    if (!entry) throw new CaError(404, 63, `Failed to get User: ${id} not found`);
    this.requireRegistrar(caller, entry.type);
    if (typeof body.secret === 'string' && body.secret) entry.secret = body.secret;
    if (Array.isArray(body.attrs)) entry.attrs = body.attrs as Attribute[];
    return this.describe(entry);
  }

  private listIdentities(caller: RegistryEntry) {
    this.requireRegistrar(caller, 'client');
    return {
      identities: [...this.registry.values()].map((entry) => this.describe(entry)),
      caname: this.options.caName,
    };
  }

  private describe(entry: RegistryEntry) {
    return {
      id: entry.id,
      type: entry.type,
      affiliation: entry.affiliation,
      attrs: entry.attrs.map((a) => ({ name: a.name, value: a.value, ecert: a.ecert === true })),
      max_enrollments: entry.maxEnrollments,
    };
  }

  private async revoke(caller: RegistryEntry, body: Record<string, unknown>) {
    if (this.attr(caller, 'hf.Revoker') !== 'true')
      throw new CaError(403, 71, `Authorization failure: ${caller.id} is not a revoker`);
    const reason = String(body.reason ?? 'unspecified');
    const id = String(body.id ?? '');
    const serial = String(body.serial ?? '')
      .toLowerCase()
      .replace(/^0+/, '');
    const revoked: { Serial: string; AKI: string }[] = [];
    const aki = this.authorityKeyId();
    const revokeOne = (cert: IssuedCertificate) => {
      if (cert.revokedAt) return;
      cert.revokedAt = new Date();
      cert.reason = reason;
      revoked.push({ Serial: cert.serial, AKI: aki });
    };
    if (serial) {
      if (String(body.aki ?? '').toLowerCase() !== aki)
        throw new CaError(404, 48, 'Certificate with that AKI and serial not found');
      const cert = [...this.certificates.values()].find((c) => c.serial.replace(/^0+/, '') === serial);
      if (!cert || (id && cert.id !== id))
        throw new CaError(404, 48, `Certificate ${serial} of ${id} not found`);
      revokeOne(cert);
    } else {
      const entry = this.registry.get(id);
      if (!entry) throw new CaError(404, 63, `Identity ${id} not found`);
      this.requireRegistrar(caller, entry.type);
      entry.state = -1;
      for (const cert of this.certificates.values()) if (cert.id === id) revokeOne(cert);
    }
    const result: Record<string, unknown> = { RevokedCerts: revoked };
    if (body.gencrl === true) result.CRL = Buffer.from(await this.crl(caller)).toString('base64');
    return result;
  }

  private listCertificates(caller: RegistryEntry, query: URLSearchParams) {
    this.requireRegistrar(caller, 'client');
    let certs = [...this.certificates.values()];
    const id = query.get('id');
    if (id) certs = certs.filter((c) => c.id === id);
    if (query.get('notrevoked') === 'true') certs = certs.filter((c) => !c.revokedAt);
    if (query.get('revoked_start')) certs = certs.filter((c) => c.revokedAt);
    return { certs: certs.map((c) => ({ PEM: c.pem })), caname: this.options.caName };
  }

  /** The CRL (PEM) signed by the CA listing every revoked certificate. */
  async crl(caller?: RegistryEntry): Promise<string> {
    if (caller && this.attr(caller, 'hf.GenCRL') !== 'true')
      throw new CaError(403, 71, `Authorization failure: ${caller.id} may not generate CRLs`);
    const revoked = [...this.certificates.values()].filter((c) => c.revokedAt);
    const crl = await x509.X509CrlGenerator.create(
      {
        issuer: this.caCert.subjectName,
        thisUpdate: new Date(),
        nextUpdate: new Date(Date.now() + 86_400_000),
        signingKey: this.caKeys.privateKey as never,
        signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
        entries: revoked.map((c) => ({ serialNumber: c.serial, revocationDate: c.revokedAt! })),
      },
      crypto,
    );
    return crl.toString('pem');
  }

  private authorityKeyId(): string {
    return this.caCert.getExtension(x509.SubjectKeyIdentifierExtension)!.keyId.toLowerCase();
  }

  private async issue(entry: RegistryEntry, body: Record<string, unknown>): Promise<string> {
    const csr = new x509.Pkcs10CertificateRequest(String(body.certificate_request ?? ''));
    if (!(await csr.verify(crypto))) throw new CaError(400, 0, 'the CSR signature does not verify');
    const requests = (body.attr_reqs as { name: string; optional?: boolean }[] | undefined) ?? undefined;
    let attrs: Attribute[];
    if (requests) {
      attrs = [];
      for (const request of requests) {
        const found = entry.attrs.find((a) => a.name === request.name);
        if (found) attrs.push(found);
        else if (!request.optional)
          throw new CaError(400, 0, `Identity '${entry.id}' does not have attribute '${request.name}'`);
      }
    } else {
      attrs = entry.attrs.filter((a) => a.ecert);
    }
    const extensions: x509.Extension[] = [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      await x509.SubjectKeyIdentifierExtension.create(await csr.publicKey.export(crypto), false, crypto),
      await x509.AuthorityKeyIdentifierExtension.create(this.caCert, false, crypto),
    ];
    if (attrs.length > 0) {
      const json = JSON.stringify({ attrs: Object.fromEntries(attrs.map((a) => [a.name, a.value])) });
      extensions.push(new x509.Extension(FABRIC_ATTRIBUTES_OID, false, Buffer.from(json, 'utf8')));
    }
    const serial = randomSerial();
    const certificate = await x509.X509CertificateGenerator.create(
      {
        serialNumber: serial,
        subject: [{ CN: [entry.id] }, { OU: [entry.type] }],
        issuer: this.caCert.subjectName,
        notBefore: new Date(Date.now() - 60_000),
        notAfter: new Date(Date.now() + 365 * 86_400_000),
        publicKey: csr.publicKey,
        signingKey: this.caKeys.privateKey as never,
        signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
        extensions,
      },
      crypto,
    );
    const pem = certificate.toString('pem');
    const normalized = new X509Certificate(pem).serialNumber.toLowerCase();
    this.certificates.set(normalized, { id: entry.id, serial: normalized, pem });
    return pem;
  }
}

function randomSerial(): string {
  const bytes = randomBytes(16);
  bytes[0] &= 0x7f;
  bytes[0] |= 0x10;
  return bytes.toString('hex');
}
