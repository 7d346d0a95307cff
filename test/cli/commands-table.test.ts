import { describe, expect, it } from "vitest";
import { App } from "../../src/cli/app.js";
import { commands } from "../../src/cli/commands/index.js";
import { COMMAND_WORDS, commandWord } from "../../src/cli/commands/table.js";
import { buildProgram } from "../../src/cli/main.js";

const app = () => new App({ stdout: { write: () => true }, stderr: { write: () => true }, stdin: process.stdin, env: {}, cwd: "/" });
const words = (cmd: { name(): string; aliases(): string[] }) => [cmd.name(), ...cmd.aliases()];

// main.ts registers only the command being run, found by its word in COMMAND_WORDS: the table must be the commands.
describe("the table of command words", () => {
  it("has exactly the words of the registered commands (names and aliases)", () => {
    const all = buildProgram(app(), commands).commands.flatMap(words);
    expect(Object.keys(COMMAND_WORDS).sort()).toEqual([...all].sort());
  });

  it.each(Object.keys(COMMAND_WORDS))("%s loads the module that registers the command it names", async (word) => {
    const { register } = await COMMAND_WORDS[word]();
    const program = buildProgram(app(), [register]);
    expect(program.commands).toHaveLength(1);
    expect(words(program.commands[0])).toContain(word);
  });
});

describe("commandWord", () => {
  it("finds the command after the program's own options", () => {
    expect(commandWord(["ls"])).toBe("ls");
    expect(commandWord(["--provider", "hetzner", "ls", "--json"])).toBe("ls");
    expect(commandWord(["--provider=hetzner", "--config", "c.yaml", "-yv", "--json", "down", "x"])).toBe("down");
    expect(commandWord(["ssh", "box", "--", "make", "test"])).toBe("ssh");
    expect(commandWord(["--verbose", "--yes", "ws", "ls"])).toBe("ws");
  });

  it("gives none (every command registered) for help, no word, an unknown word or an option it does not know", () => {
    for (const argv of [[], ["--help"], ["-h"], ["ls", "--help"], ["image", "help"], ["help", "ls"], ["lss"], ["--version"], ["--bogus", "ls"], ["--", "ls"], ["-x", "ls"], ["--provider"], ["constructor"], ["__proto__"]]) {
      expect(commandWord(argv), argv.join(" ")).toBeUndefined();
    }
  });
});
