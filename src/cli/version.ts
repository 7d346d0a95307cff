import { readFileSync } from "node:fs";

function readVersion(): string {
  for (const rel of ["../../package.json", "../../../package.json"]) {
    try {
      return JSON.parse(readFileSync(new URL(rel, import.meta.url), "utf8")).version;
    } catch {
      /* try the next layout (source vs dist) */
    }
  }
  return "0.0.0";
}

/** Set by scripts/bundle.mjs in the bundle (the package's version at build time); tsc's output reads package.json. */
declare const __SPUFF_VERSION__: string | undefined;

export const VERSION = typeof __SPUFF_VERSION__ === "string" ? __SPUFF_VERSION__ : readVersion();
