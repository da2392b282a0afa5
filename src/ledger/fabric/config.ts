/**
 * The `--fabric-config` file: where an organisation's hie-ledger service finds its peer, channel, chaincode and
 * service identity (docs/fabric.md, "The --fabric-config file"; network/scripts/fabric-config.sh writes one).
 * JSON, or YAML when the file name ends in .yaml/.yml; relative paths are resolved against the file's directory.
 */
import { readFileSync } from 'node:fs';
import { dirname, extname, isAbsolute, resolve } from 'node:path';
import { load as loadYaml } from 'js-yaml';

export interface FabricTimeouts {
  evaluateMs: number;
  endorseMs: number;
  submitMs: number;
  /** Bounds one commit status request (the wait for the transaction's block). */
  commitStatusMs: number;
}

export interface FabricCaConfig {
  url: string;
  caName?: string;
  tlsRootCertPath: string;
  /** An identity allowed to register and revoke (hf.Registrar.*, hf.Revoker, hf.GenCRL). */
  registrar: { certPath: string; keyPath: string };
}

export interface FabricConfig {
  /** host:port of the organisation's peer (Gateway service). */
  peerEndpoint: string;
  /** TLS server name to verify the peer's certificate against, when the endpoint's host is not in it. */
  hostAlias?: string;
  tlsRootCertPath: string;
  /**
   * Mutual TLS: the client certificate and key (PEM) presented to the peer, for peers with
   * `peer.tls.clientAuthRequired` (issued by a CA in the peer's `clientRootCAs`, e.g. the organisation's TLS CA).
   */
  clientTls?: { certPath: string; keyPath: string };
  mspId: string;
  channel: string;
  chaincode: string;
  /** The organisation's service identity (hie.role=service): ECDSA certificate and private key, PEM. */
  identity: { certPath: string; keyPath: string };
  /** Event listener checkpoint; default <data-dir>/checkpoints/fabric-events.json. */
  checkpointPath?: string;
  timeouts: FabricTimeouts;
  ca?: FabricCaConfig;
}

export const DEFAULT_FABRIC_TIMEOUTS: FabricTimeouts = {
  evaluateMs: 5_000,
  endorseMs: 15_000,
  submitMs: 5_000,
  commitStatusMs: 60_000,
};

export class FabricConfigError extends Error {
  constructor(file: string, problem: string) {
    super(`invalid Fabric configuration ${file}: ${problem}`);
    this.name = 'FabricConfigError';
  }
}

/** Reads and checks a `--fabric-config` file; every referenced file must exist and be readable. */
export function loadFabricConfig(file: string): FabricConfig {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    throw new FabricConfigError(file, `cannot read it (${(error as Error).message})`);
  }
  const yaml = ['.yaml', '.yml'].includes(extname(file).toLowerCase());
  let raw: unknown;
  try {
    raw = yaml ? loadYaml(text) : JSON.parse(text);
  } catch (error) {
    throw new FabricConfigError(file, `not valid ${yaml ? 'YAML' : 'JSON'} (${(error as Error).message})`);
  }
  const config = parseFabricConfig(raw, file, dirname(resolve(file)));
  for (const path of referencedFiles(config)) {
    try {
      readFileSync(path);
    } catch (error) {
      throw new FabricConfigError(file, `cannot read ${path} (${(error as Error).message})`);
    }
  }
  return config;
}

