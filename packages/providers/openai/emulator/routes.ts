/**
 * The emulator's HTTP surface: OpenAI's Files and Batch APIs (and the
 * synchronous chat and embeddings endpoints) under `/v1`, with the real API's
 * status codes and error shape, so the official SDK raises the right error
 * classes. Injected endpoint faults answer after the API key check and before
 * the handler runs; downloads cut mid-body write to the Node response
 * directly, then destroy it.
 */
import * as NodeHttpServerRequest from "@effect/platform-node/NodeHttpServerRequest"
import { Cause, Clock, Data, Effect, Layer, Stream } from "effect"
import { HttpRouter, HttpServerRequest, HttpServerResponse, Multipart } from "effect/http"
import * as fs from "node:fs"
import type * as Http from "node:http"
import * as Answer from "./answer.ts"
import * as Faults from "./faults.ts"
import type { Runtime } from "./runtime.ts"
import type { BatchRecord, FileRecord } from "./store.ts"
import { fileObject, randomId } from "./store.ts"

// ===== errors =====

class ApiError extends Data.TaggedError("ApiError")<{
  readonly status: number
  readonly message: string
  readonly type?: string
  readonly param?: string | null
  readonly code?: string | null
}> {}

const badRequest = (message: string, param: string | null = null, code: string | null = null) =>
  new ApiError({ status: 400, message, param, code })

const notFound = (message: string, param: string | null = null) => new ApiError({ status: 404, message, param })

const json = (body: unknown, status = 200) =>
  HttpServerResponse.jsonUnsafe(body, { status, headers: { "x-request-id": randomId("req_", 32) } })

const errorResponse = (e: ApiError) =>
  json(Answer.errorBody(e.message, { type: e.type ?? "invalid_request_error", param: e.param ?? null, code: e.code ?? null }), e.status)

const MISSING_KEY =
  "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the password field (with blank username) if you're accessing the API from your browser and are prompted for a username and password. You can obtain an API key from https://platform.openai.com/account/api-keys."

/** an injected endpoint fault: the request body is read (so the client gets the answer, not a reset), then the error */
const faultResponse = (request: HttpServerRequest.HttpServerRequest, fault: Faults.EndpointFault) =>
  Effect.gen(function*() {
    if (request.method !== "GET" && request.method !== "HEAD") yield* Effect.ignore(Stream.runDrain(request.stream))
    const retryAfter = Math.max(0, Math.floor(fault.retryAfter ?? 0))
    const response = json(Faults.faultBody(fault.status, request.url.split("?")[0]!, retryAfter), fault.status)
    return fault.status === 429 ? HttpServerResponse.setHeader(response, "retry-after", String(retryAfter)) : response
  })

/** auth, then the injected fault of the endpoint if one fires, then the handler; API errors and defects become OpenAI-shaped error responses */
const endpoint = <R>(
  rt: Runtime,
  name: Faults.EndpointName,
  handler: Effect.Effect<HttpServerResponse.HttpServerResponse, ApiError, R>
) =>
  Effect.gen(function*() {
    const request = yield* HttpServerRequest.HttpServerRequest
    const authorization = request.headers["authorization"] ?? ""
    const azureKey = request.headers["api-key"] ?? ""
    if (!/^Bearer\s+\S+/i.test(authorization) && azureKey.length === 0) {
      return yield* new ApiError({ status: 401, message: MISSING_KEY })
    }
    const fault = rt.faults.endpoint(name)
    if (fault !== undefined) return yield* faultResponse(request, fault)
    return yield* handler
  }).pipe(
    Effect.catchTag("ApiError", (e) => Effect.succeed(errorResponse(e))),
    Effect.catchCause((cause) =>
      Cause.hasInterruptsOnly(cause)
        ? Effect.failCause(cause)
        : Effect.succeed(
          json(
            Answer.errorBody(`The emulator failed: ${Cause.pretty(cause).split("\n")[0]}`, { type: "server_error" }),
            500
          )
        )
    )
  )

const param = (name: string) =>
  Effect.map(HttpRouter.params, (params) => params[name] ?? "")

const query = (name: string) =>
  Effect.gen(function*() {
    const value = (yield* HttpServerRequest.ParsedSearchParams)[name]
    return Array.isArray(value) ? value[0] : value
  })

