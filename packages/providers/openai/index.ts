/**
 * `@offpeak/providers/openai`: the OpenAI Batch adapter, its local emulator,
 * and the plugin the `offpeak` CLI loads.
 *
 * @since 0.1.0
 */
import * as ProviderPlugin from "@offpeak/core/ProviderPlugin"
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

/**
 * The CLI plugin: the real API when `OPENAI_API_KEY` is set (with
 * `OPENAI_BASE_URL` for compatible hosts), else the emulator in-process. The
 * emulator's knobs can be set with `OFFPEAK_EMULATOR_KNOBS` (JSON of
 * {@link Emulator.Options}).
 *
 * @since 0.1.0
 * @category plugins
 */
export const plugin: ProviderPlugin.Plugin = ProviderPlugin.make<Emulator.Options>({
  name: "openai",
  label: "OpenAI",
  apiKeyEnv: "OPENAI_API_KEY",
  baseUrlEnv: "OPENAI_BASE_URL",
  defaultBaseUrl: "https://api.openai.com/v1",
  real: () => OpenAiBatch.layerConfig(),
  serve: Emulator.serve,
  knobs: ProviderPlugin.knobNames<Emulator.Options>()({
    seed: true, validationMs: true, linesPerSecond: true, finalizingMs: true, cancellingMs: true,
    completionWindowMs: true, lineFailures: true, shuffle: true, maxLinesPerBatch: true, maxFileBytes: true,
    endpointFaults: true, createSucceedsThenFails: true, createLatencyMs: true, resetDownloads: true,
    notFoundAfterCreateMs: true, failBatches: true, enqueuedTokenLimit: true, lineErrors: true, dropLines: true,
    emptyErrorFileId: true, finishedLog: true
  }),
  adapter: OpenAiBatch.make
})
