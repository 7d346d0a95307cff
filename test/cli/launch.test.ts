import { spawnSync } from "node:child_process";
import { chmodSync, chownSync, existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { BIN, tempHome, writeUserConfig } from "../helpers/cli.js";

// The built CLI runs from its bundle with a V8 code cache per command word (src/cli/launch.cts,
// docs/adr/0013-code-cache.md): the cache must never change what a command does, only how soon it starts.
describe("the code cache of the built CLI", () => {
  let home: ReturnType<typeof tempHome>;
  let cache: string;
  beforeEach(() => {
    home = tempHome();
    cache = join(home.env.XDG_CACHE_HOME as string, "spuff", "code", "ls.v8");
  });
  afterEach(() => home.cleanup());

  const spuff = (argv: string[], extra: NodeJS.ProcessEnv = {}) => {
    const r = spawnSync(process.execPath, [BIN, ...argv], { env: { ...home.env, ...extra }, cwd: home.home, encoding: "utf8" });
    return { code: r.status, stdout: r.stdout, stderr: r.stderr };
  };
  const head = () => readFileSync(cache).subarray(0, readFileSync(cache).indexOf(10)).toString();
  const ran = () => head().split(" ").at(-1) as string;
  const ls = ["--provider", "local", "ls", "--json"];

  it("is written after a command's first run, the user's own (0600 in a 0700 directory), and names this Node", () => {
    expect(spuff(ls)).toEqual({ code: 0, stdout: "[]\n", stderr: "" });
    expect(statSync(cache).mode & 0o777).toBe(0o600);
    expect(statSync(join(cache, "..")).mode & 0o777).toBe(0o700);
    expect(head()).toMatch(new RegExp(`^spuff-code-cache 1 ${process.version} ${process.arch} \\d+:\\d+ \\d+ [\\d.]+ [01]+$`));
    expect(ran()).toContain("1");
  });

  it("is read, not written again, by a run of the same modules; a run of more (a config file: yaml, zod) adds them", () => {
    spuff(ls);
    const first = readFileSync(cache);
    const mtime = statSync(cache).mtimeMs;
    expect(spuff(ls)).toEqual({ code: 0, stdout: "[]\n", stderr: "" });
    expect(statSync(cache).mtimeMs).toBe(mtime);
    const file = writeUserConfig(home.env, "provider: local\nidle:\n  timeout: 45m\n");
    expect(spuff(["--config", file, "ls", "--json"])).toEqual({ code: 0, stdout: "[]\n", stderr: "" });
    const before = first.subarray(0, first.indexOf(10)).toString().split(" ").at(-1) as string;
    const after = ran();
    expect(after).not.toBe(before);
    // The modules seen only grow: every module of the first run is still marked.
    expect([...before].every((b, i) => b === "0" || after[i] === "1")).toBe(true);
    expect(readFileSync(cache).length).toBeGreaterThan(first.length);
  });

  it("a cache of another bundle or Node, or a damaged one, is not used, and is made anew", () => {
    spuff(ls);
    const good = readFileSync(cache);
    const nl = good.indexOf(10);
    // Another Node version in the key: ignored, replaced.
    writeFileSync(cache, Buffer.concat([Buffer.from(head().replace(process.version, "v0.0.0")), good.subarray(nl)]));
    expect(spuff(ls)).toEqual({ code: 0, stdout: "[]\n", stderr: "" });
    expect(head()).toContain(process.version);
    // The right key with bytes V8 refuses: the run is the same, the cache made anew.
    writeFileSync(cache, Buffer.concat([good.subarray(0, nl + 1), Buffer.alloc(good.length - nl - 1, 7)]));
    expect(spuff(ls)).toEqual({ code: 0, stdout: "[]\n", stderr: "" });
    expect(readFileSync(cache).subarray(nl + 1).some((b) => b !== 7)).toBe(true);
    // Nothing but a header: refused the same way.
    writeFileSync(cache, good.subarray(0, nl + 1));
    expect(spuff(ls)).toEqual({ code: 0, stdout: "[]\n", stderr: "" });
    expect(readFileSync(cache).length).toBeGreaterThan(nl + 1);
  });

  it("nothing is written into a cache directory others may write", () => {
    mkdirSync(join(cache, ".."), { recursive: true });
    chmodSync(join(cache, ".."), 0o777);
    expect(spuff(ls)).toEqual({ code: 0, stdout: "[]\n", stderr: "" });
    expect(readdirSync(join(cache, ".."))).toEqual([]);
  });

  it("a cache that cannot be written costs nothing but time; SPUFF_CODE_CACHE=0 runs the modules without one", () => {
    mkdirSync(join(cache, "..", ".."), { recursive: true });
    writeFileSync(join(cache, ".."), "a file where the cache directory would be");
    expect(spuff(ls)).toEqual({ code: 0, stdout: "[]\n", stderr: "" });

    const other = tempHome();
    try {
      const r = spawnSync(process.execPath, [BIN, ...ls], { env: { ...other.env, SPUFF_CODE_CACHE: "0" }, encoding: "utf8" });
      expect({ code: r.status, stdout: r.stdout, stderr: r.stderr }).toEqual({ code: 0, stdout: "[]\n", stderr: "" });
      expect(existsSync(join(other.env.XDG_CACHE_HOME as string, "spuff"))).toBe(false);
    } finally {
      other.cleanup();
    }
  });

  // Root under sudo may run with the invoking user's HOME: a cache someone else can write is code they could make root
  // run, and root's files in the user's cache would lock the user out of it.
  const root = process.getuid?.() === 0;
  it.skipIf(!root)("a cache file another user owns, or others may write, is not used but replaced", () => {
    spuff(ls);
    const valid = readFileSync(cache);
    const nl = valid.indexOf(10);
    // Every module marked as seen: a cache that is used is then not written again.
    const allSeen = Buffer.concat([Buffer.from(head().replace(/ [01]+$/, ` ${"1".repeat(ran().length)}`)), valid.subarray(nl)]);
    for (const plant of [{ uid: 65534, mode: 0o600 }, { uid: 0, mode: 0o666 }]) {
      writeFileSync(cache, allSeen);
      chownSync(cache, plant.uid, 0);
      chmodSync(cache, plant.mode);
      expect(spuff(ls)).toEqual({ code: 0, stdout: "[]\n", stderr: "" });
      expect(statSync(cache).uid).toBe(0);
      expect(statSync(cache).mode & 0o777).toBe(0o600);
    }
  });

  it.skipIf(!root)("root writes nothing into a cache directory of another user's", () => {
    const base = home.env.XDG_CACHE_HOME as string;
    mkdirSync(base, { recursive: true });
    chownSync(base, 65534, 65534);
    expect(spuff(ls)).toEqual({ code: 0, stdout: "[]\n", stderr: "" });
    expect(readdirSync(base)).toEqual([]);
  });

  it("one cache per command (and one for none): a mistyped word, or help for a command, writes no file", () => {
    const code = join(cache, "..");
    expect(spuff(["--provider", "local", "lss"]).code).toBe(1);
    expect(spuff(["--provider", "local", "ls", "--help"]).code).toBe(0);
    expect(spuff(["--provider", "local", "help", "ls"]).code).toBe(0);
    expect(existsSync(code) ? readdirSync(code) : []).toEqual([]);
    spuff(["--help"]);
    spuff(ls);
    expect(readdirSync(code).sort()).toEqual(["ls.v8", "none.v8"]);
  });

  it("errors and exit codes are the same from the bundle as from the modules", () => {
    const bad = writeUserConfig(home.env, "provider: local\nidle:\n  timeout: soon\n");
    const cached = spuff(["--config", bad, "ls", "--json"]);
    const direct = spuff(["--config", bad, "ls", "--json"], { SPUFF_CODE_CACHE: "0" });
    expect(cached.code).toBe(1);
    expect(cached.stderr).toContain("idle.timeout");
    expect(cached).toEqual(direct);
    expect(spuff(["--version"]).stdout).toBe(`${JSON.parse(readFileSync("package.json", "utf8")).version}\n`);
  });
});
