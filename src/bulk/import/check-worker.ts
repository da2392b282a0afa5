/**
 * The bulk import's check worker (a ValidationPool entry, src/fhir/validation/validation-pool.ts): validates as
 * every validation worker does and extracts each valid resource's search index entries from the same text
 * (`extractIndex`, with the custom search parameters the main thread has installed: check-pool.ts).
 */
import type { FhirResource } from '../../fhir/fhir-json.js';
import { extractIndex } from '../../fhir/search/index-entries.js';
import { customParameterDefinition, setCustomSearchParameters } from '../../fhir/search/definitions.js';
import { answerChunks } from '../../fhir/validation/validation-worker-loop.js';
import type { InstalledCustomParameter } from './check-pool.js';

answerChunks({
  derive: (value) => extractIndex(value as FhirResource),
  // The main thread's custom parameters installed here as custom-parameters.ts installs them there.
  configure(settings) {
    setCustomSearchParameters(
      (settings as InstalledCustomParameter[]).flatMap(({ definition, ready }) =>
        definition.base.flatMap((base) => {
          const def = customParameterDefinition(definition, base, {
            id: definition.id,
            versionId: definition.versionId,
            ready,
            description: definition.description,
          });
          return def ? [def] : [];
        }),
      ),
    );
  },
});
