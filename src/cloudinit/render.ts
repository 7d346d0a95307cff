import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { gzipSync } from "node:zlib";
import { createRequire } from "node:module";
import type * as SSH2 from "ssh2";
import { type Document, parseDocument, visit } from "yaml";
import type { Config } from "../config/defaults.js";
import { parseDuration } from "../config/units.js";
import { UserError } from "../core/errors.js";
import { templateDir } from "./template-dir.js";
import type { GitHostInput, TemplateArgs } from "./types.js";

// ssh2's key parser from its own file: its index loads the SSH client and server too (src/ssh/keys.ts).
const utils = { parseKey: (createRequire(import.meta.url)("ssh2/lib/protocol/keyParser.js") as Pick<typeof SSH2.utils, "parseKey">).parseKey };

export interface RenderOptions {
  /** The template directory; default: `templateDir()`. Tests point it at a copy. */
  templateDir?: string;
}

/** Packages every VM gets; config `packages` adds to them. Already present on the images spuff uses. */
export const DEFAULT_PACKAGES = ["git", "tmux", "curl", "ca-certificates"];

/** Where the sshd hardening drop-in goes. Low number: sshd uses the first value it reads for most keywords. */
export const SSHD_DROP_IN = "/etc/ssh/sshd_config.d/10-spuff.conf";

/** The script `spuff image bake` runs (sudo -n) to remove everything per-VM before the image is made (docs/images.md). */
export const BAKE_CLEAN = "/usr/local/lib/spuff/bake-clean";

/** The script spuff runs (sudo -n) over its first pinned connection to replace the host key from user-data. */
export const ROTATE_HOST_KEY = "/usr/local/lib/spuff/rotate-host-key";

/** The script runcmd runs (as root) to format on first use and mount the workspace volume at ~/work. */
export const MOUNT_WORKSPACE = "/usr/local/lib/spuff/mount-workspace";

const HOST_RE = /^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;
const LABEL_RE = /^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/;
const IPV6_RE = /^[0-9A-Fa-f:]+$/;
const USER_RE = /^[a-z_][a-z0-9_-]{0,31}$/;
const FINGERPRINT_RE = /^SHA256:[A-Za-z0-9+/]{43}$/;
const HOST_KEY_RE = /^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\.com|sk-ecdsa-sha2-nistp256@openssh\.com) [A-Za-z0-9+/]+={0,2}$/;
/**
 * A workspace volume's guest path, as a provider's volumeDevices gives it (from its API's answer, so untrusted): a
 * device node directly under /dev or a link in /dev/disk/by-id, one name without "/" that starts with a letter or digit.
 */
const DEVICE_RE = /^\/dev\/(disk\/by-id\/)?[A-Za-z0-9][A-Za-z0-9_.:+-]{0,127}$/;
const ONE_LINE = /^[^\n\r\0]*$/;
const NO_TABS = /^[^\t\n\r\0]*$/;
/**
 * System accounts that exist on Debian 12 and Ubuntu 24.04 images: cloud-init cannot create the login user over them.
 * (The images' default users — debian, admin, ubuntu — are not created, since spuff lists its own user.)
 */
const RESERVED_USERS = new Set([
  "root", "daemon", "bin", "sys", "sync", "games", "man", "lp", "mail", "news", "uucp", "proxy", "www-data", "backup",
  "list", "irc", "gnats", "nobody", "_apt", "sshd", "messagebus", "systemd-network", "systemd-resolve",
  "systemd-timesync", "polkitd", "syslog", "uuidd", "tcpdump", "dnsmasq", "landscape", "pollinate", "lxd",
]);

function parsedKey(text: string): ReturnType<typeof utils.parseKey> {
  try {
    return utils.parseKey(text);
  } catch (err) {
    return err as Error;
  }
}

function isPublicKey(line: string): boolean {
  const k = parsedKey(line);
  return !(k instanceof Error) && !(Array.isArray(k)) && !k.isPrivateKey();
}

