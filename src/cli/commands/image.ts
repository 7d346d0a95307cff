import type { Command } from "commander";
import { UserError } from "../../core/errors.js";
import { formatMoney, table } from "../../core/view.js";
import type { App } from "../app.js";
import { PlainProgress, stderrProgress } from "../progress.js";

export function register(program: Command, app: App): void {
  const image = program
    .command("image")
    .description("bake provider images with your packages and image.setup; manage the local provider's base image")
    .addHelpText("after", "\nExamples:\n  $ spuff image bake --provider hetzner\n  $ spuff image ls\n  $ spuff image pull\n  $ sudo spuff image build");
  registerBake(image, app);
  image
    .command("pull")
    .description("download Debian's official genericcloud image of local.image's release, verified against Debian's SHA512SUMS")
    .option("--url <dir>", "image directory with SHA512SUMS (default: cloud.debian.org trixie/latest, bookworm/latest for debian-12)")
    .option("--force", "download again even if a verified image is cached")
    .option("--warm", "then boot it once and save the machine state warm starts restore (else the first `spuff up` does)")
    .addHelpText(
      "after",
      `
The image and its checksum file come from the same directory. An image that SHA512SUMS has no line for is refused
before it is downloaded; a downloaded image whose SHA512 differs is deleted and refused (a cached, verified image is
never touched). It is cached under ~/.cache/spuff/images/ and used by \`spuff up\` (provider local) when no built
image exists. Under sudo, the cache is the invoking user's (SUDO_USER), so \`spuff up\` finds it.

Examples:
  $ spuff image pull
  $ spuff image pull --url https://mirror.example/debian-cloud/trixie/latest/
  $ spuff image pull --warm           also save the machine state now (about a minute under TCG)`,
    )
    .action(async (opts: { url?: string; force?: boolean; warm?: boolean }) => {
      const provider = await app.provider("local");
      if (!provider.pullImage) throw new UserError("the local provider cannot download images on this platform");
      const progress = stderrProgress(app);
      const dir = await app.interruptible(() => provider.pullImage!({ url: opts.url, force: Boolean(opts.force), warm: Boolean(opts.warm) }, progress));
      progress.finish();
      if (app.json) app.printJson({ image: dir });
      else app.out(`image ready: ${dir}`);
    });
  image
    .command("build")
    .description("build an image of local.image's release with debootstrap from the Debian mirror (root; about 3 minutes)")
    .option("--force", "rebuild even if an image for the current recipe exists")
    .option("--mirror <url>", "Debian mirror (default: the one in this machine's apt sources)")
    .option("--warm", "then boot it once and save the machine state warm starts restore (else the first `spuff up` does)")
    .addHelpText(
      "after",
      `
The image is cached under ~/.cache/spuff/images/, keyed by the release and the recipe's hash, and used by \`spuff up\`
(provider local). Set local.image: debian-12 to build Debian 12 instead of the default Debian 13.
debootstrap needs root: under sudo the image goes to the invoking user's cache (SUDO_USER's ~/.cache/spuff, owned by
that user), where \`spuff up\` run as that user looks. SPUFF_CACHE_DIR overrides the cache directory.

Examples:
  $ sudo spuff image build
  $ sudo spuff image build --mirror http://deb.debian.org/debian --force`,
    )
    .action(async (opts: { force?: boolean; mirror?: string; warm?: boolean }) => {
      const provider = await app.provider("local");
      if (!provider.buildImage) throw new UserError("the local provider cannot build images on this platform");
      const progress = stderrProgress(app);
      const dir = await provider.buildImage({ force: Boolean(opts.force), mirror: opts.mirror, warm: Boolean(opts.warm) }, progress);
      progress.finish();
      if (app.json) app.printJson({ image: dir });
      else app.out(`image ready: ${dir}`);
    });
}

