/**
 * The Gemini emulator's HTTP surface, under `/v1beta` and `/v1` (the SDK's
 * 3.x default) alike: the Files API (resumable upload, get, list, delete,
 * `:download?alt=media`), batch mode (`models/*:batchGenerateContent`,
 * `models/*:asyncBatchEmbedContent`, `batches` get, list, `:cancel`, delete)
 * and the synchronous `:generateContent`, `:embedContent` and
 * `:batchEmbedContents`, with Google's JSON error shape
 * (`{"error":{"code","message","status","details"}}`), so the official SDK
 * raises its `ApiError` with the right status.
 *
 * Every endpoint needs an API key (`x-goog-api-key`, or `?key=`); injected
 * endpoint faults answer after that check and before anything happens.
 *
 * @internal
 */
import { Cause, Clock, Data, Effect, Layer, Stream } from "effect"
import { HttpRouter, HttpServerRequest, HttpServerResponse } from "effect/http"
import * as crypto from "node:crypto"
import * as fs from "node:fs"
import * as Answer from "./geminiEmulatorAnswer.ts"
import * as Batch from "./geminiEmulatorBatch.ts"
import type { EndpointFault, EndpointName, Runtime } from "./geminiEmulatorRuntime.ts"
import type { BatchRecord, FileRecord } from "./geminiEmulatorStore.ts"
import { fileObject, randomId } from "./geminiEmulatorStore.ts"
import { CODE_NAMES, HTTP_OF_CODE, statusNameOfHttp, TYPES } from "./geminiWire.ts"

// ===== errors =====

class ApiError extends Data.TaggedError("ApiError")<{
  readonly status: number
  readonly message: string
  /** the status name, when it is not the one of the HTTP status */
  readonly statusName?: string | undefined
  readonly details?: ReadonlyArray<unknown> | undefined
  readonly headers?: Readonly<Record<string, string>> | undefined
}> {}

const invalid = (message: string) => new ApiError({ status: 400, message })

const notFound = (message: string) => new ApiError({ status: 404, message })

const errorBody = (status: number, message: string, name?: string, details?: ReadonlyArray<unknown>) => ({
  error: { code: status, message, status: name ?? statusNameOfHttp(status), ...(details !== undefined ? { details } : {}) }
})

const json = (body: unknown, status = 200, headers: Readonly<Record<string, string>> = {}) =>
  HttpServerResponse.jsonUnsafe(body, { status, headers })

/** a JSON body already serialized */
const jsonText = (text: string, status = 200) =>
  HttpServerResponse.text(text, { status, contentType: "application/json; charset=UTF-8" })

const errorResponse = (e: ApiError) => json(errorBody(e.status, e.message, e.statusName, e.details), e.status, e.headers ?? {})

/** the status an answer's `google.rpc.Status` fails a synchronous call with */
const failureError = (failure: { readonly code: number; readonly message: string }) =>
  new ApiError({ status: HTTP_OF_CODE[failure.code] ?? 500, message: failure.message, statusName: CODE_NAMES[failure.code] })

const MISSING_KEY =
  "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API."

const VERSIONS = new Set(["v1", "v1beta", "v1alpha"])

/** reads and drops the rest of a request body, so the client is never cut off mid-upload */
const drain = Effect.gen(function*() {
  const request = yield* HttpServerRequest.HttpServerRequest
  if (request.method === "GET" || request.method === "HEAD" || request.method === "DELETE") return
  yield* Stream.runDrain(request.stream).pipe(Effect.ignore)
})

const FAULT_MESSAGES: Readonly<Record<number, string>> = {
  429: "Resource has been exhausted (e.g. check quota).",
  500: "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting",
  502: "Bad Gateway",
  503: "The model is overloaded. Please try again later.",
  504: "Deadline expired before operation could complete."
}

const faultError = (fault: EndpointFault) => {
  const seconds = Math.max(0, fault.retryAfter ?? 1)
  return new ApiError({
    status: fault.status,
    message: FAULT_MESSAGES[fault.status] ?? `The request failed with status ${fault.status}.`,
    ...(fault.status === 429
      ? {
        details: [{ "@type": TYPES.retryInfo, retryDelay: `${seconds}s` }],
        ...(fault.retryAfterHeader === true ? { headers: { "retry-after": String(Math.ceil(seconds)) } } : {})
      }
      : {})
  })
}

