/**
 * network/ is consistent with itself: the names, MSP ids, ports and paths of scripts/env.sh (the scripts' one
 * source of truth) are those of configtx.yaml, the Fabric CA configurations, the Compose file and the
 * chaincode-as-a-service package. (The network itself needs Fabric binaries or Docker: docs/fabric.md.)
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { load } from 'js-yaml';
import { describe, expect, it } from 'vitest';

const NETWORK = join(process.cwd(), 'network');

interface NetworkEnv {
  members: string[];
  orderers: string[];
  msp: Record<string, string>;
  peerPort: Record<string, number>;
  peerCcPort: Record<string, number>;
  peerOpsPort: Record<string, number>;
  caPort: Record<string, number>;
  ordererPort: Record<string, number>;
  ordererAdminPort: Record<string, number>;
  ordererOpsPort: Record<string, number>;
  orgDir: Record<string, string>;
  peerName: Record<string, string>;
  ordererName: Record<string, string>;
  ordererDir: Record<string, string>;
  runDir: string;
  ccServer: string;
  channel: string;
}

/** The values as the scripts see them, printed by bash from scripts/env.sh. */
function networkEnv(): NetworkEnv {
  const script = `
    source "${NETWORK}/scripts/env.sh"
    map() { local -n m=$1; local k; for k in "\${!m[@]}"; do printf '%s=%s;' "$k" "\${m[$k]}"; done; echo; }
    echo "\${MEMBER_ORGS[*]}"; echo "\${ORDERERS[*]}"
    map ORG_MSP; map PEER_PORT; map PEER_CC_PORT; map PEER_OPS_PORT; map CA_PORT
    map ORDERER_PORT; map ORDERER_ADMIN_PORT; map ORDERER_OPS_PORT
    for o in orderer "\${MEMBER_ORGS[@]}"; do printf '%s=%s;' "$o" "$(org_dir "$o")"; done; echo
    for o in "\${MEMBER_ORGS[@]}"; do printf '%s=%s;' "$o" "$(peer_name "$o")"; done; echo
    for o in "\${ORDERERS[@]}"; do printf '%s=%s;' "$o" "$(orderer_name "$o")"; done; echo
    for o in "\${ORDERERS[@]}"; do printf '%s=%s;' "$o" "$(orderer_dir "$o")"; done; echo
    echo "$RUN_DIR"; echo "$CC_SERVER_ADDRESS"; echo "$CHANNEL"
  `;
  const lines = execFileSync('bash', ['-c', script], { encoding: 'utf8' }).trim().split('\n');
  const map = (line: string) =>
    Object.fromEntries(
      line
        .split(';')
        .filter(Boolean)
        .map((pair) => pair.split('=') as [string, string]),
    );
  const numbers = (line: string) =>
    Object.fromEntries(Object.entries(map(line)).map(([k, v]) => [k, Number(v)]));
  return {
    members: lines[0].split(' '),
    orderers: lines[1].split(' '),
    msp: map(lines[2]),
    peerPort: numbers(lines[3]),
    peerCcPort: numbers(lines[4]),
    peerOpsPort: numbers(lines[5]),
    caPort: numbers(lines[6]),
    ordererPort: numbers(lines[7]),
    ordererAdminPort: numbers(lines[8]),
    ordererOpsPort: numbers(lines[9]),
    orgDir: map(lines[10]),
    peerName: map(lines[11]),
    ordererName: map(lines[12]),
    ordererDir: map(lines[13]),
    runDir: lines[14],
    ccServer: lines[15],
    channel: lines[16],
  };
}

const yaml = (path: string) => load(readFileSync(join(NETWORK, path), 'utf8')) as Record<string, any>;
const env = networkEnv();
/** configtx.yaml paths are relative to network/configtx/. */
const fromConfigtx = (path: string) => join(NETWORK, 'configtx', path);

