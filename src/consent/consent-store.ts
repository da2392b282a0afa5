/**
 * Keeps the ledger's grants in step with the patient-privacy Consents written through the FHIR API: a store
 * decorator, so every write path (create, update, patch, delete, transaction entries) goes through it.
 *
 * Order (fail closed): the Consent is mapped first (one the mapping cannot enforce exactly is stored but grants
 * nothing, with a warning in the log), the patient gets a network id here (this service is the home; nothing on the
 * ledger names the patient), the grants it removes or changes are refused at once, then the version
 * is stored, then its revocations and grants are submitted (grants in force once committed). A revocation never
 * fails: its refusal is durable before the version is stored, and it reaches the ledger when the ledger is back.
 * In a transaction the ledger work waits until the transaction has committed; a rollback lifts the refusals it made.
 * With shared revocations (several replicas on PostgreSQL), the refusals are rows committed in the Consent version's
 * own database transaction, which every replica is notified of (./shared-revocations.ts).
 */
import type { ConsentService, PreparedConsent } from './consent-service.js';
import { consentToGrants, isInertConsent, isPrivacyConsent, type ConsentGrants } from './consent-resource.js';
import { FhirError, fhirError } from '../fhir/outcome.js';
import type { ResourceStore, StoredVersion, WriteRequest } from '../fhir/store/resource-store.js';
import type { FhirResource } from '../fhir/fhir-json.js';
import { withJsonBytes } from '../fhir/store/store-support.js';
import type { SharedRevocations } from './shared-revocations.js';

type ConsentActor = NonNullable<WriteRequest['actor']>;

export interface ConsentStoreOptions {
  consent: ConsentService;
  /** The replicas' shared pending revocations: recorded in the transaction that stores the Consent. */
  sharedRevocations?: SharedRevocations;
  log?: { warn(obj: object | string, msg?: string): void; error(obj: object | string, msg?: string): void };
}

/** Wraps a store so that Consent writes drive the ledger's grants. Other writes and all reads pass through. */
export function withConsentLedger(store: ResourceStore, options: ConsentStoreOptions): ResourceStore {
  return new ConsentLedgerStore(store, options, undefined);
}

class ConsentLedgerStore implements ResourceStore {
  constructor(
    private readonly inner: ResourceStore,
    private readonly options: ConsentStoreOptions,
    /** Inside a transaction: ledger work deferred until it commits. */
    private readonly deferred: PreparedConsent[] | undefined,
  ) {}

  init(): Promise<void> {
    return this.inner.init();
  }
  close(): Promise<void> {
    return this.inner.close();
  }
  read(resourceType: string, id: string) {
    return this.inner.read(resourceType, id);
  }
  vread(resourceType: string, id: string, versionId: number) {
    return this.inner.vread(resourceType, id, versionId);
  }
  history(query: Parameters<ResourceStore['history']>[0]) {
    return this.inner.history(query);
  }
  get search(): ResourceStore['search'] {
    return this.inner.search?.bind(this.inner);
  }
  pendingAnchors(limit: number) {
    return this.inner.pendingAnchors(limit);
  }
  markAnchored(...args: Parameters<ResourceStore['markAnchored']>) {
    return this.inner.markAnchored(...args);
  }
  anchorState(key: Parameters<ResourceStore['anchorState']>[0]) {
    return this.inner.anchorState(key);
  }
  vreadMany(keys: Parameters<ResourceStore['vreadMany']>[0]) {
    return this.inner.vreadMany(keys);
  }
  vreadManyBytes(keys: Parameters<ResourceStore['vreadMany']>[0]) {
    // The inner store's bytes when it has them; else its texts, encoded (so a wrapped adapter without it still works).
    return this.inner.vreadManyBytes
      ? this.inner.vreadManyBytes(keys)
      : this.inner.vreadMany(keys).then((versions) => versions.map(withJsonBytes));
  }
  anchorStates(keys: Parameters<ResourceStore['anchorStates']>[0]) {
    return this.inner.anchorStates(keys);
  }
  allVersions() {
    return this.inner.allVersions();
  }
  eraseSalts(resourceType: string, id: string) {
    return this.inner.eraseSalts(resourceType, id);
  }

