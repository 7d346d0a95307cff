import type { Config } from "../config/defaults.js";

/**
 * The provider contract. Core (up, down, ls, reap) talks only to this interface and branches on `features`,
 * never on a provider's name. Concrete providers live in providers/<name>/ and are reached through the registry.
 */
export interface ProviderFeatures {
  /** A poweroff inside the VM ends billing by itself (AWS with terminate-on-shutdown, local QEMU). */
  selfTerminatesOnPoweroff: boolean;
  /** A stopped VM still costs money until it is deleted (Hetzner). The reaper deletes such VMs. */
  billsWhenStopped: boolean;
  /** Largest user-data the provider accepts, in bytes, counted as `userDataBinary` says. */
  maxUserDataBytes: number;
  /**
   * How the provider sends gzip user-data, and so what its limit counts: "base64" (Hetzner's user_data is a JSON
   * string: gzip goes base64, and the limit counts that text) or "bytes" (EC2 base64-encodes every user-data itself and
   * limits the bytes before that; local writes a file). Text user-data counts as its UTF-8 bytes either way.
   */
  userDataBinary: "bytes" | "base64";
  /** `list()` reports hourly prices. */
  prices: boolean;
  /** VMs run on this machine and cost nothing, stopped or not: a stopped VM is kept (for `spuff start`) until its TTL. */
  free: boolean;
  /**
   * Workspace volumes (docs/workspaces.md): the provider implements listVolumes, createVolume, deleteVolume,
   * setVolumeLabels and volumeDevices, attaches `CreateSpec.volume`, and its `destroy` keeps (detaches) every volume.
   */
  volumes: boolean;
  /**
   * Baked images (docs/images.md): the provider implements imageBase, listImages, createImage, deleteImage and
   * setImageLabels, and `create` boots `CreateSpec.image` instead of its configured base image.
   */
  images?: boolean;
}

export interface ProviderInfo {
  name: string;
  /** Short human description, e.g. "QEMU on this machine (tcg)". */
  description: string;
  features: ProviderFeatures;
}

export type VmStatus = "creating" | "running" | "stopping" | "stopped" | "deleting" | "gone" | "unknown";

export interface SshEndpoint {
  host: string;
  port: number;
}

export interface Vm {
  /** The provider's id (server id, instance id, local VM directory name). */
  id: string;
  name: string;
  provider: string;
  status: VmStatus;
  /** Public address for SSH, when known. */
  endpoint?: SshEndpoint;
  location?: string;
  size?: string;
  labels: Record<string, string>;
  createdAt?: string;
  /** Price per hour in EUR/USD as the provider reports it; `null` = unknown, never invented. */
  pricePerHour?: { amount: number; currency: string } | null;
  /**
   * For a stopped VM, when the provider can tell why: "idle" (the idle watcher powered it off), "poweroff" (the guest
   * shut down for another reason), "host-restarted" (its host or hypervisor process ended under it: a reboot, a crash,
   * a killed QEMU; the disk is intact and `start` brings it back).
   */
  stopReason?: StopReason;
  /**
   * Set only by `create`: the VM's host public key ("ssh-ed25519 AAAA…") as the VM itself reported it, before any
   * login, on a channel only spuff reaches (a local VM restored from a saved machine state answers on its identity
   * channel). That key was made on the VM and never travelled in user-data, so core pins it instead of the user-data's
   * key and skips the rotation (docs/adr/0008-host-key-rotation.md).
   */
  ownHostKey?: string;
}

export type StopReason = "idle" | "poweroff" | "host-restarted";

export interface CreateSpec {
  name: string;
  labels: Record<string, string>;
  /** Rendered cloud-init user-data: text, or gzip bytes when the text exceeded the provider's limit. */
  userData: string | Buffer;
  /** The per-VM client public key (OpenSSH one-line format) spuff will log in with. */
  publicKey: string;
  /** A unique id for this create request, stored as label `spuff/request-id`, so a retry never creates twice. */
  requestId: string;
  /** Overrides the provider's configured size (server type, instance type) for this VM. */
  size?: string;
  /** Overrides the provider's configured location (Hetzner location, AWS availability zone) for this VM. */
  location?: string;
  /**
   * The workspace volume to attach (from listVolumes or createVolume). The VM is placed where the volume is (AWS: its
   * availability zone); a `location` (or configured location) elsewhere is a UserError naming both and the fix, thrown
   * before anything is created. Attached at create time where the API allows it, else right after (AWS), automount
   * off; the guest mounts it by the path volumeDevices gives.
   */
  volume?: Volume;
  /** A baked image (from listImages) to boot instead of the configured base image (features.images). */
  image?: Image;
  signal?: AbortSignal;
}

