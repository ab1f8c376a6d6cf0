/**
 * The CLI plugin of `@offpeak/providers/openai`, on its own: the emulator is loaded only when a run uses it (a run on
 * the real API does not load it).
 *
 * @since 0.1.0
 */
import * as ProviderPlugin from "@offpeak/core/ProviderPlugin"
import { Effect } from "effect"
import type * as Emulator from "./emulator/Emulator.ts"
import * as OpenAiBatch from "./OpenAiBatch.ts"

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
  serve: (options) => Effect.flatMap(Effect.promise(() => import("./emulator/Emulator.ts")), (m) => m.serve(options)),
  knobs: ProviderPlugin.knobNames<Emulator.Options>()({
    seed: true, validationMs: true, linesPerSecond: true, finalizingMs: true, cancellingMs: true,
    completionWindowMs: true, lineFailures: true, shuffle: true, maxLinesPerBatch: true, maxFileBytes: true,
    endpointFaults: true, createSucceedsThenFails: true, createLatencyMs: true, resetDownloads: true,
    notFoundAfterCreateMs: true, failBatches: true, enqueuedTokenLimit: true, lineErrors: true, dropLines: true,
    emptyErrorFileId: true, finishedLog: true, uploadBytesPerSecond: true
  }),
  adapter: OpenAiBatch.make
})
