/**
 * The examples test, one shard of it (the shards run in parallel, one file each). Shards are of about equal size
 * in bytes (a few examples are megabytes: split by position, one shard took three times as long as the others
 * and neared the test timeout on a busy machine).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { json, startTestApp, type TestApp } from './helpers.js';
import {
  EXAMPLES_BODY_LIMIT,
  REFUSED_EXAMPLES,
  comparable,
  selectExamples,
  type Example,
} from './r4-examples.js';

/** Examples stored and read back per test. */
const EXAMPLES_PER_TEST = 25;

/** The examples of one shard: largest first, each to the shard with the fewest bytes so far (deterministic). */
export function shardOf(all: Example[], shard: number, shards: number): Example[] {
  const bytes = new Array<number>(shards).fill(0);
  const member = new Array<number>(all.length);
  const order = all.map((_e, i) => i).sort((a, b) => all[b].text.length - all[a].text.length || a - b);
  for (const i of order) {
    let lightest = 0;
    for (let k = 1; k < shards; k++) if (bytes[k] < bytes[lightest]) lightest = k;
    member[i] = lightest;
    bytes[lightest] += all[i].text.length;
  }
  return all.filter((_e, i) => member[i] === shard);
}

export function examplesShard(shard: number, shards: number): void {
  const all = selectExamples();
  const examples = shardOf(all, shard, shards);
  let app: TestApp;
  beforeAll(async () => {
    app = await startTestApp({}, { bodyLimit: EXAMPLES_BODY_LIMIT, logLevel: 'warn' });
  });
  afterAll(async () => {
    await app?.stop();
  });

  describe(`official R4 examples, shard ${shard + 1}/${shards}`, () => {
    it('selects several hundred instance examples of many resource types', () => {
      expect(all.length).toBeGreaterThan(700);
      expect(new Set(all.map((e) => e.resourceType)).size).toBeGreaterThan(120);
    });

    // Groups of examples, one test each: every test stays short on a busy machine (one test of a whole shard took
    // minutes under load and reached its timeout).
    for (let from = 0; from < examples.length; from += EXAMPLES_PER_TEST) {
      const group = examples.slice(from, from + EXAMPLES_PER_TEST);
      it(`stores examples ${from + 1}-${from + group.length} of the shard under their own ids and reads them back with the same content (numbers as written)`, async () => {
        const refused: Record<string, string> = {};
        const changed: string[] = [];
        for (const example of group) {
          const url = `/fhir/${example.resourceType}/${example.id}`;
          const res = await app.fastify.inject({
            method: 'PUT',
            url,
            headers: { 'content-type': 'application/fhir+json' },
            payload: example.text,
          });
          if (res.statusCode !== 201) {
            expect([400, 422], `${example.file}: ${res.body.slice(0, 300)}`).toContain(res.statusCode);
            refused[example.file] = json(res.body)
              .issue.map((i: any) => i.diagnostics)
              .join(' | ');
            continue;
          }
          const back = await app.fastify.inject({ url });
          expect(back.statusCode).toBe(200);
          if (comparable(back.body) !== comparable(example.text)) changed.push(example.file);
        }
        expect(changed).toEqual([]);
        const expected = Object.keys(REFUSED_EXAMPLES).filter((file) => group.some((e) => e.file === file));
        expect(Object.keys(refused).sort()).toEqual(expected.sort());
        // Nothing refused was stored.
        for (const file of Object.keys(refused)) {
          const example = group.find((e) => e.file === file)!;
          expect(
            (await app.fastify.inject({ url: `/fhir/${example.resourceType}/${example.id}` })).statusCode,
          ).toBe(404);
        }
      });
    }
  });
}
