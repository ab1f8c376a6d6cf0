/**
 * The BigQuery emulator's engine: DuckDB holds everything.
 *
 * - One DuckDB file per project (`<dir>/projects/<project>.duckdb`), attached
 *   as a catalog named after the project; a dataset is a DuckDB schema, a
 *   table a DuckDB table. The schema `__offpeak` of each project file keeps
 *   what DuckDB cannot say (dataset and table resources, declared schemas with
 *   BIGNUMERIC / REQUIRED-in-RECORD / descriptions, and the jobs), and
 *   `__offpeak_results` the results of query jobs (BigQuery's anonymous tables).
 * - A job runs in one DuckDB transaction that also marks it DONE: a process
 *   killed mid-job leaves neither its effects nor a DONE, and the next engine
 *   on the folder runs it again (jobs still RUNNING are picked up at start).
 * - Jobs run one at a time, in creation order, on one connection, behind the
 *   same lock as every other write; reads (result pages, `tabledata.list`) run
 *   on connections of their own and see committed data.
 *
 * @internal
 */
import type * as Duck from "@duckdb/node-api"
import * as crypto from "node:crypto"
import * as fs from "node:fs"
import * as path from "node:path"
import * as readline from "node:readline"
import { fires } from "../../gcs/internal/faults.ts"
import { GoogleError } from "../../gcs/internal/http.ts"
import { Store as GcsStore } from "../../gcs/internal/store.ts"
import * as Sql from "./emulatorSql.ts"
import * as Types from "./emulatorTypes.ts"

// ===== knobs, models =====

/** a rule that makes jobs fail (decided when the job is created, so a restart does not change it) */
export interface FailJobs {
  readonly kind?: "query" | "load" | "copy" | "*" | undefined
  readonly times?: number | undefined
  readonly rate?: number | undefined
  /** `errorResult.reason` (default `backendError`) */
  readonly reason?: string | undefined
  readonly message?: string | undefined
}

export interface Knobs {
  readonly seed: number
  /** a job stays RUNNING at least this long after its creation */
  readonly jobDelayMs: number
  readonly failJobs: FailJobs | null
  /** the first N `jobs.insert` that create their job answer 500 anyway */
  readonly jobInsertSucceedsThenFails: number
  /** a Cloud Storage emulator folder: loads from `gs://` URIs read it */
  readonly gcsDir: string | undefined
  /** default location of datasets and jobs */
  readonly location: string
}

const META = "__offpeak"
const RESULTS = "__offpeak_results"

const q = (name: string) => `"${name.replaceAll('"', '""')}"`
const lit = Types.sqlString
const isObject = (u: unknown): u is Record<string, unknown> => typeof u === "object" && u !== null && !Array.isArray(u)
const message = (cause: unknown) => (cause instanceof Error ? cause.message : String(cause))

export interface TableRef {
  readonly projectId: string
  readonly datasetId: string
  readonly tableId: string
}

/** what a finished job produced */
interface Outcome {
  readonly statementType?: string
  readonly resultTable?: string
  readonly schema?: ReadonlyArray<Types.Field>
  readonly totalRows?: number
  readonly numDmlAffectedRows?: number
  readonly dmlStats?: Record<string, string>
  readonly load?: Record<string, string>
  readonly ddlTargetTable?: TableRef
}

interface JobRow {
  readonly project: string
  readonly jobId: string
  readonly seq: number
  readonly location: string
  readonly kind: "query" | "load" | "copy"
  /** the job resource's `configuration` */
  readonly configuration: Record<string, any>
  readonly state: "RUNNING" | "DONE"
  readonly createdMs: number
  readonly startMs: number | null
  readonly endMs: number | null
  readonly runAfterMs: number
  readonly outcome: Outcome | null
  readonly error: { readonly reason: string; readonly message: string; readonly location?: string } | null
  readonly errors: ReadonlyArray<{ readonly reason: string; readonly message: string; readonly location?: string }> | null
  readonly injected: { readonly reason: string; readonly message: string } | null
  readonly upload: string | null
  readonly requestId: string | null
}

/** a page of rows as the REST API sends them */
export interface Page {
  readonly schema: ReadonlyArray<Types.Field>
  readonly rows: ReadonlyArray<unknown>
  readonly totalRows: number
  readonly pageToken: string | undefined
}

class Lock {
  private tail: Promise<unknown> = Promise.resolve()
  run<A>(f: () => Promise<A>): Promise<A> {
    const next = this.tail.then(f, f)
    this.tail = next.then(() => undefined, () => undefined)
    return next
  }
}

const JOB_ID = /^[A-Za-z0-9_-]{1,1024}$/
const TABLE_ID = /^[\p{L}\p{M}\p{N}\p{Pc}\p{Pd}\p{Zs}$]{1,1024}$/u
const DATASET_ID = /^[A-Za-z0-9_]{1,1024}$/

const notFoundTable = (t: TableRef, location: string) =>
  new GoogleError({ status: 404, message: `Not found: Table ${t.projectId}:${t.datasetId}.${t.tableId} was not found in location ${location}`, reason: "notFound" })

const notFoundDataset = (p: string, d: string, location: string) =>
  new GoogleError({ status: 404, message: `Not found: Dataset ${p}:${d} was not found in location ${location}`, reason: "notFound" })

/** a failure of a job: its errorResult */
class JobFailure extends Error {
  readonly reason: string
  readonly errors: ReadonlyArray<{ reason: string; message: string; location?: string }>
  readonly location: string | undefined
  constructor(reason: string, msg: string, errors?: ReadonlyArray<{ reason: string; message: string; location?: string }>, location?: string) {
    super(msg)
    this.reason = reason
    this.errors = errors ?? [{ reason, message: msg, ...(location === undefined ? {} : { location }) }]
    this.location = location
  }
}

/** a DuckDB error as BigQuery would word it */
const jobFailureOf = (cause: unknown, location: string): JobFailure => {
  if (cause instanceof JobFailure) return cause
  if (cause instanceof Sql.SqlError) return new JobFailure("invalidQuery", cause.message)
  const text = message(cause)
  const table = /Table with name (.+?) does not exist/.exec(text)
  if (table !== null) return new JobFailure("notFound", `Not found: Table ${table[1]} was not found in location ${location}`)
  const schema = /Schema with name (.+?) does not exist/.exec(text)
  if (schema !== null) return new JobFailure("notFound", `Not found: Dataset ${schema[1]} was not found in location ${location}`)
  if (/^(Parser|Binder|Catalog) Error/.test(text)) return new JobFailure("invalidQuery", `${text} (the emulator's SQL engine is DuckDB)`)
  if (/^(Conversion|Invalid Input|Out of Range|Constraint) Error/.test(text)) return new JobFailure("invalidQuery", text)
  return new JobFailure("invalidQuery", text)
}

// ===== the engine =====

export class Engine {
  private readonly duck: typeof Duck
  private readonly instance: Duck.DuckDBInstance
  private readonly writer: Duck.DuckDBConnection
  private readonly dir: string
  readonly knobs: Knobs
  private readonly lock = new Lock()
  private readonly projects = new Set<string>()
  private readonly waiting = new Map<string, Array<() => void>>()
  private readonly insertIds = new Map<string, number>()
  private seq = Date.now() * 1000
  private closed = false
  private wake: () => void = () => undefined
  private loop: Promise<void> = Promise.resolve()
  private failRuleCount = 0
  private insertFaultCount = 0
  readonly stats = { jobsCreated: 0, jobsRun: 0, rowsLoaded: 0, rowsInserted: 0 }

  private constructor(duck: typeof Duck, instance: Duck.DuckDBInstance, writer: Duck.DuckDBConnection, dir: string, knobs: Knobs) {
    this.duck = duck
    this.instance = instance
    this.writer = writer
    this.dir = dir
    this.knobs = knobs
  }

