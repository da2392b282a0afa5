/**
 * The StructureDefinition-driven walker: follows a resource's JSON and the compiled snapshot of its type (and of
 * each claimed profile) together, reporting cardinality, types, primitive formats, unknown and empty properties,
 * fixed/pattern values, slicing, extensions, references, bindings, narrative safety and invariants, each as an
 * OperationOutcome issue with a FHIRPath `expression` (array indexes included, choice types as `.ofType(T)`).
 */
import type { IssueCode, IssueSeverity, OperationOutcomeIssue } from '../outcome.js';
import type { DefinitionRegistry, Json } from '../definitions/definition-registry.js';
import { StructureCache, type CompiledStructure, type ElementNode, type TypeRef } from './structure.js';
import { checkPrimitive, isPrimitiveType } from './primitives.js';
import { Terminology } from './terminology.js';
import { checkNarrativeXhtml } from './xhtml.js';
import { containedReferenced, evaluateConstraint, WALKER_NATIVE_KEYS } from './invariants.js';
import { checkBundle } from './bundle.js';
import {
  checkMeasureReport,
  checkOperationDefinitionProfiles,
  checkSearchParameter,
  checkValueSetParameters,
} from './conformance-resources.js';
import { generateSnapshot, type SnapshotProblem } from '../definitions/snapshot.js';

const MAX_DEPTH = 64;
const MAX_ISSUES = 500;

interface Frame {
  resource: Json;
  /** The resource holding `contained` for references `#id` (the container, or the resource itself). */
  rootResource: Json;
}

/** One validation run: issues deduplicated (base and profile walks overlap). */
export class Run {
  readonly issues: OperationOutcomeIssue[] = [];
  /** Keys of the listed issues, made once the list is long (below that a scan is cheaper than building keys). */
  private seen: Set<string> | undefined;
  depth = 0;
  truncated = false;
  /** When set, only whether an error occurred matters (slice matching by profile). */
  errorsOnly = false;
  errorCount = 0;
  /** performance.now() after which FHIRPath invariants are skipped (a bound on pathological inputs). */
  invariantDeadline = Infinity;
  invariantsSkipped = false;

  private listedErrors = 0;

  add(severity: IssueSeverity, code: IssueCode, message: string, expression: string): void {
    const isError = severity === 'error' || severity === 'fatal';
    if (isError) this.errorCount++;
    if (this.errorsOnly) return;
    if (this.isListed(severity, message, expression)) return;
    // Past the cap, the first error is still listed, so an invalid verdict always shows a reason.
    if (this.issues.length >= MAX_ISSUES && !(isError && this.listedErrors === 0)) {
      if (!this.truncated) {
        this.truncated = true;
        this.issues.push({
          severity: 'information',
          code: 'too-costly',
          diagnostics: `More than ${MAX_ISSUES} issues; the rest are not reported`,
          expression: [expression],
        });
      }
      return;
    }
    if (isError) this.listedErrors++;
    this.issues.push({ severity, code, diagnostics: message, expression: [expression] });
  }

  /** Whether the same issue is listed already (base and profile walks report the same problems). */
  private isListed(severity: IssueSeverity, message: string, expression: string): boolean {
    const issues = this.issues;
    if (issues.length < 16 && this.seen === undefined) {
      for (const issue of issues) {
        if (
          issue.severity === severity &&
          issue.diagnostics === message &&
          issue.expression?.[0] === expression
        )
          return true;
      }
      return false;
    }
    const keyOf = (s: string, m: string, e: string) => `${s}|${e}|${m}`;
    this.seen ??= new Set(issues.map((i) => keyOf(i.severity, i.diagnostics ?? '', i.expression?.[0] ?? '')));
    const key = keyOf(severity, message, expression);
    if (this.seen.has(key)) return true;
    this.seen.add(key);
    return false;
  }
}

function upperFirst(s: string): string {
  return s.charAt(0).toUpperCase() + s.slice(1);
}

const RESOURCE_REF = /^([A-Z][A-Za-z]+)\/([A-Za-z0-9\-.]{1,64})(\/_history\/([A-Za-z0-9\-.]{1,64}))?$/;

export class StructureWalker {
  readonly structures: StructureCache;
  readonly terminology: Terminology;
  /**
   * Severity of an extension whose definition is unknown here. 'warning' by default (EHRs carry local extensions);
   * 'error' is the HL7 reference validator's default, used by the conformance run. Unknown modifier extensions are
   * always errors.
   */
  unknownExtensionSeverity: 'error' | 'warning' | 'information' = 'warning';
  /**
   * Severity of a code that is not in a loaded, complete CodeSystem (outside required bindings, which are always
   * errors). 'error' as in the reference validator; bulk imports of imperfect data may choose 'warning'.
   */
  unknownCodeSeverity: 'error' | 'warning' = 'error';
  /** Accept example.org/acme.com extension URLs (the specification's own examples use them). */
  allowExampleUrls = false;
  /**
   * R4 requires Observations with the vital-sign LOINC codes to conform to the matching core profile
   * (http://hl7.org/fhir/R4/observation-vitalsigns.html); on by default.
   */
  vitalSigns = true;
  private vitalSignCodes: Map<string, string> | undefined;

  private vitalSignsProfiles(obs: Json): string[] {
    if (!this.vitalSignCodes) {
      this.vitalSignCodes = new Map();
      for (const sd of this.registry.all('StructureDefinition')) {
        if (
          sd.type !== 'Observation' ||
          sd.baseDefinition !== 'http://hl7.org/fhir/StructureDefinition/vitalsigns' ||
          !sd.url?.startsWith('http://hl7.org/fhir/StructureDefinition/')
        )
          continue;
        for (const e of sd.snapshot?.element ?? []) {
          if (/^Observation\.code\.coding:[^.]*\.code$/.test(e.id ?? '') && typeof e.fixedCode === 'string')
            this.vitalSignCodes.set(e.fixedCode, sd.url);
        }
      }
    }
    const out: string[] = [];
    for (const c of Array.isArray(obs.code?.coding) ? obs.code.coding : []) {
      const url =
        c?.system === 'http://loinc.org' && typeof c.code === 'string'
          ? this.vitalSignCodes.get(c.code)
          : undefined;
      if (url) out.push(url);
    }
    return out;
  }

