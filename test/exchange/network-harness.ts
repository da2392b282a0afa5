/**
 * An exchange network in one test process: one embedded chain with three MSPs (hospital A, hospital B, lab C, each
 * with its own CA), and three real apps (buildApp: SMART auth, local-network mode, each its own data directory and
 * ledger identity) listening on loopback ports, so calls between members are real HTTP. Each member is registered
 * in the member directory with a service key and certificate from its MSP's CA (what `hie-ledger member register`
 * does), and has a system participant. Helpers enrol participants and get their tokens, link a patient at a
 * custodian ($network-link-token at the home, $network-link at the custodian), write a patient's grant to another
 * member's participant, and get network tokens through the initiating member's own token client.
 *
 * One network per test file, built in beforeAll: `startNetwork()`, then `network.stop()` in afterAll.
 */
import { createPrivateKey, randomUUID } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { SignJWT } from 'jose';
import { expect } from 'vitest';
import type { App } from '../../src/app/app.js';
import { openParticipantDirectory } from '../../src/commands/participant.js';
import type { ParticipantDirectory } from '../../src/access/participants.js';
import type { ParticipantRole } from '../../src/access/scopes.js';
import { MemberDirectory, type MemberEntry } from '../../src/exchange/member-directory.js';
import type { NetworkActor } from '../../src/exchange/network-token-client.js';
import { serviceKeyFileIn } from '../../src/exchange/patient-links-setup.js';
import type { EmbeddedChain } from '../../src/ledger/embedded/index.js';
import { bootApp, type BootedApp } from '../support/app-harness.js';
import { makeOrg, openChain, tempDir, type TestOrg } from '../ledger/helpers.js';

/** The identifier system of a remote grantee in Consent.provision.actor (`<mspId>|<pseudonym>`). */
export const NETWORK_PARTICIPANT_SYSTEM = 'https://hie-ledger.dev/fhir/NamingSystem/network-participant';

export interface HttpAnswer {
  status: number;
  /** The body parsed as JSON (undefined when empty or not JSON): tests read into it freely. */
  body: any;
  text: string;
  headers: Headers;
}

export interface NetworkMember {
  /** A, B or C. */
  name: string;
  mspId: string;
  /** This service's organisation (`--organization`), e.g. `Organization/hosp-a`. */
  organization: string;
  org: TestOrg;
  booted: BootedApp;
  app: App;
  /** The real loopback FHIR base URL, as in the member directory: `http://127.0.0.1:PORT/fhir`. */
  baseUrl: string;
  participants: ParticipantDirectory;
  /** A token of the member's system participant (`sys`, of its organisation). */
  system: string;
  /** Enrols a participant and returns a fresh access token for it. */
  enrol(clientId: string, role: ParticipantRole, resource?: string, organization?: string): Promise<string>;
  /** A fresh access token of an enrolled participant. */
  token(clientId: string): Promise<string>;
  /** The participant's pseudonym at this member (its network actor id). */
  pseudonymOf(clientId: string): string;
  /** The participant's network handle: `<mspId>|<pseudonym>`. */
  handleOf(clientId: string): string;
  /** A FHIR request over HTTP: `path` under the FHIR base (`/Patient/1`), `body` sent as JSON (or as text). */
  request(
    token: string | undefined,
    method: string,
    path: string,
    body?: unknown,
    headers?: Record<string, string>,
  ): Promise<HttpAnswer>;
  /** This member's directory entry, as another member reads it. */
  entry(): Promise<MemberEntry>;
}

export interface TestNetwork {
  chain: EmbeddedChain;
  a: NetworkMember;
  b: NetworkMember;
  c: NetworkMember;
  members: NetworkMember[];
  /**
   * Links `custodianPatient` (an id at `custodian`) to the network patient of `homePatient` (an id at `home`): the
   * home's system asks `$network-link-token` for the custodian, the custodian's system redeems it.
   */
  link(
    home: NetworkMember,
    homePatient: string,
    custodian: NetworkMember,
    custodianPatient: string,
  ): Promise<void>;
  /**
   * A network token of `custodian` for an actor of `caller`, asked through the caller's own token client (a real
   * client assertion signed with its service key, over HTTP).
   */
  networkToken(caller: NetworkMember, custodian: NetworkMember, actor: NetworkActor): Promise<string>;
  stop(): Promise<void>;
}

/** A Patient with demographics that score a link (docs/exchange.md, "The demographic score"). */
export function demoPatient(id: string, family = 'Lindqvist', given = 'Maja'): Record<string, unknown> {
  return {
    resourceType: 'Patient',
    id,
    name: [{ family, given: [given] }],
    birthDate: '1975-09-14',
    gender: 'female',
  };
}

