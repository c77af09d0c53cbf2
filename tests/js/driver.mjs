// Drives the official @actions/cache client once and reports what it returned.
//
//   node driver.mjs <v6|v3> <save|restore> --key K [--restore-key R ...]
//                   --path P [--path P ...] [--lookup-only]
//
// All client configuration (ACTIONS_RESULTS_URL, ACTIONS_CACHE_URL,
// ACTIONS_RUNTIME_TOKEN, ACTIONS_CACHE_SERVICE_V2, GITHUB_WORKSPACE,
// RUNNER_TEMP, RUNNER_DEBUG, ...) comes from the caller's environment.
// The client's own log lines go to stdout untouched; the last line printed is
//   GHACACHE_RESULT {"ok": true, "result": ...} | {"ok": false, "error": "..."}
// Exit status: 0 once a result line was printed, 2 for bad usage.

import { parseArgs } from 'node:util';

const PACKAGES = { v6: 'actions-cache-v6', v3: 'actions-cache-v3' };
const OPERATIONS = ['save', 'restore'];
const USAGE =
  'usage: node driver.mjs <v6|v3> <save|restore> --key K [--restore-key R ...] ' +
  '--path P [--path P ...] [--lookup-only]';

function usageError(message) {
  process.stderr.write(`driver: ${message}\n${USAGE}\n`);
  process.exit(2);
}

function parseCommandLine(argv) {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        key: { type: 'string' },
        'restore-key': { type: 'string', multiple: true, default: [] },
        path: { type: 'string', multiple: true, default: [] },
        'lookup-only': { type: 'boolean', default: false },
      },
    });
  } catch (err) {
    usageError(err.message);
  }
  const { values, positionals } = parsed;
  if (positionals.length !== 2) usageError('expected exactly two positional arguments');
  const [impl, op] = positionals;
  if (!(impl in PACKAGES)) usageError(`unknown client '${impl}'`);
  if (!OPERATIONS.includes(op)) usageError(`unknown operation '${op}'`);
  if (values.key === undefined) usageError('--key is required');
  if (values.path.length === 0) usageError('at least one --path is required');
  if (op === 'save' && (values['restore-key'].length > 0 || values['lookup-only'])) {
    usageError('--restore-key and --lookup-only only apply to restore');
  }
  return {
    impl,
    op,
    key: values.key,
    paths: values.path,
    restoreKeys: values['restore-key'],
    lookupOnly: values['lookup-only'],
  };
}

// 6.x is an ES module; 3.x is CommonJS, whose exports may only be on `default`.
async function loadClient(impl) {
  const mod = await import(PACKAGES[impl]);
  return typeof mod.saveCache === 'function' ? mod : mod.default;
}

function describeError(err) {
  if (err instanceof Error) return `${err.name}: ${err.message}`;
  return String(err);
}

function finish(report) {
  process.stdout.write(`GHACACHE_RESULT ${JSON.stringify(report)}\n`, () => process.exit(0));
}

async function main() {
  const args = parseCommandLine(process.argv.slice(2));
  if (!process.env.RUNNER_TEMP) {
    process.stderr.write('driver: RUNNER_TEMP is not set; the client needs it for its archive\n');
    process.exit(2);
  }
  const client = await loadClient(args.impl);

  let report;
  try {
    const result =
      args.op === 'save'
        ? await client.saveCache(args.paths, args.key)
        : await client.restoreCache(args.paths, args.key, args.restoreKeys, {
            lookupOnly: args.lookupOnly,
          });
    report = { ok: true, result: result === undefined ? null : result };
  } catch (err) {
    report = { ok: false, error: describeError(err) };
  }
  finish(report);
}

await main();