  /** Validate contained resources (and dom-3). Off only to mirror a reference-validator setting. */
  validateContained = true;

  constructor(readonly registry: DefinitionRegistry) {
    this.structures = new StructureCache(registry);
    this.terminology = new Terminology(registry);
  }

  private readonly resourceTypes = new Map<string, boolean>();

  isResourceType(type: string): boolean {
    let known = this.resourceTypes.get(type);
    if (known === undefined) {
      if (!/^[A-Z][A-Za-z]+$/.test(type)) return false;
      const s = this.structures.type(type);
      known =
        !!s &&
        s.kind === 'resource' &&
        s.derivation === 'specialization' &&
        !this.registry.typeDefinition(type)?.abstract;
      if (this.resourceTypes.size < 10_000) this.resourceTypes.set(type, known);
    }
    return known;
  }

  /** Validates a resource (top level) against its type, its claimed profiles and `profiles`. */
  validate(resource: unknown, profiles: string[] = [], run = new Run()): Run {
    if (!resource || typeof resource !== 'object' || Array.isArray(resource)) {
      run.add('fatal', 'structure', 'The content is not a JSON object', '$this');
      return run;
    }
    const rt = (resource as Json).resourceType;
    this.walkResource(resource as Json, typeof rt === 'string' ? rt : 'Resource', undefined, run, profiles);
    return run;
  }

  // ---------------------------------------------------------------- resources

  walkResource(
    res: Json,
    path: string,
    container: Json | undefined,
    run: Run,
    extraProfiles: string[] = [],
  ): void {
    if (!res || typeof res !== 'object' || Array.isArray(res)) {
      run.add('error', 'structure', 'A resource must be a JSON object', path);
      return;
    }
    const rt = res.resourceType;
    if (typeof rt !== 'string') {
      run.add('error', 'structure', 'Unable to find resourceType property', path);
      return;
    }
    if (!this.isResourceType(rt)) {
      run.add('error', 'structure', `Unknown resource type '${String(rt).slice(0, 64)}'`, path);
      return;
    }
    const s = this.structures.type(rt)!;
    const frame: Frame = { resource: res, rootResource: container ?? res };
    this.walkObject(res, s.root, s.root, rt, path, run, frame, true);
    this.checkResourceRules(res, rt, path, run);
    this.walkProfiles(res, rt, s.url, path, run, frame, extraProfiles);
  }

  /** The rules a resource type has beyond its structure (dom-3, Bundle, terminology and conformance resources). */
  private checkResourceRules(res: Json, rt: string, path: string, run: Run): void {
    if (this.validateContained && Array.isArray(res.contained) && res.contained.length) {
      for (const id of containedReferenced(res)) {
        run.add(
          'error',
          'invariant',
          `Constraint failed: dom-3: 'If the resource is contained in another resource, it SHALL be referred to from elsewhere in the resource or SHALL refer to the containing resource' (contained '${id}')`,
          path,
        );
      }
    }
    if (rt === 'Bundle') checkBundle(res, path, run, this);
    if (rt === 'ValueSet') checkValueSetParameters(res, path, run);
    if (rt === 'SearchParameter') checkSearchParameter(res, path, run);
    if (rt === 'MeasureReport')
      checkMeasureReport(res, path, run, (url) => this.registry.canonical('Measure', url));
    if (rt === 'OperationDefinition')
      checkOperationDefinitionProfiles(res, path, run, (url) => this.structures.get(url));
    if (
      rt === 'StructureDefinition' &&
      !res.snapshot &&
      Array.isArray(res.differential?.element) &&
      typeof res.baseDefinition === 'string'
    ) {
      // A differential-only profile must be usable: its snapshot is generated here as it would be on use.
      const problems: SnapshotProblem[] = [];
      try {
        generateSnapshot(res, this.registry, problems);
      } catch (e) {
        problems.push({ message: e instanceof Error ? e.message : String(e) });
      }
      for (const p of problems)
        if (p.location) run.add('error', 'value', p.message, p.location);
        else run.add('error', 'exception', `Error generating Snapshot: ${p.message}`, path);
    }
  }

  /** The profiles the resource claims, is given, or implies (vital signs), each walked over the whole resource. */
  private walkProfiles(
    res: Json,
    rt: string,
    baseUrl: string,
    path: string,
    run: Run,
    frame: Frame,
    extraProfiles: string[],
  ): void {
    const claimed: string[] = Array.isArray(res.meta?.profile)
      ? res.meta.profile.filter((p: unknown) => typeof p === 'string')
      : [];
    const implied = rt === 'Observation' && this.vitalSigns ? this.vitalSignsProfiles(res) : [];
    const all = [...new Set([...claimed, ...extraProfiles, ...implied])];
    for (const url of all) {
      const ps = this.structures.get(url);
      const idx = claimed.indexOf(url);
      const where = idx >= 0 ? `${path}.meta.profile[${idx}]` : path;
      if (!ps) {
        run.add(
          'warning',
          'structure',
          `Profile reference '${url}' has not been checked because it could not be found`,
          where,
        );
        continue;
      }
      if (ps.type !== rt || ps.kind !== 'resource') {
        run.add('error', 'structure', `Profile '${url}' is for ${ps.type}, not ${rt}`, where);
        continue;
      }
      if (ps.url === baseUrl) continue;
      this.walkObject(res, ps.root, ps.root, rt, path, run, frame, true);
    }
  }

  // ---------------------------------------------------------------- elements

  /** The element that carries the children of `node` for a value of type `type`. */
  private childOwner(node: ElementNode, type: TypeRef | undefined): ElementNode | undefined {
    if (node.children.length) return node;
    if (node.contentTarget) return node.contentTarget;
    if (!type) return undefined;
    if (type.profiles.length) {
      const ps = this.structures.get(type.profiles[0]);
      if (ps) return ps.root;
    }
    return this.structures.type(type.code)?.root;
  }

