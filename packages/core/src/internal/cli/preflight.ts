/**
 * What `offpeak run` does before the full job when asked: `--dry-run` writes the batch files the run would send
 * (the provider's encoded lines, split as the Batcher splits them) under `<state-dir>/dry-run/<pipeline>/`, prints the
 * estimate, and stops: nothing is sent and no run is created. `--sample N` sends the first N rows through the
 * synchronous API as a run of their own (pipeline `<name>:sample`, mode `sync`: their answers land in the result
 * cache, so the full run does not pay for them again), shows a few answers, their tokens and cost, and the estimate of
 * the rest extrapolated from them, then asks before the full job (`--yes` does not ask; without a terminal to ask on
 * and without `--yes`, nothing is sent).
 *
 * @internal
 */
import { Effect, Layer, Option, Stream } from "effect"
import { Flag } from "effect/cli"
import * as path from "node:path"
import * as readline from "node:readline"
import * as Estimate from "../../Estimate.ts"
import * as Ledger from "../../Ledger.ts"
import * as Pipeline from "../../Pipeline.ts"
import type * as Result from "../../Result.ts"
import type * as Run from "../../Run.ts"
import type * as Sink from "../../Sink.ts"
import type * as Source from "../../Source.ts"
import { estimate, providerLayer } from "./estimate.ts"
import { CliFailure, failure, ledgerLayer, usage } from "./shared.ts"

/** answers of the sample shown */
const SHOWN = 3
/** characters of an answer shown */
const ANSWER_CHARS = 240

/** the flags `run` takes for this */
export const flags = {
  dryRun: Flag.Boolean("dry-run").pipe(
    Flag.withDescription(
      "write the batch files the run would send (under <state-dir>/dry-run/<pipeline>/) and print the estimate; send nothing"
    ),
    Flag.withDefault(false)
  ),
  sample: Flag.Int("sample").pipe(
    Flag.withDescription(
      "first send N rows through the synchronous API, show their answers, tokens and the extrapolated cost, and ask " +
        "before the full job (their answers are reused by it)"
    ),
    Flag.optional
  ),
  yes: Flag.Boolean("yes").pipe(
    Flag.withDescription("with --sample: go on with the full job without asking (for scripts)"),
    Flag.withDefault(false)
  )
}

/** what {@link before} needs */
export interface Options {
  readonly pipeline: Pipeline.Pipeline<unknown, unknown>
  readonly providerName: string
  readonly stateDir: string
  readonly state?: string | undefined
  readonly mode?: Run.Mode | undefined
  /** `--json`: stdout is kept for JSON (the dry run's estimate; the sample's report goes to stderr) */
  readonly json: boolean
  readonly dryRun: boolean
  readonly sample: Option.Option<number>
  readonly yes: boolean
  /** where the prompt is answered (default: a line read from stdin; `interactive` default: stdin is a terminal) */
  readonly ask?: ((question: string) => Effect.Effect<boolean>) | undefined
  readonly interactive?: boolean | undefined
  /** where the report goes (default: stdout, or stderr with `json`) */
  readonly print?: ((text: string) => void) | undefined
}

/** a y/N question on stderr, answered by a line of stdin (no answer, or the end of stdin: no) */
export const askLine = (question: string): Effect.Effect<boolean> =>
  Effect.callback<boolean>((resume) => {
    const rl = readline.createInterface({ input: process.stdin, output: process.stderr, terminal: process.stdin.isTTY === true })
    let answered = false
    rl.question(question, (answer) => {
      answered = true
      rl.close()
      resume(Effect.succeed(/^\s*y(es)?\s*$/i.test(answer)))
    })
    rl.on("close", () => {
      if (!answered) {
        process.stderr.write("\n")
        resume(Effect.succeed(false))
      }
    })
    return Effect.sync(() => rl.close())
  })

/** the folder a dry run writes to */
export const dryRunDir = (stateDir: string, pipelineName: string): string =>
  path.join(path.resolve(stateDir), "dry-run", pipelineName.replace(/[^A-Za-z0-9._-]+/g, "-"))

const oneLine = (u: unknown): string => {
  let text: string
  try {
    text = typeof u === "string" ? u : JSON.stringify(u) ?? String(u)
  } catch {
    text = String(u)
  }
  text = text.replace(/\s+/g, " ")
  return text.length > ANSWER_CHARS ? `${text.slice(0, ANSWER_CHARS)}…` : text
}

/** the first `n` rows the full run would read (an incremental pipeline: after its last completed run's checkpoint) */
const sampleSource = (pipeline: Pipeline.Pipeline<unknown, unknown>, n: number, ledger: Ledger.Service) =>
  Effect.gen(function*() {
    let source: Source.Source<unknown> = pipeline.source
    if (pipeline.incremental === true && source.continueAfter !== undefined) {
      const last = yield* ledger.lastCheckpoint(pipeline.name, { source: pipeline.source.name })
      if (Option.isSome(last)) source = source.continueAfter(last.value, 1)
    }
    return {
      name: `${pipeline.source.name} (its first ${n.toLocaleString("en-US")} rows)`,
      schema: source.schema,
      read: source.read.pipe(Stream.take(n))
    } satisfies Source.Source<unknown>
  })

