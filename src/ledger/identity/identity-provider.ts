/**
 * The certificate authority behind participants' enrolment, whichever runs: the embedded CA (default, one per
 * organisation, src/ledger/identity/embedded-ca.ts) or Fabric CA (src/ledger/identity/fabric-ca.ts implements this
 * same interface). Enrolment ids and the `hie.id` attribute are random pseudonyms, never names or resource ids.
 */
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { EmbeddedCa, type EcKeyType } from './embedded-ca.js';

export interface IdentityEnrollment {
  certificate: string;
  privateKey: string;
  /** Hexadecimal serial number of the certificate. */
  serial: string;
}

export interface RegisterIdentityRequest {
  enrollmentId: string;
  /** Fabric CA identity type (client, peer, admin...); client for participants. */
  type?: string;
  /** Attributes the certificates of this identity carry (hie.role, hie.id). */
  attrs: Record<string, string>;
}

export interface EnrollIdentityRequest {
  enrollmentId: string;
  /** Secret returned by register (Fabric CA); the embedded CA needs none. */
  secret?: string;
  attrs: Record<string, string>;
  keyType?: EcKeyType;
}

export interface IdentityRecord {
  enrollmentId: string;
  attrs: Record<string, string>;
  revoked: boolean;
}

export interface IdentityProvider {
  readonly kind: 'embedded' | 'fabric-ca';
  /** PEM of the CA certificate (what verifiers trust). */
  caCertificate(): Promise<string>;
  /** Registers an identity; returns the enrolment secret when the CA uses one. */
  register(request: RegisterIdentityRequest): Promise<{ secret?: string }>;
  enroll(request: EnrollIdentityRequest): Promise<IdentityEnrollment>;
  /** A new key and certificate for an enrolled identity (same attributes). */
  reenroll(request: {
    enrollmentId: string;
    current: IdentityEnrollment;
    keyType?: EcKeyType;
  }): Promise<IdentityEnrollment>;
  /** Revokes the identity (every certificate when no serial is given, else that one). */
  revoke(request: { enrollmentId: string; serial?: string; reason?: string }): Promise<void>;
  list(): Promise<IdentityRecord[]>;
}

interface EmbeddedIdentityEntry {
  enrollmentId: string;
  attrs: Record<string, string>;
  serials: string[];
  revoked: boolean;
}

/** The embedded CA behind the IdentityProvider interface; it keeps its identities in `identities.json` next to the CA key. */
export class EmbeddedIdentityProvider implements IdentityProvider {
  readonly kind = 'embedded' as const;
  private constructor(
    private readonly ca: EmbeddedCa,
    private readonly file: string,
    private readonly entries: Map<string, EmbeddedIdentityEntry>,
  ) {}

  static async open(dir: string, options: { mspId: string }): Promise<EmbeddedIdentityProvider> {
    const ca = await EmbeddedCa.open(dir, { mspId: options.mspId });
    const file = join(dir, 'identities.json');
    let list: EmbeddedIdentityEntry[] = [];
    try {
      list = JSON.parse(readFileSync(file, 'utf8')) as EmbeddedIdentityEntry[];
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    return new EmbeddedIdentityProvider(ca, file, new Map(list.map((e) => [e.enrollmentId, e])));
  }

  get embeddedCa(): EmbeddedCa {
    return this.ca;
  }

  private save(): void {
    writeFileSync(`${this.file}.tmp`, JSON.stringify([...this.entries.values()], null, 2), { mode: 0o600 });
    renameSync(`${this.file}.tmp`, this.file);
  }

  async caCertificate(): Promise<string> {
    return this.ca.certificate;
  }

  async register(request: RegisterIdentityRequest): Promise<{ secret?: string }> {
    const existing = this.entries.get(request.enrollmentId);
    if (existing) throw new Error(`identity ${request.enrollmentId} is already registered`);
    this.entries.set(request.enrollmentId, {
      enrollmentId: request.enrollmentId,
      attrs: { ...request.attrs },
      serials: [],
      revoked: false,
    });
    this.save();
    return {};
  }

  async enroll(request: EnrollIdentityRequest): Promise<IdentityEnrollment> {
    let entry = this.entries.get(request.enrollmentId);
    if (entry?.revoked) throw new Error(`identity ${request.enrollmentId} is revoked`);
    if (!entry) {
      entry = {
        enrollmentId: request.enrollmentId,
        attrs: { ...request.attrs },
        serials: [],
        revoked: false,
      };
      this.entries.set(request.enrollmentId, entry);
    }
    const enrollment = await this.ca.enroll({
      enrollmentId: request.enrollmentId,
      attrs: entry.attrs,
      keyType: request.keyType,
    });
    entry.serials.push(enrollment.serial);
    this.save();
    return enrollment;
  }

  async reenroll(request: {
    enrollmentId: string;
    current: IdentityEnrollment;
    keyType?: EcKeyType;
  }): Promise<IdentityEnrollment> {
    const entry = this.entries.get(request.enrollmentId);
    if (!entry || entry.revoked) throw new Error(`identity ${request.enrollmentId} is not enrolled`);
    if (!(await this.ca.verify(request.current.certificate)))
      throw new Error('the current certificate is not valid');
    return this.enroll({ enrollmentId: request.enrollmentId, attrs: entry.attrs, keyType: request.keyType });
  }

  async revoke(request: { enrollmentId: string; serial?: string }): Promise<void> {
    const entry = this.entries.get(request.enrollmentId);
    if (!entry) throw new Error(`unknown identity ${request.enrollmentId}`);
    const serials = request.serial ? [request.serial] : entry.serials;
    for (const serial of serials) this.ca.revoke(serial);
    if (!request.serial) entry.revoked = true;
    this.save();
  }

  async list(): Promise<IdentityRecord[]> {
    return [...this.entries.values()].map((e) => ({
      enrollmentId: e.enrollmentId,
      attrs: { ...e.attrs },
      revoked: e.revoked,
    }));
  }
}
