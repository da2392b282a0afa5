/**
 * Plain JSON as read from untrusted input: typed `unknown` and narrowed with these guards before use. Property
 * access goes through `field`, which reads like `value?.[key]` on any object (arrays included) and gives undefined
 * for everything else, so a rule reads a path without trusting the shape of what it reads.
 */

/** A JSON object (not null, not an array). */
export type JsonObject = { [key: string]: unknown };
export type JsonArray = unknown[];

export function isJsonObject(value: unknown): value is JsonObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** `value?.[key]` for any non-null object (arrays too, as JavaScript reads them); undefined for the rest. */
export function field(value: unknown, key: string): unknown {
  return typeof value === 'object' && value !== null ? (value as JsonObject)[key] : undefined;
}

/** The array at `value[key]`, or an empty one when there is none. */
export function arrayField(value: unknown, key: string): JsonArray {
  const v = field(value, key);
  return Array.isArray(v) ? v : [];
}

/** The string at `value[key]`, or undefined when it is not a string. */
export function stringField(value: unknown, key: string): string | undefined {
  const v = field(value, key);
  return typeof v === 'string' ? v : undefined;
}
