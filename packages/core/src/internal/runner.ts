import { Cause, Duration, Effect, Fiber, Option, Predicate, Pull, Queue, Result as R, Schedule, Schema, Semaphore, Stream } from "effect"
import * as fs from "node:fs/promises"
import * as path from "node:path"
import * as Batcher from "../Batcher.ts"
import * as Failpoint from "../Failpoint.ts"
import * as Memory from "./memory.ts"
import * as Fingerprint from "../Fingerprint.ts"
import * as Ledger from "../Ledger.ts"
import type * as Run from "../Run.ts"
import * as PartFiles from "../PartFiles.ts"
import type * as Pipeline from "../Pipeline.ts"
import * as Progress from "../Progress.ts"
import * as Provider from "../Provider.ts"
import * as ProviderError from "../ProviderError.ts"
import * as Request from "../Request.ts"
import type * as Result from "../Result.ts"
import * as Sink from "../Sink.ts"
import type * as Source from "../Source.ts"

/** @internal */
export class RunError extends Schema.TaggedError<RunError>()("RunError", {
  runId: Schema.String,
  message: Schema.String
}) {}

const ADMIT_CHUNK = 2_000
const PART_SIZE = 10_000
const QUEUE_PAGE = 2_000
/** result lines parsed between two yields to the event loop (a few ms of work) */
const PARSE_CHUNK = 256
/** outcomes recorded in one ledger transaction at most */
const RECORD_MAX = 5_000
/** parsed outcomes waiting for the ledger hold about this much at most (their stored text plus the objects around it) */
const RECORD_BYTES = 8 * 1024 * 1024
/** synchronous calls started at once per `sync` batch (the adapter's adaptive limit bounds how many run) */
const SYNC_CALLS = 64
/** answers of synchronous calls are recorded in groups of up to this many, or of what came within SYNC_RECORD_EVERY */
const SYNC_RECORD = 1_000
const SYNC_RECORD_EVERY = "250 millis"

/** parsed outcomes on their way to the ledger, with the bytes they count for */
interface Parsed {
  readonly outcomes: ReadonlyArray<Ledger.Outcome>
  readonly weight: number
}

/** about what an outcome holds in memory */
const outcomeBytes = (o: Ledger.Outcome): number =>
  256 + (o._tag === "Succeeded" ? o.output.length : o.failure.message.length + (o.failure.raw?.length ?? 0))

/**
 * The disposition a run uses for a sink: the sink's own choice, else its default — except that an incremental
 * pipeline (each run delivers the rows that changed) merges or appends, never replaces. A choice the sink cannot do,
 * or `replace` for an incremental pipeline, comes back as a message starting with `!`.
 */
const dispositionFor = (sink: Sink.Sink<any>, incremental: boolean): Sink.Disposition | `!${string}` => {
  const can = sink.dispositions ?? ["append"]
  if (sink.disposition !== undefined && !can.includes(sink.disposition)) {
    return `!${sink.name}: disposition "${sink.disposition}" is not one this sink can do (${can.join(", ")})`
  }
  const chosen: Sink.Disposition = sink.disposition ?? (incremental && can[0] === "replace"
    ? (can.includes("merge") ? "merge" : can.includes("append") ? "append" : "replace")
    : can[0])
  if (incremental && chosen === "replace") {
    const why = `an incremental pipeline delivers only the rows that changed; "replace" would keep only those`
    return `!${sink.name}: ${why} (choose "merge" or "append")`
  }
  return chosen
}

const slug = (s: string) => s.toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-|-$/g, "").slice(0, 40) || "run"

const newRunId = (name: string) => {
  const d = new Date()
  const pad = (n: number) => String(n).padStart(2, "0")
  const stamp = `${d.getUTCFullYear()}${pad(d.getUTCMonth() + 1)}${pad(d.getUTCDate())}-${pad(d.getUTCHours())}${
    pad(d.getUTCMinutes())
  }${pad(d.getUTCSeconds())}`
  return `${slug(name)}-${stamp}-${Math.random().toString(36).slice(2, 6)}`
}

const message = (u: unknown) => u instanceof Error ? u.message : String(u)

/** a value as JSON for a dead letter's `raw` (bigints as strings; never throws) */
const jsonText = (u: unknown): string => {
  try {
    return JSON.stringify(u, (_, v) => typeof v === "bigint" ? v.toString() : v) ?? String(u)
  } catch {
    return String(u)
  }
}

const kib = (bytes: number) => `${(bytes / 1024).toFixed(1)} KiB`

/** a stored float32 vector (base64) as the number array sinks take */
const fromF32 = (base64: string): Array<number> => {
  const bytes = Buffer.from(base64, "base64")
  return Array.from(new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length)))
}

/** a delivery part holds about this much in memory (decoded records and outputs, the sink's encoding), 100 to 10,000 rows */
const PART_BYTES = 8 * 1024 * 1024

/**
 * Transient provider errors (network, 429, 5xx) are retried for `horizon`: back-off doubling from half a second to a
 * minute, jittered, never shorter than the provider's `retry-after`. A batch has 24 hours; a rate-limit storm or an
 * outage of a few hours must not fail it.
 */
const transientSchedule = (horizon: Duration.Duration) =>
  Schedule.min([Schedule.exponential("500 millis", 2), Schedule.spaced("1 minute")]).pipe(
    Schedule.jittered,
    Schedule.setInputType<ProviderError.ProviderError>(),
    Schedule.modifyDelay(({ duration, input }) =>
      Effect.succeed(
        input.reason._tag === "RateLimited" && input.reason.retryAfterMs !== undefined
          ? Duration.max(duration, Duration.millis(input.reason.retryAfterMs))
          : duration
      )
    ),
    Schedule.upTo({ duration: horizon })
  )

/** a provider may answer 404 for a batch it created moments ago (propagation): retry that for this long */
const NOT_FOUND_GRACE_MS = 2 * 60_000

const withGrace = <A, R>(effect: Effect.Effect<A, ProviderError.ProviderError, R>, sinceMs: number) =>
  Effect.retry(effect, {
    while: (e) => e.reason._tag === "NotFound" && Date.now() - sinceMs < NOT_FOUND_GRACE_MS,
    schedule: Schedule.spaced("1 second")
  })

/** the provider refused a batch for its size: splitting it can help */
const isTooLarge = (error: ProviderError.ProviderError) =>
  error.reason._tag === "Rejected" &&
  (error.reason.status === 413 ||
    /too large|too big|exceed|maximum size|request_too_large/i.test(`${error.reason.message} ${error.reason.code ?? ""}`))

/** a batch failed because too many tokens are queued at the provider */
const isTokenLimit = (issue: Provider.Issue) =>
  issue.code === "token_limit_exceeded" || /enqueued token limit/i.test(issue.message)

const summaryOf = (issues: ReadonlyArray<Provider.Issue>) =>
  issues.slice(0, 3).map((i) => `${i.code}: ${i.message}`).join("; ") || "no reason given"

