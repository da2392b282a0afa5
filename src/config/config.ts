/**
 * One typed, validated configuration: command-line flags > environment variables > defaults.
 * Every setting is one entry of CONFIG_OPTIONS (its flag, variable, default, parser and help), so the CLI,
 * the docs (docs/configuration.md) and the validation never disagree. Invalid values are a ConfigError
 * (the CLI prints it and exits with code 2).
 */
import { resolve } from 'node:path';
import { Option, type Command } from 'commander';
import cron from 'node-cron';
import { parseMetricsAllow, type MetricsAllow } from './metrics-allow.js';

/** The organisation of the embedded ledger and CA when none is configured (--msp-id, HIE_MSP_ID). */
export const DEFAULT_MSP_ID = 'Org1MSP';

export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';

export interface Config {
  /** TCP port (0: any free port). */
  port: number;
  /** Interface to listen on. */
  host: string;
  /** Absolute path of the data directory (created on demand). */
  dataDir: string;
  logLevel: LogLevel;
  /** Debugging only: log query values, ids in paths and refusal texts (health data; docs/configuration.md). */
  logValues: boolean;
  /** Largest request body accepted, in bytes (413 above). */
  bodyLimit: number;
  /** Public base URL of the FHIR endpoint, e.g. https://hie.example.org/fhir; derived from Host when absent. */
  baseUrl?: string;
  /** Which ledger adapter: the embedded chain (default) or a Fabric network (docs/fabric.md). */
  ledger: 'embedded' | 'fabric';
  /** The Fabric connection file (JSON or YAML) for `ledger: fabric` (and `ca: fabric`). */
  fabricConfig?: string;
  /** The organisation's MSP id on the embedded ledger and its embedded CA. */
  mspId: string;
  /** Serve the embedded ledger to other members over the Fabric Gateway protocol on a loopback address (demos, tests). */
  serveLedger?: { host: string; port: number };
  /** The members admitted to the served ledger: JSON [{ mspId, caCertificate }] (docs/ledger.md). */
  ledgerMembers?: string;
  /** The participant commands' certificate authority: the data directory's embedded CA or the Fabric CA. */
  ca: 'embedded' | 'fabric';
  /** Where the compiled JSON-schema validator is kept (absent: node_modules/.cache/hie-ledger). */
  cacheDir?: string;
  /** The organisation this service keeps records for (`Organization/id`): its systems choose ids of new resources. */
  organization?: string;
  /** Authentication: SMART Backend Services tokens (default), or dev-open (no auth, loopback only; docs/access.md). */
  auth: 'smart' | 'dev-open';
  /** Integrity anchoring (docs/integrity.md): most anchors per ledger transaction (one Merkle batch). */
  anchorBatchSize: number;
  /** Memory for the store's cache of recently read current versions (bytes); 0 turns it off. */
  readCache: number;
  /** SQLite: concurrent writes share one commit (group commit), each acknowledged after it; off for comparison. */
  groupCommit: boolean;
  /** Where resources are kept: SQLite in the data directory (default) or a PostgreSQL database (docs/store.md). */
  store: 'sqlite' | 'postgres';
  /** The PostgreSQL database of `store: postgres`, as a postgres:// URL (may hold a password: never logged). */
  databaseUrl?: string;
  /** Longest wait (ms) before a partial anchor batch goes to the ledger. */
  anchorIntervalMs: number;
  /** Most anchor batches submitted to the ledger at once (each its own key range: they never conflict). */
  anchorInFlight: number;
  /** Anchor every write (off only for benchmarks and diagnostics: versions are then reported unanchored). */
  anchoring: boolean;
  /** Schedule of the integrity audit (node-cron expression), or 'off'. */
  auditCron: string;
  /** Validation of writes: full R4 rules (structure, invariants, bindings, profiles) or the JSON schema only. */
  validation: 'full' | 'schema';
  /** The network's shared profiles: folders of JSON or FHIR package tarballs (docs/validation.md). */
  igPaths: string[];
  /** Who may read GET /metrics besides loopback callers: `all`, or listed addresses and networks. */
  metricsAllow: MetricsAllow;
  /** Readiness: the most blocks the consent cache may be behind the ledger's last block. */
  readyConsentLag: number;
  /** Readiness is degraded this many days before an enrolment certificate expires (docs/configuration.md). */
  certExpiryWarnDays: number;
  /** Profiles every resource of a type must conform to, e.g. { Patient: ['http://example.org/fhir/StructureDefinition/hie-patient'] }. */
  requiredProfiles: Record<string, string[]>;
  /** The validator's rule families at `warn` or `error` on writes (docs/validation.md, "Rule families"); absent: default. */
  validationLevels: Record<string, 'warn' | 'error'>;
  /** The levels the network pins: records received from members and verified are not refused by stricter ones. */
  networkValidationLevels: Record<string, 'warn' | 'error'>;
  /** Token requests a minute allowed per client address and per client at POST /auth/token; 0 turns the limit off. */
  tokenRateLimit: number;
  /** Lifetime of the access tokens /auth/token issues, seconds (at most an hour). */
  tokenSeconds: number;
  /** Local-network mode (development, demos, CI): calls to members may use http and private or loopback addresses. */
  networkLocal: boolean;
  /** PurposeOfUse codes this service serves to other members (default TREAT). */
  networkPurposes: string[];
  /** Largest response accepted from another member (bytes). */
  networkMaxResponse: number;
  /** Most simultaneous connections to one member. */
  networkConnections: number;
  /** Per call to a member: connection, headers and body within this time (ms). */
  networkMemberTimeoutMs: number;
  /** Overall deadline of a request that calls other members (ms). */
  networkDeadlineMs: number;
  /** How long a pull verifies again records whose root this peer's ledger does not hold yet (ms), within the deadline. */
  networkPendingRetryMs: number;
  /** How long a home's locate answer is reused without asking the home again (ms; 0: always asked). */
  networkLocateFreshMs: number;
  /** Lifetime of the link tokens this home issues (seconds). */
  linkTokenSeconds: number;
  /** How long a finished bulk job's files are kept before they are deleted (seconds; docs/bulk.md). */
  bulkRetentionSeconds: number;
  /** Where bulk jobs keep their files; absent: DATA/bulk. Replicas on PostgreSQL share one (docs/replicas.md). */
  bulkDir?: string;
  /** How long a replica's lease on a running bulk job lasts without renewal (seconds; PostgreSQL store only). */
  bulkLeaseSeconds: number;
  /** How often custom SearchParameters are read again from the store (other replicas' changes; seconds, 0: never). */
  searchParameterRefreshSeconds: number;
  /** `$reindex`: pause between pages of resources (milliseconds), so a reindex does not starve requests. */
  reindexPauseMs: number;
  /** `DELETE [type]?criteria` matching several resources: deleted (admins only) instead of 412. */
  conditionalDeleteMultiple: boolean;
  /** Most resources one conditional delete deletes (more matches: 412, nothing deleted). */
  conditionalDeleteMax: number;
  /** Folder `$import` may read server-local files from; absent: none. */
  importRoot?: string;
  /** Origins (`https://host:port`) `$import` may fetch from. */
  importAllow: string[];
  /** Most bytes an `$import` source may have, fetched and after decompression. */
  importMaxBytes: number;
  /** Most records one `$network-records` answer carries; more is refused (narrow with _type/_since). */
  networkMaxRecords: number;
  /** Network requests are refused while the consent event stream is more than this many seconds behind. */
  networkMaxLagSeconds: number;
  /** Security labels (`system|code`, or a bare code of any system) never sent to another member. */
  networkWithholdLabels: string[];
}

