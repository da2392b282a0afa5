import { examplesShard } from './r4-examples-shard.js';

examplesShard(1, 6);
