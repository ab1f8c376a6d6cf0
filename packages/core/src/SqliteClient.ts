/**
 * An `effect/sql` client on Node's built-in `node:sqlite` (no native
 * dependency). offpeak's embedded ledger runs on it.
 *
 * **Why our own driver**: every published `@effect/sql-sqlite-*` build for
 * Effect 4 imports `effect/unstable/*`, which effect 4.1.0 no longer has.
 *
 * **A thread of its own**: `node:sqlite` is synchronous, so the database
 * lives in a worker thread (`internal/sqliteWorker.js`) and each statement is
 * one message there and back (inside a transaction, a write or a schema change
 * goes without waiting for its answer: a failure fails the transaction's next
 * statement); the main thread parses, encodes and writes while SQLite works. `executeMany`/`writeMany` run one statement over thousands of
 * rows of parameters in one message (no SQL text, parameter list or clone of
 * values as long as the rows).
 *
 * **Errors that say where**: the database's folder is created when it is missing; a corrupt file, a full disk, a
 * file that cannot be opened or written fail naming the file and what to do.
 *
 * **Gotchas**: one connection behind a semaphore (SQLite allows one writer);
 * `.stream` fetches rows in pages of 1,000 and holds the connection while it runs.
 *
 * @since 0.1.0
 */
import { Context, Effect, Layer, Option, Scope, Semaphore, Stream } from "effect"
import * as Reactivity from "effect/reactivity/Reactivity"
import { SqlClient, SqlConnection, SqlError, Statement } from "effect/sql"
import * as fs from "node:fs"
import * as path from "node:path"
import { Worker as NodeWorker } from "node:worker_threads"

/** what the client sends its thread (`internal/sqliteWorker.js`) */
type Message =
  | { readonly id: number; readonly op: "open"; readonly options: Required<Options> }
  | {
    readonly id: number
    readonly op: "run"
    readonly sql: string
    readonly params: ReadonlyArray<unknown>
    readonly arrays: boolean
    readonly prepared: boolean
    /** a write inside a transaction: no answer unless it fails, and then the next answered message fails with it */
    readonly deferred?: boolean | undefined
  }
  | {
    readonly id: number
    readonly op: "many"
    readonly sql: string
    /** bound first, before each row's own parameters */
    readonly params: ReadonlyArray<unknown>
    readonly rows: ReadonlyArray<ReadonlyArray<unknown>>
    readonly deferred?: boolean | undefined
  }
  | { readonly id: number; readonly op: "iterate"; readonly sql: string; readonly params: ReadonlyArray<unknown> }
  | { readonly id: number; readonly op: "next"; readonly cursor: number; readonly size: number }
  | { readonly id: number; readonly op: "release"; readonly cursor: number }
  | { readonly id: number; readonly op: "close" }

/** its answer; `tx` tells whether a transaction is open, `errcode` is SQLite's result code */
type Reply =
  | { readonly id: number; readonly ok: true; readonly value: unknown; readonly tx: boolean }
  | {
    readonly id: number
    readonly ok: false
    readonly error: { readonly message: string; readonly errcode: number | undefined }
    readonly tx: boolean
  }

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
 * What {@link Service.executeMany} answers: the rows the statement returned (each as an array of its columns, in
 * order), and how many rows it changed (for a statement that returns none).
 *
 * @since 0.1.0
 * @category models
 */
export interface Many {
  readonly rows: ReadonlyArray<ReadonlyArray<unknown>>
  readonly changes: number
}

/**
 * The client: an `effect/sql` client, and one statement run over many rows of parameters.
 *
 * @since 0.1.0
 * @category models
 */
