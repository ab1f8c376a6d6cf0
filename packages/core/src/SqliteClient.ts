/**
 * An `effect/sql` client on Node's built-in `node:sqlite` (no native
 * dependency). offpeak's embedded ledger runs on it.
 *
 * **Why our own driver**: every published `@effect/sql-sqlite-*` build for
 * Effect 4 imports `effect/unstable/*`, which effect 4.1.0 no longer has.
 *
 * **Gotchas**: one connection behind a semaphore (SQLite allows one writer);
 * `.stream` iterates synchronously and holds the connection while it runs.
 *
 * @since 0.1.0
 */
import { Context, Effect, Layer, Scope, Semaphore, Stream } from "effect"
import { Reactivity } from "effect/reactivity"
import { SqlClient, SqlConnection, SqlError, Statement } from "effect/sql"
import { DatabaseSync, type SQLInputValue, type StatementSync } from "node:sqlite"

/**
 * Options of the client.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** a file path, or `:memory:` */
  readonly filename: string
  readonly readOnly?: boolean | undefined
  readonly disableWAL?: boolean | undefined
  /** milliseconds a statement waits for a lock held by another process */
  readonly busyTimeoutMs?: number | undefined
}

/**
 * The client, with access to the underlying `DatabaseSync`.
 *
 * @since 0.1.0
 * @category models
 */
export interface Service extends SqlClient.SqlClient {
  readonly db: DatabaseSync
}

/**
 * The service tag of the node:sqlite client.
 *
 * @since 0.1.0
 * @category services
 */
export class SqliteClient extends Context.Service<SqliteClient, Service>()("@offpeak/core/SqliteClient") {}

const toSqlError = (operation: string) => (cause: unknown) => {
  const errcode = typeof cause === "object" && cause !== null && "errcode" in cause
    ? (cause as { errcode: unknown }).errcode
    : undefined
  const message = cause instanceof Error ? cause.message : `sqlite ${operation} failed`
  const classified = typeof errcode === "number" ? { errno: errcode, message, cause } : cause
  return new SqlError.SqlError({ reason: SqlError.classifySqliteError(classified, { message, operation }) })
}

/**
 * Opens the database and builds the client; closes it with the scope.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: Options): Effect.Effect<Service, SqlError.SqlError, Scope.Scope | Reactivity.Reactivity> =>
  Effect.gen(function*() {
    const db = yield* Effect.acquireRelease(
      Effect.try({
        try: () => new DatabaseSync(options.filename, { readOnly: options.readOnly ?? false }),
        catch: toSqlError("open")
      }),
      (db) => Effect.sync(() => db.close())
    )
    yield* Effect.try({
      try: () => {
        db.exec(`PRAGMA busy_timeout = ${Math.max(0, Math.floor(options.busyTimeoutMs ?? 5000))}`)
        if (!options.disableWAL && !options.readOnly && options.filename !== ":memory:") {
          db.exec("PRAGMA journal_mode = WAL")
          // NORMAL in WAL mode: a commit survives a killed process (not a power cut) without an fsync per commit
          db.exec("PRAGMA synchronous = NORMAL")
          // a checkpoint copies the log into the file and syncs both: every 200 MB of log rather than every 40 MB
          // (a million-row run writes the same hot pages many times over; each checkpoint copies them once)
          db.exec("PRAGMA wal_autocheckpoint = 50000")
          // 8 MB of pages: the ledger writes in source order, so its hot pages are few (the fingerprint index aside)
          db.exec("PRAGMA cache_size = -8192")
        }
        db.exec("PRAGMA foreign_keys = ON")
      },
      catch: toSqlError("configure")
    })
    const cache = new Map<string, StatementSync>()
    const prepare = (sql: string) => {
      let stmt = cache.get(sql)
      if (stmt === undefined) {
        stmt = db.prepare(sql)
        if (cache.size > 500) cache.clear()
        cache.set(sql, stmt)
      }
      return stmt
    }
    const runRows = (stmt: StatementSync, params: ReadonlyArray<unknown>, arrays: boolean) => {
      stmt.setReturnArrays(arrays)
      const args = params as Array<SQLInputValue>
      if (stmt.columns().length > 0) return stmt.all(...args) as Array<any>
      stmt.run(...args)
      return []
    }
    const exec = (sql: string, params: ReadonlyArray<unknown>, arrays: boolean, prepared: boolean) =>
      Effect.try({
        try: () => runRows(prepared ? prepare(sql) : db.prepare(sql), params, arrays),
        catch: toSqlError("execute")
      })
    const connection: SqlConnection.Connection = {
      execute: (sql, params, transform) =>
        transform ? Effect.map(exec(sql, params, false, true), transform) : exec(sql, params, false, true),
      executeRaw: (sql, params) => exec(sql, params, false, true),
      executeValues: (sql, params) => exec(sql, params, true, true),
      executeValuesUnprepared: (sql, params) => exec(sql, params, true, false),
      executeUnprepared: (sql, params, transform) =>
        transform ? Effect.map(exec(sql, params, false, false), transform) : exec(sql, params, false, false),
      executeStream: (sql, params, transform) =>
        Stream.suspend(() => {
          const iterator = db.prepare(sql).iterate(...(params as Array<SQLInputValue>)) as IterableIterator<any>
          const stream = Stream.fromIterable(iterator as Iterable<any>)
          return transform ? Stream.mapArray(stream, (rows) => transform(rows) as any) : stream
        }) as any
    }
    const semaphore = yield* Semaphore.make(1)
    const acquirers = SqlClient.makeSqliteAcquirers({
      connection: Effect.succeed(connection),
      semaphore,
      isTransaction: () => db.isTransaction
    })
    const client = yield* SqlClient.make({
      ...acquirers,
      driver: "sqlite",
      compiler: Statement.makeCompilerSqlite(),
      spanAttributes: [["db.system.name", "sqlite"]]
    })
    return Object.assign(client, { db }) as Service
  })

/**
 * A layer providing both `SqliteClient` and the generic `SqlClient`.
 *
 * @example
 * ```ts
 * program.pipe(Effect.provide(SqliteClient.layer({ filename: ".offpeak/state.db" })))
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: Options): Layer.Layer<SqliteClient | SqlClient.SqlClient, SqlError.SqlError> =>
  Layer.effectContext(
    Effect.map(make(options), (client) => Context.make(SqliteClient, client).pipe(Context.add(SqlClient.SqlClient, client)))
  ).pipe(Layer.provide(Reactivity.layer))