  async transaction<T>(work: (store: ResourceStore) => Promise<T>): Promise<T> {
    if (this.deferred) return work(this); // nested: the outer transaction commits
    const deferred: PreparedConsent[] = [];
    let result: T;
    try {
      result = await this.inner.transaction((tx) => work(new ConsentLedgerStore(tx, this.options, deferred)));
    } catch (err) {
      for (const prepared of deferred) prepared.rollback();
      throw err;
    }
    for (const prepared of deferred) await this.commitToLedger(prepared);
    return result;
  }

  private async commitToLedger(prepared: PreparedConsent): Promise<void> {
    try {
      await prepared.commit();
    } catch (err) {
      // Only grants fail here: revocations are in force locally already and go to the ledger when it is back.
      this.options.log?.error(
        { err: (err as Error).message },
        'consent stored but its grants did not reach the ledger',
      );
      throw fhirError(
        'ledger-unavailable',
        'The Consent was stored and what it withdraws is refused, but the ledger did not accept its grants: they are not in force. Send the Consent again to retry.',
        { cause: err },
      );
    }
  }

  async write(request: WriteRequest): Promise<StoredVersion> {
    if (request.resourceType !== 'Consent') return this.inner.write(request);
    const { consent } = this.options;
    if (consent.ledgerMismatch)
      throw fhirError(
        'ledger-unavailable',
        'The ledger does not hold what this service committed: consents cannot be recorded now',
      );
    const caller = request.actor;
    let target: ConsentGrants | undefined;
    // An inert Consent (an import's record of another system's consent) grants nothing: as one with no grants,
    // what an earlier version of it granted is withdrawn.
    if (request.resource && isPrivacyConsent(request.resource) && !isInertConsent(request.resource)) {
      target = this.enforceableGrants(request.resource);
      if (target && caller?.role === 'system') await this.checkRecordedInPerson(target, caller);
      if (target && target.grants.length > 0) await this.registerHome(target);
    }
    const actor = {
      pseudonym: caller?.participant ?? 'hie-ledger-service',
      inPerson: caller?.role === 'system',
    };
    await consent.preparePseudonyms(`Consent/${request.id}`, target);
    const prepared = consent.prepareConsent(`Consent/${request.id}`, target, actor);
    let version: StoredVersion;
    const shared = this.options.sharedRevocations;
    try {
      if (!shared || prepared.revocations.length === 0) version = await this.inner.write(request);
      else if (this.deferred) {
        // Inside the caller's transaction: the rows commit (or roll back) with it.
        await shared.record(this.inner, prepared.revocations);
        version = await this.inner.write(request);
      } else {
        version = await this.inner.transaction(async (tx) => {
          await shared.record(tx, prepared.revocations);
          return tx.write(request);
        });
      }
    } catch (err) {
      prepared.rollback();
      throw err;
    }
    if (this.deferred) this.deferred.push(prepared);
    else await this.commitToLedger(prepared);
    return version;
  }

  /** The grants of a privacy Consent; none when the service cannot enforce it exactly as written. */
  private enforceableGrants(resource: FhirResource): ConsentGrants | undefined {
    try {
      return consentToGrants(resource);
    } catch (err) {
      if (!(err instanceof FhirError)) throw err;
      // What the service cannot enforce exactly grants nothing (fail closed); the Consent itself is kept.
      this.options.log?.warn(
        // The reason's text quotes the Consent (ids, references): the issue code only (no health data in logs).
        { code: err.outcome.issue[0]?.code },
        'Consent stored without grants: it cannot be enforced as written',
      );
      return undefined;
    }
  }

  /** A system records consents given in person for the patients its own organisation holds. */
  private async checkRecordedInPerson(target: ConsentGrants, caller: ConsentActor): Promise<void> {
    const [, patientId] = target.patient.split('/');
    const patientRecord = await this.inner.read('Patient', patientId);
    if (!patientRecord || patientRecord.deleted || patientRecord.custodian !== caller.organization) {
      throw fhirError(
        'consent-not-custodian',
        `${target.patient} is not held by ${caller.organization ?? 'this system'}: only the patient's home organisation records consents given in person`,
      );
    }
  }

  /**
   * Grants need the patient's network id at this home (made at the first grant, src/consent/network-ids.ts). The
   * ledger no longer registers patients, so no other organisation can hold one: only a failure is left to map.
   */
  private async registerHome(target: ConsentGrants): Promise<void> {
    try {
      await this.options.consent.registerPatient(target.patient);
    } catch (err) {
      throw fhirError('ledger-unavailable', 'The ledger is not reachable: grants cannot be recorded now', {
        cause: err,
      });
    }
  }
}
