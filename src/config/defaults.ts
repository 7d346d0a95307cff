import type { ConfigFile } from "./schema.js";

/** Built-in defaults, applied below every file, env var and flag (see docs/config.md for the precedence). */
export const DEFAULTS = {
  provider: "local",
  hetzner: { location: "fsn1", server_type: "cx22", image: "debian-13", ipv4: true },
  aws: { instance_type: "t3.small", ssh_cidr: "0.0.0.0/0", spot: false },
  local: { cpus: 2, memory: "2G", disk: "10G", accel: "auto", image: "debian-13", network: "nat", warm: true },
  ssh: { user: "dev", forward_agent: true, sign_policy: "git-only", confirm: false, tmux: true, persist: "10m" },
  idle: { timeout: "30m", ttl: "24h" },
  workspace: { volume: true, size: "10G", keep: "14d" },
  image: { setup: [], keep: "30d" },
  git_hosts: [],
  packages: [],
  setup: [],
  repositories: [],
} as const satisfies ConfigFile;

type Defaults = typeof DEFAULTS;
type Widen<T> = T extends string ? string : T extends boolean ? boolean : T extends number ? number : T;

/** The effective config: every defaulted key is present. */
export type Config = Omit<ConfigFile, keyof Defaults> & {
  provider: NonNullable<ConfigFile["provider"]>;
  hetzner: NonNullable<ConfigFile["hetzner"]> & { [K in keyof Defaults["hetzner"]]-?: Widen<Defaults["hetzner"][K]> };
  aws: NonNullable<ConfigFile["aws"]> & { [K in keyof Defaults["aws"]]-?: Widen<Defaults["aws"][K]> };
  local: NonNullable<ConfigFile["local"]> & {
    cpus: number;
    memory: string | number;
    disk: string | number;
    accel: "auto" | "kvm" | "hvf" | "tcg";
    image: string;
    network: "nat" | "none";
    warm: boolean;
  };
  ssh: NonNullable<ConfigFile["ssh"]> & {
    user: string;
    forward_agent: boolean;
    sign_policy: "git-only" | "any";
    confirm: boolean;
    tmux: boolean;
    persist: string;
  };
  idle: { timeout: string; ttl: string };
  workspace: { volume: boolean; size: string | number; keep: string };
  image: { setup: string[]; keep: string };
  git_hosts: NonNullable<ConfigFile["git_hosts"]>;
  packages: string[];
  setup: string[];
  repositories: string[];
};