  private props(owner: ElementNode): Map<string, { node: ElementNode; type?: TypeRef }> {
    if (owner.props) return owner.props;
    const map = new Map<string, { node: ElementNode; type?: TypeRef }>();
    for (const c of owner.children) {
      if (c.choice) {
        c.jsonNames = [];
        for (const t of c.types) {
          const name = c.name + upperFirst(t.code);
          map.set(name, { node: c, type: t });
          c.jsonNames.push(name);
        }
      } else {
        map.set(c.name, { node: c, type: c.types[0] });
        c.jsonNames = [c.name];
      }
    }
    owner.props = map;
    return map;
  }

  walkObject(
    obj: Json,
    node: ElementNode,
    owner: ElementNode | undefined,
    typeName: string,
    path: string,
    run: Run,
    frame: Frame,
    isResourceRoot = false,
  ): void {
    if (run.depth >= MAX_DEPTH) {
      run.add('error', 'too-costly', `The content is nested more than ${MAX_DEPTH} levels deep`, path);
      return;
    }
    if (obj === null || typeof obj !== 'object' || Array.isArray(obj)) {
      run.add(
        'error',
        'structure',
        `The property must be a JSON object, not ${obj === null ? 'null' : Array.isArray(obj) ? 'an array' : typeof obj}`,
        path,
      );
      return;
    }
    if (!owner) return;
    run.depth++;
    try {
      const keyCount = this.walkProperties(obj, owner, path, run, frame, isResourceRoot);
      if (keyCount === 0 || (keyCount === 1 && obj.id !== undefined && !isResourceRoot)) {
        run.add('error', 'invalid', 'Object must have some content (ele-1)', path);
      }
      this.checkCardinality(obj, owner, path, run);
      this.checkConstraints(obj, node, owner, typeName, path, run, frame, isResourceRoot);
    } finally {
      run.depth--;
    }
  }

  /** Every property of an object against the element it names; returns how many properties there are. */
  private walkProperties(
    obj: Json,
    owner: ElementNode,
    path: string,
    run: Run,
    frame: Frame,
    isResourceRoot: boolean,
  ): number {
    const props = this.props(owner);
    let keyCount = 0;
    for (const key in obj) {
      keyCount++;
      if (isResourceRoot && key === 'resourceType') continue;
      const value = obj[key];
      if (key.charCodeAt(0) === 95 /* _ */) {
        const entry = props.get(key.slice(1));
        if (!entry || !entry.type || !isPrimitiveType(entry.type.code)) {
          run.add('error', 'structure', `Unrecognized property '${key.slice(0, 100)}'`, path);
          continue;
        }
        this.walkPrimitiveExtras(
          obj,
          key,
          value,
          entry.node,
          entry.type,
          this.elementPath(path, entry.node, entry.type),
          run,
          frame,
        );
        continue;
      }
      const entry = props.get(key);
      if (!entry) {
        run.add('error', 'structure', `Unrecognized property '${key.slice(0, 100)}'`, path);
        continue;
      }
      this.walkProperty(obj, key, value, entry, path, run, frame);
    }
    return keyCount;
  }

  /** One (non-`_`) property: null, array or single value as its element's cardinality allows, then its slices. */
  private walkProperty(
    obj: Json,
    key: string,
    value: Json,
    entry: { node: ElementNode; type?: TypeRef },
    path: string,
    run: Run,
    frame: Frame,
  ): void {
    const child = entry.node;
    const childPath = this.elementPath(path, child, entry.type);
    if (value === null) {
      run.add('error', 'invalid', 'A property cannot be null', childPath);
      return;
    }
    if (child.isArray) {
      if (!Array.isArray(value)) {
        run.add(
          'error',
          'structure',
          `This property must be an Array, not ${typeof value === 'object' ? 'an Object' : 'a primitive'}`,
          childPath,
        );
        return;
      }
      if (value.length === 0) {
        run.add(
          'error',
          'invalid',
          'Array cannot be empty - the property should not be present if it has no values',
          childPath,
        );
        return;
      }
      const primitive = entry.type && isPrimitiveType(entry.type.code);
      const extras = primitive ? obj['_' + key] : undefined;
      for (let i = 0; i < value.length; i++) {
        const item = value[i];
        if (item === null) {
          if (!(primitive && Array.isArray(extras) && extras[i]))
            run.add('error', 'invalid', 'Null values are not allowed in arrays', `${childPath}[${i}]`);
          continue;
        }
        this.walkValue(item, child, entry.type, `${childPath}[${i}]`, run, frame);
      }
      if (child.slicing && child.slices.length)
        this.checkSlices(value, child, entry.type, childPath, path, run, frame);
    } else {
      if (Array.isArray(value)) {
        run.add('error', 'structure', 'This property must be a single value, not an Array', childPath);
        return;
      }
      this.walkValue(value, child, entry.type, childPath, run, frame);
      if (child.slices.length && child.choice)
        this.checkChoiceSlices(value, child, entry.type, childPath, run, frame);
    }
  }

  /** Cardinality of every child of the object's element, and at most one type of a choice. */
  private checkCardinality(obj: Json, owner: ElementNode, path: string, run: Run): void {
    for (const c of owner.children) {
      if (c.min === 0 && c.max >= (c.isArray ? Infinity : 1) && !c.choice) continue;
      let count = 0;
      let present = 0;
      for (const n of c.jsonNames!) {
        const v = obj[n] ?? obj['_' + n];
        if (v === undefined || v === null) continue;
        present++;
        count += Array.isArray(v) ? v.length : 1;
      }
      if (c.choice && present > 1)
        run.add(
          'error',
          'structure',
          `Only one of ${c.jsonNames!.filter((n) => obj[n] !== undefined).join(', ')} may be present`,
          path,
        );
      if (count < c.min)
        run.add(
          'error',
          'structure',
          `${c.path}: minimum required = ${c.min}, but only found ${count}`,
          path,
        );
      else if (count > c.max)
        run.add('error', 'structure', `${c.path}: max allowed = ${c.max}, but found ${count}`, path);
    }
  }

  private elementPath(path: string, child: ElementNode, type: TypeRef | undefined): string {
    return child.choice && type ? `${path}.${child.name}.ofType(${type.code})` : `${path}.${child.name}`;
  }