/** An Observation of a patient, optionally with security labels (`system|code`). */
export function observation(
  id: string,
  patient: string,
  options: { code?: string; date?: string; labels?: string[] } = {},
): Record<string, unknown> {
  const resource: Record<string, unknown> = {
    resourceType: 'Observation',
    id,
    status: 'final',
    code: { coding: [{ system: 'http://loinc.org', code: options.code ?? '8867-4' }] },
    subject: { reference: patient },
    effectiveDateTime: options.date ?? '2025-03-01T10:00:00Z',
  };
  if (options.labels)
    resource.meta = {
      security: options.labels.map((label) => {
        const [system, code] = label.split('|');
        return { system, code };
      }),
    };
  return resource;
}

/**
 * A privacy Consent of `patient` (a reference at the home) naming a participant of another member
 * (`<mspId>|<pseudonym>`) as a logical reference; `provision` adds to the permit (period, class, provision...).
 */
export function networkConsent(
  patient: string,
  handle: string,
  provision: Record<string, unknown> = {},
  purposes: string[] = [],
): Record<string, unknown> {
  return {
    resourceType: 'Consent',
    status: 'active',
    scope: {
      coding: [{ system: 'http://terminology.hl7.org/CodeSystem/consentscope', code: 'patient-privacy' }],
    },
    category: [{ coding: [{ system: 'http://loinc.org', code: '59284-0' }] }],
    patient: { reference: patient },
    dateTime: '2026-01-01T00:00:00Z',
    policyRule: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'OPTIN' }] },
    provision: {
      type: 'permit',
      actor: [
        {
          role: {
            coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ParticipationType', code: 'IRCP' }],
          },
          reference: { identifier: { system: NETWORK_PARTICIPANT_SYSTEM, value: handle } },
        },
      ],
      ...(purposes.length > 0
        ? {
            purpose: purposes.map((code) => ({
              system: 'http://terminology.hl7.org/CodeSystem/v3-ActReason',
              code,
            })),
          }
        : {}),
      ...provision,
    },
  };
}

async function httpRequest(
  url: string,
  init: { method: string; headers: Record<string, string>; body?: string },
): Promise<HttpAnswer> {
  const res = await fetch(url, init);
  const text = await res.text();
  let body: unknown;
  try {
    body = text ? JSON.parse(text) : undefined;
  } catch {
    body = undefined;
  }
  return { status: res.status, body, text, headers: res.headers };
}

/** Gives the service its exchange key and registers the member (what `hie-ledger member register` does). */
async function registerMember(member: NetworkMember, chain: EmbeddedChain): Promise<void> {
  const enrollment = await member.org.ca.enroll({
    enrollmentId: `exch-${member.mspId.toLowerCase()}`,
    attrs: { 'hie.role': 'exchange-service' },
    keyType: 'P-256',
  });
  const keyFile = serviceKeyFileIn(member.booted.dataDir);
  mkdirSync(dirname(keyFile), { recursive: true, mode: 0o700 });
  writeFileSync(keyFile, enrollment.privateKey, { mode: 0o600 });
  writeFileSync(join(dirname(keyFile), 'cert.pem'), enrollment.certificate, { mode: 0o600 });
  await new MemberDirectory(chain.connect(member.org.service)).register({
    mspId: member.mspId,
    organization: `Member ${member.name}`,
    fhirBaseUrl: member.baseUrl,
    serviceCertificate: enrollment.certificate,
  });
}

interface MemberSpec {
  name: string;
  mspId: string;
  organization: string;
}

const SPECS: MemberSpec[] = [
  { name: 'A', mspId: 'HospitalAMSP', organization: 'Organization/hosp-a' },
  { name: 'B', mspId: 'HospitalBMSP', organization: 'Organization/hosp-b' },
  { name: 'C', mspId: 'LabCMSP', organization: 'Organization/lab-c' },
];

