import { useState } from "react";
import { CreateView } from "./create.js";
import type { WorkspaceView } from "../core/workspace.js";
import { type Flash, Picker } from "./picker.js";
import type { CreateRequest, TuiServices } from "./services.js";
import { KeyRoot, useTerminalSize } from "./widgets.js";
import { Wizard } from "./wizard.js";

/** Why the TUI unmounts: to quit, or to hand the terminal to a shell on a VM. */
export type TuiExit = { kind: "quit" } | { kind: "shell"; name: string };

type Screen = { kind: "picker"; flash?: Flash } | { kind: "wizard"; workspace?: WorkspaceView } | { kind: "create"; request: CreateRequest };

/** The whole app: the picker, the create wizard and the create progress. */
export function Root(props: Parameters<typeof Screens>[0]) {
  return (
    <KeyRoot>
      <Screens {...props} />
    </KeyRoot>
  );
}

function Screens(props: { services: TuiServices; flash?: Flash; onExit(exit: TuiExit): void; refreshMs?: number; width?: number; height?: number }) {
  const [screen, setScreen] = useState<Screen>({ kind: "picker", flash: props.flash });
  const size = useTerminalSize(props.width, props.height);
  if (screen.kind === "wizard") {
    return (
      <Wizard
        services={props.services}
        workspace={screen.workspace}
        width={size.width}
        height={size.height}
        onCancel={() => setScreen({ kind: "picker" })}
        onCreate={(request) => setScreen({ kind: "create", request })}
      />
    );
  }
  if (screen.kind === "create") {
    return (
      <CreateView
        services={props.services}
        request={screen.request}
        width={size.width}
        onShell={(name) => props.onExit({ kind: "shell", name })}
        onDone={(o) =>
          setScreen({
            kind: "picker",
            flash: o.created
              ? { level: "info", text: `created ${o.created}: enter opens a shell` }
              : o.cancelled
                ? { level: "info", text: "create cancelled and rolled back" }
                : o.failed
                  ? { level: "error", text: o.failed.message, error: o.failed }
                  : undefined,
          })
        }
      />
    );
  }
  return (
    <Picker
      services={props.services}
      flash={screen.flash}
      refreshMs={props.refreshMs}
      width={size.width}
      height={size.height}
      onAction={(a) => {
        if (a.kind === "quit") props.onExit({ kind: "quit" });
        else if (a.kind === "shell") props.onExit({ kind: "shell", name: a.vm.name });
        else if (a.kind === "up") setScreen({ kind: "wizard", workspace: a.workspace });
        else setScreen({ kind: "wizard" });
      }}
    />
  );
}
