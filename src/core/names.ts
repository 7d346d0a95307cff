import { randomInt } from "node:crypto";
import { basename } from "node:path";
import { UserError } from "./errors.js";

export const NAME_RULE =
  "a VM name is 1-40 characters: lower-case letters, digits and '-', starting with a letter and not ending with '-'";
const NAME_RE = /^[a-z]([a-z0-9-]{0,38}[a-z0-9])?$/;

export function validateName(name: string): string {
  if (!NAME_RE.test(name)) {
    throw new UserError(`invalid VM name "${name}"`, { hint: NAME_RULE });
  }
  return name;
}

const ADJECTIVES = ["brave", "calm", "eager", "fancy", "gentle", "happy", "jolly", "keen", "lucky", "merry", "nimble", "proud", "quick", "quiet", "sunny", "swift", "tidy", "witty", "bold", "bright"];
const NOUNS = ["otter", "falcon", "badger", "heron", "lynx", "panda", "raven", "tiger", "walrus", "yak", "beaver", "cobra", "dingo", "egret", "ferret", "gecko", "ibis", "koala", "lemur", "marmot"];

export function randomName(): string {
  return `spuff-${ADJECTIVES[randomInt(ADJECTIVES.length)]}-${NOUNS[randomInt(NOUNS.length)]}`;
}

/** A valid name from a directory name, or undefined when nothing usable is left. */
export function nameFromDir(dir: string): string | undefined {
  const cleaned = basename(dir)
    .toLowerCase()
    .replace(/[^a-z0-9-]+/g, "-")
    .replace(/^[^a-z]+/, "")
    .slice(0, 40)
    .replace(/-+$/, "");
  return NAME_RE.test(cleaned) ? cleaned : undefined;
}
