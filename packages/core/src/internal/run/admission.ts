/**
 * Admission: source rows become requests. The run's range of the source is set (where a resume starts, the snapshot
 * bound of a checkpointed source), each chunk of rows is encoded (key, record, request, fingerprint, the provider's
 * line) while the ledger admits the one before, rows known at once are delivered, and new requests go on to the
 * Batcher; requests waiting in the queue (after a crash, or for a retry) are rendered again from their stored records.
 * When the source ends, no row may be missing.
 *
 * @internal
 */
import { Effect, Option, Result as R, Stream } from "effect"
import { createHash } from "node:crypto"
import type * as Batcher from "../../Batcher.ts"
import * as Failpoint from "../../Failpoint.ts"
import * as Fingerprint from "../../Fingerprint.ts"
import type * as Ledger from "../../Ledger.ts"
import type * as Request from "../../Request.ts"
import type { RunError } from "../../Run.ts"
import type * as Source from "../../Source.ts"
import * as Memory from "../memory.ts"
import type { Context } from "./context.ts"
import { orFail as orFailOf } from "./context.ts"
import { jsonText } from "./delivery.ts"

/** source rows admitted in one ledger transaction … */
const ADMIT_CHUNK = 2_000
/** … and at most about this many bytes of records and request lines: wide rows make smaller chunks, so memory follows bytes */
const ADMIT_BYTES = 4 * 1024 * 1024
/** queued requests read at once */
const QUEUE_PAGE = 2_000

const message = (u: unknown) => u instanceof Error ? u.message : String(u)

/** `1 row is` / `3 rows are` (or `was` / `were`), as a message needs it */
const rows = (n: number, past = false) =>
  n === 1 ? `1 row ${past ? "was" : "is"}` : `${n.toLocaleString("en-US")} rows ${past ? "were" : "are"}`

const kib = (bytes: number) => `${(bytes / 1024).toFixed(1)} KiB`

/**
 * What the run reads: a new incremental run starts where the pipeline's last completed run stopped; a new run of a
 * checkpointed source reads up to the last row the source holds now (rows changed meanwhile sort past that bound and
 * are the next run's work, so none is met twice or skipped; a resume keeps the bound); a resume starts after the last
 * row it admitted. `whole` is the run's range as read from its start.
 */
export const range = <Rec, A, Row>(ctx: Context<Rec, A, Row>) =>
  Effect.gen(function*() {
    const { run, runId, ledger, pipeline, fail } = ctx
    const resumed = ctx.options.resume !== undefined
    let low: string | null = run.snapshot?.low ?? null
    if (!resumed && pipeline.incremental && pipeline.source.continueAfter !== undefined) {
      const last = yield* ledger.lastCheckpoint(pipeline.name, { source: pipeline.source.name, endpoint: run.endpoint })
      if (Option.isSome(last)) {
        low = last.value
        yield* ledger.updateRun(runId, { checkpoint: { value: last.value, position: 0 } })
      }
    }
    const snap = pipeline.source.snapshot
    let snapshot = run.snapshot
    if (!resumed && snap !== undefined) {
      const high = yield* snap.high.pipe(Effect.mapError((e) => fail(e.message)))
      if (Option.isSome(high)) {
        snapshot = { low, high: high.value }
        yield* ledger.updateRun(runId, { snapshot })
      }
    }
    const bounded = snapshot !== null && snap !== undefined ? snap.upTo(snapshot.high) : pipeline.source
    const whole = low !== null && bounded.continueAfter !== undefined ? bounded.continueAfter(low, 1) : bounded
    const source = resumed && run.checkpoint !== null && bounded.continueAfter !== undefined
      ? bounded.continueAfter(run.checkpoint, (run.checkpointPosition ?? 0) + 1)
      : whole
    return { source, whole, snapshot }
  }).pipe(orFailOf(ctx))