const readJson = Effect.gen(function*() {
  const request = yield* HttpServerRequest.HttpServerRequest
  const text = yield* request.text.pipe(Effect.mapError(() => badRequest("Could not read the request body.")))
  try {
    return JSON.parse(text) as unknown
  } catch {
    return yield* badRequest(
      "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.)"
    )
  }
})

const intParam = (raw: string | undefined, name: string, min: number, max: number, fallback: number) =>
  Effect.gen(function*() {
    if (raw === undefined || raw === "") return fallback
    const n = Number(raw)
    if (!Number.isInteger(n)) return yield* badRequest(`Invalid '${name}': expected an integer, but got '${raw}' instead.`, name, "invalid_type")
    if (n < min) return yield* badRequest(`Invalid '${name}': integer below minimum value. Expected a value >= ${min}, but got ${n} instead.`, name, "integer_below_min_value")
    if (n > max) return yield* badRequest(`Invalid '${name}': integer above maximum value. Expected a value <= ${max}, but got ${n} instead.`, name, "integer_above_max_value")
    return n
  })

const page = <A extends { readonly id: string }>(items: ReadonlyArray<A>, after: string | undefined, limit: number) => {
  let rest = items
  if (after !== undefined && after !== "") {
    const i = items.findIndex((x) => x.id === after)
    rest = i >= 0 ? items.slice(i + 1) : []
  }
  const data = rest.slice(0, limit)
  return { data, first_id: data[0]?.id ?? null, last_id: data.at(-1)?.id ?? null, has_more: rest.length > limit }
}

const isObject = (u: unknown): u is Record<string, unknown> => typeof u === "object" && u !== null && !Array.isArray(u)

// ===== files =====

const PURPOSES = ["assistants", "batch", "fine-tune", "vision", "user_data", "evals"]

const uploadFile = (rt: Runtime) =>
  Effect.gen(function*() {
    const request = yield* HttpServerRequest.HttpServerRequest
    const contentType = request.headers["content-type"] ?? ""
    if (!contentType.toLowerCase().startsWith("multipart/form-data")) {
      return yield* badRequest("Invalid Content-Type header: expected multipart/form-data.")
    }
    const fields: Record<string, string> = {}
    let upload: { readonly temp: string; readonly name: string; bytes: number } | undefined
    let committed = false
    const cleanup = Effect.sync(() => {
      if (upload !== undefined && !committed) fs.rmSync(upload.temp, { force: true })
    })
    return yield* Effect.gen(function*() {
      yield* Stream.runForEach(request.multipartStream, (part) => {
        if (part._tag === "Field") {
          return Effect.sync(() => {
            fields[part.key] = part.value
          })
        }
        if (part.key !== "file" || upload !== undefined) return Stream.runDrain(part.content)
        const target = { temp: rt.store.tempPath("upload"), name: part.name, bytes: 0 }
        upload = target
        const started = Date.now()
        // stream to disk; past the size limit, keep draining the request but stop writing
        return Effect.acquireUseRelease(
          Effect.sync(() => fs.openSync(target.temp, "w")),
          (fd) =>
            Stream.runForEach(part.content, (chunk) =>
              Effect.suspend(() => {
                target.bytes += chunk.length
                if (target.bytes <= rt.maxFileBytes) fs.writeSync(fd, chunk)
                // a slow link: the next chunk is read once the bytes so far have had their time
                const due = rt.uploadBytesPerSecond > 0 ? started + (target.bytes / rt.uploadBytesPerSecond) * 1000 - Date.now() : 0
                return due > 0 ? Effect.sleep(due) : Effect.void
              })),
          (fd) => Effect.sync(() => fs.closeSync(fd))
        )
      }).pipe(
        // every part with a filename is a file, whatever its content type (by default `application/json*` parts,
        // which includes `application/jsonl`, would be read as text fields)
        Effect.provideService(Multipart.FieldMimeTypes, []),
        Effect.mapError((e) => badRequest(`Could not parse the multipart form: ${e.message}`))
      )

      const purpose = fields["purpose"]
      if (purpose === undefined || purpose === "") {
        return yield* badRequest("Missing required parameter: 'purpose'.", "purpose", "missing_required_parameter")
      }
      if (upload === undefined) return yield* badRequest("Missing required parameter: 'file'.", "file", "missing_required_parameter")
      if (!PURPOSES.includes(purpose)) {
        return yield* badRequest(
          `Invalid value for 'purpose': '${purpose}'. Supported values are: ${PURPOSES.map((p) => `'${p}'`).join(", ")}.`,
          "purpose",
          "invalid_value"
        )
      }
      if (purpose === "batch" && !upload.name.toLowerCase().endsWith(".jsonl")) {
        return yield* badRequest("Invalid file format for Batch API. Must be .jsonl", "file", "invalid_file_format")
      }
      if (upload.bytes > rt.maxFileBytes) return yield* badRequest("File is too large.", "file", "file_too_large")
      const now = Math.floor((yield* Clock.currentTimeMillis) / 1000)
      const seconds = Number(fields["expires_after[seconds]"])
      const expiresAt = fields["expires_after[anchor]"] === "created_at" && Number.isInteger(seconds)
        ? now + seconds
        : purpose === "batch"
        ? now + 30 * 86_400
        : null
      const id = randomId("file-")
      fs.renameSync(upload.temp, rt.store.dataPath(id))
      committed = true
      const file: FileRecord = {
        id,
        object: "file",
        bytes: upload.bytes,
        created_at: now,
        expires_at: expiresAt,
        filename: upload.name,
        purpose,
        status: "processed",
        status_details: null,
        seq: rt.store.nextSeq()
      }
      rt.store.putFile(file)
      rt.store.countUpload()
      return json(fileObject(file))
    }).pipe(Effect.ensuring(cleanup))
  })

