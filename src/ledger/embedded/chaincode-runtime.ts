/**
 * Runs the chaincode package's contracts in-process with fabric-shim's own contract machinery: the contract
 * classes are registered by fabric-shim's ChaincodeFromContract (metadata from the decorators, argument
 * marshalling, the JSON serializer), and each transaction is routed exactly as its invokeFunctionality does
 * (`contract:Tx`, createContext, before/around/afterTransaction, unknownTransaction, errors as status 500).
 * ctx.clientIdentity is fabric-shim's ClientIdentity parsed from the creator's X.509 certificate; parsing it
 * costs ~0.15 ms, so one instance is kept per creator certificate (its content depends on nothing else).
 */
import { createRequire } from 'node:module';
import type { ChaincodeStub, ClientIdentity, SerializedIdentity } from 'fabric-shim-api';

const require = createRequire(import.meta.url);

interface ContractInstance {
  createContext(): {
    setChaincodeStub(stub: ChaincodeStub): void;
    setClientIdentity(identity: ClientIdentity): void;
    logging?: unknown;
  };
  beforeTransaction(ctx: unknown): Promise<void>;
  aroundTransaction(ctx: unknown, fn: string, parameters: unknown[]): Promise<unknown>;
  afterTransaction(ctx: unknown, result: unknown): Promise<void>;
  unknownTransaction(ctx: unknown): Promise<void>;
}

interface DataMarshall {
  handleParameters(fn: TransactionDescriptor, parameters: Buffer[], loggerPrefix: string): unknown[];
  toWireBuffer(result: unknown, schema: unknown, loggerPrefix: string): Buffer | undefined;
}

interface TransactionDescriptor {
  name: string;
  tag?: string[];
  returns?: { schema?: unknown };
}

interface ContractRouter {
  contractImplementations: Record<string, { contractInstance: ContractInstance; dataMarshall: DataMarshall }>;
  metadata: { contracts: Record<string, { transactions: TransactionDescriptor[] }> };
  _splitFunctionName(fcn: string): { contractName: string; function: string };
}

type ContractRouterClass = new (
  contracts: unknown[],
  serializers: unknown,
  metadata: object,
  title: string,
  version: string,
) => ContractRouter;

type ClientIdentityClass = new (
  stub: Pick<ChaincodeStub, 'getChannelID' | 'getTxID' | 'getCreator'>,
) => ClientIdentity;

export interface ChaincodeModule {
  contracts: unknown[];
  stableStringify(value: unknown): string;
}

export interface InvokeResult {
  status: number;
  message: string;
  payload: Buffer;
}

interface LoadedChaincode {
  router: ContractRouter;
  chaincode: ChaincodeModule;
  ClientIdentity: ClientIdentityClass;
  shimLogger: { getLogger(name: string): { debug(...args: unknown[]): void } };
}

let loaded: LoadedChaincode | undefined;

/**
 * Loads the chaincode once per process. fabric-contract-api logs every decorator at info level while the
 * classes load; unless the operator chose a level (CORE_CHAINCODE_LOGGING_LEVEL, as on a peer), the embedded
 * chain keeps the chaincode quiet: its failures reach the caller as errors anyway.
 */
export function loadChaincode(): LoadedChaincode {
  if (loaded) return loaded;
  process.env.CORE_CHAINCODE_LOGGING_LEVEL ??= 'CRITICAL';
  const chaincode = require('hie-ledger-chaincode') as ChaincodeModule;
  const packageJson = require('hie-ledger-chaincode/package.json') as { name: string; version: string };
  const ChaincodeFromContract =
    require('fabric-shim/lib/contract-spi/chaincodefromcontract.js') as ContractRouterClass;
  const { JSONSerializer } = require('fabric-contract-api') as { JSONSerializer: unknown };
  const serializers = { transaction: 'jsonSerializer', serializers: { jsonSerializer: JSONSerializer } };
  // The router appends its system contract to the array it is given: hand it a copy.
  const router = new ChaincodeFromContract(
    [...chaincode.contracts],
    serializers,
    {},
    packageJson.name,
    packageJson.version,
  );
  const { ClientIdentity } = require('fabric-shim') as { ClientIdentity: ClientIdentityClass };
  const shimLogger = require('fabric-shim/lib/logger.js') as LoadedChaincode['shimLogger'];
  muteFilteredDebugLogging(
    shimLogger,
    require('fabric-contract-api/lib/logger.js') as LoadedChaincode['shimLogger'],
  );
  loaded = { router, chaincode, ClientIdentity, shimLogger };
  return loaded;
}

