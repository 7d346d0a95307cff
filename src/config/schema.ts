import { z } from "zod";
import { providerNames } from "./quick.js";

export { providerNames };

/**
 * The config schema. Every object is strict: an unknown key is an error that names the key and lists the valid ones.
 * All keys are optional in a file; `DEFAULTS` (defaults.ts) fills the rest after the files are merged.
 */

export const DURATION_RE = /^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$/;
const duration = z
  .string()
  .refine((s) => s.length > 0 && DURATION_RE.test(s) && s !== "", {
    message: 'expected a duration such as "30m", "2h", "1h30m" or "1d"',
  });

const sizeRe = /^\d+(?:[KMGT]i?B?|[KMGT])?$/i;
const size = z.union([z.number().int().positive(), z.string().regex(sizeRe, 'expected a size such as "2G" or "2048M"')]);

const hostKeyLine = z
  .string()
  .regex(
    /^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\.com|sk-ecdsa-sha2-nistp256@openssh\.com) [A-Za-z0-9+/=]+$/,
    'expected "TYPE BASE64", e.g. "ssh-ed25519 AAAAC3Nza..."',
  );
const fingerprint = z.string().regex(/^SHA256:[A-Za-z0-9+/]{43}$/, 'expected an OpenSSH fingerprint "SHA256:..." (43 base64 characters)');

export const gitHostSchema = z.strictObject({
  host: z.string().regex(/^[A-Za-z0-9.-]+$/, "expected a host name"),
  port: z.number().int().min(1).max(65535).optional(),
  /** Where the VM reaches this host, when it differs from `host` (an IP address or another name). */
  address: z.string().optional(),
  host_keys: z.array(hostKeyLine).optional(),
  fingerprints: z.array(fingerprint).optional(),
  /** The user git logins there are for (default "git"); the guard signs no other (sign_policy: git-only). */
  user: z.string().regex(/^[A-Za-z0-9._-]+$/, "expected a user name").optional(),
});

export const configSchema = z.strictObject({
  provider: z.enum(providerNames).optional(),
  hetzner: z
    .strictObject({
      token: z.string().min(1).optional(),
      location: z.string().optional(),
      server_type: z.string().optional(),
      image: z.string().optional(),
      ipv4: z.boolean().optional(),
    })
    .optional(),
  aws: z
    .strictObject({
      region: z.string().optional(),
      profile: z.string().optional(),
      instance_type: z.string().optional(),
      ami: z.string().regex(/^ami-[0-9a-f]+$/, 'expected an AMI id "ami-..."').optional(),
      subnet_id: z.string().regex(/^subnet-[0-9a-f]+$/, 'expected a subnet id "subnet-..."').optional(),
      ssh_cidr: z.string().optional(),
      spot: z.boolean().optional(),
      endpoint: z.string().url().optional(),
    })
    .optional(),
  local: z
    .strictObject({
      cpus: z.number().int().positive().optional(),
      memory: size.optional(),
      disk: size.optional(),
      image: z.string().optional(),
      accel: z.enum(["auto", "kvm", "hvf", "tcg"]).optional(),
      /** nat: outbound access through passt, this machine's loopback not reachable; none: no network at all. */
      network: z.enum(["nat", "none"]).optional(),
      /** Restore new VMs from a machine state saved once (docs/adr/0009-local-warm-start.md); false: boot each cold. */
      warm: z.boolean().optional(),
      /** Guest address → host loopback service, e.g. "10.0.2.100:22=127.0.0.1:2222" (a git server on this machine). */
      guest_forwards: z
        .array(z.string().regex(/^10\.0\.2\.\d{1,3}:\d{1,5}=127\.0\.0\.1:\d{1,5}$/, 'expected "10.0.2.X:PORT=127.0.0.1:HOSTPORT"'))
        .optional(),
    })
    .optional(),
  ssh: z
    .strictObject({
      user: z
        .string()
        .regex(/^[a-z_][a-z0-9_-]{0,31}$/, "expected a Linux user name (lower case, starts with a letter)")
        .refine((u) => u !== "root", { message: "must not be root: spuff logs in as an unprivileged user with sudo" })
        .optional(),
      agent_socket: z.string().optional(),
      forward_agent: z.boolean().optional(),
      allowed_keys: z.array(z.string().min(1)).optional(),
      sign_policy: z.enum(["git-only", "any"]).optional(),
      confirm: z.boolean().optional(),
      tmux: z.boolean().optional(),
      /** How long the guard daemon keeps a logged-in connection to a VM after the last `spuff ssh -- COMMAND` ("0m": none). */
      persist: duration.optional(),
      public_keys: z.array(z.string().min(1)).optional(),
    })
    .optional(),
  idle: z
    .strictObject({
      timeout: duration.optional(),
      ttl: duration.optional(),
    })
    .optional(),
  workspace: z
    .strictObject({
      /** Give each VM a workspace volume at ~/work that `down` and idle keep (docs/workspaces.md). */
      volume: z.boolean().optional(),
      size: size.optional(),
      /** How long a kept workspace volume lives after its last detach. */
      keep: duration.optional(),
    })
    .optional(),
  image: z
    .strictObject({
      /**
       * Setup steps whose result is the same for every VM (tools, caches): run once in `spuff image bake`, and at first
       * boot (before `setup`) only when no current bake exists. Nothing per-VM: no keys, tokens or host names.
       */
      setup: z.array(z.string()).optional(),
      /** How long a baked image lives after the last `up` that matched it (the reaper deletes it then). */
      keep: duration.optional(),
    })
    .optional(),
  git_hosts: z.array(gitHostSchema).optional(),
  packages: z.array(z.string().regex(/^[a-z0-9][a-z0-9+.:=~-]*$/, "expected a Debian package name")).optional(),
  dotfiles: z
    .union([
      z.string().min(1),
      z.strictObject({ repo: z.string().min(1), install: z.string().optional() }),
    ])
    .optional(),
  setup: z.array(z.string()).optional(),
  repositories: z.array(z.string().min(1)).optional(),
});

export type ConfigFile = z.infer<typeof configSchema>;
