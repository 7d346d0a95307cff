import { createPublicKey, type KeyObject, verify } from "node:crypto";

/**
 * The wire formats the guard checks before it lets anything be signed: OpenSSH's `session-bind@openssh.com` agent
 * extension (PROTOCOL.agent §1) and the SSH user-auth request a client asks the agent to sign (RFC 4252 §7), plus
 * verifying an SSH signature blob with an SSH public key blob (RFC 4253 §6.6, RFC 5656, RFC 8332, RFC 8709).
 */

/** Longest session id a bind may carry (ssh-agent.c's AGENT_MAX_SID_LEN). */
export const MAX_SESSION_ID = 128;

/** Reads SSH wire types from a buffer; every read returns undefined when the buffer is too short. */
export class Reader {
  constructor(
    private readonly b: Buffer,
    public off = 0,
  ) {}
  get rest(): number {
    return this.b.length - this.off;
  }
  string(): Buffer | undefined {
    if (this.off + 4 > this.b.length) return undefined;
    const len = this.b.readUInt32BE(this.off);
    if (this.off + 4 + len > this.b.length) return undefined;
    const s = this.b.subarray(this.off + 4, this.off + 4 + len);
    this.off += 4 + len;
    return s;
  }
  uint32(): number | undefined {
    if (this.off + 4 > this.b.length) return undefined;
    const v = this.b.readUInt32BE(this.off);
    this.off += 4;
    return v;
  }
  byte(): number | undefined {
    if (this.off >= this.b.length) return undefined;
    return this.b[this.off++];
  }
}

/** What a client binds its agent connection to: one SSH connection's host key and session id. */
export interface SessionBind {
  hostKey: Buffer;
  sessionId: Buffer;
  signature: Buffer;
  /** The connection forwards the agent onwards (true), or authenticates to this host (false). */
  forwarding: boolean;
}

/** Parses the body of a session-bind extension (after its name). */
export function parseSessionBind(r: Reader): SessionBind | undefined {
  const hostKey = r.string();
  const sessionId = r.string();
  const signature = r.string();
  const fwd = r.byte();
  if (!hostKey || !sessionId || !signature || fwd === undefined || r.rest !== 0) return undefined;
  return { hostKey, sessionId, signature, forwarding: fwd !== 0 };
}

/** An SSH_MSG_USERAUTH_REQUEST as a client asks an agent to sign it. */
export interface UserAuthRequest {
  sessionId: Buffer;
  user: string;
  service: string;
  method: string;
  /** The key the request authenticates with (must be the key asked to sign). */
  key: Buffer;
  /** The server's host key, in OpenSSH's `publickey-hostbound-v00@openssh.com` method. */
  hostKey?: Buffer;
}

/**
 * Parses the data an agent is asked to sign as a public-key user-auth request, as strictly as ssh-agent does
 * (parse_userauth_request): a session id, byte 50, user, service "ssh-connection", method "publickey" or the host-bound
 * variant, TRUE, algorithm, key blob, (the host key), and nothing after. Anything else (git commit signatures, which
 * are SSHSIG blobs) is undefined.
 */
export function parseUserAuth(data: Buffer): UserAuthRequest | undefined {
  const r = new Reader(data);
  const sessionId = r.string();
  if (!sessionId?.length || r.byte() !== 50) return undefined;
  const user = r.string();
  const service = r.string();
  const method = r.string()?.toString();
  const sigFollows = r.byte();
  const alg = r.string();
  const key = r.string();
  if (!user || !service || !method || sigFollows !== 1 || !alg || !key) return undefined;
  if (service.toString() !== "ssh-connection") return undefined;
  let hostKey: Buffer | undefined;
  if (method === "publickey-hostbound-v00@openssh.com") {
    hostKey = r.string();
    if (!hostKey) return undefined;
  } else if (method !== "publickey") return undefined;
  if (r.rest !== 0) return undefined;
  return { sessionId, user: user.toString(), service: service.toString(), method, key, ...(hostKey ? { hostKey } : {}) };
}

/** The key type named at the start of an SSH public key blob. */
export function keyType(blob: Buffer): string | undefined {
  return new Reader(blob).string()?.toString();
}

const b64url = (b: Buffer) => b.toString("base64url");
/** An SSH mpint as the unsigned big-endian bytes JWK wants (no sign byte). */
const unsigned = (b: Buffer) => {
  let i = 0;
  while (i < b.length - 1 && b[i] === 0) i++;
  return b.subarray(i);
};

