/**
 * The CLI plugin of `@offpeak/providers/anthropic`, on its own: the emulator is loaded only when a run uses it (a run on
 * the real API does not load it).
 *
 * @since 0.1.0
 */
import * as ProviderPlugin from "@offpeak/core/ProviderPlugin"
import { Effect } from "effect"
import type * as Emulator from "./emulator/Emulator.ts"
import * as AnthropicBatch from "./AnthropicBatch.ts"

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
  serve: (options) => Effect.flatMap(Effect.promise(() => import("./emulator/Emulator.ts")), (m) => m.serve(options)),
  knobs: ProviderPlugin.knobNames<Emulator.Options>()({
    seed: true, linesPerSecond: true, cancellingMs: true, completionWindowMs: true, lineFailures: true,
    endpointFaults: true, notFoundAfterCreateMs: true, createLatencyMs: true, listLagMs: true, shuffle: true,
    maxRequestsPerBatch: true, maxBodyBytes: true, finishedLog: true
  }),
  adapter: AnthropicBatch.make
})
