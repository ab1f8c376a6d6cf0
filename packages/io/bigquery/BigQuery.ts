/**
 * BigQuery as a source and as a sink, on the official `@google-cloud/bigquery`.
 *
 * **Source** — a table or a query (named parameters only, never values
 * pasted into the text), read page by page with the next page fetched while
 * one is processed (memory: about two pages), each row decoded from the
 * service's own encoding and typed by an Effect Schema:
 *
 * | BigQuery | JavaScript |
 * |---|---|
 * | INT64 | `number` by default, a row whose value is beyond ±2^53 is `Malformed` naming the column (`int64: "bigint"` or `"string"` reads every value exactly) |
 * | FLOAT64 | `number` (`NaN`, `±Infinity` included) |
 * | NUMERIC, BIGNUMERIC | `string`, the exact decimal (`"1.5"`) |
 * | BOOL | `boolean` |
 * | STRING | `string` |
 * | BYTES | `Uint8Array` |
 * | TIMESTAMP | `string` ISO 8601 with microseconds (`2024-01-02T03:04:05.123456Z`) by default; `timestamps: "date"` a `Date` (milliseconds), `"micros"` a `bigint` of microseconds |
 * | DATE, DATETIME, TIME | `string` as BigQuery writes them (`2024-01-02`, `2024-01-02T03:04:05.123456`, `03:04:05`) |
 * | JSON | the parsed value |
 * | ARRAY (REPEATED) | an array (never null: BigQuery has no NULL arrays) |
 * | STRUCT (RECORD) | an object |
 *
 * With a checkpoint column (`checkpoint: { column }`, and `key`) the source
 * reads in the TOTAL order (checkpoint column, key): rows that tie on the
 * checkpoint column are ordered by key, and a run continues exactly after
 * the (value, key) of the last row it admitted — no row tied with it is lost
 * or read twice. One query serves a whole read (its result is paged by the
 * service), so its pages are one consistent snapshot.
 *
 * - `snapshot.high` is the (checkpoint, key) of the last row the source holds
 *   now; a run reads `upTo(high)`: rows added or moved past `high` (an
 *   `updated_at` bumped by an edit) while the run reads are the next
 *   incremental run's, read once then with their new values. What this cannot
 *   see: a row committed later with a checkpoint value below `high` (a writer
 *   whose transaction stamped `CURRENT_TIMESTAMP()` before a long commit).
 *   Stamp with a lag you can bound, or use a sequence.
 * - `count` counts what `read` would yield (the same range).
 * - A NULL in the checkpoint column or the key of a row makes `snapshot.high`
 *   fail with a `SourceError` naming the column and the row's key: such a row
 *   would sort outside every range and never be read.
 *
 * **Sink** — idempotent per part, with the dispositions `merge` (default),
 * `append` and `replace`:
 *
 * - `merge`: the part (keys de-duplicated, the last row wins) is loaded into a
 *   staging table by a load job, then `MERGE`d into the target on the key by
 *   a query job; the staging table is then deleted (it also expires after a
 *   day). The MERGE writes the columns the part's rows hold: a row without
 *   one of them (while another row of the part has it) sets it NULL. Both jobs have ids derived from the run, the part and the rows'
 *   hash: writing the part again finds them (BigQuery refuses a second job
 *   with an id: 409) and reads their outcome instead of running them twice.
 * - `append`: the part is loaded straight into the target by one load job
 *   with such an id.
 * - `replace`: parts are merged into a table of the run
 *   (`<table>__offpeak_run_<hash>`), and `finish` copies it over the target
 *   (a copy job, WRITE_TRUNCATE: the swap is atomic) and deletes it: a run
 *   that fails leaves the target as it was.
 * - The target is created when it does not exist, with `schema` (BigQuery
 *   fields, or an Effect Schema of the rows), else a schema guessed from the
 *   first part's rows (see `fieldsOfRows`: numbers become FLOAT64 except in key
 *   columns holding integers — pass `schema` to choose).
 * - A value BigQuery refuses (a string in an INT64 column, a column the table
 *   lacks, a missing REQUIRED field, …) fails the write with `SinkError`
 *   reason `Refused` naming the row (index in the part) and the column, as
 *   the load job's error says; the pipeline splits the part to isolate it.
 *   Jobs that fail for the service's reasons (`backendError`, …) are run again
 *   under the next job id (at most 4 times), then the write fails
 *   `Unavailable`.
 *
 * @since 0.1.0
 */
import { BigQuery as Client } from "@google-cloud/bigquery"
import type { Job, Table } from "@google-cloud/bigquery"
import * as Failpoint from "@offpeak/core/Failpoint"
import type * as Sink from "@offpeak/core/Sink"
import { Refused, SinkError, Unavailable } from "@offpeak/core/Sink"
import type * as Source from "@offpeak/core/Source"
import { SourceError } from "@offpeak/core/Source"
import { Duration, Effect, Fiber, Option, Result, Schema, Semaphore, Stream } from "effect"
import * as crypto from "node:crypto"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as Reason from "../internal/reason.ts"
import * as BqClient from "./internal/client.ts"
import * as Values from "./internal/values.ts"

// ===== Connection =====

/**
 * Where and as whom the connector talks to BigQuery. Every field is optional:
 * `projectId` defaults to `GOOGLE_CLOUD_PROJECT`, `location` to
 * `BIGQUERY_LOCATION`, `apiEndpoint` to `BIGQUERY_EMULATOR_HOST`, credentials to
 * Google's application default credentials. An `http://` endpoint (an
 * emulator) is called without credentials.
 *
 * @since 0.1.0
 * @category models
 */
export type Connection = BqClient.Connection

/**
 * A BigQuery schema field, as the REST API writes it.
 *
 * @since 0.1.0
 * @category models
 */
export type Field = Values.Field

// ===== Source =====

/**
 * Options of {@link source}: `table` or `query`.
 *
 * @since 0.1.0
 * @category models
 */