/**
 * A baked image (docs/images.md): a provider image of a VM that ran the image-level part of the config. Found by its
 * labels (`managed-by=spuff`, `spuff/kind=bake`, `spuff/bake=<hash of its inputs>`, `spuff/owner`), never by name.
 */
export interface Image {
  /** The provider's id (Hetzner image id, AMI id). */
  id: string;
  name: string;
  provider: string;
  /** "creating" until the provider can boot it. */
  status: "creating" | "available" | "failed" | "unknown";
  labels: Record<string, string>;
  createdAt?: string;
  /** Stored size in GB as the provider reports it (what it bills); `null` = not reported. */
  sizeGB?: number | null;
  /** Price per month as the provider reports it; `null` = unknown, never invented. */
  pricePerMonth?: { amount: number; currency: string } | null;
}

export interface ImageSpec {
  /** The image's name or description (Hetzner snapshot description, AMI name: unique per account and region). */
  name: string;
  /** Set in the create request itself (image and, where separate, its snapshots): never an unlabelled image. */
  labels: Record<string, string>;
  signal?: AbortSignal;
}

/**
 * A workspace volume (docs/workspaces.md): a disk that outlives the VMs it is attached to. Found by its labels
 * (`managed-by=spuff`, `spuff/kind=workspace`, `spuff/name`, `spuff/owner`), never by its name alone.
 */
export interface Volume {
  /** The provider's id (Hetzner volume id, EBS volume id, local workspace directory name). */
  id: string;
  /** The workspace name: the VM name it belongs to (label `spuff/name`). */
  name: string;
  provider: string;
  sizeGiB: number;
  /** Hetzner location, AWS availability zone, "localhost". */
  location?: string;
  labels: Record<string, string>;
  /** The provider id of the VM it is attached to; absent when detached. */
  attachedTo?: string;
  createdAt?: string;
  /** Price per month as the provider reports it; `null` = unknown, never invented. */
  pricePerMonth?: { amount: number; currency: string } | null;
}

export interface VolumeSpec {
  /** The workspace name (the VM name). */
  name: string;
  sizeGiB: number;
  /** Set at creation, in the same request: a volume never exists without them. Includes `spuff/request-id`. */
  labels: Record<string, string>;
  /** Overrides the configured location (Hetzner location, AWS availability zone). */
  location?: string;
  signal?: AbortSignal;
}

/** What `up` may override on the command line (`--size`, `--location`); each provider maps them to its own terms. */
export interface Placement {
  size?: string;
  location?: string;
}

/** One machine size as the provider sells it, for the create wizard, cost estimates and validation messages. */
export interface CatalogSize {
  name: string;
  description?: string;
  vcpus: number;
  memoryGiB: number;
  diskGiB: number;
  deprecated?: boolean;
  /** Locations where this size can be created now. */
  locations: string[];
  /** Prices per location; empty when the provider has no price source (never invented). */
  prices: { location: string; hourly: number; monthly?: number; currency: string }[];
}

export interface Catalog {
  locations: { name: string; description: string }[];
  sizes: CatalogSize[];
  /** The configured (or built-in) defaults. */
  defaults: Placement;
}

/** Progress reporting from long provider operations (phases shown by the CLI/TUI). */
export interface Progress {
  phase(name: string): void;
  info(message: string): void;
  warn(message: string): void;
}

