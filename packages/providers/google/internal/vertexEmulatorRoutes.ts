/**
 * The Vertex emulator's HTTP surface, under `/v1beta1` (what `@google/genai`
 * sends in Vertex mode) and `/v1` alike, with or without the
 * `projects/{p}/locations/{l}/` prefix (express mode has none):
 * `batchPredictionJobs` create, get, list (`filter`, `pageSize`,
 * `pageToken`), `:cancel`, delete, and the synchronous
 * `publishers/google/models/*:generateContent`, `:embedContent` and
 * `:predict` (text embedding). Errors have Google's JSON shape
 * (`{"error":{"code","message","status","details"}}`), so the SDK raises its
 * `ApiError` with the right status. Injected endpoint faults answer before
 * anything happens.
 *
 * @internal
 */
import { Hash } from "../../local/Kit.ts"
import { Cause, Clock, Data, Effect, FiberMap, Layer, Stream } from "effect"
import { HttpRouter, HttpServerRequest, HttpServerResponse } from "effect/http"
import * as Answer from "./geminiEmulatorAnswer.ts"
import * as Job from "./vertexEmulatorJob.ts"
import type { JobRecord, Knobs, Store } from "./vertexEmulatorStore.ts"
import type { RpcStatus } from "./vertexWire.ts"
import { bareModel, CODE_NAMES, codeOfName, modelKind, modelName, parseBq, parseGs, TERMINAL } from "./vertexWire.ts"
import * as Engine from "../../local/Engine.ts"

// ===== faults =====

/** the endpoints a fault can target */
export const ENDPOINTS = [
  "batchPredictionJobs.create",
  "batchPredictionJobs.get",
  "batchPredictionJobs.list",
  "batchPredictionJobs.cancel",
  "batchPredictionJobs.delete",
  "models.generateContent",
  "models.embedContent"
] as const

/** an endpoint a fault can target */
export type EndpointName = typeof ENDPOINTS[number]

/** an HTTP fault on an endpoint (see `VertexEmulator.Options.endpointFaults`) */
export interface EndpointFault {
  readonly endpoint?: EndpointName | "*" | undefined
  readonly status: number
  readonly times?: number | undefined
  readonly rate?: number | undefined
  /** seconds, sent as the RetryInfo `retryDelay` of a 429 (default 1) */
  readonly retryAfter?: number | undefined
}

/** a whole-job failure rule (see `VertexEmulator.Options.failJobs`) */
export interface FailJobs {
  readonly times?: number | undefined
  readonly rate?: number | undefined
  /** a `google.rpc.Code` name (default `INTERNAL`) */
  readonly code?: string | undefined
  readonly message?: string | undefined
}

/** the server-wide fault knobs */
export interface FaultKnobs {
  readonly seed: number
  readonly endpointFaults: ReadonlyArray<EndpointFault>
  readonly createSucceedsThenFails: number
  readonly createLatency: { readonly ms: number; readonly times?: number | undefined } | null
  readonly failJobs: FailJobs | null
}

/** what is wrong with fault knobs read from JSON, or undefined */
export const check = (knobs: FaultKnobs): string | undefined => {
  for (const [i, f] of knobs.endpointFaults.entries()) {
    if (f.endpoint !== undefined && f.endpoint !== "*" && !(ENDPOINTS as ReadonlyArray<string>).includes(f.endpoint)) {
      return `endpointFaults[${i}].endpoint: '${String(f.endpoint)}' is not one of '*', ${ENDPOINTS.map((e) => `'${e}'`).join(", ")}`
    }
    if (!Number.isInteger(f.status) || f.status < 400 || f.status > 599) {
      return `endpointFaults[${i}].status: ${String(f.status)} is not an HTTP error status (400-599)`
    }
  }
  if (knobs.failJobs?.code !== undefined && codeOfName(knobs.failJobs.code) === undefined) {
    return `failJobs.code: '${knobs.failJobs.code}' is not a google.rpc.Code name (${Object.values(CODE_NAMES).join(", ")})`
  }
  return undefined
}

