// Bundles the compiled CLI (dist/src/cli/main.js and all it imports of spuff's own code, commander, yaml, zod, ssh2) into
// one CommonJS file, dist/src/cli/spuff.cjs, that src/cli/launch.cts runs with a V8 code cache
// (docs/adr/0013-code-cache.md). Packages with native parts or of great size stay outside and load from node_modules.
import { readFile } from "node:fs/promises";
import { dirname, join, relative } from "node:path";
import { build } from "esbuild";

const outfile = "dist/src/cli/spuff.cjs";
const outDir = dirname(outfile);

let modules = 0;
let inkImports = 0;
const plugin = {
  name: "spuff-bundle",
  setup(b) {
    // ssh2's native part stays where npm put it, required by its package path (ssh2 falls back to JavaScript without
    // it, as it does where it was not built).
    b.onResolve({ filter: /\.node$/ }, (args) => {
      const file = join(args.resolveDir, args.path).split("\\").join("/");
      const at = file.lastIndexOf("/node_modules/");
      if (at < 0) throw new Error(`bundle: a native module outside node_modules: ${file}`);
      return { path: file.slice(at + "/node_modules/".length), external: true };
    });
    // The UI's static imports of ink read what src/tui/load.ts loaded (below): the bundle cannot require ink.
    b.onResolve({ filter: /^ink$/ }, () => ({ path: "ink", namespace: "spuff-ink" }));
    b.onLoad({ filter: /.*/, namespace: "spuff-ink" }, () => ({
      contents: 'module.exports = globalThis[Symbol.for("spuff.ink")] ?? (() => { throw new Error("ink was not loaded first (src/tui/load.ts)"); })();',
      loader: "js",
    }));
    b.onLoad({ filter: /\.(c|m)?js$/ }, async (args) => {
      let text = await readFile(args.path, "utf8");
      if (/\/dist\/[^/]/.test(args.path) && text.includes("import.meta.url")) {
        // Each of spuff's modules keeps its own import.meta.url (it finds assets relative to itself), and its
        // `createRequire(import.meta.url)` becomes the bundle's own require, so what it requires is bundled too.
        const rel = JSON.stringify(relative(outDir, args.path).split("\\").join("/"));
        text = text
          .replaceAll("const require = createRequire(import.meta.url);", "")
          .replaceAll("createRequire(import.meta.url)(", "require(")
          .replaceAll("import.meta.url", `__spuffUrl(${rel})`);
      }
      // ink has top-level await (no require): its one dynamic import (src/tui/load.ts) goes through launch.cts's own
      // import(). Node 20 loses a vm.Script's dynamic import callback when the script comes from a code cache.
      if (text.includes('import("ink")')) {
        text = text.replaceAll('import("ink")', '__spuffImport("ink")');
        inkImports++;
      }
      // commander needs node:child_process only for executable subcommands, which spuff has none of: loaded when used
      // (with node:dgram, ~4 ms of every start).
      if (args.path.endsWith("/node_modules/commander/lib/command.js")) {
        const eager = "const childProcess = require('node:child_process');";
        if (!text.includes(eager)) throw new Error("bundle: commander no longer requires node:child_process as expected");
        text = text.replace(eager, "const childProcess = { spawn: (...a) => require('node:child_process').spawn(...a) };");
      }
      // Each module notes that it ran: launch.cts makes the code cache anew only when a run ran modules it lacks.
      return { contents: `__spuffRan[${modules++}] = 1;\n${text}`, loader: "js" };
    });
  },
};

await build({
  entryPoints: ["dist/src/cli/main.js"],
  outfile,
  bundle: true,
  platform: "node",
  format: "cjs",
  target: "node20",
  logLevel: "warning",
  // No import() is left in the bundle (see inkImports): every other package and built-in is required.
  supported: { "dynamic-import": false },
  // Less to read and hash at each start; names are kept (error messages and stack traces use them).
  minifyWhitespace: true,
  minifySyntax: true,
  charset: "ascii",
  // cpu-features (ssh2's, optional) is native; the AWS SDK and react are large and loaded only when used; ink: see
  // above; openapi-fetch is used for its types only.
  external: ["cpu-features", "@aws-sdk/*", "react", "react/*", "openapi-fetch"],
  // src/cli/version.ts: the version as a literal, not a read of package.json at every start (~2 ms).
  define: { __SPUFF_VERSION__: JSON.stringify(JSON.parse(await readFile("package.json", "utf8")).version) },
  banner: {
    js: [
      'const __spuffUrl = (rel) => require("node:url").pathToFileURL(require("node:path").join(__dirname, rel)).href;',
      "const __spuffRan = [];",
    ].join("\n"),
  },
  footer: { js: "module.exports.modulesRan = __spuffRan;" },
  plugins: [plugin],
});
if (inkImports !== 1) throw new Error(`bundle: expected one import("ink") (src/tui/load.ts), found ${inkImports}`);