describe('network configuration', () => {
  it('has three member organisations and three Raft orderers with the MSP ids of the brief', () => {
    expect(env.members).toEqual(['hospital1', 'hospital2', 'lab']);
    expect(env.orderers).toHaveLength(3);
    expect(env.msp).toMatchObject({
      hospital1: 'Hospital1MSP',
      hospital2: 'Hospital2MSP',
      lab: 'LabMSP',
      orderer: 'OrdererMSP',
    });
    expect(env.channel).toBe('hie');
  });

  it('configtx.yaml defines the channel from the same orgs, paths and endpoints', () => {
    const configtx = yaml('configtx/configtx.yaml');
    const profile = configtx.Profiles.HieChannel;
    const members = profile.Application.Organizations as Record<string, any>[];
    expect(members.map((org) => org.ID)).toEqual(env.members.map((org) => env.msp[org]));
    for (const org of members) {
      const key = env.members.find((k) => env.msp[k] === org.ID)!;
      expect(org.Name).toBe(org.ID);
      expect(fromConfigtx(org.MSPDir)).toBe(join(env.orgDir[key], 'msp'));
      expect(org.AnchorPeers).toEqual([{ Host: '127.0.0.1', Port: env.peerPort[key] }]);
      for (const policy of ['Readers', 'Writers', 'Admins', 'Endorsement']) {
        expect(org.Policies[policy].Rule).toContain(`'${org.ID}.`);
      }
    }
    const ordererOrgs = profile.Orderer.Organizations as Record<string, any>[];
    expect(ordererOrgs.map((org) => org.ID)).toEqual(['OrdererMSP']);
    expect(fromConfigtx(ordererOrgs[0].MSPDir)).toBe(join(env.orgDir.orderer, 'msp'));
    expect(ordererOrgs[0].OrdererEndpoints).toEqual(
      env.orderers.map((o) => `127.0.0.1:${env.ordererPort[o]}`),
    );
    expect(profile.Orderer.OrdererType).toBe('etcdraft');
    const consenters = profile.Orderer.EtcdRaft.Consenters as Record<string, any>[];
    expect(consenters.map((c) => c.Port)).toEqual(env.orderers.map((o) => env.ordererPort[o]));
    consenters.forEach((consenter, i) => {
      const tls = join(env.ordererDir[env.orderers[i]], 'tls', 'server.crt');
      expect(fromConfigtx(consenter.ClientTLSCert)).toBe(tls);
      expect(fromConfigtx(consenter.ServerTLSCert)).toBe(tls);
    });
    expect(profile.Application.Policies.Endorsement.Rule).toBe('MAJORITY Endorsement');
    expect(profile.Capabilities.V2_0).toBe(true);
  });

  it('has a Fabric CA configuration per organisation, on the ports the scripts use', () => {
    const opsPorts = new Set<string>();
    for (const org of ['orderer', ...env.members]) {
      const ca = yaml(`fabric-ca/${org}/fabric-ca-server-config.yaml`);
      expect(ca.port).toBe(env.caPort[org]);
      // Every node listens on 127.0.0.1 only (docs/fabric.md); fabric-ca-server's default is all interfaces.
      expect(ca.address).toBe('127.0.0.1');
      expect(ca.ca.name).toBe(`ca-${org}`);
      expect(ca.tls.enabled).toBe(true);
      expect(ca.csr.hosts).toEqual(expect.arrayContaining(['localhost', '127.0.0.1']));
      expect(ca.signing.profiles.tls.usage).toEqual(expect.arrayContaining(['server auth', 'client auth']));
      expect(ca.registry.identities[0].attrs['hf.Registrar.Attributes']).toBe('*');
      opsPorts.add(ca.operations.listenAddress);
    }
    expect(opsPorts.size).toBe(4);
  });

  it('gives every listener its own port', () => {
    const caOps = ['orderer', ...env.members].map((org) =>
      Number(yaml(`fabric-ca/${org}/fabric-ca-server-config.yaml`).operations.listenAddress.split(':')[1]),
    );
    const ports = [
      ...Object.values(env.caPort),
      ...caOps,
      ...Object.values(env.peerPort),
      ...Object.values(env.peerCcPort),
      ...Object.values(env.peerOpsPort),
      ...Object.values(env.ordererPort),
      ...Object.values(env.ordererAdminPort),
      ...Object.values(env.ordererOpsPort),
      Number(env.ccServer.split(':')[1]),
    ];
    expect(ports).toHaveLength(4 + 4 + 3 * 3 + 3 * 3 + 1);
    expect(new Set(ports).size).toBe(ports.length);
  });

  it('runs the same nodes in Docker Compose with pinned official images', () => {
    const compose = yaml('compose/docker-compose.yaml');
    const services = compose.services as Record<string, any>;
    for (const org of ['orderer', ...env.members]) {
      expect(services[`ca-${org}`].environment.FABRIC_CA_HOME).toBe(`\${HIE_RUN_DIR}/fabric-ca/${org}`);
      expect(services[`ca-${org}`].image).toMatch(
        /^hyperledger\/fabric-ca:\$\{FABRIC_CA_VERSION:-1\.5\.\d+\}$/,
      );
    }
    for (const orderer of env.orderers) {
      expect(services[orderer].env_file).toBe(`\${HIE_RUN_DIR}/env/${env.ordererName[orderer]}.env`);
      expect(services[orderer].image).toMatch(
        /^hyperledger\/fabric-orderer:\$\{FABRIC_VERSION:-2\.5\.\d+\}$/,
      );
    }
    for (const org of env.members) {
      const peer = services[`peer0-${org}`];
      expect(peer.env_file).toBe(`\${HIE_RUN_DIR}/env/${env.peerName[org]}.env`);
      expect(peer.image).toMatch(/^hyperledger\/fabric-peer:\$\{FABRIC_VERSION:-2\.5\.\d+\}$/);
      expect(peer.network_mode).toBe('host');
    }
    expect(services.chaincode.environment.CHAINCODE_SERVER_ADDRESS).toBe(env.ccServer);
  });

  it('packages the chaincode as a service at the address its server listens on', () => {
    const connection = JSON.parse(readFileSync(join(NETWORK, 'chaincode/connection.json'), 'utf8'));
    expect(connection).toMatchObject({ address: env.ccServer, tls_required: false });
    expect(JSON.parse(readFileSync(join(NETWORK, 'chaincode/metadata.json'), 'utf8')).type).toBe('ccaas');
    const dockerfile = readFileSync(join(NETWORK, 'chaincode/Dockerfile'), 'utf8');
    expect(dockerfile).toContain('fabric-chaincode-node server');
    expect(dockerfile).toMatch(/FROM node:20/);
  });

  it('packages the chaincode reproducibly: the same files give the same bytes, so the same package id', () => {
    const dir = mkdtempSync(join(tmpdir(), 'hie-package-'));
    try {
      const packageWith = (name: string, umask: string) => {
        const output = join(dir, name);
        execFileSync(
          'bash',
          ['-c', `umask ${umask} && "$0" "$1"`, join(NETWORK, 'scripts/package-chaincode.sh'), output],
          {
            env: { ...process.env, HIE_CHAINCODE_VERSION: '1.0' },
            stdio: ['ignore', 'pipe', 'pipe'],
          },
        );
        return readFileSync(output);
      };
      const first = packageWith('first.tar.gz', '022');
      const second = packageWith('second.tar.gz', '077');
      // Fabric's package id is label:SHA-256 of these bytes.
      expect(createHash('sha256').update(second).digest('hex')).toBe(
        createHash('sha256').update(first).digest('hex'),
      );
      // Nothing of the moment or the machine: gzip without name or mtime, tar members at mtime 0, owner 0/0, sorted.
      const gzipHeader = (bytes: Buffer) => ({ flags: bytes[3], mtime: bytes.readUInt32LE(4) });
      expect(gzipHeader(first)).toEqual({ flags: 0, mtime: 0 });
      const listing = (archive: string, member?: string) =>
        execFileSync(
          'bash',
          [
            '-c',
            member ? 'tar -xOzf "$0" "$1" | tar --full-time -tvzf -' : 'tar --full-time -tvzf "$0"',
            archive,
            member ?? '',
          ],
          {
            encoding: 'utf8',
          },
        )
          .trim()
          .split('\n');
      const outer = listing(join(dir, 'first.tar.gz'));
      const inner = listing(join(dir, 'first.tar.gz'), 'code.tar.gz');
      for (const line of [...outer, ...inner])
        expect(line).toMatch(/^-rw-r--r-- 0\/0 +\d+ 1970-01-01 00:00:00 /);
      expect(outer.map((line) => line.split(' ').at(-1))).toEqual(['metadata.json', 'code.tar.gz']);
      expect(inner.map((line) => line.split(' ').at(-1))).toEqual(['connection.json']);
      const metadata = JSON.parse(
        execFileSync('tar', ['-xOzf', join(dir, 'first.tar.gz'), 'metadata.json'], { encoding: 'utf8' }),
      );
      expect(metadata).toEqual({ type: 'ccaas', label: 'hie_1.0' });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('test-real-fabric.sh skips, saying why, where there are no Fabric binaries', () => {
    const run = (fabricBin: string | undefined) => {
      const env: NodeJS.ProcessEnv = { ...process.env };
      delete env.FABRIC_BIN;
      if (fabricBin !== undefined) env.FABRIC_BIN = fabricBin;
      return spawnSync('bash', [join(NETWORK, 'scripts/test-real-fabric.sh')], { env, encoding: 'utf8' });
    };
    const unset = run(undefined);
    expect(unset.status).toBe(0);
    expect(unset.stderr).toMatch(/skipped: FABRIC_BIN is not set/);
    const empty = mkdtempSync(join(tmpdir(), 'hie-fabric-bin-'));
    try {
      const missing = run(empty);
      expect(missing.status).toBe(0);
      expect(missing.stderr).toContain(`skipped: ${empty}/peer is missing`);
    } finally {
      rmSync(empty, { recursive: true, force: true });
    }
  });

  it('ships executable bash scripts for every step of the walkthrough', () => {
    for (const script of [
      'up',
      'down',
      'enroll',
      'create-channel',
      'deploy-chaincode',
      'package-chaincode',
      'test-real-fabric',
      'fabric-config',
      'register-member',
      'update-crl',
    ]) {
      const path = join(NETWORK, 'scripts', `${script}.sh`);
      expect(statSync(path).mode & 0o111).not.toBe(0);
      expect(readFileSync(path, 'utf8')).toMatch(/^#!\/usr\/bin\/env bash\n/);
      execFileSync('bash', ['-n', path]);
    }
  });
});