function checkHostKey(hostKey: TemplateArgs["hostKey"], problems: string[]): void {
  const pub = parsedKey(hostKey.public);
  if (!hostKey.public.startsWith("ssh-ed25519 ") || pub instanceof Error || Array.isArray(pub) || pub.isPrivateKey()) {
    problems.push("hostKey.public: not an ed25519 public key");
    return;
  }
  const priv = /^-----BEGIN OPENSSH PRIVATE KEY-----\n/.test(hostKey.private) ? parsedKey(hostKey.private) : new Error("not PEM");
  if (priv instanceof Error || Array.isArray(priv) || !priv.isPrivateKey() || priv.type !== "ssh-ed25519") {
    problems.push("hostKey.private: not an unencrypted OpenSSH ed25519 private key");
  } else if (!priv.getPublicSSH().equals(pub.getPublicSSH())) {
    problems.push("hostKey: the private and public halves are not one key pair");
  }
}

/** A git URL or path for `git clone`: one word that git cannot read as an option. */
function checkCloneSource(field: string, value: string, problems: string[]): void {
  if (!value || /\s/.test(value) || value.startsWith("-")) problems.push(`${field}: "${value}" is not a git repository URL`);
}

/**
 * Rejects arguments that would render a broken or unsafe VM. Collects every problem, each naming its field, into one
 * UserError (like a config error: `notes` hold one line per problem).
 */
export function validateTemplateArgs(args: TemplateArgs): void {
  const problems: string[] = [];
  if (!LABEL_RE.test(args.hostname)) problems.push(`hostname: "${args.hostname}" is not a valid host name (letters, digits and "-", at most 63)`);
  if (args.user === "root") problems.push("user: must not be root (spuff logs in as an unprivileged user with sudo)");
  else if (!USER_RE.test(args.user)) problems.push(`user: "${args.user}" is not a valid Linux user name (lower case, starts with a letter)`);
  else if (RESERVED_USERS.has(args.user)) problems.push(`user: "${args.user}" is a system account on the VM's image; pick another ssh.user`);
  if (args.authorizedKeys.length === 0) problems.push("authorizedKeys: at least one public key is needed to log in");
  args.authorizedKeys.forEach((k, i) => {
    if (/PRIVATE KEY/.test(k)) problems.push(`authorizedKeys[${i}]: is a private key; only public keys belong here`);
    else if (!ONE_LINE.test(k) || !isPublicKey(k)) problems.push(`authorizedKeys[${i}]: not an OpenSSH public key ("TYPE BASE64 [comment]")`);
  });
  checkHostKey(args.hostKey, problems);

  const seen = new Set<string>();
  args.gitHosts.forEach((h, i) => {
    const at = `gitHosts[${i}]`;
    if (!HOST_RE.test(h.host)) problems.push(`${at}.host: "${h.host}" is not a host name`);
    if (h.address !== undefined && !HOST_RE.test(h.address) && !IPV6_RE.test(h.address)) {
      problems.push(`${at}.address: "${h.address}" is not a host name or IP address`);
    }
    if (h.port !== undefined && !(Number.isInteger(h.port) && h.port > 0 && h.port < 65536)) problems.push(`${at}.port: must be 1-65535, got ${h.port}`);
    const id = `${h.host.toLowerCase()}:${h.port ?? 22}`;
    if (seen.has(id)) problems.push(`${at}: ${h.host} port ${h.port ?? 22} is listed twice`);
    seen.add(id);
    (h.hostKeys ?? []).forEach((k, j) => {
      if (!HOST_KEY_RE.test(k) || !isPublicKey(k)) problems.push(`${at}.hostKeys[${j}]: expected a public key "TYPE BASE64", e.g. "ssh-ed25519 AAAAC3Nza..."`);
    });
    (h.fingerprints ?? []).forEach((f, j) => {
      if (!FINGERPRINT_RE.test(f)) problems.push(`${at}.fingerprints[${j}]: expected "SHA256:" and 43 base64 characters (as \`ssh-keygen -lf\` prints)`);
    });
  });

  args.packages.forEach((p, i) => {
    if (!/^[a-z0-9][a-z0-9+.:=~-]*$/.test(p)) problems.push(`packages[${i}]: "${p}" is not a Debian package name`);
  });
  args.setup.forEach((c, i) => {
    if (!ONE_LINE.test(c)) problems.push(`setup[${i}]: must be one line (use several entries, or a script in your dotfiles)`);
  });
  args.repositories.forEach((r, i) => {
    checkCloneSource(`repositories[${i}]`, r, problems);
  });
  if (args.dotfiles) {
    checkCloneSource("dotfiles.repo", args.dotfiles.repo, problems);
    if (!NO_TABS.test(args.dotfiles.install ?? "")) problems.push("dotfiles.install: must be one line without tabs");
  }
  if (args.workspace) {
    const { devices } = args.workspace;
    if (devices.length === 0 || devices.length > 8) problems.push(`workspace.devices: expected 1 to 8 device paths, got ${devices.length}`);
    devices.forEach((d, i) => {
      if (!DEVICE_RE.test(d)) problems.push(`workspace.devices[${i}]: "${d}" is not a device path (/dev/NAME or /dev/disk/by-id/NAME)`);
    });
  }
  if (!(Number.isFinite(args.idle.timeoutSeconds) && args.idle.timeoutSeconds > 0)) problems.push("idle.timeoutSeconds: must be a positive number of seconds");
  if (!(Number.isInteger(args.idle.expiresAt) && args.idle.expiresAt > 0)) problems.push("idle.expiresAt: must be a Unix time in seconds");
  if (args.idle.action !== "poweroff") problems.push(`idle.action: "${args.idle.action}" is not supported (only poweroff)`);
  if (problems.length) {
    throw new UserError("cannot render the VM's cloud-init user-data", {
      notes: problems,
      hint: "fix the config keys behind the fields above (ssh.user, ssh.public_keys, git_hosts, packages, setup, dotfiles, repositories, idle; workspace.devices come from the provider)",
    });
  }
}

