/**
 * `@offpeak/providers/openai`: the OpenAI Batch adapter, its local emulator,
 * and the plugin the `offpeak` CLI loads.
 *
 * @since 0.1.0
 */
import * as Emulator from "./emulator/Emulator.ts"
import * as OpenAiBatch from "./OpenAiBatch.ts"

export {
  /**
   * The local OpenAI Files + Batch API emulator.
   *
   * @since 0.1.0
   */
  Emulator,
  /**
   * The OpenAI Batch adapter.
   *
   * @since 0.1.0
   */
  OpenAiBatch
}

export {
  /**
   * The CLI plugin (also `@offpeak/providers/openai/plugin`, which does not load the emulator).
   *
   * @since 0.1.0
   * @category plugins
   */
  plugin
} from "./plugin.ts"
