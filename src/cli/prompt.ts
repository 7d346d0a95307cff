import { createInterface } from "node:readline/promises";
import type { App } from "./app.js";

/** A y/N question on the terminal; defaults to no, also when the input ends (Ctrl-D) before an answer. */
export async function confirm(app: App, question: string): Promise<boolean> {
  const rl = createInterface({ input: app.io.stdin, output: app.io.stderr as NodeJS.WritableStream });
  const closed = new Promise<string>((resolve) => rl.once("close", () => resolve("")));
  try {
    const answer = await Promise.race([rl.question(`${question} [y/N] `), closed]);
    return /^y(es)?$/i.test(answer.trim());
  } finally {
    rl.close();
  }
}
