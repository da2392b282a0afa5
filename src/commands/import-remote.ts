/**
 * `hie-ledger import PATH... --url BASE`: the import engine (src/bulk/import/engine.ts) writing to a running
 * service through its REST API, as any SMART Backend Services client would: `batch` Bundles of PUT entries (ids
 * from the journal's deterministic map, so a second run never duplicates), `Prefer: return=OperationOutcome` so
 * each entry says whether it stored a version or found the same content. Validation, consent, custodian and
 * anchoring are the service's own. The token is given (`--token`) or obtained as `hie-ledger token` does
 * (`--id`, `--key`), and obtained again (a new assertion) when it expires or the service answers 401. Without
 * either, requests carry no token: a dev-open service wants none, and one that does answers 401, said as such.
 */
import { fhirError, FhirError, hasOutcomeCode, type OperationOutcome } from '../fhir/outcome.js';
import type { RemoteTarget, RemoteWrite, RemoteWriteResult } from '../bulk/import/types.js';
import { requestToken, TokenCommandError } from './token.js';

/** The service cannot be used with the credentials given: the one line the command prints (exit 2). */
export class RemoteImportError extends Error {
  override readonly name = 'RemoteImportError';
}

export interface RemoteCredentials {
  /** A token as given (`--token`); used until it is refused, then renewed if `id` and `key` are given. */
  token?: string;
  id?: string;
  key?: string;
  scope?: string;
}

/** Renew this long before the token's announced expiry (a request in flight should not outlive it). */
const RENEW_MARGIN_MS = 30_000;

/** The bearer token of the import: given, or fetched and renewed with the participant's key. */
class BearerToken {
  private token: string | undefined;
  private expiresAt = Infinity;

  constructor(
    private readonly baseUrl: string,
    private readonly credentials: RemoteCredentials,
  ) {
    this.token = credentials.token;
  }

  private get canRenew(): boolean {
    return this.credentials.id !== undefined && this.credentials.key !== undefined;
  }

  /** Whether the import has any credentials: without, requests go without a token (a dev-open service). */
  get given(): boolean {
    return this.token !== undefined || this.canRenew;
  }

  /** The token to send; undefined when none was given (the service says with a 401 whether it wants one). */
  async current(): Promise<string | undefined> {
    if (this.canRenew && (this.token === undefined || Date.now() >= this.expiresAt - RENEW_MARGIN_MS))
      await this.renew();
    return this.token;
  }

  /** A new token from a new assertion; false when there is no key to sign one with. */
  async renew(): Promise<boolean> {
    if (!this.canRenew) return false;
    try {
      const response = await requestToken({
        id: this.credentials.id!,
        key: this.credentials.key!,
        url: this.baseUrl,
        scope: this.credentials.scope,
      });
      this.token = String(response.access_token);
      const seconds = typeof response.expires_in === 'number' ? response.expires_in : undefined;
      this.expiresAt = seconds === undefined ? Infinity : Date.now() + seconds * 1000;
      return true;
    } catch (err) {
      if (err instanceof TokenCommandError) throw new RemoteImportError(err.message);
      throw err;
    }
  }
}

/** The first diagnostics of an OperationOutcome body, if it is one. */
function diagnosticsOf(body: unknown): string | undefined {
  const issue = (body as { issue?: { diagnostics?: unknown; code?: unknown }[] } | null)?.issue?.[0];
  if (!issue) return undefined;
  return typeof issue.diagnostics === 'string' ? issue.diagnostics : String(issue.code ?? '');
}

/** A FhirError carrying the service's own OperationOutcome (its codes and texts), as the error file keeps it. */
function serviceRefusal(status: number, outcome: OperationOutcome | undefined): FhirError {
  if (
    outcome?.resourceType === 'OperationOutcome' &&
    Array.isArray(outcome.issue) &&
    outcome.issue.length > 0
  )
    return new FhirError('import-remote-refused', outcome.issue);
  return fhirError('import-remote-refused', `the service refused the write (${status})`);
}

/** The service's API as the import engine's write target. */
export class RemoteService implements RemoteTarget {
  private readonly base: string;
  private readonly bearer: BearerToken;

  constructor(baseUrl: string, credentials: RemoteCredentials) {
    this.base = baseUrl.replace(/\/+$/, '');
    this.bearer = new BearerToken(this.base, credentials);
  }

  /** Checks the service and the token before anything is read or written (a bad token: one line, exit 2). */
  async connect(): Promise<void> {
    const { status, json } = await this.request('GET', '/Patient?_count=0&_summary=count');
    if (status !== 200)
      throw new RemoteImportError(
        `${this.base} answered ${status}${diagnosticsOf(json) ? `: ${diagnosticsOf(json)}` : ''}: is --url the FHIR base URL?`,
      );
  }

