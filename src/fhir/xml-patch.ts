/**
 * XML Patch (RFC 5261, media type `application/xml-patch+xml` of RFC 7351), as FHIR R4 allows for PATCH
 * (http://hl7.org/fhir/R4/http.html#patch): a `<diff>` of `<add>`, `<replace>` and `<remove>` operations, each
 * choosing its one target node with an XPath 1.0 selector (`sel`), applied in order to an XML document.
 *
 * No maintained npm package implements RFC 5261, so the operations are here; the DOM is @xmldom/xmldom and the
 * selectors are evaluated by the `xpath` package (XPath 1.0). Rules taken from RFC 5261:
 * - a selector must select exactly one node (§4.1), else `unlocated-node`; it is evaluated with the document as its
 *   context node, so `f:Patient/f:active` and `/f:Patient/f:active` are the same;
 * - prefixes in a selector resolve against the namespaces in scope at its operation element, and an unprefixed
 *   element name is in the diff's default namespace when one is in scope (§4.2.2, as errata 3477 reads it);
 * - `add` (§4.3): without `type`, its content goes in as the last children of the selected element, or as
 *   `pos="prepend"` the first, `pos="before"`/`"after"` its siblings; `type="@name"` adds that attribute (it must
 *   not exist yet) with the text content as its value;
 * - `replace` (§4.4): an element by the one element given, an attribute's value or a text node by the text given, a
 *   comment or processing instruction by the one given;
 * - `remove` (§4.5): an element (not the root), an attribute, a text node, a comment or a processing instruction;
 *   `ws="before|after|both"` also removes the whitespace-only text node next to it.
 * Namespace nodes (`namespace::x`) are not patched: FHIR XML has one namespace per element kind.
 *
 * A malformed diff (not XML, unknown operation, missing `sel`, a selector that is not XPath) is `XmlPatchError`
 * kind 'invalid'; a diff that does not fit the document (no or several nodes selected, the wrong content for the
 * node) is kind 'not-applicable'. A DOCTYPE is refused before parsing: no entity is ever declared or expanded.
 */
import { createRequire } from 'node:module';
import { DOMParser, XMLSerializer } from '@xmldom/xmldom';

// The DOM types of @xmldom/xmldom (its own declarations; the project does not load the DOM lib).
type XNode = import('@xmldom/xmldom').Node;
type XElement = import('@xmldom/xmldom').Element;
type XDocument = import('@xmldom/xmldom').Document;
type XAttr = import('@xmldom/xmldom').Attr;

/** The part of the `xpath` package used here (its own typings pull the DOM lib into the whole project). */
interface ParsedXPath {
  expression: unknown;
  select(options: { node: XNode; namespaces: (prefix: string) => string | null }): unknown[];
}
const xpath = createRequire(import.meta.url)('xpath') as { parse(expression: string): ParsedXPath };

export type XmlPatchErrorKind = 'invalid' | 'not-applicable';

export class XmlPatchError extends Error {
  constructor(
    readonly kind: XmlPatchErrorKind,
    message: string,
    /** 1-based position of the operation in the diff, when one is at fault. */
    readonly operation?: number,
  ) {
    super(operation === undefined ? message : `XML Patch operation ${operation}: ${message}`);
  }
}

const ELEMENT_NODE = 1;
const ATTRIBUTE_NODE = 2;
const TEXT_NODE = 3;
const CDATA_SECTION_NODE = 4;
const PROCESSING_INSTRUCTION_NODE = 7;
const COMMENT_NODE = 8;
const DOCUMENT_NODE = 9;

// XPath step axes and node-test kind in the `xpath` package's parsed expressions (Step.ATTRIBUTE, Step.NAMESPACE,
// NodeTest.NAMETESTQNAME): the default-namespace rule rewrites unprefixed element name tests.
const AXIS_ATTRIBUTE = 2;
const AXIS_NAMESPACE = 8;
const NODE_TEST_QNAME = 2;
/** The prefix unprefixed element names get when the diff has a default namespace (not a valid XML prefix). */
const DEFAULT_PREFIX = '_default-ns';