const getFile = (rt: Runtime) =>
  Effect.gen(function*() {
    const id = yield* param("id")
    const file = rt.store.files.get(id)
    if (file === undefined) return yield* notFound(`No such File object: ${id}`, "id")
    return file
  })

const listFiles = (rt: Runtime) =>
  Effect.gen(function*() {
    const purpose = yield* query("purpose")
    const order = (yield* query("order")) ?? "desc"
    if (order !== "asc" && order !== "desc") {
      return yield* badRequest(`Invalid value for 'order': '${order}'. Supported values are: 'asc' and 'desc'.`, "order", "invalid_value")
    }
    const limit = yield* intParam(yield* query("limit"), "limit", 1, 10_000, 10_000)
    const files = [...rt.store.files.values()]
      .filter((f) => purpose === undefined || purpose === "" || f.purpose === purpose)
      .sort((a, b) => (order === "asc" ? a.seq - b.seq : b.seq - a.seq))
    const p = page(files, yield* query("after"), limit)
    return json({ object: "list", ...p, data: p.data.map(fileObject) })
  })

// ===== batches =====

const METADATA_MAX_KEYS = 16

/**
 * Creates a batch. With `createLatencyMs` the answer comes that late, while the batch already exists (listed,
 * retrievable, processed); `createSucceedsThenFails` creates it and answers 500.
 */
