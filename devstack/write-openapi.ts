import { writeFileSync } from 'node:fs';
import { openapiYaml } from './openapi-document.js';

// Usage: npm run openapi — regenerates openapi.yaml from the route schemas.
const file = process.argv[2] ?? 'openapi.yaml';
writeFileSync(file, await openapiYaml());
process.stdout.write(`wrote ${file}\n`);
