/**
 * The organisations admitted to the served channel and the checks a peer makes on every signed request: the
 * creator (msp.SerializedIdentity) names an admitted MSP, its certificate was issued by one of that MSP's CA
 * certificates, is valid now and not on the MSP's channel CRL, and its key signed the request.
 */
import { createHash, verify, X509Certificate, webcrypto } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import * as x509 from '@peculiar/x509';
import { msp } from '@hyperledger/fabric-protos';
import { WIRE_SCHEMAS } from './wire-format.js';
import { decodeOrRefuse, GatewayRpcError } from './rpc-error.js';

/** An organisation of the channel: its MSP id and the CA certificates (PEM) that issue its identities. */
export interface MemberMsp {
  mspId: string;
  caCertificates: readonly string[];
}

export interface VerifiedCreator {
  mspid: string;
  /** The certificate, PEM bytes as sent (what the chaincode's ctx.clientIdentity parses). */
  idBytes: Uint8Array;
  publicKey: KeyObject;
}

/** Deserialized creators kept, as a peer caches MSP identities (chain verification costs milliseconds). */
const CREATOR_CACHE_SIZE = 1000;

const denied = (message: string) =>
  new GatewayRpcError(grpc.status.PERMISSION_DENIED, `access denied: ${message}`);

export class MemberMsps {
  private readonly cas = new Map<string, X509Certificate[]>();
  /** Revoked serials per MSP: the CRLs in the channel's MSP configuration. */
  private readonly crls = new Map<string, Set<string>>();
  private readonly creators = new Map<string, VerifiedCreator & { validTo: number }>();

  /**
   * @param refresh called when a request names an MSP not admitted: may admit more members (e.g. re-read a
   *   members file that changed) and returns whether it did.
   */
  constructor(
    members: readonly MemberMsp[] = [],
    private readonly refresh?: () => boolean,
  ) {
    for (const member of members) this.admit(member);
  }

  /** Admits (or replaces) an organisation. */
  admit(member: MemberMsp): void {
    this.cas.set(
      member.mspId,
      member.caCertificates.map((pem) => new X509Certificate(pem)),
    );
    this.creators.clear();
  }

  get mspIds(): string[] {
    return [...this.cas.keys()];
  }

  caCertificates(mspId: string): string[] {
    return (this.cas.get(mspId) ?? []).map((certificate) => certificate.toString());
  }

  /**
   * Puts an MSP's CRL into the "channel configuration": from now on its revoked certificates are refused, as
   * peers do once a config update carries the CRL.
   */
  async setCrl(mspId: string, crlPem: string): Promise<void> {
    const cas = this.cas.get(mspId);
    if (!cas) throw new Error(`unknown MSP ${mspId}`);
    const crl = new x509.X509Crl(crlPem);
    let signed = false;
    for (const ca of cas) {
      const publicKey = new x509.X509Certificate(ca.raw).publicKey;
      if (await crl.verify({ publicKey }, webcrypto as never)) signed = true;
    }
    if (!signed) throw new Error(`the CRL is not signed by the CA of ${mspId}`);
    this.crls.set(mspId, new Set(crl.entries.map((entry) => normalizeSerial(entry.serialNumber))));
    this.creators.clear();
  }

  /** The creator of a request (serialized msp.SerializedIdentity), checked; refused with PERMISSION_DENIED. */
  verifyCreator(creatorBytes: Uint8Array): VerifiedCreator {
    const cacheKey = createHash('sha256').update(creatorBytes).digest('hex');
    const cached = this.creators.get(cacheKey);
    if (cached && Date.now() <= cached.validTo) return cached;
    const verified = this.verifyUncached(creatorBytes);
    if (this.creators.size >= CREATOR_CACHE_SIZE) this.creators.clear();
    this.creators.set(cacheKey, verified);
    return verified;
  }

  /** Refuses unless `signature` (DER ECDSA over SHA-256) of `bytes` verifies with the creator's key. */
  verifySignature(publicKey: KeyObject, bytes: Uint8Array, signature: Uint8Array, what: string): void {
    let valid = false;
    try {
      valid = signature.length > 0 && verify('sha256', bytes, publicKey, signature);
    } catch {
      valid = false;
    }
    if (!valid) throw denied(`bad signature on the ${what}`);
  }

  private verifyUncached(creatorBytes: Uint8Array): VerifiedCreator & { validTo: number } {
    const creator = decodeOrRefuse('creator', creatorBytes, WIRE_SCHEMAS.serializedIdentity, (bytes) =>
      msp.SerializedIdentity.deserializeBinary(bytes),
    );
    const mspid = creator.getMspid();
    const cas = this.cas.get(mspid) ?? (this.refresh?.() ? this.cas.get(mspid) : undefined);
    if (!cas) throw denied(`unknown MSP ${JSON.stringify(mspid.slice(0, 64))}`);
    const idBytes = creator.getIdBytes_asU8();
    let certificate: X509Certificate;
    try {
      certificate = new X509Certificate(Buffer.from(idBytes));
    } catch {
      throw denied('the creator is not an X.509 certificate');
    }
    const issued = cas.some((ca) => certificate.checkIssued(ca) && certificate.verify(ca.publicKey));
    if (!issued) throw denied(`certificate not issued by ${mspid}`);
    if (this.crls.get(mspid)?.has(normalizeSerial(certificate.serialNumber))) {
      throw denied(`certificate revoked by ${mspid} (channel CRL)`);
    }
    const now = Date.now();
    const validTo = Date.parse(certificate.validTo);
    if (now < Date.parse(certificate.validFrom) || now > validTo) {
      throw denied('certificate expired or not yet valid');
    }
    if (certificate.publicKey.asymmetricKeyType !== 'ec') throw denied('the creator key is not ECDSA');
    return { mspid, idBytes, publicKey: certificate.publicKey, validTo };
  }
}

function normalizeSerial(serial: string): string {
  return serial.toLowerCase().replace(/^0+/, '');
}
