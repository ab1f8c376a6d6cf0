/**
 * PostgreSQL as a source and as a sink (with pgvector), on `@effect/sql-pg`.
 *
 * `source` streams a query into typed rows: rows that fail the `Schema` come
 * out as `Malformed` with a reason naming the source, the row, its key and
 * the field. `sink` upserts rows on a key, one transaction per part, writes
 * vectors to `vector(n)` columns when pgvector is installed (`real[]`
 * otherwise), and names the row and column of a value the database refuses.
 *
 * ## What a checkpointed read reads
 *
 * With a checkpoint column (`updated_at`, `id`) and a `key` column, the
 * source reads in the total order `(column, key)`: keyset pages `WHERE
 * (column, key) > (last row read) ORDER BY column, key LIMIT batchSize`. Rows
 * that tie on the column (2,500 rows loaded with one `now()`) are all read,
 * each once, whatever the page size; a checkpoint names one row exactly, so a
 * read continued after it ({@link PostgresSource.continueAfter}) starts at the
 * next row, even inside a tie group.
 *
 * A run reads a snapshot ({@link PostgresSource.snapshot}): when it starts it
 * takes `high`, the `(column, key)` of the last row in that order, and reads
 * only rows at or before it; a resumed run reads with the same `high`. So:
 *
 * - a row inserted while the run reads, or edited and given a newer
 *   `updated_at` (as an incremental pipeline asks), sorts past `high`: this
 *   run does not meet it (not twice, not with half-old text); the next
 *   incremental run, which continues after this run's last row, reads it with
 *   its new values. Nothing is lost and nothing is met twice in one run.
 * - {@link PostgresSource.count} counts the same range, so a run can check at
 *   the end that it read every row it meant to: the range counted again holds
 *   no more rows than were read, unless a row appeared behind the read. It may
 *   hold fewer (rows read, then edited past `high` or deleted).
 *
 * The one thing this cannot see: a transaction that wrote a row with an old
 * value of the column (`now()` is the transaction's start) and commits only
 * after a run has read past that value. The row then sorts before a
 * checkpoint already passed, and no incremental run reads it (the end-of-run
 * count catches it only when it commits before the run ends). When writers
 * can hold transactions open, leave them a lag in the query (`WHERE
 * updated_at < now() - interval '5 minutes'`: a row becomes readable once no
 * transaction that may still commit could have written an older value), or
 * checkpoint on a sequence a trigger bumps on every write (the window shrinks
 * to the time between `nextval` and the commit).
 *
 * Each read, count and write opens its own connection and closes it when done.
 *
 * @since 0.1.0
 */
import type { PgClient } from "@effect/sql-pg"
import * as Failpoint from "@offpeak/core/Failpoint"
import type * as Sink from "@offpeak/core/Sink"
import { Refused, SinkError, Unavailable } from "@offpeak/core/Sink"
import type * as Source from "@offpeak/core/Source"
import { SourceError } from "@offpeak/core/Source"
import { Effect, Option, Result, Schema, Semaphore, Stream } from "effect"
import type { Redacted } from "effect"
import { SqlError } from "effect/sql"
import * as Reason from "../internal/reason.ts"
import * as Checkpoint from "./internal/checkpoint.ts"
import * as Client from "./internal/client.ts"
import * as Refusal from "./internal/refusal.ts"
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
  /**
   * The key column: unique and never NULL. Named, with its value, in the
   * reason of a `Malformed` row (and the row's `key`); with a checkpoint column
   * it breaks ties, the read order being `(checkpoint column, key)`. Required
   * with `checkpoint`.
   */
  readonly key?: string | undefined
  /**
   * A column of the query that grows as rows are added or changed (`id`,
   * `updated_at`, a sequence bumped on each write): the source reads in
   * `(column, key)` order, can continue after a checkpoint and can read a
   * snapshot (see the module's notes). Needs `key`. Index `(column, key)`, or
   * the server sorts the whole result for each page.
   */
  readonly checkpoint?: { readonly column: string } | undefined
  /**
   * Read only the rows after this checkpoint: a value of {@link checkpointOf}
   * or {@link PostgresSource.lastCheckpoint} (rows after that row, exactly).
   * Anything else — a checkpoint an earlier version wrote (the column's text
   * form alone), a number, bigint, string or `Date` — reads the rows whose
   * column is greater than that value. Needs `checkpoint`; `undefined` or
   * `null` reads from the start.
   */
  readonly after?: unknown
  /**
   * Read only the rows at or before this checkpoint (the `high` of a
   * snapshot, see {@link PostgresSource.snapshot}); a plain value keeps the
   * rows whose column is at most that value. Needs `checkpoint`.
   */
  readonly upTo?: unknown
  /** the `position` of the first row read, 1 by default (continue numbering after an earlier read) */
  readonly startPosition?: number | undefined
  /** the name used in messages, by default the query on one line */
  readonly name?: string | undefined
  /** rows per page (`FETCH` or keyset page), 1000 by default: memory is about this many rows */
  readonly batchSize?: number | undefined
}

