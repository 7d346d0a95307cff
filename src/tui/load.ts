/**
 * Loads a module of the terminal UI, with ink loaded first. ink is an ES module with top-level await, which the
 * bundle (CommonJS, docs/adr/0013-code-cache.md) cannot require: there, the UI's `import ... from "ink"` reads the
 * module loaded here. Every way into src/tui goes through this function.
 */
export async function loadTui<T>(load: () => Promise<T>): Promise<T> {
  (globalThis as Record<symbol, unknown>)[Symbol.for("spuff.ink")] = await import("ink");
  return load();
}
