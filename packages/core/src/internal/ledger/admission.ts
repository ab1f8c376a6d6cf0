/**
 * Admission: source rows become items and requests, in one transaction per chunk — rows a resumed read meets
 * again are skipped, a repeated key is a failed row of its own, identical requests are shared, and answers another run
 * has are copied from the result cache. `admit` runs five steps, each a function below.
 *
 * @internal
 */
import { Effect } from "effect"
import type { AdmitRow, Service } from "../../Ledger.ts"
import { fp48, mapError, toNumber } from "./shared.ts"
import type { Shared } from "./shared.ts"

/** a row of the chunk, with its index in it */
interface Candidate {
  readonly index: number
  readonly row: AdmitRow
}

/** requests this run has already (by fingerprint), and answers earlier runs have (the latest run's) */
interface Known {
  readonly existing: ReadonlyMap<string, { readonly id: number; readonly state: string; readonly cached: boolean }>
  readonly cachedFrom: ReadonlyMap<string, { readonly run: number; readonly id: number }>
}

/** what admitting the chunk writes */
interface Plan {
  /** indexes of rows whose request is new and must be sent */
  readonly fresh: ReadonlyArray<number>
  /** requests new in this run, numbered by the position of their first row */
  readonly created: ReadonlyMap<string, { readonly id: number; readonly cached: boolean }>
  /** rows that go out with each request (own = 0), by request number */
  readonly joining: ReadonlyMap<number, number>
  readonly ready: number
  /** rows answered from the result cache, and rows sharing another row's request (the run's totals) */
  readonly cachedRows: number
  readonly sharedRows: number
  /** the items' rows, as {@link ITEM_COLUMNS} */
  readonly items: ReadonlyArray<ReadonlyArray<unknown>>
}

const ITEM_COLUMNS = ["run", "position", "key", "request", "own", "part", "record", "error_kind", "error_message", "error_raw"]
const OUTPUT_COLUMNS = ["run", "settled", "output", "output_format", "input_tokens", "output_tokens", "cached_input_tokens"]
const REQUEST_COLUMNS = ["run", "id", "fingerprint", "fp48", "state", "batch", "attempts", "cached", "settled", "row_count"]

/**
 * Step 4 (pure): each row's request — one this run has, one made earlier in the chunk, one answered by the cache, or
 * a new one — and whether it goes out on its own (no request, or a request settled before) or with its request.
 */
const plan = (num: number, accepted: ReadonlyArray<Candidate>, known: Known): Plan => {
  const fresh: Array<number> = []
  const created = new Map<string, { readonly id: number; readonly cached: boolean }>()
  const joining = new Map<number, number>()
  let ready = 0
  let cachedRows = 0
  let sharedRows = 0
  const items: Array<ReadonlyArray<unknown>> = []
  for (const { index, row } of accepted) {
    let request: number | null = null
    let own = row.fingerprint === null
    let isReady = own
    if (row.fingerprint !== null) {
      const have = known.existing.get(row.fingerprint)
      const made = created.get(row.fingerprint)
      if (have !== undefined) {
        request = have.id
        own = isReady = have.state === "succeeded" || have.state === "failed"
        if (have.cached) cachedRows++
        else sharedRows++
      } else if (made !== undefined) {
        request = made.id
        isReady = made.cached
        if (made.cached) cachedRows++
        else sharedRows++
      } else {
        const cached = known.cachedFrom.has(row.fingerprint)
        created.set(row.fingerprint, { id: row.position, cached })
        request = row.position
        isReady = cached
        if (cached) cachedRows++
        else fresh.push(index)
      }
    }
    if (isReady) ready++
    if (!own && request !== null) joining.set(request, (joining.get(request) ?? 0) + 1)
    items.push([
      num,
      row.position,
      row.key,
      request,
      own ? 1 : 0,
      null,
      row.record,
      row.failure?.kind ?? null,
      row.failure?.message ?? null,
      row.failure?.raw ?? null
    ])
  }
  return { fresh, created, joining, ready, cachedRows, sharedRows, items }
}