export interface Provider {
  info(): ProviderInfo;
  /** Cheap checks of config and credentials before anything is created (unknown size, missing token...). */
  validate?(placement: Placement, signal?: AbortSignal): Promise<void>;
  /** Optional: one-line notes `up` prints on stderr before it creates anything (e.g. that VMs will be slow here, and why). */
  notices?(): string[];
  /** Optional: sizes and locations with prices, for the wizard and for messages listing valid choices. */
  catalog?(signal?: AbortSignal): Promise<Catalog>;
  /** Creates the VM; reports each of its steps as a phase (`progress.phase("create server")`). */
  create(spec: CreateSpec, progress: Progress): Promise<Vm>;
  list(signal?: AbortSignal): Promise<Vm[]>;
  get(name: string, signal?: AbortSignal): Promise<Vm | undefined>;
  /**
   * Deletes the VM and everything spuff created for it, except workspace volumes: those are detached and kept (a
   * provider that detaches by deleting the server needs nothing more). Already gone = success.
   */
  destroy(vm: Vm, progress: Progress, signal?: AbortSignal): Promise<void>;
  /** Workspace volumes (features.volumes): every spuff-labelled volume of this provider, attached or not. */
  listVolumes?(signal?: AbortSignal): Promise<Volume[]>;
  /** Creates an empty (unformatted) volume with its labels, in one request; waits until it can be attached. */
  createVolume?(spec: VolumeSpec, progress: Progress): Promise<Volume>;
  /** Deletes a detached volume. Already gone = success; attached to a VM = ProviderError (nothing deleted). */
  deleteVolume?(volume: Volume, progress: Progress, signal?: AbortSignal): Promise<void>;
  /** Replaces the volume's labels with `labels` (all of them): `spuff/attached-at`, `spuff/detached-at`. */
  setVolumeLabels?(volume: Volume, labels: Record<string, string>, signal?: AbortSignal): Promise<void>;
  /**
   * Where the guest finds the attached volume, by its id (e.g. /dev/disk/by-id/scsi-0HC_Volume_<id>); the first path
   * that exists wins. Never a guess such as "the second disk".
   */
  volumeDevices?(volume: Volume): string[];
  /**
   * Optional: boots a stopped VM again with its disk as it was (same disk, same host key). Core offers `spuff start`
   * only where this exists; a provider whose powered-off VMs are gone (terminated) leaves it out.
   */
  start?(vm: Vm, progress: Progress, signal?: AbortSignal): Promise<Vm>;
  /**
   * Optional: the shell command `up` runs on the VM to check that cloud-init is done without errors (exit 0), when
   * `cloud-init status --wait --long` (the default, undefined) is not the check: a local VM restored from a saved
   * machine state ran cloud-init before that state was saved (docs/adr/0009-local-warm-start.md).
   */
  cloudInitCheck?(vm: Vm): string | undefined;
  /** Waits until the provider says the VM runs and has an address. */
  waitReady(vm: Vm, progress: Progress, signal?: AbortSignal): Promise<Vm>;
  sshEndpoint(vm: Vm): SshEndpoint;
  /**
   * Optional: replaces the VM's labels with `labels` (all of them, spuff's and others). `spuff extend` uses it to move
   * `spuff/expires-at`. Providers without it keep the TTL only in local state and on the VM.
   */
  setLabels?(vm: Vm, labels: Record<string, string>, signal?: AbortSignal): Promise<void>;
  /**
   * Optional: deletes spuff-labelled resources that no VM uses any more (SSH keys, security groups, overlays). `busy`
   * names VMs whose `spuff up` is still running: their resources may not have a VM yet and must be left alone.
   */
  reapOrphans?(dryRun: boolean, progress: Progress, busy?: ReadonlySet<string>): Promise<string[]>;
  /**
   * Baked images (features.images): what the configured base image is for this placement, as a stable string that
   * changes when the base does (Hetzner: image name and architecture; AWS: region and AMI id). Part of a bake's hash.
   */
  imageBase?(placement: Placement, signal?: AbortSignal): Promise<string>;
  /** Every spuff-labelled baked image of this provider (`managed-by=spuff`, `spuff/kind=bake`), any status. */
  listImages?(signal?: AbortSignal): Promise<Image[]>;
  /**
   * Stops the VM (cleanly, from the provider's side) and makes an image of its disk with `spec.labels` in that same
   * request; waits until the image is available. The caller deletes the VM afterwards, and on failure or interrupt
   * deletes the VM and every image labelled with its request id.
   */
  createImage?(vm: Vm, spec: ImageSpec, progress: Progress): Promise<Image>;
  /** Deletes a baked image (and its snapshots, where they are separate). Already gone = success. */
  deleteImage?(image: Image, progress: Progress, signal?: AbortSignal): Promise<void>;
  /** Replaces the image's labels with `labels` (all of them): `up` moves `spuff/last-matched`. */
  setImageLabels?(image: Image, labels: Record<string, string>, signal?: AbortSignal): Promise<void>;
  /**
   * Optional: builds the provider's base image locally (`spuff image build`); returns where it is. `warm`: then also
   * save the machine state warm starts restore (docs/adr/0009-local-warm-start.md).
   */
  buildImage?(opts: { force: boolean; mirror?: string; warm?: boolean }, progress: Progress): Promise<string>;
  /** Optional: downloads the provider's official base image, verified against its published checksums; `warm` as above. */
  pullImage?(opts: { force: boolean; url?: string; warm?: boolean }, progress: Progress): Promise<string>;
}

export interface ProviderContext {
  config: Config;
  env: NodeJS.ProcessEnv;
  /** spuff's state directory ($XDG_STATE_HOME/spuff). */
  stateDir: string;
  /** Local cache directory ($XDG_CACHE_HOME/spuff). */
  cacheDir: string;
  verbose: boolean;
}

export type ProviderFactory = (ctx: ProviderContext) => Provider | Promise<Provider>;
