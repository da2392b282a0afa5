import { examplesShard } from './r4-examples-shard.js';

examplesShard(3, 6);