  /** `_name`: the id and extensions of a primitive (an array parallel to the values for repeating elements). */
  private walkPrimitiveExtras(
    obj: Json,
    key: string,
    value: unknown,
    node: ElementNode,
    type: TypeRef,
    path: string,
    run: Run,
    frame: Frame,
  ): void {
    const owner = this.structures.type(type.code)?.root;
    const one = (v: unknown, p: string): void => {
      if (v === null) return;
      if (typeof v !== 'object' || Array.isArray(v)) {
        run.add('error', 'structure', `The property ${key} must be a JSON object`, p);
        return;
      }
      if ('value' in (v as Json)) {
        run.add('error', 'structure', `Unrecognized property 'value'`, p);
        return;
      }
      this.walkObject(v, node, owner, type.code, p, run, frame);
    };
    if (node.isArray) {
      const values = obj[key.slice(1)];
      if (!Array.isArray(value)) {
        run.add('error', 'structure', `The property ${key} must be an Array`, path);
        return;
      }
      if (Array.isArray(values) && values.length !== value.length)
        run.add(
          'error',
          'structure',
          `The arrays ${key.slice(1)} and ${key} must have the same length`,
          path,
        );
      value.forEach((v, i) => one(v, `${path}[${i}]`));
    } else one(value, path);
  }

  /** Validates one value (not an array) of an element of a given type. */
  walkValue(
    value: Json,
    node: ElementNode,
    type: TypeRef | undefined,
    path: string,
    run: Run,
    frame: Frame,
  ): void {
    // R4 snapshots type Resource.id as System.String (fhir-type 'string'); the specification says `id`.
    const code = node.raw.base?.path === 'Resource.id' ? 'id' : type?.code;
    if (code && isPrimitiveType(code)) {
      this.checkPrimitiveValue(code, value, node, path, run);
      return;
    }
    if (code === 'Resource' || (code !== undefined && this.isResourceType(code))) {
      if (!this.validateContained && /\.contained\[\d+\]$/.test(path)) return;
      this.walkResource(
        value,
        path,
        path.includes('.contained[') || path.endsWith('.contained') ? frame.rootResource : undefined,
        run,
      );
      return;
    }
    if (code === 'Extension') {
      this.walkExtension(value, node, type!, path, run, frame);
      return;
    }
    const owner = this.childOwner(node, type);
    this.walkObject(
      value,
      node,
      owner,
      code && code !== 'BackboneElement' && code !== 'Element' ? code : node.path,
      path,
      run,
      frame,
    );
    if (value === null || typeof value !== 'object' || Array.isArray(value)) return;
    checkFixedAndPattern(node, value, path, run);
    this.checkDataType(code, value, node, type, path, run, frame);
  }

  /** A primitive value: its syntax, then its element's length, fixed value, pattern, binding and bounds. */
  private checkPrimitiveValue(code: string, value: Json, node: ElementNode, path: string, run: Run): void {
    const problem = checkPrimitive(code, value);
    if (problem) {
      // Attachment data is reported on the attachment (as the reference validator does).
      if (node.path.endsWith('.data') && code === 'base64Binary' && path.endsWith('.data'))
        run.add(
          'error',
          'structure',
          `The base64 content in the data element is not valid base64: ${problem}`,
          path.slice(0, -5),
        );
      else run.add('error', 'invalid', problem, path);
      return;
    }
    if (code === 'xhtml') {
      for (const p of checkNarrativeXhtml(value as string))
        run.add(
          'error',
          p.key === 'xhtml' ? 'invalid' : 'invariant',
          p.key === 'xhtml' ? p.message : `Constraint failed: ${p.key}: ${p.message}`,
          path,
        );
    }
    if (node.maxLength && typeof value === 'string' && value.length > node.maxLength)
      run.add('error', 'too-long', `The value is longer than the maximum length ${node.maxLength}`, path);
    if (node.fixed !== undefined && !deepEqual(node.fixed, value))
      run.add(
        'error',
        'value',
        `Value is '${String(value).slice(0, 100)}' but must be '${String(node.fixed)}'`,
        path,
      );
    if (node.pattern !== undefined && !deepEqual(node.pattern, value))
      run.add(
        'error',
        'value',
        `Value is '${String(value).slice(0, 100)}' but must be '${String(node.pattern)}'`,
        path,
      );
    if (node.binding && (code === 'code' || code === 'string' || code === 'uri'))
      this.checkBinding(node, undefined, value as string, path, run);
    if (node.minValue !== undefined || node.maxValue !== undefined) checkMinMax(node, value, path, run);
  }

  /** The rules of the complex data types that have their own (references, codings, quantities, attachments). */
  private checkDataType(
    code: string | undefined,
    value: Json,
    node: ElementNode,
    type: TypeRef | undefined,
    path: string,
    run: Run,
    frame: Frame,
  ): void {
    switch (code) {
      case 'Reference':
        this.checkReference(value, node, type!, path, run, frame);
        break;
      case 'Attachment':
        checkAttachment(value, path, run);
        break;
      case 'Coding':
        this.checkCoding(value, path, run);
        if (node.binding) this.checkBinding(node, [value], undefined, path, run);
        break;
      case 'CodeableConcept':
        if (Array.isArray(value.coding))
          value.coding.forEach(
            (c: Json, i: number) =>
              c && typeof c === 'object' && this.checkCoding(c, `${path}.coding[${i}]`, run),
          );
        if (node.binding)
          this.checkBinding(node, Array.isArray(value.coding) ? value.coding : [], undefined, path, run);
        break;
      case 'Quantity':
        if (typeof value.value === 'number' && (node.minValue !== undefined || node.maxValue !== undefined))
          checkMinMax(node, value, path, run);
        // A unit binding on an open choice (value[x] of many types, as in the vital signs base profile) is not
        // applied to Quantities, as in the reference validator; on a Quantity-only element it is.
        if (node.binding && typeof value.code === 'string' && node.types.every((t) => t.code === 'Quantity'))
          this.checkBinding(node, [{ system: value.system, code: value.code }], undefined, path, run);
        break;
    }
  }

