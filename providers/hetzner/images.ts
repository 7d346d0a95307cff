import { backoff, sleep } from "../../src/core/api.js";
import { ProviderError } from "../../src/core/errors.js";
import { LABEL, MANAGED_BY_VALUE } from "../../src/core/labels.js";
import type { Image, ImageSpec, Progress } from "../../src/core/provider.js";
import type { operations } from "./api.gen.js";
import { type Action, type HetznerClient, pollDelay, UncertainError } from "./client.js";
import { labelSelector, PROVIDER } from "./requests.js";

/**
 * Baked images on Hetzner (docs/images.md, docs/providers/hetzner.md): a snapshot of the bake server, made with
 * POST /servers/{id}/actions/create_image (type snapshot, labels in that request), found again with GET /images
 * (type=snapshot, label_selector), deleted with DELETE /images/{id}. Hetzner bills snapshots per GB-month of
 * `image_size`; the price comes from GET /pricing (`image.price_per_gb_month`), never from a constant.
 */

type Json<Op, Status extends number> = Op extends { responses: { [K in Status]: { content: { "application/json": infer B } } } } ? B : never;
export type HImage = NonNullable<Json<operations["get_image"], 200>["image"]>;

export const BAKES = labelSelector({ [LABEL.managedBy]: MANAGED_BY_VALUE, [LABEL.kind]: "bake" });

const STATUS: Record<HImage["status"], Image["status"]> = { available: "available", creating: "creating", unavailable: "failed" };

export function toImage(i: HImage, perGbMonth: { amount: number; currency: string } | null): Image {
  const size = typeof i.image_size === "number" ? i.image_size : null;
  return {
    id: String(i.id),
    name: i.labels[LABEL.name] ?? i.description,
    provider: PROVIDER,
    status: STATUS[i.status] ?? "unknown",
    labels: { ...i.labels },
    createdAt: i.created,
    sizeGB: size,
    pricePerMonth: size !== null && perGbMonth ? { amount: Math.round(size * perGbMonth.amount * 10000) / 10000, currency: perGbMonth.currency } : null,
  };
}

export class HetznerImages {
  private price?: Promise<{ amount: number; currency: string } | null>;

  constructor(private readonly api: () => HetznerClient) {}

  /** Snapshot price per GB-month (gross), from GET /pricing; null when it cannot be read (shown as unknown). */
  private perGbMonth(signal?: AbortSignal): Promise<{ amount: number; currency: string } | null> {
    if (!this.price) {
      const api = this.api();
      this.price = api
        .call("get pricing", (s) => api.http.GET("/pricing", { signal: s }), { idempotent: true, signal })
        .then((d) => {
          const amount = Number(d?.pricing.image.price_per_gb_month.gross);
          return Number.isFinite(amount) && d ? { amount, currency: d.pricing.currency } : null;
        })
        .catch(() => {
          this.price = undefined;
          return null;
        });
    }
    return this.price;
  }

  private listRaw(selector: string, signal?: AbortSignal): Promise<HImage[]> {
    const api = this.api();
    return api.all<HImage, "images">(
      "list images",
      "images",
      (page, s) => api.http.GET("/images", { params: { query: { type: ["snapshot"], label_selector: selector, page, per_page: 50 } }, signal: s }),
      signal,
    );
  }

  async list(signal?: AbortSignal): Promise<Image[]> {
    const [images, price] = await Promise.all([this.listRaw(BAKES, signal), this.perGbMonth(signal)]);
    return images.map((i) => toImage(i, price));
  }

  private async get(id: number, signal?: AbortSignal): Promise<HImage | undefined> {
    const api = this.api();
    const d = await api.call(`get image ${id}`, (s) => api.http.GET("/images/{id}", { params: { path: { id } }, signal: s }), { idempotent: true, signal, accept: [404] });
    return d?.image;
  }

