/**
 * The one typed input the cloud-init templates are rendered from (see cloud-init/ and docs/cloud-init.md).
 * Validated by `validateTemplateArgs` before rendering.
 */
export interface GitHostInput {
  host: string;
  port?: number;
  /** Where the VM reaches the host if not by its name (e.g. a test git server behind QEMU guestfwd). */
  address?: string;
  /** Pinned "TYPE BASE64" keys. */
  hostKeys?: string[];
  /** "SHA256:..." fingerprints; the VM keyscans and keeps only matching keys. */
  fingerprints?: string[];
}

export interface TemplateArgs {
  /** VM hostname (the spuff VM name). */
  hostname: string;
  /** Login user, never root. */
  user: string;
  /** Public keys for the user's authorized_keys: the per-VM key first, then configured extras. */
  authorizedKeys: string[];
  /** The VM's own ed25519 host key pair, generated locally (the private half exists only in user-data and on the VM). */
  hostKey: { private: string; public: string };
  gitHosts: GitHostInput[];
  packages: string[];
  dotfiles?: { repo: string; install?: string };
  setup: string[];
  repositories: string[];
  /**
   * The workspace volume (docs/workspaces.md): the guest paths of its disk by id, as the provider's volumeDevices
   * gives them (the first that appears wins). It is formatted ext4 on first use and mounted at ~/work, owned by the
   * login user. Absent: ~/work is a plain directory on the VM's own disk. Repositories are cloned into ~/work either way.
   */
  workspace?: { devices: string[] };
  /**
   * Baked images (docs/images.md). "boot": the VM boots a current bake, which already has the packages and
   * image.setup: no package step at all. "bake": this is the VM that bakes one; it gets the cleaning script
   * (/usr/local/lib/spuff/bake-clean) that spuff runs before the image is made.
   */
  baked?: "boot" | "bake";
  idle: {
    /** Seconds without activity before the idle action. */
    timeoutSeconds: number;
    /** Hard TTL, Unix seconds. */
    expiresAt: number;
    /** What the VM does when idle or expired. */
    action: "poweroff";
  };
}
