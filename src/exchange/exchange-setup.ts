/**
 * Wires the exchange into the app (src/app/app.ts, docs/exchange.md): the member directory on the ledger, the
 * responding side's network token service (handed to setupAccess, so `/auth/token` issues network tokens and a
 * `Bearer hnt1.` token on /fhir opens the network operations), the initiating side's outbound client and token
 * client, and the network operations themselves.
 */
import type { ServeConfig } from '../config/config.js';
import type { ConsentService } from '../consent/consent-service.js';
import type { FhirResource } from '../fhir/fhir-json.js';
import type { FhirRegistry } from '../fhir/interactions/fhir-registry.js';
import type { IndexEntry, ResourceStore, WriteRequest } from '../fhir/store/resource-store.js';
import type { BatchJournal } from '../integrity/anchor-journal.js';
import { CachedBatchSource } from '../integrity/verification.js';
import type { Ledger } from '../ledger/ledger.js';
import type { NetworkIdIndex } from '../consent/network-ids.js';
import type { PatientLinks } from './patient-links.js';
import type { ParticipantRegistry } from '../access/participants.js';
import { networkLocateOperation } from './network-locate.js';
import { networkRecordsOperation } from './network-records.js';
import { accessTokenSecret } from '../access/setup.js';
import { MemberDirectory } from './member-directory.js';
import { MemberHttpClient } from './member-http.js';
import { homeLocator, registerNetworkEverything } from './network-everything.js';
import { networkSaveOperation } from './network-save.js';
import { NetworkTokenClient } from './network-token-client.js';
import { NetworkTokenService, replayFileIn } from './network-tokens.js';
import type { ReplayGuard } from '../access/shared-state.js';
import { serviceKeyFileIn, serviceKeyLoader } from './patient-links-setup.js';
import { registerPushOperations } from './push-setup.js';

/** The settings the exchange reads (src/config/config.ts, docs/configuration.md). */
export type ExchangeSettings = Pick<
  ServeConfig,
  | 'networkLocal'
  | 'networkPurposes'
  | 'networkMaxResponse'
  | 'networkConnections'
  | 'networkMemberTimeoutMs'
  | 'networkDeadlineMs'
  | 'networkPendingRetryMs'
  | 'networkLocateFreshMs'
  | 'networkMaxRecords'
  | 'networkMaxLagSeconds'
  | 'networkWithholdLabels'
>;

export interface ExchangeOptions {
  dataDir: string;
  /** This member's MSP id (its ledger identity's). */
  mspId: string;
  ledger: Ledger;
  settings: ExchangeSettings;
  /** Members' used assertion ids shared by the replicas (PostgreSQL store); absent: the data directory's file. */
  replay?: ReplayGuard;
}

/** What the exchange's parts share: who this member is, the directory, and both sides of service calls. */
export class Exchange {
  readonly mspId: string;
  readonly settings: ExchangeSettings;
  /** The member directory on the ledger (`member` contract). */
  readonly members: MemberDirectory;
  /** Responding side: members' client assertions -> network tokens, and network tokens -> their callers. */
  readonly networkTokens: NetworkTokenService;
  /** Initiating side: the one way this member calls another (hostile-input-safe). */
  readonly http: MemberHttpClient;
  private readonly serviceKey: ReturnType<typeof serviceKeyLoader>;
  private client?: { key: object; tokens: NetworkTokenClient };

  constructor(options: ExchangeOptions) {
    this.mspId = options.mspId;
    this.settings = options.settings;
    this.members = new MemberDirectory(options.ledger);
    this.networkTokens = new NetworkTokenService({
      members: this.members,
      secret: accessTokenSecret(options.dataDir),
      allowedPurposes: options.settings.networkPurposes,
      replayFile: replayFileIn(options.dataDir),
      replay: options.replay,
    });
    this.http = new MemberHttpClient({
      localNetwork: options.settings.networkLocal,
      maxResponseBytes: options.settings.networkMaxResponse,
      connectionsPerMember: options.settings.networkConnections,
      memberTimeoutMs: options.settings.networkMemberTimeoutMs,
    });
    this.serviceKey = serviceKeyLoader(serviceKeyFileIn(options.dataDir));
  }

