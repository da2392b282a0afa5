import { examplesShard } from './r4-examples-shard.js';

examplesShard(2, 6);