/**
 * Auth, then the injected fault of the endpoint if one fires (`null`: an
 * upload chunk, whose fault was drawn at the upload's start), then the
 * handler; errors and defects become Google's error shape.
 */
const endpoint = <R>(
  rt: Runtime,
  name: EndpointName | null,
  handler: Effect.Effect<HttpServerResponse.HttpServerResponse, ApiError, R>
) =>
  Effect.gen(function*() {
    const request = yield* HttpServerRequest.HttpServerRequest
    const key = (request.headers["x-goog-api-key"] ?? "").trim()
    const queryKey = new URL(request.url, "http://x").searchParams.get("key") ?? ""
    const bearer = /^Bearer\s+\S+/i.test(request.headers["authorization"] ?? "")
    if (key.length === 0 && queryKey.length === 0 && !bearer) {
      yield* drain
      return yield* new ApiError({ status: 403, message: MISSING_KEY })
    }
    const fault = name === null ? undefined : rt.fault(name)
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
        : Effect.succeed(errorResponse(new ApiError({ status: 500, message: `The emulator failed: ${Cause.pretty(cause).split("\n")[0]}` })))
    )
  )

const params = HttpRouter.params

/** the API version of the path, or a 404 for an unknown one */
const version = Effect.gen(function*() {
  const v = (yield* params)["version"] ?? ""
  if (!VERSIONS.has(v)) return yield* notFound(`The API version ${v} is not supported.`)
  return v
})

const query = (name: string) => Effect.map(HttpServerRequest.HttpServerRequest, (r) => new URL(r.url, "http://x").searchParams.get(name) ?? undefined)

/** the scheme and host the client reached the emulator at */
const origin = Effect.map(HttpServerRequest.HttpServerRequest, (request) => `http://${request.headers["host"] ?? "127.0.0.1"}`)

/** the request body, refused with Google's payload-size error past `limit` bytes (the rest is drained) */
const readBody = (limit: number) =>
  Effect.gen(function*() {
    const request = yield* HttpServerRequest.HttpServerRequest
    const declared = Number(request.headers["content-length"])
    const chunks: Array<Uint8Array> = []
    let bytes = 0
    yield* Stream.runForEach(request.stream, (chunk) =>
      Effect.sync(() => {
        bytes += chunk.length
        if (bytes <= limit) chunks.push(chunk)
      })).pipe(Effect.mapError(() => invalid("Could not read the request body.")))
    if (bytes > limit || (Number.isFinite(declared) && declared > limit)) {
      return yield* invalid(`Request payload size exceeds the limit: ${limit} bytes.`)
    }
    return Buffer.concat(chunks)
  })

const isObject = (u: unknown): u is Record<string, unknown> => typeof u === "object" && u !== null && !Array.isArray(u)

const parseJson = (bytes: Buffer) =>
  Effect.try({
    try: () => JSON.parse(bytes.toString("utf8")) as unknown,
    catch: () => invalid("Invalid JSON payload received. Unexpected token.")
  })

const pageSize = (raw: string | undefined, fallback: number, max: number) =>
  Effect.gen(function*() {
    if (raw === undefined || raw === "") return fallback
    const n = Number(raw)
    if (!Number.isInteger(n) || n < 0) return yield* invalid(`Invalid value at 'page_size' (TYPE_INT32), "${raw}"`)
    return n === 0 ? fallback : Math.min(n, max)
  })

/** items after the `pageToken` cursor (a sequence number), newest first */
const page = <A extends { readonly seq: number }>(items: ReadonlyArray<A>, token: string | undefined, size: number) =>
  Effect.gen(function*() {
    let rest = [...items].sort((a, b) => b.seq - a.seq)
    if (token !== undefined && token !== "") {
      const seq = Number(Buffer.from(token, "base64url").toString("utf8"))
      if (!Number.isInteger(seq)) return yield* invalid("Invalid page token.")
      rest = rest.filter((x) => x.seq < seq)
    }
    const data = rest.slice(0, size)
    const next = rest.length > size ? Buffer.from(String(data.at(-1)!.seq)).toString("base64url") : undefined
    return { data, next }
  })

