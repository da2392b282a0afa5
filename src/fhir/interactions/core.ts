/** The interactions this area provides, registered in one call (src/app/app.ts). */
import { capabilitiesHandler, type CapabilitiesOptions } from './capabilities.js';
import { withConditionalForm, type ConditionalOptions } from './conditional-writes.js';
import { create } from './create.js';
import { deleteResource } from './delete.js';
import { historyInstance, historySystem, historyType } from './history.js';
import { patch } from './patch.js';
import { read } from './read.js';
import type { FhirRegistry } from './fhir-registry.js';
import { update } from './update.js';
import { vread } from './vread.js';

export function registerCoreInteractions(
  registry: FhirRegistry,
  capabilities: Omit<CapabilitiesOptions, 'registry'>,
  conditional: ConditionalOptions = {},
): FhirRegistry {
  return (
    registry
      .registerInteraction(
        'capabilities',
        capabilitiesHandler({
          ...capabilities,
          registry,
          deleteMultiple: capabilities.deleteMultiple ?? conditional.deleteMultiple !== undefined,
        }),
      )
      .registerInteraction('read', read)
      .registerInteraction('vread', vread)
      .registerInteraction('create', create)
      // Each also serves its conditional form `[type]?criteria` (conditional-writes.ts).
      .registerInteraction('update', withConditionalForm('update', update), { conditional: true })
      .registerInteraction('patch', withConditionalForm('patch', patch), { conditional: true })
      .registerInteraction('delete', withConditionalForm('delete', deleteResource, conditional), {
        conditional: true,
      })
      .registerInteraction('history-instance', historyInstance)
      .registerInteraction('history-type', historyType)
      .registerInteraction('history-system', historySystem)
  );
}
