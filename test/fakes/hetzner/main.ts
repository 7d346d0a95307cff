// `npm run fake:hetzner`: the spec-validating Hetzner Cloud fake on 127.0.0.1, for demos and benchmarks.
//   PORT=4000 ACTION_DELAY_MS=2000 SEED=60 LEGACY_DATACENTER=1 npm run fake:hetzner
import { HetznerFake } from "./server.js";

const fake = new HetznerFake({
  token: process.env.HCLOUD_TOKEN || undefined,
  actionDelayMs: Number(process.env.ACTION_DELAY_MS ?? 0),
  legacyDatacenter: process.env.LEGACY_DATACENTER === "1",
});
if (process.env.SEED) fake.seed(Number(process.env.SEED));
const endpoint = await fake.start(Number(process.env.PORT ?? 0));
console.log(`Hetzner fake listening: export HCLOUD_ENDPOINT=${endpoint} HCLOUD_TOKEN=${fake.token}`);
console.log("servers get loopback addresses (127.0.0.N); no machine is created. Ctrl-C stops it.");
const stop = async () => {
  if (fake.violations.length) console.error(`spec violations seen:\n${fake.violations.join("\n")}`);
  await fake.stop();
  process.exit(fake.violations.length ? 1 : 0);
};
process.on("SIGINT", stop);
process.on("SIGTERM", stop);