/** Parses XML text into a DOM; a DOCTYPE or any parse error or warning is refused. */
function parseXml(text: string, what: string, kind: XmlPatchErrorKind): XDocument {
  if (/<!DOCTYPE/i.test(text)) throw new XmlPatchError(kind, `${what} must not have a DOCTYPE`);
  try {
    return new DOMParser({
      onError: (level, message) => {
        throw new Error(`${level}: ${message}`);
      },
    }).parseFromString(text, 'application/xml');
  } catch (err) {
    const message = (err instanceof Error ? err.message : String(err)).split('\n')[0];
    throw new XmlPatchError(kind, `${what} is not well-formed XML: ${message}`);
  }
}

function elementChildren(node: XNode): XElement[] {
  const out: XElement[] = [];
  for (let child = node.firstChild; child; child = child.nextSibling)
    if (child.nodeType === ELEMENT_NODE) out.push(child as XElement);
  return out;
}

function isWhitespaceText(node: XNode | null): boolean {
  return node !== null && node.nodeType === TEXT_NODE && /^[ \t\r\n]*$/.test(node.nodeValue ?? '');
}

/** The operations of a diff document, checked for shape. */
function operationsOf(diff: XDocument): XElement[] {
  const root = diff.documentElement;
  if (!root || root.localName !== 'diff')
    throw new XmlPatchError(
      'invalid',
      `The XML Patch root element must be <diff>, not <${root?.localName ?? ''}>`,
    );
  for (let child = root.firstChild; child; child = child.nextSibling) {
    if (child.nodeType === TEXT_NODE && !isWhitespaceText(child))
      throw new XmlPatchError('invalid', '<diff> holds only operations (text found between them)');
  }
  const operations = elementChildren(root);
  operations.forEach((op, i) => {
    if (op.namespaceURI !== root.namespaceURI || !['add', 'replace', 'remove'].includes(op.localName ?? ''))
      throw new XmlPatchError('invalid', `<${op.nodeName}> is not add, replace or remove`, i + 1);
    if (!op.hasAttribute('sel'))
      throw new XmlPatchError('invalid', `<${op.localName}> needs a sel attribute`, i + 1);
  });
  return operations;
}

/** Points every unprefixed element name test of a parsed selector at the default-namespace prefix. */
function applyDefaultNamespace(expression: unknown, seen = new Set<object>()): void {
  if (expression === null || typeof expression !== 'object' || seen.has(expression)) return;
  seen.add(expression);
  const step = expression as {
    axis?: unknown;
    nodeTest?: { type?: unknown; prefix?: unknown; localName?: string };
  };
  if (
    typeof step.axis === 'number' &&
    step.axis !== AXIS_ATTRIBUTE &&
    step.axis !== AXIS_NAMESPACE &&
    step.nodeTest?.type === NODE_TEST_QNAME &&
    step.nodeTest.prefix === null
  ) {
    step.nodeTest.prefix = DEFAULT_PREFIX;
  }
  for (const value of Object.values(expression)) applyDefaultNamespace(value, seen);
}

/** The one node `sel` of operation `op` selects in `document`. */
function selectOne(document: XDocument, op: XElement, n: number): XNode {
  const sel = op.getAttribute('sel') ?? '';
  let parsed: ParsedXPath;
  try {
    parsed = xpath.parse(sel);
  } catch (err) {
    throw new XmlPatchError(
      'invalid',
      `sel="${sel}" is not an XPath expression: ${(err as Error).message}`,
      n,
    );
  }
  // xmldom answers the default namespace for '' (not null).
  const defaultNamespace = op.lookupNamespaceURI('');
  if (defaultNamespace) applyDefaultNamespace(parsed.expression);
  let selected: unknown[];
  try {
    selected = parsed.select({
      node: document,
      namespaces: (prefix) => (prefix === DEFAULT_PREFIX ? defaultNamespace : op.lookupNamespaceURI(prefix)),
    });
  } catch (err) {
    throw new XmlPatchError('invalid', `sel="${sel}" cannot be evaluated: ${(err as Error).message}`, n);
  }
  if (!Array.isArray(selected))
    throw new XmlPatchError('invalid', `sel="${sel}" selects a value, not a node`, n);
  if (selected.length !== 1)
    throw new XmlPatchError(
      'not-applicable',
      `sel="${sel}" selects ${selected.length} nodes; it must select exactly one`,
      n,
    );
  const node = selected[0] as XNode;
  if (
    typeof node !== 'object' ||
    node === null ||
    typeof node.nodeType !== 'number' ||
    node.nodeType > DOCUMENT_NODE
  )
    throw new XmlPatchError(
      'not-applicable',
      `sel="${sel}" selects a namespace node, which is not patched`,
      n,
    );
  return node;
}

