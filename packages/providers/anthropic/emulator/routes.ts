/**
 * The emulator's HTTP surface: Anthropic's Message Batches API and the
 * synchronous Messages API under `/v1`, with the real API's status codes and
 * error shape (`{"type":"error","error":{"type","message"},"request_id"}`), so
 * the official SDK raises the right error classes.
 *
 * Every endpoint needs an API key (`x-api-key`, or `authorization: Bearer`,
 * which the SDK sends) and an `anthropic-version` header.
 */
import { Cause, Clock, Data, Effect, Layer, Stream } from "effect"
import { HttpRouter, HttpServerRequest, HttpServerResponse } from "effect/http"
import * as fs from "node:fs"
import * as Answer from "./answer.ts"
import * as Batch from "./batch.ts"
import * as Counters from "./counters.ts"
import * as Create from "./create.ts"
import type { Endpoint, EndpointFault, Runtime } from "./runtime.ts"
import type { BatchRecord } from "./store.ts"
import { randomId } from "./store.ts"

// ===== errors =====

class ApiError extends Data.TaggedError("ApiError")<{
  readonly status: number
  readonly type: string
  readonly message: string
  readonly headers?: Record<string, string>
}> {}

const invalid = (message: string) => new ApiError({ status: 400, type: "invalid_request_error", message })

const notFound = (message: string) => new ApiError({ status: 404, type: "not_found_error", message })

const json = (body: unknown, status = 200, requestId = randomId("req_"), headers: Record<string, string> = {}) =>
  HttpServerResponse.jsonUnsafe(body, { status, headers: { "request-id": requestId, ...headers } })

const errorResponse = (e: ApiError) => {
  const requestId = randomId("req_")
  return json(Answer.errorBody(e.type, e.message, requestId), e.status, requestId, e.headers ?? {})
}

/** reads and drops the rest of a request body, so the client is never cut off mid-upload */
const drain = Effect.gen(function*() {
  const request = yield* HttpServerRequest.HttpServerRequest
  if (request.method === "GET" || request.method === "HEAD" || request.method === "DELETE") return
  yield* Stream.runDrain(request.stream).pipe(Effect.ignore)
})

/** the scheme and host the client reached the emulator at: results URLs point there */
const origin = Effect.map(HttpServerRequest.HttpServerRequest, (request) => `http://${request.headers["host"] ?? "127.0.0.1"}`)

/** auth, version, injected faults, then the handler; API errors and defects become Anthropic-shaped error responses */
const endpoint = <R>(rt: Runtime, name: Endpoint, handler: Effect.Effect<HttpServerResponse.HttpServerResponse, ApiError, R>) =>
  Effect.gen(function*() {
    const request = yield* HttpServerRequest.HttpServerRequest
    const apiKey = request.headers["x-api-key"] ?? ""
    const authorization = request.headers["authorization"] ?? ""
    if (apiKey.trim().length === 0 && !/^Bearer\s+\S+/i.test(authorization)) {
      yield* drain
      return yield* new ApiError({ status: 401, type: "authentication_error", message: "x-api-key header is required" })
    }
    if ((request.headers["anthropic-version"] ?? "").trim().length === 0) {
      yield* drain
      return yield* invalid("anthropic-version: header is required")
    }
    const fault = rt.fault(name)
    if (fault !== undefined) {
      yield* drain
      return yield* faultError(fault)
    }
    return yield* handler
  }).pipe(
    Effect.catchTag("ApiError", (e) => Effect.succeed(errorResponse(e))),
    Effect.catchCause((cause) =>
      Cause.hasInterruptsOnly(cause)
        ? Effect.failCause(cause)
        : Effect.succeed(errorResponse(
          new ApiError({ status: 500, type: "api_error", message: `The emulator failed: ${Cause.pretty(cause).split("\n")[0]}` })
        ))
    )
  )

const param = (name: string) => Effect.map(HttpRouter.params, (params) => params[name] ?? "")

