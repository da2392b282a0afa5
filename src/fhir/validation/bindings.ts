/** Terminology: codes in their code systems (and their display names), and bindings to value sets. */
import { conceptIdProblem } from './sctid.js';
import { isJsonObject, type JsonObject } from '../definitions/json.js';
import type { ElementNode } from './structure.js';
import type { Run, WalkContext } from './walk-context.js';

/** A URI with a scheme (RFC 3986 section 3.1); `#x`, `cs/x` and `x` are relative. */
const ABSOLUTE_URI = /^[A-Za-z][A-Za-z0-9+.-]*:/;

const SNOMED_CT = 'http://snomed.info/sct';

export function checkCoding(w: WalkContext, coding: JsonObject, path: string, run: Run): void {
  if (typeof coding.system === 'string' && !checkCodingSystem(w, coding.system, `${path}.system`, run))
    return;
  if (typeof coding.system !== 'string' || typeof coding.code !== 'string') return;
  if (coding.system === SNOMED_CT) {
    // snomedct.html: concept ids and expressions are codes, description ids are not; an SCTID's syntax and check
    // digit hold in every edition, so they are checked without SNOMED CT content.
    const problem = conceptIdProblem(coding.code);
    if (problem) {
      run.add(
        w.unknownCodeSeverity,
        'code-invalid',
        `Unknown code '${coding.code.slice(0, 100)}' in the CodeSystem '${SNOMED_CT}': not a SNOMED CT concept id, ${problem}`,
        `${path}.code`,
        'bindings',
      );
      return;
    }
  }
  const version = typeof coding.version === 'string' ? coding.version : undefined;
  const { result, display, concept } = w.terminology.codeInSystem(coding.system, coding.code, version);
  if (result === 'no') {
    run.add(
      w.unknownCodeSeverity,
      'code-invalid',
      `Unknown code '${coding.code.slice(0, 100)}' in the CodeSystem '${coding.system}'`,
      `${path}.code`,
      'bindings',
    );
    return;
  }
  if (
    result === 'yes' &&
    typeof coding.display === 'string' &&
    display &&
    normalise(display) !== normalise(coding.display)
  ) {
    const designations = (concept?.designation ?? []).map((d) => normalise(String(d?.value ?? '')));
    if (!designations.includes(normalise(coding.display)))
      run.add(
        'warning',
        'invalid',
        `Wrong Display Name '${coding.display.slice(0, 100)}' for ${coding.system}#${coding.code}. Valid display is '${display}'`,
        `${path}.display`,
        'bindings',
      );
  }
}

/**
 * Coding.system identifies a code system (R4 datatypes.html#Coding: "the identification of the code system that
 * defines the meaning of the symbol in the code"; terminologies.html#4.1: an absolute URI, and a code system's
 * URI, not a value set's). False when the system cannot identify a code system, so its codes are not looked up.
 */
function checkCodingSystem(w: WalkContext, system: string, path: string, run: Run): boolean {
  if (!ABSOLUTE_URI.test(system)) {
    run.add(
      'error',
      'code-invalid',
      `Coding.system must be an absolute reference, not a local reference ('${system.slice(0, 100)}')`,
      path,
      'bindings',
    );
    return false;
  }
  if (w.terminology.isValueSetOnly(system)) {
    run.add(
      'error',
      'code-invalid',
      `The Coding references a value set, not a code system ('${system.slice(0, 100)}')`,
      path,
      'bindings',
    );
    return false;
  }
  return true;
}

export function checkBinding(
  w: WalkContext,
  node: ElementNode,
  codings: unknown[] | undefined,
  code: string | undefined,
  path: string,
  run: Run,
): void {
  const b = node.binding!;
  if (!b.valueSet || (b.strength !== 'required' && b.strength !== 'extensible' && b.strength !== 'preferred'))
    return;
  const vsUrl = b.valueSet.split('|')[0];
  if (code !== undefined) {
    const m = w.terminology.member(vsUrl, undefined, code);
    if (m === 'no')
      bindingIssue(
        w,
        b.strength,
        `The value provided ('${code.slice(0, 100)}') is not in the value set '${vsUrl}'`,
        path,
        run,
      );
    return;
  }
  const valid = (codings ?? []).filter(
    (c): c is JsonObject & { code: string } => isJsonObject(c) && typeof c.code === 'string',
  );
  if (!valid.length) return;
  let unknown = false;
  for (const c of valid) {
    const m = w.terminology.member(vsUrl, typeof c.system === 'string' ? c.system : undefined, c.code);
    if (m === 'yes') return;
    if (m === 'unknown') unknown = true;
  }
  if (unknown) {
    // Cannot be decided here: say so for required bindings (the code systems are not loaded on this server).
    if (b.strength === 'required') {
      const systems = [
        ...new Set(
          valid
            .map((c) => c.system)
            .filter((x): x is string => typeof x === 'string' && !w.terminology.hasCodes(x)),
        ),
      ];
      run.add(
        'information',
        'not-found',
        systems.length
          ? notLoadedMessage(systems, vsUrl)
          : `The value set '${vsUrl}' cannot be expanded here, so the code cannot be validated`,
        path,
        'terminology-not-loaded',
      );
    }
    return;
  }
  bindingIssue(w, b.strength, `None of the codings provided are in the value set '${vsUrl}'`, path, run);
}

export function bindingIssue(
  w: WalkContext,
  strength: string,
  message: string,
  path: string,
  run: Run,
): void {
  run.add(strength === 'required' ? 'error' : 'warning', 'code-invalid', message, path, 'bindings');
}

export function normalise(s: string): string {
  return s.trim().replace(/\s+/g, ' ').toLowerCase();
}

/**
 * The information issue of a required binding whose code systems are not loaded on this server
 * (docs/terminology.md, "not loaded, not checked"); `systemsNotLoaded` reads the systems back (import's summary).
 */
export function notLoadedMessage(systems: string[], valueSetUrl: string): string {
  return `CodeSystem ${systems.map((x) => `'${x}'`).join(', ')} is not loaded on this server: the code is not checked against '${valueSetUrl}'`;
}

const NOT_LOADED =
  /^CodeSystem ('[^']*'(?:, '[^']*')*) is not loaded on this server: the code is not checked against '/;

/** The code systems an issue says are not loaded (none for any other issue). */
export function systemsNotLoaded(issue: { severity: string; diagnostics?: string }): string[] {
  if (issue.severity !== 'information' || !issue.diagnostics) return [];
  const match = NOT_LOADED.exec(issue.diagnostics);
  return match ? match[1]!.split(', ').map((quoted) => quoted.slice(1, -1)) : [];
}
