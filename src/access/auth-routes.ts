/**
 * HTTP face of authentication: `POST /auth/token` (SMART Backend Services), the SMART configuration document, and
 * the hook that authenticates every FHIR request and attaches the caller's AccessPolicy to it.
 *
 * `registerAuth(app, options)` adds the hook to the given (root) instance, so it applies to the FHIR routes
 * whatever plugin registers them; the token route lives in its own encapsulated scope with its own form parser.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import {
  OpenAccess,
  type AccessPolicy,
  type Caller,
  type NetworkCaller,
} from '../fhir/interactions/access-policy.js';
import {
  InvalidTokenError,
  OAuthError,
  TokenService,
  type ClientRecord,
  type NetworkTokenEndpoint,
  type TokenRequest,
} from './tokens.js';
import { roleScopes } from './scopes.js';
import { addressKey, RateLimiter } from './rate-limit.js';
import type { RequestLimiter } from './shared-state.js';
import { fhirError } from '../fhir/outcome.js';
import { NETWORK_OPERATIONS, NetworkAccessPolicy, networkScopeRefusal } from './network-access-policy.js';

declare module 'fastify' {
  interface FastifyRequest {
    /** The authenticated caller of a FHIR request (set by the auth hook). */
    hieCaller?: Caller;
    /** The caller's access policy: every FhirContext of this request uses it. */
    hieAccess?: AccessPolicy;
  }
}

export interface AuthOptions {
  tokens: TokenService;
  /** Builds the caller's access policy (src/access/caller-access-policy.ts). */
  policyFor: (caller: Caller, request: FastifyRequest) => AccessPolicy;
  /** Mount point of the FHIR API. */
  fhirPrefix?: string;
  /** Public base URL of the service (no trailing slash); the token URL, which assertions must name as `aud`, derives from it. */
  publicBaseUrl?: string;
  /**
   * Development only: no authentication, everyone may do everything, and only callers on a loopback address
   * are served. Logged loudly at start.
   */
  devOpenLoopback?: boolean;
  /**
   * Rate limit of `POST /auth/token`: requests a minute per client address (every request, before its body is read)
   * and per client (once its assertion verified, so no one else can use up a client's allowance). Off when absent.
   */
  tokenRateLimit?: { perMinute: number; now?: () => number };
  /** The rate limits' buckets shared by the replicas (src/access/shared-state.ts); absent: this process's memory. */
  sharedRateLimits?: { perAddress: RequestLimiter; perClient: RequestLimiter };
  /** Other members' services at `POST /auth/token` (src/exchange); absent: members' assertions are refused. */
  network?: NetworkTokenEndpoint;
}

const LOOPBACK = new Set(['127.0.0.1', '::1', '::ffff:127.0.0.1']);
const FORM = 'application/x-www-form-urlencoded';
const TOKEN_PARAMS = ['grant_type', 'client_assertion_type', 'client_assertion', 'scope'] as const;

function baseUrlOf(request: FastifyRequest, configured: string | undefined): string {
  return configured ?? `${request.protocol}://${request.host}`;
}

const LOOPBACK_SPELLINGS = ['localhost', '127.0.0.1', '[::1]'];

/**
 * The audiences a client assertion may name: with --base-url, its token URL alone (the setting decides, whatever
 * Host the client sent); without it, the request's, in every spelling of a loopback host when the client used one
 * (`localhost` and `127.0.0.1` name the same service).
 */
function tokenUrlsOf(request: FastifyRequest, configured: string | undefined): string | string[] {
  if (configured !== undefined) return `${configured}/auth/token`;
  const own = `${request.protocol}://${request.host}/auth/token`;
  const hostname = request.hostname === '::1' ? '[::1]' : request.hostname;
  if (!LOOPBACK_SPELLINGS.includes(hostname)) return own;
  const port = request.port ? `:${request.port}` : '';
  return [
    own,
    ...LOOPBACK_SPELLINGS.map((host) => `${request.protocol}://${host}${port}/auth/token`).filter(
      (url) => url !== own,
    ),
  ];
}

function tooManyRequests(who: string, retryAfterSeconds: number): OAuthError {
  return new OAuthError(
    'temporarily_unavailable',
    `too many token requests ${who}; retry after ${retryAfterSeconds} s`,
    429,
    retryAfterSeconds,
  );
}

function sendUnauthorized(
  reply: FastifyReply,
  code: 'authentication-required' | 'token-invalid' | 'token-expired',
  diagnostics: string,
): FastifyReply {
  // RFC 6750 §3: error attributes only when a token was presented. Never echo the token.
  const challenge =
    code !== 'authentication-required'
      ? `Bearer realm="hie-ledger", error="invalid_token", error_description="${diagnostics.replace(/"/g, "'")}"`
      : 'Bearer realm="hie-ledger"';
  return reply
    .code(401)
    .header('www-authenticate', challenge)
    .header('content-type', 'application/fhir+json; charset=utf-8')
    .send(JSON.stringify(fhirError(code, diagnostics).outcome));
}