export interface SourceOptions<S extends Schema.Top> {
  /** a table to read whole: `dataset.table` or `project.dataset.table` */
  readonly table?: string | undefined
  /** a GoogleSQL query; values go in `params` as `@name`, never into the text */
  readonly query?: string | undefined
  /** named query parameters (`@name` in the query) */
  readonly params?: Readonly<Record<string, unknown>> | undefined
  /** BigQuery types of parameters whose type a value cannot tell (`null`, `[]`), e.g. `{ ids: ["INT64"] }` */
  readonly types?: Readonly<Record<string, unknown>> | undefined
  /** the schema of one row, decoded from the values as mapped above */
  readonly schema: S
  /** the key column: named in the reason of a `Malformed` row, the tie-breaker of a checkpointed read */
  readonly key?: string | undefined
  /** a column the rows are read in the order of (with `key`): `updated_at`, an id, a sequence */
  readonly checkpoint?: { readonly column: string } | undefined
  /** continue after this checkpoint (a `Row`'s `checkpoint`); needs `checkpoint` */
  readonly after?: string | undefined
  /** read only up to this checkpoint, inclusive (a snapshot's `high`); needs `checkpoint` */
  readonly upTo?: string | undefined
  /** the `position` of the first row read, 1 by default */
  readonly startPosition?: number | undefined
  /** rows per page, 10,000 by default (a page is also at most about 10 MB) */
  readonly pageSize?: number | undefined
  /** how INT64 values come out: `number` (default; a value beyond ±2^53 makes the row Malformed), `bigint` or `string` */
  readonly int64?: "number" | "bigint" | "string" | undefined
  /** how TIMESTAMP values come out: ISO `string` with microseconds (default), `date` or `micros` (a bigint) */
  readonly timestamps?: "string" | "date" | "micros" | undefined
  readonly connection?: Connection | undefined
  /** the name used in messages, by default the table or the query on one line */
  readonly name?: string | undefined
}

/**
 * A BigQuery source.
 *
 * @since 0.1.0
 * @category models
 */
export interface BigQuerySource<A> extends Source.Source<A> {
  /** the checkpoint column, when there is one */
  readonly checkpoint: string | undefined
  readonly continueAfter: (checkpoint: string, startPosition: number) => BigQuerySource<A>
}

/** the REST type of a column → the query parameter type of a checkpoint */
const PARAM_TYPES: Record<string, string> = {
  INTEGER: "INT64",
  INT64: "INT64",
  STRING: "STRING",
  TIMESTAMP: "TIMESTAMP",
  DATE: "DATE",
  DATETIME: "DATETIME",
  TIME: "TIME",
  NUMERIC: "NUMERIC",
  BIGNUMERIC: "BIGNUMERIC",
  BOOLEAN: "BOOL",
  BOOL: "BOOL",
  BYTES: "BYTES"
}

/** a checkpoint: the (checkpoint column, key) of a row, with their types, as JSON `[type, value, type, value]` */
interface Checkpoint {
  readonly cpType: string
  readonly cp: string
  readonly keyType: string
  readonly key: string
}

const encodeCheckpoint = (c: Checkpoint) => JSON.stringify([c.cpType, c.cp, c.keyType, c.key])

const decodeCheckpoint = (text: string): Checkpoint | undefined => {
  try {
    const parsed = JSON.parse(text) as unknown
    if (Array.isArray(parsed) && parsed.length === 4 && parsed.every((p) => typeof p === "string") && PARAM_TYPES[parsed[0]] !== undefined && PARAM_TYPES[parsed[2]] !== undefined) {
      return { cpType: parsed[0], cp: parsed[1], keyType: parsed[2], key: parsed[3] }
    }
  } catch {
    // not a checkpoint of this source
  }
  return undefined
}

/**
 * A checkpoint value as a query parameter, built here rather than by the
 * client (which sends a TIMESTAMP, DATE, DATETIME or TIME given as a string as
 * NULL, and shifts pre-1970 TIMESTAMPs with fractions): the REST text of the
 * value, TIMESTAMP in BigQuery's canonical form.
 */
const checkpointParameter = (name: string, type: string, text: string): QueryParameter => ({
  name,
  parameterType: { type: PARAM_TYPES[type]! },
  parameterValue: { value: type === "TIMESTAMP" ? Values.isoOfMicros(Values.microsOf(text)).replace("T", " ").replace("Z", "+00:00") : text }
})

interface QueryParameter {
  readonly name: string
  readonly parameterType: unknown
  readonly parameterValue: unknown
}

const DEFAULT_PAGE = 10_000