/**
 * The snapshot of a checkpointed Postgres source (see {@link PostgresSource.snapshot}).
 *
 * @since 0.1.0
 * @category models
 */
export interface PostgresSnapshot<A> extends Source.Snapshot<A> {
  /** the same source reading only rows at or before `high` (a checkpoint) */
  readonly upTo: (high: string) => PostgresSource<A>
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
   * this source, none before the first row. Rows are fetched a page
   * (`batchSize` rows) ahead of the consumer: to continue exactly after the
   * rows you processed, use {@link checkpointOf} on the last of them.
   */
  readonly lastCheckpoint: Effect.Effect<Option.Option<string>>
  /**
   * The same source reading only the rows after `checkpoint`, numbered from
   * `startPosition`: how a run continues after the last row it admitted
   * (`checkpointOf` of that row, and its position + 1). An old plain-value
   * checkpoint reads the rows whose column is greater than it.
   */
  readonly continueAfter: (checkpoint: unknown, startPosition: number) => PostgresSource<A>
  /**
   * With a checkpoint column: `high` is the checkpoint of the last row in
   * `(column, key)` order now (none when the query has no row), `upTo(high)`
   * the source bounded by it. Undefined without a checkpoint column.
   */
  readonly snapshot: PostgresSnapshot<A> | undefined
  /**
   * How many rows `read` would yield now: `SELECT count(*)` over the query,
   * within `after` and `upTo` when the source has them.
   */
  readonly count: Effect.Effect<number, SourceError>
}

/**
 * The checkpoint of an item read by a Postgres source with a checkpoint
 * column: the text forms of its checkpoint column and key,
 * `{"col":"2026-11-26 10:00:00.123456+00","key":"42"}`. Pass it back as
 * `after` (or to `continueAfter`) to read the rows after this one. None for
 * items of other sources.
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

/** the text of a key value for messages and `Malformed.key`, when it is a scalar */
const keyText = (value: unknown): string | undefined =>
  value === null || value === undefined || (typeof value === "object" && !(value instanceof Date))
    ? undefined
    : Sql.scalarText(value) ?? undefined

