import { execFile } from "node:child_process";

/**
 * Set in the environment of the `ssh -G` that spuff runs to read the user's OpenSSH config. The generated config's
 * `Match … exec "spuff guard ensure NAME"` line runs during that query too; with this set, `guard ensure` answers
 * "no" at once (src/cli/bin.cts), so the query neither recurses nor starts the guard.
 */
export const RESOLVING_ENV = "SPUFF_GUARD_RESOLVING";

/**
 * The options OpenSSH resolves for `host`, as `ssh -G` prints them (keys lower case; tokens, `~` and `${VAR}`
 * expanded; Include and Match evaluated). `configFile` is passed as `-F` (then the system config is not read).
 * Undefined when ssh is not installed or refuses the config.
 */
export function resolveOpenSsh(
  host: string,
  env: NodeJS.ProcessEnv,
  opts: { configFile?: string; resolving?: boolean } = {},
): Promise<{ options: Map<string, string>; error?: undefined } | { options?: undefined; error: string }> {
  const args = [...(opts.configFile ? ["-F", opts.configFile] : []), "-G", "--", host];
  const childEnv = opts.resolving === false ? env : { ...env, [RESOLVING_ENV]: "1" };
  return new Promise((resolve) => {
    execFile("ssh", args, { env: childEnv, timeout: 10_000, encoding: "utf8" }, (err, stdout, stderr) => {
      if (err) {
        const why = (err as NodeJS.ErrnoException).code === "ENOENT" ? "ssh is not installed" : stderr.trim().split("\n").at(-1) || err.message;
        return resolve({ error: `\`ssh ${args.join(" ")}\` failed: ${why}` });
      }
      const options = new Map<string, string>();
      for (const line of stdout.split("\n")) {
        const i = line.indexOf(" ");
        // The first value wins for the options spuff reads (identityagent, forwardagent, hostname).
        if (i > 0 && !options.has(line.slice(0, i))) options.set(line.slice(0, i), line.slice(i + 1));
      }
      resolve({ options });
    });
  });
}
