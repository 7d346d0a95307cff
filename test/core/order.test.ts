import { describe, expect, it } from "vitest";
import { compareNames } from "../../src/core/order.js";

describe("compareNames: localeCompare's order of names, without ICU for the usual ones", () => {
  it("agrees with localeCompare on names of lower-case letters, digits and '-' (the code-unit shortcut)", () => {
    const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789-";
    let seed = 21;
    const rand = (n: number) => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    const name = () => Array.from({ length: 1 + rand(8) }, () => alphabet[rand(alphabet.length)]).join("");
    const pairs: [string, string][] = [["a-b", "ab"], ["a0", "a-"], ["vm10", "vm9"], ["seed-1", "seed-10"], ["x", "x"], ["", "a"]];
    for (let i = 0; i < 20_000; i++) pairs.push([name(), name()]);
    for (const [a, b] of pairs) expect(Math.sign(compareNames(a, b)), `${a} vs ${b}`).toBe(Math.sign(a.localeCompare(b)));
  });

  it("leaves any other name to localeCompare", () => {
    for (const [a, b] of [["B", "a"], ["Zeta", "alpha"], ["é", "f"], ["a_b", "ab"], ["vm", "VM"]]) {
      expect(Math.sign(compareNames(a, b)), `${a} vs ${b}`).toBe(Math.sign(a.localeCompare(b)));
    }
    // Where the shortcut would have been wrong: code units put "B" before "a".
    expect(compareNames("B", "a")).toBeGreaterThan(0);
  });
});
