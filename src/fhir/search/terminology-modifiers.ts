/**
 * The token modifiers that ask terminology (R4 search.html#token): `:in` and `:not-in` take a ValueSet URL,
 * `:below` and `:above` a `system|code` whose subsumption hierarchy is known here (a loaded CodeSystem or a big
 * code system loaded with `hie-ledger terminology load`). Each becomes a plain token filter over the codes the
 * terminology port gives (bound as parameters like any token value), so the store runs it as any other token
 * search: the same on SQLite and PostgreSQL, with the caller's read scope applied the same way. More than
 * MAX_MODIFIER_CODES codes is refused with 400 rather than answered partly.
 */
import { fhirError } from '../outcome.js';
import type { SystemCode, TerminologyPort } from '../terminology-port.js';
import type { Filter, SearchValue } from '../store/search-query.js';

export const TERMINOLOGY_MODIFIERS: ReadonlySet<string> = new Set(['in', 'not-in', 'below', 'above']);

/** Most codes one modifier may stand for (each is two bound parameters). */
export const MAX_MODIFIER_CODES = 1000;

/** No resource id is this long (ids are at most 64 characters): an id filter on it matches nothing. */
const NO_SUCH_ID = 'x'.repeat(65);

/** Why a modifier could not be applied (the parser refuses it, or leaves it out under lenient handling). */
export class ModifierUnavailable extends Error {}

/**
 * The filter for `param:modifier=value1,value2` (values OR-ed), or ModifierUnavailable when the terminology
 * cannot answer. `:not-in`: resources with no code in the value set(s), as `:not` (one without the element too).
 */
export function terminologyModifierFilter(
  terminology: TerminologyPort | undefined,
  param: string,
  modifier: string,
  orValues: string[],
): Filter {
  if (!terminology)
    throw new ModifierUnavailable(
      `Parameter '${param}:${modifier}': this server has no terminology to apply it`,
    );
  const codes = new Map<string, SystemCode>();
  for (const raw of orValues) {
    const result =
      modifier === 'in' || modifier === 'not-in'
        ? terminology.valueSetCodes(raw.split('|')[0]!, MAX_MODIFIER_CODES)
        : terminology.subsumptionCodes(
            ...systemAndCode(param, modifier, raw),
            modifier as 'below' | 'above',
            MAX_MODIFIER_CODES,
          );
    if (result.kind === 'unknown')
      throw new ModifierUnavailable(`Parameter '${param}:${modifier}': ${result.message}`);
    if (result.kind === 'codes') for (const c of result.codes) codes.set(`${c.system}|${c.code}`, c);
    if (result.kind === 'too-many' || codes.size > MAX_MODIFIER_CODES)
      throw fhirError(
        'search-limit-exceeded',
        `Parameter '${param}:${modifier}' stands for more than ${MAX_MODIFIER_CODES} codes: narrow it (a smaller value set or a more specific code)`,
      );
  }
  const negate = modifier === 'not-in';
  // No code at all: `:in` matches nothing, `:not-in` everything (still an applied filter, for the self link).
  if (codes.size === 0) return { kind: 'id', ids: [NO_SUCH_ID], ...(negate ? { negate } : {}) };
  // A `code` element (Patient.gender) is indexed without a system: its system is the one its binding implies.
  const values: SearchValue[] = [...codes.values()].flatMap((c): SearchValue[] => [
    { kind: 'token', system: c.system, code: c.code },
    { kind: 'token', system: '', code: c.code },
  ]);
  return { kind: 'param', param, type: 'token', values, ...(negate ? { negate } : {}) };
}

/** `system|code` of `:below`/`:above` (a code without its system names no hierarchy). */
function systemAndCode(param: string, modifier: string, raw: string): [string, string] {
  const bar = raw.indexOf('|');
  const system = bar > 0 ? raw.slice(0, bar) : '';
  const code = bar > 0 ? raw.slice(bar + 1) : '';
  if (!system || !code)
    throw fhirError(
      'search-param-invalid',
      `Parameter '${param}:${modifier}' takes system|code (the code system whose hierarchy is meant), not '${raw.slice(0, 80)}'`,
    );
  return [system, code];
}
