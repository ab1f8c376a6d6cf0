/**
 * PostgreSQL as a source and as a sink (with pgvector), on `@effect/sql-pg`.
 *
 * `source` streams a query through a server-side cursor into typed rows:
 * rows that fail the `Schema` come out as `Malformed` with a reason naming
 * the source, the row, its key and the field. With a checkpoint column it
 * reads in that column's order and can start after a given value, so a run
 * can continue where it stopped. `sink` upserts rows on a key, one
 * transaction per part, and writes vectors to `vector(n)` columns when
 * pgvector is installed, to `real[]` otherwise.
 *
 * Each read and each write opens its own connection and closes it when done.
 *
 * @since 0.1.0
 */
import type { PgClient } from "@effect/sql-pg"
import * as Failpoint from "@offpeak/core/Failpoint"
import type * as Sink from "@offpeak/core/Sink"
import { SinkError } from "@offpeak/core/Sink"
import type * as Source from "@offpeak/core/Source"
import { SourceError } from "@offpeak/core/Source"
import { Effect, Option, Result, Schema, Semaphore, Stream } from "effect"
import type { Redacted } from "effect"
import { SqlError } from "effect/sql"
import * as Reason from "../internal/reason.ts"
import * as Client from "./internal/client.ts"
import * as Sql from "./internal/sql.ts"
import * as Table from "./internal/table.ts"

// ===== Source =====

/**
 * Options of {@link source}.
 *
 * @since 0.1.0
 * @category models
 */
export interface SourceOptions<S extends Schema.Top> {
  /** the database, e.g. `postgres://user:password@host:5432/app` (a `Redacted` keeps it out of logs) */
  readonly url: Redacted.Redacted | string
  /** a `SELECT` (or `VALUES`) without parameters; a trailing `;` is dropped */
  readonly query: string
  /** the schema of one row, decoded from the values as the driver gives them (see {@link source}) */
  readonly schema: S
  /** the key column: named, with its value, in the reason of a `Malformed` row */
  readonly key?: string | undefined
  /**
   * A monotonic column of the query (`id`, `updated_at`): the source reads in
   * its order, and with `after` only the rows past a value.
   */
  readonly checkpoint?: { readonly column: string } | undefined
  /**
   * Read only the rows whose checkpoint column is greater than this value:
   * a value from {@link checkpointOf} or {@link PostgresSource.lastCheckpoint}
   * (the column's text form, exact for any type), or a number, bigint, string
   * or `Date`. Needs `checkpoint`; `undefined` or `null` reads from the start.
   */
  readonly after?: unknown
  /** the `position` of the first row read, 1 by default (continue numbering after an earlier read) */
  readonly startPosition?: number | undefined
  /** the name used in messages, by default the query on one line */
  readonly name?: string | undefined
  /** rows per `FETCH` from the cursor, 1000 by default: memory is about this many rows */
  readonly batchSize?: number | undefined
}

/**
 * A Postgres source: a `Source` that also tells how far it has read.
 *
 * @since 0.1.0
 * @category models
 */
export interface PostgresSource<A> extends Source.Source<A> {
  /** the checkpoint column, when there is one */
  readonly checkpoint: string | undefined
  /**
   * The checkpoint of the last row fetched from the server by any read of
   * this source (the text form of the column), none before the first row.
   * Rows are fetched a page (`batchSize` rows) ahead of the consumer: to
   * continue exactly after the rows you processed, use {@link checkpointOf}
   * on the last of them.
   */
  readonly lastCheckpoint: Effect.Effect<Option.Option<string>>
  /**
   * The same source reading only the rows after `checkpoint`, numbered from
   * `startPosition`: how a run continues after the last row it admitted
   * (`checkpointOf` of that row, and its position + 1).
   */
  readonly continueAfter: (checkpoint: unknown, startPosition: number) => PostgresSource<A>
}

/**
 * The checkpoint of an item read by a Postgres source with a checkpoint
 * column: the text form of the column's value (`"42"`,
 * `"2026-11-26 10:00:00.123456+00"`). Pass it back as `after` to read the rows
 * after this one. None for items of other sources.
 *
 * @since 0.1.0
 * @category getters
 */
export const checkpointOf = (item: Source.Item<unknown>): Option.Option<string> => {
  const value = (item as { readonly checkpoint?: unknown }).checkpoint
  return typeof value === "string" ? Option.some(value) : Option.none()
}

const CURSOR = "offpeak_source"

const DEFAULT_BATCH = 1_000

