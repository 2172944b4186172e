// json-server 0.17.4 on an ephemeral loopback port, on a copy of db.json in a temp dir (the
// checked-in file is never written), serving ./public on the same port.
//
//   node tests/learn/jsonserver/start.mjs      # prints the URL, Ctrl-C stops it

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort, stopProcess, track } from '../../browser/harness.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const BIN = path.join(here, 'node_modules', '.bin', 'json-server');
const DB = path.join(here, 'db.json');
const PUBLIC = path.join(here, 'public');

const delay = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls GET /boards until 200; throws when the child exits or the deadline passes. */
async function waitReady(url, child, log, timeout) {
  const deadline = Date.now() + timeout;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`json-server exited (${child.exitCode ?? child.signalCode}) before answering; log:\n${log()}`);
    }
    const ok = await fetch(`${url}/boards`, { signal: AbortSignal.timeout(1_000) })
      .then((r) => r.status === 200, () => false);
    if (ok) return;
    if (Date.now() >= deadline) throw new Error(`json-server not ready in ${timeout} ms; log:\n${log()}`);
    await delay(50);
  }
}

/**
 * Starts json-server on `port` (default: a free one). Resolves with {url, port, child, dbPath,
 * log(), stop()} once `GET /boards` answers 200; `stop()` kills it by PID, waits for the exit
 * and removes the temp dir (kept with KEEP_JSONSERVER_DB=1).
 */
export async function startJsonServer({ port, readyTimeout = 15_000 } = {}) {
  if (!fs.existsSync(BIN)) throw new Error(`json-server is not installed: cd ${here} && npm install`);
  const usePort = port ?? (await freePort());
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'learn-jsonserver-'));
  const dbPath = path.join(dir, 'db.json');
  const logPath = path.join(dir, 'json-server.log');
  fs.copyFileSync(DB, dbPath);
  const fd = fs.openSync(logPath, 'a');
  let child;
  try {
    // json-server joins --static onto its cwd, so the directory is given relative to it.
    const staticDir = path.relative(dir, PUBLIC);
    child = track(spawn(BIN, [dbPath, '--port', String(usePort), '--host', '127.0.0.1', '--static', staticDir], {
      cwd: dir,
      stdio: ['ignore', fd, fd],
    }));
  } finally {
    fs.closeSync(fd);
  }
  const log = () => (fs.existsSync(logPath) ? fs.readFileSync(logPath, 'utf8') : '');
  const url = `http://127.0.0.1:${usePort}`;
  const stop = async () => {
    await stopProcess(child, { timeout: 5_000 });
    if (!process.env.KEEP_JSONSERVER_DB) fs.rmSync(dir, { recursive: true, force: true });
  };
  try {
    await waitReady(url, child, log, readyTimeout);
  } catch (e) {
    await stop();
    throw e;
  }
  return { url, port: usePort, child, dbPath, log, stop };
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const server = await startJsonServer({ port: process.env.PORT ? Number(process.env.PORT) : undefined });
  console.log(`json-server on ${server.url} (db ${server.dbPath}); Ctrl-C stops it`);
  const quit = () => server.stop().then(() => process.exit(0));
  process.once('SIGINT', quit);
  process.once('SIGTERM', quit);
}