  /**
   * One request with the bearer token; a 401 renews the token once (a new assertion) and retries. A 401 that
   * stays, or a service that cannot be reached, is a RemoteImportError.
   */
  private async request(
    method: string,
    path: string,
    body?: unknown,
  ): Promise<{ status: number; json: unknown }> {
    const url = `${this.base}${path}`;
    for (let attempt = 0; ; attempt++) {
      const token = await this.bearer.current();
      let response: Response;
      try {
        response = await fetch(url, {
          method,
          headers: {
            ...(token === undefined ? {} : { authorization: `Bearer ${token}` }),
            accept: 'application/fhir+json',
            ...(body === undefined
              ? {}
              : { 'content-type': 'application/fhir+json', prefer: 'return=OperationOutcome' }),
          },
          body: body === undefined ? undefined : JSON.stringify(body),
        });
      } catch (err) {
        throw new RemoteImportError(`cannot reach ${this.base}: ${(err as Error).message}`);
      }
      const text = await response.text();
      let json: unknown;
      try {
        json = text === '' ? undefined : JSON.parse(text);
      } catch {
        json = undefined;
      }
      if (response.status === 401) {
        if (attempt === 0 && (await this.bearer.renew())) continue;
        if (!this.bearer.given)
          throw new RemoteImportError(
            'the service asks for a token: pass --token (hie-ledger token), or --id and --key',
          );
        const why = diagnosticsOf(json);
        throw new RemoteImportError(
          `the service refused the token (401${why ? `: ${why}` : ''}); get a new one (hie-ledger token) or give --id and --key`,
        );
      }
      return { status: response.status, json };
    }
  }

  async exists(type: string, id: string): Promise<boolean> {
    const { status, json } = await this.request(
      'GET',
      `/${encodeURIComponent(type)}/${encodeURIComponent(id)}`,
    );
    if (status === 200) return true;
    if (status === 404 || status === 410) return false;
    throw new RemoteImportError(`reading ${type}/${id} answered ${status}: ${diagnosticsOf(json) ?? ''}`);
  }

  async matches(type: string, search: string): Promise<string[]> {
    const { status, json } = await this.request(
      'GET',
      `/${encodeURIComponent(type)}?${search}&_count=2&_elements=id`,
    );
    if (status !== 200) {
      // The service's refusal of the search itself (an unknown parameter ...) is this reference's cause.
      throw fhirError(
        'conditional-reference-no-match',
        `'${type}?${search}' could not be searched at the service (${status}: ${diagnosticsOf(json) ?? ''})`,
      );
    }
    const entries =
      (json as { entry?: { resource?: { id?: unknown }; search?: { mode?: unknown } }[] }).entry ?? [];
    return entries
      .filter((e) => e.search?.mode !== 'include' && e.search?.mode !== 'outcome')
      .map((e) => e.resource?.id)
      .filter((id): id is string => typeof id === 'string');
  }

  async write(writes: readonly RemoteWrite[]): Promise<RemoteWriteResult[]> {
    const bundle = {
      resourceType: 'Bundle',
      type: 'batch',
      entry: writes.map((w) => ({
        resource: w.resource,
        request: { method: 'PUT', url: `${w.type}/${w.id}` },
      })),
    };
    const { status, json } = await this.request('POST', '', bundle);
    const entries = (json as { resourceType?: unknown; entry?: unknown[] } | undefined)?.entry;
    if (status !== 200 || !Array.isArray(entries) || entries.length !== writes.length)
      throw new RemoteImportError(
        `the service answered the batch with ${status}${diagnosticsOf(json) ? `: ${diagnosticsOf(json)}` : ''}`,
      );
    return entries.map((raw): RemoteWriteResult => {
      const entry = raw as {
        resource?: OperationOutcome;
        response?: { status?: string; etag?: string; outcome?: OperationOutcome };
      };
      const code = Number(/^(\d{3})/.exec(entry.response?.status ?? '')?.[1] ?? 0);
      if (code < 200 || code >= 300)
        return { status: 'rejected', error: serviceRefusal(code, entry.response?.outcome) };
      const versionId = Number(/(\d+)/.exec(entry.response?.etag ?? '')?.[1] ?? 0);
      // Prefer: return=OperationOutcome: the entry's outcome carries the code `write-unchanged` when nothing was
      // stored (docs/errors.md); the code, never the diagnostics' prose, which may change.
      const unchanged = hasOutcomeCode(entry.resource, 'write-unchanged');
      return { status: unchanged ? 'unchanged' : 'stored', versionId };
    });
  }
}
