/**
 * `@offpeak/providers/google`: Google's batch protocols. Today the Gemini API
 * (Google AI Studio keys): its batch-mode adapter and its local emulator.
 *
 * @since 0.1.0
 */

export {
  /**
   * The Gemini API batch-mode adapter, on the official `@google/genai`.
   *
   * @since 0.1.0
   */
  GeminiBatch,
  /**
   * The local Gemini API emulator (batch mode, Files API, synchronous calls).
   *
   * @since 0.1.0
   */
  GeminiEmulator,
  /**
   * The CLI plugin of the Gemini API (`--provider gemini`).
   *
   * @since 0.1.0
   */
  plugin as geminiPlugin
} from "./gemini.ts"
