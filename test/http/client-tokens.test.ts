import t from 'tap';
import { clientTokensHttpSuite } from './client-tokens-suite.js';

await clientTokensHttpSuite(t, {});
