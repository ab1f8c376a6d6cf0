/**
 * Over 400 lines on purpose: the estimate's model, its schema and its computation; cutting batches and
 * formatting are `internal/estimate*.ts`.
 *
 * What a pipeline's run would send and cost, before anything is sent: the source is read (all of it, or its first
 * `sampleRows`, extrapolated), each row's request rendered as the runner renders it, deduplicated by fingerprint,
 * checked against the ledger's result cache (those answers are free), counted in input tokens
 * ({@link Tokens.countRequest}, exact for OpenAI, labelled approximations else), bounded in output tokens (each
 * request's `maxTokens`, 4,096 when unset, as the budget reserves), and split into batches as the Batcher would. When
 * a sample run of the pipeline answered some rows (`offpeak run --sample N`), the mean length of its answers gives an
 * expected output too. Costs are priced per request with {@link Prices.price} at the batch and the synchronous price.
 * `offpeak estimate <module>` prints it; `offpeak run --dry-run` also writes the batch files.
 *
 * Memory: rows stream through in chunks of 2,000; distinct requests are remembered as the first 64 bits of their
 * fingerprints in typed arrays (16–32 bytes per distinct request, against about 106 for a `Set` of the 64-hex
 * texts: measured in `packages/core/test/Estimate.test.ts`), so a 10-million-row source takes at most about 320 MB
 * more; batches keep a tally by model and input-token count, not their lines. Speed is that of token counting
 * (2–8 MB of prompt text a second, see `Tokens`), for requests not answered by the cache.
 *
 * @example
 * ```ts
 * import * as Estimate from "@offpeak/core/Estimate"
 *
 * const estimate = yield* Estimate.make(pipeline, { provider, ledger })
 * console.log(Estimate.format(estimate))
 * // estimate.requests, estimate.inputTokens.total, estimate.cost.batch.boundUsd, estimate.advice, …
 * ```
 *
 * @since 0.1.0
 */
import { Effect, Option, Result as R, Schema, Stream } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import * as Fingerprint from "./Fingerprint.ts"
import * as Batches from "./internal/estimateBatches.ts"
import * as Format from "./internal/estimateFormat.ts"
import * as FingerprintSet from "./internal/estimateSet.ts"
import type * as Ledger from "./Ledger.ts"
import type * as Pipeline from "./Pipeline.ts"
import * as Prices from "./Prices.ts"
import type * as Provider from "./Provider.ts"
import * as Request from "./Request.ts"
import type * as Run from "./Run.ts"
import type * as Source from "./Source.ts"
import * as Tokens from "./Tokens.ts"

// ===== Models =====

const Int = Schema.Int
const Usd = Schema.Number

/**
 * A cost at the output bound (every answer at its `maxTokens`) and, when a sample run gave a mean answer length, the
 * expected cost; in USD (summed exactly in picodollars, see `Prices`).
 *
 * @since 0.1.0
 * @category models
 */
export const Cost = Schema.Struct({
  boundUsd: Usd,
  expectedUsd: Schema.NullOr(Usd)
})

/**
 * One batch file a dry run wrote.
 *
 * @since 0.1.0
 * @category models
 */
export const DryRunFile = Schema.Struct({
  file: Schema.String,
  /** the provider's group (OpenAI: endpoint and model) */
  group: Schema.String,
  requests: Int,
  bytes: Int,
  /** how the runner would send it: the batch API, or synchronous calls (`sync` mode, or `auto` below `syncBelow`) */
  mode: Schema.Literals(["batch", "sync"])
})

/**
 * An estimate, as `offpeak estimate --json` prints it. Figures are for the whole job: with `sampleRows`, what was
 * read is scaled by `source.scale` (stated in `source.note`).
 *
 * @since 0.1.0
 * @category models
 */
