import { examplesShard } from './r4-examples-shard.js';

examplesShard(5, 6);
