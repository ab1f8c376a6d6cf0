/**
 * `@offpeak/providers/anthropic`: the Anthropic Message Batches adapter, its
 * local emulator, and the plugin the `offpeak` CLI loads.
 *
 * @since 0.1.0
 */
import * as Provider from "@offpeak/core/Provider"
import type * as ProviderPlugin from "@offpeak/core/ProviderPlugin"
import { Effect, Layer, Redacted } from "effect"
import * as AnthropicBatch from "./AnthropicBatch.ts"
import * as Emulator from "./Emulator.ts"

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

const knobsFromEnv = (): Emulator.Options => {
  const raw = process.env.OFFPEAK_EMULATOR_KNOBS
  if (raw === undefined || raw.length === 0) return {}
  try {
    return JSON.parse(raw) as Emulator.Options
  } catch {
    throw new Error("OFFPEAK_EMULATOR_KNOBS is not valid JSON")
  }
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
export const plugin: ProviderPlugin.Plugin = {
  name: "anthropic",
  apiKeyEnv: "ANTHROPIC_API_KEY",
  layer: ({ emulatorDir, onNotice }) => {
    const key = process.env.ANTHROPIC_API_KEY
    if (key !== undefined && key.length > 0) {
      onNotice(`using the Anthropic API at ${process.env.ANTHROPIC_BASE_URL ?? "https://api.anthropic.com"}`)
      return AnthropicBatch.layerConfig()
    }
    return Layer.effect(
      Provider.Provider,
      Effect.gen(function*() {
        const handle = yield* Emulator.serve({ ...knobsFromEnv(), dir: emulatorDir })
        onNotice(
          `no ANTHROPIC_API_KEY: running against the local Anthropic emulator at ${handle.url} (state in ${handle.dir})`
        )
        return yield* AnthropicBatch.make({
          apiKey: Redacted.make("emulator"),
          baseURL: handle.url,
          pollInterval: { initial: "100 millis", max: "1 second" }
        })
      })
    )
  },
  serveEmulator: (options) =>
    Emulator.serve({
      ...(options.knobs as Emulator.Options | undefined),
      dir: options.dir,
      port: options.port,
      host: options.host
    })
}
