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
import type { Bindings, ChildLoggerOptions, Level, Logger } from 'pino';
import { installErrorHandling, outcomeOf, sendOutcome } from './errors.js';

export interface HttpServerOptions {
  logLevel: string;
  bodyLimit: number;
  /** A pino destination/stream for tests; stdout when absent. */
  logStream?: NodeJS.WritableStream;
}

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

type LogMethod = (...args: unknown[]) => void;

/**
 * `request.log`, made on first use: pino's child() serialises its bindings (~1.5 µs a request), and at the
 * default level most requests never log. A line at an enabled level creates the real child, with the request id.
 */
class LazyRequestLogger {
  private real: Logger | undefined;

  constructor(
    private readonly parent: Logger,
    private readonly bindings: Bindings,
    private readonly options: ChildLoggerOptions,
  ) {}

  private get logger(): Logger {
    return (this.real ??= this.parent.child(this.bindings, this.options));
  }

  private write(level: Level, args: unknown[]): void {
    if (this.real ? this.real.isLevelEnabled(level) : this.parent.isLevelEnabled(level))
      (this.logger[level] as LogMethod)(...args);
  }

  get level(): string {
    return this.real?.level ?? this.parent.level;
  }
  set level(level: string) {
    this.logger.level = level;
  }
  fatal(...args: unknown[]): void {
    this.write('fatal', args);
  }
  error(...args: unknown[]): void {
    this.write('error', args);
  }
  warn(...args: unknown[]): void {
    this.write('warn', args);
  }
  info(...args: unknown[]): void {
    this.write('info', args);
  }
  debug(...args: unknown[]): void {
    this.write('debug', args);
  }
  trace(...args: unknown[]): void {
    this.write('trace', args);
  }
  silent(): void {}
  child(bindings: Bindings, options?: ChildLoggerOptions): Logger {
    return this.logger.child(bindings, options);
  }
}
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
    // A route with its own log level gets pino's child at once; every other request a lazy one.
    childLoggerFactory: ((logger: Logger, bindings: Bindings, options: ChildLoggerOptions) =>
      options.level !== undefined
        ? logger.child(bindings, options)
        : new LazyRequestLogger(
            logger,
            bindings,
            options,
          )) as unknown as FastifyServerOptions['childLoggerFactory'],
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
