// The peer of `vercel-secret-rotator run --once` for BENCHMARKS.md: the same bulk rotation
// written the way a partner would on Vercel's official SDK (@vercel/sdk).
//
//   node rotate.mjs --url http://127.0.0.1:PORT --resources 10000 --installations 8 --concurrency 64
//
// Resource k (res0..) belongs to installation k % installations (id icfg_bench{i}, token
// benchtoken{i}), as the fake (examples/fake_vercel.rs) and bench/run.sh lay them out. For each
// resource: a 40-character alphanumeric value from Node's CSPRNG (crypto.randomInt, unbiased),
// then sdk.marketplace.updateResourceSecretsById with partial: true; 64 in flight; the SDK's
// retry config on (its default backoff, which honours Retry-After). One client per installation,
// each with its own bearer token. Prints a JSON summary; exit 1 if any push failed.
import { randomInt } from "node:crypto";

// Timed, to tell the SDK's start-up (loading its modules and schemas) from the rotation itself.
const importStarted = performance.now();
const { Vercel } = await import("@vercel/sdk");
const importS = (performance.now() - importStarted) / 1000;

const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, a, i, all) => {
    if (a.startsWith("--")) acc.push([a.slice(2), all[i + 1]]);
    return acc;
  }, []),
);
const url = args.url ?? "http://127.0.0.1:8080";
const n = Number(args.resources ?? 10000);
const installations = Number(args.installations ?? 8);
const concurrency = Number(args.concurrency ?? 64);

const ALPHANUMERIC = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
function newPassword(length = 40) {
  let out = "";
  for (let i = 0; i < length; i++) out += ALPHANUMERIC[randomInt(ALPHANUMERIC.length)];
  return out;
}

const retryConfig = {
  strategy: "backoff",
  backoff: { initialInterval: 500, maxInterval: 60000, exponent: 1.5, maxElapsedTime: 3600000 },
  retryConnectionErrors: true,
};
const clients = Array.from(
  { length: installations },
  (_, i) => new Vercel({ bearerToken: `benchtoken${i}`, serverURL: url, retryConfig }),
);

const started = performance.now();
let next = 0;
let ok = 0;
const failures = [];
async function worker() {
  while (true) {
    const k = next++;
    if (k >= n) return;
    const i = k % installations;
    try {
      await clients[i].marketplace.updateResourceSecretsById({
        integrationConfigurationId: `icfg_bench${i}`,
        resourceId: `res${k}`,
        requestBody: {
          secrets: [{ name: "PASSWORD", value: newPassword(), prefix: "BENCH" }],
          partial: true,
        },
      });
      ok++;
    } catch (e) {
      failures.push(`res${k}: ${e?.message ?? e}`);
    }
  }
}
await Promise.all(Array.from({ length: concurrency }, worker));
const wallS = (performance.now() - started) / 1000;
console.log(JSON.stringify({ ok, failed: failures.length, import_s: importS, rotate_s: wallS, first_failures: failures.slice(0, 3) }));
process.exit(failures.length ? 1 : 0);