/** Git hosts the VM will trust on first use (no key, no fingerprint): the CLI prints each of these warnings. */
export function trustWarnings(gitHosts: GitHostInput[]): string[] {
  return gitHosts
    .filter((h) => !h.hostKeys?.length && !h.fingerprints?.length)
    .map(
      (h) =>
        `git host ${h.host} has neither host_keys nor fingerprints: the VM will trust whatever key it first sees there (trust on first use); pin it with host_keys or fingerprints in git_hosts (\`ssh-keyscan ${h.host} | ssh-keygen -lf -\` shows them)`,
    );
}

interface WriteFile {
  path: string;
  content: string;
  permissions: string;
  owner?: string;
  defer?: boolean;
}

/** The names a git host's pinned keys are stored under in known_hosts (HostKeyAlias makes the first one match). */
function knownHostNames(h: GitHostInput): string {
  return h.port && h.port !== 22 ? `${h.host},[${h.host}]:${h.port}` : h.host;
}

/** The user's ~/.ssh/config: configured git hosts first (first match wins), then the defaults for every host. */
export function sshConfigFor(gitHosts: GitHostInput[]): string {
  const blocks = ["# spuff: git over SSH uses the forwarded agent and only pinned host keys (/etc/ssh/ssh_known_hosts)."];
  for (const h of gitHosts) {
    const pinned = Boolean(h.hostKeys?.length || h.fingerprints?.length);
    blocks.push(
      [
        `Host ${h.host}`,
        `  HostName ${h.address ?? h.host}`,
        `  Port ${h.port ?? 22}`,
        // Look the key up under the configured name whatever address and port the VM reaches it by.
        `  HostKeyAlias ${h.host}`,
        `  StrictHostKeyChecking ${pinned ? "yes" : "accept-new"}`,
      ].join("\n"),
    );
  }
  blocks.push(
    [
      "Host *",
      "  StrictHostKeyChecking yes",
      "  # Never pass the agent on from the VM.",
      "  ForwardAgent no",
      "  # Use the keys of the forwarded agent.",
      "  IdentitiesOnly no",
      "  UpdateHostKeys no",
    ].join("\n"),
  );
  return `${blocks.join("\n\n")}\n`;
}

