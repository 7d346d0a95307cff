import { createRequire } from "node:module";
import type * as SSH2 from "ssh2";

// ssh2's key generator and parser from their own files: its index also loads the SSH server and SFTP, and its client
// (ssh2.ts) is loaded only when a command connects (`up` loads it while the provider creates the VM).
const require = createRequire(import.meta.url);
const { generateKeyPairSync } = require("ssh2/lib/keygen.js") as Pick<typeof SSH2.utils, "generateKeyPairSync">;
const { parseKey } = require("ssh2/lib/protocol/keyParser.js") as Pick<typeof SSH2.utils, "parseKey">;

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