const fires = (index: number, times: number | undefined, rate: number | undefined, seed: number, key: string): boolean => {
  if (times === undefined && rate === undefined) return true
  if (times !== undefined && index < times) return true
  return rate !== undefined && Hash.unit(`${key}\u0000${index}`, seed) < rate
}

// ===== the runtime =====

/** the emulator's live state, shared by the routes */
export interface Runtime {
  readonly store: Store
  readonly knobs: Knobs
  readonly faults: FaultKnobs
  readonly queueing: boolean
  /** starts the job's worker unless it runs already */
  readonly start: (id: string) => Effect.Effect<void>
  /** the fault answering this call of `name` (the call is counted), or undefined */
  readonly fault: (name: EndpointName) => EndpointFault | undefined
  /** counts a job being created: its injected whole-job failure, whether to answer 500 anyway, how long to wait first */
  readonly created: () => { readonly injected: RpcStatus | null; readonly failAfter: boolean; readonly delayMs: number }
  /** requests received per endpoint */
  readonly requests: Record<string, number>
}

/** the runtime; workers are interrupted when the scope closes, and every unfinished job is started again */
export const make = Effect.fnUntraced(function*(options: {
  readonly store: Store
  readonly knobs: Knobs
  readonly faults: FaultKnobs
  readonly context: Omit<Job.Context, "store">
}) {
  const workers = yield* FiberMap.make<string>()
  const ctx: Job.Context = { ...options.context, store: options.store }
  const start = (id: string) => FiberMap.run(workers, id, { onlyIfMissing: true })(Job.run(ctx, id)).pipe(Effect.asVoid)
  for (const rec of options.store.jobs.values()) {
    if (rec.final === null && rec.deleted_ms === null) yield* start(rec.id)
  }
  const fk = options.faults
  const seen = fk.endpointFaults.map(() => 0)
  let creates = 0
  let delayed = 0
  let jobs = 0
  return {
    store: options.store,
    knobs: options.knobs,
    faults: fk,
    queueing: ctx.slots !== undefined,
    start,
    requests: {},
    fault: (name) => {
      for (const [i, f] of fk.endpointFaults.entries()) {
        if (f.endpoint !== undefined && f.endpoint !== "*" && f.endpoint !== name) continue
        const index = seen[i]!++
        if (fires(index, f.times, f.rate, fk.seed, `endpoint\u0000${i}\u0000${f.endpoint ?? "*"}`)) return f
      }
      return undefined
    },
    created: () => {
      const rule = fk.failJobs
      const index = jobs++
      const injected = rule !== null && fires(index, rule.times, rule.rate, fk.seed, "failJobs")
        ? { code: rule.code === undefined ? 13 : codeOfName(rule.code) ?? 13, message: rule.message ?? "Internal error occurred. Please retry the batch prediction job." }
        : null
      const late = fk.createLatency
      const delayMs = late === null ? 0 : late.times === undefined || delayed++ < late.times ? Math.max(0, late.ms) : 0
      return { injected, failAfter: creates++ < fk.createSucceedsThenFails, delayMs }
    }
  } satisfies Runtime
})

// ===== errors =====

class ApiError extends Data.TaggedError("ApiError")<{
  readonly status: number
  readonly message: string
  readonly statusName?: string | undefined
  readonly details?: ReadonlyArray<unknown> | undefined
}> {}

const STATUS_NAMES: Readonly<Record<number, string>> = {
  400: "INVALID_ARGUMENT",
  401: "UNAUTHENTICATED",
  403: "PERMISSION_DENIED",
  404: "NOT_FOUND",
  409: "ALREADY_EXISTS",
  429: "RESOURCE_EXHAUSTED",
  500: "INTERNAL",
  501: "UNIMPLEMENTED",
  503: "UNAVAILABLE",
  504: "DEADLINE_EXCEEDED"
}

const HTTP_OF_CODE: Readonly<Record<number, number>> = { 1: 499, 2: 500, 3: 400, 4: 504, 5: 404, 7: 403, 8: 429, 9: 400, 10: 409, 13: 500, 14: 503 }

