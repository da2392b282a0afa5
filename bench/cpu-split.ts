/**
 * Where a service's CPU went, by part of a request, from a V8 CPU profile (`node --cpu-prof`, which the benchmarks'
 * BENCH_CPU_PROF=dir turns on for every service they start). Only the samples inside given time windows count (the
 * load slices of one variant: a profile's timestamps and this process's `process.hrtime` are the same monotonic
 * clock on Linux), idle samples aside; each busy sample goes to the part of the innermost function on its stack that
 * marks one (PARTS), else to "HTTP, fastify, Node, other": a sample in zlib under encodeJson under the store's
 * write is the deflate's, one in JSON.parse under parseResourceBody under the create is the body parsing's.
 *
 * Sampled (about one sample a millisecond), so a part of a few µs a request is blurred; the big parts are steady.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

interface CallFrame {
  functionName: string;
  url: string;
}
interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}
export interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  samples: number[];
  timeDeltas: number[];
}

/** A part of a request: a function on the stack that marks it (its name, and a piece of its file's URL). */
interface Part {
  name: string;
  marks: { fn: RegExp; file: string }[];
}

const mark = (fn: string, file: string) => ({ fn: new RegExp(`^(?:${fn})$`), file });

/**
 * The parts and the functions that mark them (the service's, in dist/; the same names on every build since group
 * commit, a8556df^ included). Access: named functions of src/access and src/consent only, since fastify runs the
 * rest of a request from inside the (anonymous) auth and audit hooks.
 */
export const PARTS: Part[] = [
  {
    name: 'anchoring round (ledger, journal)',
    marks: [mark('anchorRound|prepareBatch|nextPending|pendingAnchors|finish', 'anchor')],
  },
  {
    name: 'anchor hook (canonical JSON, HMAC)',
    marks: [mark('anchorOf|anchorFor|pendingAnchorOf|canonicalOfVersion|leafHashOf\\w*', '')],
  },
  { name: 'store: deflate of the JSON', marks: [mark('encodeJson', 'json-codec')] },
  { name: 'store: planWrite, serialise', marks: [mark('planWrite|serialiseVersion', 'store-support')] },
  {
    name: 'store: SQLite statements, commit',
    marks: [mark('flushQueued|writeNow|writeBatch\\w*|sqliteTransaction|markAnchored', '')],
  },
  { name: 'index extraction', marks: [mark('extractIndex', 'index-entries')] },
  { name: 'validation', marks: [mark('validateResource', 'interactions/common')] },
  { name: 'body parsing (lossless JSON)', marks: [mark('parseResourceBody', 'interactions/common')] },
  {
    name: 'access, consent, audit',
    marks: [mark('.+', '/access/'), mark('.+', '/consent/')],
  },
  {
    name: 'response (headers, body, socket write)',
    marks: [mark('send', 'fhir-routes'), mark('onSendEnd|writePayload', 'fastify/lib/reply')],
  },
  {
    name: 'interaction (create, writeVersion, rest)',
    marks: [mark('handle', 'fhir-routes'), mark('create', 'interactions/create')],
  },
  {
    name: 'fastify: body read, hooks to the handler',
    marks: [mark('rawBody|onEnd|onData', 'content-type-parser')],
  },
  { name: 'garbage collection', marks: [mark('\\(garbage collector\\)', '')] },
];
export const OTHER = 'HTTP, fastify, Node, other';

/** The newest profile `--cpu-prof-dir=dir` wrote for process `pid` (its file name carries the pid). */
export function readProfile(dir: string, pid: number): CpuProfile | undefined {
  const file = readdirSync(dir)
    .filter((f) => f.endsWith('.cpuprofile') && f.split('.')[3] === String(pid))
    .sort()
    .pop();
  return file ? (JSON.parse(readFileSync(join(dir, file), 'utf8')) as CpuProfile) : undefined;
}

/** Microseconds now on the profiles' clock. */
export function profileClockUs(): number {
  return Number(process.hrtime.bigint() / 1000n);
}

/** CPU µs per part over the windows (µs on the profile's clock), divided by `requests`; plus the total. */
export function splitByPart(
  profile: CpuProfile,
  windows: { from: number; to: number }[],
  requests: number,
): { part: string; us: number }[] {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  // Each node's part, decided once: its own mark, else its caller's (the innermost marked frame of a stack).
  const partOf = new Map<number, number>();
  // A mark's file is matched inside the checkout (from its dist/, src/ or node_modules/ on), never against the
  // checkout's own path: a worktree named after a part would otherwise claim every function of that name.
  const inCheckout = (url: string) => /(?:^|\/)((?:dist|src|node_modules)\/.*)$/.exec(url)?.[1] ?? url;
  const own = (frame: CallFrame): number =>
    PARTS.findIndex((p) =>
      p.marks.some((m) => m.fn.test(frame.functionName) && inCheckout(frame.url).includes(m.file)),
    );
  const resolve = (id: number): number => {
    let part = partOf.get(id);
    if (part === undefined) {
      part = own(byId.get(id)!.callFrame);
      if (part < 0 && parent.has(id)) part = resolve(parent.get(id)!);
      partOf.set(id, part);
    }
    return part;
  };
  const totals = new Map<string, number>();
  let time = profile.startTime;
  for (let i = 0; i < profile.samples.length; i++) {
    time += profile.timeDeltas[i]!;
    const next = i + 1 < profile.samples.length ? profile.timeDeltas[i + 1]! : 0;
    if (!windows.some((w) => time >= w.from && time < w.to)) continue;
    const node = byId.get(profile.samples[i]!)!;
    if (node.callFrame.functionName === '(idle)') continue;
    const part = resolve(node.id);
    const name = part < 0 ? OTHER : PARTS[part]!.name;
    totals.set(name, (totals.get(name) ?? 0) + next);
    totals.set('total', (totals.get('total') ?? 0) + next);
  }
  return [...totals]
    .map(([part, us]) => ({ part, us: us / requests }))
    .sort((a, b) => (a.part === 'total' ? -1 : b.part === 'total' ? 1 : b.us - a.us));
}
