/**
 * The BigQuery emulator's HTTP surface: the REST API v2 under `/bigquery/v2`
 * (and without it, as `BIGQUERY_EMULATOR_HOST` clients call), uploads for
 * load jobs under `/upload/bigquery/v2` (multipart and resumable).
 *
 * @internal
 */
import { Effect, Stream } from "effect"
import { HttpServerResponse } from "effect/http"
import * as fs from "node:fs"
import * as path from "node:path"
import { apiPath, badRequest, GoogleError, json, notFound, parseMultipart, randomHex, readBody, readJson } from "../../gcs/internal/http.ts"
import type { Request } from "../../gcs/internal/http.ts"
import type { Engine, Page, TableRef } from "./emulatorEngine.ts"

/** the endpoints a fault can target, by their REST method names */
export const ENDPOINTS = [
  "datasets.insert",
  "datasets.get",
  "datasets.list",
  "datasets.delete",
  "tables.insert",
  "tables.get",
  "tables.list",
  "tables.patch",
  "tables.delete",
  "tabledata.list",
  "tabledata.insertAll",
  "jobs.insert",
  "jobs.get",
  "jobs.list",
  "jobs.cancel",
  "jobs.query",
  "jobs.getQueryResults"
] as const

export type EndpointName = typeof ENDPOINTS[number]

export interface Runtime {
  readonly engine: Engine
  readonly fault: (name: EndpointName) => GoogleError | undefined
  /** the folder for resumable upload sessions */
  readonly sessions: string
  /** requests answered (or failed) per endpoint */
  readonly requests: Record<string, number>
}

const promise = <A>(f: () => Promise<A>): Effect.Effect<A, GoogleError> =>
  Effect.tryPromise({
    try: f,
    catch: (e) =>
      e instanceof GoogleError
        ? e
        : new GoogleError({ status: 500, message: `The emulator failed: ${e instanceof Error ? e.message : String(e)}`, reason: "backendError" })
  })

const STATUS_OF_REASON: Record<string, number> = {
  notFound: 404,
  duplicate: 409,
  backendError: 500,
  internalError: 500,
  rateLimitExceeded: 403,
  stopped: 400
}

const decode = (s: string) => {
  try {
    return decodeURIComponent(s)
  } catch {
    return s
  }
}

const encodeOptions = (request: Request, body?: Record<string, any>) => ({
  int64Timestamp: request.query.get("formatOptions.useInt64Timestamp") === "true" || body?.formatOptions?.useInt64Timestamp === true
})

const pageFields = (page: Page | undefined) =>
  page === undefined
    ? {}
    : {
      schema: { fields: page.schema },
      totalRows: String(page.totalRows),
      ...(page.rows.length > 0 ? { rows: page.rows } : {}),
      ...(page.pageToken === undefined ? {} : { pageToken: page.pageToken })
    }

/** the answer to `jobs.query` and `jobs.getQueryResults` once the job is known */
const queryResponse = (rt: Runtime, request: Request, kind: string, project: string, jobId: string, timeoutMs: number, body?: Record<string, any>) =>
  Effect.gen(function*() {
    const job = yield* promise(() => rt.engine.waitJob(project, jobId, timeoutMs))
    const jobReference = { projectId: job.project, jobId: job.jobId, location: job.location }
    if (job.state !== "DONE") return json({ kind, jobReference, jobComplete: false })
    if (job.error !== null) {
      return yield* new GoogleError({ status: STATUS_OF_REASON[job.error.reason] ?? 400, message: job.error.message, reason: job.error.reason })
    }
    const query = new URLSearchParams(request.query)
    if (body?.maxResults !== undefined) query.set("maxResults", String(body.maxResults))
    const page = yield* promise(() => rt.engine.resultsPage(job, query, encodeOptions(request, body)))
    const o = job.outcome
    return json({
      kind,
      etag: `"${job.jobId}"`,
      jobReference,
      ...(page === undefined ? { totalRows: "0" } : pageFields(page)),
      totalBytesProcessed: "0",
      jobComplete: true,
      cacheHit: false,
      ...(o?.numDmlAffectedRows === undefined ? {} : { numDmlAffectedRows: String(o.numDmlAffectedRows) }),
      ...(o?.dmlStats === undefined ? {} : { dmlStats: o.dmlStats })
    })
  })

