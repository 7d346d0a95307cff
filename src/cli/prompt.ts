import { createInterface } from "node:readline/promises";
import type { App } from "./app.js";

/** A y/N question on the terminal; defaults to no. */
export async function confirm(app: App, question: string): Promise<boolean> {
  const rl = createInterface({ input: app.io.stdin, output: app.io.stderr as NodeJS.WritableStream });
  try {
    const answer = await rl.question(`${question} [y/N] `);
    return /^y(es)?$/i.test(answer.trim());
  } finally {
    rl.close();
  }
}
