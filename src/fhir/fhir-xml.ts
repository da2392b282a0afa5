/**
 * FHIR R4 XML <-> FHIR JSON (http://hl7.org/fhir/R4/xml.html), driven by the R4 StructureDefinitions:
 * - element order is the snapshot's order; `resourceType` is the element name of a resource, in the FHIR namespace;
 *   contained resources, Bundle entries and Parameters resources are wrapped in their element;
 * - primitives carry `value` (and `id`) attributes, their extensions are child elements (JSON's `_name`);
 *   elements marked `xmlAttr` (Element.id, Extension.url) are attributes;
 * - Narrative.div is XHTML in the XHTML namespace, kept as its exact text (JSON holds it as a string);
 * - numbers keep their written form both ways (`1.50` stays `1.50`), so an XML write hashes as its JSON twin.
 *
 * Not the npm `fhir` package: it reads JSON with JSON.parse and writes `1.50` as `1.5` (checked with fhir@4.12.0).
 * The XML parser is saxes (non-validating, never fetches anything); a DOCTYPE is refused outright, so no entity can
 * be declared, let alone expanded (XML bombs, external entities), and nesting is capped before anything recurses.
 */
import { SaxesParser, type SaxesTagNS } from 'saxes';
import type { ElementDefinition, StructureDefinition } from 'fhir/r4.js';
import { LosslessNumber, isLosslessNumber, MAX_JSON_DEPTH, stringifyFhirJson } from './fhir-json.js';
import { FhirError, fhirError } from './outcome.js';

export const FHIR_NS = 'http://hl7.org/fhir';
export const XHTML_NS = 'http://www.w3.org/1999/xhtml';
/** Deepest element nesting accepted from a client (the JSON limit: an XML level is at most one JSON level). */
export const MAX_XML_DEPTH = MAX_JSON_DEPTH;

/** The StructureDefinition (with snapshot) of a type or resource name, e.g. `Patient`, `string`. */
export type TypeDefinitions = (type: string) => StructureDefinition | undefined;

const FHIR_TYPE_EXTENSION = 'http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type';
const NUMBER_TYPES = new Set(['integer', 'positiveInt', 'unsignedInt', 'decimal']);
const JSON_NUMBER = /^-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?$/;
/** Characters XML 1.0 can carry (§2.2). */
// eslint-disable-next-line no-control-regex
const NOT_XML_CHAR = /[^\x09\x0A\x0D\x20-\uD7FF\uE000-\uFFFD\u{10000}-\u{10FFFF}]/u;

type Kind = 'primitive' | 'complex' | 'resource' | 'xhtml';

interface ChildElement {
  /** The JSON/XML name, without `[x]`. */
  name: string;
  choice: boolean;
  /** Type codes (FHIR names, System.* mapped back), in definition order. */
  types: string[];
  many: boolean;
  /** Represented as an XML attribute (Element.id, Extension.url). */
  attribute: boolean;
  /** Position in the definition: XML order. */
  order: number;
  /** Inline children (BackboneElement) or a contentReference: the model of this element's content. */
  inline?: () => ComplexModel;
}

interface ComplexModel {
  byName: Map<string, ChildElement>;
  choices: ChildElement[];
}

/** A child element in JSON or XML, resolved: its definition and concrete type. */
interface Resolved {
  element: ChildElement;
  type: string;
  kind: Kind;
}

function capitalised(type: string): string {
  return type.charAt(0).toUpperCase() + type.slice(1);
}

function typeCodeOf(type: NonNullable<ElementDefinition['type']>[number]): string {
  if (!type.code.startsWith('http://hl7.org/fhirpath/System.')) return type.code;
  const fhirType = type.extension?.find((e) => e.url === FHIR_TYPE_EXTENSION)?.valueUrl;
  return fhirType ?? type.code.slice('http://hl7.org/fhirpath/System.'.length).toLowerCase();
}

/** The R4 element model, built from the StructureDefinitions on first use of each type. */
class ElementModels {
  private readonly models = new Map<string, ComplexModel>();
  private readonly kinds = new Map<string, Kind | undefined>();

