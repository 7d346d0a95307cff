#!/usr/bin/env node
// CommonJS: Node starts a CommonJS entry ~10 ms sooner than an ES module one, and with the bundle (launch.cts) the
// whole CLI runs without the ES module loader. `--version` loads nothing else (cold start, docs/performance.md).
const argv = process.argv.slice(2);

if (argv.length === 1 && argv[0] === "--version") {
  // Written before Node makes its stdout and stderr streams (~4 ms): as quick as Node's own start.
  try {
    require("node:fs").writeSync(1, `${require("../../../package.json").version}\n`); // dist/src/cli/ → the package's root
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EPIPE") throw err;
  }
} else {
  // `spuff ls | head`: a closed pipe ends the output quietly, as for any Unix tool.
  for (const stream of [process.stdout, process.stderr]) {
    stream.on("error", (err: NodeJS.ErrnoException) => {
      if (err.code === "EPIPE") process.exit(process.exitCode ?? 0);
      throw err;
    });
  }
  void run().then((code) => {
    if (code !== undefined) process.exitCode = code;
  });
}

async function run(): Promise<number | undefined> {
  if (argv[0] === "guard" && argv[1] === "ensure" && argv.length === 3 && !argv[2].startsWith("-")) {
    // Run by OpenSSH before every connection to spuff-NAME: only the guard's client is loaded, the daemon does the rest.
    // While spuff itself reads the OpenSSH config (`ssh -G`, src/ssh/openssh-config.ts), its `Match exec` is not a
    // connection and must not start the guard (nor recurse): "no" at once.
    if (process.env.SPUFF_GUARD_RESOLVING) return 1;
    const { ensureForOpenSsh } = await import("./commands/guard.js");
    return ensureForOpenSsh(argv[2], process.env, process.cwd(), (l) => process.stderr.write(`${l}\n`));
  }
  if (argv.includes("ssh") && argv.includes("--")) {
    // `spuff ssh NAME -- COMMAND` on the guard daemon's warm connection, without loading the CLI; else the CLI as usual.
    const { runWarm, warmArgv } = await import("./warm-ssh.js");
    const warm = warmArgv(argv);
    if (warm) {
      const io = { stdin: process.stdin, stdout: process.stdout, stderr: process.stderr, env: process.env, cwd: process.cwd() };
      const code = await runWarm(warm, io);
      if (code !== undefined) return code;
    }
  }
  // The whole CLI, from the code-cached bundle where the build made one (launch.cts).
  const { loadMain } = require("./launch.cjs") as typeof import("./launch.cjs");
  const { main, done } = await loadMain(argv, process.env);
  const code = await main(argv);
  done();
  return code;
}
