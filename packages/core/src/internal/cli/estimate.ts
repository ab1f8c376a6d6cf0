/**
 * `estimate`: what a run of a pipeline would send and cost, before anything is sent (see `Estimate`); and what
 * `run --dry-run` and `run --sample` share with it: the provider's adapter and the ledger, when there is one, opened
 * for reading.
 *
 * @internal
 */
import { Console, Effect, Layer, Option } from "effect"
import { Argument, Command, Flag } from "effect/cli"
import * as fs from "node:fs"
import * as path from "node:path"
import * as Estimate from "../../Estimate.ts"
import * as Ledger from "../../Ledger.ts"
import type * as Pipeline from "../../Pipeline.ts"
import * as Provider from "../../Provider.ts"
import * as ProviderPlugin from "../../ProviderPlugin.ts"
import * as Redact from "../../Redact.ts"
import type * as Run from "../../Run.ts"
import { failure, jsonFlag, ledgerLayer, loadPipeline, stateDirFlag, stateFlag, usage } from "./shared.ts"

/**
 * The ledger to read, when one exists: a SQLite file that is not there yet is not created (an estimate or a dry run
 * creates no ledger and no run), and it would hold no cache nor sample anyway.
 */
export const existingLedger = (stateDir: string, state: string | undefined): Layer.Layer<never> | Layer.Layer<Ledger.Ledger, unknown> => {
  const isPg = state !== undefined && /^postgres(ql)?:\/\//.test(state)
  const file = isPg ? undefined : path.resolve(state ?? path.join(stateDir, "state.db"))
  return file !== undefined && !fs.existsSync(file) ? Layer.empty : ledgerLayer(stateDir, state)
}

/** the provider's layer through its plugin (the real API with its key, else its emulator in-process), notices on stderr */
export const providerLayer = (providerName: string, stateDir: string) =>
  Layer.unwrap(Effect.gen(function*() {
    const plugin = yield* ProviderPlugin.load(providerName)
    return plugin.layer({
      emulatorDir: path.join(path.resolve(stateDir), "emulator", plugin.name),
      onNotice: (line) => process.stderr.write(`${Redact.text(line)}\n`)
    })
  }))

/** an estimate of `pipeline` with the provider in context and the ledger when there is one */
export const estimate = (
  pipeline: Pipeline.Pipeline<unknown, unknown>,
  options: {
    readonly providerName: string
    readonly stateDir: string
    readonly state?: string | undefined
    readonly mode?: Run.Mode | undefined
    readonly sampleRows?: number | undefined
    readonly dryRunDir?: string | undefined
  }
) =>
  Effect.gen(function*() {
    const provider = yield* Provider.Provider
    const ledger = yield* Effect.serviceOption(Ledger.Ledger)
    return yield* Estimate.make(pipeline, {
      provider,
      ledger: Option.getOrUndefined(ledger),
      mode: options.mode,
      sampleRows: options.sampleRows,
      dryRunDir: options.dryRunDir
    })
  }).pipe(
    Effect.provide(Layer.mergeAll(
      providerLayer(options.providerName, options.stateDir),
      existingLedger(options.stateDir, options.state)
    )),
    Effect.mapError(failure)
  )

/** the `estimate` command */
export const estimateCommand = Command.make(
  "estimate",
  {
    module: Argument.String("module").pipe(Argument.withDescription("a .ts module whose default export is a Pipeline")),
    provider: Flag.String("provider").pipe(
      Flag.withDescription(`provider to price for (default: the pipeline's, else openai; known: ${ProviderPlugin.known.join(", ")})`),
      Flag.optional
    ),
    mode: Flag.Literals("mode", ["batch", "sync", "auto"]).pipe(
      Flag.withDescription("how the run would send its requests (default: the pipeline's mode, else batch)"),
      Flag.optional
    ),
    sampleRows: Flag.Int("sample-rows").pipe(
      Flag.withDescription("read only the first N rows and extrapolate to the source's row count (when it can count)"),
      Flag.optional
    ),
    json: jsonFlag,
    stateDir: stateDirFlag,
    state: stateFlag
  },
  ({ module, provider, mode, sampleRows, json, stateDir, state }) =>
    Effect.gen(function*() {
      if (Option.isSome(sampleRows) && sampleRows.value < 1) {
        return yield* usage(`--sample-rows must be at least 1 (got ${sampleRows.value})`)
      }
      const pipeline = yield* loadPipeline(module)
      const result = yield* estimate(pipeline, {
        providerName: Option.getOrUndefined(provider) ?? pipeline.provider ?? "openai",
        stateDir,
        state: Option.getOrUndefined(state),
        mode: Option.getOrUndefined(mode),
        sampleRows: Option.getOrUndefined(sampleRows)
      })
      yield* Console.log(json ? JSON.stringify(result, null, 2) : Estimate.format(result))
    })
).pipe(Command.withDescription("Estimate what a run would send and cost (tokens, batches, batch vs sync price), sending nothing"))
