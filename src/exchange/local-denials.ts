/**
 * Local denials of a custodian (docs/exchange.md, "Local denials"): whatever a patient's grant allows, a record
 * whose `meta.security` carries one of the configured labels (`--network-withhold-labels`: by default v3
 * Confidentiality R and V and the sensitive-information ActCodes HIV, PSY, SUD, ETH, SDV, SEX, STD) is never sent
 * to another member. A custodian may add denials, never permissions.
 */

/** A predicate over a resource (parsed JSON): does it carry a label that withholds it from the network? */
export type Withheld = (resource: unknown) => boolean;

/**
 * The predicate of these labels: each `system|code` (that exact coding) or a bare `code` (that code in any
 * system). A label with neither (a malformed `meta.security` entry) never withholds; no labels: nothing withheld.
 */
export function withheldBy(labels: readonly string[]): Withheld {
  const exact = new Set<string>();
  const anySystem = new Set<string>();
  for (const label of labels) {
    const bar = label.indexOf('|');
    if (bar < 0) anySystem.add(label);
    else exact.add(label);
  }
  return (resource) => {
    const security = securityOf(resource);
    for (const coding of security) {
      if (coding === null || typeof coding !== 'object') continue;
      const { system, code } = coding as { system?: unknown; code?: unknown };
      if (typeof code !== 'string') continue;
      if (anySystem.has(code)) return true;
      if (typeof system === 'string' && exact.has(`${system}|${code}`)) return true;
    }
    return false;
  };
}

function securityOf(resource: unknown): unknown[] {
  if (resource === null || typeof resource !== 'object') return [];
  const meta = (resource as { meta?: unknown }).meta;
  if (meta === null || typeof meta !== 'object') return [];
  const security = (meta as { security?: unknown }).security;
  return Array.isArray(security) ? security : [];
}
