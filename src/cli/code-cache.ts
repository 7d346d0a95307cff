/**
 * Saves the code cache now rather than at the end of the run (src/cli/launch.cts), for a process whose end comes at
 * no set time. Without the bundle (tests in-process, `SPUFF_CODE_CACHE=0`) there is nothing to save.
 */
export function saveCodeCache(): void {
  (globalThis as { [key: symbol]: (() => void) | undefined })[Symbol.for("spuff.saveCodeCache")]?.();
}