/** The idle watcher's files (cloud-init/idle/, owned by the idle feature): scripts and systemd units, as found. */
function idleFiles(dir: string): WriteFile[] {
  const idle = `${dir}idle`;
  if (!existsSync(idle)) return [];
  return readdirSync(idle)
    .filter((f) => !f.startsWith(".") && !/\.(md|txt)$/.test(f) && statSync(`${idle}/${f}`).isFile())
    .sort()
    .map((f) => {
      const content = readFileSync(`${idle}/${f}`, "utf8");
      if (/\.(service|timer|path|socket)$/.test(f)) return { path: `/etc/systemd/system/${f}`, content, permissions: "0644" };
      if (f.endsWith(".tmpfiles")) return { path: `/etc/tmpfiles.d/${f.replace(/\.tmpfiles$/, ".conf")}`, content, permissions: "0644" };
      return { path: `/usr/local/bin/${f}`, content, permissions: "0755" };
    });
}

/** The template's comments are for its readers here; the VM does not need them, and user-data has a size limit. */
function dropComments(doc: Document): void {
  doc.commentBefore = null;
  doc.comment = null;
  visit(doc, {
    Node(_, node) {
      node.commentBefore = null;
      node.comment = null;
    },
  });
}

/**
 * Renders `#cloud-config` user-data: the template cloud-init/user-data.yaml is parsed as YAML and the values from the
 * validated args are set into the document, so the yaml package does all quoting.
 */
