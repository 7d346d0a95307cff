import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { beforeEach, describe, expect, it } from "vitest";
import { runCli, tempHome } from "../../helpers/cli.js";

// local.image names a release (debian-13 by default, or debian-12) or a path; `spuff up` refuses clearly, before
// creating anything, when there is no image for it.
let t: ReturnType<typeof tempHome>;
beforeEach(() => {
  t = tempHome();
  return () => t.cleanup();
});
const config = (yaml: string) => {
  mkdirSync(join(t.env.XDG_CONFIG_HOME as string, "spuff"), { recursive: true });
  writeFileSync(join(t.env.XDG_CONFIG_HOME as string, "spuff", "config.yaml"), `provider: local\n${yaml}`);
};
const up = () => runCli(["up", "box"], { env: t.env });

describe("local.image", () => {
  it("defaults to Debian 13 and says how to get it when it is missing", async () => {
    config("");
    const r = await up();
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("error: no local VM image of Debian 13 (trixie) (local.image: debian-13) yet");
    expect(r.stderr).toContain("`spuff image pull`");
    expect(r.stderr).toContain("`sudo spuff image build`");
  });

  it("debian-12 stays a release; an unknown name is neither a release nor a path", async () => {
    config("local:\n  image: debian-12\n");
    expect((await up()).stderr).toContain("no local VM image of Debian 12 (bookworm) (local.image: debian-12) yet");
    config("local:\n  image: debian-14\n");
    const r = await up();
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("error: local.image debian-14 is neither a release (debian-13, debian-12) nor an existing path");
  });

  it("image build refuses a local.image path: it builds releases only", async () => {
    config(`local:\n  image: ${t.home}\n`);
    const r = await runCli(["image", "build"], { env: t.env });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`local.image is ${t.home}, a path, not a release spuff can build or pull`);
  });
});