const timeoutOf = (raw: unknown, fallback: number) => {
  if (raw === null || raw === undefined || raw === "") return fallback
  const n = Number(raw)
  return Number.isFinite(n) && n >= 0 ? Math.min(n, 60_000) : fallback
}

/** `jobs.query`: a query job run at once, answered with its first page when it ends within `timeoutMs` */
const query = (rt: Runtime, request: Request, project: string) =>
  Effect.gen(function*() {
    const body = yield* readJson(request)
    if (typeof body !== "object" || body === null || typeof (body as any).query !== "string") {
      return yield* badRequest("Required parameter is missing: query", "required")
    }
    const b = body as Record<string, any>
    if (b.dryRun === true) return yield* badRequest("dryRun is not supported by the emulator")
    const config = {
      query: {
        query: b.query,
        useLegacySql: b.useLegacySql ?? true,
        ...(b.queryParameters === undefined ? {} : { queryParameters: b.queryParameters }),
        ...(b.parameterMode === undefined ? {} : { parameterMode: b.parameterMode }),
        ...(b.defaultDataset === undefined ? {} : { defaultDataset: b.defaultDataset })
      },
      ...(b.labels === undefined ? {} : { labels: b.labels })
    }
    const { resource } = yield* promise(() =>
      rt.engine.insertJob(project, { configuration: config, jobReference: { location: b.location } }, undefined, typeof b.requestId === "string" ? b.requestId : undefined)
    )
    return yield* queryResponse(rt, request, "bigquery#queryResponse", project, resource.jobReference.jobId, timeoutOf(b.timeoutMs, 10_000), b)
  })

const insertJobResponse = (rt: Runtime, project: string, body: unknown, upload?: string) =>
  Effect.gen(function*() {
    const { failAfter, resource } = yield* promise(() => rt.engine.insertJob(project, body, upload)).pipe(
      Effect.tapError(() => Effect.sync(() => upload !== undefined && fs.rmSync(upload, { force: true })))
    )
    if (failAfter) {
      return yield* new GoogleError({ status: 500, message: "Backend error. Job aborted. (injected by the emulator: the job was created)", reason: "backendError" })
    }
    return json(resource)
  })

// ===== uploads =====

const multipartUpload = (rt: Runtime, request: Request, project: string) =>
  Effect.gen(function*() {
    const body = yield* readBody(request, 4 * 1024 ** 3)
    const parts = parseMultipart(request.headers["content-type"] ?? "", body)
    if (typeof parts === "string") return yield* badRequest(parts)
    if (parts.length !== 2) return yield* badRequest(`A multipart upload has 2 parts (the job, the data), got ${parts.length}.`)
    let job: unknown
    try {
      job = JSON.parse(parts[0]!.body.toString("utf8"))
    } catch {
      return yield* badRequest("The first part of the upload is not a JSON job.", "parseError")
    }
    const file = rt.engine.tempUpload()
    fs.writeFileSync(file, parts[1]!.body)
    return yield* insertJobResponse(rt, project, job, file)
  })

interface Session {
  readonly project: string
  readonly job: unknown
  offset: number
}

const sessionPath = (rt: Runtime, id: string) => path.join(rt.sessions, `${id}.json`)
const partPath = (rt: Runtime, id: string) => path.join(rt.sessions, `${id}.part`)

const startResumable = (rt: Runtime, request: Request, project: string) =>
  Effect.gen(function*() {
    const job = yield* readJson(request)
    const id = randomHex(32)
    fs.mkdirSync(rt.sessions, { recursive: true })
    fs.writeFileSync(partPath(rt, id), "")
    fs.writeFileSync(sessionPath(rt, id), JSON.stringify({ project, job }))
    const origin = `http://${request.headers["host"] ?? "127.0.0.1"}`
    return HttpServerResponse.empty({
      status: 200,
      headers: { location: `${origin}/upload/bigquery/v2/projects/${encodeURIComponent(project)}/jobs?uploadType=resumable&upload_id=${id}` }
    })
  })

