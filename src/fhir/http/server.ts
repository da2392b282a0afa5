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
import { queryNames } from '../query.js';

export interface HttpServerOptions {
  logLevel: string;
  bodyLimit: number;
  /**
   * Operator debugging only: log full URLs (query values, ids), refusal texts and error messages, which carry
   * health data. Off: request lines carry the route template and query parameter names only.
   */
  logValues?: boolean;
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
/** Query parameters that may carry secrets: their values never reach the logs, not even with logValues. */
const SECRET_PARAMS = /([?&](?:access_token|token|client_assertion|code|password)=)[^&]*/gi;

/** Per-route log settings (fastify route `config`). */
export interface RouteLogConfig {
  /**
   * The template of a path served by a catch-all route (the FHIR base): `/fhir/Patient/123` ->
   * `/fhir/Patient/:id`. Routes without it are logged by their fastify route pattern.
   */
  pathTemplate?: (path: string) => string;
}

/** What a request line says about the URL: the route template, never the path's ids. */
export function routeTemplateOf(request: Pick<FastifyRequest, 'url' | 'routeOptions'>): string {
  const routeOptions = request.routeOptions as FastifyRequest['routeOptions'] | undefined;
  const template = (routeOptions?.config as RouteLogConfig | undefined)?.pathTemplate;
  if (template) {
    const q = request.url.indexOf('?');
    return template(q < 0 ? request.url : request.url.slice(0, q));
  }
  // An unrouted path (404) may hold anything: it is not logged.
  return routeOptions?.url ?? '(no route)';
}

const MAX_LOGGED_PARAMS = 32;

/** The query's parameter names (with modifiers, e.g. `code:text`), each once; never their values. */
export function queryParamNames(url: string): string[] | undefined {
  const q = url.indexOf('?');
  if (q < 0 || q === url.length - 1) return undefined;
  return queryNames(url.slice(q + 1), MAX_LOGGED_PARAMS, (name) =>
    name.length > 100 ? `${name.slice(0, 100)}…` : name,
  );
}

/**
 * An error for the logs without its message (messages may quote what a request carried): its type, code and the
 * stack frames. With logValues, pino's standard serialiser (message included).
 */
function errorWithoutValues(err: Error): { type: string; message: string; stack: string; code?: string } {
  // pino passes whatever sits under `err`, strings included: those are the service's own texts, kept.
  if (!(err instanceof Error)) return err;
  const stack = err.stack ?? '';
  const frames = stack.indexOf('\n    at ');
  return {
    type: err.name,
    message: '[not logged: --log-values]',
    stack: frames < 0 ? '' : `${err.name}${stack.slice(frames)}`,
    ...('code' in err && typeof err.code === 'string' ? { code: err.code } : {}),
  };
}

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
      // Built property by property (no spread on a per-request path: docs/architecture.md).
      req: options.logValues
        ? (request: FastifyRequest) => ({
            method: request.method,
            route: routeTemplateOf(request),
            params: queryParamNames(request.url),
            url: request.url.replace(SECRET_PARAMS, '$1[redacted]'),
            remoteAddress: request.ip,
          })
        : (request: FastifyRequest) => ({
            method: request.method,
            route: routeTemplateOf(request),
            params: queryParamNames(request.url),
            remoteAddress: request.ip,
          }),
      ...(options.logValues ? {} : { err: errorWithoutValues }),
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
  installErrorHandling(app, { logValues: options.logValues ?? false });
  return app;
}
