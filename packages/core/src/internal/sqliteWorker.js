// @ts-check
/**
 * The thread that owns the `node:sqlite` database of a `SqliteClient`.
 *
 * `node:sqlite` is synchronous: on the main thread every statement stops the
 * pipeline's own work (parsing, encoding, writing). Here statements run while
 * the main thread goes on; the client sends one message per statement and gets
 * one answer back.
 *
 * Plain JavaScript with no dependency beyond Node, on purpose: a `.ts` file would
 * make this thread load Node's TypeScript stripper (a WebAssembly module of its
 * own, ~25 MB resident) just to start.
 *
 * Messages (`SqliteClient`'s `Message`): `open`, `run`, `many`, `iterate`, `next`,
 * `release`, `close`; each answered by a `Reply` `{ id, ok, value | error, tx }`
 * where `tx` tells whether a transaction is open, except a deferred write (an
 * INSERT, UPDATE or DELETE inside a transaction): it is answered only by failing
 * the next answered statement of its transaction, so a transaction's writes cost
 * no round trip each. `many` runs one prepared statement once per row of
 * parameters it carries (`params` first, then the row's): thousands of rows are
 * one message of small arrays, one statement prepared once, and no SQL text or
 * parameter list as long as the rows; it answers the rows the statement returned
 * (as arrays) and how many rows it changed.
 *
 * @internal
 */
import { DatabaseSync } from "node:sqlite"
import { parentPort } from "node:worker_threads"

