import { userInfo } from "node:os";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connect, ConnectionDropped, converseOnClient, execOnClient, type VmTarget } from "../../src/ssh/connect.js";
import { ed25519KeyPair } from "../../src/ssh/keys.js";
import { Client } from "../../src/ssh/ssh2.js";
import { type Sshd, startSshd } from "../helpers/sshd.js";

// Commands over one connection, as `up` runs them (the cloud-init wait; the host key rotation talks to its script over
// stdin), against a real OpenSSH sshd on loopback.
describe("commands on a VM's connection: exec and conversation", () => {
  const key = ed25519KeyPair("connect-test");
  let sshd: Sshd;
  let target: VmTarget;
  beforeAll(async () => {
    sshd = await startSshd({ authorizedKeys: [key.public] });
    target = { name: "box", host: sshd.host, port: sshd.port, user: userInfo().username, privateKey: key.private, hostKey: sshd.hostKey };
  });
  afterAll(async () => sshd?.stop());

  const timers = () => process.getActiveResourcesInfo().filter((r) => r === "Timeout").length;

  it("a conversation: each answer is the next line, the input's end lets the command exit with its code", async () => {
    const client = await connect(target);
    try {
      const c = await converseOnClient(client, target, 'read -r a; echo "got $a"; read -r b; echo "then $b" >&2; exit 3');
      c.send("one\n");
      expect(await c.answer()).toBe("got one\n");
      expect(c.exited()).toBeUndefined();
      c.send("two\n");
      expect(await c.close()).toEqual({ code: 3, stdout: "", stderr: "then two\n" });
      // The connection stays usable.
      expect(await execOnClient(client, target, "echo again")).toEqual({ code: 0, stdout: "again\n", stderr: "" });
    } finally {
      client.end();
    }
  });

  it("a connection that closes under a command rejects it as dropped", async () => {
    const client = await connect(target);
    const c = await converseOnClient(client, target, "sleep 30");
    const answer = c.answer();
    client.destroy();
    await expect(answer).rejects.toBeInstanceOf(ConnectionDropped);
  });

  it("on a connection that is not open it rejects at once and leaves no timer behind", async () => {
    const before = timers();
    await expect(execOnClient(new Client(), target, "true", undefined, 60_000)).rejects.toThrow(/Not connected/);
    expect(timers()).toBe(before);
  });
});