// ===== files =====

const MIB8 = 8 * 1024 * 1024

const startUpload = (rt: Runtime) =>
  Effect.gen(function*() {
    const request = yield* HttpServerRequest.HttpServerRequest
    const v = yield* version
    if ((request.headers["x-goog-upload-protocol"] ?? "").toLowerCase() !== "resumable") {
      yield* drain
      return yield* invalid("Only the resumable upload protocol is supported (X-Goog-Upload-Protocol: resumable).")
    }
    if ((request.headers["x-goog-upload-command"] ?? "").toLowerCase() !== "start") {
      yield* drain
      return yield* invalid("A resumable upload starts with X-Goog-Upload-Command: start.")
    }
    const text = (yield* readBody(1024 * 1024)).toString("utf8")
    let body: unknown = {}
    if (text.trim().length > 0) {
      try {
        body = JSON.parse(text)
      } catch {
        return yield* invalid("Invalid JSON payload received.")
      }
    }
    const file = isObject(body) && isObject(body.file) ? body.file : {}
    const mimeType = typeof file.mimeType === "string" && file.mimeType.length > 0
      ? file.mimeType
      : request.headers["x-goog-upload-header-content-type"] ?? ""
    if (mimeType.length === 0) return yield* invalid("* File.mime_type: mime_type is required")
    const declaredRaw = request.headers["x-goog-upload-header-content-length"] ?? (typeof file.sizeBytes === "string" ? file.sizeBytes : undefined)
    const declared = declaredRaw === undefined ? null : Number(declaredRaw)
    if (declared !== null && (!Number.isFinite(declared) || declared < 0)) return yield* invalid("Invalid X-Goog-Upload-Header-Content-Length.")
    if (declared !== null && declared > rt.maxFileBytes) {
      return yield* invalid(`The file is too large: ${declared} bytes exceed the maximum file size of ${rt.maxFileBytes} bytes.`)
    }
    const id = randomId(24)
    rt.uploads.set(id, {
      id,
      displayName: typeof file.displayName === "string" ? file.displayName : null,
      mimeType,
      declared,
      temp: rt.store.tempPath(`upload-${id}`),
      hash: crypto.createHash("sha256"),
      received: 0
    })
    const url = `${yield* origin}/upload/${v}/files?upload_id=${id}&upload_protocol=resumable`
    return HttpServerResponse.empty({
      status: 200,
      headers: { "x-goog-upload-url": url, "x-goog-upload-status": "active", "x-goog-upload-chunk-granularity": String(MIB8) }
    })
  })

