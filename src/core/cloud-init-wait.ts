import type { Login } from "../ssh/connect.js";
import type { Progress } from "./provider.js";

/**
 * Waits for cloud-init on the VM over `login` (once more over a new login if the connection drops under the wait).
 * Returns undefined when it finished without errors; else the notes for the caller's error: what the check printed,
 * then the tail of the VM's cloud-init log.
 */
export async function cloudInitFailure(
  login: Login,
  command: string,
  opts: { signal: AbortSignal; progress: Progress; timeoutMs?: number },
): Promise<string[] | undefined> {
  const { signal, progress } = opts;
  const ci = await login.exec(command, { signal, timeoutMs: opts.timeoutMs, again: true, onDrop: (err) => progress.info(`${err.message}; logging in again`) });
  if (ci.code === 0) return undefined;
  const tail = await login.exec("sudo tail -n 25 /var/log/cloud-init-output.log", { signal, timeoutMs: 60_000, again: true }).catch(() => undefined);
  return [...ci.stdout.trim().split("\n"), ...(tail ? ["--- /var/log/cloud-init-output.log (tail)", ...tail.stdout.trimEnd().split("\n")] : [])];
}
