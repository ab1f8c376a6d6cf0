/**
 * `@offpeak/providers/anthropic`: the Anthropic Message Batches adapter, its
 * local emulator, and the plugin the `offpeak` CLI loads.
 *
 * @since 0.1.0
 */
import * as ProviderPlugin from "@offpeak/core/ProviderPlugin"
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

/**
 * The CLI plugin: the real API when `ANTHROPIC_API_KEY` is set (with
 * `ANTHROPIC_BASE_URL` for other hosts), else the emulator in-process. The
 * emulator's knobs can be set with `OFFPEAK_EMULATOR_KNOBS` (JSON of
 * {@link Emulator.Options}).
 *
 * @since 0.1.0
 * @category plugins
 */
export const plugin: ProviderPlugin.Plugin = ProviderPlugin.make<Emulator.Options>({
  name: "anthropic",
  label: "Anthropic",
  apiKeyEnv: "ANTHROPIC_API_KEY",
  baseUrlEnv: "ANTHROPIC_BASE_URL",
  defaultBaseUrl: "https://api.anthropic.com",
  real: () => AnthropicBatch.layerConfig(),
  serve: Emulator.serve,
  knobs: ProviderPlugin.knobNames<Emulator.Options>()({
    seed: true, linesPerSecond: true, cancellingMs: true, completionWindowMs: true, lineFailures: true,
    endpointFaults: true, notFoundAfterCreateMs: true, createLatencyMs: true, listLagMs: true, shuffle: true,
    maxRequestsPerBatch: true, maxBodyBytes: true, finishedLog: true
  }),
  adapter: AnthropicBatch.make
})
