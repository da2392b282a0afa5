import { describe, expect, it } from 'vitest';
import { startTestApp } from './helpers.js';

describe('graceful shutdown', () => {
  it('finishes a request in flight, then refuses new connections and closes the store', async () => {
    const app = await startTestApp();
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    let started!: () => void;
    const inFlight = new Promise<void>((resolve) => (started = resolve));
    app.registry.registerOperation({
      name: 'slow',
      levels: ['system'],
      methods: ['GET'],
      handler: async () => {
        started();
        await released;
        return {
          status: 200,
          body: { resourceType: 'Parameters', parameter: [{ name: 'done', valueBoolean: true }] },
        };
      },
    });
    await app.fastify.listen({ port: 0, host: '127.0.0.1' });
    const address = app.fastify.server.address();
    const base = `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}/fhir`;

    const slow = fetch(`${base}/$slow`);
    await inFlight;
    const closed = app.close();
    release();
    const res = await slow;
    expect(res.status).toBe(200);
    expect(((await res.json()) as { parameter: { valueBoolean: boolean }[] }).parameter[0].valueBoolean).toBe(
      true,
    );
    await closed;
    await expect(fetch(`${base}/metadata`)).rejects.toThrow();
    await expect(app.store.read('Patient', 'x')).rejects.toThrow();
    await app.stop();
  });
});