  static async open(dir: string, knobs: Knobs): Promise<Engine> {
    const duck = await import("@duckdb/node-api")
    fs.mkdirSync(path.join(dir, "projects"), { recursive: true })
    fs.mkdirSync(path.join(dir, "uploads"), { recursive: true })
    fs.mkdirSync(path.join(dir, "tmp"), { recursive: true })
    for (const f of fs.readdirSync(path.join(dir, "tmp"))) fs.rmSync(path.join(dir, "tmp", f), { force: true })
    const instance = await duck.DuckDBInstance.create(":memory:", { threads: "2" })
    const writer = await instance.connect()
    const engine = new Engine(duck, instance, writer, dir, knobs)
    await engine.prepare(writer)
    for (const file of fs.readdirSync(path.join(dir, "projects"))) {
      if (file.endsWith(".duckdb")) await engine.attach(decodeURIComponent(file.slice(0, -".duckdb".length)))
    }
    engine.loop = engine.run()
    return engine
  }

  /** session settings every connection needs: UTC, GoogleSQL's NULL order, the macros the translations call */
  private async prepare(conn: Duck.DuckDBConnection) {
    await conn.run("SET TimeZone = 'UTC'")
    await conn.run("SET default_null_order = 'nulls_first_on_asc_last_on_desc'")
    for (const m of Sql.MACROS) await conn.run(m.replace("CREATE OR REPLACE MACRO", "CREATE OR REPLACE TEMP MACRO"))
  }

  async close() {
    this.closed = true
    this.wake()
    await this.loop.catch(() => undefined)
    await this.lock.run(async () => {
      for (const p of this.projects) await this.writer.run(`DETACH ${q(p)}`).catch(() => undefined)
      this.writer.closeSync()
      this.instance.closeSync()
    })
  }

  // ----- projects -----

  private async attach(project: string) {
    if (this.projects.has(project)) return
    const file = path.join(this.dir, "projects", `${encodeURIComponent(project)}.duckdb`)
    await this.writer.run(`ATTACH IF NOT EXISTS ${lit(file)} AS ${q(project)}`)
    await this.writer.run(`CREATE SCHEMA IF NOT EXISTS ${q(project)}.${META}`)
    await this.writer.run(`CREATE SCHEMA IF NOT EXISTS ${q(project)}.${RESULTS}`)
    await this.writer.run(`CREATE TABLE IF NOT EXISTS ${q(project)}.${META}.datasets (dataset_id VARCHAR, resource VARCHAR)`)
    await this.writer.run(`CREATE TABLE IF NOT EXISTS ${q(project)}.${META}.tables (dataset_id VARCHAR, table_id VARCHAR, schema VARCHAR, resource VARCHAR)`)
    await this.writer.run(`CREATE TABLE IF NOT EXISTS ${q(project)}.${META}.jobs (job_id VARCHAR, seq BIGINT, state VARCHAR, run_after_ms BIGINT, request_id VARCHAR, row VARCHAR)`)
    this.projects.add(project)
  }

