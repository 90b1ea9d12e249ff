import { mintApiKey } from '../auth/api-keys.js';

// Usage: npm run mint-key -- <client> <namespace>
// Prints the key once (to stdout's first line) and the entry to add to the API keys file.
const [client, namespace] = process.argv.slice(2);
if (client === undefined || namespace === undefined) {
  process.stderr.write('usage: npm run mint-key -- <client> <namespace>\n');
  process.exit(2);
}
if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/.test(namespace)) {
  process.stderr.write('namespace: 1-64 characters of letters, digits, ".", "_" or "-"\n');
  process.exit(2);
}
const { key, entry } = mintApiKey(client, namespace);
process.stdout.write(`${key}\n`);
process.stderr.write('\nThe key above is shown only now. Add this entry to the API keys file:\n');
process.stdout.write(`${JSON.stringify(entry)}\n`);
