export { loadFabricConfig, parseFabricConfig, FabricConfigError, DEFAULT_FABRIC_TIMEOUTS } from './config.js';
export type { FabricConfig, FabricCaConfig, FabricTimeouts } from './config.js';
export { openFabricLedger, FabricLedger, DEFAULT_RETRY } from './fabric-ledger.js';
export type { FabricLedgerOptions, LedgerLogger, RetryPolicy } from './fabric-ledger.js';