const invalid = (message: string) => new ApiError({ status: 400, message })
const notFound = (message: string) => new ApiError({ status: 404, message })

const json = (body: unknown, status = 200) => HttpServerResponse.jsonUnsafe(body, { status })

const errorResponse = (e: ApiError) =>
  json({ error: { code: e.status, message: e.message, status: e.statusName ?? STATUS_NAMES[e.status] ?? (e.status >= 500 ? "INTERNAL" : "FAILED_PRECONDITION"), ...(e.details !== undefined ? { details: e.details } : {}) } }, e.status)

const FAULT_MESSAGES: Readonly<Record<number, string>> = {
  429: "Resource exhausted. Please try again later.",
  500: "Internal error encountered.",
  503: "The service is currently unavailable.",
  504: "Deadline exceeded."
}

const faultError = (fault: EndpointFault) =>
  new ApiError({
    status: fault.status,
    message: FAULT_MESSAGES[fault.status] ?? `The request failed with status ${fault.status}.`,
    ...(fault.status === 429 ? { details: [{ "@type": "type.googleapis.com/google.rpc.RetryInfo", retryDelay: `${Math.max(0, fault.retryAfter ?? 1)}s` }] } : {})
  })

/** reads and drops the rest of a request body */
const drain = Effect.gen(function*() {
  const request = yield* HttpServerRequest.HttpServerRequest
  if (request.method === "GET" || request.method === "DELETE") return
  yield* Stream.runDrain(request.stream).pipe(Effect.ignore)
})

const readJson = (limit: number) =>
  Effect.gen(function*() {
    const request = yield* HttpServerRequest.HttpServerRequest
    const chunks: Array<Uint8Array> = []
    let bytes = 0
    yield* Stream.runForEach(request.stream, (chunk) =>
      Effect.sync(() => {
        bytes += chunk.length
        if (bytes <= limit) chunks.push(chunk)
      })).pipe(Effect.mapError(() => invalid("Could not read the request body.")))
    if (bytes > limit) return yield* invalid(`Request payload size exceeds the limit: ${limit} bytes.`)
    const text = Buffer.concat(chunks).toString("utf8")
    if (text.trim() === "") return {} as unknown
    return yield* Effect.try({ try: () => JSON.parse(text) as unknown, catch: () => invalid("Invalid JSON payload received.") })
  })

/** the fault of the endpoint if one fires, then the handler; errors and defects become Google's error shape */
const endpoint = <R>(rt: Runtime, name: EndpointName, handler: Effect.Effect<HttpServerResponse.HttpServerResponse, ApiError, R>) =>
  Effect.gen(function*() {
    rt.requests[name] = (rt.requests[name] ?? 0) + 1
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
        : Effect.succeed(errorResponse(new ApiError({ status: 500, message: `The emulator failed: ${Cause.pretty(cause).split("\n")[0]}` })))
    )
  )

const isObject = (u: unknown): u is Record<string, unknown> => typeof u === "object" && u !== null && !Array.isArray(u)

// ===== jobs =====

const JOB_FIELDS = new Set([
  "displayName",
  "model",
  "inputConfig",
  "outputConfig",
  "labels",
  "modelParameters",
  "instanceConfig",
  "dedicatedResources",
  "manualBatchTuningParameters",
  "serviceAccount",
  "encryptionSpec",
  "disableContainerLogging",
  "generateExplanation",
  "explanationSpec",
  "modelVersionId"
])

const LABEL = /^[\p{Ll}\p{Lo}0-9_-]{0,63}$/u

const labelsOf = (u: unknown) =>
  Effect.gen(function*() {
    if (u === undefined) return {}
    if (!isObject(u)) return yield* invalid("Invalid value at 'batch_prediction_job.labels': expected a map of strings.")
    const out: Record<string, string> = {}
    const entries = Object.entries(u)
    if (entries.length > 64) return yield* invalid("* BatchPredictionJob.labels: at most 64 labels")
    for (const [k, v] of entries) {
      if (typeof v !== "string") return yield* invalid(`Invalid value at 'batch_prediction_job.labels[${k}]': expected a string.`)
      if (!/^\p{Ll}/u.test(k) || !LABEL.test(k) || k.length === 0) {
        return yield* invalid(`* BatchPredictionJob.labels: the key "${k}" must start with a lowercase letter and hold at most 63 lowercase letters, digits, underscores and dashes`)
      }
      if (!LABEL.test(v)) return yield* invalid(`* BatchPredictionJob.labels: the value of "${k}" must hold at most 63 lowercase letters, digits, underscores and dashes`)
      out[k] = v
    }
    return out
  })

