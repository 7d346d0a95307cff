import { execFileSync, spawnSync } from "node:child_process";
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gunzipSync } from "node:zlib";
import { afterAll, describe, expect, it } from "vitest";
import { parse } from "yaml";
import {
  encodeUserData,
  MOUNT_WORKSPACE,
  renderUserData,
  ROTATE_HOST_KEY,
  SSHD_DROP_IN,
  type TemplateArgs,
  templateArgsFromConfig,
  templateDir,
  trustWarnings,
  validateTemplateArgs,
} from "../../src/cloudinit/index.js";
import { DEFAULTS } from "../../src/config/defaults.js";
import { loadConfig } from "../../src/config/load.js";
import { UserError } from "../../src/core/errors.js";
import { ed25519KeyPair } from "../../src/ssh/keys.js";

const dir = mkdtempSync(join(tmpdir(), "spuff-ci-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const keys = (c: string) => {
  const k = ed25519KeyPair(c);
  return { private: k.private, public: k.public.trim() };
};
const host = keys("host");
const client = keys("client");
const extra = keys("extra");
const bare = (pub: string) => pub.split(" ").slice(0, 2).join(" ");

/** The effective default config (no file, no env), as `spuff up` would map it. */
function minimal(): TemplateArgs {
  const { config } = loadConfig({ env: { HOME: dir }, cwd: dir });
  return templateArgsFromConfig(config, { hostname: "box", hostKey: host, clientPublicKey: client.public, expiresAt: new Date(2_000_000_000_000) });
}

/** The default config with a workspace volume attached, as `spuff up` maps it on a provider with volumes. */
function withWorkspace(devices = ["/dev/disk/by-id/scsi-0HC_Volume_123456789"]): TemplateArgs {
  const { config } = loadConfig({ env: { HOME: dir }, cwd: dir });
  return templateArgsFromConfig(config, { hostname: "box", hostKey: host, clientPublicKey: client.public, expiresAt: new Date(2_000_000_000_000), workspaceDevices: devices });
}

/** Every optional part set, from a real config file through the loader. */
function maximal(): TemplateArgs {
  const cwd = mkdtempSync(join(dir, "max-"));
  writeFileSync(
    join(cwd, "spuff.yaml"),
    [
      "ssh:",
      "  user: alice",
      `  public_keys: ["${extra.public}"]`,
      "idle:",
      "  timeout: 1h30m",
      "git_hosts:",
      "  - host: git.example.com",
      "    port: 2222",
      `    host_keys: ["${bare(extra.public)}"]`,
      "  - host: git.internal",
      '    fingerprints: ["SHA256:+DiY3wvvV6TuJJhbpZisF/zLDA0zPMSvHdkr4UvCOqU"]',
      "  - host: githost.test",
      "    address: 10.0.2.100",
      "packages: [build-essential, ripgrep]",
      "dotfiles: { repo: 'git@github.com:me/dotfiles.git', install: './install.sh --all' }",
      "setup:",
      "  - 'echo \"it''s: {quoted} #not-a-comment\" > ~/hello.txt'",
      "  - mkdir -p ~/work",
      "repositories: ['git@github.com:me/project.git', 'git@gitlab.com:team/api.git']",
    ].join("\n"),
  );
  const { config } = loadConfig({ env: { HOME: dir }, cwd, configFile: "spuff.yaml" });
  return templateArgsFromConfig(config, { hostname: "box", hostKey: host, clientPublicKey: client.public, expiresAt: new Date(2_000_000_000_000) });
}

function schemaCheck(userData: string): { code: number; out: string } {
  const f = join(dir, `ud-${Math.random().toString(36).slice(2)}.yaml`);
  writeFileSync(f, userData);
  const r = spawnSync("cloud-init", ["schema", "-c", f], { encoding: "utf8" });
  return { code: r.status ?? 1, out: `${r.stdout}${r.stderr}` };
}

/** Top-level keys cloud-init (the installed 22.4) knows, read from its own JSON schema. */
function cloudInitKeys(): Set<string> {
  const schemaDir = execFileSync("/usr/bin/python3", ["-c", "import cloudinit.config.schemas as s, os; print(os.path.dirname(s.__file__))"], {
    encoding: "utf8",
  }).trim();
  const schema = JSON.parse(readFileSync(join(schemaDir, "schema-cloud-config-v1.json"), "utf8"));
  const names = new Set<string>();
  for (const { $ref } of schema.allOf) for (const k of Object.keys(schema.$defs[$ref.split("/").pop()].properties ?? {})) names.add(k);
  return names;
}

type File = { path: string; content: string; permissions: string; owner?: string; defer?: boolean };
const filesOf = (doc: { write_files: File[] }) => Object.fromEntries(doc.write_files.map((f) => [f.path, f]));

describe("rendered user-data", () => {
  const known = cloudInitKeys();
  it("the key list read from cloud-init's schema is real", () => {
    for (const k of ["users", "write_files", "runcmd", "ssh_keys"]) expect(known.has(k)).toBe(true);
    expect(known.has("no_such_module")).toBe(false);
  });

  for (const [label, make] of [
    ["minimal (default config)", minimal],
    ["default config with a workspace volume", withWorkspace],
    ["maximal", maximal],
  ] as const) {
    it(`${label}: valid for \`cloud-init schema\`, every top-level key known to cloud-init 22.4`, () => {
      const ud = renderUserData(make());
      expect(ud.startsWith("#cloud-config\n")).toBe(true);
      const r = schemaCheck(ud);
      expect(r.out).toContain("Valid cloud-config");
      expect(r.code).toBe(0);
      const unknown = Object.keys(parse(ud)).filter((k) => !known.has(k));
      expect(unknown).toEqual([]);
    });
  }

  it("the schema check can fail (a broken document is reported)", () => {
    const r = schemaCheck("#cloud-config\nusers: 5\nwrite_files: [{content: x}]\n");
    expect(r.code).not.toBe(0);
  });

  it("pins the VM host key, creates the user with the per-VM key, hardens sshd", () => {
    const doc = parse(renderUserData(minimal()));
    expect(doc.hostname).toBe("box");
    expect(doc.ssh_keys).toEqual({ ed25519_private: host.private, ed25519_public: host.public });
    expect(doc.ssh_genkeytypes).toEqual(["ed25519"]);
    expect(doc.ssh_deletekeys).toBe(true);
    // Password logins are off in the sshd drop-in; ssh_pwauth would make cloud-init restart sshd during boot.
    expect(doc.ssh_pwauth).toBeUndefined();
    expect(doc.locale).toBe("C.UTF-8");
    expect(doc.users).toEqual([
      {
        name: DEFAULTS.ssh.user,
        shell: "/bin/bash",
        groups: ["sudo"],
        sudo: "ALL=(ALL) NOPASSWD:ALL",
        lock_passwd: true,
        ssh_authorized_keys: [client.public],
      },
    ]);
    const files = filesOf(doc);
    const sshd = files[SSHD_DROP_IN].content;
    for (const line of ["HostKey /etc/ssh/ssh_host_ed25519_key", "PasswordAuthentication no", "PermitRootLogin no", "AllowAgentForwarding yes", "ClientAliveInterval 30"]) {
      expect(sshd).toMatch(new RegExp(`^${line}$`, "m"));
    }
    expect(sshd.match(/^HostKey /gm)).toHaveLength(1);
    // The script spuff runs over its first connection to replace that key (docs/adr/0008-host-key-rotation.md):
    // root's, not writable by the login user, present before the first login.
    expect(ROTATE_HOST_KEY).toBe("/usr/local/lib/spuff/rotate-host-key");
    expect(files[ROTATE_HOST_KEY]).toEqual({
      path: ROTATE_HOST_KEY,
      content: readFileSync("cloud-init/files/spuff-rotate-host-key.sh", "utf8"),
      permissions: "0755",
      owner: "root:root",
    });
    // Written in cloud-init's init stage, before sshd starts: no deferral and no sshd reload during boot (a reload
    // hung the session spuff already had open on a real VM).
    expect(files[SSHD_DROP_IN].defer).toBeUndefined();
    expect(JSON.stringify(doc.runcmd)).not.toMatch(/reload|restart/);
    const cfg = files["/home/dev/.ssh/config"];
    expect(cfg).toMatchObject({ owner: "dev:dev", permissions: "0600", defer: true });
    for (const line of ["StrictHostKeyChecking yes", "ForwardAgent no", "IdentitiesOnly no"]) expect(cfg.content).toMatch(new RegExp(`^  ${line}$`, "m"));
    expect(files["/home/dev/.ssh/rc"]).toMatchObject({ owner: "dev:dev", defer: true, content: readFileSync("cloud-init/files/ssh-rc.sh", "utf8") });
    expect(files["/home/dev/.tmux.conf"].content).toContain('set-environment -g SSH_AUTH_SOCK "$HOME/.ssh/agent.sock"');
    expect(files["/etc/profile.d/spuff-agent.sh"].content).toContain('SSH_AUTH_SOCK="$HOME/.ssh/agent.sock"');
    const knownHosts = files["/etc/ssh/ssh_known_hosts"].content;
    expect(knownHosts).toBe(readFileSync("cloud-init/known_hosts", "utf8"));
    for (const h of ["github.com", "gitlab.com", "bitbucket.org", "codeberg.org", "git.sr.ht"]) {
      expect(knownHosts).toMatch(new RegExp(`^${h.replaceAll(".", "\\.")} ssh-ed25519 `, "m"));
    }
    expect(files["/etc/spuff/idle.conf"].content).toBe("IDLE_TIMEOUT_SECONDS=1800\nEXPIRES_AT=2000000000\nACTION=poweroff\nSSH_USER=dev\n");
    // Nothing optional is rendered for the default config.
    for (const absent of ["/usr/local/bin/spuff-keyscan", "/etc/spuff/keyscan.conf", "/usr/local/bin/spuff-first-login", "/etc/spuff/first-login.conf", "/etc/spuff/setup.sh"]) {
      expect(files[absent], absent).toBeUndefined();
    }
    expect(doc.package_update).toBe(false);
    expect(doc.package_upgrade).toBe(false);
    expect(doc.packages).toBeUndefined();
    expect(doc.runcmd).toContainEqual(["/usr/local/bin/spuff-install-packages", "git", "tmux", "curl", "ca-certificates"]);
    expect(JSON.stringify(doc.runcmd)).not.toMatch(/spuff-keyscan|runuser/);
  });

  it("maximal: pinned, fingerprint-checked and trust-on-first-use git hosts, packages, setup, first-login clones", () => {
    const args = maximal();
    const doc = parse(renderUserData(args));
    const files = filesOf(doc);
    // Pinned keys under the host name, and [host]:port for a non-standard port.
    expect(files["/etc/ssh/ssh_known_hosts"].content).toContain(`\ngit.example.com,[git.example.com]:2222 ${bare(extra.public)}\n`);
    expect(files["/etc/spuff/keyscan.conf"].content).toBe(
      "git.internal\t22\tgit.internal\tSHA256:+DiY3wvvV6TuJJhbpZisF/zLDA0zPMSvHdkr4UvCOqU\ngithost.test\t22\t10.0.2.100\t-\n",
    );
    expect(files["/usr/local/bin/spuff-keyscan"].permissions).toBe("0755");
    const cfg = files["/home/alice/.ssh/config"].content;
    expect(cfg).toContain("Host git.example.com\n  HostName git.example.com\n  Port 2222\n  HostKeyAlias git.example.com\n  StrictHostKeyChecking yes\n");
    expect(cfg).toContain("Host git.internal\n  HostName git.internal\n  Port 22\n  HostKeyAlias git.internal\n  StrictHostKeyChecking yes\n");
    expect(cfg).toContain("Host githost.test\n  HostName 10.0.2.100\n  Port 22\n  HostKeyAlias githost.test\n  StrictHostKeyChecking accept-new\n");
    expect(cfg.indexOf("Host githost.test")).toBeLessThan(cfg.indexOf("Host *"));
    expect(files["/etc/spuff/first-login.conf"].content).toBe(
      "dotfiles\tgit@github.com:me/dotfiles.git\t./install.sh --all\nrepo\tgit@github.com:me/project.git\t\nrepo\tgit@gitlab.com:team/api.git\t\n",
    );
    // Setup commands arrive byte for byte, whatever YAML-special characters they hold.
    expect(files["/etc/spuff/setup.sh"].content).toContain(`\necho "it's: {quoted} #not-a-comment" > ~/hello.txt\nmkdir -p ~/work\n`);
    expect(files["/etc/spuff/idle.conf"].content).toBe("IDLE_TIMEOUT_SECONDS=5400\nEXPIRES_AT=2000000000\nACTION=poweroff\nSSH_USER=alice\n");
    expect(doc.runcmd).toContainEqual(["runuser", "-l", "alice", "-c", "/etc/spuff/setup.sh"]);
    expect(doc.runcmd).toContainEqual(["/usr/local/bin/spuff-keyscan"]);
    expect(doc.runcmd).toContainEqual(["/usr/local/bin/spuff-install-packages", "git", "tmux", "curl", "ca-certificates", "build-essential", "ripgrep"]);
    // Setup runs after packages are installed and hosts are scanned.
    const order = doc.runcmd.map((c: string | string[]) => (Array.isArray(c) ? c[0] : c));
    expect(order.indexOf("runuser")).toBeGreaterThan(order.indexOf("/usr/local/bin/spuff-keyscan"));
    expect(order.indexOf("/usr/local/bin/spuff-keyscan")).toBeGreaterThan(order.indexOf("/usr/local/bin/spuff-install-packages"));
    expect(doc.users[0].name).toBe("alice");
    expect(doc.users[0].ssh_authorized_keys).toEqual([client.public, extra.public]);
    expect(trustWarnings(args.gitHosts)).toEqual([expect.stringContaining("git host githost.test has neither host_keys nor fingerprints")]);
  });

  it("a workspace volume: the root-owned mount script runs after the idle watcher and before packages and setup", () => {
    const devices = ["/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol0123456789abcdef0", "/dev/xvdf"];
    const args = { ...maximal(), workspace: { devices } };
    const doc = parse(renderUserData(args));
    expect(filesOf(doc)[MOUNT_WORKSPACE]).toEqual({
      path: MOUNT_WORKSPACE,
      content: readFileSync("cloud-init/files/spuff-mount-workspace.sh", "utf8"),
      permissions: "0755",
      owner: "root:root",
    });
    expect(doc.runcmd).toContainEqual([MOUNT_WORKSPACE, "alice", "/home/alice/work", ...devices]);
    const order = doc.runcmd.map((c: string | string[]) => (Array.isArray(c) ? c[0] : c));
    const mount = order.indexOf(MOUNT_WORKSPACE);
    expect(mount).toBeGreaterThan(order.indexOf("systemctl"));
    expect(mount).toBeLessThan(order.indexOf("/usr/local/bin/spuff-install-packages"));
    expect(mount).toBeLessThan(order.indexOf("runuser"));
    expect(JSON.stringify(doc.runcmd)).not.toContain('"install","-d"');
  });

  it("without a workspace volume ~/work is a plain directory of the login user, made before setup", () => {
    const doc = parse(renderUserData(maximal()));
    expect(filesOf(doc)[MOUNT_WORKSPACE]).toBeUndefined();
    const order = doc.runcmd.map((c: string | string[]) => (Array.isArray(c) ? c[0] : c));
    expect(doc.runcmd).toContainEqual(["install", "-d", "-o", "alice", "-g", "alice", "/home/alice/work"]);
    expect(order.indexOf("install")).toBeLessThan(order.indexOf("runuser"));
    expect(JSON.stringify(parse(renderUserData(minimal())).runcmd)).not.toContain("mount-workspace");
  });

  it("the template's comments stay out of the user-data; #cloud-config is its first line", () => {
    const ud = renderUserData(minimal());
    expect(readFileSync("cloud-init/user-data.yaml", "utf8")).toContain("# filled in");
    expect(ud.startsWith("#cloud-config\nhostname: box\n")).toBe(true);
    expect(ud).not.toContain("filled in");
  });

  it("runcmd, as cloud-init turns it into a script, stops at the first failed step", () => {
    // cc_runcmd writes util.shellify(runcmd) and runs it; use the installed cloud-init's own function.
    const shellify = (runcmd: unknown) =>
      execFileSync("/usr/bin/python3", ["-c", "import json,sys; from cloudinit import util; sys.stdout.write(util.shellify(json.load(sys.stdin)))"], {
        input: JSON.stringify(runcmd),
        encoding: "utf8",
      });
    const rendered = shellify(parse(renderUserData(maximal())).runcmd);
    expect(rendered.startsWith("#!/bin/sh\nset -e\n")).toBe(true);
    expect(rendered).toContain("'/usr/local/bin/spuff-install-packages' 'git' 'tmux' 'curl' 'ca-certificates' 'build-essential' 'ripgrep'\n");
    // The same shape with a failing step in the middle: the script fails and the later step never runs.
    const marker = join(dir, "later-step-ran");
    const script = join(dir, "runcmd.sh");
    writeFileSync(script, shellify(["set -e", ["false"], ["touch", marker]]));
    expect(spawnSync("sh", [script]).status).not.toBe(0);
    expect(existsSync(marker)).toBe(false);
  });

  it("trustWarnings is empty when every git host is pinned", () => {
    expect(trustWarnings(minimal().gitHosts)).toEqual([]);
    expect(trustWarnings([{ host: "a.example", hostKeys: [bare(extra.public)] }, { host: "b.example", fingerprints: ["SHA256:+DiY3wvvV6TuJJhbpZisF/zLDA0zPMSvHdkr4UvCOqU"] }])).toEqual([]);
  });

  it("contains no secret: no token, no user private key; the only private key is the VM's own host key", () => {
    const token = "hcloudTOKEN0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOP";
    const cwd = mkdtempSync(join(dir, "secret-"));
    writeFileSync(join(cwd, "spuff.yaml"), `provider: hetzner\nhetzner:\n  token: ${token}\naws:\n  profile: work\n`);
    const { config } = loadConfig({
      env: { HOME: dir, HCLOUD_TOKEN: token, AWS_ACCESS_KEY_ID: "AKIAIOSFODNN7EXAMPLE", AWS_SECRET_ACCESS_KEY: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY" },
      cwd,
      configFile: "spuff.yaml",
    });
    const args = templateArgsFromConfig(config, { hostname: "box", hostKey: host, clientPublicKey: client.public, expiresAt: new Date() });
    const tokenPatterns = [
      /AKIA[0-9A-Z]{16}/, // AWS access key id
      /wJalrXUtnFEMI/, // the secret access key above
      /aws_secret_access_key|HCLOUD_TOKEN/i,
      /gh[pousr]_[A-Za-z0-9]{36}/, // GitHub tokens
      /glpat-[A-Za-z0-9_-]{20}/, // GitLab tokens
      /\b[A-Za-z0-9]{64}\b/, // Hetzner API tokens are 64 alphanumerics
    ];
    for (const ud of [renderUserData(args), renderUserData(maximal())]) {
      expect(ud).not.toContain(token);
      // Public keys and the VM's host key are long base64 runs by design; scan everything else.
      const { ssh_keys: _keys, ...others } = parse(ud);
      const scannable = JSON.stringify(others).replace(/(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp\d+) [A-Za-z0-9+/]+=*/g, "PUBLIC-KEY");
      expect(scannable).toContain("PUBLIC-KEY");
      for (const p of tokenPatterns) expect(scannable).not.toMatch(p);
      // The client's private key, by its distinctive body (the first base64 line is a header shared by ed25519 keys).
      for (const line of client.private.split("\n").slice(2, -2)) expect(ud).not.toContain(line);
      // Exactly one private key block, and it is the VM's host key inside ssh_keys.
      expect(ud.match(/-----BEGIN [A-Z ]*PRIVATE KEY-----/g)).toHaveLength(1);
      const doc = parse(ud);
      expect(doc.ssh_keys.ed25519_private).toBe(host.private);
      expect(JSON.stringify(others)).not.toMatch(/PRIVATE KEY/);
    }
  });
});

describe("finding the templates", () => {
  it("from source: the repository's cloud-init/", () => {
    expect(templateDir()).toBe(join(process.cwd(), "cloud-init/"));
  });

  // `npm test` builds first; the built renderer must find the templates that scripts/copy-assets.mjs put in dist/.
  it.skipIf(!existsSync("dist/src/cloudinit/index.js"))("from the build: dist/cloud-init/, and it renders", async () => {
    const built = await import(join(process.cwd(), "dist/src/cloudinit/index.js"));
    expect(built.templateDir()).toBe(join(process.cwd(), "dist/cloud-init/"));
    expect(parse(built.renderUserData(minimal())).ssh_keys.ed25519_public).toBe(host.public);
  });
});

describe("the idle watcher slot (cloud-init/idle/)", () => {
  /** A copy of the template tree with the given idle files (undefined: no idle directory at all). */
  function templates(idle?: Record<string, string>): string {
    const t = mkdtempSync(join(dir, "tpl-"));
    cpSync(templateDir(), t, { recursive: true });
    rmSync(join(t, "idle"), { recursive: true, force: true });
    if (idle) {
      mkdirSync(join(t, "idle"));
      for (const [name, content] of Object.entries(idle)) writeFileSync(join(t, "idle", name), content);
    }
    return t;
  }

  it("renders every idle file: scripts to /usr/local/bin (0755), units to /etc/systemd/system, and enables the timer", () => {
    const t = templates({
      "spuff-idle": "#!/bin/bash\n. /etc/spuff/idle.conf\n",
      "spuff-keep": "#!/bin/bash\ntouch /run/spuff-keep\n",
      "spuff-idle.service": "[Service]\nType=oneshot\nExecStart=/usr/local/bin/spuff-idle\n",
      "spuff-idle.timer": "[Timer]\nOnBootSec=5min\nOnUnitActiveSec=1min\n[Install]\nWantedBy=timers.target\n",
      "README.md": "notes for developers, not for the VM\n",
    });
    const ud = renderUserData(minimal(), { templateDir: t });
    expect(schemaCheck(ud).code).toBe(0);
    const doc = parse(ud);
    const files = filesOf(doc);
    expect(files["/usr/local/bin/spuff-idle"]).toEqual({ path: "/usr/local/bin/spuff-idle", content: "#!/bin/bash\n. /etc/spuff/idle.conf\n", permissions: "0755" });
    expect(files["/usr/local/bin/spuff-keep"].permissions).toBe("0755");
    expect(files["/etc/systemd/system/spuff-idle.service"]).toMatchObject({ permissions: "0644", content: expect.stringContaining("ExecStart=/usr/local/bin/spuff-idle") });
    expect(files["/etc/systemd/system/spuff-idle.timer"].permissions).toBe("0644");
    expect(doc.write_files.some((f: File) => f.path.endsWith("README.md"))).toBe(false);
    expect(files["/etc/spuff/idle.conf"].content).toBe("IDLE_TIMEOUT_SECONDS=1800\nEXPIRES_AT=2000000000\nACTION=poweroff\nSSH_USER=dev\n");
    // Enabled before anything that could hang (package installs, setup), so a stuck VM still powers off.
    expect(doc.runcmd[0]).toBe("set -e");
    expect(doc.runcmd[1]).toEqual(["systemctl", "enable", "--now", "spuff-idle.timer"]);
  });

  it("without a timer file nothing is enabled; an empty or missing directory renders fine", () => {
    for (const t of [templates({ "spuff-idle": "#!/bin/sh\n" }), templates({}), templates(undefined)]) {
      const ud = renderUserData(minimal(), { templateDir: t });
      expect(schemaCheck(ud).code).toBe(0);
      const doc = parse(ud);
      expect(JSON.stringify(doc.runcmd)).not.toContain("spuff-idle.timer");
      expect(filesOf(doc)["/etc/spuff/idle.conf"]).toBeDefined();
    }
  });

  it("whatever cloud-init/idle/ holds now is rendered", () => {
    const doc = parse(renderUserData(minimal()));
    const hasTimer = doc.write_files.some((f: File) => f.path === "/etc/systemd/system/spuff-idle.timer");
    expect(JSON.stringify(doc.runcmd).includes("spuff-idle.timer")).toBe(hasTimer);
  });
});

describe("validateTemplateArgs", () => {
  function problems(patch: Partial<TemplateArgs>): string[] {
    try {
      validateTemplateArgs({ ...minimal(), ...patch });
      return [];
    } catch (err) {
      expect(err).toBeInstanceOf(UserError);
      expect((err as UserError).message).toBe("cannot render the VM's cloud-init user-data");
      expect((err as UserError).hints.length).toBeGreaterThan(0);
      return (err as UserError).notes;
    }
  }

  it("accepts the default and the maximal config, and the providers' workspace device paths", () => {
    expect(problems({})).toEqual([]);
    expect(
      problems({
        workspace: {
          devices: ["/dev/disk/by-id/scsi-0HC_Volume_102938", "/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol0abc", "/dev/xvdf", "/dev/disk/by-id/virtio-spuff-ws-3f2a9c1d"],
        },
      }),
    ).toEqual([]);
    expect(() => validateTemplateArgs(maximal())).not.toThrow();
  });

  it("lists every problem, each with its field", () => {
    expect(problems({ user: "root", authorizedKeys: [], hostname: "-bad-", packages: ["Bad Pkg"], setup: ["a\nb"] })).toEqual([
      'hostname: "-bad-" is not a valid host name (letters, digits and "-", at most 63)',
      "user: must not be root (spuff logs in as an unprivileged user with sudo)",
      "authorizedKeys: at least one public key is needed to log in",
      'packages[0]: "Bad Pkg" is not a Debian package name',
      "setup[0]: must be one line (use several entries, or a script in your dotfiles)",
    ]);
  });

  const cases: [string, Partial<TemplateArgs>, RegExp][] = [
    ["a system account", { user: "daemon" }, /^user: "daemon" is a system account/],
    ["an invalid user name", { user: "Dev User" }, /^user: "Dev User" is not a valid Linux user name/],
    ["a private key as authorized key", { authorizedKeys: [client.private] }, /^authorizedKeys\[0\]: is a private key/],
    ["garbage as authorized key", { authorizedKeys: ["ssh-ed25519 notbase64!"] }, /^authorizedKeys\[0\]: not an OpenSSH public key/],
    ["a two-line authorized key", { authorizedKeys: [`${client.public}\n${extra.public}`] }, /^authorizedKeys\[0\]: not an OpenSSH public key/],
    ["an RSA host key", { hostKey: { private: host.private, public: "ssh-rsa AAAAB3NzaC1yc2E=" } }, /^hostKey.public: not an ed25519 public key/],
    ["a host key pair that does not match", { hostKey: { private: extra.private, public: host.public } }, /^hostKey: the private and public halves are not one key pair/],
    ["a host private key that is no key", { hostKey: { private: "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n", public: host.public } }, /^hostKey.private: /],
    ["a bad git host name", { gitHosts: [{ host: "git_host;rm", hostKeys: [bare(extra.public)] }] }, /^gitHosts\[0\].host: "git_host;rm" is not a host name/],
    ["an address that is an option", { gitHosts: [{ host: "git.test", address: "-oProxyCommand=x" }] }, /^gitHosts\[0\].address: /],
    ["a port out of range", { gitHosts: [{ host: "git.test", port: 70000 }] }, /^gitHosts\[0\].port: must be 1-65535, got 70000/],
    ["a host listed twice", { gitHosts: [{ host: "git.test" }, { host: "GIT.test", port: 22 }] }, /^gitHosts\[1\]: GIT.test port 22 is listed twice/],
    ["a host key with a comment or newline", { gitHosts: [{ host: "git.test", hostKeys: [`${bare(extra.public)}\ngit.test ssh-rsa AAAA`] }] }, /^gitHosts\[0\].hostKeys\[0\]: expected a public key/],
    ["a bad fingerprint", { gitHosts: [{ host: "git.test", fingerprints: ["MD5:12:34"] }] }, /^gitHosts\[0\].fingerprints\[0\]: expected "SHA256:"/],
    ["a repository that is an option", { repositories: ["--upload-pack=touch /tmp/x"] }, /^repositories\[0\]: .* is not a git repository URL/],
    ["dotfiles with a space", { dotfiles: { repo: "git@github.com:me/dot files.git" } }, /^dotfiles.repo: /],
    ["a zero idle timeout", { idle: { timeoutSeconds: 0, expiresAt: 2_000_000_000, action: "poweroff" } }, /^idle.timeoutSeconds: /],
    ["a fractional expiry", { idle: { timeoutSeconds: 60, expiresAt: 1.5, action: "poweroff" } }, /^idle.expiresAt: /],
    ["no workspace device", { workspace: { devices: [] } }, /^workspace.devices: expected 1 to 8 device paths, got 0/],
    ["a workspace device outside /dev", { workspace: { devices: ["/etc/passwd"] } }, /^workspace.devices\[0\]: "\/etc\/passwd" is not a device path/],
    ["a workspace device path that climbs out", { workspace: { devices: ["/dev/disk/by-id/../../sda"] } }, /^workspace.devices\[0\]: /],
    ["a workspace device with a space", { workspace: { devices: ["/dev/disk/by-id/virtio-a b"] } }, /^workspace.devices\[0\]: /],
    ["a workspace device with a newline", { workspace: { devices: ["/dev/xvdf\n/dev/sda"] } }, /^workspace.devices\[0\]: /],
    ["a workspace device by label", { workspace: { devices: ["/dev/disk/by-label/work"] } }, /^workspace.devices\[0\]: /],
    ["a workspace device that is an option", { workspace: { devices: ["-rf"] } }, /^workspace.devices\[0\]: /],
  ];
  for (const [label, patch, expected] of cases) {
    it(`rejects ${label}`, () => {
      const p = problems(patch);
      expect(p).toHaveLength(1);
      expect(p[0]).toMatch(expected);
    });
  }

  it("renderUserData validates first", () => {
    expect(() => renderUserData({ ...minimal(), user: "root" })).toThrow(UserError);
  });
});

describe("encodeUserData (provider size limits)", () => {
  it("passes small user-data through as text", () => {
    expect(encodeUserData("#cloud-config\n", 16384)).toBe("#cloud-config\n");
  });

  it("gzips user-data over the limit; the result unpacks to the same text", () => {
    const big = `#cloud-config\n${"# filler line that compresses well\n".repeat(1000)}`;
    const gz = encodeUserData(big, 16384);
    expect(Buffer.isBuffer(gz)).toBe(true);
    expect((gz as Buffer).subarray(0, 2)).toEqual(Buffer.from([0x1f, 0x8b])); // what cloud-init looks for
    expect((gz as Buffer).length).toBeLessThanOrEqual(16384);
    expect(gunzipSync(gz as Buffer).toString()).toBe(big);
  });

  it("refuses user-data that is too big even gzipped, with a clear UserError", () => {
    const random = `#cloud-config\n${execFileSync("head", ["-c", "30000", "/dev/urandom"]).toString("base64")}`;
    try {
      encodeUserData(random, 16384);
      expect.unreachable();
    } catch (err) {
      expect(err).toBeInstanceOf(UserError);
      expect((err as UserError).message).toMatch(/^the VM's user-data is 40014 bytes \(\d+ gzipped\), over this provider's limit of 16384 bytes$/);
      expect((err as UserError).hints.join("\n")).toContain("shorten `setup`");
    }
  });

  it("the default user-data (with or without a workspace volume) fits Hetzner's 32 KiB as text and EC2's 16 KiB gzipped; the maximal one at least gzipped", () => {
    for (const min of [renderUserData(minimal()), renderUserData(withWorkspace())]) {
      expect(Buffer.byteLength(min)).toBeLessThan(32768);
      expect(encodeUserData(min, 32768)).toBe(min);
      const gz = encodeUserData(min, 16384);
      expect(Buffer.isBuffer(gz)).toBe(true);
      expect(gunzipSync(gz as Buffer).toString("utf8")).toBe(min);
    }
    expect(() => encodeUserData(renderUserData(maximal()), 16384)).not.toThrow();
  });
});
