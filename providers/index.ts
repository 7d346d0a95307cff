import { registerProvider } from "../src/core/registry.js";

// Each provider is loaded lazily, only when a command uses it.
registerProvider("local", async () => (await import("./local/index.js")).createProvider);
registerProvider("hetzner", async () => (await import("./hetzner/index.js")).createProvider);
registerProvider("aws", async () => (await import("./aws/index.js")).createProvider);