export interface Service extends SqlClient.SqlClient {
  /**
   * Runs `sql` (SQLite's `?` placeholders) once per row of `rows`, with `params` bound before the row's own values,
   * in one message to the SQLite thread: prepared once, no list of placeholders as long as the rows. A single-row
   * `INSERT … VALUES (?, …)` with no `params` runs there as multi-row INSERTs of up to 999 values (use `INSERT OR
   * FAIL` inside a transaction: SQLite then keeps no statement journal). Inside a transaction it runs on the
   * transaction's connection, else it waits for the connection like any statement.
   *
   * @example
   * ```ts
   * const { rows } = yield* sql.executeMany("SELECT id, name FROM users WHERE org = ? AND id = ?", [[1], [2]], [org])
   * ```
   */
  readonly executeMany: (
    sql: string,
    rows: ReadonlyArray<ReadonlyArray<unknown>>,
    params?: ReadonlyArray<unknown>
  ) => Effect.Effect<Many, SqlError.SqlError>
  /**
   * `executeMany` for a write whose answer is not needed (an INSERT of rows): inside a transaction it is sent without
   * waiting, and its failure fails the transaction's next statement (at the latest its COMMIT), which rolls it back.
   */
  readonly writeMany: (
    sql: string,
    rows: ReadonlyArray<ReadonlyArray<unknown>>,
    params?: ReadonlyArray<unknown>
  ) => Effect.Effect<void, SqlError.SqlError>
}

/**
 * The service tag of the node:sqlite client.
 *
 * @since 0.1.0
 * @category services
 */
export class SqliteClient extends Context.Service<SqliteClient, Service>()("@offpeak/core/SqliteClient") {}

/**
 * What a failure of the database file itself means and what to do about it, naming the file: corrupt (or not a
 * database), the disk full, the file unopenable, read-only, or an I/O error. Undefined for any other error.
 */
const fileProblem = (filename: string, errcode: number | undefined, message: string): string | undefined => {
  if (errcode === undefined || filename === ":memory:") return undefined
  const file = path.resolve(filename)
  switch (errcode & 0xff) {
    case 11: // SQLITE_CORRUPT
    case 26: // SQLITE_NOTADB
      return `the state database ${file} is corrupt (${message}). Move it aside (mv '${file}' '${file}.corrupt') and ` +
        `run again, which starts the runs afresh (batches they left at the provider are not adopted), or restore it ` +
        `from a backup; 'sqlite3 ${file}.corrupt .recover' may salvage its rows`
    case 13: // SQLITE_FULL
      return `the disk holding the state database ${file} is full (${message}). Free space there (or give another ` +
        `folder with --state-dir) and resume the run: the write that failed was rolled back, nothing recorded before it is lost`
    case 14: // SQLITE_CANTOPEN
      return `the state database ${file} cannot be opened (${message}): check that its folder exists and that this ` +
        `user may write there`
    case 8: // SQLITE_READONLY
      return `the state database ${file} is read-only (${message}): check the permissions of the file and its folder`
    case 10: // SQLITE_IOERR
      return `the state database ${file} could not be read or written (${message}): check the disk (a full disk, a ` +
        `removed mount, a network file system that lost its server)`
    default:
      return undefined
  }
}

const toSqlError = (operation: string, filename: string) => (cause: unknown) => {
  const errcode = typeof cause === "object" && cause !== null && "errcode" in cause
    ? (cause as { errcode: unknown }).errcode
    : undefined
  const raw = cause instanceof Error ? cause.message : `sqlite ${operation} failed`
  const message = fileProblem(filename, typeof errcode === "number" ? errcode : undefined, raw) ?? raw
  const classified = typeof errcode === "number" ? { errno: errcode, message, cause } : cause
  return new SqlError.SqlError({ reason: SqlError.classifySqliteError(classified, { message, operation }) })
}

const spawnThread = () =>
  new NodeWorker(new URL("./internal/sqliteWorker.js", import.meta.url), {
    // named, so `top -H` and /proc/<pid>/task show its CPU apart from the pipeline's thread
    name: "offpeak-sqlite",
    // the thread holds SQLite's page cache and the rows in transit, nothing else
    resourceLimits: { maxYoungGenerationSizeMb: 4 }
  })

/** a thread started ahead by {@link prewarm}, not yet taken by a client */
let warm: NodeWorker | undefined