const query = (name: string) =>
  Effect.gen(function*() {
    const value = (yield* HttpServerRequest.ParsedSearchParams)[name]
    return Array.isArray(value) ? value[0] : value
  })

const version = Effect.map(HttpServerRequest.HttpServerRequest, (request) => (request.headers["anthropic-version"] ?? "").trim())

// ===== batches =====

const batchNotFound = (id: string) => notFound(`Message Batch ${id} not found.`)

/** the batch, or a 404: unknown, deleted, or (knob `notFoundAfterCreateMs`) created too recently to be seen yet */
const visible = (rt: Runtime, id: string) =>
  Effect.gen(function*() {
    const rec = yield* rt.read(id)
    if (rec === undefined) return yield* batchNotFound(id)
    const now = yield* Clock.currentTimeMillis
    if (now - rec.created_ms < rec.knobs.notFoundAfterCreateMs) return yield* batchNotFound(id)
    return rec
  })

const batchResponse = (rec: BatchRecord) =>
  Effect.gen(function*() {
    const now = yield* Clock.currentTimeMillis
    return json(Batch.view(rec, now, yield* origin))
  })

/** an injected error answer of an endpoint */
const faultError = (fault: EndpointFault) => {
  const ms = Math.max(0, fault.retryAfterMs ?? 1000)
  const type = fault.status === 429
    ? "rate_limit_error"
    : fault.status === 529
    ? "overloaded_error"
    : fault.status === 504
    ? "timeout_error"
    : "api_error"
  return new ApiError({
    status: fault.status,
    type,
    message: type === "rate_limit_error"
      ? "Number of request tokens has exceeded your per-minute rate limit"
      : type === "overloaded_error"
      ? "Overloaded"
      : "Internal server error",
    headers: { "retry-after": String(Math.ceil(ms / 1000)), "retry-after-ms": String(ms) }
  })
}

/**
 * Creates a batch. With `createLatencyMs` the answer comes that late, while the batch already exists (listed,
 * retrievable); a `create` fault of phase `after` creates the batch and answers with the error.
 */
const createBatch = (rt: Runtime) =>
  Effect.gen(function*() {
    rt.creates.received++
    rt.creates.inFlight++
    return yield* createBatchNow(rt).pipe(
      Effect.onExit((exit) =>
        Effect.sync(() => {
          rt.creates.inFlight--
          if (exit._tag === "Success" || !Cause.hasInterruptsOnly(exit.cause)) rt.creates.answered++
        })
      )
    )
  })

const createBatchNow = (rt: Runtime) =>
  Effect.gen(function*() {
    const request = yield* HttpServerRequest.HttpServerRequest
    const id = randomId("msgbatch_")
    const temp = rt.store.tempPath(`${id}.requests`)
    const sink = Create.toFile(temp, rt.maxRequestsPerBatch)
    let committed = false
    const created = yield* Effect.gen(function*() {
      const declared = Number(request.headers["content-length"])
      let tooLarge = Number.isFinite(declared) && declared > rt.maxBodyBytes
      let bytes = 0
      yield* Stream.runForEach(request.stream, (chunk) =>
        Effect.sync(() => {
          bytes += chunk.length
          if (bytes > rt.maxBodyBytes) tooLarge = true
          if (!tooLarge) sink.push(chunk)
        })).pipe(Effect.mapError(() => invalid("Could not read the request body.")))
      if (tooLarge) {
        return yield* new ApiError({
          status: 413,
          type: "request_too_large",
          message: `Request exceeds the maximum allowed number of bytes (${rt.maxBodyBytes}).`
        })
      }
      const outcome = sink.end()
      if (outcome.error !== undefined) return yield* invalid(outcome.error)
      const rec: BatchRecord = {
        id,
        seq: rt.store.nextSeq(),
        created_ms: yield* Clock.currentTimeMillis,
        knobs: rt.knobs,
        version: yield* version,
        total: outcome.count,
        cancel_ms: null,
        final: null,
        deleted_ms: null,
        answered_ms: null,
        results_downloads: 0
      }
      // the record first: on load, a record whose requests file is missing is dropped
      rt.store.putBatch(rec)
      fs.renameSync(temp, rt.store.requestsPath(id))
      committed = true
      return rec
    }).pipe(Effect.ensuring(Effect.sync(() => committed || sink.abort())))
    // the batch exists from here on, whatever the client hears
    const after = rt.fault("create", "after")
    if (rt.createLatencyMs > 0) yield* Effect.sleep(rt.createLatencyMs)
    const now = yield* Clock.currentTimeMillis
    const current = rt.store.batches.get(created.id) ?? created
    rt.store.putBatch({ ...current, answered_ms: now })
    if (after !== undefined) return yield* faultError(after)
    return yield* batchResponse(rt.store.batches.get(created.id) ?? current)
  })