/**
 * Streams the rows of a query.
 *
 * - Without a checkpoint column the query runs once, behind a server-side
 *   cursor (`DECLARE … NO SCROLL CURSOR` in a transaction on a connection of
 *   its own), read `batchSize` rows per `FETCH` and only as fast as the stream
 *   is pulled: memory is one page, and stopping early (`Stream.take`) reads
 *   little more than what was taken. The cursor sees one snapshot: rows
 *   committed after the read began are not in it. The read holds that
 *   transaction open until it ends: a server's
 *   `idle_in_transaction_session_timeout` shorter than a pause of the consumer
 *   ends it with a `SourceError`.
 * - With a checkpoint column (and `key`) it reads keyset pages in `(column,
 *   key)` order instead (`SELECT … FROM (<query>) … WHERE (column, key) >
 *   ($1, $2) [AND (column, key) <= ($3, $4)] ORDER BY column, key LIMIT
 *   batchSize`), each a short statement of its own: no transaction stays open
 *   while the pipeline works (PGlite's single session included). Every row is
 *   read once, ties included; each item carries its checkpoint
 *   ({@link checkpointOf}). The module's notes say what a run reads and what
 *   an edit during a run does.
 * - NULL has no place in that order: a checkpointed read (and its `count` and
 *   `snapshot.high`) fails with a `SourceError` naming the column and the row's
 *   key when a row of the query has a NULL checkpoint column or key. Give every
 *   row a value, or select one (`COALESCE(updated_at, created_at) AS
 *   updated_at`, with an index on that expression).
 * - Each row is a `Row` with `position` its 1-based ordinal in the stream
 *   (from `startPosition`). Values are decoded by the schema as the driver
 *   gives them, without coercion from text: `int2`/`int4`/`float` → number,
 *   `int8` → bigint, `numeric`, `date` → string, `timestamp(tz)` → `Date`,
 *   `json(b)` → parsed JSON, arrays → arrays, pgvector's `vector` → an array
 *   of numbers. Columns the schema does not name are passed on (a plain
 *   struct ignores them).
 * - A row failing the schema is `Malformed` (with its `key` when `key` is
 *   given) and the stream goes on, e.g.
 *   `tickets row 17 (id 42): field "priority": Expected "low" | "high", got "urgent"`.
 * - An unreachable server, a refused login or a failing query fails with
 *   `SourceError` naming the source (never the password). A checkpoint column
 *   without `key` is a programming error: `source` throws a `TypeError`.
 *
 * @example
 * ```ts
 * import { Postgres } from "@offpeak/io/postgres"
 * import { Schema } from "effect"
 *
 * const Doc = Schema.Struct({ id: Schema.Number, body: Schema.String })
 * const docs = Postgres.source({
 *   url: process.env.DATABASE_URL!,
 *   query: "SELECT id, body, updated_at FROM docs WHERE lang = 'en'",
 *   schema: Doc,
 *   key: "id",
 *   checkpoint: { column: "updated_at" },
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
  const column = options.checkpoint?.column
  if (column !== undefined && (options.key === undefined || options.key === "")) {
    throw new TypeError(
      `Postgres.source ${name}: checkpoint column ${JSON.stringify(column)} needs the \`key\` option (a unique, ` +
        `non-NULL column of the query, e.g. key: "id"): rows are read in (${column}, key) order so that rows tied on ` +
        `${JSON.stringify(column)} are never skipped`
    )
  }
  const batchSize = options.batchSize ?? DEFAULT_BATCH
  const given = (value: unknown) => value !== undefined && value !== null
  const after = given(options.after) ? Checkpoint.decode(options.after) : undefined
  const upTo = given(options.upTo) ? Checkpoint.decode(options.upTo) : undefined
  const decode = Reason.decoder(options.schema)
  const sourceError = (message: string) => new SourceError({ source: name, message: `${name}: ${message}` })
  let last: Option.Option<string> = Option.none()

  const problem = !Number.isInteger(batchSize) || batchSize < 1
    ? `batchSize must be a positive integer, got ${batchSize}`
    : options.startPosition !== undefined && (!Number.isInteger(options.startPosition) || options.startPosition < 1)
    ? `startPosition must be a positive integer, got ${options.startPosition}`
    : after !== undefined && column === undefined
    ? "`after` needs a checkpoint column"
    : upTo !== undefined && column === undefined
    ? "`upTo` needs a checkpoint column"
    : column !== undefined && Sql.identifierProblem(column) !== undefined
    ? `invalid checkpoint column: ${Sql.identifierProblem(column)}`
    : options.key !== undefined && Sql.identifierProblem(options.key) !== undefined
    ? `invalid key column: ${Sql.identifierProblem(options.key)}`
    : Sql.trimQuery(options.query).length === 0
    ? "the query is empty"
    : undefined

  const keyset: Sql.Keyset | undefined = column === undefined
    ? undefined
    : { query: options.query, column, key: options.key! }

  /** a row whose checkpoint column or key is NULL cannot be placed in the read order */
  const nullError = (keyset: Sql.Keyset, found: { readonly key: string | null; readonly col?: string | null }) =>
    sourceError(
      found.key === null
        ? `the key column ${JSON.stringify(keyset.key)} is NULL in a row${
          found.col === null || found.col === undefined ? "" : ` (${keyset.column} ${JSON.stringify(found.col)})`
        }: a checkpointed read orders rows by (${keyset.column}, ${keyset.key}) and cannot place it; the key must be unique and not NULL`
        : `the checkpoint column ${JSON.stringify(keyset.column)} is NULL in the row with ${keyset.key} ${
          JSON.stringify(found.key)
        }: a checkpointed read orders rows by (${keyset.column}, ${keyset.key}) and cannot place it; give every row a value, ` +
          `or select one (e.g. COALESCE(${keyset.column}, …) AS ${keyset.column})`
    )

  /** fails when a row of the query has a NULL checkpoint column or key */
  const refuseNulls = (client: PgClient.PgClient, keyset: Sql.Keyset) =>
    Effect.flatMap(
      client.unsafe<{ key: string | null; col: string | null }>(Sql.keysetNulls(keyset)),
      (rows) => rows.length === 0 ? Effect.void : Effect.fail(nullError(keyset, rows[0]!))
    )

  const toSourceError = <A, E, R>(effect: Effect.Effect<A, E | SqlError.SqlError, R>) =>
    Effect.mapError(effect, (error) =>
      SqlError.isSqlError(error) ? sourceError(`${Client.where(options.url)}: ${Client.describe(error)}`) : error as E)

  /** runs `f` on a connection of its own */
  const withClient = <A>(
    f: (client: PgClient.PgClient) => Effect.Effect<A, SourceError | SqlError.SqlError>
  ): Effect.Effect<A, SourceError> =>
    problem !== undefined
      ? Effect.fail(sourceError(problem))
      : toSourceError(Effect.scoped(Effect.flatMap(Client.open(options.url), f)))

  const toItem = (row: Record<string, unknown>, position: number): Source.Item<S["Type"]> => {
    let checkpoint: string | undefined
    let key: string | undefined
    if (keyset !== undefined) {
      key = row[Sql.KEY_FIELD] as string
      checkpoint = Checkpoint.encode(row[Sql.CHECKPOINT_FIELD] as string, key)
      // the last property first: V8 keeps the object in fast mode when the last-added property goes
      delete row[Sql.KEY_FIELD]
      delete row[Sql.CHECKPOINT_FIELD]
    } else if (options.key !== undefined && Object.hasOwn(row, options.key)) {
      key = keyText(row[options.key])
    }
    const decoded = decode(row)
    const extra = checkpoint === undefined ? {} : { checkpoint }
    if (Result.isSuccess(decoded)) return { _tag: "Row", position, value: decoded.success, ...extra }
    const shown = options.key !== undefined && Object.hasOwn(row, options.key)
      ? ` (${options.key} ${Sql.showValue(row[options.key], 40)})`
      : ""
    return {
      _tag: "Malformed",
      position,
      reason: `${name} row ${position}${shown}: ${Reason.schemaReason(decoded.failure, row)}`,
      raw: Reason.truncate(Sql.jsonText(row)),
      ...(key === undefined ? {} : { key }),
      ...extra
    }
  }

  // keyset pages in (column, key) order, one short statement each, so no transaction stays open while the
  // pipeline works (and PGlite's single session is never held)
  const keysetRead = (client: PgClient.PgClient, keyset: Sql.Keyset) => {
    let position = (options.startPosition ?? 1) - 1
    type Page = readonly [ReadonlyArray<Source.Item<S["Type"]>>, Option.Option<Sql.Bound | undefined>]
    const pageAfter = (from: Sql.Bound | undefined): Effect.Effect<Page, SourceError | SqlError.SqlError> =>
      Effect.flatMap(
        Effect.suspend(() => {
          const page = Sql.keysetPage(keyset, { after: from, upTo }, batchSize)
          return client.unsafe<Record<string, unknown>>(page.sql, page.params)
        }),
        (rows): Effect.Effect<Page, SourceError> => {
          if (rows.length === 0) return Effect.succeed([[], Option.none()])
          // a row given a NULL after the check
          for (const row of rows) {
            const col = row[Sql.CHECKPOINT_FIELD] as string | null
            const key = row[Sql.KEY_FIELD] as string | null
            if (col === null || key === null) return Effect.fail(nullError(keyset, { key, col }))
          }
          const lastRow = rows.at(-1)!
          const next: Sql.Bound = {
            _tag: "Row",
            column: lastRow[Sql.CHECKPOINT_FIELD] as string,
            key: lastRow[Sql.KEY_FIELD] as string
          }
          const items = rows.map((row) => toItem(row, ++position))
          last = checkpointOf(items.at(-1)!)
          return Effect.succeed([items, rows.length < batchSize ? Option.none() : Option.some(next)])
        }
      )
    return Stream.paginate(after, pageAfter)
  }

  const cursorRead = Stream.unwrap(Effect.gen(function*() {
    const client = yield* Client.open(options.url, { vectors: true })
    const conn = yield* client.reserve
    yield* conn.executeUnprepared("BEGIN", [], undefined)
    // closes the cursor and ends the transaction whether the stream ends, fails or is interrupted
    yield* Effect.addFinalizer(() => Effect.ignore(conn.executeUnprepared("ROLLBACK", [], undefined)))
    yield* conn.executeUnprepared(`DECLARE ${CURSOR} NO SCROLL CURSOR FOR ${Sql.trimQuery(options.query)}`, [], undefined)
    const fetch = `FETCH FORWARD ${batchSize} FROM ${CURSOR}`
    let position = (options.startPosition ?? 1) - 1
    return Stream.paginate(undefined, () =>
      Effect.map(conn.executeUnprepared(fetch, [], undefined), (rows) => {
        const items = (rows as ReadonlyArray<Record<string, unknown>>).map((row) => toItem(row, ++position))
        return [items, rows.length < batchSize ? Option.none() : Option.some(undefined)] as const
      }))
  }))

  const read: Stream.Stream<Source.Item<S["Type"]>, SourceError> = problem !== undefined
    ? Stream.fail(sourceError(problem))
    : (keyset !== undefined
      ? Stream.unwrap(Effect.gen(function*() {
        const client = yield* Client.open(options.url, { vectors: true })
        yield* refuseNulls(client, keyset)
        return keysetRead(client, keyset)
      }))
      : cursorRead).pipe(
        Stream.mapError((error) =>
          SqlError.isSqlError(error) ? sourceError(`${Client.where(options.url)}: ${Client.describe(error)}`) : error
        )
      )

  const count: Effect.Effect<number, SourceError> = withClient((client) =>
    keyset === undefined
      ? Effect.map(client.unsafe<{ n: unknown }>(Sql.countQuery(options.query)), (rows) => Number(rows[0]!.n))
      : Effect.andThen(refuseNulls(client, keyset), () => {
        const q = Sql.keysetCount(keyset, { after, upTo })
        return Effect.map(client.unsafe<{ n: unknown }>(q.sql, q.params), (rows) => Number(rows[0]!.n))
      })
  )

  const snapshot: PostgresSnapshot<S["Type"]> | undefined = keyset === undefined ? undefined : {
    high: withClient((client) =>
      Effect.andThen(refuseNulls(client, keyset), () =>
        Effect.flatMap(
          client.unsafe<{ col: string | null; key: string | null }>(Sql.keysetHigh(keyset)),
          (rows) => {
            const top = rows[0]
            if (top === undefined) return Effect.succeed(Option.none<string>())
            if (top.col === null || top.key === null) return Effect.fail(nullError(keyset, top))
            return Effect.succeed(Option.some(Checkpoint.encode(top.col, top.key)))
          }
        ))
    ),
    upTo: (high) => source({ ...options, upTo: high })
  }

  return {
    name,
    schema: options.schema as unknown as Schema.Codec<S["Type"], any>,
    read,
    checkpoint: column,
    lastCheckpoint: Effect.sync(() => last),
    continueAfter: (checkpoint, startPosition) => source({ ...options, after: checkpoint, startPosition }),
    snapshot,
    count
  }
}

