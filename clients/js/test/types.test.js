// The committed declarations in types/ are what `npm run types` generates from the JSDoc of
// the shipped modules: regenerate them into a temporary directory and compare file by file.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc');
const HOW = 'regenerate them with `cd clients/js && npm run types` and commit types/';

test('the committed declarations in types/ are up to date', () => {
  assert.ok(existsSync(tsc), `typescript is not installed in clients/js: run \`npm ci\` there first`);
  const out = mkdtempSync(join(tmpdir(), 'sse-types-'));
  try {
    execFileSync(process.execPath, [tsc, '-p', join(root, 'tsconfig.types.json'), '--outDir', out], {
      cwd: root,
      stdio: 'pipe',
    });
    const fresh = readdirSync(out).sort();
    const committed = readdirSync(join(root, 'types')).sort();
    assert.deepEqual(committed, fresh, `types/ has other files than tsc generates: ${HOW}`);
    for (const name of fresh) {
      const want = readFileSync(join(out, name), 'utf8');
      const have = readFileSync(join(root, 'types', name), 'utf8');
      assert.ok(have === want, `types/${name} is stale (the JSDoc changed since): ${HOW}`);
    }
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});

test('the JSDoc type-checks (tsc --checkJs; react.js also strict)', () => {
  for (const project of ['tsconfig.json', 'tsconfig.strict.json']) {
    try {
      execFileSync(process.execPath, [tsc, '-p', join(root, project)], { cwd: root, stdio: 'pipe' });
    } catch (e) {
      assert.fail(`tsc -p ${project} found type errors:\n${e.stdout}${e.stderr}`);
    }
  }
});
