/** Values of primitive types and of the complex data types with rules of their own (references, codings, quantities, attachments). */
import { isJsonObject, type JsonObject } from '../definitions/json.js';
import type { ElementNode, TypeRef } from './structure.js';
import { base64DecodedSize, base64Problem, checkPrimitive } from './primitives.js';
import { checkNarrativeXhtml, collectNarrativeLinks } from './xhtml.js';
import { settingsOf, type Frame, type Run, type WalkContext } from './walk-context.js';
import { checkMinMax, deepEqual } from './fixed-values.js';
import { checkReference } from './references.js';
import { checkBinding, checkCoding } from './bindings.js';

/**
 * An HTML start, end or empty tag (`<b>`, `</p>`, `<img src=x />`, `<script>`) in a plain string. R4 datatypes.html#string
 * is plain text; narrative.html#xhtml is where markup belongs (markdown has its own rules). "a < b > c" is no tag.
 */
const HTML_TAG = /<\/?[A-Za-z][A-Za-z0-9]*(\s+[^<>]*)?\/?>/;

/** A primitive value: its syntax, then its element's length, fixed value, pattern, binding and bounds. */
export function checkPrimitiveValue(
  w: WalkContext,
  code: string,
  value: unknown,
  node: ElementNode,
  path: string,
  run: Run,
): void {
  const problem = checkPrimitive(code, value);
  if (problem) {
    // Reported at the element at fault, also for Attachment.data (not at the attachment).
    run.add('error', 'invalid', problem, path, 'structure');
    return;
  }
  // Past checkPrimitive, a value of these types is a string.
  if (code === 'xhtml' && typeof value === 'string') {
    collectNarrativeLinks(value, path, run);
    for (const p of checkNarrativeXhtml(value))
      run.add(
        'error',
        p.key === 'xhtml' ? 'invalid' : 'invariant',
        p.key === 'xhtml' ? p.message : `Constraint failed: ${p.key}: ${p.message}`,
        path,
        'narrative',
      );
  }
  if (code === 'string' && typeof value === 'string' && value.includes('<') && HTML_TAG.test(value)) {
    const securityChecks = settingsOf(w, run).securityChecks;
    run.add(
      securityChecks ? 'error' : 'information',
      'invalid',
      securityChecks
        ? 'The string value contains text that looks like embedded HTML tags, which are not allowed for security reasons in this context'
        : 'The string value contains text that looks like embedded HTML tags. If this content is rendered to HTML without appropriate post-processing, it may be a security risk',
      path,
      'narrative',
    );
  }
  // Markdown is rendered to HTML: raw HTML in it passes through to the page (R4 datatypes.html#markdown, which
  // follows GFM and says HTML is not expected). How severe that is a setting (the reference validator's
  // -html-in-markdown, default warning).
  if (code === 'markdown' && typeof value === 'string' && value.includes('<') && HTML_TAG.test(value)) {
    const level = settingsOf(w, run).htmlInMarkdown;
    if (level !== 'ignore')
      run.add(
        level,
        'invalid',
        'The markdown contains content that looks like embedded HTML tags, which the presentation layer may pass through unescaped',
        path,
        'narrative',
      );
  }
  if (node.maxLength && typeof value === 'string' && value.length > node.maxLength)
    run.add(
      'error',
      'too-long',
      `The value is longer than the maximum length ${node.maxLength}`,
      path,
      'structure',
    );
  if (node.fixed !== undefined && !deepEqual(node.fixed, value))
    run.add(
      'error',
      'value',
      `Value is '${String(value).slice(0, 100)}' but must be '${String(node.fixed)}'`,
      path,
      'structure',
    );
  if (node.pattern !== undefined && !deepEqual(node.pattern, value))
    run.add(
      'error',
      'value',
      `Value is '${String(value).slice(0, 100)}' but must be '${String(node.pattern)}'`,
      path,
      'structure',
    );
  if (node.binding && (code === 'code' || code === 'string' || code === 'uri') && typeof value === 'string')
    checkBinding(w, node, undefined, value, path, run);
  if (node.minValue !== undefined || node.maxValue !== undefined) checkMinMax(node, value, path, run);
}

/** The rules of the complex data types that have their own (references, codings, quantities, attachments). */
export function checkDataType(
  w: WalkContext,
  code: string | undefined,
  value: JsonObject,
  node: ElementNode,
  type: TypeRef | undefined,
  path: string,
  run: Run,
  frame: Frame,
): void {
  switch (code) {
    case 'Reference':
      checkReference(w, value, node, type!, path, run, frame);
      break;
    case 'Attachment':
      checkAttachment(value, path, run);
      break;
    case 'Coding':
      checkCoding(w, value, path, run);
      if (node.binding) checkBinding(w, node, [value], undefined, path, run);
      break;
    case 'CodeableConcept':
      if (Array.isArray(value.coding))
        value.coding.forEach(
          (c: unknown, i: number) => isJsonObject(c) && checkCoding(w, c, `${path}.coding[${i}]`, run),
        );
      if (node.binding)
        checkBinding(w, node, Array.isArray(value.coding) ? value.coding : [], undefined, path, run);
      break;
    case 'Quantity':
      if (typeof value.value === 'number' && (node.minValue !== undefined || node.maxValue !== undefined))
        checkMinMax(node, value, path, run);
      // A unit binding on an open choice (value[x] of many types, as in the vital signs base profile) is not
      // applied to Quantities, as in the reference validator; on a Quantity-only element it is.
      if (node.binding && typeof value.code === 'string' && node.types.every((t) => t.code === 'Quantity'))
        checkBinding(w, node, [{ system: value.system, code: value.code }], undefined, path, run);
      break;
  }
}

/**
 * Attachment.size is "the number of bytes of data" (R4 datatypes.html#Attachment): when the data is valid base64,
 * the stated size must be its decoded length. Invalid data is reported at `.data` by its primitive check.
 */
export function checkAttachment(att: JsonObject, path: string, run: Run): void {
  if (typeof att.data === 'string' && typeof att.size === 'number' && !base64Problem(att.data)) {
    const actual = base64DecodedSize(att.data);
    if (actual !== att.size)
      run.add(
        'error',
        'structure',
        `Stated Attachment Size ${att.size} does not match actual attachment size ${actual}`,
        path,
        'structure',
      );
  }
}