export const Estimate = Schema.Struct({
  pipeline: Schema.String,
  provider: Schema.String,
  /** how the run would send its requests */
  mode: Schema.Literals(["batch", "sync", "auto"]),
  /** the models the requests ask */
  models: Schema.Array(Schema.String),
  source: Schema.Struct({
    name: Schema.String,
    /** rows read for the estimate */
    rowsRead: Int,
    /** true when the whole source (its range for this run) was read */
    whole: Schema.Boolean,
    /** rows the run would read: counted when read whole, else the source's own count (null when it cannot count) */
    rows: Schema.NullOr(Int),
    /** what the figures read were multiplied by (1 when read whole, or when the source cannot count) */
    scale: Schema.Number,
    note: Schema.String
  }),
  rows: Schema.Struct({
    total: Int,
    /** rows that would fail on admission (malformed, no key, a request that cannot be built, encoded or fit a batch) */
    invalid: Int,
    /** rows whose request another row asks too (sent once) */
    deduped: Int,
    /** rows the result cache answers (free) */
    cached: Int,
    /** rows whose request is sent */
    sent: Int
  }),
  /** a few reasons rows would be invalid, with their row */
  invalidExamples: Schema.Array(Schema.String),
  /** distinct requests to send (after dedupe and cache hits) */
  requests: Int,
  inputTokens: Schema.Struct({
    total: Int,
    /** true when every count is the provider's own (OpenAI encodings on plain text) */
    exact: Schema.Boolean,
    /** how they were counted (`Tokens.Count.method`) */
    method: Schema.String,
    perRequest: Schema.Number
  }),
  outputTokens: Schema.Struct({
    /** Σ max tokens: no answer can be longer */
    bound: Int,
    /** requests with no `maxTokens`, counted at `defaultMaxTokens` (the runner's reservation) */
    withoutMaxTokens: Int,
    defaultMaxTokens: Int,
    /** Σ min(the sample's mean answer, max tokens), when a sample run answered rows */
    expected: Schema.NullOr(Int),
    /** the sample's mean output tokens per answer */
    perAnswer: Schema.NullOr(Schema.Number),
    sample: Schema.NullOr(Schema.Struct({ runId: Schema.String, answers: Int }))
  }),
  cost: Schema.Struct({
    /** every request through the batch API */
    batch: Cost,
    /** every request through the synchronous API */
    sync: Cost,
    /** as the run's mode sends them (`auto`: batches under `syncBelow` requests synchronously) */
    planned: Schema.Struct({ boundUsd: Usd, expectedUsd: Schema.NullOr(Usd), syncRequests: Int }),
    /** sync minus batch */
    saving: Cost,
    /** what a budget reserves for the whole job: the bound at the batch price in `batch` mode, else the sync price */
    reservedUsd: Usd,
    budgetUsd: Schema.NullOr(Usd),
    /** how far the reservation passes the budget (null: within it, or no budget) */
    overBudgetUsd: Schema.NullOr(Usd),
    /** models with no price (their requests are in no cost): add a `prices` override */
    unpriced: Schema.Array(Schema.String)
  }),
  batches: Schema.Struct({
    count: Int,
    /** of them, sent as synchronous calls */
    sync: Int,
    /** batch files written (one JSONL file a batch) */
    files: Int,
    bytes: Int,
    /** the Batcher's limits: the pipeline's, capped by the provider's */
    maxRequests: Int,
    maxBytes: Int,
    /** groups (OpenAI: endpoint and model) that never share a batch */
    groups: Int
  }),
  /** the share of input assumed read from the provider's prompt cache */
  cachedInput: Schema.Struct({ share: Schema.Number, note: Schema.String }),
  /** the batch files of a dry run */
  dryRun: Schema.NullOr(Schema.Struct({ dir: Schema.String, files: Schema.Array(DryRunFile) })),
  advice: Schema.Array(Schema.String),
  durationMs: Int
})

/**
 * An estimate.
 *
 * @since 0.1.0
 * @category models
 */
export type Estimate = typeof Estimate.Type