// ===== Sink =====

/** a statement of a part the server refused for its values: which one, and the error */
class StatementRefused {
  readonly _tag = "StatementRefused"
  readonly statement: number
  readonly error: SqlError.SqlError
  constructor(statement: number, error: SqlError.SqlError) {
    this.statement = statement
    this.error = error
  }
}

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
  /**
   * Parts written at once, each on a connection and in a transaction of its own (default 3): a part's rows have keys
   * no other part has, so the parts do not wait on each other's rows, and the server's work on one (parsing the
   * values, the index, the log) overlaps another's. 1 writes one part at a time.
   */
  readonly concurrency?: number | undefined
  /** the name used in messages, by default the table */
  readonly name?: string | undefined
}

/**
 * Upserts rows into a table: `INSERT … ON CONFLICT (key) DO UPDATE SET` the
 * other columns (`DO NOTHING` when every column is a key). Writing the same
 * part again changes nothing; a row whose key is already there replaces it.
 *
 * - Up to `concurrency` parts (default 3) are written at once, each on a
 *   connection of its own.
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
 * - Its disposition is `merge` (`dispositions: ["merge"]`): a rerun upserts
 *   on the key, rows of other keys stay.
 * - A value the database cannot store fails the write with a `SinkError`
 *   whose `reason` is `Refused { message, row, column }` (`row` the index in
 *   the rows given to `write`), and nothing of the part is kept, so the
 *   pipeline can set that row apart and write the rest. Found before sending:
 *   a row that is not an object or has no key value, a string holding a NUL
 *   character (`\u0000`) for a text, array or `bytea` column (or anywhere in
 *   a `jsonb` value; `json` keeps it), a string longer than a `varchar(n)` or
 *   `char(n)` column, a vector that is not numbers. Refused by the server:
 *   SQLSTATE class 22 (bad input syntax, out of range, wrong vector
 *   dimension…), class 23 (NOT NULL, unique on another index, foreign key,
 *   check), 21000 (two keys equal for the column but not as text), 54000 (a
 *   value too large for an index) and 42804 when it names a parameter. The
 *   row comes from the parameter the server names, else from a search inside
 *   the failed statement (after the part's transaction is rolled back, a
 *   second one, rolled back too, writes the statements before it again and
 *   tries prefixes of its rows under a savepoint: about ten probes for 1000
 *   rows; nothing costs more until a value is refused); the column from the
 *   parameter or the server's error. A refusal found only at `COMMIT` (a
 *   deferred constraint) is `Refused` without a row.
 * - Anything else — an unreachable server, a missing table or column, a
 *   lost connection — fails with `reason` `Unavailable`: not the rows' fault,
 *   the run stops and resumes later.
 *
 * @example
 * ```ts
 * import { Postgres } from "@offpeak/io/postgres"
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
  /** a `SinkError` that is not the rows' fault */
  const unavailable = (message: string): SinkError =>
    new SinkError({ sink: name, message: `${name}: ${message}`, reason: new Unavailable({ message }) })
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
          if (create instanceof Table.PlanProblem) return yield* unavailable(create.message)
          // a concurrent CREATE of the same table can fail on the catalog's unique index: the table is there then
          yield* client.unsafe(create).pipe(Effect.catchReason("SqlError", "UniqueViolation", () => Effect.void))
        }
        const found = yield* Table.columnsOf(client, Sql.qualified(options.schema, options.table))
        const made = Table.plan(tableOptions, found, pgvector)
        if (made instanceof Table.PlanProblem) return yield* unavailable(made.message)
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

  const where = (part: Sink.Part) => `part ${part.runId}/${part.seq}`

  /** a `SinkError` refusing row `index` (0-based) of the rows given to `write` */
  const refused = (
    part: Sink.Part,
    index: number,
    row: unknown,
    column: string | undefined,
    problem: string
  ): SinkError => {
    const record = typeof row === "object" && row !== null ? row as Record<string, unknown> : {}
    const shownKeys = keys.filter((k) => record[k] !== null && record[k] !== undefined)
    const key = shownKeys.length === 0 ? "" : shownKeys.map((k) => `${k} ${Sql.showValue(record[k], 40)}`).join(", ")
    const detail = `${column === undefined ? "" : `column ${JSON.stringify(column)}: `}${problem}`
    return new SinkError({
      sink: name,
      message: `${name}: ${where(part)} row ${index + 1}${key === "" ? "" : ` (${key})`}: ${detail}`,
      reason: new Refused({
        message: `${key === "" ? "" : `${key}: `}${detail}`,
        row: index,
        ...(column === undefined ? {} : { column })
      })
    })
  }

  /** the rows encoded: parameters per row and the index of the row in `rows` (keys deduplicated, the last wins) */
  const encode = (
    p: Table.Plan,
    part: Sink.Part,
    rows: ReadonlyArray<A>
  ): Effect.Effect<{ readonly params: Array<ReadonlyArray<unknown>>; readonly index: Array<number> }, SinkError> =>
    Effect.suspend(() => {
      const byKey = new Map<string, readonly [ReadonlyArray<unknown>, number]>()
      for (let i = 0; i < rows.length; i++) {
        const row = rows[i] as unknown
        if (typeof row !== "object" || row === null) {
          return Effect.fail(refused(part, i, row, undefined, "the row is not an object"))
        }
        const record = row as Record<string, unknown>
        const keyValues: Array<unknown> = []
        for (const k of p.keys) {
          const v = record[k]
          if (v === null || v === undefined) return Effect.fail(refused(part, i, row, k, "no value for the key column"))
          keyValues.push(v)
        }
        const params: Array<unknown> = []
        for (let c = 0; c < p.columns.length; c++) {
          const encoded = p.encoders[c]!(record[p.columns[c]!])
          if ("error" in encoded) return Effect.fail(refused(part, i, row, p.columns[c], encoded.error))
          params.push(encoded.ok)
        }
        const id = Sql.jsonText(keyValues.map((v) => Sql.scalarText(v)))
        byKey.delete(id)
        byKey.set(id, [params, i])
      }
      const params: Array<ReadonlyArray<unknown>> = []
      const index: Array<number> = []
      for (const [row, i] of byKey.values()) {
        params.push(row)
        index.push(i)
      }
      return Effect.succeed({ params, index })
    })

  const SAVEPOINT = "offpeak_probe"

  /**
   * The row of a statement the server refused: the row and column the error
   * names when it names a parameter; else, in a transaction of its own that is
   * rolled back, the statements before it again (a row may clash with one
   * written before) and then prefixes of its rows under a savepoint: the
   * shortest prefix that still fails ends with the row at fault (about ten
   * probes for 1000 rows).
   */
  const locate = (
    client: PgClient.PgClient,
    p: Table.Plan,
    part: Sink.Part,
    rows: ReadonlyArray<A>,
    encoded: { readonly params: ReadonlyArray<ReadonlyArray<unknown>>; readonly index: ReadonlyArray<number> },
    statements: ReadonlyArray<Table.Statement>,
    failed: StatementRefused
  ): Effect.Effect<never, SinkError | SqlError.SqlError> => {
    const width = p.columns.length
    const statement = statements[failed.statement]!
    const at = (inStatement: number, error: SqlError.SqlError) => {
      const server = Refusal.serverError(error)
      const parameter = Refusal.parameterOf(server.where)
      const index = encoded.index[statement.first + inStatement]!
      const column = parameter !== undefined ? p.columns[(parameter - 1) % width] : server.column
      const detail = server.detail === undefined ? "" : ` (${server.detail})`
      return refused(part, index, rows[index], column, Reason.truncate(`${server.message ?? Client.describe(error)}${detail}`))
    }
    const parameter = Refusal.parameterOf(Refusal.serverError(failed.error).where)
    if (parameter !== undefined) return Effect.fail(at(Math.floor((parameter - 1) / width), failed.error))
    if (statement.rows === 1) return Effect.fail(at(0, failed.error))
    return client.withTransaction(Effect.gen(function*() {
      for (const before of statements.slice(0, failed.statement)) yield* client.unsafe(before.sql, before.params)
      yield* client.unsafe(`SAVEPOINT ${SAVEPOINT}`)
      let ok = 0
      let failing = statement.rows
      let failure = failed.error
      while (failing - ok > 1) {
        const mid = (ok + failing) >>> 1
        const probe = Table.statements(p, encoded.params.slice(statement.first, statement.first + mid))
        const result = yield* Effect.result(Effect.forEach(probe, (s) => client.unsafe(s.sql, s.params), { discard: true }))
        if (result._tag === "Failure" && !Refusal.isRefusal(Refusal.serverError(result.failure))) return yield* result.failure
        yield* client.unsafe(`ROLLBACK TO SAVEPOINT ${SAVEPOINT}`)
        if (result._tag === "Success") {
          ok = mid
        } else {
          failing = mid
          failure = result.failure
        }
      }
      // failing, so that the transaction is rolled back
      return yield* at(failing - 1, failure)
    }))
  }

  const write = (part: Sink.Part, rows: ReadonlyArray<A>): Effect.Effect<void, SinkError> =>
    Effect.gen(function*() {
      if (rows.length === 0) return
      if (columns === undefined) {
        const first = rows[0] as unknown
        if (typeof first !== "object" || first === null) {
          return yield* refused(part, 0, first, undefined, "the row is not an object")
        }
        columns = Object.keys(first)
      }
      const problem = identifiers()
      if (problem !== undefined) return yield* unavailable(problem)
      const client = yield* Client.open(options.url)
      const p = yield* prepare(client, columns)
      const encoded = yield* encode(p, part, rows)
      const statements = Table.statements(p, encoded.params)
      yield* client.withTransaction(
        Effect.forEach(
          statements,
          (s, i) =>
            client.unsafe(s.sql, s.params).pipe(
              Effect.mapError((error) =>
                Refusal.isRefusal(Refusal.serverError(error)) ? new StatementRefused(i, error) : error
              ),
              Effect.tap(() => i === 0 ? Failpoint.hit("part.writing") : Effect.void)
            ),
          { discard: true }
        )
      ).pipe(
        Effect.catchIf(
          (error): error is StatementRefused => error instanceof StatementRefused,
          (failed) => locate(client, p, part, rows, encoded, statements, failed)
        )
      )
    }).pipe(
      Effect.scoped,
      Effect.mapError((error) => {
        if (!SqlError.isSqlError(error)) return error
        const message = `${where(part)}: ${Client.where(options.url)}: ${Client.describe(error)}`
        // a refusal no statement can be blamed for (a deferred constraint checked at COMMIT): the part's rows
        return Refusal.isRefusal(Refusal.serverError(error))
          ? new SinkError({ sink: name, message: `${name}: ${message}`, reason: new Refused({ message: Client.describe(error) }) })
          : unavailable(message)
      })
    )

  return { name, write, dispositions: ["merge"], concurrency: options.concurrency ?? 3 }
}