  constructor(private readonly definitions: TypeDefinitions) {}

  kindOf(type: string): Kind | undefined {
    if (this.kinds.has(type)) return this.kinds.get(type);
    let kind: Kind | undefined;
    if (type === 'xhtml') kind = 'xhtml';
    else if (type === 'Resource') kind = 'resource';
    else {
      const sd = this.definitions(type);
      if (sd?.kind === 'primitive-type') kind = 'primitive';
      else if (sd?.kind === 'complex-type') kind = 'complex';
      else if (sd?.kind === 'resource' && !sd.abstract && sd.type === type) kind = 'resource';
    }
    this.kinds.set(type, kind);
    return kind;
  }

  isResourceType(type: string): boolean {
    return type !== 'Resource' && this.kindOf(type) === 'resource';
  }

  /** The model of a complex type or resource. */
  ofType(type: string): ComplexModel {
    const sd = this.definitions(type);
    if (!sd?.snapshot) throw new Error(`No StructureDefinition for ${type}`);
    return this.ofPath(sd, sd.type);
  }

  private ofPath(sd: StructureDefinition, path: string): ComplexModel {
    const key = `${sd.url}#${path}`;
    const known = this.models.get(key);
    if (known) return known;
    const elements = sd.snapshot!.element.filter((e) => !e.sliceName);
    const model: ComplexModel = { byName: new Map(), choices: [] };
    this.models.set(key, model);
    const prefix = `${path}.`;
    elements.forEach((element, order) => {
      if (!element.path.startsWith(prefix) || element.path.indexOf('.', prefix.length) >= 0) return;
      const last = element.path.slice(prefix.length);
      const choice = last.endsWith('[x]');
      const name = choice ? last.slice(0, -3) : last;
      const hasChildren = elements.some((e) => e.path.startsWith(`${element.path}.`));
      const reference = element.contentReference?.startsWith('#')
        ? element.contentReference.slice(1)
        : undefined;
      const child: ChildElement = {
        name,
        choice,
        types: (element.type ?? []).map(typeCodeOf),
        many: element.max !== '1' && element.max !== '0',
        attribute: element.representation?.includes('xmlAttr') ?? false,
        order,
        inline: reference
          ? () => this.ofPath(sd, reference)
          : hasChildren
            ? () => this.ofPath(sd, element.path)
            : undefined,
      };
      model.byName.set(name, child);
      if (choice) model.choices.push(child);
    });
    return model;
  }

  /** A JSON property or XML element name in a model: its definition and concrete type, or undefined. */
  resolve(model: ComplexModel, name: string): Resolved | undefined {
    const direct = model.byName.get(name);
    if (direct && !direct.choice) {
      if (direct.inline) return { element: direct, type: '', kind: 'complex' };
      const type = direct.types[0];
      const kind = type === undefined ? undefined : this.kindOf(type);
      return kind ? { element: direct, type, kind } : undefined;
    }
    for (const choice of model.choices) {
      if (!name.startsWith(choice.name)) continue;
      const suffix = name.slice(choice.name.length);
      const type = choice.types.find((t) => capitalised(t) === suffix);
      const kind = type === undefined ? undefined : this.kindOf(type);
      if (type !== undefined && kind) return { element: choice, type, kind };
    }
    return undefined;
  }

  contentOf(resolved: Resolved): ComplexModel {
    return resolved.element.inline ? resolved.element.inline() : this.ofType(resolved.type);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// JSON -> XML

type JsonObject = Record<string, unknown>;

function isObject(value: unknown): value is JsonObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value) && !isLosslessNumber(value);
}

function notRepresentable(detail: string): FhirError {
  return fhirError('format-not-acceptable', `This content cannot be written as FHIR XML: ${detail}`);
}

function checkXmlText(text: string, where: string): string {
  if (NOT_XML_CHAR.test(text)) throw notRepresentable(`${where} holds a character XML 1.0 cannot carry`);
  return text;
}