  private walkExtension(
    ext: Json,
    node: ElementNode,
    type: TypeRef,
    path: string,
    run: Run,
    frame: Frame,
  ): void {
    if (ext === null || typeof ext !== 'object' || Array.isArray(ext)) {
      run.add('error', 'structure', 'An extension must be a JSON object', path);
      return;
    }
    const owner = this.extensionDefinition(ext.url, type, path, run);
    const hasValue = Object.keys(ext).some((k) => k.startsWith('value'));
    const hasExtensions = Array.isArray(ext.extension) && ext.extension.length > 0;
    if (hasValue === hasExtensions)
      run.add(
        'error',
        'invariant',
        "Constraint failed: ext-1: 'Must have either extensions or value[x], not both'",
        path,
      );
    if (owner) this.walkObject(ext, owner, owner, 'Extension', path, run, frame);
    else {
      const base = this.structures.type('Extension')!.root;
      this.walkObject(
        ext,
        node.children.length ? node : base,
        node.children.length ? node : base,
        'Extension',
        path,
        run,
        frame,
      );
    }
  }

  /** The definition of an extension's url (checked as extension or modifier), or undefined when it has none. */
  private extensionDefinition(url: Json, type: TypeRef, path: string, run: Run): ElementNode | undefined {
    let owner: ElementNode | undefined;
    if (typeof url !== 'string' || url === '') {
      run.add('error', 'structure', 'Extension.url is required', path);
    } else if (!url.includes(':') && !url.startsWith('#')) {
      // A relative url is a sub-extension of a complex extension; the parent's definition covers it.
    } else {
      const profile = type.profiles[0];
      const ps = this.structures.get(url) ?? (profile ? this.structures.get(profile) : undefined);
      const usedAsModifier = /\.modifierExtension(\[\d+\])?$/.test(path);
      if (ps && ps.type === 'Extension') {
        owner = ps.root;
        const isModifier = !!ps.root.isModifier;
        if (isModifier !== usedAsModifier)
          run.add(
            'error',
            'structure',
            `The Extension '${url}' must not be used as ${usedAsModifier ? 'a modifierExtension' : 'an extension'} (it's ${isModifier ? 'a modifierExtension' : 'a regular extension'})`,
            path,
          );
      } else {
        // As the reference validator: example domains are never real extensions.
        const example =
          !this.allowExampleUrls &&
          /^https?:\/\/([\w-]+\.)*(example\.(org|com)|acme\.(com|org))(\/|$)/.test(url);
        const severity = usedAsModifier || example ? 'error' : this.unknownExtensionSeverity;
        run.add(
          severity,
          'structure',
          `The extension ${url} could not be found so is not allowed here`,
          path,
        );
        if (example)
          run.add('error', 'invalid', `Example URLs are not allowed in this context (${url})`, `${path}.url`);
      }
    }
    return owner;
  }

  // ---------------------------------------------------------------- constraints

  private checkConstraints(
    obj: Json,
    node: ElementNode,
    owner: ElementNode,
    typeName: string,
    path: string,
    run: Run,
    frame: Frame,
    isResourceRoot: boolean,
  ): void {
    const lists = owner === node ? [node.constraints] : [node.constraints, owner.constraints];
    let done: Set<string> | undefined;
    for (const list of lists) {
      for (const c of list) {
        if (WALKER_NATIVE_KEYS.has(c.key)) continue;
        if (lists.length > 1) {
          done ??= new Set();
          if (done.has(c.key)) continue;
          done.add(c.key);
        }
        if (run.invariantDeadline !== Infinity && performance.now() > run.invariantDeadline) {
          if (!run.invariantsSkipped) {
            run.invariantsSkipped = true;
            run.add(
              'warning',
              'too-costly',
              'Invariant checking stopped: the time budget for this resource was used up (the rest of its FHIRPath invariants are not checked)',
              path,
            );
          }
          return;
        }
        const base = isResourceRoot
          ? undefined
          : /^[A-Z]/.test(typeName) && !typeName.includes('.')
            ? typeName
            : typeName.replace(/\[x\]/g, '');
        const out = evaluateConstraint(c.key, c.expression, base, obj, {
          resource: frame.resource,
          rootResource: frame.rootResource,
        });
        if (!out.ok) run.add(c.severity, 'invariant', `Constraint failed: ${c.key}: '${c.human}'`, path);
      }
    }
  }

  // ---------------------------------------------------------------- slicing

  private checkSlices(
    items: Json[],
    node: ElementNode,
    type: TypeRef | undefined,
    path: string,
    parentPath: string,
    run: Run,
    frame: Frame,
  ): void {
    const slicing = node.slicing!;
    const counts = new Array(node.slices.length).fill(0);
    items.forEach((item, i) => {
      if (item === null || item === undefined) return;
      const idx = node.slices.findIndex((s) =>
        this.sliceMatches(item, s, slicing.discriminators, type, frame),
      );
      if (idx < 0) {
        if (slicing.rules === 'closed')
          run.add(
            'error',
            'structure',
            `This element does not match any known slice defined in the profile (slicing of ${node.path} is closed)`,
            `${path}[${i}]`,
          );
        return;
      }
      counts[idx]++;
      const slice = node.slices[idx];
      const sliceType = slice.types.length === 1 ? slice.types[0] : type;
      if (slice.children.length || (sliceType && sliceType.profiles.length))
        this.walkValue(item, slice, sliceType, `${path}[${i}]`, run, frame);
      else this.checkSliceLeaf(item, slice, sliceType, `${path}[${i}]`, run, frame);
    });
    node.slices.forEach((s, k) => {
      if (counts[k] < s.min)
        run.add(
          'error',
          'structure',
          `Slice '${s.path}:${s.sliceName}': a matching slice is required, but not found (minimum required = ${s.min}, found ${counts[k]})`,
          parentPath,
        );
      else if (counts[k] > s.max)
        run.add(
          'error',
          'structure',
          `Slice '${s.path}:${s.sliceName}': max allowed = ${s.max}, but found ${counts[k]}`,
          parentPath,
        );
    });
  }