/** admission for one run, reading `read` of its range */
export const make = <Rec, A, Row>(
  ctx: Context<Rec, A, Row>,
  read: { readonly source: Source.Source<Rec>; readonly whole: Source.Source<Rec>; readonly snapshot: Ledger.Run["snapshot"] },
  deliverParts: (whole: boolean) => Effect.Effect<void, RunError>
) => {
  const { runId, ledger, pipeline, provider, fail } = ctx
  const { source, whole, snapshot } = read
  const { encodeRecord, decodeRecord, render } = ctx.codecs
  const { maxLineBytes } = ctx.limits
  const orFail = orFailOf(ctx)
  /**
   * The batch group of a request: the provider's, and with `batch.groupByPrefix` its prompt prefix (the first
   * `cachePrefix` messages, else all but the last), so requests sharing a prefix fill the same batches.
   */
  const groupOf = (group: string, request: Request.Request): string => {
    if (pipeline.batch?.groupByPrefix !== true || request._tag !== "Chat") return group
    const shared = request.messages.slice(0, request.cachePrefix ?? Math.max(1, request.messages.length - 1))
    const hash = createHash("sha1")
    for (const m of shared) hash.update(`${m.role}\u0000${m.content}\u0000`)
    return `${group}\u0000${hash.digest("hex").slice(0, 16)}`
  }

  /**
   * a request's worst case when the run has a budget: at the sync price unless every batch goes to the batch API (a
   * deadline may send any of them synchronously)
   */
  const worstOf = (request: Request.Request): R.Result<bigint | undefined, string> =>
    ctx.budget === null
      ? R.succeed(undefined)
      : ctx.worstCase(request, ctx.run.mode === "batch" && ctx.switchAt === null ? "batch" : "sync")

  /** a row ready for admission: its ledger row, its request's batch item, or why the run cannot go on */
  type Encoded = {
    readonly key: string
    readonly row: Ledger.AdmitRow
    readonly item?: Batcher.Item
    readonly fatal?: string
  }
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
    // the row named in a failure's message (made only when one is written)
    const where = () => `${pipeline.source.name} row ${entry.position}${entry.line !== undefined ? ` (line ${entry.line})` : ""}`
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
            message: `${where()}: no key: ${message(e)}`,
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
            message: `${where()}: record cannot be stored: ${message(recordProblem)}`,
            raw: jsonText(entry.value)
          }
        }
      }
    }
    const invalid = (why: string): Encoded => ({
      key,
      row: { key, position: entry.position, fingerprint: null, record, failure: { kind: "invalid_input", message: `${where()}: ${why}` } }
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
    const worst = worstOf(request)
    if (R.isFailure(worst)) return { key, row: { key, position: entry.position, fingerprint, record }, fatal: worst.failure }
    return {
      key,
      row: { key, position: entry.position, fingerprint, record },
      // a new request is numbered by the position of its first row
      item: {
        id: fingerprint,
        request: entry.position,
        line: encoded.success.line,
        bytes: encoded.success.bytes,
        group: groupOf(encoded.success.group, request),
        model: request.model,
        worst: worst.success
      }
    }
  }

  /** rows read and encoded, waiting to be admitted together */
  type Pending = { chunk: Array<Source.Item<Rec>>; prepared: Array<Encoded>; bytes: number }

  const admit = ({ chunk, prepared }: { readonly chunk: ReadonlyArray<Source.Item<Rec>>; readonly prepared: ReadonlyArray<Encoded> }) =>
    Effect.gen(function*() {
      const fatal = prepared.find((p) => p.fatal !== undefined)?.fatal
      if (fatal !== undefined) return yield* fail(fatal)
      const admission = yield* ledger.admit(runId, prepared.map((p) => p.row))
      yield* Failpoint.hit("source.admitted")
      const last = chunk[chunk.length - 1]
      if (last?.checkpoint !== undefined) {
        // after the admission: a crash in between re-reads a chunk whose rows are then skipped as admitted
        yield* ledger.updateRun(runId, { checkpoint: { value: last.checkpoint, position: last.position } })
      }
      ctx.emit({ _tag: "RowsRead", rows: chunk.length, skipped: admission.skipped })
      yield* Effect.annotateCurrentSpan({ "offpeak.rows.skipped": admission.skipped, "offpeak.rows.fresh": admission.fresh.length })
      Memory.compact()
      // rows known at once (cached answers, bad input) go out as whole parts fill up; the rest at the end
      if (admission.ready > 0) yield* deliverParts(true)
      return admission.fresh.flatMap((i) => prepared[i]!.item === undefined ? [] : [prepared[i]!.item!])
    }).pipe(Effect.withSpan("offpeak.source.admit", { attributes: { "offpeak.run.id": runId, "offpeak.rows": chunk.length } }))

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
          }: ${rows(counts.maxPosition - counts.items)} missing; the run is not complete`
        )
      }
      if (expected !== undefined && counts.items < expected) {
        return yield* fail(
          `${pipeline.source.name}: the source holds ${expected.toLocaleString("en-US")} rows in this run's range but ${
            counts.items.toLocaleString("en-US")
          } were read: ${rows(expected - counts.items, true)} never read (rows committed ` +
            `late with an older checkpoint value, or a source that skips rows). The run stays unfinished: start a ` +
            `new run to read them (answers already received come from the result cache)`
        )
      }
      ctx.emit({ _tag: "SourceEnded", rows: counts.items, counted: expected })
      yield* ledger.updateRun(runId, { sourceDone: true })
    }).pipe(orFail)

  const fromSource: Stream.Stream<Batcher.Item, RunError> = Stream.unwrap(Effect.gen(function*() {
    // a source without a snapshot is counted before it is read (rows added while it is read are not a loss)
    const countedBefore = snapshot === null && whole.count !== undefined
      ? yield* whole.count.pipe(Effect.mapError((e) => fail(e.message)))
      : undefined
    if (countedBefore !== undefined) ctx.emit({ _tag: "SourceSized", rows: countedBefore })
    return source.read.pipe(
      Stream.mapError((e) => fail(e.message)),
      Stream.mapAccum(
        (): Pending => ({ chunk: [], prepared: [], bytes: 0 }),
        (acc, entry): readonly [Pending, ReadonlyArray<Pending>] => {
          const encoded = prepare(entry)
          acc.chunk.push(entry)
          acc.prepared.push(encoded)
          const record = encoded.row.record?.length ?? 0
          acc.bytes += record + (encoded.row.failure?.raw?.length ?? 0) + (encoded.item?.bytes ?? 0)
          // the records' size sets the size of the parts delivered later
          ctx.stats.recordBytes += record
          ctx.stats.records++
          return acc.chunk.length >= ADMIT_CHUNK || acc.bytes >= ADMIT_BYTES
            ? [{ chunk: [], prepared: [], bytes: 0 }, [acc]]
            : [acc, []]
        },
        { onHalt: (acc) => acc.chunk.length > 0 ? [acc] : [] }
      ),
      // the next chunk is read and encoded while the ledger (in its own thread) admits this one
      Stream.buffer({ capacity: 1 }),
      Stream.mapEffect((chunk) => orFail(admit(chunk))),
      Stream.flattenIterable,
      Stream.onEnd(verifySource(countedBefore))
    )
  }))

  // ----- queued requests (after a crash, or waiting for a retry) -----
  const fromQueue: Stream.Stream<Batcher.Item, RunError> = Stream.paginate(0, (after: number) =>
    Effect.gen(function*() {
      const page = yield* orFail(ledger.queued(runId, { after, limit: QUEUE_PAGE }))
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
          const worst = worstOf(request)
          if (R.isFailure(worst)) return yield* fail(worst.failure)
          items.push({
            id: fingerprint,
            request: q.id,
            line: encoded.success.line,
            bytes: encoded.success.bytes,
            group: groupOf(encoded.success.group, request),
            model: request.model,
            worst: worst.success
          })
        } catch {
          changed.push(q.id)
        }
      }
      if (changed.length > 0) {
        yield* orFail(ledger.failQueued(runId, changed, {
          kind: "invalid_input",
          message: "the pipeline's request for this row changed since it was admitted; start a new run to send it"
        }))
      }
      return [items, page.length < QUEUE_PAGE ? Option.none() : Option.some(page.at(-1)!.id)] as const
    }))

  return { fromSource, fromQueue }
}
