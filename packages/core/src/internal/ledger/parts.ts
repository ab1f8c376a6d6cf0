/**
 * Delivery parts: a part's rows fixed before the sinks write it (rows on their own, or a range of settled
 * requests with every row that asked for them), read back, and committed with its counts.
 *
 * @internal
 */
import { Effect, Option } from "effect"
import type { Failure, PartRow, Service, WrittenPart } from "../../Ledger.ts"
import { LedgerError } from "./errors.ts"
import type { FailureKind } from "../../Result.ts"
import { toNumber, mapError } from "./shared.ts"
import type { Shared } from "./shared.ts"
import * as Redact from "../../Redact.ts"

/** a part's row as the SQLite thread sends it: item, request, output columns (see `rowsOf`) */
type PartValues = readonly [
  key: string,
  position: number | bigint,
  record: string | null,
  fingerprint: string | null,
  cached: number | bigint | null,
  /** null when the row succeeded, else a JSON array: the item's error kind, message, raw, then the request's */
  failure: string | null,
  output: string | null,
  outputFormat: string | null,
  inputTokens: number | bigint | null,
  outputTokens: number | bigint | null,
  cachedInputTokens: number | bigint | null
]

type Errors = readonly [
  itemKind: string | null,
  itemMessage: string | null,
  itemRaw: string | null,
  kind: string | null,
  message: string | null,
  raw: string | null
]