const uploadChunk = (rt: Runtime, uploadId: string) =>
  Effect.gen(function*() {
    const request = yield* HttpServerRequest.HttpServerRequest
    const v = yield* version
    const session = rt.uploads.get(uploadId)
    if (session === undefined) {
      yield* drain
      return yield* notFound(`No upload session ${uploadId}.`)
    }
    const command = (request.headers["x-goog-upload-command"] ?? "").toLowerCase().split(",").map((s) => s.trim())
    const offset = Number(request.headers["x-goog-upload-offset"] ?? "0")
    if (offset !== session.received) {
      yield* drain
      return yield* new ApiError({
        status: 400,
        message: `Invalid X-Goog-Upload-Offset ${offset}: ${session.received} bytes were received so far.`,
        headers: { "x-goog-upload-status": "active" }
      })
    }
    let tooLarge = false
    if (command.includes("upload")) {
      yield* Effect.acquireUseRelease(
        Effect.sync(() => fs.openSync(session.temp, "a")),
        (fd) =>
          Stream.runForEach(request.stream, (chunk) =>
            Effect.sync(() => {
              if (session.received + chunk.length > rt.maxFileBytes) tooLarge = true
              if (tooLarge) return
              fs.writeSync(fd, chunk)
              session.hash.update(chunk)
              session.received += chunk.length
            })),
        (fd) => Effect.sync(() => fs.closeSync(fd))
      ).pipe(Effect.mapError(() => invalid("Could not read the upload.")))
    } else yield* drain
    if (tooLarge) {
      rt.uploads.delete(uploadId)
      fs.rmSync(session.temp, { force: true })
      return yield* new ApiError({
        status: 400,
        message: `The file is too large: it exceeds the maximum file size of ${rt.maxFileBytes} bytes.`,
        headers: { "x-goog-upload-status": "final" }
      })
    }
    if (!command.includes("finalize")) {
      return HttpServerResponse.empty({ status: 200, headers: { "x-goog-upload-status": "active" } })
    }
    rt.uploads.delete(uploadId)
    if (session.declared !== null && session.declared !== session.received) {
      fs.rmSync(session.temp, { force: true })
      return yield* invalid(`The upload has ${session.received} bytes, but ${session.declared} were declared.`)
    }
    if (!fs.existsSync(session.temp)) fs.writeFileSync(session.temp, "")
    const id = randomId(12)
    fs.renameSync(session.temp, rt.store.dataPath(id))
    const record: FileRecord = {
      id,
      seq: rt.store.nextSeq(),
      displayName: session.displayName,
      mimeType: session.mimeType,
      bytes: session.received,
      sha256: session.hash.digest("base64"),
      created_ms: yield* Clock.currentTimeMillis,
      source: "UPLOADED"
    }
    rt.store.putFile(record)
    rt.store.countUpload()
    return json({ file: fileObject(record, yield* origin, v) }, 200, { "x-goog-upload-status": "final" })
  })

const upload = (rt: Runtime) =>
  Effect.gen(function*() {
    const uploadId = yield* query("upload_id")
    // a chunk is not an API call of its own: a fault on `files.upload` answers the start
    if (uploadId !== undefined) return yield* endpoint(rt, null, uploadChunk(rt, uploadId))
    return yield* endpoint(rt, "files.upload", startUpload(rt))
  })

const fileOf = (rt: Runtime, name: string) =>
  Effect.gen(function*() {
    const file = rt.store.files.get(name)
    if (file === undefined || !fs.existsSync(rt.store.dataPath(name))) {
      return yield* new ApiError({ status: 403, message: `You do not have permission to access the File ${name} or it may not exist.`, statusName: "PERMISSION_DENIED" })
    }
    return file
  })

const filesGet = (rt: Runtime, v: string, rest: string) =>
  Effect.gen(function*() {
    if (rest.endsWith(":download")) {
      const name = rest.slice(0, -":download".length)
      return yield* endpoint(
        rt,
        "files.download",
        Effect.gen(function*() {
          if ((yield* query("alt")) !== "media") return yield* invalid("Downloads need ?alt=media.")
          const file = yield* fileOf(rt, name)
          return yield* HttpServerResponse.file(rt.store.dataPath(file.id), { contentType: file.mimeType }).pipe(
            Effect.mapError(() => notFound(`File ${name} not found.`))
          )
        })
      )
    }
    return yield* endpoint(rt, "files.get", Effect.gen(function*() {
      return json(fileObject(yield* fileOf(rt, rest), yield* origin, v))
    }))
  })

const filesList = (rt: Runtime, v: string) =>
  endpoint(
    rt,
    "files.list",
    Effect.gen(function*() {
      const size = yield* pageSize(yield* query("pageSize"), 10, 100)
      const { data, next } = yield* page([...rt.store.files.values()], yield* query("pageToken"), size)
      const host = yield* origin
      return json({ files: data.map((f) => fileObject(f, host, v)), ...(next !== undefined ? { nextPageToken: next } : {}) })
    })
  )

const filesDelete = (rt: Runtime, name: string) =>
  endpoint(
    rt,
    "files.delete",
    Effect.gen(function*() {
      yield* fileOf(rt, name)
      rt.store.deleteFile(name)
      return json({})
    })
  )

// ===== batches =====

const UNKNOWN_NAME = /^Invalid JSON payload received\. Unknown name "([^"]*)"(?: at '([^']*)')?: Cannot find field\.$/

