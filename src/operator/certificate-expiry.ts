/**
 * The alarm before enrolment certificates expire: the service's ledger identity, its CA's certificate and the
 * participants' certificates. Read at each probe or scrape (a certificate replaced on disk counts at once), parsed
 * once per distinct PEM.
 * - /readyz check `certificates`: `degraded` (still ready) from `--cert-expiry-warn-days` days before a
 *   certificate's end, `failing` once the service's own identity or its CA has expired (a participant's expired
 *   certificate stays `degraded`: one client cannot make the service unready);
 * - gauge hie_certificate_expiry_seconds{certificate}: seconds left (negative once expired);
 * - a warning log line naming the certificate's role and its end date: no ids, no health data.
 */
import { X509Certificate } from 'node:crypto';
import type { ReadinessCheck, ReadinessResult } from './operator-routes.js';

/** A role of certificates (one gauge series and one line of the readiness reason each). */
export interface CertificateSource {
  /** The role: `service-identity`, `ca`, `participants`... (never an id). */
  name: string;
  /** Whether its expiry stops the service (its own identity, its CA) rather than only warning. */
  critical: boolean;
  /** The certificates of this role, PEM; the earliest end counts. Empty when there is none. */
  read(): string[] | Promise<string[]>;
}

export interface CertificateExpiry {
  name: string;
  critical: boolean;
  /** The earliest end of validity among the role's certificates (ms since epoch). */
  notAfter: number;
}

const DAY_MS = 86_400_000;

export class CertificateExpiryWatch {
  /** PEM -> notAfter (ms), so a probe parses each certificate once. */
  private readonly parsed = new Map<string, number>();

  constructor(
    private readonly sources: CertificateSource[],
    private readonly warnDays: number,
  ) {}

  /** Each role's earliest end of validity; roles without a certificate are left out. */
  async expiries(): Promise<CertificateExpiry[]> {
    const result: CertificateExpiry[] = [];
    for (const source of this.sources) {
      const ends = (await source.read()).map((pem) => this.notAfterOf(pem));
      if (ends.length > 0)
        result.push({ name: source.name, critical: source.critical, notAfter: Math.min(...ends) });
    }
    return result;
  }

  /** The /readyz entry: ok, degraded within the warning window, failing when a critical certificate has expired. */
  readinessCheck(): ReadinessCheck {
    return { name: 'certificates', check: async () => this.assess(Date.now()) };
  }

  async assess(now: number): Promise<ReadinessResult> {
    const expiries = await this.expiries();
    const expired = expiries.filter((e) => e.critical && e.notAfter <= now);
    if (expired.length > 0) throw new Error(describe(expired, now));
    const soon = expiries.filter((e) => e.notAfter - now <= this.warnDays * DAY_MS);
    return soon.length > 0 ? { degraded: describe(soon, now) } : undefined;
  }

  private notAfterOf(pem: string): number {
    let end = this.parsed.get(pem);
    if (end === undefined) {
      end = Date.parse(new X509Certificate(pem).validTo);
      // Bounded: replaced certificates do not pile up.
      if (this.parsed.size >= 10_000) this.parsed.clear();
      this.parsed.set(pem, end);
    }
    return end;
  }
}

function describe(expiries: CertificateExpiry[], now: number): string {
  return expiries
    .map(({ name, notAfter }) => {
      const end = new Date(notAfter).toISOString();
      return notAfter <= now
        ? `the ${name} certificate expired at ${end}`
        : `the ${name} certificate expires at ${end} (in ${Math.ceil((notAfter - now) / DAY_MS)} days)`;
    })
    .join('; ');
}