  /**
   * Initiating side: the token client signing with this member's service key (DATA/identity/exchange/key.pem,
   * written by `hie-ledger member register`), made again when the key changes; undefined while there is none
   * (the caller answers `member-not-registered`).
   */
  tokenClient(): NetworkTokenClient | undefined {
    const key = this.serviceKey();
    if (!key) return undefined;
    if (this.client?.key !== key)
      this.client = {
        key,
        tokens: new NetworkTokenClient({ identity: { mspId: this.mspId, privateKey: key }, http: this.http }),
      };
    return this.client.tokens;
  }

  close(): void {
    this.http.close();
  }
}

/** What the network operations read and write besides the exchange itself. */
export interface ExchangeDeps {
  /** The resource store (records, and the disclosure AuditEvents). */
  store: ResourceStore;
  ledger: Ledger;
  /** The batch journal: the evidence of each record (IntegrityService.journal). */
  journal: Pick<BatchJournal, 'members'>;
  /** The integrity hook, so AuditEvents written here are anchored like every stored version. */
  anchor?: WriteRequest['anchor'];
  indexEntries?: (resource: FhirResource) => IndexEntry[];
  /** Grants and access records on the ledger; absent without a ledger (then no network operation opens anything). */
  consent?: ConsentService;
  /** The home's network patient ids (with the consent service). */
  networkIds?: NetworkIdIndex;
  patientLinks: PatientLinks;
  /** This service's participants (a pushed document's recipient, by pseudonym); absent: not looked up. */
  participants?: Pick<ParticipantRegistry, 'byPseudonym'>;
  /** This service's organisation (`--organization`): the custodian of the disclosure AuditEvents. */
  organization?: string;
  log: { warn(obj: object | string, msg?: string): void; error(obj: object | string, msg?: string): void };
}

/** Registers the network operations (docs/exchange.md): each part of the exchange adds its own here. */
export function registerExchangeOperations(
  exchange: Exchange,
  registry: FhirRegistry,
  deps: ExchangeDeps,
): void {
  const { settings } = exchange;
  registry.registerOperation(
    networkLocateOperation({
      mspId: exchange.mspId,
      members: exchange.members,
      consent: deps.consent,
      networkIds: deps.networkIds,
      patientLinks: deps.patientLinks,
      maxLagSeconds: settings.networkMaxLagSeconds,
    }),
  );
  const consent = deps.consent;
  registry.registerOperation(
    networkRecordsOperation({
      mspId: exchange.mspId,
      members: exchange.members,
      ledger: deps.ledger,
      store: deps.store,
      journal: deps.journal,
      consent,
      networkIds: deps.networkIds,
      patientLinks: deps.patientLinks,
      disclosures: {
        store: deps.store,
        indexEntries: deps.indexEntries,
        anchor: deps.anchor,
        organization: deps.organization,
        recordAccess: (record) => consent?.recordAccess(record),
        underLink: deps.patientLinks.noteLinkDisclosure?.bind(deps.patientLinks),
      },
      maxRecords: settings.networkMaxRecords,
      maxLagSeconds: settings.networkMaxLagSeconds,
      withholdLabels: settings.networkWithholdLabels,
    }),
  );
  registerPushOperations(exchange, registry, deps);
  // The initiating gateway (pull at B): Patient/{id}/$network-everything.
  registerNetworkEverything(registry, {
    mspId: exchange.mspId,
    links: deps.patientLinks,
    members: exchange.members,
    tokens: () => exchange.tokenClient(),
    batchSource: () => new CachedBatchSource(deps.ledger),
    localLocate: homeLocator({
      consent: deps.consent,
      networkIds: deps.networkIds,
      links: deps.patientLinks,
    }),
    deadlineMs: exchange.settings.networkDeadlineMs,
    pendingRetryMs: exchange.settings.networkPendingRetryMs,
    locateFreshMs: exchange.settings.networkLocateFreshMs,
  });
  // Saving fetched records at B: Patient/{id}/$network-save.
  registry.registerOperation(
    networkSaveOperation({
      members: exchange.members,
      batchSource: () => new CachedBatchSource(deps.ledger),
    }),
  );
}
