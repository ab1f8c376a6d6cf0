/**
 * How the CLI finds a provider by name without core depending on any
 * provider's SDK: each provider folder of `@offpeak/providers` exports a
 * `plugin`, loaded on demand with a dynamic import.
 *
 * @since 0.1.0
 */
import type { Duration, Effect, Scope } from "effect"
import { Effect as E, Layer, Redacted, Result, Schema } from "effect"
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
export const known: ReadonlyArray<string> = ["openai", "anthropic", "gemini", "vertex"]

/**
 * Loads the plugin of provider `name` from `@offpeak/providers/<name>/plugin` (the plugin alone: its emulator is
 * loaded only when a run uses it).
 *
 * @since 0.1.0
 * @category constructors
 */
export const load = (name: string): Effect.Effect<Plugin, UnknownProvider> =>
  known.includes(name)
    ? E.tryPromise({
      try: async () => (await import(`@offpeak/providers/${name}/plugin`)).plugin as Plugin,
      catch: (cause) =>
        new UnknownProvider({
          name,
          message: `cannot load @offpeak/providers/${name}: ${cause instanceof Error ? cause.message : String(cause)}`
        })
    })
    : E.fail(new UnknownProvider({ name, message: `unknown provider "${name}" (known: ${known.join(", ")})` }))

/**
 * Emulator knobs that cannot be used: not JSON, not an object, or a knob the emulator does not have.
 *
 * @since 0.1.0
 * @category errors
 */
export class BadKnobs extends Schema.TaggedError<BadKnobs>()("BadKnobs", {
  message: Schema.String
}) {}

/** edit distance of two short words (for "did you mean") */
const distance = (a: string, b: string): number => {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i)
  for (let i = 1; i <= a.length; i++) {
    let diagonal = row[0]!
    row[0] = i
    for (let j = 1; j <= b.length; j++) {
      const above = row[j]!
      row[j] = Math.min(row[j]! + 1, row[j - 1]! + 1, diagonal + (a[i - 1]!.toLowerCase() === b[j - 1]!.toLowerCase() ? 0 : 1))
      diagonal = above
    }
  }
  return row[b.length]!
}

/**
 * Parses emulator knobs given as JSON (`from` names where they came from in messages): an object, and when `known`
 * lists the emulator's knobs, only those — a misspelt knob is refused naming the closest one, never silently ignored.
 *
 * @example
 * ```ts
 * ProviderPlugin.parseKnobs('{"lineFailure":[]}', { from: "--knobs", known: ["lineFailures", "seed"] })
 * // Result.fail(BadKnobs: --knobs: unknown knob "lineFailure" (did you mean "lineFailures"?) …)
 * ```
 *
 * @since 0.1.0
 * @category utilities
 */
export const parseKnobs = (
  raw: string,
  options: { readonly from: string; readonly known?: ReadonlyArray<string> | undefined; readonly emulator?: string | undefined }
): Result.Result<Readonly<Record<string, unknown>>, BadKnobs> => {
  if (raw.trim().length === 0) return Result.succeed({})
  let parsed: unknown
  try {
    parsed = JSON.parse(raw)
  } catch (e) {
    const shown = raw.length > 120 ? `${raw.slice(0, 120)}…` : raw
    return Result.fail(
      new BadKnobs({
        message: `${options.from} is not valid JSON (${e instanceof Error ? e.message : String(e)}): ${shown}; ` +
          `expected an object such as '{"lineFailures":[{"status":500,"rate":0.05}]}'`
      })
    )
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
    return Result.fail(new BadKnobs({ message: `${options.from} must be a JSON object of knobs, got ${JSON.stringify(parsed)}` }))
  }
  const known = options.known
  if (known !== undefined) {
    const unknown = Object.keys(parsed).filter((k) => !known.includes(k))
    if (unknown.length > 0) {
      const said = unknown.map((k) => {
        const closest = [...known].sort((a, b) => distance(k, a) - distance(k, b))[0]
        return closest !== undefined && distance(k, closest) <= Math.max(2, Math.floor(k.length / 3))
          ? `"${k}" (did you mean "${closest}"?)`
          : `"${k}"`
      })
      return Result.fail(
        new BadKnobs({
          message: `${options.from}: unknown knob${unknown.length > 1 ? "s" : ""} ${said.join(", ")}; ` +
            `the ${options.emulator ?? "emulator"}'s knobs are ${[...known].sort().join(", ")}`
        })
      )
    }
  }
  return Result.succeed(parsed as Record<string, unknown>)
}

