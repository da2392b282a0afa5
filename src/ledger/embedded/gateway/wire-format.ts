/**
 * A structural check of protobuf bytes from the network before google-protobuf parses them: google-protobuf
 * (jspb) does not bound a nested message's declared length by the buffer, so a few bytes declaring a 4 GiB
 * sub-message keep the event loop busy for minutes. The check walks the wire format with a schema of the
 * message-typed fields (the only ones jspb descends into) and refuses any length past its enclosing message,
 * varints over 10 bytes, groups and field number 0. Linear in the input, no allocation.
 */

/** Field number -> the schema of a nested message; fields not listed are scalars, strings or bytes. */
export interface WireSchema {
  readonly [field: number]: WireSchema;
}

const SCALARS: WireSchema = {};

/** True when `bytes` is well-formed for `schema` (jspb can then parse it without running past the buffer). */
export function wellFormed(bytes: Uint8Array, schema: WireSchema): boolean {
  return walk(bytes, 0, bytes.length, schema);
}

function walk(bytes: Uint8Array, start: number, end: number, schema: WireSchema): boolean {
  let pos = start;
  while (pos < end) {
    const tag = readVarint(bytes, pos, end);
    if (!tag) return false;
    pos = tag.next;
    const field = Math.floor(tag.value / 8);
    const wireType = tag.value % 8;
    if (field === 0) return false;
    switch (wireType) {
      case 0: {
        const value = readVarint(bytes, pos, end);
        if (!value) return false;
        pos = value.next;
        break;
      }
      case 1:
        pos += 8;
        break;
      case 5:
        pos += 4;
        break;
      case 2: {
        const length = readVarint(bytes, pos, end);
        if (!length || length.value > end - length.next) return false;
        const contentEnd = length.next + length.value;
        const nested = schema[field];
        if (nested && !walk(bytes, length.next, contentEnd, nested)) return false;
        pos = contentEnd;
        break;
      }
      default:
        return false; // groups (3, 4) and the undefined types 6, 7
    }
    if (pos > end) return false;
  }
  return true;
}

function readVarint(
  bytes: Uint8Array,
  pos: number,
  end: number,
): { value: number; next: number } | undefined {
  let value = 0;
  let scale = 1;
  for (let i = 0; i < 10 && pos + i < end; i++) {
    const byte = bytes[pos + i]!;
    value += (byte & 0x7f) * scale;
    scale *= 128;
    if (byte < 0x80) return { value, next: pos + i + 1 };
  }
  return undefined;
}

// The messages the gateway parses (fabric-protos: gateway, peer, common, msp, orderer), message fields only.
const TIMESTAMP = SCALARS;
const CHAINCODE_ID = SCALARS;
const MAP_ENTRY = SCALARS;
const CHAINCODE_INPUT: WireSchema = { 2: MAP_ENTRY };
const CHAINCODE_SPEC: WireSchema = { 2: CHAINCODE_ID, 3: CHAINCODE_INPUT };
const SEEK_POSITION: WireSchema = { 1: SCALARS, 2: SCALARS, 3: SCALARS, 4: SCALARS };
const HEADER = SCALARS;

export const WIRE_SCHEMAS = {
  signedProposal: SCALARS,
  envelope: SCALARS,
  evaluateRequest: { 3: SCALARS } as WireSchema,
  endorseRequest: { 3: SCALARS } as WireSchema,
  submitRequest: { 3: SCALARS } as WireSchema,
  signedCommitStatusRequest: SCALARS,
  signedChaincodeEventsRequest: SCALARS,
  proposal: SCALARS,
  header: HEADER,
  channelHeader: { 3: TIMESTAMP } as WireSchema,
  signatureHeader: SCALARS,
  serializedIdentity: SCALARS,
  chaincodeHeaderExtension: { 2: CHAINCODE_ID } as WireSchema,
  chaincodeProposalPayload: { 2: MAP_ENTRY } as WireSchema,
  chaincodeInvocationSpec: { 1: CHAINCODE_SPEC } as WireSchema,
  payload: { 1: HEADER } as WireSchema,
  commitStatusRequest: SCALARS,
  chaincodeEventsRequest: { 4: SEEK_POSITION } as WireSchema,
  seekInfo: { 1: SEEK_POSITION, 2: SEEK_POSITION } as WireSchema,
} as const;