/**
 * Streams a table or a query's rows as typed records (see the module
 * documentation for the types, checkpoints and snapshots).
 *
 * - A table without a checkpoint column is read with `tabledata.list` (no
 *   query, no bytes billed). A query, or a checkpointed read, runs one query
 *   job and pages through its result (`getQueryResults`); a checkpointed read
 *   wraps the query: `SELECT * FROM (<query>) WHERE (checkpoint, key) after
 *   `after` and up to `upTo` ORDER BY checkpoint, key`. Its ORDER BY runs in
 *   BigQuery: very large unordered tables may need a narrower range per run.
 * - Each row is a `Row` with `position` (from `startPosition`) and, when
 *   checkpointed, its `checkpoint`; a row that cannot be read as asked
 *   (`INT64` beyond ±2^53 as a number) or fails the schema is `Malformed`:
 *   `docs row 17 (id 42): field "priority": Expected "low" | "high", got "urgent"`,
 *   with its values as JSON in `raw` and its key.
 * - A query that fails, a missing table, lost credentials: `SourceError`
 *   naming the source (resumable).
 *
 * @example
 * ```ts
 * import { BigQuery } from "@offpeak/io/bigquery"
 * import { Schema } from "effect"
 *
 * const Doc = Schema.Struct({ id: Schema.Number, body: Schema.String, updated_at: Schema.String })
 * const docs = BigQuery.source({
 *   query: "SELECT id, body, updated_at FROM docs.documents WHERE lang = @lang",
 *   params: { lang: "en" },
 *   schema: Doc,
 *   key: "id",
 *   checkpoint: { column: "updated_at" }
 * })
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const source = <S extends Schema.Top & { readonly DecodingServices: never }>(
  options: SourceOptions<S>
): BigQuerySource<S["Type"]> => {
  const name = options.name ?? (options.table !== undefined
    ? options.table
    : `query ${JSON.stringify(Reason.truncate((options.query ?? "").replace(/\s+/g, " ").trim(), 60))}`)
  const pageSize = options.pageSize ?? DEFAULT_PAGE
  const column = options.checkpoint?.column
  const key = options.key
  const readOptions: Values.ReadOptions = { int64: options.int64 ?? "number", timestamps: options.timestamps ?? "string" }
  const decode = Reason.decoder(options.schema)
  const sourceError = (message: string) => new SourceError({ source: name, message: `${name}: ${message}` })
  const after = options.after === undefined ? undefined : decodeCheckpoint(options.after)
  const upTo = options.upTo === undefined ? undefined : decodeCheckpoint(options.upTo)

  const problem = (options.table === undefined) === (options.query === undefined)
    ? "give either `table` or `query`"
    : !Number.isInteger(pageSize) || pageSize < 1
    ? `pageSize must be a positive integer, got ${pageSize}`
    : options.startPosition !== undefined && (!Number.isInteger(options.startPosition) || options.startPosition < 1)
    ? `startPosition must be a positive integer, got ${options.startPosition}`
    : column !== undefined && key === undefined
    ? "a checkpoint column needs the `key` option (the tie-breaker of the total order)"
    : (options.after !== undefined || options.upTo !== undefined) && column === undefined
    ? "`after` and `upTo` need a checkpoint column"
    : options.after !== undefined && after === undefined
    ? `not a checkpoint of a BigQuery source: ${JSON.stringify(options.after)}`
    : options.upTo !== undefined && upTo === undefined
    ? `not a checkpoint of a BigQuery source: ${JSON.stringify(options.upTo)}`
    : column !== undefined && BqClient.columnProblem(column) !== undefined
    ? `checkpoint column: ${BqClient.columnProblem(column)}`
    : key !== undefined && BqClient.columnProblem(key) !== undefined
    ? `key: ${BqClient.columnProblem(key)}`
    : options.params !== undefined && (Array.isArray(options.params) || typeof options.params !== "object")
    ? "params must be an object of named parameters (positional parameters are not supported)"
    : options.params !== undefined && Object.keys(options.params).some((k) => k.startsWith("__offpeak"))
    ? "parameter names starting with __offpeak are reserved"
    : undefined

  const call = <A>(what: string, f: () => Promise<A>): Effect.Effect<A, SourceError> =>
    Effect.tryPromise({ try: f, catch: (e) => sourceError(`${what}: ${BqClient.describe(e)}`) })

  let cached: { readonly client: Client; readonly location: string | undefined } | undefined
  const client = Effect.suspend(() =>
    cached !== undefined ? Effect.succeed(cached) : Effect.map(BqClient.resolve(options.connection), (c) => {
      cached = { client: BqClient.make(c), location: c.location }
      return cached
    })
  )

  const tableRef = (bq: Client) => {
    const t = BqClient.parseTable(options.table!, bq.projectId)
    if (typeof t === "string") return Effect.fail(sourceError(t))
    return Effect.succeed(t)
  }

  /** the query every read wraps: the user's query, or the whole table */
  const base = (bq: Client) =>
    options.query !== undefined ? Effect.succeed(options.query) : Effect.map(tableRef(bq), (t) => `SELECT * FROM ${BqClient.quoteTable(t)}`)

  const cpCol = column === undefined ? "" : `\`${column}\``
  const keyCol = key === undefined ? "" : `\`${key}\``

  /** the range predicate of a checkpointed read, and its parameters */
  const range = () => {
    const where: Array<string> = [`${cpCol} IS NOT NULL`, `${keyCol} IS NOT NULL`]
    const parameters: Array<QueryParameter> = []
    if (after !== undefined) {
      where.push(`(${cpCol} > @__offpeak_after_cp OR (${cpCol} = @__offpeak_after_cp AND ${keyCol} > @__offpeak_after_key))`)
      parameters.push(checkpointParameter("__offpeak_after_cp", after.cpType, after.cp), checkpointParameter("__offpeak_after_key", after.keyType, after.key))
    }
    if (upTo !== undefined) {
      where.push(`(${cpCol} < @__offpeak_upto_cp OR (${cpCol} = @__offpeak_upto_cp AND ${keyCol} <= @__offpeak_upto_key))`)
      parameters.push(checkpointParameter("__offpeak_upto_cp", upTo.cpType, upTo.cp), checkpointParameter("__offpeak_upto_key", upTo.keyType, upTo.key))
    }
    return { where: where.join(" AND "), parameters }
  }

  /** the user's named parameters, converted by the client (its rules for JavaScript values and `types`) */
  const userParameters = (): Array<QueryParameter> =>
    Object.entries(options.params ?? {}).map(([paramName, value]) => ({
      ...(Client as unknown as { valueToQueryParameter_: (v: unknown, t?: unknown) => QueryParameter }).valueToQueryParameter_(value, options.types?.[paramName]),
      name: paramName
    }))

  /** runs a query job and gives the job (for paging) */
  const queryJob = (bq: Client, location: string | undefined, sql: string, parameters: ReadonlyArray<QueryParameter>) =>
    call("the query failed", async () => {
      const [job] = await bq.createQueryJob({
        query: sql,
        useLegacySql: false,
        ...(parameters.length === 0 ? {} : { parameterMode: "NAMED", queryParameters: parameters as Array<never> }),
        ...(location === undefined ? {} : { location })
      } as never)
      return job
    })

  const toItem = (fields: ReadonlyArray<Values.Field>, row: unknown, position: number): Source.Item<S["Type"]> => {
    let checkpoint: string | undefined
    const keyText = key === undefined ? undefined : Values.cellText(fields, row, key)
    if (column !== undefined && key !== undefined) {
      const cpField = fields.find((f) => f.name.toLowerCase() === column.toLowerCase())
      const keyField = fields.find((f) => f.name.toLowerCase() === key.toLowerCase())
      const cp = Values.cellText(fields, row, column)
      if (cpField !== undefined && keyField !== undefined && cp !== undefined && keyText !== undefined) {
        checkpoint = encodeCheckpoint({ cpType: cpField.type, cp, keyType: keyField.type, key: keyText })
      }
    }
    const extra = checkpoint === undefined ? {} : { checkpoint }
    const keyPart = key !== undefined && keyText !== undefined ? ` (${key} ${JSON.stringify(Reason.truncate(keyText, 40))})` : ""
    const malformed = (reason: string): Source.Malformed => ({
      _tag: "Malformed",
      position,
      reason: `${name} row ${position}${keyPart}: ${reason}`,
      raw: Reason.truncate(Values.rawOf(fields, row)),
      ...(keyText === undefined ? {} : { key: keyText }),
      ...extra
    })
    let record: Record<string, unknown>
    try {
      record = Values.decodeRecord(fields, row, readOptions)
    } catch (e) {
      if (e instanceof Values.ValueProblem) return malformed(`field ${JSON.stringify(e.field)}: ${e.message}`)
      return malformed(String(e))
    }
    const decoded = decode(record)
    if (Result.isSuccess(decoded)) return { _tag: "Row", position, value: decoded.success, ...extra }
    return malformed(Reason.schemaReason(decoded.failure, record))
  }

  type Fetch = (opts: Record<string, unknown>) => Effect.Effect<readonly [ReadonlyArray<unknown>, Record<string, unknown> | null, any], SourceError>

  /**
   * Pages through a result: when a page is handed on, the request for the
   * next one starts (in a fiber of the stream's scope) and nothing further:
   * memory is the page being consumed and the one being fetched.
   */
  const pages = (fetch: Fetch, fixed: ReadonlyArray<Values.Field> | undefined) =>
    Stream.unwrap(Effect.gen(function*() {
      let position = (options.startPosition ?? 1) - 1
      // only the request in flight is held (a fiber kept in a scope would keep its page until the stream ends)
      let pending: Fiber.Fiber<readonly [ReadonlyArray<unknown>, Record<string, unknown> | null, any], SourceError> | undefined
      yield* Effect.addFinalizer(() => (pending === undefined ? Effect.void : Fiber.interrupt(pending)))
      const start = (opts: Record<string, unknown>) =>
        Effect.tap(Effect.forkDetach(fetch({ ...opts, maxResults: pageSize })), (fiber) => Effect.sync(() => (pending = fiber)))
      const first = yield* start({})
      return Stream.paginate(first, (fiber) =>
        Effect.gen(function*() {
          const [rows, next, response] = yield* Fiber.join(fiber)
          // the next request goes out before this page is decoded and consumed
          const following = next === null ? undefined : yield* start(next)
          const fields: ReadonlyArray<Values.Field> = fixed ?? response?.schema?.fields ?? []
          if (column !== undefined && rows.length > 0 && !fields.some((f) => f.name.toLowerCase() === column.toLowerCase())) {
            return yield* sourceError(`the checkpoint column ${JSON.stringify(column)} is not a column of the result`)
          }
          const items = rows.map((row) => toItem(fields, row, ++position))
          return [items, following === undefined ? Option.none() : Option.some(following)] as const
        }))
    }))

  const read: Stream.Stream<Source.Item<S["Type"]>, SourceError> = problem !== undefined
    ? Stream.fail(sourceError(problem))
    : Stream.unwrap(Effect.gen(function*() {
      const { client: bq, location } = yield* client
      if (column === undefined && options.table !== undefined) {
        const t = yield* tableRef(bq)
        const table: Table = bq.dataset(t.datasetId, { projectId: t.projectId ?? bq.projectId }).table(t.tableId)
        const [metadata] = yield* call("cannot read the table", () => table.getMetadata())
        const fields = (metadata.schema?.fields ?? []) as ReadonlyArray<Values.Field>
        return pages(
          (opts) =>
            call("cannot read the table's rows", async () => {
              const [rows, next, response] = await table.getRows({ ...opts, autoPaginate: false, skipParsing: true } as never) as unknown as [Array<unknown>, Record<string, unknown> | null, unknown]
              return [rows, next, response] as const
            }),
          fields
        )
      }
      const sql = yield* base(bq)
      let query = sql
      let parameters = userParameters()
      if (column !== undefined) {
        const r = range()
        query = `SELECT * FROM (${sql}) AS __offpeak_src WHERE ${r.where} ORDER BY ${cpCol}, ${keyCol}`
        parameters = [...parameters, ...r.parameters]
      }
      const job: Job = yield* queryJob(bq, location, query, parameters)
      return pages(
        (opts) =>
          call("cannot read the query's results", async () => {
            const [rows, next, response] = await job.getQueryResults({ ...opts, autoPaginate: false, skipParsing: true } as never) as unknown as [Array<unknown>, Record<string, unknown> | null, unknown]
            return [rows, next, response] as const
          }),
        undefined
      )
    }))

  const count: Effect.Effect<number, SourceError> = problem !== undefined
    ? Effect.fail(sourceError(problem))
    : Effect.gen(function*() {
      const { client: bq, location } = yield* client
      const sql = yield* base(bq)
      const r = column === undefined ? undefined : range()
      const query = `SELECT COUNT(*) AS n FROM (${sql}) AS __offpeak_src${r === undefined ? "" : ` WHERE ${r.where}`}`
      const job = yield* queryJob(bq, location, query, [...userParameters(), ...(r?.parameters ?? [])])
      const [rows] = yield* call("cannot count the rows", () =>
        job.getQueryResults({ autoPaginate: false, skipParsing: true } as never) as unknown as Promise<[Array<{ f: Array<{ v: string }> }>]>)
      return Number(rows[0]?.f[0]?.v ?? 0)
    })

  const high: Effect.Effect<Option.Option<string>, SourceError> = problem !== undefined
    ? Effect.fail(sourceError(problem))
    : column === undefined
    ? Effect.fail(sourceError("a snapshot needs a checkpoint column"))
    : Effect.gen(function*() {
      const { client: bq, location } = yield* client
      const sql = yield* base(bq)
      const query = `(SELECT 0 AS __offpeak_kind, ${cpCol} AS __offpeak_cp, ${keyCol} AS __offpeak_key FROM (${sql}) AS __offpeak_src WHERE ${cpCol} IS NULL OR ${keyCol} IS NULL LIMIT 1)
UNION ALL
(SELECT 1 AS __offpeak_kind, ${cpCol} AS __offpeak_cp, ${keyCol} AS __offpeak_key FROM (${sql}) AS __offpeak_src WHERE ${cpCol} IS NOT NULL AND ${keyCol} IS NOT NULL ORDER BY ${cpCol} DESC, ${keyCol} DESC LIMIT 1)`
      const job = yield* queryJob(bq, location, query, userParameters())
      const [rows, , response] = yield* call("cannot read the snapshot's high mark", () =>
        job.getQueryResults({ autoPaginate: false, skipParsing: true } as never) as unknown as Promise<[Array<unknown>, unknown, any]>)
      const fields = (response?.schema?.fields ?? []) as ReadonlyArray<Values.Field>
      const kindOf = (row: unknown) => Values.cellText(fields, row, "__offpeak_kind")
      const nulls = rows.find((row) => kindOf(row) === "0")
      if (nulls !== undefined) {
        const cp = Values.cellText(fields, nulls, "__offpeak_cp")
        const k = Values.cellText(fields, nulls, "__offpeak_key")
        return yield* sourceError(
          cp === undefined
            ? `the checkpoint column ${JSON.stringify(column)} is NULL in a row (${key} ${JSON.stringify(k ?? null)}): such rows sort outside every range and would never be read; give them a value or filter them out in the query`
            : `the key column ${JSON.stringify(key)} is NULL in a row (${column} ${JSON.stringify(cp)}): every row needs a key`
        )
      }
      const last = rows.find((row) => kindOf(row) === "1")
      if (last === undefined) return Option.none()
      const cpField = fields.find((f) => f.name === "__offpeak_cp")!
      const keyField = fields.find((f) => f.name === "__offpeak_key")!
      if (PARAM_TYPES[cpField.type] === undefined || PARAM_TYPES[keyField.type] === undefined) {
        return yield* sourceError(
          `a checkpoint column or key of type ${PARAM_TYPES[cpField.type] === undefined ? cpField.type : keyField.type} cannot be compared exactly: use INT64, STRING, TIMESTAMP, DATE, DATETIME, TIME, NUMERIC, BIGNUMERIC, BOOL or BYTES`
        )
      }
      return Option.some(encodeCheckpoint({
        cpType: cpField.type,
        cp: Values.cellText(fields, last, "__offpeak_cp")!,
        keyType: keyField.type,
        key: Values.cellText(fields, last, "__offpeak_key")!
      }))
    })

  return {
    name,
    schema: options.schema as unknown as Schema.Codec<S["Type"], any>,
    read,
    count,
    checkpoint: column,
    continueAfter: (checkpoint, startPosition) => source({ ...options, after: checkpoint, startPosition }),
    ...(column === undefined ? {} : { snapshot: { high, upTo: (h: string) => source({ ...options, upTo: h }) } })
  }
}

