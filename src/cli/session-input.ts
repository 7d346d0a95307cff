import { createReadStream, fstatSync } from "node:fs";

type Input = NodeJS.ReadableStream & { isTTY?: boolean; setRawMode?: (raw: boolean) => unknown };

/**
 * A session's input. Node reads a file on stdin (`spuff ssh vm -- 'tar x' < backup.tar`) 64 KiB at a time, each read
 * a round trip to its thread pool; 1 MiB reads make the transfer ~1.7× faster (docs/performance.md). Pipes and
 * terminals stay as they are: a read from them can block, and a pending read would keep spuff from exiting.
 */
export function sessionInput(stdin: Input): Input {
  if (stdin !== process.stdin) return stdin;
  try {
    if (!fstatSync(0).isFile()) return stdin;
  } catch {
    return stdin;
  }
  return createReadStream("", { fd: 0, highWaterMark: 1 << 20, autoClose: false });
}

/**
 * A file of 8 MiB or more on stdin: `spuff ssh` sends it on a connection of its own rather than through the guard
 * daemon's warm one, whose extra hop costs more throughput than the login it saves (docs/performance.md).
 */
export function largeFileOnStdin(stdin: Input): boolean {
  if (stdin !== process.stdin) return false;
  try {
    const st = fstatSync(0);
    return st.isFile() && st.size >= 8 << 20;
  } catch {
    return false;
  }
}
