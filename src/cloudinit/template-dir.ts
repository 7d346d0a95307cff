import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { UserError } from "../core/errors.js";

// On its own (no yaml, no ssh2): the guard reads the shipped known_hosts from here on `spuff ssh`'s start-up path.

/**
 * The template directory. From source this module is src/cloudinit/template-dir.ts and the templates are ../../cloud-init;
 * from the build it is dist/src/cloudinit/template-dir.js and scripts/copy-assets.mjs put them in dist/cloud-init (same
 * relative path). A build whose assets were not copied falls back to the source tree's cloud-init/.
 */
export function templateDir(): string {
  const candidates = ["../../cloud-init/", "../../../cloud-init/"].map((rel) => fileURLToPath(new URL(rel, import.meta.url)));
  const found = candidates.find((d) => existsSync(`${d}user-data.yaml`));
  if (!found) {
    throw new UserError("spuff's cloud-init templates are missing", {
      notes: candidates.map((d) => `looked in ${d}`),
      hint: "reinstall spuff; from a checkout, run `npm run build` (it copies cloud-init/ into dist/)",
    });
  }
  return found;
}
