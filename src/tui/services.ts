import type { App } from "../cli/app.js";
import { parseDuration } from "../config/load.js";
import { UserError } from "../core/errors.js";
import { type DownResult, down, type Inventory, inventory, vmOf } from "../core/inventory.js";
import type { Catalog, Progress } from "../core/provider.js";
import { providerNames } from "../core/registry.js";
import { toView, type VmView } from "../core/view.js";

export interface ProviderChoice {
  name: string;
  description: string;
  /** The provider sells sizes and locations (the wizard asks for them). */
  catalog: boolean;
  /** The configured default provider. */
  configured: boolean;
  /** Its VMs run on this machine and cost nothing. */
  free: boolean;
}

export interface CreateRequest {
  provider: string;
  name: string;
  size?: string;
  location?: string;
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

  list(signal?: AbortSignal): Promise<Inventory> {
    const app = this.app;
    return inventory({ state: app.state(), provider: (n) => app.provider(n), providerNames: this.scope(), owner: app.owner() }, signal);
  }

  async destroy(view: VmView, progress: Progress): Promise<DownResult> {
    const app = this.app;
    const r = await down({ state: app.state(), provider: (n) => app.provider(n) }, view, progress);
    await this.sshConfigChanged();
    return r;
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
      out.push({ name, description: info.description, catalog: typeof p.catalog === "function", configured: name === configured, free: info.features.free });
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
