/**
 * How the CLI finds a provider by name without core depending on any
 * provider's SDK: each provider folder of `@offpeak/providers` exports a
 * `plugin`, loaded on demand with a dynamic import.
 *
 * @since 0.1.0
 */
import type { Duration, Effect, Scope } from "effect"
import { Effect as E, Layer, Redacted, Schema } from "effect"
import * as Provider from "./Provider.ts"
import * as Redact from "./Redact.ts"

/**
 * Options of the local emulator a plugin can start.
 *
 * @since 0.1.0
 * @category models
 */
export interface EmulatorOptions {
  /** where the emulator keeps its files and batches, so it survives restarts */
  readonly dir: string
  readonly port?: number | undefined
  readonly host?: string | undefined
  /** provider-specific knobs (fault rates, delays), as JSON */
  readonly knobs?: Readonly<Record<string, unknown>> | undefined
}

/**
 * A provider as the CLI sees it.
 *
 * @since 0.1.0
 * @category models
 */
export interface Plugin {
  readonly name: string
  /** the environment variable holding the API key */
  readonly apiKeyEnv: string
  /**
   * The provider layer: the real API when `apiKeyEnv` is set, otherwise the
   * local emulator started in-process with its state under `emulatorDir`.
   * `onNotice` receives one line saying which one was chosen.
   */
  readonly layer: (options: {
    readonly emulatorDir: string
    readonly onNotice: (line: string) => void
  }) => Layer.Layer<Provider.Provider, unknown>
  /** starts the emulator until the scope closes; returns its base URL */
  readonly serveEmulator: (options: EmulatorOptions) => Effect.Effect<{ readonly url: string }, unknown, Scope.Scope>
}

/**
 * No provider of that name.
 *
 * @since 0.1.0
 * @category errors
 */
export class UnknownProvider extends Schema.TaggedError<UnknownProvider>()("UnknownProvider", {
  name: Schema.String,
  message: Schema.String
}) {}

/**
 * Providers this build knows.
 *
 * @since 0.1.0
 * @category constants
 */
export const known: ReadonlyArray<string> = ["openai", "anthropic", "gemini"]

/**
 * Loads the plugin of provider `name` from `@offpeak/providers/<name>`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const load = (name: string): Effect.Effect<Plugin, UnknownProvider> =>
  known.includes(name)
    ? E.tryPromise({
      try: async () => (await import(`@offpeak/providers/${name}`)).plugin as Plugin,
      catch: (cause) =>
        new UnknownProvider({
          name,
          message: `cannot load @offpeak/providers/${name}: ${cause instanceof Error ? cause.message : String(cause)}`
        })
    })
    : E.fail(new UnknownProvider({ name, message: `unknown provider "${name}" (known: ${known.join(", ")})` }))

/**
 * The knobs of an emulator started in-process, from `OFFPEAK_EMULATOR_KNOBS` (JSON).
 *
 * @since 0.1.0
 * @category utilities
 */
export const knobsFromEnv = (): Readonly<Record<string, unknown>> => {
  const raw = process.env.OFFPEAK_EMULATOR_KNOBS
  if (raw === undefined || raw.length === 0) return {}
  try {
    return JSON.parse(raw) as Record<string, unknown>
  } catch {
    throw new Error("OFFPEAK_EMULATOR_KNOBS is not valid JSON")
  }
}

/**
 * A plugin for a provider with an API key and a local emulator: the real API
 * when `apiKeyEnv` is set (`baseUrlEnv` for other hosts), else the emulator
 * started in-process with the knobs of `OFFPEAK_EMULATOR_KNOBS`, saying which
 * in one notice line.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = <Knobs>(options: {
  readonly name: string
  /** the provider's name in notices, e.g. `OpenAI` */
  readonly label: string
  readonly apiKeyEnv: string
  readonly baseUrlEnv: string
  readonly defaultBaseUrl: string
  /** the adapter configured from the environment */
  readonly real: () => Layer.Layer<Provider.Provider, unknown>
  /** starts the emulator until the scope closes */
  readonly serve: (
    options: Knobs & { readonly dir: string; readonly port?: number | undefined; readonly host?: string | undefined }
  ) => Effect.Effect<{ readonly url: string; readonly dir: string }, unknown, Scope.Scope>
  /** the adapter on an emulator at `baseURL` */
  readonly adapter: (options: {
    readonly apiKey: Redacted.Redacted<string>
    readonly baseURL: string
    readonly pollInterval: { readonly initial: Duration.Input; readonly max: Duration.Input }
  }) => Effect.Effect<Provider.Service>
}): Plugin => ({
  name: options.name,
  apiKeyEnv: options.apiKeyEnv,
  layer: ({ emulatorDir, onNotice }) => {
    const key = process.env[options.apiKeyEnv]
    // the key, and a password in the base URL, are masked in everything offpeak prints or stores
    Redact.register(key)
    Redact.registerUrl(process.env[options.baseUrlEnv])
    if (key !== undefined && key.length > 0) {
      const baseUrl = process.env[options.baseUrlEnv] ?? options.defaultBaseUrl
      if (/^[a-z][a-z0-9+.-]*:\/\/[^/\s]*@/i.test(baseUrl)) {
        // fetch refuses such URLs outright, which every SDK reports as a connection error, retried for hours
        return Layer.effect(
          Provider.Provider,
          E.fail(
            new Error(
              `${options.baseUrlEnv} (${Redact.url(baseUrl)}) holds credentials, which HTTP clients cannot send in a URL: ` +
                `remove them, and put the API key in ${options.apiKeyEnv}`
            )
          )
        )
      }
      onNotice(`using the ${options.label} API at ${Redact.url(baseUrl)}`)
      return options.real()
    }
    return Layer.effect(
      Provider.Provider,
      E.gen(function*() {
        const handle = yield* options.serve({ ...(knobsFromEnv() as Knobs), dir: emulatorDir })
        onNotice(
          `no ${options.apiKeyEnv}: running against the local ${options.label} emulator at ${handle.url} (state in ${handle.dir})`
        )
        return yield* options.adapter({
          apiKey: Redacted.make("emulator"),
          baseURL: handle.url,
          pollInterval: { initial: "100 millis", max: "1 second" }
        })
      })
    )
  },
  serveEmulator: (serve) =>
    options.serve({ ...(serve.knobs as Knobs), dir: serve.dir, port: serve.port, host: serve.host })
})
