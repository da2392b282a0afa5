/**
 * Quantities in UCUM canonical units, for the quantity index (index-entries.ts) and the values searched for
 * (parse.ts): `1 g/L` and `100 mg/dL` are both `1000 g.m-3`, so one index range answers either. Uses the NLM's
 * `@lhncbc/ucum-lhc` (as src/fhir/validation/ucum.ts does; this part of src/fhir may not import that one), loaded
 * on first use.
 */
import { createRequire } from 'node:module';

export const UCUM_SYSTEM = 'http://unitsofmeasure.org';

interface BaseUnitsResult {
  status: 'succeeded' | 'failed' | 'error' | 'invalid';
  magnitude?: number;
  unitToExp?: Record<string, number>;
  fromUnitIsSpecial?: boolean;
}
interface UcumUtils {
  convertToBaseUnits(fromUnit: string, fromValue: number): BaseUnitsResult;
}

let utils: UcumUtils | undefined;
function ucum(): UcumUtils {
  if (!utils) {
    const pkg = createRequire(import.meta.url)('@lhncbc/ucum-lhc') as {
      UcumLhcUtils: { getInstance(): UcumUtils };
    };
    utils = pkg.UcumLhcUtils.getInstance();
  }
  return utils;
}

/** A unit's canonical form: its base-unit string and, for a linear unit, the factor to it (special units: none). */
interface CanonicalUnit {
  unit: string;
  factor?: number;
}

// Units are few: each code is parsed once (a miss is remembered too). Bounded against hostile input.
let units = new Map<string, CanonicalUnit | null>();

function canonicalUnit(code: string): CanonicalUnit | null {
  let known = units.get(code);
  if (known !== undefined) return known;
  known = null;
  try {
    const r = ucum().convertToBaseUnits(code, 1);
    if (r.status === 'succeeded' && typeof r.magnitude === 'number' && Number.isFinite(r.magnitude)) {
      const unit =
        Object.entries(r.unitToExp ?? {})
          .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
          .map(([base, exp]) => (exp === 1 ? base : `${base}${exp}`))
          .join('.') || '1';
      // Special units (Cel, [degF], [pH]...) convert by a function: each value goes through the library.
      known = r.fromUnitIsSpecial ? { unit } : { unit, factor: r.magnitude };
    }
  } catch {
    known = null;
  }
  if (units.size > 10_000) units = new Map();
  units.set(code, known);
  return known;
}

/** 12 significant digits: `1 g/L` and `100 mg/dL` give the same number, not 1000 and 999.9999999999999. */
const rounded = (x: number): number => Number(x.toPrecision(12));

/**
 * `value` of UCUM unit `code` in the canonical unit (base units, e.g. `g.m-3`, `K`, `1` for dimensionless), or
 * undefined when the code is not UCUM or cannot be converted (arbitrary units such as `[IU]`).
 */
export function toCanonical(value: number, code: string): { value: number; unit: string } | undefined {
  const unit = canonicalUnit(code);
  if (!unit) return undefined;
  if (unit.factor !== undefined) return { value: rounded(value * unit.factor), unit: unit.unit };
  try {
    const r = ucum().convertToBaseUnits(code, value);
    if (r.status !== 'succeeded' || typeof r.magnitude !== 'number' || !Number.isFinite(r.magnitude))
      return undefined;
    return { value: rounded(r.magnitude), unit: unit.unit };
  } catch {
    return undefined;
  }
}
