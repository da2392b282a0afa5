/**
 * The fastify instance: pino logs with one request id per request (the client's X-Request-Id when it is a sane
 * token, else a UUID; echoed back), secrets redacted, the body limit, and the one error handler.
 */
import { randomUUID } from 'node:crypto';
import Fastify, {
  type FastifyInstance,
  type FastifyReply,
  type FastifyRequest,
  type FastifyServerOptions,
} from 'fastify';
import { installErrorHandling, outcomeOf, sendOutcome } from './errors.js';

export interface HttpServerOptions {
  logLevel: string;
  bodyLimit: number;
  /** A pino destination/stream for tests; stdout when absent. */
  logStream?: NodeJS.WritableStream;
}

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;
/** Query parameters that may carry secrets: their values never reach the logs. */
const SECRET_PARAMS = /([?&](?:access_token|token|client_assertion|code|password)=)[^&]*/gi;

export function createHttpServer(options: HttpServerOptions): FastifyInstance {
  const logger: FastifyServerOptions['logger'] = {
    level: options.logLevel,
    redact: {
      paths: [
        'req.headers.authorization',
        'req.headers.cookie',
        'headers.authorization',
        'headers.cookie',
        'res.headers["set-cookie"]',
        'authorization',
        'token',
        'access_token',
        'client_assertion',
      ],
      censor: '[redacted]',
    },
    serializers: {
      req(request: { method: string; url: string; ip?: string; hostname?: string }) {
        return {
          method: request.method,
          url: request.url.replace(SECRET_PARAMS, '$1[redacted]'),
          remoteAddress: request.ip,
        };
      },
    },
    ...(options.logStream ? { stream: options.logStream } : {}),
  };
  const app = Fastify({
    logger,
    bodyLimit: options.bodyLimit,
    requestIdHeader: false,
    genReqId: (request) => {
      const given = request.headers['x-request-id'];
      return typeof given === 'string' && REQUEST_ID.test(given) ? given : randomUUID();
    },
    // Finish in-flight requests on close, refuse new ones with 503, drop idle keep-alive connections.
    return503OnClosing: true,
    forceCloseConnections: 'idle',
    routerOptions: { maxParamLength: 500 },
    // Errors fastify raises before routing (a URL that is not valid percent-encoding): an OperationOutcome too.
    frameworkErrors: (error: unknown, _request: FastifyRequest, reply: FastifyReply) => {
      const { status, outcome, headers } = outcomeOf(error);
      return sendOutcome(reply, status, outcome, headers);
    },
  } as FastifyServerOptions);
  // A callback hook, not an async one: no promise per response on the hot path.
  app.addHook('onRequest', (request, reply, done) => {
    reply.header('X-Request-Id', request.id);
    done();
  });
  installErrorHandling(app);
  return app;
}
