// Copies the non-TypeScript assets the built CLI needs at run time next to the compiled code.
import { cpSync, existsSync, mkdirSync } from "node:fs";
import { dirname } from "node:path";
const assets = [
  ["cloud-init", "dist/cloud-init"],
  ["src/config/reference.yaml", "dist/src/config/reference.yaml"],
  ["providers/hetzner/spec", "dist/providers/hetzner/spec"],
];
for (const [from, to] of assets) {
  if (!existsSync(from)) continue;
  mkdirSync(dirname(to), { recursive: true });
  cpSync(from, to, { recursive: true });
}
