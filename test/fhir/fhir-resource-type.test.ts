/**
 * Typed ports (issue 13): a FhirResource's other elements are `unknown` until narrowed, never `any`, so code that
 * reads client JSON has to check what it reads. Checked by the typechecker (`npx tsc --noEmit` compiles test/).
 */
import { describe, expectTypeOf, it } from 'vitest';
import type { FhirResource } from '../../src/fhir/fhir-json.js';

describe('FhirResource', () => {
  it('types what every resource has, and nothing else as any', () => {
    expectTypeOf<FhirResource['resourceType']>().toEqualTypeOf<string>();
    expectTypeOf<FhirResource['id']>().toEqualTypeOf<string | undefined>();
    expectTypeOf<FhirResource['subject']>().toEqualTypeOf<unknown>();
  });
});