const createJob = (rt: Runtime, project: string, location: string) =>
  Effect.gen(function*() {
    const body = yield* readJson(4 * 1024 * 1024)
    if (!isObject(body)) return yield* invalid("Invalid JSON payload received. Expected a BatchPredictionJob object.")
    for (const key of Object.keys(body)) {
      if (!JOB_FIELDS.has(key)) return yield* invalid(`Invalid JSON payload received. Unknown name "${key}": Cannot find field.`)
    }
    const displayName = body.displayName
    if (typeof displayName !== "string" || displayName.length === 0) return yield* invalid("* BatchPredictionJob.display_name: display_name is required")
    if (Buffer.byteLength(displayName) > 128) return yield* invalid("* BatchPredictionJob.display_name: at most 128 bytes")
    if (typeof body.model !== "string" || !/^(publishers\/[^/]+\/models\/[^/]+|projects\/[^/]+\/locations\/[^/]+\/(models|endpoints)\/[^/]+)$/.test(body.model)) {
      return yield* invalid(`* BatchPredictionJob.model: "${String(body.model)}" is not a model resource name (publishers/google/models/<id>)`)
    }
    const model = modelName(body.model)
    const kind = modelKind(model)
    const inputConfig = body.inputConfig
    if (!isObject(inputConfig)) return yield* invalid("* BatchPredictionJob.input_config: input_config is required")
    const outputConfig = body.outputConfig
    if (!isObject(outputConfig)) return yield* invalid("* BatchPredictionJob.output_config: output_config is required")
    let input: JobRecord["input"]
    if (inputConfig.instancesFormat === "bigquery") {
      const uri = isObject(inputConfig.bigquerySource) ? inputConfig.bigquerySource.inputUri : undefined
      const ref = typeof uri === "string" ? parseBq(uri) : "missing"
      if (typeof ref === "string" || ref.tableId === undefined) {
        return yield* invalid(`* BatchPredictionJob.input_config.bigquery_source.input_uri: a table (bq://project.dataset.table) is required${typeof ref === "string" && ref !== "missing" ? `: ${ref}` : ""}`)
      }
      if (kind === "embed-gemini") return yield* invalid("Gemini embedding models take batch input from Cloud Storage JSONL only, not BigQuery.")
      input = { format: "bigquery", uri: uri as string }
    } else if (inputConfig.instancesFormat === "jsonl") {
      const uris = isObject(inputConfig.gcsSource) ? inputConfig.gcsSource.uris : undefined
      if (!Array.isArray(uris) || uris.length === 0 || uris.some((u) => typeof u !== "string" || typeof parseGs(u) === "string")) {
        return yield* invalid("* BatchPredictionJob.input_config.gcs_source.uris: at least one gs:// URI is required")
      }
      if (uris.length > 1) return yield* invalid("* BatchPredictionJob.input_config.gcs_source.uris: batch prediction for Gemini models takes one JSONL file")
      input = { format: "jsonl", uri: uris[0] as string, uris: uris as Array<string> }
    } else {
      return yield* invalid(`* BatchPredictionJob.input_config.instances_format: "${String(inputConfig.instancesFormat)}" is not supported (jsonl, bigquery)`)
    }
    let output: JobRecord["output"]
    if (outputConfig.predictionsFormat === "bigquery") {
      const uri = isObject(outputConfig.bigqueryDestination) ? outputConfig.bigqueryDestination.outputUri : undefined
      if (typeof uri !== "string" || !uri.startsWith("bq://") || (uri.slice(5).includes(".") && typeof parseBq(uri) === "string")) {
        return yield* invalid("* BatchPredictionJob.output_config.bigquery_destination.output_uri: bq://project, bq://project.dataset or bq://project.dataset.table is required")
      }
      output = { format: "bigquery", uri }
    } else if (outputConfig.predictionsFormat === "jsonl") {
      const uri = isObject(outputConfig.gcsDestination) ? outputConfig.gcsDestination.outputUriPrefix : undefined
      if (typeof uri !== "string" || typeof parseGs(uri) === "string") {
        return yield* invalid("* BatchPredictionJob.output_config.gcs_destination.output_uri_prefix: a gs:// prefix is required")
      }
      output = { format: "jsonl", uri }
    } else {
      return yield* invalid(`* BatchPredictionJob.output_config.predictions_format: "${String(outputConfig.predictionsFormat)}" is not supported (jsonl, bigquery)`)
    }
    const labels = yield* labelsOf(body.labels)
    const dims = isObject(body.modelParameters) ? body.modelParameters.outputDimensionality : undefined
    if (dims !== undefined && (typeof dims !== "number" || !Number.isInteger(dims) || dims < 1)) {
      return yield* invalid("* BatchPredictionJob.model_parameters.outputDimensionality: must be a positive integer")
    }
    const { id, seq } = rt.store.nextId()
    const now = yield* Clock.currentTimeMillis
    const fate = rt.created()
    const rec: JobRecord = {
      id,
      seq,
      project,
      location,
      displayName,
      model,
      kind,
      labels,
      ...(dims !== undefined ? { parameters: { outputDimensionality: dims } } : {}),
      input,
      output,
      created_ms: now,
      knobs: rt.knobs,
      injected: fate.injected,
      dequeued_ms: null,
      started_ms: null,
      cancel_ms: null,
      outputInfo: null,
      progress: { total: null, rows: 0, chunks: 0, succeeded: 0, failed: 0 },
      final: null,
      deleted_ms: null
    }
    rt.store.put(rec)
    yield* rt.start(id)
    if (fate.delayMs > 0) yield* Effect.sleep(fate.delayMs)
    // the job exists, but the client is told the create failed
    if (fate.failAfter) return yield* faultError({ status: 500 })
    return json(Job.resource(rt.store.jobs.get(id)!, rt.queueing))
  })

