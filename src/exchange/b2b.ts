/**
 * The HL7 UDAP B2B authorization extension object (UDAP Security IG, "B2B Authorization Extension Object"),
 * carried in a client assertion as `extensions["hl7-b2b"]`: who acts behind the calling service and why.
 *
 * This network fills it as follows: `subject_id` is the acting participant's pseudonym (never a name),
 * `subject_role` its role, `organization_id` the calling member's MSP id, `purpose_of_use` PurposeOfUse codes
 * (`TREAT`; the form `urn:oid:2.16.840.1.113883.5.8#TREAT` is accepted too), `consent_reference` the grant ids
 * the call relies on.
 */

export const B2B_EXTENSION_KEY = 'hl7-b2b';
/** The HL7 v3 ActReason code system of PurposeOfUse codes, as an OID URI. */
const PURPOSE_OF_USE_SYSTEM = 'urn:oid:2.16.840.1.113883.5.8#';
const MAX_ITEMS = 64;
const MAX_TEXT = 256;

export interface B2bAuthorization {
  version: '1';
  subject_id: string;
  subject_role: string;
  organization_id: string;
  purpose_of_use: string[];
  consent_reference: string[];
}

/** The PurposeOfUse code of `TREAT` or `urn:oid:2.16.840.1.113883.5.8#TREAT`. */
export function purposeCode(value: string): string {
  return value.startsWith(PURPOSE_OF_USE_SYSTEM) ? value.slice(PURPOSE_OF_USE_SYSTEM.length) : value;
}

function text(value: unknown): value is string {
  return typeof value === 'string' && value !== '' && value.length <= MAX_TEXT;
}

function texts(value: unknown, allowEmpty: boolean): value is string[] {
  return (
    Array.isArray(value) &&
    (allowEmpty || value.length > 0) &&
    value.length <= MAX_ITEMS &&
    value.every((item) => text(item))
  );
}

/**
 * The extension of an assertion's `extensions` claim, checked for the fields this network requires; a string
 * naming what is wrong otherwise. Purpose codes come back without their system prefix.
 */
export function parseB2bAuthorization(extensions: unknown): B2bAuthorization | string {
  if (extensions === null || typeof extensions !== 'object' || Array.isArray(extensions))
    return `the client assertion has no extensions.${B2B_EXTENSION_KEY} object`;
  const b2b = (extensions as Record<string, unknown>)[B2B_EXTENSION_KEY];
  if (b2b === null || typeof b2b !== 'object' || Array.isArray(b2b))
    return `the client assertion has no extensions.${B2B_EXTENSION_KEY} object`;
  const fields = b2b as Record<string, unknown>;
  if (fields.version !== '1') return `${B2B_EXTENSION_KEY}.version must be "1"`;
  for (const name of ['subject_id', 'subject_role', 'organization_id'] as const)
    if (!text(fields[name])) return `${B2B_EXTENSION_KEY}.${name} is required (a string)`;
  if (!texts(fields.purpose_of_use, false))
    return `${B2B_EXTENSION_KEY}.purpose_of_use is required (an array of codes)`;
  const consent = fields.consent_reference ?? [];
  if (!texts(consent, true)) return `${B2B_EXTENSION_KEY}.consent_reference must be an array of strings`;
  return {
    version: '1',
    subject_id: fields.subject_id as string,
    subject_role: fields.subject_role as string,
    organization_id: fields.organization_id as string,
    purpose_of_use: [...new Set((fields.purpose_of_use as string[]).map(purposeCode))],
    consent_reference: [...new Set(consent)],
  };
}