const BATCH_FIELDS = new Set(["displayName", "inputConfig", "priority", "webhookConfig", "model", "name"])

/** creates a batch of `kind` for `model` (`models/…`) */
const createBatch = (rt: Runtime, kind: "generate" | "embed", model: string) =>
  Effect.gen(function*() {
    const body = yield* parseJson(yield* readBody(rt.maxInlineBytes))
    if (!isObject(body) || !isObject(body.batch)) return yield* invalid("* batch: batch is required")
    const batch = body.batch
    for (const key of Object.keys(batch)) {
      if (!BATCH_FIELDS.has(key)) return yield* invalid(`Invalid JSON payload received. Unknown name "${key}" at 'batch': Cannot find field.`)
    }
    const displayName = batch.displayName
    if (typeof displayName !== "string" || displayName.length === 0) {
      return yield* invalid("* GenerateContentBatch.display_name: display_name is required")
    }
    if (displayName.length > 512) return yield* invalid("* GenerateContentBatch.display_name: display_name is too long (at most 512 characters)")
    const input = batch.inputConfig
    if (!isObject(input)) return yield* invalid("* GenerateContentBatch.input_config: input_config is required")
    const fileName = input.fileName ?? input.file_name
    const inline = input.requests
    if ((fileName === undefined) === (inline === undefined)) {
      return yield* invalid("* GenerateContentBatch.input_config: exactly one of file_name and requests must be set")
    }
    const id = randomId(16)
    const now = yield* Clock.currentTimeMillis
    const base = {
      id,
      seq: rt.store.nextSeq(),
      kind,
      model,
      displayName,
      priority: typeof batch.priority === "string" || typeof batch.priority === "number" ? String(batch.priority) : "0",
      created_ms: now,
      knobs: rt.knobs,
      injected: rt.batchFailure(),
      cancel_ms: null,
      final: null,
      deleted_ms: null
    } as const
    let rec: BatchRecord
    if (fileName !== undefined) {
      if (typeof fileName !== "string" || !fileName.startsWith("files/")) {
        return yield* invalid(`* GenerateContentBatch.input_config.file_name: "${String(fileName)}" is not a file name (files/…)`)
      }
      yield* fileOf(rt, fileName.slice("files/".length))
      rec = { ...base, inputFile: fileName, validation: null }
      rt.store.putBatch(rec)
    } else {
      const list = isObject(inline) ? inline.requests : undefined
      if (!Array.isArray(list) || list.length === 0) {
        return yield* invalid("* GenerateContentBatch.input_config.requests.requests: requests must not be empty")
      }
      const lines: Array<string> = []
      const parts: Array<{ key: string; request: unknown }> = []
      for (let i = 0; i < list.length; i++) {
        const element = list[i]
        const at = `batch.input_config.requests.requests[${i}]`
        if (!isObject(element) || !isObject(element.request)) return yield* invalid(`* ${at}.request: request is required`)
        for (const key of Object.keys(element)) {
          if (key !== "request" && key !== "metadata") {
            return yield* invalid(`Invalid JSON payload received. Unknown name "${key}" at '${at}': Cannot find field.`)
          }
        }
        // field names are checked at create (the API refuses the whole batch); other problems fail their line later
        const checked = Answer.answer(kind, element.request, model, "check")
        const unknown = "code" in checked ? UNKNOWN_NAME.exec(checked.message) : null
        if (unknown !== null) {
          const where = `${at}.request${unknown[2] !== undefined ? `.${unknown[2]}` : ""}`
          return yield* invalid(`Invalid JSON payload received. Unknown name "${unknown[1]}" at '${where}': Cannot find field.`)
        }
        const key = isObject(element.metadata) && typeof element.metadata.key === "string" ? element.metadata.key : String(i)
        parts.push({ key, request: element.request })
        lines.push(JSON.stringify(element))
      }
      const temp = rt.store.tempPath(`${id}.requests`)
      fs.writeFileSync(temp, lines.join("\n") + "\n")
      rec = { ...base, inputFile: null, validation: null }
      rec = { ...rec, validation: { ok: true, total: lines.length, failing: Batch.failingOf(rec, parts) } }
      // the record first: on load, an inline record whose requests file is missing is dropped
      rt.store.putBatch(rec)
      fs.renameSync(temp, rt.store.requestsPath(id))
    }
    const delay = rt.createDelay()
    if (delay > 0) yield* Effect.sleep(delay)
    // the batch exists, but the client is told the create failed
    if (rt.createFailsAfter()) return yield* faultError({ status: 500 })
    return jsonText(Batch.operation(rec, yield* Clock.currentTimeMillis, undefined))
  })

