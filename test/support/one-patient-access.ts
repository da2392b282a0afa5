/**
 * An access policy for search tests below the HTTP layer: a patient's view, which reads the resources of one
 * patient's compartment and those in no compartment at all, and writes nothing (the real policies:
 * src/access/; their tests in test/access/).
 */
import type { AccessPolicy, Caller } from '../../src/fhir/interactions/access-policy.js';
import type { StoredVersion } from '../../src/fhir/store/resource-store.js';

export class OnePatient implements AccessPolicy {
  readonly caller: Caller = { participant: 'p', role: 'patient', scopes: [] };
  /** `patient`: a reference, as StoredVersion.patients holds it (`Patient/p1`). */
  constructor(private readonly patient: string) {}
  authorize(): void {}
  canWrite(): boolean {
    return false;
  }
  canRead(v: StoredVersion): boolean {
    return !v.patients?.length || v.patients.includes(this.patient);
  }
}
