import { once } from 'node:events';
import { Agent, get } from 'node:http';
import { connect } from 'node:net';
import { describe, expect, it } from 'vitest';
import { gracefulShutdown } from '../../src/app/server.js';
import type { FhirResource } from '../../src/fhir/fhir-json.js';
import { startTestApp } from './helpers.js';

type TestApp = Awaited<ReturnType<typeof startTestApp>>;

/**
 * Registers `$slow`, whose answer waits for `release()` (`inFlight` resolves once it has started), installs serve's
 * shutdown and listens on a free port.
 */
async function listenWithSlowOperation(app: TestApp, body: FhirResource) {
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
      return { status: 200, body };
    },
  });
  const shutDown = gracefulShutdown(app);
  await app.fastify.listen({ port: 0, host: '127.0.0.1' });
  const address = app.fastify.server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  return { release, inFlight, shutDown, port };
}

describe('graceful shutdown', () => {
  it('finishes a request in flight, then refuses new connections and closes the store', async () => {
    const app = await startTestApp();
    // gracefulShutdown, as serve does: it closes fetch's kept-alive socket instead of leaving it to the keep-alive.
    const { release, inFlight, shutDown, port } = await listenWithSlowOperation(app, {
      resourceType: 'Parameters',
      parameter: [{ name: 'done', valueBoolean: true }],
    });
    const base = `http://127.0.0.1:${port}/fhir`;

    const slow = fetch(`${base}/$slow`);
    await inFlight;
    const closed = shutDown();
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

  it("serve's shutdown closes a kept-alive connection after its request in flight, and one that never sent a request", async () => {
    // Node's server.close() alone waits for both: the first until the keep-alive timeout, the second until the
    // client leaves (neither client here ever does).
    const app = await startTestApp();
    const agent = new Agent({ keepAlive: true });
    try {
      const { release, inFlight, shutDown, port } = await listenWithSlowOperation(app, {
        resourceType: 'Parameters',
      });

      const accepted = once(app.fastify.server, 'connection');
      const silent = connect(port, '127.0.0.1');
      const silentClosed = once(silent, 'close');
      await accepted;
      const answer = new Promise<{ status?: number; connection?: string }>((resolve, reject) =>
        get({ host: '127.0.0.1', port, path: '/fhir/$slow', agent }, (res) => {
          res.resume();
          res.on('end', () => resolve({ status: res.statusCode, connection: res.headers.connection }));
        }).on('error', reject),
      );
      await inFlight;
      const closed = shutDown();
      release();
      expect((await answer).status).toBe(200);
      await closed;
      await silentClosed;
      await expect(app.store.read('Patient', 'x')).rejects.toThrow();
      expect(shutDown()).toBe(closed);
    } finally {
      agent.destroy();
      await app.stop();
    }
  });
});
