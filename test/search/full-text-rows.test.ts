/**
 * The `_text`/`_content` rows of a resource (src/fhir/search/full-text.ts) are made once from the request and
 * recomputed by the integrity audit from the stored text, where the store writes `resourceType`, `id` and `meta`
 * first: the rows must not depend on where those members stand.
 */
import { describe, expect, it } from 'vitest';
import { fullTextOf } from '../../src/fhir/search/full-text.js';
import { parseFhirJson, type FhirResource } from '../../src/fhir/fhir-json.js';

describe('full-text rows', () => {
  it('are the same whether id, resourceType and meta come first (stored) or last (a request given its id)', () => {
    const request = parseFhirJson<FhirResource>(
      '{"status":"final","code":{"text":"Crash 1"},"valueQuantity":{"value":1.50,"unit":"mg"},' +
        '"resourceType":"Observation"}',
    );
    const withId = { ...request, id: '01a2509f-8288-733f-83cb-970975ac1344' };
    const stored = parseFhirJson<FhirResource>(
      '{"resourceType":"Observation","id":"01a2509f-8288-733f-83cb-970975ac1344",' +
        '"meta":{"versionId":"1","lastUpdated":"2026-12-07T13:21:35.429Z"},' +
        '"status":"final","code":{"text":"Crash 1"},"valueQuantity":{"value":1.50,"unit":"mg"}}',
    );
    expect(fullTextOf(withId)).toEqual(fullTextOf(stored));
    // The content keeps its words (numbers as written) and their order, for phrases.
    expect(fullTextOf(stored)).toEqual([{ param: '_content', text: 'final crash qb qb qfqa mg' }]);
  });
});
