/**
 * Wires access control into the app (src/app/app.ts calls it): participants and their CA, the token service (its HMAC
 * key in DATA/secrets/), the consent service on the ledger, the per-request access policy, the audit, the auth
 * routes and hooks, and the `$access-log` operation (who accessed a patient's data).
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { EmbeddedIdentityProvider } from '../ledger/identity/identity-provider.js';
import { ParticipantDirectory, type Participant, type ParticipantRegistry } from './participants.js';
import type { PostgresSharedState } from './shared-state.js';
import type { SharedRevocations } from '../consent/shared-revocations.js';
import { TokenService, type NetworkTokenEndpoint } from './tokens.js';
import { AccessControl, CallerAccessPolicy } from './caller-access-policy.js';
import { AuditRecorder } from './access-audit.js';
import { withConsentLedger } from '../consent/consent-store.js';
import { cursorKeyOf } from '../fhir/interactions/cursor-seal.js';
import type { AccessPolicy, Caller } from '../fhir/interactions/access-policy.js';
import { OpenAccess } from '../fhir/interactions/access-policy.js';
import { ConsentService, type AccessEntry, type PseudonymResolver } from '../consent/consent-service.js';
import { NetworkIds, type NetworkIdIndex } from '../consent/network-ids.js';
import type { Ledger } from '../ledger/ledger.js';
import type { FhirResource } from '../fhir/fhir-json.js';
import type { IndexEntry, ResourceStore, WriteRequest } from '../fhir/store/resource-store.js';
import type { FhirRegistry } from '../fhir/interactions/fhir-registry.js';
import type { InteractionHandler } from '../fhir/interactions/types.js';
import { fhirError } from '../fhir/outcome.js';
import { registerAuth } from './auth-routes.js';
import { networkActorOperation } from './network-actor.js';
import { searchDefinitions } from '../fhir/search/definitions.js';

export type AuthMode = 'smart' | 'dev-open';
const LOOPBACK_HOSTS = new Set(['127.0.0.1', '::1', 'localhost']);

export interface AccessSetupOptions {
  dataDir: string;
  mode: AuthMode;
  /** The interface the server listens on: dev-open refuses anything but loopback. */
  host: string;
  /** The organisation's MSP id: its embedded CA (config.mspId). */
  mspId: string;
  /** This member's MSP id on the ledger (with --ledger fabric the connection file's): `$network-actor`. Default mspId. */
  ledgerMspId?: string;
  /** The organisation this service keeps records for (config.organization): its systems choose ids of new resources. */
  organization?: string;
  /** Public base URL of the FHIR endpoint (config.baseUrl), e.g. https://hie.example.org/fhir. */
  fhirBaseUrl?: string;
  /** Token requests a minute per client address and per client at /auth/token; 0 or absent: no limit. */
  tokenRateLimit?: number;
  /** Lifetime of issued access tokens, seconds (default 300). */
  tokenSeconds?: number;
  fhirPrefix: string;
  store: ResourceStore;
  ledger?: Ledger;
  indexEntries?: (resource: FhirResource) => IndexEntry[];
  /** The audit's aggregation window (AuditRecorder flushMs). */
  auditFlushMs?: number;
  /** The integrity hook: AuditEvents are stored versions too, anchored like every other. */
  anchor?: WriteRequest['anchor'];
  log: { warn(obj: object | string, msg?: string): void; error(obj: object | string, msg?: string): void };
  /** Other members' services at /auth/token (src/exchange/network-tokens.ts); absent: refused. */
  network?: NetworkTokenEndpoint;
  /** Replay cache and rate limits shared by the replicas (PostgreSQL store); absent: this process's memory. */
  shared?: PostgresSharedState;
}