/** this part of the ledger, on the shared state */
export const make = (shared: Shared) => {
  const { sql, runNum, orFail, serially, fenceStarted, settleOffset, insertRows, inList, addDeliverable } = shared

  // Steps 1 to 3 each look something up for the chunk's rows; the three look-ups go out at once (one wait instead of
  // three), each about every row of the chunk: only the rows that reach a step read its answers.

  /** the positions of the chunk's range admitted before (a resumed read) */
  const admittedPositions = (num: number, rows: ReadonlyArray<AdmitRow>) =>
    Effect.gen(function*() {
      let lo = Infinity
      let hi = -Infinity
      for (const r of rows) {
        if (r.position < lo) lo = r.position
        if (r.position > hi) hi = r.position
      }
      const found = yield* sql`
        SELECT position FROM offpeak_items WHERE run = ${num} AND position >= ${lo} AND position <= ${hi}`.values
      return new Set(found.map((row) => toNumber(row[0])))
    })

  /** step 1: rows at positions already admitted (a resumed read), or repeated within the chunk, are skipped */
  const unadmitted = (rows: ReadonlyArray<AdmitRow>, admitted: Set<number>) => {
    const candidates: Array<Candidate> = []
    rows.forEach((row, index) => {
      if (admitted.has(row.position)) return
      admitted.add(row.position)
      candidates.push({ index, row })
    })
    return { candidates, skipped: rows.length - candidates.length }
  }

  /** the position each of the chunk's keys was first admitted at in this run */
  const firstPositions = (num: number, rows: ReadonlyArray<AdmitRow>) =>
    Effect.gen(function*() {
      const first = new Map<string, number>()
      const keys = [...new Set(rows.map((r) => r.key))]
      if (keys.length > 0) {
        const hits = yield* sql`SELECT key, position FROM offpeak_items WHERE run = ${num} AND ${inList("key", keys)}`.values
        for (const [key, position] of hits) first.set(key as string, toNumber(position))
      }
      return first
    })

  /** step 2: a key seen before (in this run, or earlier in the chunk) makes the row a failure under `key#position` */
  const withoutDuplicates = (candidates: ReadonlyArray<Candidate>, first: Map<string, number>) => {
    let duplicates = 0
    const accepted = candidates.map((candidate): Candidate => {
      const row = candidate.row
      const seen = first.get(row.key)
      if (seen === undefined) {
        first.set(row.key, row.position)
        return candidate
      }
      duplicates++
      return {
        index: candidate.index,
        row: {
          key: `${row.key}#${row.position}`,
          position: row.position,
          fingerprint: null,
          record: row.record,
          failure: {
            kind: "invalid_input",
            message: `duplicate key ${JSON.stringify(row.key)}: first seen at row ${seen}; this row is not sent`
          }
        }
      }
    })
    return { accepted, duplicates }
  }

  /**
   * step 3: requests this run already has, and results cached by earlier runs of the same provider and endpoint
   * (through the fingerprint index)
   */
  const known = (num: number, rows: ReadonlyArray<AdmitRow>) =>
    Effect.gen(function*() {
      const fingerprints = [...new Set(rows.flatMap((r) => r.fingerprint === null ? [] : [r.fingerprint]))]
      const existing = new Map<string, { readonly id: number; readonly state: string; readonly cached: boolean }>()
      const cachedFrom = new Map<string, { readonly run: number; readonly id: number }>()
      if (fingerprints.length > 0) {
        const wanted = new Set(fingerprints)
        const hits = yield* sql`
          SELECT run, id, fingerprint, state, cached FROM offpeak_requests
          WHERE ${inList("fp48", [...new Set(fingerprints.map(fp48))])} AND (run = ${num} OR (state = 'succeeded' AND run IN (
            SELECT o.num FROM offpeak_runs o JOIN offpeak_runs me ON me.num = ${num}
            WHERE o.provider = me.provider AND o.endpoint = me.endpoint)))`.values
        for (const [hitRun, id, fingerprint, state, cached] of hits) {
          if (!wanted.has(fingerprint as string)) continue
          const run = toNumber(hitRun)
          if (run === num) {
            existing.set(fingerprint as string, { id: toNumber(id), state: state as string, cached: toNumber(cached) === 1 })
          }
          else if ((cachedFrom.get(fingerprint as string)?.run ?? -1) < run) {
            cachedFrom.set(fingerprint as string, { run, id: toNumber(id) })
          }
        }
      }
      return { existing, cachedFrom } satisfies Known
    })

  /** cached answers are copied into this run (settled at once), so its rows never depend on another run's */
  const copyCached = (num: number, offset: number, planned: Plan, from: Known["cachedFrom"]) =>
    Effect.gen(function*() {
      const bySource = new Map<number, Array<readonly [number, number]>>()
      for (const [fingerprint, made] of planned.created) {
        if (!made.cached) continue
        const source = from.get(fingerprint)!
        const list = bySource.get(source.run) ?? []
        list.push([source.id, made.id])
        bySource.set(source.run, list)
      }
      for (const [fromRun, pairs] of bySource) {
        const target = new Map(pairs)
        const outputs = yield* sql`
          SELECT r.id, o.output, o.output_format, o.input_tokens, o.output_tokens, o.cached_input_tokens
          FROM offpeak_requests r JOIN offpeak_outputs o ON o.run = r.run AND o.settled = r.settled
          WHERE r.run = ${fromRun} AND ${inList("r.id", pairs.map(([id]) => id))}`.values
        const copies = outputs.map(([id, output, format, input, out, cachedInput]) => [
          num,
          offset + target.get(toNumber(id))!,
          output,
          format,
          toNumber(input),
          toNumber(out),
          cachedInput === null ? null : toNumber(cachedInput)
        ])
        yield* insertRows("offpeak_outputs", OUTPUT_COLUMNS, copies)
      }
    })

  /** step 5: the new requests, more rows for requests admitted before, cached answers, the items, the run's counts */
  const write = (num: number, planned: Plan, found: Known) =>
    Effect.gen(function*() {
      const cachedIds = [...planned.created.values()].flatMap((made) => made.cached ? [made.id] : [])
      const offset = cachedIds.length === 0 ? 0 : yield* settleOffset(num, cachedIds)
      const requests = [...planned.created].map(([fingerprint, made]) => [
        num,
        made.id,
        fingerprint,
        fp48(fingerprint),
        made.cached ? "succeeded" : "queued",
        null,
        0,
        made.cached ? 1 : 0,
        made.cached ? offset + made.id : null,
        planned.joining.get(made.id) ?? 0
      ])
      yield* insertRows("offpeak_requests", REQUEST_COLUMNS, requests, 100)
      for (const have of found.existing.values()) {
        const n = planned.joining.get(have.id)
        if (n !== undefined) {
          yield* sql`UPDATE${orFail} offpeak_requests SET row_count = row_count + ${n} WHERE run = ${num} AND id = ${have.id}`
        }
      }
      yield* copyCached(num, offset, planned, found.cachedFrom)
      yield* insertRows("offpeak_items", ITEM_COLUMNS, planned.items, 50)
      yield* sql`UPDATE offpeak_runs SET item_count = item_count + ${planned.items.length},
        request_count = request_count + ${requests.length}, cached_rows = cached_rows + ${planned.cachedRows},
        shared_rows = shared_rows + ${planned.sharedRows} WHERE num = ${num}`
    })

  const admit: Service["admit"] = (runId, rows) =>
    Effect.gen(function*() {
      if (rows.length === 0) return { fresh: [], admitted: 0, skipped: 0, ready: 0, duplicates: 0 }
      const fenced = yield* fenceStarted(runId)
      const num = yield* runNum(runId)
      const [admitted, first, found] = yield* Effect.all(
        [admittedPositions(num, rows), firstPositions(num, rows), known(num, rows)],
        { concurrency: "unbounded" }
      )
      const { candidates, skipped } = unadmitted(rows, admitted)
      const { accepted, duplicates } = withoutDuplicates(candidates, first)
      const planned = plan(num, accepted, found)
      yield* write(num, planned, found)
      yield* fenced
      addDeliverable(num, planned.ready)
      return { fresh: planned.fresh, admitted: accepted.length, skipped, ready: planned.ready, duplicates }
    }).pipe(sql.withTransaction, serially, mapError("admit"))

  const queued: Service["queued"] = (runId, options) =>
    Effect.gen(function*() {
      const num = yield* runNum(runId)
      const rows = yield* sql<{ id: number | bigint; fingerprint: string; record: string }>`
        SELECT r.id AS id, r.fingerprint AS fingerprint, i.record AS record
        FROM offpeak_requests r JOIN offpeak_items i ON i.run = r.run AND i.position = r.id
        WHERE r.run = ${num} AND r.state = 'queued' AND r.id > ${options.after}
        ORDER BY r.id
        LIMIT ${options.limit}`
      return rows.map((r) => ({ id: toNumber(r.id), fingerprint: r.fingerprint, record: r.record }))
    }).pipe(mapError("queued"))

  return { admit, queued }
}
