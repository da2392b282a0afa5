/**
 * Participants' and services' identities from a Fabric CA (fabric-ca-client 2.2), behind the same IdentityProvider
 * interface as the embedded CA (src/ledger/identity/identity-provider.ts): `hie-ledger participant ... --ca fabric`.
 *
 * - A registrar identity (hf.Registrar.Roles, hf.Registrar.Attributes covering hie.*, hf.Revoker, hf.GenCRL;
 *   network/scripts/enroll.sh creates `hie-registrar`) registers identities with the `hie.role` and `hie.id`
 *   attributes as ecert attributes, so every certificate carries them (extension 1.2.3.4.5.6.7.8.1).
 * - Keys are made here (ECDSA P-256 or P-384, WebCrypto) and only a CSR goes to the CA; the private key never
 *   leaves the process.
 * - Enrolling without the registration secret (the participant directory keeps none) sets a fresh one-time
 *   secret through the registrar first.
 * - Revocation also produces a CRL. Peers refuse a revoked certificate only once that CRL is in the channel's MSP
 *   configuration (network/scripts/update-crl.sh; docs/fabric.md).
 */
import { randomBytes, webcrypto, X509Certificate, createPrivateKey, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import * as x509 from '@peculiar/x509';
import FabricCAServices from 'fabric-ca-client';
import type {
  EnrollIdentityRequest,
  IdentityEnrollment,
  IdentityProvider,
  IdentityRecord,
  RegisterIdentityRequest,
} from './identity-provider.js';
import type { FabricCaConfig } from '../fabric/config.js';
import { ecdsaSigning, newEcKeyPair, privateKeyPem, signLowS, type EcKeyType } from './ec-keys.js';

const crypto = webcrypto;
/** Revocation reasons Fabric CA accepts (RFC 5280 names, lower case). */
const REVOCATION_REASONS = new Set([
  'unspecified',
  'keycompromise',
  'cacompromise',
  'affiliationchange',
  'superseded',
  'cessationofoperation',
  'certificatehold',
  'removefromcrl',
  'privilegewithdrawn',
  'aacompromise',
]);

export interface FabricCaIdentityOptions {
  /** https://host:port of the Fabric CA server. */
  url: string;
  /** The CA name (fabric-ca-server `ca.name`), e.g. ca-hospital1. */
  caName?: string;
  /** PEM of the CA's TLS root (required for https). */
  tlsRootCertificate?: string;
  registrar: { certificate: string; privateKey: string };
}

/**
 * fabric-ca-client signs its requests with `registrar.getSigningIdentity().sign(text) -> hex DER signature` and
 * insists the registrar's class is named `User`. This is that, on node:crypto, so registrars and participants
 * with P-256 or P-384 keys both sign correctly (Fabric CA verifies SHA-256 digests for either curve), in low-S
 * form: Fabric CA refuses the high-S half of ECDSA signatures ("Invalid S. Must be smaller than half the order").
 */
class User {
  private readonly signingIdentity: { _certificate: string; sign(text: string | Buffer): string };
  constructor(certificate: string, privateKey: KeyObject) {
    this.signingIdentity = {
      _certificate: certificate,
      sign: (text) => signLowS(Buffer.from(text), privateKey).toString('hex'),
    };
  }
  getSigningIdentity() {
    return this.signingIdentity;
  }
  getIdentity() {
    return this.signingIdentity;
  }
}

interface CaResponse<T> {
  result: T;
}

/** The parts of fabric-ca-client used here (its typings name fabric-common's User class). */
interface CaServices {
  getCaInfo(registrar: User): Promise<{ caName: string; caChain: string }>;
  register(request: object, registrar: User): Promise<string>;
  enroll(request: object): Promise<{ certificate: string; rootCertificate: string }>;
  revoke(request: object, registrar: User): Promise<CaResponse<{ CRL?: string }>>;
  generateCRL(request: object, registrar: User): Promise<string>;
  newIdentityService(): {
    update(id: string, request: object, registrar: User): Promise<unknown>;
    getAll(
      registrar: User,
    ): Promise<CaResponse<{ identities?: { id: string; attrs?: { name: string; value: string }[] }[] }>>;
  };
  newCertificateService(): {
    getCertificates(request: object, registrar: User): Promise<CaResponse<{ certs?: { PEM: string }[] }>>;
  };
  /** FabricCAServices.reenroll makes its own key (P-256 only); the underlying client takes our CSR. */
  _fabricCAClient: {
    reenroll(
      csr: string,
      signingIdentity: unknown,
      attrReqs?: object[],
    ): Promise<CaResponse<{ Cert: string }>>;
  };
}

export class FabricCaIdentityProvider implements IdentityProvider {
  readonly kind = 'fabric-ca' as const;
  private readonly ca: CaServices;
  private readonly registrar: User;
  private caCertificatePem?: string;

  constructor(options: FabricCaIdentityOptions) {
    const tlsOptions = options.tlsRootCertificate
      ? { trustedRoots: [options.tlsRootCertificate], verify: true }
      : undefined;
    this.ca = new (
      FabricCAServices as unknown as new (url: string, tls?: object, caName?: string) => CaServices
    )(options.url, tlsOptions, options.caName ?? '');
    this.registrar = new User(options.registrar.certificate, createPrivateKey(options.registrar.privateKey));
  }

  /** From the `ca` section of a --fabric-config file. */
  static fromConfig(config: FabricCaConfig): FabricCaIdentityProvider {
    return new FabricCaIdentityProvider({
      url: config.url,
      caName: config.caName,
      tlsRootCertificate: readFileSync(config.tlsRootCertPath, 'utf8'),
      registrar: {
        certificate: readFileSync(config.registrar.certPath, 'utf8'),
        privateKey: readFileSync(config.registrar.keyPath, 'utf8'),
      },
    });
  }

  async caCertificate(): Promise<string> {
    if (!this.caCertificatePem) {
      const info = await this.ca.getCaInfo(this.registrar);
      // The chain's first certificate is the issuing CA.
      this.caCertificatePem = new X509Certificate(info.caChain).toString();
    }
    return this.caCertificatePem;
  }

  async register(request: RegisterIdentityRequest): Promise<{ secret?: string }> {
    const secret = randomBytes(18).toString('base64url');
    await this.ca.register(
      {
        enrollmentID: request.enrollmentId,
        enrollmentSecret: secret,
        role: request.type ?? 'client',
        affiliation: '',
        // 0: the CA's own limit (registry.maxenrollments), so re-enrolment with a new secret stays possible.
        maxEnrollments: 0,
        attrs: Object.entries(request.attrs).map(([name, value]) => ({ name, value, ecert: true })),
      },
      this.registrar,
    );
    return { secret };
  }

  async enroll(request: EnrollIdentityRequest): Promise<IdentityEnrollment> {
    let secret = request.secret;
    if (!secret) {
      secret = randomBytes(18).toString('base64url');
      try {
        await this.ca
          .newIdentityService()
          .update(request.enrollmentId, { enrollmentSecret: secret }, this.registrar);
      } catch (error) {
        if (!/not found|does not exist|code: 63|"code":63/i.test(String((error as Error).message ?? error)))
          throw error;
        // Not registered yet (as the embedded CA, enrol registers on first use).
        secret = (
          await this.register({ enrollmentId: request.enrollmentId, type: 'client', attrs: request.attrs })
        ).secret!;
      }
    }
    const { csr, privateKey } = await newKeyAndCsr(request.enrollmentId, request.keyType ?? 'P-384');
    const enrolled = await this.ca.enroll({
      enrollmentID: request.enrollmentId,
      enrollmentSecret: secret,
      csr,
      attr_reqs: Object.keys(request.attrs).map((name) => ({ name, optional: false })),
    });
    return { certificate: enrolled.certificate, privateKey, serial: serialOf(enrolled.certificate) };
  }

  async reenroll(request: {
    enrollmentId: string;
    current: IdentityEnrollment;
    keyType?: EcKeyType;
  }): Promise<IdentityEnrollment> {
    const current = new User(request.current.certificate, createPrivateKey(request.current.privateKey));
    const { csr, privateKey } = await newKeyAndCsr(request.enrollmentId, request.keyType ?? 'P-384');
    const response = await this.ca._fabricCAClient.reenroll(csr, current.getSigningIdentity());
    const certificate = Buffer.from(response.result.Cert, 'base64').toString('utf8');
    return { certificate, privateKey, serial: serialOf(certificate) };
  }

  async revoke(request: { enrollmentId: string; serial?: string; reason?: string }): Promise<void> {
    const reason =
      request.reason && REVOCATION_REASONS.has(request.reason.toLowerCase())
        ? request.reason.toLowerCase()
        : 'unspecified';
    const revocation: Record<string, unknown> = { enrollmentID: request.enrollmentId, reason, gencrl: true };
    if (request.serial) {
      revocation.serial = request.serial.toLowerCase();
      revocation.aki = await this.authorityKeyId();
    }
    await this.ca.revoke(revocation, this.registrar);
  }

  /** The CA's current certificate revocation list (PEM), for the channel's MSP configuration. */
  async crl(): Promise<string> {
    const crl = await this.ca.generateCRL({}, this.registrar);
    return Buffer.from(crl, 'base64').toString('utf8');
  }

  async list(): Promise<IdentityRecord[]> {
    const identities = (await this.ca.newIdentityService().getAll(this.registrar)).result.identities ?? [];
    const certificates = this.ca.newCertificateService();
    const idsOf = async (filter: object) => {
      const certs = (await certificates.getCertificates(filter, this.registrar)).result.certs ?? [];
      return new Set(certs.map((cert) => commonName(cert.PEM)));
    };
    const revoked = await idsOf({ revoked_start: '1970-01-01T00:00:00Z' });
    const valid = await idsOf({ notrevoked: true });
    return identities.map((identity) => ({
      enrollmentId: identity.id,
      attrs: Object.fromEntries(
        (identity.attrs ?? []).filter((a) => !a.name.startsWith('hf.')).map((a) => [a.name, a.value]),
      ),
      revoked: revoked.has(identity.id) && !valid.has(identity.id),
    }));
  }

  private async authorityKeyId(): Promise<string> {
    const ca = new x509.X509Certificate(await this.caCertificate());
    const ski = ca.getExtension(x509.SubjectKeyIdentifierExtension);
    if (!ski) throw new Error('the Fabric CA certificate has no subject key identifier');
    return ski.keyId.toLowerCase();
  }
}

/**
 * Enrols an identity with its registration secret (no registrar needed): how an operator bootstraps the registrar
 * or a service identity (hie.role=service) from the secret the CA admin registered it with.
 */
export async function enrollWithSecret(options: {
  url: string;
  caName?: string;
  tlsRootCertificate?: string;
  enrollmentId: string;
  secret: string;
  /** Attributes that must be in the certificate (e.g. hie.role); default: the CA's ecert attributes. */
  requiredAttrs?: string[];
  keyType?: EcKeyType;
}): Promise<IdentityEnrollment> {
  const tlsOptions = options.tlsRootCertificate
    ? { trustedRoots: [options.tlsRootCertificate], verify: true }
    : undefined;
  const ca = new (
    FabricCAServices as unknown as new (url: string, tls?: object, caName?: string) => CaServices
  )(options.url, tlsOptions, options.caName ?? '');
  const { csr, privateKey } = await newKeyAndCsr(options.enrollmentId, options.keyType ?? 'P-256');
  const enrolled = await ca.enroll({
    enrollmentID: options.enrollmentId,
    enrollmentSecret: options.secret,
    csr,
    attr_reqs: options.requiredAttrs?.map((name) => ({ name, optional: false })),
  });
  return { certificate: enrolled.certificate, privateKey, serial: serialOf(enrolled.certificate) };
}

async function newKeyAndCsr(
  enrollmentId: string,
  keyType: EcKeyType,
): Promise<{ csr: string; privateKey: string }> {
  const keys = await newEcKeyPair(keyType);
  const csr = await x509.Pkcs10CertificateRequestGenerator.create(
    {
      name: [{ CN: [enrollmentId] }],
      keys: keys as unknown as Parameters<typeof x509.Pkcs10CertificateRequestGenerator.create>[0]['keys'],
      signingAlgorithm: ecdsaSigning(keyType),
    },
    crypto as unknown as Parameters<typeof x509.Pkcs10CertificateRequestGenerator.create>[1],
  );
  return { csr: csr.toString('pem'), privateKey: await privateKeyPem(keys.privateKey) };
}

function serialOf(certificatePem: string): string {
  return new X509Certificate(certificatePem).serialNumber.toLowerCase();
}

function commonName(certificatePem: string): string {
  return new x509.X509Certificate(certificatePem).subjectName.getField('CN')[0] ?? '';
}
