import { createRequire } from "node:module";
import type * as SSH2 from "ssh2";
import { parseKey } from "./ssh2.js";

// ssh2's key generator from its own file: its index also loads the SSH server and SFTP (see ssh2.ts).
const { generateKeyPairSync } = createRequire(import.meta.url)("ssh2/lib/keygen.js") as Pick<typeof SSH2.utils, "generateKeyPairSync">;

export interface KeyPair {
  /** OpenSSH private key (PEM, unencrypted). */
  private: string;
  /** One line: `ssh-ed25519 AAAA... comment`. */
  public: string;
}

/**
 * A fresh ed25519 key pair in OpenSSH formats. ssh2 1.17's key generator drops leading zero bytes of the key, so
 * about one pair in 256 comes out malformed (neither half parses); such a pair is generated again.
 */
export function ed25519KeyPair(comment = ""): KeyPair {
  for (;;) {
    const k = generateKeyPairSync("ed25519", { comment });
    const pub = parseKey(k.public);
    const priv = parseKey(k.private);
    if (!(pub instanceof Error) && !(priv instanceof Error)) return { private: k.private, public: k.public.trim() };
  }
}
