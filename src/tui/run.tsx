import { render, useApp } from "ink";
import type { App } from "../cli/app.js";
import { errorInfo } from "./model.js";
import type { Flash } from "./picker.js";
import { Root, type TuiExit } from "./root.js";
import { TuiServices } from "./services.js";
import { openShell } from "./shell.js";

const ALT_SCREEN_ON = "\u001b[?1049h\u001b[H";
const ALT_SCREEN_OFF = "\u001b[?1049l";

function Mounted(props: { services: TuiServices; flash?: Flash; onExit(e: TuiExit): void }) {
  const { exit } = useApp();
  return (
    <Root
      services={props.services}
      flash={props.flash}
      onExit={(e) => {
        props.onExit(e);
        exit();
      }}
    />
  );
}

/**
 * `spuff` in a terminal: the picker on the alternate screen. Opening a shell unmounts Ink and hands the terminal to
 * the SSH session (on the normal screen, like `spuff ssh`); when the shell exits, the picker comes back.
 */
export async function runTui(app: App): Promise<number> {
  const services = new TuiServices(app);
  const stdout = app.io.stdout as NodeJS.WriteStream;
  let flash: Flash | undefined;
  for (;;) {
    let exit = { kind: "quit" } as TuiExit;
    stdout.write(ALT_SCREEN_ON);
    try {
      const instance = render(<Mounted services={services} flash={flash} onExit={(e) => (exit = e)} />, {
        stdout,
        stdin: app.io.stdin as NodeJS.ReadStream,
        stderr: app.io.stderr as NodeJS.WriteStream,
        exitOnCtrlC: false,
        patchConsole: false,
      });
      await instance.waitUntilExit();
      instance.cleanup();
    } finally {
      stdout.write(ALT_SCREEN_OFF);
    }
    if (exit.kind === "quit") return 0;
    flash = await shell(app, exit.name);
  }
}

async function shell(app: App, name: string): Promise<Flash> {
  app.info(`spuff: connecting to ${name}; the picker comes back when the shell exits`);
  try {
    const code = await openShell(app, name);
    return { level: code === 0 ? "info" : "error", text: `shell on ${name} ended${code === 0 ? "" : ` (exit ${code})`}` };
  } catch (err) {
    const error = errorInfo(err);
    return { level: "error", text: error.message, error };
  }
}
