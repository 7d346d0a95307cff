import { runCli, tempHome } from "../test/helpers/cli.js";
const H = process.argv[2];
const t = tempHome(); t.cleanup();
const env = { ...t.env, HOME: H, XDG_CONFIG_HOME: `${H}/.config`, XDG_STATE_HOME: `${H}/.local/state`, XDG_CACHE_HOME: `${H}/.cache`, SPUFF_CACHE_DIR: "/root/.cache/spuff" };
const r = await runCli(["ssh", "maxci", "--no-agent", "--", ...process.argv.slice(3)], { env, cwd: H });
console.log(r.code, r.stdout, r.stderr);
