/** Extensions: the definition of an extension's url (as extension or modifier), ext-1, and the walk of its content. */
import { isJsonObject } from '../definitions/json.js';
import type { ElementNode, TypeRef } from './structure.js';
import type { Frame, Run, WalkContext } from './walk-context.js';

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
    run.add('error', 'structure', 'An extension must be a JSON object', path);
    return;
  }
  const owner = extensionDefinition(w, ext.url, type, path, run);
  const hasValue = Object.keys(ext).some((k) => k.startsWith('value'));
  const hasExtensions = Array.isArray(ext.extension) && ext.extension.length > 0;
  if (hasValue === hasExtensions)
    run.add(
      'error',
      'invariant',
      "Constraint failed: ext-1: 'Must have either extensions or value[x], not both'",
      path,
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
    run.add('error', 'structure', 'Extension.url is required', path);
  } else if (!url.includes(':') && !url.startsWith('#')) {
    // A relative url is a sub-extension of a complex extension; the parent's definition covers it.
  } else {
    const profile = type.profiles[0];
    const ps = w.structures.get(url) ?? (profile ? w.structures.get(profile) : undefined);
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
    } else if (CROSS_VERSION_EXTENSION.test(url)) {
      // Implicitly defined by the element of the other version (R4 versions.html#extensions); their definitions
      // (value types, modifier status) live in that version's package, which is not loaded here, so they are
      // accepted as the reference validator accepts them and their content is checked as a plain Extension.
    } else {
      // As the reference validator: example domains are never real extensions.
      const example =
        !w.allowExampleUrls && /^https?:\/\/([\w-]+\.)*(example\.(org|com)|acme\.(com|org))(\/|$)/.test(url);
      const severity = usedAsModifier || example ? 'error' : w.unknownExtensionSeverity;
      run.add(severity, 'structure', `The extension ${url} could not be found so is not allowed here`, path);
      if (example)
        run.add('error', 'invalid', `Example URLs are not allowed in this context (${url})`, `${path}.url`);
    }
  }
  return owner;
}
