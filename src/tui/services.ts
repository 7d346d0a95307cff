import type { App } from "../cli/app.js";
import { parseDuration } from "../config/units.js";
import { UserError } from "../core/errors.js";
import { type DownResult, down, type Inventory, inventory, vmOf, volumeOf, workspaces } from "../core/inventory.js";
import { recordOf } from "../core/owner.js";
import type { Catalog, Progress } from "../core/provider.js";
import { providerNames } from "../core/registry.js";
import { type UnsavedWork, unsavedWork } from "../core/unsaved.js";
import { statusText, toView, type VmView } from "../core/view.js";
import { deleteWorkspace, findWorkspace, isWorkspace, toWorkspaceView, wantsVolume, type WorkspaceView, workspaceSizeGiB } from "../core/workspace.js";

export interface ProviderChoice {
  name: string;
  description: string;
  /** The provider sells sizes and locations (the wizard asks for them). */
  catalog: boolean;
  /** The configured default provider. */
  configured: boolean;
  /** Its VMs run on this machine and cost nothing. */
  free: boolean;
  /** New VMs there get a workspace volume at ~/work (workspace.volume and the provider's features.volumes). */
  workspace: boolean;
}

export interface CreateRequest {
  provider: string;
  name: string;
  size?: string;
  location?: string;
}

/** What the picker lists: the VMs (as `spuff ls`) and the workspace volumes of the providers that have them. */
export interface PickerInventory extends Inventory {
  workspaces: WorkspaceView[];
}

/** What destroying a VM would lose, found before the destroy dialog asks. */
export interface DestroyCheck {
  /** The workspace volume attached to exactly this VM (kept by the destroy); null when it has none. */
  workspace: WorkspaceView | null;
  /** Why its volumes could not be listed (then the unsaved-work check runs as if it had none). */
  volumeError?: string;
  /** The VM's unsaved git work; null when not asked (a volume keeps the work, not running, no record on this machine). */
  unsaved: UnsavedWork | null;
  /** Why the unsaved-work check did not run, when it did not. */
  skipped?: string;
}

export interface CreateResult {
  view: VmView;
  description: string;
  /** Set when the generated OpenSSH config could not be updated. */
  warning?: string;
}

/**
 * What the TUI does, on the real App: the same core calls `spuff ls`, `down`, `extend` and `up` make. Components get
 * this object, so tests drive them against real providers (the local provider's state, the Hetzner fake).
 */
export class TuiServices {
  constructor(readonly app: App) {}

  /** Providers the picker asks (as `spuff ls` does). */
  scope(): string[] {
    return this.app.providerScope();
  }

  /**
   * The VMs and the workspace volumes (as `spuff ls`, which also stamps a volume first seen detached: its keep period
   * starts then at the latest). A provider whose volumes cannot be listed is one more entry in `errors`.
   */
  async list(signal?: AbortSignal): Promise<PickerInventory> {
    const app = this.app;
    const deps = { state: app.state(), provider: (n: string) => app.provider(n), providerNames: this.scope(), owner: app.owner() };
    const [inv, ws] = await Promise.all([inventory(deps, signal), workspaces({ ...deps, stamp: true }, signal)]);
    return { ...inv, errors: [...inv.errors, ...ws.errors.map((e) => ({ provider: e.provider, message: `workspaces: ${e.message}` }))], workspaces: ws.workspaces };
  }

  /**
   * What `destroy` would lose, asked of the provider and the VM now (not the last refresh): the workspace volume
   * attached to it (kept), or, without one, the unsaved git work on a running VM this machine can log in to (a check
   * that fails says why, never "nothing unsaved").
   */
  async destroyCheck(view: VmView, signal?: AbortSignal): Promise<DestroyCheck> {
    const app = this.app;
    const out: DestroyCheck = { workspace: null, unsaved: null };
    if (view.status === "gone") return { ...out, skipped: "it no longer exists" };
    const p = await app.provider(view.provider);
    if (p.info().features.volumes && p.listVolumes) {
      try {
        const v = (await p.listVolumes(signal)).find((v) => isWorkspace(v) && v.attachedTo === view.id);
        if (v) return { ...out, workspace: toWorkspaceView(v, new Date(), app.owner()) };
      } catch (err) {
        out.volumeError = (err as Error).message;
      }
    }
    if (view.status !== "running") return { ...out, skipped: `it is ${statusText(view)}` };
    const record = recordOf(app.state(), view);
    if (!record) return { ...out, skipped: "this machine has no key to log in to it" };
    return { ...out, unsaved: await unsavedWork(app.state(), record, signal) };
  }

  /** `spuff down NAME` (the workspace volume is kept), or with `purge` `spuff down NAME --purge`. */
  async destroy(view: VmView, progress: Progress, opts: { purge?: boolean } = {}): Promise<DownResult> {
    const app = this.app;
    const r = await down({ state: app.state(), provider: (n) => app.provider(n) }, view, progress, undefined, { purge: opts.purge });
    await this.sshConfigChanged();
    return r;
  }

