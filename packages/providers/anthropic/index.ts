/**
 * `@offpeak/providers/anthropic`: the Anthropic Message Batches adapter, its
 * local emulator, and the plugin the `offpeak` CLI loads.
 *
 * @since 0.1.0
 */
import * as AnthropicBatch from "./AnthropicBatch.ts"
import * as Emulator from "./emulator/Emulator.ts"

export {
  /**
   * The Anthropic Message Batches adapter.
   *
   * @since 0.1.0
   */
  AnthropicBatch,
  /**
   * The local Anthropic Message Batches emulator.
   *
   * @since 0.1.0
   */
  Emulator
}

export {
  /**
   * The CLI plugin (also `@offpeak/providers/anthropic/plugin`, which does not load the emulator).
   *
   * @since 0.1.0
   * @category plugins
   */
  plugin
} from "./plugin.ts"