const retrieveBatch = (rt: Runtime) =>
  Effect.gen(function*() {
    return yield* batchResponse(yield* visible(rt, yield* param("id")))
  })

const intParam = (raw: string | undefined, name: string, min: number, max: number, fallback: number) =>
  Effect.gen(function*() {
    if (raw === undefined || raw === "") return fallback
    const n = Number(raw)
    if (!Number.isInteger(n)) return yield* invalid(`${name}: Input should be a valid integer`)
    if (n < min) return yield* invalid(`${name}: Input should be greater than or equal to ${min}`)
    if (n > max) return yield* invalid(`${name}: Input should be less than or equal to ${max}`)
    return n
  })

const listBatches = (rt: Runtime) =>
  Effect.gen(function*() {
    const limit = yield* intParam(yield* query("limit"), "limit", 1, 1000, 20)
    const beforeId = yield* query("before_id")
    const afterId = yield* query("after_id")
    const cursor = (id: string | undefined) => {
      if (id === undefined || id === "") return undefined
      return rt.store.batches.get(id)?.seq ?? -1
    }
    const before = cursor(beforeId)
    const after = cursor(afterId)
    // newest first; a cursor may be a deleted batch (its position is kept); with `listLagMs`, new batches show late
    const listedBefore = (yield* Clock.currentTimeMillis) - rt.listLagMs
    let rest = [...rt.store.batches.values()]
      .filter((b) => b.deleted_ms === null && (rt.listLagMs === 0 || b.created_ms <= listedBefore))
      .sort((a, b) => b.seq - a.seq)
    if (after !== undefined) rest = rest.filter((b) => b.seq < after)
    if (before !== undefined) rest = rest.filter((b) => b.seq > before)
    // before_id pages toward newer batches: the ones right before the cursor
    const page = before !== undefined && after === undefined ? rest.slice(Math.max(0, rest.length - limit)) : rest.slice(0, limit)
    const now = yield* Clock.currentTimeMillis
    const host = yield* origin
    const data: Array<unknown> = []
    for (const b of page) {
      const rec = yield* rt.read(b.id)
      if (rec !== undefined) data.push(Batch.view(rec, now, host))
    }
    return json({
      data,
      has_more: rest.length > page.length,
      first_id: page[0]?.id ?? null,
      last_id: page.at(-1)?.id ?? null
    })
  })

const cancelBatch = (rt: Runtime) =>
  Effect.gen(function*() {
    const id = yield* param("id")
    const result = yield* rt.cancel(id)
    if (result === undefined) return yield* batchNotFound(id)
    if ("refused" in result) return yield* invalid(`Message Batch ${id} cannot be canceled: ${result.refused}.`)
    return yield* batchResponse(result.batch)
  })