  /** `spuff workspace rm NAME`: deletes exactly this kept workspace volume (by its id). */
  async deleteWorkspace(ws: WorkspaceView, progress: Progress): Promise<void> {
    if (ws.attachedTo) throw new UserError(`the workspace volume of ${ws.name} is attached to VM ${ws.attachedTo}`, { hint: `destroy the VM first; \`spuff down ${ws.name} --purge\` deletes both` });
    if (!ws.mine) throw new UserError(`the workspace volume of ${ws.name} belongs to owner ${ws.owner ?? "unknown"}`, { hint: "it is theirs to delete" });
    await deleteWorkspace(await this.app.provider(ws.provider), volumeOf(ws), progress);
  }

  /** `spuff extend NAME BY`; returns the new expiry. */
  async extend(view: VmView, by: string, signal?: AbortSignal): Promise<Date> {
    parseDuration(by);
    if (view.status === "gone") throw new UserError(`${view.name} no longer exists at ${view.provider}`, { hint: "`spuff reap` forgets it; press n to create a new VM" });
    const provider = await this.app.provider(view.provider);
    const { extendVm } = await import("../core/extend.js");
    return extendVm({ provider, state: this.app.state(), signal }, vmOf(view), by);
  }

  /** `spuff start NAME`: boots a stopped VM again with its disk; returns it as it runs now. */
  async start(view: VmView, progress: Progress, signal?: AbortSignal): Promise<{ view: VmView; alreadyRunning: boolean }> {
    const provider = await this.app.provider(view.provider);
    const { startVm } = await import("../core/start.js");
    const r = await startVm({ provider, state: this.app.state(), progress, env: this.app.io.env, signal }, view);
    if (!r.alreadyRunning) await this.sshConfigChanged();
    return { view: toView(r.vm, new Date(), provider.info().features, view.mine), alreadyRunning: r.alreadyRunning };
  }

  /** Every registered provider, the configured one first. */
  async providers(): Promise<ProviderChoice[]> {
    await import("../../providers/index.js");
    const configured = this.app.config().provider;
    const names = [configured, ...providerNames().filter((n) => n !== configured)];
    const out: ProviderChoice[] = [];
    for (const name of names) {
      const p = await this.app.provider(name);
      const info = p.info();
      out.push({
        name,
        description: info.description,
        catalog: typeof p.catalog === "function",
        configured: name === configured,
        free: info.features.free,
        workspace: wantsVolume(this.app.config(), p),
      });
    }
    return out;
  }

  async catalog(provider: string, signal?: AbortSignal): Promise<Catalog | undefined> {
    const p = await this.app.provider(provider);
    return p.catalog?.(signal);
  }

  /** The TTL a new VM gets (config idle.ttl), in hours and as written. */
  ttl(): { text: string; hours: number } {
    const text = this.app.config().idle.ttl;
    return { text, hours: parseDuration(text) / 3_600_000 };
  }

  /**
   * What `up NAME` on `provider` does about ~/work: attach this machine's kept workspace of that name, or make a new
   * volume of `sizeGiB`; undefined when VMs there get none (workspace.volume false, or a provider without volumes).
   */
  async workspaceFor(provider: string, name: string, signal?: AbortSignal): Promise<{ kept?: WorkspaceView; sizeGiB: number } | undefined> {
    const app = this.app;
    const p = await app.provider(provider);
    if (!wantsVolume(app.config(), p)) return undefined;
    const kept = await findWorkspace(p, name, app.owner(), signal);
    return { sizeGiB: kept?.sizeGiB ?? workspaceSizeGiB(app.config()), ...(kept ? { kept: toWorkspaceView(kept, new Date(), app.owner()) } : {}) };
  }

  /** Whether this machine already has a VM of that name (`up` refuses it). */
  exists(name: string): boolean {
    return this.app.state().read(name) !== undefined;
  }

  /** Core `up` with the wizard's choices; progress goes to `progress`. */
  async create(req: CreateRequest, progress: Progress & { fail?(): string | undefined; finish(): void }, signal: AbortSignal): Promise<CreateResult> {
    const app = this.app;
    const provider = await app.provider(req.provider);
    const { up } = await import("../core/up.js");
    const result = await up(
      { provider, config: app.config(), state: app.state(), owner: app.owner(), progress, env: app.io.env },
      { name: req.name, size: req.size, location: req.location, signal },
    );
    progress.finish();
    const info = provider.info();
    return {
      view: toView(result.vm, new Date(), info.features, true),
      description: info.description,
      warning: await this.sshConfigChanged(),
    };
  }

  /** The set of VMs changed: the generated OpenSSH config and the guard daemon follow (as after `spuff up`/`down`). */
  private async sshConfigChanged(): Promise<string | undefined> {
    const { sshConfigChanged } = await import("../core/session.js");
    return sshConfigChanged(this.app.io.env, this.app.state());
  }
}