/** `metadata.output` of a batch that ended with results, as JSON text (inline responses only when `inline`) */
const outputOf = (rt: Runtime, rec: BatchRecord, inline: boolean): string | undefined => {
  const f = rec.final
  if (f === null || f.output === null) return undefined
  if (f.output !== "inline") return JSON.stringify({ responsesFile: f.output })
  if (!inline) return undefined
  let text = ""
  try {
    text = fs.readFileSync(rt.store.resultsPath(rec.id), "utf8")
  } catch {
    return undefined
  }
  const lines = text.split("\n").filter((l) => l.length > 0)
  return `{"inlinedResponses":{"inlinedResponses":[${lines.join(",")}]}}`
}

const batchNotFound = (id: string) => notFound(`Batch batches/${id} not found.`)

/** the batch, or a 404: unknown, deleted, or (knob `notFoundAfterCreateMs`) created too recently to be seen yet */
const visible = (rt: Runtime, id: string) =>
  Effect.gen(function*() {
    const rec = yield* rt.read(id)
    if (rec === undefined) return yield* batchNotFound(id)
    const now = yield* Clock.currentTimeMillis
    if (now - rec.created_ms < rec.knobs.notFoundAfterCreateMs) return yield* batchNotFound(id)
    return rec
  })

const batchesGet = (rt: Runtime, id: string) =>
  endpoint(
    rt,
    "batches.get",
    Effect.gen(function*() {
      const rec = yield* visible(rt, id)
      return jsonText(Batch.operation(rec, yield* Clock.currentTimeMillis, outputOf(rt, rec, true)))
    })
  )

const batchesList = (rt: Runtime) =>
  endpoint(
    rt,
    "batches.list",
    Effect.gen(function*() {
      const size = yield* pageSize(yield* query("pageSize"), 50, 1000)
      const live = [...rt.store.batches.values()].filter((b) => b.deleted_ms === null)
      const { data, next } = yield* page(live, yield* query("pageToken"), size)
      const now = yield* Clock.currentTimeMillis
      const operations: Array<string> = []
      for (const b of data) {
        const rec = yield* rt.read(b.id)
        // the list leaves inline responses out: a get returns them
        if (rec !== undefined) operations.push(Batch.operation(rec, now, outputOf(rt, rec, false)))
      }
      return jsonText(`{"operations":[${operations.join(",")}]${next !== undefined ? `,"nextPageToken":${JSON.stringify(next)}` : ""}}`)
    })
  )

const batchesCancel = (rt: Runtime, id: string) =>
  endpoint(
    rt,
    "batches.cancel",
    Effect.gen(function*() {
      yield* drain
      const result = yield* rt.cancel(id)
      if (result === undefined) return yield* batchNotFound(id)
      if ("refused" in result) {
        return yield* new ApiError({ status: 400, message: `Batch batches/${id} cannot be cancelled: ${result.refused}.`, statusName: "FAILED_PRECONDITION" })
      }
      return json({})
    })
  )

const batchesDelete = (rt: Runtime, id: string) =>
  endpoint(
    rt,
    "batches.delete",
    Effect.gen(function*() {
      const rec = yield* rt.read(id)
      if (rec === undefined) return yield* batchNotFound(id)
      rt.store.putBatch({ ...rec, deleted_ms: yield* Clock.currentTimeMillis })
      rt.store.removeBatchFiles(id)
      return json({})
    })
  )

// ===== models =====

const generateContent = (rt: Runtime, model: string) =>
  Effect.gen(function*() {
    const body = yield* parseJson(yield* readBody(rt.maxInlineBytes))
    const answer = Answer.generate(body, model, randomId(20), { cache: rt.promptCache })
    if ("code" in answer) return yield* failureError(answer)
    return json(answer.body)
  })