/**
 * Streams the rows of a query.
 *
 * - Without a checkpoint column the query runs once, behind a server-side
 *   cursor (`DECLARE … NO SCROLL CURSOR` in a transaction on a connection of
 *   its own), read `batchSize` rows per `FETCH` and only as fast as the stream
 *   is pulled: memory is one page, and stopping early (`Stream.take`) reads
 *   little more than what was taken. The cursor sees one snapshot: rows
 *   committed after the read began are not in it.
 * - With a checkpoint column it reads keyset pages instead (`… WHERE col >
 *   $last ORDER BY col LIMIT batchSize`), each a short statement of its own:
 *   no transaction stays open while the pipeline works (PGlite's single
 *   session included), and each page sees the rows as they are when it runs.
 * - Each row is a `Row` with `position` its 1-based ordinal in the stream
 *   (from `startPosition`). Values are decoded by the schema as the driver
 *   gives them, without coercion from text: `int2`/`int4`/`float` → number,
 *   `int8` → bigint, `numeric`, `date` → string, `timestamp(tz)` → `Date`,
 *   `json(b)` → parsed JSON, arrays → arrays, pgvector's `vector` → an array
 *   of numbers. Columns the schema does not name are passed on (a plain
 *   struct ignores them).
 * - A row failing the schema is `Malformed` and the stream goes on, e.g.
 *   `tickets row 17 (id 42): field "priority": Expected "low" | "high", got "urgent"`.
 * - With `checkpoint`, the query is wrapped (`SELECT … FROM (<query>) …
 *   WHERE <column> > $after ORDER BY <column>`), and each item carries the
 *   checkpoint's text form ({@link checkpointOf}). The column must be
 *   monotonic and unique: rows that tie with `after` are not read again.
 *   Index it, or the server sorts the whole result first.
 * - An unreachable server, a refused login or a failing query fails with
 *   `SourceError` naming the source (never the password). The read holds one
 *   transaction open until it ends: a server's
 *   `idle_in_transaction_session_timeout` shorter than a pause of the
 *   consumer ends it with a `SourceError`; continue after the last checkpoint.
 *
 * @example
 * ```ts
 * import { Postgres } from "@offpeak/sources/postgres"
 * import { Schema } from "effect"
 *
 * const Doc = Schema.Struct({ id: Schema.Number, body: Schema.String })
 * const docs = Postgres.source({
 *   url: process.env.DATABASE_URL!,
 *   query: "SELECT id, body FROM docs WHERE lang = 'en'",
 *   schema: Doc,
 *   key: "id",
 *   checkpoint: { column: "id" },
 *   name: "docs"
 * })
 * // a run that admitted rows up to `last` (position 5000) continues with:
 * // docs.continueAfter(Option.getOrThrow(Postgres.checkpointOf(last)), 5001)
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const source = <S extends Schema.Top & { readonly DecodingServices: never }>(
  options: SourceOptions<S>
): PostgresSource<S["Type"]> => {
  const name = options.name ?? `query ${JSON.stringify(Reason.truncate(Sql.oneLine(options.query), 60))}`
  const batchSize = options.batchSize ?? DEFAULT_BATCH
  const column = options.checkpoint?.column
  const hasAfter = options.after !== undefined && options.after !== null
  const decode = Reason.decoder(options.schema)
  const sourceError = (message: string) => new SourceError({ source: name, message: `${name}: ${message}` })
  let last: Option.Option<string> = Option.none()

  const problem = !Number.isInteger(batchSize) || batchSize < 1
    ? `batchSize must be a positive integer, got ${batchSize}`
    : options.startPosition !== undefined && (!Number.isInteger(options.startPosition) || options.startPosition < 1)
    ? `startPosition must be a positive integer, got ${options.startPosition}`
    : hasAfter && column === undefined
    ? "`after` needs a checkpoint column"
    : column !== undefined && Sql.identifierProblem(column) !== undefined
    ? `invalid checkpoint column: ${Sql.identifierProblem(column)}`
    : Sql.trimQuery(options.query).length === 0
    ? "the query is empty"
    : undefined

  const statement = Sql.sourceQuery({ query: options.query, checkpoint: column, hasAfter })
  const params = hasAfter ? [options.after instanceof Date ? options.after.toISOString() : options.after] : []

  const toItem = (row: Record<string, unknown>, position: number): Source.Item<S["Type"]> => {
    let checkpoint: string | undefined
    if (column !== undefined) {
      checkpoint = row[Sql.CHECKPOINT_FIELD] as string
      delete row[Sql.CHECKPOINT_FIELD]
    }
    const decoded = decode(row)
    const extra = checkpoint === undefined ? {} : { checkpoint }
    if (Result.isSuccess(decoded)) return { _tag: "Row", position, value: decoded.success, ...extra }
    const key = options.key !== undefined && Object.hasOwn(row, options.key)
      ? ` (${options.key} ${Sql.showValue(row[options.key], 40)})`
      : ""
    return {
      _tag: "Malformed",
      position,
      reason: `${name} row ${position}${key}: ${Reason.schemaReason(decoded.failure, row)}`,
      raw: Reason.truncate(Sql.jsonText(row)),
      ...extra
    }
  }

  const toItems = (rows: ReadonlyArray<Record<string, unknown>>, from: number) => {
    const items = rows.map((row, i) => toItem(row, from + i + 1))
    const lastItem = items.at(-1)
    if (lastItem !== undefined && column !== undefined) last = checkpointOf(lastItem)
    return items
  }

  // with a checkpoint column: keyset pages (`WHERE col > $last ORDER BY col LIMIT n`), one short statement each,
  // so no transaction stays open while the pipeline works (and PGlite's single session is never held)
  const keysetRead = (client: PgClient.PgClient) => {
    const page = (after: boolean) => `${Sql.sourceQuery({ query: options.query, checkpoint: column, hasAfter: after })} LIMIT ${batchSize}`
    let position = (options.startPosition ?? 1) - 1
    return Stream.paginate(
      { statement: page(hasAfter), params: params as ReadonlyArray<unknown> },
      (next) =>
        Effect.map(client.unsafe<Record<string, unknown>>(next.statement, next.params), (rows) => {
          const items = toItems(rows, position)
          position += items.length
          const cp = Option.getOrUndefined(last)
          return [
            items,
            rows.length < batchSize || cp === undefined ? Option.none() : Option.some({ statement: page(true), params: [cp] })
          ] as const
        })
    )
  }

  const read: Stream.Stream<Source.Item<S["Type"]>, SourceError> = problem !== undefined
    ? Stream.fail(sourceError(problem))
    : column !== undefined
    ? Stream.unwrap(Effect.map(Client.open(options.url, { vectors: true }), keysetRead)).pipe(
      Stream.mapError((error) =>
        SqlError.isSqlError(error) ? sourceError(`${Client.where(options.url)}: ${Client.describe(error)}`) : error
      )
    )
    : Stream.unwrap(Effect.gen(function*() {
      const client = yield* Client.open(options.url, { vectors: true })
      const conn = yield* client.reserve
      yield* conn.executeUnprepared("BEGIN", [], undefined)
      // closes the cursor and ends the transaction whether the stream ends, fails or is interrupted
      yield* Effect.addFinalizer(() => Effect.ignore(conn.executeUnprepared("ROLLBACK", [], undefined)))
      yield* conn.executeUnprepared(`DECLARE ${CURSOR} NO SCROLL CURSOR FOR ${statement}`, params, undefined)
      const fetch = `FETCH FORWARD ${batchSize} FROM ${CURSOR}`
      let position = (options.startPosition ?? 1) - 1
      return Stream.paginate(undefined, () =>
        Effect.map(conn.executeUnprepared(fetch, [], undefined), (rows) => {
          const items = (rows as ReadonlyArray<Record<string, unknown>>).map((row) => toItem(row, ++position))
          const lastItem = items.at(-1)
          if (lastItem !== undefined && column !== undefined) last = checkpointOf(lastItem)
          return [items, rows.length < batchSize ? Option.none() : Option.some(undefined)] as const
        }))
    })).pipe(
      Stream.mapError((error) =>
        SqlError.isSqlError(error) ? sourceError(`${Client.where(options.url)}: ${Client.describe(error)}`) : error
      )
    )

  return {
    name,
    schema: options.schema as unknown as Schema.Codec<S["Type"], any>,
    read,
    checkpoint: column,
    lastCheckpoint: Effect.sync(() => last),
    continueAfter: (checkpoint, startPosition) => source({ ...options, after: checkpoint, startPosition })
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
  /** the database (a `Redacted` keeps it out of logs) */
  readonly url: Redacted.Redacted | string
  /** the table, any name (it is quoted) */
  readonly table: string
  /** the table's schema; by default the first of `search_path` that has it */
  readonly schema?: string | undefined
  /** the key column(s): the table needs a primary key or unique index on exactly these */
  readonly key: string | ReadonlyArray<string>
  /** the columns written; by default the keys of the first row the sink sees */
  readonly columns?: ReadonlyArray<string> | undefined
  /** columns holding embeddings (arrays of numbers): `vector(n)` with pgvector, `real[]` without */
  readonly vectorColumns?: ReadonlyArray<string> | undefined
  /**
   * Create the table when it does not exist: column → SQL type (the types
   * are SQL text, not values: never build them from input). The key becomes
   * the primary key. A vector column declared `vector(n)` is created
   * `real[]` when pgvector is not installed.
   */
  readonly createTable?: { readonly columns: Readonly<Record<string, string>> } | undefined
  /**
   * `upsert` (default): insert rows, replacing those whose key is there.
   * `update`: only write the given columns of rows that are already there
   * (`UPDATE … FROM (VALUES …)`), the backfill case — e.g. the embedding
   * column of a documents table whose other columns are `NOT NULL`; a row
   * whose key matches nothing (deleted since it was read) is skipped.
   */
  readonly mode?: "upsert" | "update" | undefined
  /** the name used in messages, by default the table */
  readonly name?: string | undefined
}

