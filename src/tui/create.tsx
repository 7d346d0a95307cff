import { Box, Text } from "ink";
import { useEffect, useRef, useState } from "react";
import { hostAlias } from "../core/state.js";
import { type ErrorInfo, errorInfo, ProgressModel } from "./model.js";
import { ProgressView } from "./progress.js";
import type { CreateRequest, CreateResult, TuiServices } from "./services.js";
import { Keys, useKeys } from "./widgets.js";

export interface CreateViewProps {
  services: TuiServices;
  request: CreateRequest;
  /** Back to the picker, with what happened. */
  onDone(outcome: { created?: string; failed?: ErrorInfo; cancelled?: boolean }): void;
  /** Open a shell on the new VM. */
  onShell(name: string): void;
  width?: number;
}

/**
 * The wizard's last step: core `up` with live phases. Esc or Ctrl-C while it runs cancels (core rolls back whatever
 * was created); at the end it says how to connect, or which phase failed with the error and its hint.
 */
export function CreateView(props: CreateViewProps) {
  const { services, request } = props;
  const [model] = useState(() => new ProgressModel());
  const [result, setResult] = useState<CreateResult | undefined>();
  const [failure, setFailure] = useState<ErrorInfo | undefined>();
  const [cancelling, setCancelling] = useState(false);
  const ac = useRef(new AbortController());
  const started = useRef(false);

  useEffect(() => {
    if (started.current) return;
    started.current = true;
    services.create(request, model, ac.current.signal).then(setResult, (err) => setFailure(errorInfo(err)));
  }, [services, request, model]);

  const running = !result && !failure;
  useKeys((input, key) => {
    if (running) {
      if (key.escape || (key.ctrl && input === "c")) {
        setCancelling(true);
        ac.current.abort();
      }
      return;
    }
    if (result && key.return) return props.onShell(request.name);
    if (key.escape || input === "q" || key.return || (key.ctrl && input === "c")) {
      props.onDone(result ? { created: request.name } : ac.current.signal.aborted ? { cancelled: true } : { failed: failure });
    }
  });

  const where = [request.provider, request.location, request.size].filter(Boolean).join(", ");
  return (
    <Box flexDirection="column" width={props.width}>
      <ProgressView model={model} title={`Creating ${request.name} (${where})`} failure={failure} />
      {cancelling && running ? <Text color="yellow">cancelling: rolling back what was created…</Text> : null}
      {result ? (
        <Box flexDirection="column" marginTop={1}>
          <Text color="green" bold>
            {request.name} is ready ({result.view.address ?? "no address"}, {result.description})
          </Text>
          <Text>{`  connect:  spuff ssh ${request.name}`}</Text>
          <Text>{`  openssh:  ssh ${hostAlias(request.name)}   (after \`spuff ssh-config --install\`)`}</Text>
          <Text>{`  destroy:  spuff down ${request.name}`}</Text>
          {result.warning ? <Text color="yellow">warning: {result.warning}</Text> : null}
        </Box>
      ) : null}
      <Box marginTop={1}>
        <Keys
          width={props.width ?? 80}
          keys={
            running
              ? [["esc", "cancel and roll back"]]
              : result
                ? [
                    ["enter", "open a shell"],
                    ["esc", "back to the list"],
                  ]
                : [["esc", "back to the list"]]
          }
        />
      </Box>
    </Box>
  );
}