/** Checks an already parsed configuration object; `baseDir` resolves relative paths. */
export function parseFabricConfig(raw: unknown, source: string, baseDir: string): FabricConfig {
  const fail = (problem: string): never => {
    throw new FabricConfigError(source, problem);
  };
  const object = (value: unknown, at: string): Record<string, unknown> =>
    typeof value === 'object' && value !== null && !Array.isArray(value)
      ? (value as Record<string, unknown>)
      : fail(`${at} must be an object`);
  const string = (value: unknown, at: string): string =>
    typeof value === 'string' && value.trim() !== ''
      ? value.trim()
      : fail(`${at} must be a non-empty string`);
  const optionalString = (value: unknown, at: string): string | undefined =>
    value === undefined || value === null ? undefined : string(value, at);
  const path = (value: unknown, at: string): string => {
    const text = string(value, at);
    return isAbsolute(text) ? text : resolve(baseDir, text);
  };
  const positive = (value: unknown, at: string, fallback: number): number => {
    if (value === undefined) return fallback;
    return typeof value === 'number' && Number.isFinite(value) && value > 0
      ? value
      : fail(`${at} must be a positive number of milliseconds`);
  };

  const root = object(raw, 'the configuration');
  const known = new Set([
    'peerEndpoint',
    'hostAlias',
    'tlsRootCertPath',
    'clientTls',
    'mspId',
    'channel',
    'chaincode',
    'identity',
    'checkpointPath',
    'timeouts',
    'ca',
  ]);
  for (const key of Object.keys(root)) if (!known.has(key)) fail(`unknown field "${key}"`);

  const peerEndpoint = string(root.peerEndpoint, 'peerEndpoint');
  if (!/^[^\s:/]+:\d{1,5}$/.test(peerEndpoint) && !/^\[[0-9a-fA-F:]+\]:\d{1,5}$/.test(peerEndpoint)) {
    fail(`peerEndpoint must be host:port, got ${JSON.stringify(peerEndpoint)}`);
  }
  const identity = object(root.identity, 'identity');
  let clientTls: FabricConfig['clientTls'];
  if (root.clientTls !== undefined) {
    const rawClientTls = object(root.clientTls, 'clientTls');
    clientTls = {
      certPath: path(rawClientTls.certPath, 'clientTls.certPath'),
      keyPath: path(rawClientTls.keyPath, 'clientTls.keyPath'),
    };
  }
  const timeouts = root.timeouts === undefined ? {} : object(root.timeouts, 'timeouts');
  let ca: FabricCaConfig | undefined;
  if (root.ca !== undefined) {
    const rawCa = object(root.ca, 'ca');
    const registrar = object(rawCa.registrar, 'ca.registrar');
    const url = string(rawCa.url, 'ca.url');
    if (!/^https?:\/\//.test(url)) fail('ca.url must be an http(s) URL');
    ca = {
      url,
      caName: optionalString(rawCa.caName, 'ca.caName'),
      tlsRootCertPath: path(rawCa.tlsRootCertPath, 'ca.tlsRootCertPath'),
      registrar: {
        certPath: path(registrar.certPath, 'ca.registrar.certPath'),
        keyPath: path(registrar.keyPath, 'ca.registrar.keyPath'),
      },
    };
  }
  return {
    peerEndpoint,
    hostAlias: optionalString(root.hostAlias, 'hostAlias'),
    tlsRootCertPath: path(root.tlsRootCertPath, 'tlsRootCertPath'),
    clientTls,
    mspId: string(root.mspId, 'mspId'),
    channel: string(root.channel, 'channel'),
    chaincode: string(root.chaincode, 'chaincode'),
    identity: {
      certPath: path(identity.certPath, 'identity.certPath'),
      keyPath: path(identity.keyPath, 'identity.keyPath'),
    },
    checkpointPath:
      root.checkpointPath === undefined ? undefined : path(root.checkpointPath, 'checkpointPath'),
    timeouts: {
      evaluateMs: positive(timeouts.evaluateMs, 'timeouts.evaluateMs', DEFAULT_FABRIC_TIMEOUTS.evaluateMs),
      endorseMs: positive(timeouts.endorseMs, 'timeouts.endorseMs', DEFAULT_FABRIC_TIMEOUTS.endorseMs),
      submitMs: positive(timeouts.submitMs, 'timeouts.submitMs', DEFAULT_FABRIC_TIMEOUTS.submitMs),
      commitStatusMs: positive(
        timeouts.commitStatusMs,
        'timeouts.commitStatusMs',
        DEFAULT_FABRIC_TIMEOUTS.commitStatusMs,
      ),
    },
    ca,
  };
}

function referencedFiles(config: FabricConfig): string[] {
  const files = [config.tlsRootCertPath, config.identity.certPath, config.identity.keyPath];
  if (config.clientTls) files.push(config.clientTls.certPath, config.clientTls.keyPath);
  if (config.ca)
    files.push(config.ca.tlsRootCertPath, config.ca.registrar.certPath, config.ca.registrar.keyPath);
  return files;
}