const resumableChunk = (rt: Runtime, request: Request, id: string) =>
  Effect.gen(function*() {
    if (!/^[0-9a-f]+$/.test(id) || !fs.existsSync(sessionPath(rt, id))) return yield* notFound(`No such upload session: ${id}`)
    const session = JSON.parse(fs.readFileSync(sessionPath(rt, id), "utf8")) as Session
    const part = partPath(rt, id)
    let offset = fs.statSync(part).size
    const range = request.headers["content-range"]
    if (range !== undefined && /^bytes \*\//.test(range)) {
      yield* Stream.runDrain(request.raw.stream).pipe(Effect.ignore)
      return HttpServerResponse.empty({ status: 308, headers: offset > 0 ? { range: `bytes=0-${offset - 1}` } : {} })
    }
    const m = range === undefined ? null : /^bytes (\d+)-(\d+|\*)\/(\d+|\*)$/.exec(range)
    if (range !== undefined && m === null) return yield* badRequest(`Invalid Content-Range: ${range}`)
    let skip = m === null ? 0 : offset - Number(m[1])
    if (skip < 0) return yield* badRequest(`The chunk starts at byte ${m![1]}, but only ${offset} bytes were received.`)
    const fd = fs.openSync(part, "a")
    yield* Stream.runForEach(request.raw.stream, (chunk) =>
      Effect.sync(() => {
        let data = chunk
        if (skip > 0) {
          const n = Math.min(skip, data.length)
          data = data.subarray(n)
          skip -= n
        }
        if (data.length > 0) {
          fs.writeSync(fd, data)
          offset += data.length
        }
      })).pipe(Effect.ensuring(Effect.sync(() => fs.closeSync(fd))), Effect.mapError(() => badRequest("The upload was interrupted.")))
    const final = m === null || (m[3] !== "*" && offset >= Number(m[3])) || (m[2] === "*" && m[3] === "*")
    if (!final) return HttpServerResponse.empty({ status: 308, headers: { range: `bytes=0-${offset - 1}` } })
    const file = rt.engine.tempUpload()
    fs.renameSync(part, file)
    fs.rmSync(sessionPath(rt, id), { force: true })
    return yield* insertJobResponse(rt, session.project, session.job, file)
  })

// ===== dispatch =====

const guarded = <A>(rt: Runtime, name: EndpointName, handler: Effect.Effect<A, GoogleError>) =>
  Effect.suspend(() => {
    rt.requests[name] = (rt.requests[name] ?? 0) + 1
    const fault = rt.fault(name)
    return fault === undefined ? handler : Effect.fail(fault)
  })

