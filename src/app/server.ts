/**
 * `serve`: build the app, listen, and shut down gracefully on SIGTERM/SIGINT (gracefulShutdown: stop accepting,
 * finish in-flight requests, close every connection, close the store and other adapters, exit 0). A second signal
 * while closing exits at once (code 1).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createServer, type Socket } from 'node:net';
import { buildApp, FHIR_PREFIX, type App } from './app.js';
import { ConfigError, type ServeConfig } from '../config/config.js';

export async function serve(config: ServeConfig): Promise<App> {
  // Whatever the service or its libraries create is for its own user only (0700/0600; docs/configuration.md).
  process.umask(0o077);
  // Refused at once, before the data directory, the validator and the ledger are opened (a few seconds' work).
  if (config.port !== 0) await assertAddressFree(config);
  const app = await buildApp(config);
  try {
    await app.fastify.listen({ port: config.port, host: config.host });
  } catch (err) {
    await app.close();
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EADDRINUSE')
      throw new ConfigError(
        `--port ${config.port}: ${config.host}:${config.port} is already in use by another process`,
      );
    if (code === 'EADDRNOTAVAIL' || code === 'ENOTFOUND')
      throw new ConfigError(`--host ${config.host}: not an address of this machine`);
    throw err;
  }
  const address = app.fastify.server.address();
  const port = typeof address === 'object' && address ? address.port : config.port;
  const host =
    config.host === '0.0.0.0' || config.host === '::'
      ? 'localhost'
      : config.host.includes(':')
        ? `[${config.host}]`
        : config.host;
  app.fastify.log.info(
    { dataDir: config.dataDir, fhirBase: config.baseUrl ?? `http://${host}:${port}${FHIR_PREFIX}` },
    'hie-ledger serving FHIR R4',
  );

  const shutDown = gracefulShutdown(app);
  let stopping = false;
  const stop = (signal: NodeJS.Signals) => {
    if (stopping) {
      app.fastify.log.warn({ signal }, 'second signal: exiting without waiting');
      process.exit(1);
    }
    stopping = true;
    app.fastify.log.info({ signal }, 'shutting down: finishing in-flight requests');
    shutDown().then(
      () => process.exit(0),
      (err: unknown) => {
        app.fastify.log.error({ err }, 'error while shutting down');
        process.exit(1);
      },
    );
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
  return app;
}

/**
 * The shutdown of a listening app, bounded by the requests in flight: returns the function that runs it. It stops
 * accepting connections (requests arriving meanwhile get 503), lets the requests in flight finish (their writes
 * commit and are answered), then closes every connection left, and closes the app (store, ledger, anchoring: pending
 * anchors stay queued and drain at the next start). Node's server.close() alone waits for connections it does not
 * consider idle: a keep-alive connection whose request was in flight stays open after its answer until the
 * keep-alive timeout (72 s) and one that never sent a request until the client drops it, which held `serve` up for
 * 50 s after a load run. Counting requests costs one listener call per request.
 */
export function gracefulShutdown(app: App): () => Promise<void> {
  const server = app.fastify.server;
  let inFlight = 0;
  let stopping = false;
  const closeIfQuiet = () => {
    if (stopping && inFlight === 0) server.closeAllConnections();
  };
  server.on('request', (_request: IncomingMessage, response: ServerResponse) => {
    inFlight++;
    response.once('close', () => {
      inFlight--;
      closeIfQuiet();
    });
  });
  // A connection accepted while the listener closes: nothing in flight to wait for, so it goes at once.
  server.on('connection', (socket: Socket) => {
    if (stopping && inFlight === 0) socket.destroy();
  });
  let closing: Promise<void> | undefined;
  return () => {
    if (closing) return closing;
    stopping = true;
    closing = app.close();
    closeIfQuiet();
    return closing;
  };
}

/** Throws the ConfigError `listen` would, now: binds the address and lets it go again. */
async function assertAddressFree(config: ServeConfig): Promise<void> {
  const probe = createServer();
  await new Promise<void>((resolve, reject) => {
    probe.once('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'EADDRINUSE')
        reject(
          new ConfigError(
            `--port ${config.port}: ${config.host}:${config.port} is already in use by another process`,
          ),
        );
      else if (err.code === 'EADDRNOTAVAIL' || err.code === 'ENOTFOUND')
        reject(new ConfigError(`--host ${config.host}: not an address of this machine`));
      else resolve(); // anything else: listen itself will say
    });
    probe.listen(config.port, config.host, () => probe.close(() => resolve()));
  });
}
