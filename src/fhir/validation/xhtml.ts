/**
 * Narrative safety (FHIR R4 "Narrative" rules, txt-1/txt-2): the div is well-formed XHTML in the XHTML namespace,
 * uses only the allowed elements and attributes, has no scripts, event handlers or javascript: URLs, uses only the
 * entities XML defines, and is not empty.
 */

import type { Run } from './walk-context.js';

const ALLOWED = new Set(
  'a abbr acronym b big blockquote br caption cite code col colgroup dd dfn div dl dt em h1 h2 h3 h4 h5 h6 hr i img li ol p pre q samp small span strong sub sup table tbody td tfoot th thead tr tt ul var'.split(
    ' ',
  ),
);
const ALLOWED_ATTRS = new Set(
  'abbr accesskey align alt axis bgcolor border cellhalign cellpadding cellspacing cellvalign char charoff charset cite class colspan compact coords dir frame headers height href hreflang hspace id lang longdesc name nowrap rel rev rowspan rules scope shape span src start style summary tabindex title type valign value vspace width xml:lang xmlns'.split(
    ' ',
  ),
);

export interface XhtmlProblem {
  key: 'txt-1' | 'txt-2' | 'xhtml';
  message: string;
}

/** Returns the problems found in a narrative div (empty when fine). */
export function checkNarrativeXhtml(div: string): XhtmlProblem[] {
  const problems: XhtmlProblem[] = [];
  const s = div.trim();
  if (!/^<div[\s>/]/.test(s)) {
    problems.push({ key: 'xhtml', message: 'The narrative must be a single <div> element' });
    return problems;
  }
  const stack: string[] = [];
  let text = '';
  let roots = 0;
  const tag =
    /<!--[\s\S]*?-->|<!\[CDATA\[[\s\S]*?\]\]>|<\?[\s\S]*?\?>|<!DOCTYPE[^>]*>|<(\/?)([A-Za-z][\w:.-]*)((?:\s+[^\s=/>]+(?:\s*=\s*(?:"[^"]*"|'[^']*'|[^\s>]+))?)*)\s*(\/?)>/g;
  let last = 0;
  let m: RegExpExecArray | null;
  while ((m = tag.exec(s))) {
    const between = s.slice(last, m.index);
    if (between.includes('<')) {
      problems.push({ key: 'xhtml', message: 'The narrative is not well-formed XHTML (stray "<")' });
      return problems;
    }
    if (stack.length === 0 && between.trim()) {
      problems.push({ key: 'xhtml', message: 'Text outside the root <div>' });
      return problems;
    }
    text += between;
    last = tag.lastIndex;
    if (!m[0].startsWith('<!')) checkEntities(m[0], problems);
    checkEntities(between, problems);
    if (m[0].startsWith('<!DOCTYPE') || m[0].startsWith('<?')) {
      problems.push({
        key: 'txt-1',
        message: 'The narrative SHALL not contain processing instructions or a DOCTYPE',
      });
      continue;
    }
    if (m[0].startsWith('<!')) continue;
    const [, closing, rawName, attrs, selfClosing] = m;
    if (closing) {
      if (stack.pop() !== rawName) {
        problems.push({
          key: 'xhtml',
          message: `The narrative is not well-formed XHTML: unexpected </${rawName}>`,
        });
        return problems;
      }
      continue;
    }
    if (stack.length === 0) {
      roots++;
      checkRoot(roots, attrs, problems);
    }
    checkOpeningTag(rawName, attrs, problems);
    if (!selfClosing) stack.push(rawName);
  }
  checkEntities(s.slice(last), problems);
  checkEnd(s, s.slice(last), stack.length, text, problems);
  return problems;
}

/**
 * R4 narrative.html#xhtml: "the XHTML is contained in general XML so there is no support for HTML entities like
 * &nbsp; or &copy; etc. Unicode characters SHALL be used instead" (&#160; for &nbsp;). XML 1.0 section 4.6 predefines
 * amp, lt, gt, quot and apos; character references are numeric; a bare '&' is not well-formed (section 2.4).
 */
function checkEntities(part: string, problems: XhtmlProblem[]): void {
  if (!part.includes('&')) return;
  const amp = /&([^;&\s<>"']{0,32});?/g;
  let e: RegExpExecArray | null;
  while ((e = amp.exec(part))) {
    const ref = e[1];
    const terminated = e[0].endsWith(';');
    if (terminated && /^(amp|lt|gt|quot|apos|#[0-9]+|#x[0-9a-fA-F]+)$/.test(ref)) continue;
    problems.push({
      key: 'xhtml',
      message:
        terminated && /^[A-Za-z][A-Za-z0-9]*$/.test(ref)
          ? `The narrative uses the HTML entity '&${ref};', which XML does not define (use the Unicode character or a numeric reference)`
          : `The narrative is not well-formed XML: '&' must start an entity or character reference ('${e[0].slice(0, 20)}')`,
    });
    return;
  }
}

/** After the last tag: nothing left open or trailing, and some content (txt-2). */
function checkEnd(div: string, tail: string, open: number, text: string, problems: XhtmlProblem[]): void {
  if (tail.trim() || open) {
    problems.push({
      key: 'xhtml',
      message: 'The narrative is not well-formed XHTML (unclosed elements or trailing text)',
    });
    return;
  }
  if (!text.trim() && !/<img\b/i.test(div))
    problems.push({ key: 'txt-2', message: 'The narrative SHALL have some non-whitespace content' });
}

/** The root element: exactly one, in the XHTML namespace. */
function checkRoot(roots: number, attrs: string, problems: XhtmlProblem[]): void {
  if (roots > 1) problems.push({ key: 'xhtml', message: 'The narrative must have exactly one root <div>' });
  if (!/\sxmlns\s*=\s*["']http:\/\/www\.w3\.org\/1999\/xhtml["']/.test(attrs))
    problems.push({
      key: 'xhtml',
      message: 'The narrative div must be in the XHTML namespace (xmlns="http://www.w3.org/1999/xhtml")',
    });
}

/** An opening tag: an allowed element, allowed attributes, no event handlers, no script URLs (txt-1). */
function checkOpeningTag(rawName: string, attrs: string, problems: XhtmlProblem[]): void {
  if (!ALLOWED.has(rawName.toLowerCase()))
    problems.push({ key: 'txt-1', message: `Illegal element name in the XHTML ('${rawName}')` });
  const attrRe = /([^\s=/>]+)(?:\s*=\s*("[^"]*"|'[^']*'|[^\s>]+))?/g;
  let a: RegExpExecArray | null;
  while ((a = attrRe.exec(attrs))) {
    const an = a[1].toLowerCase();
    const av = (a[2] ?? '').replace(/^["']|["']$/g, '');
    if (
      an.startsWith('on') ||
      (!ALLOWED_ATTRS.has(an) && !an.startsWith('xmlns:') && !an.startsWith('data-'))
    )
      problems.push({
        key: 'txt-1',
        message: `Illegal attribute name in the XHTML ('${a[1]}' on '${rawName}')`,
      });
    if ((an === 'href' || an === 'src') && /^\s*(javascript|vbscript):/i.test(decodeEntities(av)))
      problems.push({ key: 'txt-1', message: `Illegal script URL in the XHTML ('${an}' on '${rawName}')` });
  }
}

/**
 * Internal hyperlinks of narratives: an `<a href="#x">` points at the element with id (or anchor name) x of the
 * HTML the narrative is shown in (HTML 4.01 section 12.2.3, which R4 narrative.html adopts). That HTML is the
 * resource's narratives, and in a Bundle (a document is shown whole) those of every entry; validation never
 * fetches anything, so a link that finds no anchor there does not resolve.
 */
export function collectNarrativeLinks(div: string, path: string, run: Run): void {
  if (div.includes('id=') || div.includes('name=')) {
    for (const m of div.matchAll(/\s(?:id|name)\s*=\s*(?:"([^"]*)"|'([^']*)')/g))
      (run.narrativeAnchors ??= new Set()).add(m[1] ?? m[2]);
  }
  if (!div.includes('#')) return;
  for (const m of div.matchAll(/<a\s[^>]*?href\s*=\s*(?:"#([^"]+)"|'#([^']+)')/g)) {
    run.narrativeLinks ??= new Map();
    let links = run.narrativeLinks.get(path);
    if (!links) run.narrativeLinks.set(path, (links = new Set()));
    links.add(m[1] ?? m[2]);
  }
}

/**
 * After the walk: each internal link must find its anchor among the narratives walked. A warning (the reference
 * validator says error): official R4 examples carry such links (Bundle-v3-valuesets: `#NAV` for the anchor
 * `v3-NullFlavor-NAV`), and a broken anchor leaves the record's meaning intact, so it must not block a write.
 */
export function resolveNarrativeLinks(run: Run): void {
  if (!run.narrativeLinks) return;
  for (const [path, links] of run.narrativeLinks)
    for (const target of links)
      if (!run.narrativeAnchors?.has(target))
        run.add(
          'warning',
          'invalid',
          `Hyperlink '#${target.slice(0, 100)}' in the narrative does not resolve`,
          path,
          'narrative',
        );
}

function decodeEntities(s: string): string {
  return s
    .replace(/&#x([0-9a-f]+);?/gi, (_, h) => String.fromCharCode(parseInt(h, 16)))
    .replace(/&#(\d+);?/g, (_, d) => String.fromCharCode(+d))
    .replace(/\s/g, '');
}
