/**
 * The service's Prometheus metrics (prom-client), served at GET /metrics (src/operator/operator-routes.ts).
 * Labels carry the interaction, the resource type and the status class only: never ids, pseudonyms or patients.
 *
 * Per request: one counter increment and one histogram observation, with label objects built once per
 * (interaction, type, status class) and reused. Backlogs (anchors, audit) and consent decisions are read when
 * Prometheus scrapes, not counted on the request path.
 */
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { Ledger } from '../ledger/ledger.js';
import type { ResourceValidator } from '../fhir/validation/validator.js';
import type { FhirRouteLabels } from '../fhir/http/fhir-routes.js';
import type { CertificateExpiry } from './certificate-expiry.js';

type RequestLabels = { interaction: string; resource_type: string; status_class: string };

/** What the scrape reads from the running service; each is optional (a part may be off). */
export interface MetricSources {
  /** Versions waiting for their anchor (counted up to a cap). */
  anchorBacklog?: () => Promise<number>;
  /** When the oldest version still waiting for its anchor was stored (ms since epoch), if any waits. */
  oldestPendingAnchor?: () => Promise<number | undefined>;
  /** Access decisions the consent cache answered since start, by outcome. */
  consentDecisions?: () => { permit: number; deny: number };
  /** Audit records waiting to be stored. */
  auditBacklog?: () => number;
  /** Access records waiting for the ledger (kept while it is away). */
  accessRecordBacklog?: () => number;
  /** The earliest end of validity of each role of enrolment certificates (src/operator/certificate-expiry.ts). */
  certificateExpiries?: () => Promise<CertificateExpiry[]>;
}

const STATUS_CLASSES = ['0xx', '1xx', '2xx', '3xx', '4xx', '5xx'];

/**
 * A scrape-time reading; null when it failed (the store closing, a query refused): the gauge keeps its last value
 * and the rest of the scrape is still served.
 */
async function scraped<T>(read: (() => Promise<T>) | undefined): Promise<T | undefined | null> {
  if (!read) return undefined;
  try {
    return await read();
  } catch {
    return null;
  }
}

export class ServiceMetrics {
  readonly registry = new Registry();
  private readonly requests: Counter<keyof RequestLabels>;
  private readonly latency: Histogram<keyof RequestLabels>;
  private readonly validationFailures: Counter<'resource_type'>;
  private readonly ledgerTransactions: Counter<'kind' | 'transaction' | 'outcome'>;
  /** interaction -> resource type -> status class -> labels (built once). */
  private readonly labelSets = new Map<string, Map<string, RequestLabels[]>>();
  private sources: MetricSources = {};

  constructor() {
    const registers = [this.registry];
    this.requests = new Counter({
      name: 'hie_http_requests_total',
      help: 'HTTP requests answered, by FHIR interaction (or route), resource type and status class',
      labelNames: ['interaction', 'resource_type', 'status_class'],
      registers,
    });
    this.latency = new Histogram({
      name: 'hie_http_request_duration_seconds',
      help: 'Time from receiving a request to its response, by FHIR interaction (or route), resource type and status class',
      labelNames: ['interaction', 'resource_type', 'status_class'],
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers,
    });
    this.validationFailures = new Counter({
      name: 'hie_validation_failures_total',
      help: 'Resources that failed validation (writes refused 400/422, and $validate calls finding errors), by resource type',
      labelNames: ['resource_type'],
      registers,
    });
    this.ledgerTransactions = new Counter({
      name: 'hie_ledger_transactions_total',
      help: 'Ledger calls by kind (submit, evaluate), chaincode transaction and outcome (ok, error)',
      labelNames: ['kind', 'transaction', 'outcome'],
      registers,
    });
    this.defineScrapedMetrics(registers);
  }