const jobOf = (rt: Runtime, project: string, location: string, id: string) =>
  Effect.gen(function*() {
    const rec = rt.store.jobs.get(id)
    if (rec === undefined || rec.deleted_ms !== null || rec.project !== project || rec.location !== location) {
      return yield* notFound(`The BatchPredictionJob "projects/${project}/locations/${location}/batchPredictionJobs/${id}" does not exist.`)
    }
    return rec
  })

/** a term of a list filter: `display_name="x"`, `labels.k="v"`, `state=JOB_STATE_X` (also `!=`), joined by AND */
const filterOf = (text: string | undefined) =>
  Effect.gen(function*() {
    if (text === undefined || text.trim() === "") return (_: JobRecord) => true
    const tests: Array<(rec: JobRecord) => boolean> = []
    for (const term of text.split(/\s+AND\s+/)) {
      const m = /^\s*(display_name|labels\.[a-z][a-z0-9_-]*|state)\s*(!=|=)\s*(?:"((?:[^"\\]|\\.)*)"|([A-Za-z0-9_.-]+))\s*$/.exec(term)
      if (m === null) return yield* invalid(`Unsupported filter: ${JSON.stringify(term.trim())} (the emulator reads display_name, labels.<key> and state with = or !=, joined by AND)`)
      const value = m[3] !== undefined ? m[3].replace(/\\(.)/g, "$1") : m[4]!
      const field = m[1]!
      const get = (rec: JobRecord): string | undefined =>
        field === "display_name" ? rec.displayName : field === "state" ? Job.stateOf(rec, false) : rec.labels[field.slice("labels.".length)]
      tests.push(m[2] === "=" ? (rec) => get(rec) === value : (rec) => get(rec) !== value)
    }
    return (rec: JobRecord) => tests.every((t) => t(rec))
  })