/**
 * The knob names of an emulator's `Options`, for `make({ knobs })`: the record must name every option but `dir` (the
 * type checker says which is missing or unknown), so the list cannot drift from the emulator.
 *
 * @example
 * ```ts
 * knobs: ProviderPlugin.knobNames<Emulator.Options>()({ seed: true, linesPerSecond: true, lineFailures: true })
 * ```
 *
 * @since 0.1.0
 * @category utilities
 */
export const knobNames = <Options>() =>
<const K extends { readonly [k in Exclude<keyof Options, "dir">]-?: true }>(
  names: K & { readonly [k in Exclude<keyof K, keyof Options>]: never }
): ReadonlyArray<string> => Object.keys(names)

/**
 * The knobs of an emulator started in-process, from `OFFPEAK_EMULATOR_KNOBS` (JSON); throws {@link BadKnobs} when
 * they are not a JSON object or (with `known`) name a knob the emulator does not have.
 *
 * @since 0.1.0
 * @category utilities
 */
export const knobsFromEnv = (known?: ReadonlyArray<string>): Readonly<Record<string, unknown>> => {
  const parsed = parseKnobs(process.env.OFFPEAK_EMULATOR_KNOBS ?? "", { from: "OFFPEAK_EMULATOR_KNOBS", known })
  if (Result.isFailure(parsed)) throw parsed.failure
  return parsed.success
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
  /**
   * The names of the emulator's knobs: `OFFPEAK_EMULATOR_KNOBS` and `offpeak emulator --knobs` naming any other are
   * refused (a misspelt knob is not silently ignored)
   */
  readonly knobs?: ReadonlyArray<string> | undefined
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
      // a compatible host is an endpoint of its own: its answers are not the provider's, nor the other way round
      const endpoint = baseUrl === options.defaultBaseUrl ? undefined : baseUrl
      return endpoint === undefined ? options.real() : Layer.effect(
        Provider.Provider,
        E.gen(function*() {
          const service = yield* Provider.Provider
          return { ...service, endpoint } satisfies Provider.Service
        })
      ).pipe(Layer.provide(options.real()))
    }
    return Layer.effect(
      Provider.Provider,
      E.gen(function*() {
        const knobs = yield* E.fromResult(
          parseKnobs(process.env.OFFPEAK_EMULATOR_KNOBS ?? "", {
            from: "OFFPEAK_EMULATOR_KNOBS",
            known: options.knobs,
            emulator: `${options.label} emulator`
          })
        )
        const handle = yield* options.serve({ ...(knobs as Knobs), dir: emulatorDir })
        onNotice(
          `no ${options.apiKeyEnv}: running against the local ${options.label} emulator at ${handle.url} (state in ${handle.dir})`
        )
        const service = yield* options.adapter({
          apiKey: Redacted.make("emulator"),
          baseURL: handle.url,
          pollInterval: { initial: "100 millis", max: "1 second" }
        })
        // the emulator's answers are made up: kept apart from the real API's in the result cache
        return { ...service, endpoint: "emulator" } satisfies Provider.Service
      })
    )
  },
  serveEmulator: (serve) =>
    E.gen(function*() {
      if (options.knobs !== undefined && serve.knobs !== undefined) {
        // knobs parsed elsewhere (`--knobs`) are checked against the emulator's names as well
        yield* E.fromResult(parseKnobs(JSON.stringify(serve.knobs), { from: "--knobs", known: options.knobs, emulator: `${options.label} emulator` }))
      }
      return yield* options.serve({ ...(serve.knobs as Knobs), dir: serve.dir, port: serve.port, host: serve.host })
    })
})