export function renderUserData(args: TemplateArgs, options: RenderOptions = {}): string {
  validateTemplateArgs(args);
  const dir = options.templateDir ? `${options.templateDir.replace(/\/$/, "")}/` : templateDir();
  const asset = (rel: string) => readFileSync(`${dir}${rel}`, "utf8");
  const doc = parseDocument(asset("user-data.yaml"));
  if (doc.errors.length) throw new Error(`cloud-init/user-data.yaml: ${doc.errors[0].message}`);
  const home = `/home/${args.user}`;
  const own = `${args.user}:${args.user}`;

  const pinned = args.gitHosts.flatMap((h) => (h.hostKeys ?? []).map((k) => `${knownHostNames(h)} ${k}`));
  const scanned = args.gitHosts.filter((h) => !h.hostKeys?.length);
  const files: WriteFile[] = [
    { path: SSHD_DROP_IN, content: asset("files/sshd-spuff.conf"), permissions: "0644" },
    { path: ROTATE_HOST_KEY, content: asset("files/spuff-rotate-host-key.sh"), permissions: "0755", owner: "root:root" },
    {
      path: "/etc/ssh/ssh_known_hosts",
      content: `${asset("known_hosts")}${pinned.length ? `\n# git_hosts from the spuff config\n${pinned.join("\n")}\n` : ""}`,
      permissions: "0644",
    },
    ...(args.baked === "boot" ? [] : [{ path: "/usr/local/bin/spuff-install-packages", content: asset("files/spuff-install-packages.sh"), permissions: "0755" }]),
    { path: "/etc/profile.d/spuff-agent.sh", content: asset("files/profile-agent.sh"), permissions: "0644" },
    { path: `${home}/.ssh/rc`, content: asset("files/ssh-rc.sh"), permissions: "0644", owner: own, defer: true },
    { path: `${home}/.ssh/config`, content: sshConfigFor(args.gitHosts), permissions: "0600", owner: own, defer: true },
    { path: `${home}/.tmux.conf`, content: asset("files/tmux.conf"), permissions: "0644", owner: own, defer: true },
  ];
  if (args.baked === "bake") files.push({ path: BAKE_CLEAN, content: asset("files/spuff-bake-clean.sh"), permissions: "0755", owner: "root:root" });
  if (scanned.length) {
    files.push(
      { path: "/usr/local/bin/spuff-keyscan", content: asset("files/spuff-keyscan.sh"), permissions: "0755" },
      {
        path: "/etc/spuff/keyscan.conf",
        content: `${scanned.map((h) => [h.host, h.port ?? 22, h.address ?? h.host, h.fingerprints?.length ? h.fingerprints.join(",") : "-"].join("\t")).join("\n")}\n`,
        permissions: "0644",
      },
    );
  }
  const firstLogin = [
    ...(args.dotfiles ? [["dotfiles", args.dotfiles.repo, args.dotfiles.install ?? ""].join("\t")] : []),
    ...args.repositories.map((r) => `repo\t${r}\t`),
  ];
  if (firstLogin.length) {
    files.push(
      { path: "/usr/local/bin/spuff-first-login", content: asset("files/spuff-first-login.sh"), permissions: "0755" },
      { path: "/etc/spuff/first-login.conf", content: `${firstLogin.join("\n")}\n`, permissions: "0644" },
    );
  }
  if (args.workspace) files.push({ path: MOUNT_WORKSPACE, content: asset("files/spuff-mount-workspace.sh"), permissions: "0755", owner: "root:root" });
  if (args.setup.length) {
    files.push({ path: "/etc/spuff/setup.sh", content: `#!/bin/bash\n# spuff: config \`setup\`, run once as ${args.user} at first boot\nset -e\ncd ~\n${args.setup.join("\n")}\n`, permissions: "0755" });
  }
  const idle = idleFiles(dir);
  files.push(...idle, {
    path: "/etc/spuff/idle.conf",
    content: `IDLE_TIMEOUT_SECONDS=${Math.round(args.idle.timeoutSeconds)}\nEXPIRES_AT=${args.idle.expiresAt}\nACTION=${args.idle.action}\nSSH_USER=${args.user}\n`,
    permissions: "0644",
  });

  const packages = [...new Set([...DEFAULT_PACKAGES, ...args.packages])];
  // One shell line per entry; cloud-init runs them in order as root. The idle watcher goes first so that a VM whose
  // later steps hang still powers itself off.
  // Lists are quoted by cloud-init itself; strings are shell lines.
  // No sshd reload: the drop-in and host key are written in cloud-init's init stage, before sshd starts, and a reload
  // during boot left a session spuff had already opened (`cloud-init status --wait`) hanging on a real VM.
  // cloud-init runs runcmd as one sh script whose status is its last command's: `set -e` makes any failed step fail
  // the script, so cloud-init (and `spuff up`) report it instead of a later step hiding it.
  const runcmd: (string | string[])[] = ["set -e"];
  for (const f of idle.filter((f) => f.path.startsWith("/etc/tmpfiles.d/"))) runcmd.push(["systemd-tmpfiles", "--create", f.path]);
  if (idle.some((f) => f.path === "/etc/systemd/system/spuff-idle.timer")) runcmd.push(["systemctl", "enable", "--now", "spuff-idle.timer"]);
  // ~/work before anything that may use it (setup, the first login's clones): the workspace volume mounted there
  // (waiting for it to appear, formatted if empty), or a plain directory.
  const work = `${home}/work`;
  runcmd.push(args.workspace ? [MOUNT_WORKSPACE, args.user, work, ...args.workspace.devices] : ["install", "-d", "-o", args.user, "-g", args.user, work]);
  // A VM from a current bake has its packages already (the bake installed exactly these): no package step.
  if (args.baked !== "boot") runcmd.push(["/usr/local/bin/spuff-install-packages", ...packages]);
  if (scanned.length) runcmd.push(["/usr/local/bin/spuff-keyscan"]);
  if (args.setup.length) runcmd.push(["runuser", "-l", args.user, "-c", "/etc/spuff/setup.sh"]);

  doc.set("hostname", args.hostname);
  doc.set("ssh_keys", { ed25519_private: args.hostKey.private, ed25519_public: args.hostKey.public });
  doc.setIn(["users", 0, "name"], args.user);
  doc.setIn(["users", 0, "ssh_authorized_keys"], args.authorizedKeys);
  doc.set("write_files", files);
  doc.set("runcmd", runcmd);
  dropComments(doc);
  // Top-level lists unindented: two bytes less on every line of every file (Hetzner takes 32 KiB as text).
  const text = doc.toString({ lineWidth: 0, indentSeq: false });
  return text.startsWith("#cloud-config\n") ? text : `#cloud-config\n${text}`;
}