  /** the project's catalog, attached on first use */
  private async project(project: string): Promise<string> {
    if (project.length === 0 || project.length > 128 || /["\u0000/\\]/.test(project)) {
      throw new GoogleError({ status: 400, message: `Invalid project ID '${project}'.`, reason: "invalid" })
    }
    if (!this.projects.has(project)) await this.lock.run(() => this.attach(project))
    return project
  }

  private async all(conn: Duck.DuckDBConnection, sql: string, values?: Record<string, Duck.DuckDBValue>, types?: Record<string, Duck.DuckDBType>) {
    const reader = await conn.runAndReadAll(sql, values, types)
    return reader.getRowObjectsJson() as Array<Record<string, any>>
  }

  private async read<A>(f: (conn: Duck.DuckDBConnection) => Promise<A>): Promise<A> {
    const conn = await this.instance.connect()
    try {
      await this.prepare(conn)
      return await f(conn)
    } finally {
      conn.closeSync()
    }
  }

  // ----- datasets -----

  private async datasetExists(conn: Duck.DuckDBConnection, p: string, d: string) {
    const rows = await this.all(conn, `SELECT 1 FROM duckdb_schemas() WHERE database_name = ${lit(p)} AND schema_name = ${lit(d)}`)
    return rows.length > 0 && d !== META && d !== RESULTS
  }

  private datasetResource(p: string, d: string, stored: Record<string, any> | undefined) {
    return {
      kind: "bigquery#dataset",
      id: `${p}:${d}`,
      selfLink: `/bigquery/v2/projects/${p}/datasets/${d}`,
      datasetReference: { projectId: p, datasetId: d },
      location: this.knobs.location,
      creationTime: String(stored?.creationTime ?? "0"),
      lastModifiedTime: String(stored?.lastModifiedTime ?? stored?.creationTime ?? "0"),
      etag: crypto.createHash("md5").update(JSON.stringify(stored ?? {})).digest("base64"),
      access: [],
      ...(stored === undefined ? {} : Object.fromEntries(Object.entries(stored).filter(([k]) => ["description", "friendlyName", "labels", "location", "defaultTableExpirationMs"].includes(k))))
    }
  }

  async createDataset(project: string, body: unknown) {
    const p = await this.project(project)
    if (!isObject(body) || !isObject(body.datasetReference) || typeof body.datasetReference.datasetId !== "string") {
      throw new GoogleError({ status: 400, message: "Required parameter is missing: datasetReference.datasetId", reason: "required" })
    }
    const d = body.datasetReference.datasetId
    if (!DATASET_ID.test(d) || d.startsWith("__offpeak")) {
      throw new GoogleError({ status: 400, message: `Invalid dataset ID "${d}". Dataset IDs must be alphanumeric (plus underscores) and must be at most 1024 characters long.`, reason: "invalid" })
    }
    return this.lock.run(async () => {
      if (await this.datasetExists(this.writer, p, d)) {
        throw new GoogleError({ status: 409, message: `Already Exists: Dataset ${p}:${d}`, reason: "duplicate" })
      }
      const now = Date.now()
      const stored = { ...body, location: typeof body.location === "string" ? body.location : this.knobs.location, creationTime: String(now), lastModifiedTime: String(now) }
      await this.writer.run("BEGIN TRANSACTION")
      try {
        await this.writer.run(`CREATE SCHEMA ${q(p)}.${q(d)}`)
        await this.writer.run(`DELETE FROM ${q(p)}.${META}.datasets WHERE dataset_id = ${lit(d)}`)
        await this.writer.run(`INSERT INTO ${q(p)}.${META}.datasets VALUES (${lit(d)}, ${lit(JSON.stringify(stored))})`)
        await this.writer.run("COMMIT")
      } catch (e) {
        await this.writer.run("ROLLBACK")
        throw e
      }
      return this.datasetResource(p, d, stored)
    })
  }

  async getDataset(project: string, d: string) {
    const p = await this.project(project)
    return this.read(async (conn) => {
      if (!(await this.datasetExists(conn, p, d))) throw notFoundDataset(p, d, this.knobs.location)
      const rows = await this.all(conn, `SELECT resource FROM ${q(p)}.${META}.datasets WHERE dataset_id = ${lit(d)}`)
      return this.datasetResource(p, d, rows[0] === undefined ? undefined : JSON.parse(rows[0].resource))
    })
  }

  async listDatasets(project: string) {
    const p = await this.project(project)
    return this.read(async (conn) => {
      const rows = await this.all(conn, `SELECT schema_name FROM duckdb_schemas() WHERE database_name = ${lit(p)} AND schema_name NOT IN ('main', ${lit(META)}, ${lit(RESULTS)}) ORDER BY schema_name`)
      return rows.map((r) => ({
        kind: "bigquery#dataset",
        id: `${p}:${r.schema_name}`,
        datasetReference: { projectId: p, datasetId: r.schema_name },
        location: this.knobs.location
      }))
    })
  }

  async deleteDataset(project: string, d: string, deleteContents: boolean) {
    const p = await this.project(project)
    return this.lock.run(async () => {
      if (!(await this.datasetExists(this.writer, p, d))) throw notFoundDataset(p, d, this.knobs.location)
      const tables = await this.all(this.writer, `SELECT table_name FROM duckdb_tables() WHERE database_name = ${lit(p)} AND schema_name = ${lit(d)}`)
      if (tables.length > 0 && !deleteContents) {
        throw new GoogleError({ status: 400, message: `Dataset ${p}:${d} is still in use`, reason: "resourceInUse" })
      }
      await this.writer.run("BEGIN TRANSACTION")
      try {
        await this.writer.run(`DROP SCHEMA ${q(p)}.${q(d)} CASCADE`)
        await this.writer.run(`DELETE FROM ${q(p)}.${META}.datasets WHERE dataset_id = ${lit(d)}`)
        await this.writer.run(`DELETE FROM ${q(p)}.${META}.tables WHERE dataset_id = ${lit(d)}`)
        await this.writer.run("COMMIT")
      } catch (e) {
        await this.writer.run("ROLLBACK")
        throw e
      }
    })
  }

  // ----- tables -----

  /** the kind of a table (`TABLE`, `VIEW`), or undefined */
  private async tableKind(conn: Duck.DuckDBConnection, t: TableRef): Promise<"TABLE" | "VIEW" | undefined> {
    const tables = await this.all(conn, `SELECT 1 FROM duckdb_tables() WHERE database_name = ${lit(t.projectId)} AND schema_name = ${lit(t.datasetId)} AND table_name = ${lit(t.tableId)}`)
    if (tables.length > 0) return "TABLE"
    const views = await this.all(conn, `SELECT 1 FROM duckdb_views() WHERE database_name = ${lit(t.projectId)} AND schema_name = ${lit(t.datasetId)} AND view_name = ${lit(t.tableId)}`)
    return views.length > 0 ? "VIEW" : undefined
  }

  private fqn(t: TableRef) {
    return `${q(t.projectId)}.${q(t.datasetId)}.${q(t.tableId)}`
  }

  /** the table's schema: the declared one overlaid on DuckDB's columns */
  private async schemaOf(conn: Duck.DuckDBConnection, t: TableRef): Promise<ReadonlyArray<Types.Field>> {
    const reader = await conn.runAndReadAll(`SELECT * FROM ${this.fqn(t)} LIMIT 0`)
    const derived = this.fieldsOf(reader)
    const stored = await this.all(conn, `SELECT schema FROM ${q(t.projectId)}.${META}.tables WHERE dataset_id = ${lit(t.datasetId)} AND table_id = ${lit(t.tableId)}`)
    const declared = stored[0]?.schema === undefined || stored[0]?.schema === null ? undefined : JSON.parse(stored[0].schema) as ReadonlyArray<Types.Field>
    // NOT NULL columns are REQUIRED
    const notNull = await this.all(conn, `SELECT column_name FROM duckdb_columns() WHERE database_name = ${lit(t.projectId)} AND schema_name = ${lit(t.datasetId)} AND table_name = ${lit(t.tableId)} AND NOT is_nullable`)
    const required = new Set(notNull.map((r) => String(r.column_name)))
    return Types.overlay(declared, derived.map((f) => (required.has(f.name) && f.mode !== "REPEATED" ? { ...f, mode: "REQUIRED" as const } : f)))
  }

  private fieldsOf(reader: Duck.DuckDBResultReader | Duck.DuckDBMaterializedResult): Array<Types.Field> {
    const columns = reader.columnNameAndTypeObjectsJson() as unknown as ReadonlyArray<{ columnName: string; columnType: Types.DuckTypeJson }>
    return columns.map((c, i) => {
      const name = Types.columnNameProblem(c.columnName) === undefined ? c.columnName : `f${i}_`
      const f = Types.fieldOfDuck(name, c.columnType)
      if (typeof f === "string") throw new JobFailure("invalidQuery", f)
      return f
    })
  }

  private async tableResource(conn: Duck.DuckDBConnection, t: TableRef) {
    const kind = await this.tableKind(conn, t)
    if (kind === undefined) throw notFoundTable(t, this.knobs.location)
    const stored = await this.all(conn, `SELECT resource FROM ${q(t.projectId)}.${META}.tables WHERE dataset_id = ${lit(t.datasetId)} AND table_id = ${lit(t.tableId)}`)
    const resource = stored[0]?.resource === undefined ? {} : JSON.parse(stored[0].resource) as Record<string, unknown>
    const schema = await this.schemaOf(conn, t)
    const numRows = kind === "TABLE" ? Number((await this.all(conn, `SELECT count(*) AS n FROM ${this.fqn(t)}`))[0]!.n) : undefined
    return {
      kind: "bigquery#table",
      id: `${t.projectId}:${t.datasetId}.${t.tableId}`,
      selfLink: `/bigquery/v2/projects/${t.projectId}/datasets/${t.datasetId}/tables/${encodeURIComponent(t.tableId)}`,
      tableReference: t,
      schema: { fields: schema },
      ...(numRows === undefined ? {} : { numRows: String(numRows), numBytes: "0", numLongTermBytes: "0", numPhysicalBytes: "0" }),
      creationTime: String(resource.creationTime ?? "0"),
      lastModifiedTime: String(resource.lastModifiedTime ?? resource.creationTime ?? "0"),
      type: kind,
      location: this.knobs.location,
      etag: crypto.createHash("md5").update(`${JSON.stringify(resource)}${numRows}`).digest("base64"),
      ...Object.fromEntries(Object.entries(resource).filter(([k]) => ["description", "friendlyName", "labels", "expirationTime", "view", "timePartitioning", "clustering"].includes(k)))
    }
  }

  async createTable(project: string, d: string, body: unknown) {
    const p = await this.project(project)
    if (!isObject(body) || !isObject(body.tableReference) || typeof body.tableReference.tableId !== "string") {
      throw new GoogleError({ status: 400, message: "Required parameter is missing: tableReference.tableId", reason: "required" })
    }
    const t: TableRef = { projectId: p, datasetId: d, tableId: body.tableReference.tableId }
    if (!TABLE_ID.test(t.tableId)) throw new GoogleError({ status: 400, message: `Invalid table ID "${t.tableId}".`, reason: "invalid" })
    const view = isObject(body.view) && typeof body.view.query === "string" ? body.view.query : undefined
    const schema = view !== undefined ? [] : isObject(body.schema) ? Types.normalizeSchema(body.schema.fields) : []
    if (typeof schema === "string") throw new GoogleError({ status: 400, message: schema, reason: "invalid" })
    if (view === undefined && schema.length === 0) {
      throw new GoogleError({ status: 400, message: "The emulator needs a schema to create a table (a table with no columns cannot be stored).", reason: "invalid" })
    }
    return this.lock.run(async () => {
      if (!(await this.datasetExists(this.writer, p, d))) throw notFoundDataset(p, d, this.knobs.location)
      if ((await this.tableKind(this.writer, t)) !== undefined) {
        throw new GoogleError({ status: 409, message: `Already Exists: Table ${p}:${d}.${t.tableId}`, reason: "duplicate" })
      }
      const now = Date.now()
      const resource = { ...body, creationTime: String(now), lastModifiedTime: String(now) }
      delete (resource as Record<string, unknown>).schema
      await this.writer.run("BEGIN TRANSACTION")
      try {
        if (view !== undefined) {
          await this.writer.run(`USE ${q(p)}`)
          const translated = Sql.translate(view)
          if (translated.statements.length !== 1 || translated.statements[0]!.kind !== "SELECT") throw new Sql.SqlError("a view's query must be one SELECT")
          await this.writer.run(`CREATE VIEW ${this.fqn(t)} AS ${translated.statements[0]!.sql}`)
        } else {
          await this.writer.run(`CREATE TABLE ${this.fqn(t)} (${Types.columnDefinitions(schema)})`)
        }
        await this.putTableMeta(p, t, view === undefined ? schema : undefined, resource)
        await this.writer.run("COMMIT")
      } catch (e) {
        await this.writer.run("ROLLBACK")
        if (e instanceof Sql.SqlError) throw new GoogleError({ status: 400, message: e.message, reason: "invalidQuery" })
        throw e
      }
      return this.tableResource(this.writer, t)
    })
  }

  private async putTableMeta(p: string, t: TableRef, schema: ReadonlyArray<Types.Field> | undefined, resource: Record<string, unknown>) {
    await this.writer.run(`DELETE FROM ${q(p)}.${META}.tables WHERE dataset_id = ${lit(t.datasetId)} AND table_id = ${lit(t.tableId)}`)
    await this.writer.run(
      `INSERT INTO ${q(p)}.${META}.tables VALUES (${lit(t.datasetId)}, ${lit(t.tableId)}, ${schema === undefined ? "NULL" : lit(JSON.stringify(schema))}, ${lit(JSON.stringify(resource))})`
    )
  }

  async getTable(t: TableRef) {
    await this.project(t.projectId)
    return this.read((conn) => this.tableResource(conn, t))
  }

  async listTables(project: string, d: string) {
    const p = await this.project(project)
    return this.read(async (conn) => {
      if (!(await this.datasetExists(conn, p, d))) throw notFoundDataset(p, d, this.knobs.location)
      const rows = await this.all(
        conn,
        `SELECT table_name AS name, 'TABLE' AS type FROM duckdb_tables() WHERE database_name = ${lit(p)} AND schema_name = ${lit(d)}
         UNION ALL SELECT view_name, 'VIEW' FROM duckdb_views() WHERE database_name = ${lit(p)} AND schema_name = ${lit(d)} ORDER BY 1`
      )
      return rows.map((r) => ({
        kind: "bigquery#table",
        id: `${p}:${d}.${r.name}`,
        tableReference: { projectId: p, datasetId: d, tableId: r.name },
        type: r.type
      }))
    })
  }

  async deleteTable(t: TableRef) {
    await this.project(t.projectId)
    return this.lock.run(async () => {
      const kind = await this.tableKind(this.writer, t)
      if (kind === undefined) throw notFoundTable(t, this.knobs.location)
      await this.writer.run("BEGIN TRANSACTION")
      try {
        await this.writer.run(`DROP ${kind} ${this.fqn(t)}`)
        await this.writer.run(`DELETE FROM ${q(t.projectId)}.${META}.tables WHERE dataset_id = ${lit(t.datasetId)} AND table_id = ${lit(t.tableId)}`)
        await this.writer.run("COMMIT")
      } catch (e) {
        await this.writer.run("ROLLBACK")
        throw e
      }
    })
  }

  /** `tables.patch`: description, labels, expiration, and new NULLABLE / REPEATED columns */
  async patchTable(t: TableRef, body: unknown) {
    await this.project(t.projectId)
    if (!isObject(body)) throw new GoogleError({ status: 400, message: "The request body must be a table resource.", reason: "invalid" })
    return this.lock.run(async () => {
      if ((await this.tableKind(this.writer, t)) !== "TABLE") throw notFoundTable(t, this.knobs.location)
      const current = await this.schemaOf(this.writer, t)
      const stored = await this.all(this.writer, `SELECT resource FROM ${q(t.projectId)}.${META}.tables WHERE dataset_id = ${lit(t.datasetId)} AND table_id = ${lit(t.tableId)}`)
      const resource = { ...(stored[0]?.resource === undefined ? {} : JSON.parse(stored[0].resource)), lastModifiedTime: String(Date.now()) }
      for (const k of ["description", "friendlyName", "labels", "expirationTime"]) if (k in body) resource[k] = body[k]
      let schema = current
      await this.writer.run("BEGIN TRANSACTION")
      try {
        if (isObject(body.schema)) {
          const next = Types.normalizeSchema(body.schema.fields)
          if (typeof next === "string") throw new GoogleError({ status: 400, message: next, reason: "invalid" })
          const byName = new Map(current.map((f) => [f.name.toLowerCase(), f]))
          for (const f of next) {
            const old = byName.get(f.name.toLowerCase())
            if (old === undefined) {
              if (f.mode === "REQUIRED") throw new GoogleError({ status: 400, message: `Provided Schema does not match Table ${t.projectId}:${t.datasetId}.${t.tableId}. Cannot add required fields to an existing schema. (field: ${f.name})`, reason: "invalid" })
              await this.writer.run(`ALTER TABLE ${this.fqn(t)} ADD COLUMN ${q(f.name)} ${Types.duckType(f)}`)
            } else if (Types.duckType(old) !== Types.duckType(f)) {
              throw new GoogleError({ status: 400, message: `Provided Schema does not match Table ${t.projectId}:${t.datasetId}.${t.tableId}. Field ${f.name} has changed type from ${old.type} to ${f.type}`, reason: "invalid" })
            }
          }
          if (next.length < current.length) throw new GoogleError({ status: 400, message: `Provided Schema does not match Table ${t.projectId}:${t.datasetId}.${t.tableId}. Cannot drop fields.`, reason: "invalid" })
          schema = next
        }
        await this.putTableMeta(t.projectId, t, schema, resource)
        await this.writer.run("COMMIT")
      } catch (e) {
        await this.writer.run("ROLLBACK")
        throw e
      }
      return this.tableResource(this.writer, t)
    })
  }

  // ----- rows -----

  /** `tabledata.insertAll`: every row checked first; with `skipInvalidRows` false one bad row stops them all */
  async insertAll(t: TableRef, body: unknown) {
    await this.project(t.projectId)
    if (!isObject(body) || !Array.isArray(body.rows)) throw new GoogleError({ status: 400, message: "No rows present in the request.", reason: "invalid" })
    const rows = body.rows as Array<unknown>
    const skipInvalid = body.skipInvalidRows === true
    const ignoreUnknown = body.ignoreUnknownValues === true
    return this.lock.run(async () => {
      if ((await this.tableKind(this.writer, t)) !== "TABLE") throw notFoundTable(t, this.knobs.location)
      const schema = await this.schemaOf(this.writer, t)
      const good: Array<Record<string, unknown>> = []
      const insertErrors: Array<{ index: number; errors: Array<Record<string, string>> }> = []
      const now = Date.now()
      for (const [index, entry] of rows.entries()) {
        const json = isObject(entry) ? entry.json : undefined
        const c = Types.coerceRow(schema, json, { ignoreUnknownValues: ignoreUnknown, jsonStrings: true })
        if ("error" in c) {
          insertErrors.push({ index, errors: [{ reason: "invalid", location: c.error.field, debugInfo: "", message: c.error.message }] })
          continue
        }
        const insertId = isObject(entry) && typeof entry.insertId === "string" ? `${this.fqn(t)}\u0000${entry.insertId}` : undefined
        if (insertId !== undefined && (this.insertIds.get(insertId) ?? 0) > now - 60_000) continue // best-effort de-duplication, one minute
        if (insertId !== undefined) this.insertIds.set(insertId, now)
        good.push(c.ok)
      }
      if (insertErrors.length > 0 && !skipInvalid) {
        const bad = new Set(insertErrors.map((e) => e.index))
        for (let index = 0; index < rows.length; index++) {
          if (!bad.has(index)) insertErrors.push({ index, errors: [{ reason: "stopped", location: "", debugInfo: "", message: "" }] })
        }
        insertErrors.sort((a, b) => a.index - b.index)
        return { kind: "bigquery#tableDataInsertAllResponse", insertErrors }
      }
      if (good.length > 0) {
        await this.writer.run("BEGIN TRANSACTION")
        try {
          await this.insertCanonical(t, schema, good)
          await this.writer.run("COMMIT")
        } catch (e) {
          await this.writer.run("ROLLBACK")
          throw e
        }
        this.stats.rowsInserted += good.length
      }
      return { kind: "bigquery#tableDataInsertAllResponse", ...(insertErrors.length > 0 ? { insertErrors } : {}) }
    })
  }

  /** inserts rows already in canonical form (see `Types.coerceRow`) through a temp NDJSON file and `read_json` */
  private async insertCanonical(t: TableRef, schema: ReadonlyArray<Types.Field>, rows: ReadonlyArray<Record<string, unknown>> | string) {
    let file: string
    let owned = false
    if (typeof rows === "string") file = rows
    else {
      file = path.join(this.dir, "tmp", `${crypto.randomBytes(8).toString("hex")}.ndjson`)
      fs.writeFileSync(file, rows.map((r) => JSON.stringify(r)).join("\n") + "\n")
      owned = true
    }
    try {
      const plan = Types.readJsonPlan(schema)
      await this.writer.run(
        `INSERT INTO ${this.fqn(t)} (${plan.names}) SELECT ${plan.select} FROM read_json(${lit(file)}, format = 'newline_delimited', columns = ${plan.columns})`
      )
    } finally {
      if (owned) fs.rmSync(file, { force: true })
    }
  }

  /** `tabledata.list`: a page of a table in storage order */
  async listRows(t: TableRef, query: URLSearchParams, encode: Types.EncodeOptions): Promise<Page> {
    await this.project(t.projectId)
    return this.read(async (conn) => {
      const kind = await this.tableKind(conn, t)
      if (kind !== "TABLE") throw notFoundTable(t, this.knobs.location)
      let schema = await this.schemaOf(conn, t)
      const selected = query.get("selectedFields")
      if (selected !== null && selected !== "") {
        const names = new Set(selected.split(",").map((s) => s.trim().toLowerCase()))
        schema = schema.filter((f) => names.has(f.name.toLowerCase()))
      }
      const total = Number((await this.all(conn, `SELECT count(*) AS n FROM ${this.fqn(t)}`))[0]!.n)
      return this.page(conn, `SELECT ${schema.map((f) => q(f.name)).join(", ")} FROM ${this.fqn(t)}`, false, schema, total, query, encode)
    })
  }

  /** a page of `select` (`LIMIT/OFFSET`, or row id ranges for result tables, which are never changed) */
  private async page(
    conn: Duck.DuckDBConnection,
    select: string,
    byRowId: boolean,
    schema: ReadonlyArray<Types.Field>,
    total: number,
    query: URLSearchParams,
    encode: Types.EncodeOptions
  ): Promise<Page> {
    const token = query.get("pageToken")
    let offset = Number(query.get("startIndex") ?? 0)
    if (token !== null && token !== "") {
      try {
        offset = Number(JSON.parse(Buffer.from(token, "base64url").toString("utf8")).o)
      } catch {
        throw new GoogleError({ status: 400, message: `Invalid page token: ${token}`, reason: "invalid" })
      }
    }
    if (!Number.isInteger(offset) || offset < 0) throw new GoogleError({ status: 400, message: "Invalid startIndex.", reason: "invalid" })
    const maxParam = query.get("maxResults")
    const max = Math.max(1, Math.min(100_000, maxParam === null ? 100_000 : Number(maxParam) || 100_000))
    if (schema.length === 0 || offset >= total) return { schema, rows: [], totalRows: total, pageToken: undefined }
    const sql = byRowId
      ? `${select} WHERE rowid >= ${offset} AND rowid < ${offset + max} ORDER BY rowid`
      : `${select} LIMIT ${max} OFFSET ${offset}`
    const reader = await conn.runAndReadAll(sql)
    const raw = reader.getRows()
    const rows: Array<unknown> = []
    // a response holds at most about 10 MB, as the real service's
    let bytes = 0
    for (const row of raw) {
      const encoded = Types.encodeRow(schema, row, encode)
      bytes += JSON.stringify(encoded).length
      rows.push(encoded)
      if (bytes > 10 * 1024 * 1024) break
    }
    const next = offset + rows.length
    return {
      schema,
      rows,
      totalRows: total,
      pageToken: next < total ? Buffer.from(JSON.stringify({ o: next })).toString("base64url") : undefined
    }
  }

  // ----- jobs -----

  private jobResource(job: JobRow) {
    const stats: Record<string, unknown> = {
      creationTime: String(job.createdMs),
      ...(job.startMs === null ? {} : { startTime: String(job.startMs) }),
      ...(job.endMs === null ? {} : { endTime: String(job.endMs) })
    }
    const o = job.outcome
    if (job.kind === "query") {
      stats.totalBytesProcessed = "0"
      stats.query = {
        totalBytesProcessed: "0",
        totalBytesBilled: "0",
        cacheHit: false,
        ...(o?.statementType === undefined ? {} : { statementType: o.statementType }),
        ...(o?.numDmlAffectedRows === undefined ? {} : { numDmlAffectedRows: String(o.numDmlAffectedRows) }),
        ...(o?.dmlStats === undefined ? {} : { dmlStats: o.dmlStats }),
        ...(o?.ddlTargetTable === undefined ? {} : { ddlTargetTable: o.ddlTargetTable })
      }
    }
    if (job.kind === "load" && o?.load !== undefined) stats.load = o.load
    if (job.kind === "copy" && job.state === "DONE") stats.copy = {}
    return {
      kind: "bigquery#job",
      etag: crypto.createHash("md5").update(`${job.jobId}${job.state}${job.endMs}`).digest("base64"),
      id: `${job.project}:${job.location}.${job.jobId}`,
      selfLink: `/bigquery/v2/projects/${job.project}/jobs/${job.jobId}?location=${job.location}`,
      user_email: "emulator@offpeak.local",
      configuration: job.configuration,
      jobReference: { projectId: job.project, jobId: job.jobId, location: job.location },
      statistics: stats,
      status: {
        state: job.state,
        ...(job.error === null ? {} : { errorResult: job.error, errors: job.errors ?? [job.error] })
      }
    }
  }

  private async loadJob(conn: Duck.DuckDBConnection, p: string, jobId: string): Promise<JobRow | undefined> {
    const rows = await this.all(conn, `SELECT row FROM ${q(p)}.${META}.jobs WHERE job_id = ${lit(jobId)}`)
    return rows[0] === undefined ? undefined : JSON.parse(rows[0].row) as JobRow
  }

  private async saveJob(job: JobRow, insert: boolean) {
    const p = q(job.project)
    // one statement either way: a reader never sees the job missing
    if (!insert) {
      await this.writer.run(`UPDATE ${p}.${META}.jobs SET state = ${lit(job.state)}, row = ${lit(JSON.stringify(job))} WHERE job_id = ${lit(job.jobId)}`)
      return
    }
    await this.writer.run(
      `INSERT INTO ${p}.${META}.jobs VALUES (${lit(job.jobId)}, ${job.seq}, ${lit(job.state)}, ${job.runAfterMs}, ${job.requestId === null ? "NULL" : lit(job.requestId)}, ${lit(JSON.stringify(job))})`
    )
  }

  private injectedFailure(kind: JobRow["kind"]): JobRow["injected"] {
    const rule = this.knobs.failJobs
    if (rule === null || (rule.kind !== undefined && rule.kind !== "*" && rule.kind !== kind)) return null
    const index = this.failRuleCount++
    if (!fires(index, rule.times, rule.rate, this.knobs.seed, "failJobs")) return null
    return { reason: rule.reason ?? "backendError", message: rule.message ?? "Error encountered during execution. Retrying may solve the problem. (injected by the emulator)" }
  }

  /**
   * `jobs.insert`: the job is stored RUNNING (with its uploaded data, for a
   * load) and runs in the background. A job id already used is refused 409.
   */
  async insertJob(project: string, body: unknown, upload?: string, requestId?: string): Promise<{ resource: ReturnType<Engine["jobResource"]>; failAfter: boolean }> {
    const p = await this.project(project)
    if (!isObject(body) || !isObject(body.configuration)) throw new GoogleError({ status: 400, message: "Required parameter is missing: configuration", reason: "required" })
    const config = body.configuration as Record<string, any>
    const kind = isObject(config.query) ? "query" : isObject(config.load) ? "load" : isObject(config.copy) ? "copy" : undefined
    if (kind === undefined) {
      throw new GoogleError({ status: 400, message: "The emulator runs query, load and copy jobs (configuration.query / .load / .copy).", reason: "invalid" })
    }
    if (kind === "load" && upload === undefined && !Array.isArray(config.load.sourceUris)) {
      throw new GoogleError({ status: 400, message: "A load job needs data: an upload or sourceUris.", reason: "invalid" })
    }
    const ref = isObject(body.jobReference) ? body.jobReference : {}
    const jobId = typeof ref.jobId === "string" ? ref.jobId : `job_${crypto.randomBytes(12).toString("base64url").replace(/-/g, "_")}`
    if (!JOB_ID.test(jobId)) {
      throw new GoogleError({ status: 400, message: `Invalid job ID "${jobId}". Job IDs must be alphanumeric (plus underscores and dashes) and must be at most 1024 characters long.`, reason: "invalid" })
    }
    const location = typeof ref.location === "string" && ref.location !== "" ? ref.location : this.knobs.location
    return this.lock.run(async () => {
      if (requestId !== undefined) {
        const same = await this.all(this.writer, `SELECT job_id FROM ${q(p)}.${META}.jobs WHERE request_id = ${lit(requestId)}`)
        if (same[0] !== undefined) {
          const existing = (await this.loadJob(this.writer, p, same[0].job_id))!
          return { resource: this.jobResource(existing), failAfter: false }
        }
      }
      if ((await this.loadJob(this.writer, p, jobId)) !== undefined) {
        throw new GoogleError({ status: 409, message: `Already Exists: Job ${p}:${location}.${jobId}`, reason: "duplicate" })
      }
      let stored: string | null = null
      if (upload !== undefined) {
        stored = path.join(this.dir, "uploads", `${encodeURIComponent(p)}.${jobId}.data`)
        fs.renameSync(upload, stored)
      }
      const now = Date.now()
      const configuration = { ...config, jobType: kind.toUpperCase() }
      const job: JobRow = {
        project: p,
        jobId,
        seq: ++this.seq,
        location,
        kind,
        configuration,
        state: "RUNNING",
        createdMs: now,
        startMs: now,
        endMs: null,
        runAfterMs: now + this.knobs.jobDelayMs,
        outcome: null,
        error: null,
        errors: null,
        injected: this.injectedFailure(kind),
        upload: stored,
        requestId: requestId ?? null
      }
      await this.saveJob(job, true)
      this.stats.jobsCreated++
      this.wake()
      return { resource: this.jobResource(job), failAfter: this.insertFaultCount++ < this.knobs.jobInsertSucceedsThenFails }
    })
  }

  async getJob(project: string, jobId: string, location: string | null) {
    const p = await this.project(project)
    const job = await this.read((conn) => this.loadJob(conn, p, jobId))
    if (job === undefined || (location !== null && location !== "" && location.toUpperCase() !== job.location.toUpperCase())) {
      throw new GoogleError({ status: 404, message: `Not found: Job ${p}:${location || this.knobs.location}.${jobId}`, reason: "notFound" })
    }
    return job
  }

  async jobResourceOf(project: string, jobId: string, location: string | null) {
    return this.jobResource(await this.getJob(project, jobId, location))
  }

  async listJobs(project: string) {
    const p = await this.project(project)
    return this.read(async (conn) => {
      const rows = await this.all(conn, `SELECT row FROM ${q(p)}.${META}.jobs ORDER BY seq DESC LIMIT 1000`)
      return rows.map((r) => this.jobResource(JSON.parse(r.row) as JobRow))
    })
  }

  /** `jobs.cancel`: a job not started yet is cancelled (DONE with `stopped`); a running one finishes */
  async cancelJob(project: string, jobId: string, location: string | null) {
    await this.getJob(project, jobId, location)
    return this.lock.run(async () => {
      const job = (await this.loadJob(this.writer, project, jobId))!
      if (job.state === "RUNNING" && job.runAfterMs > Date.now()) {
        const done: JobRow = { ...job, state: "DONE", endMs: Date.now(), error: { reason: "stopped", message: "Job execution was cancelled: User requested cancellation" }, errors: null }
        await this.saveJob(done, false)
        this.notify(job)
        return this.jobResource(done)
      }
      return this.jobResource(job)
    })
  }

  /** waits until the job is DONE, at most `timeoutMs` */
  async waitJob(project: string, jobId: string, timeoutMs: number): Promise<JobRow> {
    const deadline = Date.now() + timeoutMs
    while (true) {
      const job = await this.getJob(project, jobId, null)
      if (job.state === "DONE" || Date.now() >= deadline) return job
      await new Promise<void>((resolve) => {
        const key = `${project}\u0000${jobId}`
        const list = this.waiting.get(key) ?? []
        const timer = setTimeout(resolve, Math.max(1, Math.min(deadline - Date.now(), 1000)))
        list.push(() => {
          clearTimeout(timer)
          resolve()
        })
        this.waiting.set(key, list)
      })
    }
  }

  private notify(job: JobRow) {
    const key = `${job.project}\u0000${job.jobId}`
    const list = this.waiting.get(key) ?? []
    this.waiting.delete(key)
    for (const f of list) f()
  }

  /** a page of a finished query job's results */
  async resultsPage(job: JobRow, query: URLSearchParams, encode: Types.EncodeOptions): Promise<Page | undefined> {
    const o = job.outcome
    if (o?.resultTable === undefined || o.schema === undefined) return undefined
    return this.read((conn) =>
      this.page(conn, `SELECT * FROM ${q(job.project)}.${RESULTS}.${q(o.resultTable!)}`, true, o.schema!, o.totalRows ?? 0, query, encode)
    )
  }

  // ----- running jobs -----

  private async run() {
    while (!this.closed) {
      let next: { project: string; jobId: string; runAfterMs: number } | undefined
      try {
        next = await this.lock.run(() => this.nextJob())
      } catch {
        next = undefined
      }
      if (this.closed) return
      const wait = next === undefined ? 60_000 : next.runAfterMs - Date.now()
      if (wait > 0) {
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, wait)
          this.wake = () => {
            clearTimeout(timer)
            resolve()
          }
        })
        this.wake = () => undefined
        continue
      }
      await this.lock.run(() => this.execute(next!.project, next!.jobId)).catch(() => undefined)
    }
  }

  private async nextJob() {
    let best: { project: string; jobId: string; runAfterMs: number; seq: number } | undefined
    for (const p of this.projects) {
      const rows = await this.all(this.writer, `SELECT job_id, run_after_ms, seq FROM ${q(p)}.${META}.jobs WHERE state = 'RUNNING' ORDER BY run_after_ms, seq LIMIT 1`)
      const r = rows[0]
      if (r === undefined) continue
      const candidate = { project: p, jobId: String(r.job_id), runAfterMs: Number(r.run_after_ms), seq: Number(r.seq) }
      if (best === undefined || candidate.runAfterMs < best.runAfterMs || (candidate.runAfterMs === best.runAfterMs && candidate.seq < best.seq)) best = candidate
    }
    return best
  }

  /** runs one job in one transaction that also marks it DONE; a failure rolls back and marks it DONE with its error */
  private async execute(project: string, jobId: string) {
    const job = await this.loadJob(this.writer, project, jobId)
    if (job === undefined || job.state !== "RUNNING") return
    const conn = this.writer
    let finished: JobRow
    try {
      if (job.injected !== null) throw new JobFailure(job.injected.reason, job.injected.message)
      await conn.run(`USE ${q(project)}`)
      await conn.run("BEGIN TRANSACTION")
      try {
        const outcome = job.kind === "query"
          ? await this.runQuery(job)
          : job.kind === "load"
          ? await this.runLoad(job)
          : await this.runCopy(job)
        finished = { ...job, state: "DONE", endMs: Date.now(), outcome }
        await this.saveJob(finished, false)
        await conn.run("COMMIT")
      } catch (e) {
        await conn.run("ROLLBACK").catch(() => undefined)
        throw e
      }
    } catch (cause) {
      const failure = jobFailureOf(cause, job.location)
      finished = {
        ...job,
        state: "DONE",
        endMs: Date.now(),
        error: { reason: failure.reason, message: failure.message, ...(failure.location === undefined ? {} : { location: failure.location }) },
        errors: failure.errors
      }
      await this.saveJob(finished, false)
    } finally {
      await conn.run("USE memory").catch(() => undefined)
    }
    this.stats.jobsRun++
    if (job.upload !== null && finished.error === null) fs.rmSync(job.upload, { force: true })
    this.notify(job)
  }

  private async bind(config: Record<string, any>, names: ReadonlyArray<string>) {
    const values: Record<string, Duck.DuckDBValue> = {}
    const types: Record<string, Duck.DuckDBType> = {}
    const given = Array.isArray(config.queryParameters) ? config.queryParameters as Array<Types.QueryParameter> : []
    if (given.length > 0 && config.parameterMode !== undefined && String(config.parameterMode).toUpperCase() === "POSITIONAL") {
      throw new JobFailure("invalidQuery", "Positional query parameters are not supported by the emulator: name them (@name).")
    }
    for (const name of names) {
      const p = given.find((g) => g.name === name)
      if (p === undefined) throw new JobFailure("invalidQuery", `Query parameter '${name}' not found`)
      const b = Types.bindParameter(this.duck, p.parameterType, p.parameterValue, name)
      if (typeof b === "string") throw new JobFailure("invalidQuery", b)
      const key = name.replace(/[^A-Za-z0-9_]/g, "_")
      values[key] = b.value
      types[key] = b.type
    }
    return { values, types }
  }

  private tableRefOf(raw: unknown, project: string): TableRef {
    if (!isObject(raw) || typeof raw.datasetId !== "string" || typeof raw.tableId !== "string") {
      throw new JobFailure("invalid", "A table reference needs datasetId and tableId.")
    }
    return { projectId: typeof raw.projectId === "string" ? raw.projectId : project, datasetId: raw.datasetId, tableId: raw.tableId }
  }

  private async runQuery(job: JobRow): Promise<Outcome> {
    const config = job.configuration.query as Record<string, any>
    if (config.useLegacySql === true) throw new JobFailure("invalidQuery", "Legacy SQL is not supported by the emulator: set useLegacySql to false.")
    if (typeof config.query !== "string") throw new JobFailure("invalid", "configuration.query.query is required")
    const translation = Sql.translate(config.query)
    const { types, values } = await this.bind(config, translation.params)
    const conn = this.writer
    if (isObject(config.defaultDataset) && typeof config.defaultDataset.datasetId === "string") {
      const dp = typeof config.defaultDataset.projectId === "string" ? config.defaultDataset.projectId : job.project
      await this.attach(dp)
      if (!(await this.datasetExists(conn, dp, config.defaultDataset.datasetId))) {
        throw new JobFailure("notFound", `Not found: Dataset ${dp}:${config.defaultDataset.datasetId} was not found in location ${job.location}`)
      }
      await conn.run(`USE ${q(dp)}.${q(config.defaultDataset.datasetId)}`)
    }
    const run = (sql: string) => conn.run(sql, values, types)
    const statements = translation.statements
    let outcome: Outcome = { statementType: statements.length > 1 ? "SCRIPT" : statements[0]!.kind.replace("_AS_SELECT", "_AS_SELECT") }
    for (const [i, statement] of statements.entries()) {
      const last = i === statements.length - 1
      if (statement.mergeCheck !== undefined) {
        const reader = await conn.runAndReadAll(statement.mergeCheck, values, types)
        if (reader.currentRowCount > 0) throw new JobFailure("invalidQuery", "UPDATE/MERGE must match at most one source row for each target row")
      }
      if (statement.kind === "SELECT" && last) {
        if (isObject(config.destinationTable)) {
          outcome = { ...outcome, ...(await this.writeDestination(job, this.tableRefOf(config.destinationTable, job.project), statement.sql, config, run)) }
          continue
        }
        const table = `${job.jobId}`
        await run(`CREATE TABLE ${q(job.project)}.${RESULTS}.${q(table)} AS ${statement.sql}`)
        const reader = await conn.runAndReadAll(`SELECT * FROM ${q(job.project)}.${RESULTS}.${q(table)} LIMIT 0`)
        const schema = this.fieldsOf(reader)
        const names = new Set<string>()
        for (const f of schema) {
          if (names.has(f.name.toLowerCase())) throw new JobFailure("invalidQuery", `Duplicate column names in the result are not supported. Found duplicate(s): ${f.name}`)
          names.add(f.name.toLowerCase())
        }
        const total = Number((await this.all(conn, `SELECT count(*) AS n FROM ${q(job.project)}.${RESULTS}.${q(table)}`))[0]!.n)
        outcome = { ...outcome, resultTable: table, schema, totalRows: total }
        continue
      }
      const result = await run(statement.sql)
      if (["INSERT", "UPDATE", "DELETE", "MERGE"].includes(statement.kind)) {
        const rows = await result.getRows()
        const n = Number(rows[0]?.[0] ?? 0)
        outcome = {
          ...outcome,
          numDmlAffectedRows: n,
          dmlStats: statement.kind === "INSERT"
            ? { insertedRowCount: String(n) }
            : statement.kind === "UPDATE"
            ? { updatedRowCount: String(n) }
            : statement.kind === "DELETE"
            ? { deletedRowCount: String(n) }
            : {}
        }
      }
      if (statement.kind.startsWith("CREATE") || statement.kind.startsWith("DROP") || statement.kind === "ALTER_TABLE") await this.reconcile(job.project)
    }
    return outcome
  }

  /** drops the metadata of tables and datasets DDL removed */
  private async reconcile(project: string) {
    const p = q(project)
    await this.writer.run(
      `DELETE FROM ${p}.${META}.tables AS m WHERE NOT EXISTS (SELECT 1 FROM duckdb_tables() WHERE database_name = ${lit(project)} AND schema_name = m.dataset_id AND table_name = m.table_id)
       AND NOT EXISTS (SELECT 1 FROM duckdb_views() WHERE database_name = ${lit(project)} AND schema_name = m.dataset_id AND view_name = m.table_id)`
    )
    await this.writer.run(
      `DELETE FROM ${p}.${META}.datasets AS m WHERE NOT EXISTS (SELECT 1 FROM duckdb_schemas() WHERE database_name = ${lit(project)} AND schema_name = m.dataset_id)`
    )
  }

  /** a query's result written to `destinationTable` with its write and create dispositions */
  private async writeDestination(
    job: JobRow,
    t: TableRef,
    select: string,
    config: Record<string, any>,
    run: (sql: string) => Promise<unknown>
  ): Promise<Outcome> {
    await this.attach(t.projectId)
    const exists = (await this.tableKind(this.writer, t)) === "TABLE"
    const write = String(config.writeDisposition ?? "WRITE_EMPTY").toUpperCase()
    const create = String(config.createDisposition ?? "CREATE_IF_NEEDED").toUpperCase()
    if (!(await this.datasetExists(this.writer, t.projectId, t.datasetId))) throw new JobFailure("notFound", notFoundDataset(t.projectId, t.datasetId, job.location).message)
    if (!exists && create === "CREATE_NEVER") throw new JobFailure("notFound", notFoundTable(t, job.location).message)
    if (exists && write === "WRITE_EMPTY") {
      const n = Number((await this.all(this.writer, `SELECT count(*) AS n FROM ${this.fqn(t)}`))[0]!.n)
      if (n > 0) throw new JobFailure("duplicate", `Already Exists: Table ${t.projectId}:${t.datasetId}.${t.tableId}`)
    }
    if (!exists || write === "WRITE_TRUNCATE") {
      await run(`CREATE OR REPLACE TABLE ${this.fqn(t)} AS ${select}`)
      await this.putTableMeta(t.projectId, t, undefined, { creationTime: String(Date.now()), lastModifiedTime: String(Date.now()) })
    } else {
      await run(`INSERT INTO ${this.fqn(t)} ${select}`)
    }
    const schema = await this.schemaOf(this.writer, t)
    const total = Number((await this.all(this.writer, `SELECT count(*) AS n FROM ${this.fqn(t)}`))[0]!.n)
    // the results are the destination table's rows
    const table = job.jobId
    await this.writer.run(`CREATE TABLE ${q(job.project)}.${RESULTS}.${q(table)} AS SELECT * FROM ${this.fqn(t)}`)
    return { resultTable: table, schema, totalRows: total }
  }

  private async runCopy(job: JobRow): Promise<Outcome> {
    const config = job.configuration.copy as Record<string, any>
    const sources = (Array.isArray(config.sourceTables) ? config.sourceTables : [config.sourceTable]).map((s: unknown) => this.tableRefOf(s, job.project))
    const dest = this.tableRefOf(config.destinationTable, job.project)
    for (const s of [...sources, dest]) await this.attach(s.projectId)
    for (const s of sources) if ((await this.tableKind(this.writer, s)) !== "TABLE") throw new JobFailure("notFound", notFoundTable(s, job.location).message)
    const union = sources.map((s: TableRef) => `SELECT * FROM ${this.fqn(s)}`).join(" UNION ALL ")
    const declared = await this.schemaOf(this.writer, sources[0]!)
    const exists = (await this.tableKind(this.writer, dest)) === "TABLE"
    const write = String(config.writeDisposition ?? "WRITE_EMPTY").toUpperCase()
    if (!(await this.datasetExists(this.writer, dest.projectId, dest.datasetId))) throw new JobFailure("notFound", notFoundDataset(dest.projectId, dest.datasetId, job.location).message)
    if (!exists && String(config.createDisposition ?? "CREATE_IF_NEEDED").toUpperCase() === "CREATE_NEVER") throw new JobFailure("notFound", notFoundTable(dest, job.location).message)
    if (exists && write === "WRITE_EMPTY") {
      const n = Number((await this.all(this.writer, `SELECT count(*) AS n FROM ${this.fqn(dest)}`))[0]!.n)
      if (n > 0) throw new JobFailure("duplicate", `Already Exists: Table ${dest.projectId}:${dest.datasetId}.${dest.tableId}`)
    }
    if (!exists || write === "WRITE_TRUNCATE") {
      await this.writer.run(`CREATE OR REPLACE TABLE ${this.fqn(dest)} (${Types.columnDefinitions(declared)})`)
      await this.putTableMeta(dest.projectId, dest, declared, { creationTime: String(Date.now()), lastModifiedTime: String(Date.now()) })
    }
    await this.writer.run(`INSERT INTO ${this.fqn(dest)} ${union}`)
    return {}
  }

  /** the NDJSON a load reads: the upload, or the `gs://` objects (from the Cloud Storage emulator's folder) */
  private loadFiles(job: JobRow): Array<{ readonly file: string; readonly name: string }> {
    if (job.upload !== null) return [{ file: job.upload, name: "upload" }]
    const uris = job.configuration.load.sourceUris as Array<string>
    if (this.knobs.gcsDir === undefined) throw new JobFailure("invalid", "Loads from gs:// need the Cloud Storage emulator: serve the BigQuery emulator with `gcsDir`.")
    const store = new GcsStore(this.knobs.gcsDir)
    const out: Array<{ file: string; name: string }> = []
    for (const uri of uris) {
      const m = /^gs:\/\/([^/]+)\/(.*)$/.exec(uri)
      if (m === null) throw new JobFailure("invalid", `Invalid source URI: ${uri}`)
      const bucket = store.buckets.get(m[1]!)
      if (bucket === undefined) throw new JobFailure("notFound", `Not found: URI ${uri}`)
      const star = m[2]!.indexOf("*")
      const matched = [...bucket.objects.values()].filter((o) => (star < 0 ? o.name === m[2] : o.name.startsWith(m[2]!.slice(0, star)) && o.name.endsWith(m[2]!.slice(star + 1))))
      if (matched.length === 0) throw new JobFailure("notFound", `Not found: URI ${uri}`)
      for (const o of matched.sort((a, b) => a.name.localeCompare(b.name))) out.push({ file: store.dataPath(o), name: `gs://${o.bucket}/${o.name}` })
    }
    return out
  }

  private async runLoad(job: JobRow): Promise<Outcome> {
    const config = job.configuration.load as Record<string, any>
    const format = String(config.sourceFormat ?? "CSV").toUpperCase()
    if (format !== "NEWLINE_DELIMITED_JSON") {
      throw new JobFailure("invalid", `The emulator loads NEWLINE_DELIMITED_JSON only (sourceFormat ${format}).`)
    }
    const t = this.tableRefOf(config.destinationTable, job.project)
    await this.attach(t.projectId)
    if (!(await this.datasetExists(this.writer, t.projectId, t.datasetId))) throw new JobFailure("notFound", notFoundDataset(t.projectId, t.datasetId, job.location).message)
    const exists = (await this.tableKind(this.writer, t)) === "TABLE"
    const write = String(config.writeDisposition ?? "WRITE_APPEND").toUpperCase()
    const create = String(config.createDisposition ?? "CREATE_IF_NEEDED").toUpperCase()
    let given: ReadonlyArray<Types.Field> | undefined
    if (isObject(config.schema)) {
      const s = Types.normalizeSchema(config.schema.fields)
      if (typeof s === "string") throw new JobFailure("invalid", s)
      given = s
    }
    let schema: ReadonlyArray<Types.Field>
    let recreate = false
    if (exists) {
      const current = await this.schemaOf(this.writer, t)
      schema = current
      if (given !== undefined) {
        const mismatch = given.length !== current.length || given.some((f, i) => f.name.toLowerCase() !== current[i]!.name.toLowerCase() || Types.duckType(f) !== Types.duckType(current[i]!))
        if (mismatch) {
          if (write !== "WRITE_TRUNCATE") {
            throw new JobFailure("invalid", `Provided Schema does not match Table ${t.projectId}:${t.datasetId}.${t.tableId}.`)
          }
          schema = given
          recreate = true
        }
      }
      if (write === "WRITE_EMPTY") {
        const n = Number((await this.all(this.writer, `SELECT count(*) AS n FROM ${this.fqn(t)}`))[0]!.n)
        if (n > 0) throw new JobFailure("duplicate", `Already Exists: Table ${t.projectId}:${t.datasetId}.${t.tableId}`)
      }
    } else {
      if (create === "CREATE_NEVER") throw new JobFailure("notFound", notFoundTable(t, job.location).message)
      if (given === undefined) {
        throw new JobFailure("invalid", config.autodetect === true ? "Schema auto-detection is not supported by the emulator: give the schema." : `No schema specified on job or table ${t.projectId}:${t.datasetId}.${t.tableId}.`)
      }
      schema = given
    }

    // read and check every row; BigQuery's wording, with the byte position of the row
    const maxBad = Number(config.maxBadRecords ?? 0)
    const ignoreUnknown = config.ignoreUnknownValues === true
    const canonical = path.join(this.dir, "tmp", `${job.jobId}.ndjson`)
    const out = fs.openSync(canonical, "w")
    const errors: Array<{ reason: string; message: string; location?: string }> = []
    let bad = 0
    let rows = 0
    let inputBytes = 0
    try {
      for (const source of this.loadFiles(job)) {
        inputBytes += fs.statSync(source.file).size
        let position = 0
        const lines = readline.createInterface({ input: fs.createReadStream(source.file), crlfDelay: Infinity })
        let buffered: Array<string> = []
        for await (const line of lines) {
          const start = position
          position += Buffer.byteLength(line) + 1
          if (line.trim() === "") continue
          let value: unknown
          let problem: string | undefined
          try {
            value = Types.parseJsonExact(line)
          } catch (e) {
            problem = `JSON parsing error in row starting at position ${start}: ${message(e)}`
          }
          if (problem === undefined) {
            const c = Types.coerceRow(schema, value, { ignoreUnknownValues: ignoreUnknown, jsonStrings: false })
            if ("error" in c) problem = `JSON parsing error in row starting at position ${start}: ${c.error.message}`
            else {
              buffered.push(JSON.stringify(c.ok))
              rows++
              if (buffered.length >= 1000) {
                fs.writeSync(out, buffered.join("\n") + "\n")
                buffered = []
              }
            }
          }
          if (problem !== undefined) {
            bad++
            if (errors.length < 100) errors.push({ reason: "invalid", location: source.name, message: `Error while reading data, error message: ${problem}` })
          }
        }
        if (buffered.length > 0) fs.writeSync(out, buffered.join("\n") + "\n")
      }
    } finally {
      fs.closeSync(out)
    }
    try {
      if (bad > maxBad) {
        const summary = `Error while reading data, error message: JSON table encountered too many errors, giving up. Rows: ${rows + bad}; errors: ${bad}. Please look into the errors[] collection for more details.`
        throw new JobFailure("invalid", summary, [{ reason: "invalid", message: summary }, ...errors])
      }
      if (!exists || recreate) {
        await this.writer.run(`CREATE OR REPLACE TABLE ${this.fqn(t)} (${Types.columnDefinitions(schema)})`)
        await this.putTableMeta(t.projectId, t, schema, { creationTime: String(Date.now()), lastModifiedTime: String(Date.now()) })
      } else if (write === "WRITE_TRUNCATE") {
        await this.writer.run(`DELETE FROM ${this.fqn(t)}`)
      }
      if (rows > 0) await this.insertCanonical(t, schema, canonical)
    } finally {
      fs.rmSync(canonical, { force: true })
    }
    this.stats.rowsLoaded += rows
    return {
      load: { inputFiles: "1", inputFileBytes: String(inputBytes), outputRows: String(rows), outputBytes: "0", badRecords: String(bad) }
    }
  }

  /** a fresh name for a file the routes stream an upload to */
  tempUpload(): string {
    return path.join(this.dir, "tmp", `${crypto.randomBytes(8).toString("hex")}.upload`)
  }
}
