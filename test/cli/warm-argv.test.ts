import { describe, expect, it } from "vitest";
import { warmArgv } from "../../src/cli/warm-ssh.js";

// Which command lines bin.ts sends to the warm connection before loading the CLI; everything else goes to commander.
describe("warmArgv", () => {
  it("takes `[--config FILE] ssh [NAME] -- COMMAND…` and joins the command's words as OpenSSH does", () => {
    expect(warmArgv(["ssh", "api", "--", "make", "test"])).toEqual({ vm: "api", command: "make test" });
    expect(warmArgv(["ssh", "--", "true"])).toEqual({ command: "true" });
    expect(warmArgv(["--config", "/x.yaml", "ssh", "api", "--", "ls", "-l"])).toEqual({ vm: "api", configFile: "/x.yaml", command: "ls -l" });
    expect(warmArgv(["--config=/x.yaml", "ssh", "api", "--", "--help"])).toEqual({ vm: "api", configFile: "/x.yaml", command: "--help" });
  });

  it("leaves every other command line to the CLI: options, no command, other commands, a VM named ssh", () => {
    for (const argv of [
      ["ssh", "api", "--no-agent", "--", "true"],
      ["ssh", "api", "-t", "--", "htop"],
      ["ssh", "api", "--direct", "--", "true"],
      ["ssh", "api", "-L", "8080:localhost:80", "--", "true"],
      ["ssh", "api", "--"],
      ["ssh", "api"],
      ["--json", "ssh", "api", "--", "true"],
      ["guard", "ensure", "ssh"],
      ["up", "ssh", "--", "x"],
      ["ssh-config", "--", "x"],
    ]) {
      expect(warmArgv(argv), argv.join(" ")).toBeUndefined();
    }
  });
});