  /** A slice without children: only its own fixed/pattern/binding apply (the base walk did the rest). */
  private checkSliceLeaf(
    item: Json,
    slice: ElementNode,
    type: TypeRef | undefined,
    path: string,
    run: Run,
    frame: Frame,
  ): void {
    const probe: ElementNode = {
      ...slice,
      children: [],
      slices: [],
      constraints: slice.constraints.filter(
        (c) => !c.source || !c.source.startsWith('http://hl7.org/fhir/StructureDefinition/'),
      ),
    };
    if (type && isPrimitiveType(type.code)) this.walkValue(item, probe, type, path, run, frame);
    else {
      checkFixedAndPattern(probe, item, path, run);
      if (probe.binding && type?.code === 'CodeableConcept')
        this.checkBinding(probe, Array.isArray(item.coding) ? item.coding : [], undefined, path, run);
      if (probe.binding && type?.code === 'Coding') this.checkBinding(probe, [item], undefined, path, run);
    }
  }

  /** Type slices on a choice element (`value[x]:valueQuantity`) constrain the value of that type. */
  private checkChoiceSlices(
    value: Json,
    node: ElementNode,
    type: TypeRef | undefined,
    path: string,
    run: Run,
    frame: Frame,
  ): void {
    if (!type) return;
    for (const s of node.slices) {
      if (
        s.sliceName === node.name + upperFirst(type.code) ||
        (s.types.length === 1 && s.types[0].code === type.code)
      ) {
        if (s.children.length || s.types[0]?.profiles.length)
          this.walkValue(value, s, s.types[0] ?? type, path, run, frame);
        else this.checkSliceLeaf(value, s, type, path, run, frame);
      }
    }
  }

  private sliceMatches(
    item: Json,
    slice: ElementNode,
    discriminators: { type: string; path: string }[],
    type: TypeRef | undefined,
    frame: Frame,
  ): boolean {
    for (const d of discriminators) {
      const segments = d.path === '$this' ? [] : d.path.split('.').filter((x) => x !== '$this');
      const values = navigate([item], segments);
      const target = this.sliceElementAt(slice, segments, type);
      switch (d.type) {
        case 'value':
        case 'pattern':
          if (!target || !this.valueDiscriminatorMatches(target, values)) return false;
          break;
        case 'exists':
          if (!target || !existsDiscriminatorMatches(target, values)) return false;
          break;
        case 'type':
          if (!typeDiscriminatorMatches(target ?? slice, values, segments, type)) return false;
          break;
        case 'profile':
          if (!this.profileDiscriminatorMatches(target ?? slice, values, frame)) return false;
          break;
        default:
          return false;
      }
    }
    return true;
  }

  /** `value`/`pattern`: the slice's fixed value, pattern, or required binding. */
  private valueDiscriminatorMatches(target: ElementNode, values: Json[]): boolean {
    if (target.fixed !== undefined) return values.some((v) => deepEqual(target.fixed, v));
    if (target.pattern !== undefined) return values.some((v) => patternMatches(target.pattern, v));
    if (target.binding?.valueSet && target.binding.strength === 'required') {
      return values.some((v) => {
        const codings: Json[] =
          typeof v === 'string' ? [{ code: v }] : Array.isArray(v?.coding) ? v.coding : [v];
        return codings.some(
          (c) =>
            c &&
            typeof c.code === 'string' &&
            this.terminology.member(target.binding!.valueSet!.split('|')[0], c.system, c.code) === 'yes',
        );
      });
    }
    return false;
  }

  /** `profile`: some value conforms (no errors) to one of the slice's profiles. */
  private profileDiscriminatorMatches(element: ElementNode, values: Json[], frame: Frame): boolean {
    const profiles = element.types.flatMap((t) => (t.profiles.length ? t.profiles : t.targetProfiles));
    if (!profiles.length) return false;
    return values.some((v) =>
      profiles.some((p) => {
        const ps = this.structures.get(p);
        if (!ps) return false;
        const probe = new Run();
        probe.errorsOnly = true;
        if (ps.kind === 'resource') this.walkResource(v, 'probe', undefined, probe, [p]);
        else this.walkObject(v, ps.root, ps.root, ps.type, 'probe', probe, frame);
        return probe.errorCount === 0;
      }),
    );
  }

  /** The element of a slice at a discriminator path (following own children, then the type's definition). */
  private sliceElementAt(
    slice: ElementNode,
    segments: string[],
    type: TypeRef | undefined,
  ): ElementNode | undefined {
    return this.elementAt(slice, slice.types.length === 1 ? slice.types[0] : type, segments, 0);
  }

  /**
   * Follows a discriminator path from an element. Where the path crosses a sliced element (e.g. `code.coding` with
   * a slice fixing the LOINC code), the slices are tried first: the fixed value usually lives in one of them.
   */
  private elementAt(
    start: ElementNode,
    startType: TypeRef | undefined,
    segments: string[],
    depth: number,
  ): ElementNode | undefined {
    let node: ElementNode | undefined = start;
    let t = startType;
    for (let k = 0; k < segments.length; k++) {
      const seg = segments[k];
      if (!node || depth > 8) return undefined;
      if (seg === 'resolve()') return undefined;
      const ext = /^extension\('(.*)'\)$/.exec(seg);
      const owner = this.childOwner(node, t);
      if (!owner) return undefined;
      if (ext) {
        const extEl = owner.children.find((c) => c.name === 'extension');
        const s = extEl?.slices.find((x) => x.types.some((tt) => tt.profiles.includes(ext[1])));
        if (!s) return undefined;
        node = s;
        t = s.types[0];
        continue;
      }
      const name = seg.replace(/\.?ofType\(.*\)$/, '');
      const child = owner.children.find((c) => c.name === name || c.name + '[x]' === name);
      if (child && child.slices.length && k < segments.length - 1) {
        for (const s of child.slices) {
          const found = this.elementAt(
            s,
            s.types.length === 1 ? s.types[0] : child.types[0],
            segments.slice(k + 1),
            depth + 1,
          );
          if (found && (found.fixed !== undefined || found.pattern !== undefined)) return found;
        }
      }
      node = child;
      t = child?.types.length === 1 ? child.types[0] : undefined;
    }
    return node;
  }

  // ---------------------------------------------------------------- references and terminology