/** HIE_DEBUG=1: the CLI prints an error's stack trace after its one-line message (for a bug report). */
export function stackTracesWanted(env: NodeJS.ProcessEnv = process.env): boolean {
  return env.HIE_DEBUG !== undefined && env.HIE_DEBUG !== '' && env.HIE_DEBUG !== '0';
}

export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

export interface OptionSpec<K extends keyof Config> {
  key: K;
  /** Commander flag, e.g. `--port <number>`. */
  flag: string;
  env: string;
  default?: string;
  description: string;
  parse(text: string, source: string): Config[K];
}

const LOG_LEVELS: LogLevel[] = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];
const SIZE_UNITS: Record<string, number> = {
  '': 1,
  k: 1024,
  kb: 1024,
  kib: 1024,
  m: 1024 ** 2,
  mb: 1024 ** 2,
  mib: 1024 ** 2,
  g: 1024 ** 3,
  gb: 1024 ** 3,
  gib: 1024 ** 3,
};

/**
 * The validator's rule families (src/fhir/validation/rule-families.ts RULE_FAMILIES; config imports nothing, a test
 * keeps the two lists equal) and `all`.
 */
export const VALIDATION_FAMILY_NAMES = [
  'bindings',
  'slicing',
  'extensions',
  'bundle',
  'invariants',
  'structure',
  'narrative',
  'conformance',
  'terminology-not-loaded',
] as const;

/** `family=warn|error,...` (`all=...` sets every family; later pairs win). */
function parseFamilyLevels(text: string, source: string): Record<string, 'warn' | 'error'> {
  const out: Record<string, 'warn' | 'error'> = {};
  for (const pair of text
    .split(',')
    .map((p) => p.trim())
    .filter((p) => p !== '')) {
    const match = /^([a-z][a-z-]*)=(warn|error)$/.exec(pair);
    if (!match) throw new ConfigError(`${source}: '${pair}' is not family=warn or family=error`);
    const [, family, level] = match;
    if (family !== 'all' && !(VALIDATION_FAMILY_NAMES as readonly string[]).includes(family))
      throw new ConfigError(
        `${source}: '${family}' is not a rule family (${VALIDATION_FAMILY_NAMES.join(', ')}, or all)`,
      );
    out[family] = level as 'warn' | 'error';
  }
  return out;
}

function parsePort(text: string, source: string): number {
  if (!/^\d+$/.test(text) || Number(text) > 65535)
    throw new ConfigError(`${source}: '${text}' is not a port number (0-65535)`);
  return Number(text);
}

