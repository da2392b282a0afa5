/**
 * A validation worker thread (validation-pool.ts): validation only (the service's $import, `hie-ledger validate`).
 */
import { answerChunks } from './validation-worker-loop.js';

answerChunks();
