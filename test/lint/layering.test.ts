/**
 * The layering rules of eslint.config.js (ARCHITECTURE.md, "Who may import whom") catch a
 * wrong-way import: each case lints one line as if it were a file of the named folder.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ESLint } from 'eslint';

const ROOT = join(fileURLToPath(new URL('.', import.meta.url)), '..', '..', '..');

test('a wrong-way import fails lint; the allowed direction passes', async () => {
  const eslint = new ESLint({ cwd: ROOT });
  const cases: [string, string, boolean][] = [
    ['src/tables/x.ts', "import { PacketInfo } from '../datapath/packet.js';", false],
    ['src/tables/x.ts', "import { readFileSync } from 'node:fs';", false],
    ['src/tables/x.ts', "import { IPPROTO_TCP } from '../proto/ip.js';", true],
    ['src/datapath/x.ts', "import { Agent } from '../control/agent.js';", false],
    ['src/datapath/x.ts', "import { EventRing } from '../tables/events.js';", true],
    ['src/proto/x.ts', "import { EventRing } from '../tables/events.js';", false],
    ['src/proto/x.ts', "import { readFileSync } from 'node:fs';", false],
    ['src/proto/x.ts', "import { ID_WORLD } from './identity.js';", true],
    ['src/observe/x.ts', "import { formatTable } from '../cli/table.js';", false],
    ['src/lab/x.ts', "import { formatTable } from '../text/table.js';", true],
    ['src/control/x.ts', "import { Rand } from '../../test/helpers/rand.js';", false],
    ['src/runtime/x.ts', "import { x } from '../../bench/micro.js';", false],
  ];
  for (const [file, line, ok] of cases) {
    const [res] = await eslint.lintText(`${line}\nexport const used = 1;\n`, { filePath: join(ROOT, file) });
    const errs = (res?.messages ?? []).filter((m) => m.ruleId === 'no-restricted-imports');
    assert.equal(errs.length === 0, ok, `${file}: ${line}: got ${errs.length} layering errors, want ${ok ? 'none' : 'one'}`);
  }
});