function registerBake(image: Command, app: App): void {
  image
    .command("bake")
    .description("boot the base image once with packages and image.setup, clean it, and save it as a provider image that `up` boots")
    .option("--size <size>", "machine size of the bake VM (default: the configured one; the image boots on any size of its architecture)")
    .option("--location <location>", "where the bake VM runs (default: the configured location)")
    .option("--force", "bake again even if a current bake exists")
    .addHelpText(
      "after",
      `
A bake runs only the image-level part of the config: \`packages\` and \`image.setup\` (as the login user). Nothing
per-VM goes in: no SSH keys, no host keys, no tokens, no git_hosts, dotfiles or repositories. After cloud-init it
removes host keys, machine-id, cloud-init's state and logs, logs and shell histories, and powers the VM off; the
image is made with its labels in the same request (Hetzner snapshot, AWS AMI with its EBS snapshot tagged) and the VM
is deleted. The image is labelled spuff/bake=<hash of packages, image.setup, ssh.user, base image, scripts>: \`up\`
boots the newest one whose hash matches the config, and sends no package or image.setup work to cloud-init. When the
config changes, \`up\` says the bake is stale and boots the base image until you bake again.
Ctrl-C deletes the bake VM and any image made of it. \`spuff image ls\` shows sizes and monthly cost; the reaper
deletes bakes no \`up\` matched for image.keep (30d). More in docs/images.md.

Examples:
  $ spuff image bake --provider hetzner
  $ spuff image bake --provider aws --force --json`,
    )
    .action(async (opts: { size?: string; location?: string; force?: boolean }) => {
      const provider = await app.provider();
      const progress = app.json ? new PlainProgress({ json: false, info: (t) => app.info(t), warn: (t) => app.warn(t), out: (t) => app.info(t) }) : stderrProgress(app);
      const { bake, imageView } = await import("../../core/bake.js");
      const result = await app.interruptible((signal) =>
        bake(
          { provider, config: app.config(), owner: app.owner().id, progress, env: app.io.env },
          { placement: { size: opts.size, location: opts.location }, force: Boolean(opts.force), signal },
        ),
      );
      progress.finish();
      const view = { ...imageView(result.image, result.key), created: result.created };
      if (app.json) app.printJson(view);
      else app.out(`${result.created ? "baked" : "already baked"}: ${view.name} (${view.provider} image ${view.id}, ${view.sizeGB ?? "?"} GB, ${formatMoney(view.pricePerMonth)}/month); \`spuff up\` boots it`);
    });

  image
    .command("ls")
    .alias("list")
    .description("list baked images with size, monthly cost, and whether `up` boots them (current) or not (stale)")
    .addHelpText("after", "\nExamples:\n  $ spuff image ls\n  $ spuff image ls --provider hetzner --json")
    .action(async () => {
      const views = await listBakes(app);
      if (app.json) {
        app.printJson(views);
        return;
      }
      if (!views.length) {
        app.info("no baked images; `spuff image bake` makes one");
        return;
      }
      const ago = (iso: string | null) => (iso ? iso.slice(0, 16).replace("T", " ") : "-");
      app.out(
        table(
          ["ID", "PROVIDER", "NAME", "STATUS", "STATE", "SIZE", "COST/MONTH", "BAKED", "LAST MATCHED"],
          views.map((v) => [v.id, v.provider, v.name, v.status, v.current ? "current" : "stale", v.sizeGB === null ? "-" : `${v.sizeGB} GB`, formatMoney(v.pricePerMonth), ago(v.createdAt), ago(v.lastMatchedAt)]),
        ),
      );
    });

  image
    .command("rm <id...>")
    .alias("remove")
    .description("delete baked images by id (as `spuff image ls` shows them)")
    .addHelpText("after", "\nOnly images spuff baked (labels managed-by=spuff, spuff/kind=bake) are deleted.\n\nExamples:\n  $ spuff image rm 123456\n  $ spuff image rm ami-0abc1234 --provider aws")
    .action(async (ids: string[]) => {
      const progress = stderrProgress(app);
      const all = await listBakes(app);
      const missing = ids.filter((id) => !all.some((v) => v.id === id));
      if (missing.length) {
        throw new UserError(`no baked image with id ${missing.join(", ")}`, { hint: "`spuff image ls` lists them (add --provider to look at another provider)" });
      }
      const { bakesImages, isBake } = await import("../../core/bake.js");
      const removed: string[] = [];
      for (const view of all.filter((v) => ids.includes(v.id))) {
        const provider = await app.provider(view.provider);
        if (!bakesImages(provider)) continue;
        const image = ((await provider.listImages?.()) ?? []).find((i) => i.id === view.id && isBake(i));
        if (!image) continue;
        await provider.deleteImage?.(image, progress);
        removed.push(view.id);
      }
      progress.finish();
      if (app.json) app.printJson({ removed });
      else app.out(`removed ${removed.join(", ")}`);
    });
}

async function listBakes(app: App) {
  const { bakesImages, bakeKey, imageView, isBake } = await import("../../core/bake.js");
  const out = [];
  for (const name of app.providerScope()) {
    const provider = await app.provider(name);
    if (!bakesImages(provider)) continue;
    const [images, base] = await Promise.all([provider.listImages?.() ?? [], provider.imageBase?.({}).catch(() => undefined)]);
    const key = base === undefined ? undefined : bakeKey(app.config(), name, base);
    out.push(...images.filter(isBake).map((i) => imageView(i, key)));
  }
  return out.sort((a, b) => (b.createdAt ?? "").localeCompare(a.createdAt ?? ""));
}
