/**
 * Rule families written from the R4 specification text (issue 18), each on small hand-written resources.
 * The section of the specification is named in each describe.
 */
import { describe, expect, it } from 'vitest';
import { errorPaths, errors } from './helpers.js';

describe('base64Binary and Attachment (datatypes.html#primitive, #Attachment; RFC 4648)', () => {
  const binary = (data: string) => ({ resourceType: 'Binary', contentType: 'text/plain', data });
  const media = (content: object) => ({ resourceType: 'Media', status: 'completed', content });

  it('accepts base64 with padding at the end and with whitespace between groups', () => {
    expect(errors(binary('aGk='))).toEqual([]);
    expect(errors(binary('aA=='))).toEqual([]);
    expect(errors(binary('aGVs\n bG8h'))).toEqual([]);
  });

  it("refuses '=' inside the value, more than two '=' and incomplete groups", () => {
    expect(errorPaths(binary('aG=k'))).toEqual(['Binary.data']);
    expect(errorPaths(binary('a==='))).toEqual(['Binary.data']);
    expect(errorPaths(binary('aGVsbG8'))).toEqual(['Binary.data']);
    expect(errorPaths(binary('aGk=aGk='))).toEqual(['Binary.data']);
  });

  it('reports invalid attachment data at .data, inside any element of type Attachment', () => {
    expect(errorPaths(media({ contentType: 'text/plain', data: 'a*b=' }))).toEqual(['Media.content.data']);
    const params = {
      resourceType: 'Parameters',
      parameter: [{ name: 'doc', valueAttachment: { contentType: 'text/plain', data: 'a*b=' } }],
    };
    expect(errorPaths(params)).toEqual(['Parameters.parameter[0].value.ofType(Attachment).data']);
  });

  it('checks the stated size against the decoded length, only when the data is valid', () => {
    // 'aGk=' decodes to 2 bytes.
    expect(errors(media({ contentType: 'text/plain', data: 'aGk=', size: 2 }))).toEqual([]);
    expect(errorPaths(media({ contentType: 'text/plain', data: 'aGk=', size: 3 }))).toEqual([
      'Media.content',
    ]);
    expect(errorPaths(media({ contentType: 'text/plain', data: 'a*k=', size: 3 }))).toEqual([
      'Media.content.data',
    ]);
  });
});