/**
 * winston formats and streams every debug call before its level filter drops it (~20 µs each, several per
 * transaction in argument marshalling). Unless debug logging is on, the per-transaction loggers of the
 * contract machinery get a no-op debug method; their other levels are untouched.
 */
function muteFilteredDebugLogging(...loggerModules: LoadedChaincode['shimLogger'][]): void {
  if ((process.env.CORE_CHAINCODE_LOGGING_LEVEL ?? '').toUpperCase() === 'DEBUG') return;
  const hotPathLoggers = [
    'contracts-spi/datamarshall.js',
    'contracts-spi/chaincodefromcontract.js',
    'lib/chaincode.js',
    './lib/jsontransactionserializer.js',
    './lib/contract.js',
  ];
  for (const loggers of loggerModules) {
    for (const name of hotPathLoggers) loggers.getLogger(name).debug = () => {};
  }
}

export class ChaincodeRuntime {
  private readonly loaded = loadChaincode();
  private readonly identities = new Map<string, ClientIdentity>();
  readonly stableStringify: (value: unknown) => string = this.loaded.chaincode.stableStringify;

  /** Runs one transaction: the stub carries the proposal (args[0] is `contract:Tx`) and records the rwset. */
  async invoke(stub: ChaincodeStub & { getBufferArgs(): Buffer[] }): Promise<InvokeResult> {
    const [functionBytes, ...txArgs] = stub.getBufferArgs();
    if (!functionBytes)
      return { status: 200, message: '', payload: Buffer.from('Default initiator successful.') };
    const loggerPrefix = `[${stub.getChannelID()}-${stub.getTxID().substring(0, 8)}]`;
    const { router } = this.loaded;
    try {
      const { contractName, function: functionName } = router._splitFunctionName(
        functionBytes.toString('utf8'),
      );
      const implementation = router.contractImplementations[contractName];
      if (!implementation) throw new Error(`Contract name is not known: ${contractName}`);
      const { contractInstance, dataMarshall } = implementation;
      const ctx = contractInstance.createContext();
      ctx.setChaincodeStub(stub);
      ctx.setClientIdentity(this.clientIdentity(stub));
      ctx.logging = {
        setLevel: () => {},
        getLogger: (name?: string) =>
          this.loaded.shimLogger.getLogger(name ? `${contractName}:${name}` : contractName),
      };
      const descriptor = router.metadata.contracts[contractName]!.transactions.find(
        (tx) => tx.name === functionName,
      );
      if (!descriptor) {
        try {
          await contractInstance.unknownTransaction(ctx);
          return { status: 200, message: '', payload: Buffer.alloc(0) };
        } catch (error) {
          return failure(error);
        }
      }
      const parameters = dataMarshall.handleParameters(descriptor, txArgs, loggerPrefix);
      await contractInstance.beforeTransaction(ctx);
      const result = await contractInstance.aroundTransaction(ctx, functionName, parameters);
      await contractInstance.afterTransaction(ctx, result);
      const payload = dataMarshall.toWireBuffer(result, descriptor.returns?.schema, loggerPrefix);
      return { status: 200, message: '', payload: payload ? Buffer.from(payload) : Buffer.alloc(0) };
    } catch (error) {
      return failure(error);
    }
  }

  /** True for transactions declared read-only (`@Transaction(false)`, tagged EVALUATE in the metadata). */
  isEvaluateOnly(transaction: string): boolean {
    const { contractName, function: functionName } = this.loaded.router._splitFunctionName(transaction);
    const declared = this.loaded.router.metadata.contracts[contractName]?.transactions.find(
      (tx) => tx.name === functionName,
    );
    return declared?.tag?.includes('EVALUATE') ?? false;
  }

  private clientIdentity(stub: ChaincodeStub): ClientIdentity {
    const creator: SerializedIdentity = stub.getCreator();
    const cacheKey = `${creator.mspid}\n${Buffer.from(creator.idBytes).toString('utf8')}`;
    let identity = this.identities.get(cacheKey);
    if (!identity) {
      identity = new this.loaded.ClientIdentity({
        getChannelID: () => stub.getChannelID(),
        getTxID: () => stub.getTxID(),
        getCreator: () => ({ mspid: creator.mspid, idBytes: Buffer.from(creator.idBytes) }),
      });
      if (this.identities.size >= 1024) this.identities.clear();
      this.identities.set(cacheKey, identity);
    }
    return identity;
  }
}

/** fabric-shim's shim.error(message): status 500, the error's message. */
function failure(error: unknown): InvokeResult {
  return {
    status: 500,
    message: error instanceof Error ? error.message : String(error),
    payload: Buffer.alloc(0),
  };
}
