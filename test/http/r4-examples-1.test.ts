import { examplesShard } from './r4-examples-shard.js';
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { send, startTestApp } from './helpers.js';
import { EXAMPLES_DIR } from './r4-examples.js';

examplesShard(0, 6);

describe('decimal precision of an official example', () => {
  it("serves Claim-100151.json's 105.00 as 105.00", async () => {
    const app = await startTestApp();
    try {
      const text = readFileSync(join(EXAMPLES_DIR, 'Claim-100151.json'), 'utf8');
      expect(text).toMatch(/"value": 105\.00/);
      await send(
        app,
        {
          method: 'PUT',
          url: '/fhir/Claim/100151',
          headers: { 'content-type': 'application/fhir+json' },
          body: text,
        },
        201,
      );
      const read = await app.fastify.inject({ url: '/fhir/Claim/100151' });
      expect(read.body).toContain('"value":105.00');
      expect(read.body).not.toMatch(/"value":105[,}]/);
    } finally {
      await app.stop();
    }
  });
});
