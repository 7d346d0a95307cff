#!/usr/bin/env node
// `spuff --version` answers without loading commander or any command (cold start, docs/performance.md).
const argv = process.argv.slice(2);
// `spuff ls | head`: a closed pipe ends the output quietly, as for any Unix tool.
for (const stream of [process.stdout, process.stderr]) {
  stream.on("error", (err: NodeJS.ErrnoException) => {
    if (err.code === "EPIPE") process.exit(process.exitCode ?? 0);
    throw err;
  });
}
if (argv[0] === "guard" && argv[1] === "ensure" && argv.length === 3 && !argv[2].startsWith("-")) {
  // Run by OpenSSH before every connection to spuff-NAME: only the guard's client is loaded, the daemon does the rest.
  // While spuff itself reads the OpenSSH config (`ssh -G`, src/ssh/openssh-config.ts), its `Match exec` is not a
  // connection and must not start the guard (nor recurse): "no" at once.
  if (process.env.SPUFF_GUARD_RESOLVING) process.exitCode = 1;
  else {
    const { ensureForOpenSsh } = await import("./commands/guard.js");
    process.exitCode = await ensureForOpenSsh(argv[2], process.env, process.cwd(), (l) => process.stderr.write(`${l}\n`));
  }
} else if (argv.includes("ssh") && argv.includes("--") && (await import("./warm-ssh.js")).warmArgv(argv)) {
  // `spuff ssh NAME -- COMMAND` on the guard daemon's warm connection, without loading the CLI; else the CLI as usual.
  const { runWarm, warmArgv } = await import("./warm-ssh.js");
  const io = { stdin: process.stdin, stdout: process.stdout, stderr: process.stderr, env: process.env, cwd: process.cwd() };
  const code = await runWarm(warmArgv(argv) as NonNullable<ReturnType<typeof warmArgv>>, io);
  if (code !== undefined) process.exitCode = code;
  else {
    const { main } = await import("./main.js");
    process.exitCode = await main(argv);
  }
} else if (argv.length === 1 && argv[0] === "--version") {
  const { VERSION } = await import("./version.js");
  process.stdout.write(`${VERSION}\n`);
} else {
  const { main } = await import("./main.js");
  process.exitCode = await main(argv);
}