const port = parentPort
if (port !== null) {
  /** @type {DatabaseSync | undefined} */
  let db
  /** @type {Map<string, import("node:sqlite").StatementSync>} */
  const cache = new Map()
  /** @type {Map<number, Iterator<unknown>>} */
  const cursors = new Map()

  /** @param {{ filename: string, readOnly: boolean, disableWAL: boolean, busyTimeoutMs: number }} options */
  const open = (options) => {
    const opened = new DatabaseSync(options.filename, { readOnly: options.readOnly })
    db = opened
    opened.exec(`PRAGMA busy_timeout = ${Math.max(0, Math.floor(options.busyTimeoutMs))}`)
    if (!options.disableWAL && !options.readOnly && options.filename !== ":memory:") {
      // switching a fresh file to WAL takes an exclusive lock, and SQLite answers "database is locked" at once
      // (no busy handler) when another connection opens the same file at that moment: wait and try again
      for (let attempt = 1; ; attempt++) {
        try {
          opened.exec("PRAGMA journal_mode = WAL")
          break
        } catch (e) {
          if (attempt >= 100 || !/locked|busy/i.test(e instanceof Error ? e.message : String(e))) throw e
          Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 20)
        }
      }
      // NORMAL in WAL mode: a commit survives a killed process (not a power cut) without an fsync per commit
      opened.exec("PRAGMA synchronous = NORMAL")
      // a checkpoint copies the log into the file and syncs both: every 200 MB of log rather than every 40 MB
      // (a million-row run writes the same hot pages many times over; each checkpoint copies them once)
      opened.exec("PRAGMA wal_autocheckpoint = 50000")
      // 8 MB of pages: the ledger writes in source order, so its hot pages are few (the fingerprint index aside)
      opened.exec("PRAGMA cache_size = -8192")
      // statement journals and sorts in memory: on disk, every multi-row statement of a transaction spilled its
      // journal to a temporary file (700 MB of writes per 100,000 rows)
      opened.exec("PRAGMA temp_store = MEMORY")
    }
    opened.exec("PRAGMA foreign_keys = ON")
  }

  const database = () => {
    if (db === undefined) throw new Error("the database is not open")
    return db
  }

  /**
   * A prepared statement, from the cache when it is there. The cache keeps the last 64 statements used, and never
   * one of more than 1,000 parameters: a statement's program grows with its parameters (an `IN` list of 5,000 ids
   * is ~0.8 MB), and lists of every length would pile up outside the JavaScript heap.
   *
   * @param {string} sql
   * @param {number} params
   */
  const prepare = (sql, params) => {
    const cached = cache.get(sql)
    if (cached !== undefined) {
      cache.delete(sql)
      cache.set(sql, cached)
      return cached
    }
    const stmt = database().prepare(sql)
    if (params <= 1_000) {
      cache.set(sql, stmt)
      if (cache.size > 64) cache.delete(/** @type {string} */ (cache.keys().next().value))
    }
    return stmt
  }

  /** `INSERT … VALUES (?, …, ?)`: its head and its tuple of placeholders */
  const SINGLE_ROW_INSERT = /^(\s*INSERT\b[\s\S]*\bVALUES\s*)(\([\s?,]*\))\s*$/i

  /**
   * `sql` run once per row of `rows`, each row's values bound after `fixed`. An `INSERT … VALUES (?, …)` with no fixed
   * parameters goes as multi-row INSERTs of up to 999 parameters (a third of the cost per row of one statement per row:
   * one call, one reset, one step for many rows); any other statement runs once per row. Answers the rows returned
   * (as arrays) and the rows changed.
   *
   * @param {string} sql
   * @param {ReadonlyArray<any>} fixed
   * @param {ReadonlyArray<ReadonlyArray<any>>} rows
   */
  const many = (sql, fixed, rows) => {
    const insert = fixed.length === 0 ? SINGLE_ROW_INSERT.exec(sql) : null
    if (insert !== null && rows.length > 0) {
      const width = rows[0].length
      const per = Math.max(1, Math.floor(999 / Math.max(1, width)))
      const tuple = insert[2]
      let changes = 0
      let i = 0
      if (rows.length >= per) {
        const stmt = prepare(`${insert[1]}${Array(per).fill(tuple).join(", ")}`, per * width)
        const args = new Array(per * width)
        for (; i + per <= rows.length; i += per) {
          let k = 0
          for (let r = i; r < i + per; r++) {
            const row = rows[r]
            for (let j = 0; j < width; j++) args[k++] = row[j]
          }
          changes += Number(stmt.run(...args).changes)
        }
      }
      // the rest one row at a time (a statement for every length of rest would crowd the cache out)
      const stmt = prepare(sql, width)
      for (; i < rows.length; i++) changes += Number(stmt.run(...rows[i]).changes)
      return { rows: [], changes }
    }
    const stmt = prepare(sql, 0)
    stmt.setReturnArrays(true)
    const args = [...fixed]
    const width = fixed.length
    if (stmt.columns().length > 0) {
      const out = []
      for (const row of rows) {
        args.length = width + row.length
        for (let j = 0; j < row.length; j++) args[width + j] = row[j]
        for (const r of stmt.all(...args)) out.push(r)
      }
      return { rows: out, changes: 0 }
    }
    let changes = 0
    for (const row of rows) {
      args.length = width + row.length
      for (let j = 0; j < row.length; j++) args[width + j] = row[j]
      changes += Number(stmt.run(...args).changes)
    }
    return { rows: [], changes }
  }

  /** @param {any} message */
  const handle = (message) => {
    switch (message.op) {
      case "open":
        return open(message.options)
      case "run": {
        const stmt = message.prepared ? prepare(message.sql, message.params.length) : database().prepare(message.sql)
        stmt.setReturnArrays(message.arrays)
        if (stmt.columns().length > 0) return stmt.all(...message.params)
        stmt.run(...message.params)
        return []
      }
      case "many":
        return many(message.sql, message.params, message.rows)
      case "iterate": {
        cursors.set(message.id, database().prepare(message.sql).iterate(...message.params))
        return message.id
      }
      case "next": {
        const iterator = cursors.get(message.cursor)
        if (iterator === undefined) return { rows: [], done: true }
        const rows = []
        while (rows.length < message.size) {
          const next = iterator.next()
          if (next.done === true) {
            cursors.delete(message.cursor)
            return { rows, done: true }
          }
          rows.push(next.value)
        }
        return { rows, done: false }
      }
      case "release": {
        cursors.get(message.cursor)?.return?.()
        cursors.delete(message.cursor)
        return undefined
      }
      case "close": {
        for (const iterator of cursors.values()) iterator.return?.()
        cursors.clear()
        cache.clear()
        db?.close()
        db = undefined
        return undefined
      }
      default:
        throw new Error(`unknown message ${JSON.stringify(message.op)}`)
    }
  }

  /** @param {unknown} e */
  const toWire = (e) => {
    const errcode = typeof e === "object" && e !== null && "errcode" in e ? e.errcode : undefined
    return { message: e instanceof Error ? e.message : String(e), errcode: typeof errcode === "number" ? errcode : undefined }
  }
  // the failure of a deferred write: every later statement of its transaction fails with it, until ROLLBACK
  /** @type {{ message: string, errcode: number | undefined } | undefined} */
  let poisoned

  port.on("message", (/** @type {any} */ message) => {
    const tx = () => db?.isTransaction ?? false
    const statement = message.op === "run" || message.op === "many"
    const deferred = statement && message.deferred === true
    const rollback = message.op === "run" && /^\s*ROLLBACK\b/i.test(message.sql)
    if (poisoned !== undefined && statement && !rollback) {
      if (!deferred) port.postMessage({ id: message.id, ok: false, error: poisoned, tx: tx() })
      return
    }
    if (rollback) poisoned = undefined
    try {
      const value = handle(message)
      if (!deferred) port.postMessage({ id: message.id, ok: true, value, tx: tx() })
    } catch (e) {
      if (deferred) poisoned = toWire(e)
      else port.postMessage({ id: message.id, ok: false, error: toWire(e), tx: tx() })
    }
    if (message.op === "close") port.close()
  })
}