/** @internal */
export const run = <Rec, A, Row>(
  pipeline: Pipeline.Pipeline<Rec, A, Row>,
  options: Pipeline.RunOptions = {}
): Effect.Effect<Pipeline.Summary, RunError, Provider.Provider | Ledger.Ledger> =>
  Effect.gen(function*() {
    const ledger = yield* Ledger.Ledger
    const stateDir = path.resolve(options.stateDir ?? ".offpeak")
    const ttlMs = Duration.toMillis(Duration.fromInputUnsafe(options.leaseTtl ?? (process.env.OFFPEAK_LEASE_TTL as Duration.Input | undefined) ?? "30 seconds"))

    // ----- the run, and its lease: one process works a pipeline's runs at a time -----
    const existing = options.resume === undefined ? undefined : yield* ledger.getRun(options.resume).pipe(
      Effect.flatMap(Option.match({
        onNone: () => Effect.fail(new RunError({ runId: options.resume!, message: `no run "${options.resume}" in the ledger` })),
        onSome: Effect.succeed
      }))
    )
    const runId = existing?.id ?? options.runId ?? newRunId(pipeline.name)
    const fail = (msg: string) => new RunError({ runId, message: msg })
    if (existing !== undefined && existing.pipeline !== pipeline.name) {
      return yield* fail(`run ${runId} belongs to pipeline "${existing.pipeline}", not "${pipeline.name}"`)
    }
    if (options.cancel === true && existing?.state === "completed") {
      return yield* fail(
        `run ${runId} completed at ${existing.updatedAt}: there is nothing left to cancel (its rows are delivered)`
      )
    }
    const lease = yield* ledger.acquire({ scope: pipeline.name, runId, ttlMs }).pipe(
      Effect.mapError((e) => fail(e.message))
    )
    const leaseRef = { current: lease }
    /** renews the lease now: a create is sent only by a process that has just proved it still owns the run */
    const renewLease = ledger.renew(leaseRef.current).pipe(
      Effect.tap((renewed) => Effect.sync(() => (leaseRef.current = renewed))),
      Effect.asVoid
    )
    // renewed every third of its ttl; a lease lost (another process took the run over) stops this process's work
    const heartbeat = Effect.gen(function*() {
      while (true) {
        yield* Effect.sleep(Duration.millis(Math.max(100, ttlMs / 3)))
        yield* renewLease.pipe(
          Effect.retry({ times: 2, schedule: Schedule.spaced("1 second"), while: (e) => e.operation !== "lease" })
        )
      }
    }).pipe(Effect.mapError((e) => fail(`${e.message}; this process stops (the run goes on where it is owned)`)))
    return yield* Effect.raceFirst(work(existing), heartbeat).pipe(
      Effect.ensuring(ledger.release(leaseRef.current).pipe(Effect.ignore))
    )

    function work(existing: Ledger.Run | undefined) {
  return Effect.gen(function*() {
    const provider = yield* Provider.Provider
    const run = existing !== undefined
      // read again under the lease: the process that held it before may have moved the run on
      ? Option.getOrElse(yield* ledger.getRun(runId), () => existing)
      : yield* ledger.createRun({
        id: runId,
        pipeline: pipeline.name,
        module: options.module ?? null,
        provider: options.provider ?? pipeline.provider ?? provider.name,
        mode: options.mode ?? pipeline.mode ?? "batch",
        cwd: process.cwd()
      })
    // ----- what the run reads -----
    // a new incremental run starts where the pipeline's last completed run stopped
    let low: string | null = run.snapshot?.low ?? null
    if (existing === undefined && pipeline.incremental && pipeline.source.continueAfter !== undefined) {
      const last = yield* ledger.lastCheckpoint(pipeline.name)
      if (Option.isSome(last)) {
        low = last.value
        yield* ledger.updateRun(runId, { checkpoint: { value: last.value, position: 0 } })
      }
    }
    // a new run of a checkpointed source reads up to the last row the source holds now: rows changed meanwhile sort
    // past that bound and are the next run's work, so none is met twice or skipped (a resume keeps the bound)
    const snap = pipeline.source.snapshot
    let snapshot = run.snapshot
    if (existing === undefined && snap !== undefined) {
      const high = yield* snap.high.pipe(Effect.mapError((e) => fail(e.message)))
      if (Option.isSome(high)) {
        snapshot = { low, high: high.value }
        yield* ledger.updateRun(runId, { snapshot })
      }
    }
    const bounded = snapshot !== null && snap !== undefined ? snap.upTo(snapshot.high) : pipeline.source
    /** the run's whole range, as it reads it from its start */
    const whole = low !== null && bounded.continueAfter !== undefined ? bounded.continueAfter(low, 1) : bounded
    // where reading starts: after this run's last admitted row
    const source = existing !== undefined && run.checkpoint !== null && bounded.continueAfter !== undefined
      ? bounded.continueAfter(run.checkpoint, (run.checkpointPosition ?? 0) + 1)
      : whole

    // ----- where results go -----
    const sinkDisposition = dispositionFor(pipeline.sink, pipeline.incremental === true)
    if (sinkDisposition.startsWith("!")) return yield* fail(sinkDisposition.slice(1))
    // a cancelled run stays cancelled: resuming it finishes the cancellation
    const cancelling = options.cancel === true || run.state === "cancelled"
    yield* ledger.updateRun(runId, { state: cancelling ? "cancelled" : "running", message: null })
    const progress = options.progress ?? Progress.make(runId)
    progress.runId = runId

    const runDir = path.join(stateDir, "runs", runId)
    const batchDir = path.join(runDir, "batches")
    yield* Effect.tryPromise({
      try: () => fs.mkdir(batchDir, { recursive: true }),
      catch: (e) => fail(`cannot create ${batchDir}: ${message(e)}`)
    })
    const deadLetter = pipeline.deadLetter ??
      PartFiles.make<Result.Failed<Rec>>({
        dir: path.join(runDir, "dead-letter"),
        format: { extension: "jsonl", encodeRow: (row) => JSON.stringify(row) + "\n" }
      })

    // ----- limits -----
    const maxRequests = Math.min(pipeline.batch?.maxRequests ?? provider.limits.maxRequests, provider.limits.maxRequests)
    const maxBytes = Math.min(pipeline.batch?.maxBytes ?? provider.limits.maxBytes, provider.limits.maxBytes)
    const maxInFlight = Math.max(1, pipeline.batch?.maxInFlight ?? provider.limits.maxInFlight)
    const maxLineBytes = Math.min(maxBytes, provider.limits.maxRequestBytes)
    const flushAfter = pipeline.batch?.flushAfter ?? "30 seconds"
    const maxAttempts = Math.max(1, pipeline.retry?.maxAttempts ?? 3)
    const retryTruncated = pipeline.retry?.truncated ?? false
    const decodeAttempts = 1 + Math.max(0, pipeline.retry?.decodeErrors ?? 0)
    const backoff = Duration.fromInputUnsafe(pipeline.retry?.backoff ?? "1 second")
    const syncBelow = pipeline.batch?.syncBelow ?? 100
    /** how a batch of `count` requests goes out, by the run's mode (fixed when it is sealed, so a resume keeps it) */
    const batchMode = (count: number): Ledger.Batch["mode"] =>
      run.mode === "sync" || (run.mode === "auto" && count < syncBelow) ? "sync" : "batch"

    // ----- codecs -----
    const recordCodec = Schema.toCodecJson(pipeline.source.schema as Schema.Codec<Rec, unknown>)
    const encodeRecord = Schema.encodeSync(recordCodec as Schema.Codec<Rec, unknown>)
    const decodeRecord = Schema.decodeUnknownSync(recordCodec as Schema.Codec<Rec, unknown>)
    const outputSpec: Request.Output | undefined = pipeline.output === undefined
      ? undefined
      : { name: pipeline.outputName ?? "output", schema: pipeline.output as Schema.Codec<unknown, any> }
    const outputCodec = pipeline.output === undefined
      ? undefined
      : Schema.toCodecJson(pipeline.output as Schema.Codec<A, unknown>) as Schema.Codec<A, unknown>
    const encodeOutput = outputCodec === undefined ? undefined : Schema.encodeSync(outputCodec)
    const decodeOutput = outputCodec === undefined ? undefined : Schema.decodeUnknownSync(outputCodec)

    const requestContext: Pipeline.RequestContext = { provider: provider.name }
    const render = (record: Rec): Request.Request =>
      Request.withOutput(pipeline.request(record, requestContext), outputSpec)

    // ----- provider calls: transient errors retried here (up to `retry.transientFor`), everything else surfaces -----
    const transientFor = Duration.fromInputUnsafe(pipeline.retry?.transientFor ?? "6 hours")
    const transient = transientSchedule(transientFor)
    /** the error of a call that stayed transient past the horizon says so (and keeps its reason) */
    const gaveUp = (error: ProviderError.ProviderError): ProviderError.ProviderError => {
      const message = `${error.reason.message} (still failing after ${Duration.format(transientFor)} of retries, ` +
        `retry.transientFor: resume the run once the provider answers again)`
      const r = error.reason
      const reason = r._tag === "Transport"
        ? new ProviderError.Transport({ message })
        : r._tag === "RateLimited"
        ? new ProviderError.RateLimited({ message, ...(r.retryAfterMs !== undefined ? { retryAfterMs: r.retryAfterMs } : {}) })
        : r._tag === "ServerError"
        ? new ProviderError.ServerError({ message, status: r.status })
        : undefined
      return reason === undefined ? error : new ProviderError.ProviderError({ provider: error.provider, operation: error.operation, reason })
    }
    const retrying = <X>(effect: Effect.Effect<X, ProviderError.ProviderError>) =>
      Effect.retry(effect, { while: ProviderError.isTransient, schedule: transient }).pipe(Effect.mapError(gaveUp))

    // ----- delivery: rows whose outcome is known go to the sinks in parts -----
    const deliveryLock = yield* Semaphore.make(1)
    const remoteSlots = yield* Semaphore.make(maxInFlight)
    const collecting = yield* Semaphore.make(1)
    // at most one create of this run is in an unknown state at a time (sent, its remote id not yet recorded), and the
    // recovery of such a create runs alone: a provider whose batches carry no tag of ours (Anthropic) is never asked
    // to tell two of our creates apart
    const creating = yield* Semaphore.make(1)
    // rows per part, from the size of the outputs seen so far (an embedding decodes to ~12 KB of numbers)
    const stats = { outputBytes: 0, outputs: 0 }
    const partSize = () => {
      if (stats.outputs === 0) return 1_000
      // a stored byte becomes ~8 in memory (an f32 becomes a JS number, then the sink's text of it), plus the record
      const perRow = (stats.outputBytes / stats.outputs) * 8 + 2_048
      return Math.max(100, Math.min(PART_SIZE, Math.floor(PART_BYTES / perRow)))
    }
    const writePart = (seq: number, rows: ReadonlyArray<Ledger.PartRow>) =>
      Effect.gen(function*() {
        const succeeded: Array<Result.Succeeded<Rec, A>> = []
        const positions: Array<number> = []
        const failed: Array<Result.Failed<Rec>> = []
        for (const row of rows) {
          let record: Rec | undefined
          try {
            record = row.record === null ? undefined : decodeRecord(JSON.parse(row.record))
          } catch (e) {
            record = undefined
            failed.push({
              _tag: "Failed",
              key: row.key,
              record,
              kind: "invalid_input",
              message: `stored record cannot be read back: ${message(e)}`,
              raw: row.record ?? undefined,
              position: row.position
            })
            continue
          }
          if (row.failure !== null || row.output === null) {
            failed.push({
              _tag: "Failed",
              key: row.key,
              record,
              kind: row.failure?.kind ?? "lost",
              message: row.failure?.message ?? "no result",
              raw: row.failure?.raw,
              position: row.position
            })
            continue
          }
          stats.outputBytes += row.format === "f32" ? row.output.length * 0.75 : row.output.length
          stats.outputs++
          const json = row.format === "f32" ? fromF32(row.output) : JSON.parse(row.output)
          succeeded.push({
            _tag: "Succeeded",
            key: row.key,
            record: record as Rec,
            output: (decodeOutput === undefined ? json : decodeOutput(json)) as A,
            usage: row.usage ?? { inputTokens: 0, outputTokens: 0 },
            cached: row.cached
          })
          positions.push(row.position)
        }
        const part = { runId, seq }
        if (succeeded.length > 0) {
          // the sink's rows; a row `row()` cannot make is refused on its own
          const toRow = pipeline.row
          const rows: Array<unknown> = []
          const kept: Array<Result.Succeeded<Rec, A>> = []
          const keptAt: Array<number> = []
          succeeded.forEach((result, i) => {
            try {
              rows.push(toRow === undefined ? result : toRow(result))
              kept.push(result)
              keptAt.push(positions[i]!)
            } catch (e) {
              failed.push(refusedRow(result, positions[i]!, `the pipeline's row() failed: ${message(e)}`))
            }
          })
          const refused = yield* writeIsolating(part, rows)
          for (const { index, reason } of refused) {
            failed.push(refusedRow(
              kept[index]!,
              keptAt[index]!,
              `${pipeline.sink.name} refused this row${reason.column !== undefined ? ` (column ${reason.column})` : ""}: ${reason.message}`,
              rows[index]
            ))
          }
          succeeded.length = 0
          const bad = new Set(refused.map((r) => r.index))
          kept.forEach((result, i) => bad.has(i) || succeeded.push(result))
        }
        if (failed.length > 0) yield* deadLetter.write(part, failed)
        yield* Failpoint.hit("part.written")
        Memory.compact()
        progress.succeeded += succeeded.length
        progress.failed += failed.length
        return { seq, delivered: succeeded.length, dead: failed.length } satisfies Ledger.WrittenPart
      })

    /** a delivered row the sink refused: it goes to the dead letter with the value the sink was given */
    const refusedRow = (
      result: Result.Succeeded<Rec, A>,
      position: number,
      why: string,
      row?: unknown
    ): Result.Failed<Rec> => ({
      _tag: "Failed",
      key: result.key,
      record: result.record,
      kind: "sink_refused",
      message: why,
      raw: row === undefined ? undefined : jsonText(row),
      position
    })

    /**
     * Writes a part's rows to the sink; when the sink refuses them for their values (`Sink.Refused`), the rows at
     * fault are isolated — the one the sink names, else by halving — and everything else is written once more as the
     * part: a poison value costs its own row, never the part or the run.
     */
    const writeIsolating = (part: Sink.Part, rows: ReadonlyArray<unknown>) =>
      Effect.gen(function*() {
        // how many rows the last write that went through held (writes are sequential; each a subset of the good rows)
        let lastWritten = -1
        const isolate = (
          indices: ReadonlyArray<number>
        ): Effect.Effect<Array<{ readonly index: number; readonly reason: Sink.Refused }>, Sink.SinkError> =>
          pipeline.sink.write(part, indices.map((i) => rows[i] as Row)).pipe(
            Effect.tap(() => Effect.sync(() => (lastWritten = indices.length))),
            Effect.as([]),
            Effect.catchIf(Sink.isRefused, (error) => {
              const reason = error.reason as Sink.Refused
              if (indices.length === 1) return Effect.succeed([{ index: indices[0]!, reason }])
              const named = reason.row
              if (named !== undefined && named >= 0 && named < indices.length) {
                const rest = indices.filter((_, i) => i !== named)
                return Effect.map(isolate(rest), (more) => [{ index: indices[named]!, reason }, ...more])
              }
              const half = Math.ceil(indices.length / 2)
              return Effect.zipWith(isolate(indices.slice(0, half)), isolate(indices.slice(half)), (a, b) => [...a, ...b])
            })
          )
        const refused = yield* isolate(rows.map((_, i) => i))
        if (refused.length > 0) {
          // the part is what remains, written whole, unless the last write that went through was exactly that (a
          // trial write of a half leaves only that half in a part file)
          const bad = new Set(refused.map((r) => r.index))
          if (lastWritten !== rows.length - bad.size) {
            yield* pipeline.sink.write(part, rows.filter((_, i) => !bad.has(i)) as Array<Row>)
          }
          yield* Effect.logWarning(
            `part ${part.seq}: ${pipeline.sink.name} refused ${refused.length} row(s); they go to the dead letter`
          )
        }
        return refused
      })

    /**
     * Writes every part there is rows for; `whole`: only parts of `partSize()` rows (the rest waits for more). Parts a
     * crash left unwritten come first. Then the next part is fixed and read while the one before is written (so at
     * most two parts are in memory and in `writing` at once), and a written part is committed in the transaction
     * that fixes the part after the next.
     */
    const deliverParts = (whole: boolean) =>
      Effect.gen(function*() {
        for (const seq of yield* ledger.writingParts(runId)) {
          const written = yield* writePart(seq, yield* ledger.partRows(runId, seq))
          yield* ledger.commitPart(runId, written)
        }
        let writing: Fiber.Fiber<Ledger.WrittenPart, Sink.SinkError> | undefined
        let written: Ledger.WrittenPart | undefined
        while (true) {
          const next = yield* ledger.nextPart(runId, { limit: partSize(), whole, written })
          written = writing === undefined ? undefined : yield* Fiber.join(writing)
          if (Option.isNone(next)) {
            if (written !== undefined) yield* ledger.commitPart(runId, written)
            return
          }
          yield* Failpoint.hit("part.assigned")
          writing = yield* Effect.forkChild(writePart(next.value.seq, next.value.rows))
        }
      }).pipe(
        Semaphore.withPermits(deliveryLock, 1),
        Effect.mapError((e) => fail(`delivery: ${e.message}`))
      )
    const deliver = deliverParts(false)

    // ----- admission: source rows → ledger → new requests -----
    type Encoded = { readonly key: string; readonly row: Ledger.AdmitRow; readonly item?: Batcher.Item }
    const prepare = (entry: Source.Item<Rec>): Encoded => {
      if (entry._tag === "Malformed") {
        // filed under the row's key when the source could read it, with its position: a malformed row never takes the
        // key of a good row that comes later (which would then be refused as a duplicate)
        const key = entry.key !== undefined && entry.key.length > 0 ? `${entry.key}#${entry.position}` : `#${entry.position}`
        return {
          key,
          row: {
            key,
            position: entry.position,
            fingerprint: null,
            record: null,
            failure: { kind: "invalid_input", message: entry.reason, raw: entry.raw }
          }
        }
      }
      const where = `${pipeline.source.name} row ${entry.position}${entry.line !== undefined ? ` (line ${entry.line})` : ""}`
      let record: string | undefined
      let recordProblem: unknown
      try {
        record = JSON.stringify(encodeRecord(entry.value))
      } catch (e) {
        recordProblem = e
      }
      let key: string
      try {
        key = pipeline.key(entry.value)
        if (typeof key !== "string" || key.length === 0) throw new Error(`key() returned ${JSON.stringify(key)}`)
      } catch (e) {
        // no key to file it under: its position, with the record (or its text) so the row can be found and fixed
        const k = `#${entry.position}`
        return {
          key: k,
          row: {
            key: k,
            position: entry.position,
            fingerprint: null,
            record: record ?? null,
            failure: {
              kind: "invalid_input",
              message: `${where}: no key: ${message(e)}`,
              raw: record ?? jsonText(entry.value)
            }
          }
        }
      }
      if (record === undefined) {
        return {
          key,
          row: {
            key,
            position: entry.position,
            fingerprint: null,
            record: null,
            failure: {
              kind: "invalid_input",
              message: `${where}: record cannot be stored: ${message(recordProblem)}`,
              raw: jsonText(entry.value)
            }
          }
        }
      }
      const invalid = (why: string): Encoded => ({
        key,
        row: { key, position: entry.position, fingerprint: null, record, failure: { kind: "invalid_input", message: `${where}: ${why}` } }
      })
      let request: Request.Request
      try {
        request = render(entry.value)
      } catch (e) {
        return invalid(`request() failed: ${message(e)}`)
      }
      const fingerprint = Fingerprint.of(request)
      const encoded = provider.encode(request, fingerprint)
      if (R.isFailure(encoded)) return invalid(encoded.failure)
      if (encoded.success.bytes > maxLineBytes) {
        return invalid(
          `the request is ${kib(encoded.success.bytes)} encoded, over the ${kib(maxLineBytes)} one request may take in a batch`
        )
      }
      return {
        key,
        row: { key, position: entry.position, fingerprint, record },
        // a new request is numbered by the position of its first row
        item: {
          id: fingerprint,
          request: entry.position,
          line: encoded.success.line,
          bytes: encoded.success.bytes,
          group: encoded.success.group
        }
      }
    }

    const admit = ({ chunk, prepared }: { readonly chunk: ReadonlyArray<Source.Item<Rec>>; readonly prepared: ReadonlyArray<Encoded> }) =>
      Effect.gen(function*() {
        const admission = yield* ledger.admit(runId, prepared.map((p) => p.row))
        yield* Failpoint.hit("source.admitted")
        const last = chunk[chunk.length - 1]
        if (last?.checkpoint !== undefined) {
          // after the admission: a crash in between re-reads a chunk whose rows are then skipped as admitted
          yield* ledger.updateRun(runId, { checkpoint: { value: last.checkpoint, position: last.position } })
        }
        progress.read += chunk.length
        progress.skipped += admission.skipped
        Memory.compact()
        // rows known at once (cached answers, bad input) go out as whole parts fill up; the rest at the end
        if (admission.ready > 0) yield* deliverParts(true)
        return admission.fresh.flatMap((i) => prepared[i]!.item === undefined ? [] : [prepared[i]!.item!])
      })

    /**
     * When the source has been read to its end: no row may be missing. Positions run 1, 2, 3, … in every run, so
     * admitted rows must equal the highest position; a source that can count must hold no more rows in the run's
     * range than were read (a snapshot source is counted again now: rows edited or deleted since they were read have
     * left the range, rows that entered it late were never read; other sources were counted before the read began).
     */
    const verifySource = (countedBefore: number | undefined) =>
      Effect.gen(function*() {
        const expected = snapshot !== null && whole.count !== undefined ? yield* whole.count : countedBefore
        const counts = yield* ledger.counts(runId)
        if (counts.maxPosition !== counts.items) {
          return yield* fail(
            `${pipeline.source.name}: ${counts.items.toLocaleString("en-US")} rows were admitted but positions reach ${
              counts.maxPosition.toLocaleString("en-US")
            }: ${(counts.maxPosition - counts.items).toLocaleString("en-US")} rows are missing; the run is not complete`
          )
        }
        if (expected !== undefined && counts.items < expected) {
          return yield* fail(
            `${pipeline.source.name}: the source holds ${expected.toLocaleString("en-US")} rows in this run's range but ${
              counts.items.toLocaleString("en-US")
            } were read: ${(expected - counts.items).toLocaleString("en-US")} rows were never read (rows committed ` +
              `late with an older checkpoint value, or a source that skips rows). The run stays unfinished: start a ` +
              `new run to read them (answers already received come from the result cache)`
          )
        }
        progress.sourceRows = expected
        yield* ledger.updateRun(runId, { sourceDone: true })
      }).pipe(Effect.mapError((e) => e._tag === "RunError" ? e : fail(e.message)))

    const fromSource: Stream.Stream<Batcher.Item, RunError> = Stream.unwrap(Effect.gen(function*() {
      // a source without a snapshot is counted before it is read (rows added while it is read are not a loss)
      const countedBefore = snapshot === null && whole.count !== undefined
        ? yield* whole.count.pipe(Effect.mapError((e) => fail(e.message)))
        : undefined
      return source.read.pipe(
      Stream.mapError((e) => fail(e.message)),
      Stream.rechunk(ADMIT_CHUNK),
      Stream.chunks,
      Stream.map((chunk) => ({ chunk, prepared: chunk.map(prepare) })),
      // the next chunk is read and encoded while the ledger (in its own thread) admits this one
      Stream.buffer({ capacity: 1 }),
      Stream.mapEffect((chunk) => admit(chunk).pipe(Effect.mapError((e) => e._tag === "RunError" ? e : fail(e.message)))),
      Stream.flattenIterable,
      Stream.onEnd(verifySource(countedBefore))
    )
    }))

    // ----- queued requests (after a crash, or waiting for a retry) -----
    const fromQueue: Stream.Stream<Batcher.Item, RunError> = Stream.paginate(0, (after: number) =>
      Effect.gen(function*() {
        const page = yield* ledger.queued(runId, { after, limit: QUEUE_PAGE })
        const items: Array<Batcher.Item> = []
        const changed: Array<number> = []
        for (const q of page) {
          try {
            const request = render(decodeRecord(JSON.parse(q.record)))
            const fingerprint = Fingerprint.of(request)
            const encoded = fingerprint === q.fingerprint ? provider.encode(request, fingerprint) : undefined
            if (encoded === undefined || R.isFailure(encoded)) {
              changed.push(q.id)
              continue
            }
            items.push({
              id: fingerprint,
              request: q.id,
              line: encoded.success.line,
              bytes: encoded.success.bytes,
              group: encoded.success.group
            })
          } catch {
            changed.push(q.id)
          }
        }
        if (changed.length > 0) {
          yield* ledger.failQueued(runId, changed, {
            kind: "invalid_input",
            message: "the pipeline's request for this row changed since it was admitted; start a new run to send it"
          })
        }
        return [items, page.length < QUEUE_PAGE ? Option.none() : Option.some(page.at(-1)!.id)] as const
      }).pipe(Effect.mapError((e) => fail(e.message))))

    // ----- sealing: a batch's files are on disk before the ledger knows the batch -----
    /** writes `<id>.jsonl` (the lines) and `<id>.ids` (their custom ids, in order), each atomically */
    const writeBatchFiles = (file: string, items: ReadonlyArray<{ readonly id: string; readonly line: string }>) =>
      Effect.tryPromise({
        try: async () => {
          const write = async (target: string, text: (item: { readonly id: string; readonly line: string }) => string) => {
            const tmp = `${target}.tmp`
            const handle = await fs.open(tmp, "w")
            try {
              let pending: Array<string> = []
              let size = 0
              for (const item of items) {
                const t = text(item)
                pending.push(t)
                size += t.length
                if (size > 1 << 20) {
                  await handle.write(pending.join("\n") + "\n")
                  pending = []
                  size = 0
                }
              }
              if (pending.length > 0) await handle.write(pending.join("\n") + "\n")
              await handle.sync()
            } finally {
              await handle.close()
            }
            await fs.rename(tmp, target)
          }
          await write(`${file}.ids`, (item) => item.id)
          await write(file, (item) => item.line)
        },
        catch: (e) => fail(`cannot write batch file ${file}: ${message(e)}`)
      }).pipe(Effect.uninterruptible)

    /** the lines of a sealed batch with their custom ids, in file order */
    const readBatchFiles = (file: string) =>
      Effect.tryPromise({
        try: async () => {
          const lines = (await fs.readFile(file, "utf8")).split("\n")
          const ids = (await fs.readFile(`${file}.ids`, "utf8")).split("\n")
          if (lines.at(-1) === "") lines.pop()
          if (ids.at(-1) === "") ids.pop()
          if (lines.length !== ids.length) throw new Error(`${lines.length} lines but ${ids.length} ids`)
          return lines.map((line, i) => ({ id: ids[i]!, line }))
        },
        catch: (e) => fail(`cannot read batch file ${file}: ${message(e)}`)
      })

    const removeBatchFiles = (file: string) =>
      Effect.promise(() => Promise.all([fs.rm(file, { force: true }), fs.rm(`${file}.ids`, { force: true })]))

    // batch numbers come from this process alone (sealing and splitting run concurrently), starting after the ledger's
    let seqCounter = yield* ledger.nextBatchSeq(runId).pipe(Effect.mapError((e) => fail(e.message)))
    const nextSeq = () => seqCounter++

    const newBatch = (
      seq: number,
      group: string,
      items: ReadonlyArray<{ readonly id: string; readonly line: string }>,
      mode: Ledger.Batch["mode"]
    ) => {
      const id = `${runId}-b${String(seq).padStart(5, "0")}`
      return {
        id,
        runId,
        seq,
        state: "sealed",
        group,
        file: path.join(batchDir, `${id}.jsonl`),
        requestCount: items.length,
        bytes: items.reduce((sum, item) => sum + Provider.lineBytes(item.line), 0),
        mode,
        remoteId: null,
        remoteMeta: null,
        remoteState: null,
        completed: 0,
        failed: 0,
        createdAt: new Date().toISOString(),
        submittedAt: null,
        endedAt: null
      } satisfies Ledger.Batch
    }

    const seal = (out: Batcher.Output) =>
      Effect.gen(function*() {
        if (out._tag === "TooLarge") {
          yield* ledger.failQueued(runId, [out.item.request], { kind: "invalid_input", message: out.message })
          yield* deliverParts(true)
          return Option.none<Ledger.Batch>()
        }
        const batch = newBatch(nextSeq(), out.group, out.items, batchMode(out.items.length))
        yield* writeBatchFiles(batch.file, out.items)
        yield* ledger.sealBatch(batch, out.items.map((i) => i.request))
        yield* Failpoint.hit("batch.sealed")
        progress.batches++
        return Option.some(batch)
      }).pipe(Effect.mapError((e) => e._tag === "RunError" ? e : fail(e.message)))

    /** custom id → request number of the batch's requests still waiting for a line */
    const requestsOf = (batch: Ledger.Batch) =>
      Effect.map(ledger.unsettled(runId, batch.id), (rows) => new Map(rows.map((r) => [r.fingerprint, r.id])))

    /**
     * Splits a batch the provider refused as too large (or over its enqueued-token limit) into two halves,
     * sealed in one ledger transaction; a batch of one request fails that request instead.
     */
    const split = (batch: Ledger.Batch, why: string) =>
      Effect.gen(function*() {
        const items = yield* readBatchFiles(batch.file)
        const requests = yield* requestsOf(batch)
        if (items.length <= 1) {
          yield* ledger.recordOutcomes(runId, batch.id, items.map((item): Ledger.Outcome => ({
            _tag: "Failed",
            request: requests.get(item.id) ?? -1,
            failure: { kind: "provider_error", message: `${provider.name} refused this request on its own: ${why}` },
            retryable: false
          })), maxAttempts)
          yield* ledger.updateBatch(batch.id, { state: "collected", remoteState: batch.remoteState ?? "refused" })
          yield* removeBatchFiles(batch.file)
          return []
        }
        const half = Math.ceil(items.length / 2)
        const halves = [items.slice(0, half), items.slice(half)].map((part) => ({
          batch: newBatch(nextSeq(), batch.group, part, batch.mode),
          items: part
        }))
        for (const h of halves) yield* writeBatchFiles(h.batch.file, h.items)
        yield* ledger.splitBatch(
          batch.id,
          halves.map((h) => ({ batch: h.batch, requests: h.items.map((i) => requests.get(i.id) ?? -1) }))
        )
        yield* removeBatchFiles(batch.file)
        yield* Effect.logWarning(`batch ${batch.id} split in two (${half} + ${items.length - half} requests): ${why}`)
        progress.batches += 2
        return halves.map((h) => h.batch)
      }).pipe(Effect.mapError((e) => e._tag === "RunError" ? e : fail(e.message)))

    // ----- one batch's lifecycle, from whatever state the ledger has it in -----
    const toOutcome = (line: Provider.LineResult, request: number): Ledger.Outcome => {
      if (line._tag === "LineFailed") {
        return {
          _tag: "Failed",
          request,
          failure: { kind: line.kind, message: line.message, raw: line.raw },
          retryable: line.retryable && !cancelling
        }
      }
      const response = line.response
      if (response._tag === "EmbeddingResponse") {
        const v = response.vector
        stats.outputBytes += v.byteLength
        stats.outputs++
        return {
          _tag: "Succeeded",
          request,
          output: Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString("base64"),
          format: "f32",
          usage: response.usage
        }
      }
      if (response.finishReason === "length" || response.finishReason === "content_filter") {
        return {
          _tag: "Failed",
          request,
          failure: {
            kind: "truncated",
            message: response.finishReason === "length"
              ? "the answer stopped at the token limit (finish reason: length)"
              : "the answer was stopped by a content filter",
            raw: response.text
          },
          retryable: retryTruncated
        }
      }
      if (outputSpec === undefined || encodeOutput === undefined) {
        return { _tag: "Succeeded", request, output: JSON.stringify(response.text), usage: response.usage }
      }
      const decoded = provider.decodeOutput(outputSpec, response.text)
      if (R.isFailure(decoded)) {
        return {
          _tag: "Failed",
          request,
          failure: { kind: "decode_error", message: decoded.failure, raw: response.text },
          retryable: decodeAttempts > 1,
          maxAttempts: decodeAttempts
        }
      }
      try {
        return {
          _tag: "Succeeded",
          request,
          output: JSON.stringify(encodeOutput(decoded.success as A)),
          usage: response.usage
        }
      } catch (e) {
        return {
          _tag: "Failed",
          request,
          failure: { kind: "decode_error", message: message(e), raw: response.text },
          retryable: false
        }
      }
    }

    /** records every request of an ended batch; returns the halves to send when the batch must be split */
    const collect = (
      batch: Ledger.Batch,
      remote: Provider.RemoteBatch,
      status: Provider.Status
    ): Effect.Effect<ReadonlyArray<Ledger.Batch>, RunError | Ledger.LedgerError | ProviderError.ProviderError> =>
      Effect.gen(function*() {
        if (status.state === "failed") {
          const withLine = status.issues.filter((i) => i.line !== undefined)
          if (withLine.length === 0 && status.issues.some(isTokenLimit)) {
            // over the provider's enqueued-token limit: smaller batches, a little later
            return yield* Effect.sleep(backoff).pipe(Effect.andThen(split(batch, summaryOf(status.issues))))
          }
          const items = withLine.length === 0 ? [] : yield* readBatchFiles(batch.file)
          const bad = new Map<string, Provider.Issue>()
          for (const issue of withLine) {
            const id = items[issue.line! - 1]?.id
            if (id !== undefined && !bad.has(id)) bad.set(id, issue)
          }
          const summary = summaryOf(status.issues)
          const unsettled = yield* ledger.unsettled(runId, batch.id)
          yield* ledger.recordOutcomes(
            runId,
            batch.id,
            unsettled.map(({ fingerprint, id: request }): Ledger.Outcome => {
              const issue = bad.get(fingerprint)
              return issue !== undefined
                ? {
                  _tag: "Failed",
                  request,
                  failure: { kind: "provider_error", message: `rejected by ${provider.name} batch validation: ${issue.code}: ${issue.message}` },
                  retryable: false
                }
                : {
                  _tag: "Failed",
                  request,
                  failure: { kind: "provider_error", message: `batch ${remote.id} failed validation (${summary})` },
                  retryable: true
                }
            }),
            maxAttempts
          )
          return []
        }
        // the batch's requests still waiting for a line, read while the download starts: a line for anything else
        // (seen before a crash) is skipped
        const waiting = yield* Effect.forkChild(requestsOf(batch))
        const asProviderError = (e: Ledger.LedgerError) =>
          new ProviderError.ProviderError({
            provider: provider.name,
            operation: "results",
            reason: new ProviderError.Protocol({ message: `ledger: ${e.message}` })
          })
        // rows go to the sinks in whole parts while later lines are still being recorded (woken after each record)
        const recorded = yield* Queue.sliding<void, Cause.Done>(1)
        const delivering = Stream.fromQueue(recorded).pipe(Stream.runForEach(() => deliverParts(true)))
        // lines are parsed while the ledger records; each transaction takes every outcome parsed meanwhile (up to
        // RECORD_MAX), so transactions stay small while the ledger keeps up and grow when it is the slower side
        const parseAndRecord = Effect.gen(function*() {
          const parsed = yield* Queue.unbounded<Parsed, ProviderError.ProviderError | Cause.Done>()
          // parsed outcomes not yet recorded hold at most RECORD_BYTES (a chunk bigger than that alone waits for none)
          const room = yield* Semaphore.make(RECORD_BYTES)
          const parsing = provider.results(remote, status).pipe(
            // lines in groups (a provider's stream may hand them over one at a time)
            Stream.rechunk(PARSE_CHUNK),
            Stream.chunks,
            Stream.runForEach((lines) =>
              Effect.gen(function*() {
                const requests = yield* Fiber.join(waiting).pipe(Effect.mapError(asProviderError))
                const outcomes: Array<Ledger.Outcome> = []
                let bytes = 0
                for (const line of lines) {
                  const request = requests.get(line.id)
                  if (request === undefined) continue
                  const outcome = toOutcome(line, request)
                  outcomes.push(outcome)
                  bytes += outcomeBytes(outcome)
                }
                if (outcomes.length > 0) {
                  const weight = Math.min(bytes, RECORD_BYTES)
                  yield* Semaphore.take(room, weight)
                  yield* Queue.offer(parsed, { outcomes, weight })
                }
                // between two groups the ledger thread's answers get in, so it never waits on a long parse
                yield* Effect.yieldNow
              })
            ),
            Effect.andThen(Queue.end(parsed)),
            Effect.catch((e) => Queue.fail(parsed, e))
          )
          const recording = Effect.gen(function*() {
            while (true) {
              const taken = yield* Queue.takeAll(parsed)
              const outcomes = taken.flatMap((p) => p.outcomes)
              for (let i = 0; i < outcomes.length; i += RECORD_MAX) {
                yield* ledger.recordOutcomes(runId, batch.id, outcomes.slice(i, i + RECORD_MAX), maxAttempts).pipe(
                  Effect.mapError(asProviderError)
                )
                yield* Failpoint.hit("results.recorded")
                yield* Queue.offer(recorded, undefined)
              }
              yield* Semaphore.release(room, taken.reduce((sum, p) => sum + p.weight, 0))
            }
          }).pipe(Pull.catchDone(() => Effect.void))
          yield* Effect.all([parsing, recording], { concurrency: 2, discard: true })
        })
        const recording = withGrace(retrying(parseAndRecord), Date.now()).pipe(Effect.ensuring(Queue.end(recorded)))
        yield* Effect.all([recording, delivering], { concurrency: 2, discard: true })
        // "completed" is never trusted on its own: every request must have had a line
        const missing = yield* ledger.unsettled(runId, batch.id)
        if (missing.length > 0) {
          const kind: Result.FailureKind = status.state === "expired"
            ? "expired"
            : status.state === "cancelled"
            ? "cancelled"
            : "lost"
          yield* ledger.recordOutcomes(
            runId,
            batch.id,
            missing.map(({ id: request }): Ledger.Outcome => ({
              _tag: "Failed",
              request,
              failure: {
                kind,
                message: `batch ${remote.id} ended ${status.providerState} without a result line for this request`
              },
              retryable: !cancelling
            })),
            maxAttempts
          )
        }
        return []
      })

    /**
     * Creates the remote batch once: after a transient error the create may have gone through, so every attempt
     * after the first looks for the batch before sending again.
     */
    const submitOnce = (submission: Provider.Lines) =>
      Effect.gen(function*() {
        let looked = false
        return yield* Effect.suspend(() =>
          looked
            ? retrying(provider.find(submission)).pipe(
              Effect.flatMap(Option.match({ onSome: Effect.succeed, onNone: () => provider.submit(submission) }))
            )
            : provider.submit(submission)
        ).pipe(
          Effect.tapError((error) => Effect.sync(() => (looked = ProviderError.isTransient(error)))),
          Effect.retry({ while: ProviderError.isTransient, schedule: transient }),
          Effect.mapError(gaveUp)
        )
      })

    /** once the run is cancelled: the batch's requests never sent end `cancelled` */
    const cancelUnsent = (batch: Ledger.Batch) =>
      Effect.gen(function*() {
        const unsent = yield* ledger.unsettled(runId, batch.id)
        yield* ledger.recordOutcomes(runId, batch.id, unsent.map(({ id: request }): Ledger.Outcome => ({
          _tag: "Failed",
          request,
          failure: { kind: "cancelled", message: "the run was cancelled before this request was sent" },
          retryable: false
        })), maxAttempts)
      })

    /** every request of the batch is recorded: it is done with, and its files go */
    const markCollected = (batch: Ledger.Batch, patch: Parameters<Ledger.Service["updateBatch"]>[1] = {}) =>
      Effect.gen(function*() {
        yield* ledger.updateBatch(batch.id, { ...patch, state: "collected" })
        yield* Failpoint.hit("batch.collected")
        yield* removeBatchFiles(batch.file)
      })

    /**
     * A `sync` batch: each of its requests still waiting for an answer goes through the synchronous API, and the
     * answers are recorded as they come (in groups), like a batch's result lines, with the same retries and
     * dead-letter rules. A resumed run sends only the requests with no answer recorded: calls in flight at a crash are
     * sent again (and paid again), which the batch API's tag-and-find spares a batch.
     */
    const sendSync = (batch: Ledger.Batch) =>
      Effect.gen(function*() {
        const counts = { completed: batch.completed, failed: batch.failed }
        if (cancelling) {
          yield* cancelUnsent(batch)
        } else {
          const requests = yield* requestsOf(batch)
          const items = (yield* readBatchFiles(batch.file)).filter((item) => requests.has(item.id))
          if (batch.state === "sealed") yield* ledger.updateBatch(batch.id, { state: "submitted", remoteState: "sync", submitted: true })
          progress.submitted += items.length
          progress.inFlight++
          progress.maxInFlight = Math.max(progress.maxInFlight, progress.inFlight)
          yield* Stream.fromIterable(items).pipe(
            Stream.mapEffect((item) => {
              const request = requests.get(item.id)!
              return retrying(provider.sync(item.line)).pipe(
                Effect.map((line) => toOutcome(line, request)),
                // a call that keeps failing (no answer about the request itself) is tried again in a later round
                Effect.catch((error) =>
                  Effect.succeed<Ledger.Outcome>({
                    _tag: "Failed",
                    request,
                    failure: { kind: "provider_error", message: `${provider.name} synchronous call: ${error.message}` },
                    retryable: true
                  })
                )
              )
            }, { concurrency: SYNC_CALLS, unordered: true }),
            Stream.groupedWithin(SYNC_RECORD, SYNC_RECORD_EVERY),
            Stream.runForEach((outcomes) =>
              Effect.gen(function*() {
                yield* ledger.recordOutcomes(runId, batch.id, outcomes, maxAttempts)
                yield* Failpoint.hit("results.recorded")
                for (const o of outcomes) o._tag === "Succeeded" ? counts.completed++ : counts.failed++
                progress.remoteCompleted += outcomes.length
                yield* deliverParts(true)
              })
            ),
            Effect.ensuring(Effect.sync(() => {
              progress.inFlight--
            })),
            Semaphore.withPermits(remoteSlots, 1)
          )
        }
        yield* markCollected(batch, { remoteState: "sync", ended: true, ...counts })
        yield* deliver
        Memory.compact()
      })

    const drive = (batch: Ledger.Batch): Effect.Effect<void, RunError> =>
      Effect.gen(function*() {
        if (batch.mode === "sync") return yield* sendSync(batch)
        const submission: Provider.Lines = {
          _tag: "Lines",
          batchId: batch.id,
          runId,
          sealedAt: Date.parse(batch.createdAt),
          group: batch.group,
          path: batch.file,
          count: batch.requestCount,
          bytes: batch.bytes
        }
        let state = batch.state
        let remote: Provider.RemoteBatch | undefined = batch.remoteId === null
          ? undefined
          : { id: batch.remoteId, meta: batch.remoteMeta ?? undefined }

        let submittedAt = batch.submittedAt === null ? Date.now() : Date.parse(batch.submittedAt)
        const markSubmitted = (found: Provider.RemoteBatch) =>
          Effect.gen(function*() {
            remote = found
            submittedAt = Date.now()
            yield* ledger.updateBatch(batch.id, { state: "submitted", remoteId: found.id, remoteMeta: found.meta, submitted: true })
            yield* Failpoint.hit("batch.submitted")
            state = "submitted"
            progress.submitted += batch.requestCount
          })

        let halves: ReadonlyArray<Ledger.Batch> = []
        let status: Provider.Status | undefined
        // a slot is held from create to the provider's last word; collecting and delivering happen outside it
        yield* Effect.gen(function*() {
          yield* Effect.gen(function*() {
          if (state === "submitting") {
            // a crash between create and the ledger write: adopt the batch the provider already has
            const found = yield* retrying(provider.find(submission))
            if (Option.isSome(found)) yield* markSubmitted(found.value)
            else state = "sealed"
          }
          if (state === "sealed" && cancelling) {
            yield* cancelUnsent(batch)
            state = "ended"
          }
          if (state === "sealed") {
            yield* renewLease
            yield* ledger.updateBatch(batch.id, { state: "submitting" })
            const created = yield* submitOnce(submission).pipe(
              Effect.map(Option.some),
              Effect.catchIf(isTooLarge, (error) => split(batch, error.reason.message).pipe(
                Effect.tap((parts) => Effect.sync(() => (halves = parts))),
                Effect.as(Option.none<Provider.RemoteBatch>())
              ))
            )
            if (Option.isSome(created)) {
              yield* Failpoint.hit("batch.created")
              yield* markSubmitted(created.value)
            } else {
              state = "collected"
            }
          }
          }).pipe(Semaphore.withPermits(creating, 1))
          if (state === "submitted" && cancelling) {
            // ask the provider to stop; a batch that already ended refuses, which is fine
            yield* retrying(provider.cancel(remote!)).pipe(
              Effect.catch((error) => Effect.logWarning(`cancel ${remote!.id}: ${error.message}`))
            )
          }
          if (state === "submitted") {
            progress.inFlight++
            progress.maxInFlight = Math.max(progress.maxInFlight, progress.inFlight)
            let reported = 0
            let last: Provider.Status | undefined
            const pollOnce = Effect.gen(function*() {
              const status = yield* withGrace(retrying(provider.status(remote!)), submittedAt)
              yield* Failpoint.hit("batch.polled")
              progress.remoteCompleted += status.counts.completed + status.counts.failed - reported
              reported = status.counts.completed + status.counts.failed
              last = status
              yield* ledger.updateBatch(batch.id, {
                remoteState: status.providerState,
                completed: status.counts.completed,
                failed: status.counts.failed
              })
              return status
            })
            yield* pollOnce.pipe(
              Effect.repeat({ schedule: provider.pollSchedule, until: (s) => Provider.isTerminal(s.state) }),
              Effect.ensuring(Effect.sync(() => {
                progress.inFlight--
                progress.remoteCompleted -= reported
              }))
            )
            status = last!
            yield* ledger.updateBatch(batch.id, { state: "ended", ended: true })
            state = "ended"
          }
        }).pipe(Semaphore.withPermits(remoteSlots, 1))
        if (state === "ended" && remote !== undefined) {
          const final = status ?? (yield* withGrace(retrying(provider.status(remote)), submittedAt))
          // one batch's results at a time: recording them is the ledger's work anyway, and memory holds one stream
          halves = yield* Semaphore.withPermits(collecting, 1)(collect(batch, remote, final))
        }
        if (cancelling && halves.length > 0) {
          // halves of a split batch are not sent once the run is cancelled
          for (const half of halves) yield* drive(half)
          halves = []
        }
        if (halves.length === 0 && state !== "collected") yield* markCollected(batch)
        yield* deliver
        Memory.compact()
        // the halves of a split batch go out one after the other, each in a slot of its own
        for (const half of halves) yield* drive(half)
      }).pipe(
        Effect.mapError((e) => e._tag === "RunError" ? e : fail(`batch ${batch.id}: ${e.message}`))
      )

    // at most maxInFlight batches at the provider (the slots), and as many again being collected and delivered, so
    // the source is read on while finished batches are collected, and no further ahead than that
    const inFlight = (batches: Stream.Stream<Ledger.Batch, RunError>) =>
      batches.pipe(Stream.mapEffect(drive, { concurrency: 2 * maxInFlight, unordered: true }), Stream.runDrain)

    const sealed = (items: Stream.Stream<Batcher.Item, RunError>): Stream.Stream<Ledger.Batch, RunError> =>
      items.pipe(
        Batcher.batches({ maxRequests, maxBytes, maxRequestBytes: provider.limits.maxRequestBytes, flushAfter }),
        Stream.mapEffect(seal),
        Stream.map(Option.getOrUndefined),
        Stream.filter(Predicate.isNotUndefined),
        // the next batch is sealed (on disk, not sent) while the slots are busy, so a freed slot is refilled at once
        Stream.buffer({ capacity: 1 })
      )

    const cancelQueued = Effect.gen(function*() {
      while (true) {
        const page = yield* ledger.queued(runId, { after: 0, limit: QUEUE_PAGE })
        if (page.length === 0) return
        yield* ledger.failQueued(runId, page.map((q) => q.id), {
          kind: "cancelled",
          message: "the run was cancelled before this request was sent"
        })
      }
    }).pipe(Effect.mapError((e) => fail(e.message)))

    /** removes batch files no open batch owns: left by a kill before a seal, or after a collect */
    const sweepBatchFiles = (open: ReadonlyArray<Ledger.Batch>) =>
      Effect.promise(async () => {
        const keep = new Set(open.map((b) => path.basename(b.file)))
        for (const name of await fs.readdir(batchDir)) {
          const owner = name.replace(/\.ids$/, "").replace(/\.tmp$/, "").replace(/\.ids$/, "")
          if (!keep.has(owner) || name.endsWith(".tmp")) await fs.rm(path.join(batchDir, name), { force: true })
        }
      })

    const body = Effect.gen(function*() {
      yield* deliver
      const open = yield* ledger.openBatches(runId).pipe(Effect.mapError((e) => fail(e.message)))
      yield* sweepBatchFiles(open)
      const counts0 = yield* ledger.counts(runId).pipe(Effect.mapError((e) => fail(e.message)))
      progress.succeeded = counts0.delivered
      progress.failed = counts0.dead
      progress.batches += open.length
      if (cancelling) {
        // nothing more is sent: requests never batched end cancelled, batches at the provider are cancelled there
        yield* cancelQueued
        yield* inFlight(Stream.fromIterable(open))
      } else {
        const fresh = run.sourceDone ? fromQueue : Stream.concat(fromQueue, fromSource)
        yield* inFlight(Stream.concat(Stream.fromIterable(open), sealed(fresh)))
      }
      for (let round = 1; !cancelling; round++) {
        const counts = yield* ledger.counts(runId).pipe(Effect.mapError((e) => fail(e.message)))
        if (counts.queued === 0) break
        if (round > maxAttempts + 2) return yield* fail(`${counts.queued} requests still queued after ${round - 1} retry rounds`)
        yield* Effect.sleep(Duration.min(Duration.times(backoff, 2 ** (round - 1)), Duration.minutes(1)))
        yield* inFlight(sealed(fromQueue))
      }
      yield* deliver
      const counts = yield* ledger.counts(runId).pipe(Effect.mapError((e) => fail(e.message)))
      const state: Run.State = cancelling ? "cancelled" : counts.pendingItems === 0 ? "completed" : "failed"
      if (state === "completed") {
        // the sinks' dispositions: `replace` drops what earlier runs wrote, now that this run's output is whole
        const finishing = (sink: Sink.Sink<any>, disposition: Sink.Disposition | `!${string}`) =>
          sink.finish === undefined || disposition.startsWith("!")
            ? Effect.void
            : sink.finish({ runId, disposition: disposition as Sink.Disposition }).pipe(
              Effect.mapError((e) => fail(`${sink.name}: ${e.message}`))
            )
        yield* finishing(pipeline.sink, sinkDisposition)
        yield* finishing(deadLetter, dispositionFor(deadLetter, pipeline.incremental === true))
      }
      yield* ledger.updateRun(runId, {
        state,
        message: counts.pendingItems === 0 ? null : `${counts.pendingItems} rows were not delivered`
      }).pipe(Effect.mapError((e) => fail(e.message)))
      return {
        runId,
        state,
        rows: counts.items,
        succeeded: counts.delivered,
        failed: counts.dead,
        pending: counts.pendingItems,
        batches: counts.batches,
        deadLetter: deadLetter.name,
        progress
      } satisfies Pipeline.Summary
    })

    return yield* body.pipe(
      Effect.onInterrupt(() => cancelling ? Effect.void : ledger.updateRun(runId, { state: "detached" }).pipe(Effect.ignore)),
      Effect.tapError((e) => ledger.updateRun(runId, { state: "failed", message: e.message }).pipe(Effect.ignore))
    )
  }).pipe(Effect.mapError((e) => e._tag === "RunError" ? e : fail(e.message)))
    }
  }).pipe(Effect.mapError((e) => e._tag === "RunError" ? e : new RunError({ runId: options.resume ?? "", message: e.message })))
