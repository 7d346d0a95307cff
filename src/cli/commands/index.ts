import type { Command } from "commander";
import type { App } from "../app.js";
import * as config from "./config.js";
import * as doctor from "./doctor.js";
import * as down from "./down.js";
import * as extend from "./extend.js";
import * as guard from "./guard.js";
import * as image from "./image.js";
import * as ls from "./ls.js";
import * as reap from "./reap.js";
import * as ssh from "./ssh.js";
import * as sshConfig from "./ssh-config.js";
import * as start from "./start.js";
import * as status from "./status.js";
import * as trust from "./trust.js";
import * as up from "./up.js";
import * as workspace from "./workspace.js";

/** Every command, in `--help` order. Each file registers one command (or one group). */
export const commands: ((program: Command, app: App) => void)[] = [
  up.register,
  ssh.register,
  ls.register,
  status.register,
  start.register,
  down.register,
  extend.register,
  workspace.register,
  reap.register,
  config.register,
  trust.register,
  sshConfig.register,
  doctor.register,
  image.register,
  guard.register,
];