export interface AccessSetup {
  /** The store every FhirContext must use (Consent writes drive the ledger's grants). */
  store: ResourceStore;
  /** The data directory's, or with a PostgreSQL store the database's (every replica's). */
  participants: ParticipantRegistry;
  tokens: TokenService;
  consent?: ConsentService;
  /** The home's network patient ids (with the consent service; the exchange's patient links read them). */
  networkIds?: NetworkIdIndex;
  control: AccessControl;
  audit: AuditRecorder;
  /** Adds the token endpoint, the SMART configuration and the authentication and audit hooks. */
  install(fastify: FastifyInstance): void;
  /** registerFhirRoutes' accessFor: the request's policy, also made current for the Consent ledger hook. */
  accessFor(request: FastifyRequest): AccessPolicy;
  /** Registers `$access-log` (Patient instance level) and `$network-actor` (system level). */
  registerOperations(registry: FhirRegistry): void;
  close(): Promise<void>;
}

/** The token HMAC key: 32 random bytes in DATA/secrets/access-token.key (0600), created at first start. */
export function accessTokenSecret(dataDir: string): Buffer {
  const dir = join(dataDir, 'secrets');
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const file = join(dir, 'access-token.key');
  try {
    writeFileSync(file, randomBytes(32).toString('hex'), { mode: 0o600, flag: 'wx' });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
  return Buffer.from(readFileSync(file, 'utf8').trim(), 'hex');
}

/** Nothing but the capability statement: the policy of requests the auth hook let through unauthenticated. */
class PublicOnlyAccess implements AccessPolicy {
  readonly caller: Caller = { participant: 'anonymous', role: 'open', scopes: [] };
  authorize(interaction: string): void {
    if (interaction !== 'capabilities')
      throw fhirError('authentication-required', 'authentication required', {
        headers: { 'WWW-Authenticate': 'Bearer realm="hie-ledger"' },
      });
  }
  canRead(): boolean {
    return false;
  }
  canWrite(): boolean {
    return false;
  }
}

export function patientCompartmentTypes(): Set<string> {
  return new Set(['Patient', ...searchDefinitions().patientCompartment.keys()]);
}

/** What setupAccess opens, in its order; the phases below pass it on. */
interface AccessParts {
  participants: ParticipantRegistry;
  /** The data directory's `identity/participants.sqlite` (its pseudonyms of FHIR references without PostgreSQL). */
  pseudonyms: ParticipantDirectory;
  /** The pseudonyms of FHIR references consent uses: `pseudonyms`, or the database's (closed with the rest). */
  resolver?: PseudonymResolver & { close(): void | Promise<void> };
  tokens: TokenService;
  consent?: ConsentService;
  /** The network patient ids and grant index behind consent (closed with it). */
  networkIds?: NetworkIdIndex;
  /** The store every FhirContext must use (Consent writes drive the ledger's grants). */
  store: ResourceStore;
  control: AccessControl;
  audit: AuditRecorder;
}

/** dev-open only on loopback; a warning when organisations' systems cannot choose ids. */
function checkAuthMode(options: AccessSetupOptions): void {
  if (options.mode === 'dev-open' && !LOOPBACK_HOSTS.has(options.host)) {
    throw new Error(
      `the development mode (auth dev-open) only runs on a loopback address, not ${options.host}`,
    );
  }
  if (options.mode === 'smart' && options.organization === undefined)
    options.log.warn(
      "no --organization: only admins create resources with chosen ids (PUT of a new id); set this service's organisation to let its systems do so",
    );
}

/** The participants, their CA, the token service and its key; then consent, the policy and the audit on them. */
async function openAccessParts(options: AccessSetupOptions): Promise<AccessParts> {
  const identity = await EmbeddedIdentityProvider.open(join(options.dataDir, 'identity', 'ca'), {
    mspId: options.mspId,
  });
  const pseudonyms = ParticipantDirectory.open(options.dataDir, identity);
  // With PostgreSQL the participants are the database's, registered once for every replica.
  const participants: ParticipantRegistry = options.shared
    ? await options.shared.participants(identity, options.log).catch((err: unknown) => {
        pseudonyms.close();
        throw err;
      })
    : pseudonyms;
  const secret = accessTokenSecret(options.dataDir);
  const tokens = new TokenService({
    directory: participants,
    secret,
    accessTokenSeconds: options.tokenSeconds,
    replay: options.shared?.replayGuard('participant'),
  });
  const sharedRevocations = options.shared?.revocations(options.log);
  const { consent, networkIds, resolver } = await openConsent(options, pseudonyms, sharedRevocations);
  const store = consent
    ? withConsentLedger(options.store, { consent, sharedRevocations, log: options.log })
    : options.store;
  const control = new AccessControl({
    compartmentTypes: patientCompartmentTypes(),
    consent,
    organization: options.organization,
    cursorKey: cursorKeyOf(secret),
  });
  const audit = new AuditRecorder({
    store: options.store,
    indexEntries: options.indexEntries,
    anchor: options.anchor,
    recordAccess: consent ? (record) => consent.recordAccess(record) : undefined,
    flushMs: options.auditFlushMs,
    log: options.log,
  });
  return { participants, pseudonyms, resolver, tokens, consent, networkIds, store, control, audit };
}

/** The consent service on the ledger; none without a ledger. */
async function openConsent(
  options: AccessSetupOptions,
  pseudonyms: ParticipantDirectory,
  sharedRevocations: SharedRevocations | undefined,
): Promise<{
  consent?: ConsentService;
  networkIds?: NetworkIdIndex;
  resolver?: PseudonymResolver & { close(): void | Promise<void> };
}> {
  if (!options.ledger) return {};
  // Network patient ids and the grant index: what links this home's ledger records to its patients. With
  // PostgreSQL they and the pseudonyms are the database's, so every replica enforces every grant.
  const shared = options.shared;
  if (!shared) {
    const opened = await openDataDirConsent({
      dataDir: options.dataDir,
      ledger: options.ledger,
      participants: pseudonyms,
      sharedRevocations,
      log: options.log,
    });
    return { ...opened, resolver: pseudonyms };
  }
  const networkIds: NetworkIdIndex = await shared.networkIds(options.log);
  const resolver = await shared.pseudonyms(options.log);
  let consent: ConsentService;
  try {
    consent = await ConsentService.open({
      ledger: options.ledger,
      pseudonyms: resolver,
      networkIds,
      checkpointFile: join(options.dataDir, 'checkpoints', 'consent.json'),
      // Durable local denies: a revocation in force before the ledger has it, across restarts (and, shared, at
      // every replica).
      revocationsFile: join(options.dataDir, 'consent-revocations.json'),
      sharedRevocations,
      // Replicas: every one knows the home MSP from the start (one that has committed no grant yet would otherwise
      // ignore the events of the others' grants until the home MSP they note reaches it).
      mspId: options.ledgerMspId ?? options.mspId,
      log: options.log,
    });
  } catch (err) {
    await Promise.all([networkIds.close(), resolver.close()]);
    throw err;
  }
  return { consent, networkIds, resolver };
}

/**
 * A data directory's consent service on its ledger, with the service's own files (network patient ids, the
 * checkpoint, the durable revocations): the service opens it so, and so does `hie-ledger import --consents map`
 * on a stopped data directory (docs/import.md), so that an imported Consent is mapped as the service maps one.
 */
export async function openDataDirConsent(options: {
  dataDir: string;
  ledger: Ledger;
  participants: ParticipantDirectory;
  sharedRevocations?: SharedRevocations;
  log: { warn(obj: object | string, msg?: string): void; error(obj: object | string, msg?: string): void };
}): Promise<{ consent: ConsentService; networkIds: NetworkIds }> {
  // Network patient ids and the grant index: what links this home's ledger records to its patients.
  const networkIds = new NetworkIds(join(options.dataDir, 'identity', 'network-ids.sqlite'));
  const consent = await ConsentService.open({
    ledger: options.ledger,
    pseudonyms: options.participants,
    networkIds,
    checkpointFile: join(options.dataDir, 'checkpoints', 'consent.json'),
    // Durable local denies: a revocation in force before the ledger has it, across restarts (and, shared, at
    // every replica).
    revocationsFile: join(options.dataDir, 'consent-revocations.json'),
    sharedRevocations: options.sharedRevocations,
    log: options.log,
  });
  return { consent, networkIds };
}

/** `$access-log`: the ledger's access records of one patient, as Parameters. */
function accessLogHandler(
  consent: ConsentService | undefined,
  participants: ParticipantRegistry,
  mspId: string,
): InteractionHandler {
  return async (request, context) => {
    const patient = `Patient/${request.id}`;
    const policy = context.access;
    policy.authorize('read', 'Patient');
    const current = await context.store.read('Patient', request.id!);
    if (!current || current.deleted || !policy.canRead(current))
      throw fhirError('resource-not-found', `${patient} is not known`);
    const caller = policy.caller;
    const isPatient = caller.role === 'patient' && caller.fhirUser === patient;
    // The ledger's access records name no custodian: they are the patient's (and a service-wide admin's). An
    // organisation reads the disclosures of its own records as AuditEvents (custodian rule), never those of others.
    const serviceAdmin = caller.role === 'admin' && caller.organization === undefined;
    if (!isPatient && !serviceAdmin && caller.role !== 'open') {
      throw fhirError(
        'access-denied',
        'Only the patient and service administrators may see the access log; organisations search AuditEvent',
      );
    }
    const all = consent ? await consent.listAccess(patient) : [];
    // The custodian sees the disclosures this service recorded; the patient sees every member's.
    const records = isPatient || caller.role === 'open' ? all : all.filter((r) => r.mspId === mspId);
    const parameter = await Promise.all(
      records.map(async (record) =>
        accessRecordParameter(record, await participants.byPseudonym(record.accessor)),
      ),
    );
    return { status: 200, body: { resourceType: 'Parameters', parameter } as unknown as FhirResource };
  };
}

/** One access record as an `access` parameter, with who the accessor is when this service knows them. */
function accessRecordParameter(record: AccessEntry, who: Participant | undefined): Record<string, unknown> {
  const part: Record<string, unknown>[] = [
    { name: 'accessor', valueString: record.accessor },
    { name: 'interaction', valueCode: record.interaction },
    { name: 'outcome', valueCode: record.outcome },
    { name: 'at', valueInstant: record.at },
    { name: 'count', valueInteger: record.count ?? 1 },
    { name: 'transaction', valueString: record.txId },
  ];
  if (record.from && record.from !== record.at) part.push({ name: 'from', valueInstant: record.from });
  // An access by another member's participant (the exchange): which member disclosed, for whom, and why.
  if (record.accessorMsp !== record.mspId)
    part.push(
      { name: 'custodian', valueString: record.mspId },
      { name: 'accessorMember', valueString: record.accessorMsp },
      { name: 'purpose', valueCode: record.purpose },
    );
  if (record.resourceType) part.push({ name: 'resourceType', valueCode: record.resourceType });
  // A report of disclosures under a wrong patient link (docs/exchange.md, "Wrong links"): which side, when, how many.
  if (record.wrongLink)
    part.push({
      name: 'wrongLink',
      part: [
        { name: 'side', valueCode: record.wrongLink.side },
        { name: 'linkedAt', valueInstant: record.wrongLink.linkedAt },
        { name: 'endedAt', valueInstant: record.wrongLink.endedAt },
        { name: 'records', valueInteger: record.wrongLink.records },
      ],
    });
  if (who) {
    part.push({ name: 'role', valueCode: who.role });
    if (who.resource) part.push({ name: 'who', valueReference: { reference: who.resource } });
    if (who.organization)
      part.push({ name: 'organization', valueReference: { reference: who.organization } });
  }
  return { name: 'access', part };
}

/** The hooks that keep the audit: refuse requests while it cannot be stored, count every response. */
function installAuditHooks(fastify: FastifyInstance, audit: AuditRecorder, prefix: string): void {
  // Every request is audited: while the AuditEvents the store refuses (disk full) fill what may be kept in
  // memory, requests are refused rather than served unaudited.
  fastify.addHook('preHandler', (request, _reply, done) => {
    if (audit.canKeep() || !(request.hieAccess instanceof CallerAccessPolicy)) return done();
    done(
      fhirError(
        'audit-unavailable',
        'The audit trail cannot be stored right now, so no request is served; retry later',
        { headers: { 'retry-after': '30' } },
      ),
    );
  });
  // A callback hook (no promise per request): the audit only counts here; it writes later.
  fastify.addHook('onResponse', (request, reply, done) => {
    const policy = request.hieAccess;
    if (!(policy instanceof CallerAccessPolicy)) return done();
    const url = request.url;
    const q = url.indexOf('?');
    audit.record({
      caller: policy.caller,
      interaction: policy.interaction ?? request.method.toLowerCase(),
      method: request.method,
      path: (q < 0 ? url : url.slice(0, q)).slice(prefix.length) || '/',
      status: reply.statusCode,
      touched: policy.touched,
      refused: policy.refusals.length > 0,
      reason: policy.facts.reason,
    });
    done();
  });
}

export async function setupAccess(options: AccessSetupOptions): Promise<AccessSetup> {
  checkAuthMode(options);
  const { participants, pseudonyms, resolver, tokens, consent, networkIds, store, control, audit } =
    await openAccessParts(options);
  const publicOnly = new PublicOnlyAccess();
  const prefix = options.fhirPrefix;
  const publicBaseUrl = options.fhirBaseUrl?.endsWith(prefix)
    ? options.fhirBaseUrl.slice(0, -prefix.length)
    : options.fhirBaseUrl;

  const policyFor = (caller: Caller, request: FastifyRequest): AccessPolicy => {
    const reason = request.headers['x-access-reason'];
    return control.policyFor(caller, {
      reason: typeof reason === 'string' ? reason.slice(0, 500) : undefined,
    });
  };

  return {
    store,
    participants,
    tokens,
    consent,
    networkIds,
    control,
    audit,
    install(fastify) {
      registerAuth(fastify, {
        tokens,
        policyFor,
        fhirPrefix: prefix,
        publicBaseUrl,
        devOpenLoopback: options.mode === 'dev-open',
        tokenRateLimit: options.tokenRateLimit ? { perMinute: options.tokenRateLimit } : undefined,
        sharedRateLimits:
          options.shared && options.tokenRateLimit
            ? {
                perAddress: options.shared.rateLimiter('token-address', options.tokenRateLimit),
                perClient: options.shared.rateLimiter('token-client', options.tokenRateLimit),
              }
            : undefined,
        network: options.network,
      });
      installAuditHooks(fastify, audit, prefix);
    },
    accessFor(request) {
      return request.hieAccess ?? (options.mode === 'dev-open' ? new OpenAccess() : publicOnly);
    },
    registerOperations(registry) {
      registry.registerOperation({
        name: 'access-log',
        levels: ['instance'],
        resourceTypes: ['Patient'],
        methods: ['GET', 'POST'], // affects no state: both, as the spec says
        documentation:
          "Who accessed this patient's data: the access records on the ledger (participant role, resource, interaction, outcome, time).",
        handler: accessLogHandler(consent, participants, options.mspId),
      });
      registry.registerOperation(networkActorOperation(options.ledgerMspId ?? options.mspId));
    },
    async close() {
      await audit.close();
      await consent?.close();
      await networkIds?.close();
      if (resolver !== undefined && resolver !== pseudonyms) await resolver.close();
      if (participants !== pseudonyms) await participants.close();
      pseudonyms.close();
    },
  };
}
