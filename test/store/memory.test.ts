/** The store contract against the in-memory adapter (the fast lane's store: no file, no database). */
import { MemoryResourceStore } from '../../src/fhir/store/memory/memory-store.js';
import { describeResourceStoreContract } from './contract.js';

describeResourceStoreContract('memory', async () => {
  const store = new MemoryResourceStore();
  await store.init();
  return store;
});
