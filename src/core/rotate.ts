import type { Client } from "ssh2";
import { ROTATE_HOST_KEY } from "../cloudinit/index.js";
import { connect, converseOnClient, type ExecResult, execOnClient, HostKeyMismatch, type Login, type VmTarget } from "../ssh/connect.js";
import { parseKey } from "../ssh/ssh2.js";
import { Interrupted, ProviderError } from "./errors.js";
import type { Progress } from "./provider.js";
import type { StateStore } from "./state.js";

/**
 * Host key rotation after first contact (docs/adr/0008-host-key-rotation.md). The host key spuff generated travels in
 * user-data, which the metadata service serves to every process on the VM, so over the first pinned connection the
 * VM makes a new key (the shipped script, as root), spuff pins it next to the old one, the VM switches sshd to it,
 * and only a fresh connection that sees exactly the new key drops the old pin. A failure leaves the record pinning
 * the key the VM presents (both only when spuff cannot tell) and is an error: `up` then rolls the VM back.
 */

/** One ed25519 public key, type and base64 only: 51 bytes of key blob are 68 base64 characters. */
const ED25519_LINE = /^ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI[A-Za-z0-9+/]{43}$/;

/** How long the fresh connection may take to appear after sshd's reload (it re-executes itself). */
const CONFIRM_TIMEOUT_MS = 20_000;
const STEP_TIMEOUT_MS = 60_000;

/** What the VM printed, made safe to show in a terminal: no control characters, bounded. */
function shown(text: string, max = 400): string {
  const clean = text.replace(/[^\x20-\x7e\n]/g, "?").trim();
  return clean.length > max ? `${clean.slice(0, max)}…` : clean;
}

/**
 * The new host key from the VM's `prepare` output. The VM is untrusted: exactly one line holding one ed25519 public
 * key (no comment, no options), different from the key it replaces; anything else is refused.
 */
export function parseNewHostKey(stdout: string, current: string, name: string, said = "answered the host key rotation with"): string {
  const line = stdout.endsWith("\n") ? stdout.slice(0, -1) : stdout;
  const parsed = ED25519_LINE.test(line) ? parseKey(line) : undefined;
  const key = parsed && !(parsed instanceof Error) && !Array.isArray(parsed) ? parsed : undefined;
  if (key?.type !== "ssh-ed25519" || key.isPrivateKey()) {
    throw new ProviderError(`the VM ${said} something other than one ed25519 public key`, {
      notes: [`it printed: ${JSON.stringify(shown(stdout, 200))}`],
      hint: `the VM keeps its old key; if it is not a VM spuff made, or \`setup\` changed it, remove it: \`spuff down ${name}\``,
    });
  }
  if (line === current.split(" ").slice(0, 2).join(" ")) {
    throw new ProviderError(`the VM ${said} the key in its user-data`, {
      hint: `the key in its user-data would stay valid; remove the VM with \`spuff down ${name}\` and create it again`,
    });
  }
  return line;
}

/**
 * The host key a VM made itself and reported before any login (`Vm.ownHostKey`, set by `create`), checked as strictly
 * as a rotated one (the VM is untrusted); undefined when it reported none and keeps the user-data's key.
 */
export function ownHostKeyOf(vm: { ownHostKey?: string }, userDataKey: string, name: string): string | undefined {
  return vm.ownHostKey === undefined ? undefined : parseNewHostKey(`${vm.ownHostKey}\n`, userDataKey, name, "reported as its own host key");
}

function stepFailed(target: VmTarget, step: string, r: ExecResult): ProviderError {
  return new ProviderError(`replacing the host key of ${target.name} failed: \`sudo -n ${ROTATE_HOST_KEY} ${step}\` exited with ${r.code}`, {
    notes: shown(r.stderr).split("\n").filter(Boolean),
    hint: [
      `spuff VMs get this script and passwordless sudo from cloud-init; check it with \`spuff ssh ${target.name} -- sudo -n ${ROTATE_HOST_KEY} prepare\` (after --keep-on-failure)`,
      "a VM whose host key stays the one from user-data can be impersonated by whoever reads its metadata, so spuff does not keep it",
    ],
  });
}

/**
 * Opens a connection that accepts only `target`'s key, retrying refusals while sshd re-executes after its reload (a
 * few milliseconds on a VM; a refused try costs one round trip). `until` "handshake": no login (see `connect`).
 */
async function connectAgain(target: VmTarget, timeoutMs: number, signal?: AbortSignal, until: "ready" | "handshake" = "ready"): Promise<Client> {
  const deadline = Date.now() + timeoutMs;
  for (let delay = 5; ; delay = Math.min(delay * 2, 1000)) {
    try {
      return await connect(target, { readyTimeout: Math.max(1000, Math.min(20_000, deadline - Date.now())) }, signal, until);
    } catch (err) {
      if (err instanceof HostKeyMismatch || signal?.aborted || Date.now() + delay > deadline) throw err;
    }
    await new Promise((r) => setTimeout(r, delay));
  }
}

/**
 * After a failure with both keys pinned: pin the one the VM presents. The new key seen: keep it (the old one is no
 * longer served). The old key seen: put the VM's old key file back if the switch got that far, and drop the new pin.
 * Neither reachable: both stay pinned (both are this VM's own keys) and the note says so.
 */
