/**
 * SMART on FHIR scopes (v2 syntax `context/Type.cruds`, v1 `context/Type.read|write|*` understood too):
 * which scopes a role may be granted, and whether a granted set allows an interaction on a type.
 */

export type ParticipantRole = 'patient' | 'clinician' | 'lab' | 'system' | 'admin';
export const PARTICIPANT_ROLES: readonly ParticipantRole[] = [
  'patient',
  'clinician',
  'lab',
  'system',
  'admin',
];

/** SMART v2 permission letters: create, read, update, delete, search. */
export type Permission = 'c' | 'r' | 'u' | 'd' | 's';

export interface ParsedScope {
  context: 'patient' | 'user' | 'system';
  /** A resource type or `*`. */
  resourceType: string;
  permissions: Set<Permission>;
}

const SCOPE_PATTERN = /^(patient|user|system)\/([A-Za-z]+|\*)\.([cruds]+|read|write|\*)$/;
const ORDER = 'cruds';

export function parseScope(scope: string): ParsedScope | undefined {
  const match = SCOPE_PATTERN.exec(scope);
  if (!match) return undefined;
  const [, context, resourceType, perms] = match;
  let permissions: Permission[];
  if (perms === 'read') permissions = ['r', 's'];
  else if (perms === 'write') permissions = ['c', 'u', 'd'];
  else if (perms === '*') permissions = ['c', 'r', 'u', 'd', 's'];
  else {
    // v2 requires the letters in cruds order, each at most once.
    let last = -1;
    for (const letter of perms) {
      const at = ORDER.indexOf(letter);
      if (at <= last) return undefined;
      last = at;
    }
    permissions = [...perms] as Permission[];
  }
  return { context: context as ParsedScope['context'], resourceType, permissions: new Set(permissions) };
}

/** The lab writes results; everything else it reads. */
export const LAB_WRITABLE_TYPES = ['Observation', 'DiagnosticReport', 'Specimen'] as const;

/** The SMART scopes a participant of this role is granted when it asks for none (and the most it may ask for). */
export function roleScopes(role: ParticipantRole): string[] {
  switch (role) {
    case 'system':
      return ['system/*.rs', 'system/*.cud'];
    case 'admin':
      return ['system/*.rs', 'system/*.cud'];
    case 'clinician':
      return ['user/*.rs', 'user/*.cud'];
    case 'lab':
      return ['user/*.rs', ...LAB_WRITABLE_TYPES.map((type) => `user/${type}.cud`)];
    case 'patient':
      return ['patient/*.rs', 'patient/Consent.cud'];
  }
}

/** The SMART v1 name of a permission set, when v1 has one (`read` = rs, `write` = cud, `*` = all). */
function v1Name(permissions: ReadonlySet<Permission>): string | undefined {
  const letters = ORDER.split('')
    .filter((p) => permissions.has(p as Permission))
    .join('');
  return letters === 'rs' ? 'read' : letters === 'cud' ? 'write' : letters === ORDER ? '*' : undefined;
}

/** What one allowed scope leaves of one requested scope: same context, the narrower type, common permissions. */
function intersect(allowed: ParsedScope, requested: ParsedScope): ParsedScope | undefined {
  if (allowed.context !== requested.context) return undefined;
  let resourceType: string;
  if (requested.resourceType === '*') resourceType = allowed.resourceType;
  else if (allowed.resourceType === '*' || allowed.resourceType === requested.resourceType)
    resourceType = requested.resourceType;
  else return undefined;
  const permissions = new Set([...requested.permissions].filter((p) => allowed.permissions.has(p)));
  return permissions.size === 0 ? undefined : { context: requested.context, resourceType, permissions };
}

/**
 * The scopes to grant for a token request: the role's scopes when none are asked for, otherwise the intersection
 * of what was asked and what the role allows, scope by scope (SMART: a server may grant less than asked; RFC 6749
 * §3.3). `system/*.cruds` asked by a system is narrowed to `system/*.rs system/*.cud`; `patient/*.cud` asked by a
 * patient to `patient/Consent.cud`. Written in the client's notation: a request all in SMART v1 (`read`, `write`,
 * `*`) is answered in v1 where v1 can say it, any other in v2 letters. Non-resource scopes (`launch`, `openid`)
 * are not granted to backend clients. Empty when nothing is left (the token endpoint then refuses).
 */
export function grantScopes(role: ParticipantRole, requested: string | undefined): string[] {
  const allowed = roleScopes(role);
  if (requested === undefined || requested.trim() === '') return allowed;
  const allowedParsed = allowed.map((s) => parseScope(s)!);
  const requestedScopes = requested.trim().split(/\s+/);
  const allV1 = requestedScopes.every((scope) => /\.(read|write|\*)$/.test(scope));
  const out: string[] = [];
  for (const scope of requestedScopes) {
    const parsed = parseScope(scope);
    if (!parsed) continue;
    for (const granted of allowedParsed) {
      const common = intersect(granted, parsed);
      if (!common) continue;
      const letters = ORDER.split('')
        .filter((p) => common.permissions.has(p as Permission))
        .join('');
      const text = `${common.context}/${common.resourceType}.${(allV1 && v1Name(common.permissions)) || letters}`;
      if (!out.includes(text)) out.push(text);
    }
  }
  return out;
}

/** Compiled form of a granted scope list for fast checks on every request. */
export class ScopeSet {
  private readonly parsed: ParsedScope[];
  private readonly memo = new Map<string, boolean>();

  constructor(readonly scopes: readonly string[]) {
    this.parsed = scopes.map(parseScope).filter((s): s is ParsedScope => s !== undefined);
  }

  allows(resourceType: string, permission: Permission): boolean {
    const key = `${resourceType}.${permission}`;
    let result = this.memo.get(key);
    if (result === undefined) {
      result = this.parsed.some(
        (s) => (s.resourceType === '*' || s.resourceType === resourceType) && s.permissions.has(permission),
      );
      this.memo.set(key, result);
    }
    return result;
  }

  /** Any resource type at all with this permission (system-level interactions: history-system, search-system). */
  allowsAny(permission: Permission): boolean {
    return this.parsed.some((s) => s.permissions.has(permission));
  }
}
