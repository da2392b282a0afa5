/** Extensions: the definition of an extension's url (as extension or modifier), ext-1, and the walk of its content. */
import type { StructureDefinition } from 'fhir/r4.js';
import { isJsonObject, type JsonObject } from '../definitions/json.js';
import { evaluateWithFhirPath, evaluateExpression } from './invariants.js';
import { isPrimitiveType } from './primitives.js';
import type { ElementNode, TypeRef } from './structure.js';
import {
  settingsOf,
  type Container,
  type Frame,
  type Run,
  type RunSettings,
  type WalkContext,
} from './walk-context.js';

export function walkExtension(
  w: WalkContext,
  ext: unknown,
  node: ElementNode,
  type: TypeRef,
  path: string,
  run: Run,
  frame: Frame,
): void {
  if (!isJsonObject(ext)) {
    run.add('error', 'structure', 'An extension must be a JSON object', path, 'extensions');
    return;
  }
  const owner = extensionDefinition(w, ext.url, type, path, run);
  if (owner) checkExtensionContext(w, ext, path, run, frame);
  const hasValue = Object.keys(ext).some((k) => k.startsWith('value'));
  const hasExtensions = Array.isArray(ext.extension) && ext.extension.length > 0;
  if (hasValue === hasExtensions)
    run.add(
      'error',
      'invariant',
      "Constraint failed: ext-1: 'Must have either extensions or value[x], not both'",
      path,
      'extensions',
    );
  if (owner) w.walkObject(ext, owner, owner, 'Extension', path, run, frame);
  else {
    const base = w.structures.type('Extension')!.root;
    w.walkObject(
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

/**
 * R4 versions.html#extensions, "Representing elements from other versions": an element of another FHIR version is
 * carried in the extension `http://hl7.org/fhir/[version]/StructureDefinition/extension-[Path]`, with [version]
 * the major.minor of that version (1.0 DSTU2, 3.0 STU3, 4.3 R4B, 5.0 R5...) and [Path] the element's path there.
 */
const CROSS_VERSION_EXTENSION =
  /^http:\/\/hl7\.org\/fhir\/\d+\.\d+\/StructureDefinition\/extension-[A-Z][A-Za-z]+(\.[a-z][A-Za-z0-9]*(\[x\])?)*$/;

/** The definition of an extension's url (checked as extension or modifier), or undefined when it has none. */
export function extensionDefinition(
  w: WalkContext,
  url: unknown,
  type: TypeRef,
  path: string,
  run: Run,
): ElementNode | undefined {
  let owner: ElementNode | undefined;
  if (typeof url !== 'string' || url === '') {
    run.add('error', 'structure', 'Extension.url is required', path, 'extensions');
  } else if (!url.includes(':') && !url.startsWith('#')) {
    // A relative url is a sub-extension of a complex extension; the parent's definition covers it.
  } else {
    const profile = type.profiles[0];
    const ps = w.structures.get(url) ?? (profile ? w.structures.get(profile) : undefined);
    const usedAsModifier = /\.modifierExtension(\[\d+\])?$/.test(path);
    if (ps && ps.type === 'Extension') {
      owner = ps.root;
      const isModifier = !!ps.root.isModifier;
      // Located at the extension qualified by its url, as the reference validator locates its modifier rules.
      if (isModifier !== usedAsModifier)
        run.add(
          'error',
          'structure',
          `The Extension '${url}' must not be used as ${usedAsModifier ? 'a modifierExtension' : 'an extension'} (it's ${isModifier ? 'a modifierExtension' : 'a regular extension'})`,
          `${path}[url='${url}']`,
          'extensions',
        );
    } else if (CROSS_VERSION_EXTENSION.test(url)) {
      // Implicitly defined by the element of the other version (R4 versions.html#extensions); their definitions
      // (value types, modifier status) live in that version's package, which is not loaded here, so they are
      // accepted as the reference validator accepts them and their content is checked as a plain Extension.
    } else if (!usedAsModifier && unknownExtensionAllowed(settingsOf(w, run), url)) {
      // Accepted without a definition, as the reference validator accepts them (see unknownExtensionAllowed).
    } else if (!usedAsModifier && url.startsWith(HL7_EXTENSION_BASE)) {
      // HL7's own extensions published after R4 live in the HL7 extensions package (hl7.fhir.uv.extensions), which
      // the reference validator loads with every version; it is not loaded here, so such an extension is not
      // checked rather than unknown.
      run.add(
        'warning',
        'not-supported',
        `The extension ${url} is not defined in FHIR R4 and the HL7 extensions package is not loaded: not checked`,
        path,
        'extensions',
      );
    } else {
      // As the reference validator: example domains are never real extensions.
      const settings = settingsOf(w, run);
      const example = !settings.allowExampleUrls && EXAMPLE_DOMAIN.test(url);
      const severity = usedAsModifier || example ? 'error' : settings.unknownExtensionSeverity;
      run.add(
        severity,
        'structure',
        `The extension ${url} could not be found so is not allowed here`,
        path,
        'extensions',
      );
      if (example)
        run.add(
          'error',
          'invalid',
          `Example URLs are not allowed in this context (${url})`,
          `${path}.url`,
          'extensions',
        );
    }
  }
  return owner;
}

const HL7_EXTENSION_BASE = 'http://hl7.org/fhir/StructureDefinition/';

const EXAMPLE_DOMAIN = /^https?:\/\/([\w-]+\.)*(example\.(org|com)|acme\.(com|org))(\/|$)/;

/**
 * Extensions without a definition that are accepted as they are (the reference validator's allowUnknownExtension):
 * the example domains where examples are allowed, DICOM (nema.org), the FHIR tooling extensions, and the extension
 * domains the deployment allows (`allowedExtensionDomains`, the reference validator's `-extension` domains).
 */
function unknownExtensionAllowed(settings: RunSettings, url: string): boolean {
  if (settings.allowExampleUrls && EXAMPLE_DOMAIN.test(url)) return true;
  if (/^https?:\/\/([\w-]+\.)*nema\.org(\/|$)/.test(url)) return true;
  if (url.startsWith('http://hl7.org/fhir/tools/StructureDefinition/')) return true;
  return settings.allowedExtensionDomains.some((d) => d !== '' && url.startsWith(d));
}

/** The types a type is derived from, itself first (`Patient`, `DomainResource`, `Resource`), per walker. */
const ancestorsOf = new WeakMap<WalkContext, Map<string, string[]>>();

function typeAncestors(w: WalkContext, type: string): string[] {
  let cache = ancestorsOf.get(w);
  if (!cache) ancestorsOf.set(w, (cache = new Map()));
  let out = cache.get(type);
  if (!out) {
    out = [];
    let sd = /^[A-Za-z]+$/.test(type) ? w.registry.typeDefinition(type) : undefined;
    while (sd && out.length < 10) {
      if (typeof sd.type === 'string' && !out.includes(sd.type)) out.push(sd.type);
      sd = sd.baseDefinition ? w.registry.structureDefinition(sd.baseDefinition) : undefined;
    }
    if (!out.length) out.push(type);
    if (cache.size < 1000) cache.set(type, out);
  }
  return out;
}

/**
 * Whether an `element` context (R4 StructureDefinition.context.expression: an element path such as `Patient` or
 * `Patient.contact`, or a data type name such as `HumanName` meaning anywhere that type is used) admits the
 * container: its element path or its type, each also as the types it derives from (`DomainResource.x` admits
 * `Patient.x`, `Quantity` admits `Age`). `Element` admits every element.
 */
function elementContextAdmits(w: WalkContext, expression: string, container: Container): boolean {
  // R5 form `profile#path`: the element part is what can be checked here.
  const en = expression.includes('#') ? expression.slice(expression.indexOf('#') + 1) : expression;
  if (en === 'Element' || en === 'Any') return true;
  for (const p of [container.elementPath, container.ownerPath, container.typeName, container.basePath]) {
    if (p === undefined) continue;
    if (p === en) return true;
    const dot = p.indexOf('.');
    const head = dot < 0 ? p : p.slice(0, dot);
    const tail = dot < 0 ? '' : p.slice(dot);
    for (const t of typeAncestors(w, head)) if (t + tail === en) return true;
  }
  return false;
}

/**
 * The context of use of an extension (R4 extensibility.html#context, StructureDefinition.context and
 * contextInvariant): the element holding the extension must be one the definition allows, and each context
 * invariant must hold on it. Reported as the reference validator does: an error at the element holding it.
 */
function checkExtensionContext(w: WalkContext, ext: JsonObject, path: string, run: Run, frame: Frame): void {
  const url = ext.url as string;
  const sd = w.registry.structureDefinition(url);
  const container = run.containers[run.containers.length - 1];
  if (!sd || !container || !Array.isArray(sd.context) || sd.context.length === 0) return;
  // Extensions are always allowed inside the example, fixed and pattern values of an ElementDefinition.
  if (run.containers.some((c) => /^ElementDefinition\.(example\.value|fixed|pattern)/.test(c.elementPath)))
    return;
  if (!contextsOf(sd).some((ctx) => contextAdmits(w, ctx, container, frame))) {
    const modifier = /\.modifierExtension(\[\d+\])?$/.test(path);
    const allowed = contextsOf(sd).map(
      (c) => `${c.type === 'element' ? 'e' : c.type === 'extension' ? 'x' : 'p'}:${c.expression}`,
    );
    run.add(
      'error',
      'structure',
      `The ${modifier ? 'modifier extension' : 'extension'} ${url} is not allowed to be used at this point (allowed = ${allowed.join(', ')}; this element is [${[...new Set([container.elementPath, container.typeName])].join(', ')}])`,
      container.path,
      'extensions',
    );
    return;
  }
  for (const invariant of sd.contextInvariant ?? []) {
    const base = /^[A-Z][A-Za-z]*$/.test(container.typeName)
      ? container.typeName
      : container.elementPath.replace(/\[x\]/g, '');
    const out = evaluateWithFhirPath(invariant, base, container.obj, {
      resource: frame.resource,
      rootResource: frame.rootResource,
      extension: ext,
    });
    if (!out.ok)
      run.add(
        'error',
        'structure',
        `The extension ${url} is not allowed to be used here: the context invariant '${invariant}' does not hold`,
        container.path,
        'extensions',
      );
  }
}

const ANYWHERE_IN_R4 = new Set([
  `${HL7_EXTENSION_BASE}structuredefinition-normative-version`,
  `${HL7_EXTENSION_BASE}capabilitystatement-expectation`,
  `${HL7_EXTENSION_BASE}capabilitystatement-prohibited`,
]);

type ExtensionContext = NonNullable<StructureDefinition['context']>[number];

/**
 * An extension's contexts, with the corrections the reference validator makes where R4's own definitions use an
 * extension outside its declared context: structuredefinition-fhir-type is declared for `ElementDefinition.type.code`
 * but R4's snapshots carry it on `ElementDefinition.type` (the FHIR type of Resource.id's System.String), and
 * structuredefinition-normative-version is declared for `StructureDefinition` but R4's CodeSystems, ValueSets and
 * ElementDefinitions carry it too (it marks any normative artefact); the capabilitystatement-expectation and
 * -prohibited extensions apply to more CapabilityStatement parts than R4 lists (R5 widened their contexts).
 */
function contextsOf(sd: StructureDefinition): ExtensionContext[] {
  const contexts = sd.context ?? [];
  if (sd.url === `${HL7_EXTENSION_BASE}structuredefinition-fhir-type`)
    return [...contexts, { type: 'element', expression: 'ElementDefinition.type' }];
  if (ANYWHERE_IN_R4.has(sd.url)) return [...contexts, { type: 'element', expression: 'Element' }];
  return contexts;
}

function contextAdmits(w: WalkContext, ctx: ExtensionContext, container: Container, frame: Frame): boolean {
  if (typeof ctx.expression !== 'string') return true;
  if (ctx.type === 'element') return elementContextAdmits(w, ctx.expression, container);
  if (ctx.type === 'extension')
    return container.typeName === 'Extension' && container.obj.url === ctx.expression;
  if (ctx.type === 'fhirpath') {
    // The context is every element the expression selects from the resource. A primitive's `_name` object is not
    // what FHIRPath returns, and an expression that cannot be evaluated here decides nothing: both are accepted.
    if (isPrimitiveType(container.typeName)) return true;
    const selected = evaluateExpression(ctx.expression, frame.resource, {
      resource: frame.resource,
      rootResource: frame.rootResource,
    });
    return selected === undefined || selected.includes(container.obj);
  }
  return true;
}