export function smartConfiguration(baseUrl: string): Record<string, unknown> {
  return {
    issuer: baseUrl,
    token_endpoint: `${baseUrl}/auth/token`,
    grant_types_supported: ['client_credentials'],
    token_endpoint_auth_methods_supported: ['private_key_jwt'],
    token_endpoint_auth_signing_alg_values_supported: ['ES384', 'ES256'],
    scopes_supported: [
      ...new Set(['system', 'clinician', 'lab', 'patient'].flatMap((r) => roleScopes(r as 'system'))),
    ],
    response_types_supported: ['token'],
    capabilities: ['client-confidential-asymmetric', 'permission-v2', 'context-standalone-patient'],
    code_challenge_methods_supported: [],
  };
}

export function registerAuth(app: FastifyInstance, options: AuthOptions): void {
  const prefix = options.fhirPrefix ?? '/fhir';

  if (options.devOpenLoopback) {
    app.log.warn(
      '!!! DEVELOPMENT MODE: authentication and consent are OFF; only loopback callers are served. Never use this with real data. !!!',
    );
  }

  // Paths under the FHIR prefix that must stay public: the capability statement (clients discover auth from it)
  // and the SMART configuration.
  // Declared up front so every request object keeps one shape (fastify's advice for per-request properties).
  app.decorateRequest('hieCaller', undefined);
  app.decorateRequest('hieAccess', undefined);

  authenticateFhirRequests(app, options, prefix);
  registerSmartConfiguration(app, options, prefix);
  registerTokenEndpoint(app, options);
}

/** The hook that authenticates every FHIR request (but the public ones) and attaches the caller's policy. */
function authenticateFhirRequests(app: FastifyInstance, options: AuthOptions, prefix: string): void {
  const { tokens } = options;
  const publicFhirPaths = new Set([`${prefix}/metadata`, `${prefix}/.well-known/smart-configuration`]);
  const network = options.network;
  const verifyNetwork = network?.verify ? (token: string) => network.verify!(token) : undefined;

  // A callback hook, not an async one: no promise per request. Early answers send without calling done().
  app.addHook('onRequest', (request, reply, done) => {
    const url = request.url;
    if (!(url === prefix || url.startsWith(`${prefix}/`) || url.startsWith(`${prefix}?`))) return done();
    const query = url.indexOf('?');
    if (publicFhirPaths.has(query < 0 ? url : url.slice(0, query))) return done();

    if (options.devOpenLoopback) {
      if (!LOOPBACK.has(request.socket.remoteAddress ?? '')) {
        sendUnauthorized(reply, 'authentication-required', 'development mode serves loopback callers only');
        return;
      }
      request.hieAccess = new OpenAccess({ participant: 'dev-open', role: 'open', scopes: ['system/*.*'] });
      request.hieCaller = request.hieAccess.caller;
      return done();
    }

    const header = request.headers.authorization;
    if (!header) {
      sendUnauthorized(
        reply,
        'authentication-required',
        'authentication required: send an access token from /auth/token as a Bearer token (`hie-ledger token --id ID --key KEY.pem` gets one, docs/access.md); for local development without tokens, serve with --auth dev-open',
      );
      return;
    }
    if (verifyNetwork && header.startsWith(NETWORK_BEARER)) {
      authenticateNetworkCall(request, reply, done, verifyNetwork, header.slice(7).trim(), prefix);
      return;
    }
    try {
      // A token verified before needs no syntax check again (the memo holds only tokens that passed it).
      let caller = header.startsWith('Bearer ') ? tokens.verifiedCaller(header.slice(7)) : undefined;
      if (!caller) {
        const match = /^Bearer +([A-Za-z0-9._~+/=-]+) *$/i.exec(header);
        if (!match) {
          sendUnauthorized(reply, 'token-invalid', 'malformed Authorization header: expected Bearer');
          return;
        }
        caller = tokens.verifyAccessToken(match[1]);
      }
      request.hieCaller = caller;
      request.hieAccess = options.policyFor(caller, request);
    } catch (err) {
      if (err instanceof InvalidTokenError) {
        sendUnauthorized(reply, err.code, err.reason);
        return;
      }
      return done(err as Error);
    }
    done();
  });
}

const NETWORK_BEARER = 'Bearer hnt1.';

/**
 * Another member's service with a network token (src/exchange/network-tokens.ts): verified against the member
 * directory (async: a revoked member is refused at once), then only the network operations at system level are
 * served (`network-token-scope` for anything else); their policy reads nothing through the local rules.
 */
