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

export const VERSION = readVersion();