/** The operation's content as nodes of `document` (deep copies, namespaces kept). */
function contentOf(document: XDocument, op: XElement): XNode[] {
  const out: XNode[] = [];
  for (let child = op.firstChild; child; child = child.nextSibling)
    out.push(document.importNode(child, true));
  return out;
}

/** The operation's text content (an attribute value or a text node); elements in it are an error. */
function textOf(op: XElement, n: number, what: string): string {
  let text = '';
  for (let child = op.firstChild; child; child = child.nextSibling) {
    if (child.nodeType === TEXT_NODE || child.nodeType === CDATA_SECTION_NODE) text += child.nodeValue ?? '';
    else if (child.nodeType !== COMMENT_NODE)
      throw new XmlPatchError('not-applicable', `${what} is replaced by text only`, n);
  }
  return text;
}

/** The operation's one node of `type`, whitespace around it ignored. */
function oneNodeOf(document: XDocument, op: XElement, type: number, n: number, what: string): XNode {
  const nodes = contentOf(document, op).filter((node) => !isWhitespaceText(node));
  if (nodes.length !== 1 || nodes[0].nodeType !== type)
    throw new XmlPatchError('not-applicable', `${what} is replaced by exactly one node of its kind`, n);
  return nodes[0];
}

function add(document: XDocument, op: XElement, target: XNode, n: number): void {
  const type = op.getAttribute('type');
  if (type) {
    if (target.nodeType !== ELEMENT_NODE)
      throw new XmlPatchError('not-applicable', 'an attribute is added to an element only', n);
    if (!type.startsWith('@'))
      throw new XmlPatchError(
        'not-applicable',
        `type="${type}": only attributes (type="@name") are added`,
        n,
      );
    const element = target as XElement;
    const qualified = type.slice(1);
    const colon = qualified.indexOf(':');
    const namespace = colon < 0 ? null : op.lookupNamespaceURI(qualified.slice(0, colon));
    if (colon >= 0 && !namespace)
      throw new XmlPatchError('invalid', `type="${type}": the prefix is not declared`, n);
    const local = colon < 0 ? qualified : qualified.slice(colon + 1);
    if (element.hasAttributeNS(namespace, local))
      throw new XmlPatchError(
        'not-applicable',
        `${type} already exists on <${element.nodeName}>; use replace`,
        n,
      );
    element.setAttributeNS(namespace, qualified, textOf(op, n, 'an attribute'));
    return;
  }
  const pos = op.getAttribute('pos');
  const nodes = contentOf(document, op);
  const parent = target.parentNode;
  switch (pos) {
    case null:
    case '':
      if (target.nodeType !== ELEMENT_NODE)
        throw new XmlPatchError('not-applicable', 'children are added to an element only', n);
      for (const node of nodes) target.appendChild(node);
      return;
    case 'prepend': {
      if (target.nodeType !== ELEMENT_NODE)
        throw new XmlPatchError('not-applicable', 'children are added to an element only', n);
      const first = target.firstChild;
      for (const node of nodes) target.insertBefore(node, first);
      return;
    }
    case 'before':
    case 'after': {
      if (!parent || target.nodeType === ATTRIBUTE_NODE)
        throw new XmlPatchError(
          'not-applicable',
          `pos="${pos}" needs a node with a parent (not an attribute)`,
          n,
        );
      if (parent.nodeType === DOCUMENT_NODE && nodes.some((node) => node.nodeType === ELEMENT_NODE))
        throw new XmlPatchError(
          'not-applicable',
          'a document has one root element: nothing is added beside it',
          n,
        );
      const before = pos === 'before' ? target : target.nextSibling;
      for (const node of nodes) parent.insertBefore(node, before);
      return;
    }
    default:
      throw new XmlPatchError('invalid', `pos="${pos}" is not before, after or prepend`, n);
  }
}

