import { spawn } from 'node:child_process';

/** Runs `npm run import -- <args>` (the tools/import CLI) to completion with `env` added. */
export function runImportCommand(args: string[], env: Record<string, string>): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'tools/import/import-sessions.ts', ...args], { env: { ...process.env, ...env } });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (c) => (stdout += String(c)));
  child.stderr.on('data', (c) => (stderr += String(c)));
  return new Promise((resolve) => child.on('close', (code) => resolve({ code, stdout, stderr })));
}
