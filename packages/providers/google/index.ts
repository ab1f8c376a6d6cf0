/**
 * `@offpeak/providers/google`: Google's batch protocols: the Gemini API
 * (Google AI Studio keys) and Vertex AI batch prediction, each with its
 * adapter and its local emulator.
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

export {
  /**
   * The Vertex AI batch prediction adapter, on the official `@google/genai` in Vertex mode.
   *
   * @since 0.1.0
   */
  VertexBatch,
  /**
   * The local Vertex AI batch prediction emulator.
   *
   * @since 0.1.0
   */
  VertexEmulator,
  /**
   * The CLI plugin of Vertex AI (`--provider vertex`).
   *
   * @since 0.1.0
   */
  plugin as vertexPlugin
} from "./vertex.ts"