/**
 * Starts a SQLite thread now for the next client to take: Node needs about 0.1 s to start a thread, which
 * `offpeak run` spends loading the pipeline's module meanwhile. A thread never taken does not keep the process
 * alive; a second call while one waits does nothing.
 *
 * @since 0.1.0
 * @category constructors
 */
export const prewarm = (): void => {
  if (warm !== undefined) return
  const thread = spawnThread()
  // a thread that fails or exits before it is taken is dropped: the client then starts its own
  thread.on("error", () => {})
  thread.once("exit", () => {
    if (warm === thread) warm = undefined
  })
  thread.unref()
  warm = thread
}

/** the thread started ahead, else a new one */
const takeThread = (): NodeWorker => {
  const thread = warm ?? spawnThread()
  warm = undefined
  thread.ref()
  return thread
}

/**
 * Opens the database in its own thread and builds the client; closes both with the scope.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: Options): Effect.Effect<Service, SqlError.SqlError, Scope.Scope | Reactivity.Reactivity> =>
  Effect.gen(function*() {
    let nextId = 0
    let inTransaction = false
    const pending = new Map<number, (reply: Reply) => void>()
    let broken: string | undefined
    const failAll = (why: string) => {
      broken ??= why
      for (const [id, resume] of pending) resume({ id, ok: false, error: { message: why, errcode: undefined }, tx: false })
      pending.clear()
    }
    const worker = yield* Effect.acquireRelease(
      Effect.sync(() => {
        const thread = takeThread()
        thread.on("message", (reply: Reply) => {
          inTransaction = reply.tx
          const resume = pending.get(reply.id)
          pending.delete(reply.id)
          resume?.(reply)
        })
        thread.on("error", (e) => failAll(`the SQLite thread failed: ${e.message}`))
        thread.on("exit", (code) => failAll(`the SQLite thread exited (code ${code})`))
        return thread
      }),
      (thread) =>
        Effect.promise(async () => {
          if (broken === undefined) {
            await new Promise<void>((resolve) => {
              const id = nextId++
              pending.set(id, () => resolve())
              thread.postMessage({ id, op: "close" } satisfies Message)
            })
          }
          await thread.terminate()
        })
    )

    /** sends one message and waits for its answer */
    const call = (operation: string, message: DistributiveOmit<Message, "id">) =>
      Effect.callback<unknown, SqlError.SqlError>((resume) => {
        if (broken !== undefined) return resume(Effect.fail(toSqlError(operation, options.filename)(new Error(broken))))
        const id = nextId++
        pending.set(id, (reply) =>
          resume(
            reply.ok
              ? Effect.succeed(reply.value)
              : Effect.fail(
                toSqlError(operation, options.filename)(
                  Object.assign(new Error(reply.error.message), { errcode: reply.error.errcode })
                )
              )
          ))
        worker.postMessage({ ...message, id } as Message)
      })

    // the database's folder is created (`.offpeak/` on a fresh checkout)
    if (options.filename !== ":memory:" && !options.filename.startsWith("file:") && options.readOnly !== true) {
      const folder = path.dirname(path.resolve(options.filename))
      yield* Effect.try({
        try: () => fs.mkdirSync(folder, { recursive: true }),
        catch: (cause) =>
          new SqlError.SqlError({
            reason: new SqlError.ConnectionError({
              cause,
              message: `cannot create the folder ${folder} of the state database: ${cause instanceof Error ? cause.message : String(cause)}`,
              operation: "open"
            })
          })
      })
    }
    yield* call("open", {
      op: "open",
      options: {
        filename: options.filename,
        readOnly: options.readOnly ?? false,
        disableWAL: options.disableWAL ?? false,
        busyTimeoutMs: options.busyTimeoutMs ?? 5000
      }
    })

    const exec = (sql: string, params: ReadonlyArray<unknown>, arrays: boolean, prepared: boolean) =>
      inTransaction && isWrite(sql)
        ? Effect.sync(() => {
          // inside a transaction a write returns nothing: send it on and go on; if it fails, the transaction's next
          // statement (at the latest its COMMIT) fails with its error, and the transaction is rolled back
          if (broken === undefined) worker.postMessage({ id: nextId++, op: "run", sql, params, arrays, prepared, deferred: true })
          return [] as Array<any>
        })
        : call("execute", { op: "run", sql, params, arrays, prepared }) as Effect.Effect<Array<any>, SqlError.SqlError>
    const ROWS_PER_MESSAGE = 1_000
    const connection: SqlConnection.Connection = {
      execute: (sql, params, transform) =>
        transform ? Effect.map(exec(sql, params, false, true), transform) : exec(sql, params, false, true),
      executeRaw: (sql, params) => exec(sql, params, false, true),
      executeValues: (sql, params) => exec(sql, params, true, true),
      executeValuesUnprepared: (sql, params) => exec(sql, params, true, false),
      executeUnprepared: (sql, params, transform) =>
        transform ? Effect.map(exec(sql, params, false, false), transform) : exec(sql, params, false, false),
      executeStream: (sql, params, transform) => {
        // rows come over in pages; the cursor is released when the stream ends or is interrupted
        const rows = Stream.unwrap(Effect.map(
          Effect.acquireRelease(
            call("iterate", { op: "iterate", sql, params }) as Effect.Effect<number, SqlError.SqlError>,
            (cursor) => Effect.ignore(call("release", { op: "release", cursor }))
          ),
          (cursor) =>
            Stream.paginate(undefined, () =>
              Effect.map(
                call("next", { op: "next", cursor, size: ROWS_PER_MESSAGE }) as Effect.Effect<
                  { rows: Array<any>; done: boolean },
                  SqlError.SqlError
                >,
                (page) => [page.rows, page.done ? Option.none() : Option.some(undefined)] as const
              ))
        ))
        return (transform ? Stream.mapArray(rows, (chunk) => transform(chunk) as any) : rows) as any
      }
    }
    const semaphore = yield* Semaphore.make(1)
    const acquirers = SqlClient.makeSqliteAcquirers({
      connection: Effect.succeed(connection),
      semaphore,
      isTransaction: () => inTransaction
    })
    const client = yield* SqlClient.make({
      ...acquirers,
      driver: "sqlite",
      // the write lock at BEGIN, so another connection waits (busy_timeout) instead of failing on a lock upgrade
      beginTransaction: options.readOnly === true ? "BEGIN" : "BEGIN IMMEDIATE",
      compiler: Statement.makeCompilerSqlite(),
      spanAttributes: [["db.system.name", "sqlite"]]
    })
    /** runs on the transaction's connection when there is one, else holding the connection for itself */
    const onConnection = <A>(effect: Effect.Effect<A, SqlError.SqlError>) =>
      Effect.flatMap(
        Effect.serviceOption(client.transactionService),
        Option.match({ onSome: () => effect, onNone: () => acquirers.borrower(() => effect) })
      )
    const executeMany: Service["executeMany"] = (sql, rows, params = []) =>
      rows.length === 0
        ? Effect.succeed({ rows: [], changes: 0 })
        : onConnection(call("executeMany", { op: "many", sql, params, rows }) as Effect.Effect<Many, SqlError.SqlError>)
    const writeMany: Service["writeMany"] = (sql, rows, params = []) =>
      rows.length === 0 ? Effect.void : Effect.flatMap(
        Effect.serviceOption(client.transactionService),
        Option.match({
          onSome: () =>
            Effect.sync(() => {
              // as a write of `exec` inside a transaction: sent on, its failure fails the transaction's next statement
              if (broken === undefined) worker.postMessage({ id: nextId++, op: "many", sql, params, rows, deferred: true } satisfies Message)
            }),
          onNone: () => Effect.asVoid(executeMany(sql, rows, params))
        })
      )
    return Object.assign(client, { executeMany, writeMany }) as Service
  })

/** a statement that changes rows or the schema and returns none */
const isWrite = (sql: string) => /^\s*(INSERT|UPDATE|DELETE|REPLACE|CREATE|ALTER|DROP)\b/i.test(sql) && !/\bRETURNING\b/i.test(sql)

type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never

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