const listJobs = (rt: Runtime, project: string, location: string, query: URLSearchParams) =>
  Effect.gen(function*() {
    const keep = yield* filterOf(query.get("filter") ?? undefined)
    const rawSize = query.get("pageSize")
    const size = rawSize === null || rawSize === "" || rawSize === "0" ? 100 : Number(rawSize)
    if (!Number.isInteger(size) || size < 0) return yield* invalid(`Invalid value at 'page_size' (TYPE_INT32), "${rawSize}"`)
    let jobs = [...rt.store.jobs.values()]
      .filter((j) => j.deleted_ms === null && j.project === project && j.location === location)
      .sort((a, b) => b.seq - a.seq)
    const token = query.get("pageToken")
    if (token !== null && token !== "") {
      const seq = Number(Buffer.from(token, "base64url").toString("utf8"))
      if (!Number.isInteger(seq)) return yield* invalid("Invalid page token.")
      jobs = jobs.filter((j) => j.seq < seq)
    }
    // the filter applies within the page's window, as a service scanning its index would
    const window = jobs.slice(0, Math.min(size, 1000))
    const next = jobs.length > window.length ? Buffer.from(String(window.at(-1)!.seq)).toString("base64url") : undefined
    return json({
      batchPredictionJobs: window.filter(keep).map((j) => Job.resource(j, rt.queueing)),
      ...(next !== undefined ? { nextPageToken: next } : {})
    })
  })

const cancelJob = (rt: Runtime, project: string, location: string, id: string) =>
  Effect.gen(function*() {
    yield* drain
    const rec = yield* jobOf(rt, project, location, id)
    if (rec.final !== null) {
      return yield* new ApiError({ status: 400, statusName: "FAILED_PRECONDITION", message: `The BatchPredictionJob is in state ${rec.final.state} and cannot be cancelled.` })
    }
    if (rec.cancel_ms === null) rt.store.put({ ...rec, cancel_ms: yield* Clock.currentTimeMillis })
    return json({})
  })

const deleteJob = (rt: Runtime, project: string, location: string, id: string) =>
  Effect.gen(function*() {
    const rec = yield* jobOf(rt, project, location, id)
    if (rec.final === null) {
      return yield* new ApiError({ status: 400, statusName: "FAILED_PRECONDITION", message: "The BatchPredictionJob is running: cancel it, and delete it once it ended." })
    }
    rt.store.put({ ...rec, deleted_ms: yield* Clock.currentTimeMillis })
    return json({
      name: `projects/${project}/locations/${location}/operations/${rec.id}`,
      metadata: { "@type": "type.googleapis.com/google.cloud.aiplatform.v1.DeleteOperationMetadata", genericMetadata: {} },
      done: true,
      response: { "@type": "type.googleapis.com/google.protobuf.Empty" }
    })
  })

// ===== synchronous calls =====

const failureError = (f: RpcStatus) => new ApiError({ status: HTTP_OF_CODE[f.code] ?? 500, message: f.message, statusName: CODE_NAMES[f.code] })

const generateContent = (model: string) =>
  Effect.gen(function*() {
    const body = yield* readJson(20 * 1024 * 1024)
    const request = isObject(body) ? { ...body } : body
    if (isObject(request)) delete request.model
    const a = Answer.generate(request, `models/${model}`, Math.random().toString(36).slice(2, 14))
    if ("code" in a) return yield* failureError(a)
    return json(a.body)
  })

const embedContent = (model: string) =>
  Effect.gen(function*() {
    const body = yield* readJson(20 * 1024 * 1024)
    if (!isObject(body)) return yield* invalid("Invalid JSON payload received. Expected an EmbedContentRequest object.")
    const config = isObject(body.embedContentConfig) ? body.embedContentConfig : {}
    const a = Answer.embed({ content: body.content, ...(typeof config.outputDimensionality === "number" ? { outputDimensionality: config.outputDimensionality } : {}) }, `models/${model}`)
    if ("code" in a) return yield* failureError(a)
    return json({ ...a.body, usageMetadata: { promptTokenCount: a.inputTokens, totalTokenCount: a.inputTokens } })
  })

