/**
 * Inspection: the rows that ended failed (by kind, in source order), and everything the ledger knows of one row —
 * for `offpeak failures`, `offpeak inspect` and the web view. Read-only.
 *
 * @internal
 */
import { Effect, Option } from "effect"
import type { FailedRow, RowDetail, Service } from "../../Ledger.ts"
import type { FailureKind } from "../../Result.ts"
import { mapError, toNumber } from "./shared.ts"
import type { Shared } from "./shared.ts"

/** this part of the ledger, on the shared state */
export const make = (shared: Shared) => {
  const { sql, runNum } = shared

  /** how many times a request was sent: its failed attempts, and the one that answered (none for a cached answer) */
  const sent = sql.literal("CASE WHEN r.state = 'succeeded' AND r.cached = 0 THEN r.attempts + 1 ELSE r.attempts END")

  /**
   * The rows of a run that ended failed, after position `after`: failed on admission or by the sink, or whose request
   * failed for good — found through two partial indexes that hold only those, never a scan of the run's rows
   * (`CROSS JOIN` keeps SQLite's planner on that order: failed requests first, then their rows through
   * `offpeak_items_request`; `+f.position` keeps it off the primary key's range).
   */
  const failedRows = (num: number, after: number) =>
    sql`FROM offpeak_items i LEFT JOIN offpeak_requests r ON r.run = i.run AND r.id = i.request
      WHERE i.run = ${num} AND i.position IN (
        SELECT position FROM offpeak_items WHERE run = ${num} AND error_kind IS NOT NULL AND position > ${after}
        UNION ALL
        SELECT f.position FROM offpeak_requests fr CROSS JOIN offpeak_items f
        WHERE f.run = fr.run AND f.request = fr.id AND fr.run = ${num} AND fr.state = 'failed' AND f.error_kind IS NULL
          AND +f.position > ${after})`

  const failureCounts: Service["failureCounts"] = (runId) =>
    Effect.gen(function*() {
      const num = yield* runNum(runId)
      // the rows of failedRows, counted by kind
      const rows = yield* sql<{ kind: string; n: number | bigint }>`
        SELECT kind, COUNT(*) AS n FROM (
          SELECT i.error_kind AS kind FROM offpeak_items i WHERE i.run = ${num} AND i.error_kind IS NOT NULL
          UNION ALL
          SELECT COALESCE(r.error_kind, 'lost') AS kind
          FROM offpeak_requests r CROSS JOIN offpeak_items i
          WHERE i.run = r.run AND i.request = r.id AND r.run = ${num} AND r.state = 'failed' AND i.error_kind IS NULL
        ) failed
        GROUP BY kind ORDER BY n DESC`
      return rows.map((r) => ({ kind: r.kind as FailureKind, rows: toNumber(r.n) }))
    }).pipe(mapError("failureCounts"))

  const failures: Service["failures"] = (runId, options) =>
    Effect.gen(function*() {
      const num = yield* runNum(runId)
      const rows = yield* sql<{
        key: string
        position: number | bigint
        kind: string
        message: string | null
        raw: string | null
        attempts: number | bigint | null
      }>`
        SELECT i.key AS key, i.position AS position, COALESCE(i.error_kind, r.error_kind, 'lost') AS kind,
               COALESCE(i.error_message, r.error_message) AS message, COALESCE(i.error_raw, r.error_raw) AS raw,
               ${sent} AS attempts
        ${failedRows(num, options.after ?? 0)}
        ${options.kind === undefined ? sql`` : sql`AND COALESCE(i.error_kind, r.error_kind, 'lost') = ${options.kind}`}
        ORDER BY i.position
        LIMIT ${options.limit}`
      return rows.map((r): FailedRow => ({
        key: r.key,
        position: toNumber(r.position),
        kind: r.kind as FailureKind,
        message: r.message ?? "no reason recorded",
        raw: r.raw,
        attempts: toNumber(r.attempts ?? 0)
      }))
    }).pipe(mapError("failures"))

  const inspect: Service["inspect"] = (runId, key) =>
    Effect.gen(function*() {
      const num = yield* runNum(runId)
      const items = yield* sql<{
        key: string
        position: number | bigint
        record: string | null
        request: number | bigint | null
        error_kind: string | null
        error_message: string | null
        error_raw: string | null
      }>`SELECT key, position, record, request, error_kind, error_message, error_raw FROM offpeak_items
        WHERE run = ${num} AND key = ${key}`
      const item = items[0]
      if (item === undefined) return Option.none<RowDetail>()
      const failure = item.error_kind === null
        ? null
        : { kind: item.error_kind as FailureKind, message: item.error_message ?? "", raw: item.error_raw ?? undefined }
      if (item.request === null) {
        return Option.some<RowDetail>({ key: item.key, position: toNumber(item.position), record: item.record, failure, request: null })
      }
      const requests = yield* sql<{
        fingerprint: string
        state: string
        attempts: number | bigint
        cached: number | bigint
        batch: number | bigint | null
        error_kind: string | null
        error_message: string | null
        error_raw: string | null
        output: string | null
        output_format: string | null
        input_tokens: number | bigint | null
        output_tokens: number | bigint | null
        cached_input_tokens: number | bigint | null
        batch_id: string | null
        remote_id: string | null
        batch_state: string | null
        batch_mode: string | null
      }>`SELECT r.fingerprint, r.state, ${sent} AS attempts, r.cached, r.batch, r.error_kind, r.error_message, r.error_raw,
                o.output, o.output_format, o.input_tokens, o.output_tokens, o.cached_input_tokens,
                b.id AS batch_id, b.remote_id AS remote_id, b.state AS batch_state, b.mode AS batch_mode
         FROM offpeak_requests r
         LEFT JOIN offpeak_outputs o ON o.run = r.run AND o.settled = r.settled AND r.state = 'succeeded'
         LEFT JOIN offpeak_batches b ON b.run_id = ${runId} AND b.seq = r.batch
         WHERE r.run = ${num} AND r.id = ${toNumber(item.request)}`
      const r = requests[0]
      return Option.some<RowDetail>({
        key: item.key,
        position: toNumber(item.position),
        record: item.record,
        failure,
        request: r === undefined ? null : {
          fingerprint: r.fingerprint,
          state: r.state,
          attempts: toNumber(r.attempts),
          cached: toNumber(r.cached) === 1,
          batch: r.batch_id === null
            ? null
            : { id: r.batch_id, remoteId: r.remote_id, state: r.batch_state ?? "", mode: r.batch_mode ?? "batch" },
          failure: r.error_kind === null
            ? null
            : { kind: r.error_kind as FailureKind, message: r.error_message ?? "", raw: r.error_raw ?? undefined },
          output: r.output,
          format: r.output_format === null ? null : r.output_format === "f32" ? "f32" as const : "json" as const,
          usage: r.input_tokens === null
            ? null
            : {
              inputTokens: toNumber(r.input_tokens),
              outputTokens: toNumber(r.output_tokens),
              ...(r.cached_input_tokens === null ? {} : { cachedInputTokens: toNumber(r.cached_input_tokens) })
            }
        }
      })
    }).pipe(mapError("inspect"))

  return { failureCounts, failures, inspect }
}