function escapeAttribute(text: string, where: string): string {
  return checkXmlText(text, where).replace(/[&<>"\t\n\r]/g, (c) =>
    c === '&'
      ? '&amp;'
      : c === '<'
        ? '&lt;'
        : c === '>'
          ? '&gt;'
          : c === '"'
            ? '&quot;'
            : `&#x${c.charCodeAt(0).toString(16).toUpperCase()};`,
  );
}

function primitiveText(value: unknown, where: string): string {
  if (typeof value === 'string') return value;
  if (typeof value === 'boolean') return value ? 'true' : 'false';
  if (typeof value === 'number') return String(value);
  if (isLosslessNumber(value)) return value.toString();
  throw notRepresentable(`${where} is not a primitive value`);
}

class XmlWriter {
  private readonly parts: string[] = [];

  constructor(
    private readonly models: ElementModels,
    private readonly pretty: boolean,
  ) {}

  text(): string {
    return this.parts.join('');
  }

  private line(depth: number, text: string): void {
    if (this.pretty) this.parts.push(depth > 0 || this.parts.length > 0 ? '\n' : '', '  '.repeat(depth));
    this.parts.push(text);
  }

  resource(resource: unknown, depth: number, where: string): void {
    if (!isObject(resource) || typeof resource.resourceType !== 'string')
      throw notRepresentable(`${where} is not a resource`);
    const type = resource.resourceType;
    if (!this.models.isResourceType(type)) throw notRepresentable(`${where}: unknown resource type ${type}`);
    const xmlns = depth === 0 ? ` xmlns="${FHIR_NS}"` : '';
    this.complex(this.models.ofType(type), resource, type, xmlns, depth, type, true);
  }

  /** One element of a complex type (or a resource when `attributes` carries the namespace). */
  private complex(
    model: ComplexModel,
    value: JsonObject,
    name: string,
    extraAttributes: string,
    depth: number,
    where: string,
    isResource = false,
  ): void {
    let attributes = extraAttributes;
    const children: { resolved: Resolved; key: string }[] = [];
    for (const key of Object.keys(value)) {
      if (isResource && key === 'resourceType') continue;
      if (value[key] === undefined) continue; // as JSON.stringify: an absent member
      const extras = key.startsWith('_');
      const base = extras ? key.slice(1) : key;
      const resolved = this.models.resolve(model, base);
      if (!resolved || (extras && resolved.kind !== 'primitive'))
        throw notRepresentable(`${where}.${key} is not an R4 element`);
      if (extras && base in value) continue; // written with `base`
      if (resolved.element.attribute) {
        attributes += ` ${base}="${escapeAttribute(primitiveText(value[key], `${where}.${key}`), `${where}.${key}`)}"`;
        continue;
      }
      children.push({ resolved, key: base });
    }
    children.sort((a, b) => a.resolved.element.order - b.resolved.element.order);
    if (children.length === 0) {
      this.line(depth, `<${name}${attributes}/>`);
      return;
    }
    this.line(depth, `<${name}${attributes}>`);
    for (const { resolved, key } of children)
      this.element(resolved, key, value, depth + 1, `${where}.${key}`);
    this.line(depth, `</${name}>`);
  }

  /** Every occurrence of one element (`key`, and `_key` for primitives) of `parent`. */
  private element(resolved: Resolved, key: string, parent: JsonObject, depth: number, where: string): void {
    const value = parent[key];
    if (resolved.kind === 'primitive') {
      const extras = parent[`_${key}`];
      if (resolved.element.many) {
        const values = value === undefined ? [] : value;
        const extrasList = extras === undefined ? [] : extras;
        if (!Array.isArray(values) || !Array.isArray(extrasList))
          throw notRepresentable(`${where} is not an array`);
        const count = Math.max(values.length, extrasList.length);
        for (let i = 0; i < count; i++)
          this.primitive(key, values[i] ?? null, extrasList[i] ?? null, depth, `${where}[${i}]`);
      } else this.primitive(key, value ?? null, extras ?? null, depth, where);
      return;
    }
    const items = resolved.element.many ? value : [value];
    if (!Array.isArray(items)) throw notRepresentable(`${where} is not an array`);
    items.forEach((item, i) => {
      const at = resolved.element.many ? `${where}[${i}]` : where;
      if (resolved.kind === 'xhtml') {
        if (typeof item !== 'string') throw notRepresentable(`${at} is not XHTML text`);
        this.line(depth, withXhtmlNamespace(checkXmlText(item, at)));
      } else if (resolved.kind === 'resource') {
        this.line(depth, `<${key}>`);
        this.resource(item, depth + 1, at);
        this.line(depth, `</${key}>`);
      } else {
        if (!isObject(item)) throw notRepresentable(`${at} is not an object`);
        this.complex(this.models.contentOf(resolved), item, key, '', depth, at);
      }
    });
  }

  private primitive(name: string, value: unknown, extras: unknown, depth: number, where: string): void {
    let attributes = '';
    let extensions: unknown[] = [];
    if (extras !== null) {
      if (!isObject(extras)) throw notRepresentable(`${where}: _${name} is not an object`);
      for (const key of Object.keys(extras)) {
        if (key === 'id') attributes += ` id="${escapeAttribute(primitiveText(extras.id, where), where)}"`;
        else if (key === 'extension' && Array.isArray(extras.extension)) extensions = extras.extension;
        else throw notRepresentable(`${where}: _${name}.${key} is not an R4 element`);
      }
    }
    if (value !== null) attributes += ` value="${escapeAttribute(primitiveText(value, where), where)}"`;
    if (extensions.length === 0) {
      this.line(depth, `<${name}${attributes}/>`);
      return;
    }
    this.line(depth, `<${name}${attributes}>`);
    const extension = this.models.ofType('Extension');
    extensions.forEach((item, i) => {
      if (!isObject(item)) throw notRepresentable(`${where}.extension[${i}] is not an object`);
      this.complex(extension, item, 'extension', '', depth + 1, `${where}.extension[${i}]`);
    });
    this.line(depth, `</${name}>`);
  }
}

/** The XHTML text of a Narrative.div, declaring the XHTML namespace when the JSON left it out. */
function withXhtmlNamespace(div: string): string {
  const open = /^\s*<div(\s[^>]*)?>|^\s*<div\s*\/>/.exec(div);
  if (!open) throw notRepresentable('a Narrative.div is not a <div> element');
  return /\sxmlns\s*=/.test(open[0]) ? div : div.replace(/<div/, `<div xmlns="${XHTML_NS}"`);
}

// ---------------------------------------------------------------------------------------------------------------
// XML -> JSON

interface XmlNode {
  name: string;
  uri: string;
  /** Attributes without a namespace (FHIR's own: value, id, url). */
  attributes: Map<string, string>;
  children: XmlNode[];
  /** Non-whitespace character data directly inside (never allowed in a FHIR element). */
  hasText: boolean;
  /** The exact source text of an XHTML element (Narrative.div). */
  raw?: string;
}

function notXml(detail: string): FhirError {
  return fhirError('body-not-xml', `The body is not FHIR XML: ${detail}`);
}

/** Parses XML text into element nodes; XHTML subtrees are kept as their source text. */
function parseXmlTree(text: string): XmlNode {
  const parser = new SaxesParser({ xmlns: true, position: true });
  const stack: XmlNode[] = [];
  let root: XmlNode | undefined;
  /** Depth inside an XHTML subtree (its elements are not built, only counted). */
  let xhtmlDepth = 0;
  let xhtmlStart = 0;
  let tagStart = 0;
  parser.on('doctype', () => {
    throw fhirError('xml-doctype-refused', 'The body has a DOCTYPE: FHIR XML declares no DTD or entities');
  });
  parser.on('xmldecl', (decl) => {
    if (decl.encoding !== undefined && !/^utf-?8$/i.test(decl.encoding))
      throw fhirError('media-type-unsupported', `encoding="${decl.encoding}": FHIR XML is read as UTF-8`);
  });
  parser.on('opentagstart', () => {
    tagStart = text.lastIndexOf('<', parser.position - 1);
  });
  parser.on('opentag', (tag: SaxesTagNS) => {
    if (stack.length + xhtmlDepth >= MAX_XML_DEPTH)
      throw notXml(`elements nest deeper than ${MAX_XML_DEPTH} levels`);
    if (xhtmlDepth > 0 || tag.uri === XHTML_NS) {
      if (xhtmlDepth === 0) xhtmlStart = tagStart;
      xhtmlDepth++;
      return;
    }
    const node: XmlNode = {
      name: tag.local,
      uri: tag.uri,
      attributes: new Map(),
      children: [],
      hasText: false,
    };
    for (const attribute of Object.values(tag.attributes))
      if (attribute.uri === '') node.attributes.set(attribute.local, attribute.value);
    if (stack.length > 0) stack[stack.length - 1].children.push(node);
    else if (root) throw notXml('more than one root element');
    else root = node;
    stack.push(node);
  });
  parser.on('closetag', () => {
    if (xhtmlDepth > 0) {
      xhtmlDepth--;
      if (xhtmlDepth === 0) {
        const node: XmlNode = {
          name: 'div',
          uri: XHTML_NS,
          attributes: new Map(),
          children: [],
          hasText: false,
          raw: text.slice(xhtmlStart, parser.position),
        };
        if (stack.length === 0) throw notXml('the root element is XHTML, not a FHIR resource');
        stack[stack.length - 1].children.push(node);
      }
      return;
    }
    stack.pop();
  });
  parser.on('text', (chars) => {
    if (xhtmlDepth === 0 && stack.length > 0 && /\S/.test(chars)) stack[stack.length - 1].hasText = true;
  });
  parser.on('cdata', () => {
    if (xhtmlDepth === 0 && stack.length > 0) stack[stack.length - 1].hasText = true;
  });
  try {
    parser.write(text).close();
  } catch (err) {
    if (err instanceof FhirError) throw err;
    // saxes messages carry line:column and the problem, not the content.
    throw notXml(err instanceof Error ? err.message : String(err));
  }
  if (!root) throw notXml('no root element');
  return root;
}

class JsonBuilder {
  constructor(private readonly models: ElementModels) {}

  resource(node: XmlNode, where: string): JsonObject {
    if (node.uri !== FHIR_NS)
      throw notXml(`${where}: <${node.name}> is not in the FHIR namespace ${FHIR_NS}`);
    if (!this.models.isResourceType(node.name))
      throw notXml(`${where}: <${node.name}> is not an R4 resource`);
    const resource: JsonObject = { resourceType: node.name };
    this.complex(this.models.ofType(node.name), node, resource, node.name);
    return resource;
  }

  private complex(model: ComplexModel, node: XmlNode, into: JsonObject, where: string): void {
    if (node.hasText) throw notXml(`${where} holds text; FHIR elements carry values in attributes`);
    for (const [name, value] of node.attributes) {
      const element = model.byName.get(name);
      if (!element?.attribute)
        throw notXml(`${where} has an attribute ${name} that R4 does not define there`);
      into[name] = value;
    }
    // Properties in XML order; a primitive's are gathered first (`name` and `_name`, with nulls in arrays).
    const properties = new Map<string, { resolved: Resolved; values: unknown[]; extras: unknown[] }>();
    let lastOrder = -1;
    let lastName = '';
    for (const child of node.children) {
      const at = `${where}.${child.name}`;
      const expectedNs = child.raw !== undefined ? XHTML_NS : FHIR_NS;
      if (child.uri !== expectedNs) throw notXml(`${at} is not in the namespace ${expectedNs}`);
      const resolved = this.models.resolve(model, child.name);
      if (!resolved || resolved.element.attribute) throw notXml(`${at} is not an R4 element`);
      if ((resolved.kind === 'xhtml') !== (child.raw !== undefined))
        throw notXml(`${at} must be ${resolved.kind === 'xhtml' ? 'an XHTML div' : 'a FHIR element'}`);
      // XML order is the definition's: an element after a later one, or a repeat split by another, is refused.
      const order = resolved.element.order;
      if (order < lastOrder || (order === lastOrder && child.name !== lastName))
        throw notXml(`${at} is out of order (R4 element order, http://hl7.org/fhir/R4/xml.html)`);
      if (order === lastOrder && !resolved.element.many)
        throw notXml(`${at} is repeated; it occurs at most once`);
      lastOrder = order;
      lastName = child.name;
      let slot = properties.get(child.name);
      if (!slot) properties.set(child.name, (slot = { resolved, values: [], extras: [] }));
      if (resolved.kind === 'primitive') {
        const { value, extras } = this.primitive(resolved.type, child, at);
        slot.values.push(value);
        slot.extras.push(extras);
        continue;
      }
      let value: unknown;
      if (resolved.kind === 'xhtml') value = child.raw;
      else if (resolved.kind === 'resource') {
        if (child.hasText || child.attributes.size > 0 || child.children.length !== 1)
          throw notXml(`${at} must hold exactly one resource element`);
        value = this.resource(child.children[0], at);
      } else {
        const object: JsonObject = {};
        this.complex(this.models.contentOf(resolved), child, object, at);
        value = object;
      }
      slot.values.push(value);
    }
    for (const [name, { resolved, values, extras }] of properties) {
      const many = resolved.element.many;
      if (values.some((v) => v !== null)) into[name] = many ? values : values[0];
      if (extras.some((e) => e !== null)) into[`_${name}`] = many ? extras : extras[0];
    }
  }

  private primitive(
    type: string,
    node: XmlNode,
    where: string,
  ): { value: unknown; extras: JsonObject | null } {
    if (node.hasText) throw notXml(`${where} holds text; a primitive's value is its value attribute`);
    let value: unknown = null;
    const extras: JsonObject = {};
    for (const [name, text] of node.attributes) {
      if (name === 'value') value = primitiveValue(type, text, where);
      else if (name === 'id') extras.id = text;
      else throw notXml(`${where} has an attribute ${name} that R4 does not define there`);
    }
    if (node.children.length > 0) {
      const model = this.models.ofType(type);
      const holder: JsonObject = {};
      this.complex(model, { ...node, attributes: new Map() }, holder, where);
      for (const key of Object.keys(holder)) {
        if (key !== 'extension') throw notXml(`${where}.${key}: a primitive holds only extensions`);
        extras.extension = holder.extension;
      }
    }
    if (value === null && Object.keys(extras).length === 0)
      throw notXml(`${where} has neither a value nor extensions`);
    return { value, extras: Object.keys(extras).length > 0 ? extras : null };
  }
}

function primitiveValue(type: string, text: string, where: string): unknown {
  if (type === 'boolean') {
    if (text === 'true' || text === 'false') return text === 'true';
    throw notXml(`${where}: "${text}" is not a boolean`);
  }
  if (NUMBER_TYPES.has(type)) {
    if (!JSON_NUMBER.test(text)) throw notXml(`${where}: the value is not a valid ${type}`);
    const n = Number(text);
    return String(n) === text ? n : new LosslessNumber(text);
  }
  return text;
}

// ---------------------------------------------------------------------------------------------------------------

/** JSON <-> XML for R4 resources, one per set of definitions (its element models are built lazily and kept). */
export class FhirXml {
  private readonly models: ElementModels;

  constructor(definitions: TypeDefinitions) {
    this.models = new ElementModels(definitions);
  }

  /** A resource (parsed FHIR JSON, LosslessNumbers kept) as FHIR XML; 406 FhirError when XML cannot carry it. */
  toXml(resource: unknown, options: { pretty?: boolean } = {}): string {
    const writer = new XmlWriter(this.models, options.pretty ?? false);
    writer.resource(resource, 0, 'resource');
    return `<?xml version="1.0" encoding="UTF-8"?>${options.pretty ? '\n' : ''}${writer.text()}`;
  }

  /** FHIR XML text as the equivalent FHIR JSON value; 400 FhirError when it is not well-formed FHIR XML. */
  toJson(xml: string): JsonObject {
    const root = parseXmlTree(xml);
    try {
      return new JsonBuilder(this.models).resource(root, 'body');
    } catch (err) {
      if (err instanceof FhirError) throw err;
      throw notXml(err instanceof Error ? err.message : String(err));
    }
  }

  /** FHIR XML text as FHIR JSON text (numbers as written). */
  toJsonText(xml: string): string {
    return stringifyFhirJson(this.toJson(xml));
  }
}