// ===== Sink =====

/**
 * Options of {@link sink}.
 *
 * @since 0.1.0
 * @category models
 */
export interface SinkOptions {
  /** the target table: `dataset.table` or `project.dataset.table` */
  readonly table: string
  /** the key column(s): `merge` upserts on them; rows without them are refused */
  readonly key: string | ReadonlyArray<string>
  /** the target's schema when the sink creates it: BigQuery fields, or an Effect Schema (a struct) of the rows */
  readonly schema?: ReadonlyArray<Field> | Schema.Top | undefined
  /** what a new run does to earlier output: `merge` (default), `append` or `replace` (see the module documentation) */
  readonly disposition?: Sink.Disposition | undefined
  /** the dataset of the staging tables, by default the target's */
  readonly stagingDataset?: string | undefined
  readonly connection?: Connection | undefined
  /** the first wait between two looks at a running job (default 100 ms, growing to 2 s) */
  readonly pollInterval?: Duration.Input | undefined
  /** the name used in messages, by default the table */
  readonly name?: string | undefined
}

/** how many jobs one write makes (each failed for the service's reasons) before it is `Unavailable` */
const ATTEMPTS = 4
/** job ids a write looks through: those of earlier attempts that failed are passed over (each resume may add some) */
const MAX_JOB_IDS = 64