const createBatch = (rt: Runtime) =>
  Effect.gen(function*() {
    const body = yield* readJson
    if (!isObject(body)) return yield* badRequest("The request body must be a JSON object.")
    const { completion_window, endpoint: target, input_file_id, metadata } = body
    if (typeof input_file_id !== "string" || input_file_id === "") {
      return yield* badRequest("Missing required parameter: 'input_file_id'.", "input_file_id", "missing_required_parameter")
    }
    if (typeof target !== "string" || target === "") {
      return yield* badRequest("Missing required parameter: 'endpoint'.", "endpoint", "missing_required_parameter")
    }
    if (!Answer.BATCH_ENDPOINTS.includes(target)) {
      return yield* badRequest(
        `Invalid value: '${target}'. Supported values are: ${Answer.BATCH_ENDPOINTS.map((e) => `'${e}'`).join(", ")}.`,
        "endpoint",
        "invalid_value"
      )
    }
    if (typeof completion_window !== "string" || completion_window === "") {
      return yield* badRequest("Missing required parameter: 'completion_window'.", "completion_window", "missing_required_parameter")
    }
    if (completion_window !== "24h") {
      return yield* badRequest(`Invalid value: '${completion_window}'. Supported values are: '24h'.`, "completion_window", "invalid_value")
    }
    let meta: Record<string, string> | null = null
    if (metadata !== undefined && metadata !== null) {
      if (!isObject(metadata)) return yield* badRequest("Invalid type for 'metadata': expected an object.", "metadata", "invalid_type")
      const entries = Object.entries(metadata)
      if (entries.length > METADATA_MAX_KEYS) {
        return yield* badRequest(
          `Invalid 'metadata': too many properties. Expected an object with at most ${METADATA_MAX_KEYS} properties, but got an object with ${entries.length} properties instead.`,
          "metadata",
          "object_above_max_properties"
        )
      }
      for (const [key, value] of entries) {
        if (key.length > 64) {
          return yield* badRequest(`Invalid 'metadata': key '${key.slice(0, 70)}…' is longer than 64 characters.`, "metadata", "string_above_max_length")
        }
        if (typeof value !== "string") {
          return yield* badRequest(`Invalid type for 'metadata.${key}': expected a string.`, `metadata.${key}`, "invalid_type")
        }
        if (value.length > 512) {
          return yield* badRequest(`Invalid 'metadata.${key}': string too long. Expected a string with maximum length 512, but got a string with length ${value.length} instead.`, `metadata.${key}`, "string_above_max_length")
        }
      }
      meta = Object.fromEntries(entries) as Record<string, string>
    }
    let outputExpiresAfter: number | null = null
    const oea = body.output_expires_after
    if (oea !== undefined && oea !== null) {
      if (!isObject(oea) || oea.anchor !== "created_at" || typeof oea.seconds !== "number" || !Number.isInteger(oea.seconds) || oea.seconds < 3600 || oea.seconds > 2_592_000) {
        return yield* badRequest("Invalid 'output_expires_after': expected {anchor: 'created_at', seconds: 3600–2592000}.", "output_expires_after", "invalid_value")
      }
      outputExpiresAfter = oea.seconds
    }
    const file = rt.store.files.get(input_file_id)
    if (file === undefined) return yield* notFound(`No such File object: ${input_file_id}`, "input_file_id")
    if (file.purpose !== "batch") {
      return yield* badRequest(
        `The input file ${input_file_id} has purpose '${file.purpose}'; a batch needs a file uploaded with purpose 'batch'.`,
        "input_file_id",
        "invalid_file_purpose"
      )
    }
    const rec: BatchRecord = {
      id: randomId("batch_", 32),
      seq: rt.store.nextSeq(),
      endpoint: target,
      input_file_id,
      completion_window,
      metadata: meta,
      output_expires_after_seconds: outputExpiresAfter,
      created_ms: yield* Clock.currentTimeMillis,
      knobs: rt.knobs,
      injected_failure: rt.faults.batchFailure(),
      cancel_ms: null,
      validation: null,
      final: null,
      processed: 0
    }
    // the batch exists from here on, whatever the client hears (and whether it is still there to hear it)
    rt.store.putBatch(rec)
    // counted in arrival order, before any wait
    const failsAfter = rt.faults.createFailsAfter()
    if (rt.createLatencyMs > 0) yield* Effect.sleep(rt.createLatencyMs)
    const created = yield* rt.read(rec.id)
    // the batch exists, but the client is told the create failed
    if (failsAfter) return json(Faults.faultBody(500, "/v1/batches", 0), 500)
    return json(created)
  })

const batchNotFound = (id: string) => notFound(`No batch found with id '${id}'.`, "batch_id")

const retrieveBatch = (rt: Runtime) =>
  Effect.gen(function*() {
    const id = yield* param("id")
    const rec = rt.store.batches.get(id)
    // not visible yet to retrieve (propagation delay after a create)
    if (rec !== undefined && (yield* Clock.currentTimeMillis) - rec.created_ms < rec.knobs.notFoundAfterCreateMs) {
      return yield* batchNotFound(id)
    }
    const batch = yield* rt.read(id)
    if (batch === undefined) return yield* batchNotFound(id)
    return json(batch)
  })

const listBatches = (rt: Runtime) =>
  Effect.gen(function*() {
    const limit = yield* intParam(yield* query("limit"), "limit", 1, 100, 20)
    const all = [...rt.store.batches.values()].sort((a, b) => b.seq - a.seq)
    const p = page(all, yield* query("after"), limit)
    const data = yield* Effect.forEach(p.data, (rec) => rt.read(rec.id))
    return json({ object: "list", ...p, data })
  })

const cancelBatch = (rt: Runtime) =>
  Effect.gen(function*() {
    const id = yield* param("id")
    const result = yield* rt.cancel(id)
    if (result === undefined) return yield* batchNotFound(id)
    if ("refused" in result) {
      return yield* badRequest(`Cannot cancel a batch with status '${result.refused}'.`)
    }
    return json(result.batch)
  })

// ===== file content =====

/**
 * Sends the headers (with the whole file's content-length) and the first
 * `afterBytes` bytes of a file (at most all but its last byte), waits until
 * they are flushed, then destroys the connection: the client sees the body
 * break off mid-stream. An empty file: the connection drops before any header.
 */