/** `PORT` or `HOST:PORT` on a loopback address: a served embedded ledger is never reachable from the network. */
function parseServeLedger(text: string, source: string): { host: string; port: number } {
  const match = /^(?:(.+):)?(\d+)$/.exec(text.trim());
  const host = (match?.[1] ?? '127.0.0.1').replace(/^\[(.*)\]$/, '$1');
  if (!match) throw new ConfigError(`${source}: '${text}' is not PORT or HOST:PORT`);
  const loopback = host === 'localhost' || host === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
  if (!loopback) {
    throw new ConfigError(
      `${source}: '${host}' is not a loopback address: a served embedded ledger is one process posing as the whole network, for demos and tests on this machine only`,
    );
  }
  return { host, port: parsePort(match[2]!, source) };
}

function parseSize(text: string, source: string, allowZero = false): number {
  const match = /^(\d+)\s*([a-z]*)$/i.exec(text.trim());
  const unit = match ? SIZE_UNITS[match[2].toLowerCase()] : undefined;
  if (!match || unit === undefined || (Number(match[1]) === 0 && !allowZero)) {
    throw new ConfigError(`${source}: '${text}' is not a size in bytes (e.g. 16777216 or 16MiB)`);
  }
  return Number(match[1]) * unit;
}

function parseBaseUrl(text: string, source: string): string {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new ConfigError(`${source}: '${text}' is not an absolute URL`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:')
    throw new ConfigError(`${source}: '${text}' must be http(s)`);
  return text.replace(/\/+$/, '');
}

/** v3 Confidentiality R and V, and the sensitive-information ActCodes: withheld from the network by default. */
const V3_CONFIDENTIALITY = 'http://terminology.hl7.org/CodeSystem/v3-Confidentiality';
const V3_ACT_CODE = 'http://terminology.hl7.org/CodeSystem/v3-ActCode';
export const DEFAULT_WITHHOLD_LABELS: readonly string[] = [
  ...['R', 'V'].map((code) => `${V3_CONFIDENTIALITY}|${code}`),
  ...['HIV', 'PSY', 'SUD', 'ETH', 'SDV', 'SEX', 'STD'].map((code) => `${V3_ACT_CODE}|${code}`),
];

// Adding a setting: add it to Config and one entry here, and name its key in the settings list of each command
// that reads it (SERVE_SETTINGS takes every key but 'ca'); the help and loadSettings pick it up.
export const CONFIG_OPTIONS: OptionSpec<keyof Config>[] = [
  {
    key: 'port',
    flag: '--port <number>',
    env: 'HIE_PORT',
    default: '8080',
    description: 'TCP port to listen on',
    parse: parsePort,
  },
  {
    key: 'host',
    flag: '--host <address>',
    env: 'HIE_HOST',
    default: '127.0.0.1',
    description: 'interface to listen on (0.0.0.0 for all)',
    parse: (text, source) => {
      if (text.trim() === '') throw new ConfigError(`${source}: the host may not be empty`);
      return text.trim();
    },
  },
  {
    key: 'dataDir',
    flag: '--data-dir <path>',
    env: 'HIE_DATA_DIR',
    default: './data',
    description: 'data directory (store, ledger, identities; serve creates it on demand)',
    parse: (text, source) => {
      if (text.trim() === '') throw new ConfigError(`${source}: the data directory may not be empty`);
      return resolve(text);
    },
  },
  {
    key: 'logLevel',
    flag: '--log-level <level>',
    env: 'HIE_LOG_LEVEL',
    default: 'info',
    description: `log level (${LOG_LEVELS.join(', ')})`,
    parse: (text, source) => {
      if (!LOG_LEVELS.includes(text as LogLevel))
        throw new ConfigError(`${source}: '${text}' is not one of ${LOG_LEVELS.join(', ')}`);
      return text as LogLevel;
    },
  },
  {
    key: 'logValues',
    flag: '--log-values <on|off>',
    env: 'HIE_LOG_VALUES',
    default: 'off',
    description:
      'debugging only: log full URLs (query values, ids), refusal texts and error messages: these hold HEALTH DATA',
    parse: parseOnOff,
  },
  {
    key: 'bodyLimit',
    flag: '--body-limit <bytes>',
    env: 'HIE_BODY_LIMIT',
    default: '16MiB',
    description: 'largest request body accepted (bytes, or with KiB/MiB/GiB)',
    parse: parseSize,
  },
  {
    key: 'baseUrl',
    flag: '--base-url <url>',
    env: 'HIE_BASE_URL',
    description: 'public base URL of the FHIR endpoint (default: from the Host header + /fhir)',
    parse: parseBaseUrl,
  },
  {
    key: 'ledger',
    flag: '--ledger <kind>',
    env: 'HIE_LEDGER',
    default: 'embedded',
    description: 'ledger adapter: embedded (in-process chain) or fabric (needs --fabric-config)',
    parse: (text, source) => {
      if (text !== 'embedded' && text !== 'fabric')
        throw new ConfigError(`${source}: '${text}' is not one of embedded, fabric`);
      return text;
    },
  },
  {
    key: 'fabricConfig',
    flag: '--fabric-config <file>',
    env: 'HIE_FABRIC_CONFIG',
    description:
      'Fabric connection file (JSON or YAML: peer, TLS root, MSP id, channel, chaincode, identity; docs/fabric.md)',
    parse: (text, source) => {
      if (text.trim() === '')
        throw new ConfigError(`${source}: the Fabric configuration path may not be empty`);
      return resolve(text);
    },
  },
  {
    key: 'mspId',
    flag: '--msp-id <id>',
    env: 'HIE_MSP_ID',
    default: DEFAULT_MSP_ID,
    description: "the organisation's MSP id on the embedded ledger and its embedded CA",
    parse: (text, source) => {
      if (text.trim() === '') throw new ConfigError(`${source}: the MSP id may not be empty`);
      return text.trim();
    },
  },
  {
    key: 'serveLedger',
    flag: '--serve-ledger <[host:]port>',
    env: 'HIE_SERVE_LEDGER',
    description:
      'also serve the embedded ledger to other members (Fabric Gateway protocol, TLS) on 127.0.0.1:PORT (or a loopback host:port): one process is then the whole network, demos and tests only',
    parse: parseServeLedger,
  },
  {
    key: 'ledgerMembers',
    flag: '--ledger-members <file>',
    env: 'HIE_LEDGER_MEMBERS',
    description:
      'members admitted to the served ledger: JSON array of { mspId, caCertificate } (hie-ledger ledger connect writes entries)',
    parse: (text, source) => {
      if (text.trim() === '') throw new ConfigError(`${source}: the members file path may not be empty`);
      return resolve(text);
    },
  },
  {
    key: 'ca',
    flag: '--ca <kind>',
    env: 'HIE_CA',
    default: 'embedded',
    description:
      'certificate authority of the participant commands and member register: embedded (DIR/identity/ca) or fabric (the "ca" section of --fabric-config)',
    parse: (text, source) => {
      if (text !== 'embedded' && text !== 'fabric')
        throw new ConfigError(`${source}: '${text}' is not one of embedded, fabric`);
      return text;
    },
  },
  {
    key: 'cacheDir',
    flag: '--cache-dir <path>',
    env: 'HIE_CACHE_DIR',
    description: 'where the compiled JSON-schema validator is kept (default: node_modules/.cache/hie-ledger)',
    parse: (text, source) => {
      if (text.trim() === '') throw new ConfigError(`${source}: the cache directory may not be empty`);
      return resolve(text);
    },
  },
  {
    key: 'auth',
    flag: '--auth <mode>',
    env: 'HIE_AUTH',
    default: 'smart',
    description:
      'authentication: smart (SMART Backend Services tokens) or dev-open (NO authentication, loopback only, development)',
    parse: (text, source) => {
      if (text !== 'smart' && text !== 'dev-open')
        throw new ConfigError(`${source}: '${text}' is not one of smart, dev-open`);
      return text;
    },
  },
  {
    key: 'organization',
    flag: '--organization <reference>',
    env: 'HIE_ORGANIZATION',
    description:
      "the organisation this service keeps records for (Organization/ID): its systems may create with chosen ids (PUT); others' may not",
    parse: (text, source) => {
      if (!/^Organization\/[A-Za-z0-9\-.]{1,64}$/.test(text.trim()))
        throw new ConfigError(`${source}: '${text}' is not an Organization reference (Organization/ID)`);
      return text.trim();
    },
  },
  {
    key: 'readCache',
    flag: '--read-cache <bytes>',
    env: 'HIE_READ_CACHE',
    default: '32MiB',
    description: 'memory for recently read resources (bytes, or with KiB/MiB/GiB); 0 turns the cache off',
    parse: (text, source) => parseSize(text, source, true),
  },
  {
    key: 'groupCommit',
    flag: '--group-commit <on|off>',
    env: 'HIE_GROUP_COMMIT',
    default: 'on',
    description:
      'SQLite: concurrent writes share one commit, each acknowledged after it (off: one commit per write, to compare)',
    parse: (text, source) => {
      if (text !== 'on' && text !== 'off') throw new ConfigError(`${source}: '${text}' is not on or off`);
      return text === 'on';
    },
  },
  {
    key: 'store',
    flag: '--store <kind>',
    env: 'HIE_STORE',
    default: 'sqlite',
    description:
      'where resources are kept: sqlite (DATA_DIR/resources.sqlite) or postgres (needs --database-url; several replicas may share it)',
    parse: (text, source) => {
      if (text !== 'sqlite' && text !== 'postgres')
        throw new ConfigError(`${source}: '${text}' is not one of sqlite, postgres`);
      return text;
    },
  },
  {
    key: 'databaseUrl',
    flag: '--database-url <url>',
    env: 'HIE_DATABASE_URL',
    description:
      'the PostgreSQL database of --store postgres: postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?options]',
    parse: parseDatabaseUrl,
  },
  {
    key: 'anchorBatchSize',
    flag: '--anchor-batch-size <n>',
    env: 'HIE_ANCHOR_BATCH_SIZE',
    default: '1000',
    description: 'most resource versions anchored per ledger transaction (Merkle batch)',
    parse: (text, source) => parseWholeNumber(text, source, 1, 1_000_000),
  },
  {
    key: 'anchorIntervalMs',
    flag: '--anchor-interval-ms <ms>',
    env: 'HIE_ANCHOR_INTERVAL_MS',
    default: '1000',
    description: 'longest wait before a partial anchor batch goes to the ledger (ms)',
    parse: (text, source) => parseWholeNumber(text, source, 1, 3_600_000),
  },
  {
    key: 'anchorInFlight',
    flag: '--anchor-in-flight <n>',
    env: 'HIE_ANCHOR_IN_FLIGHT',
    default: '4',
    description: 'most anchor batches submitted to the ledger at once (Fabric orders them concurrently)',
    parse: (text, source) => parseWholeNumber(text, source, 1, 64),
  },
  {
    key: 'anchoring',
    flag: '--anchoring <on|off>',
    env: 'HIE_ANCHORING',
    default: 'on',
    description: 'anchor every write on the ledger (off: benchmarks and diagnostics only)',
    parse: (text, source) => {
      if (text !== 'on' && text !== 'off') throw new ConfigError(`${source}: '${text}' is not on or off`);
      return text === 'on';
    },
  },
  {
    key: 'auditCron',
    flag: '--audit-cron <expression>',
    env: 'HIE_AUDIT_CRON',
    default: '0 3 * * *',
    description: "schedule of the integrity audit (cron expression, e.g. '0 3 * * *'), or off",
    parse: (text, source) => {
      const expression = text.trim();
      if (!/^(off|false|none|disabled)$/i.test(expression) && !cron.validate(expression)) {
        throw new ConfigError(`${source}: '${text}' is not a cron expression (or off)`);
      }
      return expression;
    },
  },
  {
    key: 'validation',
    flag: '--validation <full|schema>',
    env: 'HIE_VALIDATION',
    default: 'full',
    description: 'validation of every write: full R4 rules and profiles, or the R4 JSON schema only',
    parse: (text, source) => {
      if (text !== 'full' && text !== 'schema')
        throw new ConfigError(`${source}: '${text}' is not full or schema`);
      return text;
    },
  },
  {
    key: 'igPaths',
    flag: '--ig <paths>',
    env: 'HIE_IG',
    default: '',
    description: 'shared profiles to load: folders of JSON or FHIR package .tgz files, comma-separated',
    parse: (text) =>
      text
        .split(',')
        .map((path) => path.trim())
        .filter((path) => path !== '')
        .map((path) => resolve(path)),
  },
  {
    key: 'requiredProfiles',
    flag: '--require-profile <type=url,...>',
    env: 'HIE_REQUIRE_PROFILE',
    default: '',
    description:
      'profiles every resource of a type must conform to, e.g. Patient=http://example.org/StructureDefinition/p',
    parse: (text, source) => {
      const required: Record<string, string[]> = {};
      for (const pair of text
        .split(',')
        .map((p) => p.trim())
        .filter((p) => p !== '')) {
        const match = /^([A-Z][A-Za-z]+)=(\S+)$/.exec(pair);
        if (!match) throw new ConfigError(`${source}: '${pair}' is not Type=profile-url`);
        (required[match[1]] ??= []).push(match[2]);
      }
      return required;
    },
  },
  {
    key: 'validationLevels',
    flag: '--validation-level <levels>',
    env: 'HIE_VALIDATION_LEVEL',
    default: '',
    description:
      'rule families at warn (their errors reported as warnings, the write accepted) or error (refused) on writes, e.g. bindings=warn,slicing=warn',
    parse: parseFamilyLevels,
  },
  {
    key: 'networkValidationLevels',
    flag: '--network-validation <levels>',
    env: 'HIE_NETWORK_VALIDATION',
    default: '',
    description:
      "the network's pinned rule-family levels: a record received from a member and verified against its anchor is never refused by a family at warn here",
    parse: parseFamilyLevels,
  },
  {
    key: 'tokenRateLimit',
    flag: '--token-rate-limit <n>',
    env: 'HIE_TOKEN_RATE_LIMIT',
    default: '60',
    description:
      'token requests a minute per client address and per client at /auth/token (429 above); 0: off',
    parse: (text, source) => parseWholeNumber(text, source, 0, 1_000_000),
  },
  {
    key: 'tokenSeconds',
    flag: '--token-seconds <n>',
    env: 'HIE_TOKEN_SECONDS',
    default: '300',
    description:
      'lifetime of the access tokens /auth/token issues, 60-3600 seconds; clients renew with a new assertion (no refresh tokens)',
    parse: (text, source) => parseWholeNumber(text, source, 60, 3600),
  },
  {
    key: 'metricsAllow',
    flag: '--metrics-allow <addresses>',
    env: 'HIE_METRICS_ALLOW',
    default: 'loopback',
    description:
      'who may read GET /metrics: loopback (default), all, or loopback and these comma-separated addresses/CIDR networks',
    parse: (text, source) => {
      try {
        return parseMetricsAllow(text);
      } catch (err) {
        throw new ConfigError(`${source}: ${(err as Error).message}`);
      }
    },
  },
  {
    key: 'readyConsentLag',
    flag: '--ready-consent-lag <blocks>',
    env: 'HIE_READY_CONSENT_LAG',
    default: '100',
    description: "readiness: the most blocks the consent cache may be behind the ledger's last block",
    parse: (text, source) => parseWholeNumber(text, source, 0, 1_000_000_000),
  },
  {
    key: 'certExpiryWarnDays',
    flag: '--cert-expiry-warn-days <days>',
    env: 'HIE_CERT_EXPIRY_WARN_DAYS',
    default: '30',
    description:
      'readiness is degraded (and a warning logged) this many days before the service identity, CA or a participant certificate expires',
    parse: (text, source) => parseWholeNumber(text, source, 0, 3650),
  },
  {
    key: 'networkLocal',
    flag: '--network-local <on|off>',
    env: 'HIE_NETWORK_LOCAL',
    default: 'off',
    description:
      'local-network mode (development, demos, CI only): calls to other members may use http and private or loopback addresses',
    parse: parseOnOff,
  },
  {
    key: 'networkPurposes',
    flag: '--network-purposes <codes>',
    env: 'HIE_NETWORK_PURPOSES',
    default: 'TREAT',
    description: 'PurposeOfUse codes this service serves to other members, comma-separated',
    parse: (text, source) => {
      const codes = [
        ...new Set(
          text
            .split(',')
            .map((code) => code.trim())
            .filter((code) => code !== ''),
        ),
      ];
      if (codes.length === 0 || codes.some((code) => !/^[A-Z][A-Z0-9_-]{0,63}$/.test(code)))
        throw new ConfigError(
          `${source}: '${text}' is not a comma-separated list of PurposeOfUse codes (e.g. TREAT)`,
        );
      return codes;
    },
  },
  {
    key: 'networkMaxResponse',
    flag: '--network-max-response <bytes>',
    env: 'HIE_NETWORK_MAX_RESPONSE',
    default: '64MiB',
    description:
      'largest response accepted from another member (bytes, or with KiB/MiB/GiB); larger is aborted',
    parse: parseSize,
  },
  {
    key: 'networkConnections',
    flag: '--network-connections <n>',
    env: 'HIE_NETWORK_CONNECTIONS',
    default: '4',
    description: 'most simultaneous connections to one member',
    parse: (text, source) => parseWholeNumber(text, source, 1, 1000),
  },
  {
    key: 'networkMemberTimeoutMs',
    flag: '--network-member-timeout-ms <ms>',
    env: 'HIE_NETWORK_MEMBER_TIMEOUT_MS',
    default: '10000',
    description: 'per call to another member: connection, headers and the whole body within this time (ms)',
    parse: (text, source) => parseWholeNumber(text, source, 1, 600_000),
  },
  {
    key: 'networkDeadlineMs',
    flag: '--network-deadline-ms <ms>',
    env: 'HIE_NETWORK_DEADLINE_MS',
    default: '20000',
    description: 'overall deadline of a request that calls other members (ms)',
    parse: (text, source) => parseWholeNumber(text, source, 1, 600_000),
  },
  {
    key: 'networkPendingRetryMs',
    flag: '--network-pending-retry-ms <ms>',
    env: 'HIE_NETWORK_PENDING_RETRY_MS',
    default: '3000',
    description:
      "how long a network fetch verifies again records whose root this peer's ledger does not hold yet (ms, within the deadline; 0: no retry)",
    parse: (text, source) => parseWholeNumber(text, source, 0, 600_000),
  },
  {
    key: 'networkLocateFreshMs',
    flag: '--network-locate-fresh-ms <ms>',
    env: 'HIE_NETWORK_LOCATE_FRESH_MS',
    default: '0',
    description:
      "how long a network fetch reuses the patient's home's last locate answer for the same actor and purpose without asking the home again (ms; 0, the default: the home is asked every time); a custodian linked or a grant added meanwhile is found only after it",
    parse: (text, source) => parseWholeNumber(text, source, 0, 600_000),
  },
  {
    key: 'linkTokenSeconds',
    flag: '--link-token-seconds <seconds>',
    env: 'HIE_LINK_TOKEN_SECONDS',
    default: '600',
    description: 'lifetime of the patient link tokens this home issues (seconds, at most a day)',
    parse: (text, source) => parseWholeNumber(text, source, 1, 86_400),
  },
  {
    key: 'bulkRetentionSeconds',
    flag: '--bulk-retention <seconds>',
    env: 'HIE_BULK_RETENTION',
    default: '3600',
    description:
      'how long a finished bulk job ($export) and its files are kept before they are deleted (seconds, 60 to 604800)',
    parse: (text, source) => parseWholeNumber(text, source, 60, 604_800),
  },
  {
    key: 'bulkDir',
    flag: '--bulk-dir <dir>',
    env: 'HIE_BULK_DIR',
    description:
      "where bulk jobs ($export, $import) keep their files (default: DATA/bulk); replicas on PostgreSQL mount one shared folder here, so any of them serves a job's files and takes over its work (docs/replicas.md)",
    parse: (text) => text,
  },
  {
    key: 'bulkLeaseSeconds',
    flag: '--bulk-lease <seconds>',
    env: 'HIE_BULK_LEASE',
    default: '30',
    description:
      'PostgreSQL store: how long a replica holds a running bulk job without renewing its lease (renewed every third of it); a job whose replica died is taken over by another after it (seconds, 2 to 3600)',
    parse: (text, source) => parseWholeNumber(text, source, 2, 3600),
  },
  {
    key: 'searchParameterRefreshSeconds',
    flag: '--search-param-refresh <seconds>',
    env: 'HIE_SEARCH_PARAM_REFRESH',
    default: '10',
    description:
      'how often custom SearchParameters are read again from the store, for changes made by other replicas (seconds, 0 to 3600; 0: only at start and on own writes)',
    parse: (text, source) => parseWholeNumber(text, source, 0, 3600),
  },
  {
    key: 'reindexPauseMs',
    flag: '--reindex-pause <ms>',
    env: 'HIE_REINDEX_PAUSE',
    default: '20',
    description: '$reindex: pause between pages of resources (milliseconds, 0 to 60000)',
    parse: (text, source) => parseWholeNumber(text, source, 0, 60_000),
  },
  {
    key: 'conditionalDeleteMultiple',
    flag: '--delete-multiple <on|off>',
    env: 'HIE_DELETE_MULTIPLE',
    default: 'off',
    description:
      'DELETE [type]?criteria matching several resources: admins delete them all (up to --delete-multiple-max); off: 412',
    parse: parseOnOff,
  },
  {
    key: 'conditionalDeleteMax',
    flag: '--delete-multiple-max <n>',
    env: 'HIE_DELETE_MULTIPLE_MAX',
    default: '100',
    description:
      'most resources one conditional delete deletes (1 to 999); more matches: 412, nothing deleted',
    parse: (text, source) => parseWholeNumber(text, source, 1, 999),
  },
  {
    key: 'importRoot',
    flag: '--import-root <dir>',
    env: 'HIE_IMPORT_ROOT',
    description:
      '$import: the folder server-local source files must be in (default: no server-local sources)',
    parse: (text) => text,
  },
  {
    key: 'importAllow',
    flag: '--import-allow <origins>',
    env: 'HIE_IMPORT_ALLOW',
    default: '',
    description:
      '$import: comma-separated origins (scheme://host:port) it may fetch NDJSON from; empty (default): none',
    parse: (text, source) => {
      const origins: string[] = [];
      for (const item of text
        .split(',')
        .map((t) => t.trim())
        .filter(Boolean)) {
        let url: URL;
        try {
          url = new URL(item);
        } catch {
          throw new ConfigError(`${source}: '${item}' is not an origin such as https://host:443`);
        }
        if ((url.protocol !== 'https:' && url.protocol !== 'http:') || url.pathname !== '/' || url.search)
          throw new ConfigError(`${source}: '${item}' is not an http(s) origin (scheme://host:port)`);
        origins.push(url.origin);
      }
      return origins;
    },
  },
  {
    key: 'importMaxBytes',
    flag: '--import-max-bytes <bytes>',
    env: 'HIE_IMPORT_MAX_BYTES',
    default: '1073741824',
    description: '$import: most bytes a source may have, fetched and after decompression (default 1 GiB)',
    parse: (text, source) => parseWholeNumber(text, source, 1, 1_099_511_627_776),
  },
  {
    key: 'networkMaxRecords',
    flag: '--network-max-records <n>',
    env: 'HIE_NETWORK_MAX_RECORDS',
    default: '5000',
    description:
      'most records one answer to another member carries ($network-records); more is refused, asking to narrow with _type or _since',
    parse: (text, source) => parseWholeNumber(text, source, 1, 1_000_000),
  },
  {
    key: 'networkMaxLagSeconds',
    flag: '--network-max-lag-seconds <n>',
    env: 'HIE_NETWORK_MAX_LAG_SECONDS',
    default: '30',
    description:
      "requests of other members are refused (503) while this service's consent event stream is more than this many seconds behind the ledger, or stopped",
    parse: (text, source) => parseWholeNumber(text, source, 0, 86_400),
  },
  {
    key: 'networkWithholdLabels',
    flag: '--network-withhold-labels <list>',
    env: 'HIE_NETWORK_WITHHOLD_LABELS',
    default: DEFAULT_WITHHOLD_LABELS.join(','),
    description:
      'security labels (meta.security) of records never sent to another member: comma-separated system|code, or a bare code (any system); "none" for none',
    parse: parseSecurityLabels,
  },
] as OptionSpec<keyof Config>[];

function parseSecurityLabels(text: string, source: string): string[] {
  if (text.trim() === 'none') return [];
  const labels = [
    ...new Set(
      text
        .split(',')
        .map((label) => label.trim())
        .filter((label) => label !== ''),
    ),
  ];
  const bad = labels.find((label) => !/^([^|\s]+\|)?[^|\s]+$/.test(label));
  if (labels.length === 0 || bad !== undefined)
    throw new ConfigError(
      `${source}: '${bad ?? text}' is not a security label (system|code, or a bare code), nor 'none'`,
    );
  return labels;
}

/** A postgres:// URL. Its text is never repeated in a message: it may hold a password. */
function parseDatabaseUrl(text: string, source: string): string {
  let url: URL | undefined;
  try {
    url = new URL(text.trim());
  } catch {
    url = undefined;
  }
  if (!url || (url.protocol !== 'postgres:' && url.protocol !== 'postgresql:') || url.hostname === '')
    throw new ConfigError(
      `${source}: not a postgres://USER@HOST[:PORT]/DATABASE URL (its text is not shown)`,
    );
  return text.trim();
}

function parseOnOff(text: string, source: string): boolean {
  if (text !== 'on' && text !== 'off') throw new ConfigError(`${source}: '${text}' is not on or off`);
  return text === 'on';
}

function parseWholeNumber(text: string, source: string, min: number, max: number): number {
  if (!/^\d+$/.test(text.trim()) || Number(text) < min || Number(text) > max) {
    throw new ConfigError(`${source}: '${text}' is not a whole number from ${min} to ${max}`);
  }
  return Number(text);
}

/** Commander's camelCase name of a flag: `--data-dir <path>` -> `dataDir`. */
export function flagName(flag: string): string {
  return flag
    .replace(/^--/, '')
    .replace(/\s.*$/, '')
    .replace(/-([a-z])/g, (_m, c: string) => c.toUpperCase());
}

export type ConfigKey = keyof Config;

/** What `serve` reads: every setting but the participant commands' certificate authority. */
export type ServeConfig = Omit<Config, 'ca'>;
export const SERVE_SETTINGS: readonly (keyof ServeConfig)[] = CONFIG_OPTIONS.map(
  (option) => option.key,
).filter((key): key is keyof ServeConfig => key !== 'ca');

function optionOf(key: ConfigKey): OptionSpec<ConfigKey> {
  const option = CONFIG_OPTIONS.find((candidate) => candidate.key === key);
  if (!option) throw new Error(`no configuration option ${key}`);
  return option;
}

/**
 * Adds the flags of these settings to a command, their variable and default in the help; the flags carry no
 * commander default, so loadSettings can tell a flag from the environment.
 */
export function addConfigOptions(command: Command, keys: readonly ConfigKey[]): Command {
  for (const key of keys) {
    const option = optionOf(key);
    const flag = new Option(
      option.flag,
      `${option.description} [env ${option.env}${option.default ? `, default ${option.default}` : ''}]`,
    );
    settingFlags.set(flag, option);
    command.addOption(flag);
  }
  return command;
}

const settingFlags = new WeakMap<Option, OptionSpec<ConfigKey>>();

/** The setting a command's flag stands for, when addConfigOptions added it (the docs test lists them). */
export function settingOf(flag: Option): OptionSpec<ConfigKey> | undefined {
  return settingFlags.get(flag);
}

/**
 * The settings a command reads, from its parsed flags (commander's camelCase names), the environment and the
 * defaults: flag > variable > default.
 */
export function loadSettings<K extends ConfigKey>(
  keys: readonly K[],
  flags: Record<string, unknown> = {},
  env: NodeJS.ProcessEnv = process.env,
): Pick<Config, K> {
  const config: Partial<Record<ConfigKey, unknown>> = {};
  for (const key of keys) {
    const option = optionOf(key);
    const flag = flags[flagName(option.flag)];
    const [text, source] =
      flag !== undefined
        ? [String(flag), option.flag.split(' ')[0]]
        : env[option.env] !== undefined && env[option.env] !== ''
          ? [env[option.env]!, option.env]
          : [option.default, 'default'];
    if (text !== undefined) config[key] = option.parse(text, source);
  }
  if (config.ledger === 'fabric' && keys.includes('fabricConfig' as K) && config.fabricConfig === undefined) {
    throw new ConfigError('--ledger fabric needs --fabric-config FILE (or HIE_FABRIC_CONFIG)');
  }
  if (config.store === 'postgres' && keys.includes('databaseUrl' as K) && config.databaseUrl === undefined) {
    throw new ConfigError('--store postgres needs --database-url URL (or HIE_DATABASE_URL)');
  }
  if (config.serveLedger !== undefined && config.ledger === 'fabric') {
    throw new ConfigError(
      '--serve-ledger serves the embedded ledger: it cannot be used with --ledger fabric',
    );
  }
  if (
    config.ledgerMembers !== undefined &&
    keys.includes('serveLedger' as K) &&
    config.serveLedger === undefined
  ) {
    throw new ConfigError('--ledger-members needs --serve-ledger PORT');
  }
  // Checked here, before anything is opened: development mode serves loopback callers only (docs/access.md).
  if (
    config.auth === 'dev-open' &&
    typeof config.host === 'string' &&
    !['127.0.0.1', '::1', 'localhost'].includes(config.host)
  ) {
    throw new ConfigError(
      `--auth dev-open (no authentication) only runs on a loopback address: --host ${config.host} needs --auth smart`,
    );
  }
  if (config.ca === 'fabric' && keys.includes('fabricConfig' as K) && config.fabricConfig === undefined) {
    throw new ConfigError(
      '--ca fabric needs --fabric-config FILE (or HIE_FABRIC_CONFIG) with a "ca" section',
    );
  }
  return config as Pick<Config, K>;
}

/** Every setting, from parsed flags (commander's camelCase names), the environment and the defaults. */
export function loadConfig(
  flags: Record<string, unknown> = {},
  env: NodeJS.ProcessEnv = process.env,
): Config {
  return loadSettings(
    CONFIG_OPTIONS.map((option) => option.key),
    flags,
    env,
  );
}