const predict = (model: string) =>
  Effect.gen(function*() {
    const body = yield* readJson(20 * 1024 * 1024)
    if (!isObject(body) || !Array.isArray(body.instances) || body.instances.length === 0) return yield* invalid("* instances: at least one instance is required")
    if (modelKind(model) !== "embed-text" && model !== "gemini-embedding-001") return yield* invalid(`The model ${model} does not serve :predict.`)
    if (body.instances.length > 250) return yield* invalid("* instances: at most 250 instances per request")
    const parameters = isObject(body.parameters) ? body.parameters : {}
    const dims = parameters.outputDimensionality
    if (dims !== undefined && (typeof dims !== "number" || !Number.isInteger(dims) || dims < 1)) return yield* invalid("* parameters.outputDimensionality: must be a positive integer")
    const predictions: Array<unknown> = []
    for (const instance of body.instances) {
      const content = isObject(instance) ? instance.content : undefined
      if (typeof content !== "string" || content.length === 0) return yield* invalid("* instances[].content: a non-empty string is required")
      const out = Engine.embed({ model, input: content, dimensions: (dims as number | undefined) ?? Answer.defaultDimensions(model) })
      predictions.push({ embeddings: { statistics: { token_count: out.usage.inputTokens, truncated: false }, values: out.vector } })
    }
    return json({ predictions, metadata: { billableCharacterCount: 0 } })
  })

// ===== the router =====

const VERSIONS = new Set(["v1", "v1beta1"])

const dispatch = (rt: Runtime) =>
  Effect.gen(function*() {
    const request = yield* HttpServerRequest.HttpServerRequest
    const url = new URL(request.url, "http://x")
    const segments = url.pathname.split("/").filter((s) => s.length > 0).map(decodeURIComponent)
    const version = segments.shift() ?? ""
    if (!VERSIONS.has(version)) {
      yield* drain
      return errorResponse(notFound(`The API version ${version} is not served (v1, v1beta1).`))
    }
    let project = "emulator"
    let location = "us-central1"
    if (segments[0] === "projects" && segments[2] === "locations" && segments.length >= 4) {
      project = segments[1]!
      location = segments[3]!
      segments.splice(0, 4)
    }
    const method = request.method
    if (segments[0] === "batchPredictionJobs") {
      if (segments.length === 1 && method === "POST") return yield* endpoint(rt, "batchPredictionJobs.create", createJob(rt, project, location))
      if (segments.length === 1 && method === "GET") return yield* endpoint(rt, "batchPredictionJobs.list", listJobs(rt, project, location, url.searchParams))
      if (segments.length === 2) {
        const [id, verb] = segments[1]!.split(":")
        if (verb === "cancel" && method === "POST") return yield* endpoint(rt, "batchPredictionJobs.cancel", cancelJob(rt, project, location, id!))
        if (verb === undefined && method === "GET") return yield* endpoint(rt, "batchPredictionJobs.get", Effect.map(jobOf(rt, project, location, id!), (rec) => json(Job.resource(rec, rt.queueing))))
        if (verb === undefined && method === "DELETE") return yield* endpoint(rt, "batchPredictionJobs.delete", deleteJob(rt, project, location, id!))
      }
    }
    if (segments[0] === "publishers" && segments[2] === "models" && segments.length === 4 && method === "POST") {
      const [model, verb] = segments[3]!.split(":")
      const id = bareModel(model!)
      if (verb === "generateContent") return yield* endpoint(rt, "models.generateContent", generateContent(id))
      if (verb === "embedContent") return yield* endpoint(rt, "models.embedContent", embedContent(id))
      if (verb === "predict") return yield* endpoint(rt, "models.embedContent", predict(id))
    }
    yield* drain
    return errorResponse(notFound(`Not found: ${method} ${url.pathname}`))
  })

/** every route of the emulator */
export const layer = (rt: Runtime) =>
  Layer.mergeAll(HttpRouter.add("*", "*", dispatch(rt)))

/** whether a job state is one a job never leaves */
export const isTerminal = (state: string) => TERMINAL.has(state)