  private checkReference(
    ref: Json,
    node: ElementNode,
    type: TypeRef,
    path: string,
    run: Run,
    frame: Frame,
  ): void {
    const r = ref.reference;
    if (typeof r !== 'string') return;
    if (r.startsWith('#')) {
      const id = r.slice(1);
      if (id && !(frame.rootResource.contained ?? []).some((c: Json) => c?.id === id))
        run.add('error', 'structure', `Unable to resolve resource with reference '${r.slice(0, 100)}'`, path);
      return;
    }
    const m =
      RESOURCE_REF.exec(r) ??
      /^https?:\/\/.*\/([A-Z][A-Za-z]+)\/([A-Za-z0-9\-.]{1,64})(\/_history\/([A-Za-z0-9\-.]{1,64}))?$/.exec(
        r,
      );
    if (m) {
      const refType = m[1];
      if (!this.isResourceType(refType)) {
        if (!/^https?:/.test(r))
          run.add(
            'error',
            'structure',
            `Unknown resource type '${refType}' in the reference '${r.slice(0, 100)}'`,
            path,
          );
        return;
      }
      const targets = type.targetProfiles;
      if (targets.length && !targets.some((t) => t.endsWith('/Resource'))) {
        const allowed = targets.map((t) => this.structures.get(t)?.type ?? t.slice(t.lastIndexOf('/') + 1));
        if (!allowed.includes(refType))
          run.add(
            'error',
            'structure',
            `The type '${refType}' implied by the reference URL ${r.slice(0, 100)} is not a valid Target for this element (must be one of [${allowed.join(', ')}])`,
            path,
          );
      }
      if (typeof ref.type === 'string' && ref.type !== refType && this.isResourceType(ref.type))
        run.add(
          'error',
          'structure',
          `The reference type '${ref.type}' does not match the type in the reference URL '${refType}'`,
          path,
        );
      return;
    }
    if (/^(urn:uuid:|urn:oid:|https?:\/\/|[a-z][a-z0-9+.-]*:)/i.test(r)) return;
    if (/\s/.test(r) || r === '')
      run.add('error', 'invalid', `The reference '${r.slice(0, 100)}' is not a valid reference`, path);
  }

  private checkCoding(coding: Json, path: string, run: Run): void {
    if (typeof coding.system !== 'string' || typeof coding.code !== 'string') return;
    const { result, display } = this.terminology.codeInSystem(coding.system, coding.code);
    if (result === 'no') {
      run.add(
        this.unknownCodeSeverity,
        'code-invalid',
        `Unknown code '${coding.code.slice(0, 100)}' in the CodeSystem '${coding.system}'`,
        `${path}.code`,
      );
      return;
    }
    if (
      result === 'yes' &&
      typeof coding.display === 'string' &&
      display &&
      normalise(display) !== normalise(coding.display)
    ) {
      const designations = (
        this.terminology.codeSystemIndex(coding.system)?.get(coding.code)?.designation ?? []
      ).map((d: Json) => normalise(String(d?.value ?? '')));
      if (!designations.includes(normalise(coding.display)))
        run.add(
          'warning',
          'invalid',
          `Wrong Display Name '${coding.display.slice(0, 100)}' for ${coding.system}#${coding.code}. Valid display is '${display}'`,
          `${path}.display`,
        );
    }
  }

  private checkBinding(
    node: ElementNode,
    codings: Json[] | undefined,
    code: string | undefined,
    path: string,
    run: Run,
  ): void {
    const b = node.binding!;
    if (
      !b.valueSet ||
      (b.strength !== 'required' && b.strength !== 'extensible' && b.strength !== 'preferred')
    )
      return;
    const vsUrl = b.valueSet.split('|')[0];
    if (code !== undefined) {
      const m = this.terminology.member(vsUrl, undefined, code);
      if (m === 'no')
        this.bindingIssue(
          b.strength,
          `The value provided ('${code.slice(0, 100)}') is not in the value set '${vsUrl}'`,
          path,
          run,
        );
      return;
    }
    const valid = (codings ?? []).filter((c) => c && typeof c === 'object' && typeof c.code === 'string');
    if (!valid.length) return;
    let unknown = false;
    for (const c of valid) {
      const m = this.terminology.member(vsUrl, typeof c.system === 'string' ? c.system : undefined, c.code);
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
              .filter((x) => typeof x === 'string' && !this.terminology.knowsSystem(x)),
          ),
        ];
        run.add(
          'information',
          'not-found',
          systems.length
            ? `A definition for CodeSystem ${systems.map((x) => `'${x}'`).join(', ')} could not be found, so the code cannot be validated against '${vsUrl}'`
            : `The value set '${vsUrl}' cannot be expanded here, so the code cannot be validated`,
          path,
        );
      }
      return;
    }
    this.bindingIssue(b.strength, `None of the codings provided are in the value set '${vsUrl}'`, path, run);
  }

  private bindingIssue(strength: string, message: string, path: string, run: Run): void {
    run.add(strength === 'required' ? 'error' : 'warning', 'code-invalid', message, path);
  }

  compiled(url: string): CompiledStructure | undefined {
    return this.structures.get(url);
  }
}

/** `exists`: present when the slice requires it, absent when it forbids it. */
function existsDiscriminatorMatches(target: ElementNode, values: Json[]): boolean {
  const exists = values.length > 0;
  if (target.min >= 1 && !exists) return false;
  if (target.max === 0 && exists) return false;
  return true;
}

/** `type`: a value's resource type (or, at `$this`, the element's own type) is one the slice allows. */
function typeDiscriminatorMatches(
  element: ElementNode,
  values: Json[],
  segments: string[],
  type: TypeRef | undefined,
): boolean {
  const want = element.types.map((t) => t.code);
  if (!want.length) return false;
  const actual = values.map((v) =>
    v && typeof v === 'object' && typeof v.resourceType === 'string' ? v.resourceType : undefined,
  );
  if (actual.some((a) => a && want.includes(a))) return true;
  return segments.length === 0 && type !== undefined && want.includes(type.code);
}

function normalise(s: string): string {
  return s.trim().replace(/\s+/g, ' ').toLowerCase();
}

/** minValue[x]/maxValue[x] of an element (numbers, dates and Quantities with the same unit). */
/** fixed[x] (exactly this value) and pattern[x] (at least these parts) of a complex element. */
function checkFixedAndPattern(node: ElementNode, value: Json, path: string, run: Run): void {
  if (node.fixed !== undefined && !deepEqual(node.fixed, value))
    run.add(
      'error',
      'value',
      `Value does not match the fixed value ${JSON.stringify(node.fixed).slice(0, 200)}`,
      path,
    );
  if (node.pattern !== undefined && !patternMatches(node.pattern, value))
    run.add(
      'error',
      'value',
      `Value does not match the required pattern ${JSON.stringify(node.pattern).slice(0, 200)}`,
      path,
    );
}

