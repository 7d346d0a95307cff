// `npm run fake:hetzner`: the spec-validating Hetzner Cloud fake on 127.0.0.1, for demos and benchmarks.
//   PORT=4000 ACTION_DELAY_MS=2000 BOOT_DELAY_MS=1000 SEED=60 LEGACY_DATACENTER=1 STANDIN=1 npm run fake:hetzner
// STANDIN=1 (root, OpenSSH installed) starts a real sshd on each server's address from its user-data, so a whole
// `spuff up` / `spuff ssh` / `spuff down` works against the fake (docs/providers/hetzner.md).
import { type StandinVm, standinHooks } from "../../helpers/standin-vm.js";
import { HetznerFake } from "./fake.js";

const env = process.env;
const standins = new Map<number, StandinVm>();
const fake = await HetznerFake.start({
  port: Number(env.PORT ?? 0),
  token: env.FAKE_HCLOUD_TOKEN || "fake-hcloud-token",
  actionDelayMs: Number(env.ACTION_DELAY_MS ?? 0),
  bootDelayMs: Number(env.BOOT_DELAY_MS ?? 0),
  legacyDatacenter: env.LEGACY_DATACENTER === "1",
  ...(env.STANDIN === "1"
    ? standinHooks(standins)
    : {}),
});
if (env.SEED) fake.seedServers(Number(env.SEED));
fake.events.on("request", (r: { method: string; path: string; search: string; status: number }) => {
  if (env.QUIET !== "1") console.log(`${r.status} ${r.method} ${r.path}${decodeURIComponent(r.search)}`);
});
console.log(`Hetzner fake (validates every request and response against the official spec) on ${fake.endpoint}
  export HCLOUD_ENDPOINT=${fake.endpoint}
  export HCLOUD_TOKEN=${fake.token}    # the fake's token (not a secret); any other gets 401
Servers get loopback addresses (127.0.0.N); ${env.STANDIN === "1" ? "each gets a stand-in sshd" : "no machine is created (STANDIN=1 starts a stand-in sshd per server)"}. Ctrl-C stops it.`);

const stop = async () => {
  for (const v of fake.violations) console.error(`SPEC VIOLATION (${v.where}) ${v.method} ${v.path}: ${v.message}`);
  await fake.close();
  for (const s of standins.values()) await s.stop();
  process.exit(fake.violations.length ? 1 : 0);
};
process.on("SIGINT", stop);
process.on("SIGTERM", stop);
