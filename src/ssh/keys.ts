import ssh2 from "ssh2";

const { utils } = ssh2;

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
    const k = utils.generateKeyPairSync("ed25519", { comment });
    const pub = utils.parseKey(k.public);
    const priv = utils.parseKey(k.private);
    if (!(pub instanceof Error) && !(priv instanceof Error)) return { private: k.private, public: k.public.trim() };
  }
}
