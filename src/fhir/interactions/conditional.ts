/**
 * Conditional reads (http://hl7.org/fhir/R4/http.html#cread): If-None-Match and If-Modified-Since -> 304.
 */
import { parseETagVersion, versionHeaders } from './common.js';
import type { StoredVersion } from '../store/resource-store.js';
import type { FhirRequest, FhirResponse } from './types.js';

/** The 304 answer when the client's copy is current, else undefined. If-None-Match wins over If-Modified-Since (RFC 9110). */
export function notModified(request: FhirRequest, version: StoredVersion): FhirResponse | undefined {
  if (request.ifNoneMatch !== undefined) {
    const tags = request.ifNoneMatch.split(',').map((t) => t.trim());
    const matches = tags.some((tag) => tag === '*' || parseETagVersion(tag) === version.versionId);
    return matches ? { status: 304, headers: versionHeaders(version) } : undefined;
  }
  if (request.ifModifiedSince !== undefined) {
    const since = Date.parse(request.ifModifiedSince);
    // HTTP dates have whole seconds: compare the version's instant truncated to its second.
    const modified = Math.floor(Date.parse(version.lastUpdated) / 1000) * 1000;
    if (!Number.isNaN(since) && modified <= since) return { status: 304, headers: versionHeaders(version) };
  }
  return undefined;
}