function replace(document: XDocument, op: XElement, target: XNode, n: number): void {
  switch (target.nodeType) {
    case ATTRIBUTE_NODE:
      (target as XAttr).value = textOf(op, n, 'an attribute value');
      return;
    case TEXT_NODE:
    case CDATA_SECTION_NODE: {
      const text = textOf(op, n, 'a text node');
      target.parentNode!.replaceChild(document.createTextNode(text), target);
      return;
    }
    case ELEMENT_NODE:
      target.parentNode!.replaceChild(oneNodeOf(document, op, ELEMENT_NODE, n, 'an element'), target);
      return;
    case COMMENT_NODE:
      target.parentNode!.replaceChild(oneNodeOf(document, op, COMMENT_NODE, n, 'a comment'), target);
      return;
    case PROCESSING_INSTRUCTION_NODE:
      target.parentNode!.replaceChild(
        oneNodeOf(document, op, PROCESSING_INSTRUCTION_NODE, n, 'a processing instruction'),
        target,
      );
      return;
    default:
      throw new XmlPatchError(
        'not-applicable',
        'the document itself is not replaced; select its root element',
        n,
      );
  }
}

function remove(op: XElement, target: XNode, n: number): void {
  if (elementChildren(op).length > 0 || textOf(op, n, 'remove').trim() !== '')
    throw new XmlPatchError('invalid', '<remove> has no content', n);
  if (target.nodeType === ATTRIBUTE_NODE) {
    const attribute = target as XAttr;
    attribute.ownerElement!.removeAttributeNode(attribute);
    return;
  }
  const parent = target.parentNode;
  if (!parent || (parent.nodeType === DOCUMENT_NODE && target.nodeType === ELEMENT_NODE))
    throw new XmlPatchError('not-applicable', 'the root element is not removed', n);
  const ws = op.getAttribute('ws');
  if (ws && !['before', 'after', 'both'].includes(ws))
    throw new XmlPatchError('invalid', `ws="${ws}" is not before, after or both`, n);
  if (ws && target.nodeType === TEXT_NODE)
    throw new XmlPatchError('not-applicable', 'ws does not apply to a text node', n);
  if ((ws === 'before' || ws === 'both') && isWhitespaceText(target.previousSibling))
    parent.removeChild(target.previousSibling!);
  if ((ws === 'after' || ws === 'both') && isWhitespaceText(target.nextSibling))
    parent.removeChild(target.nextSibling!);
  parent.removeChild(target);
}

/**
 * An XHTML fragment (a Narrative div) as this module writes it back after a patch: the DOM serialiser writes
 * `<p/>` as `<p></p>` and may quote or escape differently, so a caller can recognise a div the patch left alone.
 */
export function asSerialisedAfterPatch(fragment: string): string | undefined {
  try {
    const document = new DOMParser({
      onError: (level, message) => {
        throw new Error(`${level}: ${message}`);
      },
    }).parseFromString(fragment, 'application/xml');
    return new XMLSerializer().serializeToString(document.documentElement!);
  } catch {
    return undefined;
  }
}

/** Applies the XML Patch `diffXml` to the XML document `documentXml`: the patched document's text. */
export function applyXmlPatch(documentXml: string, diffXml: string): string {
  const diff = parseXml(diffXml, 'The XML Patch body', 'invalid');
  const operations = operationsOf(diff);
  const document = parseXml(documentXml, 'The document patched', 'not-applicable');
  operations.forEach((op, i) => {
    const n = i + 1;
    const target = selectOne(document, op, n);
    if (op.localName === 'add') add(document, op, target, n);
    else if (op.localName === 'replace') replace(document, op, target, n);
    else remove(op, target, n);
  });
  return new XMLSerializer().serializeToString(document);
}