/**
 * Options of {@link make}.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** the provider the run would use: its encoding, limits and name (token counts and prices follow it) */
  readonly provider: Provider.Service
  /** the ledger: requests its result cache answers are free, and a sample run gives the expected output */
  readonly ledger?: Ledger.Service | undefined
  /** read only the first rows of the source and extrapolate (to the source's count when it can count) */
  readonly sampleRows?: number | undefined
  /** how the run would send (default: the pipeline's mode, else `batch`) */
  readonly mode?: Run.Mode | undefined
  /** a dry run: write the batch files (the provider's encoded lines) to this folder, emptied first */
  readonly dryRunDir?: string | undefined
}

// ===== Errors =====

/**
 * The source could not be read or counted.
 *
 * @since 0.1.0
 * @category errors
 */
export class SourceFailed extends Schema.TaggedError<SourceFailed>()("SourceFailed", { message: Schema.String }) {}

/**
 * The ledger could not be read.
 *
 * @since 0.1.0
 * @category errors
 */
export class LedgerFailed extends Schema.TaggedError<LedgerFailed>()("LedgerFailed", { message: Schema.String }) {}

/**
 * A dry run's batch files could not be written.
 *
 * @since 0.1.0
 * @category errors
 */
export class FilesFailed extends Schema.TaggedError<FilesFailed>()("FilesFailed", { message: Schema.String }) {}

/**
 * The estimate could not be made, with the reason.
 *
 * @since 0.1.0
 * @category errors
 */
export class EstimateError extends Schema.TaggedError<EstimateError>()("EstimateError", {
  reason: Schema.Union([SourceFailed, LedgerFailed, FilesFailed]),
  message: Schema.String
}) {}

const sourceFailed = (message: string) => new EstimateError({ reason: new SourceFailed({ message }), message })
const ledgerFailed = (message: string) =>
  new EstimateError({ reason: new LedgerFailed({ message }), message: `ledger: ${message}` })
const filesFailed = (message: string) => new EstimateError({ reason: new FilesFailed({ message }), message })

// ===== Constants =====

/**
 * Output tokens counted for a request without `maxTokens`: what the runner reserves for it.
 *
 * @since 0.1.0
 * @category constants
 */
export const DEFAULT_MAX_TOKENS = 4_096

/**
 * Below this many requests the estimate advises the synchronous API (simpler, answered at once; the batch saving is
 * small).
 *
 * @since 0.1.0
 * @category constants
 */
export const SMALL_JOB = 300

/** rows prepared, and looked up in the cache, at once */
const CHUNK = 2_000
/** reasons of invalid rows kept */
const EXAMPLES = 5

/**
 * The pipeline name a sample run of `name` is recorded under (`offpeak run --sample N`): a run of its own, so it
 * never moves the pipeline's checkpoint nor holds its lease; its answers are in the result cache like any other.
 *
 * @since 0.1.0
 * @category constants
 */
export const sampleName = (name: string): string => `${name}:sample`

// ===== Estimating =====

/** what the latest completed sample run of the pipeline that paid for answers says of answer lengths */
const findSample = (ledger: Ledger.Service, name: string) =>
  Effect.gen(function*() {
    const runs = yield* ledger.listRuns
    for (const run of runs) {
      if (run.pipeline !== sampleName(name) || run.state !== "completed") continue
      const paid = yield* ledger.paidAnswers(run.id)
      if (paid.answers > 0) return { runId: run.id, answers: paid.answers, mean: paid.outputTokens / paid.answers }
    }
    return undefined
  })

type Prepared =
  | { readonly _tag: "Invalid"; readonly reason: string }
  | {
    readonly _tag: "Request"
    readonly fingerprint: string
    readonly request: Request.Request
    readonly line: string
    readonly bytes: number
    readonly group: string
  }

const message = (u: unknown) => u instanceof Error ? u.message : String(u)