async function settle(state: StateStore, old: VmTarget, next: string): Promise<string> {
  const onlyNew = { ...old, hostKey: next, nextHostKey: undefined };
  const onlyOld = { ...old, nextHostKey: undefined };
  try {
    (await connectAgain(onlyNew, 3000, undefined, "handshake")).end();
    await state.update(old.name, ({ nextHostKey: _, ...r }) => ({ ...r, hostKey: next }));
    return "the VM presents its new key; spuff pins that one";
  } catch (err) {
    if (!(err instanceof HostKeyMismatch)) {
      return "spuff could not reach the VM to see which key it presents: both stay pinned";
    }
  }
  try {
    const client = await connectAgain(onlyOld, 3000);
    try {
      await execOnClient(client, onlyOld, `sudo -n ${ROTATE_HOST_KEY} abort`, undefined, STEP_TIMEOUT_MS);
    } finally {
      client.end();
    }
    await state.update(old.name, ({ nextHostKey: _, ...r }) => r);
    return "the VM still presents the key from its user-data; spuff pins only that one";
  } catch {
    return "the VM presents neither key now: both stay pinned";
  }
}

/**
 * Replaces the VM's host key; returns the new public key ("ssh-ed25519 AAAA..."), which the state record (hence
 * known_hosts and the generated ssh_config) then pins alone. `target` pins the key from user-data. `login`: a
 * connection that checked that key (and only it), for prepare, commit and finish instead of a login of their own; it
 * is ended when the rotation is over.
 */
export async function rotateHostKey(
  deps: { state: StateStore; progress: Progress },
  target: VmTarget,
  signal?: AbortSignal,
  login?: Login,
): Promise<string> {
  const { state, progress } = deps;
  const step = async (client: Client, t: VmTarget, args: string) => {
    const r = await execOnClient(client, t, `sudo -n ${ROTATE_HOST_KEY} ${args}`, signal, STEP_TIMEOUT_MS);
    if (r.code !== 0) throw stepFailed(t, args.split(" ")[0], r);
    return r.stdout;
  };
  if (login && (login.target.hostKey !== target.hostKey || login.target.nextHostKey !== undefined)) {
    throw new Error(`the login to ${target.name} does not pin exactly the key being replaced`);
  }
  const first = login ? await login.client(signal) : await connect({ ...target, nextHostKey: undefined }, {}, signal);
  let dropped = false;
  first.once("close", () => (dropped = true));
  const onlyNew = (key: string): VmTarget => ({ ...target, hostKey: key, nextHostKey: undefined });
  let next: string | undefined;
  let finishing: Promise<unknown> | undefined;
  try {
    // One run of the script (one sudo) for prepare, commit and finish: it prints the new key, then takes each next
    // step on its stdin once spuff has done its part (pinned both keys; seen the new one).
    const rotation = await converseOnClient(first, target, `sudo -n ${ROTATE_HOST_KEY} prepare`, signal, STEP_TIMEOUT_MS);
    let stepName = "prepare";
    const answer = async () => {
      const text = await rotation.answer();
      const ended = rotation.exited();
      if (ended && ended.code !== 0) throw stepFailed(target, stepName, ended);
      return text;
    };
    try {
      next = parseNewHostKey(await answer(), target.hostKey, target.name);
      // Both pinned before the VM switches: whatever happens from here, the record accepts the key it presents.
      await state.update(target.name, (r) => ({ ...r, nextHostKey: next }));
      stepName = "commit";
      rotation.send(`commit ${next}\n`);
      const committed = await answer();
      if (committed !== `${next}\n`) {
        throw new ProviderError(`replacing the host key of ${target.name} failed: the VM confirmed another key than the one it made`, {
          notes: [`it printed: ${JSON.stringify(shown(committed, 200))}`],
        });
      }
      // The proof: a fresh key exchange that accepts nothing but the new key. Its signature shows the VM's sshd now
      // holds the new private key; no login is needed for that.
      try {
        (await connectAgain(onlyNew(next), CONFIRM_TIMEOUT_MS, signal, "handshake")).end();
      } catch (err) {
        if (err instanceof HostKeyMismatch) {
          throw new ProviderError(`replacing the host key of ${target.name} failed: after the switch its sshd still presents the old key`, { cause: err });
        }
        throw err;
      }
      // The tidying goes out at once, as the script's last step (its sshd process is the one from before the reload),
      // or over a login that accepts only the new key if that connection dropped; the record drops the old key while
      // the VM runs it.
      const key = next;
      stepName = "finish";
      finishing = (async () => {
        if (dropped) {
          const tidy = await connect(onlyNew(key), {}, signal);
          try {
            return await step(tidy, onlyNew(key), "finish");
          } finally {
            tidy.end();
          }
        }
        rotation.send("finish\n");
        const r = await rotation.close();
        if (r.code !== 0 || r.stdout !== "") throw stepFailed(target, "finish", r);
      })();
      finishing.catch(() => {}); // awaited below, after the record is saved
      await state.update(target.name, ({ nextHostKey: _, ...r }) => ({ ...r, hostKey: key }));
    } catch (err) {
      // Its input ends: the script stops where it is (settle's `abort` tidies).
      if (!finishing) rotation.close().catch(() => {});
      // Ctrl-C: `up` rolls the VM back and removes its record; nothing to settle.
      if (next === undefined || signal?.aborted || err instanceof Interrupted) throw err;
      await finishing?.catch(() => {});
      const pinned = await settle(state, target, next);
      if (err instanceof ProviderError) {
        throw new ProviderError(err.message, { notes: [...err.notes, pinned], hint: err.hints, cause: err.cause });
      }
      throw new ProviderError(`replacing the host key of ${target.name} failed: ${(err as Error).message}`, { notes: [pinned], cause: err });
    }

    // The old key is no longer served and no longer pinned; what remains is tidying the VM's disk.
    try {
      await finishing;
    } catch (err) {
      progress.warn(
        `${target.name} now uses its new host key, but removing the old key file and cloud-init's copies of user-data failed: ${(err as Error).message}`,
      );
    }
    return next;
  } finally {
    if (login) login.end();
    else first.end();
  }
}
