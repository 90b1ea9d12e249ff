import t from 'tap';
import { subjectsHttpSuite } from './subjects-suite.js';

await subjectsHttpSuite(t, {});