/** sends the sample and reports it; fails when it did not complete (nothing more is sent then) */
const runSample = (options: Options, n: number, print: (text: string) => void) =>
  Effect.gen(function*() {
    const { pipeline } = options
    const stateDir = path.resolve(options.stateDir)
    const answers = new Map<string, unknown>()
    const failures = new Map<string, string>()
    const answersSink: Sink.Sink<Result.Succeeded<unknown, unknown>> = {
      name: "the sample's answers (shown, not written to the pipeline's sink)",
      write: (_part, rows) =>
        Effect.sync(() => {
          for (const r of rows) if (answers.size < SHOWN || answers.has(r.key)) answers.set(r.key, r.output)
        })
    }
    const deadSink: Sink.Sink<Result.Failed<unknown>> = {
      name: "the sample's failed rows (shown, not written)",
      write: (_part, rows) =>
        Effect.sync(() => {
          for (const r of rows) if (failures.size < SHOWN || failures.has(r.key)) failures.set(r.key, `${r.kind}: ${r.message}`)
        })
    }
    const ledger = yield* Ledger.Ledger
    const source = yield* sampleSource(pipeline, n, ledger)
    const sample = Pipeline.make<unknown, unknown, Result.Succeeded<unknown, unknown>>({
      ...pipeline,
      name: Estimate.sampleName(pipeline.name),
      source,
      row: undefined,
      sink: answersSink,
      deadLetter: deadSink,
      mode: "sync",
      incremental: false
    })
    process.stderr.write(`sample: sending the first ${n.toLocaleString("en-US")} rows through the synchronous API…\n`)
    const summary = yield* Pipeline.run(sample, { stateDir, provider: options.providerName, mode: "sync" })
    const lines = [
      `sample run ${summary.runId} (${summary.state}, ${(summary.durationMs / 1000).toFixed(1)} s): ` +
      `${summary.rows.toLocaleString("en-US")} rows · ${summary.succeeded.toLocaleString("en-US")} answered · ` +
      `${summary.failed.toLocaleString("en-US")} failed` +
      (summary.cachedRows > 0 ? ` · ${summary.cachedRows.toLocaleString("en-US")} from the result cache` : "")
    ]
    for (const [key, output] of answers) lines.push(`  ${key} → ${oneLine(output)}`)
    for (const [key, why] of failures) lines.push(`  ${key} ✗ ${oneLine(why)}`)
    lines.push(
      `  tokens: ${summary.usage.inputTokens.toLocaleString("en-US")} in, ${summary.usage.outputTokens.toLocaleString("en-US")} out` +
        ` · cost ${Estimate.formatUsd(summary.cost.spentUsd)} at the synchronous price` +
        (summary.cost.unpriced.length > 0 ? ` (no price for ${summary.cost.unpriced.join(", ")})` : "")
    )
    print(lines.join("\n") + "\n")
    if (summary.state !== "completed") {
      return yield* failure(
        `the sample run ${summary.runId} ended ${summary.state}${summary.pending > 0 ? ` with ${summary.pending} rows pending` : ""}: ` +
          `the full job was not started`
      )
    }
    return summary
  }).pipe(
    Effect.provide(Layer.mergeAll(providerLayer(options.providerName, options.stateDir), ledgerLayer(path.resolve(options.stateDir), options.state))),
    Effect.mapError(failure)
  )

/**
 * Runs what `--dry-run` and `--sample` ask before the full job. True when the full job goes on; false when it must
 * not start (a dry run; the answer was no).
 */
export const before = (options: Options): Effect.Effect<boolean, CliFailure> =>
  Effect.gen(function*() {
    const sample = Option.getOrUndefined(options.sample)
    if (!options.dryRun && sample === undefined) return true
    const print = options.print ?? ((text: string) => void (options.json ? process.stderr : process.stdout).write(text))
    if (options.dryRun && sample !== undefined) {
      return yield* usage("--dry-run sends nothing and --sample sends rows: give one of them")
    }
    const mode = options.mode ?? options.pipeline.mode ?? "batch"

    if (options.dryRun) {
      const dir = dryRunDir(options.stateDir, options.pipeline.name)
      const result = yield* estimate(options.pipeline, {
        providerName: options.providerName,
        stateDir: options.stateDir,
        state: options.state,
        mode,
        dryRunDir: dir
      })
      if (options.json) process.stdout.write(`${JSON.stringify(result, null, 2)}\n`)
      else {
        print(
          `${Estimate.format(result)}\ndry run: ${result.dryRun?.files.length ?? 0} batch files and estimate.json in ${dir}; ` +
            `nothing was sent and no run was created\n`
        )
      }
      return false
    }

    const n = sample!
    if (n < 1) return yield* usage(`--sample must be at least 1 (got ${n})`)
    const interactive = options.interactive ?? process.stdin.isTTY === true
    if (!options.yes && !interactive) {
      return yield* usage(
        `--sample ${n} asks before the full job, but stdin is not a terminal to ask on: add --yes to go on with the ` +
          `full job after the sample without asking (nothing was sent)`
      )
    }
    yield* runSample(options, n, print)
    // the rest: the sample's answers are now in the result cache, and their mean length gives the expected output
    const rest = yield* estimate(options.pipeline, {
      providerName: options.providerName,
      stateDir: options.stateDir,
      state: options.state,
      mode
    })
    print(`${Estimate.format(rest)}\n`)
    const c = rest.cost
    const column = mode === "batch" ? c.batch : mode === "sync" ? c.sync : { boundUsd: c.planned.boundUsd, expectedUsd: c.planned.expectedUsd }
    const price = mode === "batch" ? "the batch price" : mode === "sync" ? "the synchronous price" : "auto mode's prices"
    const question = `send the full job: ${rest.requests.toLocaleString("en-US")} more requests, ` +
      (column.expectedUsd !== null ? `expected ${Estimate.formatUsd(column.expectedUsd)}, ` : "") +
      `at most ${Estimate.formatUsd(column.boundUsd)} at ${price}? [y/N] `
    if (options.yes) {
      print(`${question}yes (--yes)\n`)
      return true
    }
    const go = yield* (options.ask ?? askLine)(question)
    if (!go) {
      print(`not sent: the full job was not started (the sample's answers stay in the result cache for the next run)\n`)
    }
    return go
  })