function checkMinMax(node: ElementNode, value: Json, path: string, run: Run): void {
  for (const bound of ['minValue', 'maxValue'] as const) {
    const limit: Json = node[bound];
    if (limit === undefined) continue;
    let cmp: number | undefined;
    let shown: string;
    if (typeof value === 'number' && typeof limit === 'number') {
      cmp = value - limit;
      shown = String(limit);
    } else if (
      typeof value === 'string' &&
      limit &&
      typeof limit === 'object' &&
      typeof limit.value === 'number' &&
      /^\d{4}/.test(value)
    ) {
      // minValueDuration/maxValueDuration on a date: relative to now (min: not further in the past, max: not further ahead).
      const ms = durationMs(limit.value, String(limit.code ?? limit.unit ?? ''));
      const t = Date.parse(
        value.length === 4 ? `${value}-01-01` : value.length === 7 ? `${value}-01` : value,
      );
      if (ms === undefined || Number.isNaN(t)) continue;
      const boundary = bound === 'minValue' ? Date.now() - ms : Date.now() + ms;
      cmp = t - boundary;
      shown = `${limit.value} ${limit.code ?? limit.unit}`;
    } else if (typeof value === 'string' && typeof limit === 'string') {
      cmp = value < limit ? -1 : value > limit ? 1 : 0;
      shown = limit;
    } else if (
      value &&
      typeof value === 'object' &&
      limit &&
      typeof limit === 'object' &&
      typeof value.value === 'number' &&
      typeof limit.value === 'number'
    ) {
      if ((limit.code ?? limit.unit) !== (value.code ?? value.unit) && limit.code !== undefined) continue;
      cmp = value.value - limit.value;
      shown = String(limit.value);
    } else continue;
    const actual = typeof value === 'object' ? value.value : value;
    if (bound === 'minValue' && cmp < 0)
      run.add(
        'error',
        'invalid',
        `The value in the instance ({${actual}}) is less than the specified minimum value ({${shown}})`,
        path,
      );
    if (bound === 'maxValue' && cmp > 0)
      run.add(
        'error',
        'invalid',
        `The value in the instance ({${actual}}) is greater than the specified maximum value ({${shown}})`,
        path,
      );
  }
}

function durationMs(value: number, unit: string): number | undefined {
  const perUnit: Record<string, number> = {
    a: 365.25 * 864e5,
    mo: 30.4375 * 864e5,
    wk: 7 * 864e5,
    d: 864e5,
    h: 36e5,
    min: 6e4,
    s: 1e3,
    ms: 1,
  };
  const u =
    perUnit[unit] ??
    perUnit[
      { year: 'a', years: 'a', month: 'mo', months: 'mo', week: 'wk', weeks: 'wk', day: 'd', days: 'd' }[
        unit
      ] ?? ''
    ];
  return u === undefined ? undefined : value * u;
}

function checkAttachment(att: Json, path: string, run: Run): void {
  if (typeof att.data === 'string' && typeof att.size === 'number') {
    const clean = att.data.replace(/\s/g, '');
    const pad = clean.endsWith('==') ? 2 : clean.endsWith('=') ? 1 : 0;
    const actual = Math.floor((clean.length * 3) / 4) - pad;
    if (actual !== att.size)
      run.add(
        'error',
        'structure',
        `Stated Attachment Size ${att.size} does not match actual attachment size ${actual}`,
        path,
      );
  }
}

/** Values at a simple discriminator path (`code.coding`, `url`, `extension('x').value`, `ofType(T)`). */
function navigate(values: Json[], segments: string[]): Json[] {
  let cur = values;
  for (const seg of segments) {
    const next: Json[] = [];
    const ext = /^extension\('(.*)'\)$/.exec(seg);
    for (const v of cur) {
      if (!v || typeof v !== 'object') continue;
      if (ext) {
        for (const e of Array.isArray(v.extension) ? v.extension : []) if (e?.url === ext[1]) next.push(e);
        continue;
      }
      if (seg === 'resolve()') continue;
      const ofType = /^(\w+)?\.?ofType\((\w+)\)$/.exec(seg);
      if (ofType) {
        const key = (ofType[1] ?? '') + upperFirst(ofType[2]);
        if (v[key] !== undefined) next.push(v[key]);
        continue;
      }
      let x = v[seg];
      if (x === undefined) {
        // choice element: value -> valueX
        for (const k in v) if (k.startsWith(seg) && /^[A-Z]/.test(k.slice(seg.length))) x = v[k];
      }
      if (Array.isArray(x)) next.push(...x.filter((y) => y !== null && y !== undefined));
      else if (x !== undefined && x !== null) next.push(x);
    }
    cur = next;
  }
  return cur;
}

export function deepEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== typeof b || a === null || b === null || typeof a !== 'object') return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  if (Array.isArray(a)) {
    const bb = b as unknown[];
    return a.length === bb.length && a.every((x, i) => deepEqual(x, bb[i]));
  }
  const ka = Object.keys(a as object);
  const kb = Object.keys(b as object);
  return ka.length === kb.length && ka.every((k) => deepEqual((a as Json)[k], (b as Json)[k]));
}

/** FHIR pattern matching: every property of the pattern appears in the value (arrays: each pattern item matches some item). */
export function patternMatches(pattern: unknown, value: unknown): boolean {
  if (pattern === value) return true;
  if (pattern === null || typeof pattern !== 'object') return pattern === value;
  if (value === null || typeof value !== 'object') return false;
  if (Array.isArray(pattern)) {
    const arr = Array.isArray(value) ? value : [value];
    return pattern.every((p) => arr.some((v) => patternMatches(p, v)));
  }
  if (Array.isArray(value)) return value.some((v) => patternMatches(pattern, v));
  for (const k in pattern as Json)
    if (!patternMatches((pattern as Json)[k], (value as Json)[k])) return false;
  return true;
}
