import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts", "test/**/*.test.tsx"],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    // Real sshd, moto and QEMU processes: keep parallelism modest on 2-core CI machines.
    maxWorkers: 2,
    reporters: ["default"],
  },
});
