/**
 * The StructureDefinition-driven walker: follows a resource's JSON and the compiled snapshot of its type (and of
 * each claimed profile) together, reporting cardinality, types, primitive formats, unknown and empty properties,
 * fixed/pattern values, slicing, extensions, references, bindings, narrative safety and invariants, each as an
 * OperationOutcome issue with a FHIRPath `expression` (array indexes included, choice types as `.ofType(T)`).
 * This file is the traversal; each rule family has its own file around the walk context (walk-context.ts).
 */
import { resolveNarrativeLinks } from './xhtml.js';
import type { DefinitionRegistry } from '../definitions/definition-registry.js';
import { isJsonObject, type JsonObject } from '../definitions/json.js';
import { StructureCache, type CompiledStructure, type ElementNode, type TypeRef } from './structure.js';
import { isPrimitiveType } from './primitives.js';
import { Terminology } from './terminology.js';
import { elementPath, type Frame, MAX_DEPTH, Run, upperFirst, type WalkContext } from './walk-context.js';
import { checkResourceRules, walkProfiles } from './resource-rules.js';
import { checkCardinality } from './cardinality.js';
import { checkConstraints } from './constraints.js';
import { checkChoiceSlices, checkSlices } from './slicing.js';
import { checkDataType, checkPrimitiveValue } from './data-types.js';
import { checkFixedAndPattern } from './fixed-values.js';
import { walkExtension } from './extensions.js';
import { resourceProfiles } from './resource-rules.js';

export { Run } from './walk-context.js';
export { deepEqual, patternMatches } from './fixed-values.js';

export class StructureWalker implements WalkContext {
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
  /** URL prefixes under which unknown extensions are accepted without an issue. */
  allowedExtensionDomains: string[] = [];
  /**
   * R4 requires Observations with the vital-sign LOINC codes to conform to the matching core profile
   * (http://hl7.org/fhir/R4/observation-vitalsigns.html); on by default.
   */
  vitalSigns = true;

  /** Validate contained resources (and dom-3). Off only to mirror a reference-validator setting. */
  validateContained = true;

  /** A plain string carrying HTML tags is an error (security checks) rather than information. */
  securityChecks = false;

