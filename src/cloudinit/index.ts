export {
  BAKE_CLEAN,
  DEFAULT_PACKAGES,
  encodeUserData,
  MOUNT_WORKSPACE,
  type RenderOptions,
  renderUserData,
  ROTATE_HOST_KEY,
  SSHD_DROP_IN,
  sshConfigFor,
  templateArgsFromConfig,
  trustWarnings,
  validateTemplateArgs,
} from "./render.js";
export { templateDir } from "./template-dir.js";
export type { GitHostInput, TemplateArgs } from "./types.js";