function authenticateNetworkCall(
  request: FastifyRequest,
  reply: FastifyReply,
  done: (err?: Error) => void,
  verify: (token: string) => Promise<NetworkCaller>,
  token: string,
  prefix: string,
): void {
  verify(token).then(
    (caller) => {
      const url = request.url;
      const q = url.indexOf('?');
      const path = (q < 0 ? url : url.slice(0, q)).slice(prefix.length);
      if (!(path.startsWith('/$') && NETWORK_OPERATIONS.has(path.slice(2))))
        return done(networkScopeRefusal());
      request.hieAccess = new NetworkAccessPolicy(caller);
      request.hieCaller = request.hieAccess.caller;
      done();
    },
    (err: unknown) => {
      if (err instanceof InvalidTokenError) {
        sendUnauthorized(reply, err.code, err.reason);
        return;
      }
      done(
        fhirError('ledger-unavailable', 'the member directory cannot be read now; retry later', {
          headers: { 'retry-after': '5' },
        }),
      );
    },
  );
}

/** The SMART configuration document, at the root and under the FHIR base. */
function registerSmartConfiguration(app: FastifyInstance, options: AuthOptions, prefix: string): void {
  const sendSmartConfiguration = async (request: FastifyRequest, reply: FastifyReply) =>
    reply
      .header('cache-control', 'no-cache')
      .send(smartConfiguration(baseUrlOf(request, options.publicBaseUrl)));
  app.get('/.well-known/smart-configuration', sendSmartConfiguration);
  app.get(`${prefix}/.well-known/smart-configuration`, sendSmartConfiguration);
}

/** `POST /auth/token` in its own scope: its rate limits, its form parser, OAuth errors instead of OperationOutcomes. */
function registerTokenEndpoint(app: FastifyInstance, options: AuthOptions): void {
  const { tokens } = options;
  const limit = options.tokenRateLimit;
  const shared = limit ? options.sharedRateLimits : undefined;
  const perAddress: RequestLimiter | undefined = shared?.perAddress ?? (limit && new RateLimiter(limit));
  const perClient: RequestLimiter | undefined = shared?.perClient ?? (limit && new RateLimiter(limit));
  const admit = perClient
    ? async (client: ClientRecord) => {
        const wait = await perClient.take(client.clientId);
        if (wait > 0) throw tooManyRequests('from this client', wait);
      }
    : undefined;

  void app.register(async (scope) => {
    if (perAddress)
      scope.addHook('onRequest', async (request) => {
        const wait = await perAddress.take(addressKey(request.ip));
        if (wait > 0) throw tooManyRequests('from this address', wait);
      });
    scope.addContentTypeParser(FORM, { parseAs: 'string', bodyLimit: 64 * 1024 }, (_request, body, done) => {
      done(null, new URLSearchParams(body as string));
    });
    scope.setErrorHandler(sendOAuthError);
    scope.post('/auth/token', async (request, reply) => {
      const tokenRequest = readTokenRequest(request.body);
      const tokenUrl = tokenUrlsOf(request, options.publicBaseUrl);
      const network = options.network;
      const response =
        network && tokenRequest.client_assertion && network.accepts(tokenRequest.client_assertion)
          ? await network.exchange(tokenRequest, tokenUrl)
          : await tokens.exchange(tokenRequest, tokenUrl, admit);
      return reply.header('cache-control', 'no-store').header('pragma', 'no-cache').send(response);
    });
  });
}

/** The token endpoint's error handler: every error as an OAuth error response (RFC 6749 §5.2). */
async function sendOAuthError(
  error: Error & { statusCode?: number },
  _request: FastifyRequest,
  reply: FastifyReply,
): Promise<FastifyReply> {
  const oauth =
    error instanceof OAuthError
      ? error
      : new OAuthError(
          'invalid_request',
          (error.statusCode ?? 500) < 500
            ? `malformed token request (${error.message})`
            : 'the token request failed',
        );
  if (!(error instanceof OAuthError) && (error.statusCode ?? 500) >= 500)
    reply.log.error({ err: error.name }, 'token endpoint failure');
  if (oauth.retryAfterSeconds !== undefined) reply.header('retry-after', String(oauth.retryAfterSeconds));
  return reply
    .code(oauth.status)
    .header('cache-control', 'no-store')
    .header('pragma', 'no-cache')
    .send(oauth.toJSON());
}

/** The token request's parameters from its form body, each at most once. */
function readTokenRequest(body: unknown): TokenRequest {
  if (!(body instanceof URLSearchParams))
    throw new OAuthError('invalid_request', `the token request must be ${FORM}`);
  const params = body;
  const tokenRequest: TokenRequest = {};
  for (const name of TOKEN_PARAMS) {
    const values = params.getAll(name);
    if (values.length > 1) throw new OAuthError('invalid_request', `${name} is repeated`);
    if (values.length === 1) tokenRequest[name] = values[0];
  }
  return tokenRequest;
}