/** this part of the ledger, on the shared state */
export const make = (shared: Shared) => {
  const { sql, runNum, orFail, serially, fence, fenceStarted, inList, deliverable } = shared

  /** a part's rows: its own rows (`i.part`), or the rows of its range of settled requests (`lo`..`hi`) */
  type Source = { readonly seq: number; readonly lo: number | null; readonly hi: number | null }

  /** where a part's rows come from */
  const partSource = (runId: string, seq: number) =>
    Effect.gen(function*() {
      const parts = yield* sql<{ lo: number | bigint | null; hi: number | bigint | null }>`
        SELECT lo, hi FROM offpeak_parts WHERE run_id = ${runId} AND seq = ${seq}`
      const part = parts[0]
      if (part === undefined) return yield* new LedgerError({ operation: "part", message: `no part ${seq} in run "${runId}"` })
      return { seq, lo: part.lo === null ? null : toNumber(part.lo), hi: part.hi === null ? null : toNumber(part.hi) }
    })

  const sourceSql = (num: number, source: Source) =>
    source.lo === null
      ? {
        from: sql`offpeak_items i LEFT JOIN offpeak_requests r ON r.run = i.run AND r.id = i.request`,
        where: sql`i.run = ${num} AND i.part = ${source.seq}`,
        order: sql`i.position`
      }
      : {
        from: sql`offpeak_requests r JOIN offpeak_items i ON i.run = r.run AND i.request = r.id AND i.own = 0`,
        where: sql`r.run = ${num} AND r.settled >= ${source.lo} AND r.settled <= ${source.hi}`,
        // the order of the range's index, so the query walks the range and nothing else
        order: sql`r.settled, i.position`
      }

  /** `assignPart` inside the caller's transaction, fenced by the caller: the part fixed, and where its rows are */
  const assignIn = (runId: string, limit: number, options?: { readonly whole?: boolean }) =>
    Effect.gen(function*() {
      const num = yield* runNum(runId)
      const whole = options?.whole === true
      // the last part, and the last settle number a part took (NULL for parts of rows on their own)
      const last = yield* sql`SELECT MAX(seq), MAX(hi) FROM offpeak_parts WHERE run_id = ${runId}`.values
      const [lastSeq, lastHi] = last[0] ?? [null, null]
      const seq = toNumber(lastSeq ?? 0) + 1
      const insertPart = (lo: number | null, hi: number | null) =>
        sql`INSERT INTO offpeak_parts ${sql.insert({ run_id: runId, seq, state: "writing", delivered: 0, dead: 0, lo, hi })}`
      // rows deliverable on their own first
      const own = yield* sql`
        SELECT position FROM offpeak_items WHERE run = ${num} AND own = 1 AND part IS NULL ORDER BY position LIMIT ${limit}`.values
      if (own.length > 0 && (!whole || own.length >= limit)) {
        deliverable.delete(num)
        yield* insertPart(null, null)
        yield* sql`UPDATE${orFail} offpeak_items SET part = ${seq}
          WHERE run = ${num} AND ${inList("position", own.map((r) => toNumber(r[0])))}`
        return Option.some<Source>({ seq, lo: null, hi: null })
      }
      // then the next range of settled requests, each with the rows that go out with it
      const after = Math.max(0, toNumber(lastHi ?? 0))
      // up to `limit` requests in settle order, as far as the first that brings the rows to `limit`: summed in the
      // database, so one row comes back instead of every request
      const range = yield* sql`
        SELECT COUNT(*), MAX(settled), SUM(n), MAX(fetched) FROM (
          SELECT settled, n, SUM(n) OVER (ORDER BY settled ROWS UNBOUNDED PRECEDING) AS upto, COUNT(*) OVER () AS fetched
          FROM (
            SELECT settled, row_count AS n FROM offpeak_requests
            WHERE run = ${num} AND settled > ${after}
            ORDER BY settled
            LIMIT ${limit}
          ) head
        ) running
        WHERE upto - n < ${limit}`.values
      const [count, top, sum, fetched] = range[0] ?? [0, null, null, 0]
      const requests = toNumber(count)
      const rows = toNumber(sum)
      const hi = top === null ? after : toNumber(top)
      if (requests === 0 || (whole && rows < limit && toNumber(fetched) < limit)) {
        // every row waiting was counted: own ones (fewer than `limit`) and those of every request settled since
        deliverable.set(num, own.length + (requests === 0 ? 0 : rows))
        return Option.none<Source>()
      }
      deliverable.delete(num)
      yield* insertPart(after + 1, hi)
      return Option.some<Source>({ seq, lo: after + 1, hi })
    })

  const assignPart: Service["assignPart"] = (runId, limit, options) =>
    Effect.gen(function*() {
      yield* fence(runId)
      return Option.map(yield* assignIn(runId, limit, options), (source) => source.seq)
    }).pipe(sql.withTransaction, serially, mapError("assignPart"))

  const writingParts: Service["writingParts"] = (runId) =>
    sql<{ seq: number | bigint }>`SELECT seq FROM offpeak_parts WHERE run_id = ${runId} AND state = 'writing' ORDER BY seq`
      .pipe(Effect.map((rows) => rows.map((r) => toNumber(r.seq))), mapError("writingParts"))

  const rowsOf = (runId: string, part: Source) =>
    Effect.gen(function*() {
      const source = sourceSql(yield* runNum(runId), part)
      // rows as arrays: half the work of objects to build in the SQLite thread and to copy out of it; a row that
      // succeeded (nearly all) carries no error columns, a failed one its six as one JSON text
      const errors = sql.onDialectOrElse({
        pg: () => sql`json_build_array(i.error_kind, i.error_message, i.error_raw, r.error_kind, r.error_message, r.error_raw)::text`,
        orElse: () => sql`json_array(i.error_kind, i.error_message, i.error_raw, r.error_kind, r.error_message, r.error_raw)`
      })
      const rows = yield* sql`
        SELECT i.key, i.position, i.record, r.fingerprint, r.cached,
               CASE WHEN i.error_kind IS NULL AND r.state = 'succeeded' AND o.output IS NOT NULL THEN NULL ELSE ${errors} END,
               o.output, o.output_format, o.input_tokens, o.output_tokens, o.cached_input_tokens
        FROM ${source.from}
        LEFT JOIN offpeak_outputs o ON o.run = i.run AND o.settled = r.settled AND r.state = 'succeeded'
        WHERE ${source.where}
        ORDER BY ${source.order}`.values
      return rows.map((row): PartRow => {
        const [key, position, record, fingerprint, cached, errorsText, output, outputFormat, inputTokens, outputTokens, cachedInputTokens] =
          row as PartValues
        let failure: Failure | null = null
        if (errorsText !== null) {
          const [itemKind, itemMessage, itemRaw, kind, message, raw] = JSON.parse(errorsText) as Errors
          failure = itemKind !== null
            ? { kind: itemKind as FailureKind, message: itemMessage ?? "", raw: itemRaw ?? undefined }
            : { kind: (kind ?? "lost") as FailureKind, message: message ?? "no result recorded", raw: raw ?? undefined }
        }
        return {
          key,
          position: toNumber(position),
          record,
          fingerprint,
          output: failure === null ? output : null,
          format: outputFormat === "f32" ? "f32" : "json",
          usage: failure === null
            ? {
              inputTokens: toNumber(inputTokens),
              outputTokens: toNumber(outputTokens),
              cachedInputTokens: cachedInputTokens === null ? undefined : toNumber(cachedInputTokens)
            }
            : null,
          cached: toNumber(cached) === 1,
          failure
        }
      })
    })

  const partRows: Service["partRows"] = (runId, seq) =>
    Effect.flatMap(partSource(runId, seq), (source) => rowsOf(runId, source)).pipe(mapError("partRows"))

  /** a written part committed, inside the caller's transaction, fenced by the caller */
  const commitIn = (runId: string, written: WrittenPart) =>
    Effect.gen(function*() {
      yield* sql`UPDATE offpeak_parts SET state = 'committed', delivered = ${written.delivered}, dead = ${written.dead}
        WHERE run_id = ${runId} AND seq = ${written.seq} AND state = 'writing'`
      if (written.refused !== undefined && written.refused.length > 0) {
        // rare (a value the sink refused): each row records its failure, so `failures` and `inspect` find it
        const num = yield* runNum(runId)
        for (const r of written.refused) {
          yield* sql`UPDATE offpeak_items SET error_kind = 'sink_refused', error_message = ${Redact.text(r.message)}
            WHERE run = ${num} AND position = ${r.position}`
        }
      }
    })

  const commitPart: Service["commitPart"] = (runId, written) =>
    Effect.andThen(fence(runId), commitIn(runId, written)).pipe(sql.withTransaction, mapError("commitPart"))

  const nextPart: Service["nextPart"] = (runId, options) =>
    Effect.gen(function*() {
      // nothing to commit, and fewer rows wait than a whole part holds: no transaction
      if (options.whole === true && options.written === undefined) {
        const waiting = deliverable.get(yield* runNum(runId))
        if (waiting !== undefined && waiting < options.limit) return Option.none()
      }
      return yield* Effect.gen(function*() {
        const fenced = yield* fenceStarted(runId)
        if (options.written !== undefined) yield* commitIn(runId, options.written)
        const source = yield* assignIn(runId, options.limit, options)
        const next = Option.isNone(source)
          ? Option.none()
          : Option.some({ seq: source.value.seq, rows: yield* rowsOf(runId, source.value) })
        yield* fenced
        return next
      }).pipe(sql.withTransaction)
    }).pipe(serially, mapError("nextPart"))

  return { assignPart, nextPart, writingParts, partRows, commitPart }
}
