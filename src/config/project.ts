/**
 * Which keys a project's `spuff.yaml` may set (docs/adr/0006-project-config-trust.md). A project file comes with a
 * repository, so it may describe the workload (sizes, packages, setup, repositories, idle times) but never who may log
 * in, where the forwarded agent may sign, whose account or which image or endpoint is used, how the VM is reached, or
 * anything on this machine. Those keys are refused even in a trusted project file. Every leaf key of the schema is
 * listed here (test/config/trust.test.ts checks it): `true` means allowed, a string is the reason it is refused.
 */
export const PROJECT_KEYS: Record<string, true | string> = {
  provider: true,
  "hetzner.token": "a credential: it decides whose account the VM is created in",
  "hetzner.location": true,
  "hetzner.server_type": true,
  "hetzner.image": "the image decides what runs on the VM before your agent reaches it",
  "hetzner.ipv4": true,
  "aws.region": true,
  "aws.profile": "a credential: it decides whose account the VM is created in",
  "aws.instance_type": true,
  "aws.ami": "the image decides what runs on the VM before your agent reaches it",
  "aws.subnet_id": "network placement decides who can reach the VM",
  "aws.ssh_cidr": "it decides who can reach the VM's SSH port",
  "aws.spot": true,
  "aws.endpoint": "an API endpoint decides who creates the VM and answers for it",
  "local.cpus": true,
  "local.memory": true,
  "local.disk": true,
  "local.image": "a path on this machine, and the image decides what runs on the VM before your agent reaches it",
  "local.accel": true,
  "local.network": "it decides what the VM can reach",
  "local.warm": true,
  "local.guest_forwards": "it makes services of this machine reachable from the VM",
  "ssh.user": "ssh settings decide who logs in to the VM and what your forwarded agent may do",
  "ssh.agent_socket": "a socket on this machine: it decides which agent is forwarded",
  "ssh.forward_agent": "ssh settings decide who logs in to the VM and what your forwarded agent may do",
  "ssh.allowed_keys": "it decides which of your keys the VM may use",
  "ssh.sign_policy": "it decides what your forwarded agent may sign",
  "ssh.confirm": "it decides whether you are asked before each signature",
  "ssh.tmux": "ssh settings decide who logs in to the VM and what your forwarded agent may do",
  "ssh.persist": "it decides how long a logged-in connection to the VM stays open on this machine",
  "ssh.public_keys": "it decides who may log in to the VM, where your forwarded agent arrives",
  "idle.timeout": true,
  "idle.ttl": true,
  "workspace.volume": true,
  "workspace.size": true,
  "workspace.keep": "it decides when your kept work is deleted",
  "image.setup": true,
  "image.keep": "it decides when your baked images are deleted",
  git_hosts: "pinned git host keys decide which servers your agent signs logins for",
  packages: true,
  dotfiles: "your dotfiles are yours: they are cloned with your agent and their install script runs while it is forwarded",
  setup: true,
  repositories: true,
};

/** The PROJECT_KEYS entry for a path such as ["hetzner", "token"] or ["git_hosts", 0, "host"]: its nearest listed prefix. */
export function projectRule(path: (string | number)[]): { key: string; rule: true | string } {
  const names = path.filter((p): p is string => typeof p === "string");
  for (let n = names.length; n > 0; n--) {
    const key = names.slice(0, n).join(".");
    const rule = PROJECT_KEYS[key];
    if (rule !== undefined) return { key, rule };
  }
  const key = names.join(".");
  return { key, rule: "it is not on the list of keys a project file may set" };
}

export function allowedProjectKeys(): string[] {
  return Object.entries(PROJECT_KEYS)
    .filter(([, r]) => r === true)
    .map(([k]) => k);
}
