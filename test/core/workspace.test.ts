import { describe, expect, it } from "vitest";
import { LABEL } from "../../src/core/labels.js";
import type { Volume } from "../../src/core/provider.js";
import { toWorkspaceView, workspaceLabels } from "../../src/core/workspace.js";

const me = { id: "me0000000001", aliases: ["oldid0000001"] };
const t = (iso: string) => String(Math.floor(Date.parse(iso) / 1000));
const volume = (labels: Record<string, string>, attachedTo?: string): Volume => ({
  id: "v1",
  name: "api",
  provider: "hetzner",
  sizeGiB: 10,
  labels: { ...workspaceLabels({ name: "api", owner: me.id, requestId: "r1", now: new Date("2026-11-01T00:00:00Z"), keepSeconds: 14 * 86400 }), ...labels },
  ...(attachedTo ? { attachedTo } : {}),
});

// When the reaper may delete a kept workspace: `keep` after the last detach it knows of, never earlier.
describe("workspace keep period", () => {
  const now = new Date("2026-11-20T00:00:00Z");

  it("counts from spuff/detached-at; past it the workspace is due", () => {
    const v = toWorkspaceView(volume({ [LABEL.attachedAt]: t("2026-11-01T00:00:00Z"), [LABEL.detachedAt]: t("2026-11-05T00:00:00Z") }), now, me);
    expect(v.status).toBe("kept");
    expect(v.deleteAt).toBe("2026-11-19T00:00:00.000Z");
    expect(v.deleteInSeconds).toBe(-86400);
    expect(v.reap).toBe("expired");
    expect(v.lastUsedAt).toBe("2026-11-05T00:00:00.000Z");
  });

  it("a detach time older than the last attach does not count: nothing is due until it is seen detached again", () => {
    const v = toWorkspaceView(volume({ [LABEL.detachedAt]: t("2026-11-02T00:00:00Z"), [LABEL.attachedAt]: t("2026-11-03T00:00:00Z") }), now, me);
    expect(v.deleteAt).toBeNull();
    expect(v.reap).toBeNull();
  });

  it("an attached volume is never due, whatever its labels say", () => {
    const v = toWorkspaceView(volume({ [LABEL.detachedAt]: t("2026-10-01T00:00:00Z") }, "srv-9"), now, me);
    expect(v.status).toBe("attached");
    expect(v.attachedTo).toBe("srv-9");
    expect(v.deleteAt).toBeNull();
    expect(v.reap).toBeNull();
  });

  it("one whose VM's up is running is not due; one without spuff/keep is never due", () => {
    const due = { [LABEL.detachedAt]: t("2026-11-01T00:00:00Z") };
    expect(toWorkspaceView(volume(due), now, me, true).reap).toBeNull();
    const { [LABEL.keep]: _k, ...noKeep } = volume(due).labels;
    expect(toWorkspaceView({ ...volume({}), labels: noKeep }, now, me).reap).toBeNull();
  });

  it("mine by the owner label or an alias, not by the name", () => {
    expect(toWorkspaceView(volume({}), now, me).mine).toBe(true);
    expect(toWorkspaceView(volume({ [LABEL.owner]: "oldid0000001" }), now, me).mine).toBe(true);
    expect(toWorkspaceView(volume({ [LABEL.owner]: "someone0else" }), now, me).mine).toBe(false);
  });
});
