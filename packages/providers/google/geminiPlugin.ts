/**
 * The Gemini CLI plugin on its own: the emulator is loaded only when a run uses it (a run on the real API does not
 * load it).
 *
 * @since 0.1.0
 */
import * as ProviderPlugin from "@offpeak/core/ProviderPlugin"
import { Effect } from "effect"
import * as GeminiBatch from "./GeminiBatch.ts"
import type * as GeminiEmulator from "./GeminiEmulator.ts"

const base = ProviderPlugin.make<GeminiEmulator.Options>({
  name: "gemini",
  label: "Gemini",
  apiKeyEnv: "GEMINI_API_KEY",
  baseUrlEnv: "GOOGLE_GEMINI_BASE_URL",
  defaultBaseUrl: GeminiBatch.DEFAULT_BASE_URL,
  real: () => GeminiBatch.layerConfig(),
  serve: (options) => Effect.flatMap(Effect.promise(() => import("./GeminiEmulator.ts")), (m) => m.serve(options)),
  knobs: ProviderPlugin.knobNames<GeminiEmulator.Options>()({
    seed: true, pendingMs: true, linesPerSecond: true, cancellingMs: true, completionWindowMs: true,
    lineFailures: true, shuffle: true, maxInlineBytes: true, maxFileBytes: true, notFoundAfterCreateMs: true,
    endpointFaults: true, createSucceedsThenFails: true, createLatency: true, failBatches: true, finishedLog: true
  }),
  adapter: GeminiBatch.make
})

/**
 * The CLI plugin: the real API when `GEMINI_API_KEY` or `GOOGLE_API_KEY` is
 * set (with `GOOGLE_GEMINI_BASE_URL` for another host), else the emulator
 * in-process with its state under the CLI's state folder. The emulator's
 * knobs can be set with `OFFPEAK_EMULATOR_KNOBS` (JSON of
 * {@link GeminiEmulator.Options}).
 *
 * @since 0.1.0
 * @category plugins
 */
export const plugin: ProviderPlugin.Plugin = {
  ...base,
  layer: (options) => {
    const gemini = process.env.GEMINI_API_KEY ?? ""
    const google = process.env.GOOGLE_API_KEY ?? ""
    if (gemini.length === 0 && google.length > 0) {
      options.onNotice(`using the Gemini API at ${process.env.GOOGLE_GEMINI_BASE_URL ?? GeminiBatch.DEFAULT_BASE_URL}`)
      return GeminiBatch.layerConfig()
    }
    return base.layer(options)
  }
}