  /** The metrics read from the parts at scrape time (observe() names the sources): backlogs, consent decisions. */
  private defineScrapedMetrics(registers: Registry[]): void {
    const sources = () => this.sources;
    new Gauge({
      name: 'hie_anchor_backlog',
      help: 'Stored versions waiting for their integrity anchor on the ledger (counted up to 10000)',
      registers,
      async collect() {
        const count = await scraped(sources().anchorBacklog);
        if (typeof count === 'number') this.set(count);
      },
    });
    new Gauge({
      name: 'hie_anchor_oldest_pending_age_seconds',
      help: 'Age of the oldest version waiting for its anchor (0 when none waits)',
      registers,
      async collect() {
        const source = sources().oldestPendingAnchor;
        if (!source) return;
        const stored = await scraped(source);
        if (stored === null) return;
        this.set(stored === undefined ? 0 : Math.max(0, (Date.now() - stored) / 1000));
      },
    });
    // Counted by the consent cache as plain numbers (no prom-client call per decision), copied at scrape time.
    const seen = { permit: 0, deny: 0 };
    new Counter({
      name: 'hie_consent_decisions_total',
      help: "Access decisions on another organisation's records under the patients' consent, by outcome (permit, deny)",
      labelNames: ['outcome'],
      registers,
      collect() {
        const now = sources().consentDecisions?.();
        if (!now) return;
        for (const outcome of ['permit', 'deny'] as const) {
          this.inc({ outcome }, now[outcome] - seen[outcome]);
          seen[outcome] = now[outcome];
        }
      },
    });
    new Gauge({
      name: 'hie_audit_backlog',
      help: 'Audit records (aggregated AuditEvents) waiting to be stored',
      registers,
      collect() {
        const count = sources().auditBacklog?.();
        if (count !== undefined) this.set(count);
      },
    });
    new Gauge({
      name: 'hie_access_record_backlog',
      help: 'Ledger access records (who read which patient data) waiting for the ledger',
      registers,
      collect() {
        const count = sources().accessRecordBacklog?.();
        if (count !== undefined) this.set(count);
      },
    });
    new Gauge({
      name: 'hie_certificate_expiry_seconds',
      help: 'Seconds until the earliest enrolment certificate of a role expires (service-identity, ca, participants); negative once expired',
      labelNames: ['certificate'],
      registers,
      async collect() {
        const expiries = await scraped(sources().certificateExpiries);
        if (!expiries) return;
        const now = Date.now();
        for (const { name, notAfter } of expiries) this.set({ certificate: name }, (notAfter - now) / 1000);
      },
    });
  }

  /** What the scrape reads (set once the parts exist). */
  observe(sources: MetricSources): void {
    this.sources = sources;
  }

  /** Counts every response: a callback hook (no promise per request). */
  install(app: FastifyInstance): void {
    app.addHook('onResponse', (request, reply, done) => {
      const labels = this.labelsOf(request, reply.statusCode);
      this.requests.inc(labels);
      this.latency.observe(labels, reply.elapsedTime / 1000);
      done();
    });
  }

  private labelsOf(request: FastifyRequest, status: number): RequestLabels {
    const fhir = request as FastifyRequest & FhirRouteLabels;
    // Not a FHIR request: its fastify route pattern (few, fixed), or 'unmatched' (the path may hold anything).
    const interaction = fhir.fhirInteraction ?? request.routeOptions.url ?? 'unmatched';
    const resourceType = fhir.fhirResourceType ?? '';
    let byType = this.labelSets.get(interaction);
    if (!byType) this.labelSets.set(interaction, (byType = new Map()));
    let byClass = byType.get(resourceType);
    if (!byClass) {
      byClass = STATUS_CLASSES.map((status_class) => ({
        interaction,
        resource_type: resourceType,
        status_class,
      }));
      byType.set(resourceType, byClass);
    }
    const statusClass = Math.floor(status / 100);
    return byClass[statusClass >= 1 && statusClass <= 5 ? statusClass : 0];
  }

  /** The validator every FhirContext uses, counting resources that fail. */
  countingValidator(validator: ResourceValidator): ResourceValidator {
    const failures = this.validationFailures;
    return {
      isResourceType: (type) => validator.isResourceType(type),
      resourceTypes: validator.resourceTypes,
      validate(resource, options) {
        const result = validator.validate(resource, options);
        if (!result.valid) {
          const type = (resource as { resourceType?: unknown } | null)?.resourceType;
          failures.inc({
            resource_type: typeof type === 'string' && validator.isResourceType(type) ? type : 'unknown',
          });
        }
        return result;
      },
    };
  }

  /** The ledger the service uses, counting its transactions and errors. */
  countingLedger(ledger: Ledger): Ledger {
    const counter = this.ledgerTransactions;
    const counted = async <T>(kind: string, transaction: string, call: Promise<T>): Promise<T> => {
      try {
        const result = await call;
        counter.inc({ kind, transaction, outcome: 'ok' });
        return result;
      } catch (err) {
        counter.inc({ kind, transaction, outcome: 'error' });
        throw err;
      }
    };
    return {
      kind: ledger.kind,
      submit: (transaction, args) => counted('submit', transaction, ledger.submit(transaction, args)),
      evaluate: (transaction, args) => counted('evaluate', transaction, ledger.evaluate(transaction, args)),
      events: (startBlock) => ledger.events(startBlock),
      height: () => ledger.height(),
      transactionStatus: (txId) => ledger.transactionStatus(txId),
      // A network ledger's "reachable again" must reach the anchorer through this wrapper too.
      ...(ledger.onReachable && { onReachable: (listener) => ledger.onReachable!(listener) }),
      close: () => ledger.close(),
    };
  }

  async text(): Promise<{ contentType: string; body: string }> {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }
}