async function startMember(
  spec: MemberSpec,
  org: TestOrg,
  chain: EmbeddedChain,
  flags: Record<string, unknown>,
): Promise<NetworkMember> {
  const booted = await bootApp(
    {
      logLevel: 'warn',
      auth: 'smart',
      mspId: spec.mspId,
      organization: spec.organization,
      validation: 'schema',
      auditCron: 'off',
      networkLocal: 'on',
      anchorIntervalMs: 20,
      ...flags,
    },
    { ledger: chain.connect(org.service), auditFlushMs: 50 },
    `hie-net-${spec.name}-`,
  );
  // The base URL is the listening address (the configuration leaves it unset: the service answers with the URL it
  // is called at, which is the directory's).
  await booted.app.fastify.listen({ host: '127.0.0.1', port: 0 });
  const address = booted.app.fastify.server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  const origin = `http://127.0.0.1:${port}`;
  const participants = await openParticipantDirectory(booted.dataDir, spec.mspId);
  const keys = new Map<string, string>();

  const token = async (clientId: string): Promise<string> => {
    const assertion = await new SignJWT({ jti: randomUUID() })
      .setProtectedHeader({ alg: 'ES384' })
      .setIssuer(clientId)
      .setSubject(clientId)
      .setAudience(`${origin}/auth/token`)
      .setExpirationTime('2m')
      .sign(createPrivateKey(keys.get(clientId)!));
    const res = await httpRequest(`${origin}/auth/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({
        grant_type: 'client_credentials',
        client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
        client_assertion: assertion,
      }).toString(),
    });
    if (res.status !== 200)
      throw new Error(`token for ${clientId} at ${spec.name}: ${res.status} ${res.text}`);
    return res.body.access_token as string;
  };
  const enrol = async (clientId: string, role: ParticipantRole, resource?: string, organization?: string) => {
    const { enrollment } = await participants.enroll({ clientId, role, resource, organization });
    keys.set(clientId, enrollment.privateKey);
    return token(clientId);
  };
  const pseudonymOf = (clientId: string): string => {
    const participant = participants.get(clientId);
    if (!participant) throw new Error(`${clientId} is not enrolled at ${spec.name}`);
    return participant.pseudonym;
  };
  const member: NetworkMember = {
    name: spec.name,
    mspId: spec.mspId,
    organization: spec.organization,
    org,
    booted,
    app: booted.app,
    baseUrl: `${origin}/fhir`,
    participants,
    system: '',
    enrol,
    token,
    pseudonymOf,
    handleOf: (clientId) => `${spec.mspId}|${pseudonymOf(clientId)}`,
    request(bearer, method, path, body, headers = {}) {
      return httpRequest(`${origin}/fhir${path}`, {
        method,
        headers: {
          ...(bearer ? { authorization: `Bearer ${bearer}` } : {}),
          ...(body !== undefined ? { 'content-type': 'application/fhir+json' } : {}),
          ...headers,
        },
        body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
      });
    },
    async entry() {
      const entry = await booted.app.exchange!.members.member(spec.mspId);
      if (!entry) throw new Error(`${spec.mspId} is not a member`);
      return entry;
    },
  };
  member.system = await enrol('sys', 'system', undefined, spec.organization);
  return member;
}

/**
 * Builds the network: chain, three members listening and registered, each with its system participant. `flags`
 * configure every member; `memberFlags` (by member name, A B C) add to them for one.
 */
export async function startNetwork(
  flags: Record<string, unknown> = {},
  memberFlags: Record<string, Record<string, unknown>> = {},
): Promise<TestNetwork> {
  const temp = await tempDir();
  const orgs = await Promise.all(SPECS.map((spec) => makeOrg(temp.dir, spec.mspId)));
  const chain = await openChain(temp.dir, orgs);
  const members: NetworkMember[] = [];
  try {
    for (const [i, spec] of SPECS.entries())
      members.push(await startMember(spec, orgs[i], chain, { ...flags, ...memberFlags[spec.name] }));
    for (const member of members) await registerMember(member, chain);
  } catch (err) {
    for (const member of members) await member.booted.stop().catch(() => undefined);
    await chain.close();
    await temp.cleanup();
    throw err;
  }
  const [a, b, c] = members;
  return {
    chain,
    a,
    b,
    c,
    members,
    async link(home, homePatient, custodian, custodianPatient) {
      const issued = await home.request(home.system, 'POST', `/Patient/${homePatient}/$network-link-token`, {
        resourceType: 'Parameters',
        parameter: [{ name: 'custodian', valueString: custodian.mspId }],
      });
      expect(issued.status, issued.text).toBe(200);
      const token = (issued.body.parameter as { name: string; valueString?: string }[]).find(
        (p) => p.name === 'token',
      )!.valueString!;
      const linked = await custodian.request(
        custodian.system,
        'POST',
        `/Patient/${custodianPatient}/$network-link`,
        {
          resourceType: 'Parameters',
          parameter: [{ name: 'token', valueString: token }],
        },
      );
      expect(linked.status, linked.text).toBe(200);
    },
    async networkToken(caller, custodian, actor) {
      const client = caller.app.exchange!.tokenClient();
      if (!client) throw new Error(`${caller.name} has no service key`);
      const entry = await caller.app.exchange!.members.member(custodian.mspId);
      if (!entry) throw new Error(`${custodian.mspId} is not a member`);
      return client.token(entry, actor);
    },
    async stop() {
      for (const member of members) {
        member.participants.close();
        await member.booted.stop();
      }
      await chain.close();
      await temp.cleanup();
    },
  };
}