const CURVES: Record<string, { crv: string; size: number; hash: string }> = {
  nistp256: { crv: "P-256", size: 32, hash: "sha256" },
  nistp384: { crv: "P-384", size: 48, hash: "sha384" },
  nistp521: { crv: "P-521", size: 66, hash: "sha512" },
};

/** An SSH public key blob as a Node key, with the curve of an ECDSA key; undefined for types spuff does not verify. */
function publicKey(blob: Buffer): { type: string; key: KeyObject; curve?: (typeof CURVES)[string] } | undefined {
  const r = new Reader(blob);
  const type = r.string()?.toString();
  try {
    if (type === "ssh-ed25519") {
      const pk = r.string();
      if (pk?.length !== 32 || r.rest !== 0) return undefined;
      return { type, key: createPublicKey({ key: { kty: "OKP", crv: "Ed25519", x: b64url(pk) }, format: "jwk" }) };
    }
    if (type?.startsWith("ecdsa-sha2-")) {
      const name = r.string()?.toString();
      const q = r.string();
      const curve = name ? CURVES[name] : undefined;
      if (!curve || type !== `ecdsa-sha2-${name}` || !q || q[0] !== 4 || q.length !== 1 + 2 * curve.size || r.rest !== 0) return undefined;
      const x = q.subarray(1, 1 + curve.size);
      const y = q.subarray(1 + curve.size);
      return { type, curve, key: createPublicKey({ key: { kty: "EC", crv: curve.crv, x: b64url(x), y: b64url(y) }, format: "jwk" }) };
    }
    if (type === "ssh-rsa") {
      const e = r.string();
      const n = r.string();
      if (!e || !n || r.rest !== 0) return undefined;
      return { type, key: createPublicKey({ key: { kty: "RSA", e: b64url(unsigned(e)), n: b64url(unsigned(n)) }, format: "jwk" }) };
    }
  } catch {
    return undefined; // not a point on the curve, a malformed number, ...
  }
  return undefined;
}

const RSA_HASH: Record<string, string> = { "ssh-rsa": "sha1", "rsa-sha2-256": "sha256", "rsa-sha2-512": "sha512" };

/**
 * Whether `signature` (an SSH signature blob: string algorithm, string signature) is `hostKey`'s signature over `data`.
 * Host key types: ssh-ed25519, ecdsa-sha2-nistp256/384/521, ssh-rsa (with ssh-rsa, rsa-sha2-256 or rsa-sha2-512
 * signatures). Returns a reason instead of throwing for anything else.
 */
export function verifySshSignature(hostKey: Buffer, signature: Buffer, data: Buffer): { ok: true } | { ok: false; reason: string } {
  const pub = publicKey(hostKey);
  if (!pub) return { ok: false, reason: `host key type ${JSON.stringify(keyType(hostKey) ?? "?")} is not one spuff verifies (ed25519, ECDSA, RSA)` };
  const r = new Reader(signature);
  const alg = r.string()?.toString();
  const sig = r.string();
  if (!alg || !sig || r.rest !== 0) return { ok: false, reason: "malformed signature" };
  let ok = false;
  try {
    if (pub.type === "ssh-ed25519") {
      ok = alg === "ssh-ed25519" && sig.length === 64 && verify(null, data, pub.key, sig);
    } else if (pub.curve) {
      const inner = new Reader(sig);
      const rr = inner.string();
      const ss = inner.string();
      const size = pub.curve.size;
      if (alg === pub.type && rr && ss && inner.rest === 0) {
        const ru = unsigned(rr);
        const su = unsigned(ss);
        if (ru.length <= size && su.length <= size) {
          const p1363 = Buffer.alloc(2 * size);
          ru.copy(p1363, size - ru.length);
          su.copy(p1363, 2 * size - su.length);
          ok = verify(pub.curve.hash, data, { key: pub.key, dsaEncoding: "ieee-p1363" }, p1363);
        }
      }
    } else {
      const hash = RSA_HASH[alg];
      ok = hash !== undefined && verify(hash, data, pub.key, sig);
    }
  } catch {
    ok = false;
  }
  return ok ? { ok: true } : { ok: false, reason: `the ${alg} signature does not verify with the host key` };
}