/** answers one request */
export const handle = (rt: Runtime) => (request: Request): Effect.Effect<HttpServerResponse.HttpServerResponse, GoogleError> => {
  const { method } = request
  const { path: apiPathname, upload } = apiPath(request.path, "/bigquery/v2")
  const seg = apiPathname.split("/").slice(1).map(decode)
  const e = rt.engine
  if (seg[0] !== "projects" || seg[1] === undefined || seg[1] === "") {
    if (seg[0] === "projects" && method === "GET") return Effect.succeed(json({ kind: "bigquery#projectList", projects: [], totalItems: 0 }))
    return Effect.fail(notFound(`Not found: ${method} ${request.path} (the BigQuery emulator serves /projects/…)`))
  }
  const p = seg[1]
  const rest = seg.slice(2)
  const at = (i: number) => rest[i]
  const n = rest.length

  if (upload) {
    if (at(0) === "jobs" && n === 1) {
      const id = request.query.get("upload_id")
      if (id !== null && (method === "PUT" || method === "POST")) return guarded(rt, "jobs.insert", resumableChunk(rt, request, id))
      if (method === "POST") {
        const type = request.query.get("uploadType") ?? "multipart"
        if (type === "resumable") return guarded(rt, "jobs.insert", startResumable(rt, request, p))
        if (type === "multipart") return guarded(rt, "jobs.insert", multipartUpload(rt, request, p))
        return Effect.fail(badRequest(`Unsupported uploadType: ${type}`))
      }
    }
    return Effect.fail(notFound(`Not found: ${method} ${request.path}`))
  }

  // datasets
  if (at(0) === "datasets") {
    if (n === 1 && method === "POST") return guarded(rt, "datasets.insert", Effect.flatMap(readJson(request), (b) => Effect.map(promise(() => e.createDataset(p, b)), (r) => json(r))))
    if (n === 1 && method === "GET") {
      return guarded(rt, "datasets.list", Effect.map(promise(() => e.listDatasets(p)), (datasets) => json({ kind: "bigquery#datasetList", etag: "", datasets })))
    }
    const d = at(1)!
    if (n === 2 && method === "GET") return guarded(rt, "datasets.get", Effect.map(promise(() => e.getDataset(p, d)), (r) => json(r)))
    if (n === 2 && method === "DELETE") {
      return guarded(
        rt,
        "datasets.delete",
        Effect.map(promise(() => e.deleteDataset(p, d, request.query.get("deleteContents") === "true")), () => HttpServerResponse.empty({ status: 204 }))
      )
    }
    if (n === 2 && (method === "PATCH" || method === "PUT")) {
      return guarded(rt, "datasets.get", Effect.flatMap(readJson(request), () => Effect.map(promise(() => e.getDataset(p, d)), (r) => json(r))))
    }
    // tables
    if (at(2) === "tables") {
      if (n === 3 && method === "POST") return guarded(rt, "tables.insert", Effect.flatMap(readJson(request), (b) => Effect.map(promise(() => e.createTable(p, d, b)), (r) => json(r))))
      if (n === 3 && method === "GET") {
        return guarded(
          rt,
          "tables.list",
          Effect.map(promise(() => e.listTables(p, d)), (tables) => json({ kind: "bigquery#tableList", etag: "", tables, totalItems: tables.length }))
        )
      }
      const t: TableRef = { projectId: p, datasetId: d, tableId: at(3) ?? "" }
      if (n === 4 && method === "GET") return guarded(rt, "tables.get", Effect.map(promise(() => e.getTable(t)), (r) => json(r)))
      if (n === 4 && method === "DELETE") return guarded(rt, "tables.delete", Effect.map(promise(() => e.deleteTable(t)), () => HttpServerResponse.empty({ status: 204 })))
      if (n === 4 && (method === "PATCH" || method === "PUT")) {
        return guarded(rt, "tables.patch", Effect.flatMap(readJson(request), (b) => Effect.map(promise(() => e.patchTable(t, b)), (r) => json(r))))
      }
      if (n === 5 && at(4) === "data" && method === "GET") {
        return guarded(
          rt,
          "tabledata.list",
          Effect.map(promise(() => e.listRows(t, request.query, encodeOptions(request))), (page) =>
            json({
              kind: "bigquery#tableDataList",
              etag: "",
              totalRows: String(page.totalRows),
              ...(page.rows.length > 0 ? { rows: page.rows } : {}),
              ...(page.pageToken === undefined ? {} : { pageToken: page.pageToken })
            }))
        )
      }
      if (n === 5 && at(4) === "insertAll" && method === "POST") {
        return guarded(rt, "tabledata.insertAll", Effect.flatMap(readJson(request), (b) => Effect.map(promise(() => e.insertAll(t, b)), (r) => json(r))))
      }
    }
  }

  // jobs
  if (at(0) === "jobs") {
    if (n === 1 && method === "POST") return guarded(rt, "jobs.insert", Effect.flatMap(readJson(request), (b) => insertJobResponse(rt, p, b)))
    if (n === 1 && method === "GET") return guarded(rt, "jobs.list", Effect.map(promise(() => e.listJobs(p)), (jobs) => json({ kind: "bigquery#jobList", etag: "", jobs })))
    const jobId = at(1)!
    const location = request.query.get("location")
    if (n === 2 && method === "GET") return guarded(rt, "jobs.get", Effect.map(promise(() => e.jobResourceOf(p, jobId, location)), (r) => json(r)))
    if (n === 3 && at(2) === "cancel" && method === "POST") {
      return guarded(rt, "jobs.cancel", Effect.map(promise(() => e.cancelJob(p, jobId, location)), (job) => json({ kind: "bigquery#jobCancelResponse", job })))
    }
  }

  // jobs.query and jobs.getQueryResults
  if (at(0) === "queries") {
    if (n === 1 && method === "POST") return guarded(rt, "jobs.query", query(rt, request, p))
    if (n === 2 && method === "GET") {
      return guarded(
        rt,
        "jobs.getQueryResults",
        Effect.flatMap(promise(() => e.getJob(p, at(1)!, request.query.get("location"))), () =>
          queryResponse(rt, request, "bigquery#getQueryResultsResponse", p, at(1)!, timeoutOf(request.query.get("timeoutMs"), 10_000)))
      )
    }
  }
  return Effect.fail(notFound(`Not found: ${method} ${request.path} (not served by the BigQuery emulator)`))
}