/**
 * Estimates a run of `pipeline` (see the module). Nothing is sent, and the ledger is only read.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = <R, A, Row>(
  pipeline: Pipeline.Pipeline<R, A, Row>,
  options: Options
): Effect.Effect<Estimate, EstimateError> =>
  Effect.gen(function*() {
    const started = Date.now()
    const { provider, ledger } = options
    const mode: Run.Mode = options.mode ?? pipeline.mode ?? "batch"
    const maxBytes = Math.min(pipeline.batch?.maxBytes ?? provider.limits.maxBytes, provider.limits.maxBytes)
    const maxRequests = Math.min(pipeline.batch?.maxRequests ?? provider.limits.maxRequests, provider.limits.maxRequests)
    const maxLineBytes = Math.min(maxBytes, provider.limits.maxRequestBytes)
    const syncBelow = pipeline.batch?.syncBelow ?? 100
    const sampleRows = options.sampleRows === undefined ? undefined : Math.max(1, Math.floor(options.sampleRows))
    const orLedger = <X, E extends { readonly message: string }>(effect: Effect.Effect<X, E>) =>
      Effect.mapError(effect, (e) => ledgerFailed(e.message))

    // ----- what the run would read: an incremental pipeline reads after its last completed run's checkpoint -----
    let source: Source.Source<R> = pipeline.source
    let rangeNote = ""
    if (pipeline.incremental === true && pipeline.source.continueAfter !== undefined && ledger !== undefined) {
      const last = yield* orLedger(ledger.lastCheckpoint(pipeline.name))
      if (Option.isSome(last)) {
        source = pipeline.source.continueAfter(last.value, 1)
        rangeNote = ` after checkpoint ${last.value} (incremental: where the last completed run stopped)`
      }
    }
    const sample = ledger === undefined ? undefined : yield* orLedger(findSample(ledger, pipeline.name))

    // ----- dry run: an empty folder for the batch files -----
    const dryRunDir = options.dryRunDir === undefined ? undefined : path.resolve(options.dryRunDir)
    if (dryRunDir !== undefined) {
      yield* Effect.try({
        try: () => {
          fs.rmSync(dryRunDir, { recursive: true, force: true })
          fs.mkdirSync(dryRunDir, { recursive: true })
        },
        catch: (e) => filesFailed(`cannot prepare ${dryRunDir}: ${message(e)}`)
      })
    }

    const outputSpec: Request.Output | undefined = pipeline.output === undefined
      ? undefined
      : { name: pipeline.outputName ?? "output", schema: pipeline.output as Schema.Codec<unknown, any> }
    const requestContext: Pipeline.RequestContext = { provider: provider.name }

    /** a row as admission prepares it: its request and line, or why it would fail */
    const prepare = (entry: Source.Item<R>): Prepared => {
      if (entry._tag === "Malformed") return { _tag: "Invalid", reason: entry.reason }
      const where = `${pipeline.source.name} row ${entry.position}${entry.line !== undefined ? ` (line ${entry.line})` : ""}`
      try {
        const key = pipeline.key(entry.value)
        if (typeof key !== "string" || key.length === 0) return { _tag: "Invalid", reason: `${where}: no key: key() returned ${JSON.stringify(key)}` }
      } catch (e) {
        return { _tag: "Invalid", reason: `${where}: no key: ${message(e)}` }
      }
      let request: Request.Request
      try {
        request = Request.withOutput(pipeline.request(entry.value, requestContext), outputSpec)
      } catch (e) {
        return { _tag: "Invalid", reason: `${where}: request() failed: ${message(e)}` }
      }
      const fingerprint = Fingerprint.of(request)
      const encoded = provider.encode(request, fingerprint)
      if (R.isFailure(encoded)) return { _tag: "Invalid", reason: `${where}: ${encoded.failure}` }
      if (encoded.success.bytes > maxLineBytes) {
        return {
          _tag: "Invalid",
          reason: `${where}: the request is ${(encoded.success.bytes / 1024).toFixed(1)} KiB encoded, over the ${
            (maxLineBytes / 1024).toFixed(1)
          } KiB one request may take in a batch`
        }
      }
      return { _tag: "Request", fingerprint, request, line: encoded.success.line, bytes: encoded.success.bytes, group: encoded.success.group }
    }

    // ----- the read -----
    const seen = FingerprintSet.make()
    const cachedSeen = FingerprintSet.make(16)
    const batches = Batches.make({ maxRequests, maxBytes, mode, syncBelow, dir: dryRunDir })
    const groups = new Set<string>()
    const methods = new Set<string>()
    const invalidExamples: Array<string> = []
    let rowsRead = 0
    let invalid = 0
    let deduped = 0
    let cachedRows = 0
    let sentRows = 0
    let requests = 0
    let inputTokens = 0
    let exact = true
    let boundOutput = 0
    let expectedOutput = 0
    let withoutMax = 0
    let bytes = 0

    const account = (chunk: ReadonlyArray<Source.Item<R>>) =>
      Effect.gen(function*() {
        const prepared = chunk.map(prepare)
        let hits: ReadonlySet<string> = new Set()
        if (ledger !== undefined) {
          const unseen: Array<string> = []
          for (const p of prepared) if (p._tag === "Request" && !seen.has(p.fingerprint)) unseen.push(p.fingerprint)
          if (unseen.length > 0) {
            hits = yield* orLedger(ledger.cachedAnswers(unseen, { provider: provider.name, endpoint: provider.endpoint }))
          }
        }
        const tally = () => {
          for (const p of prepared) {
            rowsRead++
            if (p._tag === "Invalid") {
              invalid++
              if (invalidExamples.length < EXAMPLES) invalidExamples.push(p.reason)
              continue
            }
            if (!seen.add(p.fingerprint)) {
              // a row that asks what an earlier row asked: it goes out with that request (or its cached answer)
              if (cachedSeen.has(p.fingerprint)) cachedRows++
              else {
                deduped++
                sentRows++
              }
              continue
            }
            if (hits.has(p.fingerprint)) {
              cachedSeen.add(p.fingerprint)
              cachedRows++
              continue
            }
            sentRows++
            requests++
            const count = Tokens.countRequest(p.request, provider.name)
            inputTokens += count.tokens
            if (!count.exact) exact = false
            methods.add(count.method)
            let bound = 0
            let expected = 0
            if (p.request._tag === "Chat") {
              const max = p.request.params.maxTokens
              if (max === undefined) withoutMax++
              bound = max ?? DEFAULT_MAX_TOKENS
              expected = sample === undefined ? 0 : Math.min(bound, Math.round(sample.mean))
            }
            boundOutput += bound
            expectedOutput += expected
            bytes += p.bytes
            groups.add(p.group)
            batches.add({
              group: p.group,
              bytes: p.bytes,
              line: dryRunDir === undefined ? undefined : p.line,
              model: p.request.model,
              inputTokens: count.tokens,
              boundOutput: bound,
              expectedOutput: expected
            })
          }
        }
        // only a dry run's file writes can fail here
        yield* dryRunDir === undefined ? Effect.sync(tally) : Effect.try({
          try: tally,
          catch: (e) => filesFailed(`cannot write the dry run's batch files in ${dryRunDir}: ${message(e)}`)
        })
      })

    const read = sampleRows === undefined ? source.read : source.read.pipe(Stream.take(sampleRows))
    yield* read.pipe(
      // (a source's own errors often name it already)
      Stream.mapError((e) =>
        sourceFailed(e.message.startsWith(pipeline.source.name) ? e.message : `${pipeline.source.name}: ${e.message}`)
      ),
      Stream.rechunk(CHUNK),
      Stream.runForEachArray(account)
    )
    yield* Effect.try({
      try: () => batches.end(),
      catch: (e) => filesFailed(`cannot write the dry run's batch files in ${dryRunDir}: ${message(e)}`)
    })

    // ----- the whole job: read whole, or scaled to the source's count -----
    const whole = sampleRows === undefined || rowsRead < sampleRows
    let sourceRows: number | null = whole ? rowsRead : null
    if (!whole && source.count !== undefined) {
      sourceRows = yield* source.count.pipe(Effect.mapError((e) => sourceFailed(`${pipeline.source.name}: ${e.message}`)))
    }
    const scale = !whole && sourceRows !== null && rowsRead > 0 ? sourceRows / rowsRead : 1
    const n = (x: number) => Math.round(x * scale)
    const rowsWord = (k: number) => `${k.toLocaleString("en-US")} row${k === 1 ? "" : "s"}`
    const note = whole
      ? sampleRows === undefined
        ? `${rowsWord(rowsRead)} read: the whole source${rangeNote}`
        : `${rowsWord(rowsRead)} read: the whole source (it holds fewer than the ${sampleRows.toLocaleString("en-US")} asked)${rangeNote}`
      : sourceRows !== null
      ? `the first ${rowsWord(rowsRead)} read of ${sourceRows.toLocaleString("en-US")} the source counts${rangeNote}: ` +
        `every figure is scaled by ${scale.toFixed(2)} (this share of dedupe, cache hits and invalid rows assumed for the rest)`
      : `the first ${rowsWord(rowsRead)} read; the source cannot count its rows, so the figures are for those rows only`

    // ----- money -----
    const overrides = pipeline.prices
    const unpriced = new Set<string>()
    const priced = (tallies: Iterable<Batches.Tally>, at: Prices.Mode) => {
      let bound = 0n
      let expected = 0n
      for (const t of tallies) {
        const opts = { provider: provider.name, model: t.model, mode: at, overrides }
        const one = Prices.price({ inputTokens: t.inputTokens, outputTokens: 0 }, opts)
        const outBound = Prices.price({ inputTokens: t.inputTokens, outputTokens: t.boundOutput }, opts)
        const outExpected = Prices.price({ inputTokens: t.inputTokens, outputTokens: t.expectedOutput }, opts)
        if (R.isFailure(one) || R.isFailure(outBound) || R.isFailure(outExpected)) {
          unpriced.add(t.model)
          continue
        }
        const input = BigInt(t.n) * one.success.total
        bound += input + outBound.success.output
        expected += input + outExpected.success.output
      }
      return { bound, expected }
    }
    const all: Batches.Tallies = new Map()
    Batches.merge(all, batches.batchTallies)
    Batches.merge(all, batches.syncTallies)
    const atBatch = priced(all.values(), "batch")
    const atSync = priced(all.values(), "sync")
    const plannedBatch = priced(batches.batchTallies.values(), "batch")
    const plannedSync = priced(batches.syncTallies.values(), "sync")
    const usd = (pico: bigint) => Prices.toUsd(pico) * scale
    const hasExpected = sample !== undefined
    const cost = (p: { bound: bigint; expected: bigint }) => ({
      boundUsd: usd(p.bound),
      expectedUsd: hasExpected ? usd(p.expected) : null
    })
    // the runner reserves at the batch price only in batch mode (see Pipeline.Config.budget)
    const reserved = mode === "batch" ? atBatch.bound : atSync.bound
    const budget = pipeline.budget === undefined ? null : Prices.fromUsd(pipeline.budget)
    const over = budget !== null && usd(reserved) > Prices.toUsd(budget) ? usd(reserved) - Prices.toUsd(budget) : null
    const syncRequests = [...batches.syncTallies.values()].reduce((s, t) => s + t.n, 0)
    const models = [...new Set([...all.values()].map((t) => t.model))].sort()

    const estimate: Estimate = {
      pipeline: pipeline.name,
      provider: provider.name,
      mode,
      models,
      source: { name: pipeline.source.name, rowsRead, whole, rows: sourceRows, scale, note },
      rows: {
        total: sourceRows ?? rowsRead,
        invalid: n(invalid),
        deduped: n(deduped),
        cached: n(cachedRows),
        sent: n(sentRows)
      },
      invalidExamples,
      requests: n(requests),
      inputTokens: {
        total: n(inputTokens),
        exact: requests === 0 || exact,
        method: methods.size === 0 ? "nothing to count" : [...methods].join("; "),
        perRequest: requests === 0 ? 0 : inputTokens / requests
      },
      outputTokens: {
        bound: n(boundOutput),
        withoutMaxTokens: n(withoutMax),
        defaultMaxTokens: DEFAULT_MAX_TOKENS,
        expected: hasExpected ? n(expectedOutput) : null,
        perAnswer: sample?.mean ?? null,
        sample: sample === undefined ? null : { runId: sample.runId, answers: sample.answers }
      },
      cost: {
        batch: cost(atBatch),
        sync: cost(atSync),
        planned: {
          boundUsd: usd(plannedBatch.bound + plannedSync.bound),
          expectedUsd: hasExpected ? usd(plannedBatch.expected + plannedSync.expected) : null,
          syncRequests: n(syncRequests)
        },
        saving: {
          boundUsd: usd(atSync.bound - atBatch.bound),
          expectedUsd: hasExpected ? usd(atSync.expected - atBatch.expected) : null
        },
        reservedUsd: usd(reserved),
        budgetUsd: budget === null ? null : Prices.toUsd(budget),
        overBudgetUsd: over,
        unpriced: [...unpriced].sort()
      },
      batches: whole || scale === 1
        ? {
          count: batches.closed.length,
          sync: batches.closed.filter((b) => b.mode === "sync").length,
          files: batches.closed.length,
          bytes,
          maxRequests,
          maxBytes,
          groups: groups.size
        }
        : scaledBatches(batches.closed, scale, { maxRequests, maxBytes, mode, syncBelow, groups: groups.size }),
      cachedInput: {
        share: 0,
        note: "no prefix grouping (a provider that caches a repeated prefix by itself makes the real cost lower)"
      },
      dryRun: dryRunDir === undefined ? null : {
        dir: dryRunDir,
        files: batches.closed.map((b) => ({
          file: path.basename(b.file ?? ""),
          group: b.group,
          requests: b.requests,
          bytes: b.bytes,
          mode: b.mode
        }))
      },
      advice: [],
      durationMs: 0
    }
    const done = { ...estimate, advice: advise(estimate, { sampleRows }), durationMs: Date.now() - started }
    if (dryRunDir !== undefined) {
      yield* Effect.try({
        try: () => fs.writeFileSync(path.join(dryRunDir, "estimate.json"), JSON.stringify(done, null, 2) + "\n"),
        catch: (e) => filesFailed(`cannot write ${path.join(dryRunDir, "estimate.json")}: ${message(e)}`)
      })
    }
    return done
  })

