import { UserError } from "./errors.js";
import type { Provider, ProviderContext, ProviderFactory } from "./provider.js";

/**
 * Providers register a loader here (providers/index.ts); the loader imports the provider module only when it is
 * used, so `spuff --help` never loads an SDK. Core looks providers up by the name in config, never imports them.
 */
const loaders = new Map<string, () => Promise<ProviderFactory>>();

export function registerProvider(name: string, load: () => Promise<ProviderFactory>): void {
  loaders.set(name, load);
}

export function providerNames(): string[] {
  return [...loaders.keys()];
}

export async function getProvider(name: string, ctx: ProviderContext): Promise<Provider> {
  const load = loaders.get(name);
  if (!load) {
    throw new UserError(`unknown provider "${name}"`, { hint: `valid providers: ${providerNames().join(", ")}` });
  }
  const factory = await load();
  return factory(ctx);
}