const cutDownload = (path: string, afterBytes: number) =>
  Effect.gen(function*() {
    const request = yield* HttpServerRequest.HttpServerRequest
    const response = NodeHttpServerRequest.toServerResponse(request) as Http.ServerResponse
    const size = fs.statSync(path).size
    const sent = Math.min(afterBytes, Math.max(0, size - 1))
    const head = Buffer.alloc(sent)
    if (sent > 0) {
      const fd = fs.openSync(path, "r")
      try {
        fs.readSync(fd, head, 0, sent, 0)
      } finally {
        fs.closeSync(fd)
      }
    }
    yield* Effect.callback<void>((resume) => {
      const drop = () => {
        response.destroy()
        resume(Effect.void)
      }
      if (size === 0 || response.destroyed) return drop()
      response.writeHead(200, {
        "content-type": "application/octet-stream",
        "content-length": String(size),
        "x-request-id": randomId("req_", 32)
      })
      // the write callback runs once the bytes are handed to the socket: only then is the connection cut
      response.write(head, drop)
    })
    // never reaches the client: the server skips writing to a destroyed response
    return HttpServerResponse.empty({ status: 200 })
  })

const fileContent = (rt: Runtime) =>
  Effect.gen(function*() {
    const file = yield* getFile(rt)
    const path = rt.store.dataPath(file.id)
    if (!fs.existsSync(path)) return yield* notFound(`No such File object: ${file.id}`, "id")
    const cut = rt.faults.resetDownload()
    if (cut !== undefined) return yield* cutDownload(path, cut)
    return yield* HttpServerResponse.file(path, {
      contentType: "application/octet-stream",
      headers: { "x-request-id": randomId("req_", 32) }
    }).pipe(Effect.mapError(() => notFound(`No such File object: ${file.id}`, "id")))
  })

// ===== synchronous endpoints =====

const syncAnswer = (rt: Runtime, target: "/v1/chat/completions" | "/v1/embeddings") =>
  Effect.gen(function*() {
    const body = yield* readJson
    const created = Math.floor((yield* Clock.currentTimeMillis) / 1000)
    const answer = Answer.answer(target, body, randomId("chatcmpl-", 29), created, { cache: rt.promptCache })
    return json(answer.body, answer.status)
  })

// ===== the router =====

/** every route of the emulator */
export const layer = (rt: Runtime) =>
  Layer.mergeAll(
    HttpRouter.add("POST", "/v1/files", endpoint(rt, "files.create", uploadFile(rt))),
    HttpRouter.add("GET", "/v1/files", endpoint(rt, "files.list", listFiles(rt))),
    HttpRouter.add("GET", "/v1/files/:id", endpoint(rt, "files.retrieve", Effect.map(getFile(rt), (f) => json(fileObject(f))))),
    HttpRouter.add(
      "DELETE",
      "/v1/files/:id",
      endpoint(
        rt,
        "files.delete",
        Effect.map(getFile(rt), (f) => {
          rt.store.deleteFile(f.id)
          return json({ id: f.id, object: "file", deleted: true })
        })
      )
    ),
    HttpRouter.add("GET", "/v1/files/:id/content", endpoint(rt, "files.content", fileContent(rt))),
    HttpRouter.add("POST", "/v1/batches", endpoint(rt, "batches.create", createBatch(rt))),
    HttpRouter.add("GET", "/v1/batches", endpoint(rt, "batches.list", listBatches(rt))),
    HttpRouter.add("GET", "/v1/batches/:id", endpoint(rt, "batches.retrieve", retrieveBatch(rt))),
    HttpRouter.add("POST", "/v1/batches/:id/cancel", endpoint(rt, "batches.cancel", cancelBatch(rt))),
    HttpRouter.add("POST", "/v1/chat/completions", endpoint(rt, "chat.completions.create", syncAnswer(rt, "/v1/chat/completions"))),
    HttpRouter.add("POST", "/v1/embeddings", endpoint(rt, "embeddings.create", syncAnswer(rt, "/v1/embeddings"))),
    HttpRouter.add(
      "*",
      "*",
      Effect.gen(function*() {
        const request = yield* HttpServerRequest.HttpServerRequest
        return json(Answer.errorBody(`Invalid URL (${request.method} ${request.url.split("?")[0]})`), 404)
      })
    )
  )