/** batches of an extrapolated job: per group, enough for its requests and its bytes */
const scaledBatches = (
  closed: ReadonlyArray<Batches.Closed>,
  scale: number,
  o: { maxRequests: number; maxBytes: number; mode: Run.Mode; syncBelow: number; groups: number }
): Estimate["batches"] => {
  const byGroup = new Map<string, { requests: number; bytes: number }>()
  for (const b of closed) {
    const g = byGroup.get(b.group) ?? { requests: 0, bytes: 0 }
    g.requests += b.requests
    g.bytes += b.bytes
    byGroup.set(b.group, g)
  }
  let count = 0
  let sync = 0
  let bytes = 0
  for (const g of byGroup.values()) {
    const requests = Math.round(g.requests * scale)
    const size = Math.round(g.bytes * scale)
    const k = Math.max(1, Math.ceil(requests / o.maxRequests), Math.ceil(size / o.maxBytes))
    count += k
    bytes += size
    if (o.mode === "sync") sync += k
    else if (o.mode === "auto") {
      // full batches go to the batch API; the group's last, partial batch may be small enough for sync calls
      const tail = requests - (k - 1) * Math.ceil(requests / k)
      if (tail < o.syncBelow) sync++
    }
  }
  return { count, sync, files: count, bytes, maxRequests: o.maxRequests, maxBytes: o.maxBytes, groups: o.groups }
}

