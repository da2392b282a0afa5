/**
 * A local network of separate processes, as in production: process L serves its embedded ledger over the Fabric
 * Gateway protocol (`serve --serve-ledger`), process M (another data directory, another MSP) runs with
 * `--ledger fabric` against it (`ledger connect` wrote its connection). M anchors what it stores, `$verify`
 * succeeds at M, and L's chain holds the anchor with M's MSP as its creator. A client of an MSP L does not admit
 * is refused, and so is a served ledger on a non-loopback address.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli, until, waitForOutput, type CliProcess } from '../support/cli-process.js';
import { EmbeddedChain } from '../../src/ledger/embedded/index.js';
import { EmbeddedCa } from '../../src/ledger/identity/embedded-ca.js';
import { parseFabricConfig } from '../../src/ledger/fabric/config.js';
import { openFabricLedger } from '../../src/ledger/fabric/fabric-ledger.js';
import { ConfigError, loadConfig } from '../../src/config/config.js';
import { GatewayServer } from '../../src/ledger/embedded/gateway/gateway-server.js';

const LEDGER_MSP = 'HospitalAMSP';
const MEMBER_MSP = 'HospitalBMSP';

const SERVE = [
  'serve',
  '--port',
  '0',
  '--auth',
  'dev-open',
  '--audit-cron',
  'off',
  '--anchor-interval-ms',
  '30',
];

describe('a served embedded ledger and a member process on it', () => {
  let root: string;
  let ledgerDir: string;
  let memberDir: string;
  let membersFile: string;
  let ledgerProcess: CliProcess;
  let memberProcess: CliProcess | undefined;
  let gatewayAddress: string;
  let tlsCa: string;

  beforeAll(async () => {
    root = mkdtempSync(join(tmpdir(), 'hie-served-'));
    ledgerDir = join(root, 'ledger-org');
    memberDir = join(root, 'member-org');
    membersFile = join(root, 'ledger-members.json');
    ledgerProcess = runCli([
      ...SERVE,
      '--data-dir',
      ledgerDir,
      '--msp-id',
      LEDGER_MSP,
      '--serve-ledger',
      '0',
      '--ledger-members',
      membersFile,
    ]);
    const [, address, ca] = await waitForOutput(ledgerProcess, /"ledgerGateway":"([^"]+)","tlsCa":"([^"]+)"/);
    gatewayAddress = address!;
    tlsCa = ca!;
    await waitForOutput(ledgerProcess, /"fhirBase":"([^"]+)"/);
  });

  afterAll(async () => {
    for (const process of [memberProcess, ledgerProcess]) {
      if (process && process.child.exitCode === null) {
        process.child.kill('SIGKILL');
        await process.exited;
      }
    }
    if (root) rmSync(root, { recursive: true, force: true });
  });

  it('warns that one process is then the whole network', () => {
    expect(ledgerProcess.output()).toMatch(/"level":40[^\n]*WHOLE network[^\n]*demos and tests only/);
    expect(gatewayAddress).toMatch(/^127\.0\.0\.1:\d+$/);
  });

  it('refuses a client of an MSP it does not admit, and a certificate not issued by the MSP it claims', async () => {
    const rogueCa = await EmbeddedCa.open(join(root, 'rogue-ca'), { mspId: 'RogueMSP' });
    const rogue = await rogueCa.enroll({
      enrollmentId: 'svc-rogue',
      attrs: { 'hie.role': 'service', 'hie.id': 'svc-rogue' },
    });
    writeFileSync(join(root, 'rogue-cert.pem'), rogue.certificate);
    writeFileSync(join(root, 'rogue-key.pem'), rogue.privateKey, { mode: 0o600 });
    const clientAs = (mspId: string) =>
      openFabricLedger({
        config: parseFabricConfig(
          {
            peerEndpoint: gatewayAddress,
            hostAlias: 'localhost',
            tlsRootCertPath: tlsCa,
            mspId,
            channel: 'hie',
            chaincode: 'hie',
            identity: { certPath: 'rogue-cert.pem', keyPath: 'rogue-key.pem' },
          },
          'test',
          root,
        ),
        checkpointPath: join(root, `checkpoint-${mspId}.json`),
        retry: { initialDelayMs: 10, maxDelayMs: 20 },
      });
    for (const [mspId, reason] of [
      ['RogueMSP', /access denied: unknown MSP/],
      // Claiming the serving organisation's MSP with a certificate its CA did not issue.
      [LEDGER_MSP, /access denied: certificate not issued by HospitalAMSP/],
    ] as const) {
      const client = clientAs(mspId);
      try {
        await expect(client.submit('anchor:AnchorVersion', ['rogue-key', 'ab'.repeat(32)])).rejects.toThrow(
          reason,
        );
        await expect(client.evaluate('anchor:ReadAnchor', ['rogue-key'])).rejects.toThrow(reason);
      } finally {
        await client.close();
      }
    }
  });

  describe('a member process (another data directory, another MSP) with --ledger fabric', () => {
    let base: string;

    beforeAll(async () => {
      const connect = runCli([
        'ledger',
        'connect',
        '--data-dir',
        memberDir,
        '--msp-id',
        MEMBER_MSP,
        '--gateway',
        gatewayAddress,
        '--gateway-tls-ca',
        tlsCa,
        '--members-file',
        membersFile,
      ]);
      expect(await connect.exited, connect.output()).toBe(0);
      const { fabricConfig, member } = JSON.parse(connect.output()) as {
        fabricConfig: string;
        member: { mspId: string; caCertificate: string };
      };
      expect(member.mspId).toBe(MEMBER_MSP);
      expect(JSON.parse(readFileSync(membersFile, 'utf8'))).toEqual([member]);
      memberProcess = runCli([
        ...SERVE,
        '--data-dir',
        memberDir,
        '--msp-id',
        MEMBER_MSP,
        '--ledger',
        'fabric',
        '--fabric-config',
        fabricConfig,
      ]);
      base = (await waitForOutput(memberProcess, /"fhirBase":"([^"]+)"/))[1]!;
      const readyz = base.replace(/\/fhir$/, '/readyz');
      await until(async () => (await fetch(readyz)).status === 200, 'the member is ready');
    });

    it('anchors what it stores on the served ledger: $verify succeeds there, the anchor is by its MSP', async () => {
      const created = await fetch(`${base}/Patient`, {
        method: 'POST',
        headers: { 'content-type': 'application/fhir+json' },
        body: JSON.stringify({ resourceType: 'Patient', gender: 'female', birthDate: '1970-01-01' }),
      });
      expect(created.status).toBe(201);
      const patient = (await created.json()) as { id: string; meta: { versionId: string } };
      let verification: {
        name: string;
        valueBoolean?: boolean;
        valueString?: string;
        valueInteger?: number;
      }[] = [];
      await until(async () => {
        const res = await fetch(`${base}/Patient/${patient.id}/_history/${patient.meta.versionId}/$verify`);
        verification = ((await res.json()) as { parameter: typeof verification }).parameter;
        return verification.find((p) => p.name === 'verified')?.valueBoolean === true;
      }, 'the Patient is anchored and verified at the member');
      const transactionId = verification.find((p) => p.name === 'transactionId')?.valueString;
      const blockNumber = verification.find((p) => p.name === 'blockNumber')?.valueInteger;
      expect(transactionId).toBeDefined();
      // The chaincode saw the member as the caller (ctx.clientIdentity.getMSPID()): it recorded its MSP.
      expect(verification.find((p) => p.name === 'anchoredBy')?.valueString).toBe(MEMBER_MSP);

      // The served chain, read once its process stopped: the anchor transaction, created by the member's MSP.
      memberProcess!.child.kill('SIGTERM');
      expect(await memberProcess!.exited).toBe(0);
      ledgerProcess.child.kill('SIGTERM');
      expect(await ledgerProcess.exited).toBe(0);
      const chain = await EmbeddedChain.open({ file: join(ledgerDir, 'ledger', 'chain.sqlite') });
      try {
        const status = chain.transactionStatus(transactionId!);
        expect(status).toMatchObject({ validationCode: 'VALID', blockNumber });
        const stored = chain.block(status!.blockNumber)!.transactions.find((tx) => tx.txId === transactionId);
        const envelope = JSON.parse(stored!.envelope.toString('utf8')) as {
          transaction: string;
          creator: { mspid: string; idBytes: string };
        };
        expect(envelope.transaction).toMatch(/^anchor:/);
        expect(envelope.creator.mspid).toBe(MEMBER_MSP);
        const creatorCertificate = Buffer.from(envelope.creator.idBytes, 'base64').toString('utf8');
        const memberCa = readFileSync(join(memberDir, 'identity', 'service', 'cert.pem'), 'utf8');
        expect(creatorCertificate).toBe(memberCa);
      } finally {
        await chain.close();
      }
    });
  });
});

describe('a served embedded ledger is on loopback only', () => {
  it('refuses a non-loopback --serve-ledger address, and --serve-ledger with --ledger fabric', () => {
    expect(loadConfig({ serveLedger: '7051' }, {}).serveLedger).toEqual({ host: '127.0.0.1', port: 7051 });
    expect(loadConfig({}, { HIE_SERVE_LEDGER: '127.0.0.2:0' }).serveLedger).toEqual({
      host: '127.0.0.2',
      port: 0,
    });
    expect(loadConfig({ serveLedger: '[::1]:7051' }, {}).serveLedger).toEqual({ host: '::1', port: 7051 });
    for (const address of ['0.0.0.0:7051', '10.1.2.3:7051', 'peer0.example.org:7051', '[::]:7051']) {
      expect(() => loadConfig({ serveLedger: address }, {}), address).toThrow(/not a loopback address/);
    }
    expect(() => loadConfig({ serveLedger: '7051', ledger: 'fabric', fabricConfig: 'f.json' }, {})).toThrow(
      ConfigError,
    );
    expect(() => loadConfig({ ledgerMembers: 'members.json' }, {})).toThrow(/needs --serve-ledger/);
  });

  it('the gateway server itself refuses to bind a non-loopback host', () => {
    for (const host of ['0.0.0.0', '::', '192.168.1.10', 'example.org']) {
      expect(
        () =>
          new GatewayServer({
            backend: undefined as never,
            tls: { serverCertificate: '', serverKey: '' },
            channel: 'hie',
            members: [],
            peerIdentity: { mspId: 'X', certificate: '', privateKey: '' },
            host,
          }),
        host,
      ).toThrow(/loopback only/);
    }
  });
});