const deleteBatch = (rt: Runtime) =>
  Effect.gen(function*() {
    const id = yield* param("id")
    const rec = yield* rt.read(id)
    if (rec === undefined) return yield* batchNotFound(id)
    if (rec.final === null) {
      return yield* invalid(
        `Message Batch ${id} cannot be deleted while it is being processed. Cancel it and wait for it to end first.`
      )
    }
    rt.store.putBatch({ ...rec, deleted_ms: yield* Clock.currentTimeMillis })
    rt.store.removeFiles(id)
    return json({ id, type: "message_batch_deleted" })
  })

const results = (rt: Runtime) =>
  Effect.gen(function*() {
    const id = yield* param("id")
    const rec = yield* visible(rt, id)
    if (rec.final === null) return yield* invalid(`Message Batch ${id} has not ended yet: its results are not available.`)
    const now = yield* Clock.currentTimeMillis
    if (now >= rec.created_ms + Batch.ARCHIVE_AFTER_MS) {
      return yield* notFound(`The results of Message Batch ${id} are no longer available: the batch was archived.`)
    }
    const latest = rt.store.batches.get(id) ?? rec
    rt.store.putBatch({ ...latest, results_downloads: (latest.results_downloads ?? 0) + 1 })
    return yield* HttpServerResponse.file(rt.store.resultsPath(id), {
      contentType: "application/x-jsonl",
      headers: { "request-id": randomId("req_") }
    }).pipe(Effect.mapError(() => batchNotFound(id)))
  })

// ===== the Messages API =====

const messages = (rt: Runtime) =>
  Effect.gen(function*() {
    const request = yield* HttpServerRequest.HttpServerRequest
    const text = yield* request.text.pipe(Effect.mapError(() => invalid("Could not read the request body.")))
    let body: unknown
    try {
      body = JSON.parse(text)
    } catch {
      return yield* invalid("The request body is not valid JSON.")
    }
    const parsed = Answer.parse(body, yield* version)
    if (typeof parsed === "string") return yield* invalid(parsed)
    let cache: Answer.CacheUse = null
    if (parsed.cache !== undefined) {
      cache = rt.syncCache.has(parsed.cache.key) ? "read" : "write"
      rt.syncCache.add(parsed.cache.key)
    }
    const answer = Answer.answer(parsed, { message: randomId("msg_"), toolUse: randomId("toolu_") }, cache, "standard")
    return json(answer.message)
  })

// ===== the emulator's own counters (not part of the API) =====

const countersRoute = (rt: Runtime) =>
  Effect.gen(function*() {
    const ids = (yield* query("ids")) === "1"
    return json(Counters.counters(rt.store, rt.creates, ids))
  })

// ===== the router =====

/** the path of the emulator's counters (`?ids=1` adds every batch's custom ids); no API key needed */
export const COUNTERS_PATH = "/_emulator/counters"

/** every route of the emulator */
export const layer = (rt: Runtime) =>
  Layer.mergeAll(
    HttpRouter.add("GET", COUNTERS_PATH, countersRoute(rt)),
    HttpRouter.add("POST", "/v1/messages/batches", endpoint(rt, "create", createBatch(rt))),
    HttpRouter.add("GET", "/v1/messages/batches", endpoint(rt, "list", listBatches(rt))),
    HttpRouter.add("GET", "/v1/messages/batches/:id", endpoint(rt, "retrieve", retrieveBatch(rt))),
    HttpRouter.add("DELETE", "/v1/messages/batches/:id", endpoint(rt, "delete", deleteBatch(rt))),
    HttpRouter.add("POST", "/v1/messages/batches/:id/cancel", endpoint(rt, "cancel", cancelBatch(rt))),
    HttpRouter.add("GET", "/v1/messages/batches/:id/results", endpoint(rt, "results", results(rt))),
    HttpRouter.add("POST", "/v1/messages", endpoint(rt, "messages", messages(rt))),
    HttpRouter.add(
      "*",
      "*",
      Effect.gen(function*() {
        const request = yield* HttpServerRequest.HttpServerRequest
        yield* drain
        return errorResponse(notFound(`Not found: ${request.method} ${request.url.split("?")[0]}`))
      })
    )
  )