/** what to tell the user */
const advise = (e: Estimate, o: { readonly sampleRows: number | undefined }): Array<string> => {
  const out: Array<string> = []
  const money = (usd: number) => Format.usd(usd)
  if (e.requests === 0) {
    out.push(
      e.rows.total === 0
        ? "the source has no rows: nothing to send"
        : "nothing to send: every row is answered from the result cache or is invalid; the run costs nothing"
    )
  }
  if (e.requests > 0 && e.requests < SMALL_JOB && e.mode !== "sync") {
    out.push(
      `only ${e.requests.toLocaleString("en-US")} requests: below a few hundred the synchronous API is simpler ` +
        `(answers at once, no 24-hour window)` +
        (e.cost.unpriced.length > 0
          ? ""
          : ` and the batch saving is ${money(e.cost.saving.expectedUsd ?? e.cost.saving.boundUsd)}` +
            `${e.cost.saving.expectedUsd === null ? " at most" : ""}`) +
        `: consider --mode sync`
    )
  }
  if (e.requests >= SMALL_JOB && e.mode === "sync") {
    out.push(
      `${e.requests.toLocaleString("en-US")} requests in sync mode: the batch API would save ` +
        `${money(e.cost.saving.expectedUsd ?? e.cost.saving.boundUsd)}${e.cost.saving.expectedUsd === null ? " at most" : ""} ` +
        `if answers within 24 hours will do (--mode batch)`
    )
  }
  if (e.cost.budgetUsd !== null) {
    const budget = e.cost.budgetUsd
    if (e.cost.overBudgetUsd !== null) {
      const pct = (e.cost.overBudgetUsd / budget) * 100
      out.push(
        `over budget: the worst case (every answer at its max tokens) is ${money(e.cost.reservedUsd)}, ` +
          `${money(e.cost.overBudgetUsd)} (${pct.toFixed(0)} %) over the budget of ${money(budget)}; batches are ` +
          `reserved at their worst case before they are sent, so some will be refused (budget_refused) until ` +
          `earlier answers settle below it: raise the budget or lower maxTokens`
      )
      const expected = e.mode === "batch" ? e.cost.batch.expectedUsd : e.cost.planned.expectedUsd
      if (expected !== null) {
        out.push(
          expected > budget
            ? `even the expected cost (${money(expected)}) is over the budget, by ${money(expected - budget)}: ` +
              `the job cannot finish within it`
            : `the expected cost (${money(expected)}) is within the budget: the job should finish, reservations permitting`
        )
      }
    } else {
      out.push(`within the budget of ${money(budget)}: the worst case is ${money(e.cost.reservedUsd)}`)
    }
  }
  if (e.outputTokens.withoutMaxTokens > 0) {
    out.push(
      `${e.outputTokens.withoutMaxTokens.toLocaleString("en-US")} requests set no maxTokens: each is counted at ` +
        `${e.outputTokens.defaultMaxTokens.toLocaleString("en-US")} output tokens in the bound (a budget reserves as ` +
        `much); set maxTokens to tighten it`
    )
  }
  if (e.requests > 0 && !e.inputTokens.exact) {
    out.push(`input tokens are an estimate, not the provider's count: ${e.inputTokens.method}`)
  }
  if (e.requests > 0 && e.outputTokens.expected === null) {
    out.push(
      `no sample run yet, so no expected output: \`offpeak run <module> --sample 20\` answers 20 rows through ` +
        `the synchronous API first (their answers are reused by the full run) and gives the mean answer length`
    )
  }
  if (e.cost.unpriced.length > 0) {
    out.push(
      `no price for ${e.cost.unpriced.join(", ")} at ${e.provider}: add a \`prices\` override to the pipeline; ` +
        `their requests are in no cost above`
    )
  }
  if (o.sampleRows !== undefined && !e.source.whole && e.source.rows === null) {
    out.push(`the source cannot count its rows: the figures are for the first ${e.source.rowsRead.toLocaleString("en-US")} rows only`)
  }
  if (e.rows.invalid > 0) {
    out.push(`${e.rows.invalid.toLocaleString("en-US")} rows would go to the dead letter as invalid_input (examples above)`)
  }
  return out
}

// ===== Formatting =====

/**
 * The estimate as the table `offpeak estimate` prints.
 *
 * @since 0.1.0
 * @category formatting
 */
export const format: (estimate: Estimate) => string = Format.format

/**
 * An amount in USD as the estimate prints it: 6 decimals under a cent, 4 under a dollar, else 2, thousands separated.
 *
 * @since 0.1.0
 * @category formatting
 */
export const formatUsd: (usd: number) => string = Format.usd
