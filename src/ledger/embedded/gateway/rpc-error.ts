/**
 * gRPC errors as a peer's Gateway sends them: a status code and message, and for endorsement and evaluation
 * failures gateway.ErrorDetail entries (the failing peer's address, MSP and message) in the
 * google.rpc.Status of `grpc-status-details-bin`, which the fabric-gateway client shows as `details`.
 */
import * as grpc from '@grpc/grpc-js';
import { gateway } from '@hyperledger/fabric-protos';
import { wellFormed, type WireSchema } from './wire-format.js';

/** A refusal of the Gateway server: `details` are messages of the endorsing peer (ErrorDetail). */
export class GatewayRpcError extends Error {
  constructor(
    readonly code: grpc.status,
    message: string,
    readonly details: readonly string[] = [],
  ) {
    super(message);
    this.name = 'GatewayRpcError';
  }
}

/** Who reports ErrorDetail entries: the endorsing peer's address and MSP id. */
export interface ErrorReporter {
  address: string;
  mspId: string;
}

/**
 * The gRPC error for `error`: a GatewayRpcError as it is, anything else INTERNAL without its text (the
 * server logs it; a caller from the network learns nothing of the server's insides).
 */
export function toServiceError(error: unknown, reporter: ErrorReporter): grpc.ServiceError {
  const rpc =
    error instanceof GatewayRpcError ? error : new GatewayRpcError(grpc.status.INTERNAL, 'internal error');
  const metadata = new grpc.Metadata();
  if (rpc.details.length > 0) {
    const details = rpc.details.map((message) => {
      const detail = new gateway.ErrorDetail();
      detail.setAddress(reporter.address);
      detail.setMspId(reporter.mspId);
      detail.setMessage(message);
      return detail;
    });
    metadata.set('grpc-status-details-bin', encodeRpcStatus(rpc.code, rpc.message, details));
  }
  return Object.assign(new Error(rpc.message), { code: rpc.code, details: rpc.message, metadata });
}

/**
 * google.rpc.Status {code = 1, message = 2, details = 3 (google.protobuf.Any {type_url = 1, value = 2})}, encoded
 * by hand: fabric-protos ships google.rpc.Status but not google.protobuf.Any's typings.
 */
function encodeRpcStatus(code: number, message: string, details: gateway.ErrorDetail[]): Buffer {
  const field = (tag: number, bytes: Uint8Array) =>
    Buffer.concat([Buffer.from([tag]), varint(bytes.length), bytes]);
  const parts = [Buffer.from([0x08]), varint(code), field(0x12, Buffer.from(message))];
  for (const detail of details) {
    const any = Buffer.concat([
      field(0x0a, Buffer.from('type.googleapis.com/gateway.ErrorDetail')),
      field(0x12, detail.serializeBinary()),
    ]);
    parts.push(field(0x1a, any));
  }
  return Buffer.concat(parts);
}

function varint(value: number): Buffer {
  const bytes: number[] = [];
  let v = value >>> 0;
  while (v > 0x7f) {
    bytes.push((v & 0x7f) | 0x80);
    v >>>= 7;
  }
  bytes.push(v);
  return Buffer.from(bytes);
}

/**
 * Decodes protobuf bytes from the network: checked for well-formedness first (wire-format.ts), and malformed
 * bytes are INVALID_ARGUMENT, never a crash or a busy event loop.
 */
export function decodeOrRefuse<T>(
  what: string,
  bytes: Uint8Array,
  schema: WireSchema,
  decode: (bytes: Uint8Array) => T,
): T {
  if (!wellFormed(bytes, schema))
    throw new GatewayRpcError(grpc.status.INVALID_ARGUMENT, `malformed ${what}`);
  try {
    return decode(bytes);
  } catch {
    throw new GatewayRpcError(grpc.status.INVALID_ARGUMENT, `malformed ${what}`);
  }
}