/**
 * Fits user-data into a provider's limit as the provider counts it (ProviderFeatures.userDataBinary): the text as is,
 * else gzipped (cloud-init detects gzip by its magic bytes), else a UserError with the sizes that says what to shorten.
 * `binary` "base64": the provider sends gzip as base64 text and its limit counts that text (Hetzner: 32 KiB of base64 is
 * 24 KiB of gzip); "bytes": the limit counts the gzip bytes (EC2's 16 KiB is before its own base64).
 */
export function encodeUserData(text: string, maxBytes: number, binary: "bytes" | "base64" = "bytes"): string | Buffer {
  const size = Buffer.byteLength(text);
  if (size <= maxBytes) return text;
  const gz = gzipSync(text, { level: 9 });
  const sent = binary === "base64" ? Math.ceil(gz.length / 3) * 4 : gz.length;
  if (sent <= maxBytes) return gz;
  const sizes = binary === "base64" ? `${gz.length} gzipped, ${sent} as base64, the way this provider sends it` : `${gz.length} gzipped`;
  throw new UserError(`the VM's user-data is ${size} bytes (${sizes}), over this provider's limit of ${maxBytes} bytes`, {
    hint: ["shorten `setup`, `packages` or `git_hosts` in the config", "put long setup steps in a script in your dotfiles instead"],
  });
}

/** Maps the effective config (defaults applied) and the per-VM parts to the template input. */
export function templateArgsFromConfig(
  config: Config,
  parts: {
    hostname: string;
    hostKey: { private: string; public: string };
    clientPublicKey: string;
    expiresAt: Date;
    /** The attached workspace volume's guest paths (Provider.volumeDevices); absent: no volume. */
    workspaceDevices?: string[];
    /** The VM boots a current bake (docs/images.md): its packages and image.setup are already on the image. */
    baked?: boolean;
  },
): TemplateArgs {
  const dotfiles = typeof config.dotfiles === "string" ? { repo: config.dotfiles } : config.dotfiles;
  return {
    hostname: parts.hostname,
    user: config.ssh.user,
    authorizedKeys: [parts.clientPublicKey.trim(), ...(config.ssh.public_keys ?? []).map((k) => k.trim())],
    hostKey: { private: parts.hostKey.private, public: parts.hostKey.public.trim() },
    gitHosts: config.git_hosts.map((h) => ({
      host: h.host,
      port: h.port,
      address: h.address,
      hostKeys: h.host_keys,
      fingerprints: h.fingerprints,
    })),
    packages: parts.baked ? [] : config.packages,
    dotfiles,
    // image.setup runs in the bake; without one it runs here, before the per-VM setup.
    setup: parts.baked ? config.setup : [...(config.image?.setup ?? []), ...config.setup],
    repositories: config.repositories,
    ...(parts.workspaceDevices ? { workspace: { devices: parts.workspaceDevices } } : {}),
    ...(parts.baked ? { baked: "boot" as const } : {}),
    idle: {
      timeoutSeconds: parseDuration(config.idle.timeout) / 1000,
      expiresAt: Math.floor(parts.expiresAt.getTime() / 1000),
      action: "poweroff",
    },
  };
}
