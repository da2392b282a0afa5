/**
 * A lenient JSON reader that reports syntax problems with FHIRPath locations, as the HL7 reference validator does
 * (comments, unquoted property names, missing or trailing commas), and still returns the value when it can.
 * Unrecoverable text (unclosed structures, garbage) is a fatal issue with no value.
 */
import type { OperationOutcomeIssue } from '../outcome.js';

type Segment = string | number;

export interface LenientParse {
  value?: unknown;
  issues: OperationOutcomeIssue[];
}

class Reader {
  i = 0;
  pendingComment = false;
  readonly problems: { message: string; at: Segment[] }[] = [];
  constructor(
    readonly text: string,
    readonly allowComments = false,
  ) {}

  fail(message: string): never {
    throw new SyntaxError(`${message} at position ${this.i}`);
  }

  skip(): void {
    const t = this.text;
    for (;;) {
      const c = t.charCodeAt(this.i);
      if (c === 32 || c === 9 || c === 10 || c === 13 || c === 0xfeff) this.i++;
      else if (c === 47 && t[this.i + 1] === '/') {
        const end = t.indexOf('\n', this.i);
        this.i = end < 0 ? t.length : end + 1;
        this.pendingComment = true;
      } else if (c === 47 && t[this.i + 1] === '*') {
        const end = t.indexOf('*/', this.i + 2);
        if (end < 0) this.fail('Unclosed comment');
        this.i = end + 2;
        this.pendingComment = true;
      } else return;
    }
  }

  value(at: Segment[], depth: number): unknown {
    if (depth > 200) this.fail('The JSON is nested too deeply');
    this.skip();
    const c = this.text[this.i];
    if (c === '{') return this.object(at, depth);
    if (c === '[') return this.array(at, depth);
    if (c === '"') return this.string();
    const lit = /^(-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?|true|false|null)/.exec(
      this.text.slice(this.i, this.i + 400),
    );
    if (!lit) this.fail(`Unexpected character '${c ?? 'end of text'}'`);
    this.i += lit[0].length;
    return lit[0] === 'true' ? true : lit[0] === 'false' ? false : lit[0] === 'null' ? null : Number(lit[0]);
  }

  string(): string {
    const start = this.i;
    this.i++;
    for (;;) {
      const c = this.text[this.i];
      if (c === undefined) this.fail('Unclosed string');
      if (c === '\\') this.i += 2;
      else if (c === '"') break;
      else this.i++;
    }
    this.i++;
    return JSON.parse(this.text.slice(start, this.i));
  }

  object(at: Segment[], depth: number): Record<string, unknown> {
    this.i++;
    const out: Record<string, unknown> = {};
    for (let first = true; ; first = false) {
      this.skip();
      if (this.text[this.i] === '}') {
        if (!first) this.problems.push({ message: 'The JSON has a trailing comma', at });
        this.i++;
        return out;
      }
      let key: string;
      if (this.text[this.i] === '"') key = this.string();
      else {
        const id = /^[A-Za-z_$][\w$]*/.exec(this.text.slice(this.i, this.i + 200));
        if (!id) this.fail(`Unexpected character '${this.text[this.i] ?? 'end of text'}'`);
        key = id[0];
        this.i += key.length;
        this.problems.push({
          message: `The JSON property '${key}' has no quotes around the name of the property`,
          at,
        });
      }
      if (this.pendingComment) {
        if (!this.allowComments)
          this.problems.push({ message: 'Comments are not allowed in JSON', at: [...at, key] });
        this.pendingComment = false;
      }
      this.skip();
      if (this.text[this.i] !== ':') this.fail(`Expected ':' after '${key}'`);
      this.i++;
      Object.defineProperty(out, key, {
        value: this.value([...at, key], depth + 1),
        enumerable: true,
        writable: true,
        configurable: true,
      });
      this.skip();
      const c = this.text[this.i];
      if (c === ',') this.i++;
      else if (c === '}') {
        this.i++;
        return out;
      } else if (c === '"' || (c !== undefined && /[A-Za-z_$]/.test(c)))
        this.problems.push({ message: 'A Comma is missing in the JSON', at });
      else this.fail(`Unexpected character '${c ?? 'end of text'}' in an object`);
    }
  }

  array(at: Segment[], depth: number): unknown[] {
    this.i++;
    const out: unknown[] = [];
    for (let first = true; ; first = false) {
      this.skip();
      if (this.text[this.i] === ']') {
        if (!first) this.problems.push({ message: 'The JSON has a trailing comma', at });
        this.i++;
        return out;
      }
      out.push(this.value([...at, out.length], depth + 1));
      this.skip();
      const c = this.text[this.i];
      if (c === ',') this.i++;
      else if (c === ']') {
        this.i++;
        return out;
      } else if (c !== undefined && /["{[\d\-tfn]/.test(c))
        this.problems.push({ message: 'A Comma is missing in the JSON', at });
      else this.fail(`Unexpected character '${c ?? 'end of text'}' in an array`);
    }
  }
}

function toExpression(root: string, at: Segment[]): string {
  let out = root;
  for (const s of at) out += typeof s === 'number' ? `[${s}]` : `.${s}`;
  return out;
}

export interface LenientParseOptions {
  /** Accept comments (the reference validator's allow-comments; default false: each is an error). */
  allowComments?: boolean;
}

export function parseJsonLeniently(text: string, options: LenientParseOptions = {}): LenientParse {
  const reader = new Reader(text, !!options.allowComments);
  let value: unknown;
  try {
    value = reader.value([], 0);
    reader.skip();
    if (reader.i < text.length) reader.fail('Unexpected content after the end of the JSON');
  } catch (e) {
    return {
      issues: [
        {
          severity: 'fatal',
          code: 'invalid',
          diagnostics: `Unable to parse the JSON: ${e instanceof Error ? e.message : String(e)}`,
        },
      ],
    };
  }
  const rt =
    value &&
    typeof value === 'object' &&
    typeof (value as { resourceType?: unknown }).resourceType === 'string'
      ? (value as { resourceType: string }).resourceType
      : 'Resource';
  return {
    value,
    issues: reader.problems.map((p) => ({
      severity: 'error',
      code: 'invalid',
      diagnostics: p.message,
      expression: [toExpression(rt, p.at)],
    })),
  };
}
