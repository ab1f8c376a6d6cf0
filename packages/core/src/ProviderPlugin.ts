/**
 * How the CLI finds a provider by name without core depending on any
 * provider's SDK: each provider folder of `@offpeak/providers` exports a
 * `plugin`, loaded on demand with a dynamic import.
 *
 * @since 0.1.0
 */
import type { Effect, Layer, Scope } from "effect"
import { Effect as E, Schema } from "effect"
import type * as Provider from "./Provider.ts"

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
export const known: ReadonlyArray<string> = ["openai", "anthropic"]

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