const embedContent = (rt: Runtime, model: string) =>
  Effect.gen(function*() {
    const body = yield* parseJson(yield* readBody(rt.maxInlineBytes))
    const answer = Answer.embed(body, model)
    if ("code" in answer) return yield* failureError(answer)
    return json(answer.body)
  })

const batchEmbedContents = (rt: Runtime, model: string) =>
  Effect.gen(function*() {
    const body = yield* parseJson(yield* readBody(rt.maxInlineBytes))
    const requests = isObject(body) ? body.requests : undefined
    if (!Array.isArray(requests) || requests.length === 0) return yield* invalid("* BatchEmbedContentsRequest.requests: requests must not be empty")
    if (requests.length > 100) return yield* invalid("* BatchEmbedContentsRequest.requests: at most 100 requests can be in one batch")
    const embeddings: Array<unknown> = []
    for (const request of requests) {
      const answer = Answer.embed(request, model)
      if ("code" in answer) return yield* failureError(answer)
      embeddings.push((answer.body as { embedding: unknown }).embedding)
    }
    return json({ embeddings })
  })

const modelsPost = (rt: Runtime, rest: string) =>
  Effect.gen(function*() {
    const colon = rest.lastIndexOf(":")
    const model = `models/${colon > 0 ? rest.slice(0, colon) : rest}`
    switch (colon > 0 ? rest.slice(colon + 1) : "") {
      case "batchGenerateContent":
        return yield* endpoint(rt, "batches.create", createBatch(rt, "generate", model))
      case "asyncBatchEmbedContent":
        return yield* endpoint(rt, "batches.createEmbeddings", createBatch(rt, "embed", model))
      case "generateContent":
        return yield* endpoint(rt, "models.generateContent", generateContent(rt, model))
      case "embedContent":
        return yield* endpoint(rt, "models.embedContent", embedContent(rt, model))
      case "batchEmbedContents":
        return yield* endpoint(rt, "models.embedContent", batchEmbedContents(rt, model))
      default:
        yield* drain
        return errorResponse(notFound(`Not found: POST models/${rest}`))
    }
  })

// ===== the router =====

/** the API's resources under `/{version}/`, by method and path */
const dispatch = (rt: Runtime) =>
  Effect.gen(function*() {
    const request = yield* HttpServerRequest.HttpServerRequest
    const v = yield* version
    const rest = (yield* params)["*"] ?? ""
    const slash = rest.indexOf("/")
    const collection = slash < 0 ? rest : rest.slice(0, slash)
    const name = slash < 0 ? "" : rest.slice(slash + 1)
    switch (`${request.method} ${collection}${name === "" ? "" : "/"}`) {
      case "GET files":
        return yield* filesList(rt, v)
      case "GET files/":
        return yield* filesGet(rt, v, name)
      case "DELETE files/":
        return yield* filesDelete(rt, name)
      case "POST models/":
        return yield* modelsPost(rt, name)
      case "GET batches":
        return yield* batchesList(rt)
      case "GET batches/":
        return yield* batchesGet(rt, name)
      case "DELETE batches/":
        return yield* batchesDelete(rt, name)
      case "POST batches/":
        if (name.endsWith(":cancel")) return yield* batchesCancel(rt, name.slice(0, -":cancel".length))
    }
    yield* drain
    return errorResponse(notFound(`Not found: ${request.method} ${request.url.split("?")[0]}`))
  })

/** an error outside an endpoint (an unknown API version) in Google's shape */
const orNotFound = <R>(effect: Effect.Effect<HttpServerResponse.HttpServerResponse, ApiError, R>) =>
  effect.pipe(Effect.catchTag("ApiError", (e) => Effect.succeed(errorResponse(e))))

/** every route of the emulator */
export const layer = (rt: Runtime) =>
  Layer.mergeAll(
    HttpRouter.add("POST", "/upload/:version/files", orNotFound(upload(rt))),
    HttpRouter.add("*", "/:version/*", orNotFound(dispatch(rt))),
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