  /** Severity of HTML tags in markdown ('warning' by default, as the reference validator's -html-in-markdown). */
  htmlInMarkdown: 'ignore' | 'warning' | 'error' = 'warning';

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
    if (!isJsonObject(resource)) {
      run.add('fatal', 'structure', 'The content is not a JSON object', '$this', 'resource');
      return run;
    }
    const rt = resource.resourceType;
    this.walkResource(resource, typeof rt === 'string' ? rt : 'Resource', undefined, run, profiles);
    resolveNarrativeLinks(run);
    return run;
  }

  // ---------------------------------------------------------------- resources

  walkResource(
    res: unknown,
    path: string,
    container: JsonObject | undefined,
    run: Run,
    extraProfiles: string[] = [],
  ): void {
    if (!isJsonObject(res)) {
      run.add('error', 'structure', 'A resource must be a JSON object', path, 'resource');
      return;
    }
    const rt = res.resourceType;
    if (typeof rt !== 'string') {
      run.add('error', 'structure', 'Unable to find resourceType property', path, 'resource');
      return;
    }
    if (!this.isResourceType(rt)) {
      run.add('error', 'structure', `Unknown resource type '${String(rt).slice(0, 64)}'`, path, 'resource');
      return;
    }
    const s = this.structures.type(rt)!;
    const frame: Frame = { resource: res, rootResource: container ?? res };
    this.walkObject(res, s.root, s.root, rt, path, run, frame, true);
    checkResourceRules(this, res, rt, path, run);
    walkProfiles(this, res, rt, s.url, path, run, frame, extraProfiles);
  }

  // ---------------------------------------------------------------- elements

  /** The element that carries the children of `node` for a value of type `type`. */
  childOwner(node: ElementNode, type: TypeRef | undefined): ElementNode | undefined {
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
    obj: unknown,
    node: ElementNode,
    owner: ElementNode | undefined,
    typeName: string,
    path: string,
    run: Run,
    frame: Frame,
    isResourceRoot = false,
  ): void {
    if (run.depth >= MAX_DEPTH) {
      run.add(
        'error',
        'too-costly',
        `The content is nested more than ${MAX_DEPTH} levels deep`,
        path,
        'resource',
      );
      return;
    }
    if (!isJsonObject(obj)) {
      run.add(
        'error',
        'structure',
        `The property must be a JSON object, not ${obj === null ? 'null' : Array.isArray(obj) ? 'an array' : typeof obj}`,
        path,
        'structure',
      );
      return;
    }
    if (!owner) return;
    run.depth++;
    run.containers.push({
      obj,
      elementPath: node.path,
      basePath: node.raw.base?.path,
      ownerPath: owner.path,
      typeName,
      path,
    });
    try {
      const keyCount = this.walkProperties(obj, owner, path, run, frame, isResourceRoot);
      if (keyCount === 0 || (keyCount === 1 && obj.id !== undefined && !isResourceRoot)) {
        run.add('error', 'invalid', 'Object must have some content (ele-1)', path, 'structure');
      }
      checkCardinality(this, obj, owner, path, run);
      checkConstraints(this, obj, node, owner, typeName, path, run, frame, isResourceRoot);
    } finally {
      run.depth--;
      run.containers.pop();
    }
  }

  /** Every property of an object against the element it names; returns how many properties there are. */
  private walkProperties(
    obj: JsonObject,
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
          run.add('error', 'structure', `Unrecognized property '${key.slice(0, 100)}'`, path, 'structure');
          continue;
        }
        this.walkPrimitiveExtras(
          obj,
          key,
          value,
          entry.node,
          entry.type,
          elementPath(path, entry.node, entry.type),
          run,
          frame,
        );
        continue;
      }
      const entry = props.get(key);
      if (!entry) {
        run.add('error', 'structure', `Unrecognized property '${key.slice(0, 100)}'`, path, 'structure');
        continue;
      }
      this.walkProperty(obj, key, value, entry, path, run, frame);
    }
    return keyCount;
  }

  /** One (non-`_`) property: null, array or single value as its element's cardinality allows, then its slices. */
  private walkProperty(
    obj: JsonObject,
    key: string,
    value: unknown,
    entry: { node: ElementNode; type?: TypeRef },
    path: string,
    run: Run,
    frame: Frame,
  ): void {
    const child = entry.node;
    const childPath = elementPath(path, child, entry.type);
    if (value === null) {
      run.add('error', 'invalid', 'A property cannot be null', childPath, 'structure');
      return;
    }
    if (child.isArray) {
      if (!Array.isArray(value)) {
        run.add(
          'error',
          'structure',
          `This property must be an Array, not ${typeof value === 'object' ? 'an Object' : 'a primitive'}`,
          childPath,
          'structure',
        );
        return;
      }
      if (value.length === 0) {
        run.add(
          'error',
          'invalid',
          'Array cannot be empty - the property should not be present if it has no values',
          childPath,
          'structure',
        );
        return;
      }
      const primitive = entry.type && isPrimitiveType(entry.type.code);
      const extras = primitive ? obj['_' + key] : undefined;
      for (let i = 0; i < value.length; i++) {
        const item = value[i];
        if (item === null) {
          if (!(primitive && Array.isArray(extras) && extras[i]))
            run.add(
              'error',
              'invalid',
              'Null values are not allowed in arrays',
              `${childPath}[${i}]`,
              'structure',
            );
          continue;
        }
        this.walkValue(item, child, entry.type, `${childPath}[${i}]`, run, frame);
      }
      if (child.slicing && child.slices.length)
        checkSlices(this, value, child, entry.type, childPath, path, run, frame);
    } else {
      if (Array.isArray(value)) {
        run.add(
          'error',
          'structure',
          'This property must be a single value, not an Array',
          childPath,
          'structure',
        );
        return;
      }
      this.walkValue(value, child, entry.type, childPath, run, frame);
      if (child.slices.length && child.choice)
        checkChoiceSlices(this, value, child, entry.type, childPath, run, frame);
    }
  }

  /** `_name`: the id and extensions of a primitive (an array parallel to the values for repeating elements). */
  private walkPrimitiveExtras(
    obj: JsonObject,
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
      if (!isJsonObject(v)) {
        run.add('error', 'structure', `The property ${key} must be a JSON object`, p, 'structure');
        return;
      }
      if ('value' in v) {
        run.add('error', 'structure', `Unrecognized property 'value'`, p, 'structure');
        return;
      }
      this.walkObject(v, node, owner, type.code, p, run, frame);
    };
    if (node.isArray) {
      const values = obj[key.slice(1)];
      if (!Array.isArray(value)) {
        run.add('error', 'structure', `The property ${key} must be an Array`, path, 'structure');
        return;
      }
      if (Array.isArray(values) && values.length !== value.length)
        run.add(
          'error',
          'structure',
          `The arrays ${key.slice(1)} and ${key} must have the same length`,
          path,
          'structure',
        );
      value.forEach((v, i) => one(v, `${path}[${i}]`));
    } else one(value, path);
  }

  /** Validates one value (not an array) of an element of a given type. */
  walkValue(
    value: unknown,
    node: ElementNode,
    type: TypeRef | undefined,
    path: string,
    run: Run,
    frame: Frame,
  ): void {
    // R4 snapshots type Resource.id as System.String (fhir-type 'string'); the specification says `id`.
    const code = node.raw.base?.path === 'Resource.id' ? 'id' : type?.code;
    if (code && isPrimitiveType(code)) {
      checkPrimitiveValue(this, code, value, node, path, run);
      return;
    }
    if (code === 'Resource' || (code !== undefined && this.isResourceType(code))) {
      if (!this.validateContained && /\.contained\[\d+\]$/.test(path)) return;
      const container =
        path.includes('.contained[') || path.endsWith('.contained') ? frame.rootResource : undefined;
      this.walkResource(
        value,
        path,
        container,
        run,
        resourceProfiles(this, value, type, path, container, run),
      );
      return;
    }
    if (code === 'Extension') {
      walkExtension(this, value, node, type!, path, run, frame);
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
    if (!isJsonObject(value)) return;
    checkFixedAndPattern(node, value, path, run);
    checkDataType(this, code, value, node, type, path, run, frame);
  }

  compiled(url: string): CompiledStructure | undefined {
    return this.structures.get(url);
  }
}
