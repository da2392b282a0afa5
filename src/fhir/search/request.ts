/**
 * What the search interaction hands to `ResourceStore.search` (the port types it as `unknown`, so that each
 * adapter can take this shape without the port depending on src/fhir/search/).
 */
import type { ReadScope } from '../../access/policy.js';
import type { StoredVersion } from '../store/resource-store.js';
import type { CompiledQuery } from './parse.js';

export interface StoreSearchRequest {
  query: CompiledQuery;
  /**
   * The caller's visibility predicate (AccessPolicy.canRead). Adapters apply it to every candidate before it
   * counts, is paged or returned, and to every resource a chain or `_has` matches through. It is called with the
   * version's metadata (type, id, version, custodian, patients); `json` may be absent, so a policy must not need it.
   */
  canRead: (version: StoredVersion) => boolean;
  /**
   * The caller's read scope per type (AccessPolicy.readScope): adapters that can put it inside their query do, so
   * rows the caller may not see are not visited. It only narrows: `canRead` still decides every row.
   */
  scope?: (resourceType: string) => ReadScope;
  /** Count every visible match (Bundle.total); otherwise an adapter may stop once the page is full. */
  wantTotal?: boolean;
}

export interface StoreSearchResult {
  /** One page of visible current versions, in the query's sort order (at most query.count). */
  versions: StoredVersion[];
  /** Visible matches in all, when wantTotal. */
  total?: number;
  /** More visible matches exist after this page. */
  hasMore?: boolean;
}
