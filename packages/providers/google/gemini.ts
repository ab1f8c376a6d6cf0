/**
 * `@offpeak/providers/gemini`: the Gemini API batch-mode adapter, its local
 * emulator, and the plugin the `offpeak` CLI loads for `--provider gemini`.
 *
 * @since 0.1.0
 */
import * as GeminiBatch from "./GeminiBatch.ts"
import * as GeminiEmulator from "./GeminiEmulator.ts"

export {
  /**
   * The Gemini API batch-mode adapter.
   *
   * @since 0.1.0
   */
  GeminiBatch,
  /**
   * The local Gemini API emulator (batch mode, Files API, synchronous calls).
   *
   * @since 0.1.0
   */
  GeminiEmulator
}

export {
  /**
   * The CLI plugin (also `@offpeak/providers/gemini/plugin`, which does not load the emulator).
   *
   * @since 0.1.0
   * @category plugins
   */
  plugin
} from "./geminiPlugin.ts"
