import type { Command } from "commander";
import { UserError } from "../../core/errors.js";
import type { App } from "../app.js";
import { stderrProgress } from "../progress.js";

export function register(program: Command, app: App): void {
  const image = program
    .command("image")
    .description("manage the local provider's base VM image (the release local.image names: debian-13 or debian-12)")
    .addHelpText("after", "\nExamples:\n  $ spuff image pull\n  $ sudo spuff image build");
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