  /**
   * Shuts the server down (ACPI; a hard poweroff if it is still on after 2 minutes), then POST create_image with the
   * labels, once (an uncertain answer is looked up by the request id label before it is sent again), and waits for the
   * action and for the image to be `available`.
   */
  async create(serverId: number, spec: ImageSpec, progress: Progress): Promise<Image> {
    const api = this.api();
    const { signal } = spec;
    const power = async (how: "shutdown" | "poweroff") => {
      const path = how === "shutdown" ? "/servers/{id}/actions/shutdown" : "/servers/{id}/actions/poweroff";
      const d = await api.call(`${how} server ${serverId}`, (s) => api.http.POST(path, { params: { path: { id: serverId } }, signal: s }), { idempotent: true, signal });
      if (d?.action) await api.waitAction(d.action as Action, `${how} server ${serverId}`, signal);
    };
    progress.info("shutting the bake server down");
    await power("shutdown");
    const deadline = Date.now() + 120_000;
    for (let i = 0; ; i++) {
      const s = await api.getServer(serverId, signal);
      if (!s) throw new ProviderError(`the bake server ${serverId} disappeared before its image was made`);
      if (s.status === "off") break;
      if (Date.now() > deadline) {
        progress.info("still on after 2 minutes: powering it off");
        await power("poweroff");
        break;
      }
      await sleep(pollDelay(i, api.pollMs), signal);
    }

    const rid = spec.labels[LABEL.requestId];
    const body = { type: "snapshot" as const, description: spec.name, labels: { ...spec.labels } };
    let made: { image: HImage; action?: Action } | undefined;
    for (let attempt = 0; !made; attempt++) {
      try {
        const d = await api.call(
          `create image of server ${serverId}`,
          (s) => api.http.POST("/servers/{id}/actions/create_image", { params: { path: { id: serverId } }, body, signal: s }),
          { idempotent: false, signal },
        );
        if (!d?.image) throw new ProviderError(`create image of server ${serverId}: the Hetzner API answered without an image`);
        made = { image: d.image as HImage, action: d.action as Action };
      } catch (err) {
        if (!(err instanceof UncertainError) || attempt >= 3 || !rid) throw err;
        progress.info(`${err.message}; checking whether the image was created before retrying`);
        const [found] = await this.listRaw(labelSelector({ [LABEL.managedBy]: MANAGED_BY_VALUE, [LABEL.requestId]: rid }), signal);
        if (found) made = { image: found };
        else await sleep(backoff(attempt, api.pollMs, 10_000), signal);
      }
    }
    progress.info(`image ${made.image.id} is ${made.image.status}`);
    if (made.action) await api.waitAction(made.action, `create image of server ${serverId}`, signal, 60 * 60_000);
    const until = Date.now() + 60 * 60_000;
    for (let i = 0; ; i++) {
      const img = await this.get(made.image.id, signal);
      if (!img) throw new ProviderError(`the image ${made.image.id} disappeared while it was being created`, { hint: "run `spuff image bake` again" });
      if (img.status === "available") return toImage(img, await this.perGbMonth(signal));
      if (img.status === "unavailable") throw new ProviderError(`Hetzner could not create the image ${img.id} (status unavailable)`, { hint: "run `spuff image bake` again" });
      if (Date.now() > until) throw new ProviderError(`the image ${img.id} is still ${img.status} after an hour`, { hint: "check it in the Hetzner Cloud Console" });
      await sleep(pollDelay(i, api.pollMs), signal);
    }
  }

  /** DELETE /images/{id}; already gone is success. */
  async delete(id: number, signal?: AbortSignal): Promise<void> {
    const api = this.api();
    await api.call(`delete image ${id}`, (s) => api.http.DELETE("/images/{id}", { params: { path: { id } }, signal: s }), { idempotent: true, signal, accept: [404] });
  }

  async setLabels(id: number, labels: Record<string, string>, signal?: AbortSignal): Promise<void> {
    const api = this.api();
    await api.call(`relabel image ${id}`, (s) => api.http.PUT("/images/{id}", { params: { path: { id } }, body: { labels }, signal: s }), { idempotent: true, signal });
  }
}