const sha = (...parts: ReadonlyArray<string | Uint8Array>) => {
  const h = crypto.createHash("sha256")
  for (const p of parts) h.update(p).update("\u0000")
  return h.digest("hex")
}

/** BigQuery's load errors → the row (by the byte position of its line) and the column */
const refusalOf = (
  errors: ReadonlyArray<{ readonly message?: string; readonly reason?: string }>,
  offsets: ReadonlyArray<number>,
  indexes: ReadonlyArray<number>
): { readonly message: string; readonly row?: number; readonly column?: string } => {
  const detailed = errors.find((e) => /position \d+/.test(e.message ?? "") || /Field: |no such field|required field/i.test(e.message ?? "")) ?? errors[0]
  const text = detailed?.message ?? "the load job failed"
  const position = /position (\d+)/.exec(text)
  let row: number | undefined
  if (position !== null) {
    const at = Number(position[1])
    let lo = 0
    let hi = offsets.length - 1
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1
      if (offsets[mid]! <= at) lo = mid
      else hi = mid - 1
    }
    row = indexes[lo]
  }
  const column = /Field: ([A-Za-z0-9_.[\]]+)/.exec(text)?.[1] ?? /no such field: ([A-Za-z0-9_.]+?)\.?(?:\s|$)/i.exec(text)?.[1] ?? /required field:? ([A-Za-z0-9_.]+?)\.?(?:\s|$)/i.exec(text)?.[1]
  return { message: text, ...(row === undefined ? {} : { row }), ...(column === undefined ? {} : { column: column.split(/[.[]/)[0]! }) }
}

