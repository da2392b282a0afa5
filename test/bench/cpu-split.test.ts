import { describe, expect, it } from 'vitest';
import { OTHER, splitByPart, type CpuProfile } from '../../bench/cpu-split.js';

/** A profile from stacks (outermost first, `name@url`), one sample each, 1,000 µs apart from t = 0. */
function profileOf(stacks: string[][]): CpuProfile {
  const nodes: CpuProfile['nodes'] = [
    { id: 1, callFrame: { functionName: '(root)', url: '' }, children: [] },
  ];
  const samples: number[] = [];
  for (const stack of stacks) {
    let parent = nodes[0]!;
    for (const frame of stack) {
      const [functionName, url] = frame.split('@') as [string, string | undefined];
      let node = (parent.children ?? [])
        .map((id) => nodes.find((n) => n.id === id)!)
        .find((n) => n.callFrame.functionName === functionName && n.callFrame.url === (url ?? ''));
      if (!node) {
        node = { id: nodes.length + 1, callFrame: { functionName, url: url ?? '' }, children: [] };
        nodes.push(node);
        parent.children!.push(node.id);
      }
      parent = node;
    }
    samples.push(parent.id);
  }
  return { nodes, startTime: 0, samples, timeDeltas: samples.map((_, i) => (i === 0 ? 0 : 1000)) };
}

const ROUTES = 'file:///x/dist/src/fhir/http/fhir-routes.js';
const COMMON = 'file:///x/dist/src/fhir/interactions/common.js';
const STORE = 'file:///x/dist/src/fhir/store/sqlite/sqlite-store.js';
const CODEC = 'file:///x/dist/src/fhir/store/json-codec.js';

describe('bench/cpu-split', () => {
  it('gives each busy sample to the innermost function that marks a part, idle and out-of-window samples to none', () => {
    const profile = profileOf([
      [`handle@${ROUTES}`, `parseResourceBody@${COMMON}`, 'parse@'], // 0: body parsing, inside the handler
      [`handle@${ROUTES}`, `validateResource@${COMMON}`, 'walk@'], // 1: validation
      [`flushQueued@${STORE}`, `writeNow@${STORE}`, `encodeJson@${CODEC}`, 'deflate@node:zlib'], // 2: deflate
      [`flushQueued@${STORE}`, `writeNow@${STORE}`, 'run@'], // 3: SQLite
      ['(idle)'], // 4
      ['parserOnIncoming@node:_http_server'], // 5: nothing marks it
      [`handle@${ROUTES}`, 'create@file:///x/dist/src/fhir/interactions/create.js'], // 6: the interaction
      [`handle@${ROUTES}`, `validateResource@${COMMON}`], // 7: outside the window
    ]);
    // Sample i is at i ms and lasts until the next one; the window holds samples 0-6 (7 is at 7 ms).
    const split = splitByPart(profile, [{ from: 0, to: 6_500 }], 1);
    const us = Object.fromEntries(split.map((r) => [r.part, r.us]));
    expect(us).toEqual({
      total: 6_000,
      'body parsing (lossless JSON)': 1_000,
      validation: 1_000,
      'store: deflate of the JSON': 1_000,
      'store: SQLite statements, commit': 1_000,
      [OTHER]: 1_000,
      'interaction (create, writeVersion, rest)': 1_000,
    });
  });
});
