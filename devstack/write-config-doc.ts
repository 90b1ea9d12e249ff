import { writeConfigTable } from './config-doc.js';

// Usage: npm run config-doc — regenerates the README's configuration table from src/config/schema.ts.
const file = process.argv[2] ?? 'README.md';
process.stdout.write(writeConfigTable(file) ? `wrote the configuration table in ${file}\n` : `${file} is up to date\n`);