/**
 * Writes rows to a BigQuery table, idempotently per part (see the module
 * documentation for `merge`, `append` and `replace`, job ids, refusals).
 *
 * @example
 * ```ts
 * import { BigQuery } from "@offpeak/io/bigquery"
 *
 * const sink = BigQuery.sink<{ id: number; embedding: ReadonlyArray<number> }>({
 *   table: "docs.embeddings",
 *   key: "id",
 *   schema: [{ name: "id", type: "INT64", mode: "REQUIRED" }, { name: "embedding", type: "FLOAT64", mode: "REPEATED" }]
 * })
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const sink = <A = unknown>(options: SinkOptions): Sink.Sink<A> => {
  const name = options.name ?? options.table
  const keys: ReadonlyArray<string> = typeof options.key === "string" ? [options.key] : [...options.key]
  const disposition = options.disposition ?? "merge"
  const firstPoll = Duration.toMillis(Duration.fromInputUnsafe(options.pollInterval ?? "100 millis"))
  const sinkError = (message: string) => new SinkError({ sink: name, message: `${name}: ${message}`, reason: new Unavailable({ message }) })
  const refused = (message: string, row?: number, column?: string) =>
    new SinkError({
      sink: name,
      message: `${name}: ${message}`,
      reason: new Refused({ message, ...(row === undefined ? {} : { row }), ...(column === undefined ? {} : { column }) })
    })
  const lock = Semaphore.makeUnsafe(1)
  let state: { readonly client: Client; readonly location: string | undefined; readonly fields: ReadonlyArray<Field>; readonly projectId: string } | undefined

  const problem = keys.length === 0
    ? "no key column"
    : keys.map((k) => BqClient.columnProblem(k)).find((p) => p !== undefined)
    ?? (!["merge", "append", "replace"].includes(disposition) ? `unknown disposition ${JSON.stringify(disposition)}` : undefined)

  const call = <X>(what: string, f: () => Promise<X>): Effect.Effect<X, SinkError> =>
    Effect.tryPromise({ try: f, catch: (e) => sinkError(`${what}: ${BqClient.describe(e)}`) })

  const target = (bq: Client) => {
    const t = BqClient.parseTable(options.table, bq.projectId)
    return typeof t === "string" ? Effect.fail(sinkError(t)) : Effect.succeed({ ...t, projectId: t.projectId ?? bq.projectId })
  }

  const tableOf = (bq: Client, t: { readonly projectId: string; readonly datasetId: string; readonly tableId: string }) =>
    bq.dataset(t.datasetId, { projectId: t.projectId }).table(t.tableId)

  /** the target's schema, the table created first when it does not exist (once per sink, under a lock) */
  const prepare = (rows: ReadonlyArray<A>) =>
    lock.withPermit(Effect.gen(function*() {
      if (state !== undefined) return state
      const connection = yield* BqClient.resolve(options.connection)
      const bq = BqClient.make(connection)
      const t = yield* target(bq)
      const table = tableOf(bq, t)
      const existing = yield* Effect.tryPromise({ try: () => table.getMetadata(), catch: (e) => e }).pipe(
        Effect.map(([m]) => m as { schema?: { fields?: ReadonlyArray<Field> } }),
        Effect.catch((e) => BqClient.statusOf(e) === 404 ? Effect.succeed(undefined) : Effect.fail(sinkError(`cannot read the table: ${BqClient.describe(e)}`)))
      )
      let fields: ReadonlyArray<Field>
      if (existing !== undefined) fields = existing.schema?.fields ?? []
      else {
        const derived = options.schema === undefined
          ? Values.fieldsOfRows(rows, keys)
          : Schema.isSchema(options.schema)
          ? Values.fieldsOfSchema(options.schema as Schema.Top)
          : options.schema as ReadonlyArray<Field>
        if (typeof derived === "string") return yield* sinkError(`cannot derive the table's schema: ${derived}`)
        fields = derived
        yield* Effect.tryPromise({ try: () => table.create({ schema: { fields: fields as Array<never> } } as never), catch: (e) => e }).pipe(
          Effect.catch((e) => BqClient.statusOf(e) === 409 ? Effect.void : Effect.fail(sinkError(`cannot create the table: ${BqClient.describe(e)}`)))
        )
        yield* Effect.logInfo(`bigquery sink ${name}: created ${t.projectId}.${t.datasetId}.${t.tableId} with ${fields.length} columns`)
      }
      for (const k of keys) {
        if (!fields.some((f) => f.name.toLowerCase() === k.toLowerCase())) return yield* sinkError(`the key column ${JSON.stringify(k)} is not a column of the table`)
      }
      state = { client: bq, location: connection.location, fields, projectId: t.projectId }
      return state
    }))

  /** waits until a job is DONE; its metadata */
  const waitDone = (job: Job) =>
    Effect.gen(function*() {
      let wait = firstPoll
      while (true) {
        const [metadata] = yield* call(`cannot read job ${job.id}`, () => job.getMetadata())
        if (metadata.status?.state === "DONE") return metadata as { status: { errorResult?: { reason?: string; message?: string }; errors?: Array<{ reason?: string; message?: string }> }; statistics?: any }
        yield* Effect.sleep(Duration.millis(wait))
        wait = Math.min(2_000, Math.round(wait * 1.5))
      }
    })

  type Outcome = { readonly ok: true } | { readonly ok: false; readonly transient: boolean; readonly errors: ReadonlyArray<{ reason?: string; message?: string }> }

  const TRANSIENT = new Set(["backendError", "internalError", "rateLimitExceeded", "jobBackendError", "jobInternalError", "stopped", "quotaExceeded"])

  /**
   * Runs a job under the first free id of `base_0`, `base_1`, …: a job already
   * there (BigQuery refuses the id: 409) is read instead of run again — done,
   * it is not run twice; failed (an earlier process's attempt: a job that
   * fails changes nothing), the next id is tried, so a resume after the table
   * was fixed runs it again. A job this call made that fails for the
   * service's reasons moves on to the next id, `ATTEMPTS` times.
   */
  const runJob = (bq: Client, location: string | undefined, base: string, create: (jobId: string) => Promise<unknown>) =>
    Effect.gen(function*() {
      let made = 0
      for (let n = 0; n < MAX_JOB_IDS && made < ATTEMPTS; n++) {
        const jobId = `${base}_${n}`
        const job = bq.job(jobId, location === undefined ? {} : { location })
        // create; a lost answer (500 after the job was made, a dropped connection) is retried: the id makes it safe
        let tries = 0
        /** this call made the job (or may have: an error answered although it was made), rather than found it there */
        let mine = true
        while (true) {
          const created = yield* Effect.tryPromise({ try: () => create(jobId), catch: (e) => e }).pipe(
            Effect.as("created" as const),
            Effect.catch((e) => Effect.succeed(BqClient.statusOf(e) === 409 ? "exists" as const : e))
          )
          if (created === "created" || created === "exists") {
            // a 409 after a lost answer of this call is its own job too
            mine = created === "created" || tries > 0
            break
          }
          if (++tries >= 4) return yield* sinkError(`cannot create job ${jobId}: ${BqClient.describe(created)}`)
          // does it exist although the answer was an error?
          const found = yield* Effect.tryPromise({ try: () => job.getMetadata(), catch: (e) => e }).pipe(Effect.as(true), Effect.catch(() => Effect.succeed(false)))
          if (found) break
          yield* Effect.sleep(Duration.millis(200 * 2 ** tries))
        }
        if (mine) made++
        const metadata = yield* waitDone(job)
        const error = metadata.status.errorResult
        if (error === undefined) return { ok: true } as Outcome
        const transient = TRANSIENT.has(error.reason ?? "")
        // an earlier attempt's failure is not this one's: what it refused may have been fixed since (a failed job
        // changed nothing, so the next id runs it again)
        if (!mine) continue
        if (!transient) return { ok: false, transient: false, errors: metadata.status.errors ?? [error] } as Outcome
        yield* Effect.logWarning(`bigquery sink ${name}: job ${jobId} failed (${error.reason}: ${error.message}); running it again as ${base}_${n + 1}`)
      }
      return { ok: false, transient: true, errors: [{ reason: "backendError", message: `${ATTEMPTS} jobs ${base}_* failed` }] } as Outcome
    })

  /** whether some job `base_0`, `base_1`, … is DONE without error (scanning until an id that does not exist) */
  const succeeded = (bq: Client, location: string | undefined, base: string) =>
    Effect.gen(function*() {
      for (let n = 0; n < MAX_JOB_IDS; n++) {
        const found = yield* Effect.tryPromise({ try: () => bq.job(`${base}_${n}`, location === undefined ? {} : { location }).getMetadata(), catch: (e) => e }).pipe(
          Effect.map(([m]) => m as { status?: { state?: string; errorResult?: unknown } }),
          Effect.catch(() => Effect.succeed(undefined))
        )
        if (found === undefined) return false
        if (found.status?.state === "DONE" && found.status.errorResult === undefined) return true
      }
      return false
    })

  const deleteTable = (table: Table) =>
    Effect.tryPromise({ try: () => table.delete(), catch: (e) => e }).pipe(
      Effect.catch((e) => BqClient.statusOf(e) === 404 ? Effect.void : Effect.logWarning(`bigquery sink ${name}: cannot delete ${table.id}: ${BqClient.describe(e)}`))
    )

  /** creates a helper table with the target's schema, expiring (409: there already) */
  const helperTable = (table: Table, fields: ReadonlyArray<Field>, ttlMs: number) =>
    Effect.tryPromise({
      try: () => table.create({ schema: { fields: fields as Array<never> }, expirationTime: String(Date.now() + ttlMs) } as never),
      catch: (e) => e
    }).pipe(Effect.catch((e) => BqClient.statusOf(e) === 409 ? Effect.void : Effect.fail(sinkError(`cannot create ${table.id}: ${BqClient.describe(e)}`))))

  /** loads NDJSON into a table with a job of id `base_n` */
  const load = (bq: Client, location: string | undefined, table: Table, base: string, body: string, fields: ReadonlyArray<Field>, write: "WRITE_APPEND" | "WRITE_TRUNCATE") =>
    Effect.acquireUseRelease(
      Effect.sync(() => {
        const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "offpeak-bq-load-")), "part.json")
        fs.writeFileSync(file, body)
        return file
      }),
      (file) =>
        runJob(bq, location, base, (jobId) =>
          table.createLoadJob(file, {
            jobId,
            ...(location === undefined ? {} : { location }),
            sourceFormat: "NEWLINE_DELIMITED_JSON",
            schema: { fields: fields as Array<never> },
            writeDisposition: write,
            createDisposition: "CREATE_NEVER"
          } as never)),
      (file) => Effect.sync(() => fs.rmSync(path.dirname(file), { recursive: true, force: true }))
    )

  const quoted = (c: string) => `\`${c}\``

  /** merges a staging table into `into` on the key, for the columns the part holds */
  const mergeSql = (into: string, staging: string, columns: ReadonlyArray<string>) => {
    const others = columns.filter((c) => !keys.some((k) => k.toLowerCase() === c.toLowerCase()))
    const on = keys.map((k) => `T.${quoted(k)} = S.${quoted(k)}`).join(" AND ")
    const update = others.length === 0 ? "" : ` WHEN MATCHED THEN UPDATE SET ${others.map((c) => `${quoted(c)} = S.${quoted(c)}`).join(", ")}`
    return `MERGE ${into} AS T USING ${staging} AS S ON ${on}${update} WHEN NOT MATCHED THEN INSERT (${columns.map(quoted).join(", ")}) VALUES (${columns.map((c) => `S.${quoted(c)}`).join(", ")})`
  }

  /** the run's own table (`replace`) */
  const runTableOf = (bq: Client, t: { readonly projectId: string; readonly datasetId: string; readonly tableId: string }, runId: string) =>
    tableOf(bq, { ...t, tableId: `${t.tableId}__offpeak_run_${sha(t.tableId, runId).slice(0, 16)}` })

  const write = (part: Sink.Part, rows: ReadonlyArray<A>): Effect.Effect<void, SinkError> =>
    Effect.gen(function*() {
      if (rows.length === 0) return
      if (problem !== undefined) return yield* sinkError(problem)
      const { client: bq, fields, location } = yield* prepare(rows)
      const t = yield* target(bq)
      const known = new Map(fields.map((f) => [f.name.toLowerCase(), f.name]))

      // the part as NDJSON: for merge/replace, keys de-duplicated (the last row wins); each line's offset and row index
      const byKey = new Map<string, number>()
      const columns = new Set<string>()
      for (let i = 0; i < rows.length; i++) {
        const row = rows[i] as unknown
        if (typeof row !== "object" || row === null || Array.isArray(row)) return yield* refused(`row ${i} is not an object`, i)
        for (const k of keys) {
          const v = (row as Record<string, unknown>)[k]
          if (v === null || v === undefined) return yield* refused(`row ${i} has no value for the key column ${JSON.stringify(k)}`, i, k)
        }
        for (const [c, v] of Object.entries(row)) if (v !== undefined) columns.add(known.get(c.toLowerCase()) ?? c)
        const id = Values.ndjsonLine(keys.map((k) => (row as Record<string, unknown>)[k]))
        byKey.delete(id)
        byKey.set(id, i)
      }
      const indexes = disposition === "append" ? rows.map((_, i) => i) : [...byKey.values()]
      const offsets: Array<number> = []
      let bytes = 0
      const lines: Array<string> = []
      for (const i of indexes) {
        const line = Values.ndjsonLine(rows[i])
        offsets.push(bytes)
        bytes += Buffer.byteLength(line) + 1
        lines.push(line)
      }
      const body = lines.join("\n") + "\n"
      const base = `offpeak_${sha(t.projectId, t.datasetId, t.tableId, part.runId).slice(0, 16)}_${part.seq}_${sha(disposition, body).slice(0, 16)}`
      const onError = (o: Outcome) => {
        if (o.ok) return Effect.void
        if (o.transient) return Effect.fail(sinkError(`part ${part.runId}/${part.seq}: ${o.errors.map((e) => e.message).join("; ")}`))
        const r = refusalOf(o.errors, offsets, indexes)
        return Effect.fail(refused(`part ${part.runId}/${part.seq}: ${r.message}`, r.row, r.column))
      }

      if (disposition === "append") {
        yield* load(bq, location, tableOf(bq, t), `${base}_append`, body, fields, "WRITE_APPEND").pipe(Effect.flatMap(onError))
        return
      }
      // merge and replace: staging table, load, MERGE into the target (or the run's table)
      const into = disposition === "replace" ? runTableOf(bq, t, part.runId) : tableOf(bq, t)
      if (disposition === "replace") yield* helperTable(into, fields, 7 * 86_400_000)
      const stagingDataset = options.stagingDataset ?? t.datasetId
      const staging = tableOf(bq, { projectId: t.projectId, datasetId: stagingDataset, tableId: `${t.tableId}__offpeak_stage_${base.slice(-40)}` })
      // a MERGE already done (a part written again after a crash): nothing to do
      if (!(yield* succeeded(bq, location, `${base}_merge`))) {
        // a staging table an earlier attempt left without a load that went through has that time's schema (the
        // target's before it was fixed): made again with the target's schema now
        if (!(yield* succeeded(bq, location, `${base}_load`))) yield* deleteTable(staging)
        yield* helperTable(staging, fields, 86_400_000)
        yield* load(bq, location, staging, `${base}_load`, body, fields, "WRITE_TRUNCATE").pipe(Effect.flatMap(onError))
        // the load may have run long ago (a crash before the MERGE) and its staging table expired or been dropped:
        // then load it again (WRITE_TRUNCATE: the same rows, whatever ran before)
        const [meta] = yield* call("cannot read the staging table", () => staging.getMetadata())
        if (Number((meta as { numRows?: string }).numRows ?? -1) !== indexes.length) {
          yield* helperTable(staging, fields, 86_400_000)
          yield* load(bq, location, staging, `${base}_reload_${Date.now()}`, body, fields, "WRITE_TRUNCATE").pipe(Effect.flatMap(onError))
        }
        yield* Failpoint.hit("part.writing")
        const sql = mergeSql(
          BqClient.quoteTable({ projectId: t.projectId, datasetId: into.dataset.id!, tableId: into.id! }),
          BqClient.quoteTable({ projectId: t.projectId, datasetId: stagingDataset, tableId: staging.id! }),
          [...columns]
        )
        yield* runJob(bq, location, `${base}_merge`, (jobId) =>
          bq.createQueryJob({ query: sql, useLegacySql: false, jobId, ...(location === undefined ? {} : { location }) })).pipe(Effect.flatMap(onError))
      }
      yield* deleteTable(staging)
    })

  const finish = (run: { readonly runId: string; readonly disposition: Sink.Disposition }): Effect.Effect<void, SinkError> =>
    disposition !== "replace" || run.disposition !== "replace"
      ? Effect.void
      : Effect.gen(function*() {
        if (problem !== undefined) return yield* sinkError(problem)
        const { client: bq, fields, location } = yield* prepare([])
        const t = yield* target(bq)
        const runTable = runTableOf(bq, t, run.runId)
        const base = `offpeak_${sha(t.projectId, t.datasetId, t.tableId, run.runId).slice(0, 16)}_finish`
        if (!(yield* succeeded(bq, location, base))) {
          // a run that wrote nothing replaces the target with nothing
          yield* helperTable(runTable, fields, 7 * 86_400_000)
          const outcome = yield* runJob(bq, location, base, (jobId) =>
            tableOf(bq, t).createCopyFromJob(runTable, { jobId, writeDisposition: "WRITE_TRUNCATE", ...(location === undefined ? {} : { location }) } as never))
          if (!outcome.ok) return yield* sinkError(`cannot replace the table with run ${run.runId}'s rows: ${outcome.errors.map((e) => e.message).join("; ")}`)
        }
        yield* deleteTable(runTable)
      })

  return {
    name,
    write,
    dispositions: ["merge", "append", "replace"],
    disposition,
    finish
  }
}

// ===== Pushdown =====

/**
 * A table or query pushed down into a provider's batch job over tables
 * (Vertex AI batch prediction from BigQuery): see `Pushdown.ts`.
 *
 * @since 0.1.0
 * @category constructors
 */
export { pushdown } from "./Pushdown.ts"