/**
 * Upserts rows into a table: `INSERT … ON CONFLICT (key) DO UPDATE SET` the
 * other columns (`DO NOTHING` when every column is a key). Writing the same
 * part again changes nothing; a row whose key is already there replaces it.
 *
 * - One transaction per `write`: a part lands whole or not at all. Rows go in
 *   statements of at most 1000 rows and 65,535 parameters (PostgreSQL's
 *   limit). Within one write, a key that repeats keeps its last row.
 * - Values are always parameters and identifiers always quoted. Values are
 *   sent as text the server parses with the column's type: strings as they
 *   are, numbers, bigints and booleans plainly, `Date` as ISO 8601, `null` and
 *   `undefined` as NULL; `json`/`jsonb` columns get `JSON.stringify(value)`
 *   (a string becomes a JSON string), array columns an array literal,
 *   `bytea` columns a `Uint8Array` as is; objects elsewhere their JSON.
 * - `vectorColumns` take arrays (or typed arrays) of numbers. On the first
 *   write the sink looks whether pgvector is installed in the database and at
 *   each vector column's type: `vector(n)` is written in pgvector's text form,
 *   `real[]`/`double precision[]` as an array; it says which in one
 *   `Effect.logInfo` line. A dimension mismatch fails the write.
 * - A row without a value for a key column, a column the table does not
 *   have, an unreachable server or a refused statement fails the write with
 *   `SinkError` (nothing of the part is kept).
 *
 * @example
 * ```ts
 * import { Postgres } from "@offpeak/sources/postgres"
 *
 * const sink = Postgres.sink<{ id: number; emb: ReadonlyArray<number> }>({
 *   url: process.env.DATABASE_URL!,
 *   table: "doc_embeddings",
 *   key: "id",
 *   vectorColumns: ["emb"],
 *   createTable: { columns: { id: "bigint", emb: "vector(1536)" } }
 * })
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const sink = <A = unknown>(options: SinkOptions): Sink.Sink<A> => {
  const name = options.name ?? (options.schema === undefined ? options.table : `${options.schema}.${options.table}`)
  const keys: ReadonlyArray<string> = typeof options.key === "string" ? [options.key] : [...options.key]
  const vectorColumns = options.vectorColumns ?? []
  const sinkError = (message: string) => new SinkError({ sink: name, message: `${name}: ${message}` })
  const lock = Semaphore.makeUnsafe(1)
  let columns: ReadonlyArray<string> | undefined = options.columns
  let plan: Table.Plan | undefined

  const identifiers = (): string | undefined => {
    const named: Array<readonly [string, string]> = [
      ["table", options.table],
      ...(options.schema === undefined ? [] : [["schema", options.schema] as const]),
      ...keys.map((k) => ["key column", k] as const),
      ...(columns ?? []).map((c) => ["column", c] as const),
      ...vectorColumns.map((c) => ["vector column", c] as const),
      ...Object.keys(options.createTable?.columns ?? {}).map((c) => ["createTable column", c] as const)
    ]
    if (keys.length === 0) return "no key column"
    if (columns !== undefined && columns.length === 0) return "no columns to write"
    for (const [what, value] of named) {
      const problem = Sql.identifierProblem(value)
      if (problem !== undefined) return `invalid ${what}: ${problem}`
    }
    return undefined
  }

  /** learns the table once (creating it first with `createTable`), under a lock */
  const prepare = (client: PgClient.PgClient, cols: ReadonlyArray<string>) =>
    lock.withPermit(Effect.suspend(() => {
      if (plan !== undefined) return Effect.succeed(plan)
      return Effect.gen(function*() {
        const tableOptions: Table.Options = {
          schema: options.schema,
          table: options.table,
          keys,
          columns: cols,
          vectorColumns,
          createTable: options.createTable?.columns,
          mode: options.mode ?? "upsert"
        }
        const pgvector = vectorColumns.length > 0 || options.createTable !== undefined
          ? yield* Table.pgvectorVersion(client)
          : null
        if (options.createTable !== undefined) {
          const create = Table.createStatement(tableOptions, pgvector)
          if (create instanceof Table.PlanProblem) return yield* sinkError(create.message)
          // a concurrent CREATE of the same table can fail on the catalog's unique index: the table is there then
          yield* client.unsafe(create).pipe(Effect.catchReason("SqlError", "UniqueViolation", () => Effect.void))
        }
        const found = yield* Table.columnsOf(client, Sql.qualified(options.schema, options.table))
        const made = Table.plan(tableOptions, found, pgvector)
        if (made instanceof Table.PlanProblem) return yield* sinkError(made.message)
        if (vectorColumns.length > 0) {
          const modes = [...made.vectorModes].map(([c, mode]) =>
            `${JSON.stringify(c)} as ${mode === "vector" ? found.find((f) => f.name === c)!.type : "real[]"}`
          ).join(", ")
          yield* Effect.logInfo(
            pgvector === null
              ? `postgres sink ${name}: pgvector is not installed in ${Client.where(options.url)}; writing ${modes}`
              : `postgres sink ${name}: pgvector ${pgvector} is installed in ${Client.where(options.url)}; writing ${modes}`
          ).pipe(Effect.annotateLogs({ sink: name }))
        }
        plan = made
        return made
      })
    }))

  /** the parameters of each row, keyed rows deduplicated (the last wins) */
  const encode = (
    p: Table.Plan,
    part: Sink.Part,
    rows: ReadonlyArray<A>
  ): Effect.Effect<Array<ReadonlyArray<unknown>>, SinkError> =>
    Effect.suspend(() => {
      const byKey = new Map<string, ReadonlyArray<unknown>>()
      for (let i = 0; i < rows.length; i++) {
        const row = rows[i] as unknown
        const where = `part ${part.runId}/${part.seq} row ${i + 1}`
        if (typeof row !== "object" || row === null) return Effect.fail(sinkError(`${where} is not an object`))
        const record = row as Record<string, unknown>
        const keyValues: Array<unknown> = []
        for (const k of p.keys) {
          const v = record[k]
          if (v === null || v === undefined) {
            return Effect.fail(sinkError(`${where} has no value for key column ${JSON.stringify(k)}`))
          }
          keyValues.push(v)
        }
        const params: Array<unknown> = []
        for (let c = 0; c < p.columns.length; c++) {
          const encoded = p.encoders[c]!(record[p.columns[c]!])
          if ("error" in encoded) {
            return Effect.fail(sinkError(
              `${where} (${keys.map((k, j) => `${k} ${Sql.showValue(keyValues[j], 40)}`).join(", ")}): column ${
                JSON.stringify(p.columns[c])
              }: ${encoded.error}`
            ))
          }
          params.push(encoded.ok)
        }
        const id = Sql.jsonText(keyValues.map((v) => Sql.scalarText(v)))
        byKey.delete(id)
        byKey.set(id, params)
      }
      return Effect.succeed([...byKey.values()])
    })

  const write = (part: Sink.Part, rows: ReadonlyArray<A>): Effect.Effect<void, SinkError> =>
    Effect.gen(function*() {
      if (rows.length === 0) return
      if (columns === undefined) {
        const first = rows[0] as unknown
        if (typeof first !== "object" || first === null) {
          return yield* sinkError(`part ${part.runId}/${part.seq} row 1 is not an object`)
        }
        columns = Object.keys(first)
      }
      const problem = identifiers()
      if (problem !== undefined) return yield* sinkError(problem)
      const client = yield* Client.open(options.url)
      const p = yield* prepare(client, columns)
      const encoded = yield* encode(p, part, rows)
      const statements = Table.statements(p, encoded)
      yield* client.withTransaction(
        Effect.forEach(
          statements,
          (s, i) => client.unsafe(s.sql, s.params).pipe(Effect.tap(() => i === 0 ? Failpoint.hit("part.writing") : Effect.void)),
          { discard: true }
        )
      )
    }).pipe(
      Effect.scoped,
      Effect.mapError((error) =>
        SqlError.isSqlError(error)
          ? sinkError(`part ${part.runId}/${part.seq}: ${Client.where(options.url)}: ${Client.describe(error)}`)
          : error
      )
    )

  return { name, write }
}
